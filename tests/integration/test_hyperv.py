# SPDX-License-Identifier: MIT
"""The hyperv provider against the Hyper-V emulator (winrm_fake.py and a
private smbd, see hyperv_fixtures.py): the tree and info.json, copies of
disk.vhdx over SMB and from a local export_mount checked byte for byte and
with qemu-img, faults (wrong passwords, a failing export, Receive
timeouts) and what the daemon leaves on the host (nothing)."""

import json
import os
import random
import re
import subprocess
import time

import pytest

from conftest import MiB, data_extents, read_range, run_tool, wait_until
from hyperv_fixtures import hyperv, hyperv_session  # noqa: F401,F811
from hyperv_fixtures import hyperv_config

WEB_DISK = "C:\\VMs\\web01\\web01.vhdx"
DB_DISK = "C:\\VMs\\db01\\db01.vhdx"
DB_DATA = "C:\\VMs\\db01\\data.vhdx"
DB_DATA_DIFF = "C:\\VMs\\db01\\data_8E3A.avhdx"
WEB_ID = "6f1c2b7e-52a7-4a57-9a39-0d0c9a6a1f01"
WEB_CREATED = 1700000000.25     # 2023-11-14T22:13:20.25Z


def sparse_raw(size, extents, seed):
    rnd = random.Random(seed)
    buf = bytearray(size)
    for off, length in extents:
        buf[off:off + length] = rnd.randbytes(length)
    return bytes(buf)


RAWS = {
    WEB_DISK: sparse_raw(8 * MiB, [(0, 64 * 1024), (5 * MiB, 4096)], 1),
    DB_DISK: sparse_raw(4 * MiB, [(0, 4096)], 2),
    DB_DATA_DIFF: sparse_raw(6 * MiB, [(MiB, 8192), (6 * MiB - 512, 512)], 3),
}
INVENTORY = {
    "vhds": [{"Path": DB_DATA, "Size": 6 * MiB},
             {"Path": DB_DATA_DIFF, "ParentPath": DB_DATA,
              "VhdType": "Differencing"}],
    "vms": [
        {"Name": "web01", "Id": WEB_ID, "State": "Running", "Generation": 2,
         "MemoryStartup": 2 * 1024 ** 3, "ProcessorCount": 2,
         "CreationTime": WEB_CREATED,
         "HardDrives": [{"ControllerType": "SCSI", "ControllerNumber": 0,
                         "ControllerLocation": 0, "Path": WEB_DISK}]},
        {"Name": "db01", "State": "Off", "Generation": 1,
         "Checkpoints": [{"Name": "nightly"}],
         "HardDrives": [{"ControllerType": "IDE", "ControllerLocation": 1,
                         "Path": DB_DATA_DIFF},
                        {"ControllerType": "IDE", "ControllerLocation": 0,
                         "Path": DB_DISK}]},
    ]}


@pytest.fixture
def hv(hyperv):
    hyperv.seed(INVENTORY, RAWS)
    hyperv.faults(export_seconds=0.5)
    return hyperv


def qemu_img(*args):
    return subprocess.run(["qemu-img", *map(str, args)], capture_output=True,
                          text=True)


def check_vhdx(path, raw_bytes, tmp_path):
    raw = tmp_path / ("seed-%s.raw" % path.name)
    raw.write_bytes(raw_bytes)
    r = qemu_img("check", "-f", "vhdx", path)
    assert r.returncode == 0, r.stdout + r.stderr
    r = qemu_img("compare", "-f", "raw", "-F", "vhdx", raw, path)
    assert r.returncode == 0, r.stdout + r.stderr


def left_on_host(hv):
    st = hv.state()
    return st["checkpoints"], st["export_folders"]


def assert_clean(hv, checkpoints=1):
    """Only the seeded "nightly" checkpoint of db01 is left."""
    try:
        wait_until(lambda: left_on_host(hv) == (checkpoints, []), 30,
                   what="checkpoints and exports removed")
    except TimeoutError:
        raise AssertionError("left on the host: %r" % (left_on_host(hv),))


# --- the tree ---------------------------------------------------------------

def test_tree_and_info_json(hv, mount, tmp_path):
    m = mount(config_text=hyperv_config(hv, tmp_path))
    root = m.path / "hyperv"
    assert sorted(os.listdir(root)) == [".progress", "db01", "web01"]
    assert {"disk.vhdx", "info.json"} <= set(os.listdir(root / "web01"))
    assert {"disk.vhdx", "disk1.vhdx"} <= set(os.listdir(root / "db01"))
    info = json.loads((root / "web01" / "info.json").read_text())
    assert info["id"] == WEB_ID and info["name"] == "web01"
    assert info["state"] == "Running" and info["generation"] == 2
    assert info["memory_startup"] == 2 * 1024 ** 3
    assert info["processor_count"] == 2
    [d] = info["disks"]
    assert d["path"] == WEB_DISK and d["file"] == "disk.vhdx"
    assert d["vhd_format"] == "VHDX" and d["size"] == 8 * MiB
    db = json.loads((root / "db01" / "info.json").read_text())
    assert db["state"] == "Off" and db["checkpoints"] == ["nightly"]
    # controller order: IDE 0:0 first; "nightly" put an avhdx on each
    boot, data = db["disks"]
    assert boot["controller"] == "IDE 0:0" and data["controller"] == "IDE 0:1"
    assert boot["parents"] == [DB_DISK] and boot["file"] == "disk.vhdx"
    assert data["parents"] == [DB_DATA_DIFF, DB_DATA]
    assert data["vhd_type"] == "Differencing" and data["size"] == 6 * MiB
    assert data["export_name"] == "data.vhdx"
    text = (root / "web01" / "info.json").read_text()
    assert hv.password not in text and hv.smb_password not in text
    assert info["created"] == "2023-11-14T22:13:20Z"
    stats = hv.stats()
    assert "Export-VM" not in stats["cmdlets"]
    assert "Checkpoint-VM" not in stats["cmdlets"]


def test_vm_creation_time(hv, mount, tmp_path):
    """Get-VM's CreationTime dates a VM's folder and files (db01's is a
    day ago, the fake's default); the provider folder has the mount's."""
    m = mount(config_text=hyperv_config(hv, tmp_path))
    root = m.path / "hyperv"
    web = root / "web01"
    for path in (web, web / "info.json", web / "disk.vhdx"):
        assert path.stat().st_mtime == int(WEB_CREATED), path
    day_ago = time.time() - 86400
    assert abs((root / "db01").stat().st_mtime - day_ago) < 120
    assert root.stat().st_mtime > day_ago + 3600


# --- copies -----------------------------------------------------------------

def exported_file(hv, vm, leaf):
    """The exported file while it exists on the host, else None."""
    for folder in os.listdir(hv.export_dir):
        path = os.path.join(hv.export_dir, folder, vm, "Virtual Hard Disks",
                            leaf)
        if os.path.exists(path):
            return path
    return None


def copy_and_check(hv, m, tmp_path, vm, name, raw, leaf):
    disk = m.path / "hyperv" / vm / name
    dst = tmp_path / ("%s-%s" % (vm, name))
    run_tool(["cp", str(disk), str(dst)])
    line = m.wait_state("hyperv/%s/%s.progress" % (vm, name), "complete")
    check_vhdx(dst, raw, tmp_path)
    return dst, line


def test_copy_over_smb(hv, mount, tmp_path):
    m = mount(config_text=hyperv_config(hv, tmp_path))
    # keep the export while the file is open, to compare with it
    disk = m.path / "hyperv" / "web01" / "disk.vhdx"
    fd = os.open(disk, os.O_RDONLY)
    try:
        dst, line = copy_and_check(hv, m, tmp_path, "web01", "disk.vhdx",
                                   RAWS[WEB_DISK], "web01.vhdx")
        exported = exported_file(hv, "web01", "web01.vhdx")
        assert exported, "the export is gone while the file is open"
        with open(exported, "rb") as f:
            assert dst.read_bytes() == f.read()
        assert int(line["total"]) == os.path.getsize(exported)
        assert os.path.basename(os.path.dirname(os.path.dirname(
            os.path.dirname(exported)))).startswith("cloudfs-")
    finally:
        os.close(fd)
    stats = hv.stats()
    assert stats["cmdlets"]["Checkpoint-VM"] == 1
    assert stats["cmdlets"]["Export-VMSnapshot"] == 1
    # a differencing disk of a VM that is off: Export-VM, merged
    copy_and_check(hv, m, tmp_path, "db01", "disk1.vhdx",
                   RAWS[DB_DATA_DIFF], "data.vhdx")
    assert hv.stats()["cmdlets"]["Export-VM"] == 1
    m.unmount()
    assert left_on_host(hv) == (1, [])  # only db01's own "nightly"
    log = m.log_text()
    assert hv.password not in log and hv.smb_password not in log


BULK_DISK = "C:\\VMs\\bulk01\\bulk01.vhdx"


def test_parallel_smb_reads(hv, mount, tmp_path):
    """The engine's I/O threads read one exported file at once over their
    own SMB connections (at most smb_connections); the copy is byte for
    byte the exported file, and with smb_connections = 1 too."""
    size = 48 * MiB
    raws = dict(RAWS)
    raws[BULK_DISK] = sparse_raw(size, [(0, 40 * MiB), (44 * MiB, MiB)], 5)
    inv = json.loads(json.dumps(INVENTORY))
    inv["vms"].append({"Name": "bulk01", "State": "Off", "HardDrives": [
        {"ControllerType": "SCSI", "Path": BULK_DISK}]})
    hv.seed(inv, raws)
    for conns in (3, 1):
        extra = "smb_connections = %d\n" % conns
        m = mount(config_text=hyperv_config(hv, tmp_path, extra=extra),
                  name="conns%d" % conns)
        disk = m.path / "hyperv" / "bulk01" / "disk.vhdx"
        fd = os.open(disk, os.O_RDONLY)
        try:
            dst, _ = copy_and_check(hv, m, tmp_path, "bulk01", "disk.vhdx",
                                    raws[BULK_DISK], "bulk01.vhdx")
            # the connections stay open with the export
            sessions = hv.smb_sessions()
            exported = exported_file(hv, "bulk01", "bulk01.vhdx")
            with open(exported, "rb") as f:
                assert dst.read_bytes() == f.read()
        finally:
            os.close(fd)
        if conns == 1:
            assert sessions == 1
        else:
            assert 2 <= sessions <= conns, sessions
        m.unmount()
        wait_until(lambda: hv.smb_sessions() == 0, 10, what="SMB logoffs")
        assert "thread support" not in m.log_text()


def test_broken_smb_connection_is_made_again(hv, mount, tmp_path):
    """The server drops every SMB connection in the middle of a copy: each
    reader connects again once, and the copy is still byte for byte."""
    raws = dict(RAWS)
    raws[BULK_DISK] = sparse_raw(24 * MiB, [(0, 24 * MiB)], 6)
    inv = json.loads(json.dumps(INVENTORY))
    inv["vms"].append({"Name": "bulk01", "State": "Off", "HardDrives": [
        {"ControllerType": "SCSI", "Path": BULK_DISK}]})
    hv.seed(inv, raws)
    m = mount(config_text=hyperv_config(hv, tmp_path),
              options={"verbose": True})
    disk = m.path / "hyperv" / "bulk01" / "disk.vhdx"
    fd = os.open(disk, os.O_RDONLY)
    try:
        read_range(disk, 0, 4096)
        assert hv.smb_drop_sessions() >= 1
        dst, _ = copy_and_check(hv, m, tmp_path, "bulk01", "disk.vhdx",
                                raws[BULK_DISK], "bulk01.vhdx")
        with open(exported_file(hv, "bulk01", "bulk01.vhdx"), "rb") as f:
            assert dst.read_bytes() == f.read()
    finally:
        os.close(fd)
    assert "SMB read failed" in m.log_text()


def test_smb_connections_is_checked(hv, cloudfs_bin, tmp_path):
    from test_core import expect_refusal
    config = tmp_path / "hv.conf"
    config.write_text(hyperv_config(hv, tmp_path,
                                    extra="smb_connections = 0\n"))
    err = expect_refusal(cloudfs_bin, tmp_path / "mnt", "-o",
                         "config=%s,cache_dir=%s" % (config, tmp_path / "c"))
    assert "smb_connections" in err, err


def test_progress_reports_export_percent(hv, mount, tmp_path):
    hv.faults(export_seconds=2.0)
    m = mount(config_text=hyperv_config(hv, tmp_path))
    disk = m.path / "hyperv" / "web01" / "disk.vhdx"
    fd = os.open(disk, os.O_RDONLY)
    try:
        seen = set()

        def exporting():
            line = m.progress("hyperv/web01/disk.vhdx.progress")[0]
            phase = line.get("phase", "")
            if phase.startswith("export:"):
                seen.add(phase)
            return line["state"] == "complete" or len(seen) >= 2
        wait_until(exporting, 30, interval=0.05, what="export progress")
        assert seen, "no phase=export:NN% seen"
    finally:
        os.close(fd)
    text = (m.path / "hyperv" / "web01" / "disk.vhdx.progress").read_text()
    assert hv.password not in text


def test_copy_from_export_mount(hv, mount, tmp_path):
    m = mount(config_text=hyperv_config(hv, tmp_path,
                                        export_mount=hv.export_dir))
    copy_and_check(hv, m, tmp_path, "web01", "disk.vhdx", RAWS[WEB_DISK],
                   "web01.vhdx")
    m.unmount()
    assert left_on_host(hv) == (1, [])


def test_raw_view_of_vhdx(hv, mount, tmp_path):
    big = "C:\\VMs\\big01\\big01.vhdx"
    size = 48 * MiB
    raws = dict(RAWS)
    raws[big] = sparse_raw(size, [(0, 64 * 1024), (40 * MiB, 4096)], 4)
    inv = json.loads(json.dumps(INVENTORY))
    inv["vms"].append({"Name": "big01", "State": "Running", "HardDrives": [
        {"ControllerType": "SCSI", "Path": big}]})
    hv.seed(inv, raws)
    m = mount(config_text=hyperv_config(hv, tmp_path),
              options={"formats": "raw"})
    raw = m.path / "hyperv" / "big01" / "disk.raw"
    dst = tmp_path / "big01.raw"
    run_tool(["cp", "--sparse=always", str(raw), str(dst)])
    seed = tmp_path / "seed.raw"
    seed.write_bytes(raws[big])
    r = qemu_img("compare", "-f", "raw", "-F", "raw", seed, dst)
    assert r.returncode == 0, r.stdout + r.stderr
    # the VHDX's unallocated blocks are holes (they are not in the file,
    # so nothing can read them); the view read only part of the file
    fd = os.open(raw, os.O_RDONLY)
    try:
        extents = data_extents(fd, size)
    finally:
        os.close(fd)
    assert extents[0][0] == 0
    assert sum(e - s for s, e in extents) < size // 2, extents
    [line] = m.progress("hyperv/big01/disk.vhdx.progress")
    assert int(line["bytes"]) < int(line["total"]), line


# --- faults -----------------------------------------------------------------

def test_wrong_winrm_password(hv, mount, tmp_path):
    for auth in ("ntlm", "basic"):
        m = mount(config_text=hyperv_config(hv, tmp_path, auth=auth,
                                            password="not-it"), name=auth)
        [line] = m.progress("hyperv")
        assert line["state"] == "failed", line
        assert "401" in line["error"] and "not-it" not in line["error"]
        assert os.listdir(m.path / "hyperv") == [".progress"]
    assert hv.stats()["http"]["401"] >= 2


def test_wrong_smb_password(hv, mount, tmp_path):
    m = mount(config_text=hyperv_config(hv, tmp_path,
                                        smb_password="not-it"))
    disk = m.path / "hyperv" / "web01" / "disk.vhdx"
    with pytest.raises(OSError) as exc:
        read_range(disk, 0, 4096)
    assert exc.value.errno in (13, 5)
    line = m.wait_state("hyperv/web01/disk.vhdx.progress", "failed")
    assert "SMB" in line["error"] and "not-it" not in line["error"]
    assert_clean(hv)


def test_export_fails(hv, mount, tmp_path):
    hv.faults(fail_export="The disk is full.")
    m = mount(config_text=hyperv_config(hv, tmp_path))
    disk = m.path / "hyperv" / "web01" / "disk.vhdx"
    with pytest.raises(OSError) as exc:
        read_range(disk, 0, 4096)
    assert exc.value.errno == 5
    line = m.wait_state("hyperv/web01/disk.vhdx.progress", "failed")
    assert "Export-VMSnapshot : The disk is full." in line["error"], line
    assert "_x000D_" not in line["error"]
    # the checkpoint and the folder the failed export left are removed
    assert_clean(hv)


def test_receive_timeouts_are_retried(hv, mount, tmp_path):
    hv.faults(receive_timeouts=2)
    m = mount(config_text=hyperv_config(hv, tmp_path))
    info = m.path / "hyperv" / "web01" / "info.json"
    wait_until(info.exists, 30, what="the listing")
    assert hv.stats()["injected"]["receive_timeout"] == 2
    hv.faults(receive_timeouts=1)
    copy_and_check(hv, m, tmp_path, "web01", "disk.vhdx", RAWS[WEB_DISK],
                   "web01.vhdx")


def test_sweep_removes_stale_leftovers_only(hv, mount, tmp_path):
    m0 = mount(config_text=hyperv_config(hv, tmp_path), name="crashed")
    read_range(m0.path / "hyperv" / "web01" / "disk.vhdx", 0, 512)
    found = re.search(r"exported to D:\\cloudfs-exports\\cloudfs-"
                      r"([0-9a-f]+-[0-9a-f]+-\d+-\d+)-web01-disk",
                      m0.log_text())
    assert found, m0.log_tail()
    tag = found.group(1)
    machine, cache = tag.split("-")[:2]
    foreign = "cloudfs-%s-%s-1-1" % ("f" * 16 if machine != "f" * 16
                                     else "e" * 16, cache)
    out, err, code = hv.winrm(
        "$ProgressPreference = 'SilentlyContinue'\n"
        "Checkpoint-VM -Name web01 -SnapshotName 'cloudfs-%s'\n"
        "Checkpoint-VM -Name web01 -SnapshotName '%s'\n"
        "Checkpoint-VM -Name web01 -SnapshotName 'keep-me'" % (tag, foreign))
    assert code == 0, err
    for name in (foreign + "-web01-disk", "other-folder"):
        os.makedirs(os.path.join(hv.export_dir, name))
    # a crash between two calls (a shell it had open would stay open)
    wait_until(lambda: hv.state()["live_shells"] == 0, 30, what="idle")
    m0.kill()   # its export folder and checkpoint stay
    # a dead FUSE mount does not look like a mount point any more
    subprocess.run(["fusermount3", "-u", "-z", str(m0.path)],
                   capture_output=True)
    assert left_on_host(hv)[0] == 4
    m1 = mount(config_text=hyperv_config(hv, tmp_path),
               cache_dir=m0.cache_dir)
    expected = sorted([foreign + "-web01-disk", "other-folder"])
    wait_until(lambda: sorted(hv.state()["export_folders"]) == expected, 30,
               what="the sweep")
    wait_until(lambda: hv.state()["checkpoints"] == 3, 30, what="the sweep")
    names = [s["Name"] for s in json.loads(hv.winrm(
        "Get-VMSnapshot -VMName * | Select-Object Name | ConvertTo-Json")[0])]
    assert sorted(names) == sorted(["nightly", foreign, "keep-me"])
    wait_until(lambda: (m1.path / "hyperv" / "web01").exists(), 30,
               what="the listing")
    wait_until(lambda: hv.state()["live_shells"] == 0, 30, what="idle")
    m1.unmount()
