"""Every trial and every seed in MLflow, as a run tree that can be found again by tags.

One experiment per campaign. In it:

* the campaign's own run (``role=campaign``): its spec, protocol and report; RUNNING while
  a process works on the campaign, closed by the last one to end (``Tracker.working_on``);
* a parent run per study (tags ``role=study``, campaign, task, activation, study): best
  parameters and best value when the study is done;
* a nested child run per trial (``role=trial``, ``trial_number``): parameters, per-epoch
  metrics with step = epoch; status mirrors Optuna (complete -> FINISHED, pruned ->
  FINISHED with ``state=pruned``, fail -> FAILED with ``failure``);
* a run per repeat seed (``role=repeat``, ``seed``): per-epoch train/validation/test
  metrics, final metrics, the model (pt2, with signature and input example: ``model_format``),
  the data set with its digest, and an environment record; the best seed's model is
  registered. A seed whose training diverged is FAILED with ``state=diverged`` and
  ``failure``: an outcome, counted by the statistics as the worst one, never retrained.

MLflow is called directly (optuna-integration's callback is deprecated and makes flat
runs). Metrics are buffered per run and written in batches, at most every ``FLUSH_SECONDS``
and when the run ends: in line for a local store, by one background thread for a
tracking server (whose calls are mostly waiting on the network); ``Tracker.flush()``
waits for everything written so far and re-raises the first error.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import platform
import socket
import subprocess
import threading
import time
import uuid
import warnings
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Before mlflow is imported: no run links printed to stdout (they would corrupt --json
# output) and no telemetry (it costs CPU on every call, and most of our machines are offline).
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, Run, RunTag

import bru_core
from bru_core.errors import BruError
from bru_core.settings import Settings, shown_url

# "Creating initial MLflow database tables..." on every new store is not news to our users.
logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)

FLUSH_SECONDS = 5.0
_BATCH = 900  # MLflow takes at most 1000 metrics per log_batch call
ROLE = "bru.role"
DIVERGED = "diverged"  # bru.state of a repeat whose training diverged: FAILED in MLflow, an outcome for bru
HOLDER = "bru.holder."  # tag prefix on a campaign's run: one tag per process working on the campaign now


class TrackingError(BruError):
    """The tracking store cannot be reached or refused a write."""


def _quote(value: str) -> str:
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _now_ms() -> int:
    return int(time.time() * 1000)


def run_slug(*parts: str) -> str:
    """A registered-model name from names with '/', ':', '>' (a ramp) and '|' (a step) in
    them: quick-digits-mlp4-oru3to2, quick-digits-mlp4-oru3then2."""
    text = "-".join(parts)
    for old, new in (("/", "-"), (":", ""), (">", "to"), ("|", "then"), (" ", "")):
        text = text.replace(old, new)
    return text


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


def spec_digest(spec: Mapping[str, Any]) -> str:
    """What makes two campaigns comparable: the spec without its description and without
    ``repeats.pack`` (how the seeds are run, not what they compute; a spec from before it
    existed digests as it did then)."""
    design = {k: v for k, v in spec.items() if k != "description"}
    if isinstance(design.get("repeats"), Mapping):
        design["repeats"] = {k: v for k, v in design["repeats"].items() if k != "pack"}
    return hashlib.sha256(dumps(design).encode()).hexdigest()[:16]


def check_server(uri: str, timeout: float = 5.0) -> None:
    """For an http(s) tracking URI, one GET of the server's /health within ``timeout``:
    MLflow's own client retries a refused connection with back-off for minutes, where a
    user starting a campaign wants one line at once. Then one signed-in read, so that a
    server with MLflow's basic-auth app that refuses this login says so before any trial
    runs (MLflow's client takes MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD from
    the environment). Other URIs pass."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    base = uri.rstrip("/")
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=timeout) as response:
            response.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingError(
            f"MLflow tracking at {shown_url(uri)} cannot be reached ({reason}); start the server or set BRU_TRACKING_URI"
        ) from None
    request = urllib.request.Request(f"{base}/api/2.0/mlflow/experiments/search?max_results=1")
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user:
        token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 401 and not user:
            raise TrackingError(
                f"MLflow tracking at {shown_url(uri)} requires a login; set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
            ) from None
        if exc.code == 401:
            raise TrackingError(
                f"MLflow tracking at {shown_url(uri)} refused the login of MLFLOW_TRACKING_USERNAME={user}; check MLFLOW_TRACKING_PASSWORD"
            ) from None
        if exc.code == 403:
            raise TrackingError(
                f"MLflow tracking at {shown_url(uri)} denies user {user} access; ask its admin for permission"
            ) from None
        # Anything else (a proxy that forbids the search, an old server) is left to the
        # calls that follow, which name their own error.
    except (urllib.error.URLError, OSError, ValueError):
        pass


class Tracker:
    """The MLflow side of a campaign: find-or-create runs by tags, write them in batches."""

    def __init__(self, settings: Settings) -> None:
        self.uri = settings.tracking
        self.artifact_location = settings.artifact_location
        if self.uri.startswith("sqlite:///"):
            Path(self.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=self.uri)
        # A local store's writes are CPU work in this process: done in a background thread
        # they contend for the GIL with the training loop and cost more than done in line
        # (docs/benchmarks.md). A server's writes are mostly waiting: those go to the thread.
        self.background = self.artifact_location is None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bru-mlflow")  # keeps writes in order
        self._pending: list[Future] = []
        self._lock = threading.Lock()
        self._experiments: dict[str, str] = {}
        self.lease = settings.campaign_lease_seconds  # a holder of a campaign's run unseen this long is gone

    # ------------------------------------------------------------------ plumbing

    def _submit(self, fn, *args) -> None:
        if not self.background:
            try:
                fn(*args)
            except Exception as exc:
                raise TrackingError(f"MLflow at {shown_url(self.uri)} refused a write: {exc}") from exc
            return
        with self._lock:
            self._pending = [f for f in self._pending if not f.done() or f.exception() is not None]
            self._pending.append(self._pool.submit(fn, *args))

    def _write_batch(self, run_id: str, metrics: list[Metric], params: list[Param], tags: list[RunTag]) -> None:
        for i in range(0, max(len(metrics), 1), _BATCH):
            first = i == 0
            self.client.log_batch(
                run_id,
                metrics=metrics[i : i + _BATCH],
                params=params[:100] if first else (),
                tags=tags[:100] if first else (),
            )
        for i in range(100, max(len(params), len(tags)), 100):
            self.client.log_batch(run_id, params=params[i : i + 100], tags=tags[i : i + 100])

    def flush(self) -> None:
        """Wait for every write so far; re-raise the first one that failed."""
        with self._lock:
            pending, self._pending = self._pending, []
        errors = [f.exception() for f in pending if f.exception() is not None]
        if errors:
            raise TrackingError(f"MLflow at {shown_url(self.uri)} refused a write: {errors[0]}") from errors[0]

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check(self, *, server_checked: bool = False) -> None:
        """Fail early, with one line, when the tracking store cannot be reached
        (server_checked: the caller has just had check_server's answer)."""
        if not server_checked:
            check_server(self.uri)
        try:
            self.client.search_experiments(max_results=1)
        except Exception as exc:
            raise TrackingError(
                f"MLflow tracking at {shown_url(self.uri)} cannot be reached: {str(exc).splitlines()[0][:200]}"
            ) from None

    # ------------------------------------------------------------------ finding runs

    def experiment_id(self, campaign: str) -> str:
        if campaign in self._experiments:
            return self._experiments[campaign]
        experiment = self.client.get_experiment_by_name(campaign)
        if experiment is None:
            try:
                experiment_id = self.client.create_experiment(
                    campaign, artifact_location=self.artifact_location, tags={"bru.campaign": campaign}
                )
            except mlflow.exceptions.MlflowException:
                experiment = self.client.get_experiment_by_name(campaign)  # created meanwhile by another worker
                if experiment is None:
                    raise
                experiment_id = experiment.experiment_id
        else:
            experiment_id = experiment.experiment_id
        self._experiments[campaign] = experiment_id
        return experiment_id

    def find_runs(self, experiment_id: str, tags: Mapping[str, Any], status: str | None = None) -> list[Run]:
        """Runs whose tags all match, oldest first."""
        clauses = [f"tags.`{k}` = {_quote(v)}" for k, v in tags.items()]
        if status is not None:
            clauses.append(f"attributes.status = {_quote(status)}")
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
        return self.client.create_run(experiment_id, tags=all_tags, run_name=f"{task} {activation}").info.run_id

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
        run = self.client.create_run(
            self.experiment_id(campaign), tags={k: str(v) for k, v in tags.items()}, run_name=f"trial {number}"
        )
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

    # ------------------------------------------------------------------ the campaign

    def record_campaign(self, campaign: str, spec: Mapping[str, Any], protocol: list[str]) -> str:
        """The campaign's own run (``bru.role=campaign``) holds its spec, so that a campaign
        can be aggregated from MLflow alone. A campaign started with a different spec under
        the same name is refused: its studies would not be comparable."""
        experiment_id = self.experiment_id(campaign)
        digest = spec_digest(spec)
        found = self.find_runs(experiment_id, {ROLE: "campaign"})
        if found:
            recorded = found[0].data.tags.get("bru.spec_digest")
            if recorded != digest:
                raise TrackingError(
                    f"campaign {campaign!r} was started with a different spec (digest {recorded}, this one {digest}); "
                    "give the new spec another name, or restore the old one"
                )
            return found[0].info.run_id
        run_id = self.client.create_run(
            experiment_id,
            tags={ROLE: "campaign", "bru.campaign": campaign, "bru.spec_digest": digest},
            run_name=f"campaign {campaign}",
        ).info.run_id
        self.client.log_dict(run_id, dict(spec), "spec.json")
        self.client.log_text(run_id, "\n".join(protocol) + "\n", "protocol.txt")
        return run_id

    def campaign_run(self, campaign: str) -> Run | None:
        experiment = self.client.get_experiment_by_name(campaign)
        if experiment is None:
            return None
        found = self.find_runs(experiment.experiment_id, {ROLE: "campaign"})
        return found[0] if found else None

    @contextmanager
    def working_on(self, campaign: str) -> Iterator[None]:
        """The campaign's run is RUNNING while the body works on the campaign, then closed:
        FINISHED, FAILED (an error) or KILLED (an interrupt), unless another live process
        still holds it. Every process that works on the campaign holds the run with a tag
        (``bru.holder.<id>``) that a thread renews every lease / 4 seconds; the last one to
        let go closes the run, so no process's work shows under a finished campaign. A
        holder that died without letting go counts as gone once its process no longer
        exists (on this machine) or its lease has run out (elsewhere). Nested and
        concurrent holds in one process share one tag; the outermost decides the status."""
        run = self.campaign_run(campaign)
        if run is None:
            raise TrackingError(f"campaign {campaign!r} has no run in {shown_url(self.uri)}: record it first")
        place = (os.getpid(), self.uri, run.info.run_id)  # a forked child holds on its own
        with _HOLDS_LOCK:
            hold = _HOLDS.get(place)
            if hold is None:
                hold = _HOLDS[place] = _Hold.take(MlflowClient(tracking_uri=self.uri), run.info.run_id, self.lease)
            hold.count += 1
        try:
            yield
        except BaseException as exc:
            self._let_go(place, exc)
            raise
        self._let_go(place, None)

    def _let_go(self, place: tuple[int, str, str], exc: BaseException | None) -> None:
        with _HOLDS_LOCK:
            hold = _HOLDS[place]
            hold.count -= 1
            if hold.count:
                return
            del _HOLDS[place]
            try:
                hold.release(exc)
            except Exception as failure:  # the work is done; a status not written is no reason to fail it
                logging.getLogger("bru.tracking").warning(
                    "the campaign's run %s could not be closed: %s", hold.run_id, str(failure).splitlines()[0][:200]
                )

    def campaign_spec(self, campaign: str) -> dict[str, Any]:
        run = self.campaign_run(campaign)
        if run is None:
            known = sorted(
                e.name for e in self.client.search_experiments() if self.find_runs(e.experiment_id, {ROLE: "campaign"})
            )
            raise TrackingError(
                f"unknown campaign {campaign!r}; campaigns in {shown_url(self.uri)}: {', '.join(known) or 'none yet'}"
            )
        return mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/spec.json")

    def log_report(self, campaign: str, folder: Path) -> None:
        """The report's files as artifacts of the campaign's run, under report/."""
        run = self.campaign_run(campaign)
        if run is not None:
            self.client.log_artifacts(run.info.run_id, str(folder), "report")

    def run_timings(self, campaign: str) -> list[tuple[str, float, float, float]]:
        """(role, start, end, seconds in train()) of the campaign's trials and repeats, by
        start time (epoch seconds), for `bru bench pipeline`'s overhead figures."""
        experiment = self.client.get_experiment_by_name(campaign)
        if experiment is None:
            return []
        timings = []
        for role in ("trial", "repeat"):
            for run in self.find_runs(experiment.experiment_id, {ROLE: role}):
                if "seconds" in run.data.metrics and run.info.end_time:
                    start, end = run.info.start_time / 1e3, run.info.end_time / 1e3
                    timings.append((role, start, end, run.data.metrics["seconds"]))
        return sorted(timings, key=lambda timing: timing[1])

    def metric_history(self, run_id: str, key: str) -> list[float]:
        """A metric's values in step order."""
        return [
            m.value for m in sorted(self.client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
        ]

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
        run = self.client.create_run(experiment_id, tags=all_tags, run_name=f"{task} {activation} seed {seed}")
        logger = RunLogger(self, run.info.run_id)
        logger.log_params(params)
        return logger

    def log_environment(self, run_id: str, device: str) -> None:
        record = environment(device)
        self.client.log_dict(run_id, record, "environment.json")
        tags = {"bru.version": record["bru_lab"], "bru.device": device}
        if record.get("git_commit"):
            tags["mlflow.source.git.commit"] = record["git_commit"]
        for key, value in tags.items():
            self.client.set_tag(run_id, key, value)

    def log_dataset(self, run_id: str, data: Any, source: str) -> str:
        """The training split as an MLflow dataset input, named and digested."""
        from mlflow.entities import DatasetInput, InputTag

        digest = data_digest(data)
        with warnings.catch_warnings():  # "source can be interpreted in multiple ways": both local files
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_numpy(
                data.train.images.cpu().numpy(),
                targets=data.train.labels.cpu().numpy(),
                source=source,
                name=f"{data.info.name}-train",
                digest=digest,
            )
        context = InputTag(key="mlflow.data.context", value="training")
        self.client.log_inputs(run_id, [DatasetInput(dataset._to_mlflow_entity(), tags=[context])])
        return digest

    def log_model(self, run_id: str, model: Any, example: Any) -> str:
        """The trained model with its signature and an input example, serialized as
        ``model_format`` chooses (pt2 for every model bru builds); returns its model URI and
        tags the run ``bru.model_format``."""
        import mlflow.pytorch
        import numpy as np
        import torch
        from mlflow.models import infer_signature

        model = model.to("cpu").eval()
        example = np.ascontiguousarray(example.astype(np.float32))
        with torch.no_grad():
            output = model(torch.from_numpy(example)).numpy()
        serialization, problem = model_format(model, example)
        if problem is not None:
            logging.getLogger("bru.tracking").warning(
                "run %s: torch.export cannot trace the model (%s); it is logged pickled, and loading it runs "
                "code bundled with it",
                run_id, problem,
            )  # fmt: skip
        mlflow.set_tracking_uri(self.uri)
        with _quiet_mlflow(), mlflow.start_run(run_id=run_id):
            info = mlflow.pytorch.log_model(
                model,
                name="model",
                serialization_format=serialization,
                signature=infer_signature(example, output),
                input_example=example,
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "numpy"],
                # A pt2 graph holds only torch ops: no bru code is needed to load it, so none is
                # bundled (MLflow would put it on sys.path at every load). A pickle needs the classes.
                code_paths=[str(Path(bru_core.__file__).parent)] if serialization == "pickle" else None,
                metadata={"serialization_format": serialization},
            )
        self.client.set_tag(run_id, "bru.model_format", serialization)
        return info.model_uri

    def register(self, name: str, model_uri: str, run_id: str) -> int:
        """Register a model once: a version from the same run is reused."""
        try:
            versions = self.client.search_model_versions(f"name = {_quote(name)}")
        except mlflow.exceptions.MlflowException:
            versions = []
        for version in versions:
            if version.run_id == run_id:
                return int(version.version)
        try:
            self.client.create_registered_model(name, tags={"bru.registered_by": "bru-lab"})
        except mlflow.exceptions.MlflowException as exc:
            if "already exists" not in str(exc).lower() and "RESOURCE_ALREADY_EXISTS" not in str(exc):
                raise
        model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
        version = self.client.create_model_version(
            name, model_uri, run_id=run_id, model_id=model_id, tags={"bru.run_id": run_id}
        )
        return int(version.version)


def start_server(
    backend_uri: str, artifact_root: str, host: str = "127.0.0.1", port: int = 5000, log_file: Path | None = None
):
    """``mlflow server`` as a child process (one worker, no job runner: 2-core friendly).
    Returns the Popen; the caller stops it (``stop_server``)."""
    import shutil
    import sys

    mlflow_bin = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or shutil.which("mlflow")
    if mlflow_bin is None:
        raise BruError("mlflow: the mlflow command is not installed in this environment")
    command = [
        mlflow_bin, "server", "--backend-store-uri", backend_uri, "--default-artifact-root", artifact_root,
        "--host", host, "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    output = open(log_file, "ab") if log_file is not None else None  # noqa: SIM115 - the child owns it
    return subprocess.Popen(
        command, env=env, start_new_session=True, stdout=output, stderr=subprocess.STDOUT if output else None
    )


def wait_healthy(url: str, process: subprocess.Popen | None = None, timeout: float = 90.0) -> None:
    """Poll ``url``/health until it answers OK (MLflow takes 5-20 s to start)."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise TrackingError(f"mlflow server exited with code {process.returncode} before it was healthy")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    raise TrackingError(f"mlflow server at {shown_url(url)} not healthy after {timeout:.0f} s")


def stop_server(process: subprocess.Popen, timeout: float = 10.0) -> None:
    import signal

    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


class _quiet_mlflow:
    """MLflow's INFO chatter (created version N...) is not for our users' terminals."""

    def __enter__(self) -> None:
        self._logger = logging.getLogger("mlflow")
        self._level = self._logger.level
        self._logger.setLevel(logging.WARNING)

    def __exit__(self, *exc: object) -> None:
        self._logger.setLevel(self._level)


def _this_machine() -> str | None:
    """What makes two processes' pids comparable: one kernel boot and one pid namespace
    (containers on one host each have their own); None where /proc does not say."""
    try:
        return f"{Path('/proc/sys/kernel/random/boot_id').read_text().strip()}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return None


def _started(pid: int) -> str | None:
    """A process's start time in clock ticks after boot (/proc/PID/stat, field 22): with the
    pid, one process for good, even once the pid is reused. None: no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def holder_alive(record: Mapping[str, Any], lease: float, now: float | None = None) -> bool:
    """Whether the process behind a ``bru.holder.*`` tag may still work on the campaign: on
    this machine, while its process exists; elsewhere, while it renews within ``lease``."""
    machine = _this_machine()
    if machine is not None and record.get("machine") == machine:
        return record.get("started") is not None and _started(int(record["pid"])) == record["started"]
    return (now if now is not None else time.time()) - float(record.get("renewed", 0)) <= lease


@dataclass
class _Hold:
    """This process's hold on a campaign's run: one tag, renewed by a thread."""

    client: MlflowClient
    run_id: str
    key: str
    record: dict[str, Any]
    lease: float
    stop: threading.Event
    renewer: threading.Thread | None = None
    count: int = 0

    @classmethod
    def take(cls, client: MlflowClient, run_id: str, lease: float) -> _Hold:
        now = time.time()
        record = {
            "host": socket.gethostname(), "pid": os.getpid(), "machine": _this_machine(),
            "started": _started(os.getpid()), "since": now, "renewed": now,
        }  # fmt: skip
        hold = cls(client, run_id, HOLDER + uuid.uuid4().hex[:12], record, lease, threading.Event())
        client.set_tag(run_id, hold.key, dumps(record))
        client.update_run(run_id, status="RUNNING")  # after the tag: see release
        hold.renewer = threading.Thread(target=hold._renew, name="bru-campaign-hold", daemon=True)
        hold.renewer.start()
        return hold

    def _renew(self) -> None:
        while not self.stop.wait(self.lease / 4):
            with suppress(Exception):  # a store restart: the next beat tries again, well within the lease
                self.client.set_tag(self.run_id, self.key, dumps({**self.record, "renewed": time.time()}))
                if self.stop.is_set():  # let go while the write was retried: it must not outlive the hold
                    self.client.delete_tag(self.run_id, self.key)

    def _live_holders(self) -> list[str]:
        """Tags of the other processes that hold the run now; a dead holder's tag is removed."""
        tags = self.client.get_run(self.run_id).data.tags
        live, now = [], time.time()
        for key, value in tags.items():
            if not key.startswith(HOLDER) or key == self.key:
                continue
            try:
                alive = holder_alive(json.loads(value), self.lease, now)
            except (ValueError, TypeError, KeyError):
                alive = False
            if alive:
                live.append(key)
            else:
                with suppress(mlflow.exceptions.MlflowException):  # another holder removed it just now
                    self.client.delete_tag(self.run_id, key)
        return live

    def release(self, exc: BaseException | None) -> None:
        """Let go of the run, and close it unless another live process holds it.

        Each holder removes its tag before it looks at the others', so of two that let go
        together the later one sees neither tag and closes the run. One that takes hold
        while the run is being closed has set its tag before it marks the run RUNNING: the
        closer that looks again after closing sees it and reopens the run, or else its own
        RUNNING comes last."""
        self.stop.set()
        if self.renewer is not None:
            self.renewer.join(timeout=10)
        # Already removed as dead by another holder (after a long store outage): let go all the same.
        with suppress(mlflow.exceptions.MlflowException):
            self.client.delete_tag(self.run_id, self.key)
        if self._live_holders():
            return
        tags = self.client.get_run(self.run_id).data.tags
        if exc is None:
            status = "FINISHED"
            if "bru.failure" in tags:  # it described an earlier command
                self.client.delete_tag(self.run_id, "bru.failure")
        else:
            status = "FAILED" if isinstance(exc, Exception) else "KILLED"
            first_line = (str(exc).strip().splitlines() or [""])[0]
            self.client.set_tag(self.run_id, "bru.failure", f"{type(exc).__name__}: {first_line}"[:500])
        self.client.set_terminated(self.run_id, status)
        if self._live_holders():
            self.client.update_run(self.run_id, status="RUNNING")


_HOLDS: dict[tuple[int, str, str], _Hold] = {}  # (pid, tracking URI, run id) -> this process's hold
_HOLDS_LOCK = threading.Lock()


def model_format(model: Any, example: Any) -> tuple[str, str | None]:
    """How a model is serialized, and why not pt2 when it is not.

    pt2 (torch.export): the graph of torch ops and the weights, no pickle, so loading it
    runs no code of the model's. Under torch.export, ERU/ORU take their eager formulas, not
    the native op or the compiled kernels (bru_core.kernels), so the graph needs nothing of
    bru's to load. Every model bru builds of torch.nn modules and bru's activations exports
    (tests/test_search.py checks each family); a model with any other module (a user's
    registered activation) is test-exported first, and one that torch.export cannot trace
    is logged as pickle (the reason returned): an explicit choice for that case."""
    import torch

    # By module name: tracking sits below the activations in the layering (docs/architecture.md).
    if all(type(m).__module__.startswith(("torch.nn.", "bru_core.")) for m in model.modules()):
        return "pt2", None
    try:
        torch.export.export(model, (torch.from_numpy(example),), dynamic_shapes=[{0: torch.export.Dim.AUTO}])
    except Exception as exc:  # torch.export raises plain RuntimeErrors, among others
        first_line = (str(exc).strip().splitlines() or [""])[0][:200]
        return "pickle", f"{type(exc).__name__}: {first_line}"
    return "pt2", None


_DIGESTS: dict[int, str] = {}


def data_digest(data: Any) -> str:
    """A short sha256 of every split's images and labels (cached per Data object)."""
    key = id(data)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        for split in (data.train, data.val, data.test):
            h.update(split.images.cpu().numpy().tobytes())
            h.update(split.labels.cpu().numpy().tobytes())
        _DIGESTS[key] = h.hexdigest()[:16]
    return _DIGESTS[key]


def git_commit(path: Path | None = None) -> str | None:
    """The commit of the bru-lab checkout, with '-dirty' for local changes; None outside git."""
    folder = path or Path(bru_core.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: str) -> dict[str, Any]:
    """Versions, machine and commit behind a run."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    packages = {}
    for name in ("bru-lab", "torch", "torchvision", "numpy", "optuna", "mlflow", "scikit-learn"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    return {
        "bru_lab": packages.pop("bru-lab") or bru_core.__version__,
        "packages": packages,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "cpu_threads": torch.get_num_threads(),
        "git_commit": git_commit(),
        "hostname": platform.node(),
        "pid": os.getpid(),
    }


def params_of(config: Any, keys: Iterable[str]) -> dict[str, Any]:
    values = config.model_dump(mode="json")
    return {k: values[k] for k in keys}


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)
