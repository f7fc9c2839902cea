"""What the benchmark scripts say about the machine they ran on, and as they go."""

from __future__ import annotations

import os
import platform
import sys
import time


def say(script: str, text: str) -> None:
    """A progress line on stderr, flushed at once, so that a run stopped at a time limit still
    shows which part took the time."""
    print(f"[{script} {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def cpu_name() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), or what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity where the OS tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
