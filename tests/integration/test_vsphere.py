# SPDX-License-Identifier: MIT
"""The vsphere provider against the vSphere emulator (tests/emulators/vcsim):
the tree and info.json, datastore copies of powered-off and running VMs
checked with qemu-img, changed block tracking as the allocation map (holes
never fetched, lying answers refused), NFC leases kept alive, completed and
aborted, the OVF and OVA, VM times, TLS trust (CA file, pinned thumbprint),
and clear failures."""

import json
import os
import shutil
import subprocess
import tarfile
import xml.etree.ElementTree as ET

import pytest

from conftest import MiB, read_all, read_range, wait_until
# the session-wide fixtures live in vsphere_fixtures
from vsphere_fixtures import Vcsim
from vsphere_fixtures import vcsim, vcsim_bin, vcsim_session  # noqa: F401

OFF_VM = "DC0_C0_RP0_VM1"      # powered off, two disks (2 MiB, 3 MiB)
ON_VM = "DC0_C0_RP0_VM0"       # powered on, one 4 MiB disk
FOLDER_VM = "DC0_H0_VM0"       # in vm/Prod, powered on
TEMPLATE = "DC0_H0_VM1"        # a template, powered off
CBT_VM = "DC0_C0_RP0_VM2"      # powered off, changed block tracking, 4 MiB
CBT_ON_VM = "DC0_H0_VM2"       # powered on, changed block tracking, 4 MiB,
                               # no config.createDate
BLOCK = 64 << 10               # the emulator's tracking granularity

def need_qemu_img():
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img is missing (Debian package qemu-utils)")


def config(vcsim, mode=None, tls="ca", password=None, extra=""):
    lines = ["[vsphere]", "url = %s" % vcsim.url,
             "username = %s" % vcsim.username,
             "password = %s" % (password or vcsim.password)]
    if tls == "ca":
        lines.append("ca_file = %s" % vcsim.ca_file)
    elif tls == "thumbprint":
        lines.append("thumbprint = %s" % vcsim.thumbprint)
    elif tls:
        lines.append(tls)
    if mode:
        lines.append("mode = %s" % mode)
    return "\n".join(lines) + "\n" + extra


@pytest.fixture(autouse=True)
def no_govc(monkeypatch):
    for name in list(os.environ):
        if name.startswith("GOVC_"):
            monkeypatch.delenv(name)


def vm_dir(m, name, folder=""):
    return m.path / "vsphere" / "DC0" / folder / name


def progress(m, rel):
    return m.wait_state(rel, ("complete", "failed", "transferring", "idle",
                              "preparing"))


def qemu_compare(raw, image, fmt="vmdk"):
    r = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", fmt,
                        str(raw), str(image)], capture_output=True, text=True)
    assert r.returncode == 0, "qemu-img compare: %s%s" % (r.stdout, r.stderr)
    assert "identical" in r.stdout


def copy(src, dst):
    """Read to the end (a file whose size is not known yet shows 0)."""
    with open(src, "rb") as f, open(dst, "wb") as out:
        shutil.copyfileobj(f, out, 1 << 20)
    return dst


# --- the tree -----------------------------------------------------------------

def test_tree_and_info_json(vcsim, mount):
    m = mount(config_text=config(vcsim))
    dc = m.path / "vsphere" / "DC0"
    names = {v["name"] for v in vcsim.vms()}
    top = set(os.listdir(dc))
    assert "Prod" in top
    assert {n for n in names if n != FOLDER_VM} <= top
    assert FOLDER_VM in os.listdir(dc / "Prod")

    off = vm_dir(m, OFF_VM)
    assert {"disk.vmdk", "disk1.vmdk", "info.json"} <= set(os.listdir(off))
    info = json.loads((off / "info.json").read_text())
    emu = vcsim.vm(OFF_VM)
    assert info["name"] == OFF_VM and info["moref"] == emu["moref"]
    assert info["uuid"] == emu["uuid"]
    assert info["power_state"] == "poweredOff"
    assert info["template"] is False
    assert info["cpus"] >= 1 and info["memory_mb"] > 0
    assert [d["capacity"] for d in info["disks"]] == [2 * MiB, 3 * MiB]
    assert [d["file"] for d in info["disks"]] == ["disk.vmdk", "disk1.vmdk"]
    assert [d["datastore_path"] for d in info["disks"]] == \
        [d["file_name"] for d in emu["disks"]]
    assert all(d["controller"] and d["source"] == "datastore"
               for d in info["disks"])
    tmpl = json.loads((vm_dir(m, TEMPLATE) / "info.json").read_text())
    assert tmpl["template"] is True
    # the views' sizes are exact from the first stat (a streamOptimized
    # VMDK of a 2 MiB disk is larger than the header alone)
    assert os.stat(off / "disk.vmdk").st_size > 64 * 1024
    assert "password" not in (off / "info.json").read_text()
    assert vcsim.password not in m.log_text()


# --- datastore copies --------------------------------------------------------------

def test_copy_powered_off_vm(vcsim, mount, tmp_path):
    need_qemu_img()
    flat0 = vcsim.seed(OFF_VM, disk=0, extents=[(0, 64 << 10),
                                                (MiB + 3, 5000)], seed=7)
    flat1 = vcsim.seed(OFF_VM, disk=1, extents=[(2 * MiB, 300 << 10)],
                       seed=8)
    m = mount(config_text=config(vcsim))
    off = vm_dir(m, OFF_VM)
    qemu_compare(flat0, copy(off / "disk.vmdk", tmp_path / "d0.vmdk"))
    qemu_compare(flat1, copy(off / "disk1.vmdk", tmp_path / "d1.vmdk"))
    rel = "vsphere/DC0/%s/disk.vmdk.progress" % OFF_VM
    assert m.wait_state(rel, "complete")["percent"] == "100.0"
    c = vcsim.counters()
    assert c.get("folder.gets", 0) >= 2
    assert c.get("soap.CreateSnapshot_Task", 0) == 0
    assert c.get("soap.ExportVm", 0) == 0


def test_copy_running_vm_through_snapshot(vcsim, mount, tmp_path):
    need_qemu_img()
    flat = vcsim.seed(ON_VM, extents=[(0, 128 << 10), (3 * MiB, 4096)],
                      seed=9)
    m = mount(config_text=config(vcsim))
    on = vm_dir(m, ON_VM)
    qemu_compare(flat, copy(on / "disk.vmdk", tmp_path / "on.vmdk"))
    # the export ends once the copy is closed: the snapshot goes
    wait_until(lambda: vcsim.vm(ON_VM)["snapshots"] == 0, 20,
               what="the temporary snapshot removed")
    c = vcsim.counters()
    assert c["soap.CreateSnapshot_Task"] == 1
    assert c["soap.RemoveSnapshot_Task"] == 1
    assert vcsim.vm(ON_VM)["power_state"] == "poweredOn"
    assert "cloudfs-" in m.log_text()


def test_copy_vm_in_folder_with_expired_session(vcsim, mount, tmp_path):
    need_qemu_img()
    flat = vcsim.seed(FOLDER_VM, extents=[(0, MiB)], seed=10)
    m = mount(config_text=config(vcsim))
    d = vm_dir(m, FOLDER_VM, "Prod")
    assert (d / "disk.vmdk").exists()
    # every session ends: the next SOAP call and datastore read log in
    # again
    vcsim.expire_sessions()
    qemu_compare(flat, copy(d / "disk.vmdk", tmp_path / "f.vmdk"))
    assert vcsim.counter("soap.Login") >= 2


def test_snapshot_of_a_crashed_daemon_is_removed(vcsim, mount, tmp_path):
    vcsim.seed(ON_VM, extents=[(0, 4096)], seed=16)
    vcsim.faults(nfc_rate=1)     # not used here; the reset undoes it
    cache = tmp_path / "cache"
    m = mount(config_text=config(vcsim), cache_dir=cache)
    assert read_range(vm_dir(m, ON_VM) / "disk.vmdk", 0, 512)
    assert vcsim.vm(ON_VM)["snapshots"] == 1
    m.kill()                     # no export_end: the snapshot stays
    m.unmount(check=False)
    m2 = mount(config_text=config(vcsim), cache_dir=cache)
    wait_until(lambda: vcsim.vm(ON_VM)["snapshots"] == 0, 20,
               what="the crashed daemon's snapshot removed")
    assert "left by an earlier cloudfs" in m2.log_text()


# --- NFC ------------------------------------------------------------------------

def test_nfc_lease_kept_alive_and_completed(vcsim, mount, tmp_path):
    need_qemu_img()
    flat = vcsim.seed(TEMPLATE, extents=[(0, MiB)], seed=11)
    vcsim.faults(lease_timeout=2, nfc_rate=600 * 1024)
    m = mount(config_text=config(vcsim, mode="nfc"))
    d = vm_dir(m, TEMPLATE)
    assert json.loads((d / "info.json").read_text())["disks"][0]["source"] \
        == "nfc"
    out = tmp_path / "t.vmdk"
    with open(d / "disk.vmdk", "rb") as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    qemu_compare(flat, out)
    c = vcsim.counters()
    assert c.get("lease.timedout", 0) == 0
    assert c["lease.progress"] >= 1
    wait_until(lambda: vcsim.counter("lease.complete") == 1, 20,
               what="HttpNfcLeaseComplete")
    assert vcsim.counter("lease.abort") == 0


def test_nfc_download_fails_lease_aborted(vcsim, mount):
    vcsim.seed(TEMPLATE, extents=[(0, MiB)], seed=12)
    vcsim.faults(nfc_fail_after=100000)
    m = mount(config_text=config(vcsim, mode="nfc"))
    d = vm_dir(m, TEMPLATE)
    with pytest.raises(OSError) as exc:
        read_all(d / "disk.vmdk")
    assert exc.value.errno == 5
    line = m.wait_state("vsphere/DC0/%s/disk.vmdk.progress" % TEMPLATE,
                        "failed")
    assert "error" in line
    m.unmount()
    assert vcsim.counter("lease.abort") == 1
    assert vcsim.counter("lease.complete") == 0


def test_nfc_stream_without_file_size(vcsim, mount, tmp_path):
    need_qemu_img()
    flat = vcsim.seed(TEMPLATE, extents=[(MiB, 4096)], seed=13)
    vcsim.faults(nfc_file_size=False, nfc_host_star=False)
    m = mount(config_text=config(vcsim, mode="nfc"))
    out = copy(vm_dir(m, TEMPLATE) / "disk.vmdk", tmp_path / "t.vmdk")
    qemu_compare(flat, out)


def test_nfc_stream_of_unknown_length(vcsim, mount, tmp_path):
    """No fileSize, no Content-Length (chunked): read to its end."""
    need_qemu_img()
    flat = vcsim.seed(TEMPLATE, extents=[(0, 300 << 10)], seed=17)
    vcsim.faults(nfc_file_size=False, nfc_length=False)
    m = mount(config_text=config(vcsim, mode="nfc"))
    d = vm_dir(m, TEMPLATE)
    out = copy(d / "disk.vmdk", tmp_path / "t.vmdk")
    qemu_compare(flat, out)
    # its exact size is known now
    size = os.stat(d / "disk.vmdk").st_size
    assert 0 < size <= os.path.getsize(out)
    assert out.read_bytes()[size:].count(0) == os.path.getsize(out) - size
    m.unmount()
    assert vcsim.counter("lease.complete") == 1


def test_nfc_stream_of_unknown_length_reads_to_its_end(vcsim, mount,
                                                        tmp_path):
    vcsim.seed(TEMPLATE, extents=[(0, 300 << 10)], seed=18)
    vcsim.faults(nfc_file_size=False, nfc_length=False)
    m = mount(config_text=config(vcsim, mode="nfc"))
    d = vm_dir(m, TEMPLATE)
    out = copy(d / "disk.vmdk", tmp_path / "t.vmdk")
    assert os.stat(d / "disk.vmdk").st_size == os.path.getsize(out)


def test_datastore_refused_falls_back_to_nfc(vcsim, mount, tmp_path):
    need_qemu_img()
    flat = vcsim.seed(OFF_VM, disk=1, extents=[(0, 4096)], seed=14)
    vcsim.faults(deny_datastore=True)
    m = mount(config_text=config(vcsim))
    info = json.loads((vm_dir(m, OFF_VM) / "info.json").read_text())
    assert {d["source"] for d in info["disks"]} == {"nfc"}
    qemu_compare(flat, copy(vm_dir(m, OFF_VM) / "disk1.vmdk",
                            tmp_path / "d1.vmdk"))
    wait_until(lambda: vcsim.counter("lease.complete") == 1, 20,
               what="HttpNfcLeaseComplete")


def test_nfc_of_running_vm_says_why(vcsim, mount):
    m = mount(config_text=config(vcsim, mode="nfc"))
    with pytest.raises(OSError):
        read_all(vm_dir(m, ON_VM) / "disk.vmdk")
    line = m.wait_state("vsphere/DC0/%s/disk.vmdk.progress" % ON_VM,
                        "failed")
    assert "InvalidPowerState" in line["error"]
    assert "powered off" in line["error"]


# --- OVF and OVA -------------------------------------------------------------------

def test_ovf_and_ova(vcsim, mount, tmp_path):
    need_qemu_img()
    flat = vcsim.seed(OFF_VM, disk=0, extents=[(0, 8192)], seed=15)
    m = mount(config_text=config(vcsim))
    d = vm_dir(m, OFF_VM)
    ovf = ET.fromstring((d / ("%s.ovf" % OFF_VM)).read_bytes())
    O = "{http://schemas.dmtf.org/ovf/envelope/1}"
    assert [x.get(O + "capacity") for x in ovf.iter(O + "Disk")] == \
        [str(2 * MiB), str(3 * MiB)]
    ova = copy(d / ("%s.ova" % OFF_VM), tmp_path / "vm.ova")
    names = subprocess.run(["tar", "tf", str(ova)], capture_output=True,
                           text=True, check=True).stdout.split()
    assert names == ["%s.ovf" % OFF_VM, "%s-disk1.vmdk" % OFF_VM,
                     "%s-disk2.vmdk" % OFF_VM]
    with tarfile.open(ova) as t:
        t.extract(names[1], tmp_path)
        members = {x.name: x.size for x in t.getmembers()}
    qemu_compare(flat, tmp_path / names[1])
    # each File's ovf:size is the size of its VMDK inside the OVA, and of
    # the disk's own disk.vmdk
    files = {x.get(O + "href"): x.get(O + "size")
             for x in ovf.iter(O + "File")}
    assert files == {n: str(members[n]) for n in names[1:]}
    assert int(files[names[1]]) == os.stat(d / "disk.vmdk").st_size
    assert int(files[names[2]]) == os.stat(d / "disk1.vmdk").st_size


def test_ovf_without_sizes_until_the_map_is_known(vcsim, mount):
    """A VM with changed block tracking: its VMDK's size shows with the
    export, so its File has no ovf:size."""
    m = mount(config_text=config(vcsim))
    ovf = ET.fromstring((vm_dir(m, CBT_VM) / ("%s.ovf" % CBT_VM))
                        .read_bytes())
    O = "{http://schemas.dmtf.org/ovf/envelope/1}"
    files = list(ovf.iter(O + "File"))
    assert len(files) == 1 and files[0].get(O + "size") is None
    assert files[0].get(O + "href") == "%s-disk1.vmdk" % CBT_VM


# --- changed block tracking ----------------------------------------------------

def blocks_of(extents):
    """Bytes of the 64 KiB blocks that extents touch."""
    used = set()
    for off, length in extents:
        used.update(range(off // BLOCK, (off + length - 1) // BLOCK + 1))
    return len(used) * BLOCK


def fetched(vcsim):
    """Bytes served from the datastore, less the one-byte probes."""
    c = vcsim.counters()
    return c.get("folder.bytes", 0), c.get("folder.gets", 0)


def test_cbt_map_holes_never_fetched(vcsim, mount, tmp_path):
    need_qemu_img()
    extents = [(0, 4096), (MiB + 5, 70000), (3 * MiB, BLOCK)]
    flat = vcsim.seed(CBT_VM, extents=extents, seed=21)
    data = blocks_of(extents)
    vcsim.faults(cbt_span=MiB)
    m = mount(config_text=config(vcsim), options={"formats": "raw"})
    d = vm_dir(m, CBT_VM)
    info = json.loads((d / "info.json").read_text())
    assert info["change_tracking"] is True
    assert info["disks"][0]["allocation"] == "changed block tracking"
    raw = copy(d / "disk.raw", tmp_path / "d.raw")
    assert raw.read_bytes() == open(flat, "rb").read()
    qemu_compare(flat, copy(d / "disk.vmdk", tmp_path / "d.vmdk"))
    # the map came in parts (4 MiB in 1 MiB answers) ...
    assert vcsim.counter("cbt.answers") == 4
    # ... and only its areas were read: the probes are one byte each
    nbytes, gets = fetched(vcsim)
    assert data <= nbytes <= data + gets
    # du sees the data alone; the VMDK's size is exact now
    assert os.stat(d / "disk.raw").st_blocks * 512 == data
    assert os.stat(d / "disk.raw").st_size == 4 * MiB
    assert os.stat(d / "disk.vmdk").st_size == \
        os.path.getsize(tmp_path / "d.vmdk")
    assert "changed block tracking: %d of %d bytes hold data" \
        % (data, 4 * MiB) in m.log_text()


def test_cbt_of_running_vm_asks_about_the_snapshot(vcsim, mount, tmp_path):
    need_qemu_img()
    extents = [(BLOCK * 3, 1000), (2 * MiB, 3 * BLOCK)]
    flat = vcsim.seed(CBT_ON_VM, extents=extents, seed=22)
    m = mount(config_text=config(vcsim))
    qemu_compare(flat, copy(vm_dir(m, CBT_ON_VM) / "disk.vmdk",
                            tmp_path / "on.vmdk"))
    assert vcsim.counter("cbt.snapshot") >= 1
    nbytes, gets = fetched(vcsim)
    assert blocks_of(extents) <= nbytes <= blocks_of(extents) + gets
    wait_until(lambda: vcsim.vm(CBT_ON_VM)["snapshots"] == 0, 20,
               what="the temporary snapshot removed")
    assert vcsim.vm(CBT_ON_VM)["power_state"] == "poweredOn"


def test_cbt_fault_falls_back_to_the_whole_disk(vcsim, mount, tmp_path):
    """Tracking turned off after the listing: a FileFault, then every byte
    is read."""
    need_qemu_img()
    flat = vcsim.seed(CBT_VM, extents=[(MiB, 4096)], seed=23)
    vcsim.faults(cbt_off=True)
    m = mount(config_text=config(vcsim))
    qemu_compare(flat, copy(vm_dir(m, CBT_VM) / "disk.vmdk",
                            tmp_path / "d.vmdk"))
    assert vcsim.counter("cbt.faults") >= 1
    assert fetched(vcsim)[0] >= 4 * MiB
    assert "no allocation map from changed block tracking" in m.log_text()
    assert "QueryChangedDiskAreas: File: " in m.log_text()


@pytest.mark.parametrize("lie,says", [
    ("past_end", "passes the end of the 4194304-byte disk"),
    ("repeat", "no progress at offset 1048576"),
    ("endless", "more than 128 answers"),
    ("overlap", "overlaps"),
])
def test_cbt_lying_answers_fail_clearly(vcsim, mount, lie, says):
    vcsim.seed(CBT_VM, extents=[(0, 4096)], seed=24)
    vcsim.faults(cbt_lie=lie)
    m = mount(config_text=config(vcsim))
    with pytest.raises(OSError) as exc:
        read_all(vm_dir(m, CBT_VM) / "disk.vmdk")
    assert exc.value.errno == 5
    line = m.wait_state("vsphere/DC0/%s/disk.vmdk.progress" % CBT_VM,
                        "failed")
    assert "QueryChangedDiskAreas" in line["error"]
    assert says in line["error"]
    # no byte of the disk was read: only the one-byte probes
    nbytes, gets = fetched(vcsim)
    assert nbytes <= gets


# --- times -----------------------------------------------------------------------

def test_vm_times(vcsim, mount):
    m = mount(config_text=config(vcsim))
    off, on = vcsim.vm(OFF_VM), vcsim.vm(CBT_ON_VM)
    assert off["create_date"] and not on["create_date"] and on["boot_time"]
    # created where the server says, else booted
    for name, want in ((OFF_VM, off["create_date"]),
                       (CBT_ON_VM, on["boot_time"])):
        d = vm_dir(m, name)
        assert os.stat(d).st_mtime == want
        assert os.stat(d / "disk.vmdk").st_mtime == want
        assert os.stat(d / "info.json").st_mtime == want
    info = json.loads((vm_dir(m, OFF_VM) / "info.json").read_text())
    assert info["create_date"].startswith("2023-04-05T06:07:")
    assert json.loads((vm_dir(m, CBT_ON_VM) / "info.json").read_text())[
        "create_date"] is None


# --- TLS ------------------------------------------------------------------------

def test_pinned_thumbprint(vcsim, mount):
    m = mount(config_text=config(vcsim, tls="thumbprint"))
    assert (vm_dir(m, OFF_VM) / "disk.vmdk").exists()


def test_wrong_thumbprint_and_untrusted_certificate(vcsim, mount):
    wrong = "00:" * 19 + "00"
    m = mount(config_text=config(vcsim, tls="thumbprint = %s" % wrong))
    line = m.progress("vsphere")[0]
    assert line["state"] == "failed"
    assert "certificate" in line["error"].lower() or \
        "ssl" in line["error"].lower()
    m2 = mount(config_text=config(vcsim, tls=None))
    line = m2.progress("vsphere")[0]
    assert line["state"] == "failed"
    assert "certificate" in line["error"].lower()


def test_govc_environment(vcsim, mount, monkeypatch):
    base = vcsim.url.split("://", 1)[1]
    monkeypatch.setenv("GOVC_URL", "https://%s:%s@%s" % (
        vcsim.username, vcsim.password, base))
    monkeypatch.setenv("GOVC_TLS_CA_CERTS", vcsim.ca_file)
    m = mount(config_text="[vsphere]\n")
    assert (vm_dir(m, OFF_VM) / "disk.vmdk").exists()


# --- failures --------------------------------------------------------------------

def test_wrong_password(vcsim, mount):
    m = mount(config_text=config(vcsim, password="not-the-password"))
    line = m.progress("vsphere")[0]
    assert line["state"] == "failed"
    assert "InvalidLogin" in line["error"]
    assert "not-the-password" not in m.log_text()
    assert "not-the-password" not in read_all(m.path / ".progress").decode()


def test_missing_password_fails_the_mount(vcsim, cloudfs_bin, tmp_path):
    from conftest import run_daemon
    cfg = tmp_path / "c.conf"
    cfg.write_text("[vsphere]\nurl = %s\nusername = u\n" % vcsim.url)
    (tmp_path / "mnt").mkdir()
    r = run_daemon(cloudfs_bin, "-f", "-o", "config=%s" % cfg,
                   tmp_path / "mnt")
    assert r.returncode != 0
    assert "password" in r.stderr


def test_vm_vanishes(vcsim_bin, mount, tmp_path):
    # an emulator of its own: a deleted VM does not come back
    emu = Vcsim(vcsim_bin, tmp_path / "own")
    try:
        vm_vanishes(emu, mount)
    finally:
        emu.stop()


def vm_vanishes(vcsim, mount):
    m = mount(config_text=config(vcsim))
    d = vm_dir(m, TEMPLATE)
    assert (d / "disk.vmdk").exists()
    vcsim.delete_vm(TEMPLATE)
    with pytest.raises(OSError):
        read_all(d / "disk.vmdk")
    line = m.wait_state("vsphere/DC0/%s/disk.vmdk.progress" % TEMPLATE,
                        "failed")
    assert "gone" in line["error"] or "ManagedObjectNotFound" in \
        line["error"]


def test_fault_in_the_middle_of_an_export(vcsim, mount):
    vcsim.faults(export_fault="TaskInProgress")
    m = mount(config_text=config(vcsim, mode="nfc"))
    with pytest.raises(OSError):
        read_all(vm_dir(m, OFF_VM) / "disk.vmdk")
    line = m.wait_state("vsphere/DC0/%s/disk.vmdk.progress" % OFF_VM,
                        "failed")
    assert "ExportVm: TaskInProgress" in line["error"]
