"""Benchmarks whose output goes into docs/benchmarks.md (never timed assertions in tests).

Every comparison is interleaved: each round times every contender once, in turn, and the
figure reported is the median over rounds, so a slow spell of the machine hits all alike.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import torch
from torch.nn import functional as F

from bru_core.activations import eru, eru_reference, oru, oru_reference, parse_activation
from bru_core.data import synthetic_data
from bru_core.models import MODELS, parameter_count
from bru_core.training import TrainConfig, Trainer, resolve_device


def machine() -> dict[str, object]:
    return {
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _interleaved(contenders: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Median seconds per contender; each call returns its own measured seconds."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            times[name].append(run())
    return {name: statistics.median(values) for name, values in times.items()}


# --------------------------------------------------------------------------- activations


@dataclass
class ActivationTiming:
    activation: str
    path: str  # "eager" (torch's own kernel or PAPER.md's formula) or "fast" (bru_core)
    device: str
    dtype: str
    n: int
    ms: float
    ratio_to_elu: float


def _activation_fn(spec: str, path: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if spec in ("elu", "relu"):
        return F.elu if spec == "elu" else F.relu
    parsed = parse_activation(spec)
    r = parsed.radix_first
    if parsed.name == "eru":
        return (lambda z: eru(z, r)) if path == "fast" else (lambda z: eru_reference(z, r))
    return (lambda z: oru(z, r)) if path == "fast" else (lambda z: oru_reference(z, r))


def bench_activations(
    specs: Iterable[str] = ("eru:2", "eru:3", "oru:2", "oru:3"),
    n: int = 4_000_000,
    rounds: int = 15,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> list[ActivationTiming]:
    """Forward + backward of each activation on n values, against ELU."""
    dev = resolve_device(device)
    x = torch.randn(n, device=dev, dtype=dtype, generator=None).requires_grad_(True)
    grad = torch.ones_like(x)

    def timer(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], float]:
        def run() -> float:
            _sync(dev)
            start = time.perf_counter()
            fn(x).backward(grad)
            _sync(dev)
            seconds = time.perf_counter() - start
            x.grad = None
            return seconds

        return run

    contenders = {("elu", "eager"): _activation_fn("elu", "eager"), ("relu", "eager"): _activation_fn("relu", "eager")}
    for spec in specs:
        for path in ("eager", "fast"):
            contenders[(spec, path)] = _activation_fn(spec, path)
    runs = {key: timer(fn) for key, fn in contenders.items()}
    for run in runs.values():  # warm the allocator and the kernels
        run()
    medians = _interleaved(runs, rounds)
    elu = medians[("elu", "eager")]
    return [
        ActivationTiming(spec, path, str(dev), str(dtype).removeprefix("torch."), n, seconds * 1e3, seconds / elu)
        for (spec, path), seconds in medians.items()
    ]


# --------------------------------------------------------------------------- training epochs


@dataclass
class EpochTiming:
    activation: str
    model: str
    dataset: str
    seconds: float
    ratio_to_elu: float
    ratio_to_relu: float


def bench_epochs(
    activations: Iterable[str] = ("relu", "elu", "eru:2", "eru:3", "oru:2", "oru:3"),
    model: str = "mlp8",
    dataset: str = "digits",
    rounds: int = 15,
    batch_size: int = 128,
    device: str = "cpu",
) -> list[EpochTiming]:
    """Seconds of one training epoch per activation (training only, no evaluation)."""
    trainers = {
        act: Trainer(
            TrainConfig(dataset=dataset, model=model, activation=act, batch_size=batch_size, lr=0.01, device=device)
        )
        for act in activations
    }
    counter = {act: 0 for act in trainers}

    def timer(act: str) -> Callable[[], float]:
        def run() -> float:
            counter[act] += 1
            return trainers[act].train_epoch(counter[act])[2]

        return run

    runs = {act: timer(act) for act in trainers}
    for run in runs.values():
        run()
    medians = _interleaved(runs, rounds)
    elu, relu = medians.get("elu", float("nan")), medians.get("relu", float("nan"))
    return [EpochTiming(act, model, dataset, s, s / elu, s / relu) for act, s in medians.items()]


# --------------------------------------------------------------------------- models


@dataclass
class ModelTiming:
    model: str
    shape: str  # "mnist" (1x28x28, 10 classes) or "cifar10" (3x32x32, 10 classes)
    parameters: int
    batches_timed: int
    seconds_per_batch: float
    seconds_per_epoch: float  # extrapolated to the full training split (90% of the set)


FULL_TRAIN = {"mnist": 54_000, "cifar10": 45_000}


def bench_models(
    models: Iterable[str] = MODELS,
    shapes: Iterable[str] = ("mnist", "cifar10"),
    activation: str = "relu",
    batch_size: int = 128,
    batches: int = 8,
    device: str = "cpu",
) -> list[ModelTiming]:
    """Training throughput per model on random data of MNIST and CIFAR shape.

    A full CIFAR epoch of convpool takes about an hour on two CPU cores, so each model is
    timed over ``batches`` batches (after one warm-up batch) and extrapolated."""
    rows = []
    for shape in shapes:
        data = synthetic_data(shape, n_train=batch_size * batches, device=resolve_device(device))
        warm = synthetic_data(shape, n_train=batch_size, device=data.device)
        for model in models:
            config = TrainConfig(
                dataset=shape, model=model, activation=activation, batch_size=batch_size, lr=0.01, device=device
            )
            trainer = Trainer(config, data)
            Trainer(config, warm).train_epoch(1)  # one batch: warms kernels and the allocator
            seconds = trainer.train_epoch(1)[2]
            per_batch = seconds / trainer.n_batches
            rows.append(
                ModelTiming(
                    model,
                    shape,
                    parameter_count(trainer.model),
                    trainer.n_batches,
                    per_batch,
                    per_batch * FULL_TRAIN[shape] / batch_size,
                )
            )
    return rows


def as_dicts(rows: Iterable[object]) -> list[dict[str, object]]:
    return [asdict(row) for row in rows]  # type: ignore[call-overload]
