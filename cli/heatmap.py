"""``crcrs heatmap``: attention and contribution heatmaps, top tiles and Grad-CAM per patient."""

from __future__ import annotations

from pathlib import Path

import click

from cli._options import (
    cohort_columns,
    comma_list,
    command_line,
    device_option,
    features_option,
    missing_option,
    model_dir_option,
    progress_option,
    slide_table_option,
)
from mil_crcrs.data.tables import time_unit_from_name
from mil_crcrs.explain.scores import VALUE_KINDS
from mil_crcrs.explain.settings import DEFAULT_CMAPS, MIN_SIDE_PX, HeatmapSettings

_PATH = click.Path(path_type=Path)
_DEFAULTS = HeatmapSettings()


@click.command("heatmap")
@model_dir_option
@features_option
@click.option(
    "--slides",
    multiple=True,
    type=_PATH,
    help="Slide folder or files, matched to feature files by stem (repeat for "
    "several). Without them maps are drawn on a blank canvas and no tiles are cut.",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder: <patient>/<slide>_<kind>.png, galleries, tiles.csv.",
)
@click.option(
    "--top-k",
    type=click.IntRange(min=0),
    default=_DEFAULTS.top_k,
    show_default=True,
    help="Top and bottom tiles per patient in the gallery (and Grad-CAM).",
)
@click.option(
    "--by",
    type=click.Choice(VALUE_KINDS),
    default=_DEFAULTS.by,
    show_default=True,
    help="Rank tiles by attention or by contribution to the risk.",
)
@click.option(
    "--gradcam",
    is_flag=True,
    help="Grad-CAM of the top tiles through the encoder (needs --slides).",
)
@click.option(
    "--integrated-gradients",
    is_flag=True,
    help="With --gradcam: also feature-level integrated gradients per tile.",
)
@click.option(
    "--weights",
    default=None,
    help="The encoder's weights file, when extraction used one (for --gradcam).",
)
@click.option(
    "--encoder",
    default=None,
    help="The encoder's registry name, for feature files that do not record it (CLAM's): "
    "needed by --gradcam, checked against the model's encoder.",
)
@click.option(
    "--tile-size",
    default=None,
    help="Tile edge for feature files that record none (and have no CLAM patches/ file "
    "beside them): PX in level-0 pixels (e.g. 256), or PX@MPP in pixels at MPP um/px "
    "(e.g. 224@0.5: tiles read at that size, as the encoder saw them). Unlike the --tile-size "
    "of fit and predict (level-0 pixels only), it may name a resolution.",
)
@click.option(
    "--slide-mpp",
    type=float,
    default=None,
    help="Slides' level-0 microns per pixel, to place coordinates stored in microns (STAMP) "
    "where the slide file is not given or does not record it [default: each slide's own].",
)
@click.option(
    "--geojson",
    is_flag=True,
    help="Also write <patient>/<slide>.geojson per slide: the tiles as QuPath objects with "
    "attention and contribution as measurements (level-0 pixel coordinates).",
)
@click.option("--patients", default=None, help="Comma-separated patient ids [default: all].")
@click.option(
    "--clinical",
    type=_PATH,
    default=None,
    help="Cohort table grouping slides into patients [default: each feature file is one patient].",
)
@slide_table_option
@click.option(
    "--cmap",
    default=None,
    help="matplotlib colormap for every map [default: "
    + ", ".join(f"{cmap} for {kind}" for kind, cmap in DEFAULT_CMAPS.items())
    + "].",
)
@click.option(
    "--alpha",
    type=float,
    default=_DEFAULTS.alpha,
    show_default=True,
    help="Opacity of the colours over the thumbnail.",
)
@click.option(
    "--smooth",
    type=float,
    default=_DEFAULTS.smooth,
    show_default=True,
    help="Gaussian smoothing of the maps, sigma in tiles (0 = none).",
)
@click.option(
    "--percentiles",
    default=",".join(f"{p:g}" for p in _DEFAULTS.percentiles),
    show_default=True,
    help="Percentiles of a patient's values mapped to the ends of the colormap.",
)
@click.option(
    "--max-side",
    "max_side_px",
    type=click.IntRange(min=MIN_SIDE_PX),
    default=_DEFAULTS.max_side_px,
    show_default=True,
    help="Longest side of a heatmap in pixels.",
)
@missing_option
@progress_option
@device_option
@cohort_columns(unit_from_model=True)
def command(
    model_dir,
    features,
    slides,
    out_dir,
    top_k,
    by,
    gradcam,
    integrated_gradients,
    weights,
    encoder,
    tile_size,
    slide_mpp,
    geojson,
    patients,
    clinical,
    slide_table,
    cmap,
    alpha,
    smooth,
    percentiles,
    max_side_px,
    missing,
    progress,
    device,
    columns,
    time_unit,
) -> None:
    """Attention/contribution heatmaps per slide, top-tile galleries, optional Grad-CAM."""
    from feature_extraction.explain.gradcam import GradCAMSettings
    from feature_extraction.explain.heatmaps import HeatmapJob, make_heatmaps
    from mil_crcrs.atomic import refuse_overwrite, sole_writer
    from mil_crcrs.errors import InputError
    from mil_crcrs.explain.tiling import TileSize
    from mil_crcrs.runlog import RUN_LOG_NAME, RunLog

    refuse_overwrite(
        {"--out": out_dir},
        {
            "--model": model_dir,
            "--features": features,
            "--slides": slides,
            "--clinical": clinical,
            "--slide-table": slide_table,
        },
        folders={"--out"},
    )
    if integrated_gradients and not gradcam:
        raise InputError("--integrated-gradients goes with --gradcam")
    settings = _settings(cmap, alpha, percentiles, smooth, max_side_px, top_k, by)
    time_unit = time_unit or time_unit_from_name(columns.time)  # None: the model's unit
    job = HeatmapJob(
        settings,
        gradcam=GradCAMSettings(integrated_gradients=integrated_gradients) if gradcam else None,
        patients=list(comma_list(patients)) if patients is not None else None,
        encoder=encoder,
        weights=weights,
        tile_size=None if tile_size is None else TileSize.parse(tile_size),
        slide_mpp=slide_mpp,
        geojson=geojson,
        device=device,
        columns=columns,
        time_unit=time_unit,
        missing=missing,
    )
    log = RunLog(out_dir / RUN_LOG_NAME, command_line(), progress=progress)
    with sole_writer(out_dir, "heatmap"), log as run_log:
        model = model_dir
        if slide_table is not None:
            model, clinical = _with_slide_table(
                model_dir, clinical, slide_table, columns, time_unit
            )
        slide_paths = list(slides) or None
        result = make_heatmaps(model, features, out_dir, slide_paths, clinical, job)
        n_patients = result.images["patient_id"].nunique()
        line = f"{len(result.images)} images for {n_patients} patient(s): {out_dir}"
        run_log.note(line)
    click.echo(line)


def _with_slide_table(model_dir, clinical, slide_table, columns, time_unit):
    """The loaded model and the cohort of a clinical table joined to STAMP's slide table."""
    from mil_crcrs.data.cohort import read_cohort
    from mil_crcrs.ensemble import load_model

    if clinical is None:
        raise click.UsageError("--slide-table needs --clinical")
    model = load_model(model_dir)
    unit = time_unit or model.time_unit
    cohort = read_cohort(clinical, columns, unit, require_outcome=False, slide_table=slide_table)
    return model, cohort


def _settings(cmap, alpha, percentiles, smooth, max_side_px, top_k, by) -> HeatmapSettings:
    """The drawing settings the flags give (``--percentiles low,high`` parsed)."""
    from mil_crcrs.errors import InputError

    try:
        low, high = (float(p) for p in percentiles.split(","))
    except ValueError:
        raise InputError(
            f"--percentiles must be two numbers 'low,high', got {percentiles!r}"
        ) from None
    return HeatmapSettings(
        cmap=cmap,
        alpha=alpha,
        percentiles=(low, high),
        smooth=smooth,
        max_side_px=max_side_px,
        top_k=top_k,
        by=by,
    )
