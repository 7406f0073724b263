# SPDX-License-Identifier: MIT
"""cloudfs-progress: the live view of a mount's exports. Run in a real
terminal (tmux) while a copy runs, it draws bars that move and exits when
the copy ends; --once and --json print one snapshot for scripts."""

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import MiB, run_tool, wait_until


@pytest.fixture(scope="session")
def viewer(cloudfs_bin):
    path = Path(cloudfs_bin).parent / "cloudfs-progress"
    if not path.exists():
        pytest.skip("cloudfs-progress was not built next to %s" % cloudfs_bin)
    return path


def test_once_and_json(viewer, images, http_server, mount):
    img = images.random("a.raw", 2 * MiB, seed=1)
    m = mount({"a": http_server.url(img.name)})
    run_tool(["cp", m.disk("a"), os.devnull])
    wait_until(lambda: m.disk_progress("a")["state"] == "complete", 10)
    out = subprocess.run([str(viewer), "--once", str(m.path)],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert "url/a/disk.raw" in out.stdout and "100.0%" in out.stdout, \
        out.stdout
    assert "\033" not in out.stdout, "escapes written to a pipe"
    out = subprocess.run([str(viewer), "--once", "--json", str(m.path)],
                         capture_output=True, text=True, timeout=20)
    rows = [json.loads(r) for r in out.stdout.splitlines() if r.strip()]
    assert [r["path"] for r in rows] == ["url/a/disk.raw"], rows
    assert rows[0]["state"] == "complete"
    assert rows[0]["bytes"] == str(2 * MiB)


def test_bad_path(viewer, tmp_path):
    out = subprocess.run([str(viewer), "--once", str(tmp_path / "nope")],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 1 and "nope" in out.stderr


def tmux(*args, check=True):
    return subprocess.run(["tmux", *args], capture_output=True, text=True,
                          timeout=20, check=check)


def test_live_view_in_a_terminal(viewer, images, http_server, mount,
                                 tmp_path):
    if not shutil.which("tmux"):
        pytest.skip("tmux is not installed")
    img = images.random("slow.raw", 8 * MiB, seed=2)
    http_server.faults(rate=3 * MiB)   # per connection: a copy of seconds
    m = mount({"slow": http_server.url(img.name)},
              options={"parallel": "1"})
    session = "cfs-viewer-%d" % os.getpid()
    done = tmp_path / "viewer-exited"
    tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "30",
         "%s --interval 0.2 %s; touch %s; sleep 30"
         % (viewer, m.path, done))
    try:
        copy = subprocess.Popen(["cp", str(m.disk("slow")),
                                 str(tmp_path / "copy.raw")])
        screens = []

        def moving():
            screen = tmux("capture-pane", "-p", "-t", session).stdout
            screens.append(screen)
            return "transferring" in screen and "%" in screen

        wait_until(moving, 30, interval=0.1, what="a moving bar")
        assert "url/slow/disk.raw" in screens[-1]
        assert copy.wait(60) == 0
        wait_until(done.exists, 20, what="the viewer to exit after the copy")
        final = tmux("capture-pane", "-p", "-t", session).stdout
        assert "complete" in final and "100.0%" in final, final
        # Redrawn in place: the path shows once, not once per refresh.
        assert final.count("url/slow/disk.raw") == 1, final
    finally:
        tmux("kill-session", "-t", session, check=False)
