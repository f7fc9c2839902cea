"""What ``crcrs extract`` is told (:class:`ExtractSettings`), and the record every file keeps of it.

The settings the features depend on, with the encoder's spec and the precision actually used,
form the settings record (:func:`settings_record`), saved in every feature file and hashed
(:func:`settings_hash`). An output folder holds features of one settings hash only:
:func:`check_output_dir` refuses a folder made with other settings, never mixing them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from feature_extraction.encoding.tile_encoder import Encoder
from feature_extraction.reading.reader_choice import DEFAULT_READER, READERS
from feature_extraction.running.claims import folder_lock
from feature_extraction.tiling.tissue import TissueParams
from mil_crcrs.atomic import write_json
from mil_crcrs.data.store import read_settings_record
from mil_crcrs.device import check_device
from mil_crcrs.errors import InputError, SettingError

#: Encoder precisions: "auto" is bf16 on a GPU that has it, else fp16; fp32 on CPU.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: Dtypes of the features in the files.
FEATURE_DTYPES = ("float16", "float32")
#: The output folder's record of its settings and their hash.
SETTINGS_NAME = "extract_settings.json"


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
    encoder : encoder registry name or timm model name (:mod:`feature_extraction.encoding.encoders`)
    weights : local weights file, ``"random"``, or None for the encoder's pretrained weights
    target_mpp : microns per pixel of the tiles the encoder sees
    tile_size_px : tile edge in pixels at ``target_mpp``
    min_tissue_fraction : keep a tile when at least this share of it is tissue
    slide_mpp : level-0 microns per pixel of every slide, overriding the files; None = read it
    tissue : tissue segmentation parameters
    precision : one of :data:`PRECISIONS`: "fp32", "bf16", "fp16", or "auto" (bf16 on a GPU
        that has it, else fp16; fp32 on CPU)
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
        (:mod:`feature_extraction.tiling.given_coords`); hashed as "coords given", not by path

    Raises
    ------
    SettingError
        naming the field with a bad value.
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
        for name, choices in (
            ("precision", PRECISIONS),
            ("feature_dtype", FEATURE_DTYPES),
            ("reader", READERS),
        ):
            if getattr(self, name) not in choices:
                raise SettingError(
                    name, f"must be one of {', '.join(choices)}, got '{getattr(self, name)}'"
                )
        if not self.target_mpp > 0:
            raise SettingError("target_mpp", f"must be positive, got {self.target_mpp}")
        if self.slide_mpp is not None and not self.slide_mpp > 0:
            raise SettingError("slide_mpp", f"must be positive, got {self.slide_mpp}")
        for name in ("tile_size_px", "batch_size", "block_tiles", "plan_ahead"):
            if getattr(self, name) < 1:
                raise SettingError(name, f"must be at least 1, got {getattr(self, name)}")
        if self.num_workers is not None and self.num_workers < 0:
            raise SettingError("num_workers", f"must be >= 0, got {self.num_workers}")
        if not 0.0 <= self.min_tissue_fraction <= 1.0:
            raise SettingError(
                "min_tissue_fraction", f"must be in [0, 1], got {self.min_tissue_fraction}"
            )
        check_device(self.device)


#: The fields that decide only how fast a run goes: neither hashed nor recorded.
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
            f"{diff}); use another output folder, or the same settings"
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
