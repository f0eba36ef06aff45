"""What every part of tracking says to the store the same way: its error, the quoting of
values in MLflow's search filters, and the canonical JSON of digests and tags."""

from __future__ import annotations

import json
from typing import Any

from bru_core.errors import BruError


class TrackingError(BruError):
    """The tracking store cannot be reached or refused a write."""


def quote(value: str) -> str:
    """A value for an MLflow search filter, quoted and escaped."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)
