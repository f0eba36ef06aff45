"""Weight initialisation that follows the activation after each layer.

Every Linear/Conv layer is drawn from N(0, sigma^2) with sigma^2 set by the activation that
reads its output (biases start at zero):

| activation after the layer | sigma^2 |
| --- | --- |
| ERU, radix r | 6 / (n_in (2r + 1))   (PAPER.md; He at r = 1) |
| ORU, radix r | 2 / (n_in r)          (PAPER.md) |
| ReLU family: relu, elu, celu, gelu, silu, mish, softplus | 2 / n_in (He) |
| leaky_relu / prelu with negative slope a | 2 / ((1 + a^2) n_in) (He) |
| selu | 1 / n_in (LeCun normal) |
| tanh, sigmoid | 2 / (n_in + n_out) (Xavier/Glorot normal) |
| none (an output layer) | 1 / n_in (LeCun normal: variance-preserving for a linear map) |
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from bru_core.activations import ERU, ORU

# variance(module, fan_in, fan_out) -> sigma^2 of the weights of the layer feeding `module`
VarianceRule = Callable[[nn.Module, int, int], float]


def _he(_: nn.Module, fan_in: int, __: int) -> float:
    return 2.0 / fan_in


def _lecun(_: nn.Module | None, fan_in: int, __: int) -> float:
    return 1.0 / fan_in


def _xavier(_: nn.Module, fan_in: int, fan_out: int) -> float:
    return 2.0 / (fan_in + fan_out)


def _leaky(m: nn.Module, fan_in: int, _: int) -> float:
    slope = float(m.weight.detach().mean()) if isinstance(m, nn.PReLU) else float(m.negative_slope)
    return 2.0 / ((1.0 + slope * slope) * fan_in)


def _eru(m: nn.Module, fan_in: int, _: int) -> float:
    return 6.0 / (fan_in * (2.0 * m.radix + 1.0))


def _oru(m: nn.Module, fan_in: int, _: int) -> float:
    return 2.0 / (fan_in * m.radix)


_DESCRIPTIONS: dict[VarianceRule, str] = {
    _eru: "N(0, 6/(n_in (2r+1))), ERU radix-corrected",
    _oru: "N(0, 2/(n_in r)), ORU radix-corrected",
    _he: "N(0, 2/n_in), He",
    _leaky: "N(0, 2/((1+a^2) n_in)), He with slope a",
    _lecun: "N(0, 1/n_in), LeCun",
    _xavier: "N(0, 2/(n_in+n_out)), Xavier",
}

_RULES: dict[type[nn.Module], VarianceRule] = {
    ERU: _eru,
    ORU: _oru,
    nn.ReLU: _he,
    nn.ELU: _he,
    nn.CELU: _he,
    nn.GELU: _he,
    nn.SiLU: _he,
    nn.Mish: _he,
    nn.Softplus: _he,
    nn.LeakyReLU: _leaky,
    nn.PReLU: _leaky,
    nn.SELU: _lecun,
    nn.Tanh: _xavier,
    nn.Sigmoid: _xavier,
}

WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def register_init_rule(activation_type: type[nn.Module], rule: VarianceRule) -> None:
    """Tell the initialiser how to draw weights feeding a user activation."""
    _RULES[activation_type] = rule


def init_variance(activation: nn.Module | None, fan_in: int, fan_out: int) -> float:
    """sigma^2 for a layer whose output goes to ``activation`` (None: an output layer)."""
    if activation is None:
        return _lecun(None, fan_in, fan_out)
    for kind in type(activation).__mro__:
        if kind in _RULES:
            return _RULES[kind](activation, fan_in, fan_out)
    raise TypeError(
        f"no initialisation rule for {type(activation).__name__}; "
        "register one with bru_core.initialisation.register_init_rule"
    )


def describe_rule(activation: nn.Module) -> str:
    for kind in type(activation).__mro__:
        if kind in _RULES:
            return _DESCRIPTIONS.get(_RULES[kind], "user rule")
    return "no rule registered"


def _fans(layer: nn.Module) -> tuple[int, int]:
    weight = layer.weight
    receptive = weight[0][0].numel() if weight.dim() > 2 else 1
    return weight.shape[1] * receptive, weight.shape[0] * receptive


# Leaves that move or pool values without reading them through a non-linearity.
_PASS_THROUGH = (
    nn.Flatten,
    nn.Unflatten,
    nn.Identity,
    nn.Dropout,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
)


def is_activation(module: nn.Module) -> bool:
    """Every leaf that is neither a weight layer nor a pass-through is an activation, so a
    user activation without an init rule is caught rather than silently given LeCun."""
    return not isinstance(module, WEIGHTED + _PASS_THROUGH)


def initialise(model: nn.Module, generator: torch.Generator | None = None) -> None:
    """Draw every weight layer of ``model`` for the activation that follows it.

    Layers are visited in registration order, which for bru-lab's sequential models is
    the order data flows through them; the activation "after" a layer is the first
    activation module met before the next weight layer."""
    leaves = [m for m in model.modules() if not list(m.children())]
    for i, layer in enumerate(leaves):
        if not isinstance(layer, WEIGHTED):
            continue
        following = None
        for later in leaves[i + 1 :]:
            if isinstance(later, WEIGHTED):
                break
            if is_activation(later):
                following = later
                break
        fan_in, fan_out = _fans(layer)
        std = init_variance(following, fan_in, fan_out) ** 0.5
        with torch.no_grad():
            nn.init.normal_(layer.weight, 0.0, std, generator=generator)
            if layer.bias is not None:
                layer.bias.zero_()
