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

from bru_core.activations import ERU, ORU, eru, eru_reference, oru, oru_reference, parse_activation
from bru_core.config import TrainConfig
from bru_core.data import synthetic_data
from bru_core.models import MODELS, parameter_count
from bru_core.training import Trainer, resolve_device


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
    warm_cpu_kernels()
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
    path: str  # "fast" (bru_core's eru/oru, or torch's own kernel) or "eager" (PAPER.md's formula)
    model: str
    dataset: str
    seconds: float
    ratio_to_elu: float
    ratio_to_relu: float


def _use_reference_formula(trainer: Trainer) -> None:
    """Swap the model's ERU/ORU modules to PAPER.md's where/pow/exp composition."""
    for module in trainer.model.modules():
        if isinstance(module, (ERU, ORU)):
            formula = eru_reference if isinstance(module, ERU) else oru_reference
            module.forward = lambda z, r=module.radix, f=formula: f(z, r)  # type: ignore[method-assign]


def bench_epochs(
    activations: Iterable[str] = ("relu", "elu", "eru:2", "eru:3", "oru:2", "oru:3"),
    model: str = "mlp8",
    dataset: str = "digits",
    rounds: int = 15,
    batch_size: int = 128,
    device: str = "cpu",
    reference: bool = True,
) -> list[EpochTiming]:
    """Seconds of one training epoch per activation (training only, no evaluation); with
    ``reference``, ERU/ORU are also timed with the formula composition."""
    warm_cpu_kernels()
    trainers: dict[tuple[str, str], Trainer] = {}
    for act in activations:
        config = TrainConfig(
            dataset=dataset, model=model, activation=act, batch_size=batch_size, lr=0.01, device=device
        )
        trainers[(act, "fast")] = Trainer(config)
        if reference and parse_activation(act).is_radix_family:
            trainers[(act, "eager")] = Trainer(config, trainers[(act, "fast")].data)
            _use_reference_formula(trainers[(act, "eager")])
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
    elu, relu = medians.get(("elu", "fast"), float("nan")), medians.get(("relu", "fast"), float("nan"))
    return [EpochTiming(act, path, model, dataset, s, s / elu, s / relu) for (act, path), s in medians.items()]


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
