#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A local stand-in for Azure's control plane (Entra ID tokens, managed
identity, ARM: resource groups, VMs, managed disks, snapshots and their
SAS grants), whose disk bytes live as page blobs in a real Azurite.
Standard library only; the resource model is in azure_model.py.

    python3 azure_fake.py --azurite http://127.0.0.1:BLOBPORT [--port 0]
                          [--proxy-port 0] [--no-proxy]

prints, flushed, once it listens:

    PROXY <port>        the counting blob pass-through (unless --no-proxy)
    PORT <port>         token, IMDS, ARM and /_control on http://127.0.0.1:PORT

With the proxy, every accessSAS points at it (same path and query as in
Azurite, so the signature still holds) and it counts range GETs, page
lists and bytes per blob; it costs one extra loopback hop in Python.
Without it, SAS URLs point straight at Azurite and nothing counts blob
reads.  See azure_model.py for the request shapes and the control API.
"""

import argparse
import http.client
import http.server
import json
import os
import signal
import sys
import threading
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from azure_blob import BlobClient  # noqa: E402
from azure_model import ArmError, Cloud  # noqa: E402

COPY_PIECE = 1 << 20


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "cloudfs-test-azure/1"

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send(self, status, obj=None, headers=(), raw=None):
        if raw is not None:
            data = raw
        elif obj is None:
            data = b""
        else:
            data = json.dumps(obj).encode()
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        if obj is not None or raw is not None:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def dispatch(self):
        url = urllib.parse.urlsplit(self.path)
        body = self.body()
        cloud = self.server.cloud
        host = self.headers.get("Host") or "127.0.0.1:%d" % self.server.port
        try:
            status, obj, headers = cloud.handle(
                self.command, url.path, url.query, self.headers, body,
                "http://" + host)
        except ArmError as err:
            status, obj, headers = err.status, err.body(), err.headers
        except Exception as exc:  # a bug here must show, not hang a client
            import traceback
            traceback.print_exc()
            status, obj, headers = 500, {"error": {
                "code": "InternalServerError", "message": repr(exc)}}, []
        self.send(status, obj, headers)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = dispatch


class ProxyHandler(http.server.BaseHTTPRequestHandler):
    """Forwards blob requests to Azurite unchanged; counts and faults."""

    protocol_version = "HTTP/1.1"
    server_version = "cloudfs-test-blobproxy/1"
    HOP = ("connection", "keep-alive", "transfer-encoding", "host",
           "proxy-connection", "te", "upgrade")

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("proxy %s\n" % (fmt % args))

    def upstream(self):
        conn = getattr(self, "_upstream", None)
        if conn is None:
            conn = http.client.HTTPConnection(self.server.azurite_host,
                                              self.server.azurite_port,
                                              timeout=120)
            self._upstream = conn
        return conn

    def forward(self):
        cloud = self.server.cloud
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        rng = self.headers.get("x-ms-range") or self.headers.get("Range")
        kind = cloud.blob_kind(self.command, url.query, rng)
        fault = cloud.blob_begin(url.path, kind, self.command, rng, url.query)
        if fault is not None:
            status, code, message, retry_after = fault
            data = ('<?xml version="1.0" encoding="utf-8"?><Error><Code>%s'
                    "</Code><Message>%s</Message></Error>"
                    % (code, message)).encode()
            self.send_response(status)
            self.send_header("x-ms-error-code", code)
            self.send_header("Content-Type", "application/xml")
            if retry_after is not None:
                self.send_header("Retry-After", str(retry_after))
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            cloud.blob_end(url.path, kind, status, 0)
            return
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in self.HOP}
        headers["Host"] = "%s:%d" % (self.server.azurite_host,
                                     self.server.azurite_port)
        sent = 0
        status = 502
        try:
            try:
                conn = self.upstream()
                conn.request(self.command, self.path, body=body,
                             headers=headers)
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException):
                self._upstream = None
                conn = self.upstream()
                conn.request(self.command, self.path, body=body,
                             headers=headers)
                resp = conn.getresponse()
            status = resp.status
            if kind == "pagelist" and status == 200:
                sent = self.answer_pagelist(resp, url.query)
                return
            self.send_response(status)
            rlen = resp.getheader("Content-Length")
            for k, v in resp.getheaders():
                if k.lower() not in self.HOP and k.lower() != "content-length":
                    self.send_header(k, v)
            if rlen is None and self.command != "HEAD":
                data = resp.read()
                rlen = str(len(data))
                self.send_header("Content-Length", rlen)
                self.end_headers()
                self.wfile.write(data)
                sent = len(data)
            else:
                self.send_header("Content-Length", rlen or "0")
                self.end_headers()
                while self.command != "HEAD":
                    piece = resp.read(COPY_PIECE)
                    if not piece:
                        break
                    self.wfile.write(piece)
                    sent += len(piece)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            cloud.blob_end(url.path, kind, status, sent)

    def answer_pagelist(self, resp, query):
        """Send a page list, cut into pages when the client or the
        pagelist_max setting asks for it; return the bytes sent."""
        data = resp.read()
        status = 200
        try:
            paged = self.server.cloud.page_pagelist(query, data.decode())
        except ValueError:
            status = 400
            paged = ('<?xml version="1.0" encoding="utf-8"?><Error><Code>'
                     "InvalidQueryParameterValue</Code><Message>Value for "
                     "one of the query parameters specified in the request "
                     "URI is invalid.</Message></Error>")
        if paged is not None:
            data = paged.encode()
        self.send_response(status)
        for k, v in resp.getheaders():
            if k.lower() not in self.HOP and k.lower() != "content-length":
                self.send_header(k, v)
        if status == 400:
            self.send_header("x-ms-error-code", "InvalidQueryParameterValue")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        return len(data)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = forward


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--azurite", required=True,
                    help="Azurite blob endpoint, http://127.0.0.1:PORT")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--proxy-port", type=int, default=0)
    ap.add_argument("--no-proxy", action="store_true")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()

    blob = BlobClient(args.azurite)
    server = Server(("127.0.0.1", args.port), Handler)
    server.verbose = args.verbose
    server.port = server.server_address[1]
    sas_base = args.azurite.rstrip("/")
    proxy = None
    if not args.no_proxy:
        proxy = Server(("127.0.0.1", args.proxy_port), ProxyHandler)
        proxy.verbose = args.verbose
        proxy.azurite_host = blob.host
        proxy.azurite_port = blob.port
        sas_base = "http://127.0.0.1:%d" % proxy.server_address[1]
    cloud = Cloud(blob, sas_base)
    server.cloud = cloud
    threads = [threading.Thread(target=server.serve_forever, daemon=True)]
    if proxy is not None:
        proxy.cloud = cloud
        threads.append(threading.Thread(target=proxy.serve_forever,
                                        daemon=True))
        print("PROXY %d" % proxy.server_address[1], flush=True)
    for t in threads:
        t.start()
    print("PORT %d" % server.port, flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    # Operations finish on time even when nobody polls them (a grant
    # ended by endGetAccess must stop working without another ARM call).
    while not stop.wait(0.02):
        cloud.advance()
    server.shutdown()
    if proxy is not None:
        proxy.shutdown()


if __name__ == "__main__":
    main()
