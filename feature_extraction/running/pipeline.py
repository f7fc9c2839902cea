"""Slides to per-slide HDF5 feature bags: :func:`extract`, the library side of ``crcrs extract``.

For the slides of this process's shard (:mod:`feature_extraction.running.sharding`), as one pipeline:

1. a planning thread works a few slides ahead of the encoder (:mod:`feature_extraction.running.schedule`):
   it claims each slide (:mod:`feature_extraction.running.claims`), opens it
   (:class:`~feature_extraction.reading.slides.Slide`), segments tissue at low resolution, saves a QC
   picture (``DIR/qc/<slide>.png``), lays the tile grid at ``target_mpp``
   (:mod:`feature_extraction.tiling.grid`) and chooses the reader (the ``reader`` setting,
   :mod:`feature_extraction.reading.reader_choice`): OpenSlide, or the direct reader of tiled JPEG
   pyramids (:mod:`feature_extraction.reading.direct`) after checking its pixels on the first tiles
   against OpenSlide's (all in :mod:`feature_extraction.running.planning`);
2. one DataLoader, whose worker processes live across slides, reads blocks of neighbouring tiles
   as one region each from the best pyramid level (:mod:`feature_extraction.reading.loader`) and hands
   over batches of uint8 tiles (pinned on GPU) -- or, decoding on the GPU, the compressed JPEG
   tiles, decoded there in one batch with the crop and resize;
3. the encoder runs batched (:mod:`feature_extraction.encoding.runner`; on GPU: bf16/fp16 autocast,
   channels_last, optional ``torch.compile``) while the next batch loads, and features stream
   into :class:`~mil_crcrs.data.store.FeatureWriter`, which makes ``DIR/<slide>.h5`` appear
   atomically (:mod:`feature_extraction.running.stream`).

A rerun skips slides whose file exists. Every file records the settings hash
(:mod:`feature_extraction.running.settings`); a folder that holds files made with other settings is
refused, never mixed. A slide that fails (unreadable, no
resolution, no tissue, a read error) is recorded in ``DIR/extract_errors.csv`` and the run goes on.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

from feature_extraction.encoding.encoders import create_encoder
from feature_extraction.encoding.runner import EncoderRunner, resolve_precision
from feature_extraction.reading.slides import find_slides
from feature_extraction.running import failures
from feature_extraction.running.claims import sweep
from feature_extraction.running.planning import RunContext
from feature_extraction.running.result import ExtractResult
from feature_extraction.running.settings import (
    ExtractSettings,
    check_output_dir,
    settings_hash,
    settings_record,
)
from feature_extraction.running.sharding import (
    Shard,
    current_shard,
    default_num_workers,
    shard_items,
)
from feature_extraction.running.stream import run_slides
from mil_crcrs.device import resolve_device
from mil_crcrs.errors import InputError

__all__ = ["extract"]


def extract(
    slides: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    settings: ExtractSettings | None = None,
    shard: Shard | None = None,
    runner: EncoderRunner | None = None,
) -> ExtractResult:
    """Extract features of ``slides`` (files or folders) into ``out_dir/<slide stem>.h5``.

    One loader (with its worker processes) serves every slide of this process, while a
    background thread plans the next slides (claim, segmentation, QC, grid, reader choice).

    Parameters
    ----------
    slides : slide files, or folders of them
    out_dir : the output folder (created)
    settings : what to extract and how; defaults to :class:`ExtractSettings()`
    shard : this process's share; None reads torchrun/SLURM variables
    runner : an encoder already built (and compiled) for ``settings.encoder``, to reuse across
        calls; its device and precision are used. None builds one from the settings.

    Returns
    -------
    ExtractResult; ``result.failed`` is non-empty when any slide of this process failed.

    Raises
    ------
    InputError
        for bad settings, an unknown encoder or unavailable weights, no slides, or an output
        folder holding features made with other settings.
    """

    start = time.perf_counter()
    settings = settings or ExtractSettings()
    shard = shard or current_shard()
    out_dir = Path(out_dir)
    paths = find_slides(slides)
    if runner is None:
        device = resolve_device(settings.device, shard.local_rank)
        precision = resolve_precision(settings.precision, device)
        encoder = create_encoder(settings.encoder, settings.weights)
    elif runner.encoder.spec.name != settings.encoder:
        raise InputError(
            f"the encoder given ({runner.encoder.spec.name}) is not the one the settings name "
            f"({settings.encoder})"
        )
    elif runner.compiled and runner.batch_size < settings.batch_size:
        raise InputError(f"the compiled encoder given takes batches of {runner.batch_size} tiles")
    else:
        device, precision, encoder = runner.device, runner.precision, runner.encoder
    record = settings_record(settings, encoder, precision)
    digest = settings_hash(record)
    out_dir.mkdir(parents=True, exist_ok=True)
    check_output_dir(out_dir, record, digest)
    sweep(out_dir, (failures.RECORDS_DIR,))

    mine = shard_items(paths, shard)
    num_workers = (
        default_num_workers(shard) if settings.num_workers is None else settings.num_workers
    )
    if runner is None:
        runner = EncoderRunner(encoder, device, precision, settings.compile, settings.batch_size)
    result = ExtractResult(out_dir=out_dir, settings_hash=digest, shard=shard)
    slides_start = time.perf_counter()
    run_slides(
        mine, RunContext(out_dir, settings, record, digest, device), runner, num_workers, result
    )
    sweep(out_dir, (failures.RECORDS_DIR,))
    result.errors_report = failures.write_report(out_dir)
    result.slides_seconds = time.perf_counter() - slides_start
    result.seconds = time.perf_counter() - start
    return result
