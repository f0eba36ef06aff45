"""Where every study of a campaign stands, read from the stores, for the progress displays
of runs happening in this process or on workers."""

from __future__ import annotations

from dataclasses import dataclass

import optuna

from bru_core.search.budget import budget_state
from bru_core.search.storage import open_storage, quiet_optuna
from bru_core.search.study import best_trial
from bru_core.settings import Settings, get_settings
from bru_core.spec import CampaignSpec
from bru_core.tracking import Tracker


@dataclass
class StudyStatus:
    task: str
    activation: str
    budget: int
    done: int
    best_value: float | None
    seeds: int
    seeds_done: int


def campaign_status(
    spec: CampaignSpec, settings: Settings | None = None, tracker: Tracker | None = None
) -> list[StudyStatus]:
    """Where every study of a campaign stands, read from the stores (for progress displays
    of runs happening in this process or on workers)."""
    settings = settings or get_settings()
    own = tracker is None
    tracker = tracker or Tracker(settings)
    rows = []
    try:
        store = open_storage(settings)
        names = set(optuna.get_all_study_names(storage=store))
        repeats = _repeats_by_study(spec, tracker)
        for t in spec.tasks:
            for a in spec.labels:
                name = spec.study_name(t.name, a)
                done, best = 0, None
                if name in names:
                    with quiet_optuna():
                        study = optuna.load_study(study_name=name, storage=store)
                    done = budget_state(study, spec.search.trials).done
                    trial = best_trial(study)
                    best = trial.value if trial else None
                rows.append(
                    StudyStatus(
                        t.name, a, spec.search.trials, done, best, len(spec.repeats.seeds), repeats.get(name, 0)
                    )
                )
    finally:
        if own:
            tracker.close()
    return rows


def _repeats_by_study(spec: CampaignSpec, tracker: Tracker) -> dict[str, int]:
    """How many repeat seeds of each study have an outcome."""
    repeats: dict[str, int] = {}
    if tracker.client.get_experiment_by_name(spec.name) is not None:
        for run in tracker.repeat_outcomes(spec.name):
            study = run.data.tags.get("bru.study", "")
            repeats[study] = repeats.get(study, 0) + 1
    return repeats
