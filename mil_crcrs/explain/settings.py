"""How heatmaps are painted and which tiles are shown: :class:`HeatmapSettings`.

The value kinds a map can show are named here too: the model's own values
(:data:`~mil_crcrs.explain.scores.VALUE_KINDS`) and attributions computed elsewhere (feature-level
integrated gradients, :mod:`mil_crcrs.explain.integrated_gradients`) passed in
``TileScores.extra``.
"""

from __future__ import annotations

from dataclasses import dataclass

from mil_crcrs.errors import SettingError
from mil_crcrs.explain.paint import colormap
from mil_crcrs.explain.scores import VALUE_KINDS

#: What can be painted: the model's own values, and feature-level integrated gradients.
MAP_KINDS = (*VALUE_KINDS, "integrated_gradients")
#: Kinds whose sign means something (raises or lowers the risk): zero sits mid-colormap.
SIGNED_KINDS = ("contribution", "integrated_gradients")
#: Colormap of each kind when none is given: sequential for attention, diverging (red = raises
#: the risk, blue = lowers it, white = no effect) for the signed values.
DEFAULT_CMAPS = {"attention": "inferno", "contribution": "RdBu_r", "integrated_gradients": "RdBu_r"}
#: The smallest longest side of a heatmap canvas, in pixels.
MIN_SIDE_PX = 16


@dataclass(frozen=True)
class HeatmapSettings:
    """How heatmaps are painted and which tiles are shown (saved with the outputs).

    Parameters
    ----------
    maps : the value kinds to draw per slide ("attention", "contribution", and
        "integrated_gradients" where the scores carry them)
    cmap : a matplotlib colormap name for every map; None = :data:`DEFAULT_CMAPS` per kind
    alpha : opacity of the colours over the thumbnail, in [0, 1]
    percentiles : (low, high) percentiles of the patient's tile values mapped to the two ends of
        the colormap (values outside are clipped); for the signed contributions only ``high`` is
        used, on their absolute values, and zero sits in the middle
    smooth : standard deviation of a Gaussian smoothing of the painted map, in tiles (0 = none);
        smoothing never spreads colour outside the tiles
    max_side_px : longest side of a heatmap canvas in pixels (the thumbnail's resolution)
    top_k : number of top and of bottom tiles to select per patient
    by : rank tiles by "attention" or by "contribution" to the risk
    """

    maps: tuple[str, ...] = VALUE_KINDS
    cmap: str | None = None
    alpha: float = 0.5
    percentiles: tuple[float, float] = (1.0, 99.0)
    smooth: float = 0.0
    max_side_px: int = 2048
    top_k: int = 8
    by: str = "attention"

    def __post_init__(self) -> None:
        object.__setattr__(self, "maps", tuple(self.maps))
        object.__setattr__(self, "percentiles", tuple(float(p) for p in self.percentiles))
        unknown = [m for m in self.maps if m not in MAP_KINDS]
        if unknown or not self.maps:
            raise SettingError("maps", f"must be among {', '.join(MAP_KINDS)}, got {self.maps}")
        if self.by not in VALUE_KINDS:
            raise SettingError("by", f"must be one of {', '.join(VALUE_KINDS)}, got {self.by!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise SettingError("alpha", f"must be in [0, 1], got {self.alpha}")
        lo, hi = self.percentiles
        if not 0.0 <= lo < hi <= 100.0:
            raise SettingError(
                "percentiles", f"must satisfy 0 <= low < high <= 100, got {(lo, hi)}"
            )
        if not self.smooth >= 0.0:
            raise SettingError("smooth", f"must be >= 0 (tiles), got {self.smooth}")
        if self.max_side_px < MIN_SIDE_PX:
            raise SettingError(
                "max_side_px", f"must be at least {MIN_SIDE_PX}, got {self.max_side_px}"
            )
        if self.top_k < 0:
            raise SettingError("top_k", f"must be >= 0, got {self.top_k}")
        if self.cmap is not None:
            colormap(self.cmap)  # fails early on an unknown name

    def cmap_for(self, kind: str) -> str:
        """The colormap name used for value ``kind``."""
        return self.cmap or DEFAULT_CMAPS[kind]
