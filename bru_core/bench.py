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
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from bru_core.activations import ERU, ORU, eru, eru_reference, oru, oru_reference, parse_activation, radix_unit
from bru_core.config import TrainConfig
from bru_core.data import Data, Split, synthetic_data
from bru_core.models import MODELS, parameter_count
from bru_core.spec import CampaignSpec
from bru_core.training import EVAL_BATCH_SIZE, Trainer, prepare_data, resolve_device


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, object]:
    return {
        "cpu": _cpu_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def warm_cpu_kernels() -> None:
    """Put the baselines in their fast state before timing.

    Measured here (torch 2.14.1 CPU build, AMD EPYC): torch's ELU kernel on a 128x128
    tensor takes about 145 us in a process that has not yet run a vectorised ``pow`` and
    about 24 us after one has, for the rest of the process; the cause is unknown (not
    denormals: set_flush_denormal changes nothing). Comparing against the slow state would
    flatter every other activation, so each benchmark runs one ``pow`` first."""
    x = torch.rand(4096) + 0.5
    x.pow(x)


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
    # eager: torch's own kernel (ELU, ReLU, copy) or PAPER.md's formula as eager ops;
    # compiled: torch.compile of that formula; inplace: bru_core's eager autograd Function;
    # fused: bru_core.kernels (one generated kernel each way); native: bru_core.native
    # (one C++ op each way, what the CPU takes by default)
    path: str
    device: str
    dtype: str
    n: int
    ms: float
    ratio_to_elu: float
    gbps: float  # bytes a pointwise forward + backward must move (5 tensors), per second
    copy_fraction: float  # gbps over a device-to-device copy's measured bandwidth


ACTIVATION_PATHS = ("eager", "compiled", "inplace", "fused", "native")


def _activation_fn(spec: str, path: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if spec in ("elu", "relu"):
        return F.elu if spec == "elu" else F.relu
    parsed = parse_activation(spec)
    r = parsed.radix_first
    fast, formula = (eru, eru_reference) if parsed.name == "eru" else (oru, oru_reference)
    if path == "eager":
        return lambda z: formula(z, r)
    if path == "compiled":
        return torch.compile(lambda z: formula(z, r), dynamic=False)
    if path == "inplace":
        return lambda z: fast(z, r, fused=False)
    if path == "fused":
        return lambda z: fast(z, r, fused=True)
    if path == "native":
        return lambda z: radix_unit(parsed.name, z, r, "native")
    raise ValueError(f"path: must be one of {', '.join(ACTIVATION_PATHS)}, got {path!r}")


def bench_activations(
    specs: Iterable[str] = ("eru:2", "eru:3", "oru:2", "oru:3"),
    n: int = 4_000_000,
    rounds: int = 15,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    paths: Iterable[str] = ACTIVATION_PATHS,
) -> list[ActivationTiming]:
    """Forward + backward of each activation on n values, against ELU and a plain copy."""
    dev = resolve_device(device)
    warm_cpu_kernels()
    x = torch.randn(n, device=dev, dtype=dtype).requires_grad_(True)
    grad = torch.ones_like(x)
    copy_target = torch.empty_like(x)

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

    def copy() -> float:
        _sync(dev)
        start = time.perf_counter()
        copy_target.copy_(x.detach())
        _sync(dev)
        return time.perf_counter() - start

    contenders = {("elu", "eager"): _activation_fn("elu", "eager"), ("relu", "eager"): _activation_fn("relu", "eager")}
    for spec in specs:
        for path in paths:
            if path == "native" and dev.type != "cpu":
                continue  # a CPU op: CUDA takes the fused kernels
            contenders[(spec, path)] = _activation_fn(spec, path)
    runs: dict[tuple[str, str], Callable[[], float]] = {key: timer(fn) for key, fn in contenders.items()}
    runs[("copy", "eager")] = copy
    for run in runs.values():  # compile, warm the allocator and the kernels
        run()
        run()
    medians = _interleaved(runs, rounds)
    elu = medians[("elu", "eager")]
    size = x.element_size()
    copy_gbps = 2 * n * size / medians[("copy", "eager")] / 1e9
    rows = []
    for (spec, path), seconds in medians.items():
        moved = (2 if spec == "copy" else 5) * n * size
        gbps = moved / seconds / 1e9
        rows.append(
            ActivationTiming(
                spec, path, str(dev), str(dtype).removeprefix("torch."), n, seconds * 1e3, seconds / elu, gbps,
                gbps / copy_gbps,
            )
        )  # fmt: skip
    return rows


# --------------------------------------------------------------------------- accuracy


@dataclass
class AccuracyRow:
    activation: str
    inputs: str  # "typical" (|z| <= 40 and random normal) or "extreme" (up to float32 max)
    value_error_eps: float  # max |fast - exact| / max(1, |exact|), in float32 epsilons
    slope_error_eps: float
    nonfinite: int  # fast results not finite where the exact value and slope are representable


def bench_accuracy(radii: Iterable[float] = (0.5, 1.0, 1.5, 2.0, 3.0, 7.5)) -> list[AccuracyRow]:
    """The float32 fast path against the float64 reference formula (exact slope at 0 aside)."""
    f32 = torch.finfo(torch.float32)
    g = torch.Generator().manual_seed(0)
    typical = torch.cat([torch.linspace(-40, 40, 8001), torch.randn(100_000, generator=g) * 3])
    extreme = torch.tensor([f32.max, -f32.max, 1e38, -1e38, 3e37, 1e30, -1e30, 1e10, -1e4, -200.0, f32.tiny, -f32.tiny])
    rows = []
    for family, fast, reference in (("eru", eru, eru_reference), ("oru", oru, oru_reference)):
        for r in radii:
            for label, z in (("typical", typical), ("extreme", extreme)):
                z = z[z != 0]  # the reference's autograd slope is wrong at exactly 0
                x = z.clone().requires_grad_(True)
                value = fast(x, r)
                (slope,) = torch.autograd.grad(value.sum(), x)
                x64 = z.double().requires_grad_(True)
                exact = reference(x64, r)
                (exact_slope,) = torch.autograd.grad(exact.sum(), x64)
                exact = exact.detach()
                ok = (exact.abs() < f32.max) & (exact_slope.abs() < f32.max)
                value_err = (value.detach().double() - exact).abs() / exact.abs().clamp(min=1)
                slope_err = (slope.double() - exact_slope).abs() / exact_slope.abs().clamp(min=1)
                rows.append(
                    AccuracyRow(
                        f"{family}:{r:g}",
                        label,
                        float(value_err[ok].max()) / f32.eps,
                        float(slope_err[ok].max()) / f32.eps,
                        int((~torch.isfinite(value) | ~torch.isfinite(slope))[ok].sum()),
                    )
                )
    return rows


# --------------------------------------------------------------------------- training epochs


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
    medians = _interleaved(runs, rounds)
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
        _sync(dev)
        start = time.perf_counter()
        for images, labels in loader:
            images, labels = images.to(dev, non_blocking=True), labels.to(dev, non_blocking=True)
            loss = F.cross_entropy(tutorial_model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        _sync(dev)
        return time.perf_counter() - start

    epochs = iter(range(1, 1_000_000))
    runs = {"bru": lambda: trainer.train_epoch(next(epochs))[2], "DataLoader+ToTensor": tutorial_epoch}
    for run in runs.values():
        run()
    medians = _interleaved(runs, rounds)
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


# --------------------------------------------------------------------------- packed seeds


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


def _timed_with_peak(device: torch.device, fn: Callable[..., object], *args: Any) -> tuple[float, float | None, Any]:
    """Seconds of fn(*args), on CUDA the peak memory it allocated beyond what was there,
    and what it returned."""
    _sync(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    started = time.perf_counter()
    result = fn(*args)
    _sync(device)
    seconds = time.perf_counter() - started
    peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20 if device.type == "cuda" else None
    return seconds, peak, result


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
        if data is None and synthetic:
            total, n_test = STANDARD_SIZES[dataset]
            n_fit = round(total * (1 - configs[0].val_fraction))
            data = _subset(synthetic_data(dataset, n_fit, total - n_fit, n_test, device=dev), n_train)
        elif data is None:
            data = _subset(prepare_data(configs[0], dev), n_train)
        warm = _subset(data, 512)
        train(configs[0].model_copy(update={"epochs": 1}), data=warm)
        train_in_packs([c.model_copy(update={"epochs": 1}) for c in configs], pack, data=warm)
        sequential_s, packed_s, single_peak, packed_peak, largest = [], [], None, None, 0
        for round_ in range(rounds):
            for contender in ("sequential", "packed") if round_ % 2 == 0 else ("packed", "sequential"):
                if contender == "sequential":
                    single, single_peak, _ = _timed_with_peak(dev, train, configs[0], None, None, data)
                    rest, _, _ = _timed_with_peak(dev, _train_each, configs[1:], data)
                    sequential_s.append(single + rest)
                else:
                    seconds, packed_peak, runs = _timed_with_peak(dev, train_in_packs, configs, pack, None, None, data)
                    packed_s.append(seconds)
                    largest = max(run.history.pack_size for run in runs)
        sequential, packed_median = statistics.median(sequential_s), statistics.median(packed_s)
        rows.append(
            PackTiming(
                model, dataset, activation, str(dev), len(data.train), seeds, epochs, rounds, sequential,
                packed_median, sequential / packed_median, largest, single_peak, packed_peak,
            )
        )  # fmt: skip
    return rows


def _train_each(configs: list[TrainConfig], data: Data) -> None:
    from bru_core.training import train

    for config in configs:
        train(config, data=data)


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


def bench_conv_packing(
    model: str = "lenet5", seeds: int = 8, batch_size: int = 128, steps: int = 10, rounds: int = 5, device: str = "cpu"
) -> list[ConvPackingTiming]:
    """One training step (forward, backward, SGD) of K members of a convolutional model,
    four ways: K separate models, bru_core.packed's grouped convolution and its loop of
    per-member convolutions, and torch.func's vmap over a functional call of the stacked
    members (``stack_module_state``). With ELU, whose autograd vmap knows (ERU/ORU's
    custom Function does not batch under vmap), so all four run the same maths."""
    import copy

    from torch.func import functional_call, stack_module_state, vmap

    from bru_core.data import dataset_shape
    from bru_core.models import build_model
    from bru_core.packed import PackedSequential

    dev = resolve_device(device)
    data = synthetic_data("mnist", n_train=batch_size)
    members = [build_model(model, data.info, "elu", torch.Generator().manual_seed(s)).to(dev) for s in range(seeds)]
    shape, n_classes = dataset_shape("mnist")
    x = torch.randn(seeds, batch_size, *shape, device=dev)
    y = torch.randint(0, n_classes, (seeds, batch_size), device=dev)

    def sgd(params: Iterable[torch.Tensor]) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=0.01, momentum=0.9)

    def summed_loss(out: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="sum") / batch_size

    separate = [copy.deepcopy(m) for m in members]
    separate_opts = [sgd(m.parameters()) for m in separate]

    def separate_step() -> None:
        for k, (member, opt) in enumerate(zip(separate, separate_opts, strict=True)):
            loss = F.cross_entropy(member(x[k]), y[k])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def packed_step(strategy: str) -> Callable[[], None]:
        packed = PackedSequential([copy.deepcopy(m) for m in members]).to(dev)
        packed.use_conv_strategy(strategy)  # type: ignore[arg-type]
        opt = sgd(packed.parameters())

        def step() -> None:
            loss = summed_loss(packed(x))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return step

    params, buffers = stack_module_state(members)
    base = copy.deepcopy(members[0]).to("meta")
    vmap_opt = sgd(params.values())

    def member_forward(p: dict, b: dict, inputs: torch.Tensor) -> torch.Tensor:
        return functional_call(base, (p, b), (inputs,))

    batched = vmap(member_forward)

    def vmap_step() -> None:
        loss = summed_loss(batched(params, buffers, x))
        vmap_opt.zero_grad(set_to_none=True)
        loss.backward()
        vmap_opt.step()

    def timed(step: Callable[[], None]) -> Callable[[], float]:
        def run() -> float:
            _sync(dev)
            started = time.perf_counter()
            for _ in range(steps):
                step()
            _sync(dev)
            return (time.perf_counter() - started) / steps

        return run

    steps_by_name = {
        "separate": separate_step, "grouped": packed_step("grouped"), "loop": packed_step("loop"), "vmap": vmap_step,
    }  # fmt: skip
    runs = {name: timed(step) for name, step in steps_by_name.items()}
    for run in runs.values():
        run()
    medians = _interleaved(runs, rounds)
    return [
        ConvPackingTiming(model, name, seeds, str(dev), seconds * 1e3, seconds / medians["separate"])
        for name, seconds in medians.items()
    ]


# --------------------------------------------------------------------------- campaign cost

# Standard training and test set sizes (digits: scikit-learn's 1,797 images, 20% test).
STANDARD_SIZES = {
    "mnist": (60_000, 10_000),
    "cifar10": (50_000, 10_000),
    "cifar100": (50_000, 10_000),
    "digits": (1_438, 359),
}


@dataclass
class CostEstimate:
    task: str
    activation: str
    device: str
    seconds_per_epoch: float  # training split + one validation pass, full data set size
    pack: int  # repeat seeds per pack, as repeats.pack gives them on this device
    repeat_seconds_per_epoch: float  # the same per seed, trained in packs of ``pack``
    grid_hours: float  # the task's epochs once (one seed, no search)
    campaign_hours: float  # trials unpacked + seeds in packs, x epochs: the spec as written, before pruning


def estimate_campaign(
    spec: CampaignSpec, device: str = "cpu", batches: int = 8, precision: str | None = None, compile: bool = False
) -> list[CostEstimate]:
    """Device-hours of a campaign from measured step times: each task x activation trains
    ``batches`` batches of random images of the data set's shape (after warm-up batches),
    times one validation pass, and extrapolates to the full data set and the spec's
    epochs; its repeat seeds are timed the same way as one pack (``repeats.pack``, on a
    GPU as many as fit). Pruning makes a real search cheaper; data loading and tracking
    are not counted."""
    from bru_core.packed import PackedTrainer, pack_limit

    warm_cpu_kernels()
    dev = resolve_device(device)
    seeds = len(spec.repeats.seeds)
    rows = []
    for task in spec.tasks:
        n_train_full, _ = STANDARD_SIZES[task.dataset]
        for activation in spec.activations:
            params = {"radix": 2.0} if parse_activation(activation).is_radix_family and ":" not in activation else {}
            config = spec.train_config(task.name, activation, params, seed=0)
            overrides = {"device": device, "compile": compile, "augment": False}
            if precision is not None:
                overrides["precision"] = precision
            config = config.model_copy(update=overrides)
            batch = config.batch_size
            data = synthetic_data(task.dataset, n_train=batch * batches, n_val=EVAL_BATCH_SIZE, device=dev)
            trainer = Trainer(config, data)
            trainer.train_epoch(1)  # warm-up: kernels, allocator, compilation
            seconds_train = trainer.train_epoch(2)[2]
            _sync(dev)
            started = time.perf_counter()
            trainer.evaluate(data.val)
            _sync(dev)
            seconds_eval = time.perf_counter() - started
            n_train = round(n_train_full * (1 - config.val_fraction))
            n_val = n_train_full - n_train
            per_epoch = seconds_train / (batch * batches) * n_train + seconds_eval / len(data.val) * n_val
            wanted = seeds if spec.repeats.pack == "auto" else min(seeds, spec.repeats.pack)
            pack = pack_limit(config, data, wanted)
            packed = PackedTrainer([config.model_copy(update={"seed": s}) for s in range(pack)], data)
            packed.train_epoch(1)
            packed_train = packed.train_epoch(2)[2]
            _sync(dev)
            started = time.perf_counter()
            packed.evaluate(data.val)
            _sync(dev)
            packed_eval = time.perf_counter() - started
            del packed
            per_seed = (packed_train / (batch * batches) * n_train + packed_eval / len(data.val) * n_val) / pack
            grid = per_epoch * config.epochs / 3600
            campaign = (spec.search.trials * per_epoch + seeds * per_seed) * config.epochs / 3600
            rows.append(CostEstimate(task.name, activation, str(dev), per_epoch, pack, per_seed, grid, campaign))
    return rows


@dataclass
class PipelineOverhead:
    campaign: str
    prefect_start_s: float  # the temporary Prefect server's start, once per process
    wall_s: float  # the campaign flow, from call to return (search, repeats, aggregation, report)
    training_s: float  # inside train(), summed over the trials and repeats
    runs: int
    wall_over_training: float
    trial_fixed_s: float  # per trial: first trial start to last trial end, less training, over trials
    repeat_fixed_s: float  # the same for the repeats (each also logs and uploads its model)
    campaign_fixed_s: float  # the rest of the wall time: set-up, aggregation, report, registry


def pipeline_overhead(
    campaign: str, prefect_start: float, wall: float, timings: list[tuple[str, float, float, float]]
) -> PipelineOverhead:
    """Split an embedded campaign's wall time into training and the costs around it, from
    the runs' own start and end times (``Tracker.run_timings``)."""
    if not timings:
        raise ValueError(f"campaign {campaign!r} recorded no training time; is the tracking store the one it used?")
    training = sum(t[3] for t in timings)
    spans = {}
    for role in ("trial", "repeat"):
        mine = [t for t in timings if t[0] == role]
        if mine:
            span = max(t[2] for t in mine) - min(t[1] for t in mine)
            spans[role] = (span, (span - sum(t[3] for t in mine)) / len(mine))
    phases = sum(span for span, _ in spans.values())
    return PipelineOverhead(
        campaign, prefect_start, wall, training, len(timings), wall / training,
        spans.get("trial", (0.0, 0.0))[1], spans.get("repeat", (0.0, 0.0))[1], wall - phases,
    )  # fmt: skip


# --------------------------------------------------------------------------- scale-out


@dataclass
class ScaleRow:
    workers: int
    trials: int  # finished trials (the budget)
    span_s: float  # first trial start to last trial end, from the study's own timestamps
    trials_per_s: float
    speedup: float  # trials_per_s over the one-worker figure
    mean_trial_s: float  # one trial, start to end, as a worker saw it


SCALE_SPEC = """name: {name}
description: bru bench scale - short trials, to measure coordination, not compute
tasks: [{{dataset: digits, model: mlp1, epochs: 1}}]
activations: [relu]
search: {{trials: {trials}, sampler: random, seed: 0, pruner: none, space: {{lr: {{low: 0.01, high: 0.1, log: true}}}}}}
repeats: {{seeds: [1]}}
compare: {{exploratory: true}}
"""


def bench_scale(
    workers: Iterable[int], trials: int, env: dict[str, str], optuna_storage: str, folder: Path
) -> list[ScaleRow]:
    """Trial throughput of 1, 2, 4... worker processes sharing one study (``bru search``
    processes on the same Optuna storage and MLflow store). Trials are a one-epoch mlp1 on
    digits, so the figure is the cost of coordination (Optuna, MLflow, the database)."""
    import subprocess
    import sys
    import uuid

    import optuna

    rows: list[ScaleRow] = []
    for count in workers:
        name = f"scale-{count}w-{uuid.uuid4().hex[:6]}"
        spec = folder / f"{name}.yaml"
        spec.write_text(SCALE_SPEC.format(name=name, trials=trials))
        command = [sys.executable, "-m", "bru_core", "search", str(spec), "--task", "digits/mlp1", "-a", "relu",
                   "--no-repeats", "--json"]  # fmt: skip
        processes = [
            subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for _ in range(count)
        ]
        errors = [p.communicate()[1] for p in processes]
        for process, error in zip(processes, errors, strict=True):
            if process.returncode != 0:
                raise RuntimeError(f"a bru search worker failed (exit {process.returncode}): {error.strip()[-500:]}")
        study = optuna.load_study(study_name=f"{name}/digits/mlp1/relu", storage=optuna_storage)
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
        mean = statistics.mean((t.datetime_complete - t.datetime_start).total_seconds() for t in done)
        throughput = len(done) / span
        speedup = throughput / rows[0].trials_per_s if rows else 1.0
        rows.append(ScaleRow(count, len(done), span, throughput, speedup, mean))
    return rows


def as_dicts(rows: Iterable[object]) -> list[dict[str, object]]:
    return [asdict(row) for row in rows]  # type: ignore[call-overload]


# --------------------------------------------------------------------------- tracking


@dataclass
class TrackingTiming:
    store: str  # "sqlite" (embedded) or "server" (a local mlflow server over HTTP)
    epochs: int
    mode: str  # "one run" (its writes waited for) or "study of N runs" (one wait at the end)
    runs: int
    seconds_without: float
    seconds_with: float
    ratio: float


def bench_tracking(
    epochs: int = 10, rounds: int = 7, study_runs: int = 6, server: bool = False
) -> list[TrackingTiming]:
    """Wall time of digits/mlp4 training runs with MLflow logging (bru's Tracker: a run per
    trial, parameters, per-epoch metrics, final metrics, status) over the same runs without."""
    import tempfile
    from pathlib import Path

    from bru_core.data import load_data
    from bru_core.settings import Settings
    from bru_core.tracking import Tracker, start_server, stop_server, wait_healthy
    from bru_core.training import train

    warm_cpu_kernels()
    folder = Path(tempfile.mkdtemp(prefix="bru-bench-tracking-"))
    process = None
    if server:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        process = start_server(
            f"sqlite:///{folder / 'server.db'}",
            (folder / "artifacts").as_uri(),
            port=port,
            log_file=folder / "server.log",
        )
        wait_healthy(f"http://127.0.0.1:{port}", process)
        settings = Settings(home=folder, tracking_uri=f"http://127.0.0.1:{port}")
    else:
        settings = Settings(home=folder)
    try:
        data = load_data("digits", folder / "data")
        config = TrainConfig(dataset="digits", model="mlp4", activation="relu", epochs=epochs, lr=0.02)
        tracker = Tracker(settings)
        experiment = tracker.experiment_id("bench")
        parent = tracker.client.create_run(experiment, tags={"bru.role": "study"}).info.run_id

        def tracked_run(number: int) -> None:
            run = tracker.start_trial(
                "bench", parent, "bench/digits/mlp4/relu", number, {"lr": config.lr, "activation": "relu"}, {}
            )
            history = train(config, on_epoch=lambda record: run.log_epoch(record), data=data, evaluate_test=False)
            run.log_metrics({f"final_{k}": v for k, v in history.final.items()}, step=epochs)
            run.end("FINISHED", {"bru.state": "complete"})

        counter = iter(range(10**9))

        def plain_one() -> float:
            started = time.perf_counter()
            train(config, data=data, evaluate_test=False)
            return time.perf_counter() - started

        def tracked_one() -> float:
            started = time.perf_counter()
            tracked_run(next(counter))
            tracker.flush()
            return time.perf_counter() - started

        def plain_study() -> float:
            started = time.perf_counter()
            for _ in range(study_runs):
                train(config, data=data, evaluate_test=False)
            return time.perf_counter() - started

        def tracked_study() -> float:
            started = time.perf_counter()
            for _ in range(study_runs):
                tracked_run(next(counter))
            tracker.flush()
            return time.perf_counter() - started

        plain_one(), tracked_one()  # warm-up
        one = _interleaved({"plain": plain_one, "tracked": tracked_one}, rounds)
        study = _interleaved({"plain": plain_study, "tracked": tracked_study}, max(3, rounds // 2))
        tracker.close()
    finally:
        if process is not None:
            stop_server(process)
    store = "server" if server else "sqlite"
    return [
        TrackingTiming(store, epochs, "one run", 1, one["plain"], one["tracked"], one["tracked"] / one["plain"]),
        TrackingTiming(
            store,
            epochs,
            f"study of {study_runs} runs",
            study_runs,
            study["plain"],
            study["tracked"],
            study["tracked"] / study["plain"],
        ),
    ]
