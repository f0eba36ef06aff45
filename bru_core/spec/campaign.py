"""The campaign spec as a whole: its parts, checked together (bru_core.spec.checks), and
what follows from them: labels, references and candidates, the confirmatory design, each
run's training config and the protocol in plain sentences."""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationInfo, field_validator, model_validator

from bru_core import stats
from bru_core.activations import canonical_activation, parse_activation
from bru_core.config import TrainConfig
from bru_core.spec import checks
from bru_core.spec.errors import SpecError
from bru_core.spec.labels import free_radix, label_of
from bru_core.spec.parts import (
    SHAPE_PARAMETERS,
    CompareSpec,
    Design,
    ParamSpec,
    RepeatSpec,
    SearchSpec,
    Strict,
    TaskSpec,
)


class CampaignSpec(Strict):
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
        return checks.check_name(name)

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, tasks: list[TaskSpec]) -> list[TaskSpec]:
        return checks.check_tasks(tasks)

    @field_validator("activations")
    @classmethod
    def _activations(cls, activations: list[str]) -> list[str]:
        return checks.check_activations(activations)

    @model_validator(mode="after")
    def _consistent(self) -> CampaignSpec:
        checks.check_consistent(self)
        return self

    @model_validator(mode="after")
    def _design_holds(self, info: ValidationInfo) -> CampaignSpec:
        """The design checks, skipped for a spec read back from an earlier campaign's record
        (its runs exist already; its report says what its design could show)."""
        if not (info.context or {}).get("stored"):
            checks.check_design(self)
        return self

    # ------------------------------------------------------------------ derived

    @property
    def labels(self) -> list[str]:
        """One name per activation, as studies and runs are named."""
        return [label_of(a, self.search.space) for a in self.activations]

    @property
    def candidates(self) -> list[str]:
        """The activations on trial: every one that is not a reference."""
        return [label for label in self.labels if label not in self.references]

    def primary_metric(self, task: str) -> str:
        """The confirmatory metric of a task: compare.primary, or the task's headline metric."""
        return self.compare.primary or stats.primary_metric(self.task(task).objective)

    def validation_metric(self, task: str) -> str:
        """The metric that chooses a task's hyperparameters (its studies' objective), picks
        the seed whose model is registered, and defines epochs-to-target; never a test metric."""
        return stats.validation_metric(self.task(task).objective)

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
        return [a for a in self.activations if free_radix(a)]

    @property
    def references(self) -> list[str]:
        if self.compare.reference:
            return [label_of(r, self.search.space) for r in self.compare.reference]
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
            label = label_of(name, self.search.space)
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
        if free_radix(activation) and "radix" in self.search.space:
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


def _describe(param: ParamSpec) -> str:
    if param.choices is not None:
        return "in {" + ", ".join(str(c) for c in param.choices) + "}"
    scale = " (log scale)" if param.log else ""
    step = f" step {param.step:g}" if param.step else ""
    return f"in [{param.low:g}, {param.high:g}]{scale}{step}"
