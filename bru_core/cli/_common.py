"""What every command shares: the consoles, the progress bar, number formats, JSON output,
the options several commands take, and how a failure becomes one line and an exit code."""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bru_core.errors import BruError, ConfigError, NonFiniteLossError, StoreFailedError

# Wide tables when the output goes to a file or a pipe (rich would wrap them at 80).
out = Console(width=None if sys.stdout.isatty() else 160, soft_wrap=True)
err = Console(stderr=True)

# --------------------------------------------------------------------------- options

DatasetOpt = Annotated[str, typer.Option(help="digits (offline), mnist, cifar10, cifar100.")]
ModelOpt = Annotated[str, typer.Option(help="mlp4 ... mlp8 (any mlpN), sae, lenet5, convpool.")]
EpochsOpt = Annotated[int, typer.Option(min=1, help="Training epochs.")]
LrOpt = Annotated[float, typer.Option(help="Learning rate.")]
OptimizerOpt = Annotated[str, typer.Option(help="sgd, adam or adamw.")]
BatchOpt = Annotated[int, typer.Option(help="Batch size.")]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
DataDirOpt = Annotated[Path | None, typer.Option(help="Data folder (default: BRU_DATA_DIR or <BRU_HOME>/data).")]
DownloadOpt = Annotated[bool, typer.Option(help="Fetch MNIST/CIFAR into the data folder if missing (needs a network).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object (or list) instead of tables.")]

# The stores of a campaign
SpecArg = Annotated[Path, typer.Argument(help="Campaign spec (YAML), e.g. configs/quick.yaml.")]
HomeOpt = Annotated[Path | None, typer.Option(help="bru home folder (default: BRU_HOME or ./.bru).")]
TrackingOpt = Annotated[
    str | None, typer.Option(help="MLflow tracking URI (default: BRU_TRACKING_URI or sqlite under home).")
]
StorageOpt = Annotated[
    str | None, typer.Option(help="Optuna storage URL (default: BRU_OPTUNA_STORAGE or sqlite under home).")
]
ResultsOpt = Annotated[
    str | None, typer.Option(help="Results database URL (default: BRU_RESULTS_URL or sqlite under home).")
]

# --------------------------------------------------------------------------- output


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def mean_sd(values: Sequence[float | None], fmt: Callable[[float], str]) -> str:
    present = [v for v in values if v is not None]
    if not present:
        return "-"
    if len(present) == 1:
        return fmt(present[0])
    return f"{fmt(statistics.mean(present))} ± {fmt(statistics.stdev(present))}"


def progress_bar() -> Progress:
    """A progress display on stderr, shown only on a terminal and gone when done."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )


def _finite_json(value: Any) -> Any:
    """JSON has no infinities: a non-finite float (e.g. an estimate decided by diverged
    seeds) is written as the string "inf", "-inf" or "nan"."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_json(v) for v in value]
    return value


def print_json(payload: object) -> None:
    sys.stdout.write(json.dumps(_finite_json(payload), allow_nan=False) + "\n")


def comma_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def check_writable(path: Path | None, option: str) -> None:
    """Fail before any work if an output file could not be written."""
    if path is not None and not path.parent.is_dir():
        raise ConfigError(f"{option}: folder {path.parent} does not exist")


def write_atomically(path: Path, text: str) -> None:
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as tmp:
        tmp.write(text)
    os.replace(tmp.name, path)


# --------------------------------------------------------------------------- failures


def fail(message: str, code: int, exc: BaseException | None = None) -> int:
    """One line on stderr, ``error: ...``; the exit code to return."""
    notes = getattr(exc, "__notes__", [])  # e.g. where the details are
    err.print(f"error: {'; '.join([message, *notes])}", markup=False, highlight=False, soft_wrap=True)
    return code


def exit_code(exc: Exception) -> int | None:
    """The exit code of an expected failure, after its one line; None for an unexpected one."""
    if isinstance(exc, StoreFailedError):  # not bad input: the command can simply be run again
        return fail(str(exc), 1, exc)
    if isinstance(exc, BruError):
        return fail(str(exc), 2, exc)
    if isinstance(exc, NonFiniteLossError):
        return fail(f"training diverged: {exc}; try a lower --lr", 1, exc)
    # click's usage errors (bad option, bad value, missing argument), without
    # depending on click's private module path inside typer
    if type(exc).__name__ == "NoArgsIsHelpError":
        out.print(exc.format_message(), markup=False, highlight=False)  # type: ignore[attr-defined]
        return 0
    if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
        ctx = getattr(exc, "ctx", None)
        where = f"{ctx.command_path}: " if ctx is not None else ""
        message = " ".join(exc.format_message().split())
        return fail(f"{where}{message}", int(exc.exit_code))
    if type(exc).__name__ == "Abort":
        return fail("aborted", 1)
    return None
