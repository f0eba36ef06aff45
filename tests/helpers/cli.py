"""Running `bru`: in this process through main(), or as the installed command in a process of its own."""

from __future__ import annotations

import subprocess

import pytest

from bru_core.cli import main
from tests.helpers.paths import BRU, ROOT


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`bru ARGV` through main(): its exit code, stdout and stderr."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def bru(*args: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    """`bru ARGS` as a process, from the repository root, its output caught as text."""
    return subprocess.run([BRU, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
