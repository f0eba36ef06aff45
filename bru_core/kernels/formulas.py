"""The fused kernels' formulas: out-of-place, pointwise, in float32, so that Inductor fuses
each function into one loop (bru_core.kernels.compiled compiles them; bru_core.native
writes them again in C++, term for term).

p holds the radix constants (``_radix_constants``); the forward's log2/exp2 form is that
of the eager path (bru_core.kernels.eager), term for term, so the paths round alike.

In float32 the backward works from the saved output y, as ELU's does, because the slope
is cheap there: with w = u^(1/r) (ERU: y + 1/r above zero; ORU: |y| + 1), f'(z) =
r w^(1 - r), and below zero ERU's slope is r (y + 1/r). For r = 2 and 3 that is a
division, no transcendental at all; for other radices one log2 and one exp2. Like ELU's,
the slope far below zero is exact to within float32 rounding of y (absolute, not
relative, error). In bfloat16 that rounding is up to 2^-8 of 1/r, as large as the slope
itself from about z = -2 (r = 3) down, and can give it the wrong sign: in bfloat16 and
float16 the backward works from z.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

# Computed in float32 and rounded once; their backward works from the input (bru_core.kernels).
LOW_PRECISION: tuple[torch.dtype, ...] = (torch.bfloat16, torch.float16)
_LOG2_E = 1 / math.log(2)


def radix_kind(r: float) -> str:
    """Which kernels a radix gets: its own for 2 and 3, the general ones otherwise."""
    return "2" if r == 2 else "3" if r == 3 else "any"


def overflow_scaling(r: float) -> tuple[int, float]:
    """(k, 2^-k) with r^2 <= 2^k: u = r^2 a + 1 is evaluated as u / 2^k, which cannot
    overflow, and k is added back to its log2. Shared by the eager path and the fused
    kernels, so the two cannot drift."""
    k = max(0, math.ceil(2 * math.log2(r)))
    return k, 2.0**-k


def _radix_constants(r: float) -> list[float]:
    """p: r^2 2^-k, 2^-k, k, 1/r, r log2(e), 1/r - 1, log2 r, r, 1 - r (the native op takes them too)."""
    k, scale = overflow_scaling(r)
    return [r * r * scale, scale, float(k), 1 / r, r * _LOG2_E, 1 / r - 1, math.log2(r), r, 1 - r]


_constants: dict[tuple[float, torch.device], Tensor] = {}


def _params(r: float, device: torch.device) -> Tensor:
    """_radix_constants(r) as a float32 tensor on ``device``, made once."""
    key = (r, device)
    found = _constants.get(key)
    if found is None:
        with torch.inference_mode(False):  # cached: never an inference tensor (a double backward uses it)
            found = _constants[key] = torch.tensor(_radix_constants(r), dtype=torch.float32, device=device)
    return found


def _log2_u(a: Tensor, p: Tensor) -> Tensor:
    return torch.log2(a * p[0] + p[1]) + p[2]  # log2(r^2 a + 1), scaled by 2^-k against overflow


def _eru_forward(z: Tensor, p: Tensor) -> Tensor:
    x = z.float()
    log2_w = _log2_u(torch.relu(x), p) * p[3] + torch.clamp(x, max=0) * p[4]
    return (torch.exp2(log2_w) - p[3]).to(z.dtype)


def _oru_forward(z: Tensor, p: Tensor) -> Tensor:
    x = z.float()
    return (torch.exp2(_log2_u(x.abs(), p) * p[3]) - 1.0).copysign(x).to(z.dtype)


def _eru2_forward(z: Tensor, p: Tensor) -> Tensor:
    x = z.float()  # u^(1/2) = 2 sqrt(a + 1/4), exact scalings
    half_w = torch.sqrt(torch.relu(x) + 0.25) * torch.exp(torch.clamp(x, max=0) * 2.0)
    return ((half_w - 0.25) * 2.0).to(z.dtype)


def _oru2_forward(z: Tensor, p: Tensor) -> Tensor:
    x = z.float()
    return (torch.sqrt(x.abs() + 0.25) * 2.0 - 1.0).copysign(x).to(z.dtype)


def _power_slope(w: Tensor, p: Tensor, kind: str) -> Tensor:
    """r w^(1 - r) for w >= 1."""
    if kind == "2":
        return 2.0 / w
    if kind == "3":
        return 3.0 / (w * w)
    return p[7] * torch.exp2(torch.log2(w) * p[8])


def slope_from_output(family: str, y: Tensor, p: Tensor, kind: str) -> Tensor:
    """f'(z) from y = f(z), in float32, with differentiable ops (a double backward uses
    it as it is). For a float32 y (low precision works from the input, slope_from_input).
    At z = 0 it is exactly r: the clamps keep w at 1 there."""
    v = y.float()
    if family == "oru":
        return _power_slope(v.abs() + 1.0, p, kind)
    w = v + p[3]
    above = v >= 1.0 - p[3]  # y at z = 0, rounded as the forward rounds it
    # No clamp at 0 needed below zero: the forward's float32 y = exp2(...) - 1/r, rounded
    # monotonically, is >= -1/r, so w >= 0. A bf16 y is not: why low precision saves z.
    return torch.where(above, _power_slope(torch.clamp(w, min=1.0), p, kind), p[7] * torch.clamp(w, max=1.0))


def slope_from_input(family: str, x: Tensor, p: Tensor, kind: str) -> Tensor:
    """f'(z) from x = z in float32, as the eager path's slopes write it (the same
    constants): r u^(1/r - 1) exp(r min(z, 0)) as one exp2, or for r = 2
    rsqrt(a + 1/4) exp(2 min(z, 0)). No cancellation, and never negative: each factor is."""
    a = x.abs() if family == "oru" else torch.relu(x)
    if kind == "2":
        inv_root = torch.rsqrt(a + 0.25)
        return inv_root if family == "oru" else inv_root * torch.exp(torch.clamp(x, max=0) * 2.0)
    exponent = _log2_u(a, p) * p[5]
    if family == "eru":
        exponent = exponent + torch.clamp(x, max=0) * p[4]
    return torch.exp2(exponent + p[6])


def _backward(family: str, kind: str) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """grad * f'(z) from the float32 output: one function per family and radix kind."""

    def backward(y: Tensor, grad: Tensor, p: Tensor) -> Tensor:
        return (grad.float() * slope_from_output(family, y, p, kind)).to(grad.dtype)

    backward.__name__ = backward.__qualname__ = f"_{family}{kind}_backward"
    return backward


# One function (one code object) each, not closures of one: Dynamo keeps at most 8 graphs per
# code object (torch._dynamo.config.recompile_limit), and each of these gets one per dtype.
def _eru_backward_from_input(z: Tensor, grad: Tensor, p: Tensor) -> Tensor:
    return (grad.float() * slope_from_input("eru", z.float(), p, "any")).to(grad.dtype)


def _eru2_backward_from_input(z: Tensor, grad: Tensor, p: Tensor) -> Tensor:
    return (grad.float() * slope_from_input("eru", z.float(), p, "2")).to(grad.dtype)


def _oru_backward_from_input(z: Tensor, grad: Tensor, p: Tensor) -> Tensor:
    return (grad.float() * slope_from_input("oru", z.float(), p, "any")).to(grad.dtype)


def _oru2_backward_from_input(z: Tensor, grad: Tensor, p: Tensor) -> Tensor:
    return (grad.float() * slope_from_input("oru", z.float(), p, "2")).to(grad.dtype)


# By (family, kind) where a radix kind has its own, else by family.
_FORWARDS = {("eru", "2"): _eru2_forward, ("oru", "2"): _oru2_forward, "eru": _eru_forward, "oru": _oru_forward}
_BACKWARDS_FROM_INPUT = {
    ("eru", "2"): _eru2_backward_from_input,
    ("oru", "2"): _oru2_backward_from_input,
    "eru": _eru_backward_from_input,
    "oru": _oru_backward_from_input,
}
