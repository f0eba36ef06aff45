"""The fused ERU/ORU kernels (bru_core.kernels) against the eager path and the formula.

Like timm's fast-vs-reference activation tests: the fused kernels must give the values and
gradients of PAPER.md's formula within float32 rounding (in bf16/fp16, slopes within one
rounding of the exact), keep one saved tensor, keep the layout of their input, compile
nothing new for a new radix, and step aside cleanly where they cannot be built."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from bru_core import kernels
from bru_core.activations import ERU, eru, eru_reference, oru, oru_reference, warm_up_kernels
from bru_core.kernels import compiled, formulas, paths
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
    paths._compiler_problem("cpu") is not None, reason="fused CPU kernels need a C++ compiler"
)


@pytest.fixture(autouse=True)
def _auto_mode(monkeypatch):
    monkeypatch.delenv("BRU_KERNELS", raising=False)
    with clean_kernels(None):
        yield


@pytest.mark.parametrize("family", ["eru", "oru"])
@pytest.mark.parametrize("r", RADII)
def test_fused_values_and_gradients_equal_the_formula_within_float32_rounding(family, r):
    fast, reference = FUNCTIONS[family]
    z64 = points()
    exact_z = z64.clone().requires_grad_(True)
    exact = reference(exact_z, r)
    exact.backward(torch.ones_like(exact))
    exact_slope = exact_z.grad
    exact_slope[z64 == 0] = r  # the formula's autograd slope at 0 is wrong (test_activations)
    z = z64.float().requires_grad_(True)
    value = fast(z, r, fused=True)
    value.backward(torch.ones_like(value))
    assert relative_eps(value.detach(), exact.detach()) < 8
    assert relative_eps(z.grad, exact_slope) < 8


@pytest.mark.parametrize("family", ["eru", "oru"])
@pytest.mark.parametrize("r", [2.0, 3.0])
def test_fused_and_eager_paths_agree(family, r):
    fast, _ = FUNCTIONS[family]
    z = (torch.randn(64, 129, generator=torch.Generator().manual_seed(1)) * 5).requires_grad_(True)
    grad = torch.randn(64, 129, generator=torch.Generator().manual_seed(2))
    fused = fast(z, r, fused=True)
    (fused_grad,) = torch.autograd.grad(fused, z, grad)
    eager = fast(z, r, fused=False)
    (eager_grad,) = torch.autograd.grad(eager, z, grad)
    torch.testing.assert_close(fused, eager, rtol=4 * EPS32, atol=4 * EPS32)
    torch.testing.assert_close(fused_grad, eager_grad, rtol=4 * EPS32, atol=4 * EPS32)


@pytest.mark.parametrize("family", ["eru", "oru"])
@pytest.mark.parametrize("r", [2.0, 3.0])
def test_slope_at_zero_is_exactly_r(family, r):
    fast, _ = FUNCTIONS[family]
    z = torch.zeros(8, requires_grad=True)
    fast(z, r, fused=True).sum().backward()
    assert torch.all(z.grad == r)


@pytest.mark.parametrize("family", ["eru", "oru"])
def test_non_finite_inputs(family):
    fast, reference = FUNCTIONS[family]
    z = torch.tensor([math.nan, -math.inf, math.inf, 3.4e38, -3.4e38])
    got = fast(z, 3.0, fused=True)
    assert math.isnan(got[0])
    assert torch.equal(got[1:].isfinite(), reference(z[1:].double(), 3.0).isfinite())


@pytest.mark.parametrize("family", ["eru", "oru"])
def test_backward_keeps_one_saved_tensor(family):
    fast, _ = FUNCTIONS[family]
    saved = []
    z = torch.randn(32, 32, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        value = fast(z, 3.0, fused=True)
    assert len(saved) == 1 and saved[0].data_ptr() == value.data_ptr()  # the output, as ELU


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_backward_keeps_the_input(dtype):
    saved = []
    z = torch.randn(32, 32).to(dtype).requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        eru(z, 3.0, fused=True)
    assert len(saved) == 1 and saved[0].data_ptr() == z.data_ptr()  # a slope from a rounded output cancels


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("r", LOW_PRECISION_RADII)
@pytest.mark.parametrize("family", ["eru", "oru"])
def test_low_precision_fused_slopes_are_one_rounding_of_the_exact_slope(family, r, dtype):
    """From a bf16 output, ERU with r = 3 gave the slope -0.00195 at z = -3 (exact +0.00037)."""
    assert_low_precision_slopes(family, r, dtype, fused=True)


@pytest.mark.parametrize("mode", ["set_kernel_mode", "auto_large_tensor"])
def test_low_precision_fused_and_eager_gradients_agree(mode):
    """The fused from-input kernel and the eager float32 slope are one formula: equal but
    for a float32 ulp that may round the other way (one bf16 ulp, at most 2^-7 relative),
    through both ways of reaching the fused path."""
    z = (torch.randn(kernels.CPU_FUSED_MIN_NUMEL, generator=torch.Generator().manual_seed(5)) * 6).bfloat16()
    grad = torch.randn(z.shape, generator=torch.Generator().manual_seed(6)).bfloat16()
    if mode == "set_kernel_mode":
        kernels.set_kernel_mode("fused")
    assert kernels.use_fused(z)
    for fast in (eru, oru):
        for r in (2.0, 3.0, 2.5):
            fused_z, eager_z = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
            fast(fused_z, r).backward(grad)
            fast(eager_z, r, fused=False).backward(grad)
            torch.testing.assert_close(fused_z.grad, eager_z.grad, rtol=2**-7, atol=0)


@pytest.mark.parametrize("family", ["eru", "oru"])
def test_low_precision_second_derivatives_with_fused_kernels(family):
    """create_graph=True in bf16 takes the differentiable eager float32 slope, as in float32."""
    fast, _ = FUNCTIONS[family]
    z = torch.randn(50, generator=torch.Generator().manual_seed(7)).bfloat16().requires_grad_(True)
    results = []
    for fused in (True, False):
        (slope,) = torch.autograd.grad(fast(z, 3.0, fused=fused).sum(), z, create_graph=True)
        (curvature,) = torch.autograd.grad(slope.sum(), z)
        results.append((slope.detach(), curvature))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


@pytest.mark.parametrize("family", ["eru", "oru"])
def test_second_derivatives_stay_exact_with_fused_kernels(family):
    """create_graph=True takes the differentiable eager slope."""
    fast, _ = FUNCTIONS[family]
    z = torch.randn(50, dtype=torch.float32, generator=torch.Generator().manual_seed(3)).requires_grad_(True)
    results = []
    for fused in (True, False):
        (slope,) = torch.autograd.grad(fast(z, 3.0, fused=fused).sum(), z, create_graph=True)
        (curvature,) = torch.autograd.grad(slope.sum(), z)
        results.append((slope.detach(), curvature))
    torch.testing.assert_close(results[0], results[1], rtol=1e-5, atol=1e-6)


def test_layouts_are_kept():
    z = torch.randn(4, 6, 5, 7).to(memory_format=torch.channels_last).requires_grad_(True)
    value = eru(z, 3.0, fused=True)
    assert value.stride() == z.stride()
    torch.testing.assert_close(value, eru_reference(z.detach().contiguous(), 3.0))
    grad = torch.randn(4, 6, 5, 7)  # contiguous while z is channels_last
    value.backward(grad)
    plain = z.detach().contiguous().requires_grad_(True)
    (expected,) = torch.autograd.grad(eru(plain, 3.0, fused=False), plain, grad)
    torch.testing.assert_close(z.grad, expected)
    strided = torch.randn(9, 12)[:, ::3]  # neither contiguous nor channels_last
    torch.testing.assert_close(oru(strided, 2.0, fused=True), oru_reference(strided, 2.0))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_is_computed_in_float32_and_rounded_once(dtype):
    z = torch.randn(1000, generator=torch.Generator().manual_seed(4)).to(dtype)
    got = eru(z, 3.0, fused=True)
    assert got.dtype == dtype
    assert torch.equal(got, eru(z.float(), 3.0, fused=True).to(dtype))
    assert torch.equal(got, eru(z, 3.0, fused=False))  # the eager path rounds once too


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_new_radix_compiles_nothing_new(dtype):
    for family in ("eru", "oru"):
        assert kernels.warm_up(family, 3.7, "cpu", dtype)
    before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    z = torch.randn(kernels.CPU_FUSED_MIN_NUMEL).to(dtype).requires_grad_(True)
    for r in (1.25, 2.5, 3.7, 6.0):
        (eru(z, r) + oru(z, r)).sum().backward()
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == before


def test_every_dtype_and_radix_kind_stays_within_dynamo_recompile_limit():
    """Dynamo keeps 8 graphs per function; past that a fullgraph compile fails and the
    kernels go off. Each kernel function must hold every dtype and mode it serves."""
    kernels.set_kernel_mode("fused")  # a failed build raises instead of warning
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        for fast in (eru, oru):
            for r in (2.0, 3.0, 2.5):
                z = torch.randn(100).to(dtype).requires_grad_(True)
                fast(z, r).sum().backward()
                with torch.no_grad():
                    fast(z, r)
                with torch.inference_mode():
                    fast(torch.randn(100).to(dtype), r)
    assert not paths._broken


def test_float64_keeps_the_eager_path():
    assert not kernels.use_fused(torch.zeros(1 << 17, dtype=torch.float64))
    assert kernels.use_fused(torch.zeros(1 << 17))


def test_small_cpu_tensors_keep_the_eager_path_unless_fused_is_asked():
    small, large = torch.zeros(kernels.CPU_FUSED_MIN_NUMEL - 1), torch.zeros(kernels.CPU_FUSED_MIN_NUMEL)
    assert not kernels.use_fused(small) and kernels.use_fused(large)
    kernels.set_kernel_mode("fused")
    assert kernels.use_fused(small)
    assert warm_up_kernels(torch.nn.Sequential(ERU(3.0)), "cpu", [torch.float32])


def test_mode_eager_from_the_environment(monkeypatch):
    monkeypatch.setenv("BRU_KERNELS", "eager")
    assert not kernels.use_fused(torch.zeros(1 << 17))
    assert not warm_up_kernels(torch.nn.Sequential(ERU()), "cpu", [torch.float32])


def test_bad_mode_names_the_variable(monkeypatch):
    monkeypatch.setenv("BRU_KERNELS", "fast")
    with pytest.raises(ValueError, match="BRU_KERNELS: must be one of auto, fused, eager"):
        kernels.use_fused(torch.zeros(1 << 17))


def test_no_compiler_auto_warns_once_and_falls_back(monkeypatch):
    monkeypatch.setattr(paths.shutil, "which", lambda name: None)
    z = torch.randn(1 << 17)
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler"):
        assert not kernels.use_fused(z)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.testing.assert_close(eru(z, 3.0), eru_reference(z, 3.0))


def test_no_compiler_fused_mode_is_an_error(monkeypatch):
    monkeypatch.setattr(paths.shutil, "which", lambda name: None)
    kernels.set_kernel_mode("fused")
    with pytest.raises(kernels.KernelUnavailableError, match="set BRU_KERNELS=eager or auto"):
        eru(torch.randn(3), 2.0)


def test_a_failed_build_falls_back_to_eager(monkeypatch):
    def broken(*args):
        raise RuntimeError("simulated compiler crash")

    monkeypatch.setitem(compiled._compiled, ("oru", "3"), (broken, broken))
    monkeypatch.setattr(paths, "use_native", lambda z: False)  # where the native op is not: large tensors compiled
    z = torch.randn(1 << 17, requires_grad=True)
    with pytest.warns(RuntimeWarning, match="simulated compiler crash"):
        value = oru(z, 3.0)
    torch.testing.assert_close(value, oru_reference(z, 3.0))
    assert not kernels.use_fused(z)  # and it stays off for the device


def test_inside_a_compiled_model_the_formulas_fuse_with_the_model():
    model = torch.nn.Sequential(torch.nn.Linear(5, 5), ERU(3.0))
    compiled = torch.compile(model)
    x = torch.randn(4, 5)
    torch.testing.assert_close(compiled(x), model(x))


def test_a_double_backward_after_an_inference_pass(monkeypatch):
    """The radix constants are cached: made first inside inference_mode (an evaluation
    pass), they must still serve a later double backward."""
    monkeypatch.setattr(formulas, "_constants", {})
    with torch.inference_mode():
        eru(torch.randn(10), 2.5, fused=True)
    z = torch.randn(10, requires_grad=True)
    (slope,) = torch.autograd.grad(eru(z, 2.5, fused=True).sum(), z, create_graph=True)
    (curvature,) = torch.autograd.grad(slope.sum(), z)
    assert torch.isfinite(curvature).all()
