"""What every benchmark here shares: a command's wall-clock, and the machine it ran on."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time


def timed_train(overrides: list[str], env: dict | None = None, quiet_stderr: bool = True) -> float:
    """Seconds that `python -m harness.train OVERRIDES...` took, its output discarded; raises if it failed."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "harness.train", *overrides], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL if quiet_stderr else None)
    return time.perf_counter() - start


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores"


def commit() -> str:
    """The commit the benchmark ran from, marked when the tree had changes."""
    def git(*args: str) -> str:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True).stdout.strip()

    return git("rev-parse", "--short", "HEAD") + ("+changes" if git("status", "--porcelain") else "")
