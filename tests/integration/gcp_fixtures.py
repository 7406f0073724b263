# SPDX-License-Identifier: MIT
"""The GCP fake for the integration tests: tests/emulators/gcp_fake.py run
once per session (`gcp_server`), reset for each test (`gcp`), with a
real service-account key made by openssl once per session (`gcp_key`).

    from gcp_fixtures import gcp, gcp_key, gcp_server  # noqa: F401

    def test_x(gcp):
        vm = gcp.seed_instance("web01", disks=[{"name": "web01",
                               "size": 8 * MiB, "seed": 3}])
        token = gcp.token()                      # JWT bearer grant
        gcp.api("GET", gcp.compute_url + "/projects/%s/aggregated/instances"
                % gcp.project, token=token)
        gcp.faults({"throttle": {"status": 429, "count": 2}})
        gcp.calls("storage.objects.media"), gcp.state()["images"]
"""

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import make_random_image, make_sparse_image
from procs import stop_process

REPO = Path(__file__).resolve().parents[2]
FAKE = REPO / "tests" / "emulators" / "gcp_fake.py"
PROJECT = "cloudfs-test"
BUCKET = "cloudfs-exports"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
EXPORT_BUILDER = "gcr.io/compute-image-tools/gce_vm_image_export:release"
DEFAULT_CONFIG = {"token_lifetime": 3600, "operation_seconds": 0.5,
                  "build_seconds": 1.0, "max_page_size": 500,
                  "wait_cap": 120.0}


def b64url(data):
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class ServiceAccountKey:
    """A 2048-bit RSA key from `openssl genpkey` and the service-account
    JSON key file that holds it, as the IAM console hands it out."""

    def __init__(self, folder, project, token_uri,
                 email="cloudfs-test@cloudfs-test.iam.gserviceaccount.com"):
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.pem = folder / "key.pem"
        self.pub = folder / "pub.pem"
        subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                        "rsa_keygen_bits:2048", "-out", str(self.pem)],
                       check=True, capture_output=True)
        subprocess.run(["openssl", "pkey", "-in", str(self.pem), "-pubout",
                        "-out", str(self.pub)], check=True,
                       capture_output=True)
        self.project = project
        self.client_email = email
        self.private_key_id = os.urandom(20).hex()
        self.token_uri = token_uri
        self.path = folder / "service-account.json"
        self.path.write_text(json.dumps({
            "type": "service_account", "project_id": project,
            "private_key_id": self.private_key_id,
            "private_key": self.pem.read_text(),
            "client_email": email, "client_id": "1%020d" % 42,
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
            "auth_provider_x509_cert_url":
                "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": "https://www.googleapis.com/robot/v1/"
                "metadata/x509/" + email.replace("@", "%40"),
            "universe_domain": "googleapis.com"}, indent=2))
        os.chmod(self.path, 0o600)

    def sign(self, data):
        """RS256 with `openssl dgst -sha256 -sign`."""
        r = subprocess.run(["openssl", "dgst", "-sha256", "-sign",
                            str(self.pem)], input=data, capture_output=True,
                           check=True)
        return r.stdout

    def assertion(self, scope=SCOPE, aud=None, iat=None, lifetime=3600,
                  header=None, claims=None):
        """A signed JWT for the jwt-bearer grant; any field can be bent."""
        now = int(time.time()) if iat is None else iat
        hdr = {"alg": "RS256", "typ": "JWT", "kid": self.private_key_id}
        hdr.update(header or {})
        body = {"iss": self.client_email, "scope": scope,
                "aud": aud or self.token_uri, "iat": now,
                "exp": now + lifetime}
        body.update(claims or {})
        body = {k: v for k, v in body.items() if v is not None}
        signing = (b64url(json.dumps(hdr).encode()) + "." +
                   b64url(json.dumps(body).encode()))
        return signing + "." + b64url(self.sign(signing.encode()))


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)


class GcpFake:
    """One gcp_fake.py process and the calls that steer it."""

    def __init__(self, workdir, project=PROJECT):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.project = project
        self.bucket = BUCKET
        self.log = open(self.workdir / "gcp_fake.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(FAKE), "--state-dir",
             str(self.workdir / "state"), "--project", project],
            stdout=subprocess.PIPE, stderr=self.log, stdin=subprocess.DEVNULL)
        line = self.proc.stdout.readline().decode()
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError("gcp fake did not start: %r" % line)
        self.port = int(line.split()[1])
        self.base = "http://127.0.0.1:%d" % self.port
        self.token_url = self.base + "/token"
        self.compute_url = self.base + "/compute/v1"
        self.cloudbuild_url = self.base + "/cloudbuild/v1"
        self.storage_url = self.base + "/storage/v1"
        self.metadata_url = self.base + "/computeMetadata/v1"
        self.key = None
        self.raw_dir = self.workdir / "raw"
        self.seeded = 0

    # --- plain HTTP ---
    def api(self, method, url, token=None, body=None, headers=None,
            data=None):
        """One request; returns a Response whatever the status."""
        hdrs = dict(headers or {})
        if token:
            hdrs["Authorization"] = "Bearer " + token
        if body is not None:
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        if not url.startswith("http"):
            url = self.base + url
        req = urllib.request.Request(url, data=data, method=method,
                                     headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return Response(resp.status, resp.headers, resp.read())
        except urllib.error.HTTPError as err:
            return Response(err.code, err.headers, err.read())

    def control(self, method, what, obj=None):
        r = self.api(method, "/_control/" + what, body=obj)
        if r.status != 200:
            raise RuntimeError("control %s %s: %d %s" % (
                method, what, r.status, r.body[:500]))
        return r.json()

    # --- auth ---
    def add_key(self, key):
        self.key = key
        return self.control("POST", "service_accounts",
                            {"key_file": str(key.path)})

    def token(self, key=None, **kw):
        """An access token from the JWT bearer grant."""
        key = key or self.key
        data = ("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3A"
                "jwt-bearer&assertion=" + key.assertion(**kw)).encode()
        r = self.api("POST", self.token_url, data=data, headers={
            "Content-Type": "application/x-www-form-urlencoded"})
        assert r.status == 200, r.body
        return r.json()["access_token"]

    def expire_tokens(self):
        return self.control("POST", "expire_tokens")

    # --- state, counters, faults, config ---
    def state(self):
        return self.control("GET", "state")

    def stats(self):
        return self.control("GET", "stats")

    def calls(self, kind=None):
        calls = self.stats()["calls"]
        return calls if kind is None else calls.get(kind, 0)

    def injected(self, kind=None):
        inj = self.stats()["injected"]
        return inj if kind is None else inj.get(kind, 0)

    def faults(self, table):
        return self.control("PUT", "faults", table)

    def clear_faults(self):
        return self.control("DELETE", "faults")

    def config(self, **values):
        return self.control("PUT", "config", values)

    def vanish(self, name, bucket=None):
        return self.control("POST", "vanish", {"bucket": bucket or
                                               self.bucket, "name": name})

    def reset(self):
        self.control("POST", "reset")
        self.control("PUT", "config", DEFAULT_CONFIG)
        self.control("POST", "seed", {"buckets": [self.bucket]})

    def images(self):
        return self.state()["images"]

    def objects(self, bucket=None):
        return self.state()["objects"].get(bucket or self.bucket, {})

    def builds(self):
        return self.state()["builds"]

    # --- seeding ---
    def raw_disk(self, name, size, seed=None, extents=None):
        """A raw disk image: random bytes, or holes but for extents."""
        self.seeded += 1
        path = self.raw_dir / ("%d-%s.raw" % (self.seeded, name))
        seed = self.seeded if seed is None else seed
        if extents is None:
            return make_random_image(path, size, seed)
        return make_sparse_image(path, size, extents, seed)

    def seed(self, spec):
        return self.control("POST", "seed", spec)

    def seed_instance(self, name, zone="us-central1-a", disks=(),
                      status="RUNNING", labels=None,
                      machine_type="e2-medium"):
        """Seed an instance; each disk is {"name", "size", "seed",
        "extents" (sparse if given), "sizeGb", "type", "boot", "labels"}.
        Returns {"name", "zone", "disks": [{"name", "raw": Image,
        "sizeGb"}], "resource"}."""
        out = []
        spec_disks = []
        for d in disks:
            raw = self.raw_disk(d["name"], d["size"], d.get("seed"),
                                d.get("extents"))
            sd = {k: v for k, v in d.items()
                  if k not in ("size", "seed", "extents")}
            sd["raw"] = str(raw.path)
            spec_disks.append(sd)
            out.append({"name": d["name"], "raw": raw})
        state = self.seed({"instances": [{
            "name": name, "zone": zone, "status": status,
            "labels": labels or {}, "machineType": machine_type,
            "disks": spec_disks}]})
        for d in out:
            d["sizeGb"] = int(state["disks"]["%s/%s" % (zone, d["name"])]
                              ["sizeGb"])
        return {"name": name, "zone": zone, "disks": out,
                "resource": state["instances"]["%s/%s" % (zone, name)]}

    def stop(self):
        stop_process(self.proc, 10)
        self.proc.stdout.close()
        self.log.close()

    def log_text(self):
        return (self.workdir / "gcp_fake.log").read_text(errors="replace")


def gcp_config(fake, key_file=None, **keys):
    """A [gcp] config section pointing the provider at the fake."""
    conf = {"project": fake.project,
            "credentials": str(key_file or fake.key.path),
            "token_url": fake.token_url, "compute_url": fake.compute_url,
            "cloudbuild_url": fake.cloudbuild_url,
            "storage_url": fake.storage_url, "gcs_bucket": fake.bucket,
            "poll_interval": "0.2"}
    conf.update({k: v for k, v in keys.items() if v is not None})
    return "[gcp]\n" + "".join("%s = %s\n" % kv for kv in conf.items())


_SHARED = {"fake": None, "users": 0}


@pytest.fixture(scope="session")
def gcp_server(tmp_path_factory):
    """The fake with the session's service-account key, started once per
    session: test modules that import this fixture share one process."""
    if _SHARED["fake"] is None:
        fake = GcpFake(tmp_path_factory.mktemp("gcp"))
        try:
            fake.add_key(ServiceAccountKey(tmp_path_factory.mktemp("gcp-key"),
                                           fake.project, fake.token_url))
        except Exception:
            fake.stop()
            raise
        _SHARED["fake"] = fake
    _SHARED["users"] += 1
    yield _SHARED["fake"]
    _SHARED["users"] -= 1
    if _SHARED["users"] == 0:
        _SHARED["fake"].stop()
        _SHARED["fake"] = None


@pytest.fixture
def gcp(gcp_server):
    """The fake, emptied: default config, no faults, one empty bucket."""
    gcp_server.reset()
    yield gcp_server
    gcp_server.clear_faults()


@pytest.fixture
def gcp_key(gcp_server):
    return gcp_server.key
