"""Kill a resumable stage mid-run: start it in a subprocess and SIGKILL it once its JSONL checkpoint (a settings
header, then one line per finished anchor) holds enough anchors. Shared by the beam_search and beam_rewards resume
tests."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest


def complete_lines(path: Path) -> int:
    """Finished anchors in a checkpoint (complete lines after the settings header)."""
    return max(path.read_bytes().count(b"\n") - 1, 0) if path.exists() else 0


def run_until_killed(argv: list[str], partial: Path, min_lines: int, env: dict, timeout_s: float) -> None:
    """Run `argv` and SIGKILL it as soon as `partial` holds `min_lines` finished anchors; fail if it exits first or
    writes none within `timeout_s`."""
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout_s
    try:
        while complete_lines(partial) < min_lines:
            if proc.poll() is not None:
                pytest.fail(f"exited (rc={proc.returncode}) before it could be killed: {proc.stderr.read()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"no checkpoint line within {timeout_s:g} s")
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
