"""Bionodal root units (ERU, ORU) and the activation registry.

The maths floor of bru-lab: it imports torch and, of the project, only bru_core.kernels.

ERU and ORU come in two implementations that must agree (tests/test_activations.py):

* ``eru_reference`` / ``oru_reference``: PAPER.md's formulas written as plain torch ops,
  each branch evaluated on a clamped input. Slow, and autograd gets the slope at z = 0
  wrong (0 instead of r), which is why the fast path computes its own derivative.
* ``eru`` / ``oru``: the path used in training. One autograd Function that saves one
  tensor, as ELU does, over one of three implementations (bru_core.kernels.choose, as
  BRU_KERNELS says): on the CPU the native op (bru_core.native, one C++ kernel each way),
  on CUDA the compiled fused kernels (bru_core.kernels), and the eager ops
  (bru_core.kernels.eager) wherever neither serves (float64, no compiler,
  BRU_KERNELS=eager). Eager ops: the forward computes the value with in-place ops and
  saves the input, and the backward computes the exact slope from it with
  differentiable ops, so gradients of any order are exact.
  Native op and fused kernels: in float32 the output is saved, the slope from it being
  cheaper; in bfloat16/float16 the input, because a slope from a rounded output cancels
  (y + 1/r) and can even come out negative. A double backward (create_graph=True) takes
  the differentiable eager slope on every path.
* bfloat16 and float16 are computed in float32 and rounded once on both paths, value and
  gradient. Op by op in bf16 even the exponent r log2(e) z is rounded to 8 bits: at
  z = -20 with r = 3 (86.6) by up to 0.25, a factor 2^0.25 (19%) on the result.

Both families share f'(z) = r w / u, with u = r^2 a + 1 (a = relu(z) for ERU, |z| for ORU)
and w = f(z) + 1/r (ERU) or |f(z)| + 1 (ORU), and ERU(z) + 1/r = u^(1/r) exp(r min(z, 0)),
because on each side of zero one factor is exactly 1: no ``where``, no unused branch that
could leak inf or NaN.

* r = 2, the default, is exact in binary: u^(1/2) = 2 sqrt(a + 1/4).
* Any other radix works in base-2 logs, with u evaluated scaled by a power of two, so that
  r^2 z cannot overflow for a finite z whose value is finite, and log2 u is exactly 0 at 0.

The registry maps spec strings to modules: a name (``relu``, ``gelu``, ...), a radix
family with one radix (``eru:3``; ``eru`` alone is ``eru:2``), or a radix schedule that
gives each hidden layer its own radix (``activations_for``):

* a ramp ``oru:3>2``: linear from R1 in the first hidden layer to R2 in the last
  (3, 2.67, 2.33, 2 on four layers);
* a step ``oru:3|2``: R1 in the first half of the hidden layers, R2 in the second, as
  PAPER.md's O3RU-then-O2RU MLP; of an odd number of layers the middle one belongs to the
  first half (3, 3, 3, 2, 2 on five layers).

Either with one hidden layer is R1; either with two equal radices is the plain ``oru:3``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from bru_core import kernels

DEFAULT_RADIX = 2.0


# --------------------------------------------------------------------------- reference


def _check_radix(r: float) -> float:
    if isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r) or r <= 0:
        raise ValueError(f"radix must be a finite number > 0, got {r!r}")
    return float(r)


def eru_reference(z: Tensor, r: float = DEFAULT_RADIX) -> Tensor:
    """ERU exactly as PAPER.md writes it (clamped branches, then ``where``)."""
    r = _check_radix(r)
    root = (r * r * z.clamp(min=0) + 1).pow(1 / r) - 1 / r
    exponential = torch.exp(r * z.clamp(max=0)) - 1 / r
    return torch.where(z >= 0, root, exponential)


def oru_reference(z: Tensor, r: float = DEFAULT_RADIX) -> Tensor:
    """ORU exactly as PAPER.md writes it."""
    r = _check_radix(r)
    return torch.sign(z) * ((r * r * z.abs() + 1).pow(1 / r) - 1)


# --------------------------------------------------------------------------- fast path
# The eager formulas are bru_core.kernels.eager's: they are one of the kernel paths.


class _RadixFunction(torch.autograd.Function):
    """value(z) forward; grad * slope backward; one saved tensor, as ELU.

    Eager: saves the input and recomputes the slope from it. Native op and fused kernels
    (bru_core.native, bru_core.kernels): one kernel each way; in float32 it saves the
    output, from which the slope is cheaper (ELU's way); in bfloat16/float16 the input,
    because the slope from a rounded output cancels. The input is the same size, but
    where the next layer saves the output anyway (a Linear does) it is one more tensor
    kept, as on the eager path. A double backward (create_graph=True) takes
    differentiable eager ops on every path."""

    @staticmethod
    def forward(ctx, z: Tensor, r: float, family: str, path: kernels.KernelPath) -> Tensor:  # type: ignore[override]
        ctx.r, ctx.family = r, family
        value = _kernel_value(family, z, r, path)
        ctx.kernel = path if value is not None else None
        ctx.from_output = ctx.kernel is not None and z.dtype not in kernels.LOW_PRECISION
        if value is None:
            value = kernels.eager_value(family, z, r)
        ctx.save_for_backward(value if ctx.from_output else z)
        return value

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> tuple[Tensor, None, None, None]:  # type: ignore[override]
        (saved,) = ctx.saved_tensors
        if ctx.kernel is not None and not torch.is_grad_enabled():  # create_graph=True needs differentiable ops
            grad = _kernel_gradient(ctx.kernel, ctx.family, saved, grad_output, ctx.r, ctx.from_output)
            if grad is not None:
                return grad, None, None, None
        if ctx.from_output:
            return grad_output * kernels.eager_slope(ctx.family, saved, ctx.r), None, None, None
        return kernels.eager_gradient(ctx.family, saved, grad_output, ctx.r), None, None, None


def _kernel_value(family: str, z: Tensor, r: float, path: kernels.KernelPath) -> Tensor | None:
    """f(z) by the native op or the fused kernels; None for the eager path (or a failed build)."""
    if path == "native":
        return kernels.native_forward(family, z, r)
    return kernels.forward(family, z, r) if path == "fused" else None


def _kernel_gradient(
    path: kernels.KernelPath, family: str, saved: Tensor, grad: Tensor, r: float, from_output: bool
) -> Tensor | None:
    if path == "native":
        if from_output:
            return kernels.native_backward(family, saved, grad, r)
        return kernels.native_backward_from_input(family, saved, grad.to(saved.dtype), r)
    fused_backward = kernels.backward if from_output else kernels.backward_from_input
    return fused_backward(family, saved, grad, r)


def _radix_unit(family: str, z: Tensor, r: float, fused: bool | None) -> Tensor:
    return radix_unit(family, z, r, None if fused is None else "fused" if fused else "eager")


def radix_unit(family: str, z: Tensor, r: float, path: kernels.KernelPath | None = None) -> Tensor:
    """ERU or ORU (``family``) of z on one path: None as BRU_KERNELS says, or "native",
    "fused" or "eager" forced (benchmarks compare them; "native" fails loudly where the
    op cannot be built)."""
    r = _check_radix(r)
    if path is None:
        path = kernels.choose(z)
    elif path == "native":
        kernels.require_native()
    if z.requires_grad and torch.is_grad_enabled():
        return _RadixFunction.apply(z, r, family, path)
    value = _kernel_value(family, z, r, path)
    return value if value is not None else kernels.eager_value(family, z, r)


def eru(z: Tensor, r: float = DEFAULT_RADIX, fused: bool | None = None) -> Tensor:
    """Exponential root unit (fast path; gradients of any order).

    ``fused``: None picks the path as BRU_KERNELS says (bru_core.kernels.choose: the native
    op on the CPU, the fused kernels on CUDA, where available), True forces the compiled
    fused kernels (bru_core.kernels, torch.compile), False the eager ops."""
    return _radix_unit("eru", z, r, fused)


def oru(z: Tensor, r: float = DEFAULT_RADIX, fused: bool | None = None) -> Tensor:
    """Odd root unit (fast path; gradients of any order); ``fused`` as for eru."""
    return _radix_unit("oru", z, r, fused)


class _RadixUnit(nn.Module):
    def __init__(self, radix: float = DEFAULT_RADIX) -> None:
        super().__init__()
        self.radix = _check_radix(radix)

    def extra_repr(self) -> str:
        return f"radix={self.radix:g}"


class ERU(_RadixUnit):
    """Exponential root unit with radix r (r = 1 is ELU with alpha = 1)."""

    def forward(self, z: Tensor) -> Tensor:
        return eru(z, self.radix)


class ORU(_RadixUnit):
    """Odd root unit with radix r (r = 1 is the identity)."""

    def forward(self, z: Tensor) -> Tensor:
        return oru(z, self.radix)


def warm_up_kernels(model: nn.Module, device: torch.device | str, dtypes: Sequence[torch.dtype]) -> bool:
    """Build the kernels every ERU/ORU of ``model`` will use, before anything is timed
    (the first build on a machine takes seconds: about 20 s for the native CPU op). True
    if the native op or the fused kernels are in use."""
    units = {(type(m).__name__.lower(), m.radix) for m in model.modules() if isinstance(m, _RadixUnit)}
    if torch.device(device).type == "cpu" and kernels.kernel_mode() != "fused":
        # the native op, one library for every radix; without it the compiled kernels are
        # built at the first large tensor
        return bool(units) and kernels.warm_up_native()
    used = False
    for family, radix in sorted(units):
        for dtype in dtypes:
            used = kernels.warm_up(family, radix, device, dtype) or used
    return used


# --------------------------------------------------------------------------- registry

ActivationFactory = Callable[[], nn.Module]

# name -> module factory, as in timm's create_act table. Extend with register_activation.
_BUILTIN: dict[str, ActivationFactory] = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.01),
    "prelu": nn.PReLU,
    "elu": nn.ELU,
    "celu": nn.CELU,
    "selu": nn.SELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "mish": nn.Mish,
    "softplus": nn.Softplus,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}
_REGISTRY: dict[str, ActivationFactory] = dict(_BUILTIN)
RADIX_FAMILIES: dict[str, type[_RadixUnit]] = {"eru": ERU, "oru": ORU}

_NAME = re.compile(r"[a-z][a-z0-9_]*")


def known_activations() -> list[str]:
    """Every name a spec may use, the radix families written with their parameter."""
    return [*_REGISTRY, *(f"{family}:R" for family in RADIX_FAMILIES)]


def register_activation(name: str, factory: ActivationFactory) -> None:
    """Add a user activation to the registry (give its class an init rule too, see
    bru_core.initialisation.register_init_rule)."""
    if not _NAME.fullmatch(name) or name in RADIX_FAMILIES:
        raise ValueError(f"activation name {name!r} must be lower-case letters, digits and _, not eru/oru")
    _REGISTRY[name] = factory


Schedule = Literal["constant", "ramp", "step"]
# How a spec writes each schedule between its two radices: oru:3>2, oru:3|2.
SCHEDULE_MARKS: dict[Schedule, str] = {"ramp": ">", "step": "|"}


@dataclass(frozen=True)
class ActivationSpec:
    """A parsed activation spec: ``relu``, ``eru:2``, or a radix schedule, a ramp
    ``oru:3>2`` or a step ``oru:3|2`` (module docstring).

    ``schedule`` says which: "constant" (every layer the same radix, and every non-radix
    activation), "ramp" or "step". A schedule has two different radices; parse_activation
    writes a ramp or step of two equal radices as "constant"."""

    name: str
    radix_first: float | None = None
    radix_last: float | None = None
    schedule: Schedule = "constant"

    def __post_init__(self) -> None:
        if self.schedule not in ("constant", *SCHEDULE_MARKS):
            raise ValueError(f"schedule must be constant, ramp or step, got {self.schedule!r}")
        if (self.schedule == "constant") != (self.radix_first == self.radix_last):
            raise ValueError(
                f"{self.name}: a {self.schedule} schedule with radices {self.radix_first} and {self.radix_last}; "
                "constant takes one radix, ramp and step two different ones"
            )

    @property
    def is_radix_family(self) -> bool:
        return self.name in RADIX_FAMILIES

    @property
    def is_schedule(self) -> bool:
        """A radix per layer (a ramp or a step), to expand with activations_for."""
        return self.is_radix_family and self.schedule != "constant"

    def __str__(self) -> str:
        if not self.is_radix_family:
            return self.name
        text = f"{self.name}:{self.radix_first:g}"
        return f"{text}{SCHEDULE_MARKS[self.schedule]}{self.radix_last:g}" if self.is_schedule else text

    def radii(self, n_layers: int) -> list[float]:
        """Radix per hidden layer. Constant: R1 everywhere. Ramp: linear from R1 in the
        first layer to R2 in the last. Step: R1 in the first ceil(n/2) layers, R2 in the
        rest, so of an odd number the middle layer belongs to the first half. One layer: R1."""
        assert self.radix_first is not None and self.radix_last is not None
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        if self.schedule == "step":
            first_half = (n_layers + 1) // 2
            return [self.radix_first] * first_half + [self.radix_last] * (n_layers - first_half)
        if self.schedule == "constant" or n_layers == 1:
            return [self.radix_first] * n_layers
        step = (self.radix_last - self.radix_first) / (n_layers - 1)
        return [self.radix_first + i * step for i in range(n_layers)]


def _parse_radix(text: str, spec: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"activation {spec!r}: radix {text!r} is not a number; write e.g. eru:2") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"activation {spec!r}: radix must be a finite number > 0, got {text}")
    return value


def _parse_radices(name: str, params: str, spec: str) -> ActivationSpec:
    """``R``, a ramp ``R1>R2`` or a step ``R1|R2`` of a radix family."""
    marked = [schedule for schedule, mark in SCHEDULE_MARKS.items() if mark in params]
    parts = params.split(SCHEDULE_MARKS[marked[0]]) if len(marked) == 1 else [params]
    if len(marked) > 1 or len(parts) > 2 or not all(part.strip() for part in parts):
        raise ValueError(
            f"activation {spec!r}: write {name}:R, a ramp {name}:R1>R2 or a step {name}:R1|R2, e.g. {name}:3|2"
        )
    radices = [_parse_radix(part, spec) for part in parts]
    schedule: Schedule = marked[0] if marked and radices[0] != radices[-1] else "constant"
    return ActivationSpec(name, radices[0], radices[-1], schedule)


def parse_activation(spec: str) -> ActivationSpec:
    """Parse and check a spec string; ValueError names the spec and what would fix it."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"activation spec must be a non-empty string, got {spec!r}")
    text = spec.strip().lower()
    name, sep, params = text.partition(":")
    if name in RADIX_FAMILIES:
        if not sep:
            return ActivationSpec(name, DEFAULT_RADIX, DEFAULT_RADIX)
        return _parse_radices(name, params, spec)
    if name not in _REGISTRY:
        raise ValueError(f"unknown activation {spec!r}; known: {', '.join(known_activations())}")
    if sep:
        raise ValueError(f"activation {spec!r}: {name} takes no parameter; write {name}")
    return ActivationSpec(name)


def canonical_activation(spec: str) -> str:
    """One spelling per activation (``ERU`` and ``eru:2.0`` are both ``eru:2``, ``oru:3|3``
    is ``oru:3``; schedules ``oru:3>2``, ``oru:3|2``)."""
    return str(parse_activation(spec))


def _build(parsed: ActivationSpec, radix: float | None) -> nn.Module:
    if parsed.is_radix_family:
        return RADIX_FAMILIES[parsed.name](radix)
    return _REGISTRY[parsed.name]()


def get_activation(spec: str) -> nn.Module:
    """A fresh module for one activation spec (not a per-layer schedule)."""
    parsed = parse_activation(spec)
    if parsed.is_schedule:
        raise ValueError(f"activation {spec!r} is a per-layer schedule; expand it with activations_for(spec, n_layers)")
    return _build(parsed, parsed.radix_first)


def activations_for(spec: str, n_layers: int) -> list[nn.Module]:
    """One fresh module per hidden layer; a radix schedule gives each its radix
    (ActivationSpec.radii: a ramp linear from R1 to R2, a step R1 then R2)."""
    if n_layers < 1:
        raise ValueError(f"n_layers must be >= 1, got {n_layers}")
    parsed = parse_activation(spec)
    if parsed.is_radix_family:
        return [_build(parsed, r) for r in parsed.radii(n_layers)]
    return [_build(parsed, None) for _ in range(n_layers)]
