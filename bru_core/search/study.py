"""One Optuna study per task x activation: its sampler and pruner (the same for every
activation), the objective that runs one trial, and the session that runs trials until
the budget (search/budget.py) is reached.

``run_study`` resumes what is there (``load_if_exists``): completed trials are never
repeated. Each trial is one MLflow child run of the study's run.
"""

from __future__ import annotations

import binascii
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from bru_core.config import TrainConfig
from bru_core.data import Data
from bru_core.errors import NonFiniteLossError
from bru_core.search.budget import BeyondBudget, BudgetState, admit, budget_state, budget_summary
from bru_core.search.campaign import record_campaign
from bru_core.search.storage import no_experimental_warnings, open_storage, quiet_optuna, store_failures_told
from bru_core.settings import Settings, get_settings
from bru_core.spec import CampaignSpec, ParamSpec
from bru_core.tracking import RunLogger, Tracker, as_final, interrupted
from bru_core.training import History, prepare_data, resolve_device, train

_INT_FIELDS = {name for name, f in TrainConfig.model_fields.items() if f.annotation in (int, int | None)}

# --------------------------------------------------------------------------- sampler, pruner, study


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
    """The study of a task x activation, created or resumed, saying what it is: its
    objective's name (``set_metric_names``, which optuna-dashboard shows on its axes) and
    user attributes ``campaign``, ``task``, ``activation``, ``metric`` and ``budget`` (the
    trials it gets), shown by optuna-dashboard with the study. Every worker opens the study:
    each is written only when missing or different, so a resumed study costs two reads."""
    with quiet_optuna():  # "a new study created" / "using an existing study" at INFO
        study = optuna.create_study(
            study_name=spec.study_name(task, activation),
            storage=open_storage(settings),
            sampler=_sampler(spec),
            pruner=_pruner(spec, task),
            direction="minimize",
            load_if_exists=True,
        )
    metric = spec.validation_metric(task)
    if study.metric_names != [metric]:
        with no_experimental_warnings():
            study.set_metric_names([metric])
    about = {
        "campaign": spec.name,
        "task": task,
        "activation": activation,
        "metric": metric,
        "budget": spec.search.trials,
    }
    present = study.user_attrs
    for key, value in about.items():
        if present.get(key) != value:
            study.set_user_attr(key, value)
    return study


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:
        return None


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


# --------------------------------------------------------------------------- one trial


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
class Objective:
    """One trial of ``session``'s study, as Optuna calls it: admitted within the budget,
    its parameters suggested, trained with the validation split only (no test number
    exists for a trial), logged as a child of the study's MLflow run. ``device``
    overrides the training device."""

    session: StudySession
    on_start: Callable[[int], None] | None = None
    device: str | None = None

    def __call__(self, trial: optuna.Trial) -> float:
        session, spec = self.session, self.session.spec
        admit(session.study, trial, session.budget)
        if self.on_start is not None:
            self.on_start(trial.number)
        params = suggest(trial, session.space)
        config = spec.train_config(session.task, session.activation, params, seed=spec.search.seed)
        if self.device is not None:
            config = config.model_copy(update={"device": self.device})
        data = session.data_for(config)
        run = self._start_run(trial, {**params, "activation": config.activation})
        return self._train(trial, run, config, data)

    def _start_run(self, trial: optuna.Trial, params: dict[str, Any]) -> RunLogger:
        """The trial's MLflow run, tagged with the trial it retries, if any."""
        session = self.session
        with no_experimental_warnings():
            retried = RetryHeartbeatStaleTrialCallback.retried_trial_number(
                session.study._storage.get_trial(trial._trial_id)
            )
        tags: dict[str, Any] = {
            "bru.campaign": session.spec.name, "bru.task": session.task, "bru.activation": session.activation,
        }  # fmt: skip
        if retried is not None:
            tags["bru.retry_of"] = retried
        run = session.tracker.start_trial(
            session.spec.name, session.parent, session.study.study_name, trial.number, params, tags
        )
        trial.set_user_attr("mlflow_run_id", run.run_id)
        return run

    def _train(self, trial: optuna.Trial, run: RunLogger, config: TrainConfig, data: Data) -> float:
        """Train, report each epoch to the pruner, and close the run whatever happens: pruned,
        failed on its own account (a non-finite loss: counted), interrupted, or complete."""
        metric = self.session.metric

        def on_epoch(record: Any) -> None:
            run.log_epoch(record, lr=config.schedule != "none")
            trial.report(getattr(record, metric), record.epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {record.epoch}")

        training_started = time.perf_counter()

        def log_seconds() -> None:  # time in train(), for `bru bench pipeline`'s overhead figures
            run.log_metrics({"seconds": time.perf_counter() - training_started})

        try:
            history: History = train(config, on_epoch=on_epoch, data=data, evaluate_test=False)
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
            run.end("FAILED", {"bru.failure": interrupted(exc)})
            raise
        value = history.final[metric]
        for key in ("train_loss", "val_loss", "val_error"):
            if history.final.get(key) is not None:
                trial.set_user_attr(key, history.final[key])
        run.log_metrics(as_final(history.final), step=config.epochs)
        log_seconds()
        run.end("FINISHED", {"bru.state": "complete"})
        assert value is not None
        return value


# --------------------------------------------------------------------------- the study, trial by trial


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


TrialCallback = Callable[[TrialOutcome, BudgetState, float | None], None]


def _told_store_failures(method: Callable[..., Any]) -> Callable[..., Any]:
    """A session method whose storage failure (a database restart, a lost connection)
    reaches the user as bru's one line, wherever in the loop it lands."""

    @functools.wraps(method)
    def guarded(self: StudySession, *args: Any, **kwargs: Any) -> Any:
        with store_failures_told(self.settings.optuna, self.name):
            return method(self, *args, **kwargs)

    return guarded


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
        self.metric = spec.validation_metric(self.task)
        record_campaign(self.tracker, spec)
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

    @_told_store_failures
    def state(self) -> BudgetState:
        return budget_state(self.study, self.budget)

    @_told_store_failures
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

    @_told_store_failures
    def wait(self) -> None:
        time.sleep(min(self.settings.heartbeat_seconds, 2.0))
        fail_stale_trials(self.study)

    @_told_store_failures
    def run_trial(
        self, on_start: Callable[[int], None] | None = None, device: str | None = None
    ) -> TrialOutcome | None:
        """Run one trial (None: the trial asked was beyond the budget and closed at once)."""
        study = self.study
        started = time.perf_counter()
        numbers: list[int] = []
        with quiet_optuna():
            study.optimize(
                Objective(self, on_start, device), n_trials=1, catch=(NonFiniteLossError, BeyondBudget),
                gc_after_trial=False, callbacks=[lambda _study, frozen: numbers.append(frozen.number)],
            )  # fmt: skip
        last = study._storage.get_trial(
            study._storage.get_trial_id_from_study_id_trial_number(study._study_id, numbers[-1])
        )
        if last.user_attrs.get("excess"):
            return None
        outcome = TrialOutcome(
            last.number, last.state.name.lower(), last.value, dict(last.params), time.perf_counter() - started
        )
        self.outcomes.append(outcome)
        return outcome

    @_told_store_failures
    def best_value(self) -> float | None:
        best = best_trial(self.study)
        return best.value if best else None

    @_told_store_failures
    def finish(self) -> StudyResult:
        """Close the study's MLflow side (best parameters, counts) once its budget is done."""
        _reconcile(self.tracker, self.spec, self.study)  # trials failed by heartbeat meanwhile
        best = best_trial(self.study)
        summary = budget_summary(self.study, self.budget)
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
