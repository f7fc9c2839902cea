"""Per-slide claims: two extraction processes on one folder never work on the same slide at once.

Sharding (:mod:`feature_extraction.running.sharding`) splits slides between the processes of one job. A job
launched twice, or requeued while the old one still runs, has no shard variables to tell its
processes apart, so each slide is *claimed* before it is touched: ``DIR/.<slide>.claim`` holds the
host, pid and start time of its owner. Only the owner may remove the slide's leftover temporary
files or write its feature file.

A claim is taken over when it is stale:

- on the same host: its process is gone (the pid no longer exists, or now belongs to a process
  started at another time: pids are reused). A live owner keeps its claim however long it
  takes, so a slow slide is never encoded twice on one machine;
- from another host (a shared file system): its heartbeat is older than ``timeout_s``; the owner
  touches the claim while it works (:meth:`Claim.heartbeat`), so a live owner keeps it and a
  dead one loses it after ``timeout_s``. Only there can work be duplicated: an owner that stalls
  longer than ``timeout_s`` between heartbeats loses its slide to another process, and both
  encode it (the files are identical; the later one replaces the earlier one atomically).

Deciding and taking a claim happen under an ``flock`` on ``DIR/.claims.lock``. Every small
record of the folder (the settings file, failure records, the errors report) is written under
the same lock, so whatever temporary file is found while holding it was left by a killed
process, and :func:`sweep` removes it.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

#: A claim whose owner has not touched it for this long is taken over, whatever its host.
DEFAULT_TIMEOUT_S = 600.0
#: The owner refreshes its claim at most this often.
HEARTBEAT_S = 30.0
LOCK_NAME = ".claims.lock"


def claim_path(out_dir: Path, slide_id: str) -> Path:
    """``DIR/.<slide>.claim``."""
    return out_dir / f".{slide_id}.claim"


@contextlib.contextmanager
def folder_lock(out_dir: Path) -> Iterator[None]:
    """Hold the folder's lock (an exclusive ``flock`` on ``DIR/.claims.lock``)."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    fd = os.open(out_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _start_time(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, from /proc); None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _owner() -> dict[str, object]:
    pid = os.getpid()
    return {
        "host": socket.gethostname(),
        "pid": pid,
        "start": _start_time(pid),
        "time": time.time(),
    }


def _is_stale(path: Path, timeout_s: float) -> bool:
    try:
        age = time.time() - path.stat().st_mtime
        holder = json.loads(path.read_text())
    except FileNotFoundError:
        return True
    except (OSError, ValueError):
        return True  # unreadable: a claim cut short by a kill while being written
    if holder.get("host") == socket.gethostname():
        pid = int(holder.get("pid", -1))
        if not _pid_alive(pid):
            return True
        start = holder.get("start")
        return start is not None and _start_time(pid) not in (None, start)
    return age > timeout_s


@dataclass
class Claim:
    """This process's claim on one slide; release it when the slide is done or failed."""

    path: Path
    took_over: bool = False
    _last_beat: float = 0.0

    def heartbeat(self) -> None:
        """Refresh the claim's time (cheap; at most every :data:`HEARTBEAT_S` seconds)."""
        now = time.monotonic()
        if now - self._last_beat >= HEARTBEAT_S:
            with contextlib.suppress(FileNotFoundError):
                os.utime(self.path)
            self._last_beat = now

    def release(self) -> None:
        """Remove the claim if it is still this process's."""
        with folder_lock(self.path.parent):
            try:
                holder = json.loads(self.path.read_text())
            except (OSError, ValueError):
                return
            if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
                self.path.unlink(missing_ok=True)


def try_claim(out_dir: Path, slide_id: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> Claim | None:
    """Claim ``slide_id`` in ``out_dir``; None when a live process holds it.

    Returns
    -------
    Claim, with ``took_over`` set when a stale claim (a killed run's) was replaced: only then may
    the caller treat the slide's temporary files as leftovers.
    """
    path = claim_path(out_dir, slide_id)
    with folder_lock(out_dir):
        _unlink_all(out_dir.glob(f"{glob.escape(path.name)}.*.tmp"))  # a killed claimer's
        took_over = path.exists()
        if took_over and not _is_stale(path, timeout_s):
            return None
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(_owner()))
        os.replace(tmp, path)
    return Claim(path=path, took_over=took_over, _last_beat=time.monotonic())


def sweep(
    out_dir: Path, subfolders: tuple[str, ...] = (), timeout_s: float = DEFAULT_TIMEOUT_S
) -> int:
    """Remove what killed processes left in ``out_dir``; returns how many files went.

    Under the folder lock: every temporary file (``.*.tmp``) in ``out_dir`` and ``subfolders``
    except the feature files being written by claim holders (``.<slide>.h5.*.h5.tmp``, removed
    by whoever takes the slide's claim over), and the stale claims of slides whose feature file
    exists (their owner was killed between finishing and releasing).
    """
    removed = 0
    with folder_lock(out_dir):
        for folder in (out_dir, *(out_dir / sub for sub in subfolders)):
            removed += _unlink_all(
                p for p in folder.glob(".*.tmp") if not p.name.endswith(".h5.tmp")
            )
        for path in out_dir.glob(".*.claim"):
            slide_id = path.name[1 : -len(".claim")]
            if (out_dir / f"{slide_id}.h5").exists() and _is_stale(path, timeout_s):
                removed += _unlink_all([path])
    return removed


def _unlink_all(paths) -> int:
    n = 0
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            n += 1
    return n
