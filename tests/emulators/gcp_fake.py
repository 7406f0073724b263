#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A local fake of the Google Cloud APIs that cloudfs's gcp provider uses:
the OAuth2 token endpoint (JWT bearer grant), the GCE metadata server's
token, Compute Engine v1 (instances, disks, zones, images, global
operations), Cloud Build v1 (builds running the image export tool) and the
Cloud Storage JSON API (object metadata, ranged media reads, list, delete).
Standard library only; conversions run the real `qemu-img`.

    python3 gcp_fake.py --state-dir DIR [--port 0] [--project P]
                                                  prints "PORT <n>"

Every service is on the one port, under a base path of its own (each can be
changed with a flag; clients take one base URL per service):

    token_url       http://127.0.0.1:PORT/token
    compute_url     http://127.0.0.1:PORT/compute/v1
    cloudbuild_url  http://127.0.0.1:PORT/cloudbuild/v1
    storage_url     http://127.0.0.1:PORT/storage/v1   (media also under
                    /download/storage/v1)
    metadata        http://127.0.0.1:PORT/computeMetadata/v1

Control API under /_control (JSON in and out, no auth):
    POST /_control/service_accounts  {"key_file": path} or {"client_email",
                                     "private_key_id", "public_key_pem"}
    POST /_control/seed          {"zones": [...], "buckets": [...],
                                  "instances": [{"name", "zone", "status",
                                    "machineType", "labels", "disks": [
                                    {"name", "raw", "sizeGb", "type",
                                     "boot", "labels"}]}],
                                  "disks": [unattached disks, with "zone"],
                                  "objects": [{"bucket", "name", "path"}]}
    GET  /_control/state         everything, as plain JSON
    GET  /_control/stats         {"calls": {kind: n}, "injected": {kind: n}}
    POST /_control/reset         drop resources, counters, faults, tokens;
                                 keep service accounts and the config
    GET/PUT /_control/config     {"token_lifetime", "operation_seconds",
                                  "build_seconds", "max_page_size",
                                  "wait_cap"}
    GET/PUT/DELETE /_control/faults   the fault table (see Faults)
    POST /_control/expire_tokens every issued token becomes invalid
    POST /_control/vanish        {"bucket", "name"}: the object is gone
"""

import argparse
import base64
import ctypes
import fnmatch
import hashlib
import http.server
import json
import os
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

GiB = 1 << 30
QEMU_IMG = shutil.which("qemu-img") or "/usr/bin/qemu-img"
EXPORT_BUILDER = "gcr.io/compute-image-tools/gce_vm_image_export"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")
SCOPE_CLOUD = "https://www.googleapis.com/auth/cloud-platform"
SCOPES = {  # any one of these lets a token call the service
    "compute": {SCOPE_CLOUD, "https://www.googleapis.com/auth/compute",
                "https://www.googleapis.com/auth/compute.readonly"},
    "cloudbuild": {SCOPE_CLOUD},
    "storage": {SCOPE_CLOUD,
                "https://www.googleapis.com/auth/devstorage.full_control",
                "https://www.googleapis.com/auth/devstorage.read_write",
                "https://www.googleapis.com/auth/devstorage.read_only"},
}
READONLY_SCOPES = {"https://www.googleapis.com/auth/compute.readonly",
                   "https://www.googleapis.com/auth/devstorage.read_only"}
NAME_RE = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
LABEL_KEY_RE = re.compile(r"[a-z][a-z0-9_-]{0,62}")
LABEL_VALUE_RE = re.compile(r"[a-z0-9_-]{0,63}")
FORMATS = {  # -format of the export tool -> qemu-img arguments
    "vmdk": ["-O", "vmdk", "-o", "subformat=streamOptimized"],
    "vhdx": ["-O", "vhdx"],
    "vpc": ["-O", "vpc", "-o", "subformat=dynamic,force_size=on"],
    "qcow2": ["-O", "qcow2"],
    "vdi": ["-O", "vdi"],
    "raw": ["-O", "raw"],
}
EXPORT_FLAGS = {"source_image", "destination_uri", "format", "timeout",
                "client_id", "compute_service_account", "network", "subnet",
                "zone", "labels", "project", "scratch_bucket_gcs_path",
                "oauth", "compute_endpoint_override", "log_level",
                "source_disk_snapshot", "disable_gcs_logging",
                "disable_cloud_logging", "disable_stdout_logging"}


# --- CRC-32C ------------------------------------------------------------------

def _crc32c_table():
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def _crc32c_python(f):
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for buf in iter(lambda: f.read(1 << 20), b""):
        for b in buf:
            crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _crc32c_af_alg(f):
    """The kernel's crc32c shash; raises OSError where AF_ALG is missing.
    The kernel's digest is the inverted register, little-endian."""
    with socket.socket(socket.AF_ALG, socket.SOCK_SEQPACKET, 0) as alg:
        alg.bind(("hash", "crc32c"))
        op, _ = alg.accept()
        with op:
            for buf in iter(lambda: f.read(1 << 20), b""):
                op.sendall(buf, socket.MSG_MORE)
            op.sendall(b"")
            return struct.unpack("<I", op.recv(4))[0]


_EXT2FS = []


def _crc32c_ext2fs(f):
    """libext2fs's table-driven crc32c through ctypes (raw register)."""
    if not _EXT2FS:
        lib = ctypes.CDLL("libext2fs.so.2")
        fn = lib.ext2fs_crc32c_le
        fn.restype = ctypes.c_uint32
        fn.argtypes = [ctypes.c_uint32, ctypes.c_char_p, ctypes.c_size_t]
        _EXT2FS.append(fn)
    fn = _EXT2FS[0]
    crc = 0xFFFFFFFF
    for buf in iter(lambda: f.read(4 << 20), b""):
        crc = fn(crc, buf, len(buf))
    return crc ^ 0xFFFFFFFF


def crc32c_file(path):
    for impl in (_crc32c_af_alg, _crc32c_ext2fs, _crc32c_python):
        try:
            with open(path, "rb") as f:
                return impl(f)
        except (OSError, AttributeError):
            continue
    raise RuntimeError("no crc32c")


# --- RSA keys and JWT ---------------------------------------------------------

def der_next(buf, i):
    """(tag, content, next index) of the DER element at buf[i]."""
    tag, length = buf[i], buf[i + 1]
    i += 2
    if length & 0x80:
        n = length & 0x7F
        length = int.from_bytes(buf[i:i + n], "big")
        i += n
    return tag, buf[i:i + length], i + length


def der_items(buf):
    items, i = [], 0
    while i < len(buf):
        tag, content, i = der_next(buf, i)
        items.append((tag, content))
    return items


def pem_der(pem):
    lines = [l for l in pem.strip().splitlines() if not l.startswith("-----")]
    return base64.b64decode("".join(lines))


def rsa_public_numbers(pem):
    """(n, e) from a PKCS#8 or PKCS#1 private key or an SPKI public key."""
    _, seq, _ = der_next(pem_der(pem), 0)
    items = der_items(seq)
    if "PUBLIC KEY" in pem and "RSA PUBLIC" not in pem:
        bits = items[1][1][1:]          # SubjectPublicKeyInfo: skip pad byte
        items = der_items(der_next(bits, 0)[1])
        return int.from_bytes(items[0][1], "big"), \
            int.from_bytes(items[1][1], "big")
    if items[1][0] == 0x30:             # PKCS#8: version, algorithm, key
        items = der_items(der_next(items[2][1], 0)[1])
    if "RSA PUBLIC" in pem:
        return int.from_bytes(items[0][1], "big"), \
            int.from_bytes(items[1][1], "big")
    return int.from_bytes(items[1][1], "big"), \
        int.from_bytes(items[2][1], "big")


def b64url_decode(text):
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def rs256_verify(n, e, message, signature):
    k = (n.bit_length() + 7) // 8
    if len(signature) != k:
        return False
    s = int.from_bytes(signature, "big")
    if s >= n:
        return False
    em = pow(s, e, n).to_bytes(k, "big")
    digest = SHA256_DIGEST_INFO + hashlib.sha256(message).digest()
    expected = b"\x00\x01" + b"\xff" * (k - 3 - len(digest)) + b"\x00" + digest
    return secrets.compare_digest(em, expected)


# --- small helpers ------------------------------------------------------------

def rfc3339(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + \
        ".%03dZ" % int((t % 1) * 1000)


def compute_time(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + \
        ".%03d-00:00" % int((t % 1) * 1000)


def new_id():
    return str(secrets.randbits(63) | (1 << 62))


def duration_seconds(text):
    """A protobuf Duration ("600s", "1.5s") in seconds, or None."""
    m = re.fullmatch(r"(\d+)(\.\d{1,9})?s", str(text))
    return float(m.group(0)[:-1]) if m else None


def go_duration(text):
    """A Go time.Duration string ("2h", "90m", "3600s", "1h30m")."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    if not parts or "".join(a + b for a, b in parts) != text:
        return None
    return sum(float(a) * units[b] for a, b in parts)


def copy_sparse(src, dst, size):
    """dst becomes a sparse file of size bytes holding src's data extents."""
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        os.truncate(fo.fileno(), size)
        end_src = os.fstat(fi.fileno()).st_size
        pos = 0
        while pos < min(end_src, size):
            try:
                start = os.lseek(fi.fileno(), pos, os.SEEK_DATA)
            except OSError:
                break
            end = min(os.lseek(fi.fileno(), start, os.SEEK_HOLE), size)
            off = start
            while off < end:
                n = os.copy_file_range(fi.fileno(), fo.fileno(), end - off,
                                       off, off)
                if n <= 0:
                    break
                off += n
            pos = end


class ApiError(Exception):
    """An error answer; body is the whole JSON object to send."""

    def __init__(self, code, body, headers=()):
        super().__init__(code)
        self.code = code
        self.body = body
        self.headers = list(headers)


STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED",
                403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                409: "ALREADY_EXISTS", 412: "FAILED_PRECONDITION",
                416: "OUT_OF_RANGE", 429: "RESOURCE_EXHAUSTED",
                500: "INTERNAL", 503: "UNAVAILABLE"}
REASONS = {400: "invalid", 401: "authError", 403: "forbidden",
           404: "notFound", 409: "alreadyExists", 412: "conditionNotMet",
           416: "requestedRangeNotSatisfiable", 429: "rateLimitExceeded",
           500: "backendError", 503: "backendError"}


def google_error(code, message, reason=None, status=True, extra=None):
    """Google's error body: Compute and Storage use errors[], One Platform
    APIs (Cloud Build) use status; Google sends both on most errors."""
    err = {"code": code, "message": message,
           "errors": [{"message": message, "domain": "global",
                       "reason": reason or REASONS.get(code, "error")}]}
    if status:
        err["status"] = STATUS_NAMES.get(code, "UNKNOWN")
    if extra:
        err["errors"][0].update(extra)
    return ApiError(code, {"error": err})


def not_found(resource):
    return google_error(404, "The resource '%s' was not found" % resource,
                        status=False)


def bad_request(message, reason="invalid"):
    return google_error(400, message, reason)


def check_labels(labels):
    if not isinstance(labels, dict):
        raise bad_request("Invalid value for field 'labels'")
    for k, v in labels.items():
        if not LABEL_KEY_RE.fullmatch(str(k)) or \
                not isinstance(v, str) or not LABEL_VALUE_RE.fullmatch(v):
            raise bad_request("Invalid value for field 'labels': "
                              "'%s'. Label key and value must be lowercase "
                              "letters, digits, '-' or '_'." % k)


# --- Compute list filters -----------------------------------------------------

FILTER_TERM = re.compile(
    r"\s*\(?\s*([A-Za-z_][\w.-]*)\s*(!=|=|:|\beq\b|\bne\b)\s*"
    r"(\"(?:[^\"\\]|\\.)*\"|[^\s()]+)\s*\)?\s*(?:AND\s+)?")


def parse_filter(text):
    """[(field, op, value)] for `a = b`, `a != b`, `a:*`, `a eq re` terms,
    joined by AND or by juxtaposition; anything else is refused."""
    terms, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = FILTER_TERM.match(text, pos)
        if not m or m.end() == pos:
            raise bad_request("Invalid value for field 'filter': '%s'. "
                              "Invalid list filter expression." % text)
        value = m.group(3)
        if value.startswith('"'):
            value = json.loads(value)
        terms.append((m.group(1), m.group(2), value))
        pos = m.end()
    return terms


def field_value(resource, path):
    cur = resource
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def filter_match(resource, terms):
    for field, op, value in terms:
        have = field_value(resource, field)
        text = None if have is None else (
            json.dumps(have) if isinstance(have, bool) else str(have))
        if op == ":":
            ok = have is not None and (value == "*" or
                                       fnmatch.fnmatchcase(text, value))
        elif op in ("=", "!="):
            ok = text is not None and fnmatch.fnmatchcase(text, value)
            ok = ok if op == "=" else not ok
        else:
            ok = text is not None and re.fullmatch(value, text) is not None
            ok = ok if op == "eq" else not ok
        if not ok:
            return False
    return True


def page_token(offset, query):
    raw = json.dumps({"o": offset, "q": query}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def page_offset(token, query):
    if not token:
        return 0
    try:
        obj = json.loads(b64url_decode(token))
        if obj["q"] != query:
            raise ValueError
        return int(obj["o"])
    except (ValueError, KeyError, TypeError):
        raise bad_request("Invalid value for field 'pageToken': '%s'. "
                          "Invalid page token." % token)


# --- faults -------------------------------------------------------------------

class Faults:
    """The fault table, set whole by PUT /_control/faults:

    {"throttle": {"status": 429|503|500, "count": N, "kinds": [...],
                  "retry_after": S}     the next N calls of those kinds
                                        (all kinds if absent) fail
     "stall": {"seconds": S, "count": N, "kinds": [...]}
     "build": {"result": "FAILURE"|"TIMEOUT"|"INTERNAL_ERROR", "count": N}
                                        the next N builds end so
     "build_slow": S                    builds take S seconds more
     "operation": {"count": N}          the next N image inserts end DONE
                                        with error.errors[] (QUOTA_EXCEEDED)
     "corrupt": {"count": N, "name": o} media bytes served with one byte
                                        flipped (metadata unchanged)
     "vanish": {"after_reads": N, "name": o}  the object is deleted after
                                        N more media reads of it}
    "count" absent means every time.  Kinds are the counter names."""

    KEYS = ("throttle", "stall", "build", "build_slow", "operation",
            "corrupt", "vanish")

    def __init__(self, table=None):
        table = table or {}
        for key in table:
            if key not in self.KEYS:
                raise ValueError("unknown fault %r" % key)
        self.table = json.loads(json.dumps(table))

    def take(self, key, kind=None, name=None):
        """The fault entry for key if it applies now (counting it down)."""
        entry = self.table.get(key)
        if not entry:
            return None
        if not isinstance(entry, dict):
            return entry
        if kind is not None and entry.get("kinds") and \
                kind not in entry["kinds"]:
            return None
        if name is not None and entry.get("name") not in (None, name):
            return None
        if "count" in entry:
            if entry["count"] <= 0:
                return None
            entry["count"] -= 1
        return entry


# --- the world ----------------------------------------------------------------

class World:
    """Everything the fake holds; one lock guards all of it."""

    def __init__(self, args):
        self.lock = threading.Condition()
        self.dir = os.path.realpath(args.state_dir)
        os.makedirs(self.dir, exist_ok=True)
        self.project = args.project
        self.project_number = "123456789012"
        self.prefix = {"token": args.token_path,
                       "compute": args.compute_prefix,
                       "cloudbuild": args.cloudbuild_prefix,
                       "storage": args.storage_prefix,
                       "download": "/download" + args.storage_prefix,
                       "metadata": "/computeMetadata/v1"}
        self.config = {"token_lifetime": args.token_lifetime,
                       "operation_seconds": args.operation_seconds,
                       "build_seconds": args.build_seconds,
                       "max_page_size": 500, "wait_cap": 120.0,
                       "metadata_email":
                           "default@%s.iam.gserviceaccount.com" % args.project}
        self.accounts = {}      # client_email -> {kid, n, e}
        self.reset()

    def reset(self):
        self.zones = ["us-central1-a", "europe-west1-b"]
        self.instances = {}     # (zone, name) -> resource
        self.disks = {}         # (zone, name) -> resource (+ "_file")
        self.images = {}        # name -> resource (+ "_file")
        self.operations = {}    # name -> {"res", "done_at", "fail", "then"}
        self.builds = {}        # id -> build record
        self.buckets = {}       # bucket -> {name: object record}
        self.tokens = {}        # token -> {"expires", "scopes", "email"}
        self.calls = {}
        self.injected = {}
        self.faults = Faults()
        self.last_generation = 0
        for sub in ("disks", "objects", "work"):
            path = os.path.join(self.dir, sub)
            shutil.rmtree(path, ignore_errors=True)
            os.makedirs(path)

    # --- counters and faults -------------------------------------------------

    def count(self, kind):
        self.calls[kind] = self.calls.get(kind, 0) + 1

    def inject(self, kind):
        self.injected[kind] = self.injected.get(kind, 0) + 1

    # --- seeding -------------------------------------------------------------

    def seed(self, spec, base):
        for zone in spec.get("zones", []):
            if zone not in self.zones:
                self.zones.append(zone)
        for bucket in spec.get("buckets", []):
            self.buckets.setdefault(bucket, {})
        for d in spec.get("disks", []):
            self.seed_disk(d["zone"], d, None, base)
        for inst in spec.get("instances", []):
            self.seed_instance(inst, base)
        for obj in spec.get("objects", []):
            self.put_object(obj["bucket"], obj["name"], obj["path"],
                            move=False)

    def url(self, base, path):
        return base + self.prefix["compute"] + "/" + path

    def seed_disk(self, zone, d, user, base):
        if zone not in self.zones:
            self.zones.append(zone)
        raw = d.get("raw")
        raw_size = os.path.getsize(raw) if raw else 0
        size_gb = int(d.get("sizeGb") or max(1, -(-raw_size // GiB)))
        if raw_size > size_gb * GiB:
            raise ValueError("raw file of disk %s is larger than sizeGb"
                             % d["name"])
        path = os.path.join(self.dir, "disks", "%s--%s.raw"
                            % (zone, d["name"]))
        if raw:
            copy_sparse(raw, path, size_gb * GiB)
        else:
            with open(path, "wb") as f:
                os.truncate(f.fileno(), size_gb * GiB)
        ppath = "projects/%s/zones/%s" % (self.project, zone)
        res = {"kind": "compute#disk", "id": new_id(),
               "creationTimestamp": compute_time(time.time() - 86400),
               "name": d["name"], "sizeGb": str(size_gb),
               "zone": self.url(base, ppath), "status": "READY",
               "selfLink": self.url(base, ppath + "/disks/" + d["name"]),
               "type": self.url(base, ppath + "/diskTypes/" +
                                d.get("type", "pd-balanced")),
               "labels": dict(d.get("labels", {})),
               "labelFingerprint": "42WmSpB8rSM=",
               "physicalBlockSizeBytes": "4096",
               "_file": path, "_raw": raw, "_raw_size": raw_size}
        if d.get("sourceImage"):
            res["sourceImage"] = d["sourceImage"]
        if user:
            res["users"] = [user]
            res["lastAttachTimestamp"] = res["creationTimestamp"]
        self.disks[(zone, d["name"])] = res
        return res

    def seed_instance(self, inst, base):
        zone = inst.get("zone", self.zones[0])
        ppath = "projects/%s/zones/%s" % (self.project, zone)
        link = self.url(base, ppath + "/instances/" + inst["name"])
        attached = []
        for i, d in enumerate(inst.get("disks", [])):
            disk = self.seed_disk(zone, d, link, base)
            boot = d.get("boot", i == 0)
            attached.append({
                "kind": "compute#attachedDisk", "type": "PERSISTENT",
                "mode": "READ_WRITE", "source": disk["selfLink"],
                "deviceName": d.get("deviceName", d["name"]), "index": i,
                "boot": boot, "autoDelete": boot, "interface": "SCSI",
                "diskSizeGb": disk["sizeGb"]})
        self.instances[(zone, inst["name"])] = {
            "kind": "compute#instance", "id": new_id(),
            "creationTimestamp": compute_time(time.time() - 86400),
            "name": inst["name"], "description": "",
            "machineType": self.url(base, ppath + "/machineTypes/" +
                                    inst.get("machineType", "e2-medium")),
            "status": inst.get("status", "RUNNING"),
            "zone": self.url(base, ppath), "disks": attached,
            "networkInterfaces": [{"kind": "compute#networkInterface",
                                   "name": "nic0", "networkIP": "10.0.0.2"}],
            "labels": dict(inst.get("labels", {})),
            "labelFingerprint": "42WmSpB8rSM=", "fingerprint": "Zm9vYmFy",
            "selfLink": link}

    # --- objects -------------------------------------------------------------

    def next_generation(self):
        gen = max(time.time_ns() // 1000, self.last_generation + 1)
        self.last_generation = gen
        return gen

    def put_object(self, bucket, name, path, move=True):
        """Store the file at path as gs://bucket/name (called locked; the
        hashes of a large object are computed before, by the caller)."""
        if bucket not in self.buckets:
            raise KeyError(bucket)
        dest = os.path.join(self.dir, "objects", secrets.token_hex(12))
        if move:
            os.replace(path, dest)
        else:
            shutil.copyfile(path, dest)
        md5 = hashlib.md5()
        with open(dest, "rb") as f:
            for buf in iter(lambda: f.read(4 << 20), b""):
                md5.update(buf)
        now = time.time()
        old = self.buckets[bucket].get(name)
        if old:
            os.unlink(old["_file"])
        self.buckets[bucket][name] = {
            "name": name, "bucket": bucket, "_file": dest,
            "size": os.path.getsize(dest), "generation":
            self.next_generation(), "metageneration": 1,
            "md5": md5.digest(),
            "crc32c": struct.pack(">I", crc32c_file(dest)),
            "created": now, "reads": 0,
            "contentType": "application/octet-stream"}
        return self.buckets[bucket][name]

    def drop_object(self, bucket, name):
        obj = self.buckets[bucket].pop(name)
        try:
            os.unlink(obj["_file"])
        except FileNotFoundError:
            pass

    # --- operations and builds (state moves with time, read lazily) -------

    def new_operation(self, base, op_type, target_link, target_id, email,
                      then=None, fail=False):
        name = "operation-%d-%s" % (int(time.time() * 1000),
                                    secrets.token_hex(10))
        now = time.time()
        delay = float(self.config["operation_seconds"])
        res = {"kind": "compute#operation", "id": new_id(), "name": name,
               "operationType": op_type, "targetLink": target_link,
               "targetId": target_id, "status": "PENDING", "user": email,
               "progress": 0, "insertTime": compute_time(now),
               "selfLink": self.url(base, "projects/%s/global/operations/%s"
                                    % (self.project, name))}
        self.operations[name] = {"res": res, "created": now,
                                 "start_at": now + delay * 0.2,
                                 "done_at": now + delay, "fail": fail,
                                 "then": then}
        self.refresh()
        return res

    def refresh(self):
        """Move operations and builds on to the state the clock says.
        Called locked, on every request."""
        now = time.time()
        for op in self.operations.values():
            res = op["res"]
            if res["status"] == "PENDING" and now >= op["start_at"]:
                res.update(status="RUNNING", progress=50,
                           startTime=compute_time(op["start_at"]))
            if res["status"] == "RUNNING" and now >= op["done_at"]:
                res.update(status="DONE", progress=100,
                           endTime=compute_time(op["done_at"]))
                if op["fail"]:
                    res["httpErrorStatusCode"] = 403
                    res["httpErrorMessage"] = "FORBIDDEN"
                    res["error"] = {"errors": [{
                        "code": "QUOTA_EXCEEDED",
                        "message": "Quota 'IMAGES' exceeded. Limit: 0.0 "
                                   "globally."}]}
                if op["then"]:
                    op["then"](not op["fail"])
        for build in self.builds.values():
            self.refresh_build(build, now)
        self.lock.notify_all()

    def next_change(self):
        """Seconds until the next timed change, or None."""
        now, soon = time.time(), None
        for op in self.operations.values():
            if op["res"]["status"] != "DONE":
                t = op["start_at"] if op["res"]["status"] == "PENDING" \
                    else op["done_at"]
                soon = t if soon is None else min(soon, t)
        return None if soon is None else max(soon - now, 0.0)

    def refresh_build(self, b, now):
        res = b["res"]
        if res["status"] not in ("QUEUED", "WORKING"):
            return
        if res["status"] == "QUEUED" and now >= b["start_at"]:
            res["status"] = "WORKING"
            res["startTime"] = rfc3339(b["start_at"])
        if res["status"] != "WORKING":
            return
        if b["timeout"] is not None and now >= b["created"] + b["timeout"]:
            return self.finish_build(b, "TIMEOUT", "Build timeout "
                                     "(%ds) exceeded." % b["timeout"],
                                     b["created"] + b["timeout"])
        if now < b["done_at"] or not b["ran"].is_set():
            return
        if b["forced"]:
            detail = {"TIMEOUT": "Build timeout exceeded.",
                      "INTERNAL_ERROR": "Internal error."}.get(
                          b["forced"], b["step_failure"])
            return self.finish_build(b, b["forced"], detail, b["done_at"])
        if b["error"]:
            return self.finish_build(b, "FAILURE", b["step_failure"],
                                     b["done_at"], log=b["error"])
        bucket, name = b["dest"]
        if bucket not in self.buckets:
            return self.finish_build(b, "FAILURE", b["step_failure"],
                                     b["done_at"], log="bucket %s does "
                                     "not exist" % bucket)
        self.put_object(bucket, name, b["output"])
        self.finish_build(b, "SUCCESS", None, b["done_at"])

    def finish_build(self, b, status, detail, t, log=None):
        res = b["res"]
        res["status"] = status
        res["finishTime"] = rfc3339(t)
        res.setdefault("startTime", rfc3339(t))
        if detail:
            res["statusDetail"] = detail
        if status == "FAILURE":
            res["failureInfo"] = {"type": "USER_BUILD_STEP",
                                  "detail": detail}
        if log:
            b["log"] = log
        if b.get("output") and os.path.exists(b["output"]):
            os.unlink(b["output"])


# --- builds -------------------------------------------------------------------

def parse_export_args(args):
    """The export tool's flags ({name: value}) or raise ValueError, as
    the tool's flag parser would."""
    flags = {}
    for arg in args:
        m = re.fullmatch(r"--?([a-z_]+)(?:=(.*))?", arg, re.S)
        if not m or m.group(1) not in EXPORT_FLAGS:
            raise ValueError("flag provided but not defined: %s" % arg)
        flags[m.group(1)] = m.group(2) if m.group(2) is not None else "true"
    for need in ("source_image", "destination_uri"):
        if not flags.get(need):
            raise ValueError("The flag -%s must be provided" % need)
    if flags.get("format") and flags["format"] not in FORMATS:
        raise ValueError("unsupported format: %s" % flags["format"])
    if "timeout" in flags and go_duration(flags["timeout"]) is None:
        raise ValueError('invalid value "%s" for flag -timeout'
                         % flags["timeout"])
    if not re.fullmatch(r"gs://[a-z0-9][-a-z0-9_.]*/.+",
                        flags["destination_uri"]):
        raise ValueError("invalid -destination_uri %s"
                         % flags["destination_uri"])
    return flags


def convert(src, fmt, workdir):
    """Run the conversion the export tool does; return the output path."""
    if fmt:
        out = os.path.join(workdir, "disk." + fmt)
        cmd = [QEMU_IMG, "convert", "-f", "raw"] + FORMATS[fmt] + [src, out]
    else:
        os.symlink(src, os.path.join(workdir, "disk.raw"))
        out = os.path.join(workdir, "image.tar.gz")
        cmd = ["tar", "-C", workdir, "--dereference", "--sparse", "-czf",
               out, "disk.raw"]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=600)
    if r.returncode != 0:
        raise RuntimeError("%s failed: %s" % (cmd[0], r.stdout.decode()))
    return out


def run_build(world, b, image_file, fmt):
    """The build's work, off the lock: convert, hash, then say it ran."""
    try:
        if image_file is None:
            raise RuntimeError(b["error"] or "no source image")
        b["output"] = convert(image_file, fmt, b["workdir"])
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        b["error"] = str(exc)
    finally:
        b["ran"].set()
        with world.lock:
            world.refresh()


# --- HTTP ---------------------------------------------------------------------

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "cloudfs-test-gcp/1"

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))

    @property
    def world(self):
        return self.server.world

    # --- plumbing ------------------------------------------------------------

    def body_bytes(self):
        if getattr(self, "_body", None) is None:
            n = int(self.headers.get("Content-Length") or 0)
            self._body = self.rfile.read(n) if n else b""
        return self._body

    def body_json(self):
        raw = self.body_bytes()
        if not raw:
            return {}
        try:
            obj = json.loads(raw)
        except ValueError:
            raise google_error(400, "Invalid JSON payload received.",
                               "parseError")
        if not isinstance(obj, dict):
            raise google_error(400, "Invalid JSON payload received.",
                               "parseError")
        return obj

    def send(self, status, body=b"", ctype="application/json; charset=UTF-8",
             headers=()):
        if isinstance(body, (dict, list)):
            body = (json.dumps(body, indent=1) + "\n").encode()
        elif isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def base(self):
        return "http://%s" % (self.headers.get("Host") or
                              "127.0.0.1:%d" % self.server.server_port)

    def do_GET(self):
        self.dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET

    def dispatch(self):
        self._body = None
        url = urllib.parse.urlsplit(self.path)
        self.query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        self.raw_path = url.path
        try:
            if url.path.startswith("/_control/"):
                return self.control(url.path[len("/_control/"):])
            route = self.route(url.path)
            if route is None:
                self.body_bytes()
                raise google_error(404, "Not Found: %s" % url.path,
                                   status=False)
            kind, service, fn, args = route
            self.serve_api(kind, service, fn, args)
        except ApiError as err:
            self.body_bytes()
            self.send(err.code, err.body, headers=err.headers)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def q(self, name, default=None):
        values = self.query.get(name)
        return values[-1] if values else default

    # --- routing -------------------------------------------------------------

    def route(self, path):
        w, m = self.world, self.command
        p = w.prefix
        if path == p["token"]:
            return ("token", None, self.token, ()) if m == "POST" else None
        if path.startswith(p["metadata"] + "/"):
            rest = path[len(p["metadata"]) + 1:]
            kind = "metadata." + rest.rsplit("/", 1)[-1]
            return kind, None, self.metadata, (rest,)
        for service in ("compute", "cloudbuild", "download", "storage"):
            if path.startswith(p[service] + "/"):
                rest = path[len(p[service]) + 1:]
                fn = getattr(self, "route_" + service.replace(
                    "download", "storage"))
                return fn(m, rest.split("/"), rest)
        return None

    def route_compute(self, m, seg, rest):
        if len(seg) < 3 or seg[0] != "projects":
            return None
        proj, seg = seg[1], seg[2:]
        a = (proj,)
        table = [
            ("GET", ["zones"], "compute.zones.list", self.zones_list),
            ("GET", ["aggregated", "instances"],
             "compute.instances.aggregatedList", self.aggregated),
            ("GET", ["aggregated", "disks"],
             "compute.disks.aggregatedList", self.aggregated),
            ("GET", ["zones", "*", "instances"], "compute.instances.list",
             self.zonal_list),
            ("GET", ["zones", "*", "disks"], "compute.disks.list",
             self.zonal_list),
            ("GET", ["zones", "*", "instances", "*"],
             "compute.instances.get", self.zonal_get),
            ("GET", ["zones", "*", "disks", "*"], "compute.disks.get",
             self.zonal_get),
            ("GET", ["global", "images"], "compute.images.list",
             self.images_list),
            ("POST", ["global", "images"], "compute.images.insert",
             self.images_insert),
            ("GET", ["global", "images", "*"], "compute.images.get",
             self.images_get),
            ("DELETE", ["global", "images", "*"], "compute.images.delete",
             self.images_delete),
            ("GET", ["global", "operations", "*"],
             "compute.globalOperations.get", self.operation_get),
            ("POST", ["global", "operations", "*", "wait"],
             "compute.globalOperations.wait", self.operation_wait),
        ]
        for method, pattern, kind, fn in table:
            if method == m and len(pattern) == len(seg) and all(
                    x == "*" or x == y for x, y in zip(pattern, seg)):
                stars = tuple(urllib.parse.unquote(y) for x, y in
                              zip(pattern, seg) if x == "*")
                return kind, "compute", fn, a + stars
        return None

    def route_cloudbuild(self, m, seg, rest):
        if seg[0] == "operations" and m == "GET":
            return ("cloudbuild.operations.get", "cloudbuild",
                    self.build_operation, (rest,))
        if len(seg) < 3 or seg[0] != "projects":
            return None
        proj, seg = seg[1], seg[2:]
        if len(seg) >= 2 and seg[0] == "locations":
            seg = seg[2:]                   # regional endpoints: same builds
        if seg == ["builds"] and m == "POST":
            return ("cloudbuild.builds.create", "cloudbuild",
                    self.build_create, (proj,))
        if seg == ["builds"] and m == "GET":
            return ("cloudbuild.builds.list", "cloudbuild",
                    self.build_list, (proj,))
        if len(seg) == 2 and seg[0] == "builds":
            if m == "GET":
                return ("cloudbuild.builds.get", "cloudbuild",
                        self.build_get, (proj, seg[1]))
            if m == "POST" and seg[1].endswith(":cancel"):
                return ("cloudbuild.builds.cancel", "cloudbuild",
                        self.build_cancel, (proj, seg[1][:-7]))
        return None

    def route_storage(self, m, seg, rest):
        if len(seg) < 2 or seg[0] != "b":
            return None
        bucket = urllib.parse.unquote(seg[1])
        if len(seg) == 2 and m == "GET":
            return ("storage.buckets.get", "storage", self.bucket_get,
                    (bucket,))
        if len(seg) == 3 and seg[2] == "o" and m == "GET":
            return ("storage.objects.list", "storage", self.objects_list,
                    (bucket,))
        if len(seg) >= 4 and seg[2] == "o":
            # an unencoded "/" in the name is another path: not found
            name = urllib.parse.unquote(seg[3]) if len(seg) == 4 else None
            if m in ("GET", "HEAD"):
                media = self.q("alt") == "media"
                return ("storage.objects.media" if media else
                        "storage.objects.get", "storage",
                        self.object_get, (bucket, name, media))
            if m == "DELETE":
                return ("storage.objects.delete", "storage",
                        self.object_delete, (bucket, name))
        return None

    def serve_api(self, kind, service, fn, args):
        w = self.world
        with w.lock:
            w.count(kind)
            w.refresh()
            if service is not None:
                self.authorize(service)
            throttle = w.faults.take("throttle", kind)
            stall = w.faults.take("stall", kind)
            if throttle:
                w.inject(kind)
            if stall:
                w.inject("stall:" + kind)
        if stall:
            time.sleep(float(stall.get("seconds", 1)))
        if throttle:
            self.body_bytes()
            code = int(throttle.get("status", 429))
            msg = {429: "Rate Limit Exceeded", 503: "Backend Error",
                   500: "Internal Error"}.get(code, "Error")
            hdrs = []
            if throttle.get("retry_after"):
                hdrs.append(("Retry-After", str(throttle["retry_after"])))
            err = google_error(code, msg)
            err.headers = hdrs
            raise err
        fn(*args)

    # --- auth ----------------------------------------------------------------

    def authorize(self, service):
        w = self.world
        auth = self.headers.get("Authorization") or ""
        tok = w.tokens.get(auth[7:]) if auth.startswith("Bearer ") else None
        if tok is None or tok["expires"] <= time.time():
            w.count("unauthenticated")
            msg = ("Request had invalid authentication credentials. Expected "
                   "OAuth 2 access token, login cookie or other valid "
                   "authentication credential. See https://developers."
                   "google.com/identity/sign-in/web/devconsole-project.")
            err = google_error(401, msg, "authError",
                               extra={"location": "Authorization",
                                      "locationType": "header"})
            err.headers = [("WWW-Authenticate", 'Bearer realm="https://'
                            'accounts.google.com/", error="invalid_token"')]
            raise err
        allowed = SCOPES[service] & tok["scopes"]
        writes = self.command not in ("GET", "HEAD")
        if not allowed or (writes and allowed <= READONLY_SCOPES):
            w.count("insufficient_scopes")
            raise google_error(403, "Request had insufficient authentication "
                               "scopes.", "insufficientPermissions")
        self.email = tok["email"]

    def token_error(self, error, description, code=400):
        self.world.count("token.refused")
        raise ApiError(code, {"error": error,
                              "error_description": description})

    def issue_token(self, email, scopes):
        w = self.world
        token = "ya29.c." + secrets.token_urlsafe(48)
        life = int(w.config["token_lifetime"])
        w.tokens[token] = {"expires": time.time() + life, "email": email,
                           "scopes": set(scopes)}
        return {"access_token": token, "expires_in": life,
                "token_type": "Bearer"}

    def token(self):
        ctype = (self.headers.get("Content-Type") or "").split(";")[0]
        form = urllib.parse.parse_qs(self.body_bytes().decode(
            errors="replace"), keep_blank_values=True)
        if ctype.strip().lower() != "application/x-www-form-urlencoded":
            self.token_error("invalid_request", "Bad Request")
        grant = form.get("grant_type", [""])[-1]
        if grant != JWT_GRANT:
            self.token_error("unsupported_grant_type",
                             "Invalid grant_type: %s" % grant)
        assertion = form.get("assertion", [""])[-1]
        claims = self.verify_jwt(assertion)
        with self.world.lock:
            answer = self.issue_token(claims["iss"], claims["scope"].split())
        self.send(200, answer)

    def verify_jwt(self, assertion):
        parts = assertion.split(".")
        try:
            if len(parts) != 3:
                raise ValueError
            header = json.loads(b64url_decode(parts[0]))
            claims = json.loads(b64url_decode(parts[1]))
            signature = b64url_decode(parts[2])
        except ValueError:
            self.token_error("invalid_grant", "Invalid JWT: not a JWS.")
        if not isinstance(header, dict) or not isinstance(claims, dict):
            self.token_error("invalid_grant", "Invalid JWT: not a JWS.")
        if header.get("alg") != "RS256":
            self.token_error("invalid_grant", "Invalid JWT: unsupported "
                             "signature algorithm %r." % header.get("alg"))
        with self.world.lock:
            acct = self.world.accounts.get(claims.get("iss"))
        if acct is None:
            self.token_error("invalid_grant", "Invalid grant: account not "
                             "found")
        if "kid" in header and header["kid"] != acct["kid"]:
            self.token_error("invalid_grant", "Invalid JWT Signature.")
        message = (parts[0] + "." + parts[1]).encode()
        if not rs256_verify(acct["n"], acct["e"], message, signature):
            self.token_error("invalid_grant", "Invalid JWT Signature.")
        token_url = self.base() + self.world.prefix["token"]
        if claims.get("aud") not in (token_url, acct.get("token_uri")):
            self.token_error("invalid_grant", "Invalid JWT: Failed audience "
                             "check. The right audience is %s" % token_url)
        iat, exp, now = claims.get("iat"), claims.get("exp"), time.time()
        if not isinstance(iat, int) or not isinstance(exp, int) or \
                exp - iat > 3600 or exp <= iat or exp <= now or \
                iat > now + 60:
            self.token_error("invalid_grant", "Invalid JWT: Token must be a "
                             "short-lived token (60 minutes) and in a "
                             "reasonable timeframe. Check your iat and exp "
                             "values in the JWT claim.")
        if not isinstance(claims.get("scope"), str) or \
                not claims["scope"].split():
            self.token_error("invalid_scope", "Empty or missing scope not "
                             "allowed.")
        return claims

    def metadata(self, rest):
        w = self.world
        self.body_bytes()
        if self.headers.get("Metadata-Flavor") != "Google" or \
                self.headers.get("X-Forwarded-For"):
            return self.send(403, "Missing required header "
                             "\"Metadata-Flavor\": \"Google\"\n",
                             "text/html; charset=UTF-8")
        hdr = [("Metadata-Flavor", "Google")]
        sa = "instance/service-accounts/default/"
        if self.command != "GET":
            return self.send(405, "", "text/html", hdr)
        if rest == sa + "token":
            scopes = self.q("scopes")
            scopes = scopes.split(",") if scopes else [SCOPE_CLOUD]
            with w.lock:
                answer = self.issue_token(w.config["metadata_email"], scopes)
            return self.send(200, answer, "application/json", hdr)
        if rest == sa + "email":
            return self.send(200, w.config["metadata_email"], "text/plain",
                             hdr)
        if rest == "project/project-id":
            return self.send(200, w.project, "application/text", hdr)
        return self.send(404, "Not Found\n", "text/html", hdr)

    # --- Compute -------------------------------------------------------------

    def check_project(self, proj):
        if proj != self.world.project:
            raise not_found("projects/%s" % proj)

    def check_zone(self, zone):
        if zone not in self.world.zones:
            raise not_found("projects/%s/zones/%s" % (self.world.project,
                                                      zone))

    def public(self, res):
        return {k: v for k, v in res.items() if not k.startswith("_")}

    def page_size(self):
        raw = self.q("maxResults", "500")
        if not re.fullmatch(r"\d+", raw) or int(raw) > 500:
            raise bad_request("Invalid value for field 'maxResults': '%s'. "
                              "Must be less than or equal to 500" % raw)
        return min(int(raw), int(self.world.config["max_page_size"]))

    def list_query(self):
        return "%s|%s" % (self.raw_path, self.q("filter", ""))

    def filtered(self, items):
        text = self.q("filter")
        if not text:
            return items
        terms = parse_filter(text)
        return [r for r in items if filter_match(r, terms)]

    def send_list(self, kind, ident, items, extra=None):
        size = self.page_size()
        query = self.list_query()
        start = page_offset(self.q("pageToken"), query)
        page = items[start:start + size] if size else []
        body = {"kind": kind, "id": ident,
                "selfLink": self.base() + self.raw_path}
        if page:
            body["items"] = page
        if size and start + size < len(items):
            body["nextPageToken"] = page_token(start + size, query)
        body.update(extra or {})
        self.send(200, body)

    def zones_list(self, proj):
        w = self.world
        self.check_project(proj)
        with w.lock:
            items = [{"kind": "compute#zone", "id": str(2000 + i),
                      "name": z, "status": "UP",
                      "region": w.url(self.base(), "projects/%s/regions/%s"
                                      % (proj, z.rsplit("-", 1)[0])),
                      "selfLink": w.url(self.base(), "projects/%s/zones/%s"
                                        % (proj, z))}
                     for i, z in enumerate(w.zones)]
        self.send_list("compute#zoneList", "projects/%s/zones" % proj,
                       self.filtered(items))

    def resources(self, what, zone=None):
        table = self.world.instances if what == "instances" \
            else self.world.disks
        return [self.public(r) for (z, n), r in sorted(table.items())
                if zone is None or z == zone]

    def aggregated(self, proj):
        w = self.world
        what = self.raw_path.rstrip("/").rsplit("/", 1)[1]
        self.check_project(proj)
        size = self.page_size()
        query = self.list_query()
        start = page_offset(self.q("pageToken"), query)
        with w.lock:
            flat = [(z, r) for z in w.zones
                    for r in self.filtered(self.resources(what, z))]
            zones = list(w.zones)
        page = flat[start:start + size] if size else []
        items = {}
        for zone in zones:
            scope = "zones/" + zone
            mine = [r for z, r in page if z == zone]
            if mine:
                items[scope] = {what: mine}
            else:
                items[scope] = {"warning": {
                    "code": "NO_RESULTS_ON_PAGE",
                    "message": "There are no results for scope '%s' on "
                               "this page." % scope,
                    "data": [{"key": "scope", "value": scope}]}}
        kind = "compute#%sAggregatedList" % what[:-1]
        body = {"kind": kind, "id": "projects/%s/aggregated/%s"
                % (proj, what), "items": items,
                "selfLink": self.base() + self.raw_path}
        if size and start + size < len(flat):
            body["nextPageToken"] = page_token(start + size, query)
        self.send(200, body)

    def zonal_list(self, proj, zone):
        w = self.world
        what = self.raw_path.rstrip("/").rsplit("/", 1)[1]
        self.check_project(proj)
        with w.lock:
            self.check_zone(zone)
            items = self.filtered(self.resources(what, zone))
        self.send_list("compute#%sList" % what[:-1], "projects/%s/zones/%s/%s"
                       % (proj, zone, what), items)

    def zonal_get(self, proj, zone, name):
        w = self.world
        what = self.raw_path.split("/")[-2]
        self.check_project(proj)
        with w.lock:
            self.check_zone(zone)
            table = w.instances if what == "instances" else w.disks
            res = table.get((zone, name))
            if res is None:
                raise not_found("projects/%s/zones/%s/%s/%s"
                                % (proj, zone, what, name))
            self.send(200, self.public(res))

    def images_list(self, proj):
        w = self.world
        self.check_project(proj)
        with w.lock:
            items = [self.public(r) for _, r in sorted(w.images.items())]
        self.send_list("compute#imageList", "projects/%s/global/images"
                       % proj, self.filtered(items))

    def images_get(self, proj, name):
        w = self.world
        self.check_project(proj)
        with w.lock:
            res = w.images.get(name)
            if res is None:
                raise not_found("projects/%s/global/images/%s" % (proj, name))
            self.send(200, self.public(res))

    def find_disk(self, ref):
        """The disk a sourceDisk names (full or partial URL), or raise."""
        w = self.world
        m = re.fullmatch(r"(?:.*?/compute/v1/)?(?:projects/([^/]+)/)?"
                         r"zones/([^/]+)/disks/([^/]+)", ref or "")
        if not m:
            raise bad_request("Invalid value for field 'resource.sourceDisk'"
                              ": '%s'. The URL is malformed." % ref)
        proj, zone, name = m.group(1) or w.project, m.group(2), m.group(3)
        disk = w.disks.get((zone, name)) if proj == w.project else None
        if disk is None:
            raise not_found("projects/%s/zones/%s/disks/%s"
                            % (proj, zone, name))
        return disk, "projects/%s/zones/%s/disks/%s" % (proj, zone, name)

    def images_insert(self, proj):
        w = self.world
        self.check_project(proj)
        body = self.body_json()
        name = body.get("name")
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise bad_request("Invalid value for field 'resource.name': "
                              "'%s'. Must be a match of regex "
                              "'(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'"
                              % name)
        if "labels" in body:
            check_labels(body["labels"])
        if not body.get("sourceDisk"):
            raise bad_request("Required field 'resource.sourceDisk' not "
                              "specified", "required")
        force = self.q("forceCreate", "false") == "true"
        with w.lock:
            disk, disk_path = self.find_disk(body["sourceDisk"])
            if name in w.images:
                raise google_error(409, "The resource 'projects/%s/global/"
                                   "images/%s' already exists"
                                   % (proj, name), status=False)
            for user in disk.get("users", []):
                inst = w.instances.get((disk_path.split("/")[3],
                                        user.rsplit("/", 1)[1]))
                if inst and inst["status"] not in ("TERMINATED", "STOPPED") \
                        and not force:
                    raise google_error(
                        400, "The disk resource '%s' is already being used "
                        "by '%s'" % (disk_path, user.split("/compute/v1/")
                                     [-1]), "resourceInUseByAnotherResource",
                        status=False)
            link = w.url(self.base(), "projects/%s/global/images/%s"
                         % (proj, name))
            res = {"kind": "compute#image", "id": new_id(),
                   "creationTimestamp": compute_time(time.time()),
                   "name": name, "description": body.get("description", ""),
                   "sourceType": "RAW", "status": "PENDING",
                   "sourceDisk": disk["selfLink"], "sourceDiskId": disk["id"],
                   "diskSizeGb": disk["sizeGb"],
                   "archiveSizeBytes": str(os.stat(disk["_file"]).st_blocks
                                           * 512),
                   "storageLocations": ["us"], "labels":
                   dict(body.get("labels", {})),
                   "labelFingerprint": "42WmSpB8rSM=", "selfLink": link,
                   "_file": disk["_file"], "_disk": disk_path}
            w.images[name] = res
            fail = bool(w.faults.take("operation", "compute.images.insert"))
            if fail:
                w.inject("operation")

            def then(ok, name=name, res=res):
                if ok:
                    res["status"] = "READY"
                elif w.images.get(name) is res:
                    del w.images[name]
            op = w.new_operation(self.base(), "insert", link, res["id"],
                                 self.email, then, fail)
            self.send(200, dict(op))

    def images_delete(self, proj, name):
        w = self.world
        self.check_project(proj)
        with w.lock:
            res = w.images.pop(name, None)
            if res is None:
                raise not_found("projects/%s/global/images/%s" % (proj, name))
            op = w.new_operation(self.base(), "delete", res["selfLink"],
                                 res["id"], self.email)
            self.send(200, dict(op))

    def operation_get(self, proj, name):
        w = self.world
        self.check_project(proj)
        with w.lock:
            op = w.operations.get(name)
            if op is None:
                raise not_found("projects/%s/global/operations/%s"
                                % (proj, name))
            self.send(200, dict(op["res"]))

    def operation_wait(self, proj, name):
        """Answer when the operation is DONE or wait_cap seconds passed
        (the real cap is about two minutes), whichever comes first."""
        w = self.world
        self.check_project(proj)
        self.body_bytes()
        with w.lock:
            op = w.operations.get(name)
            if op is None:
                raise not_found("projects/%s/global/operations/%s"
                                % (proj, name))
            deadline = time.time() + float(w.config["wait_cap"])
            while op["res"]["status"] != "DONE":
                left = deadline - time.time()
                if left <= 0:
                    break
                soon = w.next_change()
                w.lock.wait(min(left, soon if soon is not None else left))
                w.refresh()
            self.send(200, dict(op["res"]))

    # --- Cloud Build ---------------------------------------------------------

    BUILD_FIELDS = {"steps", "timeout", "tags", "options", "logsBucket",
                    "substitutions", "serviceAccount", "availableSecrets",
                    "images", "artifacts", "queueTtl", "source", "secrets"}

    def check_build_project(self, proj):
        if proj not in (self.world.project, self.world.project_number):
            raise google_error(403, "The caller does not have permission",
                               "forbidden")

    def build_operation_json(self, b):
        res = dict(b["res"])
        op = {"name": b["op_name"], "metadata": {
            "@type": "type.googleapis.com/google.devtools.cloudbuild.v1."
                     "BuildOperationMetadata", "build": res}}
        status = res["status"]
        if status not in ("QUEUED", "WORKING", "PENDING"):
            op["done"] = True
            if status == "SUCCESS":
                op["response"] = dict(res, **{
                    "@type": "type.googleapis.com/google.devtools."
                             "cloudbuild.v1.Build"})
            else:
                op["error"] = {"code": {"TIMEOUT": 4, "CANCELLED": 1}.get(
                    status, 2), "message": "Build failed; check build logs "
                    "for details" if status == "FAILURE" else
                    res.get("statusDetail", status)}
        return op

    def build_create(self, proj):
        w = self.world
        self.check_build_project(proj)
        body = self.body_json()
        for key in body:
            if key not in self.BUILD_FIELDS:
                raise google_error(400, "Invalid JSON payload received. "
                                   "Unknown name \"%s\" at 'build': Cannot "
                                   "find field." % key)
        steps = body.get("steps")
        if not isinstance(steps, list) or not steps or not all(
                isinstance(s, dict) and s.get("name") for s in steps):
            raise google_error(400, "invalid build: a build must have at "
                               "least one step with a name")
        timeout = None
        if "timeout" in body:
            timeout = duration_seconds(body["timeout"])
            if timeout is None:
                raise google_error(400, "Invalid value at 'build.timeout' "
                                   "(type.googleapis.com/google.protobuf."
                                   "Duration), Field 'timeout', Illegal "
                                   "duration format; duration must end with "
                                   "'s'")
        tags = body.get("tags", [])
        if not isinstance(tags, list) or not all(
                isinstance(t, str) and re.fullmatch(r"[\w][\w.-]{0,127}", t)
                for t in tags):
            raise google_error(400, "invalid build tag: must match "
                               "^[\\w][\\w.-]{0,127}$")
        bid = "%08x-%04x-4%03x-a%03x-%012x" % (
            secrets.randbits(32), secrets.randbits(16), secrets.randbits(12),
            secrets.randbits(12), secrets.randbits(48))
        now = time.time()
        with w.lock:
            dur = float(w.config["build_seconds"]) + float(
                w.faults.take("build_slow") or 0)
            forced = w.faults.take("build", "cloudbuild.builds.create")
            if forced:
                w.inject("build")
            res = {"id": bid, "projectId": w.project, "status": "QUEUED",
                   "steps": steps, "createTime": rfc3339(now),
                   "timeout": body.get("timeout", "600s"), "tags": tags,
                   "options": body.get("options", {"logging": "LEGACY"}),
                   "logsBucket": body.get("logsBucket", "gs://%s.cloudbuild-"
                                          "logs.googleusercontent.com"
                                          % w.project_number),
                   "logUrl": "https://console.cloud.google.com/cloud-build/"
                             "builds/%s?project=%s" % (bid, w.project_number),
                   "queueTtl": body.get("queueTtl", "3600s"),
                   "name": "projects/%s/locations/global/builds/%s"
                           % (w.project_number, bid)}
            if timeout is None:
                timeout = 600.0
            workdir = tempfile.mkdtemp(prefix="build-",
                                       dir=os.path.join(w.dir, "work"))
            b = {"res": res, "created": now, "start_at": now + dur * 0.2,
                 "done_at": now + dur, "timeout": timeout,
                 "ran": threading.Event(), "error": None, "output": None,
                 "forced": forced and forced.get("result", "FAILURE"),
                 "dest": None, "log": "", "workdir": workdir,
                 "op_name": "operations/build/%s/%s" % (
                     w.project, base64.b64encode(bid.encode()).decode())}
            idx = next((i for i, s in enumerate(steps)
                        if s["name"].split(":")[0] == EXPORT_BUILDER), None)
            b["step_failure"] = ('Build step failure: build step %d "%s" '
                                 'failed: step exited with non-zero status: '
                                 '1' % (idx or 0, steps[idx or 0]["name"]))
            image_file, fmt = None, None
            try:
                if idx is None:
                    raise ValueError("this fake runs only %s steps"
                                     % EXPORT_BUILDER)
                flags = parse_export_args(steps[idx].get("args", []))
                m = re.fullmatch(r"(?:projects/([^/]+)/global/images/)?"
                                 r"([a-z][-a-z0-9]*)", flags["source_image"])
                image = m and w.images.get(m.group(2))
                if not m or (m.group(1) or w.project) != w.project or \
                        image is None or image["status"] != "READY":
                    raise ValueError("image %s not found or not ready"
                                     % flags["source_image"])
                limit = go_duration(flags.get("timeout", "2h"))
                if limit < dur:
                    raise ValueError("image export timed out after %s"
                                     % flags["timeout"])
                image_file, fmt = image["_file"], flags.get("format")
                dest = flags["destination_uri"][5:]
                b["dest"] = tuple(dest.split("/", 1))
            except ValueError as exc:
                b["error"] = str(exc)
            w.builds[bid] = b
            threading.Thread(target=run_build, args=(w, b, image_file, fmt),
                             daemon=True).start()
            self.send(200, self.build_operation_json(b))

    def find_build(self, proj, bid):
        self.check_build_project(proj)
        b = self.world.builds.get(bid)
        if b is None:
            raise google_error(404, "Requested entity was not found.")
        return b

    def build_get(self, proj, bid):
        with self.world.lock:
            self.send(200, dict(self.find_build(proj, bid)["res"]))

    def build_list(self, proj):
        self.check_build_project(proj)
        with self.world.lock:
            items = [dict(b["res"]) for b in self.world.builds.values()]
        items.sort(key=lambda r: r["createTime"], reverse=True)
        self.send(200, {"builds": items} if items else {})

    def build_cancel(self, proj, bid):
        w = self.world
        self.body_bytes()
        with w.lock:
            b = self.find_build(proj, bid)
            if b["res"]["status"] in ("QUEUED", "WORKING"):
                w.finish_build(b, "CANCELLED", None, time.time())
            self.send(200, dict(b["res"]))

    def build_operation(self, name):
        with self.world.lock:
            for b in self.world.builds.values():
                if b["op_name"] == name:
                    return self.send(200, self.build_operation_json(b))
        raise google_error(404, "Requested entity was not found.")

    # --- Cloud Storage -------------------------------------------------------

    def find_bucket(self, bucket):
        objs = self.world.buckets.get(bucket)
        if objs is None:
            raise google_error(404, "The specified bucket does not exist.",
                               status=False)
        return objs

    def object_json(self, o):
        gen = str(o["generation"])
        quoted = urllib.parse.quote(o["name"], safe="")
        link = "%s%s/b/%s/o/%s" % (self.base(), self.world.prefix["storage"],
                                   o["bucket"], quoted)
        return {"kind": "storage#object",
                "id": "%s/%s/%s" % (o["bucket"], o["name"], gen),
                "selfLink": link,
                "mediaLink": "%s%s/b/%s/o/%s?generation=%s&alt=media" % (
                    self.base(), self.world.prefix["download"], o["bucket"],
                    quoted, gen),
                "name": o["name"], "bucket": o["bucket"], "generation": gen,
                "metageneration": str(o["metageneration"]),
                "contentType": o["contentType"], "storageClass": "STANDARD",
                "size": str(o["size"]),
                "md5Hash": base64.b64encode(o["md5"]).decode(),
                "crc32c": base64.b64encode(o["crc32c"]).decode(),
                "etag": self.object_etag(o),
                "timeCreated": rfc3339(o["created"]),
                "updated": rfc3339(o["created"]),
                "timeStorageClassUpdated": rfc3339(o["created"])}

    def object_etag(self, o):
        return base64.b64encode(("%d/%d" % (o["generation"], o[
            "metageneration"])).encode()).decode()

    def find_object(self, bucket, name):
        objs = self.find_bucket(bucket)
        obj = objs.get(name) if name is not None else None
        if obj is None:
            raise google_error(404, "No such object: %s/%s" % (
                bucket, name if name is not None else
                urllib.parse.unquote(self.raw_path.split("/o/", 1)[1])),
                status=False)
        gen = self.q("generation")
        if gen is not None and gen != str(obj["generation"]):
            raise google_error(404, "No such object: %s/%s" % (bucket, name),
                               status=False)
        self.preconditions(obj)
        return obj

    def preconditions(self, obj):
        checks = (("ifGenerationMatch", "generation", True),
                  ("ifGenerationNotMatch", "generation", False),
                  ("ifMetagenerationMatch", "metageneration", True),
                  ("ifMetagenerationNotMatch", "metageneration", False))
        for param, field, equal in checks:
            want = self.q(param)
            if want is None:
                continue
            if not re.fullmatch(r"-?\d+", want):
                raise bad_request("Invalid argument.")
            if (int(want) == obj[field]) != equal:
                if not equal and self.q("alt") == "media":
                    raise ApiError(304, b"")
                raise google_error(412, "At least one of the pre-conditions "
                                   "you specified did not hold.",
                                   "conditionNotMet",
                                   extra={"locationType": "header",
                                          "location": "If-Match"},
                                   status=False)

    def bucket_get(self, bucket):
        with self.world.lock:
            self.find_bucket(bucket)
        self.send(200, {"kind": "storage#bucket", "id": bucket,
                        "name": bucket, "location": "US",
                        "storageClass": "STANDARD", "metageneration": "1",
                        "projectNumber": self.world.project_number,
                        "timeCreated": rfc3339(0)})

    def objects_list(self, bucket):
        w = self.world
        prefix, delim = self.q("prefix", ""), self.q("delimiter")
        raw = self.q("maxResults", "1000")
        if not re.fullmatch(r"\d+", raw) or int(raw) == 0:
            raise bad_request("Invalid argument.")
        size = min(int(raw), 1000, int(w.config["max_page_size"]))
        with w.lock:
            objs = self.find_bucket(bucket)
            entries, seen = [], set()
            for name in sorted(objs):
                if not name.startswith(prefix):
                    continue
                cut = name.find(delim, len(prefix)) if delim else -1
                if cut >= 0:
                    p = name[:cut + len(delim)]
                    if p not in seen:
                        seen.add(p)
                        entries.append(("p", p))
                else:
                    entries.append(("o", self.object_json(objs[name])))
        query = "%s|%s|%s" % (bucket, prefix, delim)
        start = page_offset(self.q("pageToken"), query)
        page = entries[start:start + size]
        body = {"kind": "storage#objects"}
        items = [e for t, e in page if t == "o"]
        prefixes = [e for t, e in page if t == "p"]
        if items:
            body["items"] = items
        if prefixes:
            body["prefixes"] = prefixes
        if start + size < len(entries):
            body["nextPageToken"] = page_token(start + size, query)
        self.send(200, body)

    def object_delete(self, bucket, name):
        w = self.world
        self.body_bytes()
        with w.lock:
            self.find_object(bucket, name)
            w.drop_object(bucket, name)
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def object_get(self, bucket, name, media):
        w = self.world
        self.body_bytes()
        with w.lock:
            obj = dict(self.find_object(bucket, name))
            if not media:
                return self.send(200, self.object_json(obj))
            corrupt = w.faults.take("corrupt", None, name)
            entry = w.faults.table.get("vanish")
            if entry and entry.get("name") in (None, name):
                entry["after_reads"] = entry.get("after_reads", 0) - 1
                if entry["after_reads"] < 0:
                    w.inject("vanish")
                    w.faults.table.pop("vanish")
                    w.drop_object(bucket, name)
                    raise google_error(404, "No such object: %s/%s"
                                       % (bucket, name), status=False)
            if corrupt:
                w.inject("corrupt")
            fd = os.open(obj["_file"], os.O_RDONLY)
        try:
            self.send_media(obj, fd, corrupt)
        finally:
            os.close(fd)

    def send_media(self, obj, fd, corrupt):
        size = obj["size"]
        rng = self.headers.get("Range")
        start, end, status = 0, size - 1, 200
        m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", rng or "")
        if m and (m.group(1) or m.group(2)):
            first, last = m.group(1), m.group(2)
            if first == "":
                start, end = max(size - int(last), 0), size - 1
                unsat = int(last) == 0
            else:
                start = int(first)
                end = size - 1 if last == "" else min(int(last), size - 1)
                unsat = start >= size or (last != "" and int(last) < start)
            if unsat:
                err = google_error(416, "The requested range cannot be "
                                   "satisfied.", status=False)
                err.headers = [("Content-Range", "bytes */%d" % size)]
                raise err
            status = 206
        length = max(end - start + 1, 0)
        hashes = "crc32c=%s,md5=%s" % (
            base64.b64encode(obj["crc32c"]).decode(),
            base64.b64encode(obj["md5"]).decode())
        self.send_response(status)
        self.send_header("Content-Type", obj["contentType"])
        self.send_header("Content-Length", str(length))
        if status == 206:
            self.send_header("Content-Range", "bytes %d-%d/%d"
                             % (start, end, size))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", '"%s"' % self.object_etag(obj))
        self.send_header("X-Goog-Generation", str(obj["generation"]))
        self.send_header("X-Goog-Metageneration", str(obj["metageneration"]))
        self.send_header("X-Goog-Stored-Content-Length", str(size))
        self.send_header("X-Goog-Stored-Content-Encoding", "identity")
        self.send_header("X-Goog-Hash", hashes)
        self.end_headers()
        if self.command == "HEAD" or not length:
            return
        if corrupt:
            data = bytearray(os.pread(fd, length, start))
            data[len(data) // 2] ^= 0x5A
            self.wfile.write(bytes(data))
            return
        done = 0
        while done < length:
            n = os.sendfile(self.connection.fileno(), fd, start + done,
                            min(length - done, 8 << 20))
            if n == 0:
                break
            done += n

    # --- control -------------------------------------------------------------

    def control(self, what):
        w = self.world
        body = self.body_json() if self.command in ("POST", "PUT") else {}
        m = self.command
        with w.lock:
            w.refresh()
            if what == "state" and m == "GET":
                return self.send(200, self.state_json())
            if what == "stats" and m == "GET":
                return self.send(200, {"calls": w.calls,
                                       "injected": w.injected})
            if what == "reset" and m == "POST":
                w.reset()
                return self.send(200, {"ok": True})
            if what == "config":
                if m == "PUT":
                    for key, value in body.items():
                        if key not in w.config:
                            raise bad_request("unknown config %s" % key)
                        w.config[key] = value
                return self.send(200, w.config)
            if what == "faults":
                if m == "PUT":
                    try:
                        w.faults = Faults(body)
                    except ValueError as exc:
                        raise bad_request(str(exc))
                elif m == "DELETE":
                    w.faults = Faults()
                return self.send(200, w.faults.table)
            if what == "expire_tokens" and m == "POST":
                w.tokens.clear()
                return self.send(200, {"ok": True})
            if what == "vanish" and m == "POST":
                w.drop_object(body["bucket"], body["name"])
                return self.send(200, {"ok": True})
            if what == "service_accounts" and m == "POST":
                return self.send(200, self.add_account(body))
            if what == "seed" and m == "POST":
                try:
                    w.seed(body, self.base())
                except (KeyError, ValueError, OSError) as exc:
                    raise bad_request("seed: %r" % exc)
                return self.send(200, self.state_json())
        raise google_error(404, "no control %s %s" % (m, what))

    def add_account(self, body):
        if "key_file" in body:
            with open(body["key_file"]) as f:
                key = json.load(f)
            pem = key["private_key"]
            body = {"client_email": key["client_email"],
                    "private_key_id": key["private_key_id"],
                    "token_uri": key.get("token_uri"), "public_key_pem": pem}
        n, e = rsa_public_numbers(body["public_key_pem"])
        self.world.accounts[body["client_email"]] = {
            "kid": body["private_key_id"], "n": n, "e": e,
            "token_uri": body.get("token_uri")}
        return {"client_email": body["client_email"], "bits": n.bit_length()}

    def state_json(self):
        w, pub = self.world, self.public
        return {
            "project": w.project, "zones": w.zones,
            "instances": {"%s/%s" % k: pub(r) for k, r in
                          w.instances.items()},
            "disks": {"%s/%s" % k: dict(pub(r), raw=r["_raw"],
                                        raw_size=r["_raw_size"])
                      for k, r in w.disks.items()},
            "images": {n: pub(r) for n, r in w.images.items()},
            "operations": {n: dict(o["res"]) for n, o in
                           w.operations.items()},
            "builds": {i: dict(b["res"], _error=b["error"], _log=b["log"],
                               _dest=b["dest"])
                       for i, b in w.builds.items()},
            "objects": {b: {n: dict(self.object_json(o), path=o["_file"])
                            for n, o in objs.items()}
                        for b, objs in w.buckets.items()},
            "tokens": sum(1 for t in w.tokens.values()
                          if t["expires"] > time.time()),
            "accounts": sorted(w.accounts),
        }


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address, world, verbose=False):
        super().__init__(address, Handler)
        self.world = world
        self.verbose = verbose


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--state-dir", required=True,
                    help="folder for disks, objects and build work")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--project", default="cloudfs-test")
    ap.add_argument("--token-path", default="/token")
    ap.add_argument("--compute-prefix", default="/compute/v1")
    ap.add_argument("--cloudbuild-prefix", default="/cloudbuild/v1")
    ap.add_argument("--storage-prefix", default="/storage/v1")
    ap.add_argument("--token-lifetime", type=int, default=3600)
    ap.add_argument("--operation-seconds", type=float, default=0.5)
    ap.add_argument("--build-seconds", type=float, default=1.0)
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()

    server = Server((args.bind, args.port), World(args), args.verbose)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("PORT %d" % server.server_address[1], flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
