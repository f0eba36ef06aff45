"""The native CPU op (bru_core.native) against the formula, the eager path and the fused kernels.

The same promises as the fused kernels' (tests/test_kernels.py), for the path ``auto``
takes on the CPU: values and slopes of PAPER.md's formula within float32 rounding (bf16 and
fp16 slopes within one rounding of the exact), the slope r at z = 0, NaN in NaN out, one
saved tensor, layouts kept, any order of gradient, a value that does not depend on where in
the tensor it sits; and a clean step aside (one warning, the path that ran before) where it
cannot be built."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings

import pytest
import torch

from bru_core import kernels, native
from bru_core.activations import ERU, eru, eru_reference, oru, oru_reference, warm_up_kernels
from bru_core.kernels import formulas, paths
from tests.helpers.kernels import (
    EPS32,
    FUNCTIONS,
    LOW_PRECISION_RADII,
    RADII,
    assert_low_precision_slopes,
    clean_kernels,
    points,
    relative_eps,
)

pytestmark = pytest.mark.skipif(
    not native.load(lambda: paths._compiler_problem("cpu")), reason=f"native op unavailable: {native.problem()}"
)


@pytest.fixture(autouse=True)
def _native_mode(monkeypatch):
    """BRU_KERNELS=native: every float32/bf16/fp16 CPU tensor takes the native op, or the test fails."""
    monkeypatch.delenv("BRU_KERNELS", raising=False)
    with clean_kernels("native"):
        yield


def test_auto_takes_the_native_op_on_the_cpu_at_every_size():
    kernels.set_kernel_mode("auto")
    for n in (1, 100, kernels.CPU_FUSED_MIN_NUMEL - 1, kernels.CPU_FUSED_MIN_NUMEL, 1 << 20):
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            assert kernels.choose(torch.zeros(n, dtype=dtype)) == "native"
    assert kernels.choose(torch.zeros(100, dtype=torch.float64)) == "eager"  # the kernels compute in float32
    kernels.set_kernel_mode("eager")
    assert kernels.choose(torch.zeros(1 << 17)) == "eager"
    kernels.set_kernel_mode("fused")
    assert kernels.choose(torch.zeros(100)) == "fused"  # the compiled kernels, forced


@pytest.mark.parametrize("family", ["eru", "oru"])
@pytest.mark.parametrize("r", RADII)
def test_values_and_gradients_equal_the_formula_within_float32_rounding(family, r):
    fast, reference = FUNCTIONS[family]
    z64 = points()
    exact_z = z64.clone().requires_grad_(True)
    exact = reference(exact_z, r)
    exact.backward(torch.ones_like(exact))
    exact_slope = exact_z.grad
    exact_slope[z64 == 0] = r  # the formula's autograd slope at 0 is wrong (test_activations)
    z = z64.float().requires_grad_(True)
    assert kernels.choose(z) == "native"
    value = fast(z, r)
    value.backward(torch.ones_like(value))
    assert relative_eps(value.detach(), exact.detach()) < 8
    assert relative_eps(z.grad, exact_slope) < 8


@pytest.mark.parametrize("family", ["eru", "oru"])
@pytest.mark.parametrize("r", [2.0, 3.0, 2.5])
def test_native_eager_and_fused_paths_agree(family, r):
    fast, _ = FUNCTIONS[family]
    z = (torch.randn(64, 129, generator=torch.Generator().manual_seed(1)) * 5).requires_grad_(True)
    grad = torch.randn(64, 129, generator=torch.Generator().manual_seed(2))
    results = []
    for fused in (None, False, True):  # native, eager, compiled
        value = fast(z, r, fused=fused)
        results.append((value, *torch.autograd.grad(value, z, grad)))
    for other in results[1:]:
        torch.testing.assert_close(results[0], other, rtol=4 * EPS32, atol=4 * EPS32)


@pytest.mark.parametrize("family", ["eru", "oru"])
@pytest.mark.parametrize("r", [0.5, 2.0, 3.0, 7.5])
def test_slope_at_zero_is_exactly_r_from_both_sides(family, r):
    fast, _ = FUNCTIONS[family]
    z = torch.tensor([0.0, -0.0] * 20, requires_grad=True)
    value = fast(z, r)
    value.sum().backward()
    assert torch.all(z.grad == r)
    if family == "oru":
        assert torch.all(value == 0)  # odd: exactly zero at zero
    else:
        torch.testing.assert_close(value.detach(), torch.full_like(value, 1 - 1 / r), rtol=EPS32, atol=0)


@pytest.mark.parametrize("family", ["eru", "oru"])
@pytest.mark.parametrize("r", [2.0, 3.0, 2.5])
def test_non_finite_inputs(family, r):
    fast, reference = FUNCTIONS[family]
    z = torch.tensor([math.nan, -math.inf, math.inf, 3.4e38, -3.4e38, 1e4, -1e4, -200.0, 88.0]).requires_grad_(True)
    value = fast(z, r)
    value.backward(torch.ones_like(value))
    assert math.isnan(value[0]) and math.isnan(z.grad[0])
    assert torch.equal(value[1:].detach().isfinite(), reference(z[1:].detach().double(), r).isfinite())
    assert z.grad[5:].isfinite().all()  # no NaN leaks from the unused branch


@pytest.mark.parametrize("family", ["eru", "oru"])
def test_float32_keeps_one_saved_tensor_the_output(family):
    fast, _ = FUNCTIONS[family]
    saved = []
    z = torch.randn(32, 32, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        value = fast(z, 3.0)
    assert len(saved) == 1 and saved[0].data_ptr() == value.data_ptr()  # the output, as ELU


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_keeps_one_saved_tensor_the_input(dtype):
    saved = []
    z = torch.randn(32, 32).to(dtype).requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        eru(z, 3.0)
    assert len(saved) == 1 and saved[0].data_ptr() == z.data_ptr()  # a slope from a rounded output cancels


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("r", LOW_PRECISION_RADII)
@pytest.mark.parametrize("family", ["eru", "oru"])
def test_low_precision_slopes_are_one_rounding_of_the_exact_slope(family, r, dtype):
    assert_low_precision_slopes(family, r, dtype, fused=None)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_is_computed_in_float32_and_rounded_once(dtype):
    z = torch.randn(1000, generator=torch.Generator().manual_seed(4)).to(dtype)
    grad = torch.randn(1000, generator=torch.Generator().manual_seed(5)).to(dtype)
    for fast in (eru, oru):
        for r in (2.0, 3.0, 2.5):
            got = fast(z, r)
            assert got.dtype == dtype
            assert torch.equal(got, fast(z.float(), r).to(dtype))
            # the eager path rounds once too; its float32 value may differ by an ulp, which
            # flips the rounding of a value that lies on a float16 boundary (eru:2 at z = 0.7495)
            ulp = 2**-7 if dtype == torch.bfloat16 else 2**-10
            torch.testing.assert_close(got, fast(z, r, fused=False), rtol=ulp, atol=0)
            native_z, eager_z = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
            fast(native_z, r).backward(grad)
            fast(eager_z, r, fused=False).backward(grad)
            torch.testing.assert_close(native_z.grad, eager_z.grad, rtol=2**-7, atol=0)  # one ulp either way


@pytest.mark.parametrize("family", ["eru", "oru"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_second_derivatives_take_the_eager_slope(family, dtype):
    """create_graph=True differentiates the eager slope: the same as the eager path's."""
    fast, _ = FUNCTIONS[family]
    z = torch.randn(50, generator=torch.Generator().manual_seed(7)).to(dtype).requires_grad_(True)
    results = []
    for fused in (None, False):
        (slope,) = torch.autograd.grad(fast(z, 3.0, fused=fused).sum(), z, create_graph=True)
        (curvature,) = torch.autograd.grad(slope.sum(), z)
        results.append((slope.detach(), curvature))
    if dtype == torch.float32:
        torch.testing.assert_close(results[0], results[1], rtol=1e-5, atol=1e-6)
    else:
        assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def test_layouts_are_kept():
    z = torch.randn(4, 6, 5, 7).to(memory_format=torch.channels_last).requires_grad_(True)
    value = eru(z, 3.0)
    assert value.stride() == z.stride()
    torch.testing.assert_close(value, eru_reference(z.detach().contiguous(), 3.0))
    grad = torch.randn(4, 6, 5, 7)  # contiguous while z is channels_last
    value.backward(grad)
    plain = z.detach().contiguous().requires_grad_(True)
    (expected,) = torch.autograd.grad(eru(plain, 3.0, fused=False), plain, grad)
    torch.testing.assert_close(z.grad, expected)
    strided = torch.randn(9, 12)[:, ::3]  # neither contiguous nor channels_last
    torch.testing.assert_close(oru(strided, 2.0), oru_reference(strided, 2.0))
    transposed = torch.randn(40, 30).t().requires_grad_(True)  # dense, not contiguous: kept as it lies
    value = oru(transposed, 3.0)
    assert value.stride() == transposed.stride()
    value.sum().backward()  # an expanded gradient
    torch.testing.assert_close(
        transposed.grad, torch.autograd.grad(oru(transposed, 3.0, fused=False).sum(), transposed)[0]
    )


@pytest.mark.parametrize("n", [0, 1, 15, 17, 33, 16_384, 32_769, 100_003])
def test_every_size_and_a_value_does_not_depend_on_its_place(n):
    """The vector tails and the thread split (from 32,768 values) compute like the rest."""
    z = torch.randn(n + 7, generator=torch.Generator().manual_seed(n)) * 4
    for fast in (eru, oru):
        for r in (2.0, 3.0, 2.5):
            whole, shifted = fast(z[:n], r), fast(z[7:].clone(), r)
            assert whole.shape == (n,)
            assert torch.equal(whole[7:], shifted[: n - 7]) if n > 7 else True
            torch.testing.assert_close(whole, fast(z[:n], r, fused=False), rtol=4 * EPS32, atol=4 * EPS32)


def test_inference_and_training_paths_give_the_same_values():
    z = torch.randn(1000) * 4
    for fast in (eru, oru):
        for r in (2.0, 3.0, 0.7):
            with torch.inference_mode():
                inference = fast(z, r)
            with torch.no_grad():
                no_grad = fast(z, r)
            training = fast(z.clone().requires_grad_(True), r).detach()
            assert torch.equal(inference, training) and torch.equal(no_grad, training)


def test_inside_a_compiled_model_the_formulas_fuse_with_the_model():
    kernels.set_kernel_mode("auto")
    model = torch.nn.Sequential(torch.nn.Linear(5, 5), ERU(3.0))
    compiled = torch.compile(model)
    x = torch.randn(4, 5)
    torch.testing.assert_close(compiled(x), model(x))


def test_warm_up_loads_the_op_for_models_that_use_it():
    kernels.set_kernel_mode("auto")
    assert warm_up_kernels(torch.nn.Sequential(ERU(3.0)), "cpu", [torch.float32])
    assert not warm_up_kernels(torch.nn.Sequential(torch.nn.ReLU()), "cpu", [torch.float32])
    kernels.set_kernel_mode("eager")
    assert not warm_up_kernels(torch.nn.Sequential(ERU(3.0)), "cpu", [torch.float32])


def test_the_op_checks_its_arguments():
    op, p = native.forward_op, formulas._radix_constants(3.0)
    with pytest.raises(RuntimeError, match="float32, bfloat16 or float16"):
        op(torch.zeros(3, dtype=torch.float64), 0, 3, p)
    with pytest.raises(RuntimeError, match="family must be"):
        op(torch.zeros(3), 5, 3, p)
    with pytest.raises(RuntimeError, match="9 radix constants"):
        op(torch.zeros(3), 0, 3, p[:4])
    with pytest.raises(RuntimeError, match="gradient shape"):
        native.backward_from_output_op(torch.zeros(3), torch.zeros(4), 0, 3, p)


@pytest.fixture
def unavailable(monkeypatch):
    """As if the native op could not be built in this process."""
    monkeypatch.setattr(native, "forward_op", None)
    monkeypatch.setattr(native, "_tried", True)
    monkeypatch.setattr(native, "_problem", "simulated compiler crash")
    monkeypatch.setattr(paths, "_native_warned", False)


def test_native_mode_fails_loudly_where_the_op_cannot_be_built(unavailable):
    with pytest.raises(kernels.KernelUnavailableError, match="BRU_KERNELS=native: simulated compiler crash"):
        eru(torch.randn(3), 2.0)


def test_auto_warns_once_and_takes_the_path_that_ran_before(unavailable):
    kernels.set_kernel_mode("auto")
    small, large = torch.randn(100), torch.randn(kernels.CPU_FUSED_MIN_NUMEL)
    with pytest.warns(RuntimeWarning, match="native ERU/ORU op off on cpu: simulated compiler crash"):
        assert kernels.choose(small) == "eager"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert kernels.choose(small) == "eager"
        assert kernels.choose(large) == "fused"  # the compiled kernels pay off there
        torch.testing.assert_close(eru(small, 3.0), eru_reference(small, 3.0))
        assert not warm_up_kernels(torch.nn.Sequential(ERU(3.0)), "cpu", [torch.float32])


@pytest.mark.slow
def test_a_clean_cache_builds_and_a_built_library_needs_no_compiler(tmp_path):
    """A fresh process with an empty cache builds the library (the one real build of the
    suite, about 20 s); one with no compiler on PATH then loads what it built."""
    script = (
        "import json, warnings, torch\n"
        "from bru_core import kernels, native\n"
        "from bru_core.activations import eru, eru_reference\n"
        "ok = kernels.warm_up_native()\n"
        "z = torch.randn(5000, requires_grad=True)\n"
        "y = eru(z, 3.0); y.sum().backward()\n"
        "torch.testing.assert_close(y, eru_reference(z, 3.0))\n"
        "print(json.dumps([ok, native.build_seconds, str(native.library_path()), kernels.choose(z)]))\n"
    )
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path), "BRU_KERNELS": "native"}
    env.pop("CXX", None)

    def run(environment: dict[str, str]) -> list:
        done = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        import json

        return json.loads(done.stdout.strip().splitlines()[-1])

    built, seconds, path, path_taken = run(env)
    assert built and seconds is not None and seconds > 0 and path_taken == "native"
    assert path.startswith(str(tmp_path)) and os.path.exists(path)
    no_compiler = {**env, "PATH": str(tmp_path / "nothing")}
    loaded, seconds, again, path_taken = run(no_compiler)
    assert loaded and seconds is None and again == path and path_taken == "native"
