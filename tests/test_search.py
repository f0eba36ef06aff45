"""Search and tracking against real stores: the embedded SQLite ones, a real `mlflow server`,
and Optuna on a real PostgreSQL. Checks the run tree, statuses, budgets and idempotence."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pytest
import torch
from mlflow import MlflowClient
from mlflow.models import Model
from optuna.trial import TrialState

import bru_core
from bru_core.cli import main
from bru_core.data import DataInfo
from bru_core.search import budget_state, counts_towards_budget, open_study, run_repeats, run_study
from bru_core.search import study as study_module
from bru_core.settings import get_settings
from bru_core.spec import parse_spec
from bru_core.tracking import ROLE
from bru_core.training import train
from tests.helpers.paths import BIN
from tests.helpers.stores import campaign_runs


def _spec(**changes):
    base = {
        "name": "t",
        "tasks": [{"dataset": "digits", "model": "mlp4", "epochs": 2}],
        "activations": ["relu", "eru:2"],
        "search": {
            "trials": 3,
            "sampler": "random",
            "seed": 0,
            "pruner": "none",
            "space": {"lr": {"low": 1e-3, "high": 0.1, "log": True}, "batch_size": {"choices": [64, 128]}},
        },
        "repeats": {"seeds": [101, 102]},  # apart from every search seed the tests use
        "compare": {"exploratory": True},  # two seeds: a test of the machinery
    }
    for key, value in changes.items():
        if key == "search":
            base["search"] = {**base["search"], **value}
        else:
            base[key] = value
    return parse_spec(base)


def _runs(settings, campaign, role):
    return campaign_runs(settings.tracking, campaign, f"tags.`{ROLE}` = '{role}'")


def _statuses(settings, campaign) -> dict[str, set[str]]:
    """The statuses of a campaign's runs, by role."""
    statuses: dict[str, set[str]] = {}
    for role in ("campaign", "study", "trial", "repeat"):
        if runs := _runs(settings, campaign, role):
            statuses[role] = {r.info.status for r in runs}
    return statuses


def _trials(settings, spec, task, activation):
    return open_study(spec, task, activation, settings).get_trials(deepcopy=False)


# --------------------------------------------------------------------------- the run tree


def test_study_fills_mlflow_with_the_run_tree(bru_home, digits):
    spec = _spec()
    settings = get_settings()
    result = run_study(spec, "digits/mlp4", "eru:2", settings=settings, data=digits)
    assert result.done == 3 and result.complete == 3 and result.best_value is not None
    client = MlflowClient(settings.tracking)
    experiment = client.get_experiment_by_name("t")
    assert experiment.artifact_location == (bru_home.resolve() / "mlartifacts").as_uri()
    (study_run,) = _runs(settings, "t", "study")
    tags = study_run.data.tags
    assert tags["bru.campaign"] == "t" and tags["bru.task"] == "digits/mlp4" and tags["bru.activation"] == "eru:2"
    assert study_run.info.status == "FINISHED"
    assert study_run.data.metrics["best_value"] == pytest.approx(result.best_value)
    assert {f"best_{k}" for k in result.best_params} <= set(study_run.data.params)
    trials = _runs(settings, "t", "trial")
    assert len(trials) == 3
    for run in trials:
        assert run.data.tags["mlflow.parentRunId"] == study_run.info.run_id
        assert run.info.status == "FINISHED" and run.data.tags["bru.state"] == "complete"
        assert {"lr", "batch_size", "activation"} <= set(run.data.params)
        history = client.get_metric_history(run.info.run_id, "val_error")
        assert [m.step for m in history] == [1, 2]
        assert "final_val_error" in run.data.metrics
        assert not any(
            k.startswith(("test", "final_test")) for k in run.data.metrics
        )  # the search never sees the test set
    optuna_trials = _trials(settings, spec, "digits/mlp4", "eru:2")
    assert {t.user_attrs["mlflow_run_id"] for t in optuna_trials} == {r.info.run_id for r in trials}


def test_rerunning_a_finished_study_adds_nothing(digits):
    spec = _spec()
    settings = get_settings()
    run_study(spec, "digits/mlp4", "relu", settings=settings, data=digits)
    before = len(_runs(settings, "t", "trial"))
    again = run_study(spec, "digits/mlp4", "relu", settings=settings, data=digits)
    assert again.trials == [] and again.done == 3
    assert len(_runs(settings, "t", "trial")) == before == 3
    assert len(_runs(settings, "t", "study")) == 1
    assert len(_trials(settings, spec, "digits/mlp4", "relu")) == 3


def test_interrupted_study_resumes_to_exactly_the_budget(monkeypatch, digits):
    spec = _spec(search={"trials": 4})
    settings = get_settings()
    real_train = study_module.train
    calls = {"n": 0}

    def interrupted_third_trial(config, on_epoch=None, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:

            def stop(record):
                raise KeyboardInterrupt  # Ctrl-C in the middle of a trial

            return real_train(config, on_epoch=stop, **kwargs)
        return real_train(config, on_epoch=on_epoch, **kwargs)

    monkeypatch.setattr(study_module, "train", interrupted_third_trial)
    with pytest.raises(KeyboardInterrupt):
        run_study(spec, "digits/mlp4", "relu", settings=settings, data=digits)
    monkeypatch.setattr(study_module, "train", real_train)
    result = run_study(spec, "digits/mlp4", "relu", settings=settings, data=digits)
    trials = _trials(settings, spec, "digits/mlp4", "relu")
    assert sum(counts_towards_budget(t) for t in trials) == 4 == result.done
    assert [t.state for t in trials].count(TrialState.FAIL) == 1  # the interrupted one, not counted
    runs = _runs(settings, "t", "trial")
    numbers = [r.data.tags["bru.trial_number"] for r in runs]
    assert len(numbers) == len(set(numbers)) == 5  # one run per trial, no duplicates
    interrupted = next(r for r in runs if r.info.status == "FAILED")
    assert "interrupted" in interrupted.data.tags["bru.failure"]
    assert len(_runs(settings, "t", "study")) == 1


def test_non_finite_loss_fails_the_trial_and_the_study_goes_on(digits):
    spec = _spec(search={"trials": 4, "space": {"lr": {"choices": [10.0, 0.02]}}, "sampler": "random", "seed": 1})
    settings = get_settings()
    result = run_study(spec, "digits/mlp4", "relu", settings=settings, data=digits)
    trials = _trials(settings, spec, "digits/mlp4", "relu")
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert failed, "lr 10 should diverge"
    assert all("non-finite training loss" in t.user_attrs["failure"] for t in failed)
    assert result.done == 4 and result.failed == len(failed)  # own failures count towards the budget
    runs = {r.data.tags["bru.trial_number"]: r for r in _runs(settings, "t", "trial")}
    for t in failed:
        run = runs[str(t.number)]
        assert run.info.status == "FAILED" and "non-finite" in run.data.tags["bru.failure"]


def test_pruned_trials_are_finished_runs_tagged_pruned(digits):
    spec = _spec(
        tasks=[{"dataset": "digits", "model": "mlp4", "epochs": 4}],
        search={
            "trials": 8,
            "pruner": "median",
            "sampler": "random",
            "seed": 2,
            "space": {"lr": {"choices": [0.05, 1e-5]}},
        },
    )
    settings = get_settings()
    result = run_study(spec, "digits/mlp4", "relu", settings=settings, data=digits)
    trials = _trials(settings, spec, "digits/mlp4", "relu")
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned, [(t.params, t.state) for t in trials]
    assert result.pruned == len(pruned) and result.done == 8
    runs = {r.data.tags["bru.trial_number"]: r for r in _runs(settings, "t", "trial")}
    for t in pruned:
        run = runs[str(t.number)]
        assert run.info.status == "FINISHED" and run.data.tags["bru.state"] == "pruned"
        steps = [m.step for m in MlflowClient(settings.tracking).get_metric_history(run.info.run_id, "val_error")]
        assert steps == list(range(1, len(steps) + 1)) and len(steps) < 4


# --------------------------------------------------------------------------- repeats


def test_repeats_log_models_data_and_environment_once(digits):
    spec = _spec()
    settings = get_settings()
    run_study(spec, "digits/mlp4", "eru:2", settings=settings, data=digits)
    results = run_repeats(spec, "digits/mlp4", "eru:2", settings=settings, data=digits)
    assert [r.seed for r in results] == [101, 102] and not any(r.reused for r in results)
    client = MlflowClient(settings.tracking)
    runs = _runs(settings, "t", "repeat")
    assert len(runs) == 2
    # both seeds trained as one pack, and each member's outcome is the unpacked run's with
    # its seed (to float32 summation order): nothing about the runs tells them apart
    best = open_study(spec, "digits/mlp4", "eru:2", settings).best_params
    for result in results:
        config = spec.train_config("digits/mlp4", "eru:2", best, seed=result.seed)
        alone = train(config.model_copy(update={"test_every_epoch": True}), data=digits)
        assert result.final == pytest.approx(alone.final, rel=1e-4)
    for run in runs:
        assert run.data.tags["bru.pack_size"] == "2"
        tags = run.data.tags
        assert (
            tags["bru.activation"] == "eru:2" and tags["bru.seed"] in {"101", "102"} and run.info.status == "FINISHED"
        )
        assert [m.step for m in client.get_metric_history(run.info.run_id, "test_error")] == [1, 2]
        assert {"final_test_error", "final_error_quotient", "final_val_loss"} <= set(run.data.metrics)
        (dataset_input,) = run.inputs.dataset_inputs
        assert dataset_input.dataset.name == "digits-train" and len(dataset_input.dataset.digest) == 16
        env = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/environment.json")
        assert env["packages"]["torch"] and env["device"] == "cpu"
    # the logged model loads back and predicts what the trained model predicted
    model_uri = runs[0].data.tags["bru.model_uri"]
    model = mlflow.pytorch.load_model(model_uri)
    x = digits.normalise(digits.test.images[:5])
    assert model(x).shape == (5, 10)
    pyfunc = mlflow.pyfunc.load_model(model_uri)
    np.testing.assert_allclose(pyfunc.predict(x.numpy()), model(x).detach().numpy(), rtol=1e-5, atol=1e-6)
    assert {r.data.tags["bru.model_format"] for r in runs} == {"pt2"}
    (version,) = client.search_model_versions("name = 't-digits-mlp4-eru2'")
    best = min(results, key=lambda r: (r.final["val_error"], r.final["val_loss"], r.seed))
    assert version.run_id == best.mlflow_run_id  # chosen on validation, not test
    # a second call trains nothing and registers nothing new
    again = run_repeats(spec, "digits/mlp4", "eru:2", settings=settings, data=digits)
    assert all(r.reused for r in again)
    assert [r.final["test_error"] for r in again] == pytest.approx([r.final["test_error"] for r in results])
    assert len(_runs(settings, "t", "repeat")) == 2
    assert len(client.search_model_versions("name = 't-digits-mlp4-eru2'")) == 1


def test_repeats_pack_from_the_spec_or_the_call(digits):
    """repeats.pack: 1 trains every seed alone; a call's pack overrides the spec's."""
    settings = get_settings()
    spec = _spec(name="alone", repeats={"seeds": [101, 102, 103], "pack": 1})
    run_study(spec, "digits/mlp4", "relu", settings=settings, data=digits)
    run_repeats(spec, "digits/mlp4", "relu", settings=settings, data=digits, seeds=[101])
    run_repeats(spec, "digits/mlp4", "relu", settings=settings, data=digits, pack=2)
    sizes = {run.data.tags["bru.seed"]: run.data.tags["bru.pack_size"] for run in _runs(settings, "alone", "repeat")}
    assert sizes == {"101": "1", "102": "2", "103": "2"}


def test_an_interrupted_pack_ends_its_runs_failed_and_a_rerun_trains_them(digits, monkeypatch):
    import bru_core.packed as packed

    settings = get_settings()
    spec = _spec(name="interrupted")
    run_study(spec, "digits/mlp4", "relu", settings=settings, data=digits)
    real_epoch = packed.PackedTrainer.epoch

    def epoch(self, number, on_batch=None):
        if number == 2:
            raise KeyboardInterrupt
        return real_epoch(self, number, on_batch)

    monkeypatch.setattr(packed.PackedTrainer, "epoch", epoch)
    with pytest.raises(KeyboardInterrupt):
        run_repeats(spec, "digits/mlp4", "relu", settings=settings, data=digits)
    (campaign,) = _runs(settings, "interrupted", "campaign")
    assert campaign.info.status == "KILLED" and campaign.data.tags["bru.failure"].startswith("KeyboardInterrupt")
    runs = _runs(settings, "interrupted", "repeat")
    assert sorted(r.data.tags["bru.seed"] for r in runs) == ["101", "102"]
    assert all(
        r.info.status == "FAILED" and "interrupted (KeyboardInterrupt" in r.data.tags["bru.failure"] for r in runs
    )
    monkeypatch.setattr(packed.PackedTrainer, "epoch", real_epoch)
    again = run_repeats(spec, "digits/mlp4", "relu", settings=settings, data=digits)
    assert [(r.seed, r.reused, r.status) for r in again] == [(101, False, "finished"), (102, False, "finished")]
    (campaign,) = _runs(settings, "interrupted", "campaign")
    assert campaign.info.status == "FINISHED" and "bru.failure" not in campaign.data.tags


def test_repeats_are_paired_across_activations(digits):
    """Seed s trains every activation from the same generator streams (init, batch order)."""
    spec = _spec()
    relu = spec.train_config("digits/mlp4", "relu", {"lr": 0.01, "batch_size": 64}, seed=1)
    eru = spec.train_config("digits/mlp4", "eru:2", {"lr": 0.05, "batch_size": 64}, seed=1)
    from bru_core.training import Trainer

    a, b = Trainer(relu, digits), Trainer(eru, digits)
    assert torch.equal(torch.randperm(100, generator=a.order), torch.randperm(100, generator=b.order))


def test_repeats_need_a_completed_trial(digits):
    from bru_core.errors import BruError

    with pytest.raises(BruError, match="no completed trial"):
        run_repeats(_spec(), "digits/mlp4", "relu", data=digits)


# --------------------------------------------------------------------------- logged models


MNIST_SHAPED = DataInfo("mnist", (1, 28, 28), 10, 0, 0, 0)
CIFAR_SHAPED = DataInfo("cifar10", (3, 32, 32), 10, 0, 0, 0)


def _log(tracker, model, example):
    run_id = tracker.client.create_run(tracker.experiment_id("models")).info.run_id
    return run_id, tracker.log_model(run_id, model, example)


def _model_files(model_uri):
    local = Path(mlflow.artifacts.download_artifacts(model_uri))
    return Model.load(str(local / "MLmodel")), sorted(p.name for p in (local / "data").iterdir())


@pytest.mark.parametrize(
    ("model_name", "info", "activation"),
    [
        ("mlp4", None, "eru:2"),  # None: the digits themselves
        ("mlp8", MNIST_SHAPED, "oru:3>2"),
        ("sae", MNIST_SHAPED, "oru:3|2"),
        ("lenet5", MNIST_SHAPED, "eru:3"),
        ("convpool", CIFAR_SHAPED, "oru:2.5"),
        ("lenet5", CIFAR_SHAPED, "prelu"),
    ],
)
def test_every_model_family_is_logged_as_pt2_and_loads_without_pickle(
    digits, monkeypatch, model_name, info, activation
):
    """pt2 (torch.export), said in MLmodel and on the run; nothing pickled, no code bundled;
    it loads with pickle refused (MLflow then checks the archive holds none) and predicts
    what the model predicts: to the bit on the eager formulas ERU/ORU export with, within
    float32 rounding of the native op that served in training."""
    from bru_core import kernels
    from bru_core.models import build_model
    from bru_core.tracking import Tracker

    info = info or digits.info
    model = build_model(model_name, info, activation, torch.Generator().manual_seed(0)).eval()
    example = torch.randn(2, *info.input_shape, generator=torch.Generator().manual_seed(1)).numpy()
    with Tracker(get_settings()) as tracker:
        run_id, model_uri = _log(tracker, model, example)
        assert tracker.client.get_run(run_id).data.tags["bru.model_format"] == "pt2"
    mlmodel, files = _model_files(model_uri)
    assert mlmodel.metadata == {"serialization_format": "pt2"} and files == ["model.pt2"]
    assert mlmodel.flavors["pytorch"]["code"] is None and mlmodel.saved_input_example_info is not None
    assert tuple(mlmodel.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == (-1, *info.input_shape)
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    loaded = mlflow.pytorch.load_model(model_uri)
    ops = {str(node.target) for node in loaded.graph.nodes if node.op == "call_function"}
    assert all(op.startswith("aten.") for op in ops), ops  # no bru op: loads without bru-lab
    x = torch.randn(5, *info.input_shape, generator=torch.Generator().manual_seed(2))  # another batch size
    with torch.no_grad():
        fast = model(x)
        kernels.set_kernel_mode("eager")
        try:
            eager = model(x)
        finally:
            kernels.set_kernel_mode(None)
        predicted = loaded(x)
    assert torch.equal(predicted, eager)
    torch.testing.assert_close(predicted, fast, rtol=1e-5, atol=1e-5)
    pyfunc = mlflow.pyfunc.load_model(model_uri)
    np.testing.assert_array_equal(pyfunc.predict(x.numpy()), predicted.numpy())


class _DataDependent(torch.nn.Module):
    """A user's activation torch.export cannot trace: Python branches on a tensor's value."""

    def forward(self, z):
        return z.relu() if z.sum() > 0 else z


def test_a_model_torch_export_cannot_trace_is_logged_pickled_by_choice(digits):
    from bru_core.tracking import Tracker, model_format

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(digits.info.n_inputs, 10), _DataDependent()).eval()
    example = digits.normalise(digits.test.images[:2]).numpy()
    serialization, reason = model_format(model, example)
    assert serialization == "pickle" and "data-dependent" in reason
    with Tracker(get_settings()) as tracker:
        run_id, model_uri = _log(tracker, model, example)
        assert tracker.client.get_run(run_id).data.tags["bru.model_format"] == "pickle"
    mlmodel, files = _model_files(model_uri)
    assert mlmodel.metadata == {"serialization_format": "pickle"} and "model.pth" in files
    assert mlmodel.flavors["pytorch"]["code"]  # the pickle needs the classes: bru_core goes with it
    x = digits.normalise(digits.test.images[:5])
    with torch.no_grad():
        torch.testing.assert_close(mlflow.pytorch.load_model(model_uri)(x), model(x))


def test_a_model_pickled_by_an_older_run_still_loads_and_registers(digits):
    """Runs logged before the format was explicit may hold pickles (MLflow's default was
    pickle before pt2, and still is on Databricks): they load as before (pickle is
    allowed unless MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false) and register."""
    from bru_core.models import build_model
    from bru_core.tracking import Tracker

    model = build_model("mlp4", digits.info, "oru:3").eval()
    example = digits.normalise(digits.test.images[:2]).numpy()
    with Tracker(get_settings()) as tracker:
        run_id = tracker.client.create_run(tracker.experiment_id("old")).info.run_id
        mlflow.set_tracking_uri(tracker.uri)
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pytorch.log_model(
                model, name="model", serialization_format="pickle", input_example=example,
                code_paths=[str(Path(bru_core.__file__).parent)],
            )  # fmt: skip
        assert tracker.register("old-digits-mlp4-oru3", info.model_uri, run_id) == 1
    assert "model.pth" in _model_files(info.model_uri)[1]
    x = digits.normalise(digits.test.images[:5])
    with torch.no_grad():
        torch.testing.assert_close(mlflow.pytorch.load_model("models:/old-digits-mlp4-oru3/1")(x), model(x))


# --------------------------------------------------------------------------- the campaign's run


def _record(tracker, name):
    """The campaign's run, as any stage creates it first."""
    spec = _spec(name=name)
    tracker.record_campaign(spec.name, spec.model_dump(mode="json"), spec.protocol())


def _campaign_run(settings, campaign):
    from bru_core.tracking import Tracker

    with Tracker(settings) as tracker:
        return tracker.campaign_run(campaign)


def test_each_stage_reopens_the_campaign_run_and_closes_it(digits):
    """After a study, its repeats and the aggregation, no run of the campaign is RUNNING;
    each stage reopens the campaign's run while it works and closes it at its end."""
    from bru_core.aggregate import aggregate

    settings = get_settings()
    spec = _spec(name="stages", tasks=[{"dataset": "digits", "model": "mlp4", "epochs": 1}], search={"trials": 1})
    status = lambda: _campaign_run(settings, "stages").info.status  # noqa: E731
    seen_during: list[str] = []
    run_study(spec, "digits/mlp4", "relu", settings=settings, data=digits,
              on_trial=lambda *_: seen_during.append(status()))  # fmt: skip
    assert _statuses(settings, "stages") == {"campaign": {"FINISHED"}, "study": {"FINISHED"}, "trial": {"FINISHED"}}
    first_end = _campaign_run(settings, "stages").info.end_time
    run_repeats(spec, "digits/mlp4", "relu", settings=settings, data=digits,
                on_seed=lambda _: seen_during.append(status()))  # fmt: skip
    assert all(statuses == {"FINISHED"} for statuses in _statuses(settings, "stages").values())
    aggregate("stages", settings, report=False, on_run=lambda *_: seen_during.append(status()))
    run = _campaign_run(settings, "stages")
    assert run.info.status == "FINISHED" and run.info.end_time > first_end
    assert seen_during == ["RUNNING"] * 5  # 1 trial, 2 seeds, 2 repeat runs read
    assert not [key for key in run.data.tags if key.startswith("bru.holder.")]


def test_a_failed_or_interrupted_command_closes_the_campaign_run_failed_or_killed():
    from bru_core.tracking import Tracker

    settings = get_settings()
    with Tracker(settings) as tracker:
        _record(tracker, "ends")
        for error, status, failure in (
            (RuntimeError("store gone\ndetails"), "FAILED", "RuntimeError: store gone"),
            (KeyboardInterrupt(), "KILLED", "KeyboardInterrupt: "),
        ):
            with pytest.raises(type(error)), tracker.working_on("ends"):
                raise error
            run = tracker.campaign_run("ends")
            assert (run.info.status, run.data.tags["bru.failure"]) == (status, failure)
        with tracker.working_on("ends"), tracker.working_on("ends"):  # nested: one hold, the outer decides
            assert tracker.campaign_run("ends").info.status == "RUNNING"
        run = tracker.campaign_run("ends")
        assert run.info.status == "FINISHED" and "bru.failure" not in run.data.tags


HOLD = """
import sys
from bru_core.settings import get_settings
from bru_core.tracking import Tracker
with Tracker(get_settings()) as tracker, tracker.working_on(sys.argv[1]):
    print("holding", flush=True)
    sys.stdin.readline()
"""


def test_the_campaign_run_stays_running_while_another_live_process_holds_it():
    """Two processes on one campaign: the first to end leaves the run RUNNING while the
    other still works, and the last one closes it; a holder killed outright (no chance to
    let go) does not keep it open: on this machine its process is gone, elsewhere its
    lease runs out."""
    from bru_core.tracking import HOLDER, Tracker, holder_alive

    settings = get_settings()
    with Tracker(settings) as tracker:
        _record(tracker, "shared")
    other = subprocess.Popen([sys.executable, "-c", HOLD, "shared"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, cwd=Path(__file__).resolve().parent.parent)  # fmt: skip
    try:
        assert other.stdout.readline().strip() == "holding"
        with Tracker(settings) as tracker:
            with tracker.working_on("shared"):
                pass
            run = tracker.campaign_run("shared")
            assert run.info.status == "RUNNING"  # the other process still works on it
            (held,) = [json.loads(v) for k, v in run.data.tags.items() if k.startswith(HOLDER)]
            assert held["pid"] == other.pid and holder_alive(held, tracker.lease)
            other.communicate("done\n", timeout=60)  # the other one ends: the last out closes it
            assert other.returncode == 0
            assert tracker.campaign_run("shared").info.status == "FINISHED"
            other = subprocess.Popen([sys.executable, "-c", HOLD, "shared"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)  # fmt: skip
            assert other.stdout.readline().strip() == "holding"
            assert tracker.campaign_run("shared").info.status == "RUNNING"
            other.kill()
            other.wait(timeout=60)
            with tracker.working_on("shared"):
                pass
            run = tracker.campaign_run("shared")
            assert run.info.status == "FINISHED" and not [k for k in run.data.tags if k.startswith(HOLDER)]
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()
    elsewhere = {"host": "gpu-7", "pid": 1, "machine": "another-boot/pid:[1]", "started": "1"}
    now = time.time()
    assert holder_alive({**elsewhere, "renewed": now - 80}, lease=90, now=now)
    assert not holder_alive({**elsewhere, "renewed": now - 100}, lease=90, now=now)


def test_a_hold_is_renewed_within_its_lease():
    from bru_core.tracking import HOLDER, Tracker

    settings = get_settings(campaign_lease_seconds=2)
    with Tracker(settings) as tracker:
        _record(tracker, "renewed")
        with tracker.working_on("renewed"):
            time.sleep(1.2)  # two renewals at lease / 4
            (held,) = [
                json.loads(v) for k, v in tracker.campaign_run("renewed").data.tags.items() if k.startswith(HOLDER)
            ]
    assert held["renewed"] - held["since"] >= 0.5


# --------------------------------------------------------------------------- other stores


@pytest.mark.slow
def test_the_same_tree_on_a_real_mlflow_server(mlflow_server, digits, bru_home):
    settings = get_settings(tracking_uri=mlflow_server.uri)
    spec = _spec(name="served")
    result = run_study(spec, "digits/mlp4", "relu", settings=settings, data=digits)
    run_repeats(spec, "digits/mlp4", "relu", settings=settings, data=digits)
    client = MlflowClient(mlflow_server.uri)
    experiment = client.get_experiment_by_name("served")
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # proxied by the server
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    roles = sorted(r.data.tags[ROLE] for r in runs)
    assert roles == ["campaign", "repeat", "repeat", "study", "trial", "trial", "trial"]
    assert result.done == 3
    repeat = next(r for r in runs if r.data.tags[ROLE] == "repeat")
    mlflow.set_tracking_uri(mlflow_server.uri)
    model = mlflow.pytorch.load_model(repeat.data.tags["bru.model_uri"])
    assert model(digits.normalise(digits.test.images[:2])).shape == (2, 10)
    assert not (bru_home / "mlflow.db").exists()  # nothing went to the embedded store
    # idempotent against the server too
    run_study(spec, "digits/mlp4", "relu", settings=settings, data=digits)
    run_repeats(spec, "digits/mlp4", "relu", settings=settings, data=digits)
    assert len(client.search_runs([experiment.experiment_id], max_results=100)) == 7


@pytest.mark.slow
def test_optuna_on_postgresql(postgres_url, digits):
    settings = get_settings(optuna_storage=postgres_url)
    spec = _spec(name="pg")
    result = run_study(spec, "digits/mlp4", "eru:2", settings=settings, data=digits)
    assert result.done == 3
    study = optuna.load_study(study_name="pg/digits/mlp4/eru:2", storage=postgres_url)
    assert len(study.trials) == 3 and all(t.state == TrialState.COMPLETE for t in study.trials)
    again = run_study(spec, "digits/mlp4", "eru:2", settings=settings, data=digits)
    assert (
        again.trials == []
        and len(optuna.load_study(study_name="pg/digits/mlp4/eru:2", storage=postgres_url).trials) == 3
    )


# --------------------------------------------------------------------------- the command


def test_bru_search_json_and_a_second_run_adds_nothing(capsys, tmp_path):
    spec = Path(__file__).resolve().parent.parent / "configs" / "smoke.yaml"
    code = main(["search", str(spec), "--task", "digits/mlp4", "-a", "eru:2", "--json"])
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and first["study"]["done"] == 3 and len(first["repeats"]) == 2
    assert not any(r["reused"] for r in first["repeats"])
    assert _statuses(get_settings(), "smoke") == {"campaign": {"FINISHED"}, "study": {"FINISHED"},
                                                  "trial": {"FINISHED"}, "repeat": {"FINISHED"}}  # fmt: skip
    code = main(["search", str(spec), "--task", "digits/mlp4", "-a", "ERU:2.0", "--json"])
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and all(r["reused"] for r in second["repeats"])
    assert second["study"]["best_value"] == first["study"]["best_value"]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--task", "mnist/mlp4", "-a", "relu"], "task 'mnist/mlp4' is not in campaign 'smoke'"),
        (["--task", "digits/mlp4", "-a", "gelu"], "activation 'gelu' is not in campaign 'smoke'"),
        (["--task", "digits/mlp4", "-a", "eru:0"], "radix"),
    ],
)
def test_bru_search_bad_choice_is_one_line_and_writes_nothing(capsys, bru_home, argv, expected):
    spec = Path(__file__).resolve().parent.parent / "configs" / "smoke.yaml"
    code = main(["search", str(spec), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and expected in err[0]
    assert not bru_home.exists()


def test_bru_search_bad_spec_writes_nothing(capsys, bru_home, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: x\ntasks: [{dataset: digits, model: mlp4, epochs: 1}]\nactivations: [relu]\nsearch: {trails: 3}\n"
    )
    code = main(["search", str(bad), "--task", "digits/mlp4", "-a", "relu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "search.trails: unknown key (did you mean 'trials'?)" in err[0]
    assert not bru_home.exists()


@pytest.mark.slow
def test_killed_worker_trial_is_retried_after_its_heartbeat_stops(tmp_path, bru_home):
    """SIGKILL in the middle of a trial: the rerun fails it by heartbeat, retries it once,
    ends with exactly the budget, and closes the killed trial's MLflow run as FAILED."""
    spec = tmp_path / "slow.yaml"
    spec.write_text(
        "name: kill\ntasks: [{dataset: digits, model: mlp4, epochs: 60}]\nactivations: [relu]\n"
        "search: {trials: 2, sampler: random, seed: 0, pruner: none, space: {lr: {low: 0.01, high: 0.05}}}\n"
        "repeats: {seeds: [1]}\ncompare: {exploratory: true}\n"
    )
    env = {**os.environ, "BRU_HOME": str(bru_home), "BRU_HEARTBEAT_SECONDS": "1", "BRU_HEARTBEAT_GRACE_SECONDS": "3"}
    command = [str(BIN / "bru"), "search", str(spec), "--task", "digits/mlp4", "-a", "relu", "--no-repeats"]
    worker = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    settings = get_settings(home=bru_home)
    deadline = time.time() + 120
    try:
        while time.time() < deadline:  # wait until a trial is running and has reported an epoch
            if (bru_home / "optuna.db").exists():
                try:
                    trials = optuna.load_study(study_name="kill/digits/mlp4/relu", storage=settings.optuna).trials
                except (KeyError, Exception):
                    trials = []
                if any(t.state == TrialState.RUNNING and t.intermediate_values for t in trials):
                    break
            time.sleep(0.2)
        else:
            pytest.fail("no trial started: " + worker.stderr.read().decode()[-2000:])
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    rerun = subprocess.run([*command, "--json"], env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    study = optuna.load_study(study_name="kill/digits/mlp4/relu", storage=settings.optuna)
    states = [t.state for t in study.trials]
    assert sum(counts_towards_budget(t) for t in study.trials) == 2
    assert states.count(TrialState.FAIL) == 1  # the killed one, failed by its stopped heartbeat
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") is not None]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
    killed_number = retried[0].system_attrs["failed_trial"]
    runs = {r.data.tags["bru.trial_number"]: r for r in _runs(settings, "kill", "trial")}
    assert runs[str(killed_number)].info.status == "FAILED"
    assert runs[str(retried[0].number)].data.tags["bru.retry_of"] == str(killed_number)
    assert budget_state(study, 2).complete


@pytest.mark.slow
def test_bru_ui_serves_the_embedded_store(tmp_path, bru_home):
    from tests.servers import free_port

    spec = Path(__file__).resolve().parent.parent / "configs" / "smoke.yaml"
    env = {**os.environ, "BRU_HOME": str(bru_home)}
    assert (
        subprocess.run([str(BIN / "bru"), "ui"], env=env, capture_output=True, text=True).returncode == 2
    )  # no store yet
    subprocess.run(
        [str(BIN / "bru"), "search", str(spec), "--task", "digits/mlp4", "-a", "relu", "--no-repeats"],
        env=env,
        check=True,
        capture_output=True,
    )
    port = free_port()
    ui = subprocess.Popen(
        [str(BIN / "bru"), "ui", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        from bru_core.tracking import wait_healthy

        wait_healthy(f"http://127.0.0.1:{port}", ui, timeout=90)
        client = MlflowClient(f"http://127.0.0.1:{port}")
        experiment = client.get_experiment_by_name("smoke")
        assert len(client.search_runs([experiment.experiment_id])) == 5  # campaign, study and 3 trial runs
    finally:
        os.killpg(ui.pid, signal.SIGINT)
        _, said = ui.communicate(timeout=30)
    assert ui.returncode is not None
    # The campaign's runs, in the UI's "Model training" view (its GenAI view opens otherwise);
    # the server's own lines in a log file, not on the terminal.
    page = f"http://127.0.0.1:{port}/#/experiments/{experiment.experiment_id}?workflowType=machine_learning"
    assert f"campaign smoke: {page}" in said.decode()
    assert (
        "Uvicorn running" not in said.decode()
        and "Uvicorn running" in (bru_home / "logs" / "mlflow-ui.log").read_text()
    )


# --------------------------------------------------------------------------- equal budgets under every pruner


def _pruning_pattern(study: optuna.Study, trials: int, epochs: int) -> list[int | None]:
    """Feed trial k the same curve in every study (seeded by k); the epoch it was pruned at."""
    pattern: list[int | None] = []
    for k in range(trials):
        trial = study.ask()
        curve = 1.0 / np.arange(1, epochs + 1) + np.random.default_rng(k).uniform(0, 0.5)
        pruned_at = None
        for epoch, value in enumerate(curve, start=1):
            trial.report(float(value), epoch)
            if trial.should_prune():
                pruned_at = epoch
                break
        study.tell(trial, state=TrialState.PRUNED) if pruned_at else study.tell(trial, float(curve[-1]))
        pattern.append(pruned_at)
    return pattern


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # ask/tell here; bru's trials go through optimize
@pytest.mark.parametrize("pruner", ["none", "median", "hyperband"])
def test_every_pruner_gives_every_activation_the_same_budget(pruner):
    """Two studies that differ only in activation, fed the same intermediate values, prune
    the same trials at the same epochs (issue 13: Optuna's Hyperband picked each trial's
    bracket from a hash of the study name, which holds the activation)."""
    spec = _spec(tasks=[{"dataset": "digits", "model": "mlp4", "epochs": 27}], search={"trials": 40, "pruner": pruner})
    settings = get_settings()
    relu, eru = (open_study(spec, "digits/mlp4", a, settings) for a in ("relu", "eru:2"))
    assert relu.study_name != eru.study_name
    a, b = _pruning_pattern(relu, 40, 27), _pruning_pattern(eru, 40, 27)
    assert a == b
    if pruner != "none":
        assert any(a), "the pattern must prune something, or the test shows nothing"
    else:
        assert not any(a)


def test_optunas_own_hyperband_would_give_activations_different_budgets():
    """Why the pruner above is bru's own: Optuna's HyperbandPruner, for the same two studies."""
    patterns = []
    for activation in ("relu", "eru:2"):
        study = optuna.create_study(
            study_name=f"t/digits/mlp4/{activation}",
            pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=27),
        )
        patterns.append(_pruning_pattern(study, 40, 27))
    assert patterns[0] != patterns[1]


def test_hyperband_brackets_follow_the_task_not_the_activation():
    spec = _spec(
        tasks=[
            {"dataset": "digits", "model": "mlp4", "epochs": 27},
            {"dataset": "digits", "model": "mlp5", "epochs": 9},
        ],
        search={"pruner": "hyperband"},
    )
    pruner = study_module._pruner(spec, "digits/mlp5")
    assert isinstance(pruner, study_module.EqualBudgetHyperband)
    assert pruner._max_resource == 9  # the task's own epochs, not the longest task's
    assert pruner._bracket_key == "t/digits/mlp5"
