"""What a campaign run in the user's terminal prints: bru's own progress, bru's own
warnings and one error line. Every other log record goes to the campaign's log file, whose
path bru prints: Prefect's flow and task runs (a failed task's traceback, each retry), its
client, its temporary server, and the libraries' warnings (Optuna, MLflow, torch,
SQLAlchemy), Python's ``warnings`` included.

Prefect's temporary server is a subprocess that writes to the same terminal, so the
routing is a logging configuration file, which Prefect reads in both processes
(``PREFECT_LOGGING_SETTINGS_PATH``): Prefect's own default with its console handler
replaced by the log file. It must be in place before Prefect is imported."""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import logging
import os
import sys
import tempfile
from pathlib import Path

import yaml

SETTINGS_ENV = "PREFECT_LOGGING_SETTINGS_PATH"
_DATED = "%(asctime)s | %(levelname)-7s | "
# The log file's lines: Prefect's console format, with the date (PrefectFormatter's arguments).
_DATED_FORMATS = {
    "format": _DATED + "%(name)s - %(message)s",
    "flow_run_fmt": _DATED + "Flow run %(flow_run_name)r - %(message)s",
    "task_run_fmt": _DATED + "Task run %(task_run_name)r - %(message)s",
}
_CONSOLES = ("console", "debug")  # the handlers of Prefect's configuration that write to the terminal


class CampaignLogHandler(logging.FileHandler):
    """The campaign's log file, made with its folder at the first record: a healthy run
    that logs nothing leaves no file."""

    def __init__(self, filename: str, encoding: str = "utf-8") -> None:
        super().__init__(filename, encoding=encoding, delay=True)

    def _open(self):
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


def _dated_formatter() -> logging.Formatter:
    from prefect.logging.formatters import PrefectFormatter

    return PrefectFormatter(**_DATED_FORMATS)


def _prefect_default() -> dict:
    """Prefect's own logging configuration (prefect/logging/logging.yml), read without
    importing Prefect, which would configure logging from it at once."""
    spec = importlib.util.find_spec("prefect")
    assert spec is not None and spec.origin is not None, "prefect is a dependency of flows/"
    return yaml.safe_load((Path(spec.origin).parent / "logging" / "logging.yml").read_text())


def campaign_logging(path: Path) -> dict:
    """Prefect's configuration with every console handler replaced by the log file at
    ``path`` (created with its first record), and bru's own records at WARNING and above
    also on stderr, one line each."""
    config = _prefect_default()
    config["formatters"]["dated"] = {"()": "prefect.logging.formatters.PrefectFormatter", **_DATED_FORMATS}
    config["formatters"]["bru"] = {"format": "%(levelname)s: %(message)s"}
    # Prefect substitutes $SETTING in this file: a dollar in the path is written $$.
    filename = str(path).replace("$", "$$")
    config["handlers"] = {name: handler for name, handler in config["handlers"].items() if name not in _CONSOLES}
    config["handlers"]["campaign_file"] = {
        "level": 0, "class": "flows.console.CampaignLogHandler", "formatter": "dated", "filename": filename,
    }  # fmt: skip
    config["handlers"]["bru_console"] = {
        "level": "WARNING", "class": "logging.StreamHandler", "formatter": "bru", "stream": "ext://sys.stderr",
    }  # fmt: skip
    for logger in [*config["loggers"].values(), config["root"]]:
        handlers = logger.get("handlers", [])
        if any(h in _CONSOLES for h in handlers):
            logger["handlers"] = [h for h in handlers if h not in _CONSOLES] + ["campaign_file"]
    config["loggers"]["bru"] = {"level": "NOTSET", "handlers": ["bru_console"]}  # and on to the file, by the root
    return config


def route_logs_to(path: Path | str) -> None:
    """From now on in this process and in the Prefect server it starts, log records go to
    ``path`` and not to the console (bru's own warnings excepted). Before Prefect is
    imported, through its logging settings; after (bru's CLI called in a process that
    imported Prefect already), in this process only. A user's own
    PREFECT_LOGGING_SETTINGS_PATH is left as it is."""
    logging.captureWarnings(True)  # warnings.warn -> the py.warnings logger -> the file
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")  # no console handler of its own from now on
    if os.environ.get(SETTINGS_ENV):
        return
    if "prefect" in sys.modules:  # its logging is configured already
        _route_in_this_process(Path(path))
        return
    descriptor, name = tempfile.mkstemp(prefix="bru-logging-", suffix=".yml")  # not in the bru home: nothing left there
    with os.fdopen(descriptor, "w") as settings:
        yaml.safe_dump(campaign_logging(Path(path)), settings, sort_keys=False)
    os.environ[SETTINGS_ENV] = name
    atexit.register(_remove, Path(name))  # read at start-up only, by this process and the server's


def _route_in_this_process(path: Path) -> None:
    handler = CampaignLogHandler(str(path))
    handler.setFormatter(_dated_formatter())
    root = logging.getLogger()
    for existing in root.handlers:
        if _writes_to_console(existing):
            existing.addFilter(_OnlyBru())
    root.addHandler(handler)
    libraries_to_the_log()


class _OnlyBru(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.name == "bru" or record.name.startswith("bru.")


def _writes_to_console(handler: logging.Handler) -> bool:
    """A handler with a stream that is not a file's (MLflow's writes through a stream
    object of its own, torch's is a stderr handler of its own) and not bru's. Prefect's API
    handlers have no stream and stay."""
    return (
        hasattr(handler, "stream")
        and not isinstance(handler, logging.FileHandler)
        and handler.get_name() != "bru_console"
    )


def libraries_to_the_log() -> None:
    """Loggers that libraries gave a console handler of their own, not propagating
    (Optuna's, MLflow's, and those MLflow sets up for SQLAlchemy and Alembic), send their
    records on to the log file instead. Call it once they are imported."""
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if not isinstance(logger, logging.Logger) or name == "bru" or name.startswith("bru."):
            continue
        consoles = [h for h in logger.handlers if _writes_to_console(h)]
        for handler in consoles:
            logger.removeHandler(handler)
        if consoles:
            logger.propagate = True


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
