"""What a campaign left in its stores: Optuna trials, MLflow runs, results rows."""

from __future__ import annotations

from pathlib import Path

import optuna
from mlflow import MlflowClient
from mlflow.entities import Run

from bru_core.results import ResultsStore
from bru_core.search import counts_towards_budget
from bru_core.settings import get_settings

# What configs/smoke.yaml leaves behind (a subset of store_counts)
EXPECTED_SMOKE = {
    "trials smoke/digits/mlp4/relu": 3,
    "trials smoke/digits/mlp4/eru:2": 3,
    "runs campaign": 1,
    "runs study": 2,
    "runs trial": 6,
    "runs repeat": 4,
    "model versions": 2,
    "rows evaluations": 4,
}


def campaign_runs(tracking: str, campaign: str, where: str = "") -> list[Run]:
    """The MLflow runs of the campaign's experiment (up to 1000), those matching ``where`` if given."""
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name(campaign)
    return client.search_runs([experiment.experiment_id], where, max_results=1000)


def store_counts(home: Path, campaign: str = "smoke") -> dict[str, int]:
    """What the stores hold: trials with an outcome, MLflow runs by role, results rows."""
    settings = get_settings(home=home)
    counts: dict[str, int] = {}
    for name in optuna.get_all_study_names(storage=settings.optuna):
        trials = optuna.load_study(study_name=name, storage=settings.optuna).trials
        counts[f"trials {name}"] = sum(counts_towards_budget(t) for t in trials)
        counts[f"all trials {name}"] = len(trials)
    for run in campaign_runs(settings.tracking, campaign):
        role = run.data.tags["bru.role"]
        counts[f"runs {role}"] = counts.get(f"runs {role}", 0) + 1
    counts["model versions"] = len(MlflowClient(settings.tracking).search_model_versions())
    with ResultsStore(settings.results) as store:
        for what in ("evaluations", "comparisons", "summary"):
            counts[f"rows {what}"] = len(store.records(what, campaign))
    return counts
