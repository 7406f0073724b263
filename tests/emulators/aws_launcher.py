#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""AWS emulator for cloudfs tests: moto 5.2.1 (EC2, S3, EBS direct APIs)
in-process, plus what moto lacks.

Run it with the python3 that has moto (the pyenv one first on PATH, not
/usr/bin/python3):

    python3 tests/emulators/aws_launcher.py [--seed seed.json] \
        [--state state.json] [--strict N] [--snapshot-seconds 1.5] \
        [--export-seconds 3] [--block-size 524288] [--faults JSON]

It binds 127.0.0.1 on free ports and prints, flushed, once it is ready:

    CONTROL <port>      the control endpoint (also reachable on PORT)
    PORT <port>         moto: EC2, S3 and EBS all at http://127.0.0.1:PORT

PORT is printed last: read lines until it appears. It serves until SIGTERM
or SIGINT. Use any region; moto routes by the SigV4 credential scope.
`--selftest` starts everything, checks it with boto3 and qemu-img, exits.

What it adds to moto
--------------------
* EC2 CreateSnapshot of a volume gives an EBS-direct snapshot with the same
  id, holding the blocks of the volume's source snapshot (a seeded volume,
  or a volume restored from a snapshot); a blank volume gives an empty one.
  DescribeSnapshots says State "pending" with a rising Progress ("40%") for
  --snapshot-seconds, then "completed". The EBS data is readable at once.
* EBS: BlockSize is --block-size (default 524288, as real AWS; moto says
  512). Block indexes count in that size. ListSnapshotBlocks returns
  integer BlockIndex, sorted, paged with maxResults/pageToken (NextToken)
  and startingBlockIndex, plus ExpiryTime. GetSnapshotBlock checks the
  blockToken when one is given. Unknown snapshots answer 404
  ResourceNotFoundException, unknown blocks/tokens 400 ValidationException,
  as JSON with x-amzn-ErrorType (moto answers 500 HTML).
* EC2 CreateInstanceExportTask / DescribeExportTasks / CancelExportTask and
  ExportImage / DescribeExportImageTasks. After --export-seconds (progress
  rises meanwhile) the disk is put in the S3 bucket named in the call, at
  S3Prefix + task id + "." + format: "vmdk" (qemu-img streamOptimized), "vhd"
  (qemu-img vpc, dynamic) or "raw". States: active -> completed, or
  cancelling -> cancelled. The bucket must exist. The disk is the instance's
  root volume (root device name, else the first device) at its full size;
  an image exports the volume its first snapshot was taken from.
* Seeding (--seed FILE):
      {"instances": [{"name": "web01", "instance_type": "t3.micro",
                      "volumes": [{"device": "/dev/xvda", "size_gib": 1,
                                   "raw": "/path/disk.raw"}]}],
       "buckets": ["exports"]}
  (a bare list of instances is accepted too). For each volume an EBS-direct
  snapshot is written from the raw file, only its non-zero blocks (so
  holes stay holes); size_gib defaults to the raw size rounded up to GiB.
  Then RunInstances with BlockDeviceMappings whose SnapshotId is that
  snapshot, tag Name=<name>, and CreateImage of the instance (for
  ExportImage). --state FILE gets:
      {"endpoint": "http://127.0.0.1:PORT", "region": "us-east-1",
       "block_size": 524288, "buckets": [...],
       "instances": [{"name": "web01", "instance_id": "i-...",
                      "image_id": "ami-...", "volumes": [{"device":
                      "/dev/xvda", "volume_id": "vol-...", "snapshot_id":
                      "snap-...", "size_gib": 1, "raw": "...",
                      "raw_size": 67108864, "blocks": 17}]}]}
  Seeding runs in us-east-1 (--region) under account 123456789012.
* Counting and faults. Every request is counted by action name
  (DescribeInstances, CreateSnapshot, GetSnapshotBlock, ListSnapshotBlocks,
  GetObject, ...). Control endpoints, on CONTROL and under /_launcher/ on
  PORT:
      GET  /_launcher/stats        {"calls": {action: n}, "faults_injected":
                                    {action: n}, "uptime": seconds}
      POST /_launcher/stats/reset
      GET  /_launcher/faults       current fault table
      PUT  /_launcher/faults       replace it; DELETE clears it. A table is
          {"GetSnapshotBlock": {"every": 3, "status": 429, "code":
           "ThrottlingException", "limit": 10, "stall": 0}}
          every Nth call of the action (counted from when the table was
          set) answers "status" (429, 503 or 500; default code per status:
          ThrottlingException, ServiceUnavailable / SlowDown /
          RequestLimitExceeded, InternalError), at most "limit" times; or,
          with "stall": S, answers normally after S seconds (the request
          is checked when it arrives); or, with "body": B, answers B (JSON,
          or a string as it is) with "status" (default 200), for hostile
          answers. EBS
          gets JSON with x-amzn-ErrorType, EC2 a Query XML error, S3 an XML
          error.
      GET  /_launcher/state        the seed state
      PUT  /_launcher/config       {"snapshot_seconds": x, "export_seconds": y,
                                    "block_token_seconds": t,
                                    "creds_seconds": c,
                                    "container_token": "...",
                                    "sso_token": "..."}
* Expiring credentials. Requests signed with an access key id that has an
  expiry (below) and are past it are refused as real AWS does: EC2 400
  RequestExpired, S3 400 ExpiredToken, EBS 403 ExpiredTokenException
  (counted in faults_injected as "ExpiredToken").
      PUT  /_launcher/expiring_keys   {key id: epoch seconds} (merged in)
  Keys from STS AssumeRole (moto's) expire after their DurationSeconds.
  The control port also serves credentials that expire after
  creds_seconds (default 3600), each call a new key (counted as
  "ContainerCredentials" and "InstanceProfile"):
      GET  /creds                  container credentials (ECS shape); with
                                   container_token set, the Authorization
                                   header must equal it (else 401)
      PUT  /latest/api/token       IMDSv2 session token (needs the header
                                   X-aws-ec2-metadata-token-ttl-seconds)
      GET  /latest/meta-data/iam/security-credentials/[cloudfs-role]
                                   (needs X-aws-ec2-metadata-token)
      GET  /federation/credentials  the SSO portal's GetRoleCredentials
                                   (x-amz-sso_bearer_token must equal
                                   sso_token; counted "GetRoleCredentials")
  so AWS_CONTAINER_CREDENTIALS_FULL_URI=http://127.0.0.1:CONTROL/creds
  or AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:CONTROL.
* Block tokens expire after block_token_seconds (default 7 days, as real
  EBS): ListSnapshotBlocks gives that ExpiryTime and tokens that say it;
  GetSnapshotBlock with an expired one answers 400 ValidationException,
  Reason INVALID_BLOCK_TOKEN (counted as "ExpiredBlockToken").
  --faults JSON (or env CFS_AWS_FAULTS) sets the initial table.
* A link's delay and EBS's request limit: --delay S (or "delay" in
  /_launcher/config) holds every GetSnapshotBlock and GetObject answer S
  seconds (a real region's first-byte time); --block-rate N (or
  "block_rate") answers 429 ThrottlingException to a GetSnapshotBlock
  beyond N in the last second for its snapshot, as EBS does at 1,000
  (counted in faults_injected as "Throttled"); "list_rate" N does the
  same to ListSnapshotBlocks beyond N a second for the account, as EBS
  does at 50 (counted as "ThrottledList").
* --strict N: signatures are checked after the first N requests (moto's
  INITIAL_NO_AUTH_ACTION_COUNT; seeding does not count). Use the first
  calls to create an IAM user and access key (iam CreateUser,
  CreateAccessKey, and a policy). Checking works for EC2 and S3; moto
  wrongly rejects valid EBS direct requests in strict mode, so test EBS
  without it.

Limits: moto keeps everything in memory (keep disks at 64 MiB of data or
less); moto closes every connection (no keep-alive); EBS data of a snapshot
is readable while EC2 still says "pending"; checksums sent with
PutSnapshotBlock are not validated; exports are of one disk.
"""

import argparse
import base64
import collections
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from urllib.parse import parse_qs, urlparse

from moto.core.responses import ActionResult, EmptyResult
from moto.ebs.models import Block, EBSBackend, EBSSnapshot, ebs_backends
from moto.ebs.responses import EBSResponse
from moto.ec2.exceptions import EC2ClientError
from moto.ec2.models import ec2_backends
from moto.ec2.models.amis import AmiBackend
from moto.ec2.models.elastic_block_store import EBSBackend as EC2EBSMixin
from moto.ec2.models.elastic_block_store import Snapshot
from moto.ec2.responses import EC2Response
from moto.moto_api._internal import mock_random
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import (DomainDispatcherApplication,
                                           create_backend_app)
from moto.s3.models import s3_backends
from werkzeug.serving import make_server

ACCOUNT = "123456789012"
QEMU_IMG = "/usr/bin/qemu-img"
CFG = {"snapshot_seconds": 1.5, "export_seconds": 3.0,
       "block_size": 524288, "region": "us-east-1",
       "block_token_seconds": 7 * 86400, "creds_seconds": 3600,
       "container_token": None, "delay": 0.0, "block_rate": 0,
       "list_rate": 0}
BLOCK_TIMES = {}               # snapshot id -> deque of call times; LOCK
EXPIRING = {}                  # access key id -> epoch; protected by LOCK
IMDS_TOKENS = set()            # protected by LOCK
STATE = {}
LOCAL = threading.local()      # .in_start_snapshot
QUIET = [False]                # while seeding: snapshots complete at once
LOCK = threading.Lock()        # protects CALLS, INJECTED, FAULTS, FAULT_SEEN
CALLS, INJECTED, FAULTS, FAULT_SEEN = {}, {}, {}, {}
STARTED = time.time()


# ---- EBS-direct data behind EC2 snapshots ---------------------------------

def make_block(data):
    digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
    return Block(data, digest, "SHA256", str(len(data)))


def volume_source(ec2b, volume):
    """The EBS-direct snapshot a volume's bytes come from, or None."""
    sid = getattr(volume, "snapshot_id", None)
    if not sid:
        return None
    return ebs_backends[ec2b.account_id][ec2b.region_name].snapshots.get(sid)


_orig_create_snapshot = EC2EBSMixin.create_snapshot


def create_snapshot(self, volume_id, description, owner_id=None,
                    from_ami=None):
    snap = _orig_create_snapshot(self, volume_id, description,
                                 owner_id=owner_id, from_ami=from_ami)
    if getattr(LOCAL, "in_start_snapshot", False):
        return snap            # EBS StartSnapshot makes its own
    src = volume_source(self, snap.volume)
    es = EBSSnapshot(self.account_id, snap)
    es.status = "completed"
    if src is not None:
        es.blocks = {k: make_block(b.block_data) for k, b in src.blocks.items()}
    ebs_backends[self.account_id][self.region_name].snapshots[snap.id] = es
    if not QUIET[0] and CFG["snapshot_seconds"] > 0:
        snap._cfs_start = time.time()
        snap._cfs_ready = snap._cfs_start + CFG["snapshot_seconds"]
    return snap


EC2EBSMixin.create_snapshot = create_snapshot

_orig_start_snapshot = EBSBackend.start_snapshot


def start_snapshot(self, *args, **kwargs):
    LOCAL.in_start_snapshot = True
    try:
        return _orig_start_snapshot(self, *args, **kwargs)
    finally:
        LOCAL.in_start_snapshot = False


EBSBackend.start_snapshot = start_snapshot

_orig_ebs_snapshot_init = EBSSnapshot.__init__


def ebs_snapshot_init(self, *args, **kwargs):
    _orig_ebs_snapshot_init(self, *args, **kwargs)
    self.block_size = CFG["block_size"]


EBSSnapshot.__init__ = ebs_snapshot_init


def _snap_status(self):
    ready = self.__dict__.get("_cfs_ready")
    if ready and time.time() < ready:
        return "pending"
    return self.__dict__.get("_cfs_status", "completed")


def _snap_set_status(self, value):
    self.__dict__["_cfs_status"] = value


def _snap_progress(self):
    ready = self.__dict__.get("_cfs_ready")
    if not ready or time.time() >= ready:
        return "100%"
    start = self.__dict__["_cfs_start"]
    return "%d%%" % int(99 * (time.time() - start) / (ready - start))


Snapshot.status = property(_snap_status, _snap_set_status)
Snapshot.progress = property(_snap_progress)


_orig_create_image = AmiBackend.create_image


def create_image(self, instance_id, name=None, description=None,
                 tag_specifications=None):
    """moto snapshots a blank 15 GiB volume for a new AMI: give that
    snapshot the instance's root volume data and size instead. Tags for
    the snapshot (which moto refuses) go on it too."""
    specs = tag_specifications or []
    snap_tags = [t for sp in specs if sp.get("ResourceType") == "snapshot"
                 for t in sp.get("Tags", [])]
    specs = [sp for sp in specs if sp.get("ResourceType") != "snapshot"]
    ami = _orig_create_image(self, instance_id, name, description,
                             tag_specifications=specs)
    for t in snap_tags:
        ami.ebs_snapshot.add_tag(t["Key"], t["Value"])
    root = instance_root_volume(self, self.get_instance(instance_id))
    es = ebs_backends[self.account_id][self.region_name].snapshots.get(
        ami.ebs_snapshot.id)
    src = volume_source(self, root)
    if es is not None:
        es.volume_size = root.size
        es.blocks = {k: make_block(b.block_data)
                     for k, b in (src.blocks.items() if src else [])}
    return ami


AmiBackend.create_image = create_image


# ---- EBS responses closer to real AWS --------------------------------------

def ebs_error(status, code, message, reason=None):
    body = {"Message": message}
    if reason:
        body["Reason"] = reason
    # moto takes the status from the "status" header, not the tuple
    return status, {"status": status, "x-amzn-ErrorType": code,
                    "Content-Type": "application/json"}, json.dumps(body)


def list_snapshot_blocks(self):
    sid = self.path.split("?")[0].split("/")[-2]
    snap = self.ebs_backend.snapshots.get(sid)
    if snap is None:
        return ebs_error(404, "ResourceNotFoundException",
                         f"The snapshot '{sid}' does not exist.",
                         "SNAPSHOT_NOT_FOUND")
    q = parse_qs(urlparse(self.uri).query)
    try:
        start = int(q.get("startingBlockIndex", ["0"])[0])
        start = max(start, int(q.get("pageToken", ["0"])[0] or 0))
        limit = min(max(int(q.get("maxResults", ["10000"])[0]), 100), 10000)
    except ValueError:
        return ebs_error(400, "ValidationException", "bad parameter",
                         "INVALID_PAGE_TOKEN")
    idxs = sorted(int(k) for k in snap.blocks if int(k) >= start)
    page, rest = idxs[:limit], idxs[limit:]
    expiry = time.time() + CFG["block_token_seconds"]
    out = {"Blocks": [{"BlockIndex": i,
                       "BlockToken": block_token(snap.blocks[str(i)],
                                                 expiry)}
                      for i in page],
           "ExpiryTime": expiry,
           "VolumeSize": snap.volume_size, "BlockSize": snap.block_size}
    if rest:
        out["NextToken"] = str(rest[0])
    return 200, {"Content-Type": "application/json"}, json.dumps(out)


def block_token(block, expiry):
    """A token that says when it expires: base64 of "token|expiry"."""
    return base64.b64encode(
        f"{block.block_token}|{expiry:.3f}".encode()).decode()


def token_parts(token):
    """(moto's token, expiry) of one of ours; (token, None) otherwise."""
    try:
        orig, _, exp = base64.b64decode(token, validate=True).decode() \
            .partition("|")
        return orig, float(exp)
    except Exception:
        return token, None


def get_snapshot_block(self):
    parts = self.path.split("?")[0].split("/")
    sid, idx = parts[-3], parts[-1]
    snap = self.ebs_backend.snapshots.get(sid)
    if snap is None:
        return ebs_error(404, "ResourceNotFoundException",
                         f"The snapshot '{sid}' does not exist.",
                         "SNAPSHOT_NOT_FOUND")
    block = snap.blocks.get(idx)
    token = parse_qs(urlparse(self.uri).query).get("blockToken", [None])[0]
    expiry = None
    if token:
        token, expiry = token_parts(token)
    if block is not None and expiry is not None and expiry < time.time():
        with LOCK:
            INJECTED["ExpiredBlockToken"] = \
                INJECTED.get("ExpiredBlockToken", 0) + 1
        return ebs_error(400, "ValidationException",
                         "The block token has expired.",
                         "INVALID_BLOCK_TOKEN")
    if block is None or (token and token != block.block_token):
        return ebs_error(400, "ValidationException",
                         f"Block {idx} of {sid}: no such block or token",
                         "INVALID_BLOCK_TOKEN" if block else "INVALID_BLOCK")
    headers = {"x-amz-Checksum": block.checksum,
               "x-amz-Checksum-Algorithm": block.checksum_algorithm,
               "x-amz-Data-Length": block.data_length,
               "Content-Type": "application/octet-stream"}
    return 200, headers, block.block_data


EBSResponse.list_snapshot_blocks = list_snapshot_blocks
EBSResponse.get_snapshot_block = get_snapshot_block


# ---- export tasks ------------------------------------------------------------

EXPORTS = {}        # task id -> dict; protected by LOCK
FORMATS = {"vmdk": ("vmdk", ["-O", "vmdk", "-o", "subformat=streamOptimized"]),
           "vhd": ("vhd", ["-O", "vpc", "-o", "subformat=dynamic"]),
           "raw": ("raw", ["-O", "raw"])}


def disk_to_file(src, size_gib, path):
    """Write an EBS-direct snapshot's blocks (src may be None: a blank
    disk) to a sparse raw file of size_gib GiB."""
    with open(path, "wb") as f:
        f.truncate(size_gib << 30)
        if src is None:
            return
        for k, b in src.blocks.items():
            f.seek(int(k) * src.block_size)
            f.write(b.block_data)


def instance_root_volume(ec2b, instance):
    bdm = instance.block_device_mapping
    if not bdm:
        raise EC2ClientError("InvalidInstanceID.NotFound",
                             "instance has no volume")
    dev = instance.root_device_name if instance.root_device_name in bdm \
        else sorted(bdm)[0]
    return ec2b.get_volume(bdm[dev].volume_id)


def run_export(task_id, ec2b, src, size_gib, fmt, bucket, key):
    task = EXPORTS[task_id]
    tmp = tempfile.mkdtemp(prefix="cfs-export-")
    try:
        raw = os.path.join(tmp, "disk.raw")
        disk_to_file(src, size_gib, raw)
        out = raw
        if fmt != "raw":
            out = os.path.join(tmp, "disk." + fmt)
            subprocess.run([QEMU_IMG, "convert", "-q", "-f", "raw"] +
                           FORMATS[fmt][1] + [raw, out], check=True)
        total = max(CFG["export_seconds"], 0.0)
        t0 = time.time()
        while time.time() - t0 < total:
            if task["cancel"]:
                break
            task["progress"] = int(100 * (time.time() - t0) / total)
            time.sleep(min(0.2, total))
        with LOCK:
            if task["cancel"]:
                task["state"] = "cancelled"
                return
        with open(out, "rb") as f:
            data = f.read()
        s3_backends[ec2b.account_id]["aws"].put_object(bucket, key, data)
        task["progress"], task["state"] = 100, "completed"
        task["message"] = ""
    except Exception as e:   # the task fails, the server lives on
        task["state"], task["message"] = "failed", f"export failed: {e}"
        traceback.print_exc(file=sys.stderr)
    finally:
        subprocess.run(["rm", "-rf", tmp])


def start_export(ec2b, kind, src, size_gib, fmt, bucket, prefix, extra):
    fmt = (fmt or "vmdk").lower()
    if fmt not in FORMATS:
        raise EC2ClientError("InvalidParameterValue",
                             f"DiskImageFormat {fmt} is not supported")
    try:
        s3_backends[ec2b.account_id]["aws"].get_bucket(bucket)
    except Exception:
        raise EC2ClientError("InvalidParameter",
                             f"S3 bucket {bucket} does not exist")
    tid = ("export-i-" if kind == "instance" else "export-ami-") + \
        mock_random.get_random_hex(17)
    key = (prefix or "") + tid + "." + FORMATS[fmt][0]
    task = dict(extra, id=tid, kind=kind, format=fmt, bucket=bucket,
                prefix=prefix or "", key=key, state="active", progress=0,
                message="", cancel=False)
    with LOCK:
        EXPORTS[tid] = task
    threading.Thread(target=run_export, daemon=True,
                     args=(tid, ec2b, src, size_gib, fmt, bucket, key)).start()
    return task


def instance_task_json(t):
    return {"ExportTaskId": t["id"], "Description": t.get("description", ""),
            "State": t["state"] if t["state"] != "failed" else "cancelled",
            "StatusMessage": t["message"] or
            ("" if t["state"] == "completed" else f"{t['progress']}%"),
            "InstanceExportDetails": {"InstanceId": t["instance_id"],
                                      "TargetEnvironment": t["target"]},
            "ExportToS3Task": {"DiskImageFormat": t["format"],
                               "ContainerFormat": t.get("container"),
                               "S3Bucket": t["bucket"], "S3Key": t["key"]}}


def image_task_json(t):
    state = {"cancelled": "deleted", "cancelling": "deleting",
             "failed": "deleted"}.get(t["state"], t["state"])
    out = {"ExportImageTaskId": t["id"], "Description": t.get("description", ""),
           "ImageId": t["image_id"], "Status": state,
           "StatusMessage": t["message"] or
           ("" if state == "completed" else "converting"),
           "S3ExportLocation": {"S3Bucket": t["bucket"], "S3Prefix": t["prefix"]}}
    if state == "active":
        out["Progress"] = str(t["progress"])
    return out


def _task(tid, kind):
    with LOCK:
        t = EXPORTS.get(tid)
    if not t or t["kind"] != kind:
        raise EC2ClientError("InvalidExportTaskID.NotFound",
                             f"The export task ID '{tid}' does not exist")
    return t


def create_instance_export_task(self):
    iid = self._get_param("InstanceId")
    s3 = self._get_param("ExportToS3Task") or {}
    ec2b = self.ec2_backend
    volume = instance_root_volume(ec2b, ec2b.get_instance(iid))
    t = start_export(ec2b, "instance", volume_source(ec2b, volume),
                     volume.size, s3.get("DiskImageFormat"),
                     s3.get("S3Bucket"), s3.get("S3Prefix"),
                     {"instance_id": iid,
                      "target": self._get_param("TargetEnvironment") or "vmware",
                      "container": s3.get("ContainerFormat"),
                      "description": self._get_param("Description") or ""})
    return ActionResult({"ExportTask": instance_task_json(t)})


def describe_export_tasks(self):
    ids = self._get_param("ExportTaskIds") or []
    tasks = [_task(i, "instance") for i in ids] if ids else \
        [t for t in list(EXPORTS.values()) if t["kind"] == "instance"]
    return ActionResult({"ExportTasks": [instance_task_json(t) for t in tasks]})


def cancel_export_task(self):
    tid = self._get_param("ExportTaskId")
    t = _task(tid, "image" if tid.startswith("export-ami-") else "instance")
    with LOCK:
        if t["state"] == "active":
            t["cancel"], t["state"] = True, "cancelling"
    return EmptyResult()


def export_image(self):
    ec2b = self.ec2_backend
    image_id = self._get_param("ImageId")
    ami = ec2b.describe_images(ami_ids=[image_id])[0]
    snap = getattr(ami, "ebs_snapshot", None)
    src = snap and ebs_backends[ec2b.account_id][ec2b.region_name] \
        .snapshots.get(snap.id)
    if src is None:
        raise EC2ClientError("InvalidParameter", f"{image_id} has no disk")
    loc = self._get_param("S3ExportLocation") or {}
    t = start_export(ec2b, "image", src, src.volume_size,
                     self._get_param("DiskImageFormat"),
                     loc.get("S3Bucket"), loc.get("S3Prefix"),
                     {"image_id": image_id,
                      "description": self._get_param("Description") or ""})
    j = image_task_json(t)
    j["DiskImageFormat"] = t["format"].upper()
    j["RoleName"] = self._get_param("RoleName") or "vmimport"
    return ActionResult(j)


def describe_export_image_tasks(self):
    ids = self._get_param("ExportImageTaskIds") or []
    tasks = [_task(i, "image") for i in ids] if ids else \
        [t for t in list(EXPORTS.values()) if t["kind"] == "image"]
    return ActionResult({"ExportImageTasks":
                         [image_task_json(t) for t in tasks]})


for _f in (create_instance_export_task, describe_export_tasks,
           cancel_export_task, export_image, describe_export_image_tasks):
    setattr(EC2Response, _f.__name__, _f)


# ---- counting, faults and control endpoints -----------------------------------

CRED_RE = re.compile(r"Credential=[^/]+/\d{8}/[^/]+/([^/]+)/aws4_request")
EBS_ROUTES = [
    ("POST", re.compile(r"^/snapshots/?$"), "StartSnapshot"),
    ("POST", re.compile(r"^/snapshots/completion/[^/]+$"), "CompleteSnapshot"),
    ("PUT", re.compile(r"^/snapshots/[^/]+/blocks/[^/]+$"), "PutSnapshotBlock"),
    ("GET", re.compile(r"^/snapshots/[^/]+/blocks/[^/]+$"), "GetSnapshotBlock"),
    ("GET", re.compile(r"^/snapshots/[^/]+/blocks/?$"), "ListSnapshotBlocks"),
    ("GET", re.compile(r"^/snapshots/[^/]+/changedblocks/?$"),
     "ListChangedBlocks"),
]
DEFAULT_CODES = {
    "ebs": {429: "ThrottlingException", 503: "ServiceUnavailableException",
            500: "InternalServerException"},
    "ec2": {429: "RequestLimitExceeded", 503: "RequestLimitExceeded",
            500: "InternalError"},
    "s3": {429: "SlowDown", 503: "SlowDown", 500: "InternalError"},
}


def classify(environ):
    """(service, action) of a request; may read and replace a form body."""
    path = environ.get("PATH_INFO", "") or "/"
    method = environ.get("REQUEST_METHOD", "GET")
    m = CRED_RE.search(environ.get("HTTP_AUTHORIZATION", ""))
    service = m.group(1) if m else None
    if service == "ebs" or (service is None and path.startswith("/snapshots")):
        for meth, rx, name in EBS_ROUTES:
            if meth == method and rx.match(path):
                return "ebs", name
        return "ebs", method + " " + path
    query = parse_qs(environ.get("QUERY_STRING", ""))
    action = query.get("Action", [None])[0]
    ctype = environ.get("CONTENT_TYPE", "")
    if not action and method == "POST" and "form-urlencoded" in ctype:
        n = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(n) if n else b""
        environ["wsgi.input"] = BytesIO(body)
        action = parse_qs(body.decode("latin-1")).get("Action", [None])[0]
    if action:
        return service or "ec2", action
    parts = path.strip("/").split("/", 1)
    if not parts[0]:
        return "s3", "ListBuckets"
    if len(parts) == 1 or not parts[1]:
        return "s3", {"GET": "ListObjects", "PUT": "CreateBucket",
                      "DELETE": "DeleteBucket", "HEAD": "HeadBucket"}.get(
                          method, method + "Bucket")
    if method == "PUT":
        return "s3", "UploadPart" if "partNumber" in query else "PutObject"
    if method == "POST":
        return "s3", ("CreateMultipartUpload" if "uploads" in query
                      else "CompleteMultipartUpload")
    return "s3", {"GET": "GetObject", "HEAD": "HeadObject",
                  "DELETE": "DeleteObject"}.get(method, method + "Object")


def fault_for(action):
    """The fault to inject for this call of action, or None. Counts it."""
    with LOCK:
        CALLS[action] = CALLS.get(action, 0) + 1
        f = FAULTS.get(action)
        if not f:
            return None
        seen = FAULT_SEEN[action] = FAULT_SEEN.get(action, 0) + 1
        if seen % max(int(f.get("every", 1)), 1):
            return None
        if f.get("limit") is not None and \
                INJECTED.get(action, 0) >= int(f["limit"]):
            return None
        INJECTED[action] = INJECTED.get(action, 0) + 1
        return dict(f)


def over_rate(key, limit, counter):
    """Whether a call is one too many in the last second for @key;
    counts it in faults_injected under @counter if so."""
    if not limit:
        return False
    now = time.monotonic()
    with LOCK:
        times = BLOCK_TIMES.setdefault(key, collections.deque())
        while times and times[0] <= now - 1.0:
            times.popleft()
        if len(times) >= limit:
            INJECTED[counter] = INJECTED.get(counter, 0) + 1
            return True
        times.append(now)
    return False


def over_block_rate(path):
    """Whether a GetSnapshotBlock is one too many in the last second for
    its snapshot (--block-rate); counts it as Throttled if so."""
    snap = path.split("/")[2] if path.count("/") >= 3 else ""
    return over_rate(snap, CFG["block_rate"], "Throttled")


def over_list_rate():
    """Whether a ListSnapshotBlocks is one too many in the last second
    for the account (list_rate; EBS allows 50); counts it as
    ThrottledList if so."""
    return over_rate(" list", CFG["list_rate"], "ThrottledList")


def fault_response(service, action, f):
    if "body" in f:  # a hostile or broken answer, as it is
        body = f["body"]
        if not isinstance(body, str):
            body = json.dumps(body)
        return int(f.get("status", 200)), \
            [("Content-Type", "application/json")], body.encode()
    status = int(f.get("status", 503))
    code = f.get("code") or DEFAULT_CODES.get(service, DEFAULT_CODES["s3"]).get(
        status, "InternalError")
    msg = f.get("message") or f"injected fault for {action}"
    rid = mock_random.get_random_hex(16)
    if service == "ebs":
        return status, [("Content-Type", "application/json"),
                        ("x-amzn-ErrorType", code),
                        ("x-amzn-RequestId", rid)], \
            json.dumps({"Message": msg}).encode()
    if service == "s3":
        body = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>"
                f"{code}</Code><Message>{msg}</Message><RequestId>{rid}"
                f"</RequestId></Error>")
    else:
        body = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response>"
                f"<Errors><Error><Code>{code}</Code><Message>{msg}</Message>"
                f"</Error></Errors><RequestID>{rid}</RequestID></Response>")
    return status, [("Content-Type", "application/xml")], body.encode()


# ---- expiring credentials ------------------------------------------------------

KEY_RE = re.compile(r"Credential=([^/,\s]+)/")
EXPIRED = {"ec2": (400, "RequestExpired", "Request has expired."),
           "s3": (400, "ExpiredToken", "The provided token has expired."),
           "ebs": (403, "ExpiredTokenException",
                   "The security token included in the request is expired")}


def expired_key(environ):
    """Whether the request is signed with a key past its expiry."""
    m = KEY_RE.search(environ.get("HTTP_AUTHORIZATION", ""))
    if not m:
        return False
    with LOCK:
        exp = EXPIRING.get(m.group(1))
        if exp is None or exp >= time.time():
            return False
        INJECTED["ExpiredToken"] = INJECTED.get("ExpiredToken", 0) + 1
    return True


def _sts_assume_role(orig):
    def assume_role(self, *args, **kwargs):
        role = orig(self, *args, **kwargs)
        with LOCK:
            EXPIRING[role.access_key_id] = role.expiration.replace(
                tzinfo=__import__("datetime").timezone.utc).timestamp()
        return role
    return assume_role


def _patch_sts():
    from moto.sts.models import STSBackend
    STSBackend.assume_role = _sts_assume_role(STSBackend.assume_role)


_patch_sts()


def new_temporary_creds(action):
    """Fresh credentials that expire after creds_seconds, recorded."""
    n = mock_random.get_random_hex(16).upper()
    key = "ASIACFS" + n[:13]
    exp = time.time() + CFG["creds_seconds"]
    with LOCK:
        EXPIRING[key] = exp
        CALLS[action] = CALLS.get(action, 0) + 1
    return {"AccessKeyId": key, "SecretAccessKey": "secret" + n,
            "Token": "token" + n, "Code": "Success",
            "Expiration": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                        time.gmtime(exp))}


def creds_endpoint(method, path, headers):
    """Container and instance-metadata credentials on the control port:
    (status, body bytes), or None for another path."""
    if path == "/creds" and method == "GET":
        want = CFG.get("container_token")
        if want and headers.get("Authorization") != want:
            return 401, b'{"message": "bad token"}'
        return 200, json.dumps(new_temporary_creds(
            "ContainerCredentials")).encode()
    if path == "/latest/api/token" and method == "PUT":
        if not headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
            return 400, b""
        tok = mock_random.get_random_hex(32)
        with LOCK:
            IMDS_TOKENS.add(tok)
        return 200, tok.encode()
    if path == "/federation/credentials" and method == "GET":
        if headers.get("x-amz-sso_bearer_token") != CFG.get("sso_token"):
            return 401, b'{"message": "Session token not found or invalid"}'
        c = new_temporary_creds("GetRoleCredentials")
        return 200, json.dumps({"roleCredentials": {
            "accessKeyId": c["AccessKeyId"],
            "secretAccessKey": c["SecretAccessKey"],
            "sessionToken": c["Token"],
            "expiration": int(EXPIRING[c["AccessKeyId"]] * 1000)}}).encode()
    prefix = "/latest/meta-data/iam/security-credentials/"
    if path.startswith(prefix) and method == "GET":
        with LOCK:
            ok = headers.get("X-aws-ec2-metadata-token") in IMDS_TOKENS
        if not ok:
            return 401, b""
        role = path[len(prefix):]
        if not role:
            return 200, b"cloudfs-role\n"
        if role != "cloudfs-role":
            return 404, b""
        return 200, json.dumps(new_temporary_creds(
            "InstanceProfile")).encode()
    return None


def control(method, path, body):
    """The /_launcher/ endpoints; returns (status, object)."""
    path = path.rstrip("/")
    data = json.loads(body) if body else {}
    with LOCK:
        if path == "/_launcher/stats" and method == "GET":
            return 200, {"calls": dict(CALLS),
                         "faults_injected": dict(INJECTED),
                         "uptime": round(time.time() - STARTED, 3)}
        if path == "/_launcher/stats/reset" and method == "POST":
            CALLS.clear()
            INJECTED.clear()
            return 200, {}
        if path == "/_launcher/faults":
            if method in ("PUT", "POST"):
                FAULTS.clear()
                FAULTS.update(data)
                FAULT_SEEN.clear()
            elif method == "DELETE":
                FAULTS.clear()
                FAULT_SEEN.clear()
            return 200, dict(FAULTS)
        if path == "/_launcher/state":
            return 200, STATE
        if path == "/_launcher/expiring_keys":
            if method in ("PUT", "POST"):
                EXPIRING.update({k: float(v) for k, v in data.items()})
            return 200, dict(EXPIRING)
        if path == "/_launcher/config":
            if method in ("PUT", "POST"):
                CFG.update({k: float(v) for k, v in data.items()
                            if k in ("snapshot_seconds", "export_seconds",
                                     "block_token_seconds",
                                     "creds_seconds", "delay")})
                for k in ("block_rate", "list_rate"):
                    if k in data:
                        CFG[k] = int(data[k])
                for k in ("container_token", "sso_token"):
                    if k in data:
                        CFG[k] = data[k]
            return 200, dict(CFG)
    return 404, {"error": f"no such endpoint {method} {path}"}


class Middleware:
    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_launcher/"):
            n = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(n) if n else b""
            status, obj = control(environ["REQUEST_METHOD"], path, body)
            out = json.dumps(obj).encode()
            start_response(f"{status} X", [("Content-Type", "application/json"),
                                           ("Content-Length", str(len(out)))])
            return [out]
        if path.startswith("/moto-api"):
            return self.app(environ, start_response)
        service, action = classify(environ)
        if expired_key(environ):
            with LOCK:
                CALLS[action] = CALLS.get(action, 0) + 1
            status, code, msg = EXPIRED.get(service, EXPIRED["s3"])
            status, headers, out = fault_response(
                service, action, {"status": status, "code": code,
                                  "message": msg})
            headers.append(("Content-Length", str(len(out))))
            start_response(f"{status} Expired", headers)
            return [out]
        f = fault_for(action)
        if not f and ((action == "GetSnapshotBlock" and
                       over_block_rate(path)) or
                      (action == "ListSnapshotBlocks" and over_list_rate())):
            f = {"status": 429, "code": "ThrottlingException",
                 "message": "Rate exceeded"}
        if not f and CFG["delay"] and action in ("GetSnapshotBlock",
                                                 "GetObject"):
            time.sleep(CFG["delay"])
        if f and f.get("stall"):
            # A slow answer, not a slow arrival: what the request carries
            # (signature, block token) is checked when it comes in.
            out = self.app(environ, start_response)
            time.sleep(float(f["stall"]))
            return out
        if f:
            status, headers, out = fault_response(service, action, f)
            headers.append(("Content-Length", str(len(out))))
            start_response(f"{status} Injected", headers)
            return [out]
        return self.app(environ, start_response)


class ControlHandler(BaseHTTPRequestHandler):
    def _any(self):
        n = int(self.headers.get("Content-Length") or 0)
        got = creds_endpoint(self.command, self.path.split("?")[0],
                             self.headers)
        if got is not None:
            if n:
                self.rfile.read(n)
            self.send_response(got[0])
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(got[1])))
            self.end_headers()
            self.wfile.write(got[1])
            return
        status, obj = control(self.command, self.path.split("?")[0],
                              self.rfile.read(n) if n else b"")
        out = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_PUT = do_POST = do_DELETE = _any

    def log_message(self, *args):
        pass


class LauncherServer(ThreadedMotoServer):
    def _server_entry(self):
        app = Middleware(DomainDispatcherApplication(create_backend_app))
        self._server = make_server(self._ip_address, self._port, app, True)
        self._server_ready_event.set()
        self._server.serve_forever()


# ---- seeding -------------------------------------------------------------------------

def boto_session(region):
    import boto3
    return boto3.session.Session(aws_access_key_id="testing",
                                 aws_secret_access_key="testing",
                                 region_name=region)


def seed_snapshot(region, raw, size_gib, label):
    """An EBS-direct snapshot holding raw's non-zero blocks."""
    bs = CFG["block_size"]
    ebsb = ebs_backends[ACCOUNT][region]
    es = ebsb.start_snapshot(volume_size=size_gib,
                             tags=[{"Key": "Name", "Value": label}],
                             description=f"cloudfs seed {label}")
    zero = bytes(bs)
    with open(raw, "rb") as f:
        idx = 0
        while True:
            chunk = f.read(bs)
            if not chunk:
                break
            if len(chunk) < bs:
                chunk += zero[len(chunk):]
            if chunk != zero:
                es.blocks[str(idx)] = make_block(chunk)
            idx += 1
    ebsb.complete_snapshot(es.snapshot_id)
    return es


def seed(spec, endpoint, region):
    if isinstance(spec, list):
        spec = {"instances": spec}
    sess = boto_session(region)
    ec2 = sess.client("ec2", endpoint_url=endpoint)
    s3 = sess.client("s3", endpoint_url=endpoint)
    for b in spec.get("buckets", []):
        s3.create_bucket(Bucket=b)
    ec2b = ec2_backends[ACCOUNT][region]
    state = {"endpoint": endpoint, "region": region,
             "block_size": CFG["block_size"],
             "buckets": list(spec.get("buckets", [])), "instances": []}
    for inst in spec.get("instances", []):
        name = inst["name"]
        vols, mappings = [], []
        for v in inst["volumes"]:
            raw_size = os.path.getsize(v["raw"])
            size_gib = int(v.get("size_gib") or max(1, -(-raw_size // (1 << 30))))
            if raw_size > size_gib << 30:
                raise SystemExit(f"{v['raw']} is larger than {size_gib} GiB")
            es = seed_snapshot(region, v["raw"], size_gib,
                               f"{name} {v['device']}")
            mappings.append({"DeviceName": v["device"],
                             "Ebs": {"SnapshotId": es.snapshot_id,
                                     "VolumeSize": size_gib,
                                     "DeleteOnTermination": True}})
            vols.append({"device": v["device"], "snapshot_id": es.snapshot_id,
                         "size_gib": size_gib, "raw": v["raw"],
                         "raw_size": raw_size, "blocks": len(es.blocks)})
        root = inst["volumes"][0]["device"]
        amis = sorted(ec2b.amis.values(),
                      key=lambda a: (a.root_device_name != root, a.id))
        r = ec2.run_instances(
            ImageId=amis[0].id, MinCount=1, MaxCount=1,
            InstanceType=inst.get("instance_type", "t3.micro"),
            BlockDeviceMappings=mappings,
            TagSpecifications=[{"ResourceType": "instance",
                                "Tags": [{"Key": "Name", "Value": name}]}])
        desc = r["Instances"][0]
        by_dev = {m["DeviceName"]: m["Ebs"]["VolumeId"]
                  for m in desc.get("BlockDeviceMappings", [])}
        for v in vols:
            v["volume_id"] = by_dev.get(v["device"])
        image = ec2.create_image(InstanceId=desc["InstanceId"],
                                 Name=f"{name}-image")["ImageId"]
        state["instances"].append({"name": name,
                                   "instance_id": desc["InstanceId"],
                                   "image_id": image, "volumes": vols})
    return state


# ---- self-test ---------------------------------------------------------------------

def selftest(endpoint, control_port, region):
    import urllib.request
    from botocore.config import Config
    bs = CFG["block_size"]
    tmp = tempfile.mkdtemp(prefix="cfs-aws-selftest-")
    raw = os.path.join(tmp, "disk.raw")
    with open(raw, "wb") as f:          # 64 MiB: data, holes, a tail
        f.truncate(64 << 20)
        f.write(os.urandom(3 << 20))
        f.seek(10 << 20)
        f.write(b"cloudfs" * 1000)
        f.seek((64 << 20) - 4096)
        f.write(os.urandom(4096))
    QUIET[0] = True
    st = seed({"instances": [{"name": "selftest01", "volumes": [
        {"device": "/dev/xvda", "size_gib": 1, "raw": raw}]}],
        "buckets": ["cfs-selftest"]}, endpoint, region)
    QUIET[0] = False
    inst = st["instances"][0]
    vol = inst["volumes"][0]
    sess = boto_session(region)
    once = Config(retries={"total_max_attempts": 1})
    ec2 = sess.client("ec2", endpoint_url=endpoint)
    ebs = sess.client("ebs", endpoint_url=endpoint, config=once)
    s3 = sess.client("s3", endpoint_url=endpoint)
    ok = True

    def check(cond, what):
        nonlocal ok
        print(("ok   " if cond else "FAIL ") + what, flush=True)
        ok = ok and bool(cond)

    t0 = time.time()
    ec2.describe_instances(InstanceIds=[inst["instance_id"]])
    print(f"first DescribeInstances after seeding: {time.time() - t0:.3f}s")
    snap = ec2.create_snapshot(VolumeId=vol["volume_id"])["SnapshotId"]
    seen = []
    while True:
        s = ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]
        seen.append((s["State"], s.get("Progress")))
        if s["State"] == "completed":
            break
        time.sleep(0.3)
    check(seen[0][0] == "pending" and seen[-1] == ("completed", "100%"),
          f"snapshot states {seen[0]} .. {seen[-1]} ({len(seen)} polls)")
    blocks, token = [], None
    while True:
        kw = {"SnapshotId": snap, "MaxResults": 100}
        if token:
            kw["NextToken"] = token
        r = ebs.list_snapshot_blocks(**kw)
        blocks += r["Blocks"]
        token = r.get("NextToken")
        if not token:
            break
    check(r["BlockSize"] == bs and r["VolumeSize"] == 1,
          f"BlockSize {r['BlockSize']} VolumeSize {r['VolumeSize']}")
    data = open(raw, "rb").read()
    want = [i for i in range(len(data) // bs)
            if data[i * bs:(i + 1) * bs].count(0) != bs]
    check([b["BlockIndex"] for b in blocks] == want,
          f"{len(blocks)} listed blocks = non-zero blocks of the raw image")
    same = True
    for b in blocks:
        r = ebs.get_snapshot_block(SnapshotId=snap, BlockIndex=b["BlockIndex"],
                                   BlockToken=b["BlockToken"])
        got = r["BlockData"].read()
        i = b["BlockIndex"]
        same = same and got == data[i * bs:(i + 1) * bs] and \
            r["DataLength"] == bs
    check(same, "GetSnapshotBlock returns the seeded bytes")

    def ctl(method, path, obj=None):
        req = urllib.request.Request(
            f"http://127.0.0.1:{control_port}{path}", method=method,
            data=json.dumps(obj).encode() if obj is not None else None)
        with urllib.request.urlopen(req) as resp:
            return json.loads(resp.read())

    ctl("PUT", "/_launcher/faults",
        {"GetSnapshotBlock": {"every": 2, "status": 503}})
    errors = []
    for _ in range(4):
        try:
            ebs.get_snapshot_block(SnapshotId=snap, BlockIndex=0,
                                   BlockToken=blocks[0]["BlockToken"])
            errors.append(None)
        except Exception as e:      # botocore ClientError
            errors.append(e.response["Error"]["Code"])
    ctl("DELETE", "/_launcher/faults")
    check(errors == [None, "ServiceUnavailableException"] * 2,
          f"every 2nd GetSnapshotBlock fails: {errors}")
    stats = ctl("GET", "/_launcher/stats")
    check(stats["faults_injected"].get("GetSnapshotBlock") == 2 and
          stats["calls"].get("CreateSnapshot") == 1,
          f"stats {json.dumps(stats['calls'], sort_keys=True)}")

    t0 = time.time()
    task = ec2.create_instance_export_task(
        InstanceId=inst["instance_id"], TargetEnvironment="vmware",
        ExportToS3Task={"DiskImageFormat": "vmdk", "S3Bucket": "cfs-selftest",
                        "S3Prefix": "exports/"})["ExportTask"]
    tid = task["ExportTaskId"]
    while True:
        t = ec2.describe_export_tasks(ExportTaskIds=[tid])["ExportTasks"][0]
        if t["State"] != "active":
            break
        time.sleep(0.3)
    key = t["ExportToS3Task"]["S3Key"]
    check(t["State"] == "completed" and key == f"exports/{tid}.vmdk",
          f"instance export {t['State']} in {time.time() - t0:.1f}s: {key}")
    img = ec2.export_image(ImageId=inst["image_id"], DiskImageFormat="VHD",
                           S3ExportLocation={"S3Bucket": "cfs-selftest",
                                             "S3Prefix": "img/"})
    iid = img["ExportImageTaskId"]
    progress = []
    while True:
        t2 = ec2.describe_export_image_tasks(
            ExportImageTaskIds=[iid])["ExportImageTasks"][0]
        progress.append(t2.get("Progress"))
        if t2["Status"] != "active":
            break
        time.sleep(0.5)
    check(t2["Status"] == "completed", f"image export {t2['Status']}, "
          f"progress {progress}")
    for fmt, k in (("vmdk", key), ("vpc", f"img/{iid}.vhd")):
        path = os.path.join(tmp, "export." + fmt)
        s3.download_file("cfs-selftest", k, path)
        r = subprocess.run([QEMU_IMG, "compare", "-f", "raw", "-F", fmt,
                            raw, path], capture_output=True, text=True)
        check(r.returncode == 0, f"qemu-img compare raw {k}: "
              f"{r.stdout.strip() or r.stderr.strip()}")
    subprocess.run(["rm", "-rf", tmp])
    return ok


# ---- main ----------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", help="JSON file of instances to create")
    ap.add_argument("--state", help="write the created ids here (JSON)")
    ap.add_argument("--region", default=CFG["region"])
    ap.add_argument("--strict", type=int, metavar="N",
                    help="check signatures after the first N requests")
    ap.add_argument("--snapshot-seconds", type=float,
                    default=CFG["snapshot_seconds"])
    ap.add_argument("--export-seconds", type=float,
                    default=CFG["export_seconds"])
    ap.add_argument("--block-size", type=int, default=CFG["block_size"])
    ap.add_argument("--delay", type=float, default=0.0,
                    help="seconds before each GetSnapshotBlock/GetObject")
    ap.add_argument("--block-rate", type=int, default=0,
                    help="GetSnapshotBlock/s per snapshot, then 429")
    ap.add_argument("--faults", default=os.environ.get("CFS_AWS_FAULTS"),
                    help="initial fault table (JSON)")
    ap.add_argument("--verbose", action="store_true", help="log requests")
    ap.add_argument("--selftest", action="store_true")
    args = ap.parse_args()

    import logging
    if not args.verbose:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
    CFG.update(snapshot_seconds=args.snapshot_seconds, region=args.region,
               export_seconds=args.export_seconds, block_size=args.block_size,
               delay=args.delay, block_rate=args.block_rate)
    if args.faults:
        FAULTS.update(json.loads(args.faults))
    os.environ.setdefault("MOTO_ALLOW_NONEXISTENT_REGION", "true")

    server = LauncherServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    port = server.get_host_and_port()[1]
    endpoint = f"http://127.0.0.1:{port}"
    ctl = ThreadingHTTPServer(("127.0.0.1", 0), ControlHandler)
    threading.Thread(target=ctl.serve_forever, daemon=True).start()
    STATE.update(endpoint=endpoint, region=args.region,
                 block_size=CFG["block_size"], instances=[], buckets=[])

    if args.seed:
        with open(args.seed) as f:
            spec = json.load(f)
        QUIET[0] = True
        STATE.update(seed(spec, endpoint, args.region))
        QUIET[0] = False
    if args.state:
        tmp = args.state + ".tmp"
        with open(tmp, "w") as f:
            json.dump(STATE, f, indent=1)
        os.replace(tmp, args.state)
    if args.strict is not None:
        from moto import settings
        from moto.core.authorization import ActionAuthenticatorMixin
        settings.INITIAL_NO_AUTH_ACTION_COUNT = args.strict
        ActionAuthenticatorMixin.request_count = 0
    control("POST", "/_launcher/stats/reset", b"")

    print(f"CONTROL {ctl.server_address[1]}", flush=True)
    print(f"PORT {port}", flush=True)
    if args.selftest:
        ok = selftest(endpoint, ctl.server_address[1], args.region)
        print("selftest " + ("passed" if ok else "FAILED"), flush=True)
        os._exit(0 if ok else 1)

    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    while not done.wait(3600):
        pass
    ctl.shutdown()
    server.stop()


if __name__ == "__main__":
    main()
