"""What the ERU/ORU tests share (tests/test_activations.py, test_kernels.py, test_native.py):
the functions and radices they check, the points and the error measure, the bf16/fp16 slope
check, and a clean kernel state for each test."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from bru_core import kernels
from bru_core.activations import eru, eru_reference, oru, oru_reference
from bru_core.kernels import paths

FUNCTIONS = {"eru": (eru, eru_reference), "oru": (oru, oru_reference)}  # fast path, PAPER.md's formula
RADII = [0.5, 1.0, 1.5, 2.0, 3.0, 7.5]
EPS32 = torch.finfo(torch.float32).eps
LOW_PRECISION_RADII = [2.0, 3.0, 7 / 3, 8 / 3]  # 3, 7/3, 8/3: a bf16 output once rounded below -1/r


@contextmanager
def clean_kernels(mode: kernels.KernelMode | None) -> Iterator[None]:
    """The kernels in ``mode`` (None: as BRU_KERNELS says), the compiler looked for afresh;
    afterwards back to the variable, with no device marked broken."""
    kernels.set_kernel_mode(mode)
    paths._compiler_problem.cache_clear()
    try:
        yield
    finally:
        kernels.set_kernel_mode(None)
        paths._broken.clear()
        paths._compiler_problem.cache_clear()


def points() -> torch.Tensor:
    """A float64 grid over [-40, 40], random draws, and the signed zeros and tiny values."""
    grid = torch.linspace(-40, 40, 8001, dtype=torch.float64)
    draws = torch.randn(20_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    return torch.cat([grid, draws, torch.tensor([0.0, -0.0, 1e-30, -1e-30], dtype=torch.float64)])


def relative_eps(got: torch.Tensor, exact: torch.Tensor) -> float:
    """The largest error in float32 eps, relative to the exact value (absolute below 1)."""
    return float(((got.double() - exact).abs() / exact.abs().clamp(min=1)).max()) / EPS32


def every_value(dtype: torch.dtype, bound: float = 20.0) -> torch.Tensor:
    """Every finite value of a 16-bit float type in [-bound, bound] (33,602 bf16, 39,426 fp16)."""
    every = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype)
    return every[every.isfinite() & (every.abs() <= bound)]


def exact_slope(family: str, z64: torch.Tensor, r: float) -> torch.Tensor:
    """PAPER.md's f'(z) in float64 (right at z = 0 too, unlike the reference's autograd)."""
    a = z64.abs() if family == "oru" else z64.clamp(min=0)
    slope = r * (r * r * a + 1) ** ((1 - r) / r)
    return slope * torch.exp(r * z64.clamp(max=0)) if family == "eru" else slope


def assert_low_precision_slopes(family: str, r: float, dtype: torch.dtype, fused: bool | None) -> None:
    """Backward of every ``dtype`` value in [-20, 20] with grad_output = 1: each slope is
    finite, >= 0 and within one rounding of the float64 slope of that same input.

    The honest bound: one rounding of a float32 slope to ``dtype``, at most eps/2 of it
    (2^-8 bf16, 2^-11 fp16), or half the smallest subnormal where it underflows (float16
    below 6e-5: ERU far below zero; bf16 has float32's range); plus 64 float32 ulps for
    the float32 slope before that rounding: its exp2 argument reaches r log2(e) |z| = 87
    at z = -20, and a few ulps of the argument are tens of ulps of the slope (39 at most,
    measured). A slope recovered from the rounded output (y + 1/r) misses it by far: on
    the exponential side its error is eps/2 of 1/r, not of the slope."""
    fast, _ = FUNCTIONS[family]
    z = every_value(dtype).requires_grad_(True)
    fast(z, r, fused=fused).backward(torch.ones_like(z))
    assert z.grad.dtype == dtype
    slope, exact = z.grad.double(), exact_slope(family, z.detach().double(), r)
    info = torch.finfo(dtype)
    tolerance = (info.eps / 2 + 64 * EPS32) * exact + info.tiny * info.eps / 2
    assert slope.isfinite().all() and (slope >= 0).all(), f"{slope.min().item()} at z = {z[slope.argmin()].item()}"
    error = (slope - exact).abs()
    worst = int((error / tolerance).argmax())
    assert error[worst] <= tolerance[worst], (
        f"z = {z[worst].item()}: slope {slope[worst].item()}, exact {exact[worst].item()}"
    )
