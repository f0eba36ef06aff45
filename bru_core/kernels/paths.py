"""Which path ERU/ORU take on a tensor, as BRU_KERNELS says (bru_core.kernels lists the
modes): the native CPU op, the compiled kernels or the eager ops; and, where a path cannot
be had, one warning (``auto``) or KernelUnavailableError (the path forced)."""

from __future__ import annotations

import functools
import shutil
import warnings
from typing import Literal

import torch
from torch import Tensor

from bru_core import native, settings
from bru_core.settings import KERNEL_MODES, KernelMode

KernelPath = Literal["native", "fused", "eager"]

_broken: dict[str, str] = {}  # device type -> why the compiled kernels could not be built there
_native_warned = False  # the native op's one warning (or its reason, said by the compiled kernels' warning)
_mode_override: KernelMode | None = None

# Below this many elements a CPU call of a compiled kernel costs more than it saves:
# about 75 us of dispatch per call (dynamo's guards, AOT and Inductor wrappers) against a
# few us per eager op. Measured on the 2-core development VM (docs/benchmarks.md, "small tensors"): fused
# wins from about 64K elements. CUDA launches cost the eager path more: fused always.
CPU_FUSED_MIN_NUMEL = 65_536


class KernelUnavailableError(RuntimeError):
    """BRU_KERNELS=fused or native, and those kernels cannot be built on this device."""


def kernel_mode() -> KernelMode:
    """set_kernel_mode's mode, else BRU_KERNELS (bru_core.settings)."""
    return _mode_override or settings.kernel_mode()


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


def choose(z: Tensor) -> KernelPath:
    """Which path eru/oru take on z, as BRU_KERNELS says (bru_core.kernels): the native
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
    return native.forward_op is not None or native_allowed(mode)


def native_allowed(mode: KernelMode) -> bool:
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


def use_fused(z: Tensor) -> bool:
    """Whether eru/oru should run the compiled kernels on z when the native op does not
    (``choose`` asks it first): where they are available and, in ``auto`` mode on the
    CPU, where z is large enough for them to pay off."""
    if z.device.type == "cpu" and z.numel() < CPU_FUSED_MIN_NUMEL and kernel_mode() != "fused":
        return False  # checked first: the common case of small layers stays cheap
    return z.numel() > 0 and fused_allowed(z.device, z.dtype)


def fused_allowed(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the compiled kernels serve this device and dtype; if they cannot be built,
    say why once, or fail loudly in ``fused`` mode."""
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


def mark_broken(device: torch.device, problem: str) -> None:
    """A compiled kernel failed to build on this device type: warn once, and stay on the eager path there."""
    _broken[device.type] = problem
    warnings.warn(f"bru: fused ERU/ORU kernels off on {device.type}: {problem}", RuntimeWarning, stacklevel=5)
