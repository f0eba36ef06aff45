"""Processes the tests start in groups of their own (start_new_session=True)."""

from __future__ import annotations

import os


def group_alive(pgid: int) -> bool:
    """Whether any process of the group is left (signal 0 reaches none once all are gone)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
