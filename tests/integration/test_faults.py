# SPDX-License-Identifier: MIT
"""A server that misbehaves: throttling, cut connections, final errors,
no range support, and URLs that fail from the start."""

import errno
import json
import os
import threading
import time

import pytest

from conftest import (MiB, free_port, read_all, read_range, run_tool,
                      sha256_file)

TRANSIENT_FAULTS = {
    "503-every-3rd": dict(fail_every=3),
    "429-every-3rd": dict(fail_every=3, fail_status=429, retry_after=0),
    "cut-mid-body": dict(cut_every=2, cut_after=300 * 1024),
    "503-and-cuts": dict(fail_every=3, cut_every=3, cut_after=100 * 1024),
}


@pytest.mark.parametrize("faults", list(TRANSIENT_FAULTS.values()),
                         ids=list(TRANSIENT_FAULTS))
def test_transient_faults_give_identical_copies(faults, http_server, images,
                                                mount, tmp_path):
    img = images.random("web01.raw", 16 * MiB, seed=31)
    http_server.faults(ranged_only=True, **faults)
    m = mount({"web01": http_server.url(img.name)},
              options={"chunk_size": "1M"})

    dst = tmp_path / "copy.raw"
    run_tool(["cp", m.disk("web01"), dst], timeout=180)
    assert sha256_file(dst) == img.sha256
    assert sum(http_server.injected().values()) > 0, "no fault was injected"
    line = m.wait_state("url/web01/disk.raw.progress", "complete")
    assert int(line["bytes"]) == img.size


@pytest.mark.parametrize("status", [404, 403])
def test_final_status_after_probe_fails_reads(status, http_server, images,
                                              mount):
    img = images.random("web01.raw", 8 * MiB, seed=32)
    m = mount({"web01": http_server.url(img.name)})
    disk = m.disk("web01")
    assert disk.stat().st_size == img.size  # the probe went through

    http_server.faults(status=status)
    with pytest.raises(OSError) as exc:
        read_range(disk, 0, MiB)
    # The errno says why: a refusal is not an I/O error.
    assert exc.value.errno == (errno.EACCES if status == 403 else errno.EIO)

    line = m.wait_state("url/web01/disk.raw.progress", "failed", timeout=15)
    assert str(status) in line.get("error", ""), line
    vm_line = m.progress("url/web01")[0]
    assert vm_line["state"] == "failed"
    assert str(status) in vm_line.get("error", "")


def failing_url(failure, http_server, images):
    """A URL that fails its probe in the given way, and the status to see."""
    if failure == "404":
        return http_server.url("missing.raw"), "404"
    if failure == "403":
        images.random("secret.raw", MiB, seed=33)
        http_server.faults(status=403, path="/secret.raw")
        return http_server.url("secret.raw"), "403"
    return "http://127.0.0.1:%d/a.raw" % free_port(), None


@pytest.mark.parametrize("failure", ["404", "403", "refused"])
def test_probe_failure_leaves_no_disk(failure, http_server, images, mount,
                                      tmp_path):
    url, status = failing_url(failure, http_server, images)
    good = images.random("good.raw", 2 * MiB, seed=34)
    m = mount({"bad": url, "good": http_server.url(good.name)})

    line = m.wait_state("url/bad", "failed", timeout=30)
    assert line["path"] == "url/bad" or line["path"].startswith("url/bad/"), \
        line
    assert line.get("error"), "failed without an error: %r" % line
    if status:
        assert status in line["error"], line
    vm = m.vm("bad")
    assert not [n for n in os.listdir(vm) if n.startswith("disk")]
    assert (vm / "info.json").is_file()
    assert json.loads(read_all(vm / "info.json"))["name"] == "bad"

    dst = tmp_path / "good.raw"  # the other VM is not affected
    run_tool(["cp", m.disk("good"), dst])
    assert sha256_file(dst) == good.sha256


def test_server_without_ranges(http_server, images, mount, tmp_path):
    img = images.random("web01.raw", 16 * MiB, seed=35)
    http_server.faults(norange=True)
    m = mount({"web01": http_server.url(img.name)},
              options={"chunk_size": "1M"})
    disk = m.disk("web01")
    assert disk.stat().st_size == img.size
    info = json.loads(read_all(m.vm("web01") / "info.json"))
    assert info["source"] == "stream"

    dst = tmp_path / "copy.raw"
    run_tool(["cp", disk, dst])
    assert sha256_file(dst) == img.sha256
    sent = http_server.data_bytes(img.name)
    assert sent <= 2 * img.size, \
        "%d bytes sent for a %d-byte image read as a stream" % (sent, img.size)
    m.wait_state("url/web01/disk.raw.progress", "complete")


def test_throttled_retries_wait_for_retry_after(http_server, images, mount):
    """A 429 that says Retry-After: 2 is not tried again sooner."""
    img = images.random("slow.raw", 1 * MiB, seed=32)
    m = mount({"slow": http_server.url(img.name)},
              options={"chunk_size": "1M"})
    assert m.disk("slow").stat().st_size == img.size
    http_server.faults(ranged_only=True, fail_every=1, fail_status=429,
                       retry_after=2, path="/" + img.name)
    # Only the first ranged request fails: the fault table is replaced as
    # soon as the daemon has seen it.
    stop = threading.Event()

    def clear_after_first():
        while not stop.is_set():
            if sum(http_server.injected().values()):
                http_server.faults()
                return
            time.sleep(0.01)

    t = threading.Thread(target=clear_after_first)
    t.start()
    try:
        assert read_range(m.disk("slow"), 0, 4096) == img.read(0, 4096)
    finally:
        stop.set()
        t.join()
    recs = [r for r in http_server.stats(img.name)["ranges"]
            if r.get("range") not in (None, "bytes=0-0")]
    assert recs[0]["status"] == 429, recs
    assert recs[1]["began"] - recs[0]["began"] >= 1.9, recs[:2]
