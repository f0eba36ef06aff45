"""After a service-mode campaign: every store holds what it should (make test-services).

Optuna on PostgreSQL: each study exactly its budget of trials with an outcome. MLflow
server: the campaign's run tree (a campaign run, a study run per study, a trial run per
trial, a repeat run per seed, one registered model per study). Results on PostgreSQL:
evaluations and comparisons of the campaign. Exit 1 with the first difference."""

from __future__ import annotations

import sys

import optuna
from mlflow import MlflowClient

from bru_core.results import ResultsStore
from bru_core.search import counts_towards_budget
from bru_core.settings import get_settings
from bru_core.spec import load_spec
from bru_core.tracking import run_slug


def main(path: str) -> int:
    spec = load_spec(path)
    settings = get_settings()
    problems = []
    assert settings.optuna.startswith("postgresql") and settings.results.startswith("postgresql"), (
        "run with the stack's settings"
    )
    assert settings.tracking.startswith("http"), "run with the stack's settings"
    for task in spec.tasks:
        for activation in spec.labels:
            name = spec.study_name(task.name, activation)
            trials = optuna.load_study(study_name=name, storage=settings.optuna).trials
            done = sum(counts_towards_budget(t) for t in trials)
            if done != spec.search.trials:
                problems.append(f"optuna {name}: {done} trials with an outcome, budget {spec.search.trials}")
    client = MlflowClient(settings.tracking)
    experiment = client.get_experiment_by_name(spec.name)
    roles: dict[str, int] = {}
    for run in client.search_runs([experiment.experiment_id], max_results=5000):
        role = run.data.tags.get("bru.role", "?")
        roles[role] = roles.get(role, 0) + 1
    studies = len(spec.tasks) * len(spec.labels)
    expected = {
        "campaign": 1,
        "study": studies,
        "trial": studies * spec.search.trials,
        "repeat": studies * len(spec.repeats.seeds),
    }
    if roles != expected:
        problems.append(f"mlflow runs by role {roles}, expected {expected}")
    for task in spec.tasks:
        for activation in spec.labels:
            name = run_slug(spec.name, task.name, activation)
            if len(client.search_model_versions(f"name = '{name}'")) != 1:
                problems.append(f"mlflow registry: {name} should have one version")
    with ResultsStore(settings.results) as store:
        evaluations = store.records("evaluations", spec.name)
        comparisons = store.records("comparisons", spec.name)
    if len(evaluations) != studies * len(spec.repeats.seeds):
        problems.append(f"results: {len(evaluations)} evaluations")
    if not comparisons:
        problems.append("results: no comparisons")
    for problem in problems:
        print(f"check_stores: {problem}", file=sys.stderr)
    if not problems:
        print(
            f"check_stores: {spec.name}: Optuna budgets exact, MLflow run tree {roles}, {len(evaluations)} evaluations, {len(comparisons)} comparison rows"
        )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
