# SPDX-License-Identifier: MIT
"""The Azure emulator itself, driven with curl and qemu-img: the token
flows, ARM paging, snapshot and access LROs, the SAS against Azurite
(ranged reads, page lists with holes, revocation, expiry), faults and
counters."""

import json
import os
import shutil
import re
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import pytest

pytest_plugins = ["azure_fixtures"]  # the azure and azure_servers fixtures

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "emulators"))
from azure_blob import VHD_FOOTER_SIZE, vhd_footer  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30
DISK_API = "2023-04-02"
VM_API = "2024-07-01"
RG_API = "2021-04-01"

pytestmark = pytest.mark.skipif(shutil.which("curl") is None,
                                reason="curl is missing")


def curl(*args, data=None):
    """Run curl; return (status, {header: value}, body bytes)."""
    with tempfile.NamedTemporaryFile() as out:
        argv = ["curl", "-sS", "-D", "-", "-o", out.name, *args]
        if data is not None:
            argv += ["--data-binary", "@-"]
            data = data if isinstance(data, bytes) else data.encode()
        r = subprocess.run(argv, input=data, capture_output=True, timeout=60)
        assert r.returncode == 0, "curl failed: %s" % r.stderr.decode()
        body = Path(out.name).read_bytes()
    head = r.stdout.decode(errors="replace")
    blocks = [b for b in head.replace("\r\n", "\n").split("\n\n") if b]
    lines = blocks[-1].split("\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


def arm(azure, token, method, path, api, body=None, extra=""):
    url = path if path.startswith("http") else \
        "%s%s?api-version=%s%s" % (azure.endpoint, path, api, extra)
    args = ["-X", method, "-H", "Authorization: Bearer " + token, url]
    if body is not None:
        args[2:2] = ["-H", "Content-Type: application/json"]
        return curl(*args, data=json.dumps(body))
    return curl(*args)


def curl_token(azure, secret=None, scope="https://management.azure.com/"
               ".default"):
    return curl("-X", "POST", azure.token_url,
                "--data-urlencode", "grant_type=client_credentials",
                "--data-urlencode", "client_id=" + azure.client_id,
                "--data-urlencode", "client_secret=" + (
                    secret or azure.client_secret),
                "--data-urlencode", "scope=" + scope)


def get_token(azure):
    status, _, body = curl_token(azure)
    assert status == 200, body
    return json.loads(body)["access_token"]


def wait_lro(azure, token, headers, via="async", timeout=10):
    """Poll an LRO the way a client does; return the final (status, body)."""
    deadline = time.monotonic() + timeout
    if via == "async":
        url = headers["azure-asyncoperation"]
        while True:
            st, _, body = arm(azure, token, "GET", url, None)
            obj = json.loads(body)
            assert st == 200, body
            if obj["status"] != "InProgress":
                return st, obj
            assert time.monotonic() < deadline
            time.sleep(0.05)
    url = headers["location"]
    while True:
        st, hdrs, body = arm(azure, token, "GET", url, None)
        if st != 202:
            return st, json.loads(body) if body else None
        assert "retry-after" in hdrs and "location" in hdrs
        assert time.monotonic() < deadline
        time.sleep(0.05)


def rg_path(azure, rg, kind=None, name=None):
    p = "/subscriptions/%s/resourceGroups/%s" % (azure.subscription, rg)
    if kind:
        p += "/providers/Microsoft.Compute/" + kind
    if name:
        p += "/" + name
    return p


def make_snapshot(azure, token, rg, name, disk, tags=None, incremental=True):
    st, hdrs, body = arm(azure, token, "PUT", rg_path(azure, rg, "snapshots",
                                                      name), DISK_API, {
        "location": azure.location, "tags": tags or {},
        "properties": {"creationData": {"createOption": "Copy",
                                        "sourceResourceId": disk["id"]},
                       "incremental": incremental}})
    assert st in (201, 202), body
    assert json.loads(body)["properties"]["provisioningState"] == "Updating"
    assert hdrs["retry-after"]
    st, op = wait_lro(azure, token, hdrs)
    assert op["status"] == "Succeeded", op
    return op["properties"]["output"]


def grant(azure, token, path, seconds=3600, via="location"):
    st, hdrs, body = arm(azure, token, "POST", path + "/beginGetAccess",
                         DISK_API, {"access": "Read",
                                    "durationInSeconds": seconds})
    assert st == 202, body
    assert {"azure-asyncoperation", "location", "retry-after"} <= set(hdrs)
    st, out = wait_lro(azure, token, hdrs, via=via)
    if via == "location":
        assert st == 200, out
        return out["accessSAS"]
    assert out["status"] == "Succeeded", out
    return out["properties"]["output"]["accessSAS"]


def end_access(azure, token, path):
    st, hdrs, body = arm(azure, token, "POST", path + "/endGetAccess",
                         DISK_API)
    assert st == 202, body
    st, out = wait_lro(azure, token, hdrs, via="location")
    assert st == 200


def pagelist(sas, extra=""):
    st, _, body = curl(sas + "&comp=pagelist" + extra)
    assert st == 200, body
    ranges = [(int(a), int(b)) for a, b in re.findall(
        r"<PageRange><Start>(\d+)</Start><End>(\d+)</End></PageRange>",
        body.decode())]
    marker = re.search(r"<NextMarker>([^<]+)</NextMarker>", body.decode())
    return ranges, marker.group(1) if marker else None


# --- tokens and ARM ------------------------------------------------------------

def test_token_flow_paging_and_arm_errors(azure):
    status, hdrs, body = curl_token(azure)
    assert status == 200, body
    tok = json.loads(body)
    assert tok["token_type"] == "Bearer" and tok["expires_in"] > 60
    token = tok["access_token"]
    for name in ("rg-c", "rg-a", "rg-b"):
        azure.add_resource_group(name)
    azure.page_size(2)
    path = "/subscriptions/%s/resourcegroups" % azure.subscription
    st, _, body = arm(azure, token, "GET", path, RG_API)
    first = json.loads(body)
    assert st == 200 and len(first["value"]) == 2 and "nextLink" in first
    st, _, body = arm(azure, token, "GET", first["nextLink"], None)
    second = json.loads(body)
    assert "nextLink" not in second
    names = [r["name"] for r in first["value"] + second["value"]]
    assert names == ["rg-a", "rg-b", "rg-c"]

    st, hdrs, body = curl(azure.endpoint + path + "?api-version=" + RG_API)
    assert st == 401 and hdrs["www-authenticate"].startswith("Bearer ")
    assert json.loads(body)["error"]["code"] == "AuthenticationFailed"
    st, _, body = arm(azure, "not-a-token", "GET", path, RG_API)
    assert st == 401
    st, _, body = curl("-H", "Authorization: Bearer " + token,
                       azure.endpoint + path)
    assert st == 400
    assert json.loads(body)["error"]["code"] == "MissingApiVersionParameter"
    st, _, body = arm(azure, token, "GET", rg_path(azure, "rg-a", "disks"),
                      VM_API)
    assert st == 400
    assert json.loads(body)["error"]["code"] == "NoRegisteredProviderFound"
    st, _, body = arm(azure, token, "GET", rg_path(azure, "nope", "disks"),
                      DISK_API)
    assert st == 404
    assert json.loads(body)["error"]["code"] == "ResourceGroupNotFound"

    st, _, body = curl_token(azure, secret="wrong")
    assert st == 401 and json.loads(body)["error"] == "invalid_client"
    st, _, body = curl_token(azure, scope="https://management.azure.com/")
    assert st == 400 and json.loads(body)["error"] == "invalid_scope"
    assert azure.calls("token") == 3
    assert azure.calls("list_resource_groups") == 5  # refusals count too


def test_token_expires(azure):
    azure.token_lifetime(1)
    status, _, body = curl_token(azure)
    tok = json.loads(body)
    assert tok["expires_in"] == 1
    path = "/subscriptions/%s/resourcegroups" % azure.subscription
    st, _, _ = arm(azure, tok["access_token"], "GET", path, RG_API)
    assert st == 200
    deadline = time.monotonic() + 5
    while True:
        st, hdrs, body = arm(azure, tok["access_token"], "GET", path, RG_API)
        if st == 401:
            break
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert json.loads(body)["error"]["code"] == "ExpiredAuthenticationToken"
    assert "www-authenticate" in hdrs


def test_managed_identity(azure):
    url = azure.msi_endpoint + "?api-version=2018-02-01&resource=" + \
        urllib.parse.quote("https://management.azure.com/", safe="")
    st, _, body = curl(url)
    assert st == 400 and json.loads(body)["error"] == "invalid_request"
    st, _, body = curl("-H", "Metadata: true", url)
    assert st == 200, body
    tok = json.loads(body)
    assert isinstance(tok["expires_in"], str) and tok["token_type"] == "Bearer"
    path = "/subscriptions/%s/resourcegroups" % azure.subscription
    st, _, _ = arm(azure, tok["access_token"], "GET", path, RG_API)
    assert st == 200
    azure.config(msi_enabled=False)
    st, _, body = curl("-H", "Metadata: true", url)
    assert st == 400


def test_vms_disks_and_power_state(azure):
    azure.add_resource_group("rg1")
    azure.add_vm("rg1", "vm1", os_disk=b"\x01" * MiB,
                 data_disks={1: {"size": 2 * MiB}, 0: b"\x02" * MiB})
    azure.add_disk("rg1", "spare", size=3 * MiB, sku="Standard_LRS")
    token = get_token(azure)
    st, _, body = arm(azure, token, "GET",
                      rg_path(azure, "rg1", "virtualMachines", "vm1"), VM_API,
                      extra="&$expand=instanceView")
    vm = json.loads(body)
    assert st == 200, body
    sp = vm["properties"]["storageProfile"]
    assert sp["osDisk"]["name"] == "vm1-osdisk"
    assert [d["lun"] for d in sp["dataDisks"]] == [0, 1]
    # ARM spells the group in capitals inside these ids: compare ignoring case
    assert "/resourceGroups/RG1/" in sp["osDisk"]["managedDisk"]["id"]
    codes = [s["code"] for s in vm["properties"]["instanceView"]["statuses"]]
    assert "PowerState/running" in codes
    azure.set_power("rg1", "vm1", "deallocated")
    st, _, body = arm(azure, token, "GET", rg_path(
        azure, "rg1", "virtualMachines", "vm1") + "/instanceView", VM_API)
    assert "PowerState/deallocated" in [s["code"] for s in
                                        json.loads(body)["statuses"]]

    azure.page_size(2)
    url = "%s/subscriptions/%s/providers/Microsoft.Compute/disks?" \
          "api-version=%s" % (azure.endpoint, azure.subscription, DISK_API)
    disks = []
    while url:
        st, _, body = arm(azure, token, "GET", url, None)
        page = json.loads(body)
        disks += page["value"]
        url = page.get("nextLink")
    by = {d["name"]: d for d in disks}
    assert set(by) == {"vm1-osdisk", "vm1-data0", "vm1-data1", "spare"}
    assert by["spare"]["properties"]["diskSizeBytes"] == 3 * MiB
    assert by["spare"]["properties"]["diskState"] == "Unattached"
    assert by["vm1-data0"]["properties"]["diskState"] == "Reserved"
    assert by["vm1-data0"]["managedBy"].endswith("/virtualMachines/vm1")
    assert azure.calls("list_disks") == 2


# --- snapshots, SAS, page blobs -------------------------------------------------

def test_snapshot_grant_read_revoke_delete(azure):
    """The export path: snapshot, grant, page list with holes, ranged
    reads, delete refused while granted, endGetAccess revokes, delete."""
    size = 64 * GiB
    extents = {0: b"\x11" * (512 * 1024), 5 * GiB: b"\x22" * (512 * 1024),
               size - MiB: b"tail" * 1024}
    azure.add_resource_group("rg1")
    azure.add_vm("rg1", "big", os_disk={"size": size, "extents": extents})
    disk = azure.disk("big-osdisk")
    token = get_token(azure)
    snap = make_snapshot(azure, token, "rg1", "cfs-1", disk,
                         tags={"cloudfs-owner": "mount-a"})
    assert snap["properties"]["provisioningState"] == "Succeeded"
    assert snap["properties"]["diskSizeBytes"] == size
    spath = rg_path(azure, "rg1", "snapshots", "cfs-1")
    sas = grant(azure, token, spath, via="async")
    assert "sig=" in sas and "sr=b" in sas and "sp=r" in sas

    ranges, _ = pagelist(sas)
    assert ranges == [(0, 512 * 1024 - 1), (5 * GiB, 5 * GiB + 512 * 1024 - 1),
                      (size - MiB, size - MiB + 4096 - 1),
                      (size, size + VHD_FOOTER_SIZE - 1)]
    st, hdrs, body = curl("-r", "%d-%d" % (5 * GiB, 5 * GiB + 9), sas)
    assert st == 206 and body == b"\x22" * 10
    assert hdrs["content-range"] == "bytes %d-%d/%d" % (
        5 * GiB, 5 * GiB + 9, size + 512)
    st, _, body = curl("-r", "%d-%d" % (GiB, GiB + 4095), sas)
    assert st == 206 and body == bytes(4096)           # a hole reads as zeros
    st, _, footer = curl("-r", "%d-%d" % (size, size + 511), sas)
    assert footer[:8] == b"conectix" and len(footer) == 512
    blob = azure.snapshot("cfs-1")["blobPath"]
    assert azure.range_gets(blob) == 3 and azure.pagelists(blob) == 1

    st, _, body = arm(azure, token, "DELETE", spath, DISK_API)
    assert st == 409
    assert json.loads(body)["error"]["code"] == "OperationNotAllowed"
    assert azure.snapshot("cfs-1")["accessGranted"]

    end_access(azure, token, spath)
    st, hdrs, body = curl("-r", "0-511", sas)
    assert st == 403, body
    assert hdrs["x-ms-error-code"] == "AuthorizationFailure"
    assert not azure.snapshot("cfs-1")["accessGranted"]

    st, hdrs, body = arm(azure, token, "DELETE", spath, DISK_API)
    assert st == 202 and "location" in hdrs
    st, _ = wait_lro(azure, token, hdrs, via="location")
    assert st == 200
    assert azure.snapshots() == []
    assert azure.deleted_snapshots()[0]["tags"] == {"cloudfs-owner":
                                                    "mount-a"}
    st, _, _ = arm(azure, token, "DELETE", spath, DISK_API)
    assert st == 204
    calls = azure.calls()
    assert calls["create_snapshot"] == 1 and calls["begin_get_access"] == 1
    assert calls["end_get_access"] == 1 and calls["delete_snapshot"] == 3


def test_sweep_lists_snapshots_with_tags(azure):
    azure.add_resource_group("rg1")
    azure.add_resource_group("rg2")
    d1 = azure.add_disk("rg1", "d1", size=MiB)
    d2 = azure.add_disk("rg2", "d2", size=MiB)
    token = get_token(azure)
    make_snapshot(azure, token, "rg1", "mine", d1, {"cloudfs-owner": "me"})
    make_snapshot(azure, token, "rg2", "theirs", d2, {"cloudfs-owner": "x"})
    make_snapshot(azure, token, "rg2", "other", d2, incremental=False)
    url = "%s/subscriptions/%s/providers/Microsoft.Compute/snapshots?" \
          "api-version=%s" % (azure.endpoint, azure.subscription, DISK_API)
    azure.page_size(2)
    seen = []
    while url:
        st, _, body = arm(azure, token, "GET", url, None)
        page = json.loads(body)
        seen += page["value"]
        url = page.get("nextLink")
    tags = {s["name"]: s["tags"] for s in seen}
    assert tags == {"mine": {"cloudfs-owner": "me"},
                    "theirs": {"cloudfs-owner": "x"}, "other": {}}
    assert {s["name"]: s["properties"]["incremental"] for s in seen} == \
        {"mine": True, "theirs": True, "other": False}


def test_expired_grant_and_renewal(azure):
    azure.add_resource_group("rg1")
    disk = azure.add_disk("rg1", "d1", extents={0: b"abc"}, size=MiB)
    token = get_token(azure)
    path = rg_path(azure, "rg1", "disks", "d1")
    old = grant(azure, token, path, seconds=2)
    new = grant(azure, token, path, seconds=3600)      # renewal while granted
    q_old = urllib.parse.parse_qs(urllib.parse.urlsplit(old).query)
    q_new = urllib.parse.parse_qs(urllib.parse.urlsplit(new).query)
    assert q_old["si"] != q_new["si"] and q_old["se"] != q_new["se"]
    assert curl("-r", "0-2", old)[2] == b"abc"
    deadline = time.monotonic() + 6
    while curl("-r", "0-2", old)[0] != 403:            # Azurite enforces se
        assert time.monotonic() < deadline
        time.sleep(0.2)
    st, _, body = curl("-r", "0-2", new)
    assert st == 206 and body == b"abc"
    assert azure.disk("d1")["accessGranted"]
    end_access(azure, token, path)
    assert curl("-r", "0-2", new)[0] == 403
    assert disk["blobPath"] == azure.disk("d1")["blobPath"]


def test_grant_cap_and_write_refused(azure):
    azure.add_resource_group("rg1")
    azure.add_disk("rg1", "d1", extents={512: b"x"}, size=MiB)
    azure.grant_cap(1)
    token = get_token(azure)
    sas = grant(azure, token, rg_path(azure, "rg1", "disks", "d1"),
                seconds=3600)
    se = urllib.parse.parse_qs(urllib.parse.urlsplit(sas).query)["se"][0]
    assert time.mktime(time.strptime(se, "%Y-%m-%dT%H:%M:%SZ")) - \
        time.mktime(time.gmtime()) <= 2
    st, _, _ = curl("-X", "PUT", "-H", "x-ms-page-write: update",
                    "-H", "x-ms-range: bytes=0-511",
                    "--data-binary", "@/dev/null", sas + "&comp=page")
    assert st == 403


def test_pagelist_marker_paging(azure):
    azure.add_resource_group("rg1")
    extents = {i * 4096: b"\x05" * 512 for i in range(5)}
    azure.add_disk("rg1", "d1", extents=extents, size=MiB)
    token = get_token(azure)
    sas = grant(azure, token, rg_path(azure, "rg1", "disks", "d1"))
    seen, marker = [], None
    while True:
        extra = "&maxresults=2" + ("&marker=" + marker if marker else "")
        ranges, marker = pagelist(sas, extra)
        seen += ranges
        if not marker:
            break
    assert seen == [(i * 4096, i * 4096 + 511) for i in range(5)] + \
        [(MiB, MiB + 511)]
    assert azure.pagelists() == 3


def test_attached_disk_and_bad_requests(azure):
    azure.add_resource_group("rg1")
    azure.add_vm("rg1", "vm1", os_disk={"size": MiB})
    token = get_token(azure)
    dpath = rg_path(azure, "rg1", "disks", "vm1-osdisk")
    st, _, body = arm(azure, token, "POST", dpath + "/beginGetAccess",
                      DISK_API, {"access": "Read", "durationInSeconds": 60})
    assert st == 409, body
    st, _, body = arm(azure, token, "POST", dpath + "/beginGetAccess",
                      DISK_API, {"access": "Read"})
    assert st == 400 and json.loads(body)["error"]["code"] == \
        "InvalidParameter"
    spath = rg_path(azure, "rg1", "snapshots", "s1")
    bad = [({"tags": {}}, 400, "LocationRequired"),
           ({"location": azure.location, "properties": {}}, 400,
            "InvalidParameter"),
           ({"location": azure.location, "properties": {"creationData": {
               "createOption": "Copy", "sourceResourceId": azure.disk_id(
                   "rg1", "missing")}}}, 404, "NotFound"),
           ({"location": azure.location, "tags": {"a/b": "c"},
             "properties": {}}, 400, "InvalidTagNameCharacters")]
    for body_obj, status, code in bad:
        st, _, body = arm(azure, token, "PUT", spath, DISK_API, body_obj)
        assert (st, json.loads(body)["error"]["code"]) == (status, code)
    st, _, body = curl("-X", "PUT", "-H", "Authorization: Bearer " + token,
                       "-H", "Content-Type: text/plain", "--data", "{}",
                       "%s%s?api-version=%s" % (azure.endpoint, spath,
                                                DISK_API))
    assert st == 415
    st, _, body = arm(azure, token, "PUT", spath, DISK_API, "{not json")
    assert st == 400


# --- faults and counters ----------------------------------------------------------

def test_faults_throttle_and_failed_lro(azure):
    azure.add_resource_group("rg1")
    disk = azure.add_disk("rg1", "d1", size=MiB)
    token = get_token(azure)
    path = rg_path(azure, "rg1", "disks")
    azure.fault("list", count=1, status=429, retry_after=2)
    azure.fault("list", count=1, status=503)
    st, hdrs, body = arm(azure, token, "GET", path, DISK_API)
    assert st == 429 and hdrs["retry-after"] == "2"
    assert json.loads(body)["error"]["code"] == "TooManyRequests"
    st, _, body = arm(azure, token, "GET", path, DISK_API)
    assert st == 503 and json.loads(body)["error"]["code"] == "ServerBusy"
    assert arm(azure, token, "GET", path, DISK_API)[0] == 200
    assert azure.injected("list_disks") == 2 and azure.calls("list_disks") == 3

    azure.fault("token", status=503)
    st, _, body = curl_token(azure)
    assert st == 503

    azure.fault("begin_get_access", mode="lro", status=500,
                code="InternalExecutionError")
    st, hdrs, body = arm(azure, token, "POST", path + "/d1/beginGetAccess",
                         DISK_API, {"access": "Read",
                                    "durationInSeconds": 60})
    assert st == 202
    st, op = wait_lro(azure, token, hdrs)
    assert op["status"] == "Failed"
    assert op["error"]["code"] == "InternalExecutionError"
    st, _ = wait_lro(azure, token, hdrs, via="location")
    assert st == 500
    assert not azure.disk("d1")["accessGranted"]

    azure.fault("begin_get_access", status=409, code="OperationNotAllowed")
    st, _, body = arm(azure, token, "POST", path + "/d1/beginGetAccess",
                      DISK_API, {"access": "Read", "durationInSeconds": 60})
    assert st == 409
    sas = grant(azure, token, path + "/d1")
    azure.blob_fault("range_get", count=1, status=503)
    st, hdrs, body = curl("-r", "0-511", sas)
    assert st == 503 and hdrs["x-ms-error-code"] == "ServerBusy"
    assert curl("-r", "0-511", sas)[0] == 206
    assert azure.range_gets(disk["blobPath"]) == 2

    azure.delete_disk("rg1", "d1")
    st, _, body = arm(azure, token, "GET", path + "/d1", DISK_API)
    assert st == 404 and json.loads(body)["error"]["code"] == \
        "ResourceNotFound"


# --- the VHD layout ----------------------------------------------------------------

@pytest.mark.skipif(shutil.which("qemu-img") is None,
                    reason="qemu-img is missing (Debian package qemu-utils)")
def test_vhd_matches_qemu(azure, tmp_path):
    raw = tmp_path / "d.raw"
    with open(raw, "wb") as f:
        os.truncate(f.fileno(), 4 * MiB)
        f.seek(MiB)
        f.write(os.urandom(64 * 1024))
    ref = tmp_path / "ref.vhd"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o",
                    "subformat=fixed,force_size=on", str(raw), str(ref)],
                   check=True)
    theirs = ref.read_bytes()[-512:]
    ours = vhd_footer(4 * MiB)
    variable = set(range(24, 28)) | set(range(64, 84))  # time, sum, uuid
    assert [i for i in range(512)
            if i not in variable and ours[i] != theirs[i]] == []

    azure.add_resource_group("rg1")
    azure.add_disk("rg1", "d1", raw=raw)
    token = get_token(azure)
    sas = grant(azure, token, rg_path(azure, "rg1", "disks", "d1"))
    vhd = tmp_path / "got.vhd"
    st, _, body = curl(sas)
    assert st == 200
    vhd.write_bytes(body)
    info = json.loads(subprocess.run(
        ["qemu-img", "info", "-f", "vpc", "--output=json", str(vhd)],
        check=True, capture_output=True, text=True).stdout)
    assert info["virtual-size"] == 4 * MiB
    subprocess.run(["qemu-img", "compare", "-f", "vpc", "-F", "raw",
                    str(vhd), str(raw)], check=True, capture_output=True)
