# SPDX-License-Identifier: MIT
"""Transfers over a link like a cloud's (tests/emulators/linkserver.py):
the fetch window grows where the first byte is late, backs off when the
server says "slow down", and never makes a reader's own read wait behind
prefetch; disk files report the data they hold in st_blocks."""

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import (MiB, allocated_bytes, read_range, sha256_file,
                      wait_until)

EMULATOR = Path(__file__).resolve().parents[1] / "emulators" / "linkserver.py"


class Link:
    def __init__(self, root, log, *args):
        self.log = open(log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(EMULATOR), str(root)] + list(args),
            stdout=subprocess.PIPE, stderr=self.log, stdin=subprocess.DEVNULL)
        line = self.proc.stdout.readline().decode()
        assert line.startswith("PORT "), "linkserver did not start"
        self.base = "http://127.0.0.1:%d/" % int(line.split()[1])

    def stats(self):
        with urllib.request.urlopen(self.base + "_link/stats") as r:
            return json.load(r)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()


@pytest.fixture
def link(tmp_path, images):
    started = []

    def start(*args):
        ln = Link(images.root, tmp_path / "link.log", *args)
        started.append(ln)
        return ln
    yield start
    for ln in started:
        ln.stop()


def test_window_grows_on_a_delayed_link(mount, images, link):
    img = images.random("img.raw", 96 * MiB)
    ln = link("--delay", "0.03", "--rate", "16M")
    m = mount({"img": ln.base + "img.raw"})
    assert sha256_file(m.disk("img")) == img.sha256
    stats = ln.stats()
    # 4 at first; the rate grew with more, so more were sent at once.
    assert stats["inflight_peak"] >= 8, stats
    assert stats["inflight_peak"] <= 64 + 2, stats


def test_backs_off_on_503(mount, images, link):
    img = images.random("img.raw", 48 * MiB)
    ln = link("--delay", "0.01", "--rate", "0", "--max-inflight", "3")
    m = mount({"img": ln.base + "img.raw"})
    assert sha256_file(m.disk("img")) == img.sha256
    stats = ln.stats()
    assert stats["throttled"] > 0, stats
    # Fewer at once after the first refusals, not a refusal per chunk.
    assert stats["throttled"] < stats["requests"] / 2, stats


def test_demand_reads_go_before_prefetch(mount, images, link):
    size = 512 * MiB
    img = images.sparse("img.raw", size, [(0, MiB), (size - MiB, MiB)])
    ln = link("--delay", "0.03", "--rate", "16M")
    m = mount({"img": ln.base + "img.raw"})
    disk = m.disk("img")
    done = threading.Event()

    def fill():
        with open(disk, "rb") as f:
            while f.read(4 * MiB) and not done.is_set():
                pass
    reader = threading.Thread(target=fill, daemon=True)
    reader.start()
    try:
        wait_until(lambda: ln.stats()["inflight_peak"] >= 8, 30,
                   what="the fill to grow its window")
        start = time.monotonic()
        got = read_range(disk, size - 4096, 4096)
        took = time.monotonic() - start
        assert got == img.read(size - 4096, 4096)
        # One chunk's request (30 ms + 4 MiB at 16 MiB/s), perhaps after
        # one running transfer frees a slot; not the fill's whole queue.
        assert took < 2.0, took
    finally:
        done.set()
        reader.join(60)


def test_st_blocks_counts_data(mount, tmp_path):
    size = 4 << 30
    path = tmp_path / "sparse.raw"
    with open(path, "wb") as f:
        os.truncate(f.fileno(), size)
        for off in (0, 1 << 30, size - MiB):
            f.seek(off)
            f.write(os.urandom(MiB))
    m = mount({"sp": "file://%s" % path})
    disk = m.disk("sp")
    st = os.stat(disk)
    assert st.st_size == size
    assert 3 * MiB <= st.st_blocks * 512 <= 4 * MiB, st.st_blocks
    du = subprocess.run(["du", "-k", str(disk)], capture_output=True,
                        text=True, check=True)
    assert int(du.stdout.split()[0]) <= 4 * 1024
    copy = tmp_path / "copy.raw"
    start = time.monotonic()
    subprocess.run(["cp", "--sparse=auto", str(disk), str(copy)], check=True,
                   timeout=60)
    took = time.monotonic() - start
    assert sha256_file(copy) == sha256_file(path)
    assert allocated_bytes(copy) <= 8 * MiB, allocated_bytes(copy)
    assert took < 20, took
