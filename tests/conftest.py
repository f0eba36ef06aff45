"""Shared fixtures: every test runs with its own BRU_HOME, so nothing touches ./.bru."""

from __future__ import annotations

import pytest

pytest_plugins = ["tests.servers"]  # real PostgreSQL and MLflow servers for integration tests


@pytest.fixture(autouse=True)
def bru_home(tmp_path, monkeypatch):
    home = tmp_path / "bru-home"
    monkeypatch.setenv("BRU_HOME", str(home))
    monkeypatch.delenv("BRU_DATA_DIR", raising=False)
    return home
