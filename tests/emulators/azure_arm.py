# SPDX-License-Identifier: MIT
"""ARM resources of the Azure fake: routing, the JSON shapes of resource
groups, VMs, disks and snapshots, paging with nextLink, and the
long-running operations (snapshot create/delete, begin/endGetAccess) in
the DiskRP shape: 202 with Azure-AsyncOperation, Location and Retry-After.
Every handler runs with cloud.lock held."""

import base64
import json
import math
import re
import time
import uuid

from azure_model import DISK_API, INCREMENTAL_ONLY, NAME_RE, RG_API, SKUS, \
    TAG_BAD, VM_API, ArmError, Op, iso, not_found

GiB = 1 << 30
TYPES = {"disks": "disks", "snapshots": "snapshots",
         "virtualmachines": "virtualMachines"}
POWER = {"running": "VM running", "deallocated": "VM deallocated",
         "stopped": "VM stopped", "starting": "VM starting",
         "stopping": "VM stopping", "deallocating": "VM deallocating"}
ID_RE = re.compile(r"^/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/"
                   r"Microsoft\.Compute/(disks|snapshots)/([^/]+)$", re.I)


def route(c, method, parts, low, q, headers, body, base):
    rest, prest = low[2:], parts[2:]
    op, api, handler, args = resolve(method, rest, prest)
    with c.lock:
        c.count(op)
        c.authenticate(headers)
        check_api(c, q, api, op)
        if parts[1].lower() != c.subscription.lower():
            raise ArmError(404, "SubscriptionNotFound",
                           "The subscription '%s' could not be found."
                           % parts[1])
        c.check_fault(op)
        status, obj, hdrs = handler(c, q, headers, body, base, *args)
        hdrs = list(hdrs) + [("x-ms-request-id", str(uuid.uuid4())),
                             ("x-ms-correlation-request-id",
                              str(uuid.uuid4()))]
        return status, obj, hdrs


def resolve(method, rest, prest):
    def want(m):
        if method != m:
            raise ArmError(405, "MethodNotAllowed",
                           "The requested method '%s' is not allowed here."
                           % method)
    n = len(rest)
    if rest[:1] == ["resourcegroups"] and n in (1, 2):
        want("GET")
        if n == 1:
            return "list_resource_groups", RG_API, list_rgs, ()
        return "get_resource_group", RG_API, get_rg, (prest[1],)
    if rest[:2] == ["providers", "microsoft.compute"]:
        if n == 3 and rest[2] in TYPES:
            want("GET")
            t = TYPES[rest[2]]
            return "list_" + kind_op(t), api_for(t), list_res, (None, t,
                                                                 prest)
        if n == 6 and rest[2] == "locations" and rest[4] == "diskoperations":
            want("GET")
            return "poll_operation", DISK_API, poll, (prest[5],)
    if n >= 5 and rest[0] == "resourcegroups" and \
            rest[2:4] == ["providers", "microsoft.compute"] and rest[4] in TYPES:
        t = TYPES[rest[4]]
        rg = prest[1]
        if n == 5:
            want("GET")
            return "list_" + kind_op(t), api_for(t), list_res, (rg, t, prest)
        name = prest[5]
        if n == 6:
            if method == "GET":
                return "get_" + kind_op(t)[:-1], api_for(t), get_res, \
                    (rg, t, name)
            if t == "snapshots" and method == "PUT":
                return "create_snapshot", DISK_API, put_snapshot, (rg, name)
            if t == "snapshots" and method == "DELETE":
                return "delete_snapshot", DISK_API, delete_snapshot, \
                    (rg, name)
            want("GET")
        if n == 7 and t == "virtualMachines" and rest[6] == "instanceview":
            want("GET")
            return "vm_instance_view", VM_API, vm_instance_view, (rg, name)
        if n == 7 and t != "virtualMachines" and \
                rest[6] in ("begingetaccess", "endgetaccess"):
            want("POST")
            if rest[6] == "begingetaccess":
                return "begin_get_access", DISK_API, begin_access, \
                    (rg, t, name)
            return "end_get_access", DISK_API, end_access, (rg, t, name)
    raise ArmError(404, "InvalidResourceType",
                   "The resource type '%s' could not be found."
                   % "/".join(prest))


def kind_op(t):
    return {"disks": "disks", "snapshots": "snapshots",
            "virtualMachines": "vms"}[t]


def api_for(t):
    return VM_API if t == "virtualMachines" else DISK_API


def check_api(c, q, api, op):
    v = q.get("api-version")
    if not v:
        raise ArmError(400, "MissingApiVersionParameter",
                       "The api-version query parameter (?api-version=) is "
                       "required for all requests.")
    if v in api:
        return
    if api is RG_API:
        raise ArmError(400, "InvalidApiVersionParameter",
                       "The api-version '%s' is invalid. The supported "
                       "versions are '%s'." % (v, ",".join(sorted(api))))
    rtype = "virtualMachines" if api is VM_API else \
        ("snapshots" if "snapshot" in op else "disks")
    raise ArmError(400, "NoRegisteredProviderFound",
                   "No registered resource provider found for location '%s' "
                   "and API version '%s' for type '%s'. The supported "
                   "api-versions are '%s'." % (c.config["location"], v, rtype,
                                              ", ".join(sorted(api))))


# --- JSON shapes ---------------------------------------------------------------

def rg_json(c, rg):
    out = {"id": "/subscriptions/%s/resourceGroups/%s" % (c.subscription,
                                                          rg["name"]),
           "name": rg["name"], "type": "Microsoft.Resources/resourceGroups",
           "location": rg["location"],
           "properties": {"provisioningState": "Succeeded"}}
    if rg.get("tags"):
        out["tags"] = rg["tags"]
    return out


def vm_of(c, disk):
    return c.vms.get(disk["managed_by"].lower()) if disk["managed_by"] \
        else None


def granted(c, key):
    return bool(c.live_grants(key))


def disk_state(c, disk):
    vm = vm_of(c, disk)
    if vm is not None:
        return "Reserved" if vm["power"] == "deallocated" else "Attached"
    return "ActiveSAS" if granted(c, disk["id"].lower()) else "Unattached"


def disk_json(c, d):
    props = {"hyperVGeneration": d["hyperv"],
             "supportedCapabilities": {"architecture": "x64"},
             "creationData": {"createOption": "FromImage" if d["os_type"]
                              else "Empty"},
             "diskSizeGB": math.ceil(d["size"] / GiB),
             "diskSizeBytes": d["size"], "uniqueId": d["unique_id"],
             "encryption": {"type": "EncryptionAtRestWithPlatformKey"},
             "networkAccessPolicy": "AllowAll",
             "publicNetworkAccess": "Enabled",
             "timeCreated": iso(d["created"]),
             "provisioningState": "Succeeded",
             "diskState": disk_state(c, d),
             "diskIOPSReadWrite": 500, "diskMBpsReadWrite": 100}
    if d["os_type"]:
        props["osType"] = d["os_type"]
    if d["sku"].startswith("Premium_"):
        props["tier"] = "P10"
    out = {"name": d["name"], "id": d["id"], "type": "Microsoft.Compute/disks",
           "location": d["location"], "tags": d["tags"],
           "sku": {"name": d["sku"], "tier": SKUS[d["sku"]]},
           "properties": props}
    if d["managed_by"]:
        out["managedBy"] = d["managed_by"]
    if d.get("zones"):
        out["zones"] = d["zones"]
    return out


def snapshot_json(c, s):
    props = {"hyperVGeneration": s["hyperv"],
             "creationData": {"createOption": "Copy",
                              "sourceResourceId": s["source_id"],
                              "sourceUniqueId": s["source_unique_id"]},
             "diskSizeGB": math.ceil(s["size"] / GiB),
             "diskSizeBytes": s["size"], "uniqueId": s["unique_id"],
             "encryption": {"type": "EncryptionAtRestWithPlatformKey"},
             "incremental": s["incremental"],
             "networkAccessPolicy": "AllowAll",
             "publicNetworkAccess": "Enabled",
             "timeCreated": iso(s["created"]),
             "provisioningState": s["state"],
             "diskState": "ActiveSAS" if granted(c, s["id"].lower())
             else "Unattached"}
    if s["os_type"]:
        props["osType"] = s["os_type"]
    if s["incremental"]:
        props["incrementalSnapshotFamilyId"] = s["family_id"]
        props["completionPercent"] = 100.0 if s["state"] == "Succeeded" \
            else 0.0
    return {"name": s["name"], "id": s["id"],
            "type": "Microsoft.Compute/snapshots", "location": s["location"],
            "tags": s["tags"], "sku": {"name": s["sku"],
                                       "tier": SKUS[s["sku"]]},
            "properties": props}


def managed_disk_ref(c, disk_id):
    """ARM often spells the group in upper case inside a VM's disk ids."""
    m = ID_RE.match(disk_id)
    d = c.disks.get(disk_id.lower())
    ref = {"id": "/subscriptions/%s/resourceGroups/%s/providers/"
           "Microsoft.Compute/disks/%s" % (m.group(1), m.group(2).upper(),
                                           m.group(4))}
    if d is not None:
        ref["storageAccountType"] = d["sku"]
    return ref, d


def vm_json(c, vm, expand=False):
    os_ref, os_disk = managed_disk_ref(c, vm["os_disk"])
    os_entry = {"osType": vm["os_type"], "name": ID_RE.match(
        vm["os_disk"]).group(4), "createOption": "FromImage",
        "caching": "ReadWrite", "managedDisk": os_ref,
        "deleteOption": "Delete"}
    if os_disk is not None:
        os_entry["diskSizeGB"] = math.ceil(os_disk["size"] / GiB)
    data = []
    for lun, disk_id in vm["data_disks"]:
        ref, d = managed_disk_ref(c, disk_id)
        entry = {"lun": lun, "name": ID_RE.match(disk_id).group(4),
                 "createOption": "Attach", "caching": "None",
                 "managedDisk": ref, "deleteOption": "Detach",
                 "toBeDetached": False, "writeAcceleratorEnabled": False}
        if d is not None:
            entry["diskSizeGB"] = math.ceil(d["size"] / GiB)
        data.append(entry)
    props = {"vmId": vm["vm_id"],
             "hardwareProfile": {"vmSize": vm["size"]},
             "storageProfile": {"osDisk": os_entry, "dataDisks": data},
             "osProfile": {"computerName": vm["name"][:15],
                           "adminUsername": "azureuser"},
             "networkProfile": {"networkInterfaces": [{
                 "id": "/subscriptions/%s/resourceGroups/%s/providers/"
                       "Microsoft.Network/networkInterfaces/%s-nic"
                       % (c.subscription, vm["rg"], vm["name"])}]},
             "provisioningState": "Succeeded",
             "timeCreated": iso(vm["created"])}
    if expand:
        props["instanceView"] = instance_view(c, vm)
    return {"name": vm["name"], "id": vm["id"],
            "type": "Microsoft.Compute/virtualMachines",
            "location": vm["location"], "tags": vm["tags"],
            "properties": props}


def instance_view(c, vm):
    ok = {"code": "ProvisioningState/succeeded", "level": "Info",
          "displayStatus": "Provisioning succeeded",
          "time": iso(vm["created"])}
    disks = [{"name": ID_RE.match(i).group(4), "statuses": [dict(ok)]}
             for i in [vm["os_disk"]] + [d for _, d in vm["data_disks"]]]
    return {"computerName": vm["name"][:15], "disks": disks,
            "hyperVGeneration": "V2",
            "statuses": [ok, {"code": "PowerState/" + vm["power"],
                              "level": "Info",
                              "displayStatus": POWER[vm["power"]]}]}


# --- reads ---------------------------------------------------------------------

def page(c, q, base, path_parts, items, extra=()):
    size = max(int(c.config["page_size"]), 1)
    offset = 0
    token = q.get("$skiptoken")
    if token:
        try:
            offset = json.loads(base64.urlsafe_b64decode(
                token + "=" * (-len(token) % 4)))["o"]
        except (ValueError, KeyError, TypeError):
            raise ArmError(400, "InvalidSkipToken",
                           "The skip token '%s' is invalid." % token)
    out = {"value": items[offset:offset + size]}
    if offset + size < len(items):
        nxt = base64.urlsafe_b64encode(json.dumps(
            {"o": offset + size}).encode()).decode().rstrip("=")
        link = "%s/%s?api-version=%s" % (base, "/".join(path_parts),
                                         q["api-version"])
        for k in extra:
            if k in q:
                link += "&%s=%s" % (k, q[k])
        out["nextLink"] = link + "&$skiptoken=" + nxt
    return out


def list_rgs(c, q, headers, body, base):
    items = [rg_json(c, r) for r in sorted(c.rgs.values(),
                                           key=lambda r: r["name"].lower())]
    return 200, page(c, q, base, ["subscriptions", c.subscription,
                                  "resourcegroups"], items), []


def get_rg(c, q, headers, body, base, rg):
    return 200, rg_json(c, c.need_rg(rg)), []


def expand_of(q):
    e = q.get("$expand")
    if e is None:
        return False
    if e.lower() == "instanceview":
        return True
    if e.lower() == "userdata":
        return False
    raise ArmError(400, "InvalidParameter",
                   "The value '%s' of parameter '$expand' is invalid." % e,
                   target="$expand")


def table(c, t):
    return {"disks": c.disks, "snapshots": c.snapshots,
            "virtualMachines": c.vms}[t]


def to_json(c, t, res, expand=False):
    if t == "disks":
        return disk_json(c, res)
    if t == "snapshots":
        return snapshot_json(c, res)
    return vm_json(c, res, expand)


def list_res(c, q, headers, body, base, rg, t, prest):
    expand = expand_of(q) if t == "virtualMachines" else False
    if rg is not None:
        c.need_rg(rg)
    items = sorted((r for r in table(c, t).values()
                    if rg is None or r["rg"].lower() == rg.lower()),
                   key=lambda r: (r["rg"].lower(), r["name"].lower()))
    items = [to_json(c, t, r, expand) for r in items]
    return 200, page(c, q, base, ["subscriptions", c.subscription] + prest,
                     items, extra=("$expand",)), []


def find(c, rg, t, name):
    c.need_rg(rg)
    res = table(c, t).get(c.rid(rg, t, name).lower())
    if res is None:
        raise not_found("Microsoft.Compute/" + t, name, rg)
    return res


def get_res(c, q, headers, body, base, rg, t, name):
    expand = expand_of(q) if t == "virtualMachines" else False
    return 200, to_json(c, t, find(c, rg, t, name), expand), []


def vm_instance_view(c, q, headers, body, base, rg, name):
    return 200, instance_view(c, find(c, rg, "virtualMachines", name)), []


# --- long-running operations -------------------------------------------------

def pending(c, key):
    return any(op.status == "InProgress" and op.resource == key
               for op in c.ops.values())


def lro_headers(c, base, op, location):
    url = "%s/subscriptions/%s/providers/Microsoft.Compute/locations/%s/" \
          "DiskOperations/%s?api-version=%s" % (
              base, c.subscription, location.replace(" ", "").lower(),
              op.id, op.api_version)
    op.location_url = url + "&monitor=true"
    return [("Azure-AsyncOperation", url), ("Location", op.location_url),
            ("Retry-After", str(c.config["retry_after"]))]


def start(c, op):
    c.ops[op.id] = op
    return op


def poll(c, q, headers, body, base, opid):
    op = c.ops.get(opid)
    if op is None:
        raise ArmError(404, "ResourceNotFound",
                       "The operation '%s' was not found." % opid)
    op.advance()
    monitor = q.get("monitor", "").lower() == "true"
    retry = [("Retry-After", str(c.config["retry_after"]))]
    if monitor:
        if op.status == "InProgress":
            return 202, None, [("Location", op.location_url)] + retry
        if op.status == "Failed":
            raise ArmError(op.error_status or 500, op.error["code"],
                           op.error["message"])
        return 200, op.output, []
    out = {"startTime": iso(op.started), "status": op.status, "name": op.id}
    if op.ended is not None:
        out["endTime"] = iso(op.ended)
    if op.status == "Succeeded" and op.output is not None:
        out["properties"] = {"output": op.output}
    if op.status == "Failed":
        out["error"] = op.error
    return 200, out, retry if op.status == "InProgress" else []


def json_body(headers, body):
    ctype = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise ArmError(415, "UnsupportedMediaType",
                       "The content media type '%s' is not supported. Only "
                       "'application/json' is supported." % ctype)
    try:
        obj = json.loads(body.decode() or "null")
    except ValueError as exc:
        raise ArmError(400, "InvalidRequestContent",
                       "The request content was invalid and could not be "
                       "deserialized: '%s'." % exc)
    if not isinstance(obj, dict):
        raise ArmError(400, "InvalidRequestContent",
                       "The request content was invalid and could not be "
                       "deserialized: an object is required.")
    return obj


def check_tags(tags):
    if not isinstance(tags, dict) or len(tags) > 50:
        raise ArmError(400, "InvalidRequestContent",
                       "'tags' must be an object of at most 50 strings.")
    for k, v in tags.items():
        if not isinstance(v, str):
            raise ArmError(400, "InvalidRequestContent",
                           "The value of tag '%s' must be a string." % k)
        if not k or TAG_BAD.search(k):
            raise ArmError(400, "InvalidTagNameCharacters",
                           "The tag names '%s' have reserved characters "
                           "'<,>,%%,&,\\,?,/' or control characters." % k)
        if len(k) > 512 or len(v) > 256:
            raise ArmError(400, "InvalidTagNameLength" if len(k) > 512
                           else "InvalidTagValueLength",
                           "Tag '%s' is too long." % k[:40])


def put_snapshot(c, q, headers, body, base, rg, name):
    group = c.need_rg(rg)
    if not NAME_RE.match(name):
        raise ArmError(400, "InvalidResourceName",
                       "The resource name '%s' is invalid." % name)
    req = json_body(headers, body)
    loc = req.get("location")
    if not isinstance(loc, str) or not loc:
        raise ArmError(400, "LocationRequired",
                       "The location property is required for this "
                       "definition.")
    tags = req.get("tags", {})
    check_tags(tags)
    props = req.get("properties")
    if not isinstance(props, dict):
        raise ArmError(400, "InvalidParameter", "Required parameter "
                       "'properties' is missing (null).", target="properties")
    cd = props.get("creationData")
    if not isinstance(cd, dict):
        raise ArmError(400, "InvalidParameter", "Required parameter "
                       "'creationData' is missing (null).",
                       target="creationData")
    option = cd.get("createOption")
    if not isinstance(option, str) or option.lower() != "copy":
        raise ArmError(400, "InvalidParameter",
                       "The value '%s' of parameter 'createOption' is not "
                       "supported for this snapshot; use 'Copy'." % option,
                       target="createOption")
    src = cd.get("sourceResourceId")
    if not isinstance(src, str) or not ID_RE.match(src):
        raise ArmError(400, "InvalidParameter", "Parameter "
                       "'sourceResourceId' is not a managed disk id: '%s'."
                       % src, target="sourceResourceId")
    m = ID_RE.match(src)
    if m.group(3).lower() != "disks":
        raise ArmError(400, "InvalidParameter", "This fake copies managed "
                       "disks only.", target="sourceResourceId")
    disk = c.disks.get(src.lower())
    if disk is None:
        raise ArmError(404, "NotFound", "Source disk '%s' was not found."
                       % src, target="sourceResourceId")
    inc = props.get("incremental", False)
    if not isinstance(inc, bool):
        raise ArmError(400, "InvalidRequestContent",
                       "'incremental' must be a boolean.")
    if norm(loc) != norm(disk["location"]):
        raise ArmError(400, "InvalidParameter",
                       "The snapshot location '%s' must be the location of "
                       "the source disk '%s'." % (loc, disk["location"]),
                       target="location")
    if disk["sku"] in INCREMENTAL_ONLY and not inc:
        raise ArmError(400, "OperationNotAllowed",
                       "Only incremental snapshots are supported for disks "
                       "of SKU '%s'." % disk["sku"])
    key = c.rid(group["name"], "snapshots", name).lower()
    old = c.snapshots.get(key)
    if old is not None:
        if pending(c, key):
            raise ArmError(409, "Conflict", "Another operation on snapshot "
                           "'%s' is in progress." % name)
        if old["source_id"].lower() != src.lower() or \
                old["incremental"] != inc:
            raise ArmError(409, "PropertyChangeNotAllowed",
                           "Changing property 'creationData' is not allowed "
                           "for existing snapshot '%s'." % name)
        old["tags"] = tags
        return 200, snapshot_json(c, old), []
    sku = snapshot_sku(req, disk, inc)
    fail = c.lro_fault("create_snapshot")
    container = "md-" + uuid.uuid4().hex[:16]
    c.blob.create_container(container)
    c.blob.copy_pages(disk["container"], disk["blob"], container, "abcd",
                      disk["size"] + 512)
    snap = {"rg": group["name"], "name": name, "location": disk["location"],
            "tags": tags, "source_id": disk["id"],
            "source_unique_id": disk["unique_id"], "size": disk["size"],
            "incremental": inc, "unique_id": str(uuid.uuid4()),
            "family_id": disk["unique_id"], "created": time.time(),
            "container": container, "blob": "abcd", "state": "Updating",
            "os_type": disk["os_type"], "hyperv": disk["hyperv"],
            "sku": sku}
    snap["id"] = c.rid(group["name"], "snapshots", name)
    c.snapshots[key] = snap

    def finish():
        snap["state"] = "Succeeded"
        return snapshot_json(c, snap)

    def failed():
        snap["state"] = "Failed"

    op = start(c, Op("create_snapshot", key, c.config["snapshot_seconds"],
                     finish, fail, failed, q["api-version"]))
    return 202, snapshot_json(c, snap), lro_headers(c, base, op,
                                                    snap["location"])


def snapshot_sku(req, disk, inc):
    """The sku asked for, else what Azure picks: Standard_LRS for an
    incremental snapshot, the disk's own (LRS) sku for a full one."""
    sku = req.get("sku")
    name = sku.get("name") if isinstance(sku, dict) else None
    if name in ("Standard_LRS", "Premium_LRS", "Standard_ZRS"):
        return name
    if name is not None:
        raise ArmError(400, "InvalidParameter", "Snapshot sku '%s' is not "
                       "supported." % name, target="sku")
    if inc or disk["sku"] not in ("Premium_LRS", "Standard_LRS"):
        return "Standard_LRS"
    return disk["sku"]


def norm(loc):
    return loc.replace(" ", "").lower()


def delete_snapshot(c, q, headers, body, base, rg, name):
    c.need_rg(rg)
    key = c.rid(rg, "snapshots", name).lower()
    snap = c.snapshots.get(key)
    if snap is None:
        return 204, None, []
    if pending(c, key):
        raise ArmError(409, "Conflict", "Another operation on snapshot '%s' "
                       "is in progress." % name)
    if c.live_grants(key):
        raise ArmError(409, "OperationNotAllowed",
                       "Cannot delete snapshot '%s' while it has an active "
                       "SAS URI. Revoke access (endGetAccess) and retry."
                       % name)
    fail = c.lro_fault("delete_snapshot")
    snap["state"] = "Deleting"

    def finish():
        c.blob.delete_container(snap["container"])
        c.snapshots.pop(key, None)
        c.grants.pop(key, None)
        c.deleted_snapshots.append({"id": snap["id"], "tags": snap["tags"],
                                    "deleted": time.time()})
        return None

    def failed():
        snap["state"] = "Succeeded"

    op = start(c, Op("delete_snapshot", key, c.config["delete_seconds"],
                     finish, fail, failed, q["api-version"]))
    return 202, None, lro_headers(c, base, op, snap["location"])


def begin_access(c, q, headers, body, base, rg, t, name):
    res = find(c, rg, t, name)
    key = res["id"].lower()
    req = json_body(headers, body)
    access = req.get("access")
    if not isinstance(access, str) or access.lower() not in ("read", "write",
                                                             "none"):
        raise ArmError(400, "InvalidParameter", "The value '%s' of parameter "
                       "'access' is invalid." % access, target="access")
    if access.lower() == "none":
        raise ArmError(400, "InvalidParameter", "Access level 'None' cannot "
                       "be granted.", target="access")
    if access.lower() == "write":
        raise ArmError(409, "OperationNotAllowed", "Write access can only be "
                       "granted to a disk in the ReadyToUpload state.")
    dur = req.get("durationInSeconds")
    if isinstance(dur, str) and dur.isdigit():
        dur = int(dur)
    if not isinstance(dur, int) or isinstance(dur, bool) or dur <= 0:
        raise ArmError(400, "InvalidParameter", "The value of parameter "
                       "'durationInSeconds' is invalid.",
                       target="durationInSeconds")
    if t == "snapshots" and res["state"] != "Succeeded":
        raise ArmError(409, "OperationNotAllowed", "Snapshot '%s' is not "
                       "ready: its provisioning state is '%s'."
                       % (name, res["state"]))
    if t == "disks":
        vm = vm_of(c, res)
        if vm is not None and vm["power"] != "deallocated":
            raise ArmError(409, "OperationNotAllowed", "Disk '%s' is "
                           "attached to VM '%s', which is not deallocated; "
                           "access cannot be granted." % (name, vm["id"]))
    if pending(c, key):
        raise ArmError(409, "Conflict", "Another operation on '%s' is in "
                       "progress." % name)
    fail = c.lro_fault("begin_get_access")

    def finish():
        return {"accessSAS": c.grant(res, key, dur)}

    op = start(c, Op("begin_get_access", key, c.config["access_seconds"],
                     finish, fail, None, q["api-version"]))
    return 202, None, lro_headers(c, base, op, res["location"])


def end_access(c, q, headers, body, base, rg, t, name):
    res = find(c, rg, t, name)
    key = res["id"].lower()
    if pending(c, key):
        raise ArmError(409, "Conflict", "Another operation on '%s' is in "
                       "progress." % name)
    fail = c.lro_fault("end_get_access")

    def finish():
        c.revoke(res, key)
        return None

    op = start(c, Op("end_get_access", key, c.config["end_access_seconds"],
                     finish, fail, None, q["api-version"]))
    return 202, None, lro_headers(c, base, op, res["location"])
