"""``crcrs predict``: the CRCRS and risk group of every patient, from a trained model."""

from __future__ import annotations

from pathlib import Path

import click

from cli._options import (
    cohort_columns,
    device_option,
    features_option,
    missing_option,
    model_dir_option,
)

_PATH = click.Path(path_type=Path)


@click.command("predict")
@model_dir_option
@features_option
@click.option(
    "--clinical",
    type=_PATH,
    default=None,
    help="Cohort table (patient, slide, and optionally time and event) "
    "[default: each feature file is one patient].",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Predictions CSV to write: patient_id, crcrs, risk_group[, time, event].",
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
    "--batch-size", type=int, default=16, show_default=True, help="Bags per forward pass."
)
@device_option
@cohort_columns
def command(
    model_dir,
    features,
    clinical,
    out,
    attention_dir,
    missing,
    batch_size,
    device,
    columns,
    time_unit,
) -> None:
    """Score patients with a trained model; one row per patient."""
    from mil_crcrs._io import write_csv
    from mil_crcrs.model_dir import load_model

    model = load_model(model_dir)
    table = model.predict(
        features,
        clinical,
        columns=columns,
        attention_dir=attention_dir,
        time_unit=time_unit,
        missing=missing,
        batch_size=batch_size,
        device=device,
    )
    write_csv(out, table)
    n_high = int((table["risk_group"] == "high").sum())
    click.echo(
        f"{len(table)} patients ({n_high} high, {len(table) - n_high} low at cutoff "
        f"{model.cutoff:.4g}): {out}"
    )
    if attention_dir is not None:
        click.echo(f"attention: {attention_dir}")
