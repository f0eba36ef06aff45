"""The compiled kernels: the formulas (bru_core.kernels.formulas) through ``torch.compile``
(Inductor), one vectorised C++/OpenMP loop per direction on the CPU, one Triton kernel on
CUDA, built once per family and radix kind and run on the flat storage of dense tensors."""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch
from torch import Tensor

from bru_core.kernels.formulas import _BACKWARDS_FROM_INPUT, _FORWARDS, LOW_PRECISION, _backward, _params, radix_kind
from bru_core.kernels.paths import KernelUnavailableError, fused_allowed, kernel_mode, mark_broken

_lock = threading.Lock()
_compiled: dict[tuple[str, str], tuple[Callable[..., Tensor], Callable[..., Tensor]]] = {}
_compiled_from_input: dict[tuple[str, str], Callable[..., Tensor]] = {}  # (family, "2" or "any")


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
        mark_broken(device, f"building the {family} kernels failed ({type(exc).__name__}: {exc})")
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


def warm_up(family: str, r: float, device: torch.device | str, dtype: torch.dtype = torch.float32) -> bool:
    """Build (or load from the cache) the kernels for this family, radix kind, device and
    dtype, before anything is timed. True if the fused kernels will be used."""
    z = torch.linspace(-2, 2, 64, device=device, dtype=dtype)
    if not fused_allowed(z.device, dtype):
        return False
    y = forward(family, z, r)
    if dtype in LOW_PRECISION:
        built = y is not None and backward_from_input(family, z, torch.ones_like(z), r) is not None
    else:
        built = y is not None and backward(family, y, torch.ones_like(y), r) is not None
    with torch.inference_mode():  # evaluation passes: inference tensors get their own graph
        inference = torch.linspace(-2, 2, 64, device=device, dtype=dtype)
        return built and forward(family, inference, r) is not None
