"""The eager path: ERU and ORU as chains of torch ops, where neither the native op nor the
fused kernels serve (float64, no compiler, BRU_KERNELS=eager), and the differentiable
slopes every path's double backward takes.

The forward computes the value with in-place ops (it runs inside Function.forward, where
autograd records nothing); the slopes are out-of-place, so that with create_graph=True
autograd differentiates them again (exact second order). bfloat16 and float16 are
computed in float32 and rounded once, value and gradient (bru_core.activations says why).

Both families share f'(z) = r w / u, with u = r^2 a + 1 (a = relu(z) for ERU, |z| for ORU)
and ERU(z) + 1/r = u^(1/r) exp(r min(z, 0)): on each side of zero one factor is exactly 1,
so there is no ``where`` and no unused branch that could leak inf or NaN. r = 2, the
default, is exact in binary (u^(1/2) = 2 sqrt(a + 1/4)); any other radix works in base-2
logs, with u scaled by a power of two so that r^2 z cannot overflow.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from bru_core.kernels.formulas import LOW_PRECISION, _params, overflow_scaling, radix_kind, slope_from_output

_LOG2_E = 1 / math.log(2)


def _log2_u(a: Tensor, r: float) -> Tensor:
    """log2(r^2 a + 1) for a >= 0, without overflow and exactly 0 at a = 0.

    u is evaluated scaled by a power of two, u / 2^k = a r^2 / 2^k + 2^-k with r^2 <= 2^k, so
    it cannot overflow; the scaling is exact, log2(2^-k) = -k is exact, and so is adding k
    back (which keeps the value at 0 and the slope r at 0 exact, unlike folding k into
    the callers' constants)."""
    k, scale = overflow_scaling(r)
    log2_u = torch.log2(a * (r * r * scale) + scale)
    return log2_u.add_(k) if k else log2_u


# Values: computed inside Function.forward (no autograd), so in-place ops are free to use.


def _eru_value(z: Tensor, r: float) -> Tensor:
    if r == 2:
        # The default radix, exact in binary: u^(1/2) = 2 sqrt(a + 1/4), w = u^(1/2) e.
        half_w = torch.relu(z).add_(0.25).sqrt_().mul_(z.clamp(max=0).mul_(2.0).exp_())
        return half_w.sub_(0.25).mul_(2.0)  # w - 1/2
    # Any radix, in base-2 logs (log2/exp2 are the fastest transcendental kernels on the
    # CPU): w = u^(1/r) exp(r min(z, 0)) = 2^(log2(u) / r + r log2(e) min(z, 0)).
    log2_w = _log2_u(torch.relu(z), r).mul_(1 / r).add_(z.clamp(max=0), alpha=r * _LOG2_E)
    return log2_w.exp2_().sub_(1 / r)


def _oru_value(z: Tensor, r: float) -> Tensor:
    if r == 2:
        return z.abs().add_(0.25).sqrt_().mul_(2.0).sub_(1.0).copysign_(z)
    return _log2_u(z.abs(), r).mul_(1 / r).exp2_().sub_(1.0).copysign_(z)  # exactly 0 at z = 0


# Slopes: f'(z) = r w / u = r u^(1/r - 1) exp(r min(z, 0)), one exp2 for all of it, and
# never negative. Computed in backward from the saved input with out-of-place ops.
# formulas.slope_from_input is the same formula, term for term, for the fused path.


def _eru_slope(z: Tensor, r: float) -> Tensor:
    if r == 2:
        # 2 w / (4a + 1) = exp(2 min(z, 0)) / sqrt(a + 1/4)
        return torch.rsqrt(torch.relu(z) + 0.25) * torch.exp(z.clamp(max=0) * 2.0)
    exponent = torch.add(_log2_u(torch.relu(z), r) * (1 / r - 1), z.clamp(max=0), alpha=r * _LOG2_E)
    return torch.exp2(exponent + math.log2(r))


def _oru_slope(z: Tensor, r: float) -> Tensor:
    if r == 2:
        return torch.rsqrt(z.abs() + 0.25)
    return torch.exp2(_log2_u(z.abs(), r) * (1 / r - 1) + math.log2(r))


_VALUES = {"eru": _eru_value, "oru": _oru_value}
_SLOPES = {"eru": _eru_slope, "oru": _oru_slope}


def eager_value(family: str, z: Tensor, r: float) -> Tensor:
    """f(z) with eager ops; low precision in float32, rounded once."""
    if z.dtype in LOW_PRECISION:
        return _VALUES[family](z.float(), r).to(z.dtype)
    return _VALUES[family](z, r)


def eager_gradient(family: str, z: Tensor, grad: Tensor, r: float) -> Tensor:
    """grad * f'(z) from the input, with differentiable eager ops; low precision in float32, rounded once."""
    if z.dtype in LOW_PRECISION:
        return (grad.float() * _SLOPES[family](z.float(), r)).to(grad.dtype)
    return grad * _SLOPES[family](z, r)


def eager_slope(family: str, y: Tensor, r: float) -> Tensor:
    """f'(z) from a float32 y = f(z) with differentiable eager ops (the double backward of
    the native op and the fused kernels, which saved the output)."""
    return slope_from_output(family, y, _params(r, y.device), radix_kind(r)).to(y.dtype)
