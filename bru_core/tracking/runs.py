"""The run tree: one experiment per campaign, in it a run per study, a child run per trial
and a run per repeat seed, each found again by its tags (``bru.role``, ``bru.study``, ...)
or created; and ``RunLogger``, one run being written, its metrics buffered and written in
batches by the tracker."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, Run, RunTag

from bru_core.settings import shown_url
from bru_core.tracking.provenance import source_tags
from bru_core.tracking.store import TrackingError, quote

if TYPE_CHECKING:
    from bru_core.tracking.tracker import Tracker

FLUSH_SECONDS = 5.0
ROLE = "bru.role"
DIVERGED = "diverged"  # bru.state of a repeat whose training diverged: FAILED in MLflow, an outcome for bru
# What an experiment is for, in MLflow 3's UI: its kind selector shows "model training".
# MLflow's Python (3.17) has no name for this tag or its values: these are the UI's (its
# ExperimentKind: genai_development, custom_model_development).
EXPERIMENT_KIND = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
# The UI's view: MLflow 3.17's UI opens every experiment in its GenAI view (an "Overview" of
# traces and token usage) unless the address, or the browser's last choice, asks for the
# "Model training" view, whatever the kind tag says (seen in headless Chromium). So every
# link bru prints asks for it.
MODEL_TRAINING_VIEW = "machine_learning"


def runs_page(ui: str, experiment_id: str) -> str:
    """The address of an experiment's runs in the MLflow UI at ``ui``."""
    return f"{ui.rstrip('/')}/#/experiments/{experiment_id}?workflowType={MODEL_TRAINING_VIEW}"


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class _Buffer:
    metrics: list[Metric]
    params: list[Param]
    tags: list[RunTag]

    def take(self) -> tuple[list[Metric], list[Param], list[RunTag]]:
        taken = (self.metrics, self.params, self.tags)
        self.metrics, self.params, self.tags = [], [], []
        return taken

    def __bool__(self) -> bool:
        return bool(self.metrics or self.params or self.tags)


class RunLogger:
    """One MLflow run being written: buffered metrics, flushed in the background."""

    def __init__(self, tracker: Tracker, run_id: str) -> None:
        self.tracker, self.run_id = tracker, run_id
        self._buffer = _Buffer([], [], [])
        self._last_flush = time.monotonic()
        self.ended = False

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._buffer.params += [Param(k, str(v)) for k, v in params.items()]

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._buffer.tags += [RunTag(k, str(v)) for k, v in tags.items()]

    def log_metrics(self, metrics: Mapping[str, float | None], step: int = 0) -> None:
        stamp = _now_ms()
        self._buffer.metrics += [Metric(k, float(v), stamp, step) for k, v in metrics.items() if v is not None]
        if time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            self.flush()

    def log_epoch(self, record: Any, lr: bool = False) -> None:
        """An EpochRecord as metrics at step = epoch (None values, such as the test metrics
        of a search trial, are left out; the learning rate only when asked, i.e. when a
        schedule changes it: every metric row costs the store CPU time)."""
        metrics = {
            "train_loss": record.train_loss,
            "train_error": record.train_error,
            "val_loss": record.val_loss,
            "val_error": record.val_error,
            "test_loss": record.test_loss,
            "test_error": record.test_error,
            "epoch_seconds": record.seconds,
        }
        if lr:
            metrics["lr"] = record.lr
        self.log_metrics(metrics, step=record.epoch)

    def flush(self) -> None:
        if self._buffer:
            metrics, params, tags = self._buffer.take()
            self.tracker._submit(self.tracker._write_batch, self.run_id, metrics, params, tags)
        self._last_flush = time.monotonic()

    def end(self, status: str = "FINISHED", tags: Mapping[str, Any] | None = None) -> None:
        """Write what is buffered, then mark the run FINISHED or FAILED (in the background)."""
        if self.ended:
            return
        if tags:
            self.set_tags(tags)
        self.flush()
        self.tracker._submit(self.tracker.client.set_terminated, self.run_id, status)
        self.ended = True


def interrupted(exc: BaseException) -> str:
    """The ``bru.failure`` of a run cut short by an exception or an interrupt."""
    return f"interrupted ({type(exc).__name__}: {exc})"[:500]


FINAL = "final_"  # prefix of a run's final metrics (the epoch-by-epoch ones have none)


def as_final(values: dict[str, float]) -> dict[str, float]:
    """Final metrics as they are logged: ``final_<name>``."""
    return {f"{FINAL}{name}": value for name, value in values.items()}


def final_metrics(run: Any) -> dict[str, float]:
    """A run's final metrics, by name without the prefix."""
    return {k.removeprefix(FINAL): v for k, v in run.data.metrics.items() if k.startswith(FINAL)}


class RunTree:
    """The studies, trials and repeats of a campaign's experiment: part of ``Tracker``,
    which gives it the client and the store's URI."""

    client: MlflowClient
    uri: str
    artifact_location: str | None
    _experiments: dict[str, str]  # campaign -> experiment id, once looked up

    def experiment_id(self, campaign: str) -> str:
        """The campaign's experiment, created if need be, marked as model training
        (``EXPERIMENT_KIND``); one made by an older bru is marked when first used here."""
        if campaign in self._experiments:
            return self._experiments[campaign]
        experiment = self.client.get_experiment_by_name(campaign)
        if experiment is None:
            try:
                experiment_id = self.client.create_experiment(
                    campaign,
                    artifact_location=self.artifact_location,
                    tags={"bru.campaign": campaign, EXPERIMENT_KIND: MODEL_TRAINING},
                )
            except mlflow.exceptions.MlflowException:
                experiment = self.client.get_experiment_by_name(campaign)  # created meanwhile by another worker
                if experiment is None:
                    raise
                experiment_id = experiment.experiment_id
        else:
            experiment_id = experiment.experiment_id
        if experiment is not None and EXPERIMENT_KIND not in experiment.tags:
            self.client.set_experiment_tag(experiment_id, EXPERIMENT_KIND, MODEL_TRAINING)
        self._experiments[campaign] = experiment_id
        return experiment_id

    def create_run(self, experiment_id: str, tags: Mapping[str, Any], run_name: str) -> Run:
        """A run with bru's tags over MLflow's own provenance tags (source, user, commit:
        ``provenance.source_tags``), which the UI shows and ``MlflowClient.create_run``
        does not add by itself."""
        all_tags = {**source_tags(), **{k: str(v) for k, v in tags.items()}}
        return self.client.create_run(experiment_id, tags=all_tags, run_name=run_name)

    def find_runs(self, experiment_id: str, tags: Mapping[str, Any], status: str | None = None) -> list[Run]:
        """Runs whose tags all match, oldest first."""
        clauses = [f"tags.`{k}` = {quote(v)}" for k, v in tags.items()]
        if status is not None:
            clauses.append(f"attributes.status = {quote(status)}")
        runs: list[Run] = []
        token = None
        while True:
            page = self.client.search_runs(
                [experiment_id],
                " and ".join(clauses),
                max_results=1000,
                order_by=["attributes.start_time ASC"],
                page_token=token,
            )
            runs += list(page)
            token = page.token
            if not token:
                return runs

    def metric_history(self, run_id: str, key: str) -> list[float]:
        """A metric's values in step order."""
        return [
            m.value for m in sorted(self.client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
        ]

    # ------------------------------------------------------------------ studies and trials

    def study_run(self, campaign: str, task: str, activation: str, study_name: str) -> str:
        """The parent run of a study: found again by its tags, or created."""
        experiment_id = self.experiment_id(campaign)
        tags = {ROLE: "study", "bru.study": study_name}
        found = self.find_runs(experiment_id, tags)
        if found:
            run = found[0]
            if run.info.status != "RUNNING":
                self.client.update_run(run.info.run_id, status="RUNNING")
            return run.info.run_id
        all_tags = {**tags, "bru.campaign": campaign, "bru.task": task, "bru.activation": activation}
        return self.create_run(experiment_id, all_tags, f"{task} {activation}").info.run_id

    def start_trial(
        self,
        campaign: str,
        parent_run_id: str,
        study_name: str,
        number: int,
        params: Mapping[str, Any],
        extra_tags: Mapping[str, Any],
    ) -> RunLogger:
        """A child run for one Optuna trial (trial numbers are unique in a study)."""
        tags = {
            ROLE: "trial",
            "bru.study": study_name,
            "bru.trial_number": number,
            "mlflow.parentRunId": parent_run_id,
            **extra_tags,
        }
        run = self.create_run(self.experiment_id(campaign), tags, f"trial {number}")
        logger = RunLogger(self, run.info.run_id)
        logger.log_params(params)
        return logger

    def trial_runs(self, campaign: str, study_name: str) -> dict[int, Run]:
        """The trial runs of a study by trial number."""
        runs = self.find_runs(self.experiment_id(campaign), {ROLE: "trial", "bru.study": study_name})
        return {int(r.data.tags["bru.trial_number"]): r for r in runs}

    def finish_study(
        self, run_id: str, best_params: Mapping[str, Any] | None, best_value: float | None, summary: Mapping[str, Any]
    ) -> None:
        logger = RunLogger(self, run_id)
        if best_params is not None:
            self._log_params_once(run_id, {f"best_{k}": v for k, v in best_params.items()})
        if best_value is not None:
            logger.log_metrics({"best_value": best_value})
        logger.end("FINISHED", {f"bru.{k}": v for k, v in summary.items()})

    def _log_params_once(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Params of a study's run, which several workers may finish at the same moment:
        MLflow keeps the first write of a key and refuses a second (a UNIQUE constraint, seen
        in CI), so keys another worker has just logged are left as they are."""
        present = self.client.get_run(run_id).data.params
        fresh = [Param(k, str(v)) for k, v in params.items() if k not in present]
        if not fresh:
            return
        try:
            self.client.log_batch(run_id, params=fresh)
        except mlflow.exceptions.MlflowException as exc:
            if not all(k in self.client.get_run(run_id).data.params for k in params):
                raise TrackingError(f"MLflow at {shown_url(self.uri)} refused a write: {exc}") from exc

    # ------------------------------------------------------------------ repeats

    def repeat_outcomes(self, campaign: str, study_name: str | None = None) -> list[Run]:
        """The repeat runs that reached an outcome: FINISHED, or FAILED because training
        diverged (``bru.state=diverged``: an outcome of the configuration, kept and never
        retrained). At most one per study and seed, a finished run before a diverged one."""
        tags = {ROLE: "repeat", **({"bru.study": study_name} if study_name is not None else {})}
        experiment_id = self.experiment_id(campaign)
        finished = self.find_runs(experiment_id, tags, status="FINISHED")
        diverged = self.find_runs(experiment_id, {**tags, "bru.state": DIVERGED}, status="FAILED")
        chosen: dict[tuple[str, str], Run] = {}
        for run in [*finished, *diverged]:
            chosen.setdefault((run.data.tags.get("bru.study", ""), run.data.tags["bru.seed"]), run)
        return list(chosen.values())

    def repeat_runs(self, campaign: str, study_name: str) -> dict[int, Run]:
        """The repeat run with an outcome of each seed of a study (see repeat_outcomes)."""
        return {int(r.data.tags["bru.seed"]): r for r in self.repeat_outcomes(campaign, study_name)}

    def start_repeat(
        self, campaign: str, task: str, activation: str, study_name: str, seed: int, params: Mapping[str, Any]
    ) -> RunLogger:
        """A run for one repeat seed; an earlier unfinished attempt is marked FAILED first."""
        experiment_id = self.experiment_id(campaign)
        tags = {ROLE: "repeat", "bru.study": study_name, "bru.seed": str(seed)}
        for stale in self.find_runs(experiment_id, tags, status="RUNNING"):
            self.client.set_tag(stale.info.run_id, "bru.failure", "interrupted; superseded by a new attempt")
            self.client.set_terminated(stale.info.run_id, "FAILED")
        all_tags = {**tags, "bru.campaign": campaign, "bru.task": task, "bru.activation": activation}
        run = self.create_run(experiment_id, all_tags, f"{task} {activation} seed {seed}")
        logger = RunLogger(self, run.info.run_id)
        logger.log_params(params)
        return logger
