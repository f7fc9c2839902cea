"""Fuzzed cohort tables: every table is either read exactly as written or refused in one line.

Hypothesis writes tables with random headers (the four known columns, others, duplicates,
empty names), random cells (ids that look like numbers, ``007`` beside ``7``, unicode, path-like
``../x``, quotes and line breaks; times and events that are NaN, inf, huge, negative, text),
``,`` or ``;`` separators, UTF-8 with and without a BOM, Latin-1, and empty files. The
property: :func:`read_cohort` raises :class:`InputError` with one line naming the file, or
returns a cohort whose ids, times and events are exactly those the file holds (checked against
Python's own ``csv`` reading of it). Examples are derandomized: every run tries the same cases.
"""

from __future__ import annotations

import csv
import io
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli.main import cli
from mil_crcrs.data.cohort import read_cohort
from mil_crcrs.errors import InputError

KNOWN = ("patient_id", "slide_id", "time", "event")
FUZZ = settings(
    max_examples=250,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

ids = st.one_of(
    st.sampled_from(["007", "7", "7.0", "../x", "a/b", "..", "P 1", "NA", "", "ü-01", "0x1F"]),
    st.text(min_size=1, max_size=6),
    st.integers(-5, 10**6).map(str),
)
numbers = st.one_of(
    st.sampled_from(["nan", "NaN", "inf", "-inf", "1e400", "-1", "", "1,5", "yes", "1.0", "0.0"]),
    st.integers(0, 3).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=4),
)
names = st.one_of(st.sampled_from(KNOWN), st.text(max_size=8))


MUTATIONS = ("drop_column", "duplicate_header", "bad_cell", "extra_column", "header_only")
good_times = st.one_of(
    st.integers(0, 10**6).map(str),
    st.floats(0, 1e300, allow_nan=False, allow_infinity=False).map(repr),
)


@st.composite
def tables(draw) -> tuple[bytes, str]:
    """(file bytes, encoding used) of a random cohort table.

    A valid table (random ids, one to three slides per patient, one time and event per
    patient) with zero to two mutations from :data:`MUTATIONS`, random column order, separator
    and encoding; now and then an empty file.
    """
    if draw(st.integers(0, 40)) == 0:
        return b"", "utf-8"
    patients = draw(st.lists(ids, min_size=1, max_size=5, unique=True))
    slides = draw(st.lists(ids, min_size=len(patients), max_size=8, unique=True))
    header = draw(st.permutations(KNOWN))
    owner = [patients[i % len(patients)] for i in range(len(slides))]
    outcome = {p: (draw(good_times), draw(st.sampled_from(["0", "1", "1.0"]))) for p in patients}
    rows = [
        {"patient_id": p, "slide_id": s, "time": outcome[p][0], "event": outcome[p][1]}
        for p, s in zip(owner, slides, strict=True)
    ]
    rows = [[row[name] for name in header] for row in rows]
    for mutation in draw(st.lists(st.sampled_from(MUTATIONS), max_size=2)):
        if mutation == "drop_column" and len(header) > 1:
            i = draw(st.integers(0, len(header) - 1))
            header = header[:i] + header[i + 1 :]
            rows = [row[:i] + row[i + 1 :] for row in rows]
        elif mutation == "duplicate_header":
            header = [*header, draw(st.sampled_from(header))]
            rows = [[*row, draw(numbers)] for row in rows]
        elif mutation == "bad_cell" and rows and header:
            r, c = draw(st.integers(0, len(rows) - 1)), draw(st.integers(0, len(header) - 1))
            rows[r][c] = draw(numbers) if header[c] in ("time", "event") else draw(ids)
        elif mutation == "extra_column":
            header = [*header, draw(names)]
            rows = [[*row, draw(st.one_of(ids, numbers))] for row in rows]
        elif mutation == "header_only":
            rows = []
    sep = draw(st.sampled_from([",", ",", ";"]))
    out = io.StringIO()
    writer = csv.writer(out, delimiter=sep, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "latin-1"]))
    return out.getvalue().encode(encoding, errors="replace"), encoding


def _raw_rows(data: bytes) -> list[dict[str, str]]:
    """The table as Python's csv module reads it, all strings (UTF-8, else Latin-1)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    header = text.split("\n", 1)[0]
    sep = max((",", ";", "\t"), key=header.count) if header.strip() else ","
    rows = list(csv.reader(io.StringIO(text), delimiter=sep))
    names = [name.strip() for name in rows[0]]
    return [dict(zip(names, row, strict=False)) for row in rows[1:] if row]


def check_read(path: Path) -> None:
    """The property for one file (see the module docstring)."""
    try:
        cohort = read_cohort(path)
    except InputError as exc:
        message = str(exc)
        assert len(message.splitlines()) == 1, message
        assert str(path) in message, message
        return
    rows = _raw_rows(path.read_bytes())
    # ids exactly as written: "007" stays "007", "7" stays "7"
    patients = {row["patient_id"] for row in rows}
    assert set(cohort.patient_ids) == patients
    slides = {s for sl in cohort.slides.values() for s in sl}
    expected = {row.get("slide_id", row["patient_id"]) for row in rows}
    assert slides == expected and len(slides) == len(rows)
    time, event = cohort.time, cohort.event
    assert np.isfinite(time).all() and (time >= 0).all()
    assert set(event.tolist()) <= {0, 1}
    for row in rows:  # each patient's time is the number written in its rows
        written = float(row["time"])
        assert math.isclose(cohort.patients.loc[row["patient_id"], "time"], written)


@FUZZ
@given(table=tables())
def test_fuzzed_tables_are_read_exactly_or_refused_in_one_line(table):
    data, _ = table
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "cohort.csv"
        path.write_bytes(data)
        check_read(path)


@pytest.mark.parametrize(
    "text, message",
    [
        ("patient_id,time,time,event\np1,1,2,1\n", "names column 'time' more than once"),
        ("patient_id;slide_id;time;event\n007;007;1;1\n7;7;2;0\n", None),
        ("patient_id,time,event\np1,1e400,1\n", "line 2: column 'time' has .* '1e400'"),
        ("patient_id,time,event\np1,inf,1\n", "line 2: column 'time' is not finite"),
        ("patient_id,time,event\n", "no rows"),
        ("", "not a readable CSV table"),
        ("patient_id,time,event\np\x00,1,1\n", "line 2: a NUL byte"),
    ],
)
def test_hand_picked_tables(tmp_path, text, message):
    path = tmp_path / "cohort.csv"
    path.write_text(text)
    if message is None:
        cohort = read_cohort(path)
        assert cohort.patient_ids == ["007", "7"]
    else:
        with pytest.raises(InputError, match=message):
            read_cohort(path)


def test_a_utf16_export_is_refused_not_misread(tmp_path):
    path = tmp_path / "cohort.csv"
    path.write_text("patient_id,time,event\np1,1,1\n", encoding="utf-16")
    with pytest.raises(InputError, match="NUL byte; not a text table"):
        read_cohort(path)


def test_a_folder_named_like_a_table_is_refused(tmp_path):
    (tmp_path / "cohort.csv").mkdir()
    with pytest.raises(InputError, match="is a folder, not a table"):
        read_cohort(tmp_path / "cohort.csv")


def test_cli_refuses_fuzzed_tables_in_one_line_and_writes_nothing(tmp_path, write_features):
    """The CLI contract on a sample: exit 2, one error line naming the file, no model."""
    write_features("s1")
    bad = [
        b"",
        b"patient_id,slide_id,time,event\nP\n1,s1,nan,1\n",
        "\ufeffpatient_id;time;event\np\u00e9;1;2\n".encode("latin-1", errors="replace"),
        b"patient_id,event,event,time\ns1,1,1,1\n",
        b'patient_id,time,event\n"a\nb",-1,1\n',
    ]
    for i, data in enumerate(bad):
        path = tmp_path / f"bad{i}.csv"
        path.write_bytes(data)
        out = tmp_path / f"model{i}"
        args = ["fit", "--features", str(tmp_path / "features"), "--clinical", str(path)]
        result = CliRunner().invoke(cli, [*args, "--out", str(out), "--device", "cpu"])
        assert result.exit_code == 2, result.output
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and errors[0].startswith(f"error: {path}"), result.output
        assert "Traceback" not in result.output
        assert not list(out.glob("*.pt")) and not (out / "config.json").exists()  # no model


@settings(FUZZ, max_examples=60)
@given(st.data())
def test_fuzzed_id_columns_named_by_options(data):
    """Tables whose id columns have other names, read through ``Columns``."""
    from mil_crcrs.data.tables import Columns

    columns = Columns(patient="PID", slide="Slide", time="OS", event="dead")
    pid = data.draw(st.lists(ids, min_size=1, max_size=4, unique=True))
    text = "PID,Slide,OS,dead\n" + "".join(
        f'"{p}","s-{p}",{data.draw(numbers)},{data.draw(numbers)}\n'
        for p in (x.replace('"', '""') for x in pid)
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "t.csv"
        path.write_text(text)
        try:
            cohort = read_cohort(path, columns)
        except InputError as exc:
            assert len(str(exc).splitlines()) == 1 and str(path) in str(exc)
            return
        assert set(cohort.patient_ids) == set(pid)
