"""One Optuna study per task x activation, with the same budget for every activation.

``run_study`` resumes what is there (``load_if_exists``): completed trials are never
repeated and the study ends with exactly ``search.trials`` trials that reached an outcome
of their own: complete, pruned, or failed on their own account (a non-finite loss, stored
as the user attribute ``failure``). A trial lost to infrastructure (its worker killed) is
noticed by Optuna's heartbeat, failed, retried once, and does not count. Trials are
admitted in trial-number order, so workers sharing a study on PostgreSQL cannot overshoot
the budget either: a trial asked beyond it is closed at once as ``excess`` (not counted,
not trained, no MLflow run).

``run_repeats`` trains the study's best parameters once per repeat seed, with the
training seed = the repeat seed, so every activation sees the same initialisation stream
and batch order per seed (a paired design); seeds with an outcome (finished, or diverged:
recorded as such, never retrained until it happens not to) are not run again. The spec
keeps the search seed out of the repeat seeds, so no repeat reruns a trial. The seeds to
train go as packs (bru_core.packed: one batched model, each member its own MLflow run).

These are plain functions (no Prefect): the flows and ``bru search`` call them.
"""

from __future__ import annotations

import binascii
import logging
import math
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from bru_core.config import TrainConfig
from bru_core.data import Data
from bru_core.errors import BruError, NonFiniteLossError, StoreFailedError
from bru_core.packed import train_in_packs
from bru_core.results import check_reachable as check_results_reachable
from bru_core.settings import Settings, get_settings, shown_url
from bru_core.spec import CampaignSpec, ParamSpec
from bru_core.stats import validation_metric
from bru_core.tracking import DIVERGED, RunLogger, Tracker, check_server, run_slug
from bru_core.training import History, prepare_data, resolve_device, train

_INT_FIELDS = {name for name, f in TrainConfig.model_fields.items() if f.annotation in (int, int | None)}
_RETRIES = 1


class _Excess(Exception):
    """A trial asked after the budget was already taken (by this or another worker)."""


# --------------------------------------------------------------------------- storage, study


@contextmanager
def _no_experimental_warnings() -> Iterator[None]:
    """Heartbeats, their retry callback and metric names are marked experimental in Optuna;
    they are its documented way to survive a killed worker, and bru pins Optuna's major
    version, so the warnings are noise to our users."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def _storage_failure(exc: BaseException) -> BaseException | None:
    """The storage error behind ``exc``, if any: Optuna can end a trial whose storage
    failed with an unrelated error (seen: UnboundLocalError) raised while handling it.
    The database driver's own error is preferred to Optuna's wrapper, whose text guesses
    at invalid data ("e.g. exceeding max length") when the server simply went away."""
    found: BaseException | None = None
    seen: BaseException | None = exc
    visited: set[int] = set()
    while seen is not None and id(seen) not in visited:
        visited.add(id(seen))
        if isinstance(seen, sqlalchemy.exc.DBAPIError):
            return seen
        if found is None and isinstance(seen, optuna.exceptions.StorageInternalError):
            found = seen
        seen = seen.__cause__ or seen.__context__
    return found


def _is_heartbeat_thread_failure(args: threading.ExceptHookArgs) -> bool:
    tb = args.exc_traceback
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_name == "_record_heartbeat" and "optuna" in code.co_filename:
            return True
        tb = tb.tb_next
    return False


def _log_heartbeat_thread_failures() -> None:
    """Optuna records a trial's heartbeats on a thread of its own, which dies with a
    traceback on stderr when the database goes away (a restart). Nothing is lost: a trial
    that stops beating is failed and retried after the grace period. Say that in one log
    line instead; every other thread's exception goes to the hook as before."""
    previous = threading.excepthook
    if getattr(previous, "bru_heartbeat_hook", False):
        return

    def hook(args: threading.ExceptHookArgs) -> None:
        if not _is_heartbeat_thread_failure(args):
            previous(args)
            return
        message = str(args.exc_value).splitlines()[0][:200] if args.exc_value else args.exc_type.__name__
        logging.getLogger("bru.search").warning(
            "Optuna's heartbeat thread stopped (%s: %s); the trial is failed and retried after the grace period",
            args.exc_type.__name__, message,
        )  # fmt: skip

    hook.bru_heartbeat_hook = True  # type: ignore[attr-defined]
    threading.excepthook = hook


def storage(settings: Settings) -> RDBStorage:
    """Optuna's RDB storage with heartbeats: a trial whose worker stops beating for
    ``heartbeat_grace_seconds`` is failed and retried once."""
    _log_heartbeat_thread_failures()
    url = settings.optuna
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    for attempt in range(4):
        try:
            with _no_experimental_warnings():
                return RDBStorage(
                    url,
                    engine_kwargs=kwargs,
                    heartbeat_interval=settings.heartbeat_seconds,
                    grace_period=settings.heartbeat_grace_seconds,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=_RETRIES),
                )
        except Exception as exc:  # a bad URL, a server that is down, a missing driver
            racing = ("already exists", "UNIQUE constraint failed", "duplicate key value")
            if any(text in str(exc) for text in racing) and attempt < 3:
                time.sleep(0.5)  # another process is creating the tables right now (seen in CI)
                continue
            raise BruError(
                f"Optuna storage {shown_url(url)} cannot be opened: {str(exc).splitlines()[0][:200]}"
            ) from None
    raise AssertionError("unreachable")


def check_stores(settings: Settings) -> None:
    """Before a campaign starts: the MLflow server and a results database on a server
    answer (checked first, writing nothing), the Optuna storage opens, the tracking store
    answers; else one line."""
    check_server(settings.tracking)
    check_results_reachable(settings.results)
    storage(settings)
    with Tracker(settings) as tracker:
        tracker.check(server_checked=True)


def prepare_campaign(spec: CampaignSpec, settings: Settings | None = None) -> None:
    """Create the stores' tables and the campaign's MLflow record once, before studies
    open them concurrently."""
    settings = settings or get_settings()
    storage(settings)
    with Tracker(settings) as tracker:
        tracker.check()
        tracker.record_campaign(spec.name, spec.model_dump(mode="json"), spec.protocol())


@contextmanager
def working_on_campaign(spec: CampaignSpec, settings: Settings | None = None) -> Iterator[None]:
    """The campaign's run, recorded if new, held RUNNING over the body (Tracker.working_on):
    for a command that runs several stages, so that the run is not closed between them."""
    with Tracker(settings or get_settings()) as tracker:
        tracker.record_campaign(spec.name, spec.model_dump(mode="json"), spec.protocol())
        with tracker.working_on(spec.name):
            yield


def _sampler(spec: CampaignSpec) -> optuna.samplers.BaseSampler:
    if spec.search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=spec.search.seed)
    startup = spec.search.startup_trials
    if startup is None:
        startup = min(10, max(1, spec.search.trials // 2))
    return optuna.samplers.TPESampler(seed=spec.search.seed, n_startup_trials=startup)


class EqualBudgetHyperband(optuna.pruners.HyperbandPruner):
    """Hyperband whose brackets do not depend on the activation.

    Optuna assigns a trial to a bracket (how aggressively it is pruned) by a hash of the
    study name and the trial number; bru's study names hold the activation, so relu's and
    elu's trial 3 would land in different brackets: a different budget. Here the hash
    takes ``bracket_key`` (campaign and task) instead, so trial k of every activation of a
    task is pruned by the same rule (tests/test_search.py feeds two such studies the same
    values and checks that they prune the same trials)."""

    def __init__(self, bracket_key: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._bracket_key = bracket_key

    def _get_bracket_id(self, study: optuna.Study, trial: FrozenTrial) -> int:
        if len(self._pruners) == 0:
            return 0
        assert self._n_brackets is not None
        n = binascii.crc32(f"{self._bracket_key}_{trial.number}".encode()) % self._total_trial_allocation_budget
        for bracket_id in range(self._n_brackets):
            n -= self._trial_allocation_budgets[bracket_id]
            if n < 0:
                return bracket_id
        raise AssertionError("unreachable: the budgets sum to the total")


def _pruner(spec: CampaignSpec, task: str) -> optuna.pruners.BasePruner:
    """The spec's pruner for one task's studies; the same for every activation."""
    if spec.search.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=min(5, spec.search.trials), n_warmup_steps=1)
    if spec.search.pruner == "hyperband":
        return EqualBudgetHyperband(f"{spec.name}/{task}", min_resource=1, max_resource=spec.task(task).epochs)
    return optuna.pruners.NopPruner()


def open_study(spec: CampaignSpec, task: str, activation: str, settings: Settings) -> optuna.Study:
    with _quiet_optuna():  # "a new study created" / "using an existing study" at INFO
        study = _create_study(spec, task, activation, settings)
    with _no_experimental_warnings():
        study.set_metric_names([validation_metric(spec.task(task).objective)])
    return study


def _create_study(spec: CampaignSpec, task: str, activation: str, settings: Settings) -> optuna.Study:
    return optuna.create_study(
        study_name=spec.study_name(task, activation),
        storage=storage(settings),
        sampler=_sampler(spec),
        pruner=_pruner(spec, task),
        direction="minimize",
        load_if_exists=True,
    )


# --------------------------------------------------------------------------- budget


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


def _admitted(study: optuna.Study, number: int, budget: int) -> bool:
    ahead = sum(_holds_a_place(t) for t in study.get_trials(deepcopy=False) if t.number < number)
    return ahead < budget


# --------------------------------------------------------------------------- trials


def suggest(trial: optuna.Trial, space: dict[str, ParamSpec]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, p in space.items():
        if p.choices is not None:
            params[name] = trial.suggest_categorical(name, p.choices)
        elif name in _INT_FIELDS:
            params[name] = trial.suggest_int(name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
        else:
            params[name] = trial.suggest_float(name, p.low, p.high, step=p.step, log=p.log)
    return params


@dataclass
class TrialOutcome:
    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    seconds: float


@dataclass
class StudyResult:
    study_name: str
    task: str
    activation: str
    budget: int
    done: int
    complete: int
    pruned: int
    failed: int
    lost: int
    best_value: float | None
    best_params: dict[str, Any] | None
    best_trial: int | None
    mlflow_run_id: str
    trials: list[TrialOutcome] = field(default_factory=list)


def _reconcile(tracker: Tracker, spec: CampaignSpec, study: optuna.Study) -> None:
    """Close MLflow trial runs left RUNNING by a worker that died: mirror Optuna's state."""
    states = {t.number: t for t in study.get_trials(deepcopy=False)}
    for number, run in tracker.trial_runs(spec.name, study.study_name).items():
        trial = states.get(number)
        if run.info.status != "RUNNING" or trial is None or trial.state in (TrialState.RUNNING, TrialState.WAITING):
            continue
        logger = RunLogger(tracker, run.info.run_id)
        if trial.state == TrialState.COMPLETE:
            logger.end("FINISHED")
        elif trial.state == TrialState.PRUNED:
            logger.end("FINISHED", {"bru.state": "pruned"})
        else:
            logger.end(
                "FAILED", {"bru.failure": trial.user_attrs.get("failure", "worker lost (heartbeat stopped); retried")}
            )


def _summary(study: optuna.Study, budget: int) -> dict[str, Any]:
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


def _best(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:
        return None


TrialCallback = Callable[[TrialOutcome, BudgetState, float | None], None]


class StudySession:
    """One study, opened and ready to run a trial at a time.

    ``run_study`` loops over it; the Prefect flows make each ``run_trial`` call a task run
    on a worker. ``device`` overrides the training device (a worker with several GPUs
    gives each concurrent trial its own)."""

    def __init__(
        self,
        spec: CampaignSpec,
        task: str,
        activation: str,
        *,
        settings: Settings | None = None,
        tracker: Tracker | None = None,
        data: Data | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.spec = spec
        self.activation = spec.activation(activation)
        self.task = spec.task(task).name
        self.budget = spec.search.trials
        self.space = spec.space_for(self.activation)
        self._own_tracker = tracker is None
        self.tracker = tracker or Tracker(self.settings)
        self._data: dict[str, Data] = {}
        if data is not None:
            self._data[str(data.device)] = data
        self.metric = validation_metric(spec.task(self.task).objective)
        self.tracker.record_campaign(spec.name, spec.model_dump(mode="json"), spec.protocol())
        self.study = open_study(spec, self.task, self.activation, self.settings)
        self.parent = self.tracker.study_run(spec.name, self.task, self.activation, self.study.study_name)
        _reconcile(self.tracker, spec, self.study)
        self.outcomes: list[TrialOutcome] = []

    @property
    def name(self) -> str:
        return self.study.study_name

    def data_for(self, config: TrainConfig) -> Data:
        device = resolve_device(config.device)
        if str(device) not in self._data:
            self._data[str(device)] = prepare_data(config, device)
        return self._data[str(device)]

    def state(self) -> BudgetState:
        return budget_state(self.study, self.budget)

    def next_step(self) -> str:
        """``done`` when the budget is reached; ``wait`` when the rest of it is running
        elsewhere (or lost with a worker whose heartbeat grace has not passed); else ``trial``."""
        state = self.state()
        if state.complete:
            return "done"
        waiting_retry = any(t.state == TrialState.WAITING for t in self.study.get_trials(deepcopy=False))
        if state.done + state.active >= self.budget and not waiting_retry:
            return "wait"
        return "trial"

    def wait(self) -> None:
        time.sleep(min(self.settings.heartbeat_seconds, 2.0))
        fail_stale_trials(self.study)

    def run_trial(
        self, on_start: Callable[[int], None] | None = None, device: str | None = None
    ) -> TrialOutcome | None:
        """Run one trial (None: the trial asked was beyond the budget and closed at once)."""
        spec, study, tracker, metric = self.spec, self.study, self.tracker, self.metric

        def objective(trial: optuna.Trial) -> float:
            if not _admitted(study, trial.number, self.budget):
                trial.set_user_attr("excess", True)
                raise _Excess(f"trial {trial.number} is beyond the budget of {self.budget}")
            if on_start is not None:
                on_start(trial.number)
            params = suggest(trial, self.space)
            config = spec.train_config(self.task, self.activation, params, seed=spec.search.seed)
            if device is not None:
                config = config.model_copy(update={"device": device})
            data = self.data_for(config)
            with _no_experimental_warnings():
                retried = RetryHeartbeatStaleTrialCallback.retried_trial_number(
                    study._storage.get_trial(trial._trial_id)
                )
            tags = {"bru.campaign": spec.name, "bru.task": self.task, "bru.activation": self.activation}
            if retried is not None:
                tags["bru.retry_of"] = retried
            run = tracker.start_trial(
                spec.name,
                self.parent,
                study.study_name,
                trial.number,
                {**params, "activation": config.activation},
                tags,
            )
            trial.set_user_attr("mlflow_run_id", run.run_id)

            def on_epoch(record) -> None:
                run.log_epoch(record, lr=config.schedule != "none")
                trial.report(getattr(record, metric), record.epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at epoch {record.epoch}")

            training_started = time.perf_counter()

            def log_seconds() -> None:  # time in train(), for `bru bench pipeline`'s overhead figures
                run.log_metrics({"seconds": time.perf_counter() - training_started})

            try:
                history = train(config, on_epoch=on_epoch, data=data, evaluate_test=False)
            except optuna.TrialPruned:
                log_seconds()
                run.end("FINISHED", {"bru.state": "pruned"})
                raise
            except NonFiniteLossError as exc:
                trial.set_user_attr("failure", str(exc))
                log_seconds()
                run.end("FAILED", {"bru.failure": str(exc)})
                raise
            except BaseException as exc:
                run.end("FAILED", {"bru.failure": f"interrupted ({type(exc).__name__}: {exc})"[:500]})
                raise
            value = history.final[metric]
            for key in ("train_loss", "val_loss", "val_error"):
                if history.final.get(key) is not None:
                    trial.set_user_attr(key, history.final[key])
            run.log_metrics({f"final_{k}": v for k, v in history.final.items()}, step=config.epochs)
            log_seconds()
            run.end("FINISHED", {"bru.state": "complete"})
            assert value is not None
            return value

        started = time.perf_counter()
        numbers: list[int] = []
        try:
            with _quiet_optuna():
                study.optimize(
                    objective, n_trials=1, catch=(NonFiniteLossError, _Excess), gc_after_trial=False,
                    callbacks=[lambda _study, frozen: numbers.append(frozen.number)],
                )  # fmt: skip
            last = study._storage.get_trial(
                study._storage.get_trial_id_from_study_id_trial_number(study._study_id, numbers[-1])
            )
        except Exception as exc:
            failure = _storage_failure(exc)
            if failure is None:
                raise
            # The database went away mid-trial (a restart, a lost connection): finished
            # trials are safe in it; the one in flight is failed by its heartbeat and retried.
            first = str(failure).strip().splitlines()[0][:200] if str(failure).strip() else type(failure).__name__
            raise StoreFailedError(
                f"Optuna storage {shown_url(self.settings.optuna)} failed during a trial of {study.study_name} ({first}); "
                "finished trials are kept: run the same command again to resume"
            ) from None
        if last.user_attrs.get("excess"):
            return None
        outcome = TrialOutcome(
            last.number, last.state.name.lower(), last.value, dict(last.params), time.perf_counter() - started
        )
        self.outcomes.append(outcome)
        return outcome

    def best_value(self) -> float | None:
        best = _best(self.study)
        return best.value if best else None

    def finish(self) -> StudyResult:
        """Close the study's MLflow side (best parameters, counts) once its budget is done."""
        _reconcile(self.tracker, self.spec, self.study)  # trials failed by heartbeat meanwhile
        best = _best(self.study)
        summary = _summary(self.study, self.budget)
        self.tracker.finish_study(self.parent, best.params if best else None, best.value if best else None, summary)
        self.tracker.flush()
        return StudyResult(
            self.study.study_name,
            self.task,
            self.activation,
            mlflow_run_id=self.parent,
            best_value=best.value if best else None,
            best_params=dict(best.params) if best else None,
            best_trial=best.number if best else None,
            trials=list(self.outcomes),
            **summary,
        )

    def close(self) -> None:
        if self._own_tracker:
            self.tracker.close()

    def __enter__(self) -> StudySession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_study(
    spec: CampaignSpec,
    task: str,
    activation: str,
    *,
    settings: Settings | None = None,
    tracker: Tracker | None = None,
    data: Data | None = None,
    on_trial: TrialCallback | None = None,
    on_wait: Callable[[BudgetState], None] | None = None,
    device: str | None = None,
) -> StudyResult:
    """Run (or resume) the study of one task x activation until its budget is reached,
    holding the campaign's run RUNNING meanwhile (Tracker.working_on)."""
    with (
        StudySession(spec, task, activation, settings=settings, tracker=tracker, data=data) as session,
        session.tracker.working_on(spec.name),
    ):
        while (step := session.next_step()) != "done":
            if step == "wait":
                if on_wait is not None:
                    on_wait(session.state())
                session.wait()
                continue
            outcome = session.run_trial(device=device)
            if outcome is not None and on_trial is not None:
                on_trial(outcome, session.state(), session.best_value())
        return session.finish()


class _quiet_optuna:
    """Optuna logs every trial at INFO and every caught failure with a traceback at
    WARNING; bru reports trials itself."""

    def __enter__(self) -> None:
        self._level = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.ERROR)

    def __exit__(self, *exc: object) -> None:
        optuna.logging.set_verbosity(self._level)


# --------------------------------------------------------------------------- repeats


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
    final = {k.removeprefix("final_"): v for k, v in run.data.metrics.items() if k.startswith("final_")}
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
        tracker.record_campaign(spec.name, spec.model_dump(mode="json"), spec.protocol())
        with tracker.working_on(spec.name):
            study = open_study(spec, task, activation, settings)
            best = _best(study)
            if best is None:
                raise BruError(
                    f"study {study.study_name} has no completed trial yet: run the search before the repeats"
                )
            params = dict(best.params)
            finished = tracker.repeat_runs(spec.name, study.study_name)
            wanted = seeds if seeds is not None else spec.repeats.seeds
            outcomes: dict[int, RepeatResult] = {}
            for seed in wanted:
                if seed in finished:  # finished, or diverged: either is the outcome of this seed
                    outcomes[seed] = _repeat_result(finished[seed], reused=True)
                    if on_seed is not None:
                        on_seed(outcomes[seed])
            configs = [
                _repeat_config(spec, task, activation, params, seed, device) for seed in wanted if seed not in finished
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
            packed = train_in_packs(configs, pack, log_epoch, None, data, True, diverged)
            for member in packed:
                if member.finished:
                    closed[member.seed] = self._finish(runs[member.seed], member.history, data, config)
        except BaseException as exc:
            for seed, run in runs.items():
                if seed not in closed:
                    run.end("FAILED", {"bru.failure": f"interrupted ({type(exc).__name__}: {exc})"[:500]})
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
        run.log_metrics({f"final_{k}": v for k, v in history.final.items()}, step=config.epochs)
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
    metric = validation_metric(spec.task(task).objective)
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


# --------------------------------------------------------------------------- progress


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
        store = storage(settings)
        names = set(optuna.get_all_study_names(storage=store))
        experiment = tracker.client.get_experiment_by_name(spec.name)
        repeats: dict[str, int] = {}
        if experiment is not None:
            for run in tracker.repeat_outcomes(spec.name):
                study = run.data.tags.get("bru.study", "")
                repeats[study] = repeats.get(study, 0) + 1
        for t in spec.tasks:
            for a in spec.labels:
                name = spec.study_name(t.name, a)
                done, best = 0, None
                if name in names:
                    with _quiet_optuna():
                        study = optuna.load_study(study_name=name, storage=store)
                    done = budget_state(study, spec.search.trials).done
                    trial = _best(study)
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
