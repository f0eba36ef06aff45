"""Where bru-lab keeps its files, from BRU_* environment variables.

BRU_HOME (default ./.bru) holds everything of an embedded installation; BRU_DATA_DIR
(default <home>/data) holds the data sets. Command-line options override both.
"""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BRU_", extra="ignore")

    home: Path = Path(".bru")
    data_dir: Path | None = None

    @property
    def data_path(self) -> Path:
        return self.data_dir if self.data_dir is not None else self.home / "data"


def get_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit (non-None) overrides on top."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
