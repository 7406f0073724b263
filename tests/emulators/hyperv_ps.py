# SPDX-License-Identifier: MIT
"""The Hyper-V host behind the WinRM fake: a JSON inventory of VMs, disks
and checkpoints, exports that write real VHDX files (qemu-img), and an
interpreter for the small PowerShell subset documented in winrm_fake.py.

Each Command is one powershell.exe process: run_script() executes one
script, writing to a Streams object (stdout text, stderr CLIXML) that the
WinRM layer drains while the script runs.  Standard library only.
"""

import re
import threading
import time
from xml.sax.saxutils import escape as xml_escape

QEMU_IMG = "/usr/bin/qemu-img"
MiB = 1 << 20

VM_STATE = {"Other": 1, "Running": 2, "Off": 3, "Stopping": 4, "Saved": 6,
            "Paused": 9, "Starting": 10}
VHD_FORMAT = {"VHD": 2, "VHDX": 3}
VHD_TYPE = {"Fixed": 2, "Dynamic": 3, "Differencing": 4}
CONTROLLER = {"IDE": 0, "SCSI": 1}
JOB_STATE = {"NotStarted": 0, "Running": 1, "Completed": 2, "Failed": 3,
             "Stopped": 4}
SNAPSHOT_TYPE = {"Standard": 5}


class PSEnum(int):
    """An enum value: a number in ConvertTo-Json, its name as text."""

    def __new__(cls, table, name):
        obj = int.__new__(cls, table[name])
        obj.name = name
        return obj


# The host's time zone: local DateTimes (a VM's CreationTime) are UTC+01:00.
HOST_UTC_OFFSET = 3600


class PSDate:
    """A System.DateTime: an instant and its Kind (Local or Utc)."""

    def __init__(self, epoch, utc=False):
        self.epoch = epoch
        self.utc = utc

    def _shown(self):
        return self.epoch if self.utc else self.epoch + HOST_UTC_OFFSET

    def text(self):
        return time.strftime("%-m/%-d/%Y %-I:%M:%S %p",
                             time.gmtime(self._shown()))

    def round_trip(self):
        """ToString('o'): 7 fraction digits, then Z or the offset."""
        shown = self._shown()
        ticks = int(round((shown - int(shown)) * 10 ** 7)) % 10 ** 7
        zone = "Z" if self.utc else "%+03d:%02d" % (
            HOST_UTC_OFFSET // 3600, HOST_UTC_OFFSET % 3600 // 60)
        return "%s.%07d%s" % (time.strftime(
            "%Y-%m-%dT%H:%M:%S", time.gmtime(int(shown))), ticks, zone)


# A calculated property of Select-Object, as far as the fake goes:
# @{n='Name';e={$_.Property.Method()...}} with the methods below.
CALC = re.compile(r"""@\{\s*(?:n|name|l|label)\s*=\s*'(?P<name>[A-Za-z]\w*)'
    \s*;\s*(?:e|expression)\s*=\s*\{\s*\$_\.(?P<prop>[A-Za-z]\w*)
    (?P<calls>(?:\.[A-Za-z]+\((?:'[^']*')?\))*)\s*\}\s*\}$""",
                  re.X | re.I)
CALL = re.compile(r"\.([A-Za-z]+)\((?:'([^']*)')?\)")


class CalcProp:
    """@{n='X';e={$_.P.ToUniversalTime().ToString('o')}}"""

    def __init__(self, text):
        m = CALC.match(text)
        if not m:
            raise Unsupported("unsupported calculated property %r" % text)
        self.name = m.group("name")
        self.prop = m.group("prop")
        self.calls = CALL.findall(m.group("calls"))

    def value(self, obj):
        v = obj.get(self.prop) if isinstance(obj, dict) else None
        for method, arg in self.calls:
            method = method.lower()
            if v is None:
                raise PSError("You cannot call a method on a null-valued "
                              "expression.", "InvalidOperation", "",
                              "RuntimeException", "InvokeMethodOnNull")
            if isinstance(v, PSDate) and method == "touniversaltime":
                v = PSDate(v.epoch, utc=True)
            elif isinstance(v, PSDate) and method == "tostring" and \
                    arg == "o":
                v = v.round_trip()
            elif method == "tostring" and not arg:
                v = as_text(v)
            else:
                raise Unsupported("unsupported method .%s(%s)"
                                  % (method, arg))
        return v


class PSObj(dict):
    """A PowerShell object: ordered properties and its ToString()."""

    def __init__(self, props, tostring):
        super().__init__(props)
        self.tostring = tostring


class PSError(Exception):
    """A PowerShell error record (message, category, target, FQID)."""

    def __init__(self, message, category="InvalidArgument", target="",
                 exception="VirtualizationException", fqid="InvalidParameter",
                 terminating=False):
        super().__init__(message)
        self.message = message
        self.category = category
        self.target = target
        self.exception = exception
        self.fqid = fqid
        self.terminating = terminating


class Unsupported(Exception):
    """Syntax or a command the fake does not implement."""


# ---- output streams -----------------------------------------------------------

def clixml_text(text):
    """Text as PowerShell's CLIXML string encoding writes it."""
    text = re.sub(r"_(x[0-9A-Fa-f]{4}_)", r"_x005F_\1", text)
    out = []
    for ch in text:
        if ch in "\r\n\t" or ord(ch) < 0x20:
            out.append("_x%04X_" % ord(ch))
        else:
            out.append(ch)
    return xml_escape("".join(out))


class Streams:
    """What one powershell.exe writes: stdout text, stderr CLIXML."""

    def __init__(self, encoding="cp437"):
        self.lock = threading.Condition()
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.encoding = encoding
        self.clixml_open = False
        self.refs = 0
        self.done = False
        self.exit_code = None
        self.cancel = threading.Event()

    def write_out(self, text):
        with self.lock:
            self.stdout += text.encode(self.encoding, "replace")
            self.lock.notify_all()

    def _write_err(self, xml):
        with self.lock:
            if not self.clixml_open:
                self.stderr += (b"#< CLIXML\r\n<Objs Version=\"1.1.0.1\" "
                                b"xmlns=\"http://schemas.microsoft.com/"
                                b"powershell/2004/04\">")
                self.clixml_open = True
            self.stderr += xml.encode("utf-8")
            self.lock.notify_all()

    def error(self, err, line_text, command):
        lines = ["%s : %s" % (command, err.message) if command else err.message,
                 "At line:1 char:1", "+ " + line_text,
                 "+ " + "~" * max(len(line_text), 1),
                 "    + CategoryInfo          : %s: (%s:String) [%s], %s"
                 % (err.category, err.target, command or "", err.exception),
                 "    + FullyQualifiedErrorId : %s" % err.fqid, " "]
        self._write_err("".join('<S S="Error">%s</S>' % clixml_text(l + "\r\n")
                                for l in lines))

    def progress(self, activity, status, percent, completed=False):
        with self.lock:
            ref = self.refs
            self.refs += 1
        tn = ('<TN RefId="0"><T>System.Management.Automation.PSCustomObject'
              '</T><T>System.Object</T></TN>') if ref == 0 else \
            '<TNRef RefId="0" />'
        self._write_err(
            '<Obj S="progress" RefId="%d">%s<MS><I64 N="SourceId">1</I64>'
            '<PR N="Record"><AV>%s</AV><AI>0</AI><Nil /><PI>-1</PI>'
            '<PC>%d</PC><T>%s</T><SR>-1</SR><SD>%s</SD></PR></MS></Obj>'
            % (ref, tn, clixml_text(activity), percent,
               "Completed" if completed else "Processing",
               clixml_text(status)))

    def finish(self, code):
        with self.lock:
            if self.clixml_open:
                self.stderr += b"</Objs>"
            self.exit_code = code
            self.done = True
            self.lock.notify_all()


# ---- JSON as Windows PowerShell 5.1 writes it --------------------------------

def _json_str(s):
    out = ['"']
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch in "'<>&" or ord(ch) < 0x20:
            specials = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b",
                        "\f": "\\f"}
            out.append(specials.get(ch, "\\u%04x" % ord(ch)))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def to_json(value, depth, compress, level=0, indent=0):
    sep = "," if compress else ","
    colon = ":" if compress else ":  "
    nl = "" if compress else "\r\n"
    pad = "" if compress else " " * (indent + 4)
    end = "" if compress else " " * indent
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return _json_str(value)
    if isinstance(value, PSDate):
        return '"\\/Date(%d)\\/"' % int(value.epoch * 1000)
    if isinstance(value, list):
        if not value:
            return "[" + nl + end + "]"
        items = [pad + to_json(v, depth, compress, level, indent + 4)
                 for v in value]
        return "[" + nl + (sep + nl).join(items) + nl + end + "]"
    if isinstance(value, dict):
        if level > depth:
            return _json_str(getattr(value, "tostring", "System.Object"))
        items = [pad + _json_str(k) + colon +
                 to_json(v, depth, compress, level + 1, indent + 4)
                 for k, v in value.items()]
        return "{" + nl + (sep + nl).join(items) + nl + end + "}"
    return _json_str(str(value))


def as_text(value):
    """How the console host prints a scalar."""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, PSEnum):
        return value.name
    if isinstance(value, PSDate):
        return value.text()
    if isinstance(value, (int, float, str)):
        return str(value)
    raise Unsupported("formatting objects as a table is not supported; pipe "
                      "to ConvertTo-Json or Select-Object -ExpandProperty")


# ---- the lexer and parser ------------------------------------------------------

TOKEN = re.compile(r"""
    (?P<ws>[ \t]+)
  | (?P<comment>\#[^\n]*)
  | (?P<sep>[;\n]|\r\n)
  | (?P<calc>@\{[^{}]*\{[^{}]*\}\s*\})
  | (?P<pipe>\|)
  | (?P<comma>,)
  | (?P<sq>'(?:[^']|'')*')
  | (?P<dq>"[^"$`]*")
  | (?P<var>\$[A-Za-z_][A-Za-z0-9_]*)
  | (?P<eq>=)
  | (?P<param>-[A-Za-z][A-Za-z0-9]*(?::\$(?:true|false))?)
  | (?P<word>[A-Za-z0-9_.*\\:/][A-Za-z0-9_.*\\:/\-]*)
""", re.X)


def tokenize(script):
    tokens = []
    pos = 0
    while pos < len(script):
        m = TOKEN.match(script, pos)
        if not m or m.end() == pos:
            raise Unsupported("unsupported syntax at %r"
                              % script[pos:pos + 20])
        kind = m.lastgroup
        text = m.group()
        pos = m.end()
        if kind in ("ws", "comment"):
            continue
        if kind == "sq":
            tokens.append(("str", text[1:-1].replace("''", "'")))
        elif kind == "dq":
            tokens.append(("str", text[1:-1]))
        elif kind == "sep":
            tokens.append(("sep", ";"))
        elif kind == "calc":
            tokens.append(("calc", CalcProp(text)))
        else:
            tokens.append((kind, text))
    return tokens


def parse(script):
    """[(line_text, statement)]; a statement is ("assign", var, value) or
    ("pipeline", [(command, [args])]) where an arg is ("param", name,
    bool-or-None) or ("value", str-or-list)."""
    statements = []
    tokens = tokenize(script)
    current = []
    for tok in tokens + [("sep", ";")]:
        if tok[0] == "sep":
            if current:
                statements.append(_statement(current))
            current = []
        else:
            current.append(tok)
    return statements


def _token_text(tok):
    if tok[0] == "str":
        return "'%s'" % tok[1]
    if tok[0] == "calc":
        return "@{...}"
    return tok[1]


def _statement(tokens):
    text = " ".join(_token_text(t) for t in tokens)
    if tokens[0][0] == "var":
        if len(tokens) != 3 or tokens[1][0] != "eq" or tokens[2][0] != "str":
            raise Unsupported("unsupported assignment %r" % text)
        return text, ("assign", tokens[0][1][1:].lower(), tokens[2][1])
    commands = []
    current = []
    for tok in tokens + [("pipe", "|")]:
        if tok[0] == "pipe":
            if not current:
                raise Unsupported("empty pipeline element in %r" % text)
            commands.append(_command(current, text))
            current = []
        else:
            current.append(tok)
    return text, ("pipeline", commands)


def _command(tokens, text):
    if tokens[0][0] != "word":
        raise Unsupported("a pipeline element must start with a command "
                          "name: %r" % text)
    name = tokens[0][1]
    args = []
    i = 1
    while i < len(tokens):
        kind, value = tokens[i]
        if kind == "param":
            pname, _, flag = value[1:].partition(":")
            args.append(("param", pname, None if not flag
                         else flag.lower() == "$true"))
            i += 1
            continue
        if kind not in ("str", "word", "calc"):
            raise Unsupported("unsupported token %r in %r" % (value, text))
        values = [value]
        i += 1
        while i + 1 < len(tokens) and tokens[i][0] == "comma" and \
                tokens[i + 1][0] in ("str", "word", "calc"):
            values.append(tokens[i + 1][1])
            i += 2
        if i < len(tokens) and tokens[i][0] == "comma":
            raise Unsupported("dangling comma in %r" % text)
        args.append(("value", values if len(values) > 1 else values[0]))
    return name, args
