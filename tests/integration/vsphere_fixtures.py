# SPDX-License-Identifier: MIT
"""The vSphere emulator for the integration tests: tests/emulators/vcsim
(govmomi's simulator plus ExportVm leases, NFC streams, OVF descriptors,
paging and session-checked datastore reads), built once by
tests/emulators/build-vcsim.sh and started once per session over HTTPS with
a 2048-bit self-signed certificate for 127.0.0.1. Six VMs: DC0_C0_RP0_VM0
(on, 4 MiB), _VM1 (off, 2 and 3 MiB), _VM2 (off, changed block tracking,
4 MiB or -cbt-mib), DC0_H0_VM0 (on, folder Prod, 3 MiB), _VM1 (template,
2 MiB), _VM2 (on, changed block tracking, no config.createDate, 4 MiB).

    def test_x(vcsim):                      # reset before each test
        vcsim.url, vcsim.username, vcsim.password, vcsim.ca_file,
        vcsim.thumbprint                    # "AA:BB:..." SHA-1 of the cert
        vcsim.vms()                         # [{"name", "moref", "power_state",
                                            #   "template", "path", "disks": [...]}]
        vcsim.vm("DC0_C0_RP0_VM1")["disks"][0]["flat_path"]
        vcsim.seed("DC0_C0_RP0_VM1", extents=[(0, 4096)], disk=0, seed=1)
        vcsim.faults(nfc_range=True, lease_timeout=3); vcsim.counters()
        vcsim.faults(cbt_span=MiB, cbt_off=True, cbt_lie="overlap")
                                            # QueryChangedDiskAreas switches;
                                            # counters cbt.answers,
                                            # cbt.snapshot, cbt.faults,
                                            # folder.bytes, folder.gets
        s = vcsim.soap(); s.login(); s.call("ExportVm", this=...)
"""

import json
import os
import random
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path
from xml.sax.saxutils import escape

import pytest

from procs import stop_process

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "tests" / "emulators" / "build-vcsim.sh"
START_TIMEOUT = 30

SOAPENV = "http://schemas.xmlsoap.org/soap/envelope/"
VIM = "urn:vim25"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
NS = {"soapenv": SOAPENV, "vim": VIM}


def build_vcsim():
    """Path of the emulator binary; pytest.skip with the reason if it
    cannot be built here."""
    if shutil.which("go") is None:
        pytest.skip("go is missing (Debian package golang-go)")
    if not Path("/usr/share/gocode/src/github.com/vmware/govmomi/simulator").is_dir():
        pytest.skip("govmomi is missing (Debian package "
                    "golang-github-vmware-govmomi-dev)")
    r = subprocess.run([str(BUILD)], capture_output=True, text=True,
                       timeout=600)
    if r.returncode == 2:
        pytest.skip(r.stderr.strip())
    if r.returncode != 0:
        raise RuntimeError("build-vcsim.sh failed:\n%s" % r.stderr[-4000:])
    return r.stdout.strip().splitlines()[-1]


def make_cert(folder):
    """A 2048-bit self-signed certificate for IP 127.0.0.1:
    (cert path, key path, SHA-1 thumbprint "AA:BB:...")."""
    cert, key = Path(folder) / "vcsim.crt", Path(folder) / "vcsim.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True)
    out = subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-noout", "-fingerprint",
         "-sha1"], check=True, capture_output=True, text=True).stdout
    return cert, key, out.strip().split("=", 1)[1].upper()


class SoapFault(Exception):
    """A SOAP fault: .name is the fault type ("InvalidLogin",
    "NotAuthenticated", ...), .status the HTTP status."""

    def __init__(self, name, message, status, detail):
        super().__init__("%s: %s" % (name, message))
        self.name, self.message, self.status, self.detail = \
            name, message, status, detail


def moref(elem):
    """(type, value) of a ManagedObjectReference element."""
    return elem.get("type"), (elem.text or "").strip()


def this(ref):
    return '<_this type="%s">%s</_this>' % (escape(ref[0]), escape(ref[1]))


def mo(tag, ref):
    return '<%s type="%s">%s</%s>' % (tag, escape(ref[0]), escape(ref[1]), tag)


class Soap:
    """A raw SOAP client: urllib, hand-written envelopes, the session
    cookie kept by hand (the way a C client does it)."""

    def __init__(self, url, ca_file=None):
        self.url = url
        self.cookie = None
        self.ctx = ssl.create_default_context(cafile=ca_file) \
            if url.startswith("https") else None
        self.content = None

    def post(self, body):
        env = ('<?xml version="1.0" encoding="UTF-8"?>'
               '<soapenv:Envelope xmlns:soapenv="%s" xmlns:xsd='
               '"http://www.w3.org/2001/XMLSchema" xmlns:xsi="%s">'
               '<soapenv:Body>%s</soapenv:Body></soapenv:Envelope>'
               % (SOAPENV, XSI, body))
        req = urllib.request.Request(self.url, data=env.encode(), headers={
            "Content-Type": "text/xml; charset=utf-8",
            "SOAPAction": '"urn:vim25/6.5"'})
        if self.cookie:
            req.add_header("Cookie", "vmware_soap_session=%s" % self.cookie)
        try:
            with urllib.request.urlopen(req, context=self.ctx,
                                        timeout=30) as resp:
                status, headers, data = resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as exc:
            status, headers, data = exc.code, exc.headers, exc.read()
        for line in headers.get_all("Set-Cookie") or []:
            name, _, rest = line.partition("=")
            if name.strip() == "vmware_soap_session":
                self.cookie = rest.split(";", 1)[0].strip('"')
        root = ET.fromstring(data)
        body = root.find("soapenv:Body", NS)
        fault = body.find("soapenv:Fault", NS)
        if fault is not None:
            detail = fault.find("detail")
            name = ""
            if detail is not None and len(detail):
                d = detail[0]
                # the type is in xsi:type (prefix varies) or the tag name
                name = d.get("{%s}type" % XSI) or d.tag.split("}")[-1]
                name = name.split(":")[-1]
                if name.endswith("Fault") and name != "Fault":
                    name = name[:-len("Fault")]
            raise SoapFault(name, fault.findtext("faultstring"), status,
                            detail)
        assert status == 200, status
        return body[0]

    def call(self, method, ref, args=""):
        return self.post('<%s xmlns="urn:vim25">%s%s</%s>'
                         % (method, this(ref), args, method))

    # --- the usual flow ---
    def service_content(self):
        res = self.call("RetrieveServiceContent",
                        ("ServiceInstance", "ServiceInstance"))
        rv = res.find("vim:returnval", NS)
        self.content = {child.tag.split("}")[-1]: moref(child)
                        for child in rv if child.get("type")}
        return self.content

    def login(self, username="user", password="pass"):
        if self.content is None:
            self.service_content()
        return self.call("Login", self.content["sessionManager"],
                         "<userName>%s</userName><password>%s</password>"
                         % (escape(username), escape(password)))

    def retrieve(self, obj, props, max_objects=None):
        """RetrievePropertiesEx on one object: {prop: element}."""
        spec = ('<specSet><propSet><type>%s</type>%s</propSet>'
                '<objectSet>%s</objectSet></specSet>'
                % (obj[0], "".join("<pathSet>%s</pathSet>" % p for p in props),
                   mo("obj", obj)))
        res = self.call("RetrievePropertiesEx",
                        self.content["propertyCollector"],
                        spec + "<options/>")
        out = {}
        for o in res.findall("vim:returnval/vim:objects", NS):
            for p in o.findall("vim:propSet", NS):
                out[p.findtext("vim:name", namespaces=NS)] = \
                    p.find("vim:val", NS)
        return out

    def wait_task(self, task, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            info = self.retrieve(task, ["info"])["info"]
            state = info.findtext("vim:state", namespaces=NS)
            if state == "success":
                return info.find("vim:result", NS)
            if state == "error":
                raise RuntimeError("task failed: %s" % ET.tostring(info))
            if time.monotonic() > deadline:
                raise TimeoutError("task %s still %s" % (task, state))
            time.sleep(0.05)


class Vcsim:
    """One running emulator."""

    username = "user"
    password = "pass"

    def __init__(self, binary, workdir, tls=True, extra_args=()):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        tmp = self.workdir / "tmp"
        tmp.mkdir(exist_ok=True)
        argv = [binary, "-workdir", str(self.workdir / "nfc")]
        self.ca_file = self.thumbprint = None
        if tls:
            cert, key, self.thumbprint = make_cert(self.workdir)
            self.ca_file = str(cert)
            argv += ["-cert", str(cert), "-key", str(key)]
        argv += list(extra_args)
        (self.workdir / "nfc").mkdir(exist_ok=True)
        self.log = open(self.workdir / "vcsim.log", "wb")
        env = dict(os.environ, TMPDIR=str(tmp))
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE,
                                     stderr=self.log, env=env,
                                     stdin=subprocess.DEVNULL)
        info = {}
        deadline = time.monotonic() + START_TIMEOUT
        while "READY" not in info:
            line = self.proc.stdout.readline().decode()
            if not line or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("vcsim did not start; log:\n%s"
                                   % self.log_text())
            word, _, value = line.strip().partition(" ")
            info[word] = value
        self.url = info["URL"]                       # .../sdk
        self.port = int(info["PORT"])
        self.control_port = int(info["CONTROL"])
        self.datastore = info["DATASTORE"]
        self.base = self.url.rsplit("/sdk", 1)[0]    # scheme://127.0.0.1:port

    def log_text(self):
        try:
            return (self.workdir / "vcsim.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # --- the control endpoint ---
    def _control(self, method, path, obj=None):
        data = json.dumps(obj).encode() if obj is not None else None
        req = urllib.request.Request(
            "http://127.0.0.1:%d/_control/%s" % (self.control_port, path),
            method=method, data=data)
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"{}")

    def state(self):
        return self._control("GET", "state")

    def vms(self):
        return self.state()["vms"]

    def vm(self, name):
        for v in self.vms():
            if v["name"] == name:
                return v
        raise KeyError(name)

    def counters(self):
        return self.state()["counters"]

    def counter(self, name):
        return self.counters().get(name, 0)

    def leases(self):
        return self.state()["leases"] or []

    def faults(self, **switches):
        """Set switches (see Faults in tests/emulators/vcsim/front.go);
        returns all of them."""
        return self._control("PUT", "faults", switches)

    def reset(self):
        return self._control("POST", "reset")

    def expire_sessions(self):
        return self._control("POST", "expire-sessions")["expired"]

    def power(self, vm, state):
        return self._control("POST", "power", {"vm": vm, "state": state})

    def delete_vm(self, vm):
        return self._control("POST", "delete-vm", {"vm": vm})

    # --- the disks' bytes ---
    def seed(self, vm, extents=None, disk=0, seed=1, data=None):
        """Write known bytes into a VM's flat extent: `data` at offset 0, or
        random bytes (from `seed`) over `extents` [(offset, length)], the
        rest left as holes. Returns the flat file's path."""
        path = self.vm(vm)["disks"][disk]["flat_path"]
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            f.truncate(0)
            f.truncate(size)
            if data is not None:
                f.write(data)
            rnd = random.Random(seed)
            for off, length in extents or ():
                f.seek(off)
                f.write(rnd.randbytes(length))
        return path

    def soap(self):
        return Soap(self.url, self.ca_file)

    def stop(self):
        stop_process(self.proc, 10)
        self.proc.stdout.close()
        self.log.close()


@pytest.fixture(scope="session")
def vcsim_bin():
    return build_vcsim()


@pytest.fixture(scope="session")
def vcsim_session(vcsim_bin, tmp_path_factory):
    emu = Vcsim(vcsim_bin, tmp_path_factory.mktemp("vcsim"))
    yield emu
    emu.stop()


@pytest.fixture
def vcsim(vcsim_session):
    """The session's emulator, reset (switches, counters, leases,
    snapshots, power states) before each test."""
    vcsim_session.reset()
    yield vcsim_session
