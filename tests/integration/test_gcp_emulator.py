# SPDX-License-Identifier: MIT
"""The GCP fake (tests/emulators/gcp_fake.py) driven with real clients:
JWTs signed by openssl and posted with curl, paged Compute lists, the image
export (image insert, operation wait, Cloud Build, GCS) checked with
qemu-img, and the fault switches."""

import base64
import hashlib
import json
import shutil
import subprocess
import time
import urllib.parse

import pytest

from conftest import MiB, wait_until
from gcp_fixtures import (EXPORT_BUILDER, gcp, gcp_key,  # noqa: F401
                          gcp_server)

pytestmark = pytest.mark.skipif(
    not (shutil.which("qemu-img") and shutil.which("openssl") and
         shutil.which("curl")),
    reason="needs qemu-img (qemu-utils), openssl and curl")

P = "cloudfs-test"


def curl(*args):
    r = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}"] + list(args),
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    body, _, code = r.stdout.rpartition(b"\n")
    return int(code), body


def token_with_curl(gcp, assertion):
    return curl("-X", "POST", gcp.token_url, "--data-urlencode",
                "grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer",
                "--data-urlencode", "assertion=" + assertion)


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def export(gcp, token, image, dest, fmt="vmdk", disk="web01",
           zone="us-central1-a"):
    """Image insert, wait, build; return the finished build."""
    r = gcp.api("POST", "%s/projects/%s/global/images?forceCreate=true"
                % (gcp.compute_url, P), token=token,
                body={"name": image, "sourceDisk": "projects/%s/zones/%s/"
                      "disks/%s" % (P, zone, disk),
                      "labels": {"cloudfs-owner": "m1"}})
    assert r.status == 200, r.body
    op = r.json()
    assert op["status"] in ("PENDING", "RUNNING")
    r = gcp.api("POST", "%s/projects/%s/global/operations/%s/wait"
                % (gcp.compute_url, P, op["name"]), token=token)
    assert r.status == 200 and r.json()["status"] == "DONE"
    assert "error" not in r.json()
    args = ["-source_image=projects/%s/global/images/%s" % (P, image),
            "-destination_uri=gs://%s/%s" % (gcp.bucket, dest),
            "-timeout=1h"]
    if fmt:
        args.append("-format=" + fmt)
    r = gcp.api("POST", "%s/projects/%s/builds" % (gcp.cloudbuild_url, P),
                token=token, body={"steps": [{"name": EXPORT_BUILDER,
                                              "args": args}],
                                   "timeout": "3600s", "tags": ["cloudfs"]})
    assert r.status == 200, r.body
    op = r.json()
    assert op["name"].startswith("operations/build/")
    bid = op["metadata"]["build"]["id"]
    assert op["metadata"]["build"]["status"] == "QUEUED"

    def finished():
        b = gcp.api("GET", "%s/projects/%s/builds/%s"
                    % (gcp.cloudbuild_url, P, bid), token=token).json()
        return b if b["status"] not in ("QUEUED", "WORKING") else None
    build = wait_until(finished, 60, 0.1, "the build")
    r = gcp.api("GET", "%s/%s" % (gcp.cloudbuild_url, op["name"]),
                token=token)
    assert r.status == 200 and r.json().get("done") is True
    return build


def obj_url(gcp, name, media=False):
    return "%s/b/%s/o/%s%s" % (gcp.storage_url, gcp.bucket,
                               urllib.parse.quote(name, safe=""),
                               "?alt=media" if media else "")


@pytest.fixture
def web01(gcp):
    return gcp.seed_instance("web01", disks=[{
        "name": "web01", "size": 8 * MiB + 12345, "seed": 7,
        "extents": [(0, 1 * MiB), (5 * MiB, 300001),
                    (8 * MiB, 12345)]}])


# --- auth ---------------------------------------------------------------------

def test_jwt_signed_with_openssl_gets_a_token(gcp, gcp_key):
    key = json.loads(gcp_key.path.read_text())
    assert key["type"] == "service_account"
    assert key["token_uri"] == gcp.token_url
    code, body = token_with_curl(gcp, gcp_key.assertion())
    assert code == 200, body
    answer = json.loads(body)
    assert answer["token_type"] == "Bearer" and answer["expires_in"] == 3600
    url = "%s/projects/%s/zones" % (gcp.compute_url, P)
    code, body = curl("-H", "Authorization: Bearer " + answer["access_token"],
                      url)
    assert code == 200
    assert {z["name"] for z in json.loads(body)["items"]} >= {
        "us-central1-a", "europe-west1-b"}
    code, body = curl(url)
    assert code == 401
    err = json.loads(body)["error"]
    assert err["code"] == 401 and err["status"] == "UNAUTHENTICATED"
    assert gcp.calls("token") == 1 and gcp.calls("unauthenticated") == 1


@pytest.mark.parametrize("bend, error", [
    ("signature", "invalid_grant"), ("other_key", "invalid_grant"),
    ("aud", "invalid_grant"), ("long", "invalid_grant"),
    ("expired", "invalid_grant"), ("kid", "invalid_grant"),
    ("alg", "invalid_grant"), ("no_scope", "invalid_scope"),
    ("iss", "invalid_grant")])
def test_bad_jwt_is_refused(gcp, gcp_key, bend, error, tmp_path):
    now = int(time.time())
    kw = {"signature": {}, "aud": {"aud": "https://example.invalid/token"},
          "long": {"lifetime": 7200}, "expired": {"iat": now - 7200},
          "kid": {"header": {"kid": "0" * 40}},
          "alg": {"header": {"alg": "HS256"}}, "no_scope": {"scope": None},
          "iss": {"claims": {"iss": "x@y.iam.gserviceaccount.com"}},
          "other_key": {}}[bend]
    assertion = gcp_key.assertion(**kw)
    if bend == "signature":
        head, claims, sig = assertion.split(".")
        raw = bytearray(base64.urlsafe_b64decode(sig + "=="))
        raw[10] ^= 1
        assertion = "%s.%s.%s" % (head, claims, base64.urlsafe_b64encode(
            bytes(raw)).decode().rstrip("="))
    if bend == "other_key":
        other = tmp_path / "other.pem"
        subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                        "rsa_keygen_bits:2048", "-out", str(other)],
                       check=True, capture_output=True)
        head, claims, _ = assertion.split(".")
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign",
                              str(other)], input=("%s.%s" % (head, claims))
                             .encode(), capture_output=True).stdout
        assertion = "%s.%s.%s" % (head, claims, base64.urlsafe_b64encode(
            sig).decode().rstrip("="))
    code, body = token_with_curl(gcp, assertion)
    assert code == 400, body
    assert json.loads(body)["error"] == error
    assert gcp.state()["tokens"] == 0


def test_token_expires_and_metadata_server(gcp):
    gcp.config(token_lifetime=1)
    token = gcp.token()
    url = "%s/projects/%s/zones" % (gcp.compute_url, P)
    assert gcp.api("GET", url, token=token).status == 200
    wait_until(lambda: gcp.api("GET", url, token=token).status == 401, 5,
               0.1, "the token to expire")
    meta = gcp.metadata_url + "/instance/service-accounts/default/token"
    assert gcp.api("GET", meta).status == 403
    r = gcp.api("GET", meta, headers={"Metadata-Flavor": "Google"})
    assert r.status == 200 and r.headers["Metadata-Flavor"] == "Google"
    assert gcp.api("GET", url, token=r.json()["access_token"]).status == 200
    gcp.expire_tokens()
    assert gcp.api("GET", url, token=r.json()["access_token"]).status == 401


# --- Compute lists ------------------------------------------------------------

def test_aggregated_list_pages(gcp):
    for i in range(3):
        gcp.seed_instance("a%d" % i, disks=[{"name": "a%d" % i,
                                             "size": 1 * MiB}])
    for i in range(2):
        gcp.seed_instance("b%d" % i, zone="europe-west1-b", disks=[{
            "name": "b%d" % i, "size": 1 * MiB}])
    token = gcp.token()
    url = "%s/projects/%s/aggregated/instances?maxResults=2" % (
        gcp.compute_url, P)
    names, pages, tok = [], 0, None
    while True:
        r = gcp.api("GET", url + ("&pageToken=" + tok if tok else ""),
                    token=token)
        assert r.status == 200, r.body
        body = r.json()
        pages += 1
        assert set(body["items"]) == {"zones/us-central1-a",
                                      "zones/europe-west1-b"}
        for scope, entry in body["items"].items():
            if "instances" in entry:
                for inst in entry["instances"]:
                    assert inst["zone"].endswith("/" + scope)
                    assert isinstance(inst["id"], str)
                    names.append(inst["name"])
            else:
                assert entry["warning"]["code"] == "NO_RESULTS_ON_PAGE"
        tok = body.get("nextPageToken")
        if not tok:
            break
    assert pages == 3 and sorted(names) == ["a0", "a1", "a2", "b0", "b1"]
    assert gcp.calls("compute.instances.aggregatedList") == 3

    zone_url = "%s/projects/%s/zones/us-central1-a/disks?maxResults=2" % (
        gcp.compute_url, P)
    first = gcp.api("GET", zone_url, token=token).json()
    assert len(first["items"]) == 2 and first["items"][0]["sizeGb"] == "1"
    assert first["items"][0]["users"][0].endswith("/instances/a0")
    second = gcp.api("GET", zone_url + "&pageToken=" +
                     first["nextPageToken"], token=token).json()
    assert [d["name"] for d in second["items"]] == ["a2"]
    assert "nextPageToken" not in second
    assert gcp.api("GET", zone_url + "&pageToken=bogus",
                   token=token).status == 400
    assert gcp.api("GET", url.replace("=2", "=501"), token=token).status == 400
    r = gcp.api("GET", "%s/projects/%s/zones/us-central1-a/instances/nope"
                % (gcp.compute_url, P), token=token)
    assert r.status == 404 and r.json()["error"]["errors"][0]["reason"] == \
        "notFound"


# --- the export -----------------------------------------------------------------

def test_export_vmdk_and_ranged_reads(gcp, web01, tmp_path):
    token = gcp.token()
    r = gcp.api("POST", "%s/projects/%s/global/images" % (gcp.compute_url, P),
                token=token, body={"name": "x1", "sourceDisk":
                                   "zones/us-central1-a/disks/web01"})
    assert r.status == 400
    assert r.json()["error"]["errors"][0]["reason"] == \
        "resourceInUseByAnotherResource"

    build = export(gcp, token, "cfs-web01", "cfs/web01.vmdk")
    assert build["status"] == "SUCCESS", build
    images = gcp.api("GET", "%s/projects/%s/global/images?filter=%s" % (
        gcp.compute_url, P, urllib.parse.quote("labels.cloudfs-owner=m1")),
        token=token).json()
    assert [i["name"] for i in images["items"]] == ["cfs-web01"]
    assert images["items"][0]["status"] == "READY"

    meta = gcp.api("GET", obj_url(gcp, "cfs/web01.vmdk"), token=token).json()
    size = int(meta["size"])
    assert isinstance(meta["size"], str) and isinstance(meta["generation"],
                                                         str)
    code, body = curl("-H", "Authorization: Bearer " + token,
                      obj_url(gcp, "cfs/web01.vmdk", True))
    assert code == 200 and len(body) == size
    assert base64.b64decode(meta["md5Hash"]) == hashlib.md5(body).digest()
    assert base64.b64decode(meta["crc32c"]) == \
        crc32c(body).to_bytes(4, "big")
    code, part = curl("-H", "Authorization: Bearer " + token, "-r",
                      "100-4195", "-D", str(tmp_path / "h"),
                      obj_url(gcp, "cfs/web01.vmdk", True) +
                      "&ifGenerationMatch=" + meta["generation"])
    assert code == 206 and part == body[100:4196]
    assert "content-range: bytes 100-4195/%d" % size in \
        (tmp_path / "h").read_text().lower()
    r = gcp.api("GET", obj_url(gcp, "cfs/web01.vmdk", True) +
                "&ifGenerationMatch=1", token=token)
    assert r.status == 412
    r = gcp.api("GET", obj_url(gcp, "cfs/web01.vmdk", True), token=token,
                headers={"Range": "bytes=%d-" % size})
    assert r.status == 416
    r = gcp.api("GET", "%s/b/%s/o/cfs/web01.vmdk" % (gcp.storage_url,
                                                      gcp.bucket),
                token=token)
    assert r.status == 404          # "/" must be sent as %2F

    vmdk = tmp_path / "web01.vmdk"
    vmdk.write_bytes(body)
    info = json.loads(subprocess.run(
        ["qemu-img", "info", "--output=json", str(vmdk)],
        capture_output=True, check=True).stdout)
    assert info["format"] == "vmdk" and info["virtual-size"] == 1 << 30
    r = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "vmdk",
                        str(web01["disks"][0]["raw"].path), str(vmdk)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr

    listed = gcp.api("GET", "%s/b/%s/o?prefix=cfs/" % (
        gcp.storage_url, gcp.bucket), token=token).json()
    assert [o["name"] for o in listed["items"]] == ["cfs/web01.vmdk"]
    assert gcp.api("DELETE", obj_url(gcp, "cfs/web01.vmdk"),
                   token=token).status == 204
    r = gcp.api("DELETE", "%s/projects/%s/global/images/cfs-web01" % (
        gcp.compute_url, P), token=token)
    assert r.status == 200 and r.json()["operationType"] == "delete"
    state = gcp.state()
    assert state["images"] == {} and state["objects"][gcp.bucket] == {}


@pytest.mark.parametrize("fmt", ["vhdx", "vpc", "qcow2"])
def test_export_other_formats(gcp, web01, fmt, tmp_path):
    token = gcp.token()
    build = export(gcp, token, "cfs-" + fmt, "web01." + fmt, fmt)
    assert build["status"] == "SUCCESS", build
    out = tmp_path / ("disk." + fmt)
    out.write_bytes(gcp.api("GET", obj_url(gcp, "web01." + fmt, True),
                            token=token).body)
    r = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", fmt,
                        str(web01["disks"][0]["raw"].path), str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


# --- faults -------------------------------------------------------------------

@pytest.mark.parametrize("result", ["FAILURE", "TIMEOUT"])
def test_build_faults(gcp, web01, result):
    token = gcp.token()
    gcp.faults({"build": {"result": result, "count": 1}})
    build = export(gcp, token, "cfs-bad", "bad.vmdk")
    assert build["status"] == result
    assert build["statusDetail"] and build["logUrl"]
    assert "bad.vmdk" not in gcp.objects()
    assert gcp.injected("build") == 1


def test_operation_fault_and_bad_build(gcp, web01):
    token = gcp.token()
    gcp.faults({"operation": {"count": 1}})
    r = gcp.api("POST", "%s/projects/%s/global/images?forceCreate=true"
                % (gcp.compute_url, P), token=token,
                body={"name": "img", "sourceDisk": "zones/us-central1-a/"
                      "disks/web01"})
    op = gcp.api("POST", "%s/projects/%s/global/operations/%s/wait" % (
        gcp.compute_url, P, r.json()["name"]), token=token).json()
    assert op["status"] == "DONE"
    assert op["error"]["errors"][0]["code"] == "QUOTA_EXCEEDED"
    assert gcp.images() == {}
    r = gcp.api("POST", "%s/projects/%s/builds" % (gcp.cloudbuild_url, P),
                token=token, body={"steps": [{
                    "name": EXPORT_BUILDER, "args": [
                        "-source_image=projects/%s/global/images/img" % P,
                        "-destination_uri=gs://%s/x.vmdk" % gcp.bucket]}]})
    bid = r.json()["metadata"]["build"]["id"]
    build = wait_until(lambda: (lambda b: b if b["status"] not in (
        "QUEUED", "WORKING") else None)(gcp.api(
            "GET", "%s/projects/%s/builds/%s" % (gcp.cloudbuild_url, P, bid),
            token=token).json()), 30, 0.1, "the build")
    assert build["status"] == "FAILURE"
    assert "failed: step exited with non-zero status" in \
        build["statusDetail"]


def test_gcs_faults(gcp, web01):
    token = gcp.token()
    assert export(gcp, token, "cfs-w", "w.vmdk")["status"] == "SUCCESS"
    meta = gcp.api("GET", obj_url(gcp, "w.vmdk"), token=token).json()
    good = gcp.api("GET", obj_url(gcp, "w.vmdk", True), token=token).body

    gcp.faults({"corrupt": {"count": 1}})
    bad = gcp.api("GET", obj_url(gcp, "w.vmdk", True), token=token).body
    assert len(bad) == len(good) and bad != good
    assert crc32c(bad).to_bytes(4, "big") != base64.b64decode(meta["crc32c"])
    assert gcp.api("GET", obj_url(gcp, "w.vmdk", True),
                   token=token).body == good

    gcp.faults({"throttle": {"status": 429, "count": 2,
                             "kinds": ["storage.objects.media"],
                             "retry_after": 1}})
    r = gcp.api("GET", obj_url(gcp, "w.vmdk", True), token=token)
    assert r.status == 429 and r.headers["Retry-After"] == "1"
    assert r.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert gcp.api("GET", obj_url(gcp, "w.vmdk", True),
                   token=token).status == 429
    assert gcp.api("GET", obj_url(gcp, "w.vmdk"), token=token).status == 200
    assert gcp.api("GET", obj_url(gcp, "w.vmdk", True),
                   token=token).status == 200
    assert gcp.injected("storage.objects.media") == 2

    gcp.faults({"vanish": {"after_reads": 1}})
    assert gcp.api("GET", obj_url(gcp, "w.vmdk", True),
                   token=token).status == 200
    assert gcp.api("GET", obj_url(gcp, "w.vmdk", True),
                   token=token).status == 404
    assert gcp.objects() == {}
