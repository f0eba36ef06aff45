"""The packed trainer: K runs of one configuration (different seeds) as one packed model,
an epoch at a time, each member with its own batches, loss, optimizer state and history."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from bru_core.activations import warm_up_kernels
from bru_core.config import TrainConfig
from bru_core.data import Data, Split, random_crop_flip
from bru_core.errors import ConfigError, NonFiniteLossError
from bru_core.models import build_model, model_kind, parameter_count
from bru_core.packed.layers import PackedSequential, packable, slice_optimizer_state
from bru_core.stats import TRAIN_LOSS_FLOOR
from bru_core.training import (
    EVAL_BATCH_SIZE,
    EpochRecord,
    History,
    _autocast,
    _EpochTimer,
    _optimizer,
    _scheduler,
    _seeds,
    device_and_data,
)

# --------------------------------------------------------------------------- losses per member


def _member_losses(reconstruction: bool, output: Tensor, images: Tensor, labels: Tensor) -> Tensor:
    """Per example loss, (K, B): as bru_core.training._Objective computes it unpacked."""
    if reconstruction:
        pixels = images.flatten(2).float().div_(255.0)
        return F.mse_loss(output.float(), pixels, reduction="none").mean(dim=2)
    members, batch, classes = output.shape
    flat = F.cross_entropy(output.reshape(-1, classes).float(), labels.reshape(-1), reduction="none")
    return flat.view(members, batch)


def _member_wrong(reconstruction: bool, output: Tensor, labels: Tensor) -> Tensor | None:
    return None if reconstruction else (output.argmax(dim=2) != labels).sum(dim=1)


# --------------------------------------------------------------------------- the trainer


@dataclass
class Member:
    seed: int
    history: History
    diverged: NonFiniteLossError | None = None
    order: torch.Generator = field(default_factory=torch.Generator, repr=False)
    augment: torch.Generator = field(default_factory=torch.Generator, repr=False)


def check_pack(configs: Sequence[TrainConfig]) -> None:
    """A pack is one configuration on several seeds: everything but the seed must agree."""
    if not configs:
        raise ConfigError("a pack needs at least one configuration")
    base = configs[0].model_dump(exclude={"seed"})
    for config in configs[1:]:
        if config.model_dump(exclude={"seed"}) != base:
            differing = sorted(k for k, v in config.model_dump(exclude={"seed"}).items() if base[k] != v)
            raise ConfigError(f"a pack trains one configuration on several seeds; these differ: {', '.join(differing)}")
    seeds = [c.seed for c in configs]
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"a pack needs distinct seeds, got {seeds}")


class PackedTrainer:
    """K runs of one configuration (different seeds) trained as one packed model."""

    def __init__(self, configs: Sequence[TrainConfig | dict[str, Any]], data: Data | None = None) -> None:
        self.configs = configs = [TrainConfig.parse(c) for c in configs]
        check_pack(configs)
        config = self.config = configs[0]
        self.device, self.data = device, data = device_and_data(config, data)  # as an unpacked run
        self.kind = model_kind(config.model)
        self.reconstruction = self.kind.objective == "reconstruction"
        models, self.members = [], []
        for c in configs:
            init_seed, order_seed, augment_seed = _seeds(c.seed)  # the unpacked run's three streams
            model = build_model(c.model, data.info, c.activation, torch.Generator().manual_seed(init_seed))
            models.append(model)
            history = History(c.model_dump(mode="json"), self.kind.objective, str(device), parameter_count(model))
            self.members.append(
                Member(c.seed, history, None, torch.Generator().manual_seed(order_seed),
                       torch.Generator().manual_seed(augment_seed))
            )  # fmt: skip
        if not packable(models[0]):
            raise ConfigError(f"activation: {config.activation} has parameters of its own and cannot be packed")
        self._template = models[0]
        self.model = PackedSequential(models).to(device)
        dtypes = [torch.float32, torch.bfloat16] if config.precision == "bf16" else [torch.float32]
        self.fused_kernels = warm_up_kernels(self.model, device, dtypes)
        self.model.use_conv_strategy("grouped" if device.type == "cuda" else "loop")
        self.model.channels_last = device.type == "cuda" and self.kind.convolutional
        if self.model.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = _optimizer(config, self.model.parameters())
        self.forward: Callable[[Tensor], Tensor] = self.model
        if config.compile:
            self.forward = torch.compile(self.model, dynamic=True)
        self.n_batches = data.n_batches(data.train, config.batch_size)
        self.scheduler, self.per_batch = _scheduler(config, self.optimizer, self.n_batches)
        sizes = torch.full((self.n_batches, 1), float(config.batch_size), device=device)
        sizes[-1] = len(data.train) - config.batch_size * (self.n_batches - 1)
        self._batch_sizes = sizes
        self.active = list(range(len(configs)))  # member indices still in the pack, in pack order
        self.seconds = 0.0

    # ------------------------------------------------------------------ one epoch

    def _stack(self, split: Split) -> Any:
        """Each active member's batch of the epoch, stacked: (inputs, images, labels).

        The batches Data.batches gives each member's unpacked run (its own permutation,
        from its own generator, and its own crops and flips), gathered with one index of
        the split and normalised in one pass rather than K."""
        data, size = self.data, self.config.batch_size
        device = split.labels.device
        members = [self.members[m] for m in self.active]
        index = torch.stack([torch.randperm(len(split), generator=m.order) for m in members]).to(device)
        augmenting = data.augment
        for start in range(0, len(split), size):
            take = index[:, start : start + size]
            images = split.images.index_select(0, take.flatten()).view(*take.shape, *split.images.shape[1:])
            if augmenting:
                images = torch.stack([random_crop_flip(im, m.augment) for im, m in zip(images, members, strict=True)])
            inputs = data.normalise(images.flatten(0, 1)).view(images.shape)
            yield inputs, images, split.labels.index_select(0, take.flatten()).view(take.shape)

    def train_epoch(
        self, epoch: int, on_batch: Callable[[int, int], None] | None = None
    ) -> tuple[Tensor, Tensor | None, float]:
        """One pass over the training split for every active member: per member the mean
        loss (K,), the error rate (K,) or None, and the pack's seconds."""
        model, optimizer = self.model, self.optimizer
        model.train()
        timer = _EpochTimer(self.device)
        k = len(self.active)
        batch_losses = torch.empty(self.n_batches, k, device=self.device)
        wrong = torch.zeros(k, device=self.device, dtype=torch.int64)
        for b, (inputs, images, labels) in enumerate(self._stack(self.data.train)):
            with _autocast(self.device, self.config.precision):
                output = self.forward(inputs)
                losses = _member_losses(self.reconstruction, output, images, labels).mean(dim=1)
            optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()  # each member's gradient is its own mean loss's
            optimizer.step()
            if self.scheduler is not None and self.per_batch:
                self.scheduler.step()
            batch_losses[b] = losses.detach()
            batch_wrong = _member_wrong(self.reconstruction, output.detach(), labels)
            if batch_wrong is not None:
                wrong += batch_wrong
            if on_batch is not None:
                on_batch(b + 1, self.n_batches)
        if self.scheduler is not None and not self.per_batch:
            self.scheduler.step()
        seconds = timer.seconds()
        self._stop_diverged(epoch, batch_losses)
        n = len(self.data.train)
        train_loss = (batch_losses * self._batch_sizes).sum(dim=0) / n
        return train_loss, (None if self.reconstruction else wrong.double() / n), seconds

    def _stop_diverged(self, epoch: int, batch_losses: Tensor) -> None:
        """Members whose loss stopped being finite leave the pack, with the first such batch."""
        finite = torch.isfinite(batch_losses)
        bad = (~finite.all(dim=0)).nonzero().flatten().tolist()
        if not bad:
            return
        for position in bad:
            first = int((~finite[:, position]).nonzero()[0])
            member = self.members[self.active[position]]
            member.diverged = NonFiniteLossError(epoch, first + 1, float(batch_losses[first, position]))
        keep = [p for p in range(len(self.active)) if p not in bad]
        shapes = {id(p): p.shape for p in self.model.parameters()}
        members = len(self.active)
        self.model.keep(keep)
        slice_optimizer_state(self.optimizer, shapes, members, keep)
        self.diverged_now = [self.active[p] for p in bad]
        self.active = [self.active[p] for p in keep]

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, split: Split) -> tuple[Tensor, Tensor | None]:
        """Mean loss (K,) and error rate (K,) or None of every active member over a split."""
        k = len(self.active)
        model = self.model
        was_training = model.training
        model.eval()
        loss_sum = torch.zeros(k, device=self.device, dtype=torch.float64)
        wrong = torch.zeros(k, device=self.device, dtype=torch.int64)
        batch = max(1, EVAL_BATCH_SIZE // k)  # one unpacked evaluation's memory
        with torch.inference_mode(), _autocast(self.device, self.config.precision):
            for inputs, images, labels in self.data.batches(split, batch):
                stacked = inputs.unsqueeze(0).expand(k, *inputs.shape)
                output = model(stacked)
                target = labels.unsqueeze(0).expand(k, -1)
                losses = _member_losses(
                    self.reconstruction, output, images.unsqueeze(0).expand(k, *images.shape), target
                )
                loss_sum += losses.sum(dim=1).double()
                batch_wrong = _member_wrong(self.reconstruction, output, target)
                if batch_wrong is not None:
                    wrong += batch_wrong
        model.train(was_training)
        n = len(split)
        return loss_sum / n, (None if self.reconstruction else wrong.double() / n)

    def epoch(self, epoch: int, on_batch: Callable[[int, int], None] | None = None) -> dict[int, EpochRecord]:
        """Train one epoch, then measure the validation (and, if asked, test) split: an
        EpochRecord per member that was active at the start of the epoch and did not
        diverge in it, by member index. A member's ``seconds`` is its share of the pack's."""
        self.diverged_now: list[int] = []
        lr = self.optimizer.param_groups[0]["lr"]
        before = list(self.active)
        train_loss, train_error, seconds = self.train_epoch(epoch, on_batch)
        share = seconds / len(before)
        self.seconds += seconds
        survivors = [before.index(m) for m in self.active]
        val_loss, val_error = self.evaluate(self.data.val)
        test = self.evaluate(self.data.test) if self.config.test_every_epoch else None
        records = {}
        for position, m in enumerate(self.active):
            old = survivors[position]
            record = EpochRecord(
                epoch, float(train_loss[old]), None if train_error is None else float(train_error[old]),
                float(val_loss[position]), None if val_error is None else float(val_error[position]), share, lr,
            )  # fmt: skip
            if test is not None:
                record.test_loss = float(test[0][position])
                record.test_error = None if test[1] is None else float(test[1][position])
            self.members[m].history.epochs.append(record)
            records[m] = record
        return records

    def final_metrics(self, include_test: bool = True) -> dict[int, dict[str, float | None]]:
        """One clean pass over every split with the final weights, per active member."""
        splits = [("train", self.data.train), ("val", self.data.val)]
        if include_test:
            splits.append(("test", self.data.test))
        final: dict[int, dict[str, float | None]] = {m: {} for m in self.active}
        for name, split in splits:
            loss, error = self.evaluate(split)
            for position, m in enumerate(self.active):
                final[m][f"{name}_loss"] = float(loss[position])
                final[m][f"{name}_error"] = None if error is None else float(error[position])
        if include_test:
            for values in final.values():
                values["error_quotient"] = values["test_loss"] / max(values["train_loss"], TRAIN_LOSS_FLOOR)
        return final

    def member_model(self, m: int) -> nn.Sequential:
        """Active member m as the plain nn.Sequential an unpacked run returns (on the device)."""
        position = self.active.index(m)
        config = self.configs[m]
        template = build_model(config.model, self.data.info, config.activation, torch.Generator().manual_seed(0))
        return self.model.unpack(position, template.to(self.device))
