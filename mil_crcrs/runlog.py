"""Quiet, honest logs: bars on a terminal, plain lines in a file, and a ``run.log`` per output.

The library reports through :mod:`logging` under the ``mil_crcrs`` logger:

- notes that change how data are read (a censoring column inverted, a table read as Latin-1)
  go to ``mil_crcrs.<module>`` at INFO;
- progress (one line per fold, with the time left) goes to :data:`PROGRESS_LOGGER` at INFO.

Progress *bars* (tqdm) are drawn only when stderr is a terminal (:func:`bars_wanted`), so a log
file never fills with carriage returns. The CLI shows the records on stderr through one
:class:`ConsoleHandler` and keeps them in the output folder with :class:`RunLog`, which writes
``run.log`` in one atomic step at the end: a run that is killed leaves no ``run.log`` at all,
never half of one.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from mil_crcrs._version import __version__
from mil_crcrs.atomic import atomic_path

LOGGER = "mil_crcrs"
PROGRESS_LOGGER = "mil_crcrs.progress"
RUN_LOG_NAME = "run.log"

progress_log = logging.getLogger(PROGRESS_LOGGER)


def bars_wanted(progress: bool, stream: IO | None = None) -> bool:
    """Draw progress bars only when asked and ``stream`` (default stderr) is a terminal."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(progress) and callable(isatty) and bool(isatty())


def format_duration(seconds: float) -> str:
    """``3725`` -> ``"1h02m"``, ``185`` -> ``"3m05s"``, ``7.2`` -> ``"7s"``."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class Eta:
    """Time left for ``total`` steps of similar length, from the steps done so far.

    Examples
    --------
    >>> eta = Eta(5)                      # doctest: +SKIP
    >>> eta.step()                        # after the first fold
    '1/5, 42s elapsed, about 2m48s left'
    """

    def __init__(self, total: int, clock=time.monotonic) -> None:
        self.total = int(total)
        self.done = 0
        self._clock = clock
        self._start = clock()

    def step(self) -> str:
        """Count one step done; returns ``"k/total, <elapsed> elapsed, about <left> left"``."""
        self.done += 1
        elapsed = self._clock() - self._start
        left = elapsed / self.done * (self.total - self.done)
        text = f"{self.done}/{self.total}, {format_duration(elapsed)} elapsed"
        return text + (f", about {format_duration(left)} left" if self.done < self.total else "")


class ConsoleHandler(logging.Handler):
    """Records as single lines on the current stderr (``warning: ...`` for warnings).

    ``show_progress`` False drops :data:`PROGRESS_LOGGER` records (``--no-progress``); notes and
    warnings always show.
    """

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.show_progress = True

    def emit(self, record: logging.LogRecord) -> None:
        if not self.show_progress and record.name.startswith(PROGRESS_LOGGER):
            return
        message = one_line(record.getMessage())
        prefix = "warning: " if record.levelno >= logging.WARNING else ""
        stream = sys.stderr  # looked up now: the CLI's test runner swaps it per command
        stream.write(prefix + message + "\n")
        stream.flush()


def one_line(text: str) -> str:
    """The first non-blank line of ``text``, without carriage returns."""
    for line in str(text).replace("\r", "\n").splitlines():
        if line.strip():
            return line.rstrip()
    return ""


_console: ConsoleHandler | None = None


def console_handler() -> ConsoleHandler:
    """The one console handler on the ``mil_crcrs`` logger (installed on first call)."""
    global _console
    if _console is None:
        _console = ConsoleHandler()
        logger = logging.getLogger(LOGGER)
        logger.addHandler(_console)
        logger.setLevel(logging.INFO)
    return _console


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        stamp = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        level = "WARNING " if record.levelno >= logging.WARNING else ""
        self.lines.append(f"{stamp} {level}{one_line(record.getMessage())}")


class RunLog:
    """Keep what a command logs, and write it as ``path`` (a ``run.log``) when it ends.

    Lines are held in memory and written in one atomic step when the command succeeds, ending
    with ``finished``: a run that fails or is killed leaves no file (and never replaces the
    ``run.log`` of an earlier run that finished); its error is on stderr.

    Parameters
    ----------
    path : the log file to write
    command : the command line, recorded first
    progress : show progress lines on stderr (``--progress``); the file always has them
    """

    def __init__(self, path: str | os.PathLike, command: str = "", progress: bool = True):
        self.path = Path(path)
        self.command = command
        self.progress = progress
        self._collector = _Collector()
        self._console = console_handler()
        self._saved_progress = self._console.show_progress

    def note(self, message: str) -> None:
        """Record a result line (e.g. the summary the command prints on stdout)."""
        self._collector.lines.append(f"{datetime.now().strftime('%H:%M:%S')} {one_line(message)}")

    def __enter__(self) -> RunLog:
        started = datetime.now(UTC).isoformat(timespec="seconds")
        self._collector.lines.append(f"# mil-crcrs {__version__}, started {started}")
        if self.command:
            self._collector.lines.append(f"# {one_line(self.command)}")
        logging.getLogger(LOGGER).addHandler(self._collector)
        self._console.show_progress = self.progress
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        logging.getLogger(LOGGER).removeHandler(self._collector)
        self._console.show_progress = self._saved_progress
        if exc_type is not None:
            return
        self.note("finished")
        with atomic_path(self.path, suffix=".log.tmp") as tmp:
            tmp.write_text("\n".join(self._collector.lines) + "\n")
