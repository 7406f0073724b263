# SPDX-License-Identifier: MIT
"""Files carry the provider's times: a url image's Last-Modified (http)
or its mtime (file), for the VM's folder and every file in it; what the
provider does not date carries the mount's time, never 1970."""

import os
import time

from conftest import KiB

PAST = 1_600_000_000  # 2020-09-13


def test_times_come_from_the_provider(images, http_server, mount):
    a = images.random("a.raw", 64 * KiB, seed=1)
    b = images.random("b.raw", 64 * KiB, seed=2)
    os.utime(a.path, (PAST, PAST))
    os.utime(b.path, (PAST + 3600, PAST + 3600))
    before = time.time() - 5
    m = mount({"a": "file://%s" % a.path, "b": http_server.url(b.name)})
    for vm, want in (("a", PAST), ("b", PAST + 3600)):
        for path in (m.vm(vm), m.vm(vm) / "info.json", m.disk(vm),
                     m.vm(vm) / "disk.raw.progress"):
            assert int(path.stat().st_mtime) == want, \
                "%s: %d, not %d" % (path, path.stat().st_mtime, want)
    for path in (m.path, m.path / "url", m.path / ".progress"):
        assert path.stat().st_mtime >= before, path
