"""What counts towards a study's budget, and which trial may run: the project's central
guarantee, that every activation of a task gets the same search.

A study ends with exactly ``search.trials`` trials that reached an outcome of their own:
complete, pruned, or failed on their own account (a non-finite loss, stored as the user
attribute ``failure``). A trial lost to infrastructure (its worker killed) is failed by
Optuna's heartbeat, retried once, and does not count. Trials are admitted in trial-number
order: trial n runs only while fewer than ``budget`` trials numbered below it hold a place
(counted, running, or waiting for its retry), so workers sharing a study on PostgreSQL
cannot overshoot; a trial asked beyond the budget is closed at once as ``excess`` (not
counted, not trained, no MLflow run).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState


class BeyondBudget(Exception):
    """A trial asked after the budget was already taken (by this or another worker)."""


def counts_towards_budget(trial: FrozenTrial) -> bool:
    """An outcome of the trial's own: complete, pruned, or failed on its own account."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and "failure" in trial.user_attrs


def _holds_a_place(trial: FrozenTrial) -> bool:
    """Counts now or may count later (running, or queued for a retry)."""
    if trial.user_attrs.get("excess"):
        return False
    return counts_towards_budget(trial) or trial.state in (TrialState.RUNNING, TrialState.WAITING)


@dataclass
class BudgetState:
    budget: int
    done: int  # trials with an outcome of their own
    active: int  # running or waiting (a retry)
    lost: int  # failed to infrastructure (retried or not)

    @property
    def complete(self) -> bool:
        return self.done >= self.budget


def budget_state(study: optuna.Study, budget: int) -> BudgetState:
    trials = study.get_trials(deepcopy=False)
    done = sum(counts_towards_budget(t) for t in trials)
    active = sum(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials)
    lost = sum(
        t.state == TrialState.FAIL and not counts_towards_budget(t) and not t.user_attrs.get("excess") for t in trials
    )
    return BudgetState(budget, done, active, lost)


def budget_summary(study: optuna.Study, budget: int) -> dict[str, Any]:
    """The counts a finished study reports (its MLflow run, StudyResult)."""
    trials = study.get_trials(deepcopy=False)
    state = budget_state(study, budget)
    return {
        "budget": budget,
        "done": state.done,
        "complete": sum(t.state == TrialState.COMPLETE for t in trials),
        "pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "failed": sum(t.state == TrialState.FAIL and counts_towards_budget(t) for t in trials),
        "lost": state.lost,
    }


def admit(study: optuna.Study, trial: optuna.Trial, budget: int) -> None:
    """Let ``trial`` run, or mark it ``excess`` and raise BeyondBudget when the trials
    numbered below it already hold every place of the budget."""
    ahead = sum(_holds_a_place(t) for t in study.get_trials(deepcopy=False) if t.number < trial.number)
    if ahead >= budget:
        trial.set_user_attr("excess", True)
        raise BeyondBudget(f"trial {trial.number} is beyond the budget of {budget}")
