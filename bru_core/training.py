"""One training run: a plain config in, a plain history out.

``train(config)`` runs the same under pytest, the CLI, an Optuna trial and a Prefect task.
All randomness comes from generators seeded by ``config.seed`` (initialisation, batch
order, augmentation: three independent streams), so the same seed gives the same numbers
on the CPU, and two activations trained with the same seed see the same batches in the
same order (a paired design).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from bru_core.activations import warm_up_kernels
from bru_core.config import TrainConfig
from bru_core.data import Data, Split, load_data
from bru_core.errors import ConfigError, NonFiniteLossError
from bru_core.models import build_model, model_kind, parameter_count
from bru_core.settings import get_settings
from bru_core.stats import TRAIN_LOSS_FLOOR

EVAL_BATCH_SIZE = 1024


@dataclass
class EpochRecord:
    epoch: int  # 1-based
    train_loss: float  # mean over the epoch's batches, as the weights moved
    train_error: float | None  # None for the auto-encoder
    val_loss: float
    val_error: float | None
    seconds: float  # training only, not evaluation
    lr: float
    test_loss: float | None = None  # only with test_every_epoch
    test_error: float | None = None


@dataclass
class History:
    config: dict[str, Any]
    objective: str
    device: str
    n_parameters: int
    epochs: list[EpochRecord] = field(default_factory=list)
    # After the last epoch, one clean evaluation pass over each split (the train split
    # too, with fixed weights: the error quotient test_loss / train_loss uses these).
    final: dict[str, float | None] = field(default_factory=dict)
    seconds: float = 0.0  # in a pack, this member's share of the pack's
    model: nn.Module | None = field(default=None, repr=False, compare=False)  # trained; not serialised
    pack_size: int = 1  # members trained with it as one batched model (bru_core.packed); 1: alone

    def summary(self) -> dict[str, Any]:
        return {**self.final, "epochs": len(self.epochs), "seconds": round(self.seconds, 3)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: everything but the model."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "model"} | {
            "epochs": [asdict(e) for e in self.epochs]
        }


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device: {requested} requested but no CUDA device is available; use cpu or auto")
        index = int(requested[5:]) if ":" in requested else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"device: {requested} does not exist; this machine has {torch.cuda.device_count()} GPU(s)"
            )
    return torch.device(requested)


def _seeds(seed: int) -> tuple[int, int, int]:
    """Independent seeds for initialisation, batch order and augmentation."""
    init, order, augment = np.random.SeedSequence(seed).generate_state(3)
    return int(init), int(order), int(augment)


def _optimizer(config: TrainConfig, params: Any) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov, weight_decay=config.weight_decay
        )
    kind = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return kind(params, lr=config.lr, weight_decay=config.weight_decay)


def _scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    """(scheduler, steps per batch?) or (None, False)."""
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * steps_per_epoch), True
    if config.schedule == "step":
        every = config.step_epochs or max(1, config.epochs // 3)
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=every, gamma=config.step_gamma), False
    return None, False


class _Objective:
    """Loss and error for a batch, by the model's objective."""

    def __init__(self, kind: str) -> None:
        self.reconstruction = kind == "reconstruction"

    def loss(self, output: torch.Tensor, images: torch.Tensor, labels: torch.Tensor, reduction: str = "mean"):
        if self.reconstruction:
            per_example = F.mse_loss(output.float(), Data.pixels(images), reduction="none").mean(dim=1)
            return per_example.mean() if reduction == "mean" else per_example.sum()
        return F.cross_entropy(output.float(), labels, reduction=reduction)

    def wrong(self, output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
        return None if self.reconstruction else (output.argmax(dim=1) != labels).sum()


def _autocast(device: torch.device, precision: str):
    enabled = precision == "bf16"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


class _EpochTimer:
    """Wall seconds on the CPU; CUDA events on a GPU (device time, not launch time)."""

    def __init__(self, device: torch.device) -> None:
        self.started = time.perf_counter()
        self.events = None
        if device.type == "cuda":
            self.events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            self.events[0].record()

    def seconds(self) -> float:
        if self.events is None:
            return time.perf_counter() - self.started
        self.events[1].record()
        self.events[1].synchronize()
        return self.events[0].elapsed_time(self.events[1]) / 1e3


def evaluate(
    model: nn.Module, data: Data, split: Split, objective: str, precision: str = "fp32"
) -> tuple[float, float | None]:
    """Mean loss and error rate (None for reconstruction) over a split, weights fixed."""
    obj = _Objective(objective)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=data.device)
    wrong = torch.zeros((), device=data.device, dtype=torch.int64)
    with torch.inference_mode(), _autocast(data.device, precision):
        for inputs, images, labels in data.batches(split, EVAL_BATCH_SIZE):
            output = model(inputs)
            loss_sum += obj.loss(output, images, labels, reduction="sum")
            batch_wrong = obj.wrong(output, labels)
            if batch_wrong is not None:
                wrong += batch_wrong
    model.train(was_training)
    n = len(split)
    return float(loss_sum) / n, (None if obj.reconstruction else int(wrong) / n)


def prepare_data(config: TrainConfig, device: torch.device) -> Data:
    data_dir = config.data_dir if config.data_dir is not None else get_settings().data_path
    return load_data(
        config.dataset,
        data_dir,
        download=config.download,
        val_fraction=config.val_fraction,
        split_seed=config.split_seed,
        augment=config.augment,
        device=device,
    )


EpochCallback = Callable[[EpochRecord], None]
BatchCallback = Callable[[int, int], None]  # (batch done, batches per epoch)


def device_and_data(config: TrainConfig, data: Data | None) -> tuple[torch.device, Data]:
    """The run's device (bf16 autocast needs CUDA) and its data there: ``data`` moved, or
    loaded as the config says."""
    device = resolve_device(config.device)
    if config.precision == "bf16" and device.type != "cuda":
        raise ConfigError("precision: bf16 autocast needs a CUDA device; use fp32 on the CPU")
    if data is None:
        return device, prepare_data(config, device)
    return device, data if data.device == device else data.to(device)


class Trainer:
    """The state of one run (model, optimiser, generators), advanced an epoch at a time."""

    def __init__(self, config: TrainConfig | Mapping[str, Any], data: Data | None = None) -> None:
        self.config = config = TrainConfig.parse(config)
        self.device, self.data = device, data = device_and_data(config, data)
        self.kind = model_kind(config.model)
        self.objective = _Objective(self.kind.objective)
        init_seed, order_seed, augment_seed = _seeds(config.seed)
        generator = torch.Generator().manual_seed(init_seed)
        self.model = build_model(config.model, data.info, config.activation, generator).to(device)
        dtypes = [torch.float32, torch.bfloat16] if config.precision == "bf16" else [torch.float32]
        self.fused_kernels = warm_up_kernels(self.model, device, dtypes)  # compile before any timing
        self.order = torch.Generator().manual_seed(order_seed)
        self.augment = torch.Generator().manual_seed(augment_seed)
        # NHWC suits cuDNN's convolution kernels (and tensor cores under bf16)
        self.channels_last = device.type == "cuda" and self.kind.convolutional
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = _optimizer(config, self.model.parameters())
        self.forward: Callable[[torch.Tensor], torch.Tensor] = self.model
        if config.compile:
            self.forward = torch.compile(self.model)
        self.n_batches = data.n_batches(data.train, config.batch_size)
        self.scheduler, self.per_batch = _scheduler(config, self.optimizer, self.n_batches)
        sizes = torch.full((self.n_batches,), float(config.batch_size), device=device)
        sizes[-1] = len(data.train) - config.batch_size * (self.n_batches - 1)
        self._batch_sizes = sizes

    def train_epoch(self, epoch: int, on_batch: BatchCallback | None = None) -> tuple[float, float | None, float]:
        """One pass over the training split: (mean loss, error rate, seconds)."""
        config, model, optimizer, objective = self.config, self.model, self.optimizer, self.objective
        model.train()
        timer = _EpochTimer(self.device)
        # Losses stay on the device and are checked once per epoch: no sync per batch.
        batch_losses = torch.empty(self.n_batches, device=self.device)
        wrong = torch.zeros((), device=self.device, dtype=torch.int64)
        batches = self.data.batches(self.data.train, config.batch_size, self.order, self.augment)
        for b, (inputs, images, labels) in enumerate(batches):
            if self.channels_last:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            with _autocast(self.device, config.precision):
                output = self.forward(inputs)
                loss = objective.loss(output, images, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if self.scheduler is not None and self.per_batch:
                self.scheduler.step()
            batch_losses[b] = loss.detach()
            batch_wrong = objective.wrong(output.detach(), labels)
            if batch_wrong is not None:
                wrong += batch_wrong
            if on_batch is not None:
                on_batch(b + 1, self.n_batches)
        finite = torch.isfinite(batch_losses)
        if not bool(finite.all()):
            first = int((~finite).nonzero()[0])
            raise NonFiniteLossError(epoch, first + 1, float(batch_losses[first]))
        if self.scheduler is not None and not self.per_batch:
            self.scheduler.step()
        n = len(self.data.train)
        train_loss = float((batch_losses * self._batch_sizes).sum()) / n
        seconds = timer.seconds()
        return train_loss, (None if objective.reconstruction else int(wrong) / n), seconds

    def evaluate(self, split: Split) -> tuple[float, float | None]:
        return evaluate(self.model, self.data, split, self.kind.objective, self.config.precision)

    def epoch(self, epoch: int, on_batch: BatchCallback | None = None) -> EpochRecord:
        """Train one epoch, then measure the validation (and, if asked, test) split."""
        lr = self.optimizer.param_groups[0]["lr"]
        train_loss, train_error, seconds = self.train_epoch(epoch, on_batch)
        val_loss, val_error = self.evaluate(self.data.val)
        record = EpochRecord(epoch, train_loss, train_error, val_loss, val_error, seconds, lr)
        if self.config.test_every_epoch:
            record.test_loss, record.test_error = self.evaluate(self.data.test)
        return record

    def final_metrics(self, include_test: bool = True) -> dict[str, float | None]:
        """One clean pass over every split with the final weights (the test split only
        when asked: a search must never see it)."""
        final: dict[str, float | None] = {}
        splits = [("train", self.data.train), ("val", self.data.val)]
        if include_test:
            splits.append(("test", self.data.test))
        for name, split in splits:
            final[f"{name}_loss"], final[f"{name}_error"] = self.evaluate(split)
        if include_test:
            train_loss, test_loss = final["train_loss"], final["test_loss"]
            # floored like the statistics' log error quotient: never infinite for a network
            # that fits its training set to float32 rounding
            final["error_quotient"] = test_loss / max(train_loss, TRAIN_LOSS_FLOOR)
        return final


def train(
    config: TrainConfig | Mapping[str, Any],
    on_epoch: EpochCallback | None = None,
    on_batch: BatchCallback | None = None,
    data: Data | None = None,
    evaluate_test: bool = True,
) -> History:
    """Train one model and return its history.

    ``on_epoch`` sees each EpochRecord as it is made (log it, or raise to prune);
    ``on_batch`` is for progress bars. ``data`` may be passed in to reuse loaded data.
    ``evaluate_test=False`` (hyperparameter search) leaves the test split untouched.
    Raises NonFiniteLossError naming the first epoch and batch whose loss was not finite."""
    started = time.perf_counter()
    trainer = Trainer(config, data)
    config = trainer.config
    if config.test_every_epoch and not evaluate_test:
        raise ConfigError("test_every_epoch: cannot be combined with evaluate_test=False")
    history = History(
        config.model_dump(mode="json"), trainer.kind.objective, str(trainer.device), parameter_count(trainer.model)
    )
    for epoch in range(1, config.epochs + 1):
        record = trainer.epoch(epoch, on_batch)
        history.epochs.append(record)
        if on_epoch is not None:
            on_epoch(record)
    history.final = trainer.final_metrics(include_test=evaluate_test)
    history.seconds = time.perf_counter() - started
    history.model = trainer.model
    return history
