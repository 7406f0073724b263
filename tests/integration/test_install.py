# SPDX-License-Identifier: MIT
"""Installing and mounting like any file system: what `meson install`
puts in place, an fstab-style `mount -t fuse.cloudfs` and `umount`, the
systemd unit (checked by systemd-analyze), the man pages (man
--warnings), --help and --version."""

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import (BAD_LOG_PATTERNS, MiB, daemon_env, read_all,
                      run_daemon, wait_until, write_config)

REPO = Path(__file__).resolve().parents[2]


def test_help_lists_every_option_with_its_default(cloudfs_bin):
    out = run_daemon(cloudfs_bin, "--help")
    assert out.returncode == 0
    for option in ("config=", "cache_dir=", "cache_size=", "min_free=",
                   "chunk_size=", "parallel=", "stall_timeout=",
                   "read_ahead=", "insecure", "formats=", "list_ttl=",
                   "list_wait=", "log=", "verbose"):
        line = next((l for l in out.stdout.splitlines() if option in l),
                    None)
        assert line, "--help does not list %s" % option
    for group in ("Cache:", "Transfers:", "Inventory:", "Logging:"):
        assert group in out.stdout


def test_version_names_the_libraries(cloudfs_bin):
    out = run_daemon(cloudfs_bin, "--version")
    assert out.returncode == 0
    text = out.stdout
    assert text.startswith("cloudfs ")
    assert "libfuse 3." in text and "libcurl/" in text and "OpenSSL" in text


def test_man_pages_have_no_warnings():
    if not shutil.which("man"):
        pytest.skip("man is not installed")
    for page in ("cloudfs.1", "cloudfs-progress.1"):
        out = subprocess.run(["man", "--warnings", "-l", str(REPO / "man" /
                                                            page)],
                             capture_output=True, text=True, timeout=60,
                             env={**os.environ, "MANWIDTH": "80"})
        assert out.returncode == 0, out.stderr
        assert out.stderr.strip() == "", out.stderr
        assert "OPTIONS" in out.stdout


def test_meson_install_puts_everything_in_place(cloudfs_bin, tmp_path):
    build = Path(cloudfs_bin).resolve().parent
    out = subprocess.run(["meson", "install", "-C", str(build), "--destdir",
                          str(tmp_path / "root"), "--no-rebuild", "--quiet"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    files = {str(p.relative_to(tmp_path / "root"))
             for p in (tmp_path / "root").rglob("*") if p.is_file()}
    for want in ("bin/cloudfs", "bin/cloudfs-progress",
                 "share/man/man1/cloudfs.1", "share/man/man1/cloudfs-progress.1",
                 "lib/systemd/system/cloudfs@.service"):
        assert any(f.endswith(want) for f in files), \
            "%s not installed: %s" % (want, sorted(files))


def test_systemd_unit_verifies(cloudfs_bin, tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    unit = (REPO / "systemd" / "cloudfs@.service").read_text()
    assert "ExecStop=/bin/fusermount3 -u /%I" in unit
    unit = unit.replace("/usr/bin/cloudfs", str(Path(cloudfs_bin).resolve()))
    path = tmp_path / "cloudfs@mnt-clouds.service"
    path.write_text(unit)
    out = subprocess.run(["systemd-analyze", "verify", "--man=no", str(path)],
                         capture_output=True, text=True, timeout=60)
    problems = [l for l in (out.stdout + out.stderr).splitlines()
                if "cloudfs@" in l]
    assert out.returncode == 0 and not problems, out.stdout + out.stderr


def daemon_pids(mountpoint):
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(mountpoint).encode() in cmd and any(
                a.endswith(b"cloudfs") for a in cmd[:1]):
            pids.append(int(proc.name))
    return pids


def test_fstab_style_mount_and_umount(cloudfs_bin, images, http_server,
                                      tmp_path):
    if os.geteuid() != 0 or not shutil.which("mount.fuse3"):
        pytest.skip("needs root and mount.fuse3 (Debian package fuse3)")
    img = images.random("fstab.raw", 2 * MiB, seed=5)
    config = write_config(tmp_path / "fstab.conf",
                          {"web": http_server.url(img.name)}, None)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    log = tmp_path / "fstab.log"
    binary = Path(cloudfs_bin).resolve()
    # mount(8) runs helpers with its own safe PATH: the daemon must be
    # where an installed one is. Put the build there for this test.
    installed = Path("/usr/local/bin/cloudfs")
    if installed.exists() and not installed.is_symlink():
        pytest.skip("%s is an installed cloudfs; not replacing it"
                    % installed)
    if installed.is_symlink():
        installed.unlink()
    installed.symlink_to(binary)
    opts = "config=%s,cache_dir=%s,log=%s,_netdev" % (
        config, tmp_path / "cache", log)
    try:
        out = subprocess.run(["mount", "-t", "fuse.cloudfs", "cloudfs",
                              str(mnt), "-o", opts], capture_output=True,
                             text=True, timeout=60, env=daemon_env())
    finally:
        installed.unlink()
    assert out.returncode == 0, out.stderr
    try:
        assert os.path.ismount(mnt)
        fstype = [l.split()[2] for l in open("/proc/mounts")
                  if l.split()[1] == str(mnt)]
        assert fstype == ["fuse.cloudfs"], fstype
        assert read_all(mnt / "url" / "web" / "disk.raw") == \
            img.path.read_bytes()
        pids = daemon_pids(mnt)
        assert pids, "no daemon runs for %s" % mnt
    finally:
        umount = subprocess.run(["umount", str(mnt)], capture_output=True,
                                text=True, timeout=60)
    assert umount.returncode == 0, umount.stderr
    wait_until(lambda: not daemon_pids(mnt), 20,
               what="the daemon to exit after umount")
    text = log.read_text()
    assert "mounted on" in text
    for bad in BAD_LOG_PATTERNS:
        assert bad not in text, text[-3000:]
