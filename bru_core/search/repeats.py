"""The repeats: the study's best parameters trained once per repeat seed.

The training seed is the repeat seed, so every activation sees the same initialisation
stream and batch order per seed (a paired design); seeds with an outcome (finished, or
diverged: recorded as such, never retrained until it happens not to) are not run again.
The spec keeps the search seed out of the repeat seeds, so no repeat reruns a trial. The
seeds to train go as packs (bru_core.packed: one batched model, each member its own MLflow
run). Once the whole set has an outcome, the best seed's model is registered.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from bru_core.config import TrainConfig
from bru_core.data import Data
from bru_core.errors import BruError, NonFiniteLossError
from bru_core.packed import train_in_packs
from bru_core.search.campaign import record_campaign
from bru_core.search.study import best_trial, open_study
from bru_core.settings import Settings, get_settings
from bru_core.spec import CampaignSpec
from bru_core.tracking import DIVERGED, RunLogger, Tracker, as_final, final_metrics, interrupted, run_slug
from bru_core.training import History, prepare_data, resolve_device


@dataclass
class RepeatResult:
    seed: int
    mlflow_run_id: str
    final: dict[str, float | None]
    reused: bool  # an outcome before: not trained again
    status: str = "finished"  # finished | diverged (an outcome too: the statistics count it as a failure)
    failure: str | None = None


def _repeat_result(run: Any, reused: bool) -> RepeatResult:
    """A repeat run with an outcome (tracking.repeat_outcomes) as a RepeatResult."""
    final = final_metrics(run)
    diverged = run.data.tags.get("bru.state") == DIVERGED
    return RepeatResult(
        int(run.data.tags["bru.seed"]), run.info.run_id, final, reused,
        DIVERGED if diverged else "finished", run.data.tags.get("bru.failure") if diverged else None,
    )  # fmt: skip


def _data_source(config: TrainConfig, settings: Settings) -> str:
    if config.dataset == "digits":
        import sklearn.datasets

        return str(Path(sklearn.datasets.__file__).parent / "data" / "digits.csv.gz")
    return str((config.data_dir or settings.data_path).resolve())


RepeatCallback = Callable[[RepeatResult], None]


def run_repeats(
    spec: CampaignSpec,
    task: str,
    activation: str,
    *,
    settings: Settings | None = None,
    tracker: Tracker | None = None,
    data: Data | None = None,
    on_seed: RepeatCallback | None = None,
    on_epoch: Callable[[int, Any], None] | None = None,
    seeds: list[int] | None = None,
    device: str | None = None,
    pack: int | None = None,
) -> list[RepeatResult]:
    """Train the study's best parameters on every repeat seed (or ``seeds``; seeds with
    an outcome are kept), log each seed's run with its model, and, for the whole set,
    register the best seed's model; the campaign's run is held RUNNING meanwhile
    (Tracker.working_on). The seeds to train go in packs (bru_core.packed) of
    ``pack`` members, else ``repeats.pack`` ("auto": every seed on the CPU, as many as fit
    on a GPU); each member is its own MLflow run all the same. ``device`` overrides the
    training device (the GPU slot a flow task holds)."""
    settings = settings or get_settings()
    activation = spec.activation(activation)
    own_tracker = tracker is None
    tracker = tracker or Tracker(settings)
    try:
        record_campaign(tracker, spec)
        with tracker.working_on(spec.name):
            study = open_study(spec, task, activation, settings)
            best = _best_or_refuse(study)
            params = dict(best.params)
            wanted = seeds if seeds is not None else spec.repeats.seeds
            outcomes = _kept(tracker.repeat_runs(spec.name, study.study_name), wanted, on_seed)
            configs = [
                _repeat_config(spec, task, activation, params, seed, device) for seed in wanted if seed not in outcomes
            ]
            if configs:
                if data is None:
                    data = prepare_data(configs[0], resolve_device(configs[0].device))
                size = pack if pack is not None else spec.repeats.pack
                repeats = _PackOfRepeats(
                    spec, task, activation, study.study_name, params, best.number, tracker, settings
                )
                for result in repeats.train(configs, data, None if size == "auto" else size, on_epoch):
                    outcomes[result.seed] = result
                    if on_seed is not None:
                        on_seed(result)
            results = [outcomes[seed] for seed in wanted]
            if seeds is None:  # the whole set: now the best seed can be chosen
                _register_best(spec, task, activation, results, tracker)
            tracker.flush()
            return results
    finally:
        if own_tracker:
            tracker.close()


def _best_or_refuse(study: optuna.Study) -> FrozenTrial:
    best = best_trial(study)
    if best is None:
        raise BruError(f"study {study.study_name} has no completed trial yet: run the search before the repeats")
    return best


def _kept(finished: dict[int, Any], wanted: list[int], on_seed: RepeatCallback | None) -> dict[int, RepeatResult]:
    """The wanted seeds that have an outcome (finished, or diverged: either is the outcome of
    its seed), not to be trained again."""
    kept: dict[int, RepeatResult] = {}
    for seed in wanted:
        if seed in finished:
            kept[seed] = _repeat_result(finished[seed], reused=True)
            if on_seed is not None:
                on_seed(kept[seed])
    return kept


def _repeat_config(
    spec: CampaignSpec, task: str, activation: str, params: dict[str, Any], seed: int, device: str | None
) -> TrainConfig:
    update: dict[str, Any] = {"test_every_epoch": True}
    if device is not None:
        update["device"] = device
    return spec.train_config(task, activation, params, seed=seed).model_copy(update=update)


@dataclass
class _PackOfRepeats:
    """Repeat seeds trained as packs, each member its own MLflow repeat run: started
    together, per-epoch metrics as the pack goes, a diverged member closed FAILED
    (``bru.state=diverged``) when it leaves the pack, a finished one closed with its final
    metrics, its share of the pack's seconds and its own unpacked model."""

    spec: CampaignSpec
    task: str
    activation: str
    study_name: str
    params: dict[str, Any]
    best_trial: int
    tracker: Tracker
    settings: Settings

    def train(
        self, configs: list[TrainConfig], data: Data, pack: int | None, on_epoch: Callable[[int, Any], None] | None
    ) -> list[RepeatResult]:
        config = configs[0]
        runs = {c.seed: self._start(c) for c in configs}
        closed: dict[int, RepeatResult] = {}
        started = time.perf_counter()

        def log_epoch(seed: int, record: Any) -> None:
            runs[seed].log_epoch(record, lr=config.schedule != "none")
            if on_epoch is not None:
                on_epoch(seed, record)

        def diverged(seed: int, exc: NonFiniteLossError) -> None:
            # Divergence is what this configuration does on this seed: an outcome, recorded
            # and counted (as the worst one), not an error that stops the others or a gap
            # that leaves the activation judged on its survivors.
            run = runs[seed]
            run.log_metrics({"seconds": (time.perf_counter() - started) / len(configs)})
            run.end("FAILED", {"bru.state": DIVERGED, "bru.failure": str(exc)})
            self.tracker.flush()
            closed[seed] = RepeatResult(seed, run.run_id, {}, reused=False, status=DIVERGED, failure=str(exc))

        try:
            packed = train_in_packs(configs, pack, on_epoch=log_epoch, data=data, on_diverged=diverged)
            for member in packed:
                if member.finished:
                    closed[member.seed] = self._finish(runs[member.seed], member.history, data, config)
        except BaseException as exc:
            for seed, run in runs.items():
                if seed not in closed:
                    run.end("FAILED", {"bru.failure": interrupted(exc)})
            raise
        return [closed[c.seed] for c in configs]

    def _start(self, config: TrainConfig) -> RunLogger:
        run = self.tracker.start_repeat(
            self.spec.name, self.task, self.activation, self.study_name, config.seed,
            {**self.params, "activation": config.activation, "epochs": config.epochs, "seed": config.seed},
        )  # fmt: skip
        run.set_tags({"bru.best_trial": self.best_trial})
        return run

    def _finish(self, run: RunLogger, history: History, data: Data, config: TrainConfig) -> RepeatResult:
        run.set_tags({"bru.pack_size": history.pack_size})
        run.log_metrics(as_final(history.final), step=config.epochs)
        run.log_metrics({"seconds": history.seconds, "n_parameters": history.n_parameters})
        run.flush()
        self.tracker.flush()
        example = data.normalise(data.test.images[:2]).cpu().numpy()
        self.tracker.log_dataset(run.run_id, data, _data_source(config, self.settings))
        self.tracker.log_environment(run.run_id, history.device)
        model_uri = self.tracker.log_model(run.run_id, history.model, example)
        run.end("FINISHED", {"bru.model_uri": model_uri})
        return RepeatResult(history.config["seed"], run.run_id, dict(history.final), reused=False)


def register_best_model(
    spec: CampaignSpec, task: str, activation: str, *, settings: Settings | None = None, tracker: Tracker | None = None
) -> None:
    """Register the best seed's model once every repeat seed has finished (a flow runs the
    seeds as separate tasks, then calls this)."""
    settings = settings or get_settings()
    activation = spec.activation(activation)
    own = tracker is None
    tracker = tracker or Tracker(settings)
    try:
        finished = tracker.repeat_runs(spec.name, spec.study_name(task, activation))
        results = [_repeat_result(run, reused=True) for seed, run in finished.items() if seed in spec.repeats.seeds]
        if results:
            _register_best(spec, task, activation, results, tracker)
    finally:
        if own:
            tracker.close()


def _register_best(
    spec: CampaignSpec, task: str, activation: str, results: list[RepeatResult], tracker: Tracker
) -> None:
    """Register the model of the seed with the best validation metric (never the test set);
    a diverged seed has no model."""
    metric = spec.validation_metric(task)
    results = [r for r in results if r.status != DIVERGED]
    if not results:
        return

    def key(r: RepeatResult) -> tuple[float, float, int]:
        value = r.final.get(metric)
        loss = r.final.get("val_loss")
        return (value if value is not None else math.inf, loss if loss is not None else math.inf, r.seed)

    best = min(results, key=key)
    run = tracker.client.get_run(best.mlflow_run_id)
    model_uri = run.data.tags.get("bru.model_uri")
    if model_uri:
        tracker.register(run_slug(spec.name, task, activation), model_uri, best.mlflow_run_id)
