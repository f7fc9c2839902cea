"""``crcrs predict``: the CRCRS and risk group of every patient, from a trained model."""

from __future__ import annotations

from pathlib import Path

import click

from cli._options import (
    cohort_columns,
    command_line,
    device_option,
    features_option,
    missing_option,
    model_dir_option,
    progress_option,
    read_settings,
    slide_table_option,
    time_unit_for,
)
from mil_crcrs.ensemble import PREDICT_BATCH_SIZE, load_model

_PATH = click.Path(path_type=Path)


@click.command("predict")
@model_dir_option
@features_option
@click.option(
    "--clinical",
    type=_PATH,
    default=None,
    help="Cohort table, CSV or .xlsx (patient, slide, and optionally time and event) "
    "[default: each feature file is one patient].",
)
@slide_table_option
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Predictions CSV to write: the patient id (the table's own column name), crcrs, "
    "risk_group[, time, event]; <name>.run.log beside it.",
)
@click.option(
    "--attention",
    "attention_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for per-slide HDF5 files of coords, attention and contribution.",
)
@missing_option
@click.option(
    "--batch-size",
    type=int,
    default=PREDICT_BATCH_SIZE,
    show_default=True,
    help="Bags per forward pass.",
)
@progress_option
@read_settings
@device_option
@cohort_columns(unit_from_model=True)
def command(
    model_dir,
    features,
    clinical,
    out,
    attention_dir,
    missing,
    batch_size,
    progress,
    read_settings,
    device,
    columns,
    time_unit,
    slide_table,
) -> None:
    """Score patients with a trained model; one row per patient."""
    from mil_crcrs.atomic import refuse_overwrite, write_csv
    from mil_crcrs.data.cohort import read_cohort
    from mil_crcrs.data.store import FeatureStore
    from mil_crcrs.runlog import RunLog

    log = out.with_name(f"{out.stem}.run.log")
    refuse_overwrite(
        {"--out": out, "the run log": log, "--attention": attention_dir},
        {
            "--model": model_dir,
            "--features": features,
            "--clinical": clinical,
            "--slide-table": slide_table,
        },
        folders={"--attention"},
    )
    with RunLog(log, command_line(), progress) as run_log:
        model = load_model(model_dir)
        cohort = None
        if clinical is not None:
            unit, source = time_unit_for(
                time_unit, columns.time, model.time_unit, "the model's unit"
            )
            cohort = read_cohort(
                clinical, columns, unit, require_outcome=False, slide_table=slide_table
            )
            run_log.note(f"times of {clinical.name} read in {unit} ({source})")
        elif slide_table is not None:
            raise click.UsageError("--slide-table needs --clinical")
        table = model.predict(
            FeatureStore(features, settings=read_settings),
            cohort,
            attention_dir=attention_dir,
            missing=missing,
            batch_size=batch_size,
            device=device,
        )
        write_csv(out, table)
        n_high = int((table["risk_group"] == "high").sum())
        lines = [
            f"{len(table)} patients ({n_high} high, {len(table) - n_high} low at cutoff "
            f"{model.cutoff:.4g}): {out}"
        ]
        if attention_dir is not None:
            lines.append(f"attention: {attention_dir}")
        for line in lines:
            click.echo(line)
            run_log.note(line)
