"""What MLflow's UI and optuna-dashboard show of a campaign: the experiment says it is for
model training, every run carries MLflow's own provenance tags (source, user, commit), and
each Optuna study names its objective and says what it is."""

from __future__ import annotations

import getpass
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

import bru_core
from bru_core.search import open_study, run_repeats, run_study
from bru_core.settings import get_settings
from bru_core.spec import parse_spec
from bru_core.tracking import EXPERIMENT_KIND, MODEL_TRAINING, ROLE, source_tags
from bru_core.tracking.provenance import _source_name
from tests.helpers.stores import campaign_runs

CHECKOUT = Path(bru_core.__file__).resolve().parent.parent
TASK, ACTIVATION = "digits/mlp4", "relu"


def _spec():
    return parse_spec(
        {
            "name": "prov",
            "tasks": [{"dataset": "digits", "model": "mlp4", "epochs": 1}],
            "activations": ["relu", "eru:2"],
            "search": {
                "trials": 2,
                "sampler": "random",
                "seed": 0,
                "pruner": "none",
                "space": {"lr": {"choices": [0.05]}},
            },
            "repeats": {"seeds": [101, 102]},
            "compare": {"exploratory": True},
        }
    )


@pytest.fixture
def fresh_provenance(monkeypatch):
    """Provenance as a process with no MLflow login works it out (it is cached per process)."""
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("PREFECT__FLOW_RUN_ID", raising=False)
    monkeypatch.setattr("mlflow.utils.credentials._read_mlflow_creds_from_file", lambda: (None, None))
    source_tags.cache_clear()
    yield
    source_tags.cache_clear()


def test_a_campaign_shows_as_model_training_with_provenance_on_every_run(digits, fresh_provenance):
    spec, settings = _spec(), get_settings()
    run_study(spec, TASK, ACTIVATION, settings=settings, data=digits)
    run_repeats(spec, TASK, ACTIVATION, settings=settings, data=digits)

    experiment = MlflowClient(settings.tracking).get_experiment_by_name("prov")
    assert experiment.tags[EXPERIMENT_KIND] == "custom_model_development" == MODEL_TRAINING
    runs = campaign_runs(settings.tracking, "prov")
    assert sorted(r.data.tags[ROLE] for r in runs) == ["campaign", "repeat", "repeat", "study", "trial", "trial"]
    head = subprocess.run(["git", "-C", str(CHECKOUT), "rev-parse", "HEAD"], capture_output=True, text=True)
    for run in runs:
        tags = run.data.tags
        assert tags["mlflow.source.type"] == "LOCAL"
        assert tags["mlflow.source.name"] == _source_name(sys.argv, {}) != ""
        assert tags["mlflow.user"] == getpass.getuser()
        if head.returncode == 0:  # the tests run from a git checkout
            assert tags["mlflow.source.git.commit"] == head.stdout.strip()
            assert tags["mlflow.source.git.dirty"] in ("true", "false")


def test_an_experiment_made_without_the_kind_gets_it_when_bru_uses_it(digits, fresh_provenance):
    settings = get_settings()
    client = MlflowClient(settings.tracking)
    # as an older bru made it
    client.create_experiment("prov", artifact_location=settings.artifact_location, tags={"bru.campaign": "prov"})
    assert EXPERIMENT_KIND not in client.get_experiment_by_name("prov").tags
    run_study(_spec(), TASK, ACTIVATION, settings=settings, data=digits)
    assert client.get_experiment_by_name("prov").tags[EXPERIMENT_KIND] == MODEL_TRAINING


def test_a_study_names_its_objective_and_says_what_it_is(monkeypatch):
    spec, settings = _spec(), get_settings()
    study = open_study(spec, TASK, "eru:2", settings)
    assert study.metric_names == ["val_error"]  # what optuna-dashboard labels the objective with
    expected = {"campaign": "prov", "task": TASK, "activation": "eru:2", "metric": "val_error", "budget": 2}
    assert study.user_attrs == expected
    writes = []
    storage = type(study._storage)
    for name in ("set_study_user_attr", "set_study_system_attr"):
        original = getattr(storage, name)

        def counted(self, *args, _name=name, _original=original):
            writes.append((_name, *args))
            return _original(self, *args)

        monkeypatch.setattr(storage, name, counted)
    reopened = open_study(spec, TASK, "eru:2", settings)  # as every worker does
    assert reopened.user_attrs == expected and reopened.metric_names == ["val_error"]
    assert writes == []


@pytest.mark.parametrize(
    ("argv", "environ", "name"),
    [
        (["/x/.venv/bin/bru", "campaign", "run", "configs/quick.yaml", "--json"], {}, "bru campaign run"),
        (["/x/.venv/bin/bru", "search", "configs/quick.yaml", "--task", "digits/mlp4"], {}, "bru search"),
        (["/x/site-packages/pytest/__main__.py", "-x", "tests/test_search.py"], {}, "pytest"),
        (["bru", "campaign", "--tracking", "http://user:secret@host"], {}, "bru campaign"),
        (
            ["python", "-m", "prefect.engine"],
            {"PREFECT__FLOW_RUN_ID": "1", "PREFECT__FLOW_NAME": "bru-campaign"},
            "bru-campaign",
        ),
        ([], {}, "<console>"),
    ],
)
def test_the_source_name_is_the_command_never_its_arguments(argv, environ, name):
    assert _source_name(argv, environ) == name


def test_a_flow_run_on_a_worker_is_a_job(monkeypatch, fresh_provenance):
    monkeypatch.setenv("PREFECT__FLOW_RUN_ID", "0b7f")
    monkeypatch.setenv("PREFECT__FLOW_NAME", "bru-campaign")
    tags = source_tags()
    assert tags["mlflow.source.type"] == "JOB" and tags["mlflow.source.name"] == "bru-campaign"
