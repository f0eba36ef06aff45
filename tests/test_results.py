"""Evidence end to end: search -> aggregate -> results database -> bru results / report.

One small real campaign (2 tasks x 3 activations x 3 seeds) is searched once per module;
the tests aggregate it, query it, recompute its p-values with scipy, and render the report.
Its confirmatory test is the paired t-test (3 seeds cannot give an exact signed-rank p below
0.25), so both families are exercised. A repeat that diverges is recorded, never retrained,
and counted as a failure; an old results database upgrades in place."""

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
from bru_core.results import BRIEF, Campaign, Evaluation, ResultsStore, load, now
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
    "repeats": {"seeds": [1, 2, 3]},
    "compare": {"reference": ["relu"], "test": "t"},
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


def _scipy_signed_rank_p(d: np.ndarray) -> float:
    nonzero = d[d != 0]
    if nonzero.size <= 1:  # one sign flip of one difference: p = 2 * 1/2
        return 1.0
    if np.unique(np.abs(nonzero)).size == nonzero.size == d.size:
        return float(sps.wilcoxon(d, method="exact").pvalue)
    return float(sps.wilcoxon(nonzero, method=sps.PermutationMethod(n_resamples=np.inf)).pvalue)


@pytest.mark.slow
def test_aggregate_writes_every_table_and_the_p_values_are_scipys(settings):
    result = aggregate("ev", settings)
    assert result.evaluations == 2 * 3 * 3 and result.missing == [] and result.failed == 0
    evaluations = load("evaluations", "ev")
    comparisons = load("comparisons", "ev")
    assert set(evaluations.columns) >= {"campaign", "task", "activation", "seed", "mlflow_run_id", "test_error", "test_loss",
                                        "best_val_loss", "error_quotient", "log_error_quotient", "train_loss_auc",
                                        "epochs_to_target", "status", "failure"}  # fmt: skip
    assert set(comparisons.columns) >= {"campaign", "task", "metric", "a", "b", "family", "n", "n_failed_a", "n_failed_b",
                                        "mean_a", "mean_b", "diff", "estimate", "ci_low", "ci_high", "test", "statistic",
                                        "p_value", "p_adjusted", "mdd", "effect_size", "effect_size_kind", "better"}  # fmt: skip
    assert (evaluations.status == "finished").all()
    expected_log_eq = np.log(evaluations.test_loss / evaluations.train_loss.clip(lower=1e-6))
    assert np.allclose(evaluations.log_error_quotient, expected_log_eq)
    # every comparison's p-value and estimate recomputed from the evaluations, paired by seed
    for row in comparisons.itertuples():
        a = evaluations[(evaluations.task == row.task) & (evaluations.activation == row.a)].set_index("seed")[
            row.metric
        ]
        b = evaluations[(evaluations.task == row.task) & (evaluations.activation == row.b)].set_index("seed")[
            row.metric
        ]
        seeds = sorted(set(a.index) & set(b.index))
        x, y = a[seeds].to_numpy(float), b[seeds].to_numpy(float)
        d = x - y
        assert row.n == 3 and row.diff == pytest.approx(x.mean() - y.mean())
        if row.test.startswith("wilcoxon"):
            assert row.p_value == pytest.approx(_scipy_signed_rank_p(d))
            walsh = [(d[i] + d[j]) / 2 for i in range(3) for j in range(i, 3)]
            assert row.estimate == pytest.approx(np.median(walsh))
        elif row.test == "paired_t" and row.statistic is not None:
            assert row.p_value == pytest.approx(sps.ttest_rel(x, y).pvalue)
            assert row.estimate == pytest.approx(d.mean())
    # the declared families: the confirmatory one is the t rows of test error, candidate vs reference
    confirmatory = comparisons[comparisons.family == "confirmatory"]
    assert set(confirmatory.test) == {"paired_t"} and set(confirmatory.metric) == {"test_error"}
    assert sorted(zip(confirmatory.task, confirmatory.a, strict=True)) == sorted(
        (t, a) for t in ("digits/mlp4", "digits/lenet5") for a in ("elu", "eru:2")
    )
    assert confirmatory.mdd.notna().all() and (confirmatory.mdd > 0).all()
    assert comparisons[comparisons.family == "exploratory"].mdd.isna().all()
    # Holm within each family: confirmatory together, exploratory per metric and test
    kind = comparisons.test.map(lambda t: "t" if t == "paired_t" else "wilcoxon")
    for _, rows in comparisons.assign(kind=kind).groupby(["family", "metric", "kind"]):
        if rows.family.iloc[0] == "confirmatory":
            rows = comparisons[comparisons.family == "confirmatory"]
        tested = rows[rows.p_value.notna()]
        p = np.sort(tested.p_value.to_numpy())
        m = len(p)
        expected = np.minimum(1, np.maximum.accumulate([(m - i) * p[i] for i in range(m)]))
        assert np.allclose(np.sort(tested.p_adjusted.to_numpy()), expected)
    assert set(comparisons.better) <= {"better", "worse", "no difference", "not tested"}
    # epochs to target is censored: ranks only, no t-test
    assert set(comparisons[comparisons.metric == "epochs_to_target"].test) <= {"wilcoxon_exact"}
    rankings = load("rankings", "ev")
    primary = rankings[rankings.metric == "primary"]
    assert sorted(primary.activation) == ["elu", "eru:2", "relu"] and (primary.n_tasks == 2).all()
    assert primary.mean_rank.sum() == pytest.approx(6.0)  # ranks 1..3 averaged over tasks
    assert primary.friedman_p.notna().all() and primary.critical_difference.notna().all()
    summary = load("summary", "ev")
    assert (
        (summary.n == 3).all()
        and (summary.n_failed == 0).all()
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
    assert load("comparisons", "ev").equals(before)  # no resampling anywhere: identical numbers
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
    for pair in ("elu vs relu on digits/mlp4 (confirmatory): test error",
                 "eru:2 vs relu on digits/lenet5 (confirmatory): test error",
                 "eru:2 vs relu on digits/lenet5 (exploratory): test error"):  # fmt: skip
        assert pair in page
    assert "Holm-adjusted p = " in page and "over 4 comparisons" in page
    assert "Confirmatory comparisons" in page and "Repeats" in page


@pytest.mark.slow
def test_report_refuses_a_folder_bru_did_not_write(settings, tmp_path, capsys):
    """`--out ~/thesis` must not empty a thesis: one line, exit 2, every file kept, and no
    staging folder left beside it; the same for a report folder someone added a file to."""
    aggregate("ev", settings, report=False)
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "chapter.tex").write_text("years of work")
    ours = tmp_path / "ours"
    assert main(["report", "--campaign", "ev", "--out", str(ours)]) == 0
    (ours / "notes.txt").write_text("mine")
    capsys.readouterr()
    for folder in (thesis, ours):
        before = sorted(p.name for p in folder.iterdir())
        code = main(["report", "--campaign", "ev", "--out", str(folder)])
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert code == 2 and len(err) == 1 and "--out" in err[0] and ".bru-report" in err[0], err
        assert sorted(p.name for p in folder.iterdir()) == before
    assert (thesis / "chapter.tex").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ours", "thesis"]


@pytest.mark.slow
def test_report_replaces_only_its_own_folder_and_writes_into_the_working_directory(
    settings, tmp_path, monkeypatch, capsys
):
    aggregate("ev", settings, report=False)
    folder = tmp_path / "r"
    assert main(["report", "--campaign", "ev", "--out", str(folder)]) == 0
    assert (folder / ".bru-report").is_file()
    (folder / "forest.png").write_bytes(b"stale")
    assert main(["report", "--campaign", "ev", "--out", str(folder)]) == 0  # its own: replaced whole
    _png_ok(folder / "forest.png")
    legacy = tmp_path / "legacy"  # written before the marker: report.html and PNGs only
    legacy.mkdir()
    (legacy / "report.html").write_text("old")
    (legacy / "forest.png").write_bytes(b"old")
    assert main(["report", "--campaign", "ev", "--out", str(legacy)]) == 0
    assert "bru-lab report" in (legacy / "report.html").read_text()
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    assert main(["report", "--campaign", "ev", "--out", "."]) == 0  # empty: filled in place
    assert (here / "report.html").is_file() and Path.cwd() == here
    assert main(["report", "--campaign", "ev", "--out", "."]) == 0  # now a report: replaced
    assert (here / "report.html").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".report")]


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
    assert {r["family"] for r in rows} == {"confirmatory", "exploratory"}
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
    # markdown: the table's columns as a GitHub table, for docs
    assert main(["results", "--campaign", "ev", "--what", "comparisons", "--metric", "test_error",
                 "--format", "markdown"]) == 0  # fmt: skip
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "| " + " | ".join(BRIEF["comparisons"]) + " |"
    expected_rows = [r for r in rows if r["metric"] == "test_error"]
    assert lines[1].startswith("| --- | --- |") and len(lines) == 2 + len(expected_rows)
    cells = len(BRIEF["comparisons"])
    assert all(line.startswith("| digits/") and line.count(" | ") == cells - 1 for line in lines[2:])


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
            "repeats": {"seeds": [1]},
            "compare": {"reference": ["relu"], "exploratory": True},
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
        changed = parse_spec({**SPEC, "name": "changing", "repeats": {"seeds": [1, 2]}})
        with pytest.raises(TrackingError, match="was started with a different spec"):
            tracker.record_campaign(changed.name, changed.model_dump(mode="json"), changed.protocol())
        same = parse_spec({**SPEC, "name": "changing", "description": "only the words changed"})
        tracker.record_campaign(same.name, same.model_dump(mode="json"), same.protocol())
        # how the seeds run is not what they compute: another pack size resumes the campaign
        repacked = parse_spec({**SPEC, "name": "changing", "repeats": {**SPEC.get("repeats", {}), "pack": 2}})
        tracker.record_campaign(repacked.name, repacked.model_dump(mode="json"), repacked.protocol())


def test_a_spec_recorded_before_repeats_pack_existed_digests_as_it_did():
    from bru_core.tracking import spec_digest

    dumped = parse_spec({**SPEC, "name": "old"}).model_dump(mode="json")
    before = {**dumped, "repeats": {k: v for k, v in dumped["repeats"].items() if k != "pack"}}
    assert "pack" in dumped["repeats"] and "pack" not in before["repeats"]
    assert (
        spec_digest(dumped)
        == spec_digest(before)
        == spec_digest({**dumped, "repeats": {**dumped["repeats"], "pack": 5}})
    )
    assert spec_digest(dumped) != spec_digest({**dumped, "repeats": {**dumped["repeats"], "seeds": [1, 2]}})


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


# --------------------------------------------------------------------------- failures are outcomes


@pytest.mark.slow
def test_a_diverged_repeat_is_recorded_never_retrained_and_counted(bru_home, monkeypatch):
    """Seed 2 of eru:2 diverges: its run is FAILED with state=diverged, a rerun keeps it,
    and the aggregation ranks it as eru:2's worst outcome instead of judging eru:2 on its
    survivors (issue 13, item 5)."""
    import bru_core.packed as packed
    import bru_core.search.repeats as repeats

    spec = parse_spec({
        **SPEC, "name": "diverging", "tasks": SPEC["tasks"][:1], "activations": ["relu", "eru:2"],
        "repeats": {"seeds": [1, 2, 3]}, "compare": {"reference": ["relu"], "test": "t"},
    })  # fmt: skip
    settings = get_settings()
    real_stop, real_packs = packed.PackedTrainer._stop_diverged, repeats.train_in_packs
    calls: list[tuple[str, int]] = []

    def stop_diverged(self, epoch, batch_losses):
        """eru:2's seed 2 (packed with seeds 1 and 3) has a non-finite loss at batch 7 of epoch 1."""
        for position, m in enumerate(self.active):
            if self.config.activation == "eru:2" and self.members[m].seed == 2 and epoch == 1:
                batch_losses[6, position] = float("nan")
        real_stop(self, epoch, batch_losses)

    def train_in_packs(configs, *args, **kwargs):
        calls.extend((c.activation, c.seed) for c in configs)
        return real_packs(configs, *args, **kwargs)

    monkeypatch.setattr(packed.PackedTrainer, "_stop_diverged", stop_diverged)
    monkeypatch.setattr(repeats, "train_in_packs", train_in_packs)
    for activation in spec.labels:
        run_study(spec, "digits/mlp4", activation, settings=settings)
    results = run_repeats(spec, "digits/mlp4", "eru:2", settings=settings)
    assert calls == [("eru:2", 1), ("eru:2", 2), ("eru:2", 3)]  # one pack
    assert [(r.seed, r.status) for r in results] == [(1, "finished"), (2, "diverged"), (3, "finished")]
    assert "non-finite training loss" in results[1].failure and "epoch 1, batch 7" in results[1].failure
    calls.clear()
    again = run_repeats(spec, "digits/mlp4", "eru:2", settings=settings)
    assert calls == [] and all(r.reused for r in again) and again[1].status == "diverged"
    run_repeats(spec, "digits/mlp4", "relu", settings=settings)
    client = MlflowClient(settings.tracking)
    run = client.get_run(results[1].mlflow_run_id)
    assert run.info.status == "FAILED" and run.data.tags["bru.state"] == "diverged"

    result = aggregate("diverging", settings)
    assert result.failed == 1 and result.evaluations == 6
    evaluations = load("evaluations", "diverging")
    failed = evaluations[evaluations.status == "diverged"]
    assert list(zip(failed.activation, failed.seed, strict=True)) == [("eru:2", 2)]
    assert failed.test_error.isna().all() and failed.failure.str.contains("non-finite").all()
    summary = load("summary", "diverging", metric="test_error").set_index("activation")
    assert (summary.loc["eru:2", "n"], summary.loc["eru:2", "n_failed"]) == (2, 1)
    rows = load("comparisons", "diverging", metric="test_error").set_index("test")
    assert (rows.n == 3).all() and (rows.n_failed_a == 1).all() and (rows.n_failed_b == 0).all()
    # the rank test keeps the failure as eru:2's worst outcome: its largest positive difference
    e = evaluations.set_index(["activation", "seed"]).test_error
    d = np.array([e["eru:2", 1] - e["relu", 1], np.inf, e["eru:2", 3] - e["relu", 3]])
    from bru_core.stats import wilcoxon

    assert rows.loc["wilcoxon_exact", "p_value"] == pytest.approx(wilcoxon(d).p_value)
    assert rows.loc["paired_t", "note"].startswith("failed (diverged) seeds: 1 of a, 0 of b")
    page = (bru_home / "reports" / "diverging" / "report.html").read_text()
    assert "1 of eru:2&#x27;s 3 seeds diverged" in page and "diverged seeds" in page


# --------------------------------------------------------------------------- an older database


def test_a_results_database_of_revision_0001_upgrades_in_place(tmp_path):
    """Rows written before the confirmatory design read back with their new columns filled:
    exploratory (no declared family then), finished, no failures; the estimate is the old diff."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text

    from bru_core.results import MIGRATIONS

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
        connection.execute(text(
            "INSERT INTO campaigns (id, name, spec, protocol, tracking_uri, mlflow_experiment_id, aggregated_at, bru_version) "
            "VALUES (1, 'old', '{\"activations\": [\"relu\"]}', 'p', 't', '1', '2026-11-30 00:00:00', '0.1.0')"
        ))  # fmt: skip
        connection.execute(text(
            "INSERT INTO comparisons (campaign_id, task, metric, a, b, n, mean_a, mean_b, diff, ci_low, ci_high, test, "
            "statistic, p_value, p_adjusted, effect_size, effect_size_kind, better, prob_improvement, lower_is_better, note) "
            "VALUES (1, 'd/m', 'error_quotient', 'eru:2', 'relu', 8, 1.1, 1.2, -0.1, -0.2, 0.0, 'wilcoxon_exact', 3, 0.02, "
            "0.5, -0.8, 'cohen_dz', 'no difference', 0.7, 1, '')"
        ))  # fmt: skip
        connection.execute(text(
            "INSERT INTO evaluations (campaign_id, task, activation, seed, mlflow_run_id, test_error, epochs) "
            "VALUES (1, 'd/m', 'relu', 0, 'r0', 0.1, 2)"
        ))  # fmt: skip
    engine.dispose()
    _schema_matches_models(url)  # upgraded to head
    with ResultsStore(url) as store:
        (row,) = store.records("comparisons", "old")
        assert (row["family"], row["estimate"], row["mdd"], row["n_failed_a"]) == ("exploratory", -0.1, None, 0)
        (evaluation,) = store.records("evaluations", "old")
        assert (evaluation["status"], evaluation["log_error_quotient"]) == ("finished", None)
    # and the report of the old campaign still renders (its metric is no longer one bru analyses)
    from bru_core.report import sentence

    assert "error quotient" in sentence(row)
