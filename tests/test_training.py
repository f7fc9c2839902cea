"""Early stopping on a small inner split: the monitored value, smoothing, minimum epochs and
weight averaging."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from mil_crcrs.data.bags import PatientBags
from mil_crcrs.data.cohort import read_cohort
from mil_crcrs.data.store import FeatureStore
from mil_crcrs.errors import InputError
from mil_crcrs.models import create_model
from mil_crcrs.train.early_stopping import EarlyStopping
from mil_crcrs.train.loop import TrainSettings, evaluate, train_model
from mil_crcrs.train.losses import cox_nll, make_loss
from mil_crcrs.train.settings import FitSettings
from tests.helpers import write_cohort

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


class Counter(nn.Module):
    """A 'model' whose one weight is set to the epoch number, so kept weights name epochs."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.register_buffer("seen", torch.zeros(1))


def run(stopping: EarlyStopping, scores: list[float | None]) -> tuple[int, float, int]:
    """Feed ``scores`` epoch by epoch; returns (chosen epoch, kept weight, epochs run)."""
    model = Counter()
    epochs = 0
    for epoch, score in enumerate(scores, start=1):
        epochs = epoch
        with torch.no_grad():
            model.w.fill_(epoch)
            model.seen.fill_(epoch)
        if stopping.update(epoch, score, model):
            break
    chosen = stopping.restore(model, epochs)
    return chosen, float(model.w.detach()), epochs


def test_the_plain_rule_keeps_the_best_epoch_and_stops_after_patience():
    chosen, weight, epochs = run(EarlyStopping(patience=2), [0.5, 0.7, 0.6, 0.65, 0.9])
    assert (chosen, weight, epochs) == (2, 2.0, 4)


def test_smoothing_prefers_a_good_stretch_to_a_lucky_epoch():
    scores = [0.5, 0.9, 0.5, 0.5, 0.7, 0.72, 0.74, 0.6]
    assert run(EarlyStopping(patience=None), scores)[0] == 2  # the lucky spike
    # Means over the last 3 epochs: .5 .7 .633 .633 .567 .64 .72 .687: the stretch 5-7 wins.
    assert run(EarlyStopping(patience=None, smooth_epochs=3), scores)[0] == 7


def test_min_epochs_neither_chooses_nor_stops_before_it():
    chosen, _, epochs = run(EarlyStopping(patience=1, min_epochs=4), [0.9, 0.1, 0.1, 0.3, 0.2])
    assert (chosen, epochs) == (4, 5)


def test_weight_averaging_keeps_the_mean_of_the_last_epochs_up_to_the_chosen_one():
    stopping = EarlyStopping(patience=2, average_epochs=3)
    model = Counter()
    for epoch, score in enumerate([0.5, 0.6, 0.7, 0.8, 0.6, 0.6], start=1):
        with torch.no_grad():
            model.w.fill_(epoch)
            model.seen.fill_(epoch)
        if stopping.update(epoch, score, model):
            break
    assert stopping.restore(model, epoch) == 4
    assert float(model.w.detach()) == pytest.approx(3.0)  # mean of epochs 2, 3, 4
    assert float(model.seen) == 4.0  # buffers are the chosen epoch's, never averaged


def test_without_any_score_the_last_epochs_are_kept():
    assert run(EarlyStopping(patience=2), [None, None, None]) == (3, 3.0, 3)
    _, weight, _ = run(EarlyStopping(patience=2, average_epochs=2), [None, None, None])
    assert weight == pytest.approx(2.5)
    assert run(EarlyStopping(patience=2), [math.nan, math.nan])[0] == 2


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    features, clinical = write_cohort(tmp_path_factory.mktemp("es"), n=30)
    cohort = read_cohort(clinical)
    return PatientBags(cohort, FeatureStore(features), cache=True), cohort.time, cohort.event


def test_evaluate_reports_the_inner_loss_over_the_whole_split(bags):
    cohort_bags, time, event = bags
    torch.manual_seed(0)
    model = create_model("abmil", in_dim=6, hidden_dim=8, attn_dim=4)
    loss_fn = make_loss(FitSettings(ties="breslow"))
    result = evaluate(model, list(cohort_bags), time, event, batch_size=4, loss_fn=loss_fn)
    with torch.no_grad():
        risk = torch.cat([model(torch.as_tensor(b.features)[None]).risk for b in cohort_bags])
    expected = float(cox_nll(risk.double(), time, event, ties="breslow"))
    assert result["loss"] == pytest.approx(expected, rel=1e-6)
    assert math.isnan(evaluate(model, list(cohort_bags), time, event)["loss"])


def test_loss_monitored_training_records_and_uses_the_inner_loss(bags):
    cohort_bags, time, event = bags
    torch.manual_seed(0)
    model = create_model("abmil", in_dim=6, hidden_dim=8, attn_dim=4)
    result = train_model(
        model,
        cohort_bags,
        time,
        event,
        np.arange(22),
        np.arange(22, 30),
        make_loss(FitSettings()),
        settings=TrainSettings(
            epochs=6,
            batch_size=8,
            lr=1e-2,
            patience=None,
            monitor="loss",
            average_epochs=2,
            progress=False,
        ),
    )
    val_loss = [h["val_loss"] for h in result.history]
    assert len(val_loss) == 6 and all(np.isfinite(val_loss))
    assert result.best_epoch == int(np.argmin(val_loss)) + 1


def test_bad_early_stopping_settings_name_the_setting():
    with pytest.raises(InputError, match="monitor must be one of c, loss"):
        FitSettings(monitor="auc")
    for name in ("min_epochs", "smooth_epochs", "average_epochs"):
        with pytest.raises(InputError, match=f"{name} must be at least 1"):
            FitSettings(**{name: 0})
