"""The layering of docs/architecture.md: every bru_core module imports only modules on
lower floors (imports inside functions included), and nothing but the CLI imports Prefect
or flows/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "bru_core"
FLOORS = {
    "errors": 0, "settings": 0, "stats": 0, "native": 0,
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
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            if node.module == "bru_core":
                names |= {f"bru_core.{alias.name}" for alias in node.names}
    return names


MODULES = sorted(p.stem for p in PACKAGE.glob("*.py"))


def test_every_module_has_a_floor():
    assert set(MODULES) == set(FLOORS), "add new modules to FLOORS (and to docs/architecture.md)"


@pytest.mark.parametrize("module", MODULES)
def test_imports_point_down(module):
    floor = FLOORS[module]
    for name in _imports(PACKAGE / f"{module}.py"):
        if name.startswith("bru_core."):
            other = name.split(".")[1]
            assert FLOORS[other] < floor, f"{module} (floor {floor}) imports {other} (floor {FLOORS[other]})"
        if module != "cli":
            assert not name.startswith(("prefect", "flows")), f"{module} imports {name}: only the CLI may"


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
