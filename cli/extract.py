"""``crcrs extract``: tile slides and cache per-tile features to HDF5.

Defaults and choices come from :class:`~feature_extraction.running.settings.ExtractSettings`,
:class:`~feature_extraction.tiling.tissue.TissueParams` and the registries; a bad value is reported
with the flag it came from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from cli._options import command_line, device_option, progress_option
from feature_extraction.encoding.encoders import list_encoders
from feature_extraction.reading.reader_choice import READERS
from feature_extraction.running.settings import FEATURE_DTYPES, PRECISIONS, ExtractSettings
from feature_extraction.tiling.tissue import TISSUE_METHODS, TissueParams
from mil_crcrs.errors import InputError, SettingError

SETTINGS = ExtractSettings()
TISSUE = SETTINGS.tissue
#: The flags' parameter names that are not the name of the field they set.
TISSUE_FIELDS = {
    "tissue_method": "method",
    "saturation_threshold": "saturation_threshold",
    "seg_mpp": "seg_mpp",
    "min_tissue_area": "min_tissue_area_um2",
    "max_hole_area": "max_hole_area_um2",
}
RENAMED = {"compile_": "compile"}


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
    default=SETTINGS.encoder,
    show_default=True,
    help=f"Registered encoder ({', '.join(list_encoders())}), a timm model name, or a timm hub "
    "id 'hf-hub:org/name'.",
)
@click.option(
    "--weights",
    default=SETTINGS.weights,
    help="Local weights file (or hub snapshot folder); 'random' for untrained weights. "
    "Default: the encoder's pretrained weights.",
)
@click.option(
    "--mpp",
    "target_mpp",
    type=float,
    default=SETTINGS.target_mpp,
    show_default=True,
    help="Microns per pixel of the tiles (0.5 is about 20x).",
)
@click.option(
    "--tile-size",
    "tile_size_px",
    type=int,
    default=SETTINGS.tile_size_px,
    show_default=True,
    help="Tile edge in pixels at --mpp.",
)
@click.option(
    "--min-tissue",
    "min_tissue_fraction",
    type=float,
    default=SETTINGS.min_tissue_fraction,
    show_default=True,
    help="Keep a tile when at least this share of it is tissue.",
)
@click.option(
    "--slide-mpp",
    type=float,
    default=SETTINGS.slide_mpp,
    help="Level-0 microns per pixel of the slides, overriding (or standing in for) "
    "what the files record.",
)
@click.option(
    "--tissue-method",
    type=click.Choice(TISSUE_METHODS),
    default=TISSUE.method,
    show_default=True,
    help="Otsu's threshold on saturation, or a fixed one.",
)
@click.option(
    "--saturation-threshold",
    type=int,
    default=TISSUE.saturation_threshold,
    show_default=True,
    help="Saturation (0-255) threshold; with otsu, the floor under Otsu's threshold.",
)
@click.option(
    "--seg-mpp",
    type=float,
    default=TISSUE.seg_mpp,
    show_default=True,
    help="Microns per pixel of the image tissue is segmented on.",
)
@click.option(
    "--min-tissue-area",
    type=float,
    default=TISSUE.min_tissue_area_um2,
    show_default=True,
    help="Drop tissue pieces smaller than this (um^2).",
)
@click.option(
    "--max-hole-area",
    type=float,
    default=TISSUE.max_hole_area_um2,
    show_default=True,
    help="Fill holes in tissue smaller than this (um^2).",
)
@click.option(
    "--batch-size",
    type=int,
    default=SETTINGS.batch_size,
    show_default=True,
    help="Tiles per encoder batch.",
)
@click.option(
    "--num-workers",
    type=int,
    default=SETTINGS.num_workers,
    help="Reader processes (default: this process's CPUs minus one).",
)
@device_option
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default=SETTINGS.precision,
    show_default=True,
    help="auto: bf16 (or fp16) autocast on GPU, fp32 on CPU.",
)
@click.option(
    "--compile/--no-compile",
    "compile_",
    default=SETTINGS.compile,
    show_default=True,
    help="Run the encoder through torch.compile.",
)
@click.option(
    "--feature-dtype",
    type=click.Choice(FEATURE_DTYPES),
    default=SETTINGS.feature_dtype,
    show_default=True,
    help="Dtype of the stored features.",
)
@click.option(
    "--coords",
    "coords_dir",
    type=click.Path(exists=True, file_okay=False),
    default=SETTINGS.coords_dir,
    help="Extract the tiles listed in this folder's coordinates files (CLAM patches/*.h5, "
    "TRIDENT *_patches.h5, or any <slide>.h5 with a 'coords' dataset, level-0 px) instead of "
    "segmenting tissue; the tile footprint comes from the file's patch_size/patch_level "
    "(or patch_size_level0) where it has them.",
)
@click.option(
    "--reader",
    type=click.Choice(READERS),
    default=SETTINGS.reader,
    show_default=True,
    help="How tiles are read: 'direct' takes the compressed JPEG tiles straight from tiled "
    "TIFF/SVS files and decodes them in batches (on the GPU when the encoder runs there); "
    "'auto' does so where a slide qualifies and its first tiles match OpenSlide's, and says "
    "why not otherwise; 'openslide' reads every format.",
)
@progress_option
@click.option(
    "--qc/--no-qc",
    default=SETTINGS.qc,
    show_default=True,
    help="Save a thumbnail with the tissue outline and tiles per slide (qc/).",
)
def command(slides, out_dir, **options) -> None:
    """Tile SLIDES (files or folders) and write one feature file per slide to --out.

    Reruns skip finished slides; under torchrun or SLURM each process takes its share of the
    slides. Slides that fail are listed in OUT/extract_errors.csv and the exit status is 2.
    """
    from feature_extraction.running.pipeline import extract
    from feature_extraction.running.sharding import current_shard
    from mil_crcrs.runlog import RUN_LOG_NAME, RunLog

    settings = _settings(options)
    shard = current_shard()
    log_name = RUN_LOG_NAME if shard.rank == 0 else f"run.rank{shard.rank}.log"
    with RunLog(out_dir / log_name, command_line(), progress=settings.progress) as run_log:
        result = extract(slides, out_dir, settings, shard=shard)
        summary = result.summary()
        click.echo(summary)
        run_log.note(summary)
    if result.failed:
        first_id, first = next(iter(result.failed.items()))
        more = f" and {len(result.failed) - 1} more" if len(result.failed) > 1 else ""
        raise InputError(
            f"{len(result.failed)} slide(s) failed, listed in {result.errors_report}: {first}{more}"
        )


def _settings(options: dict[str, Any]) -> ExtractSettings:
    """The settings the flags give; a bad value is reported with its flag."""
    tissue = {field: options.pop(name) for name, field in TISSUE_FIELDS.items()}
    values = {RENAMED.get(name, name): value for name, value in options.items()}
    try:
        return ExtractSettings(tissue=TissueParams(**tissue), **values)
    except SettingError as exc:
        raise InputError(f"{_flag(exc.setting)} {exc.problem}") from None


def _flag(setting: str) -> str:
    """The flag of a setting (an ExtractSettings or TissueParams field)."""
    names = {field: name for name, field in {**TISSUE_FIELDS, **RENAMED}.items()}
    name = names.get(setting, setting)
    for param in click.get_current_context().command.params:
        if param.name == name and isinstance(param, click.Option):
            return max(param.opts, key=len)
    return f"--{setting.replace('_', '-')}"
