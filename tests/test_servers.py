"""The real-server fixtures of tests/servers.py work: PostgreSQL (via SQLAlchemy and Optuna) and MLflow."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

# sqlalchemy, optuna and mlflow are imported inside the tests: importing mlflow alone takes
# seconds, which a run that deselects the slow tests (-m "not slow") should not pay.


# --------------------------------------------------------------------------- PostgreSQL


def test_postgres_round_trip_with_sqlalchemy(postgres_url):
    import sqlalchemy

    assert postgres_url.startswith("postgresql+psycopg://postgres@127.0.0.1:")
    engine = sqlalchemy.create_engine(postgres_url)
    try:
        with engine.begin() as conn:
            version = conn.execute(sqlalchemy.text("select version()")).scalar_one()
            assert version.startswith("PostgreSQL ")
            conn.execute(sqlalchemy.text("create table t (id integer primary key, name text not null)"))
            conn.execute(
                sqlalchemy.text("insert into t values (:id, :name)"), [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
            )
        with engine.connect() as conn:
            rows = conn.execute(sqlalchemy.text("select id, name from t order by id")).all()
        assert [tuple(row) for row in rows] == [(1, "a"), (2, "b")]
    finally:
        engine.dispose()


def test_postgres_databases_are_fresh_and_separate(postgres_server, postgres_url):
    import sqlalchemy

    # A second test database on the same server starts empty, and re-creating a name empties it.
    url = postgres_server.create_database("other_db")
    assert url == f"postgresql+psycopg://postgres@127.0.0.1:{postgres_server.port}/other_db"
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text("create table t (id integer)"))
        engine.dispose()
        assert postgres_server.create_database("other_db") == url
        with engine.connect() as conn:
            assert sqlalchemy.inspect(conn).get_table_names() == []
    finally:
        engine.dispose()
        postgres_server.drop_database("other_db")
    engine = sqlalchemy.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert sqlalchemy.inspect(conn).get_table_names() == []
    finally:
        engine.dispose()


def test_optuna_study_on_postgres(postgres_url):
    import optuna

    study = optuna.create_study(storage=postgres_url, study_name="s")
    study.optimize(lambda trial: (trial.suggest_float("x", -1.0, 1.0) - 0.5) ** 2, n_trials=5)

    # A separate storage object (its own engine and connections) sees what the first one wrote.
    storage = optuna.storages.RDBStorage(postgres_url)
    try:
        loaded = optuna.load_study(study_name="s", storage=storage)
        complete = loaded.get_trials(states=[optuna.trial.TrialState.COMPLETE])
        assert len(complete) == 5
        assert loaded.best_value == min(t.value for t in complete)
    finally:
        storage.engine.dispose()


# --------------------------------------------------------------------------- MLflow


def test_mlflow_server_round_trip(mlflow_server, tmp_path):
    import mlflow
    from mlflow.entities import RunStatus

    assert mlflow_server.uri.startswith("http://127.0.0.1:")
    client = mlflow.MlflowClient(tracking_uri=mlflow_server.uri)
    experiment_id = client.create_experiment("servers-smoke")
    run_id = client.create_run(experiment_id).info.run_id
    for step, value in enumerate([0.5, 0.25, 0.125]):
        client.log_metric(run_id, "loss", value, step=step)
    client.log_param(run_id, "activation", "eru:2")
    client.log_text(run_id, "hi", "a.txt")
    client.set_terminated(run_id)

    run = client.get_run(run_id)
    assert run.info.status == RunStatus.to_string(RunStatus.FINISHED)
    assert run.data.params == {"activation": "eru:2"}
    assert run.data.metrics == {"loss": 0.125}
    history = client.get_metric_history(run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 0.5), (1, 0.25), (2, 0.125)]
    assert [f.path for f in client.list_artifacts(run_id)] == ["a.txt"]
    local = client.download_artifacts(run_id, "a.txt", dst_path=str(tmp_path))
    assert Path(local).read_text() == "hi"

    # The artifact went through the server's proxy into its --artifacts-destination folder.
    assert list((mlflow_server.root / "artifacts").rglob("a.txt"))
