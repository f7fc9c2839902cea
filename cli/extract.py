"""``crcrs extract``: tile slides and cache per-tile features to HDF5."""

from __future__ import annotations

from pathlib import Path

import click

from cli._options import device_option
from mil_crcrs.errors import InputError


@click.command("extract")
@click.argument("slides", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder: one <slide stem>.h5 per slide, qc/, extract_errors.csv.",
)
@click.option(
    "--encoder",
    default="efficientnet_lite0",
    show_default=True,
    help="Registered encoder (efficientnet_lite0, resnet50_trunc, uni, uni2-h, "
    "gigapath), a timm model name, or a timm hub id 'hf-hub:org/name'.",
)
@click.option(
    "--weights",
    default=None,
    help="Local weights file (or hub snapshot folder); 'random' for untrained weights. "
    "Default: the encoder's pretrained weights.",
)
@click.option(
    "--mpp",
    "target_mpp",
    type=float,
    default=0.5,
    show_default=True,
    help="Microns per pixel of the tiles (0.5 is about 20x).",
)
@click.option(
    "--tile-size",
    "tile_size_px",
    type=int,
    default=224,
    show_default=True,
    help="Tile edge in pixels at --mpp.",
)
@click.option(
    "--min-tissue",
    "min_tissue_fraction",
    type=float,
    default=0.5,
    show_default=True,
    help="Keep a tile when at least this share of it is tissue.",
)
@click.option(
    "--slide-mpp",
    type=float,
    default=None,
    help="Level-0 microns per pixel of the slides, overriding (or standing in for) "
    "what the files record.",
)
@click.option(
    "--tissue-method",
    type=click.Choice(["otsu", "saturation"]),
    default="otsu",
    show_default=True,
    help="Otsu's threshold on saturation, or a fixed one.",
)
@click.option(
    "--saturation-threshold",
    type=int,
    default=20,
    show_default=True,
    help="Saturation (0-255) threshold; with otsu, the floor under Otsu's threshold.",
)
@click.option(
    "--seg-mpp",
    type=float,
    default=4.0,
    show_default=True,
    help="Microns per pixel of the image tissue is segmented on.",
)
@click.option(
    "--min-tissue-area",
    type=float,
    default=25_000.0,
    show_default=True,
    help="Drop tissue pieces smaller than this (um^2).",
)
@click.option(
    "--max-hole-area",
    type=float,
    default=25_000.0,
    show_default=True,
    help="Fill holes in tissue smaller than this (um^2).",
)
@click.option(
    "--batch-size", type=int, default=256, show_default=True, help="Tiles per encoder batch."
)
@click.option(
    "--num-workers",
    type=int,
    default=None,
    help="Reader processes (default: this process's CPUs minus one).",
)
@device_option
@click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
    default="auto",
    show_default=True,
    help="auto: bf16 (or fp16) autocast on GPU, fp32 on CPU.",
)
@click.option(
    "--compile/--no-compile",
    "compile_",
    default=False,
    show_default=True,
    help="Run the encoder through torch.compile.",
)
@click.option(
    "--feature-dtype",
    type=click.Choice(["float16", "float32"]),
    default="float16",
    show_default=True,
    help="Dtype of the stored features.",
)
@click.option(
    "--qc/--no-qc",
    default=True,
    show_default=True,
    help="Save a thumbnail with the tissue outline and tiles per slide (qc/).",
)
def command(
    slides,
    out_dir,
    target_mpp,
    tile_size_px,
    min_tissue_fraction,
    slide_mpp,
    tissue_method,
    saturation_threshold,
    seg_mpp,
    min_tissue_area,
    max_hole_area,
    compile_,
    **options,
) -> None:
    """Tile SLIDES (files or folders) and write one feature file per slide to --out.

    Reruns skip finished slides; under torchrun or SLURM each process takes its share of the
    slides. Slides that fail are listed in OUT/extract_errors.csv and the exit status is 2.
    """
    from feature_extraction.pipeline import ExtractSettings, extract
    from feature_extraction.tissue import TissueParams

    tissue = TissueParams(
        method=tissue_method,
        saturation_threshold=saturation_threshold,
        seg_mpp=seg_mpp,
        min_tissue_area_um2=min_tissue_area,
        max_hole_area_um2=max_hole_area,
    )
    settings = ExtractSettings(
        target_mpp=target_mpp,
        tile_size_px=tile_size_px,
        min_tissue_fraction=min_tissue_fraction,
        slide_mpp=slide_mpp,
        tissue=tissue,
        compile=compile_,
        **options,
    )
    result = extract(slides, out_dir, settings)
    rank = (
        f"rank {result.shard.rank}/{result.shard.world_size}: "
        if result.shard.world_size > 1
        else ""
    )
    busy = f"{len(result.busy)} left to another running process, " if result.busy else ""
    click.echo(
        f"{rank}{len(result.done)} extracted ({result.n_tiles} tiles), {len(result.skipped)} "
        f"already done, {busy}{len(result.failed)} failed, in {result.seconds:.1f} s -> {out_dir}"
    )
    if result.failed:
        first_id, first = next(iter(result.failed.items()))
        more = f" and {len(result.failed) - 1} more" if len(result.failed) > 1 else ""
        raise InputError(
            f"{len(result.failed)} slide(s) failed, listed in {result.errors_report}: {first}{more}"
        )
