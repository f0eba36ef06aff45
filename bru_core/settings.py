"""Where bru-lab keeps its state, from BRU_* environment variables.

| variable | default | what |
| --- | --- | --- |
| BRU_HOME | ./.bru | everything of an embedded installation |
| BRU_DATA_DIR | <home>/data | data sets |
| BRU_TRACKING_URI | sqlite:///<home>/mlflow.db | MLflow tracking (any MLflow URI, e.g. http://host:5000) |
| BRU_OPTUNA_STORAGE | sqlite:///<home>/optuna.db | Optuna studies (any SQLAlchemy URL) |
| BRU_RESULTS_URL | sqlite:///<home>/results.db | aggregated results (any SQLAlchemy URL) |
| BRU_HEARTBEAT_SECONDS | 30 | how often a running trial proves it is alive |
| BRU_HEARTBEAT_GRACE_SECONDS | 120 | after this long without a heartbeat a trial is failed and retried |
| BRU_CAMPAIGN_LEASE_SECONDS | 90 | after this long unrenewed a dead campaign's lock is taken over (at once when it died on this machine) |
| BRU_GPU_LEASE_SECONDS | 300 | a dead worker's slot of the ``gpu`` limit goes back after this (at least 60) |
| BRU_SLOTS_PER_GPU | the pool's | trials that may share one of this machine's GPUs (`bru worker --slots-per-gpu`) |
| BRU_POOL_SLOTS_PER_GPU | 1 | the same for the pool, when BRU_SLOTS_PER_GPU is unset (`bru deploy --slots-per-gpu`) |
| BRU_REQUIRE_SHARED_STORES | false | refuse to run on the embedded stores (set by `bru deploy` for container pools) |
| BRU_KERNELS | auto | which ERU/ORU kernels run (bru_core.kernels): auto (the native op on the CPU, the fused kernels on CUDA), native, fused or eager |

Command-line options override them. A plain ``postgresql://`` URL means psycopg 3 (with
SQLAlchemy 2.1), which bru-lab installs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

KernelMode = Literal["auto", "fused", "eager", "native"]
KERNEL_MODES: tuple[str, ...] = ("auto", "fused", "eager", "native")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BRU_", extra="ignore")

    home: Path = Path(".bru")
    data_dir: Path | None = None
    tracking_uri: str | None = None
    optuna_storage: str | None = None
    results_url: str | None = None
    heartbeat_seconds: int = Field(30, ge=1)
    heartbeat_grace_seconds: int = Field(120, ge=2)
    campaign_lease_seconds: int = Field(90, ge=2)  # a dead campaign's lock is taken over after this (at once here)
    # A flow run in a throwaway container must not write to SQLite under BRU_HOME, which
    # vanishes with the container: `bru deploy` sets this for docker and kubernetes pools.
    require_shared_stores: bool = False
    # Kept as text and checked where used (flows/gpu.py): a bad value fails the GPU step in
    # its own words (BRU_SLOTS_PER_GPU: must be ...), not every command that reads settings.
    gpu_lease_seconds: str = "300"
    slots_per_gpu: str = ""
    pool_slots_per_gpu: str = ""
    # Which ERU/ORU kernels run. Text, checked where used (kernel_mode), as the GPU settings
    # are: a bad value fails the first ERU/ORU call, not every command that reads settings.
    kernels: str = "auto"

    def shared_stores(self) -> dict[str, str | None]:
        """The three store settings as given (None: the embedded SQLite default under home)."""
        return {"BRU_TRACKING_URI": self.tracking_uri, "BRU_OPTUNA_STORAGE": self.optuna_storage,
                "BRU_RESULTS_URL": self.results_url}  # fmt: skip

    def missing_shared_stores(self) -> list[str]:
        """The store settings left at their embedded default (a SQLite file under home)."""
        return [name for name, value in self.shared_stores().items() if not value]

    @property
    def home_path(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def data_path(self) -> Path:
        return self.data_dir if self.data_dir is not None else self.home_path / "data"

    @property
    def tracking(self) -> str:
        return self.tracking_uri or f"sqlite:///{self.home_path / 'mlflow.db'}"

    @property
    def artifact_location(self) -> str | None:
        """Where new experiments keep artifacts: under the home folder for a local store;
        None for a tracking server, which decides (and proxies them)."""
        if self.tracking.startswith(("http://", "https://", "databricks")):
            return None
        return (self.home_path / "mlartifacts").as_uri()

    @property
    def optuna(self) -> str:
        return self.optuna_storage or f"sqlite:///{self.home_path / 'optuna.db'}"

    @property
    def results(self) -> str:
        return self.results_url or f"sqlite:///{self.home_path / 'results.db'}"


def kernel_mode(value: str | None = None) -> KernelMode:
    """BRU_KERNELS (Settings.kernels) checked: one of KERNEL_MODES, blank for auto. With no
    ``value``, the variable alone: bru_core.kernels asks on every ERU/ORU call, where
    building Settings (a millisecond) would cost more than the kernel."""
    raw = os.environ.get("BRU_KERNELS", "auto") if value is None else value
    mode = raw.strip().lower() or "auto"
    if mode not in KERNEL_MODES:
        raise ValueError(f"BRU_KERNELS: must be one of {', '.join(KERNEL_MODES)}, got {mode!r}")
    return mode  # type: ignore[return-value]


def get_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit (non-None) overrides on top."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def shown_url(url: str, home: Path | None = None) -> str:
    """A store URL as it may be printed or logged: any password replaced by ***, and, with
    `home`, a store under that folder named relative to it (``sqlite:///$BRU_HOME/mlflow.db``)
    so that a published page carries no path of the machine it ran on."""
    if home is not None:
        prefix = f"sqlite:///{home}/"
        if url.startswith(prefix):
            return "sqlite:///$BRU_HOME/" + url[len(prefix) :]
    # The user part ends at the last "@": a password with "/", "#", "?" or "@" left
    # unencoded would make urlsplit cut the address inside it and print the rest.
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    userinfo, host = rest.rsplit("@", 1)
    if ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"


def sqlite_file(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL; None for any other URL."""
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None


def ensure_sqlite_folder(url: str) -> None:
    """Create the folder of a SQLite database file (SQLite creates the file, not its folder)."""
    path = sqlite_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
