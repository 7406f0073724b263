# SPDX-License-Identifier: MIT
"""The Hyper-V host model behind winrm_fake.py: VMs, virtual disks,
checkpoints and exports (real VHDX files written with qemu-img into a
host folder that stands for a Windows path), and the cmdlets of the
PowerShell subset.  The subset and the seed format are documented in
winrm_fake.py.  Standard library only.
"""

import os
import shutil
import subprocess
import threading
import time
import uuid

from hyperv_ps import (JOB_STATE, QEMU_IMG, VHD_TYPE, VM_STATE, PSEnum,
                       PSError, PSObj)

MiB = 1 << 20


def win_norm(path):
    path = path.replace("/", "\\")
    while len(path) > 3 and path.endswith("\\"):
        path = path[:-1]
    return path


def win_leaf(path):
    return win_norm(path).rsplit("\\", 1)[-1]


def win_parent(path):
    return win_norm(path).rsplit("\\", 1)[0]


def allocated_estimate(raw):
    """A dynamic VHDX's file size for this raw: used 1 MiB blocks + 4 MiB."""
    used = 0
    with open(raw, "rb") as f:
        while True:
            buf = f.read(MiB)
            if not buf:
                break
            if buf.count(0) != len(buf):
                used += MiB
    return used + 4 * MiB


class ExportJob:
    """One export the host runs (VMMS side); the PS job is a view of it."""

    def __init__(self, host, command, vm, disks, dest_win, dest_host, fail):
        self.host = host
        self.command = command
        self.vm = vm
        self.disks = disks          # [(leaf.vhdx, raw host path)]
        self.dest_win = dest_win
        self.dest_host = dest_host
        self.fail = fail            # message, or None
        self.duration = host.config["export_seconds"]
        self.started = time.monotonic()
        self.state = "Running"
        self.reason = None
        self.done = threading.Event()
        self.cancel = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def percent(self):
        if self.state == "Completed":
            return 100
        if not self.duration:
            return 99
        elapsed = time.monotonic() - self.started
        return max(0, min(99, int(100 * elapsed / self.duration)))

    def _run(self):
        stage = os.path.join(self.host.workdir, "staging", uuid.uuid4().hex)
        try:
            os.makedirs(os.path.join(self.dest_host, "Virtual Hard Disks"))
            os.makedirs(stage)
            if self.fail is not None:
                self.cancel.wait(self.duration / 2)
                raise RuntimeError(self.fail)
            for leaf, raw in self.disks:
                r = subprocess.run([QEMU_IMG, "convert", "-q", "-f", "raw",
                                    "-O", "vhdx", "-o", "subformat=dynamic",
                                    raw, os.path.join(stage, leaf)],
                                   capture_output=True, text=True)
                if r.returncode != 0:
                    raise RuntimeError("qemu-img: " + r.stderr.strip())
            left = self.duration - (time.monotonic() - self.started)
            if left > 0 and self.cancel.wait(left):
                raise RuntimeError("The operation was canceled.")
            if self.cancel.is_set():
                raise RuntimeError("The operation was canceled.")
            vmdir = os.path.join(self.dest_host, "Virtual Machines")
            os.makedirs(vmdir)
            with open(os.path.join(vmdir, self.vm["id"].upper() + ".vmcx"),
                      "wb") as f:
                f.write(b"\0" * 4096)
            for leaf, _ in self.disks:
                dst = os.path.join(self.dest_host, "Virtual Hard Disks", leaf)
                os.replace(os.path.join(stage, leaf), dst)
                os.chmod(dst, 0o644)
            self.state = "Completed"
        except (OSError, RuntimeError) as exc:
            self.state = "Failed"
            self.reason = str(exc)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
            self.done.set()

    def progress(self):
        pct = self.percent()
        steps = sorted(set(list(range(0, pct, 10)) + [pct]))
        return [PSObj({"ActivityId": 0, "ParentActivityId": -1,
                       "Activity": "Exporting virtual machine",
                       "StatusDescription": "Exporting '%s'" % self.vm["name"],
                       "CurrentOperation": None, "PercentComplete": p,
                       "SecondsRemaining": -1,
                       "RecordType": PSEnum({"Processing": 0}, "Processing")},
                      "parent = -1 id = 0 act = Exporting virtual machine "
                      "stat = Exporting '%s' cur =  pct = %d sec = -1 "
                      "type = Processing" % (self.vm["name"], p))
                for p in steps]

    def ps_object(self, job_id):
        return PSObj({"Id": job_id, "Name": "Job%d" % job_id,
                      "PSJobTypeName": "VirtualizationJob",
                      "State": PSEnum(JOB_STATE, self.state),
                      "HasMoreData": self.state == "Failed",
                      "Location": self.host.computer,
                      "Command": self.command, "Progress": self.progress()},
                     "Microsoft.HyperV.PowerShell.VirtualizationJob")


class Host:
    """The inventory and everything the cmdlets change.  One lock."""

    def __init__(self, workdir, export_roots):
        self.workdir = workdir
        self.export_roots_orig = [(win_norm(w), os.path.realpath(h))
                                  for w, h in export_roots]
        self.export_roots = [(w.lower(), h)
                             for w, h in self.export_roots_orig]
        self.lock = threading.RLock()
        self.config = {"export_seconds": 1.0, "persistent_jobs": False,
                       "first_use_progress": True}
        self.fail_exports = []      # messages for the next exports
        self.cmdlets = {}
        self.exports = []           # every ExportJob
        self.jobs = {}              # persistent PS job table
        self.next_job = 1
        self.seed({"vms": [], "vhds": []})

    # ---- seeding ----------------------------------------------------------

    def seed(self, inv):
        with self.lock:
            self.computer = inv.get("computer", "HYPERV01")
            self.vhds = {}
            for v in inv.get("vhds", []):
                self._add_vhd(v)
            self.vms = []
            for v in inv.get("vms", []):
                self.vms.append(self._add_vm(v))

    def _add_vhd(self, v):
        path = win_norm(v["Path"])
        raw = v.get("Raw")
        size = v.get("Size")
        if raw and size is None:
            size = os.path.getsize(raw)
        if raw and os.path.getsize(raw) != size:
            raise ValueError("%s: raw is %d bytes, Size %d"
                             % (path, os.path.getsize(raw), size))
        parent = v.get("ParentPath")
        vtype = v.get("VhdType", "Differencing" if parent else "Dynamic")
        if vtype not in VHD_TYPE:
            raise ValueError("VhdType %r" % vtype)
        entry = {"path": path, "type": vtype, "size": size, "raw": raw,
                 "parent": win_norm(parent) if parent else None,
                 "file_size": v.get("FileSize") or (
                     allocated_estimate(raw) if raw else 4 * MiB),
                 "id": str(uuid.uuid4()).upper()}
        self.vhds[path.lower()] = entry
        return entry

    def _add_vm(self, v):
        vm = {"name": v["Name"], "id": str(v.get("Id") or uuid.uuid4()).lower(),
              "state": v.get("State", "Off"),
              "generation": int(v.get("Generation", 2)),
              "memory": int(v.get("MemoryStartup", 1 << 30)),
              "cpus": int(v.get("ProcessorCount", 1)), "drives": [],
              "snapshots": [],
              "created": float(v.get("CreationTime", time.time() - 86400))}
        if vm["state"] not in VM_STATE:
            raise ValueError("State %r" % vm["state"])
        for i, d in enumerate(v.get("HardDrives", [])):
            path = win_norm(d["Path"])
            if path.lower() not in self.vhds:
                raise ValueError("%s: disk %s is not in vhds"
                                 % (vm["name"], path))
            vm["drives"].append({
                "ctype": d.get("ControllerType",
                               "SCSI" if vm["generation"] == 2 else "IDE"),
                "cnum": int(d.get("ControllerNumber", 0)),
                "cloc": int(d.get("ControllerLocation", i)), "path": path})
        for c in v.get("Checkpoints", []):
            self._checkpoint(vm, c["Name"])
        return vm

    # ---- lookups -----------------------------------------------------------

    def raw_of(self, path):
        """The merged raw bytes (host file) behind a disk path."""
        seen = 0
        entry = self.vhds.get(path.lower())
        while entry is not None and seen < 64:
            if entry["raw"]:
                return entry["raw"]
            entry = self.vhds.get((entry["parent"] or "").lower())
            seen += 1
        raise PSError("'%s' has no data in this fake (seed a Raw)" % path)

    def root_leaf(self, path):
        """The exported file name: the base disk's name, as .vhdx."""
        leaf = win_leaf(self._chain_root(path))
        base, dot, _ = leaf.rpartition(".")
        return (base if dot else leaf) + ".vhdx"

    def host_path(self, win):
        """The host path under an export root for a Windows path, or None."""
        norm = win_norm(win)
        if any(part == ".." for part in norm.split("\\")):
            return None
        low = norm.lower()
        for root, hostdir in self.export_roots:
            if low == root:
                return hostdir
            if low.startswith(root + "\\"):
                rest = norm[len(root) + 1:].split("\\")
                return os.path.join(hostdir, *rest)
        return None

    def win_path(self, hostpath):
        """The Windows path of a host path under an export root."""
        for root, hostdir in self.export_roots_orig:
            if hostpath == hostdir or hostpath.startswith(hostdir + os.sep):
                rel = os.path.relpath(hostpath, hostdir)
                return root if rel == "." else \
                    root + "\\" + rel.replace(os.sep, "\\")
        return hostpath

    def _checkpoint(self, vm, name):
        snap = {"name": name, "id": str(uuid.uuid4()).lower(),
                "created": time.time(),
                "parent": vm["snapshots"][-1]["name"] if vm["snapshots"]
                else None, "disks": []}
        for d in vm["drives"]:
            snap["disks"].append({"path": d["path"],
                                  "leaf": self.root_leaf(d["path"]),
                                  "raw": self.raw_of(d["path"])})
            old = self.vhds[d["path"].lower()]
            base = win_leaf(self._chain_root(d["path"])).rsplit(".", 1)[0]
            new = "%s\\%s_%s.avhdx" % (win_parent(d["path"]), base,
                                       str(uuid.uuid4()).upper())
            self.vhds[new.lower()] = {
                "path": new, "type": "Differencing", "size": old["size"],
                "raw": None, "parent": d["path"], "file_size": 4 * MiB,
                "id": str(uuid.uuid4()).upper(), "snapshot": snap["id"]}
            d["path"] = new
        vm["snapshots"].append(snap)
        return snap

    def _chain_root(self, path):
        entry = self.vhds.get(path.lower())
        if entry is None:
            return path
        while entry["parent"] and entry["parent"].lower() in self.vhds:
            entry = self.vhds[entry["parent"].lower()]
        return entry["path"]

    def _remove_snapshot(self, vm, snap):
        """Merge: a disk whose avhdx was made by this checkpoint goes back
        to its parent."""
        for d in vm["drives"]:
            entry = self.vhds.get(d["path"].lower())
            if entry and entry.get("snapshot") == snap["id"]:
                del self.vhds[d["path"].lower()]
                d["path"] = entry["parent"]
        for other in vm["snapshots"]:
            if other["parent"] == snap["name"]:
                other["parent"] = snap["parent"]
        vm["snapshots"].remove(snap)

    # ---- state for the tests -------------------------------------------------

    def state(self):
        with self.lock:
            folders = []
            for root, hostdir in self.export_roots:
                if os.path.isdir(hostdir):
                    folders += sorted(os.listdir(hostdir))
            return {
                "vms": [{"Name": vm["name"], "Id": vm["id"],
                         "State": vm["state"],
                         "HardDrives": [d["path"] for d in vm["drives"]],
                         "Checkpoints": [s["name"] for s in vm["snapshots"]]}
                        for vm in self.vms],
                "checkpoints": sum(len(vm["snapshots"]) for vm in self.vms),
                "export_folders": folders,
                "exports": [{"vm": j.vm["name"], "command": j.command,
                             "path": j.dest_win, "state": j.state,
                             "percent": j.percent(), "reason": j.reason}
                            for j in self.exports],
                "config": dict(self.config),
                "fail_exports": list(self.fail_exports)}

    def reset(self):
        with self.lock:
            for job in self.exports:
                job.cancel.set()
        for job in self.exports:
            job.done.wait(30)
        with self.lock:
            self.exports = []
            self.jobs = {}
            self.next_job = 1
            self.fail_exports = []
            self.cmdlets = {}
            self.config.update(export_seconds=1.0, persistent_jobs=False,
                               first_use_progress=True)
            for root, hostdir in self.export_roots:
                if os.path.isdir(hostdir):
                    for name in os.listdir(hostdir):
                        full = os.path.join(hostdir, name)
                        if os.path.isdir(full) and not os.path.islink(full):
                            shutil.rmtree(full)
                        else:
                            os.unlink(full)

    def count(self, cmdlet):
        with self.lock:
            self.cmdlets[cmdlet] = self.cmdlets.get(cmdlet, 0) + 1

    def run(self, script, streams):
        """One powershell.exe: run the script, then finish the streams."""
        from hyperv_cmdlets import Process
        Process(self, streams).run(script)
