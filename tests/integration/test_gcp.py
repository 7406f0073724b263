# SPDX-License-Identifier: MIT
"""The gcp provider against the GCP fake (tests/emulators/gcp_fake.py): the
tree and info.json across zones, a disk exported through an image, Cloud
Build and GCS and copied (qemu-img compare with the seeded disk), what is
left afterwards, credentials (a bad key file, a rejected JWT, the metadata
server), failed builds, vanished and corrupted objects, throttling, a token
that expires during a copy, and the sweep of what a crash left."""

import errno
import json
import os
import shutil
import subprocess
import time

import pytest

from conftest import (MiB, allocated_bytes, call_with_timeout, read_all,
                      read_range, run_tool, wait_until)
from gcp_fixtures import (ServiceAccountKey, gcp, gcp_config,  # noqa: F401
                          gcp_key, gcp_server)

pytestmark = pytest.mark.skipif(
    not (shutil.which("qemu-img") and shutil.which("openssl")),
    reason="needs qemu-img (qemu-utils) and openssl")

ZONE = "us-central1-a"
ZONE2 = "europe-west1-b"


def qemu_compare(raw, image, fmt):
    r = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", fmt,
                        str(raw), str(image)], capture_output=True, text=True)
    assert r.returncode == 0, "qemu-img compare: %s%s" % (r.stdout, r.stderr)


def seed_web(gcp, size=8 * MiB):
    return gcp.seed_instance("web01", zone=ZONE, disks=[
        {"name": "web01-boot", "size": size, "seed": 11},
        {"name": "web01-data", "size": 2 * MiB, "seed": 12,
         "type": "pd-ssd"}], labels={"team": "web"})


def disk_path(m, vm="web01", name="disk.vmdk", zone=ZONE):
    return m.path / "gcp" / zone / vm / name


def progress_line(m, rel):
    lines = m.progress(rel)
    assert len(lines) == 1, lines
    return lines[0]


def failed_errors(m, rel):
    return [l.get("error", "") for l in m.progress(rel)
            if l.get("state") == "failed"]


def names(path):
    return sorted(n for n in os.listdir(path) if not n.startswith("."))


def expect_eio(path, timeout=60):
    with pytest.raises(OSError) as exc:
        read_range(path, 0, 1 * MiB, timeout=timeout)
    assert exc.value.errno == errno.EIO, exc.value


# --- the tree -----------------------------------------------------------------

def test_tree_and_info_json(gcp, mount):
    seed_web(gcp)
    gcp.seed_instance("db01", zone=ZONE2, machine_type="n2-standard-4",
                      disks=[{"name": "db01", "size": 1 * MiB}])
    gcp.seed({"disks": [{"zone": ZONE, "name": "spare",
                         "raw": str(gcp.raw_disk("spare", 1 * MiB).path)}]})
    m = mount(config_text=gcp_config(gcp))

    root = m.path / "gcp"
    assert names(root) == [ZONE2, ZONE]
    assert names(root / ZONE) == ["_disks", "web01"]
    web = root / ZONE / "web01"
    assert {"disk.vmdk", "disk1.vmdk", "info.json"} <= set(os.listdir(web))
    assert (root / ZONE2 / "db01" / "disk.vmdk").exists()
    assert (root / ZONE / "_disks" / "spare" / "disk.vmdk").exists()
    # The size of an export is known when it ends.
    assert (web / "disk.vmdk").stat().st_size == 0

    info = json.loads((web / "info.json").read_text())
    assert info["provider"] == "gcp" and info["zone"] == ZONE
    assert info["project"] == gcp.project
    assert info["name"] == "web01" and info["status"] == "RUNNING"
    assert info["machine_type"] == "e2-medium"
    assert info["labels"] == {"team": "web"}
    assert info["id"]
    disks = [(d["name"], d["boot"], d["size_gb"], d["type"], d["files"])
             for d in info["disks"]]
    assert disks == [("web01-boot", True, 1, "pd-balanced", ["disk.vmdk"]),
                     ("web01-data", False, 1, "pd-ssd", ["disk1.vmdk"])]
    assert info["disks"][0]["size"] == 1 << 30
    db = json.loads((root / ZONE2 / "db01" / "info.json").read_text())
    assert db["machine_type"] == "n2-standard-4"
    spare = json.loads((root / ZONE / "_disks" / "spare" /
                        "info.json").read_text())
    assert spare["attached"] is False and spare["name"] == "spare"

    # Listing is inventory only.
    calls = gcp.calls()
    assert calls.get("compute.instances.aggregatedList", 0) >= 1, calls
    for kind in ("compute.images.insert", "cloudbuild.builds.create",
                 "storage.objects.media"):
        assert calls.get(kind, 0) == 0, calls


def test_zones_listed_one_by_one(gcp, mount):
    seed_web(gcp)
    gcp.seed_instance("db01", zone=ZONE2, disks=[{"name": "db01",
                                                  "size": 1 * MiB}])
    gcp.config(max_page_size=1)
    m = mount(config_text=gcp_config(gcp, zones=ZONE))
    assert names(m.path / "gcp") == [ZONE]
    assert disk_path(m, name="disk1.vmdk").exists()
    assert gcp.calls("compute.instances.list") == 1
    assert gcp.calls("compute.disks.list") == 2     # one disk a page
    assert gcp.calls("compute.instances.aggregatedList") == 0


# --- exports ------------------------------------------------------------------

def test_copy_vmdk(gcp, mount, tmp_path):
    vm = seed_web(gcp)
    m = mount(config_text=gcp_config(gcp))
    src = disk_path(m)
    rel = "gcp/%s/web01/disk.vmdk.progress" % ZONE
    dst = tmp_path / "web01.vmdk"
    with m.watch_progress(rel) as lines:
        run_tool(["cp", src, dst], timeout=90)
    phases = [line.get("phase") for line in lines]
    run_tool(["qemu-img", "check", "-f", "vmdk", dst])
    qemu_compare(vm["disks"][0]["raw"].path, dst, "vmdk")
    assert src.stat().st_size == dst.stat().st_size
    assert progress_line(m, rel)["state"] == "complete"
    assert any(p.startswith("image:") for p in phases), phases
    assert any(p.startswith("export:WORKING") or
               p.startswith("export:QUEUED") for p in phases), phases

    build = list(gcp.builds().values())[0]
    args = build["steps"][0]["args"]
    assert "-format=vmdk" in args and any(a.startswith("-timeout=")
                                          for a in args)
    dest = [a for a in args if a.startswith("-destination_uri=")]
    assert dest and dest[0].startswith("-destination_uri=gs://%s/cloudfs/"
                                       % gcp.bucket), args
    image = gcp.calls("compute.images.insert")
    assert image == 1 and gcp.images() == {}, "the image is deleted"
    assert "CRC-32C of the whole object matches" in m.log_text()
    # The object goes once the copy is complete and closed.
    wait_until(lambda: gcp.objects() == {}, 20, what="the object's delete")


def test_attached_disk_and_keep_exports(gcp, mount, tmp_path):
    vm = seed_web(gcp)
    m = mount(config_text=gcp_config(gcp, gcs_prefix="exp/",
                                     keep_exports="true"))
    got = read_all(disk_path(m, name="disk1.vmdk"))
    path = tmp_path / "data.vmdk"
    path.write_bytes(got)
    qemu_compare(vm["disks"][1]["raw"].path, path, "vmdk")
    m.unmount()
    names = list(gcp.objects())
    assert len(names) == 1 and names[0].startswith("exp/"), names


def test_raw_view_through_the_vmdk_reader(gcp, mount):
    """export_formats = vmdk: formats=raw is a view of disk.vmdk's
    export through the compressed-VMDK reader, not an export of its
    own."""
    vm = seed_web(gcp)
    m = mount(config_text=gcp_config(gcp, export_formats="vmdk"),
              options={"formats": "raw"})
    raw = disk_path(m, name="disk.raw")
    img = vm["disks"][0]["raw"]
    # Unknown until the export ends, then the disk's size.
    assert raw.stat().st_size == 0
    assert read_range(raw, 0, img.size) == img.read(0, img.size)
    assert raw.stat().st_size == 1 << 30
    assert read_range(raw, img.size, 1 * MiB) == bytes(1 * MiB)
    assert read_range(raw, (1 << 30) - 4096, 4096) == bytes(4096)
    assert gcp.calls("cloudbuild.builds.create") == 1, "one export only"


def build_formats(gcp):
    return sorted(a.split("=", 1)[1] for b in gcp.builds().values()
                  for a in b["steps"][0]["args"] if a.startswith("-format="))


def test_formats_are_exported_natively(gcp, mount, tmp_path):
    """formats=vhdx,raw: Google's export writes those formats, and the
    provider's files take the names the engine's views would have."""
    vm = seed_web(gcp, size=2 * MiB)
    m = mount(config_text=gcp_config(gcp), options={"formats": "vhdx:raw"})
    web = m.path / "gcp" / ZONE / "web01"
    assert {"disk.vmdk", "disk.vhdx", "disk.raw", "disk1.vmdk",
            "disk1.vhdx", "disk1.raw"} <= set(names(web))
    info = json.loads((web / "info.json").read_text())
    assert info["disks"][0]["files"] == ["disk.vmdk", "disk.vhdx",
                                         "disk.raw"]

    dst = tmp_path / "web01.vhdx"
    run_tool(["cp", web / "disk.vhdx", dst], timeout=90)
    run_tool(["qemu-img", "check", "-f", "vhdx", dst])
    qemu_compare(vm["disks"][0]["raw"].path, dst, "vhdx")
    assert build_formats(gcp) == ["vhdx"], "one export, in vhdx"
    assert progress_line(m, "gcp/%s/web01/disk.vhdx.progress"
                         % ZONE)["state"] == "complete"

    # disk.raw is Google's raw export too: a few bytes of it.
    img = vm["disks"][0]["raw"]
    assert read_range(web / "disk.raw", 1 * MiB, 64 * 1024) == \
        img.read(1 * MiB, 64 * 1024)
    assert build_formats(gcp) == ["raw", "vhdx"]


def test_export_formats_from_config(gcp, mount, tmp_path):
    vm = seed_web(gcp, size=2 * MiB)
    m = mount(config_text=gcp_config(gcp, export_formats="vmdk, qcow2"))
    q = disk_path(m, name="disk.qcow2")
    dst = tmp_path / "web01.qcow2"
    run_tool(["cp", q, dst], timeout=90)
    run_tool(["qemu-img", "check", "-f", "qcow2", dst])
    qemu_compare(vm["disks"][0]["raw"].path, dst, "qcow2")
    args = list(gcp.builds().values())[0]["steps"][0]["args"]
    assert "-format=qcow2" in args


# --- credentials --------------------------------------------------------------

def test_bad_key_file_refuses_the_mount(gcp, cloudfs_bin, tmp_path):
    from test_core import expect_refusal
    key = tmp_path / "key.json"
    key.write_text(json.dumps({"type": "service_account",
                               "client_email": "x@y", "private_key":
                               "-----BEGIN PRIVATE KEY-----\nnot a key\n"
                               "-----END PRIVATE KEY-----\n"}))
    config = tmp_path / "gcp.conf"
    config.write_text(gcp_config(gcp, key_file=key))
    err = expect_refusal(cloudfs_bin, tmp_path / "mnt", "-o",
                         "config=%s,cache_dir=%s" % (config, tmp_path / "c"))
    assert str(key) in err, err
    assert "not a key" not in err


def test_rejected_jwt(gcp, mount, tmp_path):
    seed_web(gcp)
    stranger = ServiceAccountKey(tmp_path / "k", gcp.project, gcp.token_url,
                                 email="stranger@x.iam.gserviceaccount.com")
    m = mount(config_text=gcp_config(gcp, key_file=stranger.path))
    errors = failed_errors(m, "gcp")
    assert errors and "invalid_grant" in errors[0], m.progress("gcp")
    assert names(m.path / "gcp") == []
    pem = stranger.pem.read_text().splitlines()[1]
    assert pem not in m.log_text()
    assert gcp.calls("token.refused") >= 1


def test_metadata_server_token(gcp, mount, monkeypatch):
    seed_web(gcp)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:%d" % gcp.port)
    conf = "\n".join(l for l in gcp_config(gcp).splitlines()
                     if not l.startswith("credentials") and
                     not l.startswith("project"))
    m = mount(config_text=conf)
    assert disk_path(m).exists()
    assert gcp.calls("metadata.token") >= 1
    assert gcp.calls("metadata.project-id") >= 1


# --- faults -------------------------------------------------------------------

def test_build_that_fails(gcp, mount):
    seed_web(gcp)
    gcp.faults({"build": {"result": "FAILURE", "count": 1}})
    m = mount(config_text=gcp_config(gcp))
    expect_eio(disk_path(m))
    rel = "gcp/%s/web01/disk.vmdk.progress" % ZONE
    line = progress_line(m, rel)
    assert line["state"] == "failed", line
    assert "FAILURE" in line["error"] and "console.cloud.google.com" in \
        line["error"], line
    assert gcp.images() == {}, "the image of a failed export is deleted"


def test_image_operation_that_fails(gcp, mount):
    seed_web(gcp)
    gcp.faults({"operation": {"count": 1}})
    m = mount(config_text=gcp_config(gcp))
    expect_eio(disk_path(m))
    line = progress_line(m, "gcp/%s/web01/disk.vmdk.progress" % ZONE)
    assert "QUOTA_EXCEEDED" in line["error"], line
    assert gcp.calls("cloudbuild.builds.create") == 0


def test_object_that_vanishes(gcp, mount, tmp_path):
    seed_web(gcp)
    gcp.faults({"vanish": {"after_reads": 1}})
    m = mount(config_text=gcp_config(gcp), options={"chunk_size": "1M"})
    proc = subprocess.run(["cp", disk_path(m), tmp_path / "x.vmdk"],
                          capture_output=True, text=True, timeout=90)
    assert proc.returncode != 0
    assert "Input/output error" in proc.stderr, proc.stderr
    assert gcp.injected("vanish") == 1
    line = progress_line(m, "gcp/%s/web01/disk.vmdk.progress" % ZONE)
    assert line["state"] == "failed" and "404" in line["error"], line


def cached_data_bytes(m):
    """Bytes the data files of the mount's cache folders hold."""
    return sum(allocated_bytes(d / "data") for d in m.cache_dir.iterdir()
               if (d / "data").exists())


def read_to_the_end(fd):
    """Read @fd from its start to the end; the bytes, or the OSError."""
    out = bytearray()
    while True:
        try:
            got = os.read(fd, 1 * MiB)
        except OSError as exc:
            return exc
        if not got:
            return bytes(out)
        out += got


def test_crc32c_mismatch_drops_the_export(gcp, mount, tmp_path):
    """Media with a byte flipped and the metadata's crc32c kept: the
    whole-object check fails the export, drops what the cache held of
    it (no earlier byte is served again) and deletes the object; the
    next open exports again."""
    vm = seed_web(gcp)
    gcp.faults({"corrupt": {"count": 1000}})
    m = mount(config_text=gcp_config(gcp), options={"chunk_size": "1M"})
    src = disk_path(m)
    rel = "gcp/%s/web01/disk.vmdk.progress" % ZONE
    fd = os.open(src, os.O_RDONLY)
    try:
        got = call_with_timeout(lambda: read_to_the_end(fd), 90)
        assert isinstance(got, OSError), "a corrupted object was copied"
        assert got.errno == errno.EIO, got
        line = progress_line(m, rel)
        assert line["state"] == "failed", line
        assert "CRC-32C mismatch" in line["error"], line
        # An earlier region, cached before the check failed, is not
        # served from the cache.
        with pytest.raises(OSError) as exc:
            call_with_timeout(lambda: os.pread(fd, 4096, 0), 30)
        assert exc.value.errno == errno.EIO
    finally:
        os.close(fd)
    assert gcp.injected("corrupt") >= 1
    wait_until(lambda: cached_data_bytes(m) == 0, 20,
               what="the cached chunks to be dropped")
    wait_until(lambda: gcp.objects() == {}, 20, what="the object's delete")
    assert "cached bytes of the bad source dropped" in m.log_text()

    gcp.clear_faults()
    dst = tmp_path / "web01.vmdk"
    run_tool(["cp", src, dst], timeout=90)
    qemu_compare(vm["disks"][0]["raw"].path, dst, "vmdk")
    assert gcp.calls("cloudbuild.builds.create") == 2
    assert progress_line(m, rel)["state"] == "complete"


def test_throttling_backs_off(gcp, mount, tmp_path):
    vm = seed_web(gcp)
    gcp.faults({"throttle": {"status": 503, "count": 2, "kinds": [
        "compute.instances.aggregatedList"]}})
    m = mount(config_text=gcp_config(gcp))
    wait_until(lambda: disk_path(m).exists(), 60, what="the listing")
    gcp.faults({"throttle": {"status": 429, "count": 4, "kinds": [
        "storage.objects.media", "cloudbuild.builds.get"]}})
    dst = tmp_path / "web01.vmdk"
    run_tool(["cp", disk_path(m), dst], timeout=90)
    qemu_compare(vm["disks"][0]["raw"].path, dst, "vmdk")
    assert sum(gcp.injected().values()) == 6


def test_token_expires_during_a_copy(gcp, mount, tmp_path):
    vm = seed_web(gcp, size=24 * MiB)
    m = mount(config_text=gcp_config(gcp), options={"chunk_size": "1M"})
    gcp.faults({"stall": {"seconds": 0.15, "kinds":
                          ["storage.objects.media"]}})
    src = disk_path(m)
    dst = tmp_path / "web01.vmdk"
    copy = subprocess.Popen(["cp", src, dst], stderr=subprocess.PIPE)
    wait_until(lambda: gcp.calls("storage.objects.media") >= 3, 60,
               what="the copy to begin")
    tokens = gcp.calls("token")
    gcp.expire_tokens()
    assert copy.wait(90) == 0, copy.stderr.read()
    copy.stderr.close()
    qemu_compare(vm["disks"][0]["raw"].path, dst, "vmdk")
    assert gcp.calls("unauthenticated") >= 1
    assert gcp.calls("token") > tokens, "a new token was fetched"


# --- leftovers ----------------------------------------------------------------

def test_leftovers_of_a_crash_are_swept(gcp, mount, tmp_path):
    seed_web(gcp)
    cache = tmp_path / "cache"
    m = mount(config_text=gcp_config(gcp), cache_dir=cache, name="crashed")
    assert len(read_range(disk_path(m), 0, 4096)) == 4096
    m.kill()
    subprocess.run(["fusermount3", "-u", "-z", str(m.path)],
                   capture_output=True)
    (left,) = gcp.objects()
    tag = left.split("/")[1]
    token = gcp.token()
    for name, owner in (("left-over", tag), ("foreign", "another-owner")):
        r = gcp.api("POST", "%s/projects/%s/global/images?forceCreate=true" % (
            gcp.compute_url, gcp.project), token=token, body={
            "name": name, "sourceDisk": "projects/%s/zones/%s/disks/"
            "web01-boot" % (gcp.project, ZONE),
            "labels": {"cloudfs-owner": owner}})
        assert r.status == 200, r.body
    wait_until(lambda: all(i["status"] == "READY"
                           for i in gcp.images().values()), 10,
               what="the images")

    again = mount(config_text=gcp_config(gcp), cache_dir=cache, name="again")
    assert os.listdir(again.path / "gcp")
    wait_until(lambda: "left-over" not in gcp.images(), 20,
               what="the sweep")
    assert "foreign" in gcp.images()
    wait_until(lambda: gcp.objects() == {}, 20, what="the object's sweep")
    assert "left behind by an earlier cloudfs" in again.log_text()


def test_files_carry_the_creation_time(gcp, mount):
    """The instance's creationTimestamp dates its folder and files (the
    fake creates them a day ago)."""
    seed_web(gcp)
    m = mount(config_text=gcp_config(gcp))
    web = m.path / "gcp" / ZONE / "web01"
    day_ago = time.time() - 86400
    for path in (web, web / "info.json", web / "disk.vmdk"):
        assert abs(path.stat().st_mtime - day_ago) < 120, path
    assert (m.path / "gcp").stat().st_mtime > day_ago + 3600
