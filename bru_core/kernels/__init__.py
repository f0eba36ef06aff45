"""ERU/ORU kernels: one loop for the forward, one for the backward, and which path runs.

The eager path (``eager``) writes ERU and ORU as chains of torch ops; on a large tensor
each op is one more pass over memory, and on a small one each costs a dispatch. Two kinds
of kernel do each direction in one loop instead:

* **The native CPU op** (bru_core.native): the formulas (``formulas``) written once in C++ with
  ATen's vector types, built with the machine's C++ compiler on first use and cached on
  disk, registered as ``torch.ops.bru_native``. One op call each way, as ELU: no Python and
  no guards inside the call, so it wins at every size, from a handful of values (where the
  eager path pays ten dispatches) to millions (where it matches or beats the compiled
  loop, on ATen's threads).
* **The compiled kernels** (``compiled``): the same formulas through ``torch.compile``
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

The eager ops still run where neither serves (float64, no compiler, ``BRU_KERNELS=eager``),
and their differentiable slopes serve every path's double backward.

``BRU_KERNELS`` chooses (``choose`` applies it to a tensor; ``set_kernel_mode`` does the
same from Python):

* ``auto`` (the default): on the CPU the native op for every float32/bfloat16/float16
  tensor; where it cannot be built (no compiler, not Linux, a failed build: one warning),
  what ran before it: the compiled kernels from ``CPU_FUSED_MIN_NUMEL`` values, the eager
  ops. On CUDA the compiled (Triton) kernels always.
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

The package: ``formulas`` (the fused formulas and the radix constants), ``compiled`` (them
through torch.compile), ``native_op`` (calls of the native op), ``eager`` (the eager ops)
and ``paths`` (the modes, and which path runs where).
"""

from bru_core.kernels.compiled import backward, backward_from_input, forward, warm_up
from bru_core.kernels.eager import eager_gradient, eager_slope, eager_value
from bru_core.kernels.formulas import LOW_PRECISION, overflow_scaling, radix_kind, slope_from_input, slope_from_output
from bru_core.kernels.native_op import (
    native_backward,
    native_backward_from_input,
    native_forward,
    require_native,
    warm_up_native,
)
from bru_core.kernels.paths import (
    CPU_FUSED_MIN_NUMEL,
    KernelPath,
    KernelUnavailableError,
    choose,
    kernel_mode,
    set_kernel_mode,
    use_fused,
    use_native,
)
from bru_core.settings import KERNEL_MODES, KernelMode

__all__ = [
    "CPU_FUSED_MIN_NUMEL",
    "KERNEL_MODES",
    "LOW_PRECISION",
    "KernelMode",
    "KernelPath",
    "KernelUnavailableError",
    "backward",
    "backward_from_input",
    "choose",
    "eager_gradient",
    "eager_slope",
    "eager_value",
    "forward",
    "kernel_mode",
    "native_backward",
    "native_backward_from_input",
    "native_forward",
    "overflow_scaling",
    "radix_kind",
    "require_native",
    "set_kernel_mode",
    "slope_from_input",
    "slope_from_output",
    "use_fused",
    "use_native",
    "warm_up",
    "warm_up_native",
]
