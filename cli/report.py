"""``crcrs report``: survival statistics, nomogram and plots of a CRCRS as one HTML report.

The flags fill a :class:`~mil_crcrs.stats.report.settings.ReportSettings`, with its defaults; a bad value
is reported under the flag the user typed (:data:`FLAGS` names those that differ from the field).
"""

from __future__ import annotations

from pathlib import Path

import click

from cli._options import cohort_columns, comma_list, command_line, seed_option, time_unit_for
from mil_crcrs.atomic import refuse_overwrite, sole_writer
from mil_crcrs.data.cohort import DEFAULT_TIME_UNIT, TIME_UNITS
from mil_crcrs.errors import InputError, SettingError
from mil_crcrs.runlog import RUN_LOG_NAME, RunLog
from mil_crcrs.stats.report.build import build_report
from mil_crcrs.stats.report.settings import ReportSettings

#: ReportSettings fields whose flag is not the field's own name.
FLAGS = {
    "horizons_years": "horizons",
    "n_bootstrap": "bootstrap",
    "dca_horizon_years": "dca_horizon",
}


def _years(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(s) for s in comma_list(text))
    except ValueError:
        raise InputError(
            f"--horizons must be comma-separated numbers of years, got {text!r}"
        ) from None


@click.command("report")
@click.option(
    "--predictions",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Predictions CSV of the training cohort (from crcrs fit/predict).",
)
@click.option(
    "--clinical",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Clinical table of the training cohort.",
)
@click.option(
    "--validation-predictions",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Predictions CSV of an external validation cohort.",
)
@click.option(
    "--validation-clinical",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Clinical table of the validation cohort.",
)
@click.option(
    "--covariates", required=True, help="Comma-separated clinical covariates, e.g. T,N,M,age,sex."
)
@click.option(
    "--categorical",
    default=",".join(ReportSettings.categorical),
    show_default=False,
    help="Covariates coded as numbers to treat as categorical, e.g. T,N. Text "
    "covariates are categorical anyway; the reference level is the most frequent.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder: report.html, CSV tables, results.json, figures/.",
)
@click.option(
    "--horizons",
    default=",".join(f"{h:g}" for h in ReportSettings.horizons_years),
    show_default=True,
    help="Comma-separated horizons in years (time-dependent AUC, nomogram, calibration).",
)
@click.option(
    "--dca-horizon",
    type=float,
    default=ReportSettings.dca_horizon_years,
    help="Horizon of the decision curves, in years [default: the middle horizon].",
)
@click.option(
    "--bootstrap",
    "n_bootstrap",
    type=click.IntRange(min=0),
    default=ReportSettings.n_bootstrap,
    show_default=True,
    help="Bootstrap resamples for the 95% CIs.",
)
@click.option(
    "--image",
    "images",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Extra image to embed (e.g. a heatmap PNG); repeat for several.",
)
@click.option(
    "--associate",
    "associate_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output folder of crcrs associate: its top findings and figures as a section.",
)
@click.option(
    "--phenotypes",
    multiple=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder written by crcrs phenotypes, shown in a Phenotypes section; repeat for "
    "several cohorts.",
)
@seed_option
@cohort_columns
def command(
    predictions,
    clinical,
    validation_predictions,
    validation_clinical,
    covariates,
    categorical,
    out,
    horizons,
    dca_horizon,
    n_bootstrap,
    images,
    associate_dir,
    phenotypes,
    columns,
    time_unit,
    seed,
) -> None:
    """Kaplan-Meier, Cox, discrimination, nomogram, calibration and decision curves."""
    refuse_overwrite(
        {"--out": out},
        {
            "--predictions": predictions,
            "--clinical": clinical,
            "--validation-predictions": validation_predictions,
            "--validation-clinical": validation_clinical,
            "--image": images,
            "--associate": associate_dir,
            "--phenotypes": phenotypes,
        },
        folders={"--out"},
    )
    with sole_writer(out, "report"), RunLog(out / RUN_LOG_NAME, command_line()) as run_log:
        fallback, why = _model_unit(predictions)
        time_unit, source = time_unit_for(time_unit, columns.time, fallback, why)
        run_log.note(f"times of {clinical.name} read in {time_unit} ({source})")
        try:
            settings = ReportSettings(
                covariates=comma_list(covariates),
                categorical=comma_list(categorical),
                horizons_years=_years(horizons),
                time_unit=time_unit,
                columns=columns,
                n_bootstrap=n_bootstrap,
                seed=seed,
                dca_horizon_years=dca_horizon,
            )
        except SettingError as exc:  # cli.main shows it as --<setting>: use this command's flag
            raise SettingError(FLAGS.get(exc.setting, exc.setting), exc.problem) from None
        report = build_report(
            predictions,
            clinical,
            out,
            settings,
            validation_predictions=validation_predictions,
            validation_clinical=validation_clinical,
            extra_images=images,
            associate_dir=associate_dir,
            phenotypes=phenotypes,
        )
        run_log.note(f"report: {report.html}")
    click.echo(f"report: {report.html}")


def _model_unit(predictions: Path) -> tuple[str, str]:
    """The unit of the model whose ``oof_predictions.csv`` these are (its ``config.json``
    beside them), else days."""
    import json

    config = predictions.parent / "config.json"
    try:
        unit = json.loads(config.read_text())["time_unit"]
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_TIME_UNIT, ""
    if unit not in TIME_UNITS:
        return DEFAULT_TIME_UNIT, ""
    return unit, f"the unit of the model in {predictions.parent}"
