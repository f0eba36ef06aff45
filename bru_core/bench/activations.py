"""ERU/ORU themselves: forward + backward speed per path (bru bench activations) and the
float32 fast path's error against the float64 formula (bru bench accuracy)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from bru_core.activations import eru, eru_reference, oru, oru_reference, parse_activation, radix_unit
from bru_core.bench.timing import interleaved, sync, warm_cpu_kernels
from bru_core.training import resolve_device


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
            sync(dev)
            start = time.perf_counter()
            fn(x).backward(grad)
            sync(dev)
            seconds = time.perf_counter() - start
            x.grad = None
            return seconds

        return run

    def copy() -> float:
        sync(dev)
        start = time.perf_counter()
        copy_target.copy_(x.detach())
        sync(dev)
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
    medians = interleaved(runs, rounds)
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
