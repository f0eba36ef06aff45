"""The Prefect layer: the campaign flow in-process, and the service path against a real
`prefect server` with a process work pool and a real worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow import MlflowClient

from bru_core.results import ResultsStore
from bru_core.search import counts_towards_budget
from bru_core.settings import get_settings
from flows.service import DEPLOYMENTS
from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
BRU = str(Path(sys.executable).parent / "bru")
SMOKE = str(ROOT / "configs" / "smoke.yaml")


def _bru(*args: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([BRU, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def _counts(home: Path, campaign: str = "smoke") -> dict[str, int]:
    """What the stores hold: trials with an outcome, MLflow runs by role, results rows."""
    settings = get_settings(home=home)
    counts: dict[str, int] = {}
    for name in optuna.get_all_study_names(storage=settings.optuna):
        trials = optuna.load_study(study_name=name, storage=settings.optuna).trials
        counts[f"trials {name}"] = sum(counts_towards_budget(t) for t in trials)
        counts[f"all trials {name}"] = len(trials)
    client = MlflowClient(settings.tracking)
    experiment = client.get_experiment_by_name(campaign)
    for run in client.search_runs([experiment.experiment_id], max_results=1000):
        role = run.data.tags["bru.role"]
        counts[f"runs {role}"] = counts.get(f"runs {role}", 0) + 1
    counts["model versions"] = len(client.search_model_versions())
    with ResultsStore(settings.results) as store:
        for what in ("evaluations", "comparisons", "summary"):
            counts[f"rows {what}"] = len(store.records(what, campaign))
    return counts


EXPECTED_SMOKE = {
    "trials smoke/digits/mlp4/relu": 3,
    "trials smoke/digits/mlp4/eru:2": 3,
    "runs campaign": 1,
    "runs study": 2,
    "runs trial": 6,
    "runs repeat": 4,
    "model versions": 2,
    "rows evaluations": 4,
}


def _api(server, path: str, body: dict | None = None) -> object:
    request = urllib.request.Request(
        f"{server.api_url}{path}",
        data=json.dumps(body or {}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST" if body is not None else "GET",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _gpu_slots(server) -> int:
    return _api(server, "/v2/concurrency_limits/gpu")["active_slots"]


def _stop_worker(worker: subprocess.Popen) -> None:
    for _ in range(2):  # a Prefect worker stops on the second SIGINT
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGINT)
            time.sleep(1)
    try:
        worker.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()


def test_prefect_yaml_matches_the_deployments_bru_deploy_makes():
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    assert {d["name"]: d["entrypoint"] for d in config["deployments"]} == DEPLOYMENTS
    assert {d["work_pool"]["name"] for d in config["deployments"]} == {"bru-gpu"}
    for entrypoint in DEPLOYMENTS.values():
        path, name = entrypoint.split(":")
        assert f"def {name}(" in (ROOT / path).read_text()


@pytest.mark.slow
def test_campaign_run_in_process_end_to_end_and_again(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["BRU_HOME"] = str(tmp_path / "home")
    first = _bru("campaign", "run", SMOKE, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "eru:2 vs relu on digits/mlp4 (exploratory): test error" in first.stdout
    assert "report: " in first.stdout and "bru ui" in first.stdout
    counts = _counts(tmp_path / "home")
    assert EXPECTED_SMOKE.items() <= counts.items(), counts
    again = _bru("campaign", "run", SMOKE, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _counts(tmp_path / "home") == counts  # nothing trained, logged or written twice


@pytest.mark.slow
def test_service_path_deploy_worker_submit_wait(prefect_server, tmp_path):
    home = tmp_path / "home"
    env = prefect_server.env(BRU_HOME=str(home), PREFECT_WORKER_QUERY_SECONDS="1", BRU_GPU_LEASE_SECONDS="60")
    missing = _bru("campaign", "submit", SMOKE, env=env)
    assert missing.returncode == 2 and "run bru deploy first" in missing.stderr
    deployed = _bru("deploy", env=env)
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    assert "gpu limit 1 slot(s)" in deployed.stdout
    with open(tmp_path / "worker.log", "w") as log:
        worker = subprocess.Popen([BRU, "worker", "--pool", "bru-gpu"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                  stderr=log, start_new_session=True)  # fmt: skip
    try:
        submitted = _bru("campaign", "submit", SMOKE, "--wait", env=env)
        assert submitted.returncode == 0, submitted.stderr[-3000:] + (tmp_path / "worker.log").read_text()[-3000:]
        assert "flow run Completed" in submitted.stdout and "eru:2 vs relu on digits/mlp4" in submitted.stdout
        counts = _counts(home)
        assert EXPECTED_SMOKE.items() <= counts.items(), counts
        # the Prefect UI reads like the experiment
        names = {t["name"] for t in _api(prefect_server, "/task_runs/filter", {"limit": 200})}
        assert {"digits/mlp4 relu trial 0", "digits/mlp4 eru:2 trial 2", "digits/mlp4 relu seed 1"} <= names, names
        assert _gpu_slots(prefect_server) == 0
        again = _bru("campaign", "submit", SMOKE, "--wait", env=env)
        assert again.returncode == 0, again.stderr[-3000:]
        assert _counts(home) == counts
    finally:
        _stop_worker(worker)
    # with no worker: the waiting command says so instead of hanging silently
    waiting = subprocess.Popen([BRU, "campaign", "submit", SMOKE, "--wait", "--patience", "2"], env=env, cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    try:
        deadline = time.time() + 60
        line = ""
        while time.time() < deadline and "no worker is polling" not in line:
            line = waiting.stderr.readline()
        assert "no worker is polling work pool 'bru-gpu'" in line and "bru worker" in line
    finally:
        os.killpg(waiting.pid, signal.SIGKILL)
        waiting.wait()
    flow_run_id = waiting.stdout.read().split("flow run ")[-1].split()[0]
    # while that run waits, the same campaign is not submitted twice
    twice = _bru("campaign", "submit", SMOKE, env=env)
    assert twice.returncode == 2 and twice.stderr.strip().splitlines() in [
        [
            f"error: campaign 'smoke' already has flow run {flow_run_id} ({state}); "
            f"wait for it to end, or cancel it with: prefect flow-run cancel {flow_run_id}"
        ]
        for state in ("Scheduled", "Late")  # Late: a scheduled run past its start time
    ], twice.stderr
    # leave no scheduled run behind for the next test's worker
    urllib.request.urlopen(
        urllib.request.Request(f"{prefect_server.api_url}/flow_runs/{flow_run_id}", method="DELETE"), timeout=10
    )


def _flow_run_processes(flow_run_id: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def test_submit_without_a_reachable_api_names_the_url(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/api"
    env = {**os.environ, "PREFECT_API_URL": url, "BRU_HOME": str(tmp_path), "PREFECT_HOME": str(tmp_path / "p")}
    started = time.time()
    result = _bru("campaign", "submit", SMOKE, env=env, timeout=120)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and url in lines[0] and "cannot be reached" in lines[0], (
        result.stderr
    )
    assert time.time() - started < 60


def test_campaign_run_with_missing_data_is_one_line(tmp_path):
    spec = tmp_path / "mnist.yaml"
    spec.write_text(
        "name: m\ntasks: [{dataset: mnist, model: mlp4, epochs: 1}]\nactivations: [relu]\n"
        "search: {trials: 1, space: {lr: {low: 0.01, high: 0.02}}}\ncompare: {exploratory: true}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["BRU_HOME"] = str(tmp_path / "home")
    result = _bru("campaign", "run", str(spec), env=env, timeout=120)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and "mnist not found" in lines[0] and "--download" in lines[0]
    assert not (tmp_path / "home").exists()


@pytest.mark.slow
@pytest.mark.parametrize("pool_type", ["docker", "kubernetes"])
def test_deploy_to_a_container_pool_uses_the_job_templates_in_infra(prefect_server, tmp_path, pool_type):
    env = prefect_server.env(BRU_HOME=str(tmp_path / "home"))
    pool = f"bru-{pool_type}"
    result = _bru(
        "deploy",
        "--pool",
        pool,
        "--type",
        pool_type,
        "--image",
        "registry.example/bru-lab-worker:1",
        "--gpus",
        "4",
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "code at /opt/bru-lab on the workers" in result.stdout and "gpu limit 4 slot(s)" in result.stdout
    work_pool = _api(prefect_server, f"/work_pools/{pool}")
    assert work_pool["type"] == pool_type
    template = json.loads((ROOT / "infra" / pool_type / "base-job-template.json").read_text())
    assert work_pool["base_job_template"] == template
    gpu_request = json.dumps(template)
    assert ("nvidia.com/gpu" if pool_type == "kubernetes" else '"Driver": "nvidia"') in gpu_request
    deployment = _api(prefect_server, "/deployments/name/bru-campaign/bru-campaign")
    assert deployment["work_pool_name"] == pool
    assert deployment["job_variables"] == {
        "image": "registry.example/bru-lab-worker:1",
        "env": {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30"},  # what the crash automation expects
    }
    assert deployment["pull_steps"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": "/opt/bru-lab"}}
    ]
    again = _bru("deploy", "--pool", pool, "--type", "process", env=env)
    assert again.returncode == 2 and f"work pool {pool!r} exists with type {pool_type}" in again.stderr
    too_soon = _bru("deploy", "--pool", "bru-never", "--crash-after", "45", env=env)
    assert too_soon.returncode == 2 and too_soon.stderr.strip().splitlines() == [
        "error: --crash-after: must be at least 90 s (three heartbeats of 30 s), got 45"
    ]
    assert not any(p["name"] == "bru-never" for p in _api(prefect_server, "/work_pools/filter", {}))
    automations = _api(prefect_server, "/automations/filter", {})
    (crash,) = [a for a in automations if a["name"] == "bru: crash flow runs that stop beating"]
    assert crash["trigger"]["posture"] == "Proactive" and crash["actions"][0]["state"] == "CRASHED"


def test_run_records_go_to_the_log_file_not_the_console(tmp_path):
    """bru campaign run: a failed task's traceback goes to the log file, not the console;
    the console still gets everything else (here a warning of Prefect's client)."""
    path = tmp_path / "logs" / "campaign.log"
    script = f"""
import logging, sys
import flows.campaign  # imports Prefect, which configures its logging
from flows.console import run_records_to_file
run_records_to_file({str(path)!r})
try:
    raise RuntimeError("the store went away")
except RuntimeError:
    logging.getLogger("prefect.task_runs").error(
        "Finished in state Failed", exc_info=True, extra={{"task_run_name": "t 1", "flow_run_name": "f"}})
logging.getLogger("prefect.client").warning("a warning of its own")
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "a warning of its own" in done.stderr
    assert "the store went away" not in done.stderr and "Finished in state" not in done.stderr, done.stderr
    text = path.read_text()
    assert "Task run 't 1' - Finished in state Failed" in text and "RuntimeError: the store went away" in text


def test_the_run_log_file_is_created_with_its_first_record_only(tmp_path):
    script = (
        "import flows.campaign, sys; from flows.console import run_records_to_file; run_records_to_file(sys.argv[1])"
    )
    log = tmp_path / "logs" / "campaign.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    done = subprocess.run(
        [sys.executable, "-c", script, str(log)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert not log.exists()
