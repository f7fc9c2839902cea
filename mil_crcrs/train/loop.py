"""The training loop, as plain functions with explicit parameters.

- :func:`iterate_batches` shuffles patients and pads them into batches of at least
  ``batch_size`` bags (the remainder is spread over the batches rather than left as a tiny last
  batch: a Cox loss over a handful of bags is nearly degenerate);
- :func:`train_one_epoch` runs one pass of optimiser steps;
- :func:`predict_risk` and :func:`evaluate` score bags with every tile;
- :func:`train_model` puts these together: AdamW, a cosine or one-cycle schedule, gradient
  clipping, and early stopping on an inner validation split (:class:`EarlyStopping`).

Early stopping. A 40-patient inner split gives a C-index that jumps by several hundredths
between epochs, so the epoch with the best raw C is largely the luckiest one. The rule is
configurable: ``monitor`` is the inner split's Harrell C (``"c"``) or its training loss
(``"loss"``: the Cox partial likelihood over the whole inner split, or the discrete-time
likelihood), which uses the size of every risk difference rather than only their order; the
monitored value can be averaged over the last ``smooth_epochs`` epochs; no epoch before
``min_epochs`` is chosen or counts towards ``patience``; and the weights kept can be the average
of the last ``average_epochs`` epochs up to the chosen one (as stochastic weight averaging
does). ``monitor="c"`` with all three at 1 is the plain rule: the weights of the epoch with the
best inner C, stopping after ``patience`` epochs without a better one.

Reproducibility: all randomness comes from the ``seed`` given to :func:`train_model` (a
``numpy.random.default_rng`` for shuffling and tile subsampling, and the torch generator, forked
and seeded, for dropout). On the CPU two runs with the same seed give bitwise identical weights.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from mil_crcrs.data.bags import PaddedBatch, PatientBag, collate
from mil_crcrs.device import resolve_device
from mil_crcrs.errors import InputError
from mil_crcrs.models import MILOutput
from mil_crcrs.runlog import bars_wanted
from mil_crcrs.stats.metrics import harrell_c

#: ``loss_fn(output, time, event) -> scalar``: output is the model's ``MILOutput`` for a batch,
#: time (B,) float and event (B,) float tensors on the model's device.
LossFn = Callable[[object, torch.Tensor, torch.Tensor], torch.Tensor]
Batch = tuple[PaddedBatch, torch.Tensor, torch.Tensor]

SCHEDULES = ("cosine", "onecycle")
#: Where to train: "auto" picks cuda when available.
#: What early stopping watches on the inner split: Harrell's C, or the training loss.
MONITORS = ("c", "loss")
#: Prediction pads at most this many tiles per batch (batch size x longest bag), so that a
#: cohort of huge bags does not need huge memory; a single bag is never split.
MAX_BATCH_TILES = 1 << 18


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Run a block with torch's generators seeded, restoring the outer state afterwards.

    Model initialisation and dropout draw from torch's global generator; forking it keeps a
    fit from disturbing (or being disturbed by) the caller's random state. The CPU kernels a MIL
    model uses (matmul, softmax, elementwise, reductions) are deterministic for a fixed thread
    count, so on the CPU the same seed gives bitwise identical results (tested). On CUDA some
    backward kernels use atomics and results may differ in the last bits.
    """
    device = torch.device(device)
    devices = []
    if device.type == "cuda":
        devices = [torch.cuda.current_device() if device.index is None else device.index]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def iterate_batches(
    bags: Sequence[PatientBag],
    indices: np.ndarray,
    time: np.ndarray,
    event: np.ndarray,
    batch_size: int,
    rng: np.random.Generator,
    max_tiles: int | None = None,
) -> Iterator[Batch]:
    """Shuffled, padded training batches of at least ``batch_size`` bags.

    Parameters
    ----------
    bags : all of the cohort's bags
    indices : (n,) positions of the bags to use
    time, event : (n_bags,) outcome of every bag in ``bags``
    batch_size : the smallest batch (with fewer bags than that, one batch of all of them)
    rng : generator for the shuffle and for tile subsampling
    max_tiles : cap on tiles per bag (random subset), or None for all tiles

    Yields
    ------
    (PaddedBatch, time (B,) float32, event (B,) float32)
    """
    order = rng.permutation(np.asarray(indices))
    if hasattr(
        bags, "train_batches"
    ):  # device-resident bags (mil_crcrs.data.packed) gather their own
        yield from bags.train_batches(order, time, event, batch_size, rng, max_tiles)
        return
    if hasattr(bags, "prefetch"):  # streamed bags (mil_crcrs.data.cache) read ahead in order
        bags.prefetch(order)
    n_batches = max(1, len(order) // batch_size)
    for chunk in np.array_split(order, n_batches):
        batch = collate([bags[i] for i in chunk], max_tiles=max_tiles, rng=rng)
        yield (
            batch,
            torch.as_tensor(time[chunk], dtype=torch.float32),
            torch.as_tensor(event[chunk], dtype=torch.float32),
        )


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[Batch],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    loss_fn: LossFn,
    clip_norm: float | None = 1.0,
) -> float:
    """One pass over ``batches``: forward the padded batch, loss, backward, clip, step.

    Parameters
    ----------
    model : a MIL model taking ``(features, mask=, grid=)``
    batches : (PaddedBatch, time, event) tuples, e.g. from :func:`iterate_batches`
    optimizer, scheduler : the scheduler (if any) is stepped after every optimiser step
    loss_fn : ``loss_fn(output, time, event) -> scalar``
    clip_norm : clip the global gradient norm to this; None or 0 = no clipping

    Returns
    -------
    float
        The mean batch loss.
    """
    model.train()
    device = _device_of(model)
    losses = []
    for batch, time, event in batches:
        batch = batch.to(device)
        out = model(batch.features, mask=batch.mask, grid=batch.grid)
        loss = loss_fn(out, time.to(device), event.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_norm:
            nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        losses.append(float(loss.detach()))
    return float(np.mean(losses)) if losses else float("nan")


def eval_groups(
    lengths: np.ndarray, batch_size: int, max_batch_tiles: int = MAX_BATCH_TILES
) -> Iterator[np.ndarray]:
    """Positions of bags of ``lengths`` tiles grouped for prediction, similar lengths together:
    at most ``batch_size`` bags and, unless a bag alone is longer, ``max_batch_tiles`` padded
    tiles per group."""
    order = np.argsort(lengths, kind="stable")
    start = 0
    while start < len(order):
        stop = start + 1
        while (
            stop < len(order)
            and stop - start < batch_size
            and (stop - start + 1) * lengths[order[stop]] <= max_batch_tiles
        ):
            stop += 1
        yield order[start:stop]
        start = stop


def eval_batches(
    bags: Sequence[PatientBag], batch_size: int, max_batch_tiles: int = MAX_BATCH_TILES
) -> Iterator[tuple[np.ndarray, PaddedBatch]]:
    """Batches for prediction: every tile, bags of similar length together.

    Yields ``(positions, PaddedBatch)``; at most ``batch_size`` bags and, unless a bag alone is
    longer, at most ``max_batch_tiles`` padded tiles per batch (see :func:`eval_groups`).
    """
    lengths = getattr(bags, "n_tiles", None)  # known without reading, for cached/packed bags
    if lengths is None:
        lengths = np.array([bag.n_tiles for bag in bags])
    groups = list(eval_groups(np.asarray(lengths), batch_size, max_batch_tiles))
    if hasattr(bags, "eval_batches"):  # device-resident bags gather their own
        yield from bags.eval_batches(groups)
        return
    if hasattr(bags, "prefetch") and groups:  # streamed bags are read ahead in this order
        bags.prefetch(np.concatenate(groups))
    for chunk in groups:
        yield chunk, collate([bags[i] for i in chunk])


@torch.no_grad()
def predict_risk(
    model: nn.Module,
    bags: Sequence[PatientBag],
    batch_size: int = 16,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """The model's risk for each bag, using all tiles (no subsampling, no dropout).

    Parameters
    ----------
    model : a MIL model; it is moved to ``device`` and put in eval mode
    bags : the bags to score
    batch_size : bags per forward pass
    device : where to run

    Returns
    -------
    (n_bags,) float64 risk, higher = worse, in the order of ``bags``
    """
    device = resolve_device(device)
    model.to(device).eval()
    risk = np.empty(len(bags), dtype=np.float64)
    for positions, batch in eval_batches(bags, batch_size):
        batch = batch.to(device)
        out = model(batch.features, mask=batch.mask, grid=batch.grid)
        risk[positions] = out.risk.double().cpu().numpy()
    return risk


def evaluate(
    model: nn.Module,
    bags: Sequence[PatientBag],
    time: np.ndarray,
    event: np.ndarray,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    loss_fn: LossFn | None = None,
) -> dict[str, float]:
    """Score ``bags``: ``{"harrell_c", "loss", "n_patients", "n_events"}``.

    ``time`` and ``event`` are (n_bags,) arrays aligned with ``bags``; C is NaN when there is no
    comparable pair. ``loss`` is ``loss_fn`` over all of ``bags`` at once (every tile, eval
    mode), NaN without a ``loss_fn``.
    """
    device = resolve_device(device)
    model.to(device).eval()
    risk = torch.empty(len(bags), dtype=torch.float64)
    logits: torch.Tensor | None = None
    with torch.no_grad():
        for positions, batch in eval_batches(bags, batch_size):
            batch = batch.to(device)
            out = model(batch.features, mask=batch.mask, grid=batch.grid)
            index = torch.as_tensor(positions)
            risk[index] = out.risk.double().cpu()
            if logits is None:
                logits = torch.empty((len(bags), out.logits.shape[-1]), dtype=torch.float64)
            logits[index] = out.logits.double().cpu()
        loss = float("nan")
        if loss_fn is not None and logits is not None:
            output = MILOutput(risk, logits, torch.empty(0))
            t = torch.as_tensor(time, dtype=torch.float64)
            e = torch.as_tensor(event, dtype=torch.float64)
            loss = float(loss_fn(output, t, e))
    return {
        "harrell_c": harrell_c(time, event, risk.numpy()),
        "loss": loss,
        "n_patients": len(bags),
        "n_events": int(np.sum(event)),
    }


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW over every trainable parameter."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def make_scheduler(
    optimizer: torch.optim.Optimizer, schedule: str, lr: float, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """A learning-rate schedule stepped once per batch: ``"cosine"`` (annealing to zero) or
    ``"onecycle"`` (warm-up to ``lr`` then anneal)."""
    total_steps = max(1, total_steps)
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    if schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total_steps)
    raise InputError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")


class EarlyStopping:
    """Which epoch's weights to keep, from one inner-validation score per epoch (higher = better).

    Parameters
    ----------
    patience : stop after this many epochs (from ``min_epochs`` on) without a better smoothed
        score; None = never stop early
    min_epochs : no epoch before this one is chosen or counts towards ``patience``
    smooth_epochs : the score compared is the mean of the last this-many epochs' scores
    average_epochs : the weights kept are the mean of the last this-many epochs' weights up to
        the chosen epoch (1 = that epoch's own weights); buffers come from the chosen epoch
    """

    def __init__(
        self,
        patience: int | None = 10,
        min_epochs: int = 1,
        smooth_epochs: int = 1,
        average_epochs: int = 1,
    ) -> None:
        self.patience = patience
        self.min_epochs = min_epochs
        self.scores: deque[float] = deque(maxlen=max(1, smooth_epochs))
        self.recent: deque[dict[str, torch.Tensor]] = deque(maxlen=max(1, average_epochs))
        self.best_score, self.best_epoch, self.since_best = -math.inf, 0, 0
        self.best_state: dict[str, torch.Tensor] | None = None

    def update(self, epoch: int, score: float | None, model: nn.Module) -> bool:
        """Record epoch ``epoch`` (1-based) with its ``score`` (None or NaN = not scored);
        returns True when training should stop."""
        if self.recent.maxlen > 1:
            self.recent.append(copy.deepcopy(model.state_dict()))
        if score is None or math.isnan(score):
            return False
        self.scores.append(score)
        if epoch < self.min_epochs:
            return False
        smoothed = float(np.mean(self.scores))
        if smoothed > self.best_score:
            self.best_score, self.best_epoch, self.since_best = smoothed, epoch, 0
            self.best_state = self._weights(model)
            return False
        self.since_best += 1
        return self.patience is not None and self.since_best >= self.patience

    def _weights(self, model: nn.Module) -> dict[str, torch.Tensor]:
        state = copy.deepcopy(model.state_dict())
        if len(self.recent) > 1:
            params = {name for name, _ in model.named_parameters()}
            for name in params & set(state):
                state[name] = torch.stack([s[name] for s in self.recent]).mean(0)
        return state

    def restore(self, model: nn.Module, epochs_run: int) -> int:
        """Load the kept weights into ``model``; returns the chosen epoch. Without any scored
        epoch the weights are those of the last epoch(s) (averaged as above)."""
        if self.best_state is None:
            self.best_epoch = epochs_run
            self.best_state = self._weights(model)
        model.load_state_dict(self.best_state)
        return self.best_epoch


@dataclass
class TrainResult:
    """What :func:`train_model` returns.

    Attributes
    ----------
    model : the trained model in eval mode, with the weights early stopping chose
    best_epoch : 1-based epoch whose weights were kept (the last one without early stopping)
    best_val_c : inner-validation Harrell C at that epoch (NaN without inner validation)
    history : one dict per epoch: ``epoch``, ``loss``, ``val_c``, ``val_loss``
    """

    model: nn.Module
    best_epoch: int
    best_val_c: float
    history: list[dict[str, float]] = field(default_factory=list)


def train_model(
    model: nn.Module,
    bags: Sequence[PatientBag],
    time: np.ndarray,
    event: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    loss_fn: LossFn,
    *,
    epochs: int = 50,
    batch_size: int = 16,
    lr: float = 2e-4,
    weight_decay: float = 1e-4,
    schedule: str = "cosine",
    clip_norm: float | None = 1.0,
    max_tiles: int | None = None,
    patience: int | None = 10,
    monitor: str = "c",
    min_epochs: int = 1,
    smooth_epochs: int = 1,
    average_epochs: int = 1,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    desc: str = "training",
) -> TrainResult:
    """Train ``model`` on ``bags[train_idx]``, early-stopping on the inner split ``bags[val_idx]``.

    Parameters
    ----------
    model : a freshly built MIL model (moved to ``device``)
    bags : the cohort's bags; ``time`` and ``event`` are (n_bags,) arrays aligned with them
    train_idx : (n_train,) positions trained on
    val_idx : (n_val,) positions of the inner validation split; empty = no early stopping.
        Must not include any patient whose score is later reported.
    loss_fn : ``loss_fn(output, time, event) -> scalar``
    epochs, batch_size, lr, weight_decay, schedule, clip_norm : the optimisation
    max_tiles : random subset of at most this many tiles per bag per step (training only)
    patience, min_epochs, smooth_epochs, average_epochs : see :class:`EarlyStopping`
    monitor : ``"c"`` (inner Harrell C) or ``"loss"`` (``loss_fn`` on the inner split, lower is
        better)
    seed : seeds shuffling, tile subsampling and dropout
    device : where to train
    progress : show a tqdm bar (on a terminal only; see :func:`mil_crcrs.runlog.bars_wanted`)
    desc : the bar's label

    Returns
    -------
    TrainResult
    """
    from tqdm.auto import tqdm

    if monitor not in MONITORS:
        raise InputError(f"monitor must be one of {', '.join(MONITORS)}, got {monitor!r}")
    device = resolve_device(device)
    train_idx = np.asarray(train_idx, dtype=np.int64)
    val_idx = np.asarray(val_idx, dtype=np.int64)
    time = np.asarray(time, dtype=np.float64)
    event = np.asarray(event, dtype=np.float64)
    # A lazy view where the bags offer one (streamed bags must not all sit in a list).
    val_bags = bags.subset(val_idx) if hasattr(bags, "subset") else [bags[i] for i in val_idx]
    rng = np.random.default_rng(seed)
    steps_per_epoch = max(1, len(train_idx) // batch_size)
    stopping = EarlyStopping(patience, min_epochs, smooth_epochs, average_epochs)

    with seeded(seed, device):
        model.to(device)
        optimizer = make_optimizer(model, lr, weight_decay)
        scheduler = make_scheduler(optimizer, schedule, lr, epochs * steps_per_epoch)
        history: list[dict[str, float]] = []
        # Bars only on a terminal: in a log file they would be carriage-return noise.
        bar = tqdm(range(1, epochs + 1), desc=desc, disable=not bars_wanted(progress), leave=False)
        for epoch in bar:
            batches = iterate_batches(
                bags, train_idx, time, event, batch_size, rng, max_tiles=max_tiles
            )
            loss = train_one_epoch(model, batches, optimizer, scheduler, loss_fn, clip_norm)
            val = {"harrell_c": float("nan"), "loss": float("nan")}
            if val_bags:
                val = evaluate(
                    model,
                    val_bags,
                    time[val_idx],
                    event[val_idx],
                    batch_size,
                    device,
                    loss_fn=loss_fn if monitor == "loss" else None,
                )
            history.append(
                {"epoch": epoch, "loss": loss, "val_c": val["harrell_c"], "val_loss": val["loss"]}
            )
            bar.set_postfix(loss=f"{loss:.3f}", val_c=f"{val['harrell_c']:.3f}")
            score = None
            if val_bags:
                score = val["harrell_c"] if monitor == "c" else -val["loss"]
            if stopping.update(epoch, score, model):
                break
        bar.close()
    best_epoch = stopping.restore(model, len(history))
    model.eval()
    best_c = history[best_epoch - 1]["val_c"] if history else float("nan")
    return TrainResult(
        model=model, best_epoch=best_epoch, best_val_c=float(best_c), history=history
    )
