"""The errors of a spec: each one line naming the field path, with the closest valid key
suggested for an unknown one."""

from __future__ import annotations

import difflib

from bru_core.errors import ConfigError


class SpecError(ConfigError):
    """A campaign spec is invalid; the message names the field path."""


class SubKeyError(ValueError):
    """An error about one key inside the model being validated (which cannot know its path)."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(message)


class FieldError(ValueError):
    """An error at a path the check knows in full (``search.space.lr.low``)."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        super().__init__(f"{path}: {message}")


def suggest(key: str, valid: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, valid, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
