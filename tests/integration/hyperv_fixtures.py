# SPDX-License-Identifier: MIT
"""The Hyper-V emulator for the integration tests: tests/emulators/
winrm_fake.py (WinRM over HTTPS with a self-signed certificate) and a
private smbd sharing the export folder as //127.0.0.1:<port>/cloudfs-exports
(HyperV(base, smbd=False): none; read the export folder as export_mount).
tools/bench and tests/emulators/hyperv_launcher.py use HyperV too.

    from hyperv_fixtures import hyperv, hyperv_session   # noqa: F401

`hyperv_session` starts both once per session; `hyperv` resets it for
each test (counters, switches, shells, jobs, export folders) and gives the
same HyperV object:
    .wsman_url .username .password .ca_file .computer
    .smb_url .smb_port .smb_user .smb_password .export_dir .export_root
    .seed(inventory, raws={windows_path: bytes or host file})
    .faults(**switches) .stats() .state() .reset()
    .winrm(script, transport="ntlm"|"basic", ...) -> (stdout, stderr, code)
    .smbclient(command) -> CompletedProcess
    .smb_sessions() -> number of SMB connections smbd has open
    .smb_drop_sessions() -> how many connections it broke (SIGKILL)

hyperv_config(hv, folder, ...) writes the password files into folder and
gives a [hyperv] section for the emulator (over SMB, or export_mount).
"""

import base64
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from procs import stop_process

REPO = Path(__file__).resolve().parents[2]
FAKE = REPO / "tests" / "emulators" / "winrm_fake.py"
EXPORT_ROOT = "D:\\cloudfs-exports"
SMB_USER = "cfs-smbtest"
START_TIMEOUT = 20

# requests_ntlm/ntlm_auth need MD4, which OpenSSL 3 keeps in its legacy
# provider: NTLM clients run with this configuration.
LEGACY_CNF = """openssl_conf = openssl_init
[openssl_init]
providers = provider_sect
[provider_sect]
default = default_sect
legacy = legacy_sect
[default_sect]
activate = 1
[legacy_sect]
activate = 1
"""

CLIENT = r"""
import base64, json, sys
from winrm.protocol import Protocol
a = json.loads(sys.argv[1])
p = Protocol(a["url"], transport=a["transport"], username=a["user"],
             password=a["password"], server_cert_validation="validate",
             ca_trust_path=a["ca"], operation_timeout_sec=a["op"],
             read_timeout_sec=a["op"] + 5)
shell = p.open_shell(codepage=a.get("codepage", 437))
enc = base64.b64encode(a["script"].encode("utf-16-le")).decode()
cmd = p.run_command(shell, "powershell",
                    ["-NoProfile", "-NonInteractive", "-EncodedCommand", enc])
out, err, code = p.get_command_output(shell, cmd)
p.cleanup_command(shell, cmd)
p.close_shell(shell)
print(json.dumps({"out": base64.b64encode(out).decode(),
                  "err": base64.b64encode(err).decode(), "code": code}))
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def need(*tools):
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip("%s is missing" % tool)


def ensure_smb_user():
    """A dedicated system account for smbd's tdbsam user."""
    try:
        pwd.getpwnam(SMB_USER)
        return True
    except KeyError:
        pass
    if os.geteuid() != 0:
        return False
    r = subprocess.run(["useradd", "--system", "--no-create-home",
                        "--shell", "/usr/sbin/nologin", SMB_USER],
                       capture_output=True, text=True)
    return r.returncode == 0


class PrivateSmbd:
    """smbd on 127.0.0.1:<port> sharing one folder read-only."""

    def __init__(self, base, share_dir, user, password):
        self.base = base
        self.port = free_port()
        for d in ("private", "lock", "state", "pid", "cache", "ncalrpc"):
            os.makedirs(os.path.join(base, d), exist_ok=True)
        self.conf = os.path.join(base, "smb.conf")
        with open(self.conf, "w") as f:
            f.write(f"""[global]
    workgroup = WORKGROUP
    server role = standalone server
    smb ports = {self.port}
    bind interfaces only = yes
    interfaces = 127.0.0.1
    disable netbios = yes
    private dir = {base}/private
    lock directory = {base}/lock
    state directory = {base}/state
    pid directory = {base}/pid
    cache directory = {base}/cache
    ncalrpc dir = {base}/ncalrpc
    passdb backend = tdbsam:{base}/private/passdb.tdb
    log file = {base}/smbd.log
    log level = 1
    map to guest = Never
    restrict anonymous = 2
    load printers = no
    printing = bsd
    printcap name = /dev/null
    disable spoolss = yes
[cloudfs-exports]
    path = {share_dir}
    read only = yes
    browseable = yes
    valid users = {user}
""")
        r = subprocess.run(["smbpasswd", "-c", self.conf, "-s", "-a", user],
                           input="%s\n%s\n" % (password, password),
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError("smbpasswd: %s%s" % (r.stdout, r.stderr))
        self.log = open(os.path.join(base, "smbd.stdout"), "wb")
        # setsid: smbd signals its whole process group when it stops.
        self.proc = subprocess.Popen(
            ["setsid", "smbd", "--foreground", "--no-process-group",
             "-s", self.conf, "--debug-stdout"],
            stdout=self.log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                if self.proc.poll() is not None or \
                        time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("smbd did not start:\n" + self.log_text())
                time.sleep(0.05)

    def log_text(self):
        out = ""
        for name in ("smbd.stdout", "smbd.log"):
            try:
                out += Path(self.base, name).read_text(errors="replace")
            except FileNotFoundError:
                pass
        return out[-4000:]

    def stop(self):
        if self.proc.poll() is None:
            # setsid exec'd smbd, so its pid leads its own process group;
            # the group holds the per-connection children too.
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        try:
            os.killpg(self.proc.pid, 0)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.log.close()


class HyperV:
    """winrm_fake.py plus a private smbd; see the module docstring."""

    def __init__(self, base, username="Administrator",
                 password="Hyper-V p4ss!", computer="HYPERV01", smbd=True):
        self.base = Path(base)
        self.username, self.password = username, password
        self.computer = computer
        self.export_root = EXPORT_ROOT
        self.export_dir = str(self.base / "exports")
        os.makedirs(self.export_dir)
        os.chmod(self.base, 0o755)
        os.chmod(self.export_dir, 0o755)
        self.ca_file = str(self.base / "cert.pem")
        key = str(self.base / "key.pem")
        r = subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
             "-keyout", key, "-out", self.ca_file, "-days", "2",
             "-subj", "/CN=127.0.0.1", "-addext",
             "subjectAltName=IP:127.0.0.1"], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError("openssl: " + r.stderr)
        self.legacy_cnf = str(self.base / "openssl-legacy.cnf")
        Path(self.legacy_cnf).write_text(LEGACY_CNF)
        self.raw_dir = self.base / "raws"
        self.raw_dir.mkdir()
        work = self.base / "work"
        work.mkdir()
        self.log = open(self.base / "winrm_fake.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(FAKE), "--cert", self.ca_file, "--key", key,
             "--user", username, "--password", password,
             "--export-root", "%s=%s" % (EXPORT_ROOT, self.export_dir),
             "--workdir", str(work), "--computer", computer],
            stdout=subprocess.PIPE, stderr=self.log, stdin=subprocess.DEVNULL)
        self.port = self.control_port = None
        self.smbd = None
        deadline = time.monotonic() + START_TIMEOUT
        while self.port is None:
            line = self.proc.stdout.readline().decode()
            if not line or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("winrm_fake did not start:\n" +
                                   self.log_text())
            word, _, value = line.strip().partition(" ")
            if word == "CONTROL":
                self.control_port = int(value)
            elif word == "PORT":
                self.port = int(value)
        self.wsman_url = "https://127.0.0.1:%d/wsman" % self.port
        self.smb_user = SMB_USER
        self.smb_password = "smb-" + password
        self.smb_port = self.smb_url = None
        if not smbd:
            return
        try:
            self.smbd = PrivateSmbd(str(self.base / "smbd"), self.export_dir,
                                    SMB_USER, self.smb_password)
        except Exception:
            self.stop()
            raise
        self.smb_port = self.smbd.port
        self.smb_url = "smb://127.0.0.1:%d/cloudfs-exports" % self.smb_port

    def log_text(self):
        try:
            return (self.base / "winrm_fake.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # ---- control ---------------------------------------------------------
    def _control(self, method, path, obj=None):
        data = json.dumps(obj).encode() if obj is not None else None
        req = urllib.request.Request(
            "http://127.0.0.1:%d%s" % (self.control_port, path),
            method=method, data=data)
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read() or b"{}")

    def stats(self):
        return self._control("GET", "/_control/stats")

    def state(self):
        return self._control("GET", "/_control/state")

    def faults(self, **switches):
        return self._control("POST", "/_control/faults", switches)

    def reset(self):
        return self._control("POST", "/_control/reset", {})

    def seed(self, inventory, raws=None):
        """Replace the inventory; raws maps a disk's Windows path to its
        merged raw content (bytes, or a host file path)."""
        inv = json.loads(json.dumps(inventory))
        vhds = {v["Path"].lower(): v for v in inv.setdefault("vhds", [])}
        for i, (path, raw) in enumerate((raws or {}).items()):
            if isinstance(raw, (bytes, bytearray)):
                dst = self.raw_dir / ("disk%d-%d.raw" % (len(os.listdir(
                    self.raw_dir)), i))
                dst.write_bytes(raw)
                raw = str(dst)
            entry = vhds.get(path.lower())
            if entry is None:
                entry = {"Path": path}
                inv["vhds"].append(entry)
                vhds[path.lower()] = entry
            entry["Raw"] = str(raw)
        return self._control("POST", "/_control/seed", inv)

    # ---- clients ---------------------------------------------------------
    def winrm(self, script, transport="ntlm", password=None,
              operation_timeout=5, codepage=437, timeout=60):
        """Run a script with python3-winrm; (stdout, stderr, exit code).
        Raises RuntimeError with the client's error when it fails."""
        args = {"url": self.wsman_url, "transport": transport,
                "user": self.username, "password": password or self.password,
                "ca": self.ca_file, "op": operation_timeout,
                "script": script, "codepage": codepage}
        env = dict(os.environ, OPENSSL_CONF=self.legacy_cnf)
        env.pop("REQUESTS_CA_BUNDLE", None)
        r = subprocess.run(["/usr/bin/python3", "-c", CLIENT,
                            json.dumps(args)], capture_output=True,
                           text=True, env=env, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(r.stderr[-3000:])
        res = json.loads(r.stdout)
        return (base64.b64decode(res["out"]), base64.b64decode(res["err"]),
                res["code"])

    def smbclient(self, command, user=None, password=None, cwd=None):
        """Run smbclient; files it gets land in @cwd."""
        return subprocess.run(
            ["smbclient", "-p", str(self.smb_port), "//127.0.0.1/cloudfs-exports",
             "-U", "%s%%%s" % (user or self.smb_user,
                               password or self.smb_password),
             "-m", "SMB3", "-c", command],
            capture_output=True, text=True, timeout=60, cwd=cwd)

    def _smb_session_pids(self):
        r = subprocess.run(["smbstatus", "-s", self.smbd.conf, "-b"],
                           capture_output=True, text=True, timeout=30)
        return [int(line.split()[0]) for line in r.stdout.splitlines()
                if line.split()[1:2] == [self.smb_user]]

    def smb_sessions(self):
        return len(self._smb_session_pids())

    def smb_drop_sessions(self):
        """Kill the smbd processes serving the SMB connections: their
        clients see the connections break."""
        pids = self._smb_session_pids()
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        return len(pids)

    def stop(self):
        if self.smbd is not None:
            self.smbd.stop()
        stop_process(self.proc, 10)
        self.proc.stdout.close()
        self.log.close()


def hyperv_config(hv, folder, auth="ntlm", password=None, smb_password=None,
                  export_mount=None, extra=""):
    """A [hyperv] section for @hv; the password files go into @folder."""
    folder = Path(folder)
    pw = folder / "hv.pass"
    pw.write_text((password or hv.password) + "\n")
    pw.chmod(0o600)
    text = ("[hyperv]\nurl = %s\nusername = %s\npassword_file = %s\n"
            "auth = %s\nca_file = %s\nexport_path = %s\n"
            "operation_timeout = 2\n" % (hv.wsman_url, hv.username, pw, auth,
                                         hv.ca_file, hv.export_root))
    if export_mount:
        text += "export_mount = %s\n" % export_mount
    else:
        spw = folder / "smb.pass"
        spw.write_text(smb_password or hv.smb_password)
        spw.chmod(0o600)
        text += ("smb_url = %s\nsmb_username = WORKGROUP\\%s\n"
                 "smb_password_file = %s\n" % (hv.smb_url, hv.smb_user, spw))
    return text + extra


_SHARED = {"hv": None, "base": None, "users": 0}


@pytest.fixture(scope="session")
def hyperv_session():
    """Started once per session: test modules that import this fixture
    share one fake and one smbd."""
    need("openssl", "qemu-img", "smbd", "smbpasswd", "smbclient", "setsid")
    if not ensure_smb_user():
        pytest.skip("no system user %s for smbd (needs root to create)"
                    % SMB_USER)
    if _SHARED["hv"] is None:
        # Not under pytest's basetemp: that is 0700 and smbd serves files
        # as the share's user, who must be able to walk to them.
        base = tempfile.mkdtemp(prefix="cfs-hyperv-")
        try:
            _SHARED["hv"] = HyperV(base)
        except Exception:
            shutil.rmtree(base, ignore_errors=True)
            raise
        _SHARED["base"] = base
    _SHARED["users"] += 1
    try:
        yield _SHARED["hv"]
    finally:
        _SHARED["users"] -= 1
        if _SHARED["users"] == 0:
            _SHARED["hv"].stop()
            shutil.rmtree(_SHARED["base"], ignore_errors=True)
            _SHARED["hv"] = _SHARED["base"] = None


@pytest.fixture
def hyperv(hyperv_session):
    hyperv_session.reset()
    yield hyperv_session
    state = hyperv_session.state()
    assert state["live_shells"] == 0, "shells left open: %r" % state["shells"]
