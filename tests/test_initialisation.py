"""Weights follow the activation after their layer (PAPER.md's radix-corrected variances)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bru_core.activations import ERU, ORU, get_activation
from bru_core.initialisation import init_variance, initialise, register_init_rule

FAN_IN, FAN_OUT = 800, 1250  # 1M weights: the sample variance is within ~0.3% of the truth


def _variance_after(activation: nn.Module | None) -> float:
    layers: list[nn.Module] = [nn.Linear(FAN_IN, FAN_OUT)]
    if activation is not None:
        layers.append(activation)
    model = nn.Sequential(*layers)
    initialise(model, torch.Generator().manual_seed(0))
    assert torch.count_nonzero(model[0].bias) == 0
    return model[0].weight.var().item()


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("eru:2", 6 / (FAN_IN * 5)),
        ("eru:1", 2 / FAN_IN),  # radix 1 is ELU: He
        ("eru:3", 6 / (FAN_IN * 7)),
        ("oru:2", 2 / (FAN_IN * 2)),
        ("oru:3", 2 / (FAN_IN * 3)),
        ("oru:0.5", 2 / (FAN_IN * 0.5)),
        ("relu", 2 / FAN_IN),
        ("elu", 2 / FAN_IN),
        ("gelu", 2 / FAN_IN),
        ("silu", 2 / FAN_IN),
        ("leaky_relu", 2 / ((1 + 0.01**2) * FAN_IN)),
        ("prelu", 2 / ((1 + 0.25**2) * FAN_IN)),
        ("selu", 1 / FAN_IN),
        ("tanh", 2 / (FAN_IN + FAN_OUT)),
        ("sigmoid", 2 / (FAN_IN + FAN_OUT)),
    ],
)
def test_variance_follows_the_activation(spec, expected):
    assert _variance_after(get_activation(spec)) == pytest.approx(expected, rel=0.01)


def test_output_layer_is_lecun():
    assert _variance_after(None) == pytest.approx(1 / FAN_IN, rel=0.01)


def test_conv_fan_in_counts_the_kernel():
    model = nn.Sequential(nn.Conv2d(64, 128, 5), ERU(2.0))
    initialise(model, torch.Generator().manual_seed(0))
    fan_in = 64 * 5 * 5
    assert model[0].weight.var().item() == pytest.approx(6 / (fan_in * 5), rel=0.02)


def test_each_layer_of_a_schedule_gets_its_own_radix():
    model = nn.Sequential(nn.Linear(FAN_IN, FAN_OUT), ORU(3.0), nn.Linear(FAN_OUT, FAN_IN), nn.MaxPool1d(1), ORU(2.0))
    initialise(model, torch.Generator().manual_seed(0))
    assert model[0].weight.var().item() == pytest.approx(2 / (FAN_IN * 3), rel=0.01)
    assert model[2].weight.var().item() == pytest.approx(2 / (FAN_OUT * 2), rel=0.01)


def test_same_generator_seed_same_weights():
    def weights(seed):
        model = nn.Sequential(nn.Linear(20, 10), nn.ReLU())
        initialise(model, torch.Generator().manual_seed(seed))
        return model[0].weight

    assert torch.equal(weights(3), weights(3))
    assert not torch.equal(weights(3), weights(4))


def test_a_user_activation_needs_a_rule():
    class Cube(nn.Module):
        def forward(self, x):
            return x**3

    model = nn.Sequential(nn.Linear(4, 4), Cube())
    with pytest.raises(TypeError, match="register_init_rule"):
        initialise(model)
    register_init_rule(Cube, lambda m, fan_in, fan_out: 0.5 / fan_in)
    assert init_variance(Cube(), 10, 10) == pytest.approx(0.05)
    initialise(model)
