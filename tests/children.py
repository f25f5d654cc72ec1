"""Child processes for the kill -9 tests: a test module run as a script, killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def start_child(module: str, *args: str) -> tuple[subprocess.Popen[str], int]:
    """Run `python -m module args...` from the repository root and wait for its `ready N` line; returns the
    process and N (e.g. how many temp files the child's janitor removed at start)."""
    child = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line.startswith("ready "), f"{module} did not start (exit code {child.poll()})"
    return child, int(line.split()[1])


def kill(child: subprocess.Popen[str]) -> None:
    """SIGKILL (no clean-up in the child), then reap it and close its pipe."""
    if child.poll() is None:
        os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=10)
    if child.stdout is not None:
        child.stdout.close()
