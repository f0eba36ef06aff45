"""The native CPU op: ERU/ORU as one C++ loop each way, with no Python inside the call.

On the CPU, what a small activation costs is dispatch, not arithmetic: mlp8's are 128 x 128
values, and the eager path (bru_core.activations) spends about ten op dispatches on each
direction, the torch.compile'd kernels (bru_core.kernels) about 75 us of guard checks and
wrappers per call. ELU is one native op each way. So is this: a small C++ extension, built
on first use with the machine's C++ compiler and cached on disk, that registers three torch
ops (``torch.ops.bru_native``):

* ``forward(z, family, kind, p)``: y = f(z);
* ``backward_from_output(y, grad, family, kind, p)``: grad * f'(z) from a float32 y, as the
  fused kernels' float32 backward (no transcendental for r = 2 and 3);
* ``backward_from_input(z, grad, family, kind, p)``: grad * f'(z) from z (bfloat16, float16).

They are the fused kernels' formulas (bru_core.kernels: ``_FORWARDS``, ``slope_from_output``,
``slope_from_input``), term for term and with the same float32 constants (``p``:
kernels._radix_constants), written with ATen's ``at::vec::Vectorized<float>``: the same
SLEEF exp/exp2/log2 as ATen's own exp/exp2/log2 (1 ulp), so the native op, the eager
path and the fused kernels round alike. Each loop walks the flat storage of a dense tensor
(contiguous, channels_last or any other dense layout; anything else is copied to contiguous
first), computes bfloat16 and float16 in float32 and rounds once, and runs on ATen's
OpenMP threads above 32,768 elements, as ATen's own pointwise ops (ELU among them) do.
Autograd, and the exact double backward, stay in Python (bru_core.activations).

The build: one call of the C++ compiler (``$CXX``, else g++, c++ or clang++), about 20 s on
the 2-core development VM, for the vector instruction set ATen itself runs here
(``torch.backends.cpu.get_cpu_capability()``: AVX512, AVX2 or the portable code). The
library lands in ``$TORCH_EXTENSIONS_DIR/bru_native`` (default
``~/.cache/torch_extensions/bru_native``), named by a hash of the source, the torch build,
the flags and the instruction set, so a new torch or a new source builds anew and a cached
one is loaded by later processes in milliseconds, with no compiler needed. A file lock
makes concurrent first uses wait for one build. Linux only; elsewhere, or when the build
fails, ``problem()`` says why and bru_core.kernels falls back.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

NAMESPACE = "bru_native"
FAMILY_CODES = {"eru": 0, "oru": 1}
KIND_CODES = {"any": 0, "2": 2, "3": 3}  # bru_core.kernels.radix_kind
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
COMPILERS = ("g++", "c++", "clang++")

SOURCE = r"""
// ERU/ORU on the CPU, one vectorised loop each way (bru_core/native.py builds this file).
// The formulas are bru_core.kernels', term for term; p holds kernels._radix_constants(r).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <array>
#include <type_traits>

namespace {

using Vec = at::vec::Vectorized<float>;

enum Family : int64_t { ERU = 0, ORU = 1 };
enum Kind : int64_t { ANY = 0, TWO = 2, THREE = 3 };
constexpr int64_t kGrain = 32768;  // ATen's pointwise grain (at::internal::GRAIN_SIZE), ELU's too

struct Params {
  // r^2 2^-k, 2^-k, k, 1/r, r log2(e), 1/r - 1, log2 r, r, 1 - r; in float32, as the fused kernels
  std::array<Vec, 9> c;
  Vec root_side;  // 1 - 1/r: ERU's y at z = 0, rounded as the forward rounds it
  explicit Params(c10::ArrayRef<double> p) {
    TORCH_CHECK(p.size() == 9, "bru_native: 9 radix constants expected, got ", p.size());
    for (size_t i = 0; i < 9; ++i) c[i] = Vec(static_cast<float>(p[i]));
    root_side = Vec(1.0f - static_cast<float>(p[3]));
  }
};

inline Vec log2_u(const Vec& a, const Params& p) {  // log2(r^2 a + 1), scaled by 2^-k against overflow
  return (a * p.c[0] + p.c[1]).log2() + p.c[2];
}

// kernels._eru2_forward, _oru2_forward, _eru_forward, _oru_forward
template <int64_t family, int64_t kind>
inline Vec value(const Vec& x, const Params& p) {
  const Vec zero(0.0f);
  if constexpr (kind == TWO && family == ERU) {
    Vec half_w = (at::vec::maximum(x, zero) + Vec(0.25f)).sqrt() * (at::vec::minimum(x, zero) * Vec(2.0f)).exp();
    return (half_w - Vec(0.25f)) * Vec(2.0f);
  } else if constexpr (kind == TWO) {
    return ((x.abs() + Vec(0.25f)).sqrt() * Vec(2.0f) - Vec(1.0f)).copysign(x);
  } else if constexpr (family == ERU) {
    Vec log2_w = log2_u(at::vec::maximum(x, zero), p) * p.c[3] + at::vec::minimum(x, zero) * p.c[4];
    return log2_w.exp2() - p.c[3];
  } else {
    return ((log2_u(x.abs(), p) * p.c[3]).exp2() - Vec(1.0f)).copysign(x);
  }
}

// kernels._power_slope: r w^(1 - r) for w >= 1
template <int64_t kind>
inline Vec power_slope(const Vec& w, const Params& p) {
  if constexpr (kind == TWO) {
    return Vec(2.0f) / w;
  } else if constexpr (kind == THREE) {
    return Vec(3.0f) / (w * w);
  } else {
    return p.c[7] * (w.log2() * p.c[8]).exp2();
  }
}

// kernels.slope_from_output: f'(z) from a float32 y = f(z), exactly r at z = 0
template <int64_t family, int64_t kind>
inline Vec slope_from_output(const Vec& y, const Params& p) {
  const Vec one(1.0f);
  if constexpr (family == ORU) {
    return power_slope<kind>(y.abs() + one, p);
  } else {
    Vec w = y + p.c[3];
    Vec root = power_slope<kind>(at::vec::maximum(w, one), p);
    Vec exponential = p.c[7] * at::vec::minimum(w, one);
    return Vec::blendv(exponential, root, y >= p.root_side);  // NaN y: the exponential side, NaN
  }
}

// kernels.slope_from_input: f'(z) from z, a product of powers of positive terms
template <int64_t family, int64_t kind>
inline Vec slope_from_input(const Vec& x, const Params& p) {
  const Vec zero(0.0f);
  Vec a = family == ORU ? x.abs() : at::vec::maximum(x, zero);
  if constexpr (kind == TWO) {
    Vec inv_root = (a + Vec(0.25f)).rsqrt();
    if constexpr (family == ERU) {
      return inv_root * (at::vec::minimum(x, zero) * Vec(2.0f)).exp();
    } else {
      return inv_root;
    }
  } else {
    Vec exponent = log2_u(a, p) * p.c[5];
    if constexpr (family == ERU) exponent = exponent + at::vec::minimum(x, zero) * p.c[4];
    return (exponent + p.c[6]).exp2();
  }
}

// out = op(in0) or in1 * op(in0), elementwise over n values of one dtype, in float32. The
// tail is a partial load through the same vector code, so a value never depends on where
// it sits in the tensor (or on the thread split).
template <typename T, bool with_grad, typename Op>
void pointwise(const T* in0, const T* in1, T* out, int64_t n, const Op& op) {
  at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
    if constexpr (std::is_same_v<T, float>) {
      for (int64_t i = begin; i < end; i += Vec::size()) {
        const auto count = std::min<int64_t>(Vec::size(), end - i);
        Vec result = op(Vec::loadu(in0 + i, count));
        if constexpr (with_grad) result = Vec::loadu(in1 + i, count) * result;
        result.store(out + i, count);
      }
    } else {  // bfloat16, float16: two float32 vectors per load, rounded once on the way out
      using VecT = at::vec::Vectorized<T>;
      for (int64_t i = begin; i < end; i += VecT::size()) {
        const auto count = std::min<int64_t>(VecT::size(), end - i);
        auto [x0, x1] = at::vec::convert_to_float<T>(VecT::loadu(in0 + i, count));
        Vec r0 = op(x0), r1 = op(x1);
        if constexpr (with_grad) {
          auto [g0, g1] = at::vec::convert_to_float<T>(VecT::loadu(in1 + i, count));
          r0 = g0 * r0;
          r1 = g1 * r1;
        }
        at::vec::convert_from_float<T>(r0, r1).store(out + i, count);
      }
    }
  });
}

template <typename F>
void on_dtype(at::ScalarType dtype, const F& f) {
  switch (dtype) {
    case at::kFloat: return f(static_cast<float*>(nullptr));
    case at::kBFloat16: return f(static_cast<c10::BFloat16*>(nullptr));
    case at::kHalf: return f(static_cast<c10::Half*>(nullptr));
    default: TORCH_CHECK(false, "bru_native: float32, bfloat16 or float16 expected, got ", dtype);
  }
}

template <template <int64_t, int64_t> class Loop, typename... Args>
void on_radix(int64_t family, int64_t kind, const Args&... args) {
  TORCH_CHECK(family == ERU || family == ORU, "bru_native: family must be 0 (ERU) or 1 (ORU), got ", family);
  TORCH_CHECK(kind == ANY || kind == TWO || kind == THREE, "bru_native: kind must be 0, 2 or 3, got ", kind);
  if (family == ERU) {
    if (kind == TWO) return Loop<ERU, TWO>::run(args...);
    if (kind == THREE) return Loop<ERU, THREE>::run(args...);
    return Loop<ERU, ANY>::run(args...);
  }
  if (kind == TWO) return Loop<ORU, TWO>::run(args...);
  if (kind == THREE) return Loop<ORU, THREE>::run(args...);
  return Loop<ORU, ANY>::run(args...);
}

template <int64_t family, int64_t kind>
struct Forward {  // r = 3 has no cheaper value than the general radix
  static void run(const at::Tensor& z, const at::Tensor& out, const Params& p) {
    auto op = [&p](const Vec& x) { return value<family, kind == THREE ? ANY : kind>(x, p); };
    on_dtype(z.scalar_type(), [&](auto tag) {
      using T = std::remove_pointer_t<decltype(tag)>;
      pointwise<T, false>(z.const_data_ptr<T>(), nullptr, out.mutable_data_ptr<T>(), z.numel(), op);
    });
  }
};

template <int64_t family, int64_t kind>
struct FromOutput {
  static void run(const at::Tensor& y, const at::Tensor& grad, const at::Tensor& out, const Params& p) {
    auto op = [&p](const Vec& v) { return slope_from_output<family, kind>(v, p); };
    pointwise<float, true>(y.const_data_ptr<float>(), grad.const_data_ptr<float>(), out.mutable_data_ptr<float>(),
                           y.numel(), op);
  }
};

template <int64_t family, int64_t kind>
struct FromInput {  // from z, r = 3 has no cheaper slope than the general radix
  static void run(const at::Tensor& z, const at::Tensor& grad, const at::Tensor& out, const Params& p) {
    auto op = [&p](const Vec& x) { return slope_from_input<family, kind == THREE ? ANY : kind>(x, p); };
    on_dtype(z.scalar_type(), [&](auto tag) {
      using T = std::remove_pointer_t<decltype(tag)>;
      pointwise<T, true>(z.const_data_ptr<T>(), grad.const_data_ptr<T>(), out.mutable_data_ptr<T>(), z.numel(), op);
    });
  }
};

void check_cpu(const at::Tensor& t, const char* what) {
  TORCH_CHECK(t.device().is_cpu(), "bru_native: ", what, " must be a CPU tensor, got ", t.device());
}

// The loops walk memory order: a dense tensor as it lies, anything else copied to contiguous.
at::Tensor dense(const at::Tensor& t) { return t.is_non_overlapping_and_dense() ? t : t.contiguous(); }

// grad in the memory order of `like` (an incoming gradient may be laid out otherwise, or expanded)
at::Tensor like_layout(const at::Tensor& grad, const at::Tensor& like) {
  TORCH_CHECK(grad.sizes() == like.sizes(), "bru_native: gradient shape ", grad.sizes(), " is not ", like.sizes());
  TORCH_CHECK(grad.scalar_type() == like.scalar_type(), "bru_native: gradient dtype ", grad.scalar_type(), " is not ",
              like.scalar_type());
  check_cpu(grad, "grad");
  if (grad.strides() == like.strides()) return grad;
  return at::empty_like(like).copy_(grad);
}

at::Tensor forward(const at::Tensor& z_in, int64_t family, int64_t kind, c10::ArrayRef<double> p) {
  check_cpu(z_in, "z");
  at::Tensor z = dense(z_in);
  at::Tensor out = at::empty_like(z);
  on_radix<Forward>(family, kind, z, out, Params(p));
  return out;
}

at::Tensor backward_from_output(const at::Tensor& y_in, const at::Tensor& grad_in, int64_t family, int64_t kind,
                                c10::ArrayRef<double> p) {
  check_cpu(y_in, "y");
  TORCH_CHECK(y_in.scalar_type() == at::kFloat, "bru_native: the slope from the output needs float32, got ",
              y_in.scalar_type());
  at::Tensor y = dense(y_in);
  at::Tensor grad = like_layout(grad_in, y);
  at::Tensor out = at::empty_like(y);
  on_radix<FromOutput>(family, kind, y, grad, out, Params(p));
  return out;
}

at::Tensor backward_from_input(const at::Tensor& z_in, const at::Tensor& grad_in, int64_t family, int64_t kind,
                               c10::ArrayRef<double> p) {
  check_cpu(z_in, "z");
  at::Tensor z = dense(z_in);
  at::Tensor grad = like_layout(grad_in, z);
  at::Tensor out = at::empty_like(z);
  on_radix<FromInput>(family, kind, z, grad, out, Params(p));
  return out;
}

}  // namespace

TORCH_LIBRARY(bru_native, m) {
  m.def("forward(Tensor z, int family, int kind, float[] p) -> Tensor");
  m.def("backward_from_output(Tensor y, Tensor grad, int family, int kind, float[] p) -> Tensor");
  m.def("backward_from_input(Tensor z, Tensor grad, int family, int kind, float[] p) -> Tensor");
}

TORCH_LIBRARY_IMPL(bru_native, CPU, m) {
  m.impl("forward", &forward);
  m.impl("backward_from_output", &backward_from_output);
  m.impl("backward_from_input", &backward_from_input);
}
"""

# The ops once loaded (OpOverloads: called directly, they skip the overload resolution of
# torch.ops.bru_native.forward(...), about 2 us a call).
forward_op: Callable[..., Tensor] | None = None
backward_from_output_op: Callable[..., Tensor] | None = None
backward_from_input_op: Callable[..., Tensor] | None = None

_lock = threading.Lock()
_problem: str | None = None
_tried = False
build_seconds: float | None = None  # time this process spent compiling (None: loaded from the cache)


def loaded() -> bool:
    return forward_op is not None


def problem() -> str | None:
    """Why the native op is not in use in this process (None: loaded, or not tried yet)."""
    return _problem


def cache_dir() -> Path:
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "torch_extensions"
    )
    return Path(root, NAMESPACE)


def _isa() -> tuple[str, list[str]]:
    """The vector instruction set ATen runs here and the flags that compile at::vec for it."""
    capability = torch.backends.cpu.get_cpu_capability()
    if platform.machine().lower() in ("x86_64", "amd64"):
        if capability.startswith("AVX512"):
            return "AVX512", ["-DCPU_CAPABILITY_AVX512", "-DCPU_CAPABILITY=AVX512", "-mavx512f", "-mavx512dq",
                              "-mavx512vl", "-mavx512bw", "-mfma"]  # fmt: skip
        if capability == "AVX2":
            return "AVX2", ["-DCPU_CAPABILITY_AVX2", "-DCPU_CAPABILITY=AVX2", "-mavx2", "-mfma", "-mf16c"]
    return "DEFAULT", ["-DCPU_CAPABILITY=DEFAULT"]  # at::vec's portable code, vectorised by the compiler


def _flags() -> list[str]:
    torch_dir = Path(torch.__file__).parent
    lib = torch_dir / "lib"
    openmp = ["-fopenmp"] if torch.backends.openmp.is_available() else []  # ATen's threads; else one
    return [
        "-O3", "-DNDEBUG", "-std=c++20", "-shared", "-fPIC", "-ffp-contract=off", *openmp, *_isa()[1],
        f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
        f"-I{torch_dir / 'include'}", f"-I{torch_dir / 'include' / 'torch' / 'csrc' / 'api' / 'include'}",
        f"-L{lib}", "-lc10", "-ltorch_cpu", f"-Wl,-rpath,{lib}",
    ]  # fmt: skip


def library_path() -> Path:
    """Where this source, built for this torch and instruction set, is cached."""
    key = "\n".join([SOURCE, torch.__version__, str(torch.version.git_version), platform.machine(), *_flags()])
    return cache_dir() / f"{NAMESPACE}_{hashlib.sha256(key.encode()).hexdigest()[:16]}.so"


def _compiler() -> str | None:
    named = os.environ.get("CXX")
    if named:
        return shutil.which(named)
    return next((found for cxx in COMPILERS if (found := shutil.which(cxx))), None)


def _build(path: Path, compiler: str) -> None:
    """Compile SOURCE into path: the library appears whole (a rename) or not at all."""
    global build_seconds
    path.parent.mkdir(parents=True, exist_ok=True)
    source = path.with_suffix(".cpp")
    source.write_text(SOURCE)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        output = Path(scratch, path.name)
        done = subprocess.run([compiler, str(source), "-o", str(output), *_flags()], capture_output=True, text=True)
        if done.returncode != 0:
            tail = " ".join((done.stderr or done.stdout).strip().splitlines()[-6:])
            raise RuntimeError(f"{Path(compiler).name} exited with {done.returncode}: {tail}")
        os.replace(output, path)
    build_seconds = time.perf_counter() - started


def _build_locked(path: Path, compiler: str) -> None:
    """Build once across processes: the others wait on the lock, then find the library."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not Linux
        fcntl = None  # type: ignore[assignment]
    with open(path.with_suffix(".lock"), "w") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        if not path.exists():
            _build(path, compiler)


def load(compiler_problem: Callable[[], str | None] = lambda: None) -> bool:
    """Load the op (building it first if this machine has no cached build); True if it is
    in use. Tried once per process: after a failure ``problem()`` says why.
    ``compiler_problem`` says why no build is possible (bru_core.kernels passes the check
    it makes for its own kernels, so that both report a missing compiler alike)."""
    global forward_op, backward_from_output_op, backward_from_input_op, _problem, _tried
    if forward_op is not None or _tried:
        return forward_op is not None
    with _lock:
        if _tried:
            return forward_op is not None
        _tried = True
        try:
            if platform.system() != "Linux":
                raise RuntimeError(f"the native op is built on Linux only, not {platform.system()}")
            path = library_path()
            if not path.exists():
                compiler = None if compiler_problem() else _compiler()
                if compiler is None:
                    raise RuntimeError(compiler_problem() or f"no C++ compiler ({', '.join(COMPILERS)}) on PATH")
                _build_locked(path, compiler)
            torch.ops.load_library(str(path))
            ops: Any = getattr(torch.ops, NAMESPACE)
            forward_op = ops.forward.default
            backward_from_output_op = ops.backward_from_output.default
            backward_from_input_op = ops.backward_from_input.default
        except Exception as exc:
            _problem = str(exc) if isinstance(exc, RuntimeError) else f"{type(exc).__name__}: {exc}"
            return False
        return True


def reset() -> None:
    """Forget a failure, so that the next load() tries again (tests)."""
    global _problem, _tried
    with _lock:
        if forward_op is None:
            _problem, _tried = None, False
