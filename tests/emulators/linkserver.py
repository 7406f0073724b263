#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A file server that behaves like a link to a cloud: every answer waits
for its first byte, each connection carries a limited rate, and all of
them together may share a cap. Serves the files of one folder with HEAD,
GET, Range (one range) and keep-alive, sending bodies with sendfile so
that it costs little CPU.

    linkserver.py ROOT [--delay 0.03] [--rate 64M] [--total 0]
                  [--max-inflight 0] [--port 0]

It prints, flushed, "PORT <port>" once it listens, and serves until
SIGTERM or SIGINT.

--delay S        seconds before each answer's first byte
--rate R         bytes/s per connection (K, M, G suffixes; 0: unlimited)
--total R        bytes/s of all connections together (0: unlimited)
--max-inflight N answer 503 Slow Down (Retry-After: 0) to a request that
                 arrives while N others are being answered (0: never)

A folder answers an HTML index of its files (rclone's http backend lists
a site that way).

GET /_link/stats answers {"requests", "inflight_peak", "throttled",
"bytes"}; POST /_link/stats/reset zeroes them.
"""

import argparse
import html
import json
import os
import signal
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SLICE = 256 * 1024


def parse_rate(text):
    text = text.strip().upper().rstrip("B").rstrip("I")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    return int(float(text.rstrip("KMG") or 0) * mult)


class Pacer:
    """Bytes at a rate: reserve() says how long to wait before sending."""

    def __init__(self, rate):
        self.rate = rate
        self.next = time.monotonic()
        self.lock = threading.Lock()

    def reserve(self, n):
        if not self.rate:
            return 0.0
        with self.lock:
            now = time.monotonic()
            start = max(self.next, now - 0.05)   # a little burst at most
            self.next = start + n / self.rate
            return max(0.0, start - now)


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        self.requests = self.peak = self.throttled = self.bytes = 0
        self.inflight = 0

    def as_dict(self):
        with self.lock:
            return {"requests": self.requests, "inflight_peak": self.peak,
                    "throttled": self.throttled, "bytes": self.bytes}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "linkserver"

    def log_message(self, *args):
        pass

    def _plain(self, status, body, extra=()):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _control(self):
        st = self.server.stats
        if self.path == "/_link/stats/reset":
            with st.lock:
                st.reset()
        self._plain(200, json.dumps(st.as_dict()).encode(),
                    [("Content-Type", "application/json")])

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        self._control()

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        if self.path.startswith("/_link/"):
            self._control()
            return
        srv, st = self.server, self.server.stats
        with st.lock:
            st.requests += 1
            busy = srv.max_inflight and st.inflight >= srv.max_inflight
            if busy:
                st.throttled += 1
            else:
                st.inflight += 1
                st.peak = max(st.peak, st.inflight)
        if busy:
            self._plain(503, b"<Error><Code>SlowDown</Code></Error>",
                        [("Retry-After", "0")])
            return
        try:
            self._serve()
        finally:
            with st.lock:
                st.inflight -= 1

    def _index(self, path):
        """A folder as a web server's index page: what rclone's http
        backend and browsers read."""
        names = sorted(n + ("/" if os.path.isdir(os.path.join(path, n))
                            else "") for n in os.listdir(path))
        body = "<html><body>\n%s</body></html>\n" % "".join(
            '<a href="%s">%s</a><br>\n' % (html.escape(urllib.parse.quote(n)),
                                          html.escape(n)) for n in names)
        self._plain(200, body.encode(), [("Content-Type",
                                          "text/html; charset=utf-8")])

    def _serve(self):
        srv = self.server
        path = os.path.realpath(os.path.join(srv.root,
                                             self.path.split("?")[0]
                                             .lstrip("/")))
        if srv.delay:
            time.sleep(srv.delay)
        if path == srv.root or (path.startswith(srv.root + os.sep) and
                                os.path.isdir(path)):
            self._index(path)
            return
        if not path.startswith(srv.root + os.sep) or \
                not os.path.isfile(path):
            self._plain(404, b"not found")
            return
        size = os.path.getsize(path)
        start, end, status = 0, size - 1, 200
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes=") and "," not in rng:
            a, _, b = rng[6:].partition("-")
            try:
                if a:
                    start, end = int(a), min(int(b) if b else size - 1,
                                             size - 1)
                else:
                    start, end = max(0, size - int(b)), size - 1
            except ValueError:
                start, end = 0, -1
            if start > end or start >= size:
                self._plain(416, b"", [("Content-Range",
                                        "bytes */%d" % size)])
                return
            status = 206
        self.send_response(status)
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        st = os.stat(path)
        self.send_header("ETag", '"%x-%x"' % (int(st.st_mtime), size))
        self.send_header("Last-Modified", self.date_time_string(
            int(st.st_mtime)))
        if status == 206:
            self.send_header("Content-Range", "bytes %d-%d/%d"
                             % (start, end, size))
        self.end_headers()
        if self.command == "HEAD":
            return
        self.wfile.flush()
        conn = Pacer(srv.rate)
        sock = self.connection.fileno()
        with open(path, "rb") as f:
            pos, left = start, end - start + 1
            while left > 0:
                n = min(SLICE, left)
                wait = max(conn.reserve(n), srv.total.reserve(n))
                if wait:
                    time.sleep(wait)
                sent = os.sendfile(sock, f.fileno(), pos, n)
                if sent <= 0:
                    raise ConnectionError("client went away")
                pos += sent
                left -= sent
                with srv.stats.lock:
                    srv.stats.bytes += sent


class LinkServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def handle_error(self, request, client_address):
        # A client that has what it wants closes its connections early
        # (aria2c does at the end of a download): not an error here.
        if isinstance(sys.exc_info()[1], (BrokenPipeError,
                                          ConnectionResetError)):
            return
        super().handle_error(request, client_address)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root")
    ap.add_argument("--delay", type=float, default=0.03)
    ap.add_argument("--rate", default="64M")
    ap.add_argument("--total", default="0")
    ap.add_argument("--max-inflight", type=int, default=0)
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    srv = LinkServer(("127.0.0.1", args.port), Handler)
    srv.root = os.path.realpath(args.root)
    srv.delay = args.delay
    srv.rate = parse_rate(args.rate)
    srv.total = Pacer(parse_rate(args.total))
    srv.max_inflight = args.max_inflight
    srv.stats = Stats()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: threading.Thread(
            target=srv.shutdown, daemon=True).start())
    print("PORT %d" % srv.server_address[1], flush=True)
    srv.serve_forever(poll_interval=0.2)
    sys.exit(0)


if __name__ == "__main__":
    main()
