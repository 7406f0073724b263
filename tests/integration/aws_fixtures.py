# SPDX-License-Identifier: MIT
"""The AWS emulator for the integration tests: tests/emulators/aws_launcher.py
(moto plus what moto lacks) run as a child process with the python3 that
has moto (the pyenv one first on PATH; pytest itself runs under Debian's
python3, which has neither moto nor boto3).

    launcher = AwsLauncher(tmp, instances, buckets=["exports"])
    launcher.endpoint, launcher.state, launcher.stats(), launcher.faults({...})
"""

import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

from procs import stop_process

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = REPO / "tests" / "emulators" / "aws_launcher.py"
START_TIMEOUT = 60

_MOTO_PYTHON = []


def moto_python():
    """A python3 that can import moto and boto3, or None."""
    if _MOTO_PYTHON:
        return _MOTO_PYTHON[0]
    candidates = [os.environ.get("CFS_MOTO_PYTHON"), shutil.which("python3"),
                  os.path.expanduser("~/.pyenv/shims/python3"),
                  "/root/.pyenv/shims/python3"]
    found = None
    for c in candidates:
        if not c or not os.path.exists(c):
            continue
        try:
            r = subprocess.run([c, "-c", "import moto, boto3"],
                               capture_output=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if r.returncode == 0:
            found = c
            break
    _MOTO_PYTHON.append(found)
    return found


class AwsLauncher:
    """One aws_launcher.py process, seeded with instances."""

    def __init__(self, workdir, instances, buckets=(), strict=None,
                 snapshot_seconds=1.0, export_seconds=1.5, faults=None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.python = moto_python()
        seed = self.workdir / "seed.json"
        state = self.workdir / "state.json"
        seed.write_text(json.dumps({"instances": instances,
                                    "buckets": list(buckets)}))
        argv = [self.python, str(LAUNCHER), "--seed", str(seed),
                "--state", str(state),
                "--snapshot-seconds", str(snapshot_seconds),
                "--export-seconds", str(export_seconds)]
        if strict is not None:
            argv += ["--strict", str(strict)]
        if faults:
            argv += ["--faults", json.dumps(faults)]
        self.log = open(self.workdir / "launcher.log", "wb")
        env = dict(os.environ)
        env.pop("AWS_PROFILE", None)
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE,
                                     stderr=self.log, env=env,
                                     stdin=subprocess.DEVNULL)
        self.port = self.control_port = None
        deadline = time.monotonic() + START_TIMEOUT
        while self.port is None:
            line = self.proc.stdout.readline().decode()
            if not line or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("aws launcher did not start; log:\n%s"
                                   % self.log_text())
            word, _, value = line.strip().partition(" ")
            if word == "CONTROL":
                self.control_port = int(value)
            elif word == "PORT":
                self.port = int(value)
        self.endpoint = "http://127.0.0.1:%d" % self.port
        self.state = json.loads(state.read_text())
        self.region = self.state["region"]

    def log_text(self):
        try:
            return (self.workdir / "launcher.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # --- the control endpoint ---
    def _control(self, method, path, obj=None):
        data = json.dumps(obj).encode() if obj is not None else None
        req = urllib.request.Request(
            "http://127.0.0.1:%d%s" % (self.control_port, path),
            method=method, data=data)
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read() or b"{}")

    def stats(self):
        return self._control("GET", "/_launcher/stats")

    def calls(self, action=None):
        calls = self.stats()["calls"]
        return calls if action is None else calls.get(action, 0)

    def injected(self, action):
        return self.stats()["faults_injected"].get(action, 0)

    def reset_stats(self):
        self._control("POST", "/_launcher/stats/reset")

    def faults(self, table):
        return self._control("PUT", "/_launcher/faults", table)

    def clear_faults(self):
        return self._control("DELETE", "/_launcher/faults")

    def config(self, **keys):
        """Change snapshot_seconds, export_seconds, block_token_seconds,
        creds_seconds, container_token, sso_token; returns them all."""
        return self._control("PUT", "/_launcher/config", keys)

    @property
    def control_url(self):
        """Where the credential fakes (container, IMDS, SSO) answer."""
        return "http://127.0.0.1:%d" % self.control_port

    # --- what was seeded ---
    def instance(self, name):
        for inst in self.state["instances"]:
            if inst["name"] == name:
                return inst
        raise KeyError(name)

    def s3_get(self, bucket, key, path):
        """An object's bytes, fetched with boto3 into path."""
        self.boto("s3.download_file(%r, %r, %r)" % (bucket, key, str(path)))
        return Path(path).read_bytes()

    def boto(self, code, timeout=60, key="testing", secret="testing"):
        """Run python code with boto3 clients ec2, s3, iam bound to the
        emulator (in moto's python); return what it prints, as JSON."""
        prelude = (
            "import boto3, json\n"
            "s = boto3.session.Session(aws_access_key_id=%r, "
            "aws_secret_access_key=%r, region_name=%r)\n"
            "ec2 = s.client('ec2', endpoint_url=%r)\n"
            "s3 = s.client('s3', endpoint_url=%r)\n"
            "iam = s.client('iam', endpoint_url=%r)\n"
            % (key, secret, self.region, self.endpoint, self.endpoint,
               self.endpoint))
        r = subprocess.run([self.python, "-c", prelude + code],
                           capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError("boto3 script failed:\n%s" % r.stderr[-3000:])
        return json.loads(r.stdout) if r.stdout.strip() else None

    def cloudfs_snapshots(self):
        """Snapshot ids tagged as cloudfs temporaries."""
        return self.boto(
            "r = ec2.describe_snapshots(OwnerIds=['self'], Filters=[{"
            "'Name': 'tag:cloudfs:temporary', 'Values': ['true']}])\n"
            "print(json.dumps([x['SnapshotId'] for x in r['Snapshots']]))")

    def stop(self):
        stop_process(self.proc, 10)
        self.proc.stdout.close()
        self.log.close()


def aws_config(launcher, **keys):
    """An [aws] section pointing at the launcher."""
    conf = {"endpoint_url": launcher.endpoint, "region": launcher.region,
            "poll_interval": "0.2"}
    conf.update({k: v for k, v in keys.items() if v is not None})
    return "[aws]\n" + "".join("%s = %s\n" % kv for kv in conf.items())
