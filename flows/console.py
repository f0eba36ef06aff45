"""What a campaign run in the user's terminal prints: bru's own progress and one error
line, not Prefect's per-run records. Those (a failed task's traceback, each retry) go to
a log file instead, which the error line names."""

from __future__ import annotations

import logging
from pathlib import Path

_RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


class _NotRunRecords(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith(_RUN_LOGGERS)


def run_records_to_file(path: Path | str) -> None:
    """From now on in this process, flow- and task-run records go to ``path`` (created
    with the first record) and no longer to the console; Prefect's API still gets them."""
    from prefect.logging.formatters import PrefectFormatter
    from prefect.logging.handlers import PrefectConsoleHandler

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    to_file = logging.FileHandler(path, delay=True, encoding="utf-8")
    to_file.setFormatter(
        PrefectFormatter(  # Prefect's console format, with the date
            "%(asctime)s | %(levelname)-7s | %(name)s - %(message)s",
            flow_run_fmt="%(asctime)s | %(levelname)-7s | Flow run %(flow_run_name)r - %(message)s",
            task_run_fmt="%(asctime)s | %(levelname)-7s | Task run %(task_run_name)r - %(message)s",
        )
    )
    for name in _RUN_LOGGERS:
        logging.getLogger(name).addHandler(to_file)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler):
            handler.addFilter(_NotRunRecords())
