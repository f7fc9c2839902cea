"""``crcrs phenotypes``: tile phenotypes of a cohort and what each says about the CRCRS."""

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
    seed_option,
)
from mil_crcrs.phenotypes.clustering import METHODS, ClusterSettings
from mil_crcrs.phenotypes.settings import PhenotypeSettings

_PATH = click.Path(path_type=Path)
_CLUSTER = ClusterSettings()
_DEFAULTS = PhenotypeSettings()


@click.command("phenotypes")
@model_dir_option
@features_option
@click.option(
    "--clinical",
    required=True,
    type=_PATH,
    help="Cohort table (patient, slide, time, event): the fractions are tested against survival.",
)
@click.option(
    "--slides",
    multiple=True,
    type=_PATH,
    help="Slide folder or files (repeat for several): galleries of tile pixels and maps over "
    "thumbnails. Without them galleries list coordinates only.",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder, written in one step (replaced if it exists).",
)
@click.option(
    "--phenotypes",
    "phenotypes_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Reuse the phenotypes of an earlier run's --out (e.g. the training cohort's, for a "
    "validation cohort) instead of fitting new ones.",
)
@click.option("--k", type=int, default=None, help="Number of phenotypes [default: chosen].")
@click.option(
    "--k-range",
    default=",".join(map(str, _CLUSTER.k_range)),
    show_default=True,
    help="MIN,MAX: the K tried (best silhouette) when --k is not given.",
)
@click.option(
    "--method",
    type=click.Choice(METHODS),
    default=_CLUSTER.method,
    show_default=True,
    help="k-means, or Leiden over the tiles' k-nearest-neighbour graph.",
)
@click.option(
    "--resolution",
    type=float,
    default=_CLUSTER.resolution,
    show_default=True,
    help="Leiden's resolution (higher = more phenotypes).",
)
@click.option(
    "--sample-per-slide",
    type=int,
    default=_DEFAULTS.sample_per_slide,
    show_default=True,
    help="Tiles drawn from each slide to fit the phenotypes on.",
)
@click.option(
    "--map-tiles",
    type=int,
    default=_DEFAULTS.map_tiles,
    show_default=True,
    help="About this many tiles in the 2-D map (UMAP); 0 = no map.",
)
@click.option(
    "--slide-maps",
    type=int,
    default=_DEFAULTS.slide_maps,
    show_default=True,
    help="Slides drawn coloured by phenotype (of the highest-CRCRS patients).",
)
@click.option(
    "--geojson",
    is_flag=True,
    help="Also write geojson/<slide>.geojson: every tile as a QuPath object classed by phenotype.",
)
@missing_option
@progress_option
@seed_option
@device_option
@cohort_columns(unit_from_model=True)
def command(
    model_dir,
    features,
    clinical,
    slides,
    out_dir,
    phenotypes_dir,
    k,
    k_range,
    method,
    resolution,
    sample_per_slide,
    map_tiles,
    slide_maps,
    geojson,
    missing,
    progress,
    seed,
    device,
    columns,
    time_unit,
) -> None:
    """Cluster tiles into phenotypes; per phenotype its share, attention, contribution to the
    CRCRS and a Cox model of the patients' fraction of it; galleries, UMAP, forest plot."""
    from feature_extraction.explain.phenotypes import make_phenotype_atlas
    from mil_crcrs.atomic import refuse_overwrite, sole_writer
    from mil_crcrs.errors import InputError
    from mil_crcrs.runlog import RunLog

    try:
        low, high = (int(v) for v in comma_list(k_range))
    except ValueError:
        raise InputError(f"--k-range must be two integers 'min,max', got {k_range!r}") from None
    settings = PhenotypeSettings(
        cluster=ClusterSettings(
            method=method, k=k, k_range=(low, high), resolution=resolution, seed=seed
        ),
        sample_per_slide=sample_per_slide,
        map_tiles=map_tiles,
        slide_maps=slide_maps,
        geojson=geojson,
        columns=columns,
        time_unit=time_unit,
        missing=missing,
        device=device,
    )
    given = {"--model": model_dir, "--features": features, "--clinical": clinical}
    given |= {"--slides": slides, "--phenotypes": phenotypes_dir}
    refuse_overwrite({"--out": out_dir}, given, folders={"--out"})
    log = RunLog(out_dir / "run.log", command_line(), progress)
    with sole_writer(out_dir, "phenotypes"), log as run_log:
        atlas = make_phenotype_atlas(
            model_dir, features, clinical, out_dir, list(slides) or None, settings, phenotypes_dir
        )
        for note in atlas.notes:
            click.echo(f"note: {note}", err=True)
            run_log.note(note)
        top = atlas.table.sort_values("contribution_rank").iloc[0]
        line = (
            f"{atlas.phenotypes.k} phenotypes over {atlas.tiles.n_tiles} tiles of "
            f"{len(atlas.tiles.patient_ids)} patients; highest mean contribution: "
            f"P{int(top['phenotype'])} (HR per SD {top['hr_per_sd']:.2f}, FDR {top['fdr']:.2g}): "
            f"{out_dir}"
        )
        click.echo(line)
        run_log.note(line)
