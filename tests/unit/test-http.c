// SPDX-License-Identifier: MIT
/*
 * What an endpoint can make the HTTP worker do: an answer larger than
 * anything an API sends is cut off with an error, not buffered whole.
 */
#include <arpa/inet.h>
#include <glib.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/error.h"
#include "common/http.h"

typedef struct {
	int listener;
	guint64 sent;	/* atomic enough: read after join */
} Server;

/* Answer one request with a body of 1 GiB of zeros, until the client
 * goes away. */
static gpointer server_run(gpointer data)
{
	static const char head[] = "HTTP/1.1 200 OK\r\n"
				   "Content-Type: application/json\r\n"
				   "Content-Length: 1073741824\r\n\r\n";
	Server *s = data;
	char buf[65536];
	int fd = accept(s->listener, NULL, NULL);

	g_assert_cmpint(fd, >=, 0);
	g_assert_cmpint(read(fd, buf, sizeof(buf)), >, 0);
	g_assert_cmpint(write(fd, head, strlen(head)), ==, strlen(head));
	memset(buf, ' ', sizeof(buf));
	while (s->sent < (1ULL << 30)) {
		ssize_t n = send(fd, buf, sizeof(buf), MSG_NOSIGNAL);

		if (n <= 0)
			break;
		s->sent += (guint64)n;
	}
	close(fd);
	return NULL;
}

static void test_body_limit(void)
{
	Server s = { 0 };
	struct sockaddr_in addr = { .sin_family = AF_INET };
	socklen_t len = sizeof(addr);
	CfsHttpConfig config;
	CfsHttp *http;
	GThread *thread;
	g_autoptr(CfsHttpRequest) req = NULL;
	g_autoptr(GError) error = NULL;
	g_autofree char *url = NULL;

	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	s.listener = socket(AF_INET, SOCK_STREAM, 0);
	g_assert_cmpint(bind(s.listener, (struct sockaddr *)&addr,
			     sizeof(addr)), ==, 0);
	g_assert_cmpint(listen(s.listener, 1), ==, 0);
	g_assert_cmpint(getsockname(s.listener, (struct sockaddr *)&addr,
				    &len), ==, 0);
	url = g_strdup_printf("http://127.0.0.1:%u/list",
			      ntohs(addr.sin_port));
	thread = g_thread_new("server", server_run, &s);

	cfs_http_config_init(&config);
	http = cfs_http_new(&config, &error);
	g_assert_no_error(error);
	req = cfs_http_request_new(url);
	req->max_attempts = 1;
	g_assert_false(cfs_http_perform(http, req, &error));
	g_assert_error(error, CFS_ERROR, EIO);
	g_assert_nonnull(strstr(error->message, "larger than"));
	g_assert_true(!req->response || req->response->len <= 64 << 20);
	cfs_http_free(http);
	g_thread_join(thread);
	close(s.listener);
	g_assert_cmpuint(s.sent, <, 1ULL << 30);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/http/body-limit", test_body_limit);
	return g_test_run();
}
