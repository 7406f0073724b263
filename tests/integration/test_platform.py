# SPDX-License-Identifier: MIT
"""The provider platform as a user sees it: a second instance of a
provider gets a folder of its own, and listing runs in the background,
every provider at once, so a provider that hangs never slows the tree or
another provider."""

import os
import time

from conftest import KiB, HttpServer, read_all, wait_until


def test_two_instances_of_a_provider(images, http_server, mount):
    a = images.random("a.raw", 64 * KiB, seed=1)
    b = images.random("b.raw", 64 * KiB, seed=2)
    m = mount(config_text="[url]\nweb = %s\n\n[url lab]\nweb = %s\n"
              % (http_server.url(a.name), http_server.url(b.name)))
    assert sorted(n for n in os.listdir(m.path) if not n.startswith(".")) \
        == ["url", "url-lab"]
    assert read_all(m.path / "url" / "web" / "disk.raw") == \
        a.path.read_bytes()
    assert read_all(m.path / "url-lab" / "web" / "disk.raw") == \
        b.path.read_bytes()


def test_a_hanging_provider_slows_nothing(images, tmp_path, mount):
    fast_img = images.random("fast.raw", 64 * KiB, seed=3)
    slow_img = images.random("slow.raw", 64 * KiB, seed=4)
    fast = HttpServer(images.root, tmp_path / "fast.log")
    slow = HttpServer(images.root, tmp_path / "slow.log")
    try:
        slow.faults(stall=4)    # every request waits 4 s
        m = mount(config_text="[url]\nfast = %s\n\n[url slow]\nslow = %s\n"
                  % (fast.url(fast_img.name), slow.url(slow_img.name)),
                  options={"list_wait": "300"})
        began = time.monotonic()
        names = os.listdir(m.path)
        assert time.monotonic() - began < 1.0, "ls MOUNT waited"
        assert {"url", "url-slow"} <= set(names)
        # The fast provider lists at once, while the other hangs.
        assert sorted(os.listdir(m.path / "url")) == [".progress", "fast"]
        began = time.monotonic()
        slow_names = os.listdir(m.path / "url-slow")
        waited = time.monotonic() - began
        assert waited < 3.0, "ls of a hanging provider took %.1fs" % waited
        assert slow_names == [".progress"]
        lines = m.progress("url-slow/.progress")
        assert [l["state"] for l in lines] == ["listing"], lines
        assert read_all(m.path / "url" / "fast" / "disk.raw") == \
            fast_img.path.read_bytes()
        slow.faults()
        wait_until(lambda: "slow" in os.listdir(m.path / "url-slow"), 30,
                   what="the slow provider's listing")
    finally:
        fast.stop()
        slow.stop()
