// SPDX-License-Identifier: MIT
/*
 * Namespace-aware XML helpers: what SOAP and other XML APIs need from
 * libxml2, with names matched by namespace URI and local name.
 */
#include <libxml/parser.h>
#include <string.h>

#include "common/error.h"
#include "common/xml.h"

xmlDoc *cfs_xml_parse(const void *data, gsize len, gsize max, GError **error)
{
	xmlDoc *doc;

	if (len > max || len > G_MAXINT) {
		g_set_error(error, CFS_ERROR, EIO,
			    "an XML answer of %" G_GSIZE_FORMAT
			    " bytes is over the limit of %" G_GSIZE_FORMAT,
			    len, max);
		return NULL;
	}
	doc = xmlReadMemory(data, (int)len, "answer.xml", NULL,
			    XML_PARSE_NONET | XML_PARSE_NOERROR |
				XML_PARSE_NOWARNING | XML_PARSE_NOCDATA);
	if (!doc || !xmlDocGetRootElement(doc)) {
		if (doc)
			xmlFreeDoc(doc);
		g_set_error(error, CFS_ERROR, EIO, "the answer is not XML");
		return NULL;
	}
	return doc;
}

bool cfs_xml_is(const xmlNode *node, const char *ns, const char *name)
{
	if (!node || node->type != XML_ELEMENT_NODE ||
	    strcmp((const char *)node->name, name) != 0)
		return false;
	if (!ns)
		return true;
	return node->ns && node->ns->href &&
	       strcmp((const char *)node->ns->href, ns) == 0;
}

xmlNode *cfs_xml_child(const xmlNode *node, const char *ns, const char *name)
{
	for (xmlNode *c = node ? node->children : NULL; c; c = c->next)
		if (cfs_xml_is(c, ns, name))
			return c;
	return NULL;
}

xmlNode *cfs_xml_next(const xmlNode *node, const char *ns, const char *name)
{
	for (xmlNode *c = node ? node->next : NULL; c; c = c->next)
		if (cfs_xml_is(c, ns, name))
			return c;
	return NULL;
}

xmlNode *cfs_xml_path(const xmlNode *node, const char *ns, const char *path)
{
	g_auto(GStrv) parts = g_strsplit(path, "/", -1);
	const xmlNode *n = node;

	for (char **p = parts; *p && n; p++)
		n = cfs_xml_child(n, ns, *p);
	return (xmlNode *)n;
}

char *cfs_xml_attr(const xmlNode *node, const char *name)
{
	xmlChar *v = node ? xmlGetNoNsProp(node, (const xmlChar *)name) : NULL;
	char *out = v ? g_strdup((const char *)v) : NULL;

	xmlFree(v);
	return out;
}

char *cfs_xml_text(const xmlNode *node)
{
	xmlChar *c;
	char *out;

	if (!node)
		return NULL;
	c = xmlNodeGetContent(node);
	out = g_strstrip(g_strdup(c ? (const char *)c : ""));
	xmlFree(c);
	return out;
}

char *cfs_xml_path_text(const xmlNode *node, const char *ns, const char *path)
{
	return cfs_xml_text(cfs_xml_path(node, ns, path));
}

char *cfs_xml_xsi_type(const xmlNode *node, char **ns_uri)
{
	xmlChar *value;
	const char *colon;
	char *local;

	if (ns_uri)
		*ns_uri = NULL;
	if (!node || node->type != XML_ELEMENT_NODE)
		return NULL;
	value = xmlGetNsProp(node, (const xmlChar *)"type",
			     (const xmlChar *)CFS_XML_NS_XSI);
	if (!value)
		return NULL;
	colon = strchr((const char *)value, ':');
	if (ns_uri) {
		g_autofree char *prefix =
		    colon ? g_strndup((const char *)value,
				      colon - (const char *)value)
			  : NULL;
		xmlNs *ns = xmlSearchNs(node->doc, (xmlNode *)node,
					(const xmlChar *)prefix);

		*ns_uri =
		    ns && ns->href ? g_strdup((const char *)ns->href) : NULL;
	}
	local = g_strdup(colon ? colon + 1 : (const char *)value);
	xmlFree(value);
	return local;
}

void cfs_xml_escape(GString *out, const char *text)
{
	for (const char *p = text; p && *p; p++) {
		switch (*p) {
		case '&':
			g_string_append(out, "&amp;");
			break;
		case '<':
			g_string_append(out, "&lt;");
			break;
		case '>':
			g_string_append(out, "&gt;");
			break;
		case '"':
			g_string_append(out, "&quot;");
			break;
		case '\'':
			g_string_append(out, "&apos;");
			break;
		default:
			g_string_append_c(out, *p);
		}
	}
}
