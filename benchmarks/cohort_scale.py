"""Benchmark: a K-fold fit at cohort scale, timed part by part, with its peak memory.

One command per row::

    # CPU rows: 300 patients x 5k tiles x 1,024-d on 2 cores, a whole 5-fold fit each: with
    # the library's default of every tile per bag (about an hour), and with a 512-tile cap
    python benchmarks/cohort_scale.py --patients 300 --tiles 5000 --threads 2 --cache-gb 4 \
        --templates 60 --max-tiles all
    python benchmarks/cohort_scale.py --patients 300 --tiles 5000 --threads 2 --cache-gb 4 \
        --templates 60 --max-tiles 512
    # GPU row (a step of benchmarks/gpu_check.sh): 1,000 x 10k x 1,024-d, defaults, all epochs
    python benchmarks/cohort_scale.py --patients 1000 --tiles 10000 --max-tiles all \
        --device cuda --threads 8 --jobs 16 --templates 100

With ``--templates`` the cohort holds copies of fewer simulated patients, and copies of one
patient can land on both sides of a fold: the C-index of such a row is not an accuracy figure
(the timings and memory are what the row is for).

What it does:

1. writes a simulated cohort (``rare`` scenario, one slide of ``--tiles`` tiles per patient,
   float16 features) under ``--data`` (default ``/tmp``, never the repository), a few patients
   at a time (:mod:`benchmarks._scale_data`), or reuses one written before with the same size;
2. runs :func:`mil_crcrs.fit` with the library's defaults (except what the flags set) in a fresh
   process, and times its parts by wrapping the library's own functions: **load** (reading
   every bag into the cache or onto the device, once per fit), each **epoch** (the optimiser
   steps, and the inner-validation scoring), each **fold** (training plus scoring the cohort
   with the fold model), and **predict** (the finished ensemble scoring the whole cohort from
   the feature files, as ``crcrs predict`` does);
3. records the fit process's **peak RSS** (Linux ``VmHWM``; it includes the interpreter and
   libraries) and, on a GPU, ``torch.cuda.max_memory_allocated``;
4. puts the time of an epoch next to its **matmul-bound estimate**: the epoch's floating-point
   work (forward and backward of every per-tile layer on the training tiles, forward on the
   inner-validation tiles) divided by the GFLOP/s one CPU core reaches on the same matmul
   shape, measured in the same run; ``achieved share`` = estimate / measured time.

Outputs: a table on stdout and a markdown section appended to ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import multiprocessing as mp
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks._machine import append_results, header_lines, rows_table  # noqa: E402
from benchmarks._machine import say as _say  # noqa: E402

#: Tiles per bag in training when the library's default is "all tiles" (max_tiles=None).
FALLBACK_MAX_TILES = 512


def _vm(field: str) -> float:
    """A ``/proc/self/status`` field in GiB (Linux), or NaN."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def core_gflops(dim: int, hidden: int, repeats: int = 20) -> float:
    """GFLOP/s of one CPU thread on the instance MLP's matmul, ``(4096, dim) @ (dim, hidden)``,
    per second of its CPU time (the best of ``repeats``)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x, w = torch.randn(4096, dim), torch.randn(dim, hidden)
        for _ in range(3):
            x @ w
        best = float("inf")
        for _ in range(repeats):  # CPU time of one thread: other work on the machine does not count
            start = time.process_time()
            x @ w
            best = min(best, time.process_time() - start)
    finally:
        torch.set_num_threads(threads)
    return 2 * 4096 * dim * hidden / best / 1e9


def tile_flops(dim: int, hidden: int, attn: int, n_out: int = 1) -> int:
    """Forward FLOPs per tile of gated abmil's per-tile layers (MLP, gate, score, head)."""
    return 2 * (dim * hidden + hidden * 2 * attn + attn + hidden * n_out)


class _Timer:
    """Wraps library functions to time them (the fit runs unmodified between the wrappers)."""

    def __init__(self) -> None:
        self.epochs: list[float] = []
        self.evals: list[float] = []
        self.folds: list[dict] = []
        self.fold_predict: list[float] = []
        self.load: dict = {}
        self.cpu: dict[str, list[float]] = {}  # process CPU time per wrapped function

    def install(self) -> None:
        import mil_crcrs.fitting as fitting
        import mil_crcrs.train.crossval as crossval
        import mil_crcrs.train.loop as training

        def timed(fn, sink):
            def wrapper(*args, **kwargs):
                start, cpu = time.perf_counter(), time.process_time()
                out = fn(*args, **kwargs)
                _sync()
                self.cpu.setdefault(fn.__name__, []).append(time.process_time() - cpu)
                sink(time.perf_counter() - start, args, kwargs, out)
                return out

            return wrapper

        training.train_one_epoch = timed(
            training.train_one_epoch, lambda s, a, k, o: self.epochs.append(s)
        )
        training.evaluate = timed(training.evaluate, lambda s, a, k, o: self.evals.append(s))

        def fold_done(s, a, k, o) -> None:
            self.folds.append(
                {"s": s, "n_train": len(a[4]), "n_val": len(a[5]), "epochs": len(o.history)}
            )
            say(f"fold model {len(self.folds)} trained: {len(o.history)} epochs in {s:.1f} s")

        crossval.train_model = timed(crossval.train_model, fold_done)
        crossval.predict_risk = timed(
            crossval.predict_risk, lambda s, a, k, o: self.fold_predict.append(s)
        )

        def open_and_load(*args, **kwargs):
            bags = opener(*args, **kwargs)
            _ = bags.stats  # a BagCache reads on first use: time the reading here
            return bags

        opener = fitting.open_training_bags
        open_and_load.__name__ = "open_training_bags"

        def loaded(s, a, k, o) -> None:
            self.load.update(s=s, **getattr(o, "stats", {}))
            say(f"features loaded in {s:.1f} s")

        fitting.open_training_bags = timed(open_and_load, loaded)


say = functools.partial(_say, "cohort_scale")


def _sync() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def run_fit(args: argparse.Namespace, data: Path) -> dict:
    """One timed fit and ensemble prediction (meant to run in a fresh process)."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from mil_crcrs import FitSettings, fit
    from mil_crcrs.data.cohort import read_cohort
    from mil_crcrs.data.store import FeatureStore

    timer = _Timer()
    timer.install()
    settings = FitSettings(
        folds=args.folds,
        epochs=args.epochs or FitSettings.epochs,
        max_tiles=args.max_tiles,
        cache_gb=args.cache_gb,
        resident=args.resident,
        precision=args.precision,
        device=args.device,
        progress=False,
        seed=0,
    )
    rss_before = _vm("VmRSS")
    say(f"fit: {args.folds} folds on {args.device}, max_tiles {settings.max_tiles or 'all'}")
    start = time.perf_counter()
    model = fit(data / "features", data / "clinical.csv", settings)
    fit_s = time.perf_counter() - start
    say(f"fit done in {fit_s:.1f} s; predicting from the files")
    store = FeatureStore(data / "features")
    cohort = read_cohort(data / "clinical.csv")
    start = time.perf_counter()
    model.predict(store, cohort, batch_size=settings.batch_size, device=args.device)
    _sync()
    predict_s = time.perf_counter() - start
    gpu_peak = float("nan")
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        gpu_peak = torch.cuda.max_memory_allocated() / 2**30
    hidden = model.fold_models[0].config.get("hidden_dim", 256)
    attn = model.fold_models[0].config.get("attn_dim", 128)
    return {
        "settings": settings,
        "fit_s": fit_s,
        "predict_s": predict_s,
        "timer": timer.__dict__,
        "rss_before_gb": rss_before,
        "peak_rss_gb": _vm("VmHWM"),
        "gpu_peak_gb": gpu_peak,
        "c_oof": model.metrics["harrell_c_oof"],
        "c_mean": model.metrics["harrell_c_mean"],
        "hidden": hidden,
        "attn": attn,
        "gflops_core": core_gflops(args.dim, hidden),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "gpu_name": torch.cuda.get_device_name() if torch.cuda.is_available() else "",
    }


def probe_epoch(args: argparse.Namespace, data: Path) -> dict:
    """Load the cache and time ONE epoch of fold 1 (training steps, then the inner-validation
    scoring), without the rest of the fit: for a machine too slow or too busy for a full row."""
    import numpy as np
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from mil_crcrs import FitSettings
    from mil_crcrs.data.bags import PatientBags
    from mil_crcrs.data.cache import BagCache
    from mil_crcrs.data.cohort import read_cohort
    from mil_crcrs.data.store import FeatureStore
    from mil_crcrs.models import create_model
    from mil_crcrs.train.batches import iterate_batches
    from mil_crcrs.train.loop import evaluate, make_optimizer, train_one_epoch
    from mil_crcrs.train.losses import make_loss
    from mil_crcrs.train.splits import kfold_splits

    settings = FitSettings(max_tiles=args.max_tiles, device="cpu", progress=False)
    store = FeatureStore(data / "features")
    cohort = read_cohort(data / "clinical.csv").match_features(store.slide_ids, "error")
    start, cpu = time.perf_counter(), time.process_time()
    bags = BagCache(PatientBags(cohort, store), args.cache_gb, log=None)
    stats = dict(bags.stats)
    load = (time.perf_counter() - start, time.process_time() - cpu)
    fold = kfold_splits(cohort.event, args.folds, settings.inner_val_fraction, 0, "cohort")[0]
    torch.manual_seed(0)
    model = create_model(settings.model, in_dim=bags.feature_dim)
    optimizer = make_optimizer(model, settings.lr, settings.weight_decay)
    rng = np.random.default_rng(0)
    batches = iterate_batches(
        bags, fold.train, cohort.time, cohort.event, settings.batch_size, rng, settings.max_tiles
    )
    start, cpu = time.perf_counter(), time.process_time()
    train_one_epoch(model, batches, optimizer, None, make_loss(settings), settings.clip_norm)
    train = (time.perf_counter() - start, time.process_time() - cpu)
    val = bags.subset(fold.inner_val)
    start, cpu = time.perf_counter(), time.process_time()
    evaluate(model, val, cohort.time[fold.inner_val], cohort.event[fold.inner_val])
    inner = (time.perf_counter() - start, time.process_time() - cpu)
    return {
        "stats": stats,
        "load": load,
        "train": train,
        "inner_val": inner,
        "n_train": len(fold.train),
        "n_val": len(fold.inner_val),
        "peak_rss_gb": _vm("VmHWM"),
        "hidden": model.config["hidden_dim"],
        "attn": model.config["attn_dim"],
        "gflops_core": core_gflops(args.dim, model.config["hidden_dim"]),
        "threads": torch.get_num_threads(),
    }


def _precision(precision: str, device: str) -> str:
    """The training precision as set, with what "auto" became on ``device``."""
    import torch

    from mil_crcrs.train.settings import training_autocast

    if precision != "auto":
        return precision
    return "auto (bf16)" if training_autocast(precision, torch.device(device)) else "auto (fp32)"


def summarise(args: argparse.Namespace, res: dict, manifest: dict) -> dict:
    """One table row from a fit's timings."""
    t = res["timer"]
    settings = res["settings"]
    max_tiles = settings.max_tiles or args.tiles
    per_tile = tile_flops(args.dim, res["hidden"], res["attn"])
    folds = t["folds"]
    n_train = sum(f["n_train"] for f in folds) / len(folds)
    n_val = sum(f["n_val"] for f in folds) / len(folds)
    train_tiles = n_train * min(args.tiles, max_tiles)
    epoch_flops = 3 * train_tiles * per_tile + n_val * args.tiles * per_tile
    epoch_train = sum(t["epochs"]) / len(t["epochs"])
    epoch_eval = sum(t["evals"]) / len(t["evals"]) if t["evals"] else 0.0
    epoch_s = epoch_train + epoch_eval
    cpu = t["cpu"]
    epoch_cpu = _mean(cpu["train_one_epoch"]) + (_mean(cpu["evaluate"]) if t["evals"] else 0.0)
    bound_s = epoch_flops / (res["gflops_core"] * 1e9)
    fold_s = sum(f["s"] for f in folds) / len(folds)
    predict_fold = sum(t["fold_predict"]) / len(t["fold_predict"])
    epochs_run = sum(f["epochs"] for f in folds) / len(folds)
    full_epochs = args.full_epochs
    extrapolated = t["load"].get("s", 0.0) + len(folds) * (full_epochs * epoch_s + predict_fold)
    return {
        "cohort": f"{args.patients} x {args.tiles} x {args.dim}",
        "device": args.device,
        "max_tiles": max_tiles,
        "precision": _precision(settings.precision, args.device),
        "cache_gb": f"{t['load'].get('cached_gb', 0):.2f} (budget {settings.cache_gb or 'auto'})",
        "streamed_gb": t["load"].get("streamed_gb", 0.0),
        "load_s": t["load"].get("s", float("nan")),
        "load_cpu_s": _mean(t["cpu"].get("open_training_bags", [float("nan")])),
        "load_mb_s": manifest["feature_bytes"] / 1e6 / t["load"].get("s", float("nan")),
        "epochs/fold": epochs_run,
        "epoch_s": epoch_s,
        "train_s": epoch_train,
        "inner_val_s": epoch_eval,
        "inst_per_s": train_tiles / epoch_train,
        "epoch_cpu_s": epoch_cpu,
        "bound_epoch_s": bound_s,
        "achieved_share": bound_s / epoch_cpu,
        "fold_s": fold_s,
        "fold_predict_s": predict_fold,
        f"fit_{len(folds)}fold_s": res["fit_s"],
        f"extrap_{full_epochs}ep_s": extrapolated,
        "predict_s": res["predict_s"],
        "peak_rss_gb": res["peak_rss_gb"],
        "gpu_peak_gb": res["gpu_peak_gb"],
        "c_oof": res["c_oof"],
        "oracle_c": manifest["oracle_c"],
    }


def _header(argv: list[str] | None, res: dict, started: dt.datetime) -> list[str]:
    """The Command, Machine, Versions and Date lines of a section, from a run's result."""
    return header_lines(
        "cohort_scale",
        argv,
        threads=res["threads"],
        device=res.get("gpu_name") or None,
        started=started,
    )


def _report_probe(
    args: argparse.Namespace, res: dict, manifest: dict, started, argv: list[str] | None
) -> None:
    """The probe's table, printed and appended to RESULTS.md."""
    per_tile = tile_flops(args.dim, res["hidden"], res["attn"])
    train_tiles = res["n_train"] * min(args.tiles, args.max_tiles or args.tiles)
    val_tiles = res["n_val"] * args.tiles
    rate = res["gflops_core"] * 1e9
    rows = [
        ("load (cache)", res["load"], manifest["feature_bytes"] / 1e6, None),
        ("train steps", res["train"], train_tiles, 3 * train_tiles * per_tile / rate),
        ("inner-val scoring", res["inner_val"], val_tiles, val_tiles * per_tile / rate),
    ]
    lines = [
        "| part | wall s | CPU s | work | matmul-bound s (1 core) | achieved share of CPU s |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for name, (wall, cpu), work, bound in rows:
        what = f"{work:,.0f} MB" if bound is None else f"{work:,} tiles"
        share = "" if bound is None else f"{bound / cpu:.2f}"
        bound_s = "" if bound is None else f"{bound:.1f}"
        lines.append(f"| {name} | {wall:.1f} | {cpu:.1f} | {what} | {bound_s} | {share} |")
    table = "\n".join(lines)
    print(table)
    if args.no_append:
        return
    st = res["stats"]
    section = [
        f"## Cohort scale, one-epoch probe: {args.patients} x {args.tiles} x {args.dim} on cpu "
        f"({started:%Y-%m-%d %H:%M} UTC)",
        "",
        *_header(argv, res, started),
        f"- Cache: {st['cached_bags']} bags, {st['cached_gb']:.2f} GiB in memory (budget "
        f"{args.cache_gb} GiB), {st['streamed_bags']} streamed; peak RSS of the process "
        f"{res['peak_rss_gb']:.2f} GiB",
        f"- Fold 1 of {args.folds}: {res['n_train']} training bags (max_tiles {args.max_tiles}), "
        f"{res['n_val']} inner-validation bags scored with every tile; abmil defaults (hidden "
        f"{res['hidden']}, attention {res['attn']}); one core's matmul rate "
        f"{res['gflops_core']:.1f} GFLOP/s, measured in the same process",
        "",
        table,
        "",
    ] + ([args.note, ""] if args.note else [])
    append_results(HERE / "RESULTS.md", "\n".join(section))


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _tiles_note(max_tiles: int | None, default: int | None) -> str:
    """What the row trained on per bag, and whether that is the library's default."""
    used = "every tile of every bag" if max_tiles is None else f"max_tiles {max_tiles}"
    if max_tiles == default:
        return f"{used} in training (the library's default)"
    library = "every tile" if default is None else f"max_tiles {default}"
    return f"{used} in training (the library's default is {library})"


#: ``--max-tiles`` not given: the library's default (:func:`main` reads it after parsing, so
#: that a wrong argument fails at once, before torch is imported).
LIBRARY_MAX_TILES = object()


def _max_tiles(text: str) -> int | None:
    """``--max-tiles``: a positive number, or "all" for every tile (None)."""
    if text.strip().lower() in ("all", "none"):
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {text!r}")
    return value


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--patients", type=int, default=300)
    p.add_argument("--tiles", type=int, default=5000, help="tiles per patient (one slide)")
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=None, help="[default: FitSettings.epochs]")
    p.add_argument(
        "--max-tiles",
        type=_max_tiles,
        default=LIBRARY_MAX_TILES,
        help="tiles per bag in training, or 'all' (every tile, the library's default) "
        f"[default: FitSettings.max_tiles, else {FALLBACK_MAX_TILES}]",
    )
    p.add_argument("--cache-gb", type=float, default=None)
    p.add_argument("--resident", default="auto")
    p.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "fp32", "bf16"),
        help="training precision (the library's default auto: bf16 on a GPU, fp32 on the CPU)",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--jobs", type=int, default=2, help="processes writing the cohort")
    p.add_argument(
        "--templates",
        type=int,
        default=None,
        help="draw only this many patients and fill the cohort with copies of them (each its "
        "own tile order and outcome): much faster to write",
    )
    p.add_argument("--data", type=Path, default=Path("/tmp/crcrs_cohort_scale"))
    p.add_argument("--no-append", action="store_true", help="do not write RESULTS.md")
    p.add_argument("--note", default="", help="a line added under the table")
    p.add_argument(
        "--probe", action="store_true", help="only load and time one epoch of fold 1 (no full fit)"
    )
    args = p.parse_args(argv)
    from mil_crcrs.train.settings import FitSettings

    if args.max_tiles is LIBRARY_MAX_TILES:
        args.max_tiles = FitSettings.max_tiles or FALLBACK_MAX_TILES
    args.full_epochs = FitSettings.epochs
    data = args.data / f"{args.patients}x{args.tiles}x{args.dim}"
    if args.templates:
        data = data.with_name(data.name + f"-t{args.templates}")
    ctx = mp.get_context("spawn")
    say(f"writing (or reusing) the cohort in {data}")
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:  # the writer's memory is not the fit's
        from benchmarks._scale_data import write_large_cohort

        manifest = pool.submit(
            write_large_cohort,
            data,
            args.patients,
            args.tiles,
            args.dim,
            jobs=args.jobs,
            templates=args.templates,
        ).result()
    size_gb = manifest["feature_bytes"] / 2**30
    say(f"cohort ready ({size_gb:.1f} GiB, written in {manifest['write_s']:.0f} s)")
    started = dt.datetime.now(dt.UTC)
    if args.probe:
        with ProcessPoolExecutor(1, mp_context=ctx) as pool:
            res = pool.submit(probe_epoch, args, data).result()
        _report_probe(args, res, manifest, started, argv)
        return
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:
        res = pool.submit(run_fit, args, data).result()
    row = summarise(args, res, manifest)
    raw = {k: v for k, v in res.items() if k != "settings"} | {"row": row, "argv": sys.argv[1:]}
    (data / f"result-{started:%Y%m%dT%H%M%S}.json").write_text(json.dumps(raw, default=str))
    table = rows_table([row])
    print(table)
    if args.no_append:
        return
    default_tiles = FitSettings.max_tiles
    section = "\n".join(
        [
            f"## Cohort scale: {row['cohort']} on {args.device} ({started:%Y-%m-%d %H:%M} UTC)",
            "",
            *_header(argv, res, started),
            f"- Model: abmil defaults (hidden {res['hidden']}, attention {res['attn']}); "
            + _tiles_note(args.max_tiles, default_tiles),
            f"- One core's matmul rate ({args.dim}x{res['hidden']}): "
            f"{res['gflops_core']:.1f} GFLOP/s; cohort written in "
            f"{manifest['write_s']:.0f} s ({manifest['feature_bytes'] / 2**30:.2f} GiB float16)"
            + (
                f"; {args.templates} simulated patients, the rest copies of them (own tile "
                "order and outcome)"
                if args.templates
                else ""
            ),
            "- Columns: epoch_s = train_s (optimiser steps) + inner_val_s (scoring the inner "
            "validation split with every tile), wall clock; epoch_cpu_s = the same in CPU time "
            "of the fit process (all its threads; other work on the machine does not inflate "
            "it); bound_epoch_s = the epoch's FLOPs at one core's matmul rate; achieved_share "
            "= bound_epoch_s / epoch_cpu_s; fold_s = training one fold model (all its epochs); fold_predict_s = "
            "scoring the cohort with it; extrap = load + folds x (all default epochs x epoch_s + "
            "fold_predict_s); predict_s = the ensemble scoring the cohort from the files; "
            "peak_rss_gb = the fit process's VmHWM (interpreter and libraries included).",
            "",
            table,
            "",
        ]
        + ([args.note, ""] if args.note else [])
    )
    append_results(HERE / "RESULTS.md", section)


if __name__ == "__main__":
    main()
