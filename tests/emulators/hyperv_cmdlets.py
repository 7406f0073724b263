# SPDX-License-Identifier: MIT
"""The cmdlets of the WinRM fake's PowerShell subset (documented in
winrm_fake.py), run by Process: one powershell.exe with its own
preference variables and job table.  Standard library only.
"""

import fnmatch
import os
import shutil
import time

from hyperv_host import ExportJob, win_norm
from hyperv_ps import (CONTROLLER, SNAPSHOT_TYPE, VHD_FORMAT, VHD_TYPE,
                       VM_STATE, CalcProp, PSDate, PSEnum, PSError, PSObj,
                       Unsupported, as_text, parse, to_json)

HV = "Microsoft.HyperV.PowerShell.Commands."


def _not_found_param(cmd, name):
    return PSError("A parameter cannot be found that matches parameter name "
                   "'%s'." % name, "InvalidArgument", "",
                   "ParameterBindingException",
                   "NamedParameterNotFound," + HV + cmd.replace("-", ""))


class Cmdlet:
    def __init__(self, name, fn, values=(), switches=(), positional=(),
                 aliases=None, lists=()):
        self.name = name
        self.fn = fn
        self.values = {v.lower(): v for v in values + ("ErrorAction",)}
        self.switches = {s.lower(): s for s in switches + ("Confirm",)}
        self.lists = set(lists)
        self.positional = positional
        self.aliases = {k.lower(): v for k, v in (aliases or {}).items()}

    def bind(self, args):
        params = {}
        pos = list(self.positional)
        i = 0
        while i < len(args):
            arg = args[i]
            if arg[0] == "param":
                key = self.aliases.get(arg[1].lower(), arg[1]).lower()
                if key in self.switches:
                    params[self.switches[key]] = arg[2] is not False
                    i += 1
                    continue
                if key not in self.values:
                    raise _not_found_param(self.name, arg[1])
                if i + 1 >= len(args) or args[i + 1][0] != "value":
                    raise PSError("Missing an argument for parameter '%s'."
                                  % arg[1], "InvalidArgument", "",
                                  "ParameterBindingException",
                                  "MissingArgument")
                params[self.values[key]] = args[i + 1][1]
                i += 2
                continue
            if not pos:
                raise PSError("A positional parameter cannot be found that "
                              "accepts argument '%s'." % arg[1],
                              "InvalidArgument", "",
                              "ParameterBindingException",
                              "PositionalParameterNotFound")
            params[pos.pop(0)] = arg[1]
            i += 1
        for key, value in list(params.items()):
            if isinstance(value, list) and key not in self.lists:
                raise PSError("Cannot convert 'System.Object[]' to the type "
                              "'System.String' required by parameter '%s'."
                              % key, "InvalidArgument", "",
                              "ParameterBindingException",
                              "CannotConvertArgument")
        return params


def _prop_name(prop):
    return prop.name if isinstance(prop, CalcProp) else prop


def _prop_value(prop, obj):
    if isinstance(prop, CalcProp):
        return prop.value(obj)
    return obj.get(prop) if isinstance(obj, dict) else None


def _list(value):
    return value if isinstance(value, list) else [value]


class Process:
    """One powershell.exe run of a script."""

    def __init__(self, host, streams):
        self.host = host
        self.streams = streams
        self.eap = "Continue"
        self.progress_pref = "Continue"
        self.first_use_done = False
        self.jobs = {}
        self.next_job = 1
        self.table = {c.name.lower(): c for c in self._cmdlets()}

    # ---- the script ------------------------------------------------------------

    def run(self, script):
        try:
            statements = parse(script)
        except Unsupported as exc:
            self.streams.error(PSError("winrm_fake: " + str(exc),
                                       "ParserError", "", "ParseException",
                                       "UnsupportedSyntax"),
                               script.splitlines()[0] if script else "", "")
            return self.streams.finish(1)
        failed = False
        for text, stmt in statements:
            if self.streams.cancel.is_set():
                return self.streams.finish(1)
            if stmt[0] == "assign":
                failed = not self._assign(stmt[1], stmt[2], text)
                continue
            failed, stop = self._pipeline(stmt[1], text)
            if stop:
                return self.streams.finish(1)
        self.streams.finish(1 if failed else 0)

    def _assign(self, var, value, text):
        choices = ("Stop", "Continue", "SilentlyContinue")
        if var not in ("erroractionpreference", "progresspreference"):
            self.streams.error(PSError("winrm_fake: only $ErrorActionPreference"
                                       " and $ProgressPreference can be set",
                                       "ParserError", "", "ParseException",
                                       "UnsupportedSyntax"), text, "")
            return False
        match = [c for c in choices if c.lower() == value.lower()]
        if not match:
            self.streams.error(PSError("Cannot convert value \"%s\" to type "
                                       "\"System.Management.Automation."
                                       "ActionPreference\"." % value,
                                       "MetadataError", "",
                                       "ArgumentTransformationMetadataException",
                                       "RuntimeException"), text, "")
            return False
        if var == "erroractionpreference":
            self.eap = match[0]
        else:
            self.progress_pref = match[0]
        return True

    def _pipeline(self, commands, text):
        """Run one pipeline; return (failed, stop the script)."""
        data = None
        failed_here = False
        for name, args in commands:
            cmdlet = self.table.get(name.lower())
            if cmdlet is None:
                err = PSError("The term '%s' is not recognized as the name of "
                              "a cmdlet, function, script file, or operable "
                              "program. Check the spelling of the name, or if "
                              "a path was included, verify that the path is "
                              "correct and try again." % name,
                              "ObjectNotFound", name,
                              "CommandNotFoundException",
                              "CommandNotFoundException")
                self.streams.error(err, text, name)
                return True, self.eap == "Stop"
            self.host.count(cmdlet.name)
            eap = self.eap
            try:
                params = cmdlet.bind(args)
                eap = params.get("ErrorAction", eap)
                self.errors = []
                data = cmdlet.fn(params, data)
            except PSError as err:
                self.streams.error(err, text, cmdlet.name)
                return True, eap == "Stop" or err.terminating
            except Unsupported as exc:
                self.streams.error(PSError("winrm_fake: " + str(exc),
                                           "NotImplemented", name,
                                           "NotSupportedException",
                                           "Unsupported"), text, cmdlet.name)
                return True, True
            for err in self.errors:
                self.streams.error(err, text, cmdlet.name)
            if self.errors and eap == "Stop":
                return True, True
            failed_here = failed_here or bool(self.errors)
        try:
            for value in data or []:
                if value is not None:
                    self.streams.write_out(as_text(value) + "\r\n")
        except Unsupported as exc:
            self.streams.error(PSError("winrm_fake: " + str(exc),
                                       "NotImplemented", "",
                                       "NotSupportedException", "Unsupported"),
                               text, "")
            return True, True
        return failed_here, False

    def _first_use(self):
        if self.first_use_done or self.progress_pref == "SilentlyContinue" \
                or not self.host.config["first_use_progress"]:
            return
        self.first_use_done = True
        self.streams.progress("Preparing modules for first use.", " ", -1,
                              completed=True)

    # ---- objects ---------------------------------------------------------------

    def _vm_obj(self, vm):
        return PSObj({
            "Name": vm["name"], "Id": vm["id"], "VMId": vm["id"],
            "VMName": vm["name"], "State": PSEnum(VM_STATE, vm["state"]),
            "Status": "Operating normally", "Generation": vm["generation"],
            "MemoryStartup": vm["memory"], "ProcessorCount": vm["cpus"],
            "ComputerName": self.host.computer,
            "Path": "C:\\ProgramData\\Microsoft\\Windows\\Hyper-V",
            "ParentSnapshotName": vm["snapshots"][-1]["name"]
            if vm["snapshots"] else None,
            "CreationTime": PSDate(vm["created"])},
            "VirtualMachine (Name = '%s') [Id = '%s']" % (vm["name"], vm["id"]))

    def _drive_obj(self, vm, d):
        return PSObj({
            "VMName": vm["name"], "VMId": vm["id"], "Name": "Hard Drive on %s "
            "controller number %d at location %d" % (d["ctype"], d["cnum"],
                                                     d["cloc"]),
            "ControllerType": PSEnum(CONTROLLER, d["ctype"]),
            "ControllerNumber": d["cnum"], "ControllerLocation": d["cloc"],
            "Path": d["path"], "DiskNumber": None,
            "ComputerName": self.host.computer},
            "HardDiskDrive (Name = 'Hard Drive') [VMName = '%s']" % vm["name"])

    def _vhd_obj(self, e):
        return PSObj({
            "ComputerName": self.host.computer, "Path": e["path"],
            "VhdFormat": PSEnum(VHD_FORMAT, "VHDX"),
            "VhdType": PSEnum(VHD_TYPE, e["type"]), "FileSize": e["file_size"],
            "Size": e["size"], "MinimumSize": e["size"],
            "LogicalSectorSize": 512, "PhysicalSectorSize": 4096,
            "BlockSize": 33554432, "ParentPath": e["parent"],
            "DiskIdentifier": e["id"], "FragmentationPercentage": 0,
            "Alignment": 1, "Attached": True, "DiskNumber": None},
            "Microsoft.Vhd.PowerShell.VirtualHardDisk")

    def _snap_obj(self, vm, s):
        return PSObj({
            "Name": s["name"], "Id": s["id"], "VMName": vm["name"],
            "VMId": vm["id"], "SnapshotType": PSEnum(SNAPSHOT_TYPE, "Standard"),
            "CreationTime": PSDate(s["created"]),
            "ParentSnapshotName": s["parent"],
            "ComputerName": self.host.computer},
            "VMSnapshot (Name = '%s') [VMName = '%s']" % (s["name"], vm["name"]))

    # ---- lookups ---------------------------------------------------------------

    def _vms_named(self, names, cmd):
        out = []
        for name in _list(names):
            hits = [vm for vm in self.host.vms
                    if fnmatch.fnmatchcase(vm["name"].lower(), name.lower())]
            if not hits and not any(c in name for c in "*?["):
                self.errors.append(PSError(
                    "Hyper-V was unable to find a virtual machine with name "
                    "\"%s\"." % name, "InvalidArgument", name,
                    "VirtualizationException", "InvalidParameter," + HV + cmd))
            out += hits
        return out

    def _one_vm(self, name, cmd):
        vms = self._vms_named(name, cmd)
        if self.errors:
            raise self.errors.pop()
        return vms

    def _vm_input(self, params, data, key, cmd):
        if key in params:
            return self._one_vm(params[key], cmd)
        vms = [self._vm_by_id(o["VMId"]) for o in data or []
               if isinstance(o, dict) and "VMId" in o]
        if not vms:
            raise PSError("Cannot process command because of one or more "
                          "missing mandatory parameters: %s." % key,
                          "InvalidArgument", "", "ParameterBindingException",
                          "MissingMandatoryParameter," + HV + cmd)
        return vms

    def _vm_by_id(self, vm_id):
        for vm in self.host.vms:
            if vm["id"] == vm_id.lower().strip("{}"):
                return vm
        return None

    def _export_target(self, path, vm, cmd):
        dest_win = win_norm(path) + "\\" + vm["name"]
        dest_host = self.host.host_path(dest_win)
        if dest_host is None:
            raise Unsupported("%s -Path must be under an export root (%s)"
                              % (cmd, ", ".join(
                                  w for w, _ in self.host.export_roots_orig)))
        if os.path.exists(dest_host):
            raise PSError("Failed to export virtual machine '%s': the folder "
                          "'%s' already exists." % (vm["name"], dest_win),
                          "ResourceExists", vm["name"],
                          "VirtualizationException",
                          "OperationFailed," + HV + cmd.replace("-", ""))
        return dest_win, dest_host

    def _start_export(self, cmd, vm, disks, path, as_job):
        dest_win, dest_host = self._export_target(path, vm, cmd)
        fail = self.host.fail_exports.pop(0) if self.host.fail_exports \
            else None
        job = ExportJob(self.host, cmd, vm, disks, dest_win, dest_host, fail)
        self.host.exports.append(job)
        if as_job:
            if self.host.config["persistent_jobs"]:
                job_id = self.host.next_job
                self.host.next_job += 1
                self.host.jobs[job_id] = job
            else:
                job_id = self.next_job
                self.next_job += 1
                self.jobs[job_id] = job
            return [job.ps_object(job_id)]
        return self._wait_export(job, cmd, vm)

    def _wait_export(self, job, cmd, vm):
        """A synchronous export: progress on stderr until it ends."""
        last = -1
        self.host.lock.release()
        try:
            while not job.done.wait(0.1):
                if self.streams.cancel.is_set():
                    job.cancel.set()
                    job.done.wait(30)
                    break
                pct = job.percent()
                if pct != last and self.progress_pref != "SilentlyContinue":
                    self.streams.progress("Exporting virtual machine",
                                          "Exporting '%s'" % vm["name"], pct)
                    last = pct
        finally:
            self.host.lock.acquire()
        if job.state == "Failed":
            raise PSError(job.reason, "NotSpecified", vm["name"],
                          "VirtualizationException",
                          "OperationFailed," + HV + cmd.replace("-", ""))
        return []

    def _jobs_table(self):
        return self.host.jobs if self.host.config["persistent_jobs"] \
            else self.jobs

    def _jobs_by_id(self, ids):
        out = []
        for i in _list(ids):
            job = self._jobs_table().get(int(i))
            if job is None:
                self.errors.append(PSError(
                    "The command cannot find a job with the job ID %s. Verify "
                    "the value of the Id parameter and then try the command "
                    "again." % i, "ObjectNotFound", str(i),
                    "ArgumentException",
                    "JobWithSpecifiedSessionNotFound,Microsoft.PowerShell."
                    "Commands.GetJobCommand"))
            else:
                out.append((int(i), job))
        return out

    # ---- the cmdlets -----------------------------------------------------------

    def _cmdlets(self):
        c = Cmdlet
        return [
            c("Get-VM", self.get_vm, ("Name", "Id"), (), ("Name",),
              {"VMName": "Name"}, lists=("Name",)),
            c("Get-VMHardDiskDrive", self.get_hdd, ("VMName",), (),
              ("VMName",)),
            c("Get-VHD", self.get_vhd, ("Path",), (), ("Path",),
              lists=("Path",)),
            c("Checkpoint-VM", self.checkpoint, ("Name", "SnapshotName"),
              ("Passthru",), ("Name", "SnapshotName"), {"VMName": "Name"}),
            c("Get-VMSnapshot", self.get_snapshot, ("VMName", "Name"), (),
              ("VMName",)),
            c("Remove-VMSnapshot", self.remove_snapshot, ("VMName", "Name"),
              ("IncludeAllChildSnapshots",), ()),
            c("Export-VMSnapshot", self.export_snapshot,
              ("VMName", "Name", "Path"), ("AsJob",), ()),
            c("Export-VM", self.export_vm, ("Name", "Path"), ("AsJob",),
              ("Name", "Path"), {"VMName": "Name"}),
            c("Get-Job", self.get_job, ("Id",), (), ("Id",), lists=("Id",)),
            c("Receive-Job", self.receive_job, ("Id",), ("Keep", "Wait"),
              ("Id",)),
            c("Wait-Job", self.wait_job, ("Id", "Timeout"), (), ("Id",)),
            c("Remove-Job", self.remove_job, ("Id",), ("Force",), ("Id",)),
            c("Get-ChildItem", self.get_childitem, ("Path", "Filter"),
              ("Recurse", "File"), ("Path", "Filter")),
            c("Remove-Item", self.remove_item, ("Path",), ("Recurse", "Force"),
              ("Path",), {"LiteralPath": "Path"}),
            c("Test-Path", self.test_path, ("Path",), (), ("Path",),
              {"LiteralPath": "Path"}),
            c("Select-Object", self.select, ("Property", "ExpandProperty",
                                             "First"), (), ("Property",),
              lists=("Property",)),
            c("ConvertTo-Json", self.convert_json, ("Depth",), ("Compress",)),
            c("Out-Null", lambda p, d: [], ()),
            c("Write-Output", lambda p, d: _list(p["InputObject"]),
              ("InputObject",), (), ("InputObject",),
              lists=("InputObject",)),
        ]

    def get_vm(self, p, data):
        self._first_use()
        with self.host.lock:
            if "Id" in p:
                vm = self._vm_by_id(p["Id"])
                if vm is None:
                    raise PSError("Hyper-V was unable to find a virtual "
                                  "machine with id \"%s\"." % p["Id"],
                                  "InvalidArgument", p["Id"],
                                  "VirtualizationException",
                                  "InvalidParameter," + HV + "GetVM")
                return [self._vm_obj(vm)]
            vms = self._vms_named(p.get("Name", "*"), "GetVM")
            return [self._vm_obj(vm) for vm in vms]

    def get_hdd(self, p, data):
        self._first_use()
        with self.host.lock:
            return [self._drive_obj(vm, d)
                    for vm in self._vm_input(p, data, "VMName",
                                             "GetVMHardDiskDrive")
                    for d in vm["drives"]]

    def get_vhd(self, p, data):
        self._first_use()
        paths = _list(p["Path"]) if "Path" in p else [
            o["Path"] for o in data or [] if isinstance(o, dict)
            and "Path" in o]
        if not paths:
            raise PSError("Cannot process command because of one or more "
                          "missing mandatory parameters: Path.",
                          "InvalidArgument", "", "ParameterBindingException",
                          "MissingMandatoryParameter")
        out = []
        with self.host.lock:
            for path in paths:
                e = self.host.vhds.get(win_norm(path).lower())
                if e is None:
                    self.errors.append(PSError(
                        "'%s' is not an existing virtual hard disk file."
                        % path, "ObjectNotFound", path,
                        "VirtualizationException",
                        "ObjectNotFound,Microsoft.Vhd.PowerShell.Cmdlets."
                        "GetVHD"))
                else:
                    out.append(self._vhd_obj(e))
        return out

    def checkpoint(self, p, data):
        self._first_use()
        with self.host.lock:
            vms = self._vm_input(p, data, "Name", "CheckpointVM")
            name = p.get("SnapshotName")
            out = []
            for vm in vms:
                snap = self.host._checkpoint(
                    vm, name or "%s - (%s)" % (vm["name"], time.strftime(
                        "%m/%d/%Y - %I:%M:%S %p")))
                if p.get("Passthru"):
                    out.append(self._snap_obj(vm, snap))
            return out

    def _snaps(self, p, data, cmd):
        if "VMName" not in p and data:
            return [(self._vm_by_id(o["VMId"]), s)
                    for o in data if isinstance(o, dict) and "VMId" in o
                    for s in self._vm_by_id(o["VMId"])["snapshots"]
                    if s["id"] == o.get("Id")]
        out = []
        for vm in self._vm_input(p, None, "VMName", cmd):
            out += [(vm, s) for s in vm["snapshots"]
                    if "Name" not in p or fnmatch.fnmatchcase(
                        s["name"].lower(), p["Name"].lower())]
        if "Name" in p and not out and not any(ch in p["Name"] for ch in "*?"):
            raise PSError("Unable to find a snapshot matching the given "
                          "criteria.", "ObjectNotFound", p["Name"],
                          "VirtualizationException",
                          "ObjectNotFound," + HV + cmd)
        return out

    def get_snapshot(self, p, data):
        self._first_use()
        with self.host.lock:
            return [self._snap_obj(vm, s)
                    for vm, s in self._snaps(p, data, "GetVMSnapshot")]

    def remove_snapshot(self, p, data):
        self._first_use()
        with self.host.lock:
            for vm, s in self._snaps(p, data, "RemoveVMSnapshot"):
                self.host._remove_snapshot(vm, s)
        return []

    def export_snapshot(self, p, data):
        self._first_use()
        for key in ("VMName", "Name", "Path"):
            if key not in p:
                raise PSError("Cannot process command because of one or more "
                              "missing mandatory parameters: %s." % key,
                              "InvalidArgument", "",
                              "ParameterBindingException",
                              "MissingMandatoryParameter")
        with self.host.lock:
            pairs = self._snaps(p, None, "ExportVMSnapshot")
            if len(pairs) != 1:
                raise PSError("The operation cannot be performed because the "
                              "name '%s' matches %d checkpoints."
                              % (p["Name"], len(pairs)), "InvalidArgument",
                              p["Name"], "VirtualizationException",
                              "InvalidParameter," + HV + "ExportVMSnapshot")
            vm, snap = pairs[0]
            disks = [(d["leaf"], d["raw"]) for d in snap["disks"]]
            return self._start_export("Export-VMSnapshot", vm, disks,
                                      p["Path"], p.get("AsJob"))

    def export_vm(self, p, data):
        self._first_use()
        if "Path" not in p:
            raise PSError("Cannot process command because of one or more "
                          "missing mandatory parameters: Path.",
                          "InvalidArgument", "", "ParameterBindingException",
                          "MissingMandatoryParameter")
        with self.host.lock:
            vms = self._vm_input(p, data, "Name", "ExportVM")
            out = []
            for vm in vms:
                disks = [(self.host.root_leaf(d["path"]),
                          self.host.raw_of(d["path"])) for d in vm["drives"]]
                out += self._start_export("Export-VM", vm, disks, p["Path"],
                                          p.get("AsJob"))
            return out

    def get_job(self, p, data):
        with self.host.lock:
            if "Id" in p:
                pairs = self._jobs_by_id(p["Id"])
            else:
                pairs = sorted(self._jobs_table().items())
            return [job.ps_object(i) for i, job in pairs]

    def receive_job(self, p, data):
        pairs = self._jobs_by_id(p["Id"]) if "Id" in p else []
        for _, job in pairs:
            if p.get("Wait"):
                job.done.wait()
            if job.state == "Failed":
                raise PSError(job.reason, "NotSpecified", job.vm["name"],
                              "VirtualizationException",
                              "OperationFailed," + HV +
                              job.command.replace("-", ""))
        return []

    def wait_job(self, p, data):
        pairs = self._jobs_by_id(p["Id"]) if "Id" in p else []
        deadline = float(p.get("Timeout", 3600))
        for _, job in pairs:
            job.done.wait(deadline)
        return [job.ps_object(i) for i, job in pairs]

    def remove_job(self, p, data):
        with self.host.lock:
            for i, job in self._jobs_by_id(p["Id"]) if "Id" in p else []:
                if job.state == "Running" and not p.get("Force"):
                    raise PSError("The command cannot remove the job with the "
                                  "job ID %d because the job is not finished."
                                  % i, "InvalidOperation", str(i),
                                  "InvalidJobStateException",
                                  "JobObjectNotFinishedCannotBeRemoved")
                self._jobs_table().pop(i, None)
        return []

    def _mapped(self, path, cmd):
        host = self.host.host_path(path)
        if host is None:
            raise Unsupported("%s works only under an export root (%s), not "
                              "%r" % (cmd, ", ".join(
                                  w for w, _ in self.host.export_roots_orig),
                                      path))
        return host

    def _not_found(self, path, cmd):
        return PSError("Cannot find path '%s' because it does not exist."
                       % path, "ObjectNotFound", path,
                       "ItemNotFoundException",
                       "PathNotFound,Microsoft.PowerShell.Commands." + cmd)

    def get_childitem(self, p, data):
        path = p.get("Path")
        if path is None:
            raise Unsupported("Get-ChildItem needs -Path")
        top = self._mapped(path, "Get-ChildItem")
        if not os.path.exists(top):
            raise self._not_found(path, "GetChildItemCommand")
        pattern = p.get("Filter", "*").lower()
        entries = []
        if os.path.isfile(top):
            entries.append(top)
        elif p.get("Recurse"):
            for folder, dirs, files in os.walk(top):
                dirs.sort()
                for name in sorted(dirs) + sorted(files):
                    entries.append(os.path.join(folder, name))
        else:
            entries = [os.path.join(top, n) for n in sorted(os.listdir(top))]
        out = []
        for full in entries:
            name = os.path.basename(full)
            is_dir = os.path.isdir(full)
            if not fnmatch.fnmatchcase(name.lower(), pattern):
                continue
            if is_dir and p.get("File"):
                continue
            st = os.stat(full)
            props = {"Name": name, "FullName": self.host.win_path(full)}
            if not is_dir:
                props["Length"] = st.st_size
            props.update({"PSIsContainer": is_dir,
                          "LastWriteTime": PSDate(st.st_mtime),
                          "Mode": "d-----" if is_dir else "-a----"})
            out.append(PSObj(props, name))
        return out

    def remove_item(self, p, data):
        path = p.get("Path")
        if path is None:
            raise Unsupported("Remove-Item needs -Path")
        target = self._mapped(path, "Remove-Item")
        if target in [h for _, h in self.host.export_roots_orig]:
            raise Unsupported("Remove-Item of an export root itself")
        if not os.path.lexists(target):
            raise self._not_found(path, "RemoveItemCommand")
        if os.path.isdir(target):
            if os.listdir(target) and not p.get("Recurse"):
                raise PSError("The item at %s has children and the Recurse "
                              "parameter was not specified." % path,
                              "NotSpecified", path, "PSInvalidOperation"
                              "Exception", "DirectoryNotEmpty")
            busy = [j for j in self.host.exports if j.state == "Running"
                    and (j.dest_host + os.sep).startswith(target + os.sep)]
            if busy:
                raise PSError("Cannot remove item %s: The process cannot "
                              "access the file because it is being used by "
                              "another process." % path, "WriteError", path,
                              "IOException", "RemoveFileSystemItemIOError,"
                              "Microsoft.PowerShell.Commands.RemoveItemCommand")
            shutil.rmtree(target)
        else:
            os.unlink(target)
        return []

    def test_path(self, p, data):
        path = p.get("Path")
        if path is None:
            raise Unsupported("Test-Path needs -Path")
        host = self.host.host_path(path)
        if host is not None:
            return [os.path.exists(host)]
        with self.host.lock:
            return [win_norm(path).lower() in self.host.vhds]

    def select(self, p, data):
        items = list(data or [])
        if "First" in p:
            items = items[:int(p["First"])]
        if "ExpandProperty" in p:
            key = p["ExpandProperty"]
            out = []
            for o in items:
                if not isinstance(o, dict) or key not in o:
                    raise PSError("Property \"%s\" cannot be found." % key,
                                  "InvalidArgument", "", "PSArgumentException",
                                  "ExpandPropertyNotFound,Microsoft.PowerShell."
                                  "Commands.SelectObjectCommand")
                v = o[key]
                out += v if isinstance(v, list) else [v]
            return out
        if "Property" not in p:
            return items
        props = _list(p["Property"])
        if any(not isinstance(k, CalcProp) and
               any(ch in k for ch in "*?@{}") for k in props):
            raise Unsupported("Select-Object takes property names and "
                              "calculated properties only")
        return [PSObj({_prop_name(k): _prop_value(k, o) for k in props},
                      "@{...}") for o in items]

    def convert_json(self, p, data):
        items = list(data or [])
        if not items:
            return []
        depth = int(p.get("Depth", 2))
        value = items[0] if len(items) == 1 else items
        return [to_json(value, depth, bool(p.get("Compress")))]
