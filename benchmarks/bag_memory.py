"""Benchmark: peak memory of one full-bag training step against bag size, chunked and plain.

One command::

    python benchmarks/bag_memory.py                     # CPU: 10k ... 400k tiles
    python benchmarks/bag_memory.py --device cuda       # GPU: the same on the device

A training step (forward, Cox loss, backward, gradient clipping, AdamW) of gated abmil
(``1024 -> 512 -> 256``, the model of ``train_throughput.py``) on one bag of ``n`` tiles with
every tile (no ``max_tiles``), two ways:

- ``default``: the library's default, where a bag above ``MILModel.max_step_tiles`` runs its
  per-tile layers in chunks of ``MILModel.tile_chunk`` tiles, recomputed in backward
  (:mod:`mil_crcrs.models.chunked`); smaller bags run plain;
- ``never chunked``: ``max_step_tiles = None``, every activation kept (run up to
  ``--plain-max`` tiles, beyond which it would take the machine's memory).

Peak step memory is measured as in ``train_throughput.py``: on the CPU the resident-set
high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs`` once the bag is in memory)
after the step minus ``VmRSS`` before it; on CUDA ``max_memory_allocated`` minus the allocation
before. The input bag itself (float32) is not included; its size is a column. Each measurement
runs in a fresh process.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks._machine import append_results, gpu_name, header_lines  # noqa: E402
from benchmarks.train_throughput import ATTN_DIM, HIDDEN_DIM, _reset_peak_rss, _vm  # noqa: E402

SIZES = (10_000, 100_000, 200_000, 400_000)


def step_memory(n_tiles: int, dim: int, chunked: bool, device: str, threads: int) -> dict:
    """Peak memory and time of one full-bag training step (run in a fresh process)."""
    import torch

    from mil_crcrs.models import create_model
    from mil_crcrs.train.losses import cox_nll

    torch.set_num_threads(threads)
    dev = torch.device(device)
    torch.manual_seed(0)
    model = create_model("abmil", in_dim=dim, hidden_dim=HIDDEN_DIM, attn_dim=ATTN_DIM)
    model.to(dev).train()
    if not chunked:
        model.max_step_tiles = None
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    features = torch.randn((1, n_tiles, dim), device=dev)
    time_t, event_t = torch.ones(2, device=dev), torch.ones(2, device=dev)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        before = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    else:
        before = _vm("VmRSS") if _reset_peak_rss() else -1
    start = time.perf_counter()
    out = model(features)
    # Two copies of the bag's risk: a non-degenerate Cox risk set, so gradients are not zero.
    loss = cox_nll(torch.cat([out.risk, out.risk.detach() + 1]), time_t, event_t)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        peak = torch.cuda.max_memory_allocated(dev) - before
    else:
        peak = _vm("VmHWM") - before if before >= 0 else float("nan")
    return {
        "tiles": n_tiles,
        "mode": "default" if chunked else "never chunked",
        "input_mb": features.numel() * 4 / 2**20,
        "step_peak_mb": peak / 2**20,
        "step_s": time.perf_counter() - start,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--plain-max", type=int, default=200_000)
    p.add_argument("--no-append", action="store_true")
    args = p.parse_args(argv)
    ctx = mp.get_context("spawn")
    rows = []
    started = dt.datetime.now(dt.UTC)
    for n in args.sizes:
        for chunked in (True, False):
            if not chunked and n > args.plain_max:
                continue
            with ProcessPoolExecutor(1, mp_context=ctx) as pool:
                row = pool.submit(step_memory, n, args.dim, chunked, args.device, args.threads)
                rows.append(row.result())
            print(rows[-1], flush=True)
    lines = [
        "| tiles | mode | input (MB) | step peak (MB) | step (s) |",
        "|---:|---|---:|---:|---:|",
    ]
    lines += [
        f"| {r['tiles']:,} | {r['mode']} | {r['input_mb']:,.0f} | {r['step_peak_mb']:,.0f} | "
        f"{r['step_s']:.2f} |"
        for r in rows
    ]
    table = "\n".join(lines)
    print(table)
    if args.no_append:
        return
    from mil_crcrs.models.chunked import MAX_STEP_TILES, TILE_CHUNK

    section = [
        f"## Full-bag step memory against bag size on {args.device} ({started:%Y-%m-%d %H:%M} UTC)",
        "",
        *header_lines(
            "bag_memory",
            argv,
            threads=args.threads,
            device=gpu_name(args.device),
            started=started,
        ),
        f"- abmil {args.dim} -> {HIDDEN_DIM} -> {ATTN_DIM}, one bag, every tile, float32; "
        f"chunked: above {MAX_STEP_TILES:,} tiles in chunks of {TILE_CHUNK:,}, recomputed in "
        "backward. Step peak: VmHWM after the step minus VmRSS before (CPU), the input "
        "excluded; one fresh process per row.",
        "",
        table,
        "",
    ]
    append_results(HERE / "RESULTS.md", "\n".join(section))


if __name__ == "__main__":
    main()
