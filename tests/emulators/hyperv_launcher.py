#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The Hyper-V emulator as one process, for tools/demo: the WinRM fake and
a private smbd as tests/integration/hyperv_fixtures.py starts them (the
smbd serves as the system user cfs-smbtest, created if missing: root),
seeded with one running VM whose disk holds the bytes of a raw file.

    hyperv_launcher.py --raw disk.raw --name demo-hv --config-out hv.conf

Writes a [hyperv] section to --config-out (its password files beside it)
and prints "READY smb", or, when smbd cannot be started, "READY
export_mount <why>" with a section that reads the export folder locally.
Serves until SIGTERM or SIGINT; then stops both and removes its folder.
"""

import argparse
import shutil
import signal
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
import hyperv_fixtures  # noqa: E402


def start(base):
    """(HyperV, why smbd is missing or None)."""
    why = None
    if not hyperv_fixtures.ensure_smb_user():
        why = "no system user %s (root creates it)" % hyperv_fixtures.SMB_USER
    for tool in ("smbd", "smbpasswd", "setsid"):
        if why is None and shutil.which(tool) is None:
            why = "%s is missing" % tool
    if why is None:
        try:
            return hyperv_fixtures.HyperV(base / "smb"), None
        except RuntimeError as exc:
            why = "smbd did not start: %s" % str(exc).splitlines()[0]
    return hyperv_fixtures.HyperV(base / "local", smbd=False), why


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--raw", required=True, help="the VM's disk, raw")
    ap.add_argument("--name", default="demo-hv", help="the VM's name")
    ap.add_argument("--config-out", required=True)
    args = ap.parse_args()

    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    signal.signal(signal.SIGINT, lambda *a: stop.append(1))
    # Not under a 0700 folder: smbd serves files as its share's user.
    base = Path(tempfile.mkdtemp(prefix="cloudfs-hyperv."))
    base.chmod(0o755)
    hv = None
    try:
        hv, why = start(base)
        disk = "C:\\VMs\\%s\\%s.vhdx" % (args.name, args.name)
        hv.seed({"vms": [{"Name": args.name, "State": "Running",
                          "Generation": 2, "ProcessorCount": 2,
                          "HardDrives": [{"ControllerType": "SCSI",
                                          "Path": disk}]}]},
                {disk: str(Path(args.raw).resolve())})
        hv.faults(export_seconds=1.0)
        out = Path(args.config_out).resolve()
        out.write_text(hyperv_fixtures.hyperv_config(
            hv, out.parent, export_mount=hv.export_dir if why else None))
        print("READY smb" if why is None else "READY export_mount " + why,
              flush=True)
        while not stop:
            signal.pause()
    finally:
        if hv is not None:
            hv.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
