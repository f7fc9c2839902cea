"""Benchmark: training throughput of the padded-batch step, and peak memory of a huge bag.

One command::

    python benchmarks/train_throughput.py                 # CPU, a few minutes on 2 cores
    python benchmarks/train_throughput.py --device cuda   # GPU: adds the 32 x 8,192 batch

What is measured, all in one process and one run:

1. **Throughput** in instances (real tiles) per second of one training step (forward, Cox loss,
   backward, gradient clipping, AdamW step) of gated ABMIL (``in_dim -> 512 -> 256``, the
   model of ``../shared/reference/gpu-ceilings.md``), two ways on the same bags and the same
   model:

   - ``padded``: what :mod:`mil_crcrs.train.loop` does: the batch's bags padded into one
     ``(B, N_max, D)`` tensor with a mask, one forward pass of the model (the padded batch is
     built before timing; ``padded+collate`` also times :func:`mil_crcrs.data.bags.collate` from the
     numpy bags). The model itself skips the padding in its per-tile layers: the instance MLP
     and the gated-attention scores run on the real tiles only, packed into one
     ``(n_real, D)`` tensor; the masked softmax and the weighted sum run on the padded layout;
   - ``naive``: a Python loop over the bags, one forward pass per bag (no padding, no mask),
     the risks stacked into the same Cox loss, one backward pass.

   Padding tiles are not counted as instances: a batch whose bags differ in length pays for its
   padding. Each number is the median over ``--repeats`` timed steps after two warm-up steps
   (wall-clock time; on a machine shared with other work, ``--threads 1 --clock cpu`` times
   the process's own CPU time instead, which the other work does not inflate);
   ``ratio`` = padded / naive throughput, measured side by side.
2. **Peak memory of one training step on a 200,000-tile bag** (``in_dim`` 1024, float32), with
   all tiles and with ``max_tiles`` subsampling. CPU: the process's resident-set high-water mark
   (Linux ``VmHWM``) is reset through ``/proc/self/clear_refs`` after the bag is in memory, and
   the step's peak is ``VmHWM`` after the step minus ``VmRSS`` before it: every page the step
   touched (torch's tensors, gradients, optimiser state) counts, not just Python objects
   (``tracemalloc`` does not see torch's allocator). The input itself (819 MB) is not included.
   Each measurement runs in a fresh process, so memory freed by earlier work cannot hide it.
   CUDA: ``torch.cuda.max_memory_allocated`` during the step minus the allocation before it.

Outputs: a table on stdout and a markdown section appended to ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import multiprocessing as mp
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks._machine import (  # noqa: E402
    append_results,
    gpu_name,
    header_lines,
    load_average,
)
from mil_crcrs.data.bags import PatientBag, collate  # noqa: E402
from mil_crcrs.models import create_model  # noqa: E402
from mil_crcrs.train.losses import cox_nll  # noqa: E402

HIDDEN_DIM, ATTN_DIM = 512, 256


def _bags(n_bags: int, lengths: tuple[int, int], dim: int, seed: int) -> list[PatientBag]:
    rng = np.random.default_rng(seed)
    bags = []
    for i in range(n_bags):
        n = int(rng.integers(lengths[0], lengths[1] + 1))
        bags.append(
            PatientBag(
                patient_id=f"p{i}",
                features=rng.standard_normal((n, dim), dtype=np.float32),
                coords=np.zeros((n, 2), dtype=np.int64),
                grid=np.zeros((n, 2), dtype=np.int64),
                slide_ids=(f"p{i}",),
                tile_slide=np.zeros(n, dtype=np.int64),
            )
        )
    return bags


def device_is_cuda(name: str) -> bool:
    return name.startswith("cuda")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _optimiser_step(model, optimizer, loss) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()


#: The clock steps are timed with: wall time, or (``--clock cpu``, for a machine shared with other
#: work, with ``--threads 1``) the CPU time of this process, which other processes do not inflate.
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = CLOCKS["wall"]


def _time_steps(step, device: torch.device, repeats: int) -> float:
    for _ in range(2):
        step()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = _clock()
        step()
        _sync(device)
        times.append(_clock() - start)
    return statistics.median(times)


def throughput(
    n_bags: int,
    lengths: tuple[int, int],
    dim: int,
    device: torch.device,
    repeats: int,
    naive: bool = True,
) -> dict[str, float]:
    """Instances/s of the padded and the naive step on the same bags and the same model."""
    torch.manual_seed(0)
    model = (
        create_model("abmil", in_dim=dim, hidden_dim=HIDDEN_DIM, attn_dim=ATTN_DIM, dropout=0.25)
        .to(device)
        .train()
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    bags = _bags(n_bags, lengths, dim, seed=n_bags + lengths[1])
    n_real = sum(b.n_tiles for b in bags)
    rng = np.random.default_rng(0)
    time_t = torch.as_tensor(rng.exponential(size=n_bags), dtype=torch.float32, device=device)
    event_t = torch.as_tensor(rng.random(n_bags) < 0.6, dtype=torch.float32, device=device)
    batch = collate(bags).to(device)
    singles = [torch.from_numpy(b.features).to(device)[None] for b in bags]

    def padded_step():
        out = model(batch.features, mask=batch.mask)
        _optimiser_step(model, optimizer, cox_nll(out.risk, time_t, event_t))

    def collate_step():
        b = collate(bags).to(device)
        out = model(b.features, mask=b.mask)
        _optimiser_step(model, optimizer, cox_nll(out.risk, time_t, event_t))

    def naive_step():
        risk = torch.cat([model(x).risk for x in singles])
        _optimiser_step(model, optimizer, cox_nll(risk, time_t, event_t))

    row = {
        "bags": n_bags,
        "tiles": f"{lengths[0]}-{lengths[1]}",
        "dim": dim,
        "padded_share": 1.0 - n_real / batch.mask.numel(),
    }
    row["padded"] = n_real / _time_steps(padded_step, device, repeats)
    row["padded+collate"] = n_real / _time_steps(collate_step, device, repeats)
    row["naive"] = n_real / _time_steps(naive_step, device, repeats) if naive else float("nan")
    row["ratio"] = row["padded"] / row["naive"]
    return row


def _vm(field: str) -> int:
    """A ``/proc/self/status`` field in bytes (Linux), or -1."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return -1


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_memory(
    n_tiles: int,
    dim: int,
    max_tiles: int | None,
    device: torch.device,
    clock: str = "wall",
    threads: int | None = None,
) -> dict:
    """Peak memory of one training step (forward, loss, backward, AdamW) on one huge bag.

    Meant to run in a fresh process (see :func:`main`).
    """
    global _clock
    _clock = CLOCKS[clock]
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = (
        create_model("abmil", in_dim=dim, hidden_dim=HIDDEN_DIM, attn_dim=ATTN_DIM, dropout=0.25)
        .to(device)
        .train()
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    bag = _bags(1, (n_tiles, n_tiles), dim, seed=1)[0]
    rng = np.random.default_rng(0)
    batch = collate([bag], max_tiles=max_tiles, rng=rng).to(device)
    time_t = torch.ones(1, device=device)
    event_t = torch.ones(1, device=device)
    gc.collect()
    row = {
        "tiles": n_tiles,
        "max_tiles": max_tiles or "all",
        "input_mb": batch.features.numel() * 4 / 2**20,
    }
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        before = _vm("VmRSS")
        if not _reset_peak_rss():
            before = -1
    start = _clock()
    out = model(batch.features, mask=batch.mask)
    # One bag is a degenerate Cox risk set (zero gradient), but backward does all the same work.
    _optimiser_step(model, optimizer, cox_nll(out.risk, time_t, event_t))
    _sync(device)
    row["step_s"] = _clock() - start
    if device.type == "cuda":
        row["step_peak_mb"] = (torch.cuda.max_memory_allocated(device) - before) / 2**20
    else:
        row["step_peak_mb"] = (_vm("VmHWM") - before) / 2**20 if before >= 0 else float("nan")
    del batch, out
    return row


def _table(rows: list[dict], columns: list[str]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---:|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dim", type=int, default=1024, help="feature dim (default 1024)")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per measurement")
    parser.add_argument(
        "--huge-tiles", type=int, default=200_000, help="tiles of the bag of the memory measurement"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall time, or this process's CPU time (steadier on a shared machine; use with "
        "--threads 1, as CPU time adds up over threads)",
    )
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args(argv)
    global _clock
    _clock = CLOCKS[args.clock]
    if args.clock == "cpu" and device_is_cuda(args.device):
        parser.error("--clock cpu does not measure GPU work; use --clock wall with --device cuda")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")

    # (bags per batch, tile range): the study's top-k tiles, a few hundred, a few thousand.
    configs = [(16, (8, 32)), (16, (64, 256)), (16, (512, 2048))]
    if device.type == "cuda":
        configs += [(32, (8192, 8192))]
    rows = []
    for n_bags, lengths in configs:
        naive = not (device.type == "cuda" and lengths[0] >= 8192)
        rows.append(throughput(n_bags, lengths, args.dim, device, args.repeats, naive=naive))
        print(f"  done: {n_bags} bags of {lengths[0]}-{lengths[1]} tiles", file=sys.stderr)
    # Each memory measurement runs in a fresh process: memory freed by earlier work stays
    # resident in this one (the allocator keeps it) and would hide the step's own peak.
    spawn = mp.get_context("spawn")
    mem = []
    for max_tiles in (None, 16_384):
        with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
            job = pool.submit(
                peak_memory,
                args.huge_tiles,
                args.dim,
                max_tiles,
                device,
                args.clock,
                torch.get_num_threads(),
            )
            mem.append(job.result())

    thr_cols = [
        "bags",
        "tiles",
        "dim",
        "padded_share",
        "padded",
        "padded+collate",
        "naive",
        "ratio",
    ]
    mem_cols = ["tiles", "max_tiles", "input_mb", "step_peak_mb", "step_s"]
    thr = _table(rows, thr_cols)
    mem_table = _table(mem, mem_cols)
    print("Training step throughput, instances (real tiles) / s:\n" + thr)
    print("\nOne training step on one huge bag:\n" + mem_table)

    header = header_lines(
        "train_throughput",
        argv,
        threads=torch.get_num_threads(),
        device=gpu_name(device),
        extra_versions=f"numpy {np.__version__}",
    )
    memory_note = (
        "GPU memory allocated by torch during the step, minus before it"
        if device.type == "cuda"
        else "resident-set high-water mark (VmHWM, reset via /proc/self/clear_refs) during the "
        "step minus VmRSS before it; the input tensor is excluded"
    )
    header_text = "\n".join(header)
    section = f"""## Training throughput and huge-bag memory ({args.device}) -- {dt.date.today().isoformat()}

{header_text}
- Load average at the end (1/5/15 min): {load_average()}
- clock: {args.clock} ({"wall-clock time" if args.clock == "wall" else "CPU time of the process"})
- model: gated ABMIL {args.dim} -> {HIDDEN_DIM} -> {ATTN_DIM}, Cox loss, AdamW, grad clipping;
  one step = forward + loss + backward + clip + optimiser step; median of {args.repeats} steps
- `padded`: one forward over the padded batch (batch built before timing), the model's
  per-tile layers (instance MLP, attention scores) on the real tiles only; `padded+collate`:
  building the batch from numpy bags included; `naive`: a Python loop of one forward per bag,
  same loss, one backward. Instances = real tiles (padding not counted); `ratio` =
  padded/naive.

{thr}

Peak memory of one training step on one bag ({memory_note}):

{mem_table}
"""
    append_results(args.results, section)
    print(f"\nappended to {args.results}")


if __name__ == "__main__":
    main()
