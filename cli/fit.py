"""``crcrs fit``: cross-validated training of the CRCRS model into a model directory."""

from __future__ import annotations

from pathlib import Path

import click

from cli._options import (
    cohort_columns,
    command_line,
    device_option,
    features_option,
    missing_option,
    progress_option,
    read_settings,
    seed_option,
    slide_table_option,
)

_PATH = click.Path(path_type=Path)


@click.command("fit")
@features_option
@click.option(
    "--clinical",
    required=True,
    type=_PATH,
    help="Cohort table (CSV or .xlsx): one row per slide with patient, slide, time and event "
    "(or CLAM's censorship).",
)
@slide_table_option
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Model directory to write.",
)
@click.option(
    "--model", default="abmil", show_default=True, help="Aggregator: abmil, mean, max or transmil."
)
@click.option("--folds", type=int, default=5, show_default=True, help="K of K-fold CV.")
@click.option("--epochs", type=int, default=50, show_default=True, help="Most epochs per fold.")
@click.option(
    "--loss",
    type=click.Choice(["cox", "discrete"]),
    default="cox",
    show_default=True,
    help="Cox partial likelihood, or discrete-time hazards.",
)
@click.option(
    "--ties",
    type=click.Choice(["efron", "breslow"]),
    default="efron",
    show_default=True,
    help="Tie handling of the Cox loss.",
)
@click.option(
    "--cutoff",
    type=click.Choice(["median", "maxstat"]),
    default="median",
    show_default=True,
    help="High/low cutoff on the out-of-fold CRCRS.",
)
@click.option(
    "--max-tiles",
    type=int,
    default=None,
    help="Random subset of at most this many tiles per bag in training [default: all].",
)
@click.option(
    "--batch-size",
    type=int,
    default=16,
    show_default=True,
    help="Bags per optimiser step (the Cox risk set).",
)
@click.option(
    "--lr", type=float, default=2e-4, show_default=True, help="AdamW (peak) learning rate."
)
@click.option(
    "--schedule",
    type=click.Choice(["cosine", "onecycle"]),
    default="cosine",
    show_default=True,
    help="Learning-rate schedule, stepped per batch.",
)
@missing_option
@click.option(
    "--val-clinical",
    type=_PATH,
    default=None,
    help="External validation cohort table, scored once and reported separately.",
)
@click.option(
    "--val-features",
    type=_PATH,
    default=None,
    help="Feature files of the validation cohort [default: --features].",
)
@progress_option
@click.option(
    "--resume/--no-resume",
    default=False,
    show_default=True,
    help="Take the fold models that an interrupted fit with the same settings, cohort and "
    "features saved (in .OUT.checkpoints beside --out), and train only the rest.",
)
@read_settings
@seed_option
@device_option
@cohort_columns
def command(
    features,
    clinical,
    out,
    model,
    folds,
    epochs,
    loss,
    ties,
    cutoff,
    max_tiles,
    batch_size,
    lr,
    schedule,
    missing,
    val_clinical,
    val_features,
    progress,
    resume,
    seed,
    device,
    columns,
    time_unit,
    slide_table,
    read_settings,
) -> None:
    """Train K fold models; write weights, config, metrics.json, oof_predictions.csv, run.log."""
    from mil_crcrs.checkpoints import checkpoint_folder, remove_checkpoints
    from mil_crcrs.cohort import read_cohort
    from mil_crcrs.fitting import FitSettings, fit
    from mil_crcrs.runlog import RUN_LOG_NAME, RunLog
    from mil_crcrs.store import FeatureStore

    settings = FitSettings(
        model=model,
        folds=folds,
        epochs=epochs,
        loss=loss,
        ties=ties,
        cutoff=cutoff,
        max_tiles=max_tiles,
        batch_size=batch_size,
        lr=lr,
        schedule=schedule,
        seed=seed,
        device=device,
        progress=progress,
    )
    with RunLog(out / RUN_LOG_NAME, command_line(), progress=progress) as run_log:
        cohort = read_cohort(clinical, columns, time_unit, slide_table=slide_table)
        crcrs = fit(
            FeatureStore(features, settings=read_settings),
            cohort,
            settings,
            columns=columns,
            time_unit=time_unit,
            missing=missing,
            val_clinical=val_clinical,
            val_features=val_features,
            checkpoints=checkpoint_folder(out),
            resume=resume,
        )
        crcrs.save(out)
        remove_checkpoints(checkpoint_folder(out))
        for line in _summary(crcrs):
            click.echo(line)
            run_log.note(line)
    click.echo(f"model: {out}")


def _summary(crcrs) -> list[str]:
    m = crcrs.metrics
    per_fold = "  ".join(f"{c:.3f}" for c in m["harrell_c_per_fold"])
    lines = [
        f"Harrell C per fold: {per_fold}",
        f"Harrell C: {m['harrell_c_mean']:.3f} +- {m['harrell_c_sd']:.3f} (mean +- sd over "
        f"{len(m['harrell_c_per_fold'])} folds); pooled out-of-fold: {m['harrell_c_oof']:.3f} "
        f"({m['n_patients']} patients, {m['n_events']} events)",
    ]
    rule = crcrs.cutoff_rule
    lines.append(
        f"cutoff ({rule.method} of the out-of-fold CRCRS): {rule.value:.4g} "
        f"({rule.n_high} high, {rule.n_low} low)"
    )
    if "validation" in m:
        v = m["validation"]
        lines.append(
            f"validation {v['source']}: Harrell C {v['harrell_c']:.3f} "
            f"({v['n_patients']} patients, {v['n_events']} events, {v['n_high']} high)"
        )
    return lines
