"""Per-slide claims: two extraction processes on one folder never work on the same slide at once.

Sharding (:mod:`feature_extraction.sharding`) splits slides between the processes of one job. A job
launched twice, or requeued while the old one still runs, has no shard variables to tell its
processes apart, so each slide is *claimed* before it is touched: ``DIR/.<slide>.claim`` holds the
host, pid and start time of its owner. Only the owner may remove the slide's leftover temporary
files or write its feature file.

A claim is taken over when it is stale:

- its process is gone (same host, the pid no longer exists), or
- its heartbeat is older than ``timeout_s``: the owner touches the claim while it works
  (:meth:`Claim.heartbeat`), so a live owner on another host keeps its claim however long the
  slide takes, and a dead one loses it after ``timeout_s``.

Deciding and taking a claim happen under an ``flock`` on ``DIR/.claims.lock``, so two processes
that both find the same stale claim cannot both take it over.
"""

from __future__ import annotations

import contextlib
import fcntl
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
def _folder_lock(out_dir: Path) -> Iterator[None]:
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


def _owner() -> dict[str, object]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}


def _is_stale(path: Path, timeout_s: float) -> bool:
    try:
        age = time.time() - path.stat().st_mtime
        holder = json.loads(path.read_text())
    except FileNotFoundError:
        return True
    except (OSError, ValueError):
        return True  # unreadable: a claim cut short by a kill while being written
    if age > timeout_s:
        return True
    if holder.get("host") == socket.gethostname():
        return not _pid_alive(int(holder.get("pid", -1)))
    return False


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
        with _folder_lock(self.path.parent):
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
    with _folder_lock(out_dir):
        took_over = path.exists()
        if took_over and not _is_stale(path, timeout_s):
            return None
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(_owner()))
        os.replace(tmp, path)
    return Claim(path=path, took_over=took_over, _last_beat=time.monotonic())
