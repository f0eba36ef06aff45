"""The checks that need the whole campaign spec (CampaignSpec's validators call them): a
name that can name studies, no key in two places, values that make a valid training
config at every end of every range, references and a primary metric that exist, and a
design whose seeds can reach its alpha."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from pydantic import ValidationError

from bru_core import stats
from bru_core.activations import parse_activation
from bru_core.config import TrainConfig
from bru_core.errors import config_error
from bru_core.spec.errors import FieldError, suggest
from bru_core.spec.labels import label_of
from bru_core.spec.parts import NOT_IN_SPEC, SEARCHABLE, SHAPE_PARAMETERS, TASK_FIELDS, ParamSpec, TaskSpec

if TYPE_CHECKING:
    from bru_core.spec.campaign import CampaignSpec

_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError("must be lower-case letters, digits, '.', '_' or '-', starting with a letter or digit")
    return name


def check_tasks(tasks: list[TaskSpec]) -> list[TaskSpec]:
    if not tasks:
        raise ValueError("must list at least one task")
    names = [t.name for t in tasks]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{', '.join(duplicates)} listed more than once")
    return tasks


def check_activations(activations: list[str]) -> list[str]:
    """Each activation must parse; returned as written, trimmed and lower-case."""
    if not activations:
        raise ValueError("must list at least one activation")
    for i, spec in enumerate(activations):
        try:
            parse_activation(spec)
        except ValueError as exc:
            raise FieldError(f"activations[{i}]", str(exc)) from None
    return [a.strip().lower() for a in activations]


def check_consistent(spec: CampaignSpec) -> None:
    """The parts agree: searched and fixed keys are allowed and set once, each activation
    and reference is named once, every task's values make a valid config."""
    _check_space_and_train(spec)
    _check_radix(spec)
    labels = spec.labels
    duplicates = sorted({a for a in labels if labels.count(a) > 1})
    if duplicates:
        raise FieldError("activations", f"{', '.join(duplicates)} listed more than once")
    for i, task in enumerate(spec.tasks):
        for key in task.settings:
            if key in NOT_IN_SPEC or key not in TrainConfig.model_fields:
                raise FieldError(
                    f"tasks[{i}].{key}", f"unknown task field{suggest(key, tuple(TrainConfig.model_fields))}"
                )
            if key in spec.search.space or key in spec.train:
                raise FieldError(f"tasks[{i}].{key}", "also set for the whole campaign; set it in one place")
        _check_values(spec, i, task)
    for i, ref in enumerate(spec.compare.reference or []):
        try:
            label = label_of(ref, spec.search.space)
        except ValueError as exc:
            raise FieldError(f"compare.reference[{i}]", str(exc)) from None
        if label not in labels:
            raise FieldError(f"compare.reference[{i}]", f"{ref!r} is not one of the activations ({', '.join(labels)})")
    _check_primary(spec)


def _check_space_and_train(spec: CampaignSpec) -> None:
    space = spec.search.space
    searchable = SEARCHABLE + SHAPE_PARAMETERS
    for key in space:
        if key not in searchable:
            raise FieldError(
                f"search.space.{key}",
                f"cannot be searched{suggest(key, searchable)}; searchable: {', '.join(searchable)}",
            )
    for key in spec.train:
        if key not in SEARCHABLE:
            hint = (
                " (set per run by bru)"
                if key in NOT_IN_SPEC
                else (" (a task field: put it in tasks)" if key in TASK_FIELDS else "")
            )
            raise FieldError(
                f"train.{key}",
                f"cannot be fixed here{hint}{suggest(key, SEARCHABLE)}; allowed: {', '.join(SEARCHABLE)}",
            )
        if key in space:
            raise FieldError(f"train.{key}", "also in search.space; a parameter is either fixed or searched")


def _check_radix(spec: CampaignSpec) -> None:
    radix = spec.search.space.get("radix")
    if radix is None:
        return
    if radix.choices is None and radix.low is not None and radix.low <= 0:
        raise FieldError("search.space.radix.low", "must be > 0")
    for where, value in radix.values_to_check():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise FieldError(f"search.space.radix.{where}", f"must be a number > 0, got {value!r}")
    if not spec.free_radix_activations:
        raise FieldError(
            "search.space.radix", "no activation has a free radix; write eru or oru without ':R' to search it"
        )


def _check_values(spec: CampaignSpec, i: int, task: TaskSpec) -> None:
    """Every fixed value, and each end of every range, must make a valid TrainConfig."""
    base = {"dataset": task.dataset, "model": task.model, "epochs": task.epochs, **task.settings, **spec.train}
    try:
        TrainConfig.model_validate(base)
    except ValidationError as exc:
        field = str(exc.errors()[0]["loc"][0]) if exc.errors()[0]["loc"] else ""
        prefix = f"tasks[{i}]" if field in TASK_FIELDS or field in task.settings else "train"
        raise config_error(exc, prefix) from None
    space: dict[str, ParamSpec] = spec.search.space
    for key, param in space.items():
        if key in SHAPE_PARAMETERS:
            continue
        for where, value in param.values_to_check():
            try:
                TrainConfig.model_validate({**base, key: value})
            except ValidationError as exc:
                message = exc.errors()[0]["msg"].removeprefix("Value error, ")
                raise FieldError(f"search.space.{key}.{where}", message) from None


def _check_primary(spec: CampaignSpec) -> None:
    primary = spec.compare.primary
    if primary is None:
        return
    info = stats.METRICS.get(primary)
    if info is None:
        raise FieldError(
            "compare.primary",
            f"unknown metric {primary!r}{suggest(primary, tuple(stats.METRICS))}; metrics: {', '.join(stats.METRICS)}",
        )
    if info.validation_based:
        raise FieldError(
            "compare.primary",
            f"{primary} is measured on the validation split that chose the hyperparameters, so it can only be "
            "exploratory; pick a test-set or training metric",
        )
    for task in spec.tasks:
        if primary not in stats.metrics_for(task.objective):
            raise FieldError("compare.primary", f"{primary} is not measured for {task.name} (a {task.objective} task)")


def check_design(spec: CampaignSpec) -> None:
    """The search seed is not a repeat seed, and (unless exploratory) the confirmatory
    family exists and its seeds can reach its alpha."""
    seeds = spec.repeats.seeds
    if spec.search.seed in seeds:
        free = next(s for s in range(max(seeds) + 2) if s not in seeds)
        raise FieldError(
            "search.seed",
            f"{spec.search.seed} is also one of repeats.seeds; the trials train with the search seed, so that repeat "
            f"would rerun the trial that won: use a search seed outside the repeat seeds (e.g. search.seed: {free})",
        )
    if spec.compare.exploratory:
        return
    design = spec.design
    if design.family_size == 0:
        raise FieldError(
            "compare.reference",
            "every activation is a reference, so there is no confirmatory comparison: leave the candidates out "
            "of compare.reference, or set compare.exploratory: true",
        )
    if not design.reaches_alpha:
        raise FieldError(
            "repeats.seeds",
            f"{design.seeds} seeds cannot reach alpha {design.alpha:g} over the {design.family_size} confirmatory "
            f"comparisons (the smallest Holm-adjusted p is {design.min_adjusted_p:.3g} with a two-sided exact "
            f"Wilcoxon test); list at least {design.fewest_seeds} seeds, or set compare.exploratory: true",
        )
