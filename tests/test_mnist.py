"""Real MNIST in the tests: the paper's data, not the 8x8 digits.

The four original files live beside the repository, in ../shared/data/MNIST/raw (the
layout torchvision's MNIST reads; never copied into the repository); BRU_TEST_MNIST names
another folder holding MNIST/raw. Where they are missing these tests say so in their skip
reason, except under CI (CI=true), which always has them: there a missing folder fails."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from bru_core.cli import main
from bru_core.results import load
from bru_core.settings import get_settings
from tests.helpers.paths import BRU, ROOT

RAW_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mnist_dir() -> Path:
    folder = Path(os.environ.get("BRU_TEST_MNIST") or ROOT.parent / "shared" / "data")
    missing = [name for name in RAW_FILES if not (folder / "MNIST" / "raw" / name).is_file()]
    if missing:
        message = (
            f"real MNIST is not in {folder}/MNIST/raw (missing {', '.join(missing)}); "
            "set BRU_TEST_MNIST to the folder that holds MNIST/raw"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI always has real MNIST: {message}")
        pytest.skip(message)
    return folder


def test_mlp4_on_real_mnist_reaches_the_usual_error(capsys, mnist_dir):
    """The issue's acceptance command, mlp4 with ORU r = 3 for 5 epochs with bru train's
    defaults (SGD, Nesterov momentum 0.9, lr 0.03 with a cosine, batch 128), over seeds
    0-3 as one pack: at most 2.5% test error on average, no seed far above (measured here:
    2.44% mean, 2.33-2.6% per seed; plain SGD at lr 0.02, the old default, gave 3.0%)."""
    code = main(["train", "--dataset", "mnist", "--data-dir", str(mnist_dir), "--model", "mlp4",
                 "--activation", "oru:3", "--epochs", "5", "--seeds", "0-3", "--json"])  # fmt: skip
    members = json.loads(capsys.readouterr().out)["members"]
    errors = [member["test_error"] for member in members]
    assert code == 0 and len(errors) == 4 and all(m["status"] == "finished" for m in members)
    assert sum(errors) / 4 <= 0.025 and max(errors) <= 0.028, errors


def test_a_small_real_mnist_campaign_end_to_end(tmp_path, mnist_dir):
    """bru campaign run on real MNIST: 2 activations x 2 trials, 3 packed seeds, 2 epochs;
    every seed evaluated on the 10,000 test images, aggregated and reported."""
    spec = {
        "name": "mnist-ci",
        "tasks": [{"dataset": "mnist", "model": "mlp4", "epochs": 2}],
        "activations": ["relu", "oru:3|2"],
        "search": {
            "trials": 2, "sampler": "random", "seed": 0, "pruner": "none",
            "space": {"lr": {"low": 0.005, "high": 0.05, "log": True}, "batch_size": {"choices": [128]}},
        },
        "repeats": {"seeds": [1, 2, 3]},
        "compare": {"reference": ["relu"], "exploratory": True},
    }  # fmt: skip
    path = tmp_path / "mnist-ci.yaml"
    path.write_text(yaml.safe_dump(spec))
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(BRU_HOME=str(home), BRU_DATA_DIR=str(mnist_dir))
    done = subprocess.run([BRU, "campaign", "run", str(path)], env=env, capture_output=True, text=True, timeout=900,
                          cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "oru:3|2 vs relu on mnist/mlp4 (exploratory): test error" in done.stdout
    settings = get_settings(home=home)
    evaluations = load("evaluations", "mnist-ci", url=settings.results)
    assert sorted(zip(evaluations.activation, evaluations.seed, strict=True)) == [
        (a, s) for a in ("oru:3|2", "relu") for s in (1, 2, 3)
    ]
    assert (evaluations.status == "finished").all()
    # 2 epochs of mlp4 on 54,000 images: a few percent test error, not chance (90%)
    assert evaluations.test_error.between(0.005, 0.08).all(), evaluations.test_error.tolist()
    assert (home / "reports" / "mnist-ci" / "report.html").is_file()
