"""The `bru` command line: outputs, and one clear line with exit code 2 for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers.cli import run
from tests.helpers.paths import BIN


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    return lines[0]


# --------------------------------------------------------------------------- train


def test_train_json_is_one_object(capsys):
    code, out, _ = run(capsys, "train", "-a", "oru:3", "--epochs", "2", "--json")
    assert code == 0
    result = json.loads(out.strip().splitlines()[-1])
    for key in ("train_loss", "val_loss", "val_error", "test_loss", "test_error", "epochs", "seconds"):
        assert key in result
    assert result["epochs"] == 2 and result["activation"] == "oru:3"
    assert 0 <= result["test_error"] <= 1


def test_train_prints_a_table_and_writes_the_history(capsys, tmp_path):
    history = tmp_path / "history.json"
    code, out, _ = run(capsys, "train", "-a", "eru:2", "--epochs", "3", "--history", str(history))
    assert code == 0
    assert "digits/mlp4 eru:2" in out and "final: train loss" in out and "error quotient" in out
    saved = json.loads(history.read_text())
    assert [e["epoch"] for e in saved["epochs"]] == [1, 2, 3]
    assert saved["config"]["activation"] == "eru:2"
    assert not list(tmp_path.glob("*.tmp"))


def test_train_seeds_trains_one_pack_and_reports_each_seed_and_the_mean(capsys, tmp_path):
    history = tmp_path / "pack.json"
    code, out, _ = run(
        capsys, "train", "-a", "eru:2", "--epochs", "2", "--seeds", "0-2", "--json", "--history", str(history)
    )
    assert code == 0
    pack = json.loads(out.strip().splitlines()[-1])
    assert pack["seeds"] == [0, 1, 2] and pack["finished"] == 3 and pack["pack_sizes"] == [3]
    errors = [m["test_error"] for m in pack["members"]]
    assert pack["mean"]["test_error"] == pytest.approx(sum(errors) / 3)
    assert [m["epochs"] for m in json.loads(history.read_text())["members"]] != []
    # a member is the run `bru train --seed 1` trains
    code, out, _ = run(capsys, "train", "-a", "eru:2", "--epochs", "2", "--seed", "1", "--json")
    alone = json.loads(out.strip().splitlines()[-1])
    for key in ("train_loss", "val_loss", "test_loss"):
        assert pack["members"][1][key] == pytest.approx(alone[key], rel=1e-4)
    code, out, _ = run(capsys, "train", "--epochs", "1", "--seeds", "4,2")
    assert code == 0 and "2 seeds as one pack" in out and "mean ± sd" in out and "2 of 2 seeds finished" in out


def test_train_seeds_reports_a_diverged_seed_and_the_others(capsys, monkeypatch):
    import bru_core.packed as packed

    real_stop = packed.PackedTrainer._stop_diverged

    def stop_diverged(self, epoch, batch_losses):  # seed 1's loss is NaN at batch 2 of epoch 1
        for position, m in enumerate(self.active):
            if self.members[m].seed == 1 and epoch == 1:
                batch_losses[1, position] = float("nan")
        real_stop(self, epoch, batch_losses)

    monkeypatch.setattr(packed.PackedTrainer, "_stop_diverged", stop_diverged)
    code, out, err = run(capsys, "train", "--epochs", "2", "--seeds", "0-2", "--json")
    pack = json.loads(out.strip().splitlines()[-1])
    assert code == 1 and pack["finished"] == 2
    assert [m["status"] for m in pack["members"]] == ["finished", "diverged", "finished"]
    assert "epoch 1, batch 2" in pack["members"][1]["failure"]
    line = _one_error_line(err)
    assert "training diverged for seed(s) 1" in line and "--lr" in line


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--seeds", "3-1"], "--seeds: '3-1' runs backwards"),
        (["--seeds", "a-b"], "--seeds: 'a-b' is not a list of seeds"),
        (["--seeds", "1,1"], "--seeds: '1,1' must name distinct seeds"),
        (["--seed", "1", "--seeds", "0-2"], "--seed and --seeds: give one"),
    ],
)
def test_train_bad_seeds_is_one_line_and_exit_2(capsys, argv, message):
    code, _, err = run(capsys, "train", *argv)
    assert code == 2 and message in _one_error_line(err)


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["--lr", "-1"], "--lr"),
        (["--lr", "abc"], "--lr"),
        (["--epochs", "0"], "--epochs"),
        (["--epochs", "x"], "--epochs"),
        (["--batch-size", "0"], "--batch-size"),
        (["-a", "swish2"], "unknown activation 'swish2'"),
        (["-a", "eru:0"], "radix"),
        (["-a", "oru:3>"], "oru:R1>R2"),
        (["--dataset", "imagenet"], "--dataset"),
        (["--model", "resnet"], "--model"),
        (["--optimizer", "lbfgs"], "--optimizer"),
        (["--schedule", "warm"], "--schedule"),
        (["--device", "tpu"], "--device"),
        (["--precision", "bf16", "--device", "cpu"], "bf16"),
        (["--val-fraction", "1.5"], "--val-fraction"),
        (["--nesterov", "--optimizer", "adam"], "nesterov"),
        (["--no-such-option"], "--no-such-option"),
        (["--history", "/no/such/folder/h.json"], "/no/such/folder"),
    ],
)
def test_bad_train_input_is_one_line_and_exit_2(capsys, tmp_path, argv, names):
    code, out, err = run(capsys, "train", "--epochs", "1", *argv)
    assert code == 2
    assert names in _one_error_line(err)
    assert out == ""


def test_missing_data_set_names_folder_files_and_option(capsys, tmp_path):
    code, _, err = run(capsys, "train", "--dataset", "cifar10", "--data-dir", str(tmp_path / "none"))
    assert code == 2
    line = _one_error_line(err)
    assert str(tmp_path / "none" / "cifar-10-batches-py") in line
    assert "data_batch_1" in line and "--download" in line


def test_bad_input_writes_nothing(capsys, tmp_path, bru_home):
    history = tmp_path / "h.json"
    code, _, _ = run(capsys, "train", "--lr", "0", "--history", str(history))
    assert code == 2
    assert not history.exists()
    assert not bru_home.exists() or not any(bru_home.rglob("*"))


def test_divergence_is_one_line_and_exit_1(capsys):
    code, out, err = run(capsys, "train", "-a", "relu", "--lr", "10", "--epochs", "2", "--json")
    assert code == 1 and out == ""
    line = _one_error_line(err)
    assert "training diverged" in line and "epoch 1, batch" in line and "--lr" in line


# --------------------------------------------------------------------------- compare


def test_compare_json_has_one_row_per_activation(capsys):
    code, out, _ = run(capsys, "compare", "-a", "relu", "-a", "eru:2", "--epochs", "2", "--seeds", "2", "--json")
    assert code == 0
    rows = json.loads(out.strip().splitlines()[-1])
    assert [row["activation"] for row in rows] == ["relu", "eru:2"]
    assert all(len(row["test_error"]) == 2 and row["seeds"] == 2 for row in rows)


def test_compare_table(capsys):
    code, out, _ = run(capsys, "compare", "-a", "elu", "-a", "oru:3", "--epochs", "1", "--seeds", "2")
    assert code == 0
    assert "oru:3" in out and "±" in out and "same hyperparameters" in out


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["-a", "eru", "-a", "eru:2"], "eru:2 given more than once"),
        (["--seeds", "0"], "--seeds"),
        (["-a", "nope"], "nope"),
    ],
)
def test_bad_compare_input(capsys, argv, names):
    code, out, err = run(capsys, "compare", "--epochs", "1", *argv)
    assert code == 2 and names in _one_error_line(err) and out == ""


# --------------------------------------------------------------------------- activations, models


def test_activations_lists_the_registry(capsys):
    code, out, _ = run(capsys, "activations")
    assert code == 0
    for name in ("relu", "selu", "eru:R", "oru:R", "6/(n_in (2r+1))", "LeCun", "Xavier"):
        assert name in out


def test_activations_plot_writes_a_picture(capsys, tmp_path):
    import matplotlib.image

    target = tmp_path / "act.png"
    code, out, _ = run(capsys, "activations", "plot", "oru:3", "eru:2", "relu", "oru:3>2", "--out", str(target))
    assert code == 0 and str(target) in out
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib.image.imread(target)
    assert pixels.std() > 0.05  # not blank


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["foo"], "unknown activation 'foo'"),
        (["relu", "--out", "x.bmp"], ".png"),
        (["relu", "--out", "/no/such/dir/a.png"], "/no/such/dir"),
        (["relu", "--z-min", "2", "--z-max", "1"], "z_min"),
    ],
)
def test_bad_plot_input(capsys, tmp_path, monkeypatch, argv, names):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "activations", "plot", *argv)
    assert code == 2 and names in _one_error_line(err)
    assert not list(tmp_path.iterdir())


def test_models_table(capsys):
    code, out, _ = run(capsys, "models", "--dataset", "mnist")
    assert code == 0
    assert "151,306" in out and "2,837,314" in out and "61,706" in out


# --------------------------------------------------------------------------- bench


def test_bench_accuracy_json(capsys):
    code, out, _ = run(capsys, "bench", "accuracy", "--json")
    assert code == 0
    rows = json.loads(out.strip().splitlines()[-1])
    assert len(rows) == 24
    assert all(r["nonfinite"] == 0 and r["value_error_eps"] < 64 and r["slope_error_eps"] < 64 for r in rows)


def test_bench_epochs_json(capsys):
    code, out, _ = run(capsys, "bench", "epochs", "--model", "mlp4", "--rounds", "1", "--json")
    assert code == 0
    rows = json.loads(out.strip().splitlines()[-1])
    assert [r["activation"] for r in rows if r["path"] == "torch"] == ["relu", "elu"]
    for path in ("auto", "native", "fused", "inplace", "eager"):
        assert [r["activation"] for r in rows if r["path"] == path] == ["eru:2", "eru:3", "oru:2", "oru:3"]
    assert all(r["seconds"] > 0 for r in rows)
    assert next(r for r in rows if r["activation"] == "elu")["ratio_to_elu"] == 1


def test_bench_activations_json_fields(capsys):
    code, out, _ = run(capsys, "bench", "activations", "--n", "5000", "--rounds", "1", "-a", "eru:3,oru:2", "--json")
    assert code == 0
    rows = json.loads(out.strip().splitlines()[-1])
    keys = {"activation", "path", "device", "dtype", "n", "ms", "ratio_to_elu", "gbps", "copy_fraction"}
    assert all(keys <= set(r) for r in rows)
    assert {(r["activation"], r["path"]) for r in rows} == {("elu", "eager"), ("relu", "eager"), ("copy", "eager")} | {
        (a, p) for a in ("eru:3", "oru:2") for p in ("eager", "compiled", "inplace", "fused", "native")
    }
    assert all(r["n"] == 5000 and r["dtype"] == "float32" and r["device"] == "cpu" and r["ms"] > 0 for r in rows)
    assert next(r for r in rows if r["activation"] == "elu")["ratio_to_elu"] == 1.0
    assert next(r for r in rows if r["activation"] == "copy")["copy_fraction"] == 1.0


@pytest.mark.parametrize(
    "args, message",
    [
        (["-a", "relu"], "--activations: 'relu' is not an ERU/ORU"),
        (["-a", "eru:0"], "--activations: activation 'eru:0': radix must be"),
        (["--dtype", "float8"], "--dtype: 'float8' is not one of"),
        (["--paths", "turbo"], "--paths: 'turbo' is not one of eager, compiled, inplace, fused, native"),
        (["--n", "0"], "Invalid value for '--n': Input should be greater than or equal to 1"),
        (["--rounds", "0"], "Invalid value for '--rounds'"),
    ],
)
def test_bench_activations_bad_options(capsys, args, message):
    code, _, error = run(capsys, "bench", "activations", *args)
    assert code == 2 and message in error, error


def test_bench_train_json(capsys):
    code, out, _ = run(
        capsys,
        "bench",
        "train",
        "--model",
        "mlp2",
        "--n-train",
        "512",
        "--rounds",
        "1",
        "--epochs-rounds",
        "0",
        "--json",
    )
    assert code == 0
    rows = json.loads(out.strip().splitlines()[-1])
    assert [(r["benchmark"], r["pipeline"]) for r in rows] == [
        ("input pipeline", "bru"),
        ("input pipeline", "DataLoader+ToTensor"),
    ]
    assert rows[0]["ratio_to_bru"] == 1 and rows[1]["seconds_per_epoch"] > 0


@pytest.mark.slow
def test_bench_models_json(capsys):
    code, out, _ = run(capsys, "bench", "models", "--batches", "1", "--json")
    assert code == 0
    rows = json.loads(out.strip().splitlines()[-1])
    assert len(rows) == 16 and all(r["seconds_per_epoch"] > 0 for r in rows)


# --------------------------------------------------------------------------- the installed command


def test_console_script(tmp_path):
    env = {**os.environ, "BRU_HOME": str(tmp_path)}
    ok = subprocess.run([BIN / "bru", "train", "--epochs", "1", "--json"], capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout.splitlines()[-1])["epochs"] == 1
    bad = subprocess.run([BIN / "bru", "train", "--lr", "-1"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip() == "error: --lr: Input should be greater than 0"
    module = subprocess.run([sys.executable, "-m", "bru_core", "--help"], capture_output=True, text=True, env=env)
    assert module.returncode == 0 and "train" in module.stdout
