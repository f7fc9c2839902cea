"""``crcrs inspect``: what a feature folder or a model directory holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from cli._options import read_settings
from mil_crcrs.data.store import (
    LAYOUT_CLAM_H5,
    LAYOUT_CLAM_PT,
    LAYOUT_OURS,
    LAYOUT_SLIDEFLOW,
    LAYOUT_STAMP,
    LAYOUT_TRIDENT,
)

LAYOUT_NAMES = {
    LAYOUT_OURS: "mil-crcrs HDF5",
    LAYOUT_CLAM_H5: "CLAM h5_files",
    LAYOUT_CLAM_PT: "CLAM pt_files (features alone)",
    LAYOUT_TRIDENT: "TRIDENT",
    LAYOUT_STAMP: "STAMP",
    LAYOUT_SLIDEFLOW: "slideflow bags",
}


@click.command("inspect")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON.")
@read_settings
def command(path, as_json, read_settings) -> None:
    """Describe PATH: a feature folder (layout, tool, encoder, tiles, coordinates, hash) or a
    model directory (what it was trained on and how it scored)."""
    from mil_crcrs.inspection import inspect_path

    info = inspect_path(path, read_settings)
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        for line in summary_lines(info):
            click.echo(line)


def _join(counts: dict[str, int], total: int) -> str:
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{k} ({v} of {total})" for k, v in counts.items())


def summary_lines(info: dict[str, Any]) -> list[str]:
    """The lines ``crcrs inspect`` prints for :func:`~mil_crcrs.inspection.inspect_path`'s
    result."""
    if info["kind"] == "model":
        return _model_lines(info)
    n = info["n_files"]
    t = info["tiles_per_slide"]
    layouts = {LAYOUT_NAMES.get(k, k): v for k, v in info["layout"].items()}
    lines = [
        f"features: {info['path']} ({n} slide file(s))",
        f"layout: {_join(layouts, n)}",
        f"written by: {_join(info['tool'], n)}",
        f"encoder: {_join(info['encoder'], n)}; dim {_join(info['feature_dim'], n)}; "
        f"{_join(info['dtype'], n)}",
        f"tiles per slide: min {t['min']}, median {t['median']:g}, max {t['max']} "
        f"({t['total']} in all)",
    ]
    units = {
        "px": "level-0 pixels (tile top-left)",
        "px centre": "level-0 pixels (tile centres)",
        "um": "microns (tile top-left)",
        "none": "none",
    }
    coords = (
        f"coordinates: {_join({units.get(k, k): v for k, v in info['coords_unit'].items()}, n)}"
    )
    if info["coords_level0_known"] < n:
        coords += (
            f"; tiles cannot be placed on the slide for {n - info['coords_level0_known']} of "
            f"{n} ({info['coords_note']})"
        )
    lines.append(coords)
    size = f"tile size: {_join(info['tile_size_level0'], n)} level-0 px"
    if set(info["tile_size_um"]) != {"unknown"}:
        size = f"tile size: {_join(info['tile_size_um'], n)} um, {size[11:]}"
    lines += [size, f"settings hash: {_join(info['settings_hash'], n)}"]
    if "not recorded" in info["encoder"]:
        lines.append("note: files that do not name their encoder can be given one with --encoder")
    return lines


def _num(value: Any, spec: str) -> str:
    """A recorded number as text; ``n/a`` where it is missing or null (NaN in metrics.json)."""
    return "n/a" if value is None else format(value, spec)


def _model_lines(info: dict[str, Any]) -> list[str]:
    cohort, metrics, model = info["training_cohort"], info["metrics"], info["model"]
    settings = info["settings"]
    lines = [
        f"model: {info['path']} (mil-crcrs {info['package_version']}, {info['created']})",
        f"aggregator: {model.get('name')}, {info['n_folds']} fold models; loss "
        f"{settings.get('loss', '?')}, {settings.get('epochs', '?')} epochs at most, "
        f"seed {settings.get('seed', '?')}",
        f"features: encoder {info['encoder'] or 'not recorded'}, dim {info['feature_dim']}",
    ]
    if cohort:
        lines.append(
            f"trained on: {cohort.get('source')} ({cohort.get('n_patients')} patients, "
            f"{cohort.get('n_slides')} slides, {cohort.get('n_events')} events; median "
            f"observed time {_num(cohort.get('time_median'), '.4g')} {info['time_unit']})"
        )
    if "harrell_c_mean" in metrics:
        lines.append(
            f"cross-validated Harrell C: {_num(metrics['harrell_c_mean'], '.3f')} +- "
            f"{_num(metrics.get('harrell_c_sd'), '.3f')} over folds; pooled out-of-fold "
            f"{_num(metrics.get('harrell_c_oof'), '.3f')}"
        )
    if "validation" in metrics:
        v = metrics["validation"]
        lines.append(
            f"validation {v.get('source')}: Harrell C {_num(v.get('harrell_c'), '.3f')} "
            f"({v.get('n_patients')} patients, {v.get('n_events')} events)"
        )
    cutoff = info["cutoff"]
    if cutoff:
        lines.append(f"cutoff: {_num(cutoff.get('value'), '.4g')} ({cutoff.get('method')})")
    lines.append(f"run.log: {'yes' if info['has_run_log'] else 'no'}")
    return lines
