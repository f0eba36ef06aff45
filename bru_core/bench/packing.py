"""Seeds trained as one pack (bru_core.packed) against one after another: whole runs (bru
bench packed) and one convolutional training step, four ways (bru bench packed's conv rows)."""

from __future__ import annotations

import copy
import functools
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn import functional as F

from bru_core.bench.cost import STANDARD_SIZES
from bru_core.bench.timing import interleaved, sync, timed_with_peak
from bru_core.config import TrainConfig
from bru_core.data import Data, Split, synthetic_data
from bru_core.training import prepare_data, resolve_device


@dataclass
class PackTiming:
    model: str
    dataset: str
    activation: str
    device: str
    n_train: int
    seeds: int
    epochs: int
    rounds: int  # interleaved, the order alternating; the medians are reported
    sequential_s: float  # the K runs one after another: train() each (every epoch and evaluation)
    packed_s: float  # the same K runs as packs (train_in_packs): the same work, batched
    speedup: float
    pack: int  # the largest pack it trained
    single_peak_mb: float | None  # CUDA: one unpacked run's peak allocation (K runs at once: K x this)
    packed_peak_mb: float | None  # CUDA: the packs' peak allocation


def _subset(data: Data, n_train: int | None) -> Data:
    if n_train is None or n_train >= len(data.train):
        return data
    train = Split(data.train.images[:n_train], data.train.labels[:n_train])
    return Data(data.info, train, data.val, data.test, data.mean, data.std, data.augment)


def _packed_data(dataset: str, config: TrainConfig, synthetic: bool, n_train: int | None, dev: torch.device) -> Data:
    """The real data set, or random images of its shape and standard sizes; its first
    ``n_train`` training images."""
    if synthetic:
        total, n_test = STANDARD_SIZES[dataset]
        n_fit = round(total * (1 - config.val_fraction))
        return _subset(synthetic_data(dataset, n_fit, total - n_fit, n_test, device=dev), n_train)
    return _subset(prepare_data(config, dev), n_train)


def _train_each(configs: list[TrainConfig], data: Data) -> None:
    from bru_core.training import train

    for config in configs:
        train(config, data=data)


def _race_packed(
    configs: list[TrainConfig], pack: int | None, data: Data, dev: torch.device, rounds: int
) -> tuple[float, float, int, float | None, float | None]:
    """Median seconds of the K runs one after another and as packs, the largest pack, and
    the CUDA peaks (one unpacked run, the packs); the order alternates from round to round."""
    from bru_core.packed import train_in_packs
    from bru_core.training import train

    sequential_s, packed_s, single_peak, packed_peak, largest = [], [], None, None, 0
    for round_ in range(rounds):
        for contender in ("sequential", "packed") if round_ % 2 == 0 else ("packed", "sequential"):
            if contender == "sequential":
                single, single_peak, _ = timed_with_peak(dev, train, configs[0], None, None, data)
                rest, _, _ = timed_with_peak(dev, _train_each, configs[1:], data)
                sequential_s.append(single + rest)
            else:
                seconds, packed_peak, runs = timed_with_peak(
                    dev, functools.partial(train_in_packs, data=data), configs, pack
                )
                packed_s.append(seconds)
                largest = max(run.history.pack_size for run in runs)
    return statistics.median(sequential_s), statistics.median(packed_s), largest, single_peak, packed_peak


def bench_packed(
    models: Iterable[str] = ("mlp4", "lenet5", "sae"),
    dataset: str = "mnist",
    activation: str = "eru:2",
    seeds: int = 8,
    epochs: int = 1,
    device: str = "cpu",
    data_dir: Path | None = None,
    n_train: int | None = None,
    pack: int | None = None,
    rounds: int = 3,
    synthetic: bool = False,
) -> list[PackTiming]:
    """K seeds of one configuration trained one after another against the same K as one
    pack (bru_core.packed), whole runs (training, per-epoch validation, final evaluation)
    on the real data set, or its first ``n_train`` training images; ``rounds`` rounds,
    interleaved with the order alternating (this shared machine has slow spells), the
    medians reported. One warm-up run of each kind on 512 images first (kernels,
    allocator, data on the device). ``synthetic``: random images of the data set's shape
    and standard sizes instead (a machine without the data; the times do not depend on
    the pixels, the metrics mean nothing)."""
    from bru_core.packed import train_in_packs
    from bru_core.training import train

    dev = resolve_device(device)
    data = None
    rows = []
    for model in models:
        configs = [
            TrainConfig.parse(dict(dataset=dataset, model=model, activation=activation, epochs=epochs, seed=s,
                                   device=device, lr=0.01, data_dir=data_dir))
            for s in range(seeds)
        ]  # fmt: skip
        if data is None:  # the first model's data serves them all
            data = _packed_data(dataset, configs[0], synthetic, n_train, dev)
        warm = _subset(data, 512)
        train(configs[0].model_copy(update={"epochs": 1}), data=warm)
        train_in_packs([c.model_copy(update={"epochs": 1}) for c in configs], pack, data=warm)
        sequential, packed_median, largest, single_peak, packed_peak = _race_packed(configs, pack, data, dev, rounds)
        rows.append(
            PackTiming(
                model, dataset, activation, str(dev), len(data.train), seeds, epochs, rounds, sequential,
                packed_median, sequential / packed_median, largest, single_peak, packed_peak,
            )
        )  # fmt: skip
    return rows


# --------------------------------------------------------------------------- convolution strategies


@dataclass
class ConvPackingTiming:
    model: str
    # separate: K unpacked models, one step each (what K runs do); grouped / loop:
    # bru_core.packed's two PackedConv2d strategies; vmap: torch.func over stacked members
    strategy: str
    seeds: int
    device: str
    ms_per_step: float  # all K members' step
    ratio_to_separate: float


def _sgd(params: Iterable[torch.Tensor]) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.01, momentum=0.9)


def _separate_step(members: list[torch.nn.Module], x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """K unpacked copies, each its own step on its own batch."""
    separate = [copy.deepcopy(m) for m in members]
    optimizers = [_sgd(m.parameters()) for m in separate]

    def step() -> None:
        for k, (member, opt) in enumerate(zip(separate, optimizers, strict=True)):
            loss = F.cross_entropy(member(x[k]), y[k])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return step


def _packed_step(
    members: list[torch.nn.Module],
    strategy: str,
    summed_loss: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    dev: torch.device,
) -> Callable[[], None]:
    """One PackedSequential of copies of the members, its convolutions run as ``strategy``."""
    from bru_core.packed import PackedSequential

    packed = PackedSequential([copy.deepcopy(m) for m in members]).to(dev)
    packed.use_conv_strategy(strategy)  # type: ignore[arg-type]
    opt = _sgd(packed.parameters())

    def step() -> None:
        loss = summed_loss(packed(x))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _vmap_step(
    members: list[torch.nn.Module], summed_loss: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor
) -> Callable[[], None]:
    """torch.func's way: vmap over a functional call of the members' stacked state."""
    from torch.func import functional_call, stack_module_state, vmap

    params, buffers = stack_module_state(members)
    base = copy.deepcopy(members[0]).to("meta")
    opt = _sgd(params.values())

    def member_forward(p: dict, b: dict, inputs: torch.Tensor) -> torch.Tensor:
        return functional_call(base, (p, b), (inputs,))

    batched = vmap(member_forward)

    def step() -> None:
        loss = summed_loss(batched(params, buffers, x))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _timed_steps(step: Callable[[], None], steps: int, dev: torch.device) -> Callable[[], float]:
    """Seconds per step, over ``steps`` steps."""

    def run() -> float:
        sync(dev)
        started = time.perf_counter()
        for _ in range(steps):
            step()
        sync(dev)
        return (time.perf_counter() - started) / steps

    return run


def bench_conv_packing(
    model: str = "lenet5", seeds: int = 8, batch_size: int = 128, steps: int = 10, rounds: int = 5, device: str = "cpu"
) -> list[ConvPackingTiming]:
    """One training step (forward, backward, SGD) of K members of a convolutional model,
    four ways: K separate models, bru_core.packed's grouped convolution and its loop of
    per-member convolutions, and torch.func's vmap over a functional call of the stacked
    members (``stack_module_state``). With ELU, whose autograd vmap knows (ERU/ORU's
    custom Function does not batch under vmap), so all four run the same maths."""
    from bru_core.data import dataset_shape
    from bru_core.models import build_model

    dev = resolve_device(device)
    data = synthetic_data("mnist", n_train=batch_size)
    members = [build_model(model, data.info, "elu", torch.Generator().manual_seed(s)).to(dev) for s in range(seeds)]
    shape, n_classes = dataset_shape("mnist")
    x = torch.randn(seeds, batch_size, *shape, device=dev)
    y = torch.randint(0, n_classes, (seeds, batch_size), device=dev)

    def summed_loss(out: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="sum") / batch_size

    steps_by_name = {
        "separate": _separate_step(members, x, y),
        "grouped": _packed_step(members, "grouped", summed_loss, x, dev),
        "loop": _packed_step(members, "loop", summed_loss, x, dev),
        "vmap": _vmap_step(members, summed_loss, x),
    }
    runs = {name: _timed_steps(step, steps, dev) for name, step in steps_by_name.items()}
    for run in runs.values():
        run()
    medians = interleaved(runs, rounds)
    return [
        ConvPackingTiming(model, name, seeds, str(dev), seconds * 1e3, seconds / medians["separate"])
        for name, seconds in medians.items()
    ]
