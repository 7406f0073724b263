# SPDX-License-Identifier: MIT
"""Fixtures that mount the real cloudfs daemon against local servers.

`http_server` runs tests/emulators/httpserver.py on 127.0.0.1; `mount`
starts `cloudfs -f` on a temporary folder with a config naming the images,
and on teardown unmounts it, checks the daemon exited 0 and that its log
holds no sanitizer report and no CRITICAL line.  Image factories write
random and sparse images with known seeds.  The helpers below are imported
by the test modules (`from conftest import ...`).
"""

import contextlib
import errno
import functools
import hashlib
import json
import os
import random
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from procs import stop_process

REPO = Path(__file__).resolve().parents[2]
HTTP_SERVER = REPO / "tests" / "emulators" / "httpserver.py"

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30

MOUNT_TIMEOUT = 15
EXIT_TIMEOUT = 20
TEST_DEADLINE = 240  # a test that runs longer has its daemons killed

BAD_LOG_PATTERNS = ("ERROR: AddressSanitizer", "runtime error:",
                    "LeakSanitizer", "WARNING: ThreadSanitizer", "CRITICAL")

DAEMON_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0",
    "UBSAN_OPTIONS": "print_stacktrace=1",
}


# --- small helpers ----------------------------------------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With CFS_NO_SKIP=1 (tools/test, which installs every tool and
    emulator first) a skipped test fails: an emulator that did not build
    must not pass for a green run."""
    outcome = yield
    rep = outcome.get_result()
    if (os.environ.get("CFS_NO_SKIP") == "1" and rep.skipped
            and not hasattr(rep, "wasxfail")):
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) \
            else str(rep.longrepr)
        rep.outcome = "failed"
        rep.longrepr = "skipped, and CFS_NO_SKIP=1: %s" % reason


def sha256_file(path, bufsize=4 * MiB):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            buf = f.read(bufsize)
            if not buf:
                return h.hexdigest()
            h.update(buf)


def wait_until(predicate, timeout, interval=0.05, what="condition"):
    """Poll predicate() until it returns a true value; return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("timed out after %gs waiting for %s"
                               % (timeout, what))
        time.sleep(interval)


def read_all(path):
    """Read a file to EOF with plain reads (works when st_size is 0)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        parts = []
        while True:
            buf = os.read(fd, 64 * KiB)
            if not buf:
                return b"".join(parts)
            parts.append(buf)
    finally:
        os.close(fd)


def parse_progress_line(line):
    """`url/x/disk.raw state=... error="..."` -> {"path": ..., "state": ...}"""
    tokens = shlex.split(line)
    assert tokens, "empty .progress line"
    entry = {"path": tokens[0]}
    for token in tokens[1:]:
        key, sep, value = token.partition("=")
        assert sep, "field without '=' in .progress line %r" % line
        entry[key] = value
    return entry


def parse_progress(text):
    return [parse_progress_line(line) for line in text.splitlines()
            if line.strip()]


def data_extents(fd, size):
    """The [start, end) ranges that SEEK_DATA/SEEK_HOLE report for fd."""
    extents = []
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                break
            raise
        end = os.lseek(fd, start, os.SEEK_HOLE)
        extents.append((start, end))
        pos = end
    return extents


def allocated_bytes(path):
    """Bytes allocated on disk under path (a file or a folder), like du."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_blocks * 512
    total = 0
    for root, dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call_with_timeout(fn, timeout=60):
    """Run fn() in a thread so that a hung FUSE read fails the test instead
    of blocking the suite; re-raise what fn raised."""
    result = {}

    def target():
        try:
            result["value"] = fn()
        except BaseException as exc:  # handed to the caller
            result["error"] = exc
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError("no answer within %gs" % timeout)
    if "error" in result:
        raise result["error"]
    return result["value"]


def read_range(path, offset, length, timeout=60):
    """open + pread through the mount, with a timeout."""
    def read():
        fd = os.open(path, os.O_RDONLY)
        try:
            return os.pread(fd, length, offset)
        finally:
            os.close(fd)
    return call_with_timeout(read, timeout)


def run_tool(argv, timeout=120):
    """Run a copy tool; fail the test with its output if it fails."""
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=timeout)
    assert proc.returncode == 0, "%s exited %d:\n%s" % (
        shlex.join(map(str, argv)), proc.returncode,
        proc.stdout.decode(errors="replace")[-4000:])
    return proc


# --- images -----------------------------------------------------------------

class Image:
    """An image written on the local disk, with its size and hash."""

    def __init__(self, path, size):
        self.path = Path(path)
        self.size = size

    @property
    def name(self):
        return self.path.name

    @functools.cached_property
    def sha256(self):
        return sha256_file(self.path)

    def read(self, offset, length):
        with open(self.path, "rb") as f:
            return os.pread(f.fileno(), length, offset)


def write_random(f, offset, length, seed):
    rnd = random.Random(seed)
    f.seek(offset)
    while length:
        n = min(length, 8 * MiB)
        f.write(rnd.randbytes(n))
        length -= n


def make_random_image(path, size, seed=1):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        write_random(f, 0, size, seed)
    return Image(path, size)


def make_sparse_image(path, size, extents, seed=1):
    """An image of size bytes, holes everywhere but extents [(offset, len)]."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        os.truncate(f.fileno(), size)
        for i, (offset, length) in enumerate(extents):
            write_random(f, offset, length, seed * 1000 + i)
    return Image(path, size)


@pytest.fixture
def images(tmp_path):
    """Factory of images in a folder that the http server serves."""
    class Images:
        root = tmp_path / "www"

        def random(self, name, size, seed=1):
            return make_random_image(self.root / name, size, seed)

        def sparse(self, name, size, extents, seed=1):
            return make_sparse_image(self.root / name, size, extents, seed)

    Images.root.mkdir(exist_ok=True)
    return Images()


# --- the http server --------------------------------------------------------

class HttpServer:
    """tests/emulators/httpserver.py in a child process."""

    def __init__(self, root, log, tls=None):
        self.root = Path(root)
        self.log = open(log, "wb")
        self.tls = tls
        extra = ["--tls", *map(str, tls)] if tls else []
        self.proc = subprocess.Popen(
            [sys.executable, str(HTTP_SERVER), "--root", str(root), *extra],
            stdout=subprocess.PIPE, stderr=self.log)
        line = self.proc.stdout.readline().decode()
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError("http server did not start: %r" % line)
        self.port = int(line.split()[1])
        self.base = "%s://127.0.0.1:%d" % ("https" if tls else "http",
                                           self.port)

    def url(self, name):
        return "%s/%s" % (self.base, name)

    def control(self, what, **params):
        query = urllib.parse.urlencode(params)
        ctx = None
        if self.tls:
            import ssl
            ctx = ssl.create_default_context(cafile=str(self.tls[0]))
        with urllib.request.urlopen("%s/_control/%s?%s" % (self.base, what, query),
                                    timeout=10, context=ctx) as resp:
            return json.load(resp)

    def stats(self, name=None):
        """All counters, or those of one served file (zeros if untouched)."""
        stats = self.control("stats")
        if name is None:
            return stats
        return stats.get("/" + name, {"requests": 0, "bytes": 0,
                                      "data_bytes": 0, "ranges": []})

    def data_bytes(self, name):
        """Body bytes sent for name, probes (bytes=0-0) left out."""
        return self.stats(name)["data_bytes"]

    def injected(self):
        return self.control("stats").get("_faults", {})

    def faults(self, **params):
        """Replace the faults; booleans become 1/0."""
        params = {k: int(v) if isinstance(v, bool) else v
                  for k, v in params.items()}
        return self.control("faults", **params)

    def reset(self):
        return self.control("reset")

    def stop(self):
        stop_process(self.proc, 5)
        self.proc.stdout.close()
        self.log.close()


@pytest.fixture
def http_server(tmp_path, images):
    server = HttpServer(images.root, tmp_path / "httpserver.log")
    yield server
    server.stop()


# --- the daemon -------------------------------------------------------------

@pytest.fixture(scope="session")
def cloudfs_bin():
    path = Path(os.environ.get("CLOUDFS_BIN", REPO / "build" / "cloudfs"))
    if not path.is_absolute():
        path = REPO / path
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.skip("no cloudfs binary at %s (build it, or set CLOUDFS_BIN)"
                    % path)
    if not os.path.exists("/dev/fuse"):
        pytest.skip("/dev/fuse is missing")
    if shutil.which("fusermount3") is None:
        pytest.skip("fusermount3 is missing (Debian package fuse3)")
    return path


def daemon_env():
    env = dict(os.environ)
    env.update(DAEMON_ENV)
    return env


def write_config(path, urls=None, text=None):
    """Write an INI config: [url] name = URL for each item, or raw text."""
    if text is None:
        text = "[url]\n" + "".join("%s = %s\n" % (name, url)
                                   for name, url in (urls or {}).items())
    Path(path).write_text(text)
    return Path(path)


def format_options(options):
    return ",".join(k if v is True else "%s=%s" % (k, v)
                    for k, v in options.items() if v is not None
                    and v is not False)


class Mount:
    """One running daemon and its mount point."""

    def __init__(self, binary, path, config, cache_dir, log, options):
        self.path = Path(path)
        self.config = Path(config)
        self.cache_dir = Path(cache_dir)
        self.log = Path(log)
        self.options = dict(options)
        self.killed = False
        self.exit_code = None
        self.path.mkdir(parents=True, exist_ok=True)
        opts = {"config": config, "cache_dir": cache_dir}
        opts.update(options)
        self.argv = [str(binary), "-f", "-o", format_options(opts), str(path)]
        with open(log, "ab") as logf:
            logf.write(("$ %s\n" % shlex.join(self.argv)).encode())
            logf.flush()
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                         stdout=logf, stderr=logf,
                                         env=daemon_env())
        self.pid = self.proc.pid
        try:
            wait_until(self._mounted_or_dead, MOUNT_TIMEOUT, what="the mount")
        except TimeoutError:
            self.kill()
            self.unmount(check=False)
            pytest.fail("cloudfs did not mount %s within %ds; log:\n%s"
                        % (path, MOUNT_TIMEOUT, self.log_tail()))
        if not self.is_mounted():
            self.exit_code = self.proc.wait()
            pytest.fail("cloudfs exited %d before mounting; log:\n%s"
                        % (self.exit_code, self.log_tail()))

    def _mounted_or_dead(self):
        return self.is_mounted() or self.proc.poll() is not None

    def is_mounted(self):
        return os.path.ismount(self.path)

    # paths
    def vm(self, name, provider="url"):
        return self.path / provider / name

    def disk(self, vm, ext="raw", provider="url"):
        return self.vm(vm, provider) / ("disk." + ext)

    # progress
    def progress(self, rel=""):
        """Parsed lines of MOUNT/<rel>/.progress or of MOUNT/<rel> if it
        already ends in .progress."""
        path = self.path / rel
        if not path.name.endswith(".progress"):
            path = path / ".progress"
        return parse_progress(read_all(path).decode())

    def disk_progress(self, vm, ext="raw"):
        lines = self.progress("url/%s/disk.%s.progress" % (vm, ext))
        assert len(lines) == 1, "disk .progress has %d lines" % len(lines)
        return lines[0]

    def wait_state(self, rel, states, timeout=30):
        """Wait until the one line of .progress file rel is in states."""
        states = {states} if isinstance(states, str) else set(states)
        last = {}

        def check():
            last["lines"] = self.progress(rel)
            line = last["lines"][0] if last["lines"] else {}
            return line if line.get("state") in states else None
        try:
            return wait_until(check, timeout, interval=0.1,
                              what="%s in %s" % (rel, sorted(states)))
        except TimeoutError as exc:
            raise AssertionError("%s; last .progress: %r"
                                 % (exc, last.get("lines"))) from None

    @contextlib.contextmanager
    def watch_progress(self, rel, interval=0.05):
        """While the body runs, a thread reads .progress file rel every
        interval seconds; yields the list of first lines it saw."""
        seen = []
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                lines = self.progress(rel)
                if lines:
                    seen.append(lines[0])
                time.sleep(interval)
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            yield seen
        finally:
            stop.set()
            watcher.join(5)

    # lifecycle
    def log_text(self):
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n=60):
        """The end of the log, or from the first sanitizer/CRITICAL line."""
        lines = self.log_text().splitlines()
        for i, line in enumerate(lines):
            if any(p in line for p in BAD_LOG_PATTERNS):
                return "\n".join(lines[max(i - 2, 0):i + 2 * n])
        return "\n".join(lines[-n:])

    def kill(self):
        """SIGKILL the daemon; the mount stays until unmount()."""
        if self.proc.poll() is None:
            self.killed = True
            self.proc.kill()
        self.proc.wait()

    def unmount(self, check=True):
        """Unmount and wait for the daemon; with check, it must exit 0."""
        if self.is_mounted():
            res = subprocess.run(["fusermount3", "-u", str(self.path)],
                                 capture_output=True)
            if res.returncode != 0:
                subprocess.run(["fusermount3", "-u", "-z", str(self.path)],
                               capture_output=True)
        try:
            self.exit_code = self.proc.wait(EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            if check:
                pytest.fail("cloudfs did not exit within %ds of the unmount;"
                            " log:\n%s" % (EXIT_TIMEOUT, self.log_tail()))
        if check and not self.killed:
            assert self.exit_code == 0, \
                "cloudfs exited %d after unmount; log:\n%s" % (
                    self.exit_code, self.log_tail())
        return self.exit_code

    def check_log(self):
        text = self.log_text()
        bad = [p for p in BAD_LOG_PATTERNS if p in text]
        assert not bad, "cloudfs log (%s) has %s:\n%s" % (
            self.log, bad, self.log_tail())


class MountFactory:
    """mount(urls, options=..., cache_dir=...) -> Mount; cleans up after."""

    def __init__(self, binary, tmp_path):
        self.binary = binary
        self.tmp_path = tmp_path
        self.mounts = []
        self.timed_out = False
        self.watchdog = threading.Timer(TEST_DEADLINE, self._expire)
        self.watchdog.daemon = True
        self.watchdog.start()

    def __call__(self, urls=None, *, config_text=None, options=None,
                 cache_dir=None, name=None):
        n = len(self.mounts)
        name = name or "m%d" % n
        config = write_config(self.tmp_path / ("%s.conf" % name), urls,
                              config_text)
        cache_dir = Path(cache_dir or self.tmp_path / ("%s-cache" % name))
        m = Mount(self.binary, self.tmp_path / ("%s-mnt" % name), config,
                  cache_dir, self.tmp_path / ("%s.log" % name),
                  options or {})
        self.mounts.append(m)
        return m

    def _expire(self):
        """A hung read would block the suite: kill the daemons to free it."""
        self.timed_out = True
        for m in self.mounts:
            if m.proc.poll() is None:
                m.proc.kill()
            subprocess.run(["fusermount3", "-u", "-z", str(m.path)],
                           capture_output=True)

    def finish(self):
        self.watchdog.cancel()
        errors = []
        for m in self.mounts:
            for check in (m.unmount, m.check_log):
                try:
                    check()
                except (AssertionError, pytest.fail.Exception) as exc:
                    errors.append("%s: %s" % (m.path.name, exc))
                    break
        if self.timed_out:
            errors.insert(0, "test ran over %ds; its daemons were killed"
                          % TEST_DEADLINE)
        if errors:
            pytest.fail("\n\n".join(errors), pytrace=False)


@pytest.fixture
def mount(cloudfs_bin, tmp_path):
    factory = MountFactory(cloudfs_bin, tmp_path)
    yield factory
    factory.finish()


def run_daemon(binary, *args, timeout=20):
    """Run the daemon to completion (for --help and bad options)."""
    return subprocess.run([str(binary), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=daemon_env(),
                          stdin=subprocess.DEVNULL)
