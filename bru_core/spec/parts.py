"""The parts of a campaign spec: the tasks, the search, the repeats and the comparison,
each checked on its own; what needs the whole spec is in bru_core.spec.checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator, model_validator

from bru_core import stats
from bru_core.config import TrainConfig
from bru_core.models import model_kind
from bru_core.spec.errors import SubKeyError, suggest

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


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ParamSpec(Strict):
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
                raise SubKeyError("choices", "must not be empty")
            if len({repr(c) for c in self.choices}) != len(self.choices):
                raise SubKeyError("choices", "must not repeat")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give low and high (a range) or choices (a list)")
        if self.log and self.low <= 0:
            raise SubKeyError("low", "must be > 0 when log is true")
        if not self.low < self.high:
            raise SubKeyError("low", f"must be below high ({self.low} >= {self.high})")
        if self.log and self.step is not None:
            raise SubKeyError("step", "cannot be combined with log")
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
                    raise SubKeyError(str(key), "cannot be set here (set per run by bru)")
                if key not in TrainConfig.model_fields:
                    valid = tuple(f for f in TrainConfig.model_fields if f not in NOT_IN_SPEC)
                    raise SubKeyError(str(key), f"unknown task field{suggest(str(key), valid)}")
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


class SearchSpec(Strict):
    trials: int = Field(ge=1, strict=True)  # per activation, the same for all
    sampler: Literal["tpe", "random"] = "tpe"
    seed: int = Field(0, ge=0, strict=True)
    pruner: Literal["none", "median", "hyperband"] = "median"
    startup_trials: int | None = Field(None, ge=0, strict=True)  # TPE's random start; default min(10, trials // 2)
    space: dict[str, ParamSpec] = Field(default_factory=dict)


class RepeatSpec(Strict):
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


class CompareSpec(Strict):
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
