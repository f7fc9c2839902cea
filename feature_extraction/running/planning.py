"""Planning a slide, on the planning thread: claim, segment, grid, QC picture, reader choice.

:func:`plan_slide` claims a slide (:mod:`feature_extraction.running.claims`), opens it, segments its
tissue at low resolution (:mod:`feature_extraction.tiling.tissue`), saves the QC picture
(``DIR/qc/<slide>.png``), lays the tile grid at ``target_mpp`` (:mod:`feature_extraction.tiling.grid`,
or the tiles a coordinates file lists, :mod:`feature_extraction.tiling.given_coords`) and chooses the
reader (:mod:`feature_extraction.reading.reader_choice`). The result, a :class:`SlidePlan`, then carries
the slide through encoding on the main thread (:mod:`feature_extraction.running.stream`).
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from feature_extraction.reading.loader import ReadSpec
from feature_extraction.reading.reader_choice import choose_reader
from feature_extraction.reading.slides import NO_TISSUE, Slide, SlideError
from feature_extraction.running.claims import Claim, try_claim
from feature_extraction.running.settings import ExtractSettings
from feature_extraction.tiling.given_coords import given_grid, on_one_lattice
from feature_extraction.tiling.grid import TileGrid, make_grid, plan_batches
from feature_extraction.tiling.tissue import TissueMask, save_qc, tissue_mask
from mil_crcrs.data.store import FeatureMeta, FeatureWriter

#: The QC pictures' folder inside the output folder.
QC_DIR = "qc"


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

    Only the process holding the slide's claim (:mod:`feature_extraction.running.claims`) gets here, and
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
