# SPDX-License-Identifier: MIT
"""Child processes of the tests, the bench and the demo launchers: the
emulators and servers they start. No pytest here, so that tools/bench
and the launchers can import it."""

import signal
import subprocess


def stop_process(proc, grace=5):
    """SIGTERM @proc, then SIGKILL it if it has not exited after @grace
    seconds; reaped either way. Nothing if it has exited already."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
