"""Shared fixtures: every test runs with its own BRU_HOME, so nothing touches ./.bru; and the
digits data set, loaded once per test module."""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["tests.servers"]  # real PostgreSQL and MLflow servers for integration tests

# Prefect's temporary server (a flow called without PREFECT_API_URL) starts in 10-20 s on two
# idle cores and gets 20 s by default: on a busy CI machine that fails tests for nothing.
# bru's CLI sets the same for its users (bru_core/cli/_prefect.py).
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


@pytest.fixture(autouse=True)
def bru_home(tmp_path, monkeypatch):
    home = tmp_path / "bru-home"
    monkeypatch.setenv("BRU_HOME", str(home))
    monkeypatch.delenv("BRU_DATA_DIR", raising=False)
    return home


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The 8x8 digits, loaded once per test module."""
    from bru_core.data import load_data

    return load_data("digits", tmp_path_factory.mktemp("data"))
