// SPDX-License-Identifier: MIT
/*
 * HTTP answer headers as a server sends them (one per line), the
 * Content-Range of a 206, and URLs made safe to show.
 */
#include "common/http.c"
#include "tests/fuzz/fuzz-common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	g_autoptr(CfsHttpRequest) req = cfs_http_request_new("http://h/x");
	g_autofree char *text = g_strndup((const char *)data, size);
	g_autofree char *redacted = cfs_url_redact(text);
	g_autofree char *host = cfs_url_host(text);
	guint64 start, last, total;
	size_t pos = 0;

	while (pos < size) {
		const uint8_t *nl = memchr(data + pos, '\n', size - pos);
		size_t len = nl ? (size_t)(nl - (data + pos)) + 1 : size - pos;

		http_header_cb((char *)data + pos, 1, len, req);
		pos += len;
	}
	if (cfs_http_content_range(req, &start, &last, &total) &&
	    (start > last || last >= total))
		abort();
	(void)cfs_http_response_header(req, "content-type");
	return 0;
}
