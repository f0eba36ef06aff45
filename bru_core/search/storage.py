"""Optuna's storage: opened with heartbeats, its failures told from other errors, its
noise kept off the terminal; and the check that every store answers before a campaign."""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import optuna
import sqlalchemy.exc
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

from bru_core.errors import BruError, StoreFailedError
from bru_core.results import check_reachable as check_results_reachable
from bru_core.settings import Settings, ensure_sqlite_folder, shown_url
from bru_core.tracking import Tracker, check_server

_RETRIES = 1  # a trial lost with its worker is retried once (and does not count: search/budget.py)

# Also for good, for the calls bru's own modules make: catch_warnings (below) changes the
# process's filters and puts them back, so with trials on several threads one thread's
# exit can put back the filters in the middle of another's call.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning, module=r"bru_core\.")


@contextmanager
def no_experimental_warnings() -> Iterator[None]:
    """Heartbeats, their retry callback and metric names are marked experimental in Optuna;
    they are its documented way to survive a killed worker, and bru pins Optuna's major
    version, so the warnings are noise to our users."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


@contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna logs every trial at INFO and every caught failure with a traceback at
    WARNING; bru reports trials itself."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


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


def store_failed(exc: BaseException, url: str, study_name: str) -> StoreFailedError | None:
    """``exc`` as bru's one line when the database went away mid-trial (a restart, a lost
    connection): finished trials are safe in it; the one in flight is failed by its
    heartbeat and retried. None when ``exc`` is no storage failure."""
    failure = _storage_failure(exc)
    if failure is None:
        return None
    first = str(failure).strip().splitlines()[0][:200] if str(failure).strip() else type(failure).__name__
    return StoreFailedError(
        f"Optuna storage {shown_url(url)} failed during a trial of {study_name} ({first}); "
        "finished trials are kept: run the same command again to resume"
    )


@contextmanager
def store_failures_told(url: str, study_name: str) -> Iterator[None]:
    """Any storage failure inside the block becomes bru's one line (``store_failed``):
    a restart can land while a study reads its budget as well as during a trial."""
    try:
        yield
    except BruError:
        raise
    except Exception as exc:
        failed = store_failed(exc, url, study_name)
        if failed is None:
            raise
        raise failed from None


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


def open_storage(settings: Settings) -> RDBStorage:
    """Optuna's RDB storage with heartbeats: a trial whose worker stops beating for
    ``heartbeat_grace_seconds`` is failed and retried once."""
    _log_heartbeat_thread_failures()
    url = settings.optuna
    ensure_sqlite_folder(url)
    kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    for attempt in range(4):
        try:
            with no_experimental_warnings():
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
    open_storage(settings)
    with Tracker(settings) as tracker:
        tracker.check(server_checked=True)
