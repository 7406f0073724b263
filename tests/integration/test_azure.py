# SPDX-License-Identifier: MIT
"""The azure provider against Azurite and the ARM fake (azure_fixtures):
the tree and info.json, copies of disk.vhd checked byte for byte and with
qemu-img, holes never requested, lazy tail reads, SAS grants and tokens
that expire during a copy, throttling and failing operations, cleanup of
snapshots at the end, after a crash, and bad configurations."""

import json
import os
import shutil
import subprocess
import urllib.request

import pytest

from conftest import (KiB, MiB, GiB, data_extents, make_sparse_image,
                      read_all, read_range, run_tool, wait_until)

pytest_plugins = ["azure_fixtures"]

# Extents of the seeded disks: data with big holes between them.
OS_SIZE = 24 * MiB
OS_EXTENTS = [(0, 1 * MiB + 4 * KiB), (9 * MiB, 512 * KiB),
              (OS_SIZE - 64 * KiB, 64 * KiB)]
DATA_SIZE = 8 * MiB
DATA_EXTENTS = [(2 * MiB, 300 * KiB)]


@pytest.fixture(autouse=True)
def azure_env(monkeypatch):
    """The daemon's Azure environment: nothing inherited."""
    for name in list(os.environ):
        if name.startswith("AZURE_"):
            monkeypatch.delenv(name)


def need_qemu():
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img is missing (Debian package qemu-utils)")


def conf(azure, **keys):
    return azure.config_section(**keys)


class Seeded:
    """Two resource groups: rg1/web01 (OS disk and data disks at LUNs 3
    and 0), rg2/db01 and the unattached rg2 disk 'spare'."""

    def __init__(self, azure, root):
        azure.lro_delays(retry_after=0)
        azure.add_resource_group("rg1")
        azure.add_resource_group("rg2", location="westeurope")
        self.raw = {
            "web01-osdisk": make_sparse_image(root / "os.raw", OS_SIZE,
                                              OS_EXTENTS, seed=51),
            "web01-data0": make_sparse_image(root / "d0.raw", DATA_SIZE,
                                             DATA_EXTENTS, seed=52),
            "web01-data3": make_sparse_image(root / "d3.raw", 4 * MiB,
                                             [(0, 4 * MiB)], seed=53),
            "db01-osdisk": make_sparse_image(root / "db.raw", 4 * MiB,
                                             [(1 * MiB, 8 * KiB)], seed=54),
            "spare": make_sparse_image(root / "spare.raw", 2 * MiB,
                                       [(0, 4 * KiB)], seed=55),
        }
        raw = {k: str(v.path) for k, v in self.raw.items()}
        azure.add_vm("rg1", "web01", os_disk=raw["web01-osdisk"],
                     data_disks={3: raw["web01-data3"],
                                 0: raw["web01-data0"]},
                     size="Standard_D4s_v3")
        azure.add_vm("rg2", "db01", os_disk=raw["db01-osdisk"],
                     power="deallocated", location="westeurope")
        azure.add_disk("rg2", "spare", raw=raw["spare"], sku="Standard_LRS",
                       location="westeurope")
        self.azure = azure

    def blob(self, disk):
        """The page blob of a disk: the fixed VHD as Azure holds it."""
        d = self.azure.disk(disk)
        return self.azure.blob_read(d["blobPath"], 0, d["sizeBytes"] + 511)


@pytest.fixture
def seeded(azure, tmp_path):
    return Seeded(azure, tmp_path / "raw")


def snapshot_blobs(azure):
    """Blob paths read so far (only snapshots are read through SAS)."""
    return list(azure.blob_stats())


def ranges_of(azure, blob):
    out = []
    for r in azure.blob_stats(blob)["ranges"]:
        a, b = r.split("=", 1)[1].split("-")
        out.append((int(a), int(b)))
    return out


def overlaps(rng, holes):
    a, b = rng
    return [h for h in holes if a < h[1] and b >= h[0]]


def wait_released(azure, n=1, timeout=30):
    wait_until(lambda: azure.snapshots() == [] and
               len(azure.deleted_snapshots()) >= n, timeout,
               what="the snapshot to be deleted")


# --- the tree ---------------------------------------------------------------

def test_tree_and_info_json(seeded, azure, mount):
    m = mount(config_text=conf(azure))
    top = m.path / "azure"
    assert {"rg1", "rg2"} <= set(os.listdir(top))
    web = top / "rg1" / "web01"
    files = set(os.listdir(web))
    assert {"disk.vhd", "disk1.vhd", "disk2.vhd", "info.json"} <= files
    assert "disk3.vhd" not in files
    assert (web / "disk.vhd").stat().st_size == OS_SIZE + 512
    assert (web / "disk1.vhd").stat().st_size == DATA_SIZE + 512  # LUN 0
    assert (web / "disk2.vhd").stat().st_size == 4 * MiB + 512    # LUN 3
    spare = top / "rg2" / "_disks" / "spare"
    assert (spare / "disk.vhd").stat().st_size == 2 * MiB + 512
    assert (top / "rg2" / "db01" / "disk.vhd").exists()

    info = json.loads((web / "info.json").read_text())
    assert info["name"] == "web01" and info["resource_group"] == "rg1"
    assert info["power_state"] == "running"
    assert info["size"] == "Standard_D4s_v3"
    assert info["location"] == azure.location
    assert info["vm_id"]
    disks = [(d["file"], d["name"], d["lun"], d["size"], d["sku"])
             for d in info["disks"]]
    assert disks == [
        ("disk.vhd", "web01-osdisk", None, OS_SIZE, "Premium_LRS"),
        ("disk1.vhd", "web01-data0", 0, DATA_SIZE, "Premium_LRS"),
        ("disk2.vhd", "web01-data3", 3, 4 * MiB, "Premium_LRS")]
    assert info["disks"][0]["id"].lower() == azure.disk_id(
        "rg1", "web01-osdisk").lower()
    db = json.loads((top / "rg2" / "db01" / "info.json").read_text())
    assert db["power_state"] == "deallocated"
    assert db["location"] == "westeurope"
    sp = json.loads((spare / "info.json").read_text())
    assert sp["disks"][0]["sku"] == "Standard_LRS"
    for path in (web / "info.json", spare / "info.json"):
        assert azure.client_secret not in path.read_text()

    # Listing is inventory only: no snapshot, no grant, no blob read.
    calls = azure.calls()
    assert calls.get("list_vms", 0) >= 2, calls
    for op in ("create_snapshot", "begin_get_access"):
        assert calls.get(op, 0) == 0, calls
    assert azure.blob_stats() == {}
    assert azure.client_secret not in m.log_text()


# --- bytes ------------------------------------------------------------------

def test_copy_vhd(seeded, azure, mount, tmp_path):
    need_qemu()
    azure.config(pagelist_max=1)   # page lists come in pages: the marker
    m = mount(config_text=conf(azure))
    src = m.path / "azure" / "rg1" / "web01" / "disk.vhd"
    dst = tmp_path / "web01.vhd"
    run_tool(["cp", src, dst])
    assert dst.read_bytes() == seeded.blob("web01-osdisk")
    # qemu-img has no check for VHD: its own reading of the image (size,
    # footer) and a comparison with the raw disk stand in.
    info = json.loads(run_tool(["qemu-img", "info", "--output=json", "-f",
                                "vpc", dst]).stdout)
    assert info["virtual-size"] == OS_SIZE
    r = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "vpc",
                        seeded.raw["web01-osdisk"].path, dst],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    line = m.progress("azure/rg1/web01/disk.vhd.progress")[0]
    assert line["state"] == "complete", line

    # Unwritten pages are never asked for.
    [blob] = snapshot_blobs(azure)
    holes = [(1 * MiB + 4 * KiB, 9 * MiB), (9 * MiB + 512 * KiB,
                                            OS_SIZE - 64 * KiB)]
    ranges = ranges_of(azure, blob)
    assert ranges and not [r for r in ranges if overlaps(r, holes)], ranges
    assert azure.pagelists(blob) == 4   # three ranges and the footer
    # SEEK_HOLE answers from the page list.
    fd = os.open(src, os.O_RDONLY)
    try:
        assert data_extents(fd, OS_SIZE + 512)[1][0] == 9 * MiB
    finally:
        os.close(fd)

    # Complete and closed: access ended, the snapshot deleted.
    wait_released(azure)
    assert azure.calls("end_get_access") == 1
    assert azure.calls("create_snapshot") == 1
    snap = azure.deleted_snapshots()[0]
    assert snap["tags"]["cloudfs-owner"]
    assert "deleted" in m.log_text()


def test_raw_view(seeded, azure, mount):
    m = mount(config_text=conf(azure), options={"formats": "raw"})
    web = m.path / "azure" / "rg1" / "web01"
    img = seeded.raw["web01-data0"]
    # A container's view: size 0 (direct I/O) until the export is ready.
    assert read_all(web / "disk1.raw") == img.read(0, img.size)
    assert (web / "disk1.raw").stat().st_size == img.size


def test_tail_of_large_sparse_disk(azure, mount):
    azure.lro_delays(retry_after=0)
    azure.add_resource_group("big")
    size = 64 * GiB
    tail = os.urandom(64 * KiB)
    azure.add_vm("big", "vm", os_disk={"size": size, "extents": {
        0: b"\x11" * 4096, size - 64 * KiB: tail}})
    m = mount(config_text=conf(azure))
    disk = m.path / "azure" / "big" / "vm" / "disk.vhd"
    assert disk.stat().st_size == size + 512
    got = read_range(disk, size - 4 * KiB, 4 * KiB)
    assert got == tail[-4 * KiB:]
    [blob] = snapshot_blobs(azure)
    assert azure.range_gets(blob) == 1, ranges_of(azure, blob)
    assert read_range(disk, 5 * GiB, 4 * KiB) == bytes(4 * KiB)
    assert azure.range_gets(blob) == 1
    fd = os.open(disk, os.O_RDONLY)
    try:
        assert os.lseek(fd, 1 * MiB, os.SEEK_DATA) == size - 64 * KiB
    finally:
        os.close(fd)


# --- grants and tokens that expire ---------------------------------------------

def copy_in_two(m, path, between):
    """A random read in the middle of path (no sequential fill follows
    it), between(), then the whole file with the file still open."""
    fd = os.open(path, os.O_RDONLY)
    try:
        assert len(os.pread(fd, 4096, 9 * MiB)) == 4096
        between()
        return read_all(path)
    finally:
        os.close(fd)


def test_grant_renewed_before_it_expires(seeded, azure, mount):
    m = mount(config_text=conf(azure, grant_seconds=4),
              options={"chunk_size": "1M", "parallel": 1})
    disk = m.path / "azure" / "rg1" / "web01" / "disk.vhd"
    got = copy_in_two(m, disk, lambda: wait_until(
        lambda: azure.calls("begin_get_access") >= 2, 20,
        what="a renewed grant"))
    assert got == seeded.blob("web01-osdisk")
    wait_until(lambda: "grant renewed" in m.log_text(), 10,
               what="the renewal in the log")


def test_grant_shorter_than_asked_renewed_after_403(seeded, azure, mount):
    azure.grant_cap(2)      # the SAS ends long before durationInSeconds
    m = mount(config_text=conf(azure),
              options={"chunk_size": "1M", "parallel": 1})
    disk = m.path / "azure" / "rg1" / "web01" / "disk.vhd"

    def expired():
        return all(g["expired"] for s in azure.snapshots()
                   for g in s["grants"])
    got = copy_in_two(m, disk, lambda: wait_until(
        expired, 10, what="the grant to expire"))
    assert got == seeded.blob("web01-osdisk")
    assert azure.calls("begin_get_access") == 2
    [blob] = snapshot_blobs(azure)
    assert azure.blob_stats(blob)["statuses"].get("403", 0) >= 1


def test_token_expires_during_a_copy(seeded, azure, mount):
    m = mount(config_text=conf(azure, grant_seconds=4),
              options={"chunk_size": "1M", "parallel": 1})
    disk = m.path / "azure" / "rg1" / "web01" / "disk.vhd"

    def expire_then_renew():
        azure.expire_tokens()
        wait_until(lambda: azure.calls("begin_get_access") >= 2, 20,
                   what="a grant renewed with a new token")
    got = copy_in_two(m, disk, expire_then_renew)
    assert got == seeded.blob("web01-osdisk")
    assert azure.calls("token") == 2
    assert "token refused" in m.log_text()


# --- faults -------------------------------------------------------------------

def test_throttled_and_busy(seeded, azure, mount):
    azure.fault("create_snapshot", count=2, status=429)
    azure.fault("begin_get_access", count=1, status=503)
    azure.blob_fault("range_get", count=3, status=503, code="ServerBusy")
    azure.blob_fault("pagelist", count=1, status=503, code="ServerBusy")
    m = mount(config_text=conf(azure))
    disk = m.path / "azure" / "rg1" / "web01" / "disk1.vhd"
    assert read_all(disk) == seeded.blob("web01-data0")
    inj = azure.injected()
    assert inj.get("create_snapshot") == 2 and inj.get("begin_get_access") \
        == 1 and inj.get("blob_range_get") == 3, inj
    assert m.progress("azure/rg1/web01/disk1.vhd.progress")[0]["state"] \
        == "complete"


def expect_failed(m, rel, *words):
    line = m.wait_state(rel, "failed")
    for word in words:
        assert word in line["error"], line
    return line


def test_begin_get_access_fails(seeded, azure, mount):
    azure.fault("begin_get_access", mode="lro", code="InternalExecutionError",
                message="The grant broke.")
    m = mount(config_text=conf(azure))
    disk = m.path / "azure" / "rg2" / "db01" / "disk.vhd"
    with pytest.raises(OSError):
        read_range(disk, 0, 4096)
    expect_failed(m, "azure/rg2/db01/disk.vhd.progress",
                  "InternalExecutionError", "The grant broke.")
    # What the failed export made is gone.
    wait_released(azure)


def test_final_arm_error(seeded, azure, mount):
    azure.fault("begin_get_access", status=409, code="OperationNotAllowed",
                message="No access for you.")
    m = mount(config_text=conf(azure))
    disk = m.path / "azure" / "rg2" / "db01" / "disk.vhd"
    with pytest.raises(OSError):
        read_range(disk, 0, 4096)
    expect_failed(m, "azure/rg2/db01/disk.vhd.progress",
                  "OperationNotAllowed", "No access for you.")
    assert azure.injected("begin_get_access") == 1    # not retried
    wait_released(azure)


def test_disk_deleted_while_listed(seeded, azure, mount):
    m = mount(config_text=conf(azure))
    disk = m.path / "azure" / "rg2" / "_disks" / "spare" / "disk.vhd"
    assert disk.stat().st_size == 2 * MiB + 512
    azure.delete_disk("rg2", "spare")
    with pytest.raises(OSError):
        read_range(disk, 0, 4096)
    expect_failed(m, "azure/rg2/_disks/spare/disk.vhd.progress",
                  "NotFound")
    assert azure.snapshots() == []


# --- leftovers ----------------------------------------------------------------

def put_snapshot(azure, rg, name, disk, owner, location):
    """A snapshot made by someone else, tagged as a cloudfs's."""
    body = json.dumps({"location": location, "tags": {
        "cloudfs-owner": owner, "cloudfs-temporary": "true"},
        "properties": {"creationData": {
            "createOption": "Copy",
            "sourceResourceId": azure.disk_id(rg, disk)}}}).encode()
    req = urllib.request.Request(
        "%s%s?api-version=2023-04-02" % (azure.endpoint, azure.disk_id(
            rg, name, "snapshots")), data=body, method="PUT",
        headers={"Content-Type": "application/json",
                 "Authorization": "Bearer " + azure.token()})
    urllib.request.urlopen(req, timeout=30).read()


def test_snapshot_left_by_a_crash_is_deleted(seeded, azure, mount, tmp_path):
    cache = tmp_path / "shared-cache"
    put_snapshot(azure, "rg2", "foreign", "spare",
                 "0123456789abcdef-00000000-1-1", "westeurope")
    m = mount(config_text=conf(azure), name="crashed", cache_dir=cache)
    disk = m.path / "azure" / "rg1" / "web01" / "disk.vhd"
    assert len(read_range(disk, 0, 4096)) == 4096
    m.kill()
    subprocess.run(["fusermount3", "-u", "-z", str(m.path)],
                   capture_output=True)
    left = [s for s in azure.snapshots() if s["name"] != "foreign"]
    assert len(left) == 1 and left[0]["accessGranted"], left

    again = mount(config_text=conf(azure), name="again", cache_dir=cache)
    assert os.listdir(again.path / "azure")
    wait_until(lambda: [s["name"] for s in azure.snapshots()] == ["foreign"],
               30, what="the leftover snapshot to be deleted")
    assert "left behind by an earlier cloudfs" in again.log_text()
    assert azure.calls("end_get_access") >= 1


# --- configuration -------------------------------------------------------------

def test_managed_identity(seeded, azure, mount):
    text = "[azure]\nsubscription_id = %s\nmanaged_identity = true\n" \
           "imds_url = %s\nmanagement_url = %s\n" % (
               azure.subscription, azure.msi_endpoint, azure.endpoint)
    m = mount(config_text=text)
    assert (m.path / "azure" / "rg1" / "web01" / "disk.vhd").exists()
    assert azure.calls("msi") >= 1 and azure.calls("token") == 0


def test_environment_variables(seeded, azure, mount, monkeypatch):
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", azure.subscription)
    monkeypatch.setenv("AZURE_TENANT_ID", azure.tenant)
    monkeypatch.setenv("AZURE_CLIENT_ID", azure.client_id)
    monkeypatch.setenv("AZURE_CLIENT_SECRET", azure.client_secret)
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", azure.authority)
    m = mount(config_text="[azure]\nmanagement_url = %s\n"
              "resource_groups = rg2\n" % azure.endpoint)
    assert os.listdir(m.path / "azure") == [".progress", "rg2"] or \
        set(os.listdir(m.path / "azure")) == {".progress", "rg2"}


def test_wrong_secret(seeded, azure, mount):
    m = mount(config_text=conf(azure, client_secret="not-the-secret"))
    lines = m.progress("azure")
    errors = [l["error"] for l in lines if l.get("state") == "failed"]
    assert errors and "invalid_client" in errors[0], lines
    assert "not-the-secret" not in m.log_text() + errors[0]


@pytest.mark.parametrize("drop,word", [
    ("subscription_id", "subscription_id"),
    ("tenant_id", "tenant_id"),
    ("client_id", "client_id"),
    ("client_secret", "client_secret"),
])
def test_bad_config_fails_the_mount(drop, word, azure, cloudfs_bin, tmp_path):
    lines = [l for l in conf(azure).splitlines()
             if not l.startswith(drop + " ")]
    config = tmp_path / "bad.conf"
    config.write_text("\n".join(lines) + "\n")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = subprocess.run([str(cloudfs_bin), "-f", "-o",
                           "config=%s,cache_dir=%s" % (config,
                                                       tmp_path / "c"),
                           str(mnt)], capture_output=True, text=True,
                          timeout=20, stdin=subprocess.DEVNULL)
    if os.path.ismount(mnt):
        subprocess.run(["fusermount3", "-u", str(mnt)])
    assert proc.returncode != 0
    assert word in proc.stderr, proc.stderr
    assert azure.client_secret not in proc.stderr


def test_phases_follow_retry_after(seeded, azure, mount, tmp_path):
    """ARM's Retry-After (1 s here) paces the polls; .progress shows the
    snapshot, then the grant; the SAS shows nowhere."""
    azure.lro_delays(retry_after=1)
    m = mount(config_text=conf(azure))
    rel = "azure/rg2/db01/disk.vhd.progress"
    with m.watch_progress(rel) as lines:
        got = read_all(m.path / "azure" / "rg2" / "db01" / "disk.vhd")
    phases = [line["phase"] for line in lines]
    assert got == seeded.blob("db01-osdisk")
    seen = [p.split(":")[0] for p in phases if p != "-"]
    assert "snapshot" in seen and "grant" in seen, phases
    assert seen.index("snapshot") < seen.index("grant"), phases
    ops = azure.calls("poll_operation")
    assert 2 <= ops <= 6, "%d polls for two operations" % ops
    m.unmount()
    wait_released(azure)
    for path in [m.log] + [p for p in m.cache_dir.rglob("*")
                           if p.is_file()]:
        assert b"sig=" not in path.read_bytes(), path
