"""What is behind a run: the versions, the machine and the commit of the code that made it;
and the tags MLflow's own UI shows for a run (its Source, Version and User columns), which
``MlflowClient.create_run`` does not add by itself."""

from __future__ import annotations

import functools
import getpass
import os
import platform
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlflow.entities import SourceType
from mlflow.utils.credentials import read_mlflow_creds
from mlflow.utils.mlflow_tags import (
    MLFLOW_GIT_COMMIT,
    MLFLOW_GIT_DIRTY,
    MLFLOW_SOURCE_NAME,
    MLFLOW_SOURCE_TYPE,
    MLFLOW_USER,
)

import bru_core

_CHECKOUT = Path(bru_core.__file__).resolve().parent.parent
# A word of a command line kept in a run's source name: a (sub)command such as `campaign`
# or `run`. Options, paths and anything else (a URL with a password, a token) end the name.
_COMMAND_WORD = re.compile(r"[a-z][a-z0-9_-]{0,30}")
_SOURCE_WORDS = 3  # `bru campaign run`


def _git(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=5)


@functools.cache
def git_state(folder: Path) -> tuple[str, bool] | None:
    """The commit checked out in ``folder`` and whether tracked files differ from it; None
    outside git. Asked once per process and folder: the code a process runs is the code it
    imported when it started, whatever the checkout becomes afterwards."""
    try:
        commit = _git(folder, "rev-parse", "HEAD")
        if commit.returncode != 0:
            return None
        dirty = _git(folder, "status", "--porcelain", "--untracked-files=no")
        return commit.stdout.strip(), bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None


def git_commit(path: Path | None = None) -> str | None:
    """The commit of the bru-lab checkout, with '-dirty' for local changes; None outside git."""
    state = git_state((path or _CHECKOUT).resolve())
    if state is None:
        return None
    commit, dirty = state
    return commit + ("-dirty" if dirty else "")


def _source_name(argv: Sequence[str], environ: Mapping[str, str]) -> str:
    """What started the process, as a user would name it: the Prefect flow a worker runs
    (``bru-campaign``), else the program and its (sub)commands (``bru campaign run``,
    ``bru search``, ``pytest``), never its options or arguments (they may hold secrets)."""
    if "PREFECT__FLOW_RUN_ID" in environ:  # a worker's flow run (Prefect's worker sets these)
        return environ.get("PREFECT__FLOW_NAME") or "prefect flow run"
    if not argv or not argv[0]:
        return "<console>"  # as MLflow names it
    program = Path(argv[0])
    words = [program.parent.name if program.name == "__main__.py" else program.name]  # python -m pytest: pytest
    if words[0] == "-c":
        words = ["python -c"]
    for word in argv[1:_SOURCE_WORDS]:
        if not _COMMAND_WORD.fullmatch(word):
            break
        words.append(word)
    return " ".join(words)


def _user() -> str:
    """The user MLflow itself records: the tracking login if there is one, else the OS user."""
    try:
        return read_mlflow_creds().username or getpass.getuser()
    except (ImportError, KeyError, OSError):  # no login name (a container's uid without a passwd entry)
        return "unknown"


@functools.cache
def source_tags() -> dict[str, str]:
    """MLflow's own provenance tags, the same for every run this process creates: the
    entry point (``mlflow.source.name``), LOCAL or JOB (a Prefect worker's flow run), the
    user, and the commit of the bru-lab checkout with whether it had local changes. Worked
    out once per process (git is a subprocess)."""
    job = "PREFECT__FLOW_RUN_ID" in os.environ
    tags = {
        MLFLOW_SOURCE_NAME: _source_name(sys.argv, os.environ),
        MLFLOW_SOURCE_TYPE: SourceType.to_string(SourceType.JOB if job else SourceType.LOCAL),
        MLFLOW_USER: _user(),
    }
    state = git_state(_CHECKOUT)
    if state is not None:
        tags[MLFLOW_GIT_COMMIT] = state[0]
        tags[MLFLOW_GIT_DIRTY] = str(state[1]).lower()
    return tags


def environment(device: str) -> dict[str, Any]:
    """Versions, machine and commit behind a run."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    packages = {}
    for name in ("bru-lab", "torch", "torchvision", "numpy", "optuna", "mlflow", "scikit-learn"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    return {
        "bru_lab": packages.pop("bru-lab") or bru_core.__version__,
        "packages": packages,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "cpu_threads": torch.get_num_threads(),
        "git_commit": git_commit(),
        "hostname": platform.node(),
        "pid": os.getpid(),
    }
