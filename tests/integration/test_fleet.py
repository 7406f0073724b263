# SPDX-License-Identifier: MIT
"""Fleets: each host mounts a share of the inventory. include/exclude
globs on VM names, and shard = K/N, a stable hash that places every VM on
exactly one of N mounts."""

import os

from conftest import KiB, run_daemon, write_config

NAMES = ["web%02d" % i for i in range(10)] + ["db01", "db02", "cache01"]


def fleet_config(images, http_server, extra=""):
    img = images.random("shared.raw", 64 * KiB, seed=1)
    lines = ["[url]"] + ["%s = %s" % (n, http_server.url(img.name))
                         for n in NAMES]
    return "\n".join(lines) + "\n" + extra


def shown(m):
    return sorted(os.listdir(m.path / "url")) if m else []


def test_shards_show_each_vm_exactly_once(images, http_server, mount):
    # A first listing probes 13 URLs: let the folder wait for it.
    mounts = [mount(config_text=fleet_config(images, http_server,
                                             "shard = %d/3\n" % k),
                    options={"list_wait": "60000"})
              for k in range(3)]
    parts = [[n for n in shown(m) if not n.startswith(".")] for m in mounts]
    seen = sorted(n for part in parts for n in part)
    assert seen == sorted(NAMES), parts
    assert all(parts), "a shard got nothing: %s" % parts
    # Stable: the same split again.
    again = mount(config_text=fleet_config(images, http_server,
                                           "shard = 1/3\n"),
                  options={"list_wait": "60000"})
    assert [n for n in shown(again) if not n.startswith(".")] == parts[1]


def test_include_and_exclude(images, http_server, mount):
    m = mount(config_text=fleet_config(
        images, http_server, "include = web0*;db*\nexclude = web05, db02\n"),
        options={"list_wait": "60000"})
    names = [n for n in shown(m) if not n.startswith(".")]
    assert names == sorted(["web00", "web01", "web02", "web03", "web04",
                            "web06", "web07", "web08", "web09", "db01"])


def test_bad_shard_is_refused(cloudfs_bin, tmp_path):
    config = write_config(tmp_path / "bad.conf",
                          text="[url]\nshard = 3/3\n")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    out = run_daemon(cloudfs_bin, "-f", "-o", "config=%s,cache_dir=%s"
                     % (config, tmp_path / "cache"), mnt)
    assert out.returncode != 0
    assert "shard" in out.stderr and "3/3" in out.stderr, out.stderr
