"""Planning ahead: a background thread prepares the next slides while the current one is encoded.

:class:`Lookahead` runs ``plan(item)`` for each item, in order, on one thread, at most ``depth``
results ahead of the consumer. In ``crcrs extract`` a plan is a slide's claim, tissue
segmentation, QC picture, tile grid and reader choice, so the encoder never waits for them
between slides. An exception raised by ``plan`` is raised again by :meth:`Lookahead.get`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: What :meth:`Lookahead.get` returns after the last result.
DONE = object()


class Lookahead(Generic[T, R]):
    """``plan`` applied to ``items`` on a background thread, up to ``depth`` results ahead.

    Parameters
    ----------
    items : what to plan, in order
    plan : the work done ahead for each item
    depth : results kept ready; the thread waits while that many are unclaimed
    discard : called (on the planning thread or in :meth:`stop`) with results planned but never
        taken, e.g. to release what they hold
    """

    def __init__(
        self,
        items: Iterable[T],
        plan: Callable[[T], R],
        depth: int = 2,
        discard: Callable[[R], None] | None = None,
    ) -> None:
        self._items = list(items)
        self._plan = plan
        self._discard = discard
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slide-planner", daemon=True)

    def start(self) -> None:
        """Start planning (idempotent)."""
        if not self._thread.is_alive() and self._thread.ident is None:
            self._thread.start()

    def _put(self, value: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        for item in self._items:
            if self._stop.is_set():
                return
            try:
                result = self._plan(item)
            except BaseException as exc:  # handed to the consumer, raised there
                self._put(("error", exc))
                return
            if not self._put(("ok", result)):
                if self._discard is not None:
                    self._discard(result)
                return
        self._put(("done", None))

    def get(self, timeout: float | None = None) -> R | object:
        """The next result, or :data:`DONE`.

        Raises
        ------
        queue.Empty
            if nothing is ready within ``timeout`` seconds.
        BaseException
            whatever ``plan`` raised.
        """
        kind, value = self._queue.get(timeout=timeout)
        if kind == "error":
            raise value
        return DONE if kind == "done" else value

    def stop(self) -> None:
        """Stop planning; discard the results not taken."""
        self._stop.set()
        while self._thread.is_alive():
            self._drain()
            self._thread.join(timeout=0.1)
        self._drain()

    def _drain(self) -> None:
        while True:
            try:
                kind, value = self._queue.get_nowait()
            except queue.Empty:
                return
            if kind == "ok" and self._discard is not None:
                self._discard(value)
