"""Evidence end to end: search -> aggregate -> results database -> bru results / report.

One small real campaign (2 tasks x 3 activations x 3 seeds) is searched once per module;
the tests aggregate it, query it, recompute its p-values with scipy, and render the report."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from scipy import stats as sps
from sqlalchemy import create_engine
from sqlalchemy.exc import IntegrityError

from bru_core.aggregate import aggregate, comparison_pairs
from bru_core.cli import main
from bru_core.errors import BruError
from bru_core.results import Campaign, Evaluation, ResultsStore, load, now
from bru_core.search import run_repeats, run_study
from bru_core.settings import get_settings
from bru_core.spec import parse_spec
from bru_core.tracking import Tracker, TrackingError

SPEC = {
    "name": "ev",
    "tasks": [
        {"dataset": "digits", "model": "mlp4", "epochs": 2},
        {"dataset": "digits", "model": "lenet5", "epochs": 1},
    ],
    "activations": ["relu", "elu", "eru:2"],
    "search": {
        "trials": 2,
        "sampler": "random",
        "seed": 0,
        "pruner": "none",
        "space": {"lr": {"low": 0.01, "high": 0.05, "log": True}},
    },
    "repeats": {"seeds": [0, 1, 2]},
    "compare": {"reference": ["relu"]},
}


@pytest.fixture(scope="module")
def campaign_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("evidence-home")
    settings = get_settings(home=home)
    spec = parse_spec(SPEC)
    with Tracker(settings) as tracker:
        for task in ("digits/mlp4", "digits/lenet5"):
            for activation in spec.labels:
                run_study(spec, task, activation, settings=settings, tracker=tracker)
                run_repeats(spec, task, activation, settings=settings, tracker=tracker)
    return home


@pytest.fixture
def settings(campaign_home, monkeypatch):
    monkeypatch.setenv("BRU_HOME", str(campaign_home))
    return get_settings()


def _png_ok(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 100 and height > 100
    import matplotlib.image

    assert matplotlib.image.imread(path).std() > 0.02  # not blank


# --------------------------------------------------------------------------- aggregate


@pytest.mark.slow
def test_aggregate_writes_every_table_and_the_p_values_are_scipys(settings):
    result = aggregate("ev", settings)
    assert result.evaluations == 2 * 3 * 3 and result.missing == []
    evaluations = load("evaluations", "ev")
    comparisons = load("comparisons", "ev")
    assert set(evaluations.columns) >= {"campaign", "task", "activation", "seed", "mlflow_run_id", "test_error", "test_loss",
                                        "best_val_loss", "error_quotient", "train_loss_auc", "epochs_to_target"}  # fmt: skip
    assert set(comparisons.columns) >= {"campaign", "task", "metric", "a", "b", "n", "mean_a", "mean_b", "diff", "ci_low", "ci_high",
                                        "test", "statistic", "p_value", "p_adjusted", "effect_size", "effect_size_kind", "better"}  # fmt: skip
    # every comparison's p-value recomputed from the evaluations with scipy, paired by seed
    for row in comparisons.itertuples():
        a = evaluations[(evaluations.task == row.task) & (evaluations.activation == row.a)].set_index("seed")[
            row.metric
        ]
        b = evaluations[(evaluations.task == row.task) & (evaluations.activation == row.b)].set_index("seed")[
            row.metric
        ]
        seeds = sorted(set(a.index) & set(b.index))
        x, y = a[seeds].to_numpy(float), b[seeds].to_numpy(float)
        assert row.n == 3 and row.diff == pytest.approx(x.mean() - y.mean())
        if row.test.startswith("wilcoxon"):
            d = x - y
            expected = 1.0 if np.all(d == 0) else sps.wilcoxon(d).pvalue
            assert row.p_value == pytest.approx(expected)
        elif row.test == "paired_t" and row.statistic is not None:
            assert row.p_value == pytest.approx(sps.ttest_rel(x, y).pvalue)
    # Holm within each test family, over the whole campaign
    for family in ("wilcoxon", "paired_t"):
        rows = comparisons[comparisons.test.str.startswith(family)]
        p = np.sort(rows.p_value.to_numpy())
        m = len(p)
        expected = np.minimum(1, np.maximum.accumulate([(m - i) * p[i] for i in range(m)]))
        assert np.allclose(np.sort(rows.p_adjusted.to_numpy()), expected)
    assert set(comparisons.better) <= {"better", "worse", "no difference"}
    rankings = load("rankings", "ev")
    primary = rankings[rankings.metric == "primary"]
    assert sorted(primary.activation) == ["elu", "eru:2", "relu"] and (primary.n_tasks == 2).all()
    assert primary.mean_rank.sum() == pytest.approx(6.0)  # ranks 1..3 averaged over tasks
    assert primary.friedman_p.notna().all() and primary.critical_difference.notna().all()
    summary = load("summary", "ev")
    assert (
        (summary.n == 3).all()
        and (summary.ci_low <= summary["mean"] + 1e-12).all()
        and (summary["mean"] <= summary.ci_high + 1e-12).all()
    )
    curves = load("curves", "ev")
    assert set(curves.metric) >= {"train_loss", "val_error", "test_error"}
    tasks = load("tasks", "ev")
    assert set(tasks.primary_metric) == {"test_error"} and tasks.target.notna().all()


@pytest.mark.slow
def test_reaggregating_replaces_rows_and_never_duplicates(settings):
    aggregate("ev", settings, report=False)
    first = {
        what: len(load(what, "ev"))
        for what in ("evaluations", "comparisons", "summary", "rankings", "curves", "studies")
    }
    before = load("comparisons", "ev")
    aggregate("ev", settings, report=False)
    assert {what: len(load(what, "ev")) for what in first} == first
    assert load("comparisons", "ev").drop(columns=[]).equals(before)  # seeded bootstrap: identical numbers
    assert load("campaigns")["name"].tolist() == ["ev"]


@pytest.mark.slow
def test_report_has_every_plot_and_a_sentence_per_pair(settings, tmp_path):
    code = main(["report", "--campaign", "ev", "--out", str(tmp_path / "r")])
    assert code == 0
    folder = tmp_path / "r"
    pngs = sorted(p.name for p in folder.glob("*.png"))
    assert pngs == ["critical-difference.png", "curves-digits-lenet5.png", "curves-digits-mlp4.png", "forest.png",
                    "seeds-digits-lenet5.png", "seeds-digits-mlp4.png"]  # fmt: skip
    for png in folder.glob("*.png"):
        _png_ok(png)
    page = (folder / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 6  # self-contained
    assert "Search: 2 trials per activation" in page and "validation split" in page
    for pair in ("elu vs relu on digits/mlp4: test error", "eru:2 vs relu on digits/lenet5: test error"):
        assert pair in page
    assert "Holm-adjusted p = " in page


@pytest.mark.slow
def test_aggregate_logs_the_report_to_the_campaign_in_mlflow(settings):
    result = aggregate("ev", settings)
    assert Path(result.report_dir, "report.html").exists()
    client = MlflowClient(settings.tracking)
    run = Tracker(settings).campaign_run("ev")
    names = {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    assert "report/report.html" in names and "report/forest.png" in names
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"spec.json", "protocol.txt", "report"}


# --------------------------------------------------------------------------- bru results


@pytest.mark.slow
def test_bru_results_json_csv_and_table(settings, capsys):
    aggregate("ev", settings, report=False)
    assert main(["results", "--campaign", "ev", "--what", "comparisons", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rows and all(r["diff"] == pytest.approx(r["mean_a"] - r["mean_b"]) for r in rows)
    assert (
        main(["results", "--campaign", "ev", "--what", "evaluations", "--task", "digits/mlp4", "--format", "json"]) == 0
    )
    evals = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(evals) == 9 and {r["task"] for r in evals} == {"digits/mlp4"}
    assert main(["results", "--campaign", "ev", "--metric", "test_loss", "--what", "summary", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("campaign,task,activation,metric") and len(lines) == 1 + 6
    assert main(["results", "--what", "rankings"]) == 0
    assert "primary" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["results", "--campaign", "nope"], "unknown campaign 'nope'; aggregated campaigns: ev"),
        (
            ["results", "--campaign", "ev", "--task", "mnist/mlp4"],
            "unknown task 'mnist/mlp4'; tasks: digits/lenet5, digits/mlp4",
        ),
        (["results", "--campaign", "ev", "--metric", "accuracy"], "unknown metric 'accuracy'; metrics: best_val_loss"),
        (["results", "--what", "everything"], "--what: 'everything' is not one of summary"),
        (["results", "--format", "xml"], "--format: 'xml'"),
        (["aggregate", "--campaign", "nope"], "unknown campaign 'nope'; campaigns in"),
        (["report", "--campaign", "nope"], "unknown campaign 'nope'"),
    ],
)
@pytest.mark.slow
def test_unknown_names_are_one_line_naming_what_exists(settings, capsys, argv, expected):
    aggregate("ev", settings, report=False)
    capsys.readouterr()
    code = main(argv)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and expected in err[0], err


def test_results_before_any_aggregation(capsys, bru_home):
    assert main(["results"]) == 2
    assert "no results database" in capsys.readouterr().err
    assert not bru_home.exists()


# --------------------------------------------------------------------------- fewer than two seeds


@pytest.mark.slow
def test_one_seed_says_why_no_test_was_run(bru_home):
    spec = parse_spec(
        {
            **SPEC,
            "name": "oneseed",
            "tasks": SPEC["tasks"][:1],
            "activations": ["relu", "eru:2"],
            "repeats": {"seeds": [0]},
        }
    )
    settings = get_settings()
    for activation in spec.labels:
        run_study(spec, "digits/mlp4", activation, settings=settings)
        run_repeats(spec, "digits/mlp4", activation, settings=settings)
    aggregate("oneseed", settings)
    rows = load("comparisons", "oneseed")
    assert (rows.test == "none").all() and rows.p_value.isna().all() and (rows.better == "not tested").all()
    assert rows.note.str.contains("fewer than two paired seeds").all()
    page = (bru_home / "reports" / "oneseed" / "report.html").read_text()
    assert "not tested (fewer than two paired seeds: no test)" in page


def test_a_changed_spec_under_the_same_name_is_refused(bru_home):
    spec = parse_spec({**SPEC, "name": "changing"})
    settings = get_settings()
    with Tracker(settings) as tracker:
        tracker.record_campaign(spec.name, spec.model_dump(mode="json"), spec.protocol())
        changed = parse_spec({**SPEC, "name": "changing", "repeats": {"seeds": [0, 1]}})
        with pytest.raises(TrackingError, match="was started with a different spec"):
            tracker.record_campaign(changed.name, changed.model_dump(mode="json"), changed.protocol())
        same = parse_spec({**SPEC, "name": "changing", "description": "only the words changed"})
        tracker.record_campaign(same.name, same.model_dump(mode="json"), same.protocol())


# --------------------------------------------------------------------------- the store itself


def _campaign(name: str = "c") -> Campaign:
    return Campaign(
        name=name,
        spec={"x": 1},
        protocol="p",
        tracking_uri="t",
        mlflow_experiment_id="1",
        aggregated_at=now(),
        bru_version="0",
    )


def _evaluation(seed: int, value: float = 0.1) -> Evaluation:
    return Evaluation(task="d/m", activation="relu", seed=seed, mlflow_run_id=f"r{seed}", test_error=value, epochs=2)


def _round_trip(url: str) -> None:
    with ResultsStore(url) as store:
        store.replace_campaign(_campaign(), [_evaluation(0), _evaluation(1)])
        store.replace_campaign(_campaign("other"), [_evaluation(0)])
        assert len(store.records("evaluations", "c")) == 2
        store.replace_campaign(_campaign(), [_evaluation(0, 0.2)])  # replaced, not added
        rows = store.records("evaluations", "c")
        assert [(r["seed"], r["test_error"]) for r in rows] == [(0, 0.2)]
        assert len(store.records("evaluations", "other")) == 1
        # a failing write (duplicate seed breaks the unique constraint) changes nothing
        with pytest.raises(IntegrityError):
            store.replace_campaign(_campaign(), [_evaluation(5), _evaluation(5)])
        assert [(r["seed"], r["test_error"]) for r in store.records("evaluations", "c")] == [(0, 0.2)]
        assert store.campaigns() == ["c", "other"]
    with ResultsStore(url) as again:  # reopening upgrades nothing and keeps everything
        assert again.campaigns() == ["c", "other"]


def _schema_matches_models(url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from bru_core.results import Base

    ResultsStore(url).close()
    with create_engine(url).connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == [], diff


def test_store_round_trip_on_sqlite(tmp_path):
    _round_trip(f"sqlite:///{tmp_path / 'r.db'}")


def test_migration_creates_exactly_the_models_on_sqlite(tmp_path):
    _schema_matches_models(f"sqlite:///{tmp_path / 'r.db'}")


@pytest.mark.slow
def test_store_round_trip_on_postgresql(postgres_url):
    _round_trip(postgres_url)


@pytest.mark.slow
def test_migration_creates_exactly_the_models_on_postgresql(postgres_url):
    _schema_matches_models(postgres_url)


def test_unknown_campaign_in_the_store(tmp_path):
    with ResultsStore(f"sqlite:///{tmp_path / 'r.db'}") as store, pytest.raises(BruError, match="none yet"):
        store.campaign("x")


def test_comparison_pairs_each_once():
    pairs = comparison_pairs(["relu", "elu", "eru:2", "oru:3"], ["relu", "elu"])
    assert pairs == [("elu", "relu"), ("eru:2", "relu"), ("oru:3", "relu"), ("eru:2", "elu"), ("oru:3", "elu")]
