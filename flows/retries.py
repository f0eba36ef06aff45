"""Which failures a task retries: infrastructure (a lost connection, a store that is down,
a killed process) twice with backoff; deterministic ones (bad input, a diverging model,
a bug) never, so they are recorded as they are."""

from __future__ import annotations

RETRY_DELAYS = [10, 60]


def is_infrastructure(exc: BaseException) -> bool:
    from sqlalchemy.exc import InterfaceError, OperationalError

    from bru_core.errors import BruError, StoreFailedError
    from bru_core.tracking import TrackingError

    if isinstance(exc, (TrackingError, StoreFailedError)):  # a store went away: retrying resumes
        return True
    if isinstance(exc, BruError):
        return False
    return isinstance(exc, (ConnectionError, TimeoutError, OSError, OperationalError, InterfaceError))


def infrastructure_failure(task, task_run, state) -> bool:  # Prefect's retry_condition_fn signature
    try:
        state.result()
    except BaseException as exc:  # the exception the task raised
        return is_infrastructure(exc)
    return False
