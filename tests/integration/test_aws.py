# SPDX-License-Identifier: MIT
"""The aws provider against moto (tests/emulators/aws_launcher.py): the
tree and info.json, ebs-direct copies checked with qemu-img, lazy sparse
reads counted in GetSnapshotBlock calls, exports to S3, SigV4 in moto's
strict mode, injected faults, and the credential chain."""

import hashlib
import json
import os
import shutil
import subprocess
import time

import pytest

from aws_fixtures import AwsLauncher, aws_config, moto_python
from conftest import (KiB, MiB, GiB, make_sparse_image, read_all, read_range,
                      run_tool, wait_until)

BLOCK = 512 * KiB
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"


def need_tools():
    if moto_python() is None:
        pytest.skip("moto is not installed in any python3 on PATH "
                    "(set CFS_MOTO_PYTHON)")
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img is missing (Debian package qemu-utils)")


def aws_env(monkeypatch, key="testing", secret="testing", home=None):
    """The daemon's AWS environment: nothing inherited."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    if key is not None:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    if home is not None:
        monkeypatch.setenv("HOME", str(home))


def nonzero_blocks(path, size):
    with open(path, "rb") as f:
        return sum(1 for off in range(0, size, BLOCK)
                   if any(f.read(BLOCK)))


def qemu_compare(raw, image, fmt):
    r = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", fmt,
                        str(raw), str(image)], capture_output=True, text=True)
    assert r.returncode == 0, "qemu-img compare: %s%s" % (r.stdout, r.stderr)


# --- the emulator, seeded once for the module -----------------------------------

@pytest.fixture(scope="module")
def aws(tmp_path_factory):
    need_tools()
    root = tmp_path_factory.mktemp("aws")
    web = make_sparse_image(root / "web01.raw", 40 * MiB,
                            [(0, 3 * MiB), (10 * MiB, 100 * KiB),
                             (40 * MiB - 4 * KiB, 4 * KiB)], seed=41)
    db_boot = make_sparse_image(root / "db01-boot.raw", 16 * MiB,
                                [(0, 1 * MiB)], seed=42)
    db_data = make_sparse_image(root / "db01-data.raw", 24 * MiB,
                                [(2 * MiB, 2 * MiB + 5), (20 * MiB, 64 * KiB)],
                                seed=43)
    big = make_sparse_image(root / "big01.raw", 4 * GiB,
                            [(0, 64 * KiB), (4 * GiB - 1 * MiB, 1 * MiB)],
                            seed=44)
    launcher = AwsLauncher(root / "launcher", [
        {"name": "web01", "volumes": [
            {"device": "/dev/xvda", "raw": str(web.path)}]},
        {"name": "db01", "instance_type": "m5.large", "volumes": [
            {"device": "/dev/xvda", "raw": str(db_boot.path)},
            {"device": "/dev/sdf", "raw": str(db_data.path)}]},
        {"name": "big01", "volumes": [
            {"device": "/dev/xvda", "size_gib": 4, "raw": str(big.path)}]},
    ], buckets=["exports"])
    launcher.images = {"web01": [web], "db01": [db_boot, db_data],
                       "big01": [big]}
    yield launcher
    launcher.stop()


@pytest.fixture
def emu(aws):
    aws.clear_faults()
    aws.reset_stats()
    yield aws
    aws.clear_faults()


def vm_dir(m, launcher, name):
    return m.path / "aws" / launcher.instance(name)["instance_id"]


# --- the tree ---------------------------------------------------------------------

def test_tree_and_info_json(emu, mount, monkeypatch):
    aws_env(monkeypatch)
    m = mount(config_text=aws_config(emu))
    ids = {i["instance_id"] for i in emu.state["instances"]}
    assert set(os.listdir(m.path / "aws")) == ids | {".progress"}

    web = vm_dir(m, emu, "web01")
    assert {"disk.vmdk", "info.json"} <= set(os.listdir(web))
    assert not (web / "disk1.vmdk").exists()
    db = vm_dir(m, emu, "db01")
    assert {"disk.vmdk", "disk1.vmdk", "info.json"} <= set(os.listdir(db))

    info = json.loads((db / "info.json").read_text())
    inst = emu.instance("db01")
    assert info["instance_id"] == inst["instance_id"]
    assert info["name"] == "db01"
    assert info["state"] == "running"
    assert info["instance_type"] == "m5.large"
    assert info["region"] == emu.region
    vols = [(v["device"], v["volume_id"], v["size"], v["file"])
            for v in info["volumes"]]
    assert vols == [
        ("/dev/xvda", inst["volumes"][0]["volume_id"], GiB, "disk.vmdk"),
        ("/dev/sdf", inst["volumes"][1]["volume_id"], GiB, "disk1.vmdk")]
    assert info["volumes"][0]["boot"] is True
    assert "testing" not in (db / "info.json").read_text()

    # Listing is inventory only: nothing exported, nothing read.
    calls = emu.calls()
    assert calls.get("DescribeInstances", 0) >= 1
    for action in ("CreateSnapshot", "GetSnapshotBlock",
                   "CreateInstanceExportTask"):
        assert calls.get(action, 0) == 0, calls


# --- ebs-direct ---------------------------------------------------------------

def test_ebs_direct_copy(emu, mount, monkeypatch, tmp_path):
    aws_env(monkeypatch)
    m = mount(config_text=aws_config(emu))
    db = vm_dir(m, emu, "db01")
    boot, data = emu.images["db01"]

    dst = tmp_path / "disk1.vmdk"
    run_tool(["cp", db / "disk1.vmdk", dst])
    run_tool(["qemu-img", "check", "-f", "vmdk", dst])
    qemu_compare(data.path, dst, "vmdk")
    line = m.progress("aws/%s/disk1.vmdk.progress" % db.name)[0]
    assert line["state"] == "complete", line

    calls = emu.calls()
    want = nonzero_blocks(data.path, data.size)
    assert calls.get("CreateSnapshot") == 1, calls
    assert calls.get("GetSnapshotBlock") == want, \
        "%d blocks have data, %d were read" % (
            want, calls.get("GetSnapshotBlock"))
    assert calls.get("ListSnapshotBlocks") == 1, calls

    # The temporary snapshot goes when the export is done, at the latest
    # at unmount.
    m.unmount()
    assert emu.calls("DeleteSnapshot") == 1
    assert emu.cloudfs_snapshots() == []
    assert "deleted" in m.log_text()


def test_ebs_direct_boot_disk_and_raw_view(emu, mount, monkeypatch, tmp_path):
    aws_env(monkeypatch)
    m = mount(config_text=aws_config(emu), options={"formats": "raw"})
    web = vm_dir(m, emu, "web01")
    img = emu.images["web01"][0]
    raw = web / "disk.raw"
    assert raw.stat().st_size == GiB
    got = read_range(raw, 0, img.size)
    assert got == img.read(0, img.size)
    assert read_range(raw, img.size, 1 * MiB) == bytes(1 * MiB)
    assert emu.calls("GetSnapshotBlock") == nonzero_blocks(img.path, img.size)


def test_tail_of_large_sparse_volume(emu, mount, monkeypatch):
    aws_env(monkeypatch)
    m = mount(config_text=aws_config(emu), options={"formats": "raw"})
    big = vm_dir(m, emu, "big01")
    img = emu.images["big01"][0]
    raw = big / "disk.raw"
    assert raw.stat().st_size == 4 * GiB
    got = read_range(raw, 4 * GiB - 4 * KiB, 4 * KiB)
    assert got == img.read(4 * GiB - 4 * KiB, 4 * KiB)
    n = emu.calls("GetSnapshotBlock")
    assert 1 <= n <= 2, "a 4 KiB read cost %d GetSnapshotBlock calls" % n
    # SEEK_DATA comes from the block list: the middle is a hole.
    fd = os.open(raw, os.O_RDONLY)
    try:
        assert os.lseek(fd, 1 * MiB, os.SEEK_DATA) == 4 * GiB - 1 * MiB
    finally:
        os.close(fd)


@pytest.mark.parametrize("status,code", [
    (429, "ThrottlingException"),
    (503, "ServiceUnavailableException"),
    (500, "InternalServerException"),
])
def test_faults_on_block_reads(status, code, emu, mount, monkeypatch,
                               tmp_path):
    aws_env(monkeypatch)
    m = mount(config_text=aws_config(emu))
    emu.faults({"GetSnapshotBlock": {"every": 2, "status": status,
                                     "code": code, "limit": 4}})
    web = vm_dir(m, emu, "web01")
    img = emu.images["web01"][0]
    dst = tmp_path / "web.vmdk"
    run_tool(["cp", web / "disk.vmdk", dst], timeout=90)
    qemu_compare(img.path, dst, "vmdk")
    assert emu.injected("GetSnapshotBlock") >= 1


def test_throttling_with_400(emu, mount, monkeypatch, tmp_path):
    aws_env(monkeypatch)
    m = mount(config_text=aws_config(emu))
    emu.faults({"GetSnapshotBlock": {"every": 2, "status": 400,
                                     "code": "RequestThrottledException",
                                     "limit": 2}})
    web = vm_dir(m, emu, "web01")
    dst = tmp_path / "web.vmdk"
    run_tool(["cp", web / "disk.vmdk", dst], timeout=90)
    assert emu.injected("GetSnapshotBlock") >= 1
    qemu_compare(emu.images["web01"][0].path, dst, "vmdk")


@pytest.fixture
def quota(emu):
    """The launcher enforcing EBS's request quotas, scaled down."""
    yield emu
    emu.config(block_rate=0, list_rate=0)


@pytest.mark.parametrize("keep_under", [True, False])
def test_ebs_quotas_kept(keep_under, quota, mount, monkeypatch, tmp_path):
    """GetSnapshotBlock a second per snapshot and ListSnapshotBlocks a
    second per account stay under what the service allows (its quotas,
    here 5 and 1 a second), so it never has to throttle; the same copy
    with rates above the quotas is throttled, and the test sees it."""
    aws_env(monkeypatch)
    rates = ({"ebs_rate": "4", "ebs_account_rate": "4",
              "ebs_list_rate": "0.8"} if keep_under else
             {"ebs_rate": "1000", "ebs_account_rate": "1000",
              "ebs_list_rate": "1000"})
    m = mount(config_text=aws_config(quota, **rates))
    quota.config(block_rate=5, list_rate=1)
    db = vm_dir(m, quota, "db01")
    boot, data = quota.images["db01"]
    dst = [tmp_path / "boot.vmdk", tmp_path / "data.vmdk"]
    copies = [subprocess.Popen(["cp", str(db / name), str(out)])
              for name, out in zip(("disk.vmdk", "disk1.vmdk"), dst)]
    assert [c.wait(timeout=120) for c in copies] == [0, 0]
    qemu_compare(boot.path, dst[0], "vmdk")
    qemu_compare(data.path, dst[1], "vmdk")
    throttled = (quota.injected("Throttled"),
                 quota.injected("ThrottledList"))
    if keep_under:
        assert throttled == (0, 0)
    else:
        assert throttled[0] > 0 and throttled[1] > 0, throttled


# --- export mode ---------------------------------------------------------------

@pytest.mark.parametrize("method", ["image", "instance"])
def test_export_mode(method, emu, mount, monkeypatch, tmp_path):
    aws_env(monkeypatch)
    m = mount(config_text=aws_config(emu, mode="export", s3_bucket="exports",
                                     s3_prefix="cloudfs/",
                                     keep_exports="true",
                                     export_method=None if method == "image"
                                     else method))
    web = vm_dir(m, emu, "web01")
    assert sorted(p for p in os.listdir(web) if not p.endswith("progress")) \
        == ["disk.vmdk", "info.json"]
    rel = "aws/%s/disk.vmdk.progress" % web.name
    with m.watch_progress(rel, interval=0.1) as lines:
        got = read_all(web / "disk.vmdk")
    phases = [(line["state"], line["phase"]) for line in lines]
    assert (web / "disk.vmdk").stat().st_size == len(got)

    # Before the provider's first report the phase is "-".
    busy = [p for s, p in phases
            if s in ("preparing", "transferring") and p != "-"]
    calls = emu.calls()
    assert calls.get("CreateSnapshot", 0) == 0, calls
    if method == "instance":
        assert busy and busy[0].startswith("export:"), phases
        assert calls.get("CreateInstanceExportTask") == 1, calls
        assert calls.get("DescribeExportTasks", 0) >= 1, calls
        task = emu.boto("print(json.dumps(ec2.describe_export_tasks()"
                        "['ExportTasks'][-1]['ExportToS3Task']))")
        assert task["S3Bucket"] == "exports"
        key = task["S3Key"]
    else:
        # A temporary image, exported, then deregistered with its
        # snapshot: nothing of it is left.
        # moto's images are available at once: phase=image may be too
        # short to be seen.
        assert busy and busy[0].split(":")[0] in ("image", "export"), phases
        assert any(p.startswith("export:") for p in busy), phases
        assert calls.get("CreateImage") == 1, calls
        assert calls.get("ExportImage") == 1, calls
        assert calls.get("DescribeExportImageTasks", 0) >= 1, calls
        assert calls.get("DeregisterImage") == 1, calls
        assert calls.get("DeleteSnapshot") == 1, calls
        assert calls.get("CreateInstanceExportTask", 0) == 0, calls
        left = emu.boto(
            "r = ec2.describe_images(Owners=['self'], Filters=[{'Name': "
            "'tag:cloudfs:temporary', 'Values': ['true']}])\n"
            "print(json.dumps([i['ImageId'] for i in r['Images']]))")
        assert left == [] and emu.cloudfs_snapshots() == []
        task = emu.boto("print(json.dumps(ec2.describe_export_image_tasks()"
                        "['ExportImageTasks'][-1]))")
        assert task["S3ExportLocation"]["S3Bucket"] == "exports"
        key = "cloudfs/%s.vmdk" % task["ExportImageTaskId"]
    want = emu.s3_get("exports", key, tmp_path / "s3.vmdk")
    assert got == want, "the VMDK from S3 differs from what EC2 exported"
    path = tmp_path / "export.vmdk"
    path.write_bytes(got)
    qemu_compare(emu.images["web01"][0].path, path, "vmdk")
    m.unmount()
    assert emu.calls("DeleteObject") == 0    # keep_exports


# --- signing, for real ---------------------------------------------------------------

STRICT_SETUP = """
iam.create_user(UserName='cloudfs')
iam.put_user_policy(UserName='cloudfs', PolicyName='all',
    PolicyDocument=json.dumps({'Version': '2012-10-17', 'Statement': [
        {'Effect': 'Allow', 'Action': '*', 'Resource': '*'}]}))
k = iam.create_access_key(UserName='cloudfs')['AccessKey']
print(json.dumps([k['AccessKeyId'], k['SecretAccessKey']]))
"""


def test_strict_signing(mount, monkeypatch, tmp_path, aws):
    need_tools()
    img = make_sparse_image(tmp_path / "s.raw", 8 * MiB, [(0, 1 * MiB)],
                            seed=45)
    emu = AwsLauncher(tmp_path / "strict", [
        {"name": "strict01", "volumes": [
            {"device": "/dev/xvda", "raw": str(img.path)}]}],
        buckets=["exports"], strict=3, export_seconds=0.5)
    try:
        key, secret = emu.boto(STRICT_SETUP)
        inst = emu.instance("strict01")["instance_id"]

        # A wrong secret: a clear error in .progress, quickly, no secret.
        aws_env(monkeypatch, key=key, secret=SECRET)
        bad = mount(config_text=aws_config(emu), name="bad")
        t0 = time.monotonic()
        lines = bad.progress("aws")
        assert time.monotonic() - t0 < 20
        errors = [l["error"] for l in lines if l.get("state") == "failed"]
        assert errors, lines
        assert ("SignatureDoesNotMatch" in errors[0] or
                "AuthFailure" in errors[0]), errors
        assert SECRET not in errors[0] and SECRET not in bad.log_text()
        assert os.listdir(bad.path / "aws") == [".progress"]

        # The right one lists, and exports through EC2 and S3.
        aws_env(monkeypatch, key=key, secret=secret)
        good = mount(config_text=aws_config(
            emu, mode="export", s3_bucket="exports"), name="good")
        disk = good.path / "aws" / inst / "disk.vmdk"
        got = read_all(disk)
        path = tmp_path / "strict.vmdk"
        path.write_bytes(got)
        qemu_compare(img.path, path, "vmdk")
        good.unmount()
        assert emu.calls("DeleteObject") == 1   # the export is removed
        assert secret not in good.log_text()
    finally:
        emu.stop()


# --- credentials -------------------------------------------------------------------

def test_credentials_from_profile_files(emu, mount, monkeypatch, tmp_path):
    home = tmp_path / "home"
    (home / ".aws").mkdir(parents=True)
    (home / ".aws" / "credentials").write_text(
        "; a comment\n[default]\naws_access_key_id = AKIDDEFAULT\n"
        "aws_secret_access_key = %s\n\n[work]\n"
        "aws_access_key_id=AKIDWORK\naws_secret_access_key=%s\n"
        % (SECRET, SECRET))
    (home / ".aws" / "config").write_text(
        "[default]\nregion = %s\n[profile work]\nregion = %s\n"
        "s3 =\n    max_concurrent_requests = 4\n"
        % (emu.region, emu.region))
    aws_env(monkeypatch, key=None, home=home)
    conf = aws_config(emu)
    conf = "\n".join(l for l in conf.splitlines()
                     if not l.startswith("region"))
    m = mount(config_text=conf, name="default")
    web = vm_dir(m, emu, "web01")
    assert (web / "disk.vmdk").exists()
    assert "profile default" in m.log_text()
    assert "AKIDDEFAULT" in m.log_text() and SECRET not in m.log_text()

    monkeypatch.setenv("AWS_PROFILE", "work")
    m2 = mount(config_text=conf, name="work")
    assert (vm_dir(m2, emu, "web01") / "info.json").exists()
    assert "AKIDWORK" in m2.log_text()


def test_credentials_from_environment(emu, mount, monkeypatch, tmp_path):
    aws_env(monkeypatch, key="AKIDENV", secret=SECRET, home=tmp_path)
    monkeypatch.setenv("AWS_REGION", emu.region)
    monkeypatch.setenv("AWS_ENDPOINT_URL", emu.endpoint)
    m = mount(config_text="[aws]\npoll_interval = 0.2\n")
    assert (vm_dir(m, emu, "web01") / "disk.vmdk").exists()
    assert "credentials from environment (key id AKIDENV)" in m.log_text()


def test_missing_credentials_do_not_fail_the_mount(emu, mount, monkeypatch,
                                                   tmp_path):
    aws_env(monkeypatch, key=None, home=tmp_path)
    m = mount(config_text=aws_config(emu))
    assert os.listdir(m.path / "aws") == [".progress"] or \
        not [n for n in os.listdir(m.path / "aws") if n.startswith("i-")]
    lines = m.progress("aws")
    errors = [l.get("error", "") for l in lines if l["state"] == "failed"]
    assert errors and "no AWS credentials" in errors[0], lines
    assert emu.calls() == {}, "no request without credentials"


# --- leftovers ---------------------------------------------------------------------

def test_snapshot_left_by_a_crash_is_deleted(emu, mount, monkeypatch,
                                             tmp_path):
    """A daemon killed while an export is open leaves its tagged snapshot;
    the next mount on the same cache folder deletes it at mount. Snapshots
    of another machine's cloudfs, of another cache folder on this machine,
    and of a cloudfs still running are left alone."""
    aws_env(monkeypatch)
    cache = tmp_path / "shared-cache"
    me = open("/etc/machine-id").read().strip()[:16]
    cache_hash = hashlib.sha256(str(cache).encode()).hexdigest()[:8]
    other_hash = hashlib.sha256(b"/elsewhere").hexdigest()[:8]
    start = open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19]
    owners = [
        "0123456789abcdef-%s-1-1" % cache_hash,          # another machine
        "%s-%s-1-1" % (me, other_hash),                    # another cache
        "%s-%s-%d-%s" % (me, cache_hash, os.getpid(), start),  # alive
    ]
    for owner in owners:
        emu.boto(
            "v = ec2.describe_volumes()['Volumes'][0]['VolumeId']\n"
            "ec2.create_snapshot(VolumeId=v, TagSpecifications=[{"
            "'ResourceType': 'snapshot', 'Tags': ["
            "{'Key': 'cloudfs:temporary', 'Value': 'true'},"
            "{'Key': 'cloudfs:owner', 'Value': '%s'}]}])\n" % owner)
    foreign = set(emu.cloudfs_snapshots())
    assert len(foreign) == len(owners)
    emu.reset_stats()

    m = mount(config_text=aws_config(emu), name="crashed", cache_dir=cache)
    web = vm_dir(m, emu, "web01")
    assert len(read_range(web / "disk.vmdk", 0, 4096)) == 4096
    assert emu.calls("CreateSnapshot") == 1
    m.kill()
    # A dead daemon's mount fails stat (ENOTCONN): ismount() says no.
    subprocess.run(["fusermount3", "-u", "-z", str(m.path)],
                   capture_output=True)
    left = set(emu.cloudfs_snapshots()) - foreign
    assert len(left) == 1, "the killed daemon's snapshot should be there"

    again = mount(config_text=aws_config(emu), name="again", cache_dir=cache)
    assert os.listdir(again.path / "aws")
    wait_until(lambda: set(emu.cloudfs_snapshots()) == foreign, 30,
               what="the leftover snapshot to be deleted")
    assert "left behind by an earlier cloudfs" in again.log_text()
    assert emu.calls("DeleteSnapshot") == 1


def test_several_regions(emu, mount, monkeypatch):
    aws_env(monkeypatch)
    m = mount(config_text=aws_config(emu, regions="%s, eu-west-1"
                                     % emu.region))
    assert (vm_dir(m, emu, "web01") / "disk.vmdk").exists()
    info = json.loads((vm_dir(m, emu, "db01") / "info.json").read_text())
    assert info["region"] == emu.region
    assert emu.calls("DescribeInstances") == 2


# --- the credential chain, and grants that expire during a copy -------------------

SECRET_RE = r"(secret|token)[0-9A-F]{16}"


def slow_blocks(emu, seconds=1.0):
    """Every GetSnapshotBlock waits: a copy that lasts."""
    emu.faults({"GetSnapshotBlock": {"every": 1, "stall": seconds}})


@pytest.fixture
def short_lived(emu):
    yield emu
    emu.config(creds_seconds=3600, block_token_seconds=7 * 86400,
               container_token=None, sso_token=None)


def copy_and_compare(m, emu, name, tmp_path):
    vm = vm_dir(m, emu, name)
    dst = tmp_path / ("%s.vmdk" % name)
    t0 = time.monotonic()
    run_tool(["cp", vm / "disk.vmdk", dst], timeout=120)
    took = time.monotonic() - t0
    qemu_compare(emu.images[name][0].path, dst, "vmdk")
    return took


def test_container_credentials_expire_during_copy(short_lived, mount,
                                                  monkeypatch, tmp_path):
    """Container credentials that last 3 s; the launcher refuses a key
    past its expiry. A copy of many seconds completes byte-identical, so
    the credentials were renewed while it ran."""
    emu = short_lived
    life = 3
    emu.config(creds_seconds=life, container_token="Bearer abc")
    aws_env(monkeypatch, key=None, home=tmp_path)
    monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI",
                       emu.control_url + "/creds")
    monkeypatch.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "Bearer abc")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    m = mount(config_text=aws_config(emu), options={"parallel": "1"})
    assert (vm_dir(m, emu, "web01") / "disk.vmdk").exists()
    slow_blocks(emu, 2.0)
    took = copy_and_compare(m, emu, "web01", tmp_path)
    assert took > 2 * life, "the copy took %.1f s only" % took
    fetched = emu.calls("ContainerCredentials")
    assert fetched >= 3, fetched
    log = m.log_text()
    assert "container credentials at http://127.0.0.1" in log
    assert "grant renewed" in log
    import re
    assert not re.search(SECRET_RE, log), "a secret reached the log"


def test_instance_profile_through_imdsv2(short_lived, mount, monkeypatch,
                                         tmp_path):
    emu = short_lived
    aws_env(monkeypatch, key=None, home=tmp_path)
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", emu.control_url)
    m = mount(config_text=aws_config(emu))
    assert (vm_dir(m, emu, "web01") / "disk.vmdk").exists()
    assert emu.calls("InstanceProfile") == 1
    assert "instance profile cloudfs-role (IMDSv2)" in m.log_text()

    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    off = mount(config_text=aws_config(emu), name="off")
    errors = [l.get("error", "") for l in off.progress("aws")
              if l["state"] == "failed"]
    assert errors and "no AWS credentials" in errors[0], errors


def write_aws_files(home, config, credentials=None):
    (home / ".aws").mkdir(parents=True, exist_ok=True)
    (home / ".aws" / "config").write_text(config)
    if credentials is not None:
        (home / ".aws" / "credentials").write_text(credentials)


def test_assume_role_with_source_profile(emu, mount, monkeypatch, tmp_path):
    home = tmp_path / "home"
    write_aws_files(home, "[profile base]\nregion = %s\n"
                    "[profile admin]\nrole_arn = arn:aws:iam::123456789012:"
                    "role/cloudfs\nsource_profile = base\n"
                    "role_session_name = test\n" % emu.region,
                    "[base]\naws_access_key_id = AKIDBASE\n"
                    "aws_secret_access_key = %s\n" % SECRET)
    aws_env(monkeypatch, key=None, home=home)
    monkeypatch.setenv("AWS_PROFILE", "admin")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    m = mount(config_text=aws_config(emu))
    assert (vm_dir(m, emu, "web01") / "disk.vmdk").exists()
    assert emu.calls("AssumeRole") == 1
    log = m.log_text()
    assert ("AssumeRole arn:aws:iam::123456789012:role/cloudfs with "
            "profile base in") in log
    assert SECRET not in log


def test_web_identity_from_environment(emu, mount, monkeypatch, tmp_path):
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJjbG91ZGZzIn0.c2ln\n")
    aws_env(monkeypatch, key=None, home=tmp_path)
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token))
    monkeypatch.setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/wi")
    m = mount(config_text=aws_config(emu))
    assert (vm_dir(m, emu, "web01") / "disk.vmdk").exists()
    assert emu.calls("AssumeRoleWithWebIdentity") == 1
    assert "c2ln" not in m.log_text()


def test_credential_process(emu, mount, monkeypatch, tmp_path):
    home = tmp_path / "home"
    script = tmp_path / "creds.sh"
    script.write_text("#!/bin/sh\necho '{\"Version\": 1, \"AccessKeyId\": "
                      "\"AKIDPROC\", \"SecretAccessKey\": \"%s\", "
                      "\"SessionToken\": \"tok\", \"Expiration\": "
                      "\"2099-01-01T00:00:00Z\"}'\n" % SECRET)
    script.chmod(0o755)
    write_aws_files(home, "[default]\ncredential_process = \"%s\" --x\n"
                    "[profile broken]\ncredential_process = /bin/false\n"
                    % script)
    aws_env(monkeypatch, key=None, home=home)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    m = mount(config_text=aws_config(emu))
    assert (vm_dir(m, emu, "web01") / "disk.vmdk").exists()
    log = m.log_text()
    assert "credential_process of profile default (key id AKIDPROC, " \
        "temporary)" in log
    assert SECRET not in log

    bad = mount(config_text=aws_config(emu, profile="broken"), name="bad")
    errors = [l.get("error", "") for l in bad.progress("aws")
              if l["state"] == "failed"]
    assert errors and "credential_process of profile 'broken' failed" \
        in errors[0], errors


def test_sso_cached_token(short_lived, mount, monkeypatch, tmp_path):
    emu = short_lived
    home = tmp_path / "home"
    write_aws_files(home, "[profile dev]\nsso_session = corp\n"
                    "sso_account_id = 123456789012\nsso_role_name = Admin\n"
                    "[sso-session corp]\nsso_region = %s\n"
                    "sso_start_url = https://corp.awsapps.com/start\n"
                    % emu.region)
    cache = home / ".aws" / "sso" / "cache"
    cache.mkdir(parents=True)
    name = hashlib.sha1(b"corp").hexdigest() + ".json"
    (cache / name).write_text(json.dumps({
        "accessToken": "ssotoken123", "expiresAt": "2099-01-01T00:00:00Z",
        "region": emu.region}))
    emu.config(sso_token="ssotoken123")
    aws_env(monkeypatch, key=None, home=home)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    m = mount(config_text=aws_config(emu, profile="dev",
                                     endpoint_url_sso=emu.control_url))
    assert (vm_dir(m, emu, "web01") / "disk.vmdk").exists()
    assert emu.calls("GetRoleCredentials") == 1
    assert "SSO role Admin of account 123456789012" in m.log_text()
    assert "ssotoken123" not in m.log_text()


def test_block_tokens_expire_during_copy(short_lived, mount, monkeypatch,
                                         tmp_path):
    """Block tokens that last 3 s; GetSnapshotBlock refuses expired ones.
    A longer copy completes because the blocks are listed again."""
    emu = short_lived
    life = 3
    emu.config(block_token_seconds=life)
    aws_env(monkeypatch)
    m = mount(config_text=aws_config(emu), options={"parallel": "1"})
    assert (vm_dir(m, emu, "web01") / "disk.vmdk").exists()
    slow_blocks(emu, 2.0)
    took = copy_and_compare(m, emu, "web01", tmp_path)
    assert took > 2 * life, "the copy took %.1f s only" % took
    assert emu.calls("ListSnapshotBlocks") >= 2
    assert "block tokens listed again" in m.log_text()


def test_image_left_by_a_crash_is_deleted(emu, mount, monkeypatch, tmp_path):
    """A temporary image (and its snapshot) whose owner is a process of
    this machine and cache that is gone is deregistered at mount; one of
    another machine is left alone."""
    aws_env(monkeypatch)
    cache = tmp_path / "cache"
    me = open("/etc/machine-id").read().strip()[:16]
    cache_hash = hashlib.sha256(str(cache).encode()).hexdigest()[:8]
    made = {}
    for label, owner in (("stale", "%s-%s-999999-1" % (me, cache_hash)),
                         ("foreign", "0123456789abcdef-%s-1-1" % cache_hash)):
        made[label] = emu.boto(
            "i = ec2.describe_instances()['Reservations'][0]['Instances']"
            "[0]['InstanceId']\n"
            "tags = [{'Key': 'cloudfs:temporary', 'Value': 'true'},"
            "{'Key': 'cloudfs:owner', 'Value': %r}]\n"
            "r = ec2.create_image(InstanceId=i, Name=%r, TagSpecifications=["
            "{'ResourceType': 'image', 'Tags': tags},"
            "{'ResourceType': 'snapshot', 'Tags': tags}])\n"
            "print(json.dumps(r['ImageId']))" % (owner, label))
    emu.reset_stats()

    def images():
        return set(emu.boto(
            "r = ec2.describe_images(Owners=['self'], Filters=[{'Name': "
            "'tag:cloudfs:temporary', 'Values': ['true']}])\n"
            "print(json.dumps([i['ImageId'] for i in r['Images']]))"))
    assert {made["stale"], made["foreign"]} <= images()
    m = mount(config_text=aws_config(emu), cache_dir=cache)
    assert os.listdir(m.path / "aws")
    wait_until(lambda: made["stale"] not in images(), 30,
               what="the stale image to be deregistered")
    assert made["foreign"] in images()
    assert emu.calls("DeregisterImage") == 1
    assert emu.calls("DeleteSnapshot") == 1
    assert "deleting image %s left behind" % made["stale"] in m.log_text()
    emu.boto("ec2.deregister_image(ImageId=%r)" % made["foreign"])
