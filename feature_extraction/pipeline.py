"""Slides to per-slide HDF5 feature bags: :func:`extract`, the library side of ``crcrs extract``.

For the slides of this process's shard (:mod:`feature_extraction.sharding`), as one pipeline:

1. a planning thread works a few slides ahead of the encoder (:mod:`feature_extraction.schedule`):
   it claims each slide (:mod:`feature_extraction.claims`), opens it
   (:class:`~feature_extraction.slides.Slide`), segments tissue at low resolution, saves a QC
   picture (``DIR/qc/<slide>.png``), lays the tile grid at ``target_mpp``
   (:mod:`feature_extraction.grid`) and chooses the reader (``--reader``): OpenSlide, or the
   direct reader of tiled JPEG pyramids (:mod:`feature_extraction.direct`) after checking its
   pixels on the first tiles against OpenSlide's;
2. one DataLoader, whose worker processes live across slides, reads blocks of neighbouring tiles
   as one region each from the best pyramid level (:mod:`feature_extraction.reading`) and hands
   over batches of uint8 tiles (pinned on GPU) -- or, decoding on the GPU, the compressed JPEG
   tiles, decoded there in one batch with the crop and resize;
3. the encoder runs batched (on GPU: bf16/fp16 autocast, channels_last, optional
   ``torch.compile``) while the next batch loads, and features stream into
   :class:`~mil_crcrs.data.store.FeatureWriter`, which makes ``DIR/<slide>.h5`` appear atomically.

A rerun skips slides whose file exists. Every file records the settings hash; a folder that holds
files made with other settings is refused, never mixed. A slide that fails (unreadable, no
resolution, no tissue, a read error) is recorded in ``DIR/extract_errors.csv`` and the run goes on.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
import queue
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from feature_extraction import failures
from feature_extraction.claims import Claim, folder_lock, sweep, try_claim
from feature_extraction.direct import DEFAULT_READER, READERS
from feature_extraction.direct_batch import decode_blocks
from feature_extraction.encoders import Encoder, create_encoder
from feature_extraction.given_coords import given_grid, on_one_lattice
from feature_extraction.grid import TileGrid, make_grid
from feature_extraction.reading import (  # noqa: F401  (TileBlocks: for heatmaps and tests)
    IDLE,
    ReadSpec,
    SlideReader,
    TileBlocks,
    Work,
    choose_reader,
    plan_batches,
)
from feature_extraction.schedule import DONE, Lookahead
from feature_extraction.sharding import Shard, current_shard, shard_items
from feature_extraction.slides import (
    NO_TISSUE,
    READ_ERROR,
    Slide,
    SlideError,
    find_slides,
)
from feature_extraction.tissue import TissueMask, TissueParams, save_qc, tissue_mask
from mil_crcrs.atomic import write_json
from mil_crcrs.data.store import FeatureMeta, FeatureWriter, read_settings_record
from mil_crcrs.device import resolve_device
from mil_crcrs.errors import InputError, first_line
from mil_crcrs.runlog import Eta, bars_wanted, progress_log

#: Notes (a slide read with OpenSlide and why, a slide that failed); progress lines go to
#: :data:`mil_crcrs.runlog.PROGRESS_LOGGER`. The CLI shows both and keeps them in ``run.log``.
log = logging.getLogger("mil_crcrs.extract")

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SETTINGS_NAME = "extract_settings.json"
QC_DIR = "qc"


@dataclass(frozen=True)
class ExtractSettings:
    """Everything ``crcrs extract`` is told.

    The fields above ``batch_size`` decide the features: they (with the encoder's spec and
    weights checksum, and the precision actually used) are hashed, and saved in every file --
    except ``slide_mpp``, a fact about the slides that each file records as its ``slide_mpp``
    (so slides lacking a resolution can be run again with it into the same folder). The fields
    from ``batch_size`` on only decide how fast the run goes.

    Parameters
    ----------
    encoder : encoder registry name or timm model name (:mod:`feature_extraction.encoders`)
    weights : local weights file, ``"random"``, or None for the encoder's pretrained weights
    target_mpp : microns per pixel of the tiles the encoder sees
    tile_size_px : tile edge in pixels at ``target_mpp``
    min_tissue_fraction : keep a tile when at least this share of it is tissue
    slide_mpp : level-0 microns per pixel of every slide, overriding the files; None = read it
    tissue : tissue segmentation parameters
    precision : "fp32", "bf16", "fp16", or "auto" (bf16 on a GPU that has it, else fp16; fp32
        on CPU)
    feature_dtype : "float16" or "float32" in the files
    batch_size : tiles per encoder batch
    num_workers : DataLoader worker processes; None = the CPUs of this process's share, minus one
    device : "auto", "cpu", "cuda" or "cuda:N" (under torchrun, "cuda" means cuda:LOCAL_RANK)
    compile : run the encoder through ``torch.compile``
    block_tiles : tiles per side of the blocks read as one region (1 = one read per tile)
    qc : save the QC picture of each slide
    progress : bars on a terminal (True or None); False: none. One plain line per slide (with
        the time left) always goes to the ``mil_crcrs.progress`` logger, never a bar to a file
    reader : "auto" (the direct JPEG reader where the file qualifies and its first tiles match
        OpenSlide's, else OpenSlide), "openslide", or "direct" (no check; a slide it cannot read
        fails). It does not change the features beyond JPEG rounding, so it is not hashed.
    plan_ahead : slides planned (segmented, gridded) ahead of the one being encoded
    coords_dir : a folder of coordinates files (CLAM ``patches/``, TRIDENT, any h5 with
        ``coords``) whose tiles are read in place of the tissue grid
        (:mod:`feature_extraction.given_coords`); hashed as "coords given", not by path
    """

    encoder: str = "efficientnet_lite0"
    weights: str | None = None
    target_mpp: float = 0.5
    tile_size_px: int = 224
    min_tissue_fraction: float = 0.5
    slide_mpp: float | None = None
    tissue: TissueParams = field(default_factory=TissueParams)
    precision: str = "auto"
    feature_dtype: str = "float16"
    batch_size: int = 256
    num_workers: int | None = None
    device: str = "auto"
    compile: bool = False
    block_tiles: int = 4
    qc: bool = True
    progress: bool | None = None
    reader: str = DEFAULT_READER
    plan_ahead: int = 2
    coords_dir: str | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise InputError(
                f"precision must be one of {', '.join(PRECISIONS)}, got '{self.precision}'"
            )
        if self.feature_dtype not in ("float16", "float32"):
            raise InputError(
                f"feature dtype must be float16 or float32, got '{self.feature_dtype}'"
            )
        if not self.target_mpp > 0:
            raise InputError(f"--mpp must be positive, got {self.target_mpp}")
        if self.slide_mpp is not None and not self.slide_mpp > 0:
            raise InputError(f"--slide-mpp must be positive, got {self.slide_mpp}")
        for name in ("tile_size_px", "batch_size", "block_tiles"):
            if getattr(self, name) < 1:
                raise InputError(
                    f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}"
                )
        if self.num_workers is not None and self.num_workers < 0:
            raise InputError(f"--num-workers must be >= 0, got {self.num_workers}")
        if not 0.0 <= self.min_tissue_fraction <= 1.0:
            raise InputError(
                f"min tissue fraction must be in [0, 1], got {self.min_tissue_fraction}"
            )
        if self.reader not in READERS:
            raise InputError(f"reader must be one of {', '.join(READERS)}, got '{self.reader}'")
        if self.plan_ahead < 1:
            raise InputError(f"plan-ahead must be at least 1, got {self.plan_ahead}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise InputError(f"device must be auto, cpu, cuda or cuda:N, got '{self.device}'")


RUN_ONLY_FIELDS = (
    "batch_size",
    "num_workers",
    "device",
    "compile",
    "block_tiles",
    "qc",
    "progress",
    "reader",
    "plan_ahead",
    "coords_dir",
)


@dataclass
class ExtractResult:
    """What one process did.

    Attributes
    ----------
    out_dir : the output folder
    settings_hash : hash of the settings the features depend on
    done : slide ids extracted now
    skipped : slide ids whose file already existed
    busy : slide ids that another live process was extracting (its claim was kept)
    taken_over : slide ids whose claim a stopped process had left, taken over and extracted
        again from the start here (work the stopped process had begun is done twice)
    failed : slide id -> one-line reason, for slides that failed now
    n_tiles : tiles encoded now
    seconds : wall time
    slides_seconds : wall time spent on slides (without building the encoder and checking the
        folder)
    shard : this process's rank and world size
    errors_report : path of ``extract_errors.csv``
    readers : slide id -> how its tiles were read ("openslide", "direct-cpu", "direct-device")
    fallbacks : slide id -> why ``--reader auto`` read it with OpenSlide
    """

    out_dir: Path
    settings_hash: str
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)
    taken_over: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    n_tiles: int = 0
    seconds: float = 0.0
    slides_seconds: float = 0.0
    shard: Shard = field(default_factory=Shard)
    errors_report: Path | None = None
    readers: dict[str, str] = field(default_factory=dict)
    fallbacks: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Settings and the output folder


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 on a GPU that supports it, else fp16 on GPU; fp32 on CPU."""
    if precision != "auto":
        return precision
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def settings_record(settings: ExtractSettings, encoder: Encoder, precision: str) -> dict[str, Any]:
    """The settings the features depend on, as saved in every file and hashed."""
    record = {
        f.name: getattr(settings, f.name)
        for f in fields(settings)
        if f.name not in RUN_ONLY_FIELDS and f.name not in ("weights", "tissue", "slide_mpp")
    }
    record["tissue"] = asdict(settings.tissue)
    if settings.coords_dir is not None:  # only then, so other runs keep their hashes
        record["coords"] = "given"
    record["precision"] = precision
    spec = asdict(encoder.spec)
    spec["mean"], spec["std"] = list(spec["mean"]), list(spec["std"])
    record["encoder_spec"] = spec
    return record


def settings_hash(record: dict[str, Any]) -> str:
    """First 16 hex digits of the SHA-256 of the record as sorted JSON."""
    text = json.dumps(record, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _differences(mine: dict[str, Any], theirs: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(mine) | set(theirs)):
        a, b = mine.get(key), theirs.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(_differences(a, b, f"{prefix}{key}."))
        elif a != b:
            out.append(f"{prefix}{key} {b!r} there vs {a!r} now")
    return out


def check_output_dir(out_dir: Path, record: dict[str, Any], digest: str) -> None:
    """Refuse a folder whose feature files were made with other settings; else claim it.

    Raises
    ------
    InputError
        naming a file with another settings hash and the settings that differ.
    """

    def refuse(source: Path, theirs_hash: str | None, theirs: dict | None) -> None:
        diff = "; ".join(_differences(record, theirs)[:3]) if theirs else "no settings recorded"
        raise InputError(
            f"{source}: made with other extraction settings (hash {theirs_hash}, now {digest}: "
            f"{diff}); use another --out folder, or the same settings"
        )

    settings_file = out_dir / SETTINGS_NAME
    if settings_file.exists():
        try:
            saved = json.loads(settings_file.read_text())
        except (OSError, ValueError):
            raise InputError(f"{settings_file}: not readable JSON; remove it") from None
        if saved.get("settings_hash") != digest:
            refuse(settings_file, saved.get("settings_hash"), saved.get("settings"))
    for path in sorted(out_dir.glob("*.h5")):
        theirs_hash, theirs = read_settings_record(path)
        if theirs_hash != digest:
            refuse(path, theirs_hash, theirs)
    with folder_lock(out_dir):  # a killed writer's temporary file is then swept
        if not settings_file.exists():
            write_json(settings_file, {"settings_hash": digest, "settings": record})


def default_num_workers(shard: Shard | None = None) -> int:
    """The CPUs this process may use (its share of the node), minus one for the main process."""
    shard = shard or Shard()
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return max(0, min(16, cpus // max(1, shard.local_world_size) - 1))


# --------------------------------------------------------------------------------------------
# Encoding


class EncoderRunner:
    """Runs the encoder on uint8 tile batches with the chosen device, precision and compile."""

    def __init__(
        self,
        encoder: Encoder,
        device: torch.device,
        precision: str,
        compile: bool,
        batch_size: int,
    ) -> None:
        self.encoder = encoder.to(device).eval()
        self.device = device
        # channels_last pays on CPU too: EfficientNet-Lite0 ran 1.5x faster with it on 2 cores.
        self.channels_last = True
        if self.channels_last:
            self.encoder.model.to(memory_format=torch.channels_last)
        self.forward = torch.compile(self.encoder.model) if compile else self.encoder.model
        self.compiled = compile
        self.batch_size = batch_size
        self.precision = precision
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    def __call__(self, tiles: torch.Tensor) -> torch.Tensor:
        """(n, T, T, 3) uint8 (any device) -> (n, dim) features on the device (not synced)."""
        n = tiles.shape[0]
        tiles = tiles.to(self.device, non_blocking=True)
        x = self.encoder.preprocess(tiles, channels_last=self.channels_last)
        if self.compiled and n < self.batch_size:  # one static shape: no recompiles
            pad = x.new_zeros((self.batch_size - n, *x.shape[1:]))
            x = torch.cat([x, pad]).contiguous(
                memory_format=torch.channels_last if self.channels_last else torch.contiguous_format
            )
        autocast = (
            torch.autocast(device_type=self.device.type, dtype=self.dtype)
            if self.dtype is not None
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            features = self.forward(x)
        return features[:n]


# --------------------------------------------------------------------------------------------
# Planning a slide (on the planning thread)


@dataclass
class SlidePlan:
    """One slide of the run: what planning found, then how far encoding got.

    ``status`` is "ready" (tiles to encode), "skipped" (its file exists), "busy" (another live
    process holds its claim) or "failed" (``error`` says why). A ready or failed plan holds the
    slide's claim until the main thread finishes with it.
    """

    path: Path
    status: str
    claim: Claim | None = None
    error: SlideError | None = None
    meta: FeatureMeta | None = None
    items: list[list[np.ndarray]] = field(default_factory=list)
    n_tiles: int = 0
    read: ReadSpec | None = None
    note: str | None = None
    writer: FeatureWriter | None = None
    written: int = 0
    started: float = 0.0
    dead: bool = False
    bar: Any = None

    @property
    def slide_id(self) -> str:
        return self.path.stem


def _remove_leftovers(out_dir: Path, slide_id: str) -> None:
    """Temporary files a killed run left for this slide.

    Only the process holding the slide's claim (:mod:`feature_extraction.claims`) gets here, and
    every process writing a slide's files holds its claim, so these files are nobody's.
    """
    name = glob.escape(slide_id)
    for pattern in (f".{name}.h5.*.h5.tmp", f"{QC_DIR}/.{name}.png.*.png"):
        for path in out_dir.glob(pattern):
            path.unlink(missing_ok=True)


@dataclass(frozen=True)
class RunContext:
    """What planning a slide needs to know about the run."""

    out_dir: Path
    settings: ExtractSettings
    record: dict[str, Any]
    digest: str
    device: torch.device
    #: every claim this run holds (planned slides included), kept fresh by the main thread
    held: dict[int, Claim] = field(default_factory=dict)

    def hold(self, claim: Claim) -> Claim:
        self.held[id(claim)] = claim
        return claim

    def release(self, claim: Claim | None) -> None:
        if claim is not None:
            self.held.pop(id(claim), None)
            claim.release()

    def heartbeat(self) -> None:
        for claim in list(self.held.values()):
            claim.heartbeat()


def plan_slide(path: Path, run: RunContext) -> SlidePlan:
    """Claim one slide, segment it, lay its grid, save its QC picture and choose its reader.

    A slide whose file exists is "skipped", one another live process holds is "busy"; a slide
    that cannot be used (unreadable, no resolution, no tissue) is "failed", still claimed.
    """
    slide_id = path.stem
    target = run.out_dir / f"{slide_id}.h5"
    if target.exists():
        return SlidePlan(path, "skipped")
    claim = try_claim(run.out_dir, slide_id)
    if claim is None:
        return SlidePlan(path, "busy")
    if target.exists():  # finished by another process between the check and the claim
        claim.release()
        return SlidePlan(path, "skipped")
    run.hold(claim)
    try:
        _remove_leftovers(run.out_dir, slide_id)
        return _plan_claimed(path, run, claim)
    except SlideError as exc:
        return SlidePlan(path, "failed", claim=claim, error=exc)
    except BaseException:
        run.release(claim)
        raise


def _plan_claimed(path: Path, run: RunContext, claim: Claim) -> SlidePlan:
    settings, out_dir, digest, record = run.settings, run.out_dir, run.digest, run.record
    slide_id = path.stem
    with Slide(path, mpp=settings.slide_mpp) as slide:
        tissue = tissue_mask(slide, settings.tissue)
        grid, target_mpp, block_tiles = _slide_grid(slide, tissue, settings)
        if settings.qc:
            save_qc(
                out_dir / QC_DIR / f"{slide_id}.png",
                tissue,
                grid.coords_level0,
                grid.tile_size_level0,
            )
        if len(grid) == 0:
            raise SlideError(
                f"{path}: no tissue tiles (no {settings.tile_size_px}-px tile at "
                f"{settings.target_mpp} um/px is {settings.min_tissue_fraction:.0%} tissue)",
                reason=NO_TISSUE,
            )
        meta = FeatureMeta(
            slide_id=slide_id,
            encoder=settings.encoder,
            tile_size_px=settings.tile_size_px,
            tile_size_level0=grid.tile_size_level0,
            target_mpp=target_mpp,
            slide_mpp=slide.mpp,
            level0_width=slide.dimensions[0],
            level0_height=slide.dimensions[1],
            settings_hash=digest,
            settings=record,
        )
        items = plan_batches(grid, settings.batch_size, block_tiles)
        first = np.concatenate(items[0])  # the tiles read first, for the reader check
        read, note = choose_reader(
            settings.reader, slide, first, grid.tile_size_level0, grid.tile_size_px, run.device
        )
    return SlidePlan(
        path, "ready", claim=claim, meta=meta, items=items, n_tiles=len(grid), read=read, note=note
    )


def _slide_grid(
    slide: Slide, tissue: TissueMask, settings: ExtractSettings
) -> tuple[TileGrid, float, int]:
    """The slide's tiles, their resolution (um/px) and the block size to read them in.

    The grid laid over the tissue, or the tiles a coordinates file lists (``coords_dir``).
    """
    if settings.coords_dir is None:
        grid = make_grid(
            tissue,
            slide.dimensions,
            slide.mpp,
            settings.target_mpp,
            settings.tile_size_px,
            settings.min_tissue_fraction,
        )
        return grid, settings.target_mpp, settings.block_tiles
    grid = given_grid(settings.coords_dir, slide, settings.tile_size_px, settings.target_mpp)
    block_tiles = (
        settings.block_tiles if on_one_lattice(grid.coords_level0, grid.tile_size_level0) else 1
    )
    return grid, grid.tile_size_level0 * slide.mpp / grid.tile_size_px, block_tiles


# --------------------------------------------------------------------------------------------
# The run: one loader across slides, features streamed to each slide's file


class _Stream:
    """The main thread's side of a run: admits plans, hands out work, writes features."""

    def __init__(
        self,
        out_dir: Path,
        runner: EncoderRunner,
        settings: ExtractSettings,
        result: ExtractResult,
        bar,
        lookahead: Lookahead,
        run: RunContext,
    ) -> None:
        self.out_dir, self.runner, self.settings, self.run = out_dir, runner, settings, run
        self.result, self.bar, self.lookahead = result, bar, lookahead
        self.active: dict[int, SlidePlan] = {}
        self.pending: tuple[SlidePlan, torch.Tensor, torch.Tensor] | None = None
        self.eta = Eta(bar.total)

    # ---- the sampler side (called by the loader, on the main thread) ----------------------

    def work(self) -> Iterator[Work]:
        """Loader items of every slide in order; :data:`IDLE` while the next plan is not ready."""
        self.lookahead.start()  # after the loader forked its workers: no thread is forked
        seq = 0
        while True:
            try:
                plan = self.lookahead.get(timeout=None if seq == 0 else 0.05)
            except queue.Empty:
                yield IDLE
                continue
            if plan is DONE:
                return
            if self._admit(plan, seq):
                size0, size = plan.meta.tile_size_level0, plan.meta.tile_size_px
                for index, blocks in enumerate(plan.items):
                    if plan.dead:
                        break
                    yield Work(
                        seq,
                        index,
                        plan.path,
                        plan.meta.slide_mpp,
                        plan.read,
                        tuple(blocks),
                        size0,
                        size,
                    )
            seq += 1

    def _admit(self, plan: SlidePlan, seq: int) -> bool:
        """Record a plan that needs no encoding; register a ready one. True when ready."""
        if plan.status == "skipped":
            self.result.skipped.append(plan.slide_id)
            self._handled(plan, "already done")
        elif plan.status == "busy":
            self.result.busy.append(plan.slide_id)
            self._handled(plan, "left to another running process")
        elif plan.status == "failed":
            self.fail(plan, plan.error)
        else:
            self.active[seq] = plan
            if plan.claim is not None and plan.claim.took_over:
                self.result.taken_over.append(plan.slide_id)
            self.result.readers[plan.slide_id] = plan.read.kind
            if plan.note is not None:
                self.result.fallbacks[plan.slide_id] = plan.note
                self._say(f"{plan.slide_id}: read with OpenSlide, not directly: {plan.note}")
            return True
        return False

    # ---- the consumer side ----------------------------------------------------------------

    def take(self, out: dict[str, Any]) -> None:
        """Encode one loader item and write the batch before it."""
        self.run.heartbeat()  # planned slides' claims too: they may wait a long slide out
        plan = self.active.get(out["seq"])
        if plan is None or plan.dead:  # idle, or a slide that failed meanwhile
            self.flush()
            return
        if not plan.started:  # the slide's time runs from its first item, decode included
            plan.started = time.perf_counter()
        if "error" in out:
            reason, message = out["error"]
            self.fail(plan, SlideError(message, reason))
            return
        tiles = out.get("tiles")
        if tiles is None:
            try:
                tiles = decode_blocks(out["packed"], plan.meta.tile_size_px, self.runner.device)
            except RuntimeError as exc:  # nvjpeg / libjpeg on corrupt data
                message = f"{plan.path}: cannot decode its JPEG tiles ({first_line(exc)})"
                self.fail(plan, SlideError(message, READ_ERROR))
                return
        features = self.runner(tiles)
        self.flush()
        self.pending = (plan, features, out["coords"])

    def flush(self) -> None:
        """Write the pending batch; finish its slide when that was its last."""
        if self.pending is None:
            return
        plan, features, coords = self.pending
        self.pending = None
        if plan.dead:
            return
        if plan.writer is None:
            dim, dtype = self.runner.encoder.spec.dim, self.settings.feature_dtype
            plan.writer = FeatureWriter(self.out_dir / f"{plan.slide_id}.h5", plan.meta, dim, dtype)
            plan.bar = self._tile_bar(plan)
        plan.writer.append(features.float().cpu().numpy(), coords.numpy())
        plan.written += len(coords)
        plan.bar.update(len(coords))
        if plan.written == plan.n_tiles:
            self._finish(plan)

    def _finish(self, plan: SlidePlan) -> None:
        plan.writer.close()
        plan.bar.close()
        plan.dead = True
        self.result.done.append(plan.slide_id)
        self.result.n_tiles += plan.written
        failures.clear_failure(self.out_dir, plan.slide_id)
        self._drop(plan)
        seconds = time.perf_counter() - plan.started
        self._handled(plan, f"{plan.written} tiles in {seconds:.1f} s ({plan.read.kind})")

    def fail(self, plan: SlidePlan, exc: SlideError) -> None:
        """Record a failed slide, drop what it wrote, and go on."""
        plan.dead = True
        if plan.writer is not None:
            plan.writer.abort()
            plan.bar.close()
        self.result.failed[plan.slide_id] = str(exc)
        failures.record_failure(
            self.out_dir, plan.slide_id, plan.path, exc.reason, str(exc), self.result.shard.rank
        )
        self._say(f"failed: {exc}")
        self._drop(plan)
        self._handled(plan, "failed")

    def _handled(self, plan: SlidePlan, what: str) -> None:
        """One slide dealt with: the bar (terminal only) and one plain progress line (logged)."""
        self.bar.update(1)
        progress_log.info("slide %s: %s %s", self.eta.step(), plan.slide_id, what)

    def _drop(self, plan: SlidePlan) -> None:
        self.run.release(plan.claim)
        for seq in [s for s, p in self.active.items() if p is plan]:
            del self.active[seq]

    def abandon(self) -> None:
        """After an error or interrupt: drop unfinished files, release every claim."""
        self.lookahead.stop()
        for plan in list(self.active.values()):
            plan.dead = True
            if plan.writer is not None:
                plan.writer.abort()
            self._drop(plan)

    def _tile_bar(self, plan: SlidePlan):
        from tqdm.auto import tqdm

        return tqdm(
            total=plan.n_tiles,
            desc=plan.slide_id,
            unit="tile",
            leave=False,
            position=1,
            disable=self.bar.disable,
        )

    def _say(self, text: str) -> None:
        with self.bar.external_write_mode():  # a line above a bar on a terminal
            log.info(text)


def _run(
    mine: list[Path],
    run: RunContext,
    runner: EncoderRunner,
    num_workers: int,
    result: ExtractResult,
) -> None:
    """This process's slides through the planning thread, one loader and the encoder."""
    from tqdm.auto import tqdm

    settings, shard = run.settings, result.shard
    lookahead = Lookahead(
        mine,
        partial(plan_slide, run=run),
        depth=settings.plan_ahead,
        discard=lambda plan: run.release(plan.claim),
    )
    # bars on a terminal only; one plain line per slide goes to the log (mil_crcrs.runlog)
    bars = bars_wanted(settings.progress is not False)
    desc = f"slides (rank {shard.rank})" if shard.world_size > 1 else "slides"
    with tqdm(total=len(mine), desc=desc, unit="slide", disable=not bars) as bar:
        stream = _Stream(run.out_dir, runner, settings, result, bar, lookahead, run)
        reader = SlideReader()
        loader = torch.utils.data.DataLoader(
            reader,
            batch_size=None,
            sampler=stream.work(),
            num_workers=num_workers,
            pin_memory=runner.device.type == "cuda",
            prefetch_factor=4 if num_workers > 0 else None,
        )
        try:
            for out in loader:
                stream.take(out)
            stream.flush()
        except BaseException:
            stream.abandon()
            raise
        finally:
            lookahead.stop()
            reader.close()


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
    _run(mine, RunContext(out_dir, settings, record, digest, device), runner, num_workers, result)
    sweep(out_dir, (failures.RECORDS_DIR,))
    result.errors_report = failures.write_report(out_dir)
    result.slides_seconds = time.perf_counter() - slides_start
    result.seconds = time.perf_counter() - start
    return result
