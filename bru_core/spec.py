"""Campaign specs: "compare these activations on these tasks", as checked plain data.

A spec is YAML (see configs/). Everything is checked before anything runs or is written;
an error is one line naming the field path and what is wrong, e.g.
``search.space.lr.low: must be > 0 when log is true``, and an unknown key is refused with
the closest valid key suggested.

Fairness is built in: every activation gets the same trial budget, the same search space
and the same fixed settings; the only extra dimension is an activation's own shape
parameter (the radix of an ERU/ORU written without one, when a ``radix`` range is given).

So is the design of the test (docs/statistics.md): ``compare`` declares the confirmatory
family (the primary metric of each task, each candidate against each reference), and a
spec whose repeat seeds could not reach its alpha over that family, or whose search seed
is also a repeat seed, is refused before anything runs.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bru_core import stats
from bru_core.activations import canonical_activation, parse_activation
from bru_core.config import TrainConfig
from bru_core.errors import ConfigError, config_error
from bru_core.models import model_kind

# Training settings a campaign may search or fix for all; the rest define the task.
SEARCHABLE = (
    "lr",
    "momentum",
    "nesterov",
    "weight_decay",
    "batch_size",
    "optimizer",
    "schedule",
    "step_epochs",
    "step_gamma",
)
SHAPE_PARAMETERS = ("radix",)
TASK_FIELDS = ("dataset", "model", "epochs")
NOT_IN_SPEC = ("activation", "seed", "data_dir", "download", "test_every_epoch")  # set per run by bru
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")


class SpecError(ConfigError):
    """A campaign spec is invalid; the message names the field path."""


class _SubKeyError(ValueError):
    """An error about one key inside the model being validated (which cannot know its path)."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(message)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ParamSpec(_Strict):
    """One search dimension: a range (low, high, log, step) or a list of choices."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = Field(None, gt=0)
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _shape(self) -> ParamSpec:
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give either choices or low/high, not both")
            if not self.choices:
                raise _SubKeyError("choices", "must not be empty")
            if len({repr(c) for c in self.choices}) != len(self.choices):
                raise _SubKeyError("choices", "must not repeat")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give low and high (a range) or choices (a list)")
        if self.log and self.low <= 0:
            raise _SubKeyError("low", "must be > 0 when log is true")
        if not self.low < self.high:
            raise _SubKeyError("low", f"must be below high ({self.low} >= {self.high})")
        if self.log and self.step is not None:
            raise _SubKeyError("step", "cannot be combined with log")
        return self

    def values_to_check(self) -> list[tuple[str, Any]]:
        """(path, value) pairs that must each be valid for the parameter."""
        if self.choices is not None:
            return [(f"choices[{i}]", c) for i, c in enumerate(self.choices)]
        return [("low", self.low), ("high", self.high)]


class TaskSpec(BaseModel):
    """dataset x model, trained for ``epochs``; other TrainConfig fields fix task settings."""

    model_config = ConfigDict(extra="allow", frozen=True)

    dataset: str
    model: str
    epochs: int = Field(ge=1, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if key in ("dataset", "model", "epochs"):
                    continue
                if key in NOT_IN_SPEC:
                    raise _SubKeyError(str(key), "cannot be set here (set per run by bru)")
                if key not in TrainConfig.model_fields:
                    valid = tuple(f for f in TrainConfig.model_fields if f not in NOT_IN_SPEC)
                    raise _SubKeyError(str(key), f"unknown task field{_suggest(str(key), valid)}")
        return data

    @property
    def name(self) -> str:
        return f"{self.dataset}/{self.model}"

    @property
    def settings(self) -> dict[str, Any]:
        """Task-level training settings besides dataset, model and epochs."""
        return dict(self.model_extra or {})

    @property
    def objective(self) -> str:
        """classification or reconstruction (the auto-encoder)."""
        return model_kind(self.model).objective


class SearchSpec(_Strict):
    trials: int = Field(ge=1, strict=True)  # per activation, the same for all
    sampler: Literal["tpe", "random"] = "tpe"
    seed: int = Field(0, ge=0, strict=True)
    pruner: Literal["none", "median", "hyperband"] = "median"
    startup_trials: int | None = Field(None, ge=0, strict=True)  # TPE's random start; default min(10, trials // 2)
    space: dict[str, ParamSpec] = Field(default_factory=dict)


class RepeatSpec(_Strict):
    # Twelve seeds, none of them the search's default seed 0: enough for a two-sided exact
    # Wilcoxon to reach 0.05 over a family of up to 102 comparisons.
    seeds: list[StrictInt] = Field(default_factory=lambda: list(range(1, 13)))
    # How many seeds train as one batched model (bru_core.packed): "auto" is every seed of a
    # study in one pack on the CPU, as many as fit on a GPU. How the seeds run, not what they
    # compute (a member follows the unpacked run up to summation order), so it is not part
    # of the campaign's spec digest: a campaign may resume with another pack size.
    pack: Literal["auto"] | int = "auto"

    @field_validator("pack", mode="before")
    @classmethod
    def _pack(cls, pack: Any) -> Any:
        if pack == "auto" or (isinstance(pack, int) and not isinstance(pack, bool) and pack >= 1):
            return pack
        raise ValueError(f"{pack!r}: write auto, or how many seeds train as one model (1 or more)")

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int]) -> list[int]:
        if not seeds:
            raise ValueError("must list at least one seed")
        if any(s < 0 for s in seeds):
            raise ValueError("seeds must be >= 0")
        if len(set(seeds)) != len(seeds):
            raise ValueError("must not repeat a seed")
        return seeds


class CompareSpec(_Strict):
    reference: list[str] | None = None  # default: the activations that are not ERU/ORU
    primary: str | None = None  # the confirmatory metric; default: each task's primary metric
    test: Literal["wilcoxon", "t"] = "wilcoxon"  # the confirmatory test
    alpha: float = Field(stats.ALPHA, gt=0, lt=1)  # family-wise, over the confirmatory family
    exploratory: StrictBool = False  # no confirmatory claim: every comparison is exploratory


@dataclass(frozen=True)
class Design:
    """The confirmatory family of a spec and what its seeds can show (``bru check``)."""

    family_size: int  # tasks x candidates x references
    tasks: int
    candidates: int
    references: int
    test: str  # wilcoxon | t
    alpha: float
    seeds: int
    min_adjusted_p: float  # the smallest Holm-adjusted p any confirmatory comparison can reach
    fewest_seeds: int  # the fewest seeds with which it can reach alpha
    exploratory: bool

    @property
    def reaches_alpha(self) -> bool:
        return self.family_size > 0 and self.min_adjusted_p <= self.alpha

    @property
    def test_name(self) -> str:
        return "two-sided exact Wilcoxon signed-rank" if self.test == "wilcoxon" else "two-sided paired t-test"


class CampaignSpec(_Strict):
    name: str
    description: str = ""
    tasks: list[TaskSpec]
    activations: list[str]
    train: dict[str, Any] = Field(default_factory=dict)  # fixed for every trial and repeat
    search: SearchSpec
    repeats: RepeatSpec = Field(default_factory=RepeatSpec)
    compare: CompareSpec = Field(default_factory=CompareSpec)

    # ------------------------------------------------------------------ checks

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not _NAME.fullmatch(name):
            raise ValueError("must be lower-case letters, digits, '.', '_' or '-', starting with a letter or digit")
        return name

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, tasks: list[TaskSpec]) -> list[TaskSpec]:
        if not tasks:
            raise ValueError("must list at least one task")
        names = [t.name for t in tasks]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"{', '.join(duplicates)} listed more than once")
        return tasks

    @field_validator("activations")
    @classmethod
    def _activations(cls, activations: list[str]) -> list[str]:
        if not activations:
            raise ValueError("must list at least one activation")
        for i, spec in enumerate(activations):
            try:
                parse_activation(spec)
            except ValueError as exc:
                raise _at(f"activations[{i}]", str(exc)) from None
        return [a.strip().lower() for a in activations]

    @model_validator(mode="after")
    def _consistent(self) -> CampaignSpec:
        space = self.search.space
        for key in space:
            if key not in SEARCHABLE + SHAPE_PARAMETERS:
                raise _at(
                    f"search.space.{key}",
                    f"cannot be searched{_suggest(key, SEARCHABLE + SHAPE_PARAMETERS)}; searchable: {', '.join(SEARCHABLE + SHAPE_PARAMETERS)}",
                )
        for key in self.train:
            if key not in SEARCHABLE:
                hint = (
                    " (set per run by bru)"
                    if key in NOT_IN_SPEC
                    else (" (a task field: put it in tasks)" if key in TASK_FIELDS else "")
                )
                raise _at(
                    f"train.{key}",
                    f"cannot be fixed here{hint}{_suggest(key, SEARCHABLE)}; allowed: {', '.join(SEARCHABLE)}",
                )
            if key in space:
                raise _at(f"train.{key}", "also in search.space; a parameter is either fixed or searched")
        if "radix" in space:
            radix = space["radix"]
            if radix.choices is None and radix.low is not None and radix.low <= 0:
                raise _at("search.space.radix.low", "must be > 0")
            for where, value in radix.values_to_check():
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                    raise _at(f"search.space.radix.{where}", f"must be a number > 0, got {value!r}")
            if not self.free_radix_activations:
                raise _at(
                    "search.space.radix", "no activation has a free radix; write eru or oru without ':R' to search it"
                )
        labels = self.labels
        duplicates = sorted({a for a in labels if labels.count(a) > 1})
        if duplicates:
            raise _at("activations", f"{', '.join(duplicates)} listed more than once")
        for i, task in enumerate(self.tasks):
            for key in task.settings:
                if key in NOT_IN_SPEC or key not in TrainConfig.model_fields:
                    raise _at(
                        f"tasks[{i}].{key}", f"unknown task field{_suggest(key, tuple(TrainConfig.model_fields))}"
                    )
                if key in space or key in self.train:
                    raise _at(f"tasks[{i}].{key}", "also set for the whole campaign; set it in one place")
            self._check_values(i, task, space)
        for i, ref in enumerate(self.compare.reference or []):
            try:
                label = _label(ref, self.search.space)
            except ValueError as exc:
                raise _at(f"compare.reference[{i}]", str(exc)) from None
            if label not in labels:
                raise _at(f"compare.reference[{i}]", f"{ref!r} is not one of the activations ({', '.join(labels)})")
        self._check_primary()
        return self

    def _check_primary(self) -> None:
        primary = self.compare.primary
        if primary is None:
            return
        info = stats.METRICS.get(primary)
        if info is None:
            raise _at(
                "compare.primary",
                f"unknown metric {primary!r}{_suggest(primary, tuple(stats.METRICS))}; metrics: {', '.join(stats.METRICS)}",
            )
        if info.validation_based:
            raise _at(
                "compare.primary",
                f"{primary} is measured on the validation split that chose the hyperparameters, so it can only be "
                "exploratory; pick a test-set or training metric",
            )
        for task in self.tasks:
            if primary not in stats.metrics_for(task.objective):
                raise _at("compare.primary", f"{primary} is not measured for {task.name} (a {task.objective} task)")

    @model_validator(mode="after")
    def _design_holds(self, info: ValidationInfo) -> CampaignSpec:
        """The design checks, skipped for a spec read back from an earlier campaign's record
        (its runs exist already; its report says what its design could show)."""
        if (info.context or {}).get("stored"):
            return self
        seeds = self.repeats.seeds
        if self.search.seed in seeds:
            free = next(s for s in range(max(seeds) + 2) if s not in seeds)
            raise _at(
                "search.seed",
                f"{self.search.seed} is also one of repeats.seeds; the trials train with the search seed, so that repeat "
                f"would rerun the trial that won: use a search seed outside the repeat seeds (e.g. search.seed: {free})",
            )
        if self.compare.exploratory:
            return self
        design = self.design
        if design.family_size == 0:
            raise _at(
                "compare.reference",
                "every activation is a reference, so there is no confirmatory comparison: leave the candidates out "
                "of compare.reference, or set compare.exploratory: true",
            )
        if not design.reaches_alpha:
            raise _at(
                "repeats.seeds",
                f"{design.seeds} seeds cannot reach alpha {design.alpha:g} over the {design.family_size} confirmatory "
                f"comparisons (the smallest Holm-adjusted p is {design.min_adjusted_p:.3g} with a two-sided exact "
                f"Wilcoxon test); list at least {design.fewest_seeds} seeds, or set compare.exploratory: true",
            )
        return self

    def _check_values(self, i: int, task: TaskSpec, space: dict[str, ParamSpec]) -> None:
        """Every fixed value, and each end of every range, must make a valid TrainConfig."""
        base = {"dataset": task.dataset, "model": task.model, "epochs": task.epochs, **task.settings, **self.train}
        try:
            TrainConfig.model_validate(base)
        except ValidationError as exc:
            field = str(exc.errors()[0]["loc"][0]) if exc.errors()[0]["loc"] else ""
            prefix = f"tasks[{i}]" if field in TASK_FIELDS or field in task.settings else "train"
            raise config_error(exc, prefix) from None
        for key, param in space.items():
            if key in SHAPE_PARAMETERS:
                continue
            for where, value in param.values_to_check():
                try:
                    TrainConfig.model_validate({**base, key: value})
                except ValidationError as exc:
                    message = exc.errors()[0]["msg"].removeprefix("Value error, ")
                    raise _at(f"search.space.{key}.{where}", message) from None

    # ------------------------------------------------------------------ derived

    @property
    def labels(self) -> list[str]:
        """One name per activation, as studies and runs are named."""
        return [_label(a, self.search.space) for a in self.activations]

    @property
    def candidates(self) -> list[str]:
        """The activations on trial: every one that is not a reference."""
        return [label for label in self.labels if label not in self.references]

    def primary_metric(self, task: str) -> str:
        """The confirmatory metric of a task: compare.primary, or the task's headline metric."""
        return self.compare.primary or stats.primary_metric(self.task(task).objective)

    def confirmatory_pairs(self) -> list[tuple[str, str, str]]:
        """(task, candidate, reference) of the confirmatory family; none if exploratory."""
        if self.compare.exploratory:
            return []
        return [(t.name, a, b) for t in self.tasks for b in self.references for a in self.candidates]

    @property
    def design(self) -> Design:
        refs, candidates = len(self.references), len(self.candidates)
        size = len(self.tasks) * candidates * refs
        test, n, alpha = self.compare.test, len(self.repeats.seeds), self.compare.alpha
        return Design(
            family_size=size, tasks=len(self.tasks), candidates=candidates, references=refs, test=test,
            alpha=alpha, seeds=n, min_adjusted_p=stats.min_adjusted_p(test, n, size),
            fewest_seeds=stats.fewest_seeds(test, size, alpha) if size else 2, exploratory=self.compare.exploratory,
        )  # fmt: skip

    @property
    def free_radix_activations(self) -> list[str]:
        return [a for a in self.activations if _free_radix(a)]

    @property
    def references(self) -> list[str]:
        if self.compare.reference:
            return [_label(r, self.search.space) for r in self.compare.reference]
        plain = [label for label in self.labels if not parse_activation(label.split(":")[0]).is_radix_family]
        return plain or self.labels[:1]

    def task(self, name: str) -> TaskSpec:
        for task in self.tasks:
            if task.name == name:
                return task
        raise SpecError(
            f"task {name!r} is not in campaign {self.name!r}; its tasks: {', '.join(t.name for t in self.tasks)}"
        )

    def activation(self, name: str) -> str:
        """The campaign's label for an activation the user typed (``ERU:2.0`` -> ``eru:2``)."""
        try:
            label = _label(name, self.search.space)
        except ValueError as exc:
            raise SpecError(f"activation: {exc}") from None
        if label not in self.labels:
            raise SpecError(
                f"activation {name!r} is not in campaign {self.name!r}; its activations: {', '.join(self.labels)}"
            )
        return label

    def study_name(self, task: str, activation: str) -> str:
        return f"{self.name}/{task}/{activation}"

    def space_for(self, activation: str) -> dict[str, ParamSpec]:
        """The search space of one activation: the common space, plus the radix for an
        ERU/ORU whose radix is free."""
        common = {k: v for k, v in self.search.space.items() if k not in SHAPE_PARAMETERS}
        if _free_radix(activation) and "radix" in self.search.space:
            return {**common, "radix": self.search.space["radix"]}
        return common

    def train_config(self, task: str, activation: str, params: dict[str, Any], seed: int) -> TrainConfig:
        """The full training config of one trial or repeat."""
        t = self.task(task)
        params = dict(params)
        radix = params.pop("radix", None)
        spec = f"{activation}:{radix:g}" if radix is not None else canonical_activation(activation)
        values = {"dataset": t.dataset, "model": t.model, "epochs": t.epochs, **t.settings, **self.train, **params}
        return TrainConfig.parse({**values, "activation": spec, "seed": seed})

    def protocol(self) -> list[str]:
        """The protocol in plain sentences, for the CLI and the report."""
        lines = [
            f"Campaign {self.name}: {len(self.tasks)} task(s) ({', '.join(t.name for t in self.tasks)}) x "
            f"{len(self.activations)} activation(s) ({', '.join(self.labels)}).",
            f"Search: {self.search.trials} trials per activation and task, the same for all; {self.search.sampler} "
            f"sampler seeded {self.search.seed}; pruner {self.search.pruner}; hyperparameters chosen on the "
            "validation split (validation error, or validation loss for the auto-encoder), never on the test set.",
        ]
        common = {k: v for k, v in self.search.space.items() if k not in SHAPE_PARAMETERS}
        if common:
            lines.append(
                "Search space (every activation): " + "; ".join(f"{k} {_describe(v)}" for k, v in common.items()) + "."
            )
        if "radix" in self.search.space:
            fixed = [
                a
                for a in self.labels
                if parse_activation(a.split(":")[0]).is_radix_family and a not in self.free_radix_activations
            ]
            line = f"Radix searched {_describe(self.search.space['radix'])} for {', '.join(self.free_radix_activations)} only"
            lines.append(line + (f"; fixed as written for {', '.join(fixed)}." if fixed else "."))
        if self.train:
            lines.append("Fixed for all: " + ", ".join(f"{k}={v}" for k, v in self.train.items()) + ".")
        lines.append(
            f"Repeats: the best configuration of each study trained on seeds {self.repeats.seeds}, the same seeds and "
            f"data order for every activation; the search trains with seed {self.search.seed}, which is not one of them. "
            f"Seeds train in packs (repeats.pack: {self.repeats.pack}), one batched model whose members each draw their "
            "own seed's initialisation and batch order and follow the unpacked run up to summation order."
        )
        lines.append(self._design_sentence())
        return lines

    def _design_sentence(self) -> str:
        d = self.design
        if d.exploratory:
            return (
                "Design: exploratory (compare.exploratory): no confirmatory family; every comparison is Holm-adjusted "
                "within its metric and test and labelled exploratory."
            )
        metrics = sorted({self.primary_metric(t.name) for t in self.tasks}, key=list(stats.METRICS).index)
        return (
            f"Design: confirmatory family of {d.family_size} comparisons ({d.tasks} task(s) x {d.candidates} "
            f"candidate(s) {', '.join(self.candidates)} x {d.references} reference(s) {', '.join(self.references)}) "
            f"on {' / '.join(stats.METRICS[m].label for m in metrics)}, {d.test_name} test, Holm-adjusted together "
            f"at alpha {d.alpha:g}; with {d.seeds} seeds the smallest attainable adjusted p is {d.min_adjusted_p:.3g}. "
            "Every other metric, pair and test is exploratory (Holm within its metric and test)."
        )


def _free_radix(activation: str) -> bool:
    text = activation.strip().lower()
    return parse_activation(text).is_radix_family and ":" not in text


def _label(activation: str, space: dict[str, ParamSpec]) -> str:
    """``eru`` stays ``eru`` when its radix is searched; otherwise the canonical spelling."""
    text = activation.strip().lower()
    if _free_radix(text) and "radix" in space:
        return text
    return canonical_activation(text)


def _describe(param: ParamSpec) -> str:
    if param.choices is not None:
        return "in {" + ", ".join(str(c) for c in param.choices) + "}"
    scale = " (log scale)" if param.log else ""
    step = f" step {param.step:g}" if param.step else ""
    return f"in [{param.low:g}, {param.high:g}]{scale}{step}"


def _suggest(key: str, valid: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, valid, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _FieldError(ValueError):
    def __init__(self, path: str, message: str) -> None:
        self.path = path
        super().__init__(f"{path}: {message}")


def _at(path: str, message: str) -> _FieldError:
    return _FieldError(path, message)


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _loc(parts: tuple[Any, ...]) -> str:
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            key = part if _PLAIN_KEY.fullmatch(str(part)) else repr(str(part))  # one line, whatever the key
            text += f".{key}" if text else key
    return text


_FIELDS_AT: dict[str, type[BaseModel]] = {
    "": CampaignSpec,
    "search": SearchSpec,
    "repeats": RepeatSpec,
    "compare": CompareSpec,
}


def _spec_error(exc: ValidationError) -> SpecError:
    # A misspelt key usually also makes a required key "missing": name the misspelling.
    errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
    first = errors[0]
    message = first["msg"].removeprefix("Value error, ")
    context = first.get("ctx", {}).get("error")
    if isinstance(context, _FieldError):
        return SpecError(str(context))
    loc = tuple(first["loc"])
    if isinstance(context, _SubKeyError):
        return SpecError(f"{_loc((*loc, context.key))}: {context}")
    if first["type"] == "invalid_key":  # YAML keys such as 1: or on: (a boolean)
        return SpecError(f"{_loc(loc[:-1])}: key {loc[-1]!r} is not text; quote it or use a valid key name")
    if first["type"] == "extra_forbidden":
        parent = ".".join(str(p) for p in loc[:-1] if not isinstance(p, int))
        model = _FIELDS_AT.get(parent, ParamSpec if parent.startswith("search.space") else None)
        valid = tuple(model.model_fields) if model is not None else ()
        return SpecError(f"{_loc(loc)}: unknown key{_suggest(str(loc[-1]), valid)}")
    if first["type"] == "missing":
        return SpecError(f"{_loc(loc)}: required")
    path = _loc(loc)
    return SpecError(f"{path}: {message}" if path else message)


def parse_spec(data: Any, source: str = "spec", *, stored: bool = False) -> CampaignSpec:
    """Check plain data (parsed YAML) and return the spec, or raise SpecError. ``stored``:
    the spec of a campaign that already ran (its record in MLflow), read back without the
    design checks, which it passed or predates."""
    if data is None:
        raise SpecError(f"{source}: empty; a campaign spec needs at least name, tasks, activations and search")
    if not isinstance(data, dict):
        raise SpecError(
            f"{source}: must be a mapping with name, tasks, activations, search, ... (got {type(data).__name__})"
        )
    try:
        return CampaignSpec.model_validate(data, context={"stored": stored})
    except ValidationError as exc:
        raise _spec_error(exc) from None


def load_spec(path: Path | str) -> CampaignSpec:
    """Read and check a YAML campaign spec; every problem is one SpecError line."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot be read ({exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"{path}: not valid YAML{where}: {problem}") from None
    try:
        return parse_spec(data, str(path))
    except SpecError as exc:
        message = str(exc)
        raise SpecError(message if message.startswith(str(path)) else f"{path}: {message}") from None
