"""``python -m bru_core`` is the ``bru`` command."""

from bru_core.cli import run

run()
