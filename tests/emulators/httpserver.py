#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A static HTTP/1.1 file server for the integration tests.

Serves the files under --root with ranges, HEAD, ETag and Last-Modified,
counts what it sends per path, and injects faults (503/429, cut
connections, fixed statuses, no range support, stalls, a rate limit) that
the tests switch at run time through /_control.  Standard library only.

    python3 httpserver.py --root DIR [--port 0]      prints "PORT <n>"

Control API (GET, or POST with a form or JSON body):
    /_control/stats            {path: {requests, bytes, data_bytes,
                                       inflight, max_inflight, ranges},
                                "_faults": {kind: count injected}}
                               data_bytes leaves out probes (bytes=0-0);
                               ranges has one record per request (method,
                               range, query, status, start, end, sent, and
                               the began/ended times, time.monotonic())
    /_control/reset            clear the counters and the faults
    /_control/faults?k=v&...   replace the faults (no parameters: none)

Fault parameters:
    path=/x          faults apply only to this path (default: every path)
    ranged_only=1    faults apply only to GETs with a Range other than
                     bytes=0-0, so a probe passes
    status=N         answer N (e.g. 404, 403) with no body
    fail_every=N     answer fail_status to every Nth request
    fail_prob=P      ... or with probability P, seeded by seed=S
    fail_status=N    status of those failures (default 503)
    retry_after=S    send Retry-After: S with them
    cut_every=N      on every Nth request that was not failed, send the
                     headers and cut_after=K bytes of the body, then reset
    norange=1        ignore Range: answer 200 with the whole body
    nolength=1       with norange: no Content-Length (a stream whose
                     length shows at its end; the connection closes)
    stall=S          sleep S seconds before answering (stall_every=N: only
                     every Nth request)
    rate=B           send bodies at B bytes per second per connection
"""

import argparse
import email.utils
import http.server
import json
import os
import random
import re
import signal
import socket
import struct
import sys
import threading
import time
import urllib.parse

PROBE_RANGE = "bytes=0-0"
SEND_PIECE = 1 << 20


class Faults:
    """The fault settings and the counters that decide who gets one."""

    INT_KEYS = ("status", "fail_every", "fail_status", "cut_every",
                "cut_after", "stall_every", "rate", "seed", "retry_after")
    FLOAT_KEYS = ("fail_prob", "stall")
    BOOL_KEYS = ("ranged_only", "norange", "nolength")

    def __init__(self, params=None):
        self.path = None
        self.status = 0
        self.fail_every = 0
        self.fail_prob = 0.0
        self.fail_status = 503
        self.retry_after = 0
        self.cut_every = 0
        self.cut_after = 0
        self.norange = False
        self.nolength = False
        self.stall = 0.0
        self.stall_every = 1
        self.rate = 0
        self.ranged_only = False
        self.seed = 0
        for key, value in (params or {}).items():
            self._set(key, value)
        self.random = random.Random(self.seed)
        self.seen = 0  # eligible requests so far
        self.passed = 0  # eligible requests not failed

    def _set(self, key, value):
        if isinstance(value, list):
            value = value[-1]
        if key == "path":
            self.path = str(value)
        elif key in self.INT_KEYS:
            setattr(self, key, int(value))
        elif key in self.FLOAT_KEYS:
            setattr(self, key, float(value))
        elif key in self.BOOL_KEYS:
            setattr(self, key, str(value).lower() in ("1", "true", "yes", "on"))
        else:
            raise ValueError("unknown fault parameter %r" % key)

    def describe(self):
        return {k: v for k, v in vars(self).items()
            if k not in ("random", "seen", "passed")}

    def applies(self, method, path, range_header):
        if self.path is not None and path != self.path:
            return False
        if self.ranged_only:
            return method == "GET" and range_header not in (None, PROBE_RANGE)
        return True

    def decide(self):
        """Count one eligible request; return the faults it gets.

        Called with the server lock held."""
        self.seen += 1
        plan = {"status": self.status, "fail": 0, "cut": None,
                "stall": 0.0, "norange": self.norange, "rate": self.rate,
                "nolength": self.norange and self.nolength}
        if self.stall and self.seen % max(self.stall_every, 1) == 0:
            plan["stall"] = self.stall
        if self.status:
            return plan
        if (self.fail_every and self.seen % self.fail_every == 0) or \
                (self.fail_prob and self.random.random() < self.fail_prob):
            plan["fail"] = self.fail_status
            return plan
        self.passed += 1
        if self.cut_every and self.passed % self.cut_every == 0:
            plan["cut"] = self.cut_after
        return plan


class State:
    """Counters per path and the current faults; one lock guards both."""

    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        self.stats = {}
        self.faults = Faults()
        self.injected = {}

    def record(self, path, **fields):
        """Start the record of one request; the caller adds to it."""
        entry = self.stats.setdefault(path, {"requests": 0, "bytes": 0,
                                             "data_bytes": 0, "inflight": 0,
                                             "max_inflight": 0, "ranges": []})
        entry["requests"] += 1
        entry["inflight"] += 1
        entry["max_inflight"] = max(entry["max_inflight"], entry["inflight"])
        rec = dict(fields, status=0, start=None, end=None, sent=0,
                   began=time.monotonic(), ended=None)
        entry["ranges"].append(rec)
        return entry, rec

    def count_fault(self, kind):
        self.injected[kind] = self.injected.get(kind, 0) + 1

    def snapshot(self):
        with self.lock:
            out = json.loads(json.dumps(self.stats))
            out["_faults"] = dict(self.injected)
            return out


def parse_range(header, size):
    """Return (start, end) inclusive, None to ignore, or "unsatisfiable"."""
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*(,.*)?", header or "")
    if not m or (m.group(1) == "" and m.group(2) == ""):
        return None
    first, last = m.group(1), m.group(2)
    if first == "":
        length = int(last)
        if length == 0:
            return "unsatisfiable"
        return (max(size - length, 0), size - 1)
    start = int(first)
    end = size - 1 if last == "" else min(int(last), size - 1)
    if start >= size or (last != "" and int(last) < start):
        return "unsatisfiable"
    return (start, end)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "cloudfs-test-httpserver/1"

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))

    # --- control API -----------------------------------------------------

    def control(self, url):
        params = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            body = self.rfile.read(length).decode()
            if body.lstrip().startswith("{"):
                params.update(json.loads(body))
            else:
                params.update(urllib.parse.parse_qs(body))
        state = self.server.state
        what = url.path[len("/_control/"):].strip("/")
        if what == "stats":
            return self.reply_json(200, state.snapshot())
        if what == "reset":
            with state.lock:
                state.reset()
            return self.reply_json(200, {"ok": True})
        if what == "faults":
            try:
                faults = Faults(params)
            except ValueError as exc:
                return self.reply_json(400, {"error": str(exc)})
            with state.lock:
                state.faults = faults
            return self.reply_json(200, faults.describe())
        return self.reply_json(404, {"error": "no such control " + what})

    def reply_json(self, status, obj):
        body = (json.dumps(obj, indent=1) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    # --- files -----------------------------------------------------------

    def do_GET(self):
        self.serve(head=False)

    def do_HEAD(self):
        self.serve(head=True)

    def do_POST(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path.startswith("/_control/"):
            return self.control(url)
        self.reply_empty(405)

    def reply_empty(self, status, headers=()):
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def local_path(self, path):
        rel = urllib.parse.unquote(path).lstrip("/")
        full = os.path.realpath(os.path.join(self.server.root, rel))
        if full != self.server.root and \
                not full.startswith(self.server.root + os.sep):
            return None
        return full if os.path.isfile(full) else None

    def serve(self, head):
        url = urllib.parse.urlsplit(self.path)
        if url.path.startswith("/_control/"):
            return self.control(url)
        state = self.server.state
        with state.lock:
            entry, rec = state.record(url.path, method=self.command,
                                      range=self.headers.get("Range"),
                                      query=url.query)
        try:
            self.serve_counted(head, url, entry, rec)
        finally:
            with state.lock:
                entry["inflight"] -= 1
                rec["ended"] = time.monotonic()

    def serve_counted(self, head, url, entry, rec):
        state = self.server.state
        range_header = rec["range"]
        method = rec["method"]
        with state.lock:
            faults = state.faults
            plan = None
            if faults.applies(method, url.path, range_header):
                plan = faults.decide()
        if plan and plan["stall"]:
            with state.lock:
                state.count_fault("stall")
            time.sleep(plan["stall"])
        if plan and (plan["status"] or plan["fail"]):
            status = plan["status"] or plan["fail"]
            with state.lock:
                rec["status"] = status
                state.count_fault(str(status))
            headers = []
            if plan["fail"] and faults.retry_after:
                headers.append(("Retry-After", str(faults.retry_after)))
            return self.reply_empty(status, headers)

        full = self.local_path(url.path)
        if full is None:
            with state.lock:
                rec["status"] = 404
            return self.reply_empty(404)
        with open(full, "rb") as f:
            st = os.fstat(f.fileno())
            self.serve_file(f, st, head, range_header, plan, rec, entry)

    def serve_file(self, f, st, head, range_header, plan, rec, entry):
        state = self.server.state
        size = st.st_size
        etag = '"%x-%x-%x"' % (st.st_ino, st.st_size, st.st_mtime_ns)
        rng = None
        if range_header is not None and not (plan and plan["norange"]):
            if_range = self.headers.get("If-Range")
            if if_range is None or if_range == etag:
                rng = parse_range(range_header, size)
        if rng == "unsatisfiable":
            with state.lock:
                rec["status"] = 416
            return self.reply_empty(416, [("Content-Range", "bytes */%d" % size)])
        start, end = rng if rng else (0, size - 1)
        status = 206 if rng else 200
        length = end - start + 1
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        if plan and plan["nolength"] and not head:
            self.send_header("Connection", "close")
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(length))
        if rng:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end, size))
        if not (plan and plan["norange"]):
            self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        self.send_header("Last-Modified",
                         email.utils.formatdate(st.st_mtime, usegmt=True))
        self.end_headers()
        with state.lock:
            rec.update(status=status, start=start, end=end)
        if head or length <= 0:
            return
        limit = length
        cut = plan["cut"] if plan else None
        if cut is not None:
            limit = min(cut, length)
        rate = plan["rate"] if plan else 0
        try:
            self.send_body(f, start, limit, rate, rec, entry)
        finally:
            if cut is not None and limit < length:
                with state.lock:
                    state.count_fault("cut")
                self.cut_connection()

    def send_body(self, f, offset, count, rate, rec, entry):
        """Send count bytes of f from offset; count them as they go."""
        state = self.server.state
        sock = self.connection
        began = time.monotonic()
        done = 0
        while done < count:
            piece = min(count - done, SEND_PIECE)
            if rate:
                piece = min(piece, max(rate // 10, 1))
            try:
                n = os.sendfile(sock.fileno(), f.fileno(), offset + done, piece)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
                return
            if n == 0:
                break
            done += n
            with state.lock:
                rec["sent"] += n
                entry["bytes"] += n
                if rec["range"] != PROBE_RANGE:
                    entry["data_bytes"] += n
            if rate:
                ahead = done / rate - (time.monotonic() - began)
                if ahead > 0:
                    time.sleep(ahead)

    def cut_connection(self):
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address, root, verbose=False):
        super().__init__(address, Handler)
        self.root = os.path.realpath(root)
        self.verbose = verbose
        self.state = State()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", required=True, help="folder to serve")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()

    server = Server((args.bind, args.port), args.root, args.verbose)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("PORT %d" % server.server_address[1], flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
