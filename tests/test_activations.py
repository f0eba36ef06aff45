"""ERU/ORU maths: reference points, exact gradients, fast path = reference, bf16/fp16
slopes, registry and radix schedules (ramp, step)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from bru_core.activations import (
    ERU,
    ORU,
    ActivationSpec,
    activations_for,
    canonical_activation,
    eru,
    eru_reference,
    get_activation,
    known_activations,
    oru,
    oru_reference,
    parse_activation,
    register_activation,
)
from tests.helpers.kernels import LOW_PRECISION_RADII, assert_low_precision_slopes, every_value, exact_slope

F32 = torch.finfo(torch.float32)
RADII = [0.5, 1.0, 1.5, 2.0, 3.0, 4.5, 7.5]
FAMILIES = {"eru": (eru, eru_reference), "oru": (oru, oru_reference)}


def _value_and_grad(fn, z: torch.Tensor, r: float) -> tuple[torch.Tensor, torch.Tensor]:
    x = z.clone().requires_grad_(True)
    y = fn(x, r)
    (g,) = torch.autograd.grad(y.sum(), x)
    return y.detach(), g


# --------------------------------------------------------------------------- the definition


@pytest.mark.parametrize("path", ["fast", "reference"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_paper_reference_points(path, dtype):
    z = torch.tensor([-1.0, 0.0, 2.0, -3.0], dtype=dtype)
    fast = path == "fast"
    e = (eru if fast else eru_reference)(z, 2.0)
    o = (oru if fast else oru_reference)(z, 2.0)
    assert torch.allclose(e, torch.tensor([-0.3647, 0.5, 2.5, -0.4975], dtype=dtype), atol=1e-4)
    assert torch.allclose(o, torch.tensor([-1.2361, 0.0, 2.0, -2.6056], dtype=dtype), atol=1e-4)


@pytest.mark.parametrize("r", RADII)
def test_closed_forms_in_float64(r):
    z = torch.linspace(-6, 6, 241, dtype=torch.float64)
    pos, neg = z.clamp(min=0), z.clamp(max=0)
    expected_eru = torch.where(z >= 0, (r * r * pos + 1) ** (1 / r) - 1 / r, torch.exp(r * neg) - 1 / r)
    expected_oru = torch.sign(z) * ((r * r * z.abs() + 1) ** (1 / r) - 1)
    torch.testing.assert_close(eru(z, r), expected_eru, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(oru(z, r), expected_oru, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("family", ["eru", "oru"])
@pytest.mark.parametrize("r", RADII)
def test_gradcheck_float64_including_zero(family, r):
    fast, _ = FAMILIES[family]
    z = torch.tensor([-4.0, -1.3, -0.2, -1e-3, 0.0, 1e-3, 0.4, 1.7, 5.0], dtype=torch.float64, requires_grad=True)
    # f is C1 but f'' jumps at 0 (by up to r^3 here), so the finite difference needs a small step there
    assert torch.autograd.gradcheck(lambda x: fast(x, r), (z,), eps=1e-8, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["eru", "oru"])
@pytest.mark.parametrize("r", RADII)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_slope_at_zero_is_exactly_r_from_both_sides(family, r, dtype):
    fast, _ = FAMILIES[family]
    z = torch.tensor([0.0, -0.0], dtype=dtype)
    value, grad = _value_and_grad(fast, z, r)
    assert grad.tolist() == [pytest.approx(r, rel=1e-6)] * 2
    tiny = torch.tensor([-1e-7, 1e-7], dtype=torch.float64)
    _, grad_near = _value_and_grad(fast, tiny, r)
    assert torch.allclose(grad_near, torch.full_like(grad_near, r), rtol=1e-5)  # continuous slope
    expected_value = (1 - 1 / r) if family == "eru" else 0.0
    assert value.tolist() == [pytest.approx(expected_value, abs=1e-7)] * 2
    if family == "oru":
        assert value.tolist() == [0.0, 0.0]  # odd: exactly zero at zero


def test_autograd_of_the_reference_is_wrong_at_zero_and_the_fast_path_is_not():
    """Why the fast path computes its own derivative: clamp + where gives 0 at z = 0."""
    z = torch.zeros(1, dtype=torch.float64)
    _, ref_grad = _value_and_grad(eru_reference, z, 2.0)
    _, fast_grad = _value_and_grad(eru, z, 2.0)
    assert ref_grad.item() != 2.0
    assert fast_grad.item() == 2.0


def test_radix_one_identities():
    z = torch.linspace(-8, 8, 4001)
    e_val, e_grad = _value_and_grad(eru, z, 1.0)
    elu_val, elu_grad = _value_and_grad(lambda x, _: F.elu(x), z, 1.0)
    torch.testing.assert_close(e_val, elu_val, rtol=4 * F32.eps, atol=4 * F32.eps)
    torch.testing.assert_close(e_grad, elu_grad, rtol=4 * F32.eps, atol=4 * F32.eps)
    o_val, o_grad = _value_and_grad(oru, z, 1.0)
    torch.testing.assert_close(o_val, z, rtol=4 * F32.eps, atol=4 * F32.eps)
    torch.testing.assert_close(o_grad, torch.ones_like(z), rtol=4 * F32.eps, atol=0)


# --------------------------------------------------------------------------- fast path = reference


@pytest.mark.parametrize("family", ["eru", "oru"])
@pytest.mark.parametrize("r", RADII)
def test_fast_float32_equals_float64_reference(family, r):
    """Values and gradients within a few float32 roundings of the exact (float64) reference,
    relative to max(1, |true value|)."""
    fast, reference = FAMILIES[family]
    g = torch.Generator().manual_seed(0)
    z = torch.cat([torch.linspace(-40, 40, 8001), torch.randn(20000, generator=g) * 3])
    z = z[z != 0]  # the reference's autograd is wrong at exactly 0 (tested above)
    value, grad = _value_and_grad(fast, z, r)
    ref_value, ref_grad = _value_and_grad(reference, z.double(), r)
    value_err = ((value.double() - ref_value).abs() / ref_value.abs().clamp(min=1)).max().item()
    grad_err = ((grad.double() - ref_grad).abs() / ref_grad.abs().clamp(min=1)).max().item()
    assert value_err < 8 * F32.eps
    assert grad_err < 8 * F32.eps


@pytest.mark.parametrize("family", ["eru", "oru"])
@pytest.mark.parametrize("r", RADII)
def test_finite_for_every_finite_input_whose_true_value_is_finite(family, r):
    fast, reference = FAMILIES[family]
    z = torch.tensor([F32.max, -F32.max, 1e38, -1e38, 1e30, -1e30, 3e4, -3e4, -1e4, F32.tiny, -F32.tiny, 1e-45])
    value, grad = _value_and_grad(fast, z, r)
    true_value, true_grad = _value_and_grad(reference, z.double(), r)
    representable = (true_value.abs() < F32.max) & (true_grad.abs() < F32.max)
    assert representable.any()
    assert torch.isfinite(value[representable]).all(), value
    assert torch.isfinite(grad[representable]).all(), grad
    rel = (value.double() - true_value).abs() / true_value.abs().clamp(min=1)
    assert (rel[representable] < 64 * F32.eps).all()  # log-domain rounding at 1e38 stays small


@pytest.mark.parametrize("family", ["eru", "oru"])
def test_no_nan_leaks_from_the_unused_branch(family):
    fast, reference = FAMILIES[family]
    z = torch.tensor([-1e4, -200.0, 200.0, 1e4, 88.0, -88.0])
    for fn in (fast, reference):
        value, grad = _value_and_grad(fn, z, 2.0)
        assert torch.isfinite(value).all() and torch.isfinite(grad).all()


@pytest.mark.parametrize("family", ["eru", "oru"])
def test_nan_input_gives_nan_output(family):
    fast, _ = FAMILIES[family]
    assert torch.isnan(fast(torch.tensor([math.nan]), 2.0)).all()


@pytest.mark.parametrize("family", ["eru", "oru"])
@pytest.mark.parametrize("r", [2.0, 3.0])
def test_backward_keeps_one_saved_tensor(family, r):
    fast, _ = FAMILIES[family]
    packed = []

    def pack(t):
        packed.append(t)
        return t

    x = torch.randn(100, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fast(x, r)
    assert len(packed) == 1
    packed.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        F.elu(x)
    assert len(packed) == 1  # the same as ELU


def test_inference_path_equals_training_path():
    z = torch.randn(1000) * 4
    for fn in (eru, oru):
        for r in (2.0, 3.0, 0.7):
            with torch.no_grad():
                inference = fn(z, r)
            training = fn(z.clone().requires_grad_(True), r).detach()
            assert torch.equal(inference, training)


@pytest.mark.parametrize("family", ["eru", "oru"])
@pytest.mark.parametrize("r", [0.5, 2.0, 3.0])
def test_second_derivatives_are_exact(family, r):
    fast, _ = FAMILIES[family]
    z = torch.tensor([-2.0, -0.7, -1e-3, 1e-3, 0.5, 2.0, 6.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda x: fast(x, r), (z,))
    # against the closed form f''(z) away from zero
    (slope,) = torch.autograd.grad(fast(z, r).sum(), z, create_graph=True)
    (curvature,) = torch.autograd.grad(slope.sum(), z)
    u = r * r * z.detach().abs() + 1
    root_side = (1 - r) * r**2 * u ** ((1 - 2 * r) / r)
    if family == "eru":
        expected = torch.where(z > 0, root_side, r * r * torch.exp(r * z.detach()))
    else:
        expected = torch.sign(z.detach()) * root_side
    torch.testing.assert_close(curvature, expected)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_dtype_is_kept(dtype):
    z = torch.linspace(-3, 3, 61, dtype=dtype)
    for fn, ref in ((eru, eru_reference), (oru, oru_reference)):
        out = fn(z, 3.0)
        assert out.dtype == dtype
        torch.testing.assert_close(out.double(), ref(z.double(), 3.0), rtol=2e-2, atol=2e-2)


# --------------------------------------------------------------------------- bfloat16, float16


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("r", LOW_PRECISION_RADII)
@pytest.mark.parametrize("family", ["eru", "oru"])
def test_low_precision_eager_slopes_are_one_rounding_of_the_exact_slope(family, r, dtype):
    assert_low_precision_slopes(family, r, dtype, fused=False)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_eager_values_are_computed_in_float32_and_rounded_once(dtype):
    z = every_value(dtype)
    for fn in (eru, oru):
        for r in LOW_PRECISION_RADII:
            assert torch.equal(fn(z, r, fused=False), fn(z.float(), r, fused=False).to(dtype))
            trained = fn(z.clone().requires_grad_(True), r, fused=False)
            assert torch.equal(trained.detach(), fn(z, r, fused=False))


@pytest.mark.parametrize("family", ["eru", "oru"])
def test_low_precision_second_derivatives(family):
    """create_graph=True still works in bf16: the slope's own slope, within bf16 rounding."""
    fast, _ = FAMILIES[family]
    z = torch.tensor([-3.0, -0.5, 0.25, 2.0], dtype=torch.bfloat16, requires_grad=True)
    (slope,) = torch.autograd.grad(fast(z, 3.0, fused=False).sum(), z, create_graph=True)
    (curvature,) = torch.autograd.grad(slope.sum(), z)
    expected = torch.autograd.functional.jacobian(
        lambda x: exact_slope(family, x, 3.0), z.detach().double(), vectorize=True
    ).diagonal()
    torch.testing.assert_close(curvature.double(), expected, rtol=2**-7, atol=0)


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf, True, "2"])
def test_functions_reject_a_bad_radix(bad):
    with pytest.raises(ValueError, match="radix"):
        eru(torch.zeros(1), bad)
    with pytest.raises(ValueError, match="radix"):
        ORU(bad)


def test_modules_wrap_the_functions():
    z = torch.randn(50)
    assert torch.equal(ERU(3.0)(z), eru(z, 3.0))
    assert torch.equal(ORU(1.5)(z), oru(z, 1.5))
    assert "radix=3" in repr(ERU(3.0))


# --------------------------------------------------------------------------- registry

BUILTIN_TYPES = {
    "relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "prelu": nn.PReLU, "elu": nn.ELU, "celu": nn.CELU,
    "selu": nn.SELU, "gelu": nn.GELU, "silu": nn.SiLU, "mish": nn.Mish, "softplus": nn.Softplus,
    "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
}  # fmt: skip


@pytest.mark.parametrize("name", list(BUILTIN_TYPES))
def test_builtin_names(name):
    module = get_activation(name)
    assert type(module) is BUILTIN_TYPES[name]
    assert get_activation(name) is not module  # a fresh module each time
    assert name in known_activations()


@pytest.mark.parametrize(
    ("spec", "kind", "radix"),
    [("eru", ERU, 2.0), ("oru", ORU, 2.0), ("eru:3", ERU, 3.0), ("oru:0.5", ORU, 0.5), (" ERU:2.50 ", ERU, 2.5)],
)
def test_radix_specs(spec, kind, radix):
    module = get_activation(spec)
    assert type(module) is kind and module.radix == radix


def test_canonical_spelling():
    assert canonical_activation("ERU") == "eru:2"
    assert canonical_activation("eru:2.0") == "eru:2"
    assert canonical_activation("oru:3>2") == "oru:3>2"
    assert canonical_activation("oru:3>3") == "oru:3"
    assert canonical_activation("ORU:3.0|2.0") == "oru:3|2"
    assert canonical_activation(" eru:1.5 | 2 ") == "eru:1.5|2"
    assert canonical_activation("oru:3|3.0") == "oru:3"
    assert canonical_activation("relu") == "relu"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("relu", ActivationSpec("relu")),
        ("eru", ActivationSpec("eru", 2.0, 2.0, "constant")),
        ("oru:3", ActivationSpec("oru", 3.0, 3.0, "constant")),
        ("oru:3>2", ActivationSpec("oru", 3.0, 2.0, "ramp")),
        ("oru:3|2", ActivationSpec("oru", 3.0, 2.0, "step")),
        ("eru:1|2.5", ActivationSpec("eru", 1.0, 2.5, "step")),
        ("oru:3|3", ActivationSpec("oru", 3.0, 3.0, "constant")),
        ("oru:3>3", ActivationSpec("oru", 3.0, 3.0, "constant")),
    ],
)
def test_parsed_specs_name_their_schedule(spec, expected):
    parsed = parse_activation(spec)
    assert parsed == expected
    assert parsed.is_schedule == (expected.schedule != "constant")
    assert parse_activation(str(parsed)) == parsed  # the canonical spelling parses back to itself


def test_a_spec_object_says_what_it_is():
    with pytest.raises(ValueError, match="constant takes one radix"):
        ActivationSpec("oru", 3.0, 2.0)  # two radices and no schedule: ramp or step?
    with pytest.raises(ValueError, match="constant takes one radix"):
        ActivationSpec("oru", 3.0, 3.0, "step")
    with pytest.raises(ValueError, match="constant, ramp or step"):
        ActivationSpec("oru", 3.0, 2.0, "linear")  # type: ignore[arg-type]


def test_unknown_name_lists_the_known_names():
    with pytest.raises(ValueError, match="unknown activation 'swishy'") as info:
        get_activation("swishy")
    for name in ("relu", "gelu", "eru:R", "oru:R"):
        assert name in str(info.value)


@pytest.mark.parametrize(
    "spec",
    ["eru:0", "eru:-1", "oru:x", "eru:nan", "oru:inf", "eru:", "oru:3>", "oru:3>0", "eru:>2", "oru:3|0", "oru:x|2"],
)
def test_bad_radix_names_the_spec(spec):
    with pytest.raises(ValueError) as info:
        parse_activation(spec)
    assert repr(spec) in str(info.value)


@pytest.mark.parametrize(
    "spec", ["oru:3|", "oru:|2", "oru:3|2>1", "oru:3>2|1", "oru:3|2|1", "oru:3>2>1", "oru:3||2", "oru:", "ORU:3| "]
)
def test_malformed_schedule_is_one_line_naming_the_spec_and_the_fix(spec):
    with pytest.raises(ValueError) as info:
        parse_activation(spec)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"activation {spec!r}: ")
    assert "write oru:R, a ramp oru:R1>R2 or a step oru:R1|R2" in message


@pytest.mark.parametrize("spec", ["relu:2", "", "   "])
def test_other_malformed_specs(spec):
    with pytest.raises(ValueError):
        parse_activation(spec)


def test_schedule_expands_linearly_per_layer():
    layers = activations_for("oru:3>2", 5)
    assert [type(m) for m in layers] == [ORU] * 5
    assert [m.radix for m in layers] == pytest.approx([3.0, 2.75, 2.5, 2.25, 2.0])
    assert [m.radix for m in activations_for("eru:3>2", 1)] == [3.0]
    assert [m.radix for m in activations_for("eru:1>2", 3)] == pytest.approx([1.0, 1.5, 2.0])
    assert [m.radix for m in activations_for("oru:3>2", 4)] == pytest.approx([3.0, 8 / 3, 7 / 3, 2.0])
    assert [m.radix for m in activations_for("oru:3>2", 2)] == [3.0, 2.0]


@pytest.mark.parametrize(
    ("n_layers", "expected"),
    [
        (1, [3]),
        (2, [3, 2]),
        (3, [3, 3, 2]),  # odd: the middle layer belongs to the first half
        (4, [3, 3, 2, 2]),
        (5, [3, 3, 3, 2, 2]),
        (6, [3, 3, 3, 2, 2, 2]),
        (7, [3, 3, 3, 3, 2, 2, 2]),
        (8, [3, 3, 3, 3, 2, 2, 2, 2]),
    ],
)
def test_step_schedule_gives_the_first_half_r1_and_the_second_r2(n_layers, expected):
    assert parse_activation("oru:3|2").radii(n_layers) == expected
    assert parse_activation("eru:2|3").radii(n_layers) == [5 - r for r in expected]  # rising too
    assert parse_activation("oru:3").radii(n_layers) == [3] * n_layers


def test_step_schedule_expands_per_layer():
    layers = activations_for("oru:3|2", 4)
    assert [type(m) for m in layers] == [ORU] * 4
    assert [m.radix for m in layers] == [3.0, 3.0, 2.0, 2.0]
    assert len({id(m) for m in layers}) == 4
    assert [m.radix for m in activations_for("eru:3|2", 1)] == [3.0]
    assert [m.radix for m in activations_for("oru:3|2", 5)] == [3.0, 3.0, 3.0, 2.0, 2.0]
    assert [m.radix for m in activations_for("oru:3>2", 3)] == [3.0, 2.5, 2.0]  # the ramp


@pytest.mark.parametrize("spec", ["oru:3>2", "oru:3|2"])
def test_schedule_needs_a_layer_count(spec):
    with pytest.raises(ValueError, match="activations_for"):
        get_activation(spec)
    with pytest.raises(ValueError, match="n_layers"):
        activations_for("relu", 0)
    with pytest.raises(ValueError, match="n_layers"):
        parse_activation(spec).radii(0)


def test_plain_specs_give_one_fresh_module_per_layer():
    layers = activations_for("prelu", 3)
    assert len({id(m) for m in layers}) == 3  # each layer owns its PReLU slope


def test_register_a_user_activation():
    class Square(nn.Module):
        def forward(self, x):
            return x * x

    register_activation("square_test", Square)
    assert isinstance(get_activation("square_test"), Square)
    assert "square_test" in known_activations()
    with pytest.raises(ValueError):
        register_activation("eru", Square)
    with pytest.raises(ValueError):
        register_activation("Bad Name", Square)
    with pytest.raises(ValueError):  # `$` matches before a final newline; a full match does not
        register_activation("square_two\n", Square)
