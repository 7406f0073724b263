# SPDX-License-Identifier: MIT
"""The local cache: its layout, reuse across mounts, resuming after the
daemon was killed, and the size limit."""

import hashlib
import stat
import subprocess
import threading

from conftest import (MiB, allocated_bytes, daemon_env, run_tool, sha256_file,
                      wait_until, write_config)


def test_cache_layout_and_reuse(http_server, images, mount, tmp_path):
    img = images.random("web01.raw", 8 * MiB, seed=41)
    urls = {"web01": http_server.url(img.name)}
    cache = tmp_path / "cache"
    m = mount(urls, cache_dir=cache)
    run_tool(["cp", m.disk("web01"), tmp_path / "first.raw"])
    m.unmount()

    folders = [p for p in cache.rglob("*") if p.is_dir()]
    files = [p for p in cache.rglob("*") if p.is_file()]
    assert folders and len(files) >= 2, "expected a folder with a data file" \
        " and a bitmap, found %s" % sorted(map(str, folders + files))
    for p in folders:
        assert stat.S_IMODE(p.stat().st_mode) == 0o700, p
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p

    sent = http_server.data_bytes(img.name)
    m2 = mount(urls, cache_dir=cache)
    before_open = m2.disk_progress("web01")
    dst = tmp_path / "second.raw"
    run_tool(["cp", m2.disk("web01"), dst])
    assert sha256_file(dst) == img.sha256
    assert http_server.data_bytes(img.name) == sent, \
        "a cached image was fetched again"
    assert before_open["state"] == "complete", before_open
    assert int(before_open["bytes"]) == img.size, \
        "before the first open .progress should count what the cache holds"


def test_resume_after_sigkill(http_server, images, mount, tmp_path):
    chunk = MiB
    img = images.random("web01.raw", 64 * MiB, seed=42)
    urls = {"web01": http_server.url(img.name)}
    options = {"chunk_size": "1M", "parallel": 2}
    cache = tmp_path / "cache"

    http_server.faults(stall=0.05, ranged_only=True)  # a copy of ~2 s
    m = mount(urls, options=options, cache_dir=cache)
    copier = subprocess.Popen(["cp", str(m.disk("web01")),
                               str(tmp_path / "cut.raw")],
                              stderr=subprocess.DEVNULL)
    wait_until(lambda: http_server.data_bytes(img.name) >= 16 * MiB, 60,
               what="16 MiB sent")
    m.kill()
    copier.wait(30)
    m.unmount()
    first = http_server.data_bytes(img.name)
    assert first < img.size, "the copy ended before the daemon was killed"

    http_server.faults()
    m2 = mount(urls, options=options, cache_dir=cache)
    kept = int(m2.disk_progress("web01")["bytes"])
    dst = tmp_path / "copy.raw"
    run_tool(["cp", m2.disk("web01"), dst])
    assert sha256_file(dst) == img.sha256

    total = http_server.data_bytes(img.name)
    assert total <= img.size + 4 * chunk, \
        "%d bytes sent over both mounts for a %d-byte image" % (
            total, img.size)
    assert kept >= first - 4 * chunk, \
        "before the first open .progress showed %d bytes cached; %d had" \
        " been sent" % (kept, first)


class CacheSampler:
    """Samples the allocated size of a folder in a thread; keeps the max."""

    def __init__(self, path, interval=0.02):
        self.path = path
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(self.interval)

    def sample(self):
        self.peak = max(self.peak, allocated_bytes(self.path))
        self.samples += 1

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.sample()


def test_cache_size_bounds_the_cache(http_server, images, mount, tmp_path):
    limit, chunk, parallel = 16 * MiB, MiB, 4
    img = images.random("web01.raw", 64 * MiB, seed=43)
    m = mount({"web01": http_server.url(img.name)},
              options={"cache_size": "16M", "chunk_size": "1M",
                       "parallel": parallel})

    digest = hashlib.sha256()
    with CacheSampler(m.cache_dir) as sampler, \
            open(m.disk("web01"), "rb") as f:
        while True:
            buf = f.read(chunk)
            if not buf:
                break
            digest.update(buf)
            sampler.sample()
    assert digest.hexdigest() == img.sha256
    assert sampler.samples >= 64
    bound = limit + parallel * chunk + MiB
    assert sampler.peak <= bound, \
        "the cache reached %.1f MiB (bound %.1f MiB)" % (
            sampler.peak / MiB, bound / MiB)


def test_daemon_makes_chunks_durable(cloudfs_bin, http_server, images,
                                     tmp_path):
    """Started as a daemon (no -f), chunks read are made durable within
    seconds while the disk stays open, not only at close: the thread that
    syncs them must run in the daemon, which forks after the cache store
    is made."""
    img = images.random("web01.raw", 8 * MiB, seed=45)
    conf = write_config(tmp_path / "cloudfs.conf",
                        {"web01": http_server.url(img.name)})
    cache, mnt = tmp_path / "cache", tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run([str(cloudfs_bin), "-o", "config=%s,cache_dir=%s,"
                    "chunk_size=1M" % (conf, cache), str(mnt)],
                   check=True, timeout=30, env=daemon_env(),
                   stdin=subprocess.DEVNULL)
    try:
        disk = mnt / "url" / "web01" / "disk.raw"
        with open(disk, "rb") as f:
            assert f.read(4 * MiB) == img.read(0, 4 * MiB)
            durable = next(cache.rglob("durable"))
            wait_until(lambda: any(durable.read_bytes()), 10,
                       what="a durable chunk while the disk is open")
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], timeout=30)
    # The daemon exits once unmounted; its cache folder is unlocked.
    wait_until(lambda: subprocess.run(
        ["pgrep", "-f", "cache_dir=%s," % cache],
        capture_output=True).returncode != 0, 30, what="the daemon to exit")
