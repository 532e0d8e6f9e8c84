"""Processes a test starts, killed at its teardown if they still run.

A failed assertion between starting a process and waiting for it used to leave the process
running; its pipes and Popen object were then collected during a *later* test, whose
ResourceWarnings (errors here) failed that innocent test too.
"""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Any

_started: list[subprocess.Popen] = []


def spawn(command: list[str], **popen: Any) -> subprocess.Popen:
    """subprocess.Popen, remembered until `reap_all` runs at the end of the test."""
    proc = subprocess.Popen(command, **popen)
    _started.append(proc)
    return proc


def reap_all() -> None:
    """Kill what still runs (its whole session if it has its own) and close its pipes."""
    while _started:
        proc = _started.pop()
        if proc.poll() is None:
            try:
                if proc.pid == os.getsid(proc.pid):
                    os.killpg(proc.pid, signal.SIGKILL)
                else:
                    proc.kill()
            except ProcessLookupError:
                pass  # it ended while we looked
        proc.communicate(timeout=30)  # waits, and closes stdout/stderr pipes
