"""Cohort tables as CLAM, PORPOISE and STAMP users keep them: read as they are, never misread."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from mil_crcrs.data.cohort import read_cohort, strip_slide_suffix
from mil_crcrs.data.tables import Columns, read_table
from mil_crcrs.errors import InputError

# PORPOISE's layout: censorship = 1 for a censored case, slide ids with the slide extension.
PORPOISE = """case_id,slide_id,survival_months,censorship,age
TCGA-A1,TCGA-A1-01.svs,12.5,0,61
TCGA-A1,TCGA-A1-02.svs,12.5,0,61
TCGA-B2,TCGA-B2-01.svs,40.0,1,55
TCGA-C3,TCGA-C3-01.tif,7.0,0,70
TCGA-D4,TCGA-D4-01.ndpi,33.0,1,48
"""
PORPOISE_COLUMNS = Columns(patient="case_id", time="survival_months")


def test_a_censorship_column_is_inverted_into_events_with_one_line(write_table, caplog):
    path = write_table(PORPOISE)
    with caplog.at_level(logging.INFO, logger="mil_crcrs"):
        cohort = read_cohort(path, PORPOISE_COLUMNS, time_unit="months")
    # censorship 0 -> event 1: A1, C3 died; B2, D4 censored
    assert cohort.patient_ids == ["TCGA-A1", "TCGA-B2", "TCGA-C3", "TCGA-D4"]
    np.testing.assert_array_equal(cohort.event, [1, 0, 1, 0])
    np.testing.assert_array_equal(cohort.time, [12.5, 40.0, 7.0, 33.0])
    notes = [r.getMessage() for r in caplog.records if "censorship" in r.getMessage()]
    assert len(notes) == 1 and "1 = censored" in notes[0] and "2 events, 2 censored" in notes[0]
    assert cohort.covariates == ("age",) and cohort.id_column == "case_id"


def test_a_censoring_column_can_be_named(write_table):
    path = write_table("pid,t,lost\na,1,1\nb,2,0\nc,3,0\n")
    cohort = read_cohort(path, Columns(patient="pid", time="t", censor="lost"))
    np.testing.assert_array_equal(cohort.event, [0, 1, 1])


def test_the_event_column_wins_when_there_is_one(write_table):
    # A table with both: 'event' is the event, 'censorship' a covariate-like duplicate.
    path = write_table("patient_id,time,event,censorship\na,1,1,0\nb,2,0,1\n")
    np.testing.assert_array_equal(read_cohort(path).event, [1, 0])


def test_event_and_censoring_columns_that_disagree(write_table):
    path = write_table("patient_id,time,event,censorship\na,1,1,0\nb,2,1,1\n")
    with pytest.raises(InputError, match="line 3: 'event' and the censoring column") as err:
        read_cohort(path, Columns(censor="censorship"))
    assert "\n" not in str(err.value)


def test_censoring_values_other_than_0_or_1(write_table):
    path = write_table("patient_id,time,censorship\na,1,0\nb,2,2\n")
    with pytest.raises(InputError, match="line 3: column 'censorship' must be 0"):
        read_cohort(path)


def test_event_col_named_like_censoring_says_how_to_pass_it(write_table):
    path = write_table(PORPOISE)
    columns = Columns(patient="case_id", time="survival_months", event="censorship")
    with pytest.raises(
        InputError, match=r"make it the censoring column \(--censor-col censorship\)"
    ):
        read_cohort(path, columns)


# --------------------------------------------------------------------------------------------
# Slide ids and feature files


@pytest.mark.parametrize(
    "name, stem",
    [
        ("TCGA-01.svs", "TCGA-01"),
        ("a.b.TIFF", "a.b"),
        ("x.mrxs", "x"),
        ("s.svs.h5", "s"),
        ("plain", "plain"),
        ("v1.2", "v1.2"),
        (".svs", ".svs"),
    ],
)
def test_strip_slide_suffix(name, stem):
    assert strip_slide_suffix(name) == stem


def test_slide_ids_with_extensions_match_feature_files(write_table):
    cohort = read_cohort(write_table(PORPOISE), PORPOISE_COLUMNS)
    stems = ["TCGA-A1-01", "TCGA-A1-02", "TCGA-B2-01", "TCGA-C3-01", "TCGA-D4-01", "other"]
    matched = cohort.match_features(stems)
    assert matched.slides["TCGA-A1"] == ("TCGA-A1-01", "TCGA-A1-02")
    assert matched.slides["TCGA-D4"] == ("TCGA-D4-01",)
    # and the other way round: a table without extensions, STAMP-style file names
    plain = read_cohort(
        pd.DataFrame({"patient_id": ["p"], "slide_id": ["s1"], "time": [1], "event": [1]})
    )
    assert plain.match_features(["s1.svs"]).slides == {"p": ("s1.svs",)}


def test_two_slides_matching_one_file_is_an_error(write_table):
    path = write_table("patient_id,slide_id,time,event\na,s1.svs,1,1\nb,s1.tif,2,0\n")
    with pytest.raises(InputError, match="'s1.svs' and 's1.tif' both match the feature file 's1'"):
        read_cohort(path).match_features(["s1"])


def test_no_slide_matching_shows_how_the_files_are_named(write_table):
    path = write_table("patient_id,slide_id,time,event\na,A-1,1,1\n")
    with pytest.raises(InputError, match="named like 'slide_0001'"):
        read_cohort(path).match_features(["slide_0001"])


# --------------------------------------------------------------------------------------------
# STAMP: a clinical table and a slide table


def test_a_slide_table_is_joined_to_the_clinical_table(write_table, caplog):
    clini = write_table(
        "PATIENT,OS_days,OS_event,grade\nP1,100,1,2\nP2,200,0,3\nP3,50,1,1\n", "c.csv"
    )
    slides = write_table(
        "PATIENT,FILENAME\nP1,P1-a.h5\nP1,P1-b.h5\nP2,P2-a.h5\nP9,P9-a.h5\n", "s.csv"
    )
    columns = Columns(patient="PATIENT", slide="FILENAME", time="OS_days", event="OS_event")
    with caplog.at_level(logging.INFO, logger="mil_crcrs"):
        cohort = read_cohort(clini, columns, slide_table=slides)
    assert cohort.slides == {"P1": ("P1-a.h5", "P1-b.h5"), "P2": ("P2-a.h5",)}
    np.testing.assert_array_equal(cohort.event, [1, 0])
    assert cohort.covariates == ("grade",)
    assert any(
        "1 patient(s) of the clinical table have no slide" in r.message for r in caplog.records
    )
    assert cohort.match_features(["P1-a", "P1-b", "P2-a"]).slides["P1"] == ("P1-a", "P1-b")


def test_a_slide_table_without_the_slide_column(write_table):
    clini = write_table("PATIENT,time,event\nP1,1,1\n", "c.csv")
    slides = write_table("PATIENT,SLIDE\nP1,x\n", "s.csv")
    with pytest.raises(InputError, match="missing column.*'slide_id' of a slide table") as err:
        read_cohort(clini, Columns(patient="PATIENT"), slide_table=slides)
    assert "s.csv" in str(err.value)


def test_a_clinical_table_with_repeated_patients_is_refused_with_a_slide_table(write_table):
    clini = write_table("PATIENT,time,event\nP1,1,1\nP1,1,1\n", "c.csv")
    slides = write_table("PATIENT,slide_id\nP1,x\n", "s.csv")
    with pytest.raises(InputError, match="c.csv, line 3: duplicate patient 'P1'"):
        read_cohort(clini, Columns(patient="PATIENT"), slide_table=slides)


# --------------------------------------------------------------------------------------------
# Files: Excel, encodings, separators


def test_xlsx_reads_as_the_csv_does(write_table, tmp_path):
    csv = read_cohort(write_table(PORPOISE), PORPOISE_COLUMNS)
    xlsx = tmp_path / "clinical.xlsx"
    pd.read_csv(write_table(PORPOISE)).to_excel(xlsx, index=False)
    from_excel = read_cohort(xlsx, PORPOISE_COLUMNS)
    assert from_excel.slides == csv.slides
    np.testing.assert_array_equal(from_excel.event, csv.event)
    np.testing.assert_array_equal(from_excel.time, csv.time)


def test_a_broken_xlsx_is_one_clear_error(tmp_path):
    path = tmp_path / "t.xlsx"
    path.write_text("not a workbook")
    with pytest.raises(InputError, match="t.xlsx: not a readable Excel workbook"):
        read_table(path)


@pytest.mark.parametrize(
    "data",
    [
        "\ufeffpatient_id,time,event\nZoë,1,1\n".encode(),  # Excel's "CSV UTF-8"
        "patient_id;time;event\nZoë;1;1\n".encode("latin-1"),  # European Excel: ; and Latin-1
        b"patient_id\ttime\tevent\nZo\xc3\xab\t1\t1\n",  # tabs in a .csv
        " patient_id , time,event\nZoë,1,1\n".encode(),  # spaces around names
    ],
)
def test_csv_encodings_and_separators(tmp_path, data):
    path = tmp_path / "t.csv"
    path.write_bytes(data)
    cohort = read_cohort(path)
    assert cohort.patient_ids == ["Zoë"] and cohort.event.tolist() == [1]
