"""Campaign specs (bru_core.spec): valid specs, their derived views, and one clear line per problem.

The contract: every problem is ONE line that names the field path and what is wrong; an
unknown key is refused with the closest valid key suggested; everything is checked before
anything runs. ``bru check SPEC`` prints the protocol, or one ``error: ...`` line and exit 2.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from bru_core.cli import main
from bru_core.config import TrainConfig
from bru_core.errors import ConfigError
from bru_core.spec import CampaignSpec, SpecError, load_spec, parse_spec

REFERENCE_YAML = """\
name: quick
tasks:
  - {dataset: digits, model: mlp4, epochs: 10}
activations: [relu, elu, "eru:2", "oru:3>2"]
search:
  trials: 6          # per activation, the same for all
  sampler: tpe       # tpe | random, seeded
  seed: 0
  pruner: median     # none | median | hyperband
  space:
    lr: {low: 1.0e-4, high: 0.3, log: true}
    batch_size: {choices: [64, 128]}
    optimizer: {choices: [sgd, adam]}
repeats:
  seeds: [1, 2, 3, 4, 5, 6, 7, 8]
compare:
  reference: [relu, elu]
"""

RADIX_YAML = """\
name: radix
tasks:
  - {dataset: digits, model: mlp4, epochs: 10}
activations: [relu, eru, "oru:3>2"]
search:
  trials: 6
  space:
    lr: {low: 1.0e-4, high: 0.3, log: true}
    radix: {low: 1.5, high: 3}
"""

TASK = "digits/mlp4"
PARAMS = {"lr": 0.01, "batch_size": 64, "optimizer": "adam"}


# --------------------------------------------------------------------------- helpers


def reference_data() -> dict[str, Any]:
    """The reference spec as plain data (a fresh copy each time)."""
    return yaml.safe_load(REFERENCE_YAML)


def write(tmp_path: Path, data: Any, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def one_line(message: str) -> str:
    assert message, "empty message"
    assert "\n" not in message and "\r" not in message, f"not one line: {message!r}"
    return message


def spec_error(data: Any) -> str:
    """The message of the SpecError that parse_spec raises for data (and nothing else)."""
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    assert type(info.value) is SpecError
    return one_line(str(info.value))


def _walk(data: Any, path: str) -> tuple[Any, Any]:
    """(parent container, last key) of a dotted path; integer parts index lists."""
    parts: list[Any] = [int(p) if p.isdigit() else p for p in path.split(".")]
    node = data
    for part in parts[:-1]:
        node = node[part]
    return node, parts[-1]


Mutation = Callable[[dict[str, Any]], None]


def setv(path: str, value: Any) -> Mutation:
    def apply(data: dict[str, Any]) -> None:
        parent, key = _walk(data, path)
        parent[key] = copy.deepcopy(value)

    return apply


def drop(path: str) -> Mutation:
    def apply(data: dict[str, Any]) -> None:
        parent, key = _walk(data, path)
        del parent[key]

    return apply


def rename(path: str, new: str) -> Mutation:
    def apply(data: dict[str, Any]) -> None:
        parent, key = _walk(data, path)
        parent[new] = parent.pop(key)

    return apply


def append(path: str, value: Any) -> Mutation:
    def apply(data: dict[str, Any]) -> None:
        parent, key = _walk(data, path)
        parent[key].append(copy.deepcopy(value))

    return apply


def mutated(*mutations: Mutation) -> dict[str, Any]:
    data = reference_data()
    for mutation in mutations:
        mutation(data)
    return data


@pytest.fixture
def reference_path(tmp_path: Path) -> Path:
    return write(tmp_path, REFERENCE_YAML, "quick.yaml")


@pytest.fixture
def reference(reference_path: Path) -> CampaignSpec:
    return load_spec(reference_path)


@pytest.fixture
def radix_campaign(tmp_path: Path) -> CampaignSpec:
    return load_spec(write(tmp_path, RADIX_YAML, "radix.yaml"))


# --------------------------------------------------------------------------- 1. the reference spec


def test_reference_spec_loads(reference: CampaignSpec) -> None:
    assert isinstance(reference, CampaignSpec)
    assert reference.name == "quick"
    assert [t.name for t in reference.tasks] == [TASK]
    assert reference.search.trials == 6
    assert reference.search.sampler == "tpe" and reference.search.pruner == "median" and reference.search.seed == 0
    assert set(reference.search.space) == {"lr", "batch_size", "optimizer"}


def test_reference_spec_parses_from_plain_data_too() -> None:
    assert parse_spec(reference_data()).labels == ["relu", "elu", "eru:2", "oru:3>2"]


def test_labels_and_references(reference: CampaignSpec) -> None:
    assert reference.labels == ["relu", "elu", "eru:2", "oru:3>2"]
    assert reference.references == ["relu", "elu"]
    assert reference.free_radix_activations == []


def test_study_name(reference: CampaignSpec) -> None:
    assert reference.study_name(TASK, "eru:2") == "quick/digits/mlp4/eru:2"


@pytest.mark.parametrize(
    ("typed", "label"),
    [("ERU:2.0", "eru:2"), ("eru:2", "eru:2"), (" Relu ", "relu"), ("ORU:3>2", "oru:3>2"), ("eru", "eru:2")],
    ids=["ERU:2.0", "eru:2", "padded-Relu", "ORU:3>2", "bare-eru-means-eru:2"],
)
def test_activation_maps_what_the_user_typed_to_the_label(reference: CampaignSpec, typed: str, label: str) -> None:
    assert reference.activation(typed) == label


@pytest.mark.parametrize(
    ("typed", "fragment"),
    [("gelu", "not in campaign 'quick'"), ("eru:3", "not in campaign 'quick'"), ("nope", "unknown activation 'nope'")],
    ids=["gelu-not-in-campaign", "eru:3-not-in-campaign", "unknown-name"],
)
def test_activation_not_in_campaign_is_a_spec_error(reference: CampaignSpec, typed: str, fragment: str) -> None:
    with pytest.raises(SpecError) as info:
        reference.activation(typed)
    assert fragment in one_line(str(info.value))


def test_task_lookup(reference: CampaignSpec) -> None:
    assert reference.task(TASK).epochs == 10
    with pytest.raises(SpecError) as info:
        reference.task("mnist/mlp4")
    message = one_line(str(info.value))
    assert "'mnist/mlp4'" in message and TASK in message


def test_train_config(reference: CampaignSpec) -> None:
    config = reference.train_config(TASK, "oru:3>2", PARAMS, seed=3)
    assert isinstance(config, TrainConfig)
    assert config.lr == 0.01 and config.batch_size == 64 and config.optimizer == "adam"
    assert config.epochs == 10 and config.seed == 3 and config.activation == "oru:3>2"
    assert config.dataset == "digits" and config.model == "mlp4"


def test_train_config_does_not_change_the_params_it_is_given(radix_campaign: CampaignSpec) -> None:
    params = {**PARAMS, "radix": 2.5}
    radix_campaign.train_config(TASK, "eru", params, seed=0)
    assert params == {**PARAMS, "radix": 2.5}


def test_train_config_refuses_a_bad_value(reference: CampaignSpec) -> None:
    with pytest.raises(ConfigError) as info:
        reference.train_config(TASK, "relu", {"lr": 50}, seed=0)
    assert one_line(str(info.value)).startswith("lr: ")


def test_protocol(reference: CampaignSpec) -> None:
    lines = reference.protocol()
    assert all(isinstance(line, str) and "\n" not in line for line in lines)
    text = "\n".join(lines)
    assert "6 trials per activation" in text  # the budget, the same for all
    assert "the same for all" in text
    assert "lr in [0.0001, 0.3] (log scale)" in text  # the space
    assert "batch_size in {64, 128}" in text and "optimizer in {sgd, adam}" in text
    assert "seeds [1, 2, 3, 4, 5, 6, 7, 8]" in text  # the repeats
    assert "validation split" in text and "never on the test set" in text
    assert "tpe sampler seeded 0" in text and "pruner median" in text
    assert "relu, elu, eru:2, oru:3>2" in text


def test_defaults_when_compare_and_repeats_are_omitted() -> None:
    spec = parse_spec(mutated(drop("compare"), drop("repeats")))
    assert spec.references == ["relu", "elu"]  # the activations that are not ERU/ORU
    assert spec.repeats.seeds == list(range(1, 13))  # twelve, none the search's seed 0
    assert "seeds [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]" in "\n".join(spec.protocol())


def test_default_references_are_the_non_radix_activations() -> None:
    spec = parse_spec(mutated(drop("compare"), setv("activations", ["eru:2", "tanh", "oru:3", "gelu"])))
    assert spec.references == ["tanh", "gelu"]


def test_default_references_with_only_radix_activations_is_the_first() -> None:
    spec = parse_spec(mutated(drop("compare"), setv("activations", ["eru:2", "oru:3"])))
    assert spec.references == ["eru:2"]


def test_compare_reference_is_written_canonically() -> None:
    spec = parse_spec(mutated(setv("compare.reference", ["ERU:2.0"])))
    assert spec.references == ["eru:2"]


def test_search_defaults() -> None:
    spec = parse_spec(mutated(drop("search.sampler"), drop("search.seed"), drop("search.pruner")))
    assert (spec.search.sampler, spec.search.seed, spec.search.pruner) == ("tpe", 0, "median")


def test_fixed_train_settings_reach_train_config() -> None:
    spec = parse_spec(mutated(setv("train", {"momentum": 0.5, "weight_decay": 1e-4})))
    config = spec.train_config(TASK, "relu", PARAMS, seed=0)
    assert config.momentum == 0.5 and config.weight_decay == 1e-4
    assert "Fixed for all: momentum=0.5" in "\n".join(spec.protocol())


def test_task_level_train_config_fields_reach_train_config() -> None:
    task = {"dataset": "digits", "model": "mlp4", "epochs": 3, "val_fraction": 0.2}
    spec = parse_spec(mutated(setv("tasks", [task])))
    assert spec.task(TASK).settings == {"val_fraction": 0.2}
    config = spec.train_config(TASK, "elu", PARAMS, seed=1)
    assert config.val_fraction == 0.2 and config.epochs == 3 and config.seed == 1


def test_two_tasks() -> None:
    tasks = [{"dataset": "digits", "model": "mlp4", "epochs": 2}, {"dataset": "digits", "model": "mlp5", "epochs": 4}]
    # two tasks double the confirmatory family (8 comparisons): 8 seeds no longer reach 0.05
    spec = parse_spec(mutated(setv("tasks", tasks), setv("repeats.seeds", list(range(1, 10)))))
    assert spec.train_config("digits/mlp5", "relu", PARAMS, seed=0).epochs == 4
    assert "2 task(s) (digits/mlp4, digits/mlp5)" in spec.protocol()[0]


# --------------------------------------------------------------------------- 2. radix search


def test_radix_labels_and_spaces(radix_campaign: CampaignSpec) -> None:
    assert radix_campaign.labels == ["relu", "eru", "oru:3>2"]
    assert radix_campaign.free_radix_activations == ["eru"]
    assert "radix" in radix_campaign.space_for("eru")
    assert "radix" not in radix_campaign.space_for("relu")
    assert "radix" not in radix_campaign.space_for("oru:3>2")
    assert "lr" in radix_campaign.space_for("relu") and "lr" in radix_campaign.space_for("eru")


def test_radix_reaches_the_activation(radix_campaign: CampaignSpec) -> None:
    config = radix_campaign.train_config(TASK, "eru", {"radix": 2.5, "lr": 0.01}, seed=0)
    assert config.activation == "eru:2.5"
    assert radix_campaign.train_config(TASK, "relu", {"lr": 0.01}, seed=0).activation == "relu"
    assert radix_campaign.train_config(TASK, "oru:3>2", {"lr": 0.01}, seed=0).activation == "oru:3>2"


def test_radix_protocol(radix_campaign: CampaignSpec) -> None:
    text = "\n".join(radix_campaign.protocol())
    radix_line = next(line for line in radix_campaign.protocol() if line.startswith("Radix"))
    assert "[1.5, 3]" in radix_line and "for eru only" in radix_line
    assert "fixed as written for oru:3>2" in radix_line
    assert "Search space (every activation): lr" in text and "radix" not in text.split("Radix")[0].split("space")[-1]


def test_radix_activation_lookup(radix_campaign: CampaignSpec) -> None:
    assert radix_campaign.activation("ERU") == "eru"
    with pytest.raises(SpecError):
        radix_campaign.activation("eru:2")  # not in this campaign: eru's radix is searched


def test_radix_choices_are_accepted() -> None:
    data = mutated(
        drop("compare"), setv("activations", ["relu", "eru"]), setv("search.space.radix", {"choices": [1.5, 2, 3]})
    )
    spec = parse_spec(data)
    assert spec.space_for("eru")["radix"].choices == [1.5, 2, 3]


def test_without_a_radix_range_bare_eru_means_eru_2() -> None:
    spec = parse_spec(mutated(drop("compare"), setv("activations", ["relu", "eru"])))
    assert spec.labels == ["relu", "eru:2"]
    assert spec.free_radix_activations == ["eru"]
    assert "radix" not in spec.space_for("eru")
    assert spec.train_config(TASK, "eru", PARAMS, seed=0).activation == "eru:2"


def test_without_a_radix_range_eru_and_eru_2_are_duplicates() -> None:
    message = spec_error(mutated(drop("compare"), setv("activations", ["eru", "eru:2"])))
    assert message.startswith("activations: ") and "eru:2" in message and "more than once" in message


def test_with_a_radix_range_eru_and_eru_2_are_distinct() -> None:
    spec = parse_spec(
        mutated(
            drop("compare"), setv("activations", ["eru", "eru:2"]), setv("search.space.radix", {"low": 1.5, "high": 3})
        )
    )
    assert spec.labels == ["eru", "eru:2"]
    assert "radix" in spec.space_for("eru") and "radix" not in spec.space_for("eru:2")


# --------------------------------------------------------------------------- 3. bad specs

RADIX_ACTS = setv("activations", ["relu", "eru"])

# (mutations, the message starts with, it also contains)
BAD = [
    # ranges and choices in search.space
    pytest.param(
        [setv("search.space.lr.low", 0)], "search.space.lr.low:", "must be > 0 when log is true", id="log-low-zero"
    ),
    pytest.param([setv("search.space.lr.low", -1e-3)], "search.space.lr.low:", "> 0", id="log-low-negative"),
    pytest.param([setv("search.space.lr.low", 0.5)], "search.space.lr.low:", "below high", id="low-above-high"),
    pytest.param([setv("search.space.lr.low", 0.3)], "search.space.lr.low:", "below high", id="low-equals-high"),
    pytest.param(
        [setv("search.space.lr", {"low": -1, "high": 0.3})],
        "search.space.lr.low:",
        "greater than 0",
        id="lr-low-negative-linear",
    ),
    pytest.param(
        [setv("search.space.lr.high", 50)], "search.space.lr.high:", "less than or equal to 10", id="lr-high-50"
    ),
    pytest.param([setv("search.space.lr.step", 0.1)], "search.space.lr.step:", "log", id="step-with-log"),
    pytest.param([setv("search.space.lr.log", "maybe")], "search.space.lr.log:", "boolean", id="log-not-bool"),
    pytest.param(
        [setv("search.space.optimizer.choices", ["sgd", "lbfgs"])],
        "search.space.optimizer.choices[1]:",
        "'sgd', 'adam' or 'adamw'",
        id="optimizer-lbfgs",
    ),
    pytest.param(
        [setv("search.space.schedule", {"choices": ["none", "linear"]})],
        "search.space.schedule.choices[1]:",
        "'cosine'",
        id="schedule-linear",
    ),
    pytest.param(
        [setv("search.space.momentum", {"choices": [0.5, 1.0]})],
        "search.space.momentum.choices[1]:",
        "less than 1",
        id="momentum-choice-1",
    ),
    pytest.param(
        [setv("search.space.batch_size", {"low": 16.5, "high": 128})],
        "search.space.batch_size.low:",
        "integer",
        id="batch-size-16.5",
    ),
    pytest.param(
        [setv("search.space.batch_size", {"low": 16, "high": 128, "step": 0})],
        "search.space.batch_size.step:",
        "greater than 0",
        id="step-zero",
    ),
    pytest.param(
        [setv("search.space.batch_size", {"low": 16})],
        "search.space.batch_size:",
        "give low and high",
        id="range-without-high",
    ),
    pytest.param(
        [setv("search.space.optimizer.choices", [])],
        "search.space.optimizer.choices:",
        "must not be empty",
        id="empty-choices",
    ),
    pytest.param(
        [setv("search.space.optimizer.choices", ["sgd", "sgd"])],
        "search.space.optimizer.choices:",
        "must not repeat",
        id="repeated-choices",
    ),
    pytest.param(
        [setv("search.space.batch_size", {"choices": [64], "low": 16, "high": 128})],
        "search.space.batch_size:",
        "not both",
        id="choices-and-range",
    ),
    pytest.param([setv("search.space.lr", 0.1)], "search.space.lr:", "dictionary", id="space-param-not-a-mapping"),
    pytest.param(
        [setv("search.space.lr", {"low": 1e-4, "hgh": 0.3})],
        "search.space.lr.hgh:",
        "unknown key (did you mean 'high'?)",
        id="space-param-unknown-key-hgh",
    ),
    pytest.param(
        [rename("search.space.lr", "learning_rate")],
        "search.space.learning_rate:",
        "cannot be searched",
        id="learning_rate-not-searchable",
    ),
    pytest.param(
        [rename("search.space.lr", "epochs")], "search.space.epochs:", "cannot be searched", id="epochs-not-searchable"
    ),
    # unknown keys
    pytest.param(
        [setv("activation", ["gelu"])],
        "activation:",
        "unknown key (did you mean 'activations'?)",
        id="top-level-activation",
    ),
    pytest.param(
        [setv("serach", {"trials": 1})], "serach:", "unknown key (did you mean 'search'?)", id="top-level-serach"
    ),
    pytest.param(
        [setv("search.trails", 3)], "search.trails:", "unknown key (did you mean 'trials'?)", id="search-trails"
    ),
    pytest.param(
        [setv("repeats.seed", [1])], "repeats.seed:", "unknown key (did you mean 'seeds'?)", id="repeats-seed"
    ),
    pytest.param(
        [setv("compare.refrence", ["relu"])],
        "compare.refrence:",
        "unknown key (did you mean 'reference'?)",
        id="compare-refrence",
    ),
    pytest.param(
        [setv("tasks.0.epoch", 3)], "tasks[0].epoch:", "unknown task field (did you mean 'epochs'?)", id="task-epoch"
    ),
    pytest.param([setv("tasks.0.lr_warmup", 3)], "tasks[0].lr_warmup:", "unknown task field", id="task-unknown-field"),
    # missing required keys
    pytest.param([drop("name")], "name:", "required", id="missing-name"),
    pytest.param([drop("tasks")], "tasks:", "required", id="missing-tasks"),
    pytest.param([drop("activations")], "activations:", "required", id="missing-activations"),
    pytest.param([drop("search")], "search:", "required", id="missing-search"),
    pytest.param([drop("search.trials")], "search.trials:", "required", id="missing-search-trials"),
    pytest.param([drop("tasks.0.epochs")], "tasks[0].epochs:", "required", id="missing-task-epochs"),
    pytest.param([drop("tasks.0.dataset")], "tasks[0].dataset:", "required", id="missing-task-dataset"),
    # tasks
    pytest.param([setv("tasks.0.epochs", 0)], "tasks[0].epochs:", "greater than or equal to 1", id="epochs-zero"),
    pytest.param([setv("tasks.0.epochs", -3)], "tasks[0].epochs:", "greater than or equal to 1", id="epochs-negative"),
    pytest.param([setv("tasks.0.epochs", 2.5)], "tasks[0].epochs:", "integer", id="epochs-fraction"),
    pytest.param(
        [setv("tasks.0.dataset", "imagenet")], "tasks[0].dataset:", "unknown data set 'imagenet'", id="unknown-dataset"
    ),
    pytest.param([setv("tasks.0.model", "resnet")], "tasks[0].model:", "unknown model 'resnet'", id="unknown-model"),
    pytest.param([setv("tasks.0.val_fraction", 2)], "tasks[0].val_fraction:", "less than 1", id="task-val-fraction-2"),
    pytest.param([setv("tasks.0.device", "tpu")], "tasks[0].device:", "auto, cpu, cuda", id="task-device-tpu"),
    pytest.param([setv("tasks.0.lr", 0.1)], "tasks[0].lr:", "set it in one place", id="task-field-also-searched"),
    pytest.param(
        [append("tasks", {"dataset": "digits", "model": "mlp4", "epochs": 3})],
        "tasks:",
        "digits/mlp4 listed more than once",
        id="duplicate-tasks",
    ),
    pytest.param([setv("tasks", [])], "tasks:", "at least one task", id="empty-tasks"),
    pytest.param([setv("tasks", {"dataset": "digits"})], "tasks:", "list", id="tasks-not-a-list"),
    pytest.param([setv("tasks", ["digits/mlp4"])], "tasks[0]:", "dictionary", id="task-not-a-mapping"),
    # activations
    pytest.param(
        [append("activations", "relu")], "activations:", "relu listed more than once", id="duplicate-activation"
    ),
    pytest.param(
        [append("activations", "ERU:2.0")],
        "activations:",
        "eru:2 listed more than once",
        id="duplicate-activation-spelt-differently",
    ),
    pytest.param(
        [append("activations", "swishy")], "activations[4]:", "unknown activation 'swishy'", id="unknown-activation"
    ),
    pytest.param(
        [setv("activations", ["eru:0", "relu"])],
        "activations[0]:",
        "radix must be a finite number > 0",
        id="eru-radix-zero",
    ),
    pytest.param([setv("activations", ["relu", "oru:-1"])], "activations[1]:", "> 0", id="oru-radix-negative"),
    pytest.param(
        [setv("activations", ["relu", "eru:two"])], "activations[1]:", "not a number", id="eru-radix-not-a-number"
    ),
    pytest.param([append("activations", "oru:3>")], "activations[4]:", "oru:R1>R2", id="malformed-schedule"),
    pytest.param([setv("activations", ["relu:2"])], "activations[0]:", "takes no parameter", id="relu-with-parameter"),
    pytest.param([setv("activations", [])], "activations:", "at least one activation", id="empty-activations"),
    pytest.param([setv("activations", "relu")], "activations:", "list", id="activations-not-a-list"),
    pytest.param([setv("activations", [1])], "activations[0]:", "string", id="activation-not-a-string"),
    # repeats
    pytest.param([setv("repeats.seeds", [0, 1, 0])], "repeats.seeds:", "must not repeat", id="repeated-seeds"),
    pytest.param([setv("repeats.seeds", [0, -1])], "repeats.seeds:", ">= 0", id="negative-seed"),
    pytest.param([setv("repeats.seeds", [])], "repeats.seeds:", "at least one seed", id="empty-seeds"),
    # compare
    pytest.param(
        [setv("compare.reference", ["gelu"])],
        "compare.reference[0]:",
        "'gelu' is not one of the activations",
        id="reference-not-in-campaign",
    ),
    pytest.param(
        [setv("compare.reference", ["relu", "eru:3"])],
        "compare.reference[1]:",
        "not one of the activations",
        id="reference-other-radix",
    ),
    # radix range
    pytest.param(
        [setv("search.space.radix", {"low": 1.5, "high": 3})],
        "search.space.radix:",
        "no activation has a free radix",
        id="radix-range-without-free-radix",
    ),
    pytest.param(
        [RADIX_ACTS, setv("search.space.radix", {"low": 0, "high": 3})],
        "search.space.radix.low:",
        "must be > 0",
        id="radix-low-zero",
    ),
    pytest.param(
        [RADIX_ACTS, setv("search.space.radix", {"low": -1, "high": 3})],
        "search.space.radix.low:",
        "must be > 0",
        id="radix-low-negative",
    ),
    pytest.param(
        [RADIX_ACTS, setv("search.space.radix", {"choices": [2, 0]})],
        "search.space.radix.choices[1]:",
        "must be a number > 0",
        id="radix-choice-zero",
    ),
    pytest.param(
        [RADIX_ACTS, setv("search.space.radix", {"choices": [2, "x"]})],
        "search.space.radix.choices[1]:",
        "must be a number > 0",
        id="radix-choice-string",
    ),
    pytest.param(
        [RADIX_ACTS, setv("search.space.radix", {"low": 3, "high": 1.5})],
        "search.space.radix.low:",
        "below high",
        id="radix-low-above-high",
    ),
    # train (fixed for all)
    pytest.param([setv("train", {"lr": 0.1})], "train.lr:", "either fixed or searched", id="train-also-searched"),
    pytest.param([setv("train", {"seed": 1})], "train.seed:", "set per run by bru", id="train-seed"),
    pytest.param([setv("train", {"epochs": 1})], "train.epochs:", "a task field", id="train-epochs"),
    pytest.param([setv("train", {"momentm": 0.5})], "train.momentm:", "did you mean 'momentum'?", id="train-momentm"),
    pytest.param([setv("train", {"momentum": 1.5})], "train.momentum:", "less than 1", id="train-momentum-1.5"),
    pytest.param([setv("train", [1])], "train:", "dictionary", id="train-not-a-mapping"),
    pytest.param(
        [setv("train", {"nesterov": True})],
        "search.space.optimizer.choices[1]:",
        "nesterov needs optimizer sgd",
        id="train-nesterov-vs-adam-choice",
    ),
    # name and search settings
    pytest.param([setv("name", "Quick")], "name:", "lower-case", id="name-upper-case"),
    pytest.param([setv("name", "my run")], "name:", "lower-case", id="name-with-space"),
    pytest.param([setv("name", "")], "name:", "lower-case", id="name-empty"),
    pytest.param([setv("name", "quick\n")], "name:", "lower-case", id="name-ending-in-a-newline"),
    pytest.param([setv("name", 5)], "name:", "string", id="name-not-a-string"),
    pytest.param([setv("search.sampler", "grid")], "search.sampler:", "'tpe' or 'random'", id="sampler-grid"),
    pytest.param(
        [setv("search.pruner", "asha")], "search.pruner:", "'none', 'median' or 'hyperband'", id="pruner-asha"
    ),
    pytest.param([setv("search.trials", 0)], "search.trials:", "greater than or equal to 1", id="trials-zero"),
    pytest.param([setv("search.trials", "many")], "search.trials:", "integer", id="trials-not-a-number"),
    pytest.param([setv("search.seed", -1)], "search.seed:", "greater than or equal to 0", id="search-seed-negative"),
    pytest.param(
        [setv("search.startup_trials", -1)],
        "search.startup_trials:",
        "greater than or equal to 0",
        id="startup-trials-negative",
    ),
    pytest.param([setv("search.space", None)], "search.space:", "dictionary", id="space-null"),
]


@pytest.mark.parametrize(("mutations", "path", "fragment"), BAD)
def test_bad_spec_is_one_line_naming_the_field(mutations: list[Mutation], path: str, fragment: str) -> None:
    message = spec_error(mutated(*mutations))
    assert message.startswith(path + " "), f"{message!r} does not start with {path!r}"
    assert fragment in message, f"{fragment!r} not in {message!r}"


def test_bad_space_parameter_lists_what_can_be_searched() -> None:
    message = spec_error(mutated(rename("search.space.lr", "learning_rate")))
    searchable = message.split("searchable:")[1]
    assert "lr" in [s.strip() for s in searchable.split(",")]


def test_nothing_is_checked_lazily_bad_value_in_second_task_is_refused() -> None:
    tasks = [{"dataset": "digits", "model": "mlp4", "epochs": 2}, {"dataset": "digits", "model": "mlp99", "epochs": 2}]
    message = spec_error(mutated(setv("tasks", tasks)))
    assert message.startswith("tasks[1].model:")


def test_every_choice_is_checked_against_every_task() -> None:
    tasks = [
        {"dataset": "digits", "model": "mlp4", "epochs": 2},
        {"dataset": "digits", "model": "mlp5", "epochs": 2, "nesterov": True},  # needs sgd; choices have adam
    ]
    message = spec_error(mutated(setv("tasks", tasks)))
    assert message == "search.space.optimizer.choices[1]: nesterov needs optimizer sgd with momentum > 0"


def test_bad_spec_through_load_spec_names_the_file_then_the_field(tmp_path: Path) -> None:
    path = write(tmp_path, mutated(setv("search.space.lr.low", 0)))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert one_line(str(info.value)) == f"{path}: search.space.lr.low: must be > 0 when log is true"


def test_spec_error_is_a_config_error_and_a_value_error() -> None:
    assert issubclass(SpecError, ConfigError) and issubclass(SpecError, ValueError)


# --- bugs found while writing these tests, fixed since


@pytest.mark.parametrize(
    ("mutation", "expected"),
    [
        (rename("activations", "activation"), "activation: unknown key (did you mean 'activations'?)"),
        (rename("search.trials", "trails"), "search.trails: unknown key (did you mean 'trials'?)"),
        (rename("search.space.lr.high", "hgh"), "search.space.lr.hgh: unknown key (did you mean 'high'?)"),
        (rename("repeats.seeds", "seed"), "repeats.seed: unknown key (did you mean 'seeds'?)"),
    ],
    ids=[
        "activation-instead-of-activations",
        "trails-instead-of-trials",
        "hgh-instead-of-high",
        "seed-instead-of-seeds",
    ],
)
def test_misspelt_required_key_is_named_with_a_suggestion(mutation: Mutation, expected: str) -> None:
    """The misspelling, not the key it makes missing, is what the message names."""
    assert spec_error(mutated(mutation)) == expected


def test_misspelt_task_epochs_suggests_epochs() -> None:
    message = spec_error(mutated(rename("tasks.0.epochs", "epoch")))
    assert "did you mean 'epochs'?" in message, message


def test_unknown_activation_in_compare_reference_names_the_field() -> None:
    message = spec_error(mutated(setv("compare.reference", ["relu", "swishy"])))
    assert message.startswith("compare.reference[1]: "), message


@pytest.mark.parametrize("key", ["seed", "activation", "data_dir"])
def test_task_field_set_by_bru_says_so(key: str) -> None:
    message = spec_error(mutated(setv(f"tasks.0.{key}", "x" if key != "seed" else 1)))
    assert message.startswith(f"tasks[0].{key}: ")
    assert f"did you mean '{key}'" not in message, message
    assert "set per run by bru" in message, message


def test_key_with_a_newline_still_gives_one_line() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(mutated(setv("search.tr\nials", 2)))
    one_line(str(info.value))


def test_non_string_key_is_not_shown_as_an_index() -> None:
    data = reference_data()
    data["search"][1] = 2
    message = spec_error(data)
    assert not message.startswith("search[1]"), message


@pytest.mark.parametrize("path", ["search.trials", "tasks.0.epochs"], ids=["trials-true", "epochs-true"])
def test_boolean_is_not_a_count(path: str) -> None:
    spec_error(mutated(setv(path, True)))


# --------------------------------------------------------------------------- 4. file-level errors


def _load_error(path: Path | str) -> str:
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert type(info.value) is SpecError
    message = one_line(str(info.value))
    assert message.startswith(f"{path}: "), message
    return message


FILES = [
    pytest.param("", "empty", id="empty-file"),
    pytest.param("# only a comment\n\n", "empty", id="only-a-comment"),
    pytest.param("name: [unclosed\n", "not valid YAML", id="not-yaml-unclosed"),
    pytest.param("name: quick\n  tasks: x\n", "not valid YAML at line 2", id="not-yaml-bad-indent"),
    pytest.param("a: 1\n\tb: 2\n", "not valid YAML", id="not-yaml-tab"),
    pytest.param("- name: quick\n- tasks: []\n", "must be a mapping", id="top-level-list"),
    pytest.param("just words\n", "must be a mapping", id="top-level-string"),
    pytest.param("name: quick\n", "tasks: required", id="only-a-name"),
]


@pytest.mark.parametrize(("text", "fragment"), FILES)
def test_file_level_errors(tmp_path: Path, text: str, fragment: str) -> None:
    assert fragment in _load_error(write(tmp_path, text))


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "missing.yaml"
    message = _load_error(path)
    assert str(path) in message and "no such file" in message


def test_directory_instead_of_a_file(tmp_path: Path) -> None:
    assert "not a file" in _load_error(tmp_path)


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00name: quick\n")
    assert "cannot be read" in _load_error(path)


def test_relative_path_is_named_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "name: quick\n", "relative.yaml")
    monkeypatch.chdir(tmp_path)
    assert _load_error("relative.yaml") == "relative.yaml: tasks: required"


# --------------------------------------------------------------------------- 5. bru check


def test_cli_check_prints_the_protocol(reference_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["check", str(reference_path)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.err == ""
    assert "Campaign quick" in captured.out
    assert "6 trials per activation" in captured.out
    assert "validation split" in captured.out
    assert "seeds [1, 2, 3, 4, 5, 6, 7, 8]" in captured.out
    assert "4 studies, 24 trials, 32 repeat runs." in captured.out


def test_cli_check_radix_campaign(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["check", str(write(tmp_path, RADIX_YAML))])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "for eru only" in captured.out and "fixed as written for oru:3>2" in captured.out


CLI_BAD = [
    pytest.param(
        [setv("search.space.lr.low", 0)], "search.space.lr.low: must be > 0 when log is true", id="log-low-zero"
    ),
    pytest.param(
        [setv("search.space.optimizer.choices", ["sgd", "lbfgs"])],
        "search.space.optimizer.choices[1]:",
        id="optimizer-lbfgs",
    ),
    pytest.param(
        [setv("activation", ["gelu"])],
        "activation: unknown key (did you mean 'activations'?)",
        id="unknown-top-level-key",
    ),
    pytest.param(
        [setv("activations", ["relu", "elu", "eru:2", "oru:3>2", "relu"])],
        "activations: relu listed more than once",
        id="duplicate-activation",
    ),
]


@pytest.mark.parametrize(("mutations", "expected"), CLI_BAD)
def test_cli_check_bad_spec_is_one_error_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mutations: list[Mutation], expected: str
) -> None:
    path = write(tmp_path, mutated(*mutations))
    code = main(["check", str(path)])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"error: {path}: {expected}"), lines[0]


def test_cli_check_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "missing.yaml"
    code = main(["check", str(path)])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err.splitlines() == [f"error: {path}: no such file"]


# --------------------------------------------------------------------------- 6. misspelt keys, all of them


def _leaf_key_paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths to every mapping key whose value is not itself a mapping (lists are walked into)."""
    paths: list[tuple[Any, ...]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, dict):
                paths += _leaf_key_paths(value, (*prefix, key))
            else:
                paths.append((*prefix, key))
                if isinstance(value, list):
                    for i, item in enumerate(value):
                        paths += _leaf_key_paths(item, (*prefix, key, i))
    return paths


def _misspellings() -> list[Any]:
    cases = []
    for path in _leaf_key_paths(reference_data()):
        key = path[-1]
        for typo in sorted({key[:i] + key[i + 1 :] for i in range(len(key))}):
            dotted = ".".join(str(p) for p in path[:-1])
            cases.append(pytest.param(path, typo, id=f"{dotted + '.' if dotted else ''}{key}->{typo or '<empty>'}"))
    return cases


MISSPELLINGS = _misspellings()


def test_misspellings_cover_every_leaf_key() -> None:
    keys = {p.values[0] for p in MISSPELLINGS}
    assert ("name",) in keys and ("tasks", 0, "epochs") in keys and ("search", "space", "lr", "log") in keys
    assert ("compare", "reference") in keys and ("repeats", "seeds") in keys and ("search", "pruner") in keys
    assert len(MISSPELLINGS) > 80


@pytest.mark.parametrize(("path", "typo"), MISSPELLINGS)
def test_a_misspelt_key_is_refused_in_one_line(tmp_path: Path, path: tuple[Any, ...], typo: str) -> None:
    data = reference_data()
    node = data
    for part in path[:-1]:
        node = node[part]
    node[typo] = node.pop(path[-1])
    spec_path = write(tmp_path, data)
    try:
        load_spec(spec_path)
    except SpecError as exc:
        message = one_line(str(exc))
        assert type(exc) is SpecError
        assert message.startswith(f"{spec_path}: ")
        assert "unknown key" in message or "unknown task field" in message or "required" in message, message
    else:
        pytest.fail(f"{'.'.join(map(str, path))} spelt {typo!r} was accepted")


# --------------------------------------------------------------------------- the confirmatory design


def test_design_of_the_reference_spec(reference: CampaignSpec) -> None:
    d = reference.design
    # 1 task x 2 candidates (eru:2, oru:3>2) x 2 references (relu, elu)
    assert (d.family_size, d.tasks, d.candidates, d.references) == (4, 1, 2, 2)
    assert reference.candidates == ["eru:2", "oru:3>2"]
    assert reference.confirmatory_pairs() == [
        (TASK, "eru:2", "relu"), (TASK, "oru:3>2", "relu"), (TASK, "eru:2", "elu"), (TASK, "oru:3>2", "elu"),
    ]  # fmt: skip
    assert d.test == "wilcoxon" and d.alpha == 0.05 and d.seeds == 8
    assert d.min_adjusted_p == pytest.approx(4 * 2 / 2**8)  # Holm's first step on the smallest exact p
    assert d.fewest_seeds == 8 and d.reaches_alpha
    assert reference.primary_metric(TASK) == "test_error"
    assert "confirmatory family of 4 comparisons" in "\n".join(reference.protocol())


def test_seeds_that_cannot_reach_alpha_are_refused_with_the_fewest_that_can() -> None:
    message = spec_error(mutated(setv("repeats.seeds", [1, 2, 3, 4, 5, 6, 7])))
    assert message.startswith("repeats.seeds: 7 seeds cannot reach alpha 0.05 over the 4 confirmatory comparisons")
    assert "smallest Holm-adjusted p is 0.0625" in message
    assert "list at least 8 seeds, or set compare.exploratory: true" in message


def test_the_issue_arithmetic_for_the_old_configs() -> None:
    # quick.yaml with 8 seeds and a campaign-wide family of 60: 60 * 2 / 2^8 = 0.47 (issue 13)
    from bru_core import stats

    assert stats.min_adjusted_p("wilcoxon", 8, 60) == pytest.approx(0.46875)
    assert stats.min_adjusted_p("wilcoxon", 10, 175) == pytest.approx(0.341796875)
    # a lower alpha needs more seeds: 4 * 2 / 2^n <= 0.01 from n = 10
    message = spec_error(mutated(setv("compare", {"reference": ["relu", "elu"], "alpha": 0.01})))
    assert "list at least 10 seeds" in message


def test_exploratory_campaigns_may_have_few_seeds() -> None:
    spec = parse_spec(mutated(setv("repeats.seeds", [1, 2]), setv("compare.exploratory", True)))
    assert spec.design.exploratory and spec.confirmatory_pairs() == []
    assert "Design: exploratory" in "\n".join(spec.protocol())


def test_a_t_test_family_can_always_reach_alpha() -> None:
    spec = parse_spec(mutated(setv("repeats.seeds", [1, 2, 3]), setv("compare.test", "t")))
    assert spec.design.min_adjusted_p == 0.0 and spec.design.test_name == "two-sided paired t-test"


def test_search_seed_among_the_repeat_seeds_is_refused() -> None:
    message = spec_error(mutated(setv("repeats.seeds", [0, 1, 2, 3, 4, 5, 6, 7])))
    assert message.startswith("search.seed: 0 is also one of repeats.seeds")
    assert "e.g. search.seed: 8" in message


def test_a_stored_spec_is_read_back_without_the_design_checks() -> None:
    old = mutated(setv("repeats.seeds", [0, 1]))  # an earlier campaign's record
    with pytest.raises(SpecError):
        parse_spec(old)
    assert parse_spec(old, stored=True).repeats.seeds == [0, 1]


def test_no_candidate_means_no_confirmatory_family() -> None:
    message = spec_error(mutated(setv("compare.reference", ["relu", "elu", "eru:2", "oru:3>2"])))
    assert message.startswith("compare.reference: every activation is a reference")


@pytest.mark.parametrize(
    "primary,expected",
    [
        ("test_los", "compare.primary: unknown metric 'test_los' (did you mean 'test_loss'?)"),
        ("best_val_loss", "compare.primary: best_val_loss is measured on the validation split that chose"),
        ("epochs_to_target", "compare.primary: epochs_to_target is measured on the validation split"),
    ],
)
def test_bad_primary_metric(primary: str, expected: str) -> None:
    assert spec_error(mutated(setv("compare.primary", primary))).startswith(expected)


def test_primary_metric_must_exist_for_every_task() -> None:
    tasks = [{"dataset": "digits", "model": "mlp4", "epochs": 2}, {"dataset": "digits", "model": "sae", "epochs": 2}]
    message = spec_error(mutated(setv("tasks", tasks), setv("compare.primary", "test_error")))
    assert message == "compare.primary: test_error is not measured for digits/sae (a reconstruction task)"
    spec = parse_spec(mutated(setv("tasks", tasks), setv("repeats.seeds", list(range(1, 10)))))
    assert [spec.primary_metric(t.name) for t in spec.tasks] == ["test_error", "test_loss"]
    learning_speed = parse_spec(mutated(setv("compare.primary", "train_loss_auc")))
    assert learning_speed.primary_metric(TASK) == "train_loss_auc"


@pytest.mark.parametrize(
    "mutation,expected",
    [
        (setv("compare.test", "sign"), "compare.test: Input should be 'wilcoxon' or 't'"),
        (setv("compare.alpha", 0), "compare.alpha: Input should be greater than 0"),
        (setv("compare.alpha", 1.5), "compare.alpha: Input should be less than 1"),
        (setv("compare.exploratory", "yes"), "compare.exploratory: Input should be a valid boolean"),
    ],
)
def test_bad_compare_fields(mutation: Mutation, expected: str) -> None:
    assert spec_error(mutated(mutation)) == expected


@pytest.mark.parametrize("config", ["quick", "paper", "smoke"])
def test_shipped_configs_pass_the_design_checks(config: str) -> None:
    spec = load_spec(Path(__file__).resolve().parent.parent / "configs" / f"{config}.yaml")
    assert spec.search.seed not in spec.repeats.seeds
    if config == "smoke":
        assert spec.design.exploratory
    else:
        assert spec.design.reaches_alpha
        assert "|" in spec.labels[-1]  # the paper's step schedule, not the linear ramp


def test_cli_check_json_reports_the_design(reference_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["check", str(reference_path), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(captured.out)
    assert report["family_size"] == 4 and report["test"] == "wilcoxon" and report["seeds"] == 8
    assert report["alpha"] == 0.05 and report["min_adjusted_p"] == pytest.approx(0.03125)
    # 8 seeds and 4 comparisons: far from 80% power at d_z = 1; the fewest that reach it
    assert 0.2 < report["power"] < 0.8 and report["power_any"] >= report["power"] >= report["power_all"]
    assert report["seeds_for_power"] > 8


def test_cli_check_refuses_an_underpowered_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, mutated(setv("repeats.seeds", [1, 2, 3])))
    code = main(["check", str(path)])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert one_line(captured.err.strip()).startswith(f"error: {path}: repeats.seeds: 3 seeds cannot reach alpha")
