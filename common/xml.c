// SPDX-License-Identifier: MIT
/*
 * Namespace-aware XML helpers (see xml.h): a safe parser setup and
 * lookups by namespace URI and local name.
 */
#include <libxml/parser.h>
#include <string.h>

#include "common/error.h"
#include "common/xml.h"

xmlDoc *cfs_xml_parse(const void *data, gsize len, gsize max,
		      const char *what, GError **error)
{
	xmlDoc *doc;

	if (len > max || len > G_MAXINT) {
		g_set_error(error, CFS_ERROR, EFBIG, "%s: %" G_GSIZE_FORMAT
			    " bytes of XML, more than %" G_GSIZE_FORMAT, what,
			    len, max);
		return NULL;
	}
	doc = xmlReadMemory(data, (int)len, NULL, NULL,
			    XML_PARSE_NONET | XML_PARSE_NOERROR |
			    XML_PARSE_NOWARNING | XML_PARSE_NOBLANKS);
	if (!doc || !xmlDocGetRootElement(doc)) {
		if (doc)
			xmlFreeDoc(doc);
		g_set_error(error, CFS_ERROR, EIO, "%s: not XML", what);
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

xmlNode *cfs_xml_child(xmlNode *node, const char *ns, const char *name)
{
	for (xmlNode *c = node ? node->children : NULL; c; c = c->next)
		if (cfs_xml_is(c, ns, name))
			return c;
	return NULL;
}

xmlNode *cfs_xml_next(xmlNode *node, const char *ns, const char *name)
{
	for (xmlNode *c = node ? node->next : NULL; c; c = c->next)
		if (cfs_xml_is(c, ns, name))
			return c;
	return NULL;
}

xmlNode *cfs_xml_path(xmlNode *node, const char *ns, const char *path)
{
	g_auto(GStrv) parts = g_strsplit(path, "/", -1);

	for (char **p = parts; *p && node; p++)
		node = cfs_xml_child(node, ns, *p);
	return node;
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

char *cfs_xml_attr(const xmlNode *node, const char *name)
{
	xmlChar *c;
	char *out;

	if (!node)
		return NULL;
	c = xmlGetNoNsProp(node, (const xmlChar *)name);
	out = c ? g_strdup((const char *)c) : NULL;
	xmlFree(c);
	return out;
}

char *cfs_xml_escape(const char *s)
{
	GString *out = g_string_sized_new(strlen(s) + 16);

	for (const char *p = s; *p; p++) {
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
	return g_string_free(out, false);
}
