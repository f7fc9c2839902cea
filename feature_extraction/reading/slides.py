"""Whole-slide images through OpenSlide: opening, resolution, pyramid levels and region reads.

Anything OpenSlide reads works (Aperio SVS, Hamamatsu, MIRAX, generic tiled TIFF, DICOM, ...);
the ``openslide-bin`` wheel supplies the library. Every problem with a slide raises
:class:`SlideError` (an :class:`~mil_crcrs.errors.InputError`) whose one-line message names the
file, and whose ``reason`` says what kind of problem it is, for the errors report.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from mil_crcrs.errors import InputError, first_line

#: File suffixes picked up when a folder is given (a file given by name is tried whatever it is).
SLIDE_SUFFIXES = (
    ".svs",
    ".tif",
    ".tiff",
    ".ndpi",
    ".vms",
    ".vmu",
    ".scn",
    ".mrxs",
    ".svslide",
    ".bif",
    ".dcm",
    ".czi",
)

#: The most pixels of a whole-slide image read at low resolution (tissue segmentation,
#: thumbnails): 2^28, 0.8 GB of RGB. A 200,000 x 100,000 px slide at 0.25 um/px is 78 M at 4 um/px.
MAX_SCALED_PIXELS = 1 << 28

# Reasons recorded in the errors report.
UNREADABLE = "unreadable"
NO_MPP = "no_mpp"
NO_TISSUE = "no_tissue"
READ_ERROR = "read_error"


class SlideError(InputError):
    """A slide that cannot be used, with a ``reason`` (``unreadable``, ``no_mpp``, ...)."""

    def __init__(self, message: str, reason: str = UNREADABLE) -> None:
        super().__init__(message)
        self.reason = reason

    def __reduce__(self):  # keep ``reason`` across processes
        return (self.__class__, (str(self), self.reason))


def find_slides(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Slide files named directly or found (not recursively) in folders, sorted by stem.

    Raises
    ------
    InputError
        if a path does not exist, nothing is found, or two slides share a stem (they would
        write the same ``<stem>.h5``).
    """
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found.extend(
                c
                for c in sorted(p.iterdir())
                if c.is_file() and c.suffix.lower() in SLIDE_SUFFIXES and not c.name.startswith(".")
            )
        elif p.exists():
            found.append(p)
        else:
            raise InputError(f"{p}: no such slide file or folder")
    if not found:
        shown = ", ".join(str(p) for p in paths) or "(nothing)"
        raise InputError(f"no slides found in {shown} (suffixes: {' '.join(SLIDE_SUFFIXES)})")
    by_stem: dict[str, Path] = {}
    for path in found:
        if path.stem in by_stem and by_stem[path.stem].resolve() != path.resolve():
            raise InputError(
                f"{path}: slide name '{path.stem}' also used by {by_stem[path.stem]}; "
                "output files are named by stem, so stems must be unique"
            )
        by_stem[path.stem] = path
    return [by_stem[stem] for stem in sorted(by_stem)]


class Slide:
    """An open whole-slide image.

    Parameters
    ----------
    path : the slide file
    mpp : microns per level-0 pixel, overriding what the file says; None reads it from the
        file's properties (``openslide.mpp-x`` / ``openslide.mpp-y``)

    Raises
    ------
    SlideError
        if OpenSlide cannot open the file (``reason="unreadable"``) or no resolution is known
        (``reason="no_mpp"``).
    """

    def __init__(self, path: str | os.PathLike, mpp: float | None = None) -> None:
        import openslide

        self.path = Path(path)
        try:
            self._osr = openslide.OpenSlide(str(self.path))
        except (openslide.OpenSlideError, OSError, ValueError) as exc:
            what = "no such file" if not self.path.exists() else first_line(exc)
            raise SlideError(f"{self.path}: not a slide OpenSlide can read ({what})") from None
        self.mpp = self._resolve_mpp(mpp)

    def _resolve_mpp(self, override: float | None) -> float:
        if override is not None:
            if not np.isfinite(override) or override <= 0:
                raise InputError(f"slide mpp must be a positive number, got {override}")
            return float(override)
        props = self._osr.properties
        values = []
        for key in ("openslide.mpp-x", "openslide.mpp-y"):
            try:
                values.append(float(props[key]))
            except (KeyError, ValueError):
                pass
        values = [v for v in values if np.isfinite(v) and v > 0]
        if not values:
            raise SlideError(
                f"{self.path}: the file records no resolution (microns per pixel); "
                "give it with --slide-mpp",
                reason=NO_MPP,
            )
        return float(np.mean(values))

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 (width, height) in pixels."""
        return tuple(self._osr.dimensions)

    @property
    def level_dimensions(self) -> Sequence[tuple[int, int]]:
        return self._osr.level_dimensions

    @property
    def level_downsamples(self) -> Sequence[float]:
        return self._osr.level_downsamples

    def best_level(self, downsample: float) -> int:
        """The coarsest level whose downsample does not exceed ``downsample`` (0.1 % slack).

        Reading from it and shrinking loses nothing; a coarser level would need enlarging.
        """
        best = 0
        for level, ds in enumerate(self.level_downsamples):
            if ds <= downsample * 1.001 and ds >= self.level_downsamples[best]:
                best = level
        return best

    def read_region(
        self, xy_level0: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        """Read pixels from ``level``; areas outside the slide come back white.

        Parameters
        ----------
        xy_level0 : top-left (x, y) in level-0 pixels
        level : pyramid level to read from
        size : (width, height) in pixels of that level

        Returns
        -------
        (height, width, 3) uint8 RGB array
        """
        import openslide

        try:
            image = self._osr.read_region((int(xy_level0[0]), int(xy_level0[1])), level, size)
        except (openslide.OpenSlideError, OSError, ValueError) as exc:
            raise SlideError(
                f"{self.path}: cannot read {size[0]}x{size[1]} px at level {level} "
                f"from ({xy_level0[0]}, {xy_level0[1]}): {first_line(exc)}",
                reason=READ_ERROR,
            ) from None
        return rgba_to_rgb(np.asarray(image))

    def read_level_scaled(
        self, mpp: float, max_strip_pixels: int = 1 << 25, max_pixels: int = MAX_SCALED_PIXELS
    ) -> tuple[np.ndarray, float]:
        """The whole slide at about ``mpp`` microns per pixel, read from the best level in strips.

        Returns
        -------
        image : (height, width, 3) uint8
        scale : level-0 pixels per image pixel (exact: ``level0_width / width``)

        Raises
        ------
        SlideError
            when the image would have more than ``max_pixels`` pixels: a header claiming
            enormous dimensions (a damaged file, or a decompression bomb) is refused before
            anything is allocated.
        """
        from PIL import Image

        width0, height0 = self.dimensions
        downsample = max(1.0, mpp / self.mpp)
        out_w = max(1, round(width0 / downsample))
        out_h = max(1, round(height0 / downsample))
        if out_w * out_h > max_pixels:
            raise SlideError(
                f"{self.path}: {width0} x {height0} px at {self.mpp:g} um/px would be a "
                f"{out_w} x {out_h} image at {mpp:g} um/px, more than {max_pixels:,} pixels; "
                "the header's dimensions or resolution are wrong (or raise --seg-mpp)"
            )
        level = self.best_level(downsample)
        level_w, level_h = self.level_dimensions[level]
        ds_level = self.level_downsamples[level]
        # Level rows per output row; read strips of whole output rows so strips join seamlessly.
        rows_per_out = level_h / out_h
        out_rows_per_strip = max(1, int(max_strip_pixels / level_w / rows_per_out))
        strips = []
        for oy0 in range(0, out_h, out_rows_per_strip):
            oy1 = min(out_h, oy0 + out_rows_per_strip)
            ly0 = int(np.floor(oy0 * rows_per_out))
            ly1 = min(level_h, max(ly0 + 1, int(np.ceil(oy1 * rows_per_out))))
            strip = self.read_region((0, round(ly0 * ds_level)), level, (level_w, ly1 - ly0))
            if strip.shape[:2] != (oy1 - oy0, out_w):
                strip = np.asarray(
                    Image.fromarray(strip).resize((out_w, oy1 - oy0), Image.Resampling.BOX)
                )
            strips.append(strip)
        return np.concatenate(strips, axis=0), width0 / out_w

    def close(self) -> None:
        self._osr.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def rgba_to_rgb(rgba: np.ndarray) -> np.ndarray:
    """Composite OpenSlide's RGBA (not premultiplied; transparent outside the slide) on white.

    Parameters
    ----------
    rgba : (h, w, 4) uint8

    Returns
    -------
    (h, w, 3) uint8
    """
    rgb = rgba[..., :3]
    alpha = rgba[..., 3]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgb)
    a = alpha[..., None].astype(np.float32) / 255.0
    return (rgb * a + 255.0 * (1.0 - a)).round().astype(np.uint8)
