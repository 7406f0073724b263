/* SPDX-License-Identifier: MIT */
/*
 * Namespace-aware helpers over libxml2 trees: parse a bounded document
 * without network access or entity expansion, find children by namespace
 * URI and local name, read text and attributes. For SOAP envelopes and
 * other answers where the prefix is the sender's choice and only the URI
 * means anything. No provider knowledge. Any thread: a document is only
 * read by the thread that owns it.
 */
#pragma once

#include <glib.h>
#include <libxml/tree.h>
#include <stdbool.h>

/* Parse @len bytes of @data: no network, no DTD loading, no entity
 * substitution, at most @max bytes (else EFBIG). @what names the document
 * in the error (EIO for bad XML). Transfer full: free with xmlFreeDoc. */
xmlDoc *cfs_xml_parse(const void *data, gsize len, gsize max,
		      const char *what, GError **error);

/* Whether @node is an element named @name in namespace @ns (NULL: any
 * namespace). */
bool cfs_xml_is(const xmlNode *node, const char *ns, const char *name);

/* The first child element of @node (NULL is fine) named @name in @ns,
 * or NULL. Borrowed. */
xmlNode *cfs_xml_child(xmlNode *node, const char *ns, const char *name);

/* The next sibling element after @node named @name in @ns, or NULL. */
xmlNode *cfs_xml_next(xmlNode *node, const char *ns, const char *name);

/* Walk "a/b/c" down from @node, every step in @ns. Borrowed. */
xmlNode *cfs_xml_path(xmlNode *node, const char *ns, const char *path);

/* The text of @node with surrounding blanks removed, or NULL for a NULL
 * node. Transfer full. */
char *cfs_xml_text(const xmlNode *node);

/* The attribute @name of @node (no namespace), or NULL. Transfer full. */
char *cfs_xml_attr(const xmlNode *node, const char *name);

/* @s with &, <, >, " and ' escaped for element text and attribute
 * values. Transfer full. */
char *cfs_xml_escape(const char *s);
