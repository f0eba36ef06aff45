"""The search: one Optuna study per task x activation with the same budget for every
activation, then the best configuration repeated on every repeat seed.

- ``budget``: what counts towards the budget and which trial may run (the guarantee);
- ``storage``: Optuna's storage, its failures and noise, and the check of every store;
- ``campaign``: the campaign's own MLflow run around the studies and repeats;
- ``study``: sampler, pruner, the objective of one trial, the study session, ``run_study``;
- ``repeats``: ``run_repeats`` in packs, and the best seed's model registered;
- ``status``: where every study of a campaign stands.

These are plain functions (no Prefect): the flows and ``bru search`` call them, by the
names below.
"""

from bru_core.search.budget import BudgetState, budget_state, counts_towards_budget
from bru_core.search.campaign import prepare_campaign, working_on_campaign
from bru_core.search.repeats import RepeatCallback, RepeatResult, register_best_model, run_repeats
from bru_core.search.status import StudyStatus, campaign_status
from bru_core.search.storage import check_stores, open_storage
from bru_core.search.study import (
    EqualBudgetHyperband,
    StudyResult,
    StudySession,
    TrialCallback,
    TrialOutcome,
    open_study,
    run_study,
    suggest,
)

__all__ = [
    "BudgetState",
    "EqualBudgetHyperband",
    "RepeatCallback",
    "RepeatResult",
    "StudyResult",
    "StudySession",
    "StudyStatus",
    "TrialCallback",
    "TrialOutcome",
    "budget_state",
    "campaign_status",
    "check_stores",
    "counts_towards_budget",
    "open_storage",
    "open_study",
    "prepare_campaign",
    "register_best_model",
    "run_repeats",
    "run_study",
    "suggest",
    "working_on_campaign",
]
