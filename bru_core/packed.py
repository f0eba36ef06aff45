"""Packed training: the K repeat seeds of one configuration as one batched model.

The paper's networks are small: an mlp4 step on MNIST is a few 128-wide matrix products,
so one run leaves most of a CPU, and nearly all of a GPU, idle. Here K runs that differ
only in their seed train as one model on one device:

* **The same runs.** Member k is built exactly as the unpacked run with its seed builds
  its model (``build_model`` with that seed's initialisation stream) and draws that seed's
  batch order and augmentation, so it follows the unpacked run's trajectory up to
  floating-point summation order (tests/test_packed.py: metrics after a few epochs agree
  to 1e-4 relative for every model).
* **Batched layers.** A Linear layer becomes one batched matrix product over a leading
  member dimension (``baddbmm``); a Conv2d one grouped convolution with the members'
  channels side by side (groups = K); pooling works per channel as it is; the activation is
  applied once to the packed tensor, so ERU/ORU's fused kernels see K times larger tensors.
* **Independent members.** The loss is the sum of the members' own mean losses, so each
  member's gradient is its own; SGD, momentum, Adam and AdamW are elementwise, so one
  optimizer over the packed parameters is K independent optimizers (tested against K
  separate ones).
* **Divergence stops one member.** A member whose loss stops being finite is taken out of
  the pack at the end of that epoch (its parameters and optimizer state sliced away) and
  reported with the epoch and batch, as ``NonFiniteLossError`` reports them unpacked; the
  others go on.
* **Memory.** The members share one copy of the data; training activations are K runs'
  worth; evaluation passes take batches of EVAL_BATCH_SIZE / K examples, so an evaluation
  holds what one unpacked run's does. ``pack_limit`` sizes packs to a GPU's free memory
  from a one-member probe, and ``train_in_packs`` splits a pack that still runs out of
  memory rather than crash.

Activations with parameters of their own (PReLU) are not packed: each seed of such a
configuration is its own pack of one (``packable``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from bru_core.activations import warm_up_kernels
from bru_core.config import TrainConfig
from bru_core.data import Data, Split, random_crop_flip
from bru_core.errors import ConfigError, NonFiniteLossError
from bru_core.models import build_model, model_kind, parameter_count
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
    prepare_data,
    resolve_device,
)

# --------------------------------------------------------------------------- packed layers


def _take_members(t: Tensor, members: int, keep: Sequence[int]) -> Tensor:
    """The rows of the kept members of a packed tensor whose first dimension holds the
    members one after another (K, or K x out for a grouped convolution)."""
    per_member = t.shape[0] // members
    index = torch.as_tensor(list(keep), device=t.device)
    return t.reshape(members, -1).index_select(0, index).reshape(len(keep) * per_member, *t.shape[1:])


class PackedLinear(nn.Module):
    """K Linear layers as one batched product: (K, B, in) -> (K, B, out).

    The weights are kept as (K, in, out), the transpose of nn.Linear's, so the forward and
    the weight's gradient (x^T g) are plain batched products of contiguous operands: with
    (K, out, in) the backward wrote its gradient through a transpose, one more copy of
    every weight per step (measured: 10% of a packed mlp4 step on the CPU)."""

    def __init__(self, layers: Sequence[nn.Linear]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.stack([layer.weight.detach().t() for layer in layers]).contiguous())
        self.bias = nn.Parameter(torch.stack([layer.bias.detach() for layer in layers]))  # K, out

    def forward(self, x: Tensor) -> Tensor:
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight)

    def member(self, k: int) -> dict[str, Tensor]:
        return {"weight": self.weight[k].t(), "bias": self.bias[k]}


ConvStrategy = Literal["grouped", "loop"]


class PackedConv2d(nn.Module):
    """K Conv2d layers: one grouped convolution on (B, K x C, H, W) (``grouped``, one
    launch: CUDA), or K convolutions on the members' contiguous slices of (K x B, C, H, W)
    (``loop``: the CPU, where oneDNN's grouped convolution ran at half the speed of K
    separate ones, as did torch.func's vmap, which lowers to the same grouped call)."""

    def __init__(self, layers: Sequence[nn.Conv2d]) -> None:
        super().__init__()
        first = layers[0]
        if first.padding_mode != "zeros":
            raise TypeError(f"packed convolutions support zero padding only, not {first.padding_mode}")
        self.members = len(layers)
        self.out_channels = first.out_channels
        self.stride, self.padding, self.dilation, self.groups = (
            first.stride,
            first.padding,
            first.dilation,
            first.groups,
        )
        self.weight = nn.Parameter(torch.cat([layer.weight.detach() for layer in layers]))  # K x out, in, kh, kw
        self.bias = nn.Parameter(torch.cat([layer.bias.detach() for layer in layers]))  # K x out

    strategy: ConvStrategy = "grouped"

    def forward(self, x: Tensor) -> Tensor:
        if self.strategy == "grouped":
            return F.conv2d(
                x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups * self.members
            )
        parts = zip(x.chunk(self.members), self.weight.chunk(self.members), self.bias.chunk(self.members), strict=True)
        return torch.cat(
            [F.conv2d(xk, w, b, self.stride, self.padding, self.dilation, self.groups) for xk, w, b in parts]
        )

    def member(self, k: int) -> dict[str, Tensor]:
        rows = slice(k * self.out_channels, (k + 1) * self.out_channels)
        return {"weight": self.weight[rows], "bias": self.bias[rows]}


class _Unflatten(nn.Module):
    """Where a model flattens: from the convolutions' (B, K x C, H, W), or from the input's
    (K, B, C, H, W), to the linear layers' (K, B, C x H x W)."""

    def __init__(self) -> None:
        super().__init__()
        self.members = 1
        self.strategy: ConvStrategy = "grouped"

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 5:  # (K, B, C, H, W): a model that starts by flattening
            return x.flatten(2)
        if self.strategy == "loop":  # (K x B, C, H, W)
            return x.reshape(self.members, x.shape[0] // self.members, -1)
        return x.reshape(x.shape[0], self.members, -1).transpose(0, 1)


_PACKED = {nn.Linear: PackedLinear, nn.Conv2d: PackedConv2d}


def packable(model: nn.Module) -> bool:
    """Whether a model's layers can be packed: Linear and Conv2d layers, Flatten, and
    modules without parameters (activations, pooling)."""
    for layer in model.children():
        if type(layer) in _PACKED or isinstance(layer, nn.Flatten):
            continue
        if any(True for _ in layer.parameters()) or list(layer.children()):
            return False
    return True


class PackedSequential(nn.Module):
    """K models of one architecture (nn.Sequential, flat) as one: member inputs stacked
    (K, B, C, H, W) in, member outputs (K, B, out) out."""

    def __init__(self, models: Sequence[nn.Sequential]) -> None:
        super().__init__()
        self.members = len(models)
        layers: list[nn.Module] = []
        for parts in zip(*(list(m.children()) for m in models), strict=True):
            kind = type(parts[0])
            if kind in _PACKED:
                layers.append(_PACKED[kind](parts))
            elif isinstance(parts[0], nn.Flatten):
                layers.append(_Unflatten())
            else:  # parameter-free (checked by packable): one module serves every member
                layers.append(parts[0])
        self.layers = nn.ModuleList(layers)
        first = next(layer for layer in self.layers if isinstance(layer, (PackedLinear, PackedConv2d, _Unflatten)))
        self.convolutional_input = isinstance(first, PackedConv2d)
        self.channels_last = False
        self.conv_strategy: ConvStrategy = "grouped"
        self._set_members(self.members)

    def use_conv_strategy(self, strategy: ConvStrategy) -> None:
        """grouped (one grouped convolution per layer) or loop (one per member): see PackedConv2d."""
        self.conv_strategy = strategy
        for layer in self.layers:
            if isinstance(layer, (PackedConv2d, _Unflatten)):
                layer.strategy = strategy

    def _set_members(self, members: int) -> None:
        self.members = members
        for layer in self.layers:
            if isinstance(layer, (PackedConv2d, _Unflatten)):
                layer.members = members

    def forward(self, x: Tensor) -> Tensor:
        batch = x.shape[1]
        if self.convolutional_input and self.conv_strategy == "loop":  # (K, B, C, H, W) -> (K x B, C, H, W)
            x = x.reshape(-1, *x.shape[2:])
        elif self.convolutional_input:  # (K, B, C, H, W) -> (B, K x C, H, W): members' channels side by side
            x = x.transpose(0, 1).reshape(batch, -1, *x.shape[3:])
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
        for layer in self.layers:
            x = layer(x)
        return x

    def keep(self, keep: Sequence[int]) -> None:
        """Keep only these members (positions in the pack), in place: the parameters are
        re-pointed at the kept rows, so an optimizer holding them goes on (its state must
        be sliced the same way: ``slice_optimizer_state``)."""
        for parameter in self.parameters():
            parameter.data = _take_members(parameter.data, self.members, keep)
            parameter.grad = None
        self._set_members(len(keep))

    def unpack(self, k: int, template: nn.Sequential) -> nn.Sequential:
        """Member k as the plain nn.Sequential an unpacked run trains (``template`` has
        the architecture; its weights are replaced)."""
        weighted = [layer for layer in self.layers if isinstance(layer, (PackedLinear, PackedConv2d))]
        targets = [layer for layer in template.children() if type(layer) in _PACKED]
        with torch.no_grad():
            for packed, target in zip(weighted, targets, strict=True):
                for name, value in packed.member(k).items():
                    getattr(target, name).copy_(value)
        return template


def slice_optimizer_state(
    optimizer: torch.optim.Optimizer, shapes: dict[int, torch.Size], members: int, keep: Sequence[int]
) -> None:
    """Keep the kept members' rows of every per-parameter state tensor (momentum, Adam's
    moments); ``shapes``: each parameter's shape before slicing, by id."""
    for parameter, state in optimizer.state.items():
        old = shapes.get(id(parameter))
        for key, value in list(state.items()):
            if torch.is_tensor(value) and old is not None and value.shape == old:
                state[key] = _take_members(value, members, keep)


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


# --------------------------------------------------------------------------- whole runs


@dataclass
class PackedRun:
    """One member's outcome: its history (up to the divergence, if it diverged)."""

    seed: int
    history: History
    diverged: NonFiniteLossError | None = None

    @property
    def finished(self) -> bool:
        return self.diverged is None


MemberEpochCallback = Callable[[int, EpochRecord], None]  # (seed, record)
DivergedCallback = Callable[[int, NonFiniteLossError], None]  # (seed, error)


def train_packed(
    configs: Sequence[TrainConfig | dict[str, Any]],
    on_epoch: MemberEpochCallback | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    data: Data | None = None,
    evaluate_test: bool = True,
    on_diverged: DivergedCallback | None = None,
) -> list[PackedRun]:
    """Train one configuration on several seeds as one pack; one PackedRun per config, in
    order. A member that diverges is reported (``on_diverged`` as it happens) and the others
    go on; each finished member's history has its final metrics and its own model."""
    configs = [TrainConfig.parse(c) for c in configs]
    check_pack(configs)
    if not activation_packable(configs[0]):
        return [_train_alone(c, on_epoch, on_batch, data, evaluate_test, on_diverged) for c in configs]
    started = time.perf_counter()
    trainer = PackedTrainer(configs, data)
    config = trainer.config
    if config.test_every_epoch and not evaluate_test:
        raise ConfigError("test_every_epoch: cannot be combined with evaluate_test=False")
    for epoch in range(1, config.epochs + 1):
        if not trainer.active:
            break
        records = trainer.epoch(epoch, on_batch)
        for m in trainer.diverged_now:
            member = trainer.members[m]
            if on_diverged is not None and member.diverged is not None:
                on_diverged(member.seed, member.diverged)
        if on_epoch is not None:
            for m, record in records.items():
                on_epoch(trainer.members[m].seed, record)
    finals = trainer.final_metrics(include_test=evaluate_test) if trainer.active else {}
    wall = time.perf_counter() - started
    runs = []
    for m, member in enumerate(trainer.members):
        history = member.history
        history.seconds = wall / len(trainer.members)  # each member's share of the pack's time
        history.pack_size = len(trainer.members)
        if m in finals:
            history.final = finals[m]
            history.model = trainer.member_model(m)
        runs.append(PackedRun(member.seed, history, member.diverged))
    return runs


def _out_of_memory(exc: BaseException) -> bool:
    """A device allocation that failed: CUDA's OutOfMemoryError, or the CPU allocator's."""
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)
    )


def train_in_packs(
    configs: Sequence[TrainConfig | dict[str, Any]],
    pack: int | None = None,
    on_epoch: MemberEpochCallback | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    data: Data | None = None,
    evaluate_test: bool = True,
    on_diverged: DivergedCallback | None = None,
) -> list[PackedRun]:
    """Train one configuration on several seeds in packs of at most ``pack`` members
    (None: as many as fit, ``pack_limit``), one pack after another; one PackedRun per
    config, in order.

    A pack that runs out of memory before it has reported anything (the first epoch: the
    peak is reached in its first batches and first evaluation) is split in two and each
    half trained in turn, down to packs of one, which is an unpacked run's own memory; an
    out-of-memory error after a member's epoch was reported is raised, as it would be
    unpacked, rather than report those epochs twice."""
    configs = [TrainConfig.parse(c) for c in configs]
    check_pack(configs)
    if data is None:
        data = prepare_data(configs[0], resolve_device(configs[0].device))
    size = pack if pack is not None else pack_limit(configs[0], data, len(configs))
    if size < 1:
        raise ConfigError(f"pack: {size} members; a pack holds at least one")
    reported: set[int] = set()

    def note_epoch(seed: int, record: EpochRecord) -> None:
        reported.add(seed)
        if on_epoch is not None:
            on_epoch(seed, record)

    def note_diverged(seed: int, exc: NonFiniteLossError) -> None:
        reported.add(seed)
        if on_diverged is not None:
            on_diverged(seed, exc)

    def train_group(group: list[TrainConfig]) -> list[PackedRun]:
        try:
            return train_packed(group, note_epoch, on_batch, data, evaluate_test, note_diverged)
        except BaseException as exc:
            if len(group) == 1 or not _out_of_memory(exc) or reported & {c.seed for c in group}:
                raise
        _release_cached_memory(data.device)
        half = (len(group) + 1) // 2
        return train_group(group[:half]) + train_group(group[half:])

    runs: list[PackedRun] = []
    for start in range(0, len(configs), size):
        runs += train_group(configs[start : start + size])
    return runs


def _release_cached_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def activation_packable(config: TrainConfig) -> bool:
    """Whether this configuration's model can be packed (its activations have no parameters)."""
    from bru_core.data import DataInfo, dataset_shape

    shape, n_classes = dataset_shape(config.dataset)
    info = DataInfo(config.dataset, shape, n_classes, 1, 1, 1)
    return packable(build_model(config.model, info, config.activation, torch.Generator().manual_seed(0)))


def _train_alone(
    config: TrainConfig,
    on_epoch: MemberEpochCallback | None,
    on_batch: Callable[[int, int], None] | None,
    data: Data | None,
    evaluate_test: bool,
    on_diverged: DivergedCallback | None,
) -> PackedRun:
    """A pack of one the plain way (an activation that cannot be packed)."""
    from bru_core.training import train

    records: list[EpochRecord] = []

    def log(record: EpochRecord) -> None:
        records.append(record)
        if on_epoch is not None:
            on_epoch(config.seed, record)

    try:
        return PackedRun(
            config.seed, train(config, on_epoch=log, on_batch=on_batch, data=data, evaluate_test=evaluate_test)
        )
    except NonFiniteLossError as exc:
        if on_diverged is not None:
            on_diverged(config.seed, exc)
        history = History(config.model_dump(mode="json"), model_kind(config.model).objective, config.device, 0, records)
        return PackedRun(config.seed, history, exc)


def parse_seeds(text: str) -> list[int]:
    """``0-7``, ``1,3,5`` or ``0-3,8``: distinct seeds >= 0, in the order written."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        low, dash, high = part.partition("-")
        try:
            values = list(range(int(low), int(high) + 1)) if dash else [int(part)]
        except ValueError:
            raise ConfigError(f"--seeds: {text!r} is not a list of seeds; write e.g. 0-7 or 1,3,5") from None
        if dash and int(high) < int(low):
            raise ConfigError(f"--seeds: {part!r} runs backwards; write e.g. 0-7")
        seeds += values
    if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds) or not seeds:
        raise ConfigError(f"--seeds: {text!r} must name distinct seeds >= 0")
    return seeds


def member_bytes(config: TrainConfig, data: Data) -> int:
    """The peak device memory one member adds to a pack on CUDA, measured by training a
    pack of one for a few batches (0 on the CPU, where packs are not sized)."""
    device = resolve_device(config.device)
    if device.type != "cuda":
        return 0
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    trainer = PackedTrainer([config], data)
    batches = trainer._stack(data.train)
    for _, (inputs, images, labels) in zip(range(3), batches, strict=False):
        with _autocast(device, config.precision):
            losses = _member_losses(trainer.reconstruction, trainer.forward(inputs), images, labels).mean(dim=1)
        trainer.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        trainer.optimizer.step()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - base
    del trainer
    return int(peak)


def pack_limit(config: TrainConfig, data: Data, wanted: int, headroom: float = 0.8) -> int:
    """How many members fit in one pack: all of them on the CPU; on CUDA as many as fit in
    ``headroom`` of the free memory at a one-member probe's peak each."""
    device = resolve_device(config.device)
    if device.type != "cuda" or wanted <= 1:
        return max(1, wanted)
    per_member = member_bytes(config, data)
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, min(wanted, math.floor(headroom * free / max(per_member, 1))))
