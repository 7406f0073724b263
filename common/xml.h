/* SPDX-License-Identifier: MIT */
/*
 * Namespace-aware XML on libxml2: bounded parsing without network or
 * entity expansion, children found by namespace URI and local name (never
 * by prefix), text, xsi:type resolved to its namespace URI, and escaping
 * for documents built by hand. Every function here may be called from any
 * thread; none blocks.
 */
#pragma once

#include <glib.h>
#include <libxml/tree.h>
#include <stdbool.h>

#define CFS_XML_NS_XSI "http://www.w3.org/2001/XMLSchema-instance"

/*
 * Parse @len bytes at @data (refused when over @max bytes): no network,
 * no entity substitution, no DTD loading. NULL with @error (CFS_ERROR,
 * EIO) when it is not a document. Transfer full.
 */
xmlDoc *cfs_xml_parse(const void *data, gsize len, gsize max, GError **error);

/* Whether @node is an element named @name in namespace @ns (NULL: in any
 * namespace, or none). */
bool cfs_xml_is(const xmlNode *node, const char *ns, const char *name);

/* The first child element of @node (NULL is fine) named @name in @ns,
 * and the next sibling element after @node that is. Borrowed. */
xmlNode *cfs_xml_child(const xmlNode *node, const char *ns, const char *name);
xmlNode *cfs_xml_next(const xmlNode *node, const char *ns, const char *name);

/* Children along "a/b/c", every part in @ns. Borrowed, or NULL. */
xmlNode *cfs_xml_path(const xmlNode *node, const char *ns, const char *path);

/* The text of @node (or of the element at @path below it, in @ns),
 * stripped of surrounding white space; NULL when there is no such
 * element. Transfer full. */
char *cfs_xml_text(const xmlNode *node);
char *cfs_xml_path_text(const xmlNode *node, const char *ns, const char *path);

/*
 * The xsi:type of @node (the attribute found by the XML Schema instance
 * URI, whatever its prefix): its local name, and in @ns_uri (may be NULL)
 * the namespace its prefix stands for (NULL when unbound). NULL when the
 * node has no xsi:type. Transfer full, both.
 */
char *cfs_xml_xsi_type(const xmlNode *node, char **ns_uri);

/* The attribute @name of @node (no namespace), or NULL. Transfer full. */
char *cfs_xml_attr(const xmlNode *node, const char *name);

/* Append @text to @out with &, <, >, " and ' escaped. */
void cfs_xml_escape(GString *out, const char *text);
