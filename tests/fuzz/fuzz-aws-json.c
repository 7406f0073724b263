// SPDX-License-Identifier: MIT
/*
 * EBS direct JSON answers: pages of ListSnapshotBlocks (block size, block
 * indexes and tokens, the volume size, paging) and JSON error bodies.
 */
#include "providers/aws/ebs.c"
#include "tests/fuzz/fuzz-common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	g_autofree char *text = g_strndup((const char *)data, size);
	g_autoptr(GArray) blocks = g_array_new(FALSE, FALSE, sizeof(EbsBlock));
	g_autoptr(GError) error = NULL;
	g_autoptr(CfsHttpRequest) req = cfs_http_request_new("http://h/");
	g_autofree char *err = NULL;
	EbsSource es = { 0 };
	guint64 gib = 0;
	char *next = NULL;
	guint pages = 0;

	if (ebs_parse_page(text, &es, blocks, &gib, &next, &pages, "fuzz",
			   &error)) {
		if (gib > (CFS_DISK_SIZE_MAX >> 30) + 1)
			abort();
		for (guint i = 0; i < blocks->len; i++) {
			EbsBlock *b = &g_array_index(blocks, EbsBlock, i);

			/* index × size never wraps */
			if (!b->token || b->index >= G_MAXUINT64 / es.block_size)
				abort();
		}
	}
	for (guint i = 0; i < blocks->len; i++)
		g_free(g_array_index(blocks, EbsBlock, i).token);
	g_free(next);
	req->response = g_byte_array_new();
	g_byte_array_append(req->response, data, (guint)MIN(size, G_MAXUINT));
	g_hash_table_insert(req->resp_headers, g_strdup("x-amzn-errortype"),
			    g_strndup(text, 64));
	err = aws_error_text(req);
	return 0;
}
