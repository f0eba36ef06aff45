"""Fused ERU/ORU kernels: one loop for the forward, one for the backward, and which path runs.

bru_core.activations writes ERU and ORU as a chain of eager ops; on a large tensor each op
is one more pass over memory, and on a small one each costs a dispatch. Two kinds of
kernel do each direction in one loop instead:

* **The native CPU op** (bru_core.native): the formulas below written once in C++ with
  ATen's vector types, built with the machine's C++ compiler on first use and cached on
  disk, registered as ``torch.ops.bru_native``. One op call each way, as ELU: no Python and
  no guards inside the call, so it wins at every size, from a handful of values (where the
  eager path pays ten dispatches) to millions (where it matches or beats the compiled
  loop, on ATen's threads).
* **The compiled kernels** (this module): the same formulas through ``torch.compile``
  (Inductor), a vectorised C++/OpenMP loop on the CPU, a Triton kernel on CUDA. The radix
  is a runtime argument, so a radix search compiles nothing new; r = 2 has its own
  kernels built on sqrt/rsqrt, as in the eager path. On the CPU each call costs about
  75 us of dynamo guards and wrappers, and the first call of a process loads Inductor
  (seconds): they pay on the CPU only from ``CPU_FUSED_MIN_NUMEL`` values, and the native
  op, where it builds, takes their place there.

Both keep the design of the fused path:

* The forward reads z and writes y = f(z). In float32 the backward reads y and the
  incoming gradient and writes the gradient: the only saved tensor is the output, as for
  ELU, and the slope from it needs no transcendental for r = 2 and 3.
* In bfloat16 and float16 (``LOW_PRECISION``) the backward reads z instead, and
  bru_core.activations saves the input there (the same size; but where the next layer
  saves the output anyway, one more tensor kept). A slope recovered from a rounded output
  cannot be accurate: ERU's r (y + 1/r) cancels, and a bf16 y can even fall below -1/r
  (ERU, r = 3, z = -3 gave the slope -0.00195 for +0.00037). From z the slope is a
  product of powers of positive terms: never negative, within one rounding of the exact.
* Every kernel works on the flat storage of a dense tensor (contiguous or channels_last),
  so one kernel serves every shape and layout, and low-precision inputs are computed in
  float32 and rounded once (values and gradients alike).

``BRU_KERNELS`` chooses (``choose`` applies it to a tensor; ``set_kernel_mode`` does the
same from Python):

* ``auto`` (the default): on the CPU the native op for every float32/bfloat16/float16
  tensor; where it cannot be built (no compiler, not Linux, a failed build: one warning),
  what ran before it: the compiled kernels from ``CPU_FUSED_MIN_NUMEL`` values, the eager
  ops below. On CUDA the compiled (Triton) kernels always.
* ``native``: the native op for every CPU tensor it serves; fail loudly if it cannot be
  built. CUDA as ``auto``.
* ``fused``: the compiled kernels for every tensor, on every device; fail loudly if they
  cannot be built.
* ``eager``: the eager ops everywhere.

float64 takes the eager ops in every mode (the kernels compute in float32), and so does
everything inside a user's ``torch.compile`` (the formulas fuse with the model there).

Compiling costs a few seconds per kernel the first time on a machine, building the native
op about 20 s; both are cached on disk, so later processes load them. ``warm_up`` and
``warm_up_native`` do that before any timing starts (bru_core.activations.warm_up_kernels,
which bru_core.training calls).
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import threading
import warnings
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from bru_core import native

KernelMode = Literal["auto", "fused", "eager", "native"]
KERNEL_MODES: tuple[str, ...] = ("auto", "fused", "eager", "native")
KernelPath = Literal["native", "fused", "eager"]
# Computed in float32 and rounded once; their backward works from the input (module docstring).
LOW_PRECISION: tuple[torch.dtype, ...] = (torch.bfloat16, torch.float16)
_LOG2_E = 1 / math.log(2)


class KernelUnavailableError(RuntimeError):
    """BRU_KERNELS=fused or native, and those kernels cannot be built on this device."""


# --------------------------------------------------------------------------- formulas
# Out-of-place, pointwise, in float32: Inductor fuses each function into one loop.
# p holds the radix constants (see _radix_constants); the forward's log2/exp2 form is that
# of bru_core.activations, term for term, so the two paths round alike.
#
# In float32 the backward works from the saved output y, as ELU's does, because the slope
# is cheap there: with w = u^(1/r) (ERU: y + 1/r above zero; ORU: |y| + 1), f'(z) =
# r w^(1 - r), and below zero ERU's slope is r (y + 1/r). For r = 2 and 3 that is a
# division, no transcendental at all; for other radices one log2 and one exp2. Like ELU's,
# the slope far below zero is exact to within float32 rounding of y (absolute, not
# relative, error). In bfloat16 that rounding is up to 2^-8 of 1/r, as large as the slope
# itself from about z = -2 (r = 3) down, and can give it the wrong sign: in bfloat16 and
# float16 the backward works from z.


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
    """f'(z) from x = z in float32, as bru_core.activations' _eru_slope/_oru_slope write it
    (the same constants): r u^(1/r - 1) exp(r min(z, 0)) as one exp2, or for r = 2
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


_FORWARDS = {("eru", "2"): _eru2_forward, ("oru", "2"): _oru2_forward, "eru": _eru_forward, "oru": _oru_forward}
_BACKWARDS_FROM_INPUT = {
    ("eru", "2"): _eru2_backward_from_input,
    ("oru", "2"): _oru2_backward_from_input,
    "eru": _eru_backward_from_input,
    "oru": _oru_backward_from_input,
}


def radix_kind(r: float) -> str:
    """Which kernels a radix gets: its own for 2 and 3, the general ones otherwise."""
    return "2" if r == 2 else "3" if r == 3 else "any"


def overflow_scaling(r: float) -> tuple[int, float]:
    """(k, 2^-k) with r^2 <= 2^k: u = r^2 a + 1 is evaluated as u / 2^k, which cannot
    overflow, and k is added back to its log2. Shared by the eager path (activations) and
    the fused kernels, so the two cannot drift."""
    k = max(0, math.ceil(2 * math.log2(r)))
    return k, 2.0**-k


def _radix_constants(r: float) -> list[float]:
    k, scale = overflow_scaling(r)
    return [r * r * scale, scale, float(k), 1 / r, r * _LOG2_E, 1 / r - 1, math.log2(r), r, 1 - r]


# --------------------------------------------------------------------------- compiled kernels

_lock = threading.Lock()
_compiled: dict[tuple[str, str], tuple[Callable[..., Tensor], Callable[..., Tensor]]] = {}
_compiled_from_input: dict[tuple[str, str], Callable[..., Tensor]] = {}  # (family, "2" or "any")
_constants: dict[tuple[float, torch.device], Tensor] = {}
_broken: dict[str, str] = {}  # device type -> why the kernels could not be built there
_native_warned = False  # the native op's one warning (or its reason, said by the compiled kernels' warning)
_native_constants: dict[tuple[str, float], tuple[int, int, list[float]]] = {}
_mode_override: KernelMode | None = None


def kernel_mode() -> KernelMode:
    mode = _mode_override or os.environ.get("BRU_KERNELS", "auto").strip().lower() or "auto"
    if mode not in KERNEL_MODES:
        raise ValueError(f"BRU_KERNELS: must be one of {', '.join(KERNEL_MODES)}, got {mode!r}")
    return mode  # type: ignore[return-value]


def set_kernel_mode(mode: KernelMode | None) -> None:
    """Override BRU_KERNELS for this process (None: back to the variable)."""
    global _mode_override
    if mode is not None and mode not in KERNEL_MODES:
        raise ValueError(f"kernel mode must be one of {', '.join(KERNEL_MODES)}, got {mode!r}")
    _mode_override = mode


@functools.cache  # once per process: a PATH search per call cost more than the kernel
def _compiler_problem(device_type: str) -> str | None:
    if device_type == "cpu":
        if not any(shutil.which(cxx) for cxx in ("g++", "c++", "clang++")):
            return "no C++ compiler (g++, c++ or clang++) on PATH for the CPU kernels"
        return None
    if device_type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return "triton is not installed, Inductor's CUDA kernels need it"
        return None
    return f"no fused kernels for device type {device_type!r}"


def _kernels(family: str, r: float) -> tuple[Callable[..., Tensor], Callable[..., Tensor]]:
    key = (family, radix_kind(r))
    with _lock:
        if key not in _compiled:
            forward = _FORWARDS.get(key, _FORWARDS[family])
            _compiled[key] = (
                torch.compile(forward, dynamic=True, fullgraph=True),
                torch.compile(_backward(*key), dynamic=True, fullgraph=True),
            )
        return _compiled[key]


def _kernel_from_input(family: str, r: float) -> Callable[..., Tensor]:
    """The low-precision backward: its own kernel for r = 2, one for every other radix
    (from z, r = 3 has no cheaper form)."""
    key = (family, "2" if radix_kind(r) == "2" else "any")
    with _lock:
        if key not in _compiled_from_input:
            backward = _BACKWARDS_FROM_INPUT.get(key, _BACKWARDS_FROM_INPUT[family])
            _compiled_from_input[key] = torch.compile(backward, dynamic=True, fullgraph=True)
        return _compiled_from_input[key]


def _params(r: float, device: torch.device) -> Tensor:
    key = (r, device)
    found = _constants.get(key)
    if found is None:
        with torch.inference_mode(False):  # cached: never an inference tensor (a double backward uses it)
            found = _constants[key] = torch.tensor(_radix_constants(r), dtype=torch.float32, device=device)
    return found


# Below this many elements a CPU call of a compiled kernel costs more than it saves:
# about 75 us of dispatch per call (dynamo's guards, AOT and Inductor wrappers) against a
# few us per eager op. Measured on the 2-core development VM (docs/benchmarks.md, "small tensors"): fused
# wins from about 64K elements. CUDA launches cost the eager path more: fused always.
CPU_FUSED_MIN_NUMEL = 65_536


def choose(z: Tensor) -> KernelPath:
    """Which path eru/oru take on z, as BRU_KERNELS says (module docstring): the native
    CPU op, the compiled kernels or the eager ops."""
    if z.device.type == "cpu" and use_native(z):
        return "native"
    return "fused" if use_fused(z) else "eager"


def use_native(z: Tensor) -> bool:
    """Whether eru/oru should run the native CPU op (bru_core.native) on z: a CPU tensor
    of a dtype it serves, in ``auto`` or ``native`` mode, where it is loaded or builds."""
    if z.device.type != "cpu" or z.dtype not in native.DTYPES or torch.compiler.is_compiling():
        return False  # inside a user's torch.compile the eager formulas fuse with the model
    mode = kernel_mode()
    if mode == "eager" or mode == "fused":
        return False
    return native.forward_op is not None or _native_allowed(mode)


def _native_allowed(mode: KernelMode) -> bool:
    """Load (or build) the native op; if it cannot be had, say why once, or fail loudly in
    ``native`` mode."""
    global _native_warned
    if native.load(lambda: _compiler_problem("cpu")):
        return True
    problem = native.problem() or "unknown"
    if mode == "native":
        raise KernelUnavailableError(f"BRU_KERNELS=native: {problem}; set BRU_KERNELS=auto or eager")
    if not _native_warned:
        _native_warned = True
        if problem != _broken.get("cpu"):  # no compiler: the compiled kernels' warning has said it
            warnings.warn(f"bru: native ERU/ORU op off on cpu: {problem}", RuntimeWarning, stacklevel=5)
    return False


def require_native() -> None:
    """Load, or build, the native op, or raise KernelUnavailableError saying why."""
    if native.forward_op is None:
        _native_allowed("native")


def warm_up_native() -> bool:
    """Load, or build, the native op before anything is timed (the first build on a
    machine takes about 20 s). True if eru/oru will use it on the CPU."""
    mode = kernel_mode()
    return mode in ("auto", "native") and (native.forward_op is not None or _native_allowed(mode))


def _native_args(family: str, r: float) -> tuple[int, int, list[float]]:
    key = (family, r)
    found = _native_constants.get(key)
    if found is None:
        found = _native_constants[key] = (native.FAMILY_CODES[family], native.KIND_CODES[radix_kind(r)],
                                          _radix_constants(r))  # fmt: skip
    return found


def native_forward(family: str, z: Tensor, r: float) -> Tensor:
    """f(z) by the native op (use_native(z) said yes)."""
    return native.forward_op(z, *_native_args(family, r))  # type: ignore[misc]


def native_backward(family: str, y: Tensor, grad: Tensor, r: float) -> Tensor:
    """grad * f'(z) from the native forward's float32 output y."""
    return native.backward_from_output_op(y, grad, *_native_args(family, r))  # type: ignore[misc]


def native_backward_from_input(family: str, z: Tensor, grad: Tensor, r: float) -> Tensor:
    """grad * f'(z) from the input z (LOW_PRECISION), in float32 and rounded once."""
    return native.backward_from_input_op(z, grad, *_native_args(family, r))  # type: ignore[misc]


def use_fused(z: Tensor) -> bool:
    """Whether eru/oru should run the compiled kernels on z when the native op does not
    (``choose`` asks it first): where they are available and, in ``auto`` mode on the
    CPU, where z is large enough for them to pay off."""
    if z.device.type == "cpu" and z.numel() < CPU_FUSED_MIN_NUMEL and kernel_mode() != "fused":
        return False  # checked first: the common case of small layers stays cheap
    return z.numel() > 0 and _fused_allowed(z.device, z.dtype)


def _fused_allowed(device: torch.device, dtype: torch.dtype) -> bool:
    if not dtype.is_floating_point or dtype == torch.float64:
        return False  # float64 keeps the eager path: the kernels compute in float32
    if torch.compiler.is_compiling():
        return False  # inside a user's torch.compile the eager formulas fuse with the model
    mode = kernel_mode()
    if mode == "eager":
        return False
    problem = _broken.get(device.type) or _compiler_problem(device.type)
    if problem is None:
        return True
    if mode == "fused":
        raise KernelUnavailableError(f"BRU_KERNELS=fused: {problem}; set BRU_KERNELS=eager or auto")
    if device.type not in _broken:
        _broken[device.type] = problem
        if not (device.type == "cpu" and _native_warned and problem == native.problem()):  # said already
            warnings.warn(f"bru: fused ERU/ORU kernels off on {device.type}: {problem}", RuntimeWarning, stacklevel=4)
    return False


def _flat(t: Tensor) -> Tensor | None:
    """The elements of a dense tensor in memory order, as a 1-D tensor on the same storage
    (None if not dense). Not a view: a view would make the compiled graph guard on the
    shape of its base, and compile again for every rank and layout."""
    if not (t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last))):
        return None
    flat = torch.empty(0, dtype=t.dtype, device=t.device)
    return flat.set_(t.untyped_storage(), t.storage_offset(), (t.numel(),), (1,))


def _run(kernel: Callable[..., Tensor], z: Tensor, *rest: Tensor) -> Tensor:
    """kernel over z's flat storage, the result laid out like z."""
    z = z.detach()  # requires_grad is part of what a compiled graph is specialised on
    flat = _flat(z)
    if flat is None:
        z = z.contiguous()
        flat = _flat(z)
    others = []
    for t in rest:
        if t.shape != z.shape or t.stride() != z.stride():
            t = torch.empty_like(z, dtype=t.dtype).copy_(t)  # same layout as z
        others.append(_flat(t.detach()))
    # Grad mode on (the inputs are detached, so nothing is recorded): one compiled graph
    # whatever the caller's mode, and the fast one. Measured here (torch 2.14.1, CPU):
    # the same kernel compiled under no_grad or inference_mode runs about 2x slower.
    with torch.enable_grad():
        out = kernel(flat, *others)
    return out.as_strided(z.shape, z.stride())  # out is dense and in z's memory order


def _guarded(family: str, r: float, device: torch.device, call: Callable[[], Tensor]) -> Tensor | None:
    try:
        return call()
    except Exception as exc:  # a failed build: say why once, then stay on the eager path
        if kernel_mode() == "fused":
            raise KernelUnavailableError(f"BRU_KERNELS=fused: building the {family} kernels failed: {exc}") from exc
        _broken[device.type] = f"building the {family} kernels failed ({type(exc).__name__}: {exc})"
        warnings.warn(
            f"bru: fused ERU/ORU kernels off on {device.type}: {_broken[device.type]}", RuntimeWarning, stacklevel=4
        )
        return None


def forward(family: str, z: Tensor, r: float) -> Tensor | None:
    """f(z) by the fused kernel, or None if it could not be built (use the eager path)."""
    kernel = _kernels(family, r)[0]
    return _guarded(family, r, z.device, lambda: _run(lambda x: kernel(x, _params(r, z.device)), z))


def backward(family: str, y: Tensor, grad: Tensor, r: float) -> Tensor | None:
    """grad * f'(z) from the forward's float32 output y = f(z) by the fused kernel, or None
    if it could not be built."""
    kernel = _kernels(family, r)[1]
    return _guarded(family, r, y.device, lambda: _run(lambda x, g: kernel(x, g, _params(r, y.device)), y, grad))


def backward_from_input(family: str, z: Tensor, grad: Tensor, r: float) -> Tensor | None:
    """grad * f'(z) from the forward's input z by the fused kernel (for LOW_PRECISION z), in
    float32 and rounded once to grad's dtype; None if it could not be built."""
    kernel = _kernel_from_input(family, r)
    return _guarded(family, r, z.device, lambda: _run(lambda x, g: kernel(x, g, _params(r, z.device)), z, grad))


def eager_slope(family: str, y: Tensor, r: float) -> Tensor:
    """f'(z) from a float32 y = f(z) with differentiable eager ops (double backward)."""
    return slope_from_output(family, y, _params(r, y.device), radix_kind(r)).to(y.dtype)


def warm_up(family: str, r: float, device: torch.device | str, dtype: torch.dtype = torch.float32) -> bool:
    """Build (or load from the cache) the kernels for this family, radix kind, device and
    dtype, before anything is timed. True if the fused kernels will be used."""
    z = torch.linspace(-2, 2, 64, device=device, dtype=dtype)
    if not _fused_allowed(z.device, dtype):
        return False
    y = forward(family, z, r)
    if dtype in LOW_PRECISION:
        built = y is not None and backward_from_input(family, z, torch.ones_like(z), r) is not None
    else:
        built = y is not None and backward(family, y, torch.ones_like(y), r) is not None
    with torch.inference_mode():  # evaluation passes: inference tensors get their own graph
        inference = torch.linspace(-2, 2, 64, device=device, dtype=dtype)
        return built and forward(family, inference, r) is not None
