"""The cohort table: one row per slide, one bag per patient, and every way a table can be bad."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mil_crcrs.data.cohort import Cohort, DataWarning, cohort_from_slides, read_cohort
from mil_crcrs.data.tables import Columns, validate_outcome
from mil_crcrs.errors import InputError

TABLE = """patient_id,slide_id,time,event,stage,age
p1,p1-a,100,1,II,70
p1,p1-b,100,1,II,70
p2,p2-a,250.5,0,I,55
p3,p3-a,30,1,IV,81
"""


def _one_line_naming(err: pytest.ExceptionInfo, *parts: str) -> None:
    message = str(err.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


def test_a_patients_slides_form_one_bag(write_table):
    path = write_table(TABLE)
    cohort = read_cohort(path)
    assert cohort.patient_ids == ["p1", "p2", "p3"] and len(cohort) == 3
    assert cohort.slides == {"p1": ("p1-a", "p1-b"), "p2": ("p2-a",), "p3": ("p3-a",)}
    np.testing.assert_array_equal(cohort.time, [100.0, 250.5, 30.0])
    np.testing.assert_array_equal(cohort.event, [1, 0, 1])
    assert cohort.time.dtype == np.float64 and cohort.event.dtype == np.int64
    assert cohort.covariates == ("stage", "age")
    assert cohort.patients.loc["p3", "stage"] == "IV" and cohort.patients.loc["p2", "age"] == 55
    assert cohort.source == str(path) and cohort.time_unit == "days" and cohort.has_outcome


def test_column_names_can_be_chosen(write_table):
    path = write_table("case,wsi,os_months,dead\nA,A1,12,1\nB,B1,3,0\n")
    columns = Columns(patient="case", slide="wsi", time="os_months", event="dead")
    cohort = read_cohort(path, columns, time_unit="months")
    assert cohort.slides == {"A": ("A1",), "B": ("B1",)}
    np.testing.assert_array_equal(cohort.time, [12.0, 3.0])
    assert cohort.time_unit == "months" and cohort.covariates == ()


@pytest.mark.parametrize("name", ["censorship", "Censored", "is_censored", "cens"])
def test_a_censoring_column_given_as_events_is_refused(write_table, name):
    # CLAM/PORPOISE tables say censorship = 1 for a censored case: read as events it would
    # silently train on the inverted outcome
    path = write_table(f"case_id,survival_months,{name}\nA,12,1\nB,3,0\nC,5,0\n")
    columns = Columns(patient="case_id", time="survival_months", event=name)
    with pytest.raises(InputError) as err:
        read_cohort(path, columns)
    _one_line_naming(err, str(path), f"'{name}'", "censoring", "inverted")


def test_without_a_slide_column_each_patient_is_one_slide_named_by_the_patient(write_table):
    cohort = read_cohort(write_table("patient_id,time,event\n7,10,1\n8,20,0\n"))
    assert cohort.slides == {"7": ("7",), "8": ("8",)}  # ids are strings, like file stems


def test_a_data_frame_is_accepted():
    frame = pd.DataFrame({"patient_id": ["a", "b"], "time": [1, 2], "event": [0, 1]})
    cohort = read_cohort(frame)
    assert cohort.source == "<table>" and cohort.patient_ids == ["a", "b"]


def test_prediction_tables_need_no_outcome(write_table):
    cohort = read_cohort(write_table("patient_id,slide_id\na,a1\na,a2\n"), require_outcome=False)
    assert not cohort.has_outcome and cohort.slides == {"a": ("a1", "a2")}
    with pytest.raises(InputError, match="no time and event columns"):
        cohort.require_outcome()


def test_subset_keeps_the_order_asked_for(write_table):
    cohort = read_cohort(write_table(TABLE)).subset(["p3", "p1"])
    assert cohort.patient_ids == ["p3", "p1"]
    assert cohort.slides == {"p3": ("p3-a",), "p1": ("p1-a", "p1-b")}
    np.testing.assert_array_equal(cohort.event, [1, 1])


def test_cohort_from_slides_is_one_patient_per_slide():
    cohort = cohort_from_slides(["s2", "s1"])
    assert isinstance(cohort, Cohort) and cohort.patient_ids == ["s2", "s1"]
    assert cohort.slides == {"s2": ("s2",), "s1": ("s1",)} and not cohort.has_outcome


def test_a_cohort_with_no_events(write_table):
    cohort = read_cohort(write_table("patient_id,time,event\na,1,0\nb,2,0\n"))
    with pytest.raises(InputError, match="no events") as err:
        cohort.require_outcome()
    _one_line_naming(err, "clinical.csv")


def test_unknown_time_unit(write_table):
    with pytest.raises(InputError, match="time unit"):
        read_cohort(write_table(TABLE), time_unit="weeks")


# --------------------------------------------------------------------------------------------
# Bad tables: one InputError naming the file and the line or column (the header is line 1)


def test_missing_columns(write_table):
    path = write_table("patient_id,slide_id,survival\np1,s1,3\n")
    with pytest.raises(InputError, match="missing column") as err:
        read_cohort(path)
    _one_line_naming(err, str(path), "'time'", "'event'")


def test_missing_renamed_column(write_table):
    path = write_table(TABLE)
    with pytest.raises(InputError) as err:
        read_cohort(path, Columns(patient="case_id"))
    _one_line_naming(err, str(path), "'case_id'")


@pytest.mark.parametrize(
    "value, expected",
    [
        ("abc", "non-numeric value 'abc'"),
        ("-5", "is negative"),
        ("", "is empty"),
        ("inf", "is not finite"),
        ("1e300", "holds 1e\\+300, not a follow-up in days, months or years"),
    ],
)
def test_bad_times(write_table, value, expected):
    path = write_table(f"patient_id,time,event\na,10,1\nb,{value},0\nc,30,1\n")
    with pytest.raises(InputError, match=expected) as err:
        read_cohort(path)
    _one_line_naming(err, str(path), "line 3", "'time'")


@pytest.mark.parametrize("value", ["2", "-1", "0.5", "maybe", ""])
def test_events_that_are_not_0_or_1(write_table, value):
    path = write_table(f"patient_id,time,event\na,10,1\nb,20,0\nc,30,{value}\n")
    with pytest.raises(InputError) as err:
        read_cohort(path)
    _one_line_naming(err, str(path), "line 4", "'event'")


def test_booleanish_events_are_read_as_numbers(write_table):
    cohort = read_cohort(write_table("patient_id,time,event\na,10,1.0\nb,20,0.0\n"))
    np.testing.assert_array_equal(cohort.event, [1, 0])


@pytest.mark.parametrize(
    "rows, column",
    [("p1,p1-a,100,1\np1,p1-b,120,1\n", "'time'"), ("p1,p1-a,100,1\np1,p1-b,100,0\n", "'event'")],
)
def test_one_patient_with_conflicting_outcome(write_table, rows, column):
    path = write_table("patient_id,slide_id,time,event\np0,p0-a,5,0\n" + rows)
    with pytest.raises(InputError, match="conflicting") as err:
        read_cohort(path)
    _one_line_naming(err, str(path), "patient 'p1'", column)


def test_duplicate_slide_ids(write_table):
    path = write_table("patient_id,slide_id,time,event\np1,s1,1,1\np2,s2,2,0\np3,s1,3,1\n")
    with pytest.raises(InputError, match="duplicate slide id 's1'") as err:
        read_cohort(path)
    _one_line_naming(err, str(path), "line 4")


def test_duplicate_patients_without_a_slide_column(write_table):
    path = write_table("patient_id,time,event\np1,1,1\np1,1,1\n")
    with pytest.raises(InputError, match="duplicate patient 'p1'") as err:
        read_cohort(path)
    _one_line_naming(err, str(path), "line 3", "'slide_id'")


def test_empty_patient_or_slide_cell(write_table):
    path = write_table("patient_id,slide_id,time,event\np1,s1,1,1\n,s2,2,0\n")
    with pytest.raises(InputError, match="'patient_id' is empty") as err:
        read_cohort(path)
    _one_line_naming(err, str(path), "line 3")
    path = write_table("patient_id,slide_id,time,event\np1,,1,1\n", name="b.csv")
    with pytest.raises(InputError, match="'slide_id' is empty") as err:
        read_cohort(path)
    _one_line_naming(err, str(path), "line 2")


def test_unreadable_or_empty_or_absent_table(write_table, tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_cohort(tmp_path / "absent.csv")
    with pytest.raises(InputError, match="no rows"):
        read_cohort(write_table("patient_id,time,event\n"))
    with pytest.raises(InputError, match="not a readable CSV"):
        read_cohort(write_table("", name="empty.csv"))


def test_validate_outcome_names_the_source():
    frame = pd.DataFrame({"t": [1.0, -2.0], "e": [1, 0]})
    with pytest.raises(InputError, match="my table, line 3: column 't' is negative"):
        validate_outcome(frame, "t", "e", "my table")
    coded = pd.DataFrame({"t": [1.0, 2.0, 3.0], "e": [1, 0, 2]})
    with pytest.raises(
        InputError, match=r"line 4: column 'e' must be 0 \(censored\) or 1 \(event\), got 2$"
    ):
        validate_outcome(coded, "t", "e", "my table")
    words = pd.DataFrame({"t": [1.0], "e": ["unknown"]})
    with pytest.raises(InputError, match="line 2: column 'e' has the non-numeric value 'unknown'$"):
        validate_outcome(words, "t", "e", "my table")


# --------------------------------------------------------------------------------------------
# Slides without feature files


def _seven_patients(write_table):
    rows = "".join(f"p{i},s{i},{10 + i},{i % 2}\n" for i in range(7))
    return read_cohort(write_table("patient_id,slide_id,time,event\n" + rows + "p0,s0b,10,0\n"))


def test_slides_missing_from_the_feature_folder_list_the_first_few(write_table):
    cohort = _seven_patients(write_table)
    with pytest.raises(InputError, match="7 slide") as err:
        cohort.match_features(["s0b"])
    _one_line_naming(err, "clinical.csv", "s0, s1, s2, s3, s4, ...")
    assert "s5" not in str(err.value)


def test_all_slides_present_changes_nothing(write_table):
    cohort = _seven_patients(write_table)
    assert cohort.match_features([f"s{i}" for i in range(7)] + ["s0b", "extra"]) is cohort


def test_missing_slides_with_warn_drop_them_with_a_count(write_table):
    cohort = _seven_patients(write_table)
    # s0 is gone but p0 keeps s0b; s1 and s2 are gone and so are p1 and p2
    available = ["s0b", "s3", "s4", "s5", "s6"]
    with pytest.warns(DataWarning, match="3 slide.*2 patient"):
        kept = cohort.match_features(available, missing="warn")
    assert kept.patient_ids == ["p0", "p3", "p4", "p5", "p6"]
    assert kept.slides["p0"] == ("s0b",)
    np.testing.assert_array_equal(kept.time, [10, 13, 14, 15, 16])


def test_warn_with_no_slide_left_is_an_error(write_table):
    cohort = _seven_patients(write_table)
    with pytest.warns(DataWarning), pytest.raises(InputError, match="no slide in the table"):
        cohort.match_features([], missing="warn")


def test_excel_date_cells_in_a_time_column_are_refused(tmp_path):
    """Excel dates were read as nanoseconds since 1970 and trained on; the same dates as CSV
    text were refused. Both are refused now, naming the line."""
    import datetime

    table = pd.DataFrame(
        {
            "patient_id": ["a", "b"],
            "time": [datetime.datetime(2020, 1, 5), datetime.datetime(2021, 3, 1)],
            "event": [1, 0],
        }
    )
    table.to_excel(tmp_path / "dates.xlsx", index=False)
    with pytest.raises(InputError, match=r"line 2: column 'time' holds a date \(2020-01-05"):
        read_cohort(tmp_path / "dates.xlsx")
