# SPDX-License-Identifier: MIT
"""Browsing must not cost money: a file manager or `file` that opens
every disk of a folder to sniff it, then closes it, leaves no snapshot
behind a few seconds later; a real copy still starts at once and
completes."""

import os
import shutil
import subprocess

import pytest

from aws_fixtures import AwsLauncher, aws_config, moto_python
from conftest import KiB, MiB, make_sparse_image, read_range, wait_until


@pytest.fixture(scope="module")
def launcher(tmp_path_factory):
    if moto_python() is None:
        pytest.skip("moto is not installed in any python3 on PATH")
    if shutil.which("file") is None:
        pytest.skip("file is not installed")
    root = tmp_path_factory.mktemp("browse")
    a = make_sparse_image(root / "a.raw", 48 * MiB,
                          [(0, 40 * MiB)], seed=1)
    b = make_sparse_image(root / "b.raw", 8 * MiB, [(0, 64 * KiB)], seed=2)
    emu = AwsLauncher(root / "launcher", [
        {"name": "a01", "volumes": [{"device": "/dev/xvda",
                                     "raw": str(a.path)}]},
        {"name": "b01", "volumes": [{"device": "/dev/xvda",
                                     "raw": str(b.path)}]},
    ], snapshot_seconds=0.5)
    emu.images = {"a01": a, "b01": b}
    yield emu
    emu.stop()


@pytest.fixture
def aws_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


def test_file_and_ls_leave_nothing_behind(launcher, aws_env, mount,
                                          tmp_path):
    # A cache smaller than the disk: no whole-disk fill, which would
    # complete the export while `file` reads its first megabytes.
    m = mount(config_text=aws_config(launcher),
              options={"formats": "raw", "cache_size": "16M"})
    disks = sorted(p for vm in (m.path / "aws").iterdir() if vm.is_dir()
                   for p in vm.iterdir()
                   if p.suffix in (".vmdk", ".raw"))
    assert len(disks) == 4
    out = subprocess.run(["file", *map(str, disks)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    subprocess.run(["ls", "-lR", str(m.path)], capture_output=True,
                   timeout=60, check=True)
    assert launcher.calls("CreateSnapshot") >= 1, "nothing was opened?"
    wait_until(lambda: launcher.cloudfs_snapshots() == [], 30,
               what="the glanced-at exports to be given back")
    assert "closed after a glance" in m.log_text()

    # A real read starts a new export at once and gets the bytes.
    vm = m.path / "aws" / launcher.instance("a01")["instance_id"]
    img = launcher.images["a01"]
    n = launcher.calls("CreateSnapshot")
    data = read_range(vm / "disk.raw", 0, img.size, timeout=120)
    assert data == img.path.read_bytes()
    assert launcher.calls("CreateSnapshot") == n + 1
