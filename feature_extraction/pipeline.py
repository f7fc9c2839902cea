"""Slides to per-slide HDF5 feature bags: :func:`extract`, the library side of ``crcrs extract``.

For each slide of this process's shard (:mod:`feature_extraction.sharding`):

1. open it (:class:`~feature_extraction.slides.Slide`), segment tissue at low resolution and save
   a QC picture (``DIR/qc/<slide>.png``);
2. lay the tile grid at ``target_mpp`` and keep tissue tiles (:mod:`feature_extraction.grid`);
3. DataLoader workers read blocks of neighbouring tiles as one region each from the best pyramid
   level, resize and cut them, and hand over batches of uint8 tiles (pinned when on GPU);
4. the encoder runs batched (on GPU: bf16/fp16 autocast, channels_last, optional
   ``torch.compile``) while the next batch loads, and features stream into
   :class:`~mil_crcrs.store.FeatureWriter`, which makes ``DIR/<slide>.h5`` appear atomically.

A rerun skips slides whose file exists. Every file records the settings hash; a folder that holds
files made with other settings is refused, never mixed. A slide that fails (unreadable, no
resolution, no tissue, a read error) is recorded in ``DIR/extract_errors.csv`` and the run goes on.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from feature_extraction import failures
from feature_extraction.claims import try_claim
from feature_extraction.encoders import Encoder, create_encoder
from feature_extraction.grid import TileGrid, make_grid
from feature_extraction.sharding import Shard, current_shard, shard_items
from feature_extraction.slides import NO_TISSUE, Slide, SlideError, find_slides
from feature_extraction.tissue import TissueParams, save_qc, tissue_mask
from mil_crcrs._io import write_json
from mil_crcrs.errors import InputError
from mil_crcrs.store import FeatureMeta, FeatureWriter

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
    progress : show progress bars; None = only on a terminal
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
    failed : slide id -> one-line reason, for slides that failed now
    n_tiles : tiles encoded now
    seconds : wall time
    slides_seconds : wall time spent on slides (without building the encoder and checking the
        folder)
    shard : this process's rank and world size
    errors_report : path of ``extract_errors.csv``
    """

    out_dir: Path
    settings_hash: str
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    n_tiles: int = 0
    seconds: float = 0.0
    slides_seconds: float = 0.0
    shard: Shard = field(default_factory=Shard)
    errors_report: Path | None = None


# --------------------------------------------------------------------------------------------
# Settings and the output folder


def resolve_device(device: str, shard: Shard | None = None) -> torch.device:
    """``auto`` -> cuda when available; ``cuda`` -> ``cuda:LOCAL_RANK`` under torchrun/SLURM."""
    shard = shard or Shard()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device}: no CUDA device is available")
    if device == "cuda":
        device = f"cuda:{shard.local_rank % max(1, torch.cuda.device_count())}"
    return torch.device(device)


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
    import h5py

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
        try:
            with h5py.File(path, "r") as f:
                theirs_hash = f.attrs.get("settings_hash")
                theirs_text = f.attrs.get("settings")
        except OSError:
            raise InputError(f"{path}: not a readable HDF5 file in the output folder") from None
        if isinstance(theirs_hash, bytes):
            theirs_hash = theirs_hash.decode()
        if theirs_hash != digest:
            try:
                theirs = json.loads(theirs_text) if theirs_text is not None else None
            except ValueError:
                theirs = None
            refuse(path, theirs_hash, theirs)
    if not settings_file.exists():
        write_json(settings_file, {"settings_hash": digest, "settings": record})


# --------------------------------------------------------------------------------------------
# Reading tiles


def plan_batches(grid: TileGrid, batch_size: int, block_tiles: int) -> list[list[np.ndarray]]:
    """Group the grid's tiles into loader items.

    Tiles are grouped into ``block_tiles`` x ``block_tiles`` blocks of the grid (each read as one
    region); blocks are packed, in row-major block order, into items of at most ``batch_size``
    tiles.

    Returns
    -------
    list of items; an item is a list of blocks; a block is an (m, 2) int64 array of level-0
    top-left corners
    """
    coords = grid.coords_level0
    if len(coords) == 0:
        return []
    k = max(1, min(block_tiles, math.isqrt(batch_size)))
    cell = coords // grid.tile_size_level0
    key = (cell[:, 1] // k) * (int(cell[:, 0].max()) // k + 1) + cell[:, 0] // k
    order = np.lexsort((cell[:, 0], cell[:, 1], key))
    coords, key = coords[order], key[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    blocks = np.split(coords, starts[1:])
    items: list[list[np.ndarray]] = []
    current: list[np.ndarray] = []
    n = 0
    for block in blocks:
        if n + len(block) > batch_size and current:
            items.append(current)
            current, n = [], 0
        current.append(block)
        n += len(block)
    if current:
        items.append(current)
    return items


class TileBlocks(torch.utils.data.Dataset):
    """Loader items of one slide: each is a batch of tiles read as a few large regions.

    ``dataset[i]`` is ``{"tiles": (n, T, T, 3) uint8, "coords": (n, 2) int64}``, or
    ``{"error": (reason, message)}`` when the slide cannot be read (so the main process can
    record it).
    """

    def __init__(
        self,
        path: Path,
        slide_mpp: float | None,
        items: list[list[np.ndarray]],
        tile_size_level0: int,
        tile_size_px: int,
    ) -> None:
        self.path = path
        self.slide_mpp = slide_mpp
        self.items = items
        self.size0 = tile_size_level0
        self.size = tile_size_px
        self._slide: Slide | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return len(self.items)

    def _open(self) -> Slide:
        # One handle per process: OpenSlide handles are not shared across fork.
        if self._slide is None or self._pid != os.getpid():
            self._slide = Slide(self.path, mpp=self.slide_mpp)
            self._pid = os.getpid()
        return self._slide

    def close(self) -> None:
        """Close this process's slide handle."""
        if self._slide is not None and self._pid == os.getpid():
            self._slide.close()
        self._slide = None

    def read_block(self, slide: Slide, block: np.ndarray) -> np.ndarray:
        """(m, 2) level-0 corners -> (m, T, T, 3) uint8 tiles, read as one region."""
        from PIL import Image

        size0, size = self.size0, self.size
        x0, y0 = block.min(axis=0)
        x1, y1 = block.max(axis=0) + size0
        downsample = size0 / size
        level = slide.best_level(downsample)
        ds = slide.level_downsamples[level]
        read_w, read_h = max(1, round((x1 - x0) / ds)), max(1, round((y1 - y0) / ds))
        region = slide.read_region((int(x0), int(y0)), level, (read_w, read_h))
        out_w, out_h = (x1 - x0) // size0 * size, (y1 - y0) // size0 * size
        if (read_w, read_h) != (out_w, out_h):
            region = np.asarray(
                Image.fromarray(region).resize((int(out_w), int(out_h)), Image.Resampling.BILINEAR)
            )
        cols = (block[:, 0] - x0) // size0 * size
        rows = (block[:, 1] - y0) // size0 * size
        return np.stack(
            [region[r : r + size, c : c + size] for r, c in zip(rows, cols, strict=True)]
        )

    def __getitem__(self, index: int) -> dict[str, Any]:
        blocks = self.items[index]
        try:
            slide = self._open()
            tiles = np.concatenate([self.read_block(slide, b) for b in blocks])
        except SlideError as exc:
            return {"error": (exc.reason, str(exc))}
        return {
            "tiles": torch.from_numpy(tiles),
            "coords": torch.from_numpy(np.concatenate(blocks).astype(np.int64)),
        }


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


def _loader(dataset: TileBlocks, num_workers: int, pin: bool) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin,
        prefetch_factor=4 if num_workers > 0 else None,
    )


def _encode(
    runner: EncoderRunner,
    loader: Iterator[dict[str, Any]],
    writer: FeatureWriter,
    bar,
    heartbeat: Callable[[], None] | None = None,
) -> int:
    """Encode every item and stream it to ``writer``, one batch ahead of the copy back.

    ``heartbeat`` is called once per batch (it keeps this process's claim on the slide fresh).
    """
    pending: tuple[torch.Tensor, torch.Tensor] | None = None
    n = 0

    def flush(item: tuple[torch.Tensor, torch.Tensor]) -> int:
        features, coords = item
        writer.append(features.float().cpu().numpy(), coords.numpy())
        bar.update(len(coords))
        return len(coords)

    for item in loader:
        if "error" in item:
            reason, message = item["error"]
            raise SlideError(message, reason)
        features = runner(item["tiles"])
        if heartbeat is not None:
            heartbeat()
        if pending is not None:
            n += flush(pending)
        pending = (features, item["coords"])
    if pending is not None:
        n += flush(pending)
    return n


# --------------------------------------------------------------------------------------------
# One slide, and many


def _remove_leftovers(out_dir: Path, slide_id: str) -> None:
    """Temporary files a killed run left for this slide.

    Only the process holding the slide's claim (:mod:`feature_extraction.claims`) gets here, and
    every process writing a slide's files holds its claim, so these files are nobody's.
    """
    name = glob.escape(slide_id)
    for pattern in (f".{name}.h5.*.h5.tmp", f"{QC_DIR}/.{name}.png.*.png"):
        for path in out_dir.glob(pattern):
            path.unlink(missing_ok=True)


def extract_slide(
    path: Path,
    out_dir: Path,
    runner: EncoderRunner,
    settings: ExtractSettings,
    record: dict[str, Any],
    digest: str,
    num_workers: int,
    tqdm_kwargs: dict[str, Any] | None = None,
    heartbeat: Callable[[], None] | None = None,
) -> int:
    """Extract one slide to ``out_dir/<stem>.h5``; returns the number of tiles.

    The caller must hold the slide's claim; ``heartbeat`` keeps it fresh while encoding.

    Raises
    ------
    SlideError
        when the slide cannot be opened or read, has no resolution, or no tissue tiles.
    """
    from tqdm.auto import tqdm

    slide_id = path.stem
    _remove_leftovers(out_dir, slide_id)
    with Slide(path, mpp=settings.slide_mpp) as slide:
        tissue = tissue_mask(slide, settings.tissue)
        grid = make_grid(
            tissue,
            slide.dimensions,
            slide.mpp,
            settings.target_mpp,
            settings.tile_size_px,
            settings.min_tissue_fraction,
        )
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
            target_mpp=settings.target_mpp,
            slide_mpp=slide.mpp,
            level0_width=slide.dimensions[0],
            level0_height=slide.dimensions[1],
            settings_hash=digest,
            settings=record,
        )
        slide_mpp = slide.mpp
    items = plan_batches(grid, settings.batch_size, settings.block_tiles)
    dataset = TileBlocks(path, slide_mpp, items, grid.tile_size_level0, grid.tile_size_px)
    loader = _loader(dataset, num_workers, pin=runner.device.type == "cuda")
    with (
        tqdm(
            total=len(grid), desc=slide_id, unit="tile", leave=False, **(tqdm_kwargs or {})
        ) as bar,
        FeatureWriter(
            out_dir / f"{slide_id}.h5", meta, runner.encoder.spec.dim, dtype=settings.feature_dtype
        ) as writer,
    ):
        try:
            n = _encode(runner, iter(loader), writer, bar, heartbeat)
        finally:
            dataset.close()
    return n


def _extract_claimed(
    path: Path,
    out_dir: Path,
    runner: EncoderRunner,
    settings: ExtractSettings,
    record: dict[str, Any],
    digest: str,
    num_workers: int,
    result: ExtractResult,
    bar,
    disable: bool | None,
) -> None:
    """Extract one slide unless it is done or claimed by a live process; record the outcome."""
    slide_id = path.stem
    target = out_dir / f"{slide_id}.h5"
    if target.exists():
        result.skipped.append(slide_id)
        return
    claim = try_claim(out_dir, slide_id)
    if claim is None:
        result.busy.append(slide_id)
        return
    try:
        if target.exists():  # finished by another process between the check and the claim
            result.skipped.append(slide_id)
            return
        result.n_tiles += extract_slide(
            path,
            out_dir,
            runner,
            settings,
            record,
            digest,
            num_workers,
            tqdm_kwargs={"disable": disable, "position": 1},
            heartbeat=claim.heartbeat,
        )
    except SlideError as exc:
        result.failed[slide_id] = str(exc)
        failures.record_failure(out_dir, slide_id, path, exc.reason, str(exc), result.shard.rank)
        if not bar.disable:
            bar.write(f"failed: {exc}")
    else:
        result.done.append(slide_id)
        failures.clear_failure(out_dir, slide_id)
    finally:
        claim.release()


def extract(
    slides: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    settings: ExtractSettings | None = None,
    shard: Shard | None = None,
) -> ExtractResult:
    """Extract features of ``slides`` (files or folders) into ``out_dir/<slide stem>.h5``.

    Parameters
    ----------
    slides : slide files, or folders of them
    out_dir : the output folder (created)
    settings : what to extract and how; defaults to :class:`ExtractSettings()`
    shard : this process's share; None reads torchrun/SLURM variables

    Returns
    -------
    ExtractResult; ``result.failed`` is non-empty when any slide of this process failed.

    Raises
    ------
    InputError
        for bad settings, an unknown encoder or unavailable weights, no slides, or an output
        folder holding features made with other settings.
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    settings = settings or ExtractSettings()
    shard = shard or current_shard()
    out_dir = Path(out_dir)
    paths = find_slides(slides)
    device = resolve_device(settings.device, shard)
    precision = resolve_precision(settings.precision, device)
    encoder = create_encoder(settings.encoder, settings.weights)
    record = settings_record(settings, encoder, precision)
    digest = settings_hash(record)
    out_dir.mkdir(parents=True, exist_ok=True)
    check_output_dir(out_dir, record, digest)

    mine = shard_items(paths, shard)
    num_workers = (
        default_num_workers(shard) if settings.num_workers is None else settings.num_workers
    )
    runner = EncoderRunner(encoder, device, precision, settings.compile, settings.batch_size)
    result = ExtractResult(out_dir=out_dir, settings_hash=digest, shard=shard)
    disable = None if settings.progress is None else not settings.progress
    slides_start = time.perf_counter()
    with tqdm(
        total=len(mine),
        desc=f"slides (rank {shard.rank})" if shard.world_size > 1 else "slides",
        unit="slide",
        disable=disable,
    ) as bar:
        for path in mine:
            _extract_claimed(
                path, out_dir, runner, settings, record, digest, num_workers, result, bar, disable
            )
            bar.update(1)
    result.errors_report = failures.write_report(out_dir)
    result.slides_seconds = time.perf_counter() - slides_start
    result.seconds = time.perf_counter() - start
    return result
