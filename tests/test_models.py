"""The paper's four networks: shapes, parameter counts, activations per hidden layer."""

from __future__ import annotations

import pytest
import torch

from bru_core.activations import ERU, ORU
from bru_core.data import DataInfo, dataset_shape
from bru_core.errors import ConfigError
from bru_core.initialisation import is_activation
from bru_core.models import MODELS, build_model, model_kind, parameter_count


def _info(dataset: str) -> DataInfo:
    shape, n_classes = dataset_shape(dataset)
    return DataInfo(dataset, shape, n_classes, 0, 0, 0)


# Parameter counts, worked out by hand from the layer sizes (documented in bru_core/models.py).
COUNTS = {
    ("mlp4", "mnist"): 784 * 128 + 128 + 3 * (128 * 128 + 128) + 128 * 10 + 10,  # 151,306
    ("mlp8", "mnist"): 784 * 128 + 128 + 7 * (128 * 128 + 128) + 128 * 10 + 10,  # 217,354
    ("mlp4", "cifar10"): 3072 * 128 + 128 + 3 * (128 * 128 + 128) + 128 * 10 + 10,  # 444,170
    ("sae", "mnist"): 2_837_314,
    ("lenet5", "mnist"): 61_706,
    ("lenet5", "cifar10"): 83_126,
    ("convpool", "cifar10"): 1_369_738,
    ("convpool", "cifar100"): 1_369_738 - 1930 + 192 * 100 + 100,
    ("convpool", "mnist"): 1_368_010,
}
HIDDEN = {"mlp4": 4, "mlp5": 5, "mlp6": 6, "mlp7": 7, "mlp8": 8, "sae": 7, "lenet5": 4, "convpool": 8}


@pytest.mark.parametrize(("model", "dataset"), list(COUNTS))
def test_parameter_counts(model, dataset):
    assert parameter_count(build_model(model, _info(dataset), "relu")) == COUNTS[(model, dataset)]
    assert COUNTS[("mlp4", "mnist")] == 151_306 and COUNTS[("mlp8", "mnist")] == 217_354


@pytest.mark.parametrize("dataset", ["digits", "mnist", "cifar10", "cifar100"])
@pytest.mark.parametrize("model", MODELS)
def test_output_shapes(model, dataset):
    info = _info(dataset)
    net = build_model(model, info, "oru:3>2")
    x = torch.randn(3, *info.input_shape)
    y = net(x)
    expected = (3, info.n_inputs) if model == "sae" else (3, info.n_classes)
    assert y.shape == expected


@pytest.mark.parametrize("model", MODELS)
def test_every_hidden_layer_takes_the_schedule(model):
    net = build_model(model, _info("cifar10"), "eru:3>2")
    acts = [m for m in net.modules() if not list(m.children()) and is_activation(m)]
    assert len(acts) == HIDDEN[model]
    assert all(isinstance(a, ERU) for a in acts)
    assert acts[0].radix == 3.0 and acts[-1].radix == 2.0
    radii = [a.radix for a in acts]
    assert radii == sorted(radii, reverse=True)


def test_plain_spec_is_the_same_in_every_layer():
    net = build_model("mlp6", _info("mnist"), "oru:3")
    acts = [m for m in net if isinstance(m, ORU)]
    assert [a.radix for a in acts] == [3.0] * 6


def test_objectives():
    assert model_kind("sae").objective == "reconstruction"
    for name in ("mlp4", "mlp8", "lenet5", "convpool", "mlp12"):
        assert model_kind(name).objective == "classification"


def test_any_mlp_depth():
    net = build_model("mlp2", _info("mnist"), "relu")
    assert parameter_count(net) == 784 * 128 + 128 + 128 * 128 + 128 + 1290


@pytest.mark.parametrize("name", ["mlp0", "mlp99", "resnet", "", "MLP4", "mlp4\n"])
def test_unknown_model_lists_the_known_ones(name):
    with pytest.raises(ConfigError, match="model: unknown model") as info:
        model_kind(name)
    assert "convpool" in str(info.value) and "sae" in str(info.value)


def test_images_too_small_for_the_convolutional_models():
    tiny = DataInfo("tiny", (1, 8, 8), 10, 0, 0, 0)
    for model in ("lenet5", "convpool"):
        with pytest.raises(ConfigError, match="at least 12x12"):
            build_model(model, tiny, "relu")


def test_generator_makes_the_weights_reproducible():
    a = build_model("lenet5", _info("mnist"), "eru:2", torch.Generator().manual_seed(5))
    b = build_model("lenet5", _info("mnist"), "eru:2", torch.Generator().manual_seed(5))
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
