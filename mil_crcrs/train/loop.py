"""The training loop, as plain functions with explicit parameters.

- :func:`~mil_crcrs.train.batches.iterate_batches` shuffles patients and pads them into
  batches (:mod:`mil_crcrs.train.batches`);
- :func:`train_one_epoch` runs one pass of optimiser steps;
- :func:`predict_risk` and :func:`evaluate` score bags with every tile;
- :func:`train_model` puts these together: AdamW, a cosine or one-cycle schedule, gradient
  clipping, and early stopping on an inner validation split
  (:class:`~mil_crcrs.train.early_stopping.EarlyStopping`).

Reproducibility: all randomness comes from the ``seed`` given to :func:`train_model` (a
``numpy.random.default_rng`` for shuffling and tile subsampling, and the torch generator, forked
and seeded, for dropout). On the CPU two runs with the same seed give bitwise identical weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields

import numpy as np
import torch
from torch import nn

from mil_crcrs.data.bags import PatientBag
from mil_crcrs.device import resolve_device
from mil_crcrs.errors import SettingError
from mil_crcrs.models import MILOutput
from mil_crcrs.runlog import bars_wanted
from mil_crcrs.stats.metrics import harrell_c
from mil_crcrs.train.batches import Batch, eval_batches, iterate_batches
from mil_crcrs.train.early_stopping import EarlyStopping
from mil_crcrs.train.settings import MONITORS, SCHEDULES, FitSettings

#: ``loss_fn(output, time, event) -> scalar``: output is the model's ``MILOutput`` for a batch,
#: time (B,) float and event (B,) float tensors on the model's device.
LossFn = Callable[[object, torch.Tensor, torch.Tensor], torch.Tensor]


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
    raise SettingError("schedule", f"must be one of {', '.join(SCHEDULES)}, got {schedule!r}")


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


@dataclass(frozen=True)
class TrainSettings:
    """How :func:`train_model` trains one model (the defaults are this function's own; a fit
    takes them from its :class:`~mil_crcrs.train.settings.FitSettings`, see :meth:`from_fit`).

    Parameters
    ----------
    epochs, batch_size, lr, weight_decay, schedule, clip_norm : the optimisation (AdamW, a
        ``schedule`` in :data:`~mil_crcrs.train.settings.SCHEDULES` stepped per batch, the
        gradient norm clipped to ``clip_norm``; None or 0 = no clipping)
    max_tiles : random subset of at most this many tiles per bag per step (training only)
    patience, min_epochs, smooth_epochs, average_epochs : see :class:`EarlyStopping`
    monitor : ``"c"`` (inner Harrell C) or ``"loss"`` (the loss on the inner split, lower is
        better)
    progress : show a tqdm bar (on a terminal only; see :func:`mil_crcrs.runlog.bars_wanted`)
    """

    epochs: int = 50
    batch_size: int = 16
    lr: float = 2e-4
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    clip_norm: float | None = 1.0
    max_tiles: int | None = None
    patience: int | None = 10
    monitor: str = "c"
    min_epochs: int = 1
    smooth_epochs: int = 1
    average_epochs: int = 1
    progress: bool = True

    def __post_init__(self) -> None:
        if self.monitor not in MONITORS:
            raise SettingError(
                "monitor", f"must be one of {', '.join(MONITORS)}, got {self.monitor!r}"
            )

    @classmethod
    def from_fit(cls, settings: FitSettings) -> TrainSettings:
        """The training settings of a fit's fold models: the fields of the same name."""
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})


def _inner_validation(
    model: nn.Module,
    bags: Sequence[PatientBag],
    time: np.ndarray,
    event: np.ndarray,
    settings: TrainSettings,
    loss_fn: LossFn | None,
) -> dict[str, float]:
    """:func:`evaluate` on the inner split ``bags`` where the model is (NaNs without one)."""
    if not bags:
        return {"harrell_c": float("nan"), "loss": float("nan")}
    return evaluate(model, bags, time, event, settings.batch_size, _device_of(model), loss_fn)


def train_model(
    model: nn.Module,
    bags: Sequence[PatientBag],
    time: np.ndarray,
    event: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    loss_fn: LossFn,
    *,
    settings: TrainSettings = TrainSettings(),
    seed: int = 0,
    device: str | torch.device = "cpu",
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
    settings : the optimisation and early stopping
    seed : seeds shuffling, tile subsampling and dropout
    device : where to train
    desc : the progress bar's label

    Returns
    -------
    TrainResult
    """
    from tqdm.auto import tqdm

    s = settings
    device = resolve_device(device)
    train_idx = np.asarray(train_idx, dtype=np.int64)
    val_idx = np.asarray(val_idx, dtype=np.int64)
    time = np.asarray(time, dtype=np.float64)
    event = np.asarray(event, dtype=np.float64)
    # A lazy view where the bags offer one (streamed bags must not all sit in a list).
    val_bags = bags.subset(val_idx) if hasattr(bags, "subset") else [bags[i] for i in val_idx]
    rng = np.random.default_rng(seed)
    steps_per_epoch = max(1, len(train_idx) // s.batch_size)
    stopping = EarlyStopping(s.patience, s.min_epochs, s.smooth_epochs, s.average_epochs)
    inner_loss = loss_fn if s.monitor == "loss" else None

    with seeded(seed, device):
        model.to(device)
        optimizer = make_optimizer(model, s.lr, s.weight_decay)
        scheduler = make_scheduler(optimizer, s.schedule, s.lr, s.epochs * steps_per_epoch)
        history: list[dict[str, float]] = []
        # Bars only on a terminal: in a log file they would be carriage-return noise.
        bar = tqdm(
            range(1, s.epochs + 1), desc=desc, disable=not bars_wanted(s.progress), leave=False
        )
        for epoch in bar:
            batches = iterate_batches(
                bags, train_idx, time, event, s.batch_size, rng, max_tiles=s.max_tiles
            )
            loss = train_one_epoch(model, batches, optimizer, scheduler, loss_fn, s.clip_norm)
            val = _inner_validation(model, val_bags, time[val_idx], event[val_idx], s, inner_loss)
            history.append(
                {"epoch": epoch, "loss": loss, "val_c": val["harrell_c"], "val_loss": val["loss"]}
            )
            bar.set_postfix(loss=f"{loss:.3f}", val_c=f"{val['harrell_c']:.3f}")
            score = None
            if val_bags:
                score = val["harrell_c"] if s.monitor == "c" else -val["loss"]
            if stopping.update(epoch, score, model):
                break
        bar.close()
    best_epoch = stopping.restore(model, len(history))
    model.eval()
    best_c = history[best_epoch - 1]["val_c"] if history else float("nan")
    return TrainResult(
        model=model, best_epoch=best_epoch, best_val_c=float(best_c), history=history
    )
