"""The layering of docs/architecture.md: every bru_core module imports only modules on
lower floors (imports inside functions included), and nothing but the CLI's orchestrating
files imports Prefect or flows/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "bru_core"
FLOORS = {
    "errors": 0, "settings": 0, "stats": 0, "native": 0, "processes": 0,
    "kernels": 1, "data": 1, "tracking": 1, "results": 1, "locks": 1,
    "activations": 2, "report": 2,
    "initialisation": 3,
    "models": 4,
    "config": 5,
    "training": 6, "spec": 6,
    "packed": 7, "aggregate": 7,
    "search": 8, "bench": 8, "plots": 8, "power": 8,
    "cli": 10, "__main__": 11, "__init__": -1,
}  # fmt: skip


def _imports(path: Path) -> set[str]:
    """Absolute names of what ``path`` imports; relative imports resolved against its package."""
    package = ".".join(path.parent.relative_to(PACKAGE.parent).parts)  # bru_core, bru_core.cli, flows
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # from . import x, from .runs import y
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            names.add(module)
            if module.count(".") <= 1 and module.startswith("bru_core"):  # from bru_core(.pkg) import name
                names |= {f"{module}.{alias.name}" for alias in node.names}
    return names


# A module is a file of bru_core/ or a package in it (bru_core/cli/, ...): every file of a
# package has the package's floor and may import its siblings.
MODULES = sorted({p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in PACKAGE.glob("*.py")}
                 | {p.parent.name for p in PACKAGE.glob("*/__init__.py") if p.parent.name in FLOORS})  # fmt: skip
FILES = sorted(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts)
# The only files of bru_core/ that may import Prefect or flows/: the CLI's commands that
# orchestrate (run, submit or deploy flows, start workers) and what readies Prefect for them.
ORCHESTRATING = {"cli/_prefect.py", "cli/bench_campaign.py", "cli/campaign.py", "cli/service.py"}


def _module_of(file: str) -> str:
    return file.split("/")[0].removesuffix(".py")


def test_every_module_has_a_floor():
    assert set(MODULES) == set(FLOORS), "add new modules to FLOORS (and to docs/architecture.md)"
    assert {_module_of(f) for f in FILES} <= set(FLOORS), "a package of bru_core/ needs a floor"
    assert not ORCHESTRATING - set(FILES), "ORCHESTRATING names a file that is not there"


@pytest.mark.parametrize("file", FILES)
def test_imports_point_down(file):
    module = _module_of(file)
    floor = FLOORS[module]
    for name in _imports(PACKAGE / file):
        if name.startswith("bru_core."):
            other = name.split(".")[1]
            if other == module:  # a sibling in the same package
                continue
            assert FLOORS[other] < floor, f"{file} (floor {floor}) imports {other} (floor {FLOORS[other]})"
        if file not in ORCHESTRATING:
            assert not name.startswith(("prefect", "flows")), f"{file} imports {name}: only {sorted(ORCHESTRATING)} may"


FLOWS = Path(__file__).resolve().parent.parent / "flows"


@pytest.mark.parametrize("module", sorted(p.stem for p in FLOWS.glob("*.py")))
def test_flows_hold_no_maths(module):
    """Orchestration only: no numerics or model code in flows/ (gpu.py asks torch how many
    GPUs there are, nothing more)."""
    imports = _imports(FLOWS / f"{module}.py")
    allowed_torch = {"torch"} if module == "gpu" else set()
    assert not {name for name in imports if name.split(".")[0] in ("torch", "numpy", "scipy")} - allowed_torch
    assert not {
        name
        for name in imports
        if name.startswith(("bru_core.training", "bru_core.models", "bru_core.stats", "bru_core.activations"))
    }
