"""`bru ui --optuna`: optuna-dashboard on the campaign's Optuna storage, beside the MLflow UI,
read-only, on 127.0.0.1; its one-line errors; Ctrl-C leaves no process behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import optuna
import pytest

from bru_core.search.storage import quiet_optuna
from tests.helpers.cli import bru, run
from tests.helpers.paths import BRU, ROOT, SMOKE
from tests.helpers.processes import group_alive
from tests.servers import free_port

STUDY = "smoke/digits/mlp4/relu"


def _get(url: str, method: str = "GET") -> tuple[int, dict]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _start_ui(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """`bru ui ARGS` in a session of its own, as a terminal runs it (Ctrl-C reaches its group)."""
    with log.open("wb") as output:
        return subprocess.Popen(
            [BRU, "ui", *args], env=env, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )


def _wait_for_dashboard(base: str, ui: subprocess.Popen, log: Path, timeout: float = 60) -> dict:
    """The dashboard's list of studies, as soon as it answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ui.poll() is not None:
            pytest.fail(f"bru ui exited with code {ui.returncode}:\n{log.read_text()}")
        try:
            status, body = _get(f"{base}/api/studies")
            if status == 200:
                return body
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    pytest.fail(f"optuna-dashboard did not answer within {timeout:.0f} s:\n{log.read_text()}")


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (read from /proc: no psutil here)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _refuses(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _stop(ui: subprocess.Popen, signum: int = signal.SIGINT) -> int:
    os.killpg(ui.pid, signum)  # what Ctrl-C in a terminal does: the signal goes to bru's group
    return ui.wait(timeout=60)


def _ports() -> tuple[int, int]:
    first, second = free_port(), free_port()
    while second == first:
        second = free_port()
    return first, second


@pytest.mark.slow
def test_ui_serves_the_study_in_optuna_dashboard_beside_mlflow(tmp_path, bru_home):
    """A finished tiny study: the dashboard lists it with its direction, objective name and
    trials (intermediate values, the MLflow run id); it refuses to change it; Ctrl-C stops
    the dashboard and the MLflow server, leaving no process."""
    env = {**os.environ, "BRU_HOME": str(bru_home)}
    search = bru("search", SMOKE, "--task", "digits/mlp4", "-a", "relu", "--no-repeats", env=env)
    assert search.returncode == 0, search.stderr
    mlflow_port, dashboard_port = _ports()
    log = tmp_path / "ui.log"
    ui = _start_ui(["--optuna", "--port", str(mlflow_port), "--optuna-port", str(dashboard_port)], env, log)
    mlflow_groups: list[int] = []
    try:
        base = f"http://127.0.0.1:{dashboard_port}"
        studies = _wait_for_dashboard(base, ui, log)["study_summaries"]
        assert [(s["study_name"], s["directions"]) for s in studies] == [(STUDY, ["minimize"])]
        status, study = _get(f"{base}/api/studies/{studies[0]['study_id']}")
        assert status == 200 and study["objective_names"] == ["val_error"]
        assert len(study["trials"]) == 3 and {t["state"] for t in study["trials"]} == {"Complete"}
        assert all(len(t["intermediate_values"]) == 2 for t in study["trials"])  # one per epoch of smoke's 2
        assert all("mlflow_run_id" in {a["key"] for a in t["user_attrs"]} for t in study["trials"])
        status, refused = _get(f"{base}/api/studies/{studies[0]['study_id']}", method="DELETE")
        assert status == 405 and "read-only" in refused["reason"]
        assert optuna.load_study(study_name=STUDY, storage=f"sqlite:///{bru_home / 'optuna.db'}").trials
        from bru_core.tracking import wait_healthy

        wait_healthy(f"http://127.0.0.1:{mlflow_port}", ui, timeout=90)
        mlflow_groups = [os.getpgid(pid) for pid in _children(ui.pid)]
        assert mlflow_groups  # the MLflow server, in a session of its own
        output = log.read_text()
        assert f"MLflow UI on http://127.0.0.1:{mlflow_port}" in output
        assert f"optuna-dashboard on http://127.0.0.1:{dashboard_port}" in output
    finally:
        code = _stop(ui) if ui.poll() is None else ui.returncode
        for group in mlflow_groups:
            deadline = time.monotonic() + 15
            while group_alive(group) and time.monotonic() < deadline:
                time.sleep(0.2)
    assert code == 0, log.read_text()
    assert not any(group_alive(group) for group in mlflow_groups), "the MLflow server outlived bru ui"
    assert _refuses(dashboard_port) and _refuses(mlflow_port)


@pytest.mark.slow
def test_ui_serves_only_the_dashboard_beside_a_tracking_server(capsys, tmp_path, postgres_url):
    """Optuna on PostgreSQL and MLflow on a server: an empty database is told in one line;
    with a study only the dashboard is served, the line says where MLflow is, and a plain
    `kill` stops it as Ctrl-C does."""
    server = ["--tracking-uri", "http://127.0.0.1:1"]
    code, _, error = run(capsys, "ui", "--optuna", *server, "--optuna-storage", postgres_url)
    assert code == 2 and error.strip().startswith("error: --optuna-storage: no Optuna study in postgresql+psycopg://")
    with quiet_optuna():
        study = optuna.create_study(study_name="pg/digits/mlp4/elu", storage=postgres_url)
        study.optimize(lambda trial: trial.suggest_float("lr", 1e-3, 1e-1, log=True), n_trials=2)
    dashboard_port = free_port()
    env = {**os.environ, "BRU_OPTUNA_STORAGE": postgres_url, "BRU_TRACKING_URI": "http://127.0.0.1:1"}
    log = tmp_path / "ui.log"
    ui = _start_ui(["--optuna", "--optuna-port", str(dashboard_port)], env, log)
    try:
        studies = _wait_for_dashboard(f"http://127.0.0.1:{dashboard_port}", ui, log)["study_summaries"]
        assert [s["study_name"] for s in studies] == ["pg/digits/mlp4/elu"]
        assert _children(ui.pid) == []  # no MLflow server of its own
    finally:
        code = _stop(ui, signal.SIGTERM) if ui.poll() is None else ui.returncode
    assert code == 0, log.read_text()
    assert "MLflow: the tracking server http://127.0.0.1:1; open it in a browser" in log.read_text()
    assert _refuses(dashboard_port)


# --------------------------------------------------------------------------- one-line errors


def test_ui_optuna_without_the_extra(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # `import optuna_dashboard` fails
    code, _, error = run(capsys, "ui", "--optuna")
    assert code == 2
    assert error.strip() == "error: --optuna: optuna-dashboard is not installed; pip install 'bru-lab[dashboard]'"


@pytest.mark.parametrize(
    "make_storage",
    [
        pytest.param(lambda path: None, id="no-file"),
        pytest.param(lambda path: path.write_bytes(b""), id="empty-file"),
        pytest.param(lambda path: optuna.storages.RDBStorage(f"sqlite:///{path}"), id="tables-no-study"),
    ],
)
def test_ui_optuna_with_no_study_yet(capsys, bru_home, make_storage):
    bru_home.mkdir()
    (bru_home / "mlflow.db").touch()  # an MLflow store, so that the Optuna storage is what is missing
    make_storage(bru_home / "optuna.db")
    code, _, error = run(capsys, "ui", "--optuna", "--optuna-port", str(free_port()))
    assert code == 2
    assert error.strip() == (
        f"error: --optuna-storage: no Optuna study in sqlite:///{bru_home / 'optuna.db'} yet; "
        "run bru search (or bru campaign run) first"
    )


def test_ui_optuna_never_prints_a_store_password(capsys):
    code, _, error = run(
        capsys,
        "ui",
        "--optuna",
        "--tracking-uri",
        "http://127.0.0.1:1",
        "--optuna-storage",
        "postgresql://bru:s3cret-pw@127.0.0.1:1/optuna",
    )
    assert code == 2 and len(error.strip().splitlines()) == 1
    assert error.startswith("error: --optuna-storage: postgresql://bru:***@127.0.0.1:1/optuna cannot be read: ")
    assert "s3cret-pw" not in error


def test_ui_optuna_port_taken(capsys, bru_home):
    bru_home.mkdir()
    with quiet_optuna():
        optuna.create_study(study_name="taken", storage=f"sqlite:///{bru_home / 'optuna.db'}")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        code, _, error = run(
            capsys, "ui", "--optuna", "--tracking-uri", "http://127.0.0.1:1", "--optuna-port", str(port)
        )
    assert code == 2
    assert error.strip().startswith(f"error: --optuna-port: cannot listen on 127.0.0.1:{port} (")
