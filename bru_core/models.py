"""The paper's four networks, each a plain ``nn.Sequential``.

| name | for | hidden layers with an activation | parameters (MNIST-shaped / CIFAR-10-shaped) |
| --- | --- | --- | --- |
| mlp4 ... mlp8 (any mlpN) | classification | N fully connected layers of 128 | mlp4 151,306 / 444,170; mlp8 217,354 / 510,218 |
| sae | reconstruction | 1000-500-250-30-250-500-1000 | 2,837,314 / 7,415,602 |
| lenet5 | classification | conv 6, conv 16, fc 120, fc 84 | 61,706 / 83,126 |
| convpool | classification | conv 96 x3, conv 192 x3, conv 192 3x3, conv 192 1x1 | 1,368,010 / 1,369,738 |

(Counts are checked by tests/test_models.py; ``bru models --dataset D`` prints them.) Every hidden layer takes its activation
from the spec, or from its place in a radix schedule such as ``oru:3>2``; weights follow
the activation after them (bru_core.initialisation). Choices where PAPER.md is silent:

* lenet5: 5x5 convolutions (the first padded to keep 28x28), 2x2 max-pooling, as in the
  common modern form of LeCun et al. (1998).
* convpool: ConvPool-CNN-C of Springenberg et al. (2015) without dropout (the paper uses
  no regularisation): 3x3 convolutions padded to keep their size, 3x3 max-pooling with
  stride 2, then a 3x3 valid and a 1x1 convolution, and a 1x1 convolution to the classes
  averaged over space: ten hidden layers counting the two pools. The class layer has no
  activation (it gives the logits).
* sae: trained end to end on reconstruction (mean squared error against the pixels in
  [0, 1], from the standardised image); the 30-unit code layer has an activation like
  every other hidden layer; the output layer is linear.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from bru_core.activations import activations_for
from bru_core.data import DataInfo
from bru_core.errors import ConfigError
from bru_core.initialisation import initialise

MLP_WIDTH = 128
SAE_WIDTHS = (1000, 500, 250, 30, 250, 500, 1000)
_MLP = re.compile(r"mlp(\d+)")
MAX_MLP_DEPTH = 32


@dataclass(frozen=True)
class ModelKind:
    name: str
    objective: str  # "classification" or "reconstruction"
    build: Callable[[DataInfo, str], nn.Sequential]
    convolutional: bool = False  # trains in channels_last on a GPU


def _mlp(depth: int) -> Callable[[DataInfo, str], nn.Sequential]:
    def build(info: DataInfo, activation: str) -> nn.Sequential:
        acts = activations_for(activation, depth)
        layers: list[nn.Module] = [nn.Flatten()]
        width_in = info.n_inputs
        for act in acts:
            layers += [nn.Linear(width_in, MLP_WIDTH), act]
            width_in = MLP_WIDTH
        layers.append(nn.Linear(width_in, info.n_classes))
        return nn.Sequential(*layers)

    return build


def _sae(info: DataInfo, activation: str) -> nn.Sequential:
    acts = activations_for(activation, len(SAE_WIDTHS))
    layers: list[nn.Module] = [nn.Flatten()]
    width_in = info.n_inputs
    for width, act in zip(SAE_WIDTHS, acts, strict=True):
        layers += [nn.Linear(width_in, width), act]
        width_in = width
    layers.append(nn.Linear(width_in, info.n_inputs))
    return nn.Sequential(*layers)


def _lenet5(info: DataInfo, activation: str) -> nn.Sequential:
    c, h, w = info.input_shape
    side_h, side_w = (h // 2 - 4) // 2, (w // 2 - 4) // 2
    if min(side_h, side_w) < 1:
        raise ConfigError(f"model: lenet5 needs images of at least 12x12, {info.name} has {h}x{w}")
    a1, a2, a3, a4 = activations_for(activation, 4)
    return nn.Sequential(
        nn.Conv2d(c, 6, 5, padding=2), a1, nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), a2, nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * side_h * side_w, 120), a3,
        nn.Linear(120, 84), a4,
        nn.Linear(84, info.n_classes),
    )  # fmt: skip


def _convpool(info: DataInfo, activation: str) -> nn.Sequential:
    c, h, w = info.input_shape
    if min(h, w) < 12:
        raise ConfigError(f"model: convpool needs images of at least 12x12, {info.name} has {h}x{w}")
    acts = iter(activations_for(activation, 8))

    def conv(c_in: int, c_out: int, size: int = 3, padding: int = 1) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, size, padding=padding), next(acts)]

    return nn.Sequential(
        *conv(c, 96), *conv(96, 96), *conv(96, 96), nn.MaxPool2d(3, stride=2, padding=1),
        *conv(96, 192), *conv(192, 192), *conv(192, 192), nn.MaxPool2d(3, stride=2, padding=1),
        *conv(192, 192, padding=0), *conv(192, 192, size=1, padding=0),
        nn.Conv2d(192, info.n_classes, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )  # fmt: skip


_FIXED: dict[str, ModelKind] = {
    "sae": ModelKind("sae", "reconstruction", _sae),
    "lenet5": ModelKind("lenet5", "classification", _lenet5, convolutional=True),
    "convpool": ModelKind("convpool", "classification", _convpool, convolutional=True),
}
MODELS = ("mlp4", "mlp5", "mlp6", "mlp7", "mlp8", *_FIXED)


def model_kind(name: str) -> ModelKind:
    """The model table entry for a name; ConfigError lists the known names."""
    match = _MLP.fullmatch(name)
    if match and 1 <= int(match.group(1)) <= MAX_MLP_DEPTH:
        return ModelKind(name, "classification", _mlp(int(match.group(1))))
    if name in _FIXED:
        return _FIXED[name]
    raise ConfigError(
        f"model: unknown model {name!r}; known: {', '.join(MODELS)} (any mlpN, N from 1 to {MAX_MLP_DEPTH})"
    )


def build_model(
    name: str, data_info: DataInfo, activation_spec: str, generator: torch.Generator | None = None
) -> nn.Sequential:
    """Build a model for a data set with the given activation, initialised for it."""
    model = model_kind(name).build(data_info, activation_spec)
    initialise(model, generator)
    return model


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
