"""Typed errors that the command line turns into one clear line.

``BruError`` is bad input or a missing resource: the user can fix it, and the CLI exits 2.
``NonFiniteLossError`` is an outcome of training (divergence), not bad input: search
records it as a failed trial, the CLI exits 1.
"""

from __future__ import annotations

from pydantic import ValidationError


class BruError(Exception):
    """Bad input or a missing resource; the message says what would fix it."""


class ConfigError(BruError, ValueError):
    """A configuration field has a bad value; the message names the field."""


class DataNotFoundError(BruError, FileNotFoundError):
    """A data set is not on disk; the message names the folder, the files and the option."""


class StoreFailedError(BruError):
    """A store (the Optuna storage, the tracking server) failed in the middle of a run.
    What was finished is kept; running the same command again resumes (exit code 1)."""


class NonFiniteLossError(ArithmeticError):
    """Training produced a non-finite loss at a known epoch and batch."""

    def __init__(self, epoch: int, batch: int, loss: float) -> None:
        self.epoch, self.batch, self.loss = epoch, batch, loss
        super().__init__(f"non-finite training loss ({loss}) at epoch {epoch}, batch {batch}")


def config_error(exc: ValidationError, prefix: str = "") -> ConfigError:
    """The first problem of a pydantic ValidationError as one line: ``field.path: message``."""
    first = exc.errors()[0]
    path = ".".join(str(part) for part in (prefix, *first["loc"]) if part != "")
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    return ConfigError(f"{path}: {message}" if path else message)
