"""``crcrs demo``: an offline end-to-end run on a semi-synthetic cohort of real H&E tissue."""

from __future__ import annotations

from pathlib import Path

import click

from cli._options import device_option, seed_option
from feature_extraction.synthetic.demo import DemoSettings, run_demo
from mil_crcrs.errors import SettingError

_DEFAULTS = DemoSettings()
# Settings whose flag is not the setting's own name (the rest map as --<setting-name>).
_FLAGS = {"n_patients": "patients"}


@click.command("demo")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-output"),
    show_default=True,
    help="Output folder (an earlier demo there is replaced).",
)
@click.option(
    "--patients", type=int, default=_DEFAULTS.n_patients, show_default=True, help="Cohort size."
)
@click.option(
    "--folds", type=int, default=_DEFAULTS.folds, show_default=True, help="Cross-validation folds."
)
@click.option(
    "--epochs", type=int, default=_DEFAULTS.epochs, show_default=True, help="Most epochs per fold."
)
@click.option(
    "--gradcam/--no-gradcam", default=_DEFAULTS.gradcam, show_default=True, help="Grad-CAM tiles."
)
@seed_option
@device_option
def command(
    out: Path, patients: int, folds: int, epochs: int, gradcam: bool, seed: int, device: str
) -> None:
    """Build a semi-synthetic cohort from real H&E tissue and run extract, fit, predict,
    heatmap and report on it, offline.

    The slides are mosaics of real tissue shipped in pip packages with a planted tissue pattern
    whose extent drives a simulated hazard: a demonstration, not a clinical result.
    """
    settings = DemoSettings(
        n_patients=patients, folds=folds, epochs=epochs, gradcam=gradcam, seed=seed, device=device
    )
    try:
        result = run_demo(out, settings, log=click.echo)
    except SettingError as exc:  # name the flag the user typed
        if exc.setting not in _FLAGS:
            raise
        raise SettingError(_FLAGS[exc.setting], exc.problem) from exc
    m = result.metrics
    click.echo("")
    click.echo(
        f"cross-validated Harrell C {m['harrell_c_mean']:.3f} +- {m['harrell_c_sd']:.3f} "
        f"(oracle, the true simulated risk: {result.oracle_c:.3f})"
    )
    click.echo(f"attention AUROC for the planted tissue: {result.planted_auroc:.3f}")
    timing = ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
    click.echo(f"time: {timing}")
    click.echo(f"heatmaps: {result.heatmap_dir}")
    click.echo(f"report:   {result.report_html}")
    o = result.out_dir
    click.echo(
        f"viewer:   crcrs view --slides {o / 'cohort' / 'slides'} --model {result.model_dir} "
        f"--features {o / 'features'} --clinical {o / 'cohort' / 'clinical.csv'}"
    )
