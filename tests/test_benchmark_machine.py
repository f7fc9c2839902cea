"""The header lines and the results file every benchmark script shares (``benchmarks/_machine.py``)."""

from __future__ import annotations

import importlib.util
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "_machine.py"


@pytest.fixture(scope="module")
def machine():
    spec = importlib.util.spec_from_file_location("bench_machine", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_header_lines_are_the_four_lines_and_the_command_copies_back(machine):
    argv = ["--seeds", "2", "--note", "a note with spaces, and 'quotes'"]
    lines = machine.header_lines("precision_c", argv, threads=3, extra_versions="numpy 9.9")
    prefixes = ("- Command: `", "- Machine: ", "- Versions: mil-crcrs ", "- Date: ")
    assert len(lines) == 4
    assert all(line.startswith(p) for line, p in zip(lines, prefixes, strict=True))
    command = lines[0].removeprefix("- Command: `").removesuffix("`")
    assert shlex.split(command) == ["python", "benchmarks/precision_c.py", *argv]
    assert f"{machine.usable_cores()} CPU cores, torch threads 3" in lines[1]
    assert "(git " in lines[2] and "Python " in lines[2] and lines[2].endswith(", numpy 9.9")
    assert lines[3].endswith(" UTC")


def test_append_results_creates_the_file_with_its_title(machine, tmp_path: Path):
    path = tmp_path / "RESULTS.md"
    machine.append_results(path, "## First\n\n- a line")
    assert path.read_text() == "# Benchmark results\n\n## First\n\n- a line\n"
    assert path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["RESULTS.md"]  # no temporary file left


def test_append_results_keeps_the_old_text_byte_for_byte(machine, tmp_path: Path):
    path = tmp_path / "RESULTS.md"
    old = "# Benchmark results\n\n## Earlier\n\nno newline at the end  "
    path.write_text(old)
    machine.append_results(path, "\n## Next\n")
    text = path.read_text()
    assert text.startswith(old)
    assert text == old + "\n\n## Next\n"  # a blank line between, one newline at the end
    machine.append_results(path, "## Last\n")
    assert path.read_text() == text + "\n## Last\n"
    assert [p.name for p in tmp_path.iterdir()] == ["RESULTS.md"]


def test_git_commit_is_a_non_empty_string(machine):
    commit = machine.git_commit()
    assert isinstance(commit, str) and commit


def test_cohort_scale_refuses_max_tiles_0_at_argument_parsing():
    out = subprocess.run(
        [sys.executable, "benchmarks/cohort_scale.py", "--max-tiles", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr + out.stdout
    assert "--max-tiles: expected a positive integer or 'all', got '0'" in out.stderr


def test_rows_table_is_one_markdown_row_per_dict_in_the_first_rows_column_order(machine):
    text = machine.rows_table([{"b": 1234.5, "a": "x"}, {"b": 0.01234, "a": "y"}])
    assert text.splitlines() == ["| b | a |", "|---|---|", "| 1,234 | x |", "| 0.0123 | y |"]
