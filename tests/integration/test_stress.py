# SPDX-License-Identifier: MIT
"""Stress: many readers of disks and views, reads interrupted, a cache so
small that eviction runs all the time, and an unmount while reads wait.
tools/test runs this module under ASan and again with the ThreadSanitizer
build; the mount fixture fails a test whose daemon log has a report."""

import os
import random
import signal
import subprocess
import threading
import time

from conftest import KiB, MiB


def reader(path, size, seed, stop, errors, check=None):
    rnd = random.Random(seed)
    while not stop.is_set():
        off = rnd.randrange(0, size)
        length = rnd.randrange(1, 1 * MiB)
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                got = os.pread(fd, length, off)
            finally:
                os.close(fd)
        except OSError as exc:
            if not stop.is_set():
                errors.append("%s: %s" % (path, exc))
            return
        if check and got != check(off, len(got)):
            errors.append("%s: wrong bytes at %d" % (path, off))
            return


def interrupter(path, size, stop, seed):
    """dd readers killed in the middle of their reads."""
    rnd = random.Random(seed)
    while not stop.is_set():
        skip = rnd.randrange(0, size // (64 * KiB))
        proc = subprocess.Popen(["dd", "if=%s" % path, "of=/dev/null",
                                 "bs=64K", "skip=%d" % skip, "count=64",
                                 "iflag=direct"],
                                stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rnd.uniform(0.001, 0.05))
        proc.send_signal(rnd.choice([signal.SIGINT, signal.SIGKILL]))
        proc.wait()


def test_readers_interrupts_eviction_unmount(http_server, images, mount):
    imgs = [images.random("s%d.raw" % i, 6 * MiB, seed=90 + i)
            for i in range(2)]
    # A slow server keeps reads parked, so that interrupts and the
    # unmount find them waiting.
    http_server.faults(rate=8 * MiB)
    m = mount({"s%d" % i: http_server.url(img.name)
               for i, img in enumerate(imgs)},
              options={"chunk_size": "256K", "cache_size": "1M",
                       "min_free": "0", "formats": "vmdk:vhd:qcow2"})
    stop = threading.Event()
    errors = []
    threads = []
    for i, img in enumerate(imgs):
        vm = "s%d" % i
        raw = m.disk(vm)
        threads.append(threading.Thread(
            target=reader, args=(raw, img.size, i, stop, errors, img.read)))
        for ext in ("vmdk", "vhd", "qcow2"):
            view = m.disk(vm, ext)
            threads.append(threading.Thread(
                target=reader, args=(view, view.stat().st_size, i, stop,
                                     errors)))
        threads.append(threading.Thread(
            target=interrupter, args=(raw, img.size, stop, i)))
    for t in threads:
        t.daemon = True
        t.start()
    time.sleep(8)
    assert not errors, errors[:5]
    # Unmount while reads wait: the daemon ends them and exits cleanly.
    m.unmount()
    stop.set()
    for t in threads:
        t.join(30)
