"""Where things are: the repository, the installed commands and the smoke campaign."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
BIN = Path(sys.executable).parent  # the virtual environment's commands: bru, prefect, mlflow
BRU = str(BIN / "bru")
SMOKE = str(ROOT / "configs" / "smoke.yaml")
