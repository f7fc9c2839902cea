"""What the benchmark scripts say about the machine they ran on, and as they go."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path


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


#: Where git runs: the repository root (the parent of ``benchmarks/``).
REPO_ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str | None:
    """``git <args>``'s output in :data:`REPO_ROOT`, or None when git is missing or fails."""
    try:
        out = subprocess.run(
            ["git", *args], capture_output=True, text=True, cwd=REPO_ROOT, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_commit() -> str:
    """The checkout's commit, short hash; "unknown" when git is missing or fails."""
    return _git("rev-parse", "--short", "HEAD") or "unknown"


def gpu_name(device: object) -> str | None:
    """The CUDA device's name when ``device`` (``"cuda"``, ``"cuda:1"``, a ``torch.device``) is
    one and CUDA is there, else None: for the ``device`` of :func:`header_lines`."""
    if not str(device).startswith("cuda"):
        return None
    import torch

    return torch.cuda.get_device_name(torch.device(device)) if torch.cuda.is_available() else None


def _memory() -> str | None:
    """Total RAM (``MemTotal`` of ``/proc/meminfo``), e.g. "24 GiB RAM"; None if unreadable."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return f"{int(line.split()[1]) / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return None


def _versions(extra: str) -> str:
    try:
        from mil_crcrs._version import __version__
    except ImportError:
        from mil_crcrs import __version__
    commit = git_commit()
    if commit != "unknown" and _git("status", "--porcelain", "--untracked-files=no"):
        commit += ", with uncommitted changes"
    parts = [f"mil-crcrs {__version__} (git {commit})", f"Python {platform.python_version()}"]
    try:
        import torch
    except ImportError:
        pass
    else:
        parts.append(f"torch {torch.__version__}")
    return ", ".join([*parts, *([extra] if extra else [])])


def header_lines(
    script: str,
    argv: Sequence[str] | None = None,
    *,
    threads: int | None = None,
    device: str | None = None,
    extra_versions: str = "",
    started: datetime | None = None,
) -> list[str]:
    """The Command, Machine, Versions and Date lines every section of RESULTS.md starts with.

    ``script``: the script's name (``"aggregators"``); ``argv``: its arguments (default
    ``sys.argv[1:]``), shell-quoted so that the command copies back as run; ``threads``: torch
    threads, when the script sets them; ``device``: a name put before the CPU's (a GPU's, see
    :func:`gpu_name`); ``extra_versions``: more versions (``"numpy 2.4.6, pandas 2.3.3"``);
    ``started``: the time of the Date line (default now).
    """
    args = sys.argv[1:] if argv is None else list(argv)
    machine = [
        *([device] if device else []),
        cpu_name(),
        f"{usable_cores()} CPU cores",
        *([f"torch threads {threads}"] if threads else []),
        *([memory] if (memory := _memory()) else []),
        platform.platform(),
    ]
    when = (started or datetime.now(UTC)).astimezone(UTC)
    return [
        f"- Command: `{shlex.join(['python', f'benchmarks/{script}.py', *args])}`",
        f"- Machine: {', '.join(machine)}",
        f"- Versions: {_versions(extra_versions)}",
        f"- Date: {when:%Y-%m-%d %H:%M} UTC",
    ]


def append_results(path: str | os.PathLike, section: str) -> None:
    """Append the markdown ``section`` to ``path`` (a new file starts with a title), atomically.

    The old text is kept byte for byte, then a blank line, then ``section`` (its leading blank
    lines dropped, ending in a newline). It is all written to a temporary file beside ``path``,
    flushed to disk and renamed over it: a crash leaves the old file or the new one, never a
    half-written one. The file keeps its permissions (a new one gets 0o644).
    """
    from mil_crcrs.atomic import atomic_path

    path = Path(path)
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    gap = "" if not old or old.endswith("\n\n") else "\n" if old.endswith("\n") else "\n\n"
    body = section.lstrip("\n")
    with atomic_path(path, suffix=".md") as tmp:
        with open(tmp, "w") as f:
            f.write(old + gap + body + ("" if body.endswith("\n") else "\n"))
            f.flush()
            os.fsync(f.fileno())
        tmp.chmod(mode)


def load_average() -> str:
    """The load average over 1, 5 and 15 min, "x / y / z" (other work on the machine skews
    timings), or "unknown"."""
    try:
        return " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except (OSError, AttributeError):
        return "unknown"


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    return str(value)


def rows_table(rows: list[dict]) -> str:
    """A markdown table of ``rows`` (dicts with the same keys, the first row's order)."""
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)
