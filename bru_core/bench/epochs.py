"""Whole training epochs: per activation and path (bru bench epochs), bru's input pipeline
against a torchvision DataLoader (bru bench train), and per model (bru bench models)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from bru_core.activations import ERU, ORU, eru_reference, oru_reference, parse_activation, radix_unit
from bru_core.bench.timing import interleaved, sync, warm_cpu_kernels
from bru_core.config import TrainConfig
from bru_core.data import synthetic_data
from bru_core.models import MODELS, parameter_count
from bru_core.training import Trainer, resolve_device


@dataclass
class EpochTiming:
    activation: str
    path: str  # torch (ReLU, ELU); auto (bru's default choice), native, fused, inplace; eager (PAPER.md's formula)
    model: str
    dataset: str
    seconds: float
    ratio_to_elu: float
    ratio_to_relu: float


def _swap_radix_units(trainer: Trainer, path: str) -> None:
    """Make the model's ERU/ORU modules run one path: native, fused or inplace (bru_core's
    C++ op, compiled kernels or eager ops, forced) or eager (PAPER.md's where/pow/exp composition); "auto" leaves
    bru_core's own choice."""
    for module in trainer.model.modules():
        if isinstance(module, (ERU, ORU)) and path != "auto":
            if path == "eager":
                formula = eru_reference if isinstance(module, ERU) else oru_reference
                module.forward = lambda z, r=module.radix, f=formula: f(z, r)  # type: ignore[method-assign]
            else:
                family = "eru" if isinstance(module, ERU) else "oru"
                forced = "eager" if path == "inplace" else path
                module.forward = lambda z, r=module.radix, f=family, p=forced: radix_unit(f, z, r, p)  # type: ignore[method-assign]


def bench_epochs(
    activations: Iterable[str] = ("relu", "elu", "eru:2", "eru:3", "oru:2", "oru:3"),
    model: str = "mlp8",
    dataset: str = "digits",
    rounds: int = 15,
    batch_size: int = 128,
    device: str = "cpu",
    paths: Iterable[str] = ("auto", "native", "fused", "inplace", "eager"),
) -> list[EpochTiming]:
    """Seconds of one training epoch per activation and path (training only, no
    evaluation); torch's own activations have the one path "torch"."""
    warm_cpu_kernels()
    trainers: dict[tuple[str, str], Trainer] = {}
    data = None
    for act in activations:
        config = TrainConfig(
            dataset=dataset, model=model, activation=act, batch_size=batch_size, lr=0.01, device=device
        )
        for path in paths if parse_activation(act).is_radix_family else ["torch"]:
            if path == "native" and resolve_device(device).type != "cpu":
                continue  # a CPU op: CUDA takes the fused kernels
            trainer = trainers[(act, path)] = Trainer(config, data)
            data = trainer.data
            if path != "torch":
                _swap_radix_units(trainer, path)
    counter = dict.fromkeys(trainers, 0)

    def timer(key: tuple[str, str]) -> Callable[[], float]:
        def run() -> float:
            counter[key] += 1
            return trainers[key].train_epoch(counter[key])[2]

        return run

    runs = {key: timer(key) for key in trainers}
    for run in runs.values():
        run()
    medians = interleaved(runs, rounds)
    elu, relu = medians.get(("elu", "torch"), float("nan")), medians.get(("relu", "torch"), float("nan"))
    return [EpochTiming(act, path, model, dataset, s, s / elu, s / relu) for (act, path), s in medians.items()]


# --------------------------------------------------------------------------- input pipeline


@dataclass
class PipelineTiming:
    pipeline: str  # "bru" (uint8 on the device, batched) or "DataLoader+ToTensor"
    model: str
    activation: str
    device: str
    n_train: int
    seconds_per_epoch: float
    ratio_to_bru: float


class _TutorialImages(torch.utils.data.Dataset):
    """What torchvision.datasets.MNIST does per item: a PIL image from the uint8 array,
    then the transform (ToTensor + Normalize), then an int label."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: float, std: float) -> None:
        from torchvision import transforms

        self.images, self.labels = images, labels
        self.transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((mean,), (std,))])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        image = Image.fromarray(self.images[index].squeeze(0).numpy())  # mode L
        return self.transform(image), int(self.labels[index])


def bench_input_pipeline(
    model: str = "mlp8",
    activation: str = "relu",
    n_train: int = 12_800,
    rounds: int = 3,
    batch_size: int = 128,
    device: str = "cpu",
    num_workers: int = 0,
) -> list[PipelineTiming]:
    """An MNIST-shaped training epoch fed by bru_core.data (uint8 images resident on the
    device, normalised a batch at a time) against the usual tutorial pipeline: a
    torchvision-style dataset of PIL images with ToTensor and a DataLoader. Same model,
    optimiser, batch size and number of images; interleaved rounds."""
    warm_cpu_kernels()
    dev = resolve_device(device)
    data = synthetic_data("mnist", n_train=n_train, device=dev)
    config = TrainConfig(dataset="mnist", model=model, activation=activation, batch_size=batch_size, device=device)
    trainer = Trainer(config, data)
    cpu_train = data.train.images.cpu(), data.train.labels.cpu()
    dataset = _TutorialImages(*cpu_train, float(data.mean[0]), float(data.std[0]))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers, pin_memory=dev.type == "cuda"
    )
    tutorial_model = Trainer(config, data).model
    optimizer = torch.optim.SGD(tutorial_model.parameters(), lr=config.lr, momentum=config.momentum)

    def tutorial_epoch() -> float:
        tutorial_model.train()
        sync(dev)
        start = time.perf_counter()
        for images, labels in loader:
            images, labels = images.to(dev, non_blocking=True), labels.to(dev, non_blocking=True)
            loss = F.cross_entropy(tutorial_model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        sync(dev)
        return time.perf_counter() - start

    epochs = iter(range(1, 1_000_000))
    runs = {"bru": lambda: trainer.train_epoch(next(epochs))[2], "DataLoader+ToTensor": tutorial_epoch}
    for run in runs.values():
        run()
    medians = interleaved(runs, rounds)
    return [
        PipelineTiming(name, model, activation, str(dev), n_train, seconds, seconds / medians["bru"])
        for name, seconds in medians.items()
    ]


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
    warm_cpu_kernels()
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
