# SPDX-License-Identifier: MIT
"""The Azure emulator for the integration tests: Azurite (npm, blobs) and
tests/emulators/azure_fake.py (tokens, IMDS, ARM, SAS grants), started once
per session and reset before each test.

    from azure_fixtures import azure          # in a test module (fixture)

    def test_x(azure):                        # an AzureCloud
        azure.add_resource_group("rg1")
        azure.add_vm("rg1", "vm1", os_disk=raw_bytes, data_disks={0: path})
        azure.fault("begin_get_access", count=1, status=429)
        ...
        assert azure.snapshots() == []

Azurite is installed by tests/emulators/install-azurite.sh (run here when
missing and npm is present; CFS_AZURITE_NO_INSTALL=1 stops that, and
CFS_AZURITE_BLOB names another azurite-blob).  The tests skip, saying why,
when node, npm or Azurite cannot be had.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from procs import stop_process

REPO = Path(__file__).resolve().parents[2]
EMULATORS = REPO / "tests" / "emulators"
INSTALLER = EMULATORS / "install-azurite.sh"
FAKE = EMULATORS / "azure_fake.py"
START_TIMEOUT = 30

sys.path.insert(0, str(EMULATORS))
from azure_blob import ACCOUNT, ACCOUNT_KEY, VHD_FOOTER_SIZE, BlobClient, \
    vhd_footer  # noqa: E402

__all__ = ["azure", "azure_servers", "AzureCloud", "ACCOUNT", "ACCOUNT_KEY",
           "VHD_FOOTER_SIZE", "vhd_footer"]


def _die_with_parent():
    """Child setup: get SIGTERM when the test runner dies, so a killed
    session leaves no server behind (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def azurite_blob():
    """The azurite-blob program, installing it if needed; or skip."""
    explicit = os.environ.get("CFS_AZURITE_BLOB")
    if explicit:
        if not os.access(explicit, os.X_OK):
            pytest.skip("CFS_AZURITE_BLOB=%s is not executable" % explicit)
        return explicit
    if shutil.which("node") is None:
        pytest.skip("node is missing (Debian package nodejs): no Azurite")
    binary = EMULATORS / ".node" / "node_modules" / ".bin" / "azurite-blob"
    if binary.exists():
        # the installer is quick when Azurite is there, and checks its version
        pass
    elif os.environ.get("CFS_AZURITE_NO_INSTALL"):
        pytest.skip("Azurite is not installed (bash %s)" % INSTALLER)
    elif shutil.which("npm") is None:
        pytest.skip("npm is missing (Debian package npm): cannot install "
                    "Azurite")
    r = subprocess.run(["bash", str(INSTALLER)], capture_output=True,
                       text=True, timeout=600)
    if r.returncode != 0:
        pytest.skip("installing Azurite failed: %s" % r.stderr[-800:])
    return r.stdout.strip().splitlines()[-1]


class Azurite:
    """azurite-blob in memory on a free port (it cannot bind port 0)."""

    def __init__(self, binary, workdir):
        self.log_path = Path(workdir) / "azurite.log"
        self.log = open(self.log_path, "ab")
        for _ in range(5):
            self.port = _free_port()
            self.proc = subprocess.Popen(
                [binary, "--blobHost", "127.0.0.1", "--blobPort",
                 str(self.port), "--inMemoryPersistence",
                 "--disableTelemetry", "--silent"],
                stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
                start_new_session=True, preexec_fn=_die_with_parent)
            if self._ready():
                self.endpoint = "http://127.0.0.1:%d" % self.port
                return
            self.stop(close=False)
        self.log.close()
        raise RuntimeError("azurite did not start; log:\n%s"
                           % self.log_path.read_text(errors="replace")[-3000:])

    def _ready(self):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False  # e.g. the port was taken meanwhile
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2):
                    pass
            except OSError:
                time.sleep(0.05)
                continue
            try:
                urllib.request.urlopen("http://127.0.0.1:%d/%s?comp=list"
                                       % (self.port, ACCOUNT), timeout=5)
            except urllib.error.HTTPError:
                return True  # 403 without credentials: it answers
            except OSError:
                time.sleep(0.05)
                continue
            return True
        return False

    def stop(self, close=True):
        stop_process(self.proc, 5)
        if close:
            self.log.close()


class AzureFake:
    """tests/emulators/azure_fake.py bound to one Azurite."""

    def __init__(self, azurite_endpoint, workdir, proxy=True):
        self.log_path = Path(workdir) / "azure_fake.log"
        self.log = open(self.log_path, "ab")
        argv = [sys.executable, str(FAKE), "--azurite", azurite_endpoint]
        if not proxy:
            argv.append("--no-proxy")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=self.log,
                                     preexec_fn=_die_with_parent)
        self.port = self.proxy_port = None
        while self.port is None:
            line = self.proc.stdout.readline().decode()
            if not line:
                self.stop()
                raise RuntimeError("azure fake did not start; log:\n%s"
                                   % self.log_path.read_text(errors="replace"))
            word, _, value = line.strip().partition(" ")
            if word == "PROXY":
                self.proxy_port = int(value)
            elif word == "PORT":
                self.port = int(value)
        self.endpoint = "http://127.0.0.1:%d" % self.port

    def stop(self):
        stop_process(self.proc, 5)
        self.proc.stdout.close()
        self.log.close()


class AzureCloud:
    """What a test sees of the Azure emulator: endpoints, credentials,
    seeding, faults, counters and state.  See the report in the commit that
    added it, and azure_control.py, for the shapes behind each method."""

    def __init__(self, fake, azurite, workdir):
        self.fake = fake
        self.azurite = azurite
        self.workdir = Path(workdir)
        self.blob = BlobClient(azurite.endpoint)
        self.endpoint = fake.endpoint          # ARM base URL
        self.authority = fake.endpoint         # AZURE_AUTHORITY_HOST
        self.msi_endpoint = fake.endpoint + "/metadata/identity/oauth2/token"
        self.blob_endpoint = azurite.endpoint
        self.proxy_endpoint = ("http://127.0.0.1:%d" % fake.proxy_port
                               if fake.proxy_port else None)
        creds = self.control("GET", "credentials")
        self.tenant = creds["tenant"]
        self.client_id = creds["client_id"]
        self.client_secret = creds["client_secret"]
        self.subscription = creds["subscription"]
        self.msi_client_id = creds["msi_client_id"]
        self.token_url = "%s/%s/oauth2/v2.0/token" % (self.authority,
                                                       self.tenant)
        self._n = 0

    # --- plumbing ---
    def control(self, method, what, obj=None):
        data = json.dumps(obj).encode() if obj is not None else None
        req = urllib.request.Request(
            "%s/_control/%s" % (self.endpoint, what), data=data,
            method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise RuntimeError("control %s %s: %d %s" % (
                method, what, exc.code, exc.read()[:500])) from None

    def reset(self):
        self.control("POST", "reset")

    @property
    def location(self):
        return self.config()["location"]

    # --- seeding ---
    def add_resource_group(self, name, location=None, tags=None):
        return self.control("POST", "resource_groups",
                            {"name": name, "location": location,
                             "tags": tags or {}})

    def _raw_file(self, raw, size, extents):
        """A local file holding the raw disk; sparse where it has holes."""
        if isinstance(raw, (str, Path)):
            path = Path(raw)
            return path, size if size is not None else path.stat().st_size
        self._n += 1
        path = self.workdir / ("raw-%d.img" % self._n)
        with open(path, "wb") as f:
            if raw is not None:
                f.write(raw)
                size = size if size is not None else len(raw)
            os.truncate(f.fileno(), size)
            for offset, data in (extents or {}).items():
                os.pwrite(f.fileno(), data, offset)
        return path, size

    def add_disk(self, rg, name, raw=None, size=None, extents=None,
                 sku="Premium_LRS", os_type=None, tags=None, location=None,
                 zones=None):
        """A managed disk whose page blob is raw + the fixed-VHD footer.

        raw: bytes or a path (a sparse file stays cheap); or size plus
        extents {offset: bytes}.  size must be a multiple of 1 MiB.  Only
        non-zero 512-byte pages are written, so zeros are holes in the
        page list.  Returns the disk (id, blobPath, size, ...)."""
        path, size = self._raw_file(raw, size, extents)
        return self.control("POST", "disks", {
            "resourceGroup": rg, "name": name, "sizeBytes": size,
            "rawPath": str(path), "sku": sku, "osType": os_type,
            "tags": tags or {}, "location": location, "zones": zones})

    def add_vm(self, rg, name, os_disk, data_disks=None, power="running",
               size="Standard_D2s_v3", tags=None, location=None,
               os_type="Linux"):
        """A VM; os_disk and each data_disks[lun] is the name of a disk
        already added, or raw bytes / a path / a dict of add_disk
        arguments for a new disk named <vm>-osdisk or <vm>-data<lun>."""
        def disk(spec, disk_name, ostype=None):
            if isinstance(spec, str) and not os.path.exists(spec):
                return spec
            kwargs = dict(spec) if isinstance(spec, dict) else {"raw": spec}
            kwargs.setdefault("os_type", ostype)
            return self.add_disk(rg, disk_name, **kwargs)["name"]
        os_name = disk(os_disk, name + "-osdisk", os_type)
        data = [{"lun": lun, "disk": disk(spec, "%s-data%d" % (name, lun))}
                for lun, spec in sorted((data_disks or {}).items())]
        return self.control("POST", "vms", {
            "resourceGroup": rg, "name": name, "osDisk": os_name,
            "dataDisks": data, "power": power, "size": size,
            "tags": tags or {}, "location": location})

    def set_power(self, rg, vm, power):
        return self.control("POST", "power", {"resourceGroup": rg,
                                              "name": vm, "power": power})

    def delete_disk(self, rg, name):
        return self.control("POST", "delete_disk", {"resourceGroup": rg,
                                                    "name": name})

    # --- settings ---
    def config(self, **changes):
        if changes:
            return self.control("POST", "config", changes)
        return self.control("GET", "config")

    def token_lifetime(self, seconds):
        return self.config(token_lifetime=seconds)

    def grant_cap(self, seconds):
        return self.config(grant_cap=seconds)

    def lro_delays(self, snapshot=None, access=None, end_access=None,
                   delete=None, retry_after=None):
        changes = {"snapshot_seconds": snapshot, "access_seconds": access,
                   "end_access_seconds": end_access,
                   "delete_seconds": delete, "retry_after": retry_after}
        return self.config(**{k: v for k, v in changes.items()
                              if v is not None})

    def page_size(self, n):
        return self.config(page_size=n)

    def expire_tokens(self):
        return self.control("POST", "expire_tokens")

    # --- faults ---
    def fault(self, op, count=1, status=429, code=None, message=None,
              retry_after=None, mode="sync"):
        """The next `count` calls of op fail.  op: token, msi, a list_* or
        get_* name, "list", "get", "arm", "*", create_snapshot,
        delete_snapshot, begin_get_access, end_get_access, poll_operation,
        vm_instance_view.  mode "lro": the call is accepted (202) and its
        operation ends Failed with this error."""
        spec = {"op": op, "count": count, "status": status, "mode": mode}
        for k, v in (("code", code), ("message", message),
                     ("retry_after", retry_after)):
            if v is not None:
                spec[k] = v
        return self.control("POST", "faults", spec)

    def blob_fault(self, op="range_get", count=1, status=503, code=None,
                   retry_after=None):
        """The next `count` proxied blob requests of kind op (blob,
        range_get, pagelist, get, head) answer status with an XML error."""
        spec = {"op": op, "count": count, "status": status}
        if code is not None:
            spec["code"] = code
        if retry_after is not None:
            spec["retry_after"] = retry_after
        return self.control("POST", "blob_faults", spec)

    def clear_faults(self):
        self.control("DELETE", "faults")
        self.control("DELETE", "blob_faults")

    # --- counters ---
    def stats(self):
        return self.control("GET", "stats")

    def calls(self, op=None):
        calls = self.stats()["calls"]
        return calls if op is None else calls.get(op, 0)

    def injected(self, op=None):
        inj = self.stats()["faults_injected"]
        return inj if op is None else inj.get(op, 0)

    def blob_stats(self, blob_path=None):
        """Counters of the proxied blob requests, by blob path (as in
        state()["snapshots"][i]["blobPath"]): requests, range_get,
        pagelist, get, head, bytes, statuses, ranges."""
        blob = self.stats()["blob"]
        if blob_path is None:
            return blob
        return blob.get(blob_path, {"requests": 0, "range_get": 0,
                                    "pagelist": 0, "get": 0, "head": 0,
                                    "bytes": 0, "statuses": {},
                                    "ranges": []})

    def range_gets(self, blob_path=None):
        return sum(s["range_get"] for p, s in self.blob_stats().items()
                   if blob_path in (None, p))

    def pagelists(self, blob_path=None):
        return sum(s["pagelist"] for p, s in self.blob_stats().items()
                   if blob_path in (None, p))

    def reset_stats(self):
        self.control("POST", "stats/reset")

    # --- state ---
    def state(self):
        return self.control("GET", "state")

    def snapshots(self):
        return self.state()["snapshots"]

    def snapshot(self, name):
        for s in self.snapshots():
            if s["name"].lower() == name.lower():
                return s
        return None

    def deleted_snapshots(self):
        return self.state()["deleted_snapshots"]

    def disk(self, name):
        for d in self.state()["disks"]:
            if d["name"].lower() == name.lower():
                return d
        return None

    # --- a client, for tests of the emulator itself ---
    def token(self, scope="https://management.azure.com/.default"):
        form = urllib.parse.urlencode({
            "grant_type": "client_credentials", "client_id": self.client_id,
            "client_secret": self.client_secret, "scope": scope}).encode()
        with urllib.request.urlopen(self.token_url, data=form,
                                    timeout=30) as resp:
            return json.load(resp)["access_token"]

    def disk_id(self, rg, name, kind="disks"):
        return ("/subscriptions/%s/resourceGroups/%s/providers/"
                "Microsoft.Compute/%s/%s" % (self.subscription, rg, kind,
                                             name))

    def blob_read(self, blob_path, start, end):
        """Bytes [start, end] of a blob in Azurite, with the account key."""
        _, container, blob = blob_path.strip("/").split("/", 2)
        return self.blob.get_range(container, blob, start, end)

    def config_section(self, **keys):
        """An [azure] section for cloudfs pointing at the emulator."""
        conf = {"tenant_id": self.tenant, "client_id": self.client_id,
                "client_secret": self.client_secret,
                "subscription_id": self.subscription,
                "authority_host": self.authority,
                "resource_manager_url": self.endpoint}
        conf.update({k: v for k, v in keys.items() if v is not None})
        return "[azure]\n" + "".join("%s = %s\n" % kv for kv in conf.items())


@pytest.fixture(scope="session")
def azure_servers():
    """(Azurite, AzureFake), started once for the session."""
    binary = azurite_blob()
    workdir = Path(tempfile.mkdtemp(prefix="cfs-azure-"))
    azurite = Azurite(binary, workdir)
    try:
        fake = AzureFake(azurite.endpoint, workdir)
    except Exception:
        azurite.stop()
        raise
    yield azurite, fake, workdir
    fake.stop()
    azurite.stop()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def azure(azure_servers, tmp_path):
    """An AzureCloud, empty, with default settings and no faults."""
    azurite, fake, _ = azure_servers
    cloud = AzureCloud(fake, azurite, tmp_path)
    cloud.reset()
    yield cloud
