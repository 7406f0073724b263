# SPDX-License-Identifier: MIT
"""Readers that give up, transfers that stall, and a cache disk that fills:
the daemon answers each with an error or a retry, never wrong bytes."""

import errno
import os
import signal
import subprocess
import time

import pytest

from conftest import MiB, read_range, run_tool, sha256_file


def test_interrupted_read_returns_at_once(http_server, images, mount):
    """A read parked on a chunk that does not come is interrupted by a
    signal: dd handles SIGINT, so the kernel sends FUSE_INTERRUPT for its
    direct read and waits for the daemon's answer. The daemon stays
    healthy. (Page-cache reads are not interruptible in FUSE; a fatal
    signal ends them without the daemon.)"""
    img = images.random("web01.raw", 4 * MiB, seed=51)
    m = mount({"web01": http_server.url(img.name)},
              options={"chunk_size": "1M"})
    disk = m.disk("web01")
    assert disk.stat().st_size == img.size

    http_server.faults(ranged_only=True, stall=6)
    reader = subprocess.Popen(["dd", "if=%s" % disk, "of=/dev/null",
                               "bs=64k", "count=1", "iflag=direct"],
                              stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    assert reader.poll() is None, "the read did not wait for the server"
    started = time.monotonic()
    reader.send_signal(signal.SIGINT)
    reader.wait(timeout=10)
    waited = time.monotonic() - started
    assert waited < 3, "an interrupted read took %.1f s to return" % waited

    http_server.faults()
    assert read_range(disk, 0, img.size) == img.read(0, img.size)


def test_stalled_transfer_is_retried(http_server, images, mount, tmp_path):
    """A server that sends nothing for longer than stall_timeout has its
    request cut and sent again."""
    img = images.random("web01.raw", 4 * MiB, seed=52)
    http_server.faults(ranged_only=True, stall=40, stall_every=2)
    m = mount({"web01": http_server.url(img.name)},
              options={"chunk_size": "1M", "stall_timeout": 2})

    dst = tmp_path / "copy.raw"
    started = time.monotonic()
    run_tool(["cp", m.disk("web01"), dst], timeout=120)
    took = time.monotonic() - started
    assert sha256_file(dst) == img.sha256
    assert sum(http_server.injected().values()) > 0, "no request stalled"
    assert took < 40, "a stalled request was waited out (%.0f s)" % took


@pytest.fixture
def small_cache_fs(tmp_path):
    """An 8 MiB tmpfs to hold the cache: a disk that fills up."""
    path = tmp_path / "cachefs"
    path.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m",
                          "tmpfs", str(path)], capture_output=True, text=True)
    if res.returncode:
        pytest.skip("cannot mount a tmpfs here: %s" % res.stderr.strip())
    yield path
    subprocess.run(["umount", "-l", str(path)], check=False)


def test_full_cache_disk_fails_reads(http_server, images, mount, tmp_path,
                                     small_cache_fs):
    img = images.random("web01.raw", 32 * MiB, seed=53)
    m = mount({"web01": http_server.url(img.name)},
              cache_dir=small_cache_fs / "cache",
              options={"chunk_size": "1M", "cache_size": "0",
                       "min_free": "0"})

    dst = tmp_path / "copy.raw"
    res = subprocess.run(["cp", str(m.disk("web01")), str(dst)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode != 0, "a copy larger than the cache disk succeeded"
    assert "No space left on device" in res.stderr, res.stderr
    # What was copied before the error is right.
    copied = dst.stat().st_size
    with open(dst, "rb") as f:
        assert f.read() == img.read(0, copied)

    line = m.wait_state("url/web01/disk.raw.progress", "failed")
    assert "No space left" in line.get("error", ""), line

    # Reads of chunks that made it into the cache still work.
    with pytest.raises(OSError) as exc:
        read_range(m.disk("web01"), img.size - MiB, MiB)
    assert exc.value.errno == errno.ENOSPC
    assert read_range(m.disk("web01"), 0, 4096) == img.read(0, 4096)
