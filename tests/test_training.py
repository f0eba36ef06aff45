"""train(config): learning, determinism, pairing, divergence, schedules, bad configs."""

from __future__ import annotations

import json
import math

import pytest
import torch

from bru_core.config import TrainConfig
from bru_core.data import synthetic_data
from bru_core.errors import ConfigError, NonFiniteLossError
from bru_core.training import EpochRecord, Trainer, train


def _numbers(history):
    """Everything measured except wall-clock seconds."""
    return [
        (e.train_loss, e.train_error, e.val_loss, e.val_error, e.lr, e.test_loss, e.test_error) for e in history.epochs
    ] + [tuple(history.final.values())]


@pytest.mark.slow
@pytest.mark.parametrize("activation", ["relu", "elu", "eru:2", "oru:3", "oru:3>2", "eru:3>2"])
def test_mlp4_on_digits_reaches_95_percent_validation_accuracy_within_20_epochs(digits, activation):
    history = train({"dataset": "digits", "model": "mlp4", "activation": activation, "epochs": 20}, data=digits)
    best_accuracy = 1 - min(e.val_error for e in history.epochs)
    assert best_accuracy >= 0.95, [e.val_error for e in history.epochs]
    assert history.final["test_error"] < 0.10
    assert history.epochs[-1].train_loss < history.epochs[0].train_loss


def test_same_seed_same_numbers_on_the_cpu(digits):
    config = {"activation": "oru:3", "epochs": 3, "test_every_epoch": True}
    first, second = train(config, data=digits), train(config, data=digits)
    assert _numbers(first) == _numbers(second)
    other = train({**config, "seed": 1}, data=digits)
    assert _numbers(other) != _numbers(first)


def test_data_order_is_paired_across_activations(digits):
    """Same seed: same batches in the same order, whatever the activation."""
    a = Trainer({"activation": "relu", "seed": 7}, digits)
    b = Trainer({"activation": "eru:3>2", "seed": 7}, digits)
    order_a = [labels.tolist() for _, _, labels in digits.batches(digits.train, 128, a.order)]
    order_b = [labels.tolist() for _, _, labels in digits.batches(digits.train, 128, b.order)]
    assert order_a == order_b
    c = Trainer({"activation": "relu", "seed": 8}, digits)
    assert [labels.tolist() for _, _, labels in digits.batches(digits.train, 128, c.order)] != order_a


def test_history_records_every_epoch(digits):
    seen: list[EpochRecord] = []
    batches: list[tuple[int, int]] = []
    history = train({"epochs": 3}, on_epoch=seen.append, on_batch=lambda d, t: batches.append((d, t)), data=digits)
    assert [e.epoch for e in history.epochs] == [1, 2, 3]
    assert seen == history.epochs
    n_batches = math.ceil(digits.info.n_train / 128)
    assert batches[-1] == (n_batches, n_batches) and len(batches) == 3 * n_batches
    for e in history.epochs:
        assert 0 <= e.train_error <= 1 and 0 <= e.val_error <= 1 and e.seconds > 0
        assert e.test_loss is None  # only with test_every_epoch
    assert set(history.final) == {
        "train_loss", "train_error", "val_loss", "val_error", "test_loss", "test_error", "error_quotient"
    }  # fmt: skip
    assert history.final["error_quotient"] == pytest.approx(history.final["test_loss"] / history.final["train_loss"])
    assert history.n_parameters == 151_306 and history.objective == "classification"
    json.dumps(history.to_dict())  # plain data
    assert isinstance(history.model, torch.nn.Module)


def test_test_every_epoch_gives_learning_curves(digits):
    history = train({"epochs": 2, "test_every_epoch": True}, data=digits)
    assert all(e.test_loss is not None and e.test_error is not None for e in history.epochs)
    assert history.epochs[-1].test_loss == pytest.approx(history.final["test_loss"])


def test_on_epoch_can_stop_training(digits):
    class Prune(Exception):
        pass

    def prune_at_two(record):
        if record.epoch == 2:
            raise Prune

    with pytest.raises(Prune):
        train({"epochs": 5}, on_epoch=prune_at_two, data=digits)


def test_non_finite_loss_names_epoch_and_batch(digits):
    with pytest.raises(NonFiniteLossError) as info:
        train({"activation": "relu", "lr": 10.0, "epochs": 3}, data=digits)
    error = info.value
    assert error.epoch == 1 and error.batch >= 1
    assert not math.isfinite(error.loss)
    assert f"epoch {error.epoch}, batch {error.batch}" in str(error)


def test_auto_encoder_learns_to_reconstruct(digits):
    history = train({"model": "sae", "activation": "eru:2", "optimizer": "adam", "lr": 1e-3, "epochs": 3}, data=digits)
    assert history.objective == "reconstruction"
    assert all(e.train_error is None and e.val_error is None for e in history.epochs)
    assert history.final["test_error"] is None
    assert history.epochs[-1].val_loss < history.epochs[0].val_loss
    assert history.final["test_loss"] < 0.1  # mean squared error of pixels in [0, 1]


def test_lenet5_trains_on_digits(digits):
    history = train({"model": "lenet5", "activation": "oru:3>2", "epochs": 2, "lr": 0.02}, data=digits)
    assert history.final["val_error"] < 0.5


def test_convpool_trains_on_cifar_shaped_data():
    data = synthetic_data("cifar10", n_train=16, n_val=4, n_test=4)
    assert data.augment
    history = train(
        {"dataset": "cifar10", "model": "convpool", "activation": "eru:2", "epochs": 1, "batch_size": 8, "lr": 0.01},
        data=data,
    )
    assert math.isfinite(history.final["train_loss"])


@pytest.mark.parametrize(
    ("schedule", "extra", "expected_lrs"),
    [
        ("none", {}, [0.1, 0.1, 0.1, 0.1]),
        ("step", {"step_epochs": 2, "step_gamma": 0.5}, [0.1, 0.1, 0.05, 0.05]),
        ("step", {}, [0.1, 0.01, 0.001, 0.0001]),  # default: every epochs // 3 = 1 epoch
    ],
)
def test_learning_rate_schedules(digits, schedule, extra, expected_lrs):
    history = train({"lr": 0.1, "epochs": 4, "schedule": schedule, **extra}, data=digits)
    assert [e.lr for e in history.epochs] == pytest.approx(expected_lrs)


def test_cosine_schedule_decays_per_batch(digits):
    history = train({"lr": 0.1, "epochs": 4, "schedule": "cosine"}, data=digits)
    lrs = [e.lr for e in history.epochs]
    assert lrs[0] == pytest.approx(0.1)
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] < 0.06


@pytest.mark.parametrize(
    "optimizer",
    [{"optimizer": "adam", "lr": 1e-3}, {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.01}, {"nesterov": True}],
)
def test_optimizers(digits, optimizer):
    history = train({"epochs": 2, **optimizer}, data=digits)
    assert history.epochs[-1].train_loss < history.epochs[0].train_loss


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"lr": 0}, "lr"),
        ({"lr": -0.1}, "lr"),
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"optimizer": "lbfgs"}, "optimizer"),
        ({"schedule": "warmup"}, "schedule"),
        ({"dataset": "imagenet"}, "dataset"),
        ({"model": "resnet50"}, "model"),
        ({"activation": "swish2"}, "activation"),
        ({"activation": "eru:0"}, "activation"),
        ({"activation": "oru:3>x"}, "activation"),
        ({"momentum": 1.0}, "momentum"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"val_fraction": 0}, "val_fraction"),
        ({"device": "tpu"}, "device"),
        ({"precision": "fp8"}, "precision"),
        ({"seed": -1}, "seed"),
        ({"learning_rate": 0.1}, "learning_rate"),
    ],
)
def test_bad_config_names_the_field(change, field):
    with pytest.raises(ConfigError) as info:
        TrainConfig.parse(change)
    message = str(info.value)
    assert message.startswith(f"{field}: "), message
    assert "\n" not in message


def test_inconsistent_options():
    with pytest.raises(ConfigError, match="nesterov needs optimizer sgd"):
        TrainConfig.parse({"nesterov": True, "optimizer": "adam"})


def test_bf16_needs_cuda(digits):
    with pytest.raises(ConfigError, match="precision: bf16"):
        train({"precision": "bf16", "device": "cpu", "epochs": 1}, data=digits)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_a_config_error(digits):
    with pytest.raises(ConfigError, match="device: cuda requested but no CUDA device"):
        train({"device": "cuda", "epochs": 1}, data=digits)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_training_matches_the_cpu_closely(digits):
    cpu = train({"activation": "eru:3", "epochs": 2}, data=digits)
    gpu = train({"activation": "eru:3", "epochs": 2, "device": "cuda"}, data=digits)
    assert gpu.final["val_loss"] == pytest.approx(cpu.final["val_loss"], rel=0.05)


@pytest.mark.slow
def test_compiled_model_trains_like_the_eager_one(digits):
    """compile: true (torch.compile of the whole model, the ERU formulas traced with it)."""
    eager = train({"model": "mlp2", "activation": "eru:3", "epochs": 2}, data=digits)
    compiled = train({"model": "mlp2", "activation": "eru:3", "epochs": 2, "compile": True}, data=digits)
    assert compiled.config["compile"] is True
    assert compiled.final["val_loss"] == pytest.approx(eager.final["val_loss"], rel=1e-4)
    assert [e.train_loss for e in compiled.epochs] == pytest.approx([e.train_loss for e in eager.epochs], rel=1e-4)


def test_activation_spec_is_stored_canonically():
    assert TrainConfig.parse({"activation": "ERU:2.0"}).activation == "eru:2"
