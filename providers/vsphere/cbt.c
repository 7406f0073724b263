// SPDX-License-Identifier: MIT
/*
 * Changed block tracking as the allocation map of a datastore read:
 * QueryChangedDiskAreas with change id "*" names the areas of a disk that
 * were ever written. The server answers in parts, each covering
 * [startOffset, startOffset + length) of the disk; the next question starts
 * where the last answer ended. Answers are checked as they come: each one
 * for the offset asked, making progress, its areas sorted, disjoint, inside
 * its span and inside the disk, and the number of answers and areas
 * bounded. What is left out is a hole, never fetched.
 */
#include <string.h>

#include "common/error.h"
#include "providers/vsphere/vsphere-private.h"

/* Answers allowed: this many, plus one per 64 KiB of the disk (a server
 * that covers less than a block an answer is not making progress). */
#define VS_CBT_ANSWERS_BASE 64
#define VS_CBT_ANSWER_SPAN_MIN (64 << 10)
/* Areas kept in all (16 bytes each). */
#define VS_CBT_AREAS_MAX (4u << 20)

/* An unsigned decimal field of @node; false if missing or not a number. */
static bool cbt_u64(const xmlNode *node, const char *name, guint64 *out)
{
	g_autofree char *t = cfs_xml_path_text(node, VS_NS, name);

	return t &&
	       g_ascii_string_to_unsigned(t, 10, 0, G_MAXUINT64, out, NULL);
}

/* Check the areas of one answer covering [start, end) and add them. */
static bool cbt_take_areas(const xmlNode *rv, guint64 start, guint64 end,
			   guint64 capacity, GArray *areas, GError **error)
{
	guint64 last = start;

	for (xmlNode *a = cfs_xml_child(rv, VS_NS, "changedArea"); a;
	     a = cfs_xml_next(a, VS_NS, "changedArea")) {
		CfsExtent e;

		if (!cbt_u64(a, "start", &e.offset) ||
		    !cbt_u64(a, "length", &e.length)) {
			g_set_error(error, CFS_ERROR, EIO,
				    "an area without a start or length");
			return false;
		}
		if (e.length == 0)
			continue;
		if (e.offset >= capacity || e.length > capacity - e.offset) {
			g_set_error(error, CFS_ERROR, EIO,
				    "area %" G_GUINT64_FORMAT
				    "+%" G_GUINT64_FORMAT
				    " passes the end of the %" G_GUINT64_FORMAT
				    "-byte disk",
				    e.offset, e.length, capacity);
			return false;
		}
		if (e.offset < last) {
			g_set_error(
			    error, CFS_ERROR, EIO,
			    "area at %" G_GUINT64_FORMAT " overlaps or "
			    "comes before the one ending at %" G_GUINT64_FORMAT,
			    e.offset, last);
			return false;
		}
		if (e.offset + e.length > end) {
			g_set_error(error, CFS_ERROR, EIO,
				    "area %" G_GUINT64_FORMAT
				    "+%" G_GUINT64_FORMAT
				    " is outside the answer's span ending at "
				    "%" G_GUINT64_FORMAT,
				    e.offset, e.length, end);
			return false;
		}
		if (areas->len >= VS_CBT_AREAS_MAX) {
			g_set_error(error, CFS_ERROR, EIO, "more than %u areas",
				    VS_CBT_AREAS_MAX);
			return false;
		}
		g_array_append_val(areas, e);
		last = e.offset + e.length;
	}
	return true;
}

/* One question from @pos: where the answer ends in @next. */
static bool cbt_ask(VsProvider *prov, const VsDisk *d, const VsRef *snap,
		    guint64 pos, GArray *areas, guint64 *next, char **fault,
		    GError **error)
{
	g_autoptr(GString) args = g_string_new(NULL);
	g_autoptr(xmlDoc) doc = NULL;
	xmlNode *resp, *rv;
	guint64 start, len, end;

	if (snap && snap->value)
		vs_add_ref(args, "snapshot", snap);
	g_string_append_printf(
	    args,
	    "<deviceKey>%d</deviceKey><startOffset>%" G_GUINT64_FORMAT
	    "</startOffset>"
	    "<changeId>*</changeId>",
	    d->key, pos);
	doc = vs_call(prov, "QueryChangedDiskAreas", &d->vm, args->str, &resp,
		      fault, error);
	if (!doc)
		return false;
	rv = cfs_xml_child(resp, VS_NS, "returnval");
	if (!cbt_u64(rv, "startOffset", &start) ||
	    !cbt_u64(rv, "length", &len)) {
		g_set_error(error, CFS_ERROR, EIO,
			    "an answer without startOffset or length");
		return false;
	}
	if (start != pos) {
		g_set_error(error, CFS_ERROR, EIO,
			    "asked from offset %" G_GUINT64_FORMAT
			    ", answered from %" G_GUINT64_FORMAT,
			    pos, start);
		return false;
	}
	if (len == 0) {
		g_set_error(error, CFS_ERROR, EIO,
			    "no progress at offset %" G_GUINT64_FORMAT, pos);
		return false;
	}
	/* A span past the end covers the rest; areas are checked apart. */
	end = len > d->capacity - start ? d->capacity : start + len;
	if (!cbt_take_areas(rv, start, end, d->capacity, areas, error))
		return false;
	*next = end;
	return true;
}

CfsExtentMap *vs_cbt_map(VsProvider *prov, const VsDisk *d, const VsRef *snap,
			 char **fault, guint *answers, GError **error)
{
	g_autoptr(GArray) areas = g_array_new(FALSE, FALSE, sizeof(CfsExtent));
	guint64 limit =
	    VS_CBT_ANSWERS_BASE + d->capacity / VS_CBT_ANSWER_SPAN_MIN;
	guint64 pos = 0, n = 0;

	while (pos < d->capacity) {
		if (n >= limit) {
			g_set_error(error, CFS_ERROR, EIO,
				    "QueryChangedDiskAreas: more than "
				    "%" G_GUINT64_FORMAT
				    " answers for a %" G_GUINT64_FORMAT
				    "-byte disk",
				    limit, d->capacity);
			return NULL;
		}
		n++;
		if (!cbt_ask(prov, d, snap, pos, areas, &pos, fault, error)) {
			if (!fault || !*fault)
				g_prefix_error(error,
					       "QueryChangedDiskAreas: ");
			return NULL;
		}
	}
	*answers = (guint)n;
	return cfs_extent_map_new(d->capacity, (CfsExtent *)areas->data,
				  areas->len);
}
