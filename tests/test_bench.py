"""The speed benchmarks' commands (bru bench estimate, pipeline, scale): they run, their
JSON has the documented fields, and bad options or stores give one clear line and exit 2.
The figures themselves go to docs/benchmarks.md; no test asserts a time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.cli import run

ROOT = Path(__file__).resolve().parent.parent
SMOKE = str(ROOT / "configs" / "smoke.yaml")


def test_estimate_smoke_json(capsys):
    code, out, _ = run(capsys, "bench", "estimate", SMOKE, "--batches", "1", "--json")
    assert code == 0
    rows = json.loads(out.strip().splitlines()[-1])
    *studies, total = rows
    assert [(r["task"], r["activation"]) for r in studies] == [("digits/mlp4", "relu"), ("digits/mlp4", "eru:2")]
    for r in studies:  # 3 trials unpacked, the 2 repeat seeds as one pack
        assert r["seconds_per_epoch"] > 0 and r["pack"] == 2 and r["repeat_seconds_per_epoch"] > 0
        per_epoch_hours = r["grid_hours"] / r["seconds_per_epoch"]
        expected = (3 * r["seconds_per_epoch"] + 2 * r["repeat_seconds_per_epoch"]) * per_epoch_hours
        assert r["campaign_hours"] == pytest.approx(expected)
    assert total["task"] == "total" and total["grid_hours"] == pytest.approx(sum(r["grid_hours"] for r in studies))


def test_bench_packed_json(capsys):
    code, out, _ = run(
        capsys, "bench", "packed", "--dataset", "digits", "--synthetic", "--models", "mlp2,lenet5", "--seeds", "2",
        "--rounds", "1", "--n-train", "256", "--json",
    )  # fmt: skip
    assert code == 0
    result = json.loads(out.strip().splitlines()[-1])
    assert [(r["model"], r["seeds"], r["pack"], r["n_train"]) for r in result["packed"]] == [
        ("mlp2", 2, 2, 256), ("lenet5", 2, 2, 256)
    ]  # fmt: skip
    for r in result["packed"]:
        assert r["sequential_s"] > 0 and r["packed_s"] > 0
        assert r["speedup"] == pytest.approx(r["sequential_s"] / r["packed_s"])
        assert r["single_peak_mb"] is None  # measured on CUDA only
    assert [r["strategy"] for r in result["conv_packing"]] == ["separate", "grouped", "loop", "vmap"]
    assert result["conv_packing"][0]["ratio_to_separate"] == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["estimate", SMOKE, "--precision", "fp16"], "--precision: must be fp32 or bf16"),
        (
            ["estimate", SMOKE, "--batches", "0"],
            "Invalid value for '--batches': Input should be greater than or equal to 1",
        ),
        (["estimate", "missing.yaml"], "missing.yaml"),
        (["packed", "--seeds", "0"], "--seeds"),
        (["packed", "--models", "mlp99x", "--dataset", "digits"], "model: unknown model 'mlp99x'"),
        (["scale", "--workers", "1,0"], "--workers: '0' is not a worker count"),
        (["scale", "--trials", "0"], "Invalid value for '--trials'"),
        (["scale", "--threads", "0"], "Invalid value for '--threads'"),
        (["train", "--workers", "-1"], "Invalid value for '--workers': Input should be greater than or equal to 0"),
        (["models", "--batches", "0"], "Invalid value for '--batches'"),
        (["tracking", "--epochs", "0"], "Invalid value for '--epochs'"),
        (
            ["scale", "--optuna-storage", "sqlite:////tmp/x.db"],
            "BRU_OPTUNA_STORAGE: bru bench scale needs a PostgreSQL",
        ),
        (
            ["scale", "--optuna-storage", "postgresql+psycopg://u@127.0.0.1:1/x", "--tracking-uri", "/tmp/mlruns"],
            "BRU_TRACKING_URI: bru bench scale needs an MLflow server",
        ),
    ],
)
def test_bad_bench_options(capsys, tmp_path, monkeypatch, args, message):
    monkeypatch.setenv("BRU_HOME", str(tmp_path / "home"))
    code, _, error = run(capsys, "bench", *args)
    assert code == 2 and message in error, error
    lines = [line for line in error.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ")


@pytest.mark.slow
def test_scale_on_postgresql(capsys, monkeypatch, tmp_path, postgres_url, mlflow_server):
    monkeypatch.setenv("BRU_HOME", str(tmp_path / "home"))
    code, out, error = run(
        capsys, "bench", "scale", "--workers", "1,2", "--trials", "6", "--optuna-storage", postgres_url,
        "--tracking-uri", mlflow_server.uri, "--json",
    )  # fmt: skip
    assert code == 0, error
    rows = json.loads(out.strip().splitlines()[-1])
    assert [(r["workers"], r["trials"]) for r in rows] == [(1, 6), (2, 6)]  # exactly the budget, shared
    assert rows[0]["speedup"] == 1.0 and all(r["trials_per_s"] > 0 and r["mean_trial_s"] > 0 for r in rows)


@pytest.mark.slow
def test_pipeline_on_the_smoke_campaign(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BRU_", "PREFECT_"))}
    done = subprocess.run(
        [sys.executable, "-m", "bru_core", "bench", "pipeline", SMOKE, "--json"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = json.loads(done.stdout.strip().splitlines()[-1])
    assert row["runs"] == 10  # 6 trials + 4 repeats, each with its training seconds
    assert row["prefect_start_s"] > 0 and row["wall_s"] > row["training_s"] > 0
    assert row["wall_over_training"] == pytest.approx(row["wall_s"] / row["training_s"])
    assert 0 < row["trial_fixed_s"] < row["wall_s"] and 0 < row["repeat_fixed_s"] < row["wall_s"]
    assert 0 < row["campaign_fixed_s"] < row["wall_s"]
