"""The Prefect layer: the campaign flow in-process, and the service path against a real
`prefect server` with a process work pool and a real worker."""

from __future__ import annotations

import contextvars
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import ClassVar

import pytest
import yaml

from bru_core.settings import get_settings
from flows.service import DEPLOYMENTS, SECRET_SETTINGS, secret_reference
from tests.helpers.cli import bru as _bru
from tests.helpers.paths import BRU, ROOT, SMOKE
from tests.helpers.prefect import api as _api
from tests.helpers.prefect import gpu_slots as _gpu_slots
from tests.helpers.prefect import stop_worker as _stop_worker
from tests.helpers.stores import EXPECTED_SMOKE, campaign_runs
from tests.helpers.stores import store_counts as _counts
from tests.servers import free_port


def _running(home: Path, campaign: str = "smoke") -> list[str]:
    """The roles of the campaign's MLflow runs still RUNNING."""
    runs = campaign_runs(get_settings(home=home).tracking, campaign, "attributes.status = 'RUNNING'")
    return [run.data.tags["bru.role"] for run in runs]


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
    # A healthy run's console (stdout and stderr, as `2>&1` shows them) is bru's own: no
    # library's log line, warning or traceback (issue 18); they are in the log it names.
    console = first.stdout + first.stderr
    for word in ("Traceback", "WARNING", "ERROR", "Warning:"):
        assert word not in console, console[-3000:]
    assert re.search(r"^log: .*/logs/campaign-smoke-\d{8}-\d{6}\.log$", first.stderr, re.M), first.stderr
    assert "report: " in first.stdout
    assert re.search(r"^MLflow: bru ui, then http://127\.0\.0\.1:5000/#/experiments/\d+\?workflowType=machine_learning$",
                     first.stdout, re.M), first.stdout  # fmt: skip
    counts = _counts(tmp_path / "home")
    assert EXPECTED_SMOKE.items() <= counts.items(), counts
    assert _running(tmp_path / "home") == []  # the campaign's own run included: closed FINISHED
    again = _bru("campaign", "run", SMOKE, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _counts(tmp_path / "home") == counts  # nothing trained, logged or written twice
    assert _running(tmp_path / "home") == []


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
        assert _running(home) == []  # closed by the flow run on the worker
        # the Prefect UI reads like the experiment
        names = {t["name"] for t in _api(prefect_server, "/task_runs/filter", {"limit": 200})}
        assert {"digits/mlp4 relu trial 0", "digits/mlp4 eru:2 trial 2", "digits/mlp4 relu seeds 1-2"} <= names, names
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


STORES = {
    "BRU_TRACKING_URI": "http://mlflow:5000",
    "BRU_OPTUNA_STORAGE": "postgresql+psycopg://bru_optuna:hex0123@postgres:5432/optuna",
    "BRU_RESULTS_URL": "postgresql+psycopg://bru_results:hex4567@postgres:5432/results",
}
MLFLOW_LOGIN = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": "hex89ab"}


def _resolved_job_env(server, pool: str) -> dict[str, str]:
    """The env a docker worker would give a bru-campaign flow run: Prefect's own merge of
    the pool's template with the deployment's job variables, Secret blocks resolved."""
    script = f"""
import asyncio, json
from prefect.client.orchestration import get_client
from prefect.workers.base import BaseJobConfiguration

async def main():
    async with get_client() as client:
        pool = await client.read_work_pool({pool!r})
        deployment = await client.read_deployment_by_name("bru-campaign/bru-campaign")
        template = {{"job_configuration": {{k: pool.base_job_template["job_configuration"][k]
                                            for k in ("command", "env", "labels", "name")}},
                    "variables": pool.base_job_template["variables"]}}
        config = await BaseJobConfiguration.from_template_and_values(template, deployment.job_variables, client=client)
        print(json.dumps(config.env))

asyncio.run(main())
"""
    done = subprocess.run([sys.executable, "-c", script], env=server.env(), capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_deploy_to_a_docker_pool_without_the_stores_is_refused(prefect_server, tmp_path):
    """Docker flow runs would write to SQLite in a throwaway container: one line naming what
    is missing, exit 2, and no pool, secret or deployment made."""
    env = prefect_server.env(BRU_HOME=str(tmp_path / "home"), BRU_TRACKING_URI="http://mlflow:5000")
    for name in ("BRU_OPTUNA_STORAGE", "BRU_RESULTS_URL"):
        env.pop(name, None)
    result = _bru("deploy", "--pool", "bru-docker-bare", "--type", "docker", env=env)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert "BRU_OPTUNA_STORAGE, BRU_RESULTS_URL not set here" in lines[0]
    assert not any(p["name"] == "bru-docker-bare" for p in _api(prefect_server, "/work_pools/filter", {}))


@pytest.mark.slow
@pytest.mark.parametrize("pool_type", ["docker", "kubernetes"])
def test_deploy_to_a_container_pool_uses_the_job_templates_in_infra(prefect_server, tmp_path, pool_type):
    env = prefect_server.env(BRU_HOME=str(tmp_path / "home"))
    for name in (*STORES, *MLFLOW_LOGIN):
        env.pop(name, None)
    if pool_type == "docker":  # docker flow runs get the stores and the login as Secret blocks copied from here
        env.update({**STORES, **MLFLOW_LOGIN})
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
    env_variables = {
        # what the crash automation expects; and a container's disk is thrown away: shared stores only
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30", "BRU_REQUIRE_SHARED_STORES": "true",
    }  # fmt: skip
    if pool_type == "docker":  # references only: the values live in Secret blocks
        env_variables.update({name: secret_reference(block) for block, name in SECRET_SETTINGS.items()})
    assert deployment["job_variables"] == {"image": "registry.example/bru-lab-worker:1", "env": env_variables}
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
    if pool_type == "docker":
        assert _resolved_job_env(prefect_server, pool) == {
            **STORES, **MLFLOW_LOGIN, "BRU_REQUIRE_SHARED_STORES": "true", "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30"
        }  # fmt: skip
    automations = _api(prefect_server, "/automations/filter", {})
    (crash,) = [a for a in automations if a["name"] == "bru: crash flow runs that stop beating"]
    assert crash["trigger"]["posture"] == "Proactive" and crash["actions"][0]["state"] == "CRASHED"


@pytest.mark.parametrize("after_prefect", [False, True], ids=["before-prefect", "prefect-imported-already"])
def test_library_records_go_to_the_log_file_and_bru_warnings_to_the_console(tmp_path, after_prefect):
    """bru campaign run: Prefect's run records (a failed task's traceback), its client's,
    Optuna's, MLflow's and torch's warnings and Python warnings go to the log file; the
    console gets bru's own warnings only, one line each. Through Prefect's logging settings
    (which its temporary server reads too) or, where Prefect was imported first, in the
    process itself."""
    path = tmp_path / "logs" / "campaign.log"
    prefect_first = "import flows.campaign" if after_prefect else ""
    script = f"""
import logging, os, sys, warnings
{prefect_first}
from flows.console import libraries_to_the_log, route_logs_to
route_logs_to({str(path)!r})
import flows.campaign  # imports Prefect, which configures its logging from bru's file (unless it did already)
import mlflow, optuna
libraries_to_the_log()
try:
    raise RuntimeError("the store went away")
except RuntimeError:
    logging.getLogger("prefect.task_runs").error(
        "Finished in state Failed", exc_info=True, extra={{"task_run_name": "t 1", "flow_run_name": "f"}})
logging.getLogger("prefect.concurrency").warning("a warning of Prefect's")
optuna.logging.get_logger("optuna.study").warning("a warning of Optuna's")
logging.getLogger("mlflow.tracking").warning("a warning of MLflow's")
logging.getLogger("torch.utils.cpp_extension").warning("No CUDA runtime is found")
warnings.warn("a Python warning")
logging.getLogger("bru.search").warning("a warning of bru's own")
print(os.environ.get("PREFECT_LOGGING_SETTINGS_PATH", ""))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_CONFIGURE"))}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert [line for line in done.stderr.splitlines() if "warning of bru's own" in line] != [], done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    settings = done.stdout.strip()
    assert bool(settings) != after_prefect and not (settings and Path(settings).exists()), "removed at exit"
    text = path.read_text()
    assert "Task run 't 1' - Finished in state Failed" in text and "RuntimeError: the store went away" in text
    for line in ("a warning of Prefect's", "a warning of Optuna's", "a warning of MLflow's", "No CUDA runtime",
                 "a Python warning", "a warning of bru's own"):  # fmt: skip
        assert line in text, text


def test_the_run_log_file_is_created_with_its_first_record_only(tmp_path):
    script = "import sys; from flows.console import route_logs_to; route_logs_to(sys.argv[1]); import flows.campaign"
    log = tmp_path / "logs" / "campaign.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    done = subprocess.run(
        [sys.executable, "-c", script, str(log)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert not log.exists()


def test_a_campaign_in_a_pipe_prints_a_line_per_finished_study_and_stage():
    """No live view in a pipe or CI: one line when a study's search is done, one when its
    repeats are, and one per stage of the campaign, each once."""
    from bru_core.cli._watch import CampaignWatch
    from bru_core.search.status import StudyStatus
    from bru_core.spec import load_spec

    spec = load_spec(SMOKE)
    watch = CampaignWatch(spec, settings=None, live=False)
    lines: list[str] = []
    watch.say = lines.append
    polls = [
        [StudyStatus("digits/mlp4", "relu", 3, 1, 0.2, 2, 0), StudyStatus("digits/mlp4", "eru:2", 3, 0, None, 2, 0)],
        [StudyStatus("digits/mlp4", "relu", 3, 3, 0.0764, 2, 0), StudyStatus("digits/mlp4", "eru:2", 3, 2, 0.1, 2, 0)],
        [StudyStatus("digits/mlp4", "relu", 3, 3, 0.0764, 2, 1), StudyStatus("digits/mlp4", "eru:2", 3, 3, 0.03, 2, 0)],
        [StudyStatus("digits/mlp4", "relu", 3, 3, 0.0764, 2, 2), StudyStatus("digits/mlp4", "eru:2", 3, 3, 0.03, 2, 2)],
        [StudyStatus("digits/mlp4", "relu", 3, 3, 0.0764, 2, 2), StudyStatus("digits/mlp4", "eru:2", 3, 3, 0.03, 2, 2)],
    ]
    for rows in polls:
        watch.show(rows)
    assert [re.sub(r" \(\d+:\d\d\)$", "", line) for line in lines] == [
        "campaign smoke: searching",
        "study digits/mlp4 relu: searched, 3/3 trials, best val_error 0.0764",
        "study digits/mlp4 eru:2: searched, 3/3 trials, best val_error 0.03",
        "campaign smoke: repeating the best configurations",
        "study digits/mlp4 relu: repeated, 2/2 seeds",
        "study digits/mlp4 eru:2: repeated, 2/2 seeds",
        "campaign smoke: aggregating and reporting",
    ]


# --------------------------------------------------------------------------- several trials on one GPU


class _FakeKeeper:
    """Stands in for flows.gpu._SlotKeeper (which holds a slot of the server's ``gpu``
    limit): always holds, and counts how many trials it is lent to at once."""

    made: ClassVar[list[_FakeKeeper]] = []

    def __init__(self) -> None:
        self.stop = False
        self.lent = 0
        self.most = 0
        self.guard = threading.Lock()
        _FakeKeeper.made.append(self)

    def take(self) -> bool:
        with self.guard:
            self.lent += 1
            self.most = max(self.most, self.lent)
        return True

    def give(self) -> None:
        with self.guard:
            self.lent -= 1

    def release(self) -> None:
        self.stop = True


@pytest.fixture
def two_gpus(monkeypatch):
    """flows.gpu as on a machine with cuda:0 and cuda:1, with a fresh device pool."""
    import flows.gpu as gpu

    monkeypatch.setattr(gpu, "local_devices", lambda: ["cuda:0", "cuda:1"])
    monkeypatch.setattr(gpu, "_devices", None)
    monkeypatch.setattr(gpu, "_keepers", {})
    monkeypatch.delenv("BRU_SLOTS_PER_GPU", raising=False)
    monkeypatch.delenv("BRU_POOL_SLOTS_PER_GPU", raising=False)
    return gpu


@pytest.fixture
def fake_keepers(two_gpus, monkeypatch):
    """... and fake slot keepers: no Prefect server."""
    monkeypatch.setattr(two_gpus, "_SlotKeeper", _FakeKeeper)
    monkeypatch.setattr(_FakeKeeper, "made", [])
    return two_gpus


@pytest.mark.parametrize("k", [1, 2, 3])
def test_the_device_pool_holds_each_gpu_k_times_and_hands_them_out_under_concurrency(fake_keepers, monkeypatch, k):
    gpu = fake_keepers
    monkeypatch.setenv("BRU_SLOTS_PER_GPU", str(k))
    assert gpu._pool().size == 2 * k
    # 2K trials at once: all get in, each GPU K times (every one waits for all the others inside)
    inside = threading.Barrier(2 * k, timeout=20)
    got: list[str] = []

    def trial() -> None:
        with gpu.gpu_slot() as device:
            got.append(device)
            inside.wait()

    threads = [threading.Thread(target=trial) for _ in range(2 * k)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not inside.broken and sorted(got) == ["cuda:0"] * k + ["cuda:1"] * k
    assert gpu._pool().in_use() == {"cuda:0": 0, "cuda:1": 0}
    # two trials at once go to two GPUs before any GPU takes a second one
    with gpu.gpu_slot() as first, gpu.gpu_slot() as second:
        assert {first, second} == {"cuda:0", "cuda:1"}
    # trial 2K + 1 waits until one of the 2K gives its device back, and then gets that one
    release, entered, holding = threading.Event(), threading.Event(), []

    def hold(index: int) -> None:
        with gpu.gpu_slot() as device:
            holding.append((index, device))
            release.wait(timeout=30) if index == 0 else entered.wait(timeout=30)

    holders = [threading.Thread(target=hold, args=(i,)) for i in range(2 * k)]
    for thread in holders:
        thread.start()
    deadline = time.monotonic() + 20
    while len(holding) < 2 * k and time.monotonic() < deadline:
        time.sleep(0.01)
    late: list[str] = []

    def last() -> None:
        with gpu.gpu_slot() as device:
            late.append(device)
            entered.set()

    waiting = threading.Thread(target=last)
    waiting.start()
    time.sleep(0.3)
    assert late == [] and gpu._pool().in_use() == {"cuda:0": k, "cuda:1": k}
    release.set()
    waiting.join(timeout=20)
    for thread in holders:
        thread.join(timeout=20)
    assert late == [dict(holding)[0]]
    # many trials coming and going: never more than K on a GPU, never one slot keeper
    # lent to two trials, one keeper per copy of a device (K slots of the limit per GPU)
    counting = threading.Lock()
    now = {"cuda:0": 0, "cuda:1": 0}
    most = dict(now)
    errors: list[BaseException] = []

    def churn(seed: int) -> None:
        try:
            for step in range(20):
                with gpu.gpu_slot() as device:
                    with counting:
                        now[device] += 1
                        most[device] = max(most[device], now[device])
                    time.sleep(0.001 * ((seed * 7 + step) % 5))
                    with counting:
                        now[device] -= 1
        except BaseException as exc:
            errors.append(exc)

    crowd = [threading.Thread(target=churn, args=(i,)) for i in range(4 * k + 1)]
    for thread in crowd:
        thread.start()
    for thread in crowd:
        thread.join(timeout=60)
    assert not errors and not any(t.is_alive() for t in crowd)
    assert most == {"cuda:0": k, "cuda:1": k} and now == {"cuda:0": 0, "cuda:1": 0}
    assert set(gpu._keepers) == {(d, c) for d in ("cuda:0", "cuda:1") for c in range(k)}
    assert len(_FakeKeeper.made) == 2 * k and max(keeper.most for keeper in _FakeKeeper.made) == 1
    assert gpu._pool().in_use() == {"cuda:0": 0, "cuda:1": 0}


def test_slots_per_gpu_this_machine_first_then_the_pool_and_a_cpu_stays_at_one(two_gpus, monkeypatch):
    from bru_core.errors import ConfigError

    gpu = two_gpus
    assert gpu.slots_per_gpu() == 1 and gpu._pool().size == 2  # the default: one trial per GPU, as before
    monkeypatch.setenv("BRU_POOL_SLOTS_PER_GPU", "3")  # bru deploy --slots-per-gpu 3 (a job variable)
    assert gpu.slots_per_gpu() == 3 and gpu.slots_per_gpu(cpu=True) == 1
    monkeypatch.setenv("BRU_SLOTS_PER_GPU", "2")  # bru worker --slots-per-gpu 2 on this machine
    assert gpu.slots_per_gpu() == 2 and gpu.slots_per_gpu(cpu=True) == 2
    # a CPU machine: one "cpu" entry unless this machine asks for more
    monkeypatch.setattr(gpu, "local_devices", lambda: ["cpu"])
    monkeypatch.delenv("BRU_SLOTS_PER_GPU")
    assert gpu._pool().size == 2  # the pool is made once per process
    monkeypatch.setattr(gpu, "_devices", None)
    assert gpu._pool().size == 1
    monkeypatch.setattr(gpu, "_devices", None)
    monkeypatch.setenv("BRU_SLOTS_PER_GPU", "2")
    assert gpu._pool().size == 2 and gpu._pool().in_use() == {"cpu": 0}
    for name, value in [("BRU_SLOTS_PER_GPU", "0"), ("BRU_SLOTS_PER_GPU", "two"), ("BRU_POOL_SLOTS_PER_GPU", "-1")]:
        monkeypatch.delenv("BRU_SLOTS_PER_GPU", raising=False)
        monkeypatch.setenv(name, value)
        with pytest.raises(ConfigError, match=f"^{name}: must be a whole number >= 1 .*got '{value}'$"):
            gpu.slots_per_gpu()


@pytest.mark.parametrize(
    ("args", "env", "line"),
    [
        (["deploy", "--slots-per-gpu", "0"], {}, "error: bru deploy: Invalid value for '--slots-per-gpu'"),
        (["worker", "--slots-per-gpu", "0"], {}, "error: bru worker: Invalid value for '--slots-per-gpu'"),
        (["worker"], {"BRU_SLOTS_PER_GPU": "0"}, "error: BRU_SLOTS_PER_GPU: must be a whole number >= 1"),
        (["worker"], {"BRU_SLOTS_PER_GPU": "1.5"}, "error: BRU_SLOTS_PER_GPU: must be a whole number >= 1"),
    ],
)
def test_a_bad_slots_per_gpu_is_one_line_and_exit_2(monkeypatch, capsys, args, env, line):
    from bru_core.cli import main

    monkeypatch.delenv("BRU_SLOTS_PER_GPU", raising=False)
    monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{free_port()}/api")  # nothing there: never reached
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(args) == 2
    lines = [entry for entry in capsys.readouterr().err.splitlines() if entry.strip()]
    assert len(lines) == 1 and lines[0].startswith(line), lines


def _gpu_limit(server) -> int | None:
    try:
        return _api(server, "/v2/concurrency_limits/gpu")["limit"]
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


@pytest.mark.slow
def test_deploy_slots_per_gpu_sets_the_limit_and_k_trials_hold_k_slots_of_one_gpu(
    prefect_server, tmp_path, two_gpus, monkeypatch
):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    gpu = two_gpus
    env = prefect_server.env(BRU_HOME=str(tmp_path / "home"))
    before = _gpu_limit(prefect_server) or 1
    deployed = _bru("deploy", "--gpus", "3", "--slots-per-gpu", "2", env=env)
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    assert "gpu limit 6 slot(s) (2 per GPU)" in deployed.stdout
    assert _gpu_limit(prefect_server) == 6
    for name in DEPLOYMENTS:
        deployment = _api(prefect_server, f"/deployments/name/{name}/{name}")
        assert deployment["job_variables"]["env"] == {
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",
            "BRU_POOL_SLOTS_PER_GPU": "2",  # what the flow runs' device pools use
        }
    # The flow run's side, in this process: a machine with two GPUs and the pool's 2 slots
    # per GPU; 4 trials at once get each GPU twice and hold 4 slots of the server's limit
    # (one keeper per copy of a device), all given back afterwards.
    monkeypatch.setenv("BRU_POOL_SLOTS_PER_GPU", "2")
    inside = threading.Barrier(5, timeout=120)
    got: list[str] = []
    errors: list[BaseException] = []

    def trial() -> None:
        try:
            with gpu.gpu_slot() as device:
                got.append(device)
                inside.wait()  # all four hold a slot
                inside.wait()  # until the test has counted them
        except BaseException as exc:
            errors.append(exc)

    with temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url}):
        # as Prefect's task runner does: each trial thread runs in a copy of this context
        threads = [threading.Thread(target=contextvars.copy_context().run, args=(trial,)) for _ in range(4)]
        for thread in threads:
            thread.start()
        inside.wait()
        held = _gpu_slots(prefect_server)
        inside.wait()
        for thread in threads:
            thread.join(timeout=60)
        gpu.release_idle_slots()
    assert not errors, errors
    assert held == 4 and sorted(got) == ["cuda:0", "cuda:0", "cuda:1", "cuda:1"]
    assert _gpu_slots(prefect_server) == 0
    # deployed again without it: one trial per GPU, and the job variable is gone
    again = _bru("deploy", "--gpus", str(before), env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"gpu limit {before} slot(s), " in again.stdout
    deployment = _api(prefect_server, "/deployments/name/bru-campaign/bru-campaign")
    assert "BRU_POOL_SLOTS_PER_GPU" not in deployment["job_variables"]["env"]


@pytest.mark.slow
def test_a_slot_lent_on_after_the_trial_that_took_it_ended_stays_held(prefect_server, monkeypatch):
    """The keeper takes its slot inside the first trial's task run and lends it to the next
    trials. Prefect's task engine releases, when a task run ends, every lease recorded in
    that run's concurrency context: the slot went back to the server while the keeper
    still lent it (another process could then take it: two trainings on one GPU), and its
    renewal ended in "410 Gone ... Lease not found" with a traceback (issue 18)."""
    from prefect import flow, task
    from prefect.settings import PREFECT_API_URL, temporary_settings

    import flows.gpu as gpu

    monkeypatch.setattr(gpu._SlotKeeper, "LINGER_SECONDS", 60.0)  # the second trial finds the first's keeper
    held: list[tuple[int, int]] = []

    @task
    def trial() -> None:
        with gpu.gpu_slot():
            held.append((_gpu_slots(prefect_server), len(gpu._keepers)))

    @flow
    def two_trials() -> None:
        trial()
        trial()

    with temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url}):
        gpu.ensure_gpu_limit(1)
        try:
            two_trials()
        finally:
            gpu.release_idle_slots()
    assert held == [(1, 1), (1, 1)]  # one keeper, whose slot the server counts all along
    assert _gpu_slots(prefect_server) == 0


@pytest.mark.slow
def test_an_embedded_campaign_sizes_the_gpu_limit_to_its_device_pool(tmp_path):
    """No PREFECT_API_URL (bru campaign run): the temporary server's ``gpu`` limit is this
    machine's, and follows BRU_SLOTS_PER_GPU from one run to the next (its database stays
    in the bru home); here a CPU machine, which takes K trials only when told. Slots left
    counted by a process killed outright are given back."""
    script = (
        "import os, flows.gpu as gpu; gpu.local_devices = lambda: ['cpu']; sizes = []\n"
        "for k in ('3', '', '2'):\n"
        "    os.environ['BRU_SLOTS_PER_GPU'] = k; gpu._devices = None; sizes.append(gpu.ensure_gpu_limit())\n"
        # slots counted with no lease behind them, as a campaign killed outright leaves them
        # (the leases died with its temporary server): the next campaign does not wait for them
        "from prefect.client.orchestration import get_client\n"
        "from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate\n"
        "with get_client(sync_client=True) as client:\n"
        "    client.update_global_concurrency_limit('gpu', GlobalConcurrencyLimitUpdate(active_slots=2))\n"
        "    gpu.ensure_gpu_limit()\n"
        "    left = client.read_global_concurrency_limit_by_name('gpu').active_slots\n"
        "print(sizes, left)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "BRU_"))}
    env.update(PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[3, 1, 2] 0"


@pytest.mark.parametrize(
    ("seeds", "pack", "packs", "labels"),
    [
        ([1, 2, 3, 4, 5], "auto", [[1, 2, 3, 4, 5]], ["seeds 1-5"]),
        ([1, 2, 3, 4, 5], 2, [[1, 2], [3, 4], [5]], ["seeds 1-2", "seeds 3-4", "seed 5"]),
        ([9, 3, 7], 5, [[9, 3, 7]], ["seeds 9,3,7"]),
    ],
)
def test_one_repeat_task_per_pack_named_by_its_seeds(seeds, pack, packs, labels):
    from bru_core.spec import parse_spec
    from flows.campaign import _packs, _seeds_label

    spec = yaml.safe_load(Path(SMOKE).read_text())
    spec["repeats"] = {"seeds": seeds, "pack": pack}
    assert _packs(parse_spec(spec)) == packs
    assert [_seeds_label(p) for p in packs] == labels
