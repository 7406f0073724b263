# SPDX-License-Identifier: MIT
"""The state and the request handling of the Azure fake (azure_fake.py).

Tokens
  POST /{tenant}/oauth2/v2.0/token   form grant_type=client_credentials,
       client_id, client_secret, scope=https://management.azure.com/.default
       -> {"token_type":"Bearer","expires_in":N,"ext_expires_in":N,
           "access_token":"<JWT>"}; AADSTS errors as 400/401 JSON.
  GET  /metadata/identity/oauth2/token?api-version=2018-02-01&resource=R
       with "Metadata: true" -> IMDS shape (numbers as strings).
ARM (Authorization: Bearer; api-version required and checked per provider)
  GET  /subscriptions/{s}/resourcegroups[/{rg}]
  GET  /subscriptions/{s}/providers/Microsoft.Compute/{disks|snapshots|virtualMachines}
  GET  .../resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines[/{vm}]
       ($expand=instanceView), .../virtualMachines/{vm}/instanceView
  GET  .../disks[/{d}], .../snapshots[/{n}]; lists page with nextLink
  PUT  .../snapshots/{n}  {"location", "tags", "properties": {"creationData":
       {"createOption":"Copy","sourceResourceId":<disk id>},"incremental":b}}
  DELETE .../snapshots/{n}
  POST .../{disks|snapshots}/{n}/beginGetAccess {"access":"Read",
       "durationInSeconds":N}; .../endGetAccess
  GET  /subscriptions/{s}/providers/Microsoft.Compute/locations/{l}/
       DiskOperations/{op}?api-version=V[&monitor=true]
Control: see Cloud.control.
"""

import base64
import hashlib
import json
import re
import threading
import time
import urllib.parse
import uuid

from azure_blob import VHD_FOOTER_SIZE, BlobError, data_runs, service_sas, \
    vhd_footer

DISK_API = {"2019-07-01", "2020-05-01", "2020-12-01", "2021-04-01",
            "2021-08-01", "2021-12-01", "2022-03-02", "2022-07-02",
            "2023-01-02", "2023-04-02", "2023-10-02", "2024-03-02",
            "2025-01-02"}
VM_API = {"2021-03-01", "2021-07-01", "2021-11-01", "2022-03-01",
          "2022-08-01", "2022-11-01", "2023-03-01", "2023-07-01",
          "2023-09-01", "2024-03-01", "2024-07-01", "2024-11-01",
          "2025-04-01"}
RG_API = {"2019-10-01", "2020-06-01", "2021-04-01", "2022-09-01",
          "2023-07-01", "2024-03-01", "2024-07-01", "2024-11-01"}
ARM_AUDIENCES = ("https://management.azure.com",
                 "https://management.core.windows.net")
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT_ID = "0b5e4a1c-3a0e-4f8e-9a5c-6d1b2c3d4e5f"
CLIENT_SECRET = "cloudfs-test-secret~0123456789"
SUBSCRIPTION = "2b1a3c4d-5e6f-4a0b-8c9d-0e1f2a3b4c5d"
MSI_CLIENT_ID = "7d0c9b8a-6f5e-4d3c-2b1a-0f9e8d7c6b5a"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,78}[A-Za-z0-9_]$|^[A-Za-z0-9]$")
TAG_BAD = re.compile(r"[<>%&\\?/]")
SKUS = {"Standard_LRS": "Standard", "Premium_LRS": "Premium",
        "StandardSSD_LRS": "Standard", "UltraSSD_LRS": "Ultra",
        "Premium_ZRS": "Premium", "StandardSSD_ZRS": "Standard",
        "PremiumV2_LRS": "Premium", "Standard_ZRS": "Standard"}
POWERS_OK = ("running", "deallocated", "stopped", "starting", "stopping",
             "deallocating")
INCREMENTAL_ONLY = ("UltraSSD_LRS", "PremiumV2_LRS")
MAX_POLICIES = 5  # a container holds at most five stored access policies
DEFAULTS = {"token_lifetime": 3599, "grant_cap": 0.0, "snapshot_seconds": 0.5,
            "access_seconds": 0.2, "end_access_seconds": 0.2,
            "delete_seconds": 0.2, "retry_after": 1, "page_size": 2,
            "msi_enabled": True, "location": "eastus", "pagelist_max": 0}


class ArmError(Exception):
    def __init__(self, status, code, message, headers=(), target=None,
                 aad=None):
        super().__init__("%d %s: %s" % (status, code, message))
        self.status, self.code, self.message = status, code, message
        self.headers = list(headers)
        self.target = target
        self.aad = aad

    def body(self):
        if self.aad is not None:
            return self.aad
        err = {"code": self.code, "message": self.message}
        if self.target:
            err["target"] = self.target
        return {"error": err}


def aad_error(status, error, code, text):
    now = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
    trace = str(uuid.uuid4())
    return ArmError(status, error, text, aad={
        "error": error,
        "error_description": "AADSTS%d: %s Trace ID: %s Timestamp: %s"
                             % (code, text, trace, now),
        "error_codes": [code], "timestamp": now, "trace_id": trace,
        "correlation_id": str(uuid.uuid4())})


def not_found(kind, name, rg):
    return ArmError(404, "ResourceNotFound",
                    "The Resource '%s/%s' under resource group '%s' was not "
                    "found. For more details please go to "
                    "https://aka.ms/ARMResourceNotFoundFix" % (kind, name, rg))


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + \
        ".%07dZ" % int((t % 1) * 1e7)


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Op:
    """A long-running operation; `finish` runs once, when it is due."""

    def __init__(self, kind, resource, seconds, finish, fail=None,
                 on_fail=None, api_version=None):
        self.id = str(uuid.uuid4())
        self.api_version = api_version
        self.on_fail = on_fail
        self.error_status = None
        self.kind = kind
        self.resource = resource
        self.started = time.time()
        self.due = time.monotonic() + max(float(seconds), 0.0)
        self.finish = finish
        self.fail = fail  # an ArmError to end with, from a fault
        self.status = "InProgress"
        self.output = None
        self.error = None
        self.ended = None
        self.location_url = None

    def advance(self):
        if self.status != "InProgress" or time.monotonic() < self.due:
            return
        try:
            if self.fail is not None:
                raise self.fail
            self.output = self.finish()
            self.status = "Succeeded"
        except ArmError as err:
            self.status = "Failed"
            self.error_status = err.status
            self.error = {"code": err.code, "message": err.message}
        except BlobError as err:
            self.status = "Failed"
            self.error_status = 500
            self.error = {"code": "InternalExecutionError",
                          "message": str(err)}
        if self.status == "Failed" and self.on_fail is not None:
            self.on_fail()
        self.ended = time.time()


class Cloud:
    def __init__(self, blob, sas_base):
        self.blob = blob
        self.sas_base = sas_base
        self.lock = threading.RLock()
        self.reset_all()

    # --- state -------------------------------------------------------------
    def reset_all(self):
        with self.lock:
            old = [r["container"] for r in
                   list(getattr(self, "disks", {}).values()) +
                   list(getattr(self, "snapshots", {}).values())]
            self.config = dict(DEFAULTS)
            self.tenant = TENANT
            self.client_id = CLIENT_ID
            self.client_secret = CLIENT_SECRET
            self.subscription = SUBSCRIPTION
            self.tokens = {}
            self.rgs = {}
            self.vms = {}
            self.disks = {}
            self.snapshots = {}
            self.grants = {}   # resource key -> [grant]
            self.ops = {}
            self.deleted_snapshots = []
            self.reset_counters()
        for container in old:
            self.blob.delete_container(container)

    def reset_counters(self):
        with self.lock:
            self.calls = {}
            self.injected = {}
            self.faults = []
            self.blob_faults = []
            self.blob_stats = {}

    def count(self, op):
        self.calls[op] = self.calls.get(op, 0) + 1

    def advance(self):
        with self.lock:
            for op in list(self.ops.values()):
                op.advance()

    def rid(self, rg, kind, name):
        return ("/subscriptions/%s/resourceGroups/%s/providers/"
                "Microsoft.Compute/%s/%s" % (self.subscription, rg, kind,
                                             name))

    # --- entry ---------------------------------------------------------------
    def handle(self, method, path, query, headers, body, base):
        q = urllib.parse.parse_qs(query, keep_blank_values=True)
        q = {k: v[-1] for k, v in q.items()}
        parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/")]
        low = [p.lower() for p in parts]
        if low and low[0] == "_control":
            return self.control(method, low[1:], q, body)
        self.advance()
        if len(low) == 4 and low[1:] == ["oauth2", "v2.0", "token"]:
            with self.lock:
                self.count("token")
                self.check_fault("token", aad=True)
                return self.token(method, parts[0], headers, body)
        if low[:4] == ["metadata", "identity", "oauth2", "token"]:
            with self.lock:
                self.count("msi")
                self.check_fault("msi", aad=True)
                return self.msi(method, q, headers)
        if low and low[0] == "subscriptions" and len(low) >= 2:
            return self.arm(method, parts, low, q, headers, body, base)
        raise ArmError(404, "NotFound", "No route for %s %s" % (method, path))

    # --- faults ------------------------------------------------------------
    @staticmethod
    def fault_matches(spec, op):
        want = spec.get("op", "*")
        return want in ("*", op) or (want == "list" and op.startswith("list_"))\
            or (want == "get" and op.startswith("get_")) \
            or (want == "arm" and op not in ("token", "msi"))

    def take_fault(self, op, mode="sync"):
        for spec in self.faults:
            if spec.get("mode", "sync") != mode or spec["left"] <= 0:
                continue
            if self.fault_matches(spec, op):
                spec["left"] -= 1
                self.injected[op] = self.injected.get(op, 0) + 1
                return spec
        return None

    @staticmethod
    def fault_error(spec, aad=False):
        status = int(spec.get("status", 429))
        retry = spec.get("retry_after")
        headers = []
        if status == 429:
            code = spec.get("code", "TooManyRequests")
            msg = spec.get("message", "The request is being throttled as the "
                           "limit has been reached for operation type.")
            headers.append(("Retry-After", str(retry if retry is not None
                                                else 1)))
        elif status == 503:
            code = spec.get("code", "ServerBusy")
            msg = spec.get("message", "The server is currently unable to "
                           "receive requests. Please retry your request.")
            if retry is not None:
                headers.append(("Retry-After", str(retry)))
        else:
            code = spec.get("code", "InternalServerError")
            msg = spec.get("message", "An internal execution error occurred.")
            if retry is not None:
                headers.append(("Retry-After", str(retry)))
        if aad:
            err = aad_error(status, "temporarily_unavailable", 50196, msg)
            err.headers = headers
            return err
        return ArmError(status, code, msg, headers)

    def check_fault(self, op, aad=False):
        spec = self.take_fault(op)
        if spec is not None:
            raise self.fault_error(spec, aad)

    def lro_fault(self, op):
        spec = self.take_fault(op, mode="lro")
        if spec is None:
            return None
        return ArmError(int(spec.get("status", 500)),
                        spec.get("code", "InternalExecutionError"),
                        spec.get("message", "An internal execution error "
                                 "occurred. Please retry later."))

    # --- tokens ------------------------------------------------------------
    def issue(self, audience, client):
        lifetime = int(self.config["token_lifetime"])
        now = int(time.time())
        header = b64url(json.dumps({"typ": "JWT", "alg": "RS256",
                                    "kid": "cloudfs-test"}).encode())
        claims = b64url(json.dumps({
            "aud": audience, "iss": "https://sts.windows.net/%s/" % self.tenant,
            "iat": now, "nbf": now, "exp": now + lifetime, "appid": client,
            "tid": self.tenant, "oid": str(uuid.uuid4()),
            "jti": str(uuid.uuid4())}).encode())
        sig = b64url(hashlib.sha256((header + claims).encode()).digest())
        token = "%s.%s.%s" % (header, claims, sig)
        self.tokens[token] = {"aud": audience.rstrip("/"),
                              "exp": time.time() + lifetime}
        return token, lifetime

    def token(self, method, tenant, headers, body):
        if method != "POST":
            raise aad_error(405, "invalid_request", 900561,
                            "The endpoint only accepts POST requests.")
        ctype = (headers.get("Content-Type") or "").split(";")[0].strip()
        if ctype != "application/x-www-form-urlencoded":
            raise aad_error(400, "invalid_request", 900144,
                            "The request body must contain the following "
                            "parameter: 'grant_type'.")
        if tenant.lower() not in (self.tenant.lower(),):
            raise aad_error(400, "invalid_request", 90002,
                            "Tenant '%s' not found." % tenant)
        form = {k: v[-1] for k, v in urllib.parse.parse_qs(
            body.decode(errors="replace"), keep_blank_values=True).items()}
        for key in ("grant_type", "client_id", "scope"):
            if not form.get(key):
                raise aad_error(400, "invalid_request", 900144,
                                "The request body must contain the following"
                                " parameter: '%s'." % key)
        if form["grant_type"] != "client_credentials":
            raise aad_error(400, "unsupported_grant_type", 70003,
                            "The app requested an unsupported grant type "
                            "'%s'." % form["grant_type"])
        if form["client_id"] != self.client_id:
            raise aad_error(400, "unauthorized_client", 700016,
                            "Application with identifier '%s' was not found "
                            "in the directory." % form["client_id"])
        if not form.get("client_secret"):
            raise aad_error(401, "invalid_client", 7000216,
                            "'client_assertion', 'client_secret' or "
                            "'request' is required for the "
                            "'client_credentials' grant type.")
        if form["client_secret"] != self.client_secret:
            raise aad_error(401, "invalid_client", 7000215,
                            "Invalid client secret provided. Ensure the "
                            "secret being sent in the request is the client "
                            "secret value, not the client secret ID.")
        scope = form["scope"]
        if " " in scope.strip() or not scope.endswith("/.default"):
            raise aad_error(400, "invalid_scope", 1002012,
                            "The provided value for scope %s is not valid. "
                            "Client credential flows must have a scope value "
                            "with /.default suffixed to the resource "
                            "identifier (application ID URI)." % scope)
        audience = scope[:-len("/.default")].rstrip("/")
        if audience not in ARM_AUDIENCES:
            raise aad_error(400, "invalid_resource", 500011,
                            "The resource principal named %s was not found "
                            "in the tenant." % audience)
        token, lifetime = self.issue(audience + "/", self.client_id)
        return 200, {"token_type": "Bearer", "expires_in": lifetime,
                     "ext_expires_in": lifetime, "access_token": token}, \
            [("Cache-Control", "no-store, no-cache"), ("Pragma", "no-cache")]

    def msi(self, method, q, headers):
        def bad(text):
            return ArmError(400, "invalid_request", text, aad={
                "error": "invalid_request", "error_description": text})
        if method != "GET":
            raise ArmError(405, "invalid_request", "GET only", aad={
                "error": "invalid_request",
                "error_description": "Method not allowed"})
        if (headers.get("Metadata") or "").lower() != "true":
            raise bad("Required metadata header not specified")
        if headers.get("X-Forwarded-For"):
            raise bad("Request contains X-Forwarded-For header")
        if not q.get("api-version"):
            raise bad("Required query variable 'api-version' is missing")
        if q["api-version"] not in ("2018-02-01", "2019-08-01"):
            raise bad("Invalid API version")
        resource = q.get("resource")
        if not resource:
            raise bad("Required query variable 'resource' is missing")
        if not self.config["msi_enabled"]:
            raise bad("Identity not found")
        if resource.rstrip("/") not in ARM_AUDIENCES:
            raise bad("Multiple or invalid resource")
        token, lifetime = self.issue(resource, MSI_CLIENT_ID)
        now = int(time.time())
        return 200, {"access_token": token, "client_id": MSI_CLIENT_ID,
                     "expires_in": str(lifetime),
                     "expires_on": str(now + lifetime),
                     "ext_expires_in": str(lifetime), "not_before": str(now),
                     "resource": resource, "token_type": "Bearer"}, []

    def authenticate(self, headers):
        auth = headers.get("Authorization") or ""
        realm = ('Bearer authorization_uri="https://login.microsoftonline.com/'
                 '%s", error="invalid_token", error_description="%s"')
        if not auth:
            raise ArmError(401, "AuthenticationFailed",
                           "Authentication failed. The 'Authorization' header "
                           "is missing.", [("WWW-Authenticate", realm % (
                               self.tenant, "The authentication failed "
                               "because of missing 'Authorization' header."))])
        scheme, _, token = auth.partition(" ")
        info = self.tokens.get(token.strip()) \
            if scheme.lower() == "bearer" else None
        if info is None:
            raise ArmError(401, "InvalidAuthenticationToken",
                           "The access token is invalid.",
                           [("WWW-Authenticate", realm % (
                               self.tenant, "The access token is invalid."))])
        now = time.time()
        if now >= info["exp"]:
            raise ArmError(401, "ExpiredAuthenticationToken",
                           "The access token expiry UTC time '%s' is earlier "
                           "than current UTC time '%s'." % (
                               time.strftime("%m/%d/%Y %H:%M:%S",
                                             time.gmtime(info["exp"])),
                               time.strftime("%m/%d/%Y %H:%M:%S",
                                             time.gmtime(now))),
                           [("WWW-Authenticate", realm % (
                               self.tenant, "The access token expired."))])

    # --- ARM routing ---------------------------------------------------------
    def arm(self, method, parts, low, q, headers, body, base):
        from azure_arm import route  # noqa: the ARM resource handlers
        return route(self, method, parts, low, q, headers, body, base)

    # --- blob proxy counters -------------------------------------------------
    @staticmethod
    def blob_kind(method, query, rng):
        if "comp=pagelist" in query.lower():
            return "pagelist"
        if method == "GET":
            return "range_get" if rng else "get"
        return method.lower()

    def blob_begin(self, path, kind, method, rng, query):
        """Count one proxied blob request; return a fault to answer or None."""
        self.advance()
        with self.lock:
            st = self.blob_stats.setdefault(urllib.parse.unquote(path), {
                "requests": 0, "range_get": 0, "pagelist": 0, "get": 0,
                "head": 0, "bytes": 0, "statuses": {}, "ranges": []})
            st["requests"] += 1
            st[kind] = st.get(kind, 0) + 1
            if kind == "range_get":
                st["ranges"].append(rng)
            for spec in self.blob_faults:
                want = spec.get("op", "blob")
                if spec["left"] > 0 and want in ("blob", kind):
                    spec["left"] -= 1
                    key = "blob_" + kind
                    self.injected[key] = self.injected.get(key, 0) + 1
                    status = int(spec.get("status", 503))
                    code = spec.get("code") or {
                        503: "ServerBusy", 500: "InternalError",
                        403: "AuthenticationFailed"}.get(status, "Unknown")
                    msg = spec.get("message", "Injected by the test.")
                    return status, code, msg, spec.get("retry_after")
        return None

    def page_pagelist(self, query, xml):
        """Cut a Get Page Ranges answer to maxresults (or the pagelist_max
        setting) ranges from the marker on, as the service does for large
        page lists; None when the answer goes out whole."""
        q = {k: v[-1] for k, v in urllib.parse.parse_qs(query).items()}
        limits = [int(q["maxresults"])] if q.get("maxresults", "").isdigit() \
            else []
        if self.config["pagelist_max"]:
            limits.append(int(self.config["pagelist_max"]))
        if not limits and "marker" not in q:
            return None
        ranges = re.findall(r"<(PageRange|ClearRange)><Start>(\d+)</Start>"
                            r"<End>(\d+)</End></\1>", xml)
        offset = 0
        if q.get("marker"):
            m = re.fullmatch(r"2!(\d+)!", q["marker"])
            if not m or int(m.group(1)) > len(ranges):
                raise ValueError("bad marker")
            offset = int(m.group(1))
        end = min([offset + max(n, 1) for n in limits] + [len(ranges)])
        body = "".join("<%s><Start>%s</Start><End>%s</End></%s>"
                       % (t, a, b, t) for t, a, b in ranges[offset:end])
        marker = "<NextMarker>2!%d!</NextMarker>" % end \
            if end < len(ranges) else "<NextMarker />"
        return ('<?xml version="1.0" encoding="utf-8"?><PageList>%s%s'
                "</PageList>" % (body, marker))

    def blob_end(self, path, kind, status, sent):
        with self.lock:
            st = self.blob_stats.get(urllib.parse.unquote(path))
            if st is not None:
                st["bytes"] += sent
                key = str(status)
                st["statuses"][key] = st["statuses"].get(key, 0) + 1

    # --- control -------------------------------------------------------------
    def control(self, method, what, q, body):
        from azure_control import control  # noqa: seeding, faults, state
        return control(self, method, what, q, body)

    # --- seeding (used by the control endpoint) ------------------------------
    def seed_disk(self, spec):
        rg = spec["resourceGroup"]
        name = spec["name"]
        size = int(spec["sizeBytes"])
        if size <= 0 or size % (1 << 20):
            raise ArmError(400, "InvalidParameter",
                           "sizeBytes must be a positive multiple of 1 MiB")
        with self.lock:
            self.need_rg(rg)
            key = self.rid(rg, "disks", name).lower()
            if key in self.disks:
                raise ArmError(409, "Conflict", "disk %s exists" % name)
        sku = spec.get("sku", "Premium_LRS")
        if sku not in SKUS:
            raise ArmError(400, "InvalidParameter", "unknown sku " + sku)
        container = "md-" + uuid.uuid4().hex[:16]
        self.blob.create_container(container)
        self.blob.create_page_blob(container, "abcd", size + VHD_FOOTER_SIZE)
        raw = spec.get("rawPath")
        written = 0
        if raw:
            for offset, data in data_runs(raw, size):
                self.blob.put_pages(container, "abcd", offset, data)
                written += len(data)
        self.blob.put_pages(container, "abcd", size, vhd_footer(size))
        disk = {"rg": self.rgs[rg.lower()]["name"], "name": name,
                "location": spec.get("location") or self.config["location"],
                "sku": sku, "size": size, "tags": spec.get("tags") or {},
                "os_type": spec.get("osType"),
                "hyperv": spec.get("hyperVGeneration", "V2"),
                "unique_id": str(uuid.uuid4()), "created": time.time(),
                "container": container, "blob": "abcd", "managed_by": None,
                "zones": spec.get("zones"), "written": written}
        disk["id"] = self.rid(disk["rg"], "disks", name)
        with self.lock:
            self.disks[disk["id"].lower()] = disk
        return disk

    def need_rg(self, rg):
        if rg.lower() not in self.rgs:
            raise ArmError(404, "ResourceGroupNotFound",
                           "Resource group '%s' could not be found." % rg)
        return self.rgs[rg.lower()]

    # --- grants --------------------------------------------------------------
    def live_grants(self, key):
        now = time.time()
        return [g for g in self.grants.get(key, []) if g["expiry"] > now]

    def write_policies(self, res, key):
        grants = self.grants.get(key, [])[-MAX_POLICIES:]
        self.grants[key] = grants
        self.blob.set_policies(res["container"], [
            (g["id"], g["start"], g["expiry"], "r") for g in grants])

    def grant(self, res, key, seconds):
        cap = float(self.config["grant_cap"] or 0)
        if cap > 0:
            seconds = min(seconds, cap)
        now = time.time()
        g = {"id": str(uuid.uuid4()), "start": now,
             "expiry": now + seconds, "issued": now}
        self.grants.setdefault(key, []).append(g)
        self.write_policies(res, key)
        sas = service_sas(res["container"], res["blob"], "r", g["start"],
                          g["expiry"], g["id"])
        g["url"] = "%s/devstoreaccount1/%s/%s?%s" % (
            self.sas_base, res["container"], res["blob"], sas)
        return g["url"]

    def revoke(self, res, key):
        self.grants[key] = []
        self.write_policies(res, key)
