"""Logs: bars only on a terminal, plain lines with the time left, and a run.log never half-written."""

from __future__ import annotations

import io
import logging

import pytest

from mil_crcrs.runlog import (
    Eta,
    RunLog,
    bars_wanted,
    format_duration,
    one_line,
    progress_log,
)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bars_only_on_a_terminal_and_only_when_asked():
    assert bars_wanted(True, _Tty())
    assert not bars_wanted(False, _Tty())
    assert not bars_wanted(True, io.StringIO())  # a log file


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (7.4, "7s"), (185, "3m05s"), (3725, "1h02m")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_eta_extrapolates_from_the_steps_done():
    now = [100.0]
    eta = Eta(4, clock=lambda: now[0])
    now[0] = 130.0
    assert eta.step() == "1/4, 30s elapsed, about 1m30s left"
    now[0] = 160.0
    assert eta.step() == "2/4, 1m00s elapsed, about 1m00s left"
    now[0] = 190.0
    eta.step()
    now[0] = 220.0
    assert eta.step() == "4/4, 2m00s elapsed"  # nothing left to announce


def test_one_line_drops_carriage_returns_and_later_lines():
    assert one_line("\r  \rfold 1/3\r\nmore") == "fold 1/3"


def test_run_log_is_written_whole_at_the_end(tmp_path):
    path = tmp_path / "out" / "run.log"
    with RunLog(path, "crcrs fit x=1") as run:
        logging.getLogger("mil_crcrs.data.cohort").info("a note")
        progress_log.info("fold 1/2, 3s elapsed, about 3s left")
        assert not path.exists()  # nothing until the run is done
        run.note("result line")
    lines = path.read_text().splitlines()
    assert lines[1] == "# crcrs fit x=1"
    assert [line.split(" ", 1)[1] for line in lines[2:]] == [
        "a note",
        "fold 1/2, 3s elapsed, about 3s left",
        "result line",
        "finished",
    ]
    assert list(path.parent.iterdir()) == [path]  # no temporary file left


def test_a_failed_run_leaves_the_earlier_log_alone(tmp_path):
    path = tmp_path / "run.log"
    path.write_text("earlier run\nfinished\n")
    with pytest.raises(RuntimeError), RunLog(path):
        logging.getLogger("mil_crcrs").info("half way")
        raise RuntimeError("killed")
    assert path.read_text() == "earlier run\nfinished\n"
    assert list(tmp_path.iterdir()) == [path]
