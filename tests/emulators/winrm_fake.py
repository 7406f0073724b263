#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A Hyper-V host for cloudfs tests: WinRM (WS-Management over SOAP 1.2,
HTTPS only) running a documented subset of PowerShell against a JSON
inventory, with exports that write real VHDX files into a host folder.

    python3 winrm_fake.py --cert C --key K --user U --password P \\
        --export-root 'D:\\cloudfs-exports=/host/dir' --workdir W \\
        [--seed inventory.json] [--computer HYPERV01]

Prints, flushed, "CONTROL <port>" then "PORT <port>" (read until PORT);
serves until SIGTERM.  WinRM is https://127.0.0.1:PORT/wsman; the
control endpoint is plain HTTP on CONTROL.  Standard library only
(plus /usr/bin/qemu-img for exports).

HTTP
----
* POST /wsman only (other paths 404, other methods 405), HTTP/1.1
  keep-alive.  Content-Type must be application/soap+xml;charset=UTF-8
  (else 415).  Answers are application/soap+xml;charset=UTF-8, 200 or, for
  a SOAP fault, 500.
* Auth (checked before anything else): Basic (user or .\\user or
  HOST\\user) or NTLMv2 under the scheme "NTLM" or "Negotiate" (raw
  NTLMSSP tokens; SPNEGO/Kerberos tokens are refused).  NTLM is a
  three-leg exchange on ONE connection: NEGOTIATE -> 401 with
  "WWW-Authenticate: <scheme> <CHALLENGE>" -> AUTHENTICATE + body; the
  connection then stays authenticated, later requests on it need no
  Authorization header.  NTLMv2 proof, MIC and channel binding
  (tls-server-end-point, SHA-256 of the certificate) are verified; see
  ntlm_server.py.  Missing or wrong credentials: 401 with
  "WWW-Authenticate: Negotiate", "WWW-Authenticate: NTLM" and
  "WWW-Authenticate: Basic realm=\\"WSMAN\\"".  Plain HTTP is not served at
  all (real WinRM needs NTLM message encryption there).

WS-Management
-------------
Envelope headers: a:Action, a:MessageID (uuid:...), w:ResourceURI
(http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd) are
required; w:MaxEnvelopeSize (bytes the answer may have, default 153600),
w:OperationTimeout (PTnS, default PT60S), w:SelectorSet (ShellId),
w:OptionSet, w:Locale, p:DataLocale, a:To, a:ReplyTo are understood; an
unknown header with mustUnderstand="true" is a s:MustUnderstand fault.
Every answer carries a:RelatesTo = the request's MessageID.
  Create   .../ws/2004/09/transfer/Create, body rsp:Shell (InputStreams,
           OutputStreams); option WINRS_CODEPAGE (437 default, 65001
           UTF-8) is the encoding of stdout.  Answers x:ResourceCreated
           with the ShellId selector and rsp:Shell/rsp:ShellId.
  Command  .../windows/shell/Command, selector ShellId, body
           rsp:CommandLine/rsp:Command (+ rsp:Arguments).  The command line
           (Command and Arguments joined by spaces) must be
           `powershell[.exe] [-NoProfile] [-NonInteractive] [-NoLogo]
           [-ExecutionPolicy X] -EncodedCommand <base64 UTF-16LE>`
           (-enc/-e/-ec accepted; flag names case-insensitive).  Anything
           else exits 1 with a cmd.exe style message on stderr.  Unless
           option WINRS_SKIP_CMD_SHELL is TRUE, a line over 8191 chars
           fails ("The command line is too long.") as cmd.exe does.
           Answers rsp:CommandResponse/rsp:CommandId.
  Receive  .../windows/shell/Receive, body rsp:Receive/rsp:DesiredStream
           CommandId="..." (stdout stderr).  Waits until output exists or
           the command ends, at most OperationTimeout, then answers the
           s:Receiver / w:TimedOut fault with WSManFault Code="2150858793":
           send Receive again.  Each answer carries at most piece_size bytes
           (default 4096) of each stream as base64 rsp:Stream elements;
           the last one adds End="true" streams and rsp:CommandState
           State=".../CommandState/Done" with rsp:ExitCode.  Before that
           State is ".../CommandState/Running".
  Signal   .../windows/shell/Signal, rsp:Signal CommandId="..." with
           rsp:Code .../signal/terminate (or ctrl_c): stops the command;
           answers rsp:SignalResponse.
  Delete   .../ws/2004/09/transfer/Delete: ends the shell and its commands.
Faults (HTTP 500, s:Fault with a w:WSManFault Code): unknown ShellId
(w:InvalidSelectors, 2150858843), unknown CommandId (w:InvalidParameter,
2150858882), unknown action (a:ActionNotSupported, 2150858771), other
ResourceURI (w:DestinationUnreachable, 2150858770), answer larger than
MaxEnvelopeSize or a request over 500 KiB (w:EncodingLimit, 2150858817),
more than max_shells shells for the user (w:QuotaLimit, 2150859173), bad
XML or a missing header (w:SchemaValidationError / a:InvalidMessageInformation
Header, 2150858817).

PowerShell
----------
Each Command is a fresh powershell.exe: nothing carries from one Command to
the next except what the host (Hyper-V) keeps.  stdout lines end in CRLF.
Errors go to stderr as CLIXML: "#< CLIXML\\r\\n" then one <Objs
Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">
holding <S S="Error">line_x000D__x000A_</S> records (first line
"<Cmdlet> : <message>") and <Obj S="progress"> records; progress records
also come on success ("Preparing modules for first use." before the first
Hyper-V cmdlet, and export progress), so non-empty stderr is not failure:
the exit code is.  Exit code: 1 when the script stops on an error
($ErrorActionPreference = 'Stop' or -ErrorAction Stop, a parse error, or
anything unsupported) or when the LAST statement failed; else 0.

Syntax: statements separated by newlines or ';'; `#` comments; pipelines
with '|'; arguments as 'single quoted' (with '' for '), "double quoted"
without $ or backtick, bare words (names, numbers, paths, *.vhdx), comma
lists (a,b,c); switches -X and -X:$true/-X:$false.  Assignments only of
$ErrorActionPreference and $ProgressPreference to 'Stop', 'Continue' or
'SilentlyContinue' ($ProgressPreference = 'SilentlyContinue' drops
progress records).  No other variables, no $(...), (...), {...},
@(...), [types], redirection, or call operator: these, unknown cmdlets and
unknown parameters are errors (exit 1, message starting "winrm_fake:" for
what the fake does not implement).  Common parameter -ErrorAction.
Cmdlets (parameter names case-insensitive, positional where shown):
  Get-VM [[-Name] n[,n]] | [-Id guid]    names may hold * ?; an unknown
      plain name is an error "Hyper-V was unable to find a virtual machine
      with name "x"."  (-VMName is an alias of -Name)
  Get-VMHardDiskDrive [-VMName] n        (or VMs piped in)
  Get-VHD [-Path] p[,p]                  (or objects with Path piped in)
  Checkpoint-VM [-Name] n [[-SnapshotName] s] [-Passthru]
      Names may repeat (as in Hyper-V).  Each disk of the VM moves to a new
      differencing disk <dir>\\<base>_<GUID>.avhdx whose ParentPath is the
      previous disk.
  Get-VMSnapshot [-VMName] n [-Name s]
  Remove-VMSnapshot -VMName n -Name s    (or snapshots piped in); merges the
      avhdx it made back into its parent.
  Export-VMSnapshot -VMName n -Name s -Path P [-AsJob]
  Export-VM [-Name] n [-Path] P [-AsJob] (a running VM exports too)
      P must lie under an export root.  Writes P\\<vm>\\Virtual Hard
      Disks\\<base disk name>.vhdx (a dynamic VHDX made by qemu-img from the
      disk's seeded raw bytes, differencing chains merged) and P\\<vm>\\
      Virtual Machines\\<VMID>.vmcx; the folder P\\<vm> appears at once and
      the files when the export completes (after export_seconds).  If
      P\\<vm> exists the export is refused.  A failing export (fault) leaves
      the folder with an empty "Virtual Hard Disks".  Without -AsJob the
      command runs until the export ends, writing progress records
      (Activity "Exporting virtual machine", PercentComplete) to stderr;
      a failure is an error record.  With -AsJob it outputs a job object
      at once.
  Get-Job [[-Id] n[,n]], Receive-Job [-Id] n [-Keep] [-Wait] (a failed
      export's reason as an error record), Wait-Job [-Id] n [-Timeout s],
      Remove-Job [-Id] n [-Force]
      Jobs belong to the powershell.exe that made them, as in PowerShell:
      a later Command's Get-Job -Id N fails ("The command cannot find a job
      with the job ID N.") unless the persistent_jobs switch is on.  The
      export itself goes on in the host either way; poll it with Test-Path
      / Get-ChildItem, or run the export without -AsJob and read progress.
      Job objects: Id, Name, PSJobTypeName, State (enum number: Running 1,
      Completed 2, Failed 3, Stopped 4), HasMoreData, Location, Command,
      Progress (list of ProgressRecords: ActivityId, ParentActivityId,
      Activity, StatusDescription, CurrentOperation, PercentComplete,
      SecondsRemaining, RecordType; the last one is current).
  Get-ChildItem [-Path] p [-Filter f] [-Recurse] [-File]
  Remove-Item [-Path] p [-Recurse] [-Force]
      Only under an export root (else an error); not a root itself; not a
      folder an export is writing.
  Test-Path [-Path] p    True/False; outside export roots True only for
      seeded disk paths.
  Select-Object [-Property] a,b,c | -ExpandProperty a | -First n
      A property may be calculated: @{n='Name';e={$_.Prop.M()...}} with
      the methods ToUniversalTime() and ToString('o') of a DateTime and
      ToString(); anything else is unsupported.  DateTimes are Local
      (the host is at UTC+01:00) until ToUniversalTime(); ToString('o')
      gives 2023-11-14T22:13:20.2500000Z or ...+01:00.
  ConvertTo-Json [-Compress] [-Depth n]  (no -AsArray: Windows PowerShell
      5.1).  One object gives an object, several an array, none nothing.
      As in 5.1: enums are numbers, dates "\\/Date(ms)\\/", ' < > & are
      escaped as \\u0027 \\u003c \\u003e \\u0026; objects nested deeper
      than -Depth (default 2) become their ToString() text.  Without
      -Compress the layout is 4-space indent with ":  ", close to 5.1.
  Out-Null, Write-Output
Output that is not a string, number, bool or enum (an object not piped to
ConvertTo-Json or -ExpandProperty) is an error: the fake draws no tables.
Objects (property order as listed):
  VM: Name, Id, VMId, VMName, State (Running 2, Off 3, Saved 6, Paused 9,
      ...), Status, Generation, MemoryStartup, ProcessorCount,
      ComputerName, Path, ParentSnapshotName, CreationTime
  HardDiskDrive: VMName, VMId, Name, ControllerType (IDE 0, SCSI 1),
      ControllerNumber, ControllerLocation, Path, DiskNumber, ComputerName
  VHD: ComputerName, Path, VhdFormat (VHDX 3), VhdType (Fixed 2, Dynamic 3,
      Differencing 4), FileSize, Size, MinimumSize, LogicalSectorSize,
      PhysicalSectorSize, BlockSize, ParentPath, DiskIdentifier,
      FragmentationPercentage, Alignment, Attached, DiskNumber
  VMSnapshot: Name, Id, VMName, VMId, SnapshotType (Standard 5),
      CreationTime, ParentSnapshotName, ComputerName
  File/folder: Name, FullName, Length (files), PSIsContainer,
      LastWriteTime, Mode

Seed (--seed or PUT /_control/seed)
-----------------------------------
  {"computer": "HYPERV01",
   "vhds": [{"Path": "C:\\\\VMs\\\\web01.vhdx", "VhdType": "Dynamic",
             "Size": n, "FileSize": n, "ParentPath": null,
             "Raw": "/host/web01.raw"}],
   "vms": [{"Name": "web01", "Id": "<guid>", "State": "Running",
            "Generation": 2, "MemoryStartup": n, "ProcessorCount": 2,
            "CreationTime": <epoch seconds, default a day before seeding>,
            "HardDrives": [{"ControllerType": "SCSI", "ControllerNumber": 0,
                            "ControllerLocation": 0, "Path": "C:\\\\..."}],
            "Checkpoints": [{"Name": "nightly"}]}]}
Raw holds the disk's whole (merged) content; Size defaults to its length
and must equal it; a differencing disk without Raw uses its parent's.

Control (plain HTTP on CONTROL, JSON)
-------------------------------------
  GET  /_control/stats   {"actions": {Create|Command|Receive|Signal|Delete:
                          n}, "cmdlets": {name: n}, "http": {status: n},
                          "auth": {"basic"|"ntlm": n}, "injected":
                          {"receive_timeout": n, ...}}
  GET  /_control/state   live shells and commands, VMs, checkpoints,
                         export folders and exports, switches
  POST /_control/reset   counters, switches, shells, jobs and export
                         folders cleared (the inventory stays)
  PUT  /_control/seed    replace the inventory
  POST /_control/faults  set switches: {"password": s (the account's
      password, so the client's is wrong), "reject_auth": bool,
      "fail_export": message (queued for the next export),
      "receive_timeouts": n (next n Receives time out even with output),
      "export_seconds": s, "command_seconds": s (delay before a script
      runs), "piece_size": n, "persistent_jobs": bool,
      "first_use_progress": bool, "max_shells": n}
"""

import argparse
import base64
import json
import os
import re
import signal
import ssl
import sys
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from hyperv_host import Host  # noqa: E402
from hyperv_ps import Streams  # noqa: E402
from ntlm_server import NtlmError, NtlmServer, message_type  # noqa: E402

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "w": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "p": "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd",
    "x": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
}
SHELL_URI = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd"
TRANSFER = "http://schemas.xmlsoap.org/ws/2004/09/transfer/"
SHELL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/"
ACTIONS = {TRANSFER + "Create": "Create", SHELL + "Command": "Command",
           SHELL + "Receive": "Receive", SHELL + "Signal": "Signal",
           TRANSFER + "Delete": "Delete"}
KNOWN_HEADERS = {(NS["a"], n) for n in ("To", "ReplyTo", "Action", "MessageID",
                                         "FaultTo")} | \
    {(NS["w"], n) for n in ("ResourceURI", "MaxEnvelopeSize", "Locale",
                            "OperationTimeout", "SelectorSet", "OptionSet")} | \
    {(NS["p"], n) for n in ("DataLocale", "SessionId", "OperationID",
                            "SequenceId")}
MAX_REQUEST = 500 * 1024
CMD_LINE_MAX = 8191
TIMED_OUT = ("s:Receiver", "w:TimedOut", 2150858793,
             "The WS-Management service cannot complete the operation within "
             "the time specified in OperationTimeout.")


class Fault(Exception):
    def __init__(self, code, subcode, wsman_code, message):
        super().__init__(message)
        self.code, self.subcode = code, subcode
        self.wsman_code, self.message = wsman_code, message


class Command:
    def __init__(self, shell, streams):
        self.id = str(uuid.uuid4()).upper()
        self.shell = shell
        self.streams = streams
        self.sent = {"stdout": 0, "stderr": 0}
        self.finished = False


class State:
    """Shells, switches and counters; one lock."""

    def __init__(self, host, user, password, computer, piece_size):
        self.lock = threading.Lock()
        self.host = host
        self.user = user
        self.base_password = password
        self.computer = computer
        self.base_piece = piece_size
        self.shells = {}
        self.reset()

    def reset(self):
        with self.lock:
            for shell in self.shells.values():
                for cmd in shell["commands"].values():
                    cmd.streams.cancel.set()
            self.shells = {}
            self.password = self.base_password
            self.reject_auth = False
            self.receive_timeouts = 0
            self.command_seconds = 0.0
            self.piece_size = self.base_piece
            self.max_shells = 30
            self.counters = {"actions": {}, "http": {}, "auth": {},
                             "injected": {}}

    def count(self, kind, key):
        with self.lock:
            table = self.counters[kind]
            table[str(key)] = table.get(str(key), 0) + 1

    def snapshot(self):
        with self.lock:
            out = json.loads(json.dumps(self.counters))
        out["cmdlets"] = dict(self.host.cmdlets)
        return out

    def describe(self):
        with self.lock:
            shells = {sid: {"owner": s["owner"],
                            "commands": sorted(s["commands"])}
                      for sid, s in self.shells.items()}
            switches = {"password_changed": self.password !=
                        self.base_password, "reject_auth": self.reject_auth,
                        "receive_timeouts": self.receive_timeouts,
                        "command_seconds": self.command_seconds,
                        "piece_size": self.piece_size,
                        "max_shells": self.max_shells}
        out = self.host.state()
        out.update(live_shells=len(shells), shells=shells, switches=switches)
        return out

    def set_faults(self, f):
        with self.lock:
            for key in f:
                if key not in ("password", "reject_auth", "fail_export",
                               "receive_timeouts", "export_seconds",
                               "command_seconds", "piece_size",
                               "persistent_jobs", "first_use_progress",
                               "max_shells"):
                    raise ValueError("unknown switch %r" % key)
            if "password" in f:
                self.password = f["password"]
            if "reject_auth" in f:
                self.reject_auth = bool(f["reject_auth"])
            if "receive_timeouts" in f:
                self.receive_timeouts = int(f["receive_timeouts"])
            if "command_seconds" in f:
                self.command_seconds = float(f["command_seconds"])
            if "piece_size" in f:
                self.piece_size = max(1, int(f["piece_size"]))
            if "max_shells" in f:
                self.max_shells = int(f["max_shells"])
        with self.host.lock:
            if "fail_export" in f:
                self.host.fail_exports.append(str(f["fail_export"]))
            for key in ("export_seconds",):
                if key in f:
                    self.host.config[key] = float(f[key])
            for key in ("persistent_jobs", "first_use_progress"):
                if key in f:
                    self.host.config[key] = bool(f[key])


def _duration(text):
    m = re.fullmatch(r"PT(\d+(?:\.\d+)?)S", (text or "").strip())
    if not m:
        raise Fault("s:Sender", "w:InvalidParameter", 2150858882,
                    "The OperationTimeout %r is not an xs:duration in "
                    "seconds (PTnS)." % text)
    return float(m.group(1))


def _q(prefix, name):
    return "{%s}%s" % (NS[prefix], name)


class WsmanHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Microsoft-HTTPAPI/2.0"
    sys_version = ""

    def setup(self):
        super().setup()
        self.ntlm = None
        self.ntlm_scheme = None
        self.authed = None

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("%s\n" % (fmt % args))

    def _reply(self, status, body=b"", headers=()):
        self.server.state.count("http", status)
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        if body:
            self.send_header("Content-Type",
                             "application/soap+xml;charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _unauthorized(self, extra=None):
        self.ntlm = None
        headers = [("WWW-Authenticate", "Negotiate"),
                   ("WWW-Authenticate", "NTLM"),
                   ("WWW-Authenticate", 'Basic realm="WSMAN"')]
        if extra:
            headers = [("WWW-Authenticate", extra)]
        self._reply(401, headers=headers)

    def do_GET(self):
        self._drain()
        self._reply(405 if self.path.lower().startswith("/wsman") else 404)

    do_PUT = do_DELETE = do_HEAD = do_GET

    def _drain(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_POST(self):
        body = self._drain()
        if self.path.split("?")[0].lower() != "/wsman":
            return self._reply(404)
        user = self._authenticate()
        if user is None:
            return
        ctype = (self.headers.get("Content-Type") or "").lower().replace(" ", "")
        if not ctype.startswith("application/soap+xml") or \
                "charset=utf-8" not in ctype:
            return self._reply(415)
        if len(body) > MAX_REQUEST:
            return self._fault(None, Fault("s:Sender", "w:EncodingLimit",
                                           2150858817, "The request exceeds "
                                           "the maximum envelope size."))
        try:
            status, out = self.server.wsman.handle(body, user,
                                                   self.client_address[0])
        except Exception as exc:  # a bug in the fake: say so, loudly
            import traceback
            traceback.print_exc()
            return self._fault(None, Fault("s:Receiver", "w:InternalError",
                                           2150858752, "fake bug: %s" % exc))
        return self._reply(status, out)

    def _fault(self, relates, fault):
        self._reply(500, self.server.wsman.fault_xml(relates, fault))

    def _authenticate(self):
        """The user, or None once a 401 has been sent."""
        st = self.server.state
        header = self.headers.get("Authorization")
        if header is None:
            if self.authed and not st.reject_auth:
                return self.authed
            self._unauthorized()
            return None
        scheme, _, token = header.partition(" ")
        scheme_l = scheme.lower()
        if st.reject_auth:
            self._unauthorized()
            return None
        if scheme_l == "basic":
            try:
                user, _, password = base64.b64decode(token).decode(
                    "utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                self._unauthorized()
                return None
            name = re.sub(r"^(\.|[^\\]*)\\", "", user)
            if name.lower() == st.user.lower() and password == st.password:
                st.count("auth", "basic")
                return name
            self._unauthorized()
            return None
        if scheme_l in ("ntlm", "negotiate"):
            try:
                raw = base64.b64decode(token.strip())
                kind = message_type(raw)
            except (ValueError, NtlmError):
                self._unauthorized()
                return None
            try:
                if kind == 1:
                    self.ntlm = NtlmServer(st.user, st.password, st.computer,
                                           cert_der=self.server.cert_der)
                    self.ntlm_scheme = scheme
                    challenge = self.ntlm.negotiate(raw)
                    self._reply(401, headers=[(
                        "WWW-Authenticate", "%s %s" % (
                            scheme, base64.b64encode(challenge).decode()))])
                    return None
                if kind == 3 and self.ntlm is not None:
                    user = self.ntlm.authenticate(raw)
                    self.ntlm = None
                    self.authed = user
                    st.count("auth", "ntlm")
                    return user
            except NtlmError as exc:
                if self.server.verbose:
                    sys.stderr.write("ntlm: %s\n" % exc)
            self._unauthorized()
            return None
        self._unauthorized()
        return None


class Wsman:
    """The WS-Management shell service."""

    def __init__(self, state, url):
        self.state = state
        self.url = url

    def envelope(self, action, relates, body):
        return ('<s:Envelope xml:lang="en-US" xmlns:s="%s" xmlns:a="%s" '
                'xmlns:x="%s" xmlns:w="%s" xmlns:rsp="%s" xmlns:p="%s">'
                '<s:Header><a:Action>%s</a:Action><a:MessageID>uuid:%s'
                '</a:MessageID><a:To>http://schemas.xmlsoap.org/ws/2004/08/'
                'addressing/role/anonymous</a:To>%s</s:Header><s:Body>%s'
                '</s:Body></s:Envelope>'
                % (NS["s"], NS["a"], NS["x"], NS["w"], NS["rsp"], NS["p"],
                   action, str(uuid.uuid4()).upper(),
                   "<a:RelatesTo>%s</a:RelatesTo>" % relates if relates
                   else "", body)).encode("utf-8")

    def fault_xml(self, relates, f):
        from xml.sax.saxutils import escape
        body = ('<s:Fault><s:Code><s:Value>%s</s:Value><s:Subcode><s:Value>%s'
                '</s:Value></s:Subcode></s:Code><s:Reason><s:Text '
                'xml:lang="en-US">%s </s:Text></s:Reason><s:Detail>'
                '<f:WSManFault xmlns:f="http://schemas.microsoft.com/wbem/'
                'wsman/1/wsmanfault" Code="%d" Machine="%s"><f:Message>%s '
                '</f:Message></f:WSManFault></s:Detail></s:Fault>'
                % (f.code, f.subcode, escape(f.message), f.wsman_code,
                   self.state.computer, escape(f.message)))
        return self.envelope("http://schemas.dmtf.org/wbem/wsman/1/wsman/"
                             "fault", relates, body)

    def handle(self, body, user, client_ip):
        relates = None
        try:
            try:
                root = ET.fromstring(body)
            except ET.ParseError as exc:
                raise Fault("s:Sender", "w:SchemaValidationError", 2150858817,
                            "The SOAP XML in the message does not match the "
                            "schema: %s" % exc)
            if root.tag != _q("s", "Envelope"):
                raise Fault("s:Sender", "s:VersionMismatch", 2150858817,
                            "The envelope is not a SOAP 1.2 envelope.")
            header = root.find("s:Header", NS)
            body_el = root.find("s:Body", NS)
            if header is None or body_el is None:
                raise Fault("s:Sender", "w:SchemaValidationError",
                            2150858817, "Header and Body are required.")
            mid = header.findtext("a:MessageID", None, NS)
            if not mid or not re.fullmatch(r"uuid:[0-9A-Fa-f-]{36}",
                                           mid.strip()):
                raise Fault("s:Sender", "a:InvalidMessageInformationHeader",
                            2150858817, "The a:MessageID header is missing "
                            "or not uuid:<GUID>.")
            relates = mid.strip()
            for child in header:
                ns, _, name = child.tag[1:].partition("}")
                must = (child.get(_q("s", "mustUnderstand")) or "").lower()
                if must in ("true", "1") and (ns, name) not in KNOWN_HEADERS:
                    raise Fault("s:MustUnderstand", "s:MustUnderstand",
                                2150858817, "Header %s is not understood."
                                % name)
            action = (header.findtext("a:Action", "", NS) or "").strip()
            if action not in ACTIONS:
                raise Fault("s:Sender", "a:ActionNotSupported", 2150858771,
                            "The action %r is not supported by the service."
                            % action)
            uri = (header.findtext("w:ResourceURI", "", NS) or "").strip()
            if uri.lower() != SHELL_URI:
                raise Fault("s:Sender", "w:DestinationUnreachable",
                            2150858770, "The WS-Management service cannot "
                            "process the request because the resource URI "
                            "%r was not found." % uri)
            max_env = int(header.findtext("w:MaxEnvelopeSize", "153600", NS))
            timeout = _duration(header.findtext("w:OperationTimeout",
                                                "PT60S", NS))
            name = ACTIONS[action]
            self.state.count("actions", name)
            options = {o.get("Name"): (o.text or "").strip()
                       for o in header.iterfind("w:OptionSet/w:Option", NS)}
            selectors = {s.get("Name"): (s.text or "").strip()
                         for s in header.iterfind("w:SelectorSet/w:Selector",
                                                  NS)}
            req = {"header": header, "body": body_el, "options": options,
                   "selectors": selectors, "user": user, "ip": client_ip,
                   "timeout": timeout, "max_env": max_env}
            resp_action, out = getattr(self, "do_" + name.lower())(req)
            xml = self.envelope(resp_action, relates, out)
            if len(xml) > max_env:
                raise Fault("s:Sender", "w:EncodingLimit", 2150858817,
                            "The response that the WS-Management service "
                            "computed exceeds the maximum envelope size "
                            "(%d)." % max_env)
            return 200, xml
        except Fault as f:
            return 500, self.fault_xml(relates, f)

    def _shell(self, req):
        sid = req["selectors"].get("ShellId")
        with self.state.lock:
            shell = self.state.shells.get(sid or "")
        if shell is None or shell["owner"].lower() != req["user"].lower():
            raise Fault("s:Sender", "w:InvalidSelectors", 2150858843,
                        "The request for the Windows Remote Shell with ShellId "
                        "%s failed because the shell was not found on the "
                        "server. Possible causes are: the specified ShellId is "
                        "incorrect or the shell no longer exists on the "
                        "server. Provide the correct ShellId or create a new "
                        "shell and execute the remote command again." % sid)
        return shell

    def _command(self, shell, cid):
        cmd = shell["commands"].get(cid or "")
        if cmd is None:
            raise Fault("s:Sender", "w:InvalidParameter", 2150858882,
                        "The Windows Remote Shell received a request to "
                        "perform an operation on a command identifier that "
                        "does not exist. Either the command has completed "
                        "execution or the client specified an invalid "
                        "command identifier.")
        return cmd

    def do_create(self, req):
        shell_el = req["body"].find("rsp:Shell", NS)
        if shell_el is None:
            raise Fault("s:Sender", "w:SchemaValidationError", 2150858817,
                        "Create needs a rsp:Shell body.")
        codepage = req["options"].get("WINRS_CODEPAGE", "437")
        encoding = {"437": "cp437", "65001": "utf-8", "1252": "cp1252"}.get(
            codepage)
        if encoding is None:
            raise Fault("s:Sender", "w:InvalidParameter", 2150858882,
                        "Unsupported WINRS_CODEPAGE %s." % codepage)
        with self.state.lock:
            mine = [s for s in self.state.shells.values()
                    if s["owner"].lower() == req["user"].lower()]
            if len(mine) >= self.state.max_shells:
                raise Fault("s:Receiver", "w:QuotaLimit", 2150859173,
                            "The WS-Management service cannot process the "
                            "request. This user is allowed a maximum number of "
                            "%d concurrent shells, which has been exceeded."
                            % self.state.max_shells)
            sid = str(uuid.uuid4()).upper()
            self.state.shells[sid] = {
                "id": sid, "owner": req["user"], "encoding": encoding,
                "commands": {},
                "inputs": shell_el.findtext("rsp:InputStreams", "stdin", NS),
                "outputs": shell_el.findtext("rsp:OutputStreams",
                                             "stdout stderr", NS)}
        body = ('<x:ResourceCreated><a:Address>%s</a:Address>'
                '<a:ReferenceParameters><w:ResourceURI>%s</w:ResourceURI>'
                '<w:SelectorSet><w:Selector Name="ShellId">%s</w:Selector>'
                '</w:SelectorSet></a:ReferenceParameters></x:ResourceCreated>'
                '<rsp:Shell><rsp:ShellId>%s</rsp:ShellId><rsp:ResourceUri>%s'
                '</rsp:ResourceUri><rsp:Owner>%s</rsp:Owner><rsp:ClientIP>%s'
                '</rsp:ClientIP><rsp:IdleTimeOut>PT7200.000S</rsp:IdleTimeOut>'
                '<rsp:InputStreams>stdin</rsp:InputStreams><rsp:OutputStreams>'
                'stdout stderr</rsp:OutputStreams><rsp:ShellRunTime>P0DT0H0M0S'
                '</rsp:ShellRunTime><rsp:ShellInactivity>P0DT0H0M0S'
                '</rsp:ShellInactivity></rsp:Shell>'
                % (self.url, SHELL_URI, sid, sid, SHELL_URI,
                   "%s\\%s" % (self.state.computer, req["user"]), req["ip"]))
        return TRANSFER + "CreateResponse", body

    def do_command(self, req):
        shell = self._shell(req)
        line_el = req["body"].find("rsp:CommandLine", NS)
        if line_el is None:
            raise Fault("s:Sender", "w:SchemaValidationError", 2150858817,
                        "Command needs a rsp:CommandLine body.")
        parts = [(line_el.findtext("rsp:Command", "", NS) or "").strip()]
        parts += [(a.text or "").strip()
                  for a in line_el.iterfind("rsp:Arguments", NS)]
        line = " ".join(p for p in parts if p)
        streams = Streams(shell["encoding"])
        cmd = Command(shell, streams)
        skip_cmd = req["options"].get("WINRS_SKIP_CMD_SHELL", "FALSE") \
            .upper() == "TRUE"
        with self.state.lock:
            shell["commands"][cmd.id] = cmd
            delay = self.state.command_seconds
        threading.Thread(target=self._run, args=(line, streams, skip_cmd,
                                                 delay), daemon=True).start()
        return (SHELL + "CommandResponse",
                "<rsp:CommandResponse><rsp:CommandId>%s</rsp:CommandId>"
                "</rsp:CommandResponse>" % cmd.id)

    def _run(self, line, streams, skip_cmd, delay):
        if delay and streams.cancel.wait(delay):
            return streams.finish(1)
        if not skip_cmd and len(line) > CMD_LINE_MAX:
            streams.stderr += b"The command line is too long.\r\n"
            return streams.finish(1)
        script, err = parse_command_line(line)
        if err:
            streams.stderr += err.encode("cp437", "replace")
            return streams.finish(1)
        try:
            self.state.host.run(script, streams)
        except Exception:  # a bug in the fake: fail the command visibly
            import traceback
            traceback.print_exc()
            streams.stderr += b"winrm_fake internal error\r\n"
            streams.finish(1)

    def do_receive(self, req):
        shell = self._shell(req)
        ds = req["body"].find("rsp:Receive/rsp:DesiredStream", NS)
        if ds is None:
            raise Fault("s:Sender", "w:SchemaValidationError", 2150858817,
                        "Receive needs rsp:Receive/rsp:DesiredStream.")
        cmd = self._command(shell, ds.get("CommandId"))
        wanted = (ds.text or "stdout stderr").split()
        deadline = time.monotonic() + req["timeout"]
        with self.state.lock:
            forced = self.state.receive_timeouts > 0
            if forced:
                self.state.receive_timeouts -= 1
        if forced:
            self.state.count("injected", "receive_timeout")
            cmd.streams.cancel.wait(req["timeout"])
            raise Fault(*TIMED_OUT)
        s = cmd.streams
        with s.lock:
            while True:
                pending = any(len(getattr(s, n)) > cmd.sent[n]
                              for n in ("stdout", "stderr"))
                if pending or s.done:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Fault(*TIMED_OUT)
                s.lock.wait(left)
            piece = min(self.state.piece_size,
                        max(512, (req["max_env"] - 4096) * 3 // 8))
            parts = []
            for n in ("stdout", "stderr"):
                buf = getattr(s, n)
                chunk = bytes(buf[cmd.sent[n]:cmd.sent[n] + piece])
                cmd.sent[n] += len(chunk)
                if chunk and n in wanted:
                    parts.append('<rsp:Stream Name="%s" CommandId="%s">%s'
                                 '</rsp:Stream>' % (n, cmd.id, base64.b64encode(
                                     chunk).decode()))
            finished = s.done and all(len(getattr(s, n)) == cmd.sent[n]
                                      for n in ("stdout", "stderr"))
            code = s.exit_code
        if finished:
            parts += ['<rsp:Stream Name="%s" CommandId="%s" End="true">'
                      '</rsp:Stream>' % (n, cmd.id) for n in wanted]
            parts.append('<rsp:CommandState CommandId="%s" State="%s'
                         'CommandState/Done"><rsp:ExitCode>%d</rsp:ExitCode>'
                         '</rsp:CommandState>' % (cmd.id, SHELL, code))
            cmd.finished = True
        else:
            parts.append('<rsp:CommandState CommandId="%s" State="%s'
                         'CommandState/Running"/>' % (cmd.id, SHELL))
        return (SHELL + "ReceiveResponse",
                "<rsp:ReceiveResponse>%s</rsp:ReceiveResponse>"
                % "".join(parts))

    def do_signal(self, req):
        shell = self._shell(req)
        sig = req["body"].find("rsp:Signal", NS)
        if sig is None:
            raise Fault("s:Sender", "w:SchemaValidationError", 2150858817,
                        "Signal needs a rsp:Signal body.")
        cmd = self._command(shell, sig.get("CommandId"))
        code = (sig.findtext("rsp:Code", "", NS) or "").strip()
        if code not in (SHELL + "signal/terminate", SHELL + "signal/ctrl_c",
                        SHELL + "signal/ctrl_break"):
            raise Fault("s:Sender", "w:InvalidParameter", 2150858882,
                        "Unknown signal code %r." % code)
        cmd.streams.cancel.set()
        if code.endswith("terminate"):
            with self.state.lock:
                shell["commands"].pop(cmd.id, None)
        return SHELL + "SignalResponse", "<rsp:SignalResponse/>"

    def do_delete(self, req):
        shell = self._shell(req)
        with self.state.lock:
            for cmd in shell["commands"].values():
                cmd.streams.cancel.set()
            self.state.shells.pop(shell["id"], None)
        return TRANSFER + "DeleteResponse", ""


FLAG_NOARG = {"noprofile", "nop", "noninteractive", "noni", "nologo", "nol"}
FLAG_ARG = {"executionpolicy", "ep", "ex", "exec"}
FLAG_ENC = {"encodedcommand", "enc", "e", "ec", "en", "enco", "encod",
            "encode", "encoded"}


def parse_command_line(line):
    """(script, None) or (None, stderr text) for a cmd.exe command line."""
    words = line.split()
    if not words:
        return None, "The syntax of the command is incorrect.\r\n"
    exe = words[0].lower().rsplit("\\", 1)[-1]
    if exe not in ("powershell", "powershell.exe"):
        return None, ("'%s' is not recognized as an internal or external "
                      "command,\r\noperable program or batch file.\r\n"
                      % words[0])
    script = None
    i = 1
    while i < len(words):
        w = words[i]
        flag = w[1:].lower() if w[:1] in "-/" else None
        if flag in FLAG_NOARG:
            i += 1
        elif flag in FLAG_ARG and i + 1 < len(words):
            i += 2
        elif flag in FLAG_ENC and i + 1 < len(words):
            try:
                script = base64.b64decode(words[i + 1], validate=True) \
                    .decode("utf-16-le")
            except (ValueError, UnicodeDecodeError):
                return None, ("Cannot process the command because the value "
                              "specified with -EncodedCommand is not properly "
                              "encoded. The value must be Base64 encoded.\r\n")
            i += 2
        else:
            return None, ("winrm_fake: unsupported powershell argument %r "
                          "(only -NoProfile -NonInteractive -NoLogo "
                          "-ExecutionPolicy X -EncodedCommand B64)\r\n" % w)
    if script is None:
        return None, ("winrm_fake: powershell needs -EncodedCommand\r\n")
    return script, None


class ControlHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def _json(self, status, obj):
        body = (json.dumps(obj, indent=1) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        st = self.server.state
        if self.path == "/_control/stats":
            return self._json(200, st.snapshot())
        if self.path == "/_control/state":
            return self._json(200, st.describe())
        return self._json(404, {"error": "no such control " + self.path})

    def do_POST(self):
        st = self.server.state
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            obj = json.loads(raw) if raw.strip() else {}
            if self.path == "/_control/reset":
                st.reset()
                st.host.reset()
                return self._json(200, {"ok": True})
            if self.path == "/_control/faults":
                st.set_faults(obj)
                return self._json(200, st.describe()["switches"])
            if self.path == "/_control/seed":
                st.host.seed(obj)
                return self._json(200, {"ok": True})
        except (ValueError, KeyError, TypeError, OSError) as exc:
            return self._json(400, {"error": str(exc)})
        return self._json(404, {"error": "no such control " + self.path})

    do_PUT = do_POST


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--export-root", action="append", default=[],
                    help="WINDOWS_PATH=HOST_DIR")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--seed")
    ap.add_argument("--computer", default="HYPERV01")
    ap.add_argument("--piece-size", type=int, default=4096)
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()

    roots = [r.split("=", 1) for r in args.export_root]
    host = Host(args.workdir, roots)
    host.computer = args.computer
    if args.seed:
        with open(args.seed) as f:
            host.seed(json.load(f))
    state = State(host, args.user, args.password, args.computer,
                  args.piece_size)

    server = ThreadingHTTPServer(("127.0.0.1", 0), WsmanHandler)
    server.daemon_threads = True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    with open(args.cert) as f:
        server.cert_der = ssl.PEM_cert_to_DER_cert(f.read())
    server.state = state
    server.verbose = args.verbose
    port = server.server_address[1]
    server.wsman = Wsman(state, "https://127.0.0.1:%d/wsman" % port)

    control = ThreadingHTTPServer(("127.0.0.1", 0), ControlHandler)
    control.daemon_threads = True
    control.state = state

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    threading.Thread(target=control.serve_forever, daemon=True).start()
    print("CONTROL %d" % control.server_address[1], flush=True)
    print("PORT %d" % port, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()
        control.shutdown()


if __name__ == "__main__":
    main()
