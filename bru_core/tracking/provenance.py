"""What is behind a run: the versions, the machine and the commit of the code that made it."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import bru_core


def git_commit(path: Path | None = None) -> str | None:
    """The commit of the bru-lab checkout, with '-dirty' for local changes; None outside git."""
    folder = path or Path(bru_core.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


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
