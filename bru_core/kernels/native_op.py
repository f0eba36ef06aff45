"""Calls of the native CPU op (bru_core.native builds it): the formulas' constants for a
family and radix, cached, and one op call each way."""

from __future__ import annotations

from torch import Tensor

from bru_core import native
from bru_core.kernels.formulas import _radix_constants, radix_kind
from bru_core.kernels.paths import kernel_mode, native_allowed

_native_constants: dict[tuple[str, float], tuple[int, int, list[float]]] = {}


def require_native() -> None:
    """Load, or build, the native op, or raise KernelUnavailableError saying why."""
    if native.forward_op is None:
        native_allowed("native")


def warm_up_native() -> bool:
    """Load, or build, the native op before anything is timed (the first build on a
    machine takes about 20 s). True if eru/oru will use it on the CPU."""
    mode = kernel_mode()
    return mode in ("auto", "native") and (native.forward_op is not None or native_allowed(mode))


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
