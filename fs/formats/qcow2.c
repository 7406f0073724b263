// SPDX-License-Identifier: MIT
/*
 * The qcow2 view: version 3, 64 KiB clusters, 16-bit refcounts. Layout:
 * header, L1 table, refcount table, refcount blocks, L2 tables (only those
 * that map data), data clusters (only those that hold data). Every table
 * is generated on demand from the map; nothing is stored per cluster.
 */
#include <string.h>

#include "fs/formats/view-private.h"

#define QCOW2_CLUSTER_BITS 16
#define QCOW2_CLUSTER (1ull << QCOW2_CLUSTER_BITS)
#define QCOW2_L2_ENTRIES (QCOW2_CLUSTER / 8)
#define QCOW2_RB_ENTRIES (QCOW2_CLUSTER / 2)	/* refcount_order 4 */
#define QCOW2_RT_ENTRIES (QCOW2_CLUSTER / 8)
#define QCOW2_COPIED (1ull << 63)
#define QCOW2_HEADER_LEN 104

typedef struct {
	CfsView head;
	guint64 vsize;		/* virtual size: disk size to a sector */
	CfsUnits data;		/* allocated clusters of the disk */
	CfsUnits l2;		/* allocated L2 tables */
	guint64 l1_entries;
	/* in clusters: */
	guint64 l1_start, l1_n;
	guint64 rt_start, rt_n;
	guint64 rb_start, rb_n;
	guint64 l2_start;
	guint64 data_start;
	guint64 total;
	guint8 header[QCOW2_HEADER_LEN];
} Qcow2View;

typedef guint64 (*Qcow2EntryFn)(const Qcow2View *q, guint64 idx);

/* Fill cluster bytes [coff, coff + len) of a table of big-endian entries
 * of @width bytes; entry @first is the first of the cluster. */
static void qcow2_fill_table(const Qcow2View *q, guint8 *dst, guint64 coff,
			     guint64 len, guint width, guint64 first,
			     Qcow2EntryFn fn)
{
	guint64 e0 = coff / width, e1 = (coff + len - 1) / width;

	for (guint64 e = e0; e <= e1; e++) {
		guint64 v = fn(q, first + e);
		guint8 b[8];

		if (width == 8)
			cfs_put_be64(b, v);
		else
			cfs_put_be16(b, v);
		cfs_fill_blob(dst, coff, len, e * width, b, width);
	}
}

static guint64 qcow2_l1_entry(const Qcow2View *q, guint64 j)
{
	guint64 r;

	if (j >= q->l1_entries || !cfs_units_rank(&q->l2, j, &r))
		return 0;
	return ((q->l2_start + r) << QCOW2_CLUSTER_BITS) | QCOW2_COPIED;
}

static guint64 qcow2_rt_entry(const Qcow2View *q, guint64 i)
{
	if (i >= q->rb_n)
		return 0;
	return (q->rb_start + i) << QCOW2_CLUSTER_BITS;
}

static guint64 qcow2_rb_entry(const Qcow2View *q, guint64 c)
{
	return c < q->total ? 1 : 0;
}

static guint64 qcow2_l2_entry(const Qcow2View *q, guint64 u)
{
	guint64 r;

	if (!cfs_units_rank(&q->data, u, &r))
		return 0;
	return ((q->data_start + r) << QCOW2_CLUSTER_BITS) | QCOW2_COPIED;
}

static bool qcow2_fill(const CfsView *view, CfsFill *f, guint8 *dst,
		       guint64 off, guint64 len, guint64 *done)
{
	const Qcow2View *q = (const Qcow2View *)view;
	guint64 c = off >> QCOW2_CLUSTER_BITS;
	guint64 coff = off & (QCOW2_CLUSTER - 1);
	guint64 n = MIN(len, QCOW2_CLUSTER - coff);

	*done = n;
	if (c >= q->data_start) {
		guint64 u = cfs_units_select(&q->data, c - q->data_start);

		return cfs_fill_raw(view, f, dst, u * QCOW2_CLUSTER + coff, n);
	}
	if (!dst)
		return true;
	memset(dst, 0, n);
	if (c == 0) {
		cfs_fill_blob(dst, coff, n, 0, q->header, sizeof(q->header));
	} else if (c >= q->l2_start) {
		guint64 j = cfs_units_select(&q->l2, c - q->l2_start);

		qcow2_fill_table(q, dst, coff, n, 8, j * QCOW2_L2_ENTRIES,
				 qcow2_l2_entry);
	} else if (c >= q->rb_start) {
		qcow2_fill_table(q, dst, coff, n, 2,
				 (c - q->rb_start) * QCOW2_RB_ENTRIES,
				 qcow2_rb_entry);
	} else if (c >= q->rt_start) {
		qcow2_fill_table(q, dst, coff, n, 8,
				 (c - q->rt_start) * QCOW2_RT_ENTRIES,
				 qcow2_rt_entry);
	} else if (c >= q->l1_start) {
		qcow2_fill_table(q, dst, coff, n, 8,
				 (c - q->l1_start) * QCOW2_L2_ENTRIES,
				 qcow2_l1_entry);
	}
	return true;
}

static void qcow2_layout(Qcow2View *q)
{
	guint64 fixed, rt = 1, rb = 1;

	q->l1_entries = cfs_div_up(q->vsize, QCOW2_CLUSTER * QCOW2_L2_ENTRIES);
	q->l1_n = cfs_div_up(q->l1_entries * 8, QCOW2_CLUSTER);
	fixed = 1 + q->l1_n + q->l2.total + q->data.total;
	/* The refcount blocks count themselves: grow until they fit. */
	for (;;) {
		guint64 total = fixed + rt + rb;
		guint64 need_rb = cfs_div_up(total, QCOW2_RB_ENTRIES);
		guint64 need_rt = cfs_div_up(need_rb, QCOW2_RT_ENTRIES);

		if (need_rb <= rb && need_rt <= rt)
			break;
		rb = MAX(rb, need_rb);
		rt = MAX(rt, need_rt);
	}
	q->l1_start = 1;
	q->rt_start = q->l1_start + q->l1_n;
	q->rt_n = rt;
	q->rb_start = q->rt_start + rt;
	q->rb_n = rb;
	q->l2_start = q->rb_start + rb;
	q->data_start = q->l2_start + q->l2.total;
	q->total = q->data_start + q->data.total;
}

static void qcow2_header(Qcow2View *q)
{
	guint8 *p = q->header;

	memset(p, 0, sizeof(q->header));
	memcpy(p, "QFI\xfb", 4);
	cfs_put_be32(p + 4, 3);				/* version */
	cfs_put_be32(p + 20, QCOW2_CLUSTER_BITS);
	cfs_put_be64(p + 24, q->vsize);
	cfs_put_be32(p + 36, q->l1_entries);		/* l1_size */
	cfs_put_be64(p + 40, q->l1_start << QCOW2_CLUSTER_BITS);
	cfs_put_be64(p + 48, q->rt_start << QCOW2_CLUSTER_BITS);
	cfs_put_be32(p + 56, q->rt_n);
	/* no snapshots; incompatible, compatible, autoclear features 0 */
	cfs_put_be32(p + 96, 4);			/* refcount_order */
	cfs_put_be32(p + 100, QCOW2_HEADER_LEN);
	/* The header extension area that follows is zeros: its end marker. */
}

static void qcow2_destroy(CfsView *view)
{
	Qcow2View *q = (Qcow2View *)view;

	cfs_units_clear(&q->data);
	cfs_units_clear(&q->l2);
}

static const CfsViewOps qcow2_ops = {
	.fill = qcow2_fill,
	.destroy = qcow2_destroy,
};

static CfsView *qcow2_create(CfsExtentMap *map, GError **error)
{
	Qcow2View *q = (Qcow2View *)cfs_view_alloc(sizeof(Qcow2View),
						   &cfs_format_qcow2,
						   &qcow2_ops, map);

	q->vsize = cfs_div_up(map->size, 512) * 512;
	cfs_units_init(&q->data, map, QCOW2_CLUSTER);
	cfs_units_group(&q->l2, &q->data, QCOW2_L2_ENTRIES);
	qcow2_layout(q);
	qcow2_header(q);
	q->head.size = q->total << QCOW2_CLUSTER_BITS;
	return &q->head;
}

const CfsFormat cfs_format_qcow2 = {
	.name = "qcow2",
	.create = qcow2_create,
};
