# SPDX-License-Identifier: MIT
"""The hyperv provider against the Hyper-V emulator (winrm_fake.py and a
private smbd, see hyperv_fixtures.py): the tree and info.json, copies of
disk.vhdx over SMB and from a local export_mount checked byte for byte and
with qemu-img, faults (wrong passwords, a failing export, Receive
timeouts) and what the daemon leaves on the host (nothing)."""

import json
import os
import random
import subprocess

import pytest

from conftest import MiB, read_range, run_tool, wait_until
from hyperv_fixtures import hyperv, hyperv_session  # noqa: F401,F811

WEB_DISK = "C:\\VMs\\web01\\web01.vhdx"
DB_DISK = "C:\\VMs\\db01\\db01.vhdx"
DB_DATA = "C:\\VMs\\db01\\data.vhdx"
DB_DATA_DIFF = "C:\\VMs\\db01\\data_8E3A.avhdx"
WEB_ID = "6f1c2b7e-52a7-4a57-9a39-0d0c9a6a1f01"


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


def hv_config(hv, tmp_path, auth="ntlm", password=None, smb_password=None,
              export_mount=None, extra=""):
    pw = tmp_path / "hv.pass"
    pw.write_text((password or hv.password) + "\n")
    pw.chmod(0o600)
    text = ("[hyperv]\nurl = %s\nusername = %s\npassword_file = %s\n"
            "auth = %s\nca_file = %s\nexport_path = %s\n"
            "operation_timeout = 2\n" % (hv.wsman_url, hv.username, pw, auth,
                                         hv.ca_file, hv.export_root))
    if export_mount:
        text += "export_mount = %s\n" % export_mount
    else:
        spw = tmp_path / "smb.pass"
        spw.write_text(smb_password or hv.smb_password)
        spw.chmod(0o600)
        text += ("smb_url = %s\nsmb_username = WORKGROUP\\%s\n"
                 "smb_password_file = %s\n" % (hv.smb_url, hv.smb_user, spw))
    return text + extra


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


def assert_clean(hv):
    wait_until(lambda: left_on_host(hv) == (0, []), 30,
               what="checkpoints and exports removed")


# --- the tree ---------------------------------------------------------------

def test_tree_and_info_json(hv, mount, tmp_path):
    m = mount(config_text=hv_config(hv, tmp_path))
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
    stats = hv.stats()
    assert "Export-VM" not in stats["cmdlets"]
    assert "Checkpoint-VM" not in stats["cmdlets"]
