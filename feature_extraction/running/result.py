"""What one ``crcrs extract`` process did: :class:`ExtractResult`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from feature_extraction.reading.loader import OPENSLIDE
from feature_extraction.running.sharding import Shard


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
    fallbacks : slide id -> why the ``auto`` reader read it with OpenSlide
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

    def summary(self) -> str:
        """One line: what was extracted, skipped, left to others and failed, in how long."""
        shard = self.shard
        rank = f"rank {shard.rank}/{shard.world_size}: " if shard.world_size > 1 else ""
        busy = f"{len(self.busy)} left to another running process, " if self.busy else ""
        if self.taken_over:
            busy += f"{len(self.taken_over)} taken over from a stopped run, "
        n_direct = sum(kind != OPENSLIDE for kind in self.readers.values())
        direct = f", {n_direct} slide(s) read directly" if n_direct else ""
        return (
            f"{rank}{len(self.done)} extracted ({self.n_tiles} tiles{direct}), "
            f"{len(self.skipped)} already done, {busy}{len(self.failed)} failed, "
            f"in {self.seconds:.1f} s -> {self.out_dir}"
        )
