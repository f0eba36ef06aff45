"""What is measured of a run: the metrics a campaign compares, which one is a task's
headline and which its validation metric, and the few that are computed from a run's
curves and final values (error quotient, learning speed)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Below this train loss the error quotient is floored: a float32 cross-entropy of a
# saturated network is mostly rounding there (x_c - logsumexp(x) loses what is below
# one ulp of the logit), and a zero would make the quotient infinite.
TRAIN_LOSS_FLOOR = 1e-6


@dataclass(frozen=True)
class MetricInfo:
    name: str
    label: str
    lower_is_better: bool
    percent: bool  # shown as a percentage
    classification_only: bool = False
    description: str = ""
    validation_based: bool = False  # measured on the split that chose the hyperparameters: exploratory only
    censored: bool = False  # has a ceiling that stands for "never": ranks only, no mean-based test


METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in (
        MetricInfo("test_error", "test error", True, True, True, "final test error (classifiers)"),
        MetricInfo(
            "test_loss", "test loss", True, False, False,
            "final test loss (the reconstruction loss of the auto-encoder)",
        ),
        MetricInfo(
            "log_error_quotient", "log error quotient", True, False, False,
            f"ln(final test loss / max(final train loss, {TRAIN_LOSS_FLOOR:g})): over-fitting on a log scale",
        ),
        MetricInfo(
            "train_loss_auc", "training-loss AUC", True, False, False,
            "area under the training-loss curve / epochs (learning speed)",
        ),
        MetricInfo(
            "best_val_loss", "best validation loss", True, False, False,
            "lowest validation loss over the epochs", validation_based=True,
        ),
        MetricInfo(
            "epochs_to_target", "epochs to target", True, False, False,
            "first epoch whose validation metric reaches the task target (epochs + 1 if never: censored)",
            validation_based=True, censored=True,
        ),
    )
}  # fmt: skip


def primary_metric(objective: str) -> str:
    """The headline metric of a task: test error for classifiers, test loss otherwise."""
    return "test_error" if objective == "classification" else "test_loss"


def validation_metric(objective: str) -> str:
    """The validation metric that chooses hyperparameters (a study's objective) and defines
    epochs-to-target: validation error for classifiers, validation loss otherwise."""
    return "val_loss" if objective == "reconstruction" else "val_error"


def metrics_for(objective: str) -> list[str]:
    return [m.name for m in METRICS.values() if objective == "classification" or not m.classification_only]


def log_error_quotient(test_loss: float | None, train_loss: float | None) -> float | None:
    """ln(test loss / train loss), the train loss floored at TRAIN_LOSS_FLOOR: the error
    quotient on the scale where it is roughly symmetric (a ratio of 2 and of 1/2 are
    equally far from 1) and never infinite."""
    if test_loss is None or train_loss is None or not (math.isfinite(test_loss) and math.isfinite(train_loss)):
        return None
    if test_loss <= 0:
        return None
    return math.log(test_loss / max(train_loss, TRAIN_LOSS_FLOOR))


# --------------------------------------------------------------------------- learning speed


def train_loss_auc(losses: Sequence[float]) -> float:
    """Area under the per-epoch training-loss curve (trapezoids), divided by the span in
    epochs: the average training loss over training. Lower means learning sooner."""
    y = np.asarray(losses, dtype=float)
    if y.size == 0:
        raise ValueError("train_loss_auc: empty curve")
    if y.size == 1:
        return float(y[0])
    return float(np.trapezoid(y) / (y.size - 1))


def epochs_to_target(curve: Sequence[float], target: float, lower_is_better: bool = True) -> int:
    """The first epoch (1-based) whose value reaches ``target``; len(curve) + 1 if none
    (a censored value: "not within the run")."""
    for epoch, value in enumerate(curve, start=1):
        if (value <= target) if lower_is_better else (value >= target):
            return epoch
    return len(curve) + 1
