# SPDX-License-Identifier: MIT
"""The control endpoint of the Azure fake: seeding, faults, counters and
state for the tests.  Bodies are JSON; every answer is JSON.

  POST /_control/reset              forget every resource, token, grant,
                                    fault and counter; config to defaults
  GET  /_control/credentials        tenant, client_id, client_secret,
                                    subscription, msi_client_id
  GET|POST /_control/config         read / change: token_lifetime,
                                    grant_cap (0 = none), snapshot_seconds,
                                    access_seconds, end_access_seconds,
                                    delete_seconds, retry_after, page_size,
                                    msi_enabled, location
  POST /_control/resource_groups    {"name", "location"?, "tags"?}
  POST /_control/disks              {"resourceGroup", "name", "sizeBytes",
                                     "rawPath"?, "sku"?, "osType"?,
                                     "location"?, "tags"?, "zones"?,
                                     "hyperVGeneration"?}
  POST /_control/vms                {"resourceGroup", "name", "osDisk",
                                     "dataDisks": [{"lun", "disk"}],
                                     "power"?, "size"?, "location"?, "tags"?}
                                    (disks by name in the same group, or id)
  POST /_control/power              {"resourceGroup", "name", "power"}
  POST /_control/delete_disk        {"resourceGroup", "name"}
  POST /_control/expire_tokens      every issued token is expired from now
  GET|POST|DELETE /_control/faults  ARM/token faults: {"op", "count",
                                    "status", "code"?, "message"?,
                                    "retry_after"?, "mode": "sync"|"lro"}
  GET|POST|DELETE /_control/blob_faults  proxied blob faults: {"op":
                                    "blob"|"range_get"|"pagelist"|"get"|
                                    "head", "count", "status", "code"?,
                                    "retry_after"?}
  GET  /_control/stats              {"calls": {op: n}, "faults_injected":
                                     {op: n}, "blob": {path: counters}}
  POST /_control/stats/reset        zero the counters only
  GET  /_control/state              snapshots, disks, vms, operations,
                                    deleted_snapshots, tokens
"""

import json
import time
import uuid

from azure_model import DEFAULTS, MSI_CLIENT_ID, ArmError, POWERS_OK


def control(c, method, what, q, body):
    try:
        req = json.loads(body.decode() or "{}") if body else {}
    except ValueError as exc:
        raise ArmError(400, "BadControl", "bad JSON: %s" % exc)
    path = "/".join(what)
    c.advance()
    with c.lock:
        if path == "reset" and method == "POST":
            c.reset_all()
            return ok({"reset": True})
        if path == "credentials":
            return ok({"tenant": c.tenant, "client_id": c.client_id,
                       "client_secret": c.client_secret,
                       "subscription": c.subscription,
                       "msi_client_id": MSI_CLIENT_ID})
        if path == "config":
            if method == "POST":
                for k, v in req.items():
                    if k not in DEFAULTS:
                        raise ArmError(400, "BadControl", "unknown key " + k)
                    c.config[k] = convert(DEFAULTS[k], v)
            return ok(dict(c.config))
        if path in ("faults", "blob_faults"):
            table = c.faults if path == "faults" else c.blob_faults
            if method == "DELETE":
                table.clear()
            elif method == "POST":
                spec = dict(req)
                spec["left"] = int(spec.get("count", 1))
                table.append(spec)
            return ok(table)
        if path == "stats":
            return ok({"calls": dict(c.calls),
                       "faults_injected": dict(c.injected),
                       "blob": json.loads(json.dumps(c.blob_stats))})
        if path == "stats/reset" and method == "POST":
            c.calls, c.injected, c.blob_stats = {}, {}, {}
            return ok({})
        if path == "state":
            return ok(state(c))
        if path == "expire_tokens" and method == "POST":
            for info in c.tokens.values():
                info["exp"] = min(info["exp"], time.time())
            return ok({"expired": len(c.tokens)})
        if path == "resource_groups" and method == "POST":
            name = req["name"]
            rg = {"name": name, "location": req.get("location")
                  or c.config["location"], "tags": req.get("tags") or {}}
            c.rgs.setdefault(name.lower(), rg)
            return ok(c.rgs[name.lower()])
        if path == "disks" and method == "POST":
            return ok(public(c.seed_disk(req)))
        if path == "vms" and method == "POST":
            return ok(seed_vm(c, req))
        if path == "power" and method == "POST":
            vm = c.vms.get(c.rid(req["resourceGroup"], "virtualMachines",
                                 req["name"]).lower())
            if vm is None or req["power"] not in POWERS_OK:
                raise ArmError(400, "BadControl", "no such vm or power")
            vm["power"] = req["power"]
            return ok({"power": vm["power"]})
        if path == "delete_disk" and method == "POST":
            key = c.rid(req["resourceGroup"], "disks", req["name"]).lower()
            disk = c.disks.pop(key, None)
            if disk is None:
                raise ArmError(404, "BadControl", "no such disk")
            c.grants.pop(key, None)
            c.blob.delete_container(disk["container"])
            return ok({"deleted": disk["id"]})
    raise ArmError(404, "BadControl", "no control %s %s" % (method, path))


def convert(default, value):
    if isinstance(default, bool):
        return value if isinstance(value, bool) else \
            str(value).lower() in ("1", "true", "yes", "on")
    return type(default)(value)


def ok(obj):
    return 200, obj, []


def public(disk):
    return {k: v for k, v in disk.items() if k != "written"} | {
        "blobPath": "/devstoreaccount1/%s/%s" % (disk["container"],
                                                 disk["blob"]),
        "written": disk["written"]}


def disk_id(c, rg, ref):
    if ref.startswith("/"):
        return ref
    return c.rid(c.rgs[rg.lower()]["name"], "disks", ref)


def seed_vm(c, req):
    rg = c.need_rg(req["resourceGroup"])
    name = req["name"]
    key = c.rid(rg["name"], "virtualMachines", name).lower()
    if key in c.vms:
        raise ArmError(409, "BadControl", "vm %s exists" % name)
    os_id = disk_id(c, rg["name"], req["osDisk"])
    data = [(int(d["lun"]), disk_id(c, rg["name"], d["disk"]))
            for d in req.get("dataDisks", [])]
    power = req.get("power", "running")
    if power not in POWERS_OK:
        raise ArmError(400, "BadControl", "bad power state " + power)
    vm = {"rg": rg["name"], "name": name,
          "location": req.get("location") or rg["location"],
          "vm_id": str(uuid.uuid4()), "size": req.get("size",
                                                      "Standard_D2s_v3"),
          "os_disk": os_id, "data_disks": sorted(data), "power": power,
          "tags": req.get("tags") or {}, "created": time.time()}
    vm["id"] = c.rid(rg["name"], "virtualMachines", name)
    for _, ref in [(None, os_id)] + data:
        disk = c.disks.get(ref.lower())
        if disk is None:
            raise ArmError(404, "BadControl", "no disk " + ref)
        if disk["managed_by"]:
            raise ArmError(409, "BadControl", "disk %s is attached" % ref)
    for _, ref in [(None, os_id)] + data:
        c.disks[ref.lower()]["managed_by"] = vm["id"]
    vm["os_type"] = c.disks[os_id.lower()]["os_type"] or "Linux"
    c.vms[key] = vm
    return {"id": vm["id"], "vmId": vm["vm_id"]}


def state(c):
    now = time.time()

    def grants(key):
        return [{"id": g["id"], "expiry": g["expiry"],
                 "expired": g["expiry"] <= now}
                for g in c.grants.get(key, [])]

    snaps = [{"id": s["id"], "name": s["name"], "resourceGroup": s["rg"],
              "tags": s["tags"], "source": s["source_id"],
              "incremental": s["incremental"],
              "provisioningState": s["state"],
              "accessGranted": bool(c.live_grants(k)), "grants": grants(k),
              "blobPath": "/devstoreaccount1/%s/%s" % (s["container"],
                                                       s["blob"])}
             for k, s in c.snapshots.items()]
    disks = [{"id": d["id"], "name": d["name"], "resourceGroup": d["rg"],
              "sizeBytes": d["size"], "managedBy": d["managed_by"],
              "accessGranted": bool(c.live_grants(k)), "grants": grants(k),
              "blobPath": "/devstoreaccount1/%s/%s" % (d["container"],
                                                       d["blob"])}
             for k, d in c.disks.items()]
    ops = [{"id": o.id, "kind": o.kind, "resource": o.resource,
            "status": o.status} for o in c.ops.values()]
    return {"snapshots": snaps, "disks": disks,
            "vms": [{"id": v["id"], "power": v["power"]}
                    for v in c.vms.values()],
            "operations": ops, "deleted_snapshots": c.deleted_snapshots,
            "tokens": len(c.tokens)}
