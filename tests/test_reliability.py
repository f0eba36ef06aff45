"""Faults and load (docs/reliability.md): a campaign killed before its aggregation
resumes without retraining; PostgreSQL or the MLflow server restarted under a running
study or campaign loses and doubles nothing and leaves nothing running; a second campaign
of the same name is refused, and a killed one resumes; a killed service-mode worker gives
its slot back, its flow run is marked Crashed, and the resubmitted campaign completes;
four workers share one PostgreSQL-backed study of 200 trials and end with exactly 200,
one MLflow run each. NaN losses and bad input have their own tests (listed in
docs/reliability.md)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from bru_core.bench import bench_scale
from bru_core.errors import BruError
from bru_core.search import counts_towards_budget
from bru_core.settings import get_settings
from tests.helpers.cli import bru as _bru
from tests.helpers.paths import ROOT, SMOKE
from tests.helpers.prefect import api as _api
from tests.helpers.prefect import gpu_slots as _gpu_slots
from tests.helpers.prefect import start_worker as _start_worker
from tests.helpers.prefect import stop_worker as _stop_worker
from tests.helpers.processes import group_alive
from tests.helpers.stores import EXPECTED_SMOKE, campaign_runs
from tests.helpers.stores import store_counts as _counts


def _env(home) -> dict[str, str]:
    (home / "prefect").mkdir(parents=True)  # the temporary Prefect server's database goes there
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BRU_", "PREFECT_"))}
    return env | {"BRU_HOME": str(home), "PREFECT_HOME": str(home / "prefect")}


@pytest.mark.slow
def test_a_campaign_killed_between_its_repeats_and_its_aggregation_resumes_without_retraining(
    tmp_path, postgres_server, postgres_url, monkeypatch
):
    """A `bru campaign run` process SIGKILLed after its repeats, before its aggregation
    has written anything: running the campaign again trains nothing, logs nothing twice,
    and aggregates. To stop it at exactly that point, its results database (PostgreSQL)
    is stopped while the repeats train: the aggregation cannot write, and Prefect waits
    to retry it, which is when the process is killed."""
    home = tmp_path / "home"
    env = _env(home) | {"BRU_RESULTS_URL": postgres_url}  # the default lease: the dead holder was on this machine
    monkeypatch.setenv("BRU_RESULTS_URL", postgres_url)  # where this test's _counts looks too
    first = _start_campaign(SMOKE, env, tmp_path / "logs")
    stopped = False
    try:
        _wait_for_runs(home, "repeat", 1, first, finished=False)  # the repeats have begun
        postgres_server.pg_ctl("stop")
        stopped = True
        _wait_for_runs(home, "repeat", EXPECTED_SMOKE["runs repeat"], first, finished=True)
        time.sleep(3)  # past the repeats: registering the models, then the aggregation fails and waits
        assert first.poll() is None, (tmp_path / "logs" / "err.log").read_text()[-3000:]
    finally:
        if group_alive(first.pid):
            os.killpg(first.pid, 9)
        first.wait()
        if stopped:
            postgres_server.pg_ctl("start")
    before = _trained(home)
    assert before["runs repeat"] == EXPECTED_SMOKE["runs repeat"]
    with pytest.raises(BruError, match="unknown campaign 'smoke'"):  # nothing aggregated
        _counts(home)
    resumed = _bru("campaign", "run", SMOKE, env=env)  # at once: the killed holder was on this machine
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "eru:2 vs relu on digits/mlp4" in resumed.stdout
    after = _counts(home)
    assert EXPECTED_SMOKE.items() <= after.items(), after
    assert _trained(home) == before  # nothing trained or logged again


def _wait_for_runs(
    home, role: str, count: int, process: subprocess.Popen, finished: bool, timeout: float = 300
) -> None:
    """Until the campaign's MLflow experiment holds ``count`` runs of ``role`` (FINISHED ones
    if ``finished``)."""
    client = MlflowClient(get_settings(home=home).tracking)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            experiment = client.get_experiment_by_name("smoke")
            runs = client.search_runs([experiment.experiment_id], f"tags.`bru.role` = '{role}'") if experiment else []
        except Exception:  # the store is being created
            runs = []
        if sum(not finished or r.info.status == "FINISHED" for r in runs) >= count:
            return
        time.sleep(0.3)
    pytest.fail(f"fewer than {count} {role} runs in {timeout:.0f} s (process exit code {process.poll()})")


def _trained(home) -> dict[str, int]:
    """Trials (all of them) per study and MLflow trial and repeat runs."""
    settings = get_settings(home=home)
    counts = {
        f"all trials {name}": len(optuna.load_study(study_name=name, storage=settings.optuna).trials)
        for name in optuna.get_all_study_names(storage=settings.optuna)
    }
    for run in campaign_runs(settings.tracking, "smoke"):
        role = run.data.tags["bru.role"]
        if role in ("trial", "repeat"):
            counts[f"runs {role}"] = counts.get(f"runs {role}", 0) + 1
    return counts


@pytest.mark.slow
def test_four_workers_share_a_postgresql_study_of_200_trials(tmp_path, postgres_url, mlflow_server):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRU_")}
    env |= {"BRU_HOME": str(tmp_path / "home"), "BRU_OPTUNA_STORAGE": postgres_url,
            "BRU_TRACKING_URI": mlflow_server.uri, "OMP_NUM_THREADS": "1"}  # fmt: skip
    started = time.monotonic()
    (row,) = bench_scale([4], 200, env, postgres_url, tmp_path)  # raises if a worker fails
    wall = time.monotonic() - started
    print(f"\n4 workers, 200 trials: {wall:.0f} s wall, {row.trials_per_s:.2f} trials/s")
    assert row.trials == 200
    (name,) = [n for n in optuna.get_all_study_names(postgres_url) if n.startswith("scale-4w-")]
    trials = optuna.load_study(study_name=name, storage=postgres_url).trials
    assert sum(counts_towards_budget(t) for t in trials) == 200
    # the rest can only be trials asked for when the budget was already taken, closed at
    # once as excess (the admission check); none failed by a lock error, none retried
    assert all(t.user_attrs.get("excess") for t in trials if not counts_towards_budget(t)), [
        (t.number, t.state, t.user_attrs) for t in trials if not counts_towards_budget(t)
    ]
    client = MlflowClient(mlflow_server.uri)
    campaign = name.split("/")[0]
    experiment = client.get_experiment_by_name(campaign)
    runs = client.search_runs([experiment.experiment_id], "tags.`bru.role` = 'trial'", max_results=1000)
    assert len(runs) == 200 and all(r.info.status == "FINISHED" for r in runs)
    assert len({r.data.tags["bru.trial_number"] for r in runs}) == 200  # one run per trial


def _slow_spec(tmp_path, name: str, trials: int = 8) -> str:
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(
        f"name: {name}\ntasks: [{{dataset: digits, model: mlp4, epochs: 40}}]\nactivations: [relu]\n"
        f"search: {{trials: {trials}, sampler: random, seed: 0, pruner: none, space: {{lr: {{low: 0.01, high: 0.02}}}}}}\n"
        "repeats: {seeds: [1]}\ncompare: {exploratory: true}\n"
    )
    return str(spec)


def _wait_for_study(storage: str, study: str, until, timeout: float, process: subprocess.Popen, why_not) -> None:
    """Until ``until(trials)`` holds for the study's trials; fails the test on timeout or
    if the process running the study exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            trials = optuna.load_study(study_name=study, storage=storage).trials
        except Exception:  # not created yet, or the database is restarting
            trials = []
        if until(trials):
            return
        time.sleep(0.2)
    pytest.fail(f"{study}: {why_not()} (waited {timeout:.0f} s; process exit code {process.poll()})")


def _wait_for_trials(storage: str, study: str, count: int, process: subprocess.Popen, timeout: float = 300) -> None:
    def finished(trials) -> bool:
        return sum(counts_towards_budget(t) for t in trials) >= count

    _wait_for_study(storage, study, finished, timeout, process, lambda: f"fewer than {count} trials finished")


@pytest.mark.slow
def test_postgresql_restarted_mid_study(tmp_path, postgres_server, postgres_url):
    """PostgreSQL restarts while a study runs: the study recovers (or stops with one
    clear line), and running it again completes it with nothing lost or doubled."""
    spec = _slow_spec(tmp_path, "pgrestart")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRU_")} | {
        "BRU_HOME": str(tmp_path / "home"), "BRU_OPTUNA_STORAGE": postgres_url,
        "BRU_HEARTBEAT_SECONDS": "1", "BRU_HEARTBEAT_GRACE_SECONDS": "4"}  # fmt: skip
    command = [sys.executable, "-m", "bru_core", "search", spec, "--task", "digits/mlp4", "-a", "relu", "--no-repeats"]
    worker = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_trials(postgres_url, "pgrestart/digits/mlp4/relu", 2, worker)
    postgres_server.pg_ctl("restart")
    _, err = worker.communicate(timeout=600)
    if worker.returncode != 0:  # it may stop: then with one clear line, not a traceback
        lines = [line for line in err.splitlines() if line.strip()]
        assert worker.returncode == 1 and "Traceback" not in err, err[-3000:]
        assert lines[-1].startswith("error: Optuna storage") and "run the same command again" in lines[-1]
    again = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    trials = optuna.load_study(study_name="pgrestart/digits/mlp4/relu", storage=postgres_url).trials
    assert sum(counts_towards_budget(t) for t in trials) == 8
    client = MlflowClient(get_settings(home=tmp_path / "home").tracking)
    experiment = client.get_experiment_by_name("pgrestart")
    runs = client.search_runs([experiment.experiment_id], "tags.`bru.role` = 'trial'", max_results=1000)
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert len(finished) == 8  # one finished run per counted trial, none doubled
    assert len({r.data.tags["bru.trial_number"] for r in finished}) == 8


@pytest.mark.slow
def test_mlflow_server_restarted_mid_study(tmp_path):
    """The MLflow server restarts while a study logs to it: the client's retries carry the
    writes across (or the study stops with one line and resumes), and no metric of a
    finished trial is lost."""
    from bru_core.tracking import start_server, stop_server, wait_healthy
    from tests.servers import free_port

    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    backend, artifacts = f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "artifacts")
    server = start_server(backend, artifacts, port=port, log_file=tmp_path / "mlflow-1.log")
    wait_healthy(uri, server)
    spec = _slow_spec(tmp_path, "mlrestart")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRU_")} | {
        "BRU_HOME": str(tmp_path / "home"), "BRU_TRACKING_URI": uri,
        "BRU_HEARTBEAT_SECONDS": "1", "BRU_HEARTBEAT_GRACE_SECONDS": "4"}  # fmt: skip
    command = [sys.executable, "-m", "bru_core", "search", spec, "--task", "digits/mlp4", "-a", "relu", "--no-repeats"]
    storage = f"sqlite:///{tmp_path / 'home' / 'optuna.db'}"
    worker = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_trials(storage, "mlrestart/digits/mlp4/relu", 2, worker)
        stop_server(server)
        time.sleep(2)
        server = start_server(backend, artifacts, port=port, log_file=tmp_path / "mlflow-2.log")
        wait_healthy(uri, server)
        _, err = worker.communicate(timeout=600)
        if worker.returncode != 0:  # it may stop: then with one clear line, and a rerun finishes it
            lines = [line for line in err.splitlines() if line.strip()]
            assert "Traceback" not in err and lines[-1].startswith("error: "), err[-3000:]
            again = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
            assert again.returncode == 0, again.stderr[-3000:]
        trials = optuna.load_study(study_name="mlrestart/digits/mlp4/relu", storage=storage).trials
        assert sum(counts_towards_budget(t) for t in trials) == 8
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("mlrestart")
        runs = client.search_runs([experiment.experiment_id], "tags.`bru.role` = 'trial'", max_results=1000)
        finished = [r for r in runs if r.info.status == "FINISHED"]
        assert len({r.data.tags["bru.trial_number"] for r in finished}) == len(finished) == 8
        for run in finished:  # every epoch of every finished trial is there
            assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == list(range(1, 41))
    finally:
        if worker.poll() is None:
            worker.kill()
        stop_server(server)


def test_campaign_lock_unit(tmp_path, caplog):
    """The lock itself: one holder at a time, re-entrant for its holder, given back at
    the end, and taken over once a dead holder's lease has run out."""
    from bru_core.locks import CampaignBusyError, campaign_lock, check_free, holder_of

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    with campaign_lock(url, "c", lease=30, holder="first") as holder:
        assert holder == "first" and holder_of(url, "c", 30)[0] == "first"
        with pytest.raises(CampaignBusyError, match="campaign 'c' is already running \\(first, a holder that does"):
            check_free(url, "c", 30)
        with pytest.raises(CampaignBusyError), campaign_lock(url, "c", lease=30, holder="second"):
            pass
        with campaign_lock(url, "other", lease=30):  # other campaigns are not affected
            pass
    check_free(url, "c", 30)  # given back
    _lock_row(url, "c", "dead", renewed_at=time.time() - 60)  # a holder that died 60 s ago without giving it back
    with caplog.at_level("WARNING", logger="bru.locks"), campaign_lock(url, "c", lease=30, holder="heir") as holder:
        assert holder_of(url, "c", 30)[0] == "heir"
    assert "campaign c: took over the lock of dead, which had not renewed it for 60 s (lease 30 s)" in caplog.text


def _lock_row(url: str, campaign: str, holder: str, renewed_at: float) -> None:
    """A lock row as another process would have left it."""
    import sqlalchemy as sa

    from bru_core.locks import LOCKS, holder_of

    holder_of(url, campaign, 1)  # creates the table
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.delete(LOCKS).where(LOCKS.c.campaign == campaign))
        connection.execute(
            sa.insert(LOCKS).values(campaign=campaign, holder=holder, acquired_at=renewed_at, renewed_at=renewed_at)
        )
    engine.dispose()


def test_a_process_is_told_by_its_machine_pid_and_start_time():
    """bru_core.processes: a running process is alive; the same pid with another start
    time (a reused pid), an exited one (a zombie too) are not; another machine's, or one
    whose /proc entry cannot be read, cannot be told from here. The MLflow holds use it."""
    from bru_core import processes
    from bru_core.tracking import holder_alive

    me = processes.process_identity()
    assert me.machine and me.started and processes.alive_here(*me) is True
    child = subprocess.Popen(["sleep", "60"])
    try:
        machine, pid, started = me.machine, child.pid, processes.started(child.pid)
        assert started is not None and processes.alive_here(machine, pid, started) is True
        reused = str(int(started) - 1)  # the pid of a process that started earlier and exited
        assert processes.alive_here(machine, pid, reused) is False
        assert holder_alive({"machine": machine, "pid": pid, "started": started, "renewed": 0}, 90)
        assert not holder_alive({"machine": machine, "pid": pid, "started": reused, "renewed": time.time()}, 90)
        assert processes.alive_here("another-boot/pid:[1]", pid, started) is None
        assert processes.alive_here(None, pid, started) is None
        with pytest.MonkeyPatch.context() as patch:  # /proc/PID hidden (hidepid): it exists, but which process?
            patch.setattr(processes, "_stat", lambda pid: None)
            assert processes.alive_here(machine, pid, started) is None
        child.kill()
        _wait_until(lambda: processes.started(pid) is None)  # a zombie until it is reaped: exited all the same
        assert processes.alive_here(machine, pid, started) is False
        assert not holder_alive({"machine": machine, "pid": pid, "started": started, "renewed": time.time()}, 90)
    finally:
        child.kill()
        child.wait()
    assert processes.alive_here(machine, pid, started) is False


def _wait_until(condition, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


HOLD_LOCK = """
import sys, time
from bru_core.locks import campaign_lock
with campaign_lock(sys.argv[1], "c", lease=3600) as holder:
    print(holder, flush=True)
    time.sleep(600)
"""


def test_a_campaign_lock_whose_holder_died_on_this_machine_is_taken_over_at_once(tmp_path, caplog):
    """A holder on this machine whose process no longer exists (SIGKILLed, or its pid now
    another process's) is taken over at once, however long the lease, with one line that
    says so; a live one, one on another machine and one written by an older bru (no
    identity) keep the lease rule, and the busy line says which it is."""
    from bru_core.locks import CampaignBusyError, campaign_lock, check_free, holder_of, new_holder

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    other = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, url], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        held = other.stdout.readline().strip()
        assert held and holder_of(url, "c", 3600).holder == held
        shown = held.split(" ")[0]
        assert shown.split(":")[1] == str(other.pid) and held.startswith(shown + " machine=")
        with pytest.raises(CampaignBusyError, match=f"\\({shown}, a live process on this machine, seen 0 s ago; its "
                                                     "lease ends in 3600 s unless renewed\\); wait for it"):  # fmt: skip
            check_free(url, "c", 3600)
        with pytest.raises(CampaignBusyError, match="a live process on this machine"), campaign_lock(url, "c", 3600):
            pass
    finally:
        other.kill()
        other.wait()
    check_free(url, "c", 3600)  # killed: free at once, though its lease has an hour to run
    with caplog.at_level("WARNING", logger="bru.locks"), campaign_lock(url, "c", lease=3600) as holder:
        assert holder_of(url, "c", 3600).holder == holder != held
    assert f"campaign c: took over the lock of {shown}, a process on this machine that no longer exists" in caplog.text

    me = new_holder()
    shown, identity = me.split(" ", 1)
    pid, started = int(shown.split(":")[1]), identity.rsplit("started=", 1)[1]
    cases = {  # the holder's row, and what a new start gets
        "reused pid": (f"{shown} {identity.rsplit('=', 1)[0]}={int(started) - 1}", None),
        "another machine": (f"{shown} machine=another-boot/pid:[1] started={started}", "a process on another machine"),
        "older bru": (f"host:{pid}:0123abcd", "a holder that does not say where it runs"),
    }
    for case, (row, busy) in cases.items():
        _lock_row(url, "c", row, renewed_at=time.time())
        if busy is None:
            assert holder_of(url, "c", 3600) is None, case
        else:
            with pytest.raises(CampaignBusyError, match=busy):
                check_free(url, "c", 3600)
            _lock_row(url, "c", row, renewed_at=time.time() - 100)  # the lease rule: gone after the lease
            check_free(url, "c", 90)
            with pytest.raises(CampaignBusyError, match=busy):
                check_free(url, "c", 120)


def test_two_late_starters_cannot_both_take_a_dead_holders_lock_over(tmp_path, monkeypatch):
    """The take-over is a compare-and-set: a start that finds the holder dead, but is
    beaten to the take-over by another start, is refused."""
    from bru_core import locks

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    _lock_row(url, "c", "dead", renewed_at=time.time() - 100)
    judge, raced = locks._held, []

    def judge_then_lose_the_race(holder: str, renewed_at: float, now: float):
        verdict = judge(holder, renewed_at, now)
        if not raced:  # between this start's look and its take-over, another start takes the lock over
            raced.append(True)
            engine = locks._engine(url)
            locks._acquire(engine, "c", "quicker", lease=30)
            engine.dispose()
        return verdict

    monkeypatch.setattr(locks, "_held", judge_then_lose_the_race)
    lost = pytest.raises(locks.CampaignBusyError, match="another start took its lock over just now")
    with lost, locks.campaign_lock(url, "c", lease=30, holder="slower"):
        pass
    assert locks.holder_of(url, "c", 30).holder == "quicker"


@pytest.mark.slow
def test_a_second_campaign_with_the_same_name_is_refused_and_a_killed_one_resumes(tmp_path):
    """Two `bru campaign run` of one campaign at once: the second refuses with one line,
    exit 2. Then the first is SIGKILLed in the middle of a trial: a new run started at once
    takes its lock over (its process is gone from this machine; the lease, an hour, has
    not run out) once its trial's heartbeat has run out, and completes the campaign with
    exactly its budget; the killed trial's MLflow run ends FAILED, and no trial, run or
    results row is doubled."""
    home = tmp_path / "home"
    env = _env(home) | {"BRU_CAMPAIGN_LEASE_SECONDS": "3600", "BRU_HEARTBEAT_SECONDS": "1",
                        "BRU_HEARTBEAT_GRACE_SECONDS": "4"}  # fmt: skip
    spec = _slow_spec(tmp_path, "twice", trials=8)
    first = subprocess.Popen(
        [sys.executable, "-m", "bru_core", "campaign", "run", spec], env=env, cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    storage = f"sqlite:///{home / 'optuna.db'}"
    study = "twice/digits/mlp4/relu"
    try:
        _wait_for_trials(storage, study, 1, first)
        second = _bru("campaign", "run", spec, env=env, timeout=120)
        lines = [line for line in second.stderr.splitlines() if line.strip()]
        assert second.returncode == 2, second.stderr[-3000:]
        assert lines == [lines[-1]] and "campaign 'twice' is already running" in lines[-1], second.stderr[-3000:]
        assert f":{first.pid}:" in lines[-1] and "a live process on this machine" in lines[-1], lines[-1]
        _wait_for_a_trial_in_flight(storage, study, 120, first, lambda: "the campaign process is too slow")
    finally:
        os.killpg(first.pid, 9)
        first.wait()
    third = _bru("campaign", "run", spec, env=env)  # at once: the lease has an hour to run
    assert third.returncode == 0, third.stderr[-3000:]
    took_over = f"campaign twice: took over the lock of {socket.gethostname()}:{first.pid}:"
    assert took_over in third.stderr and "a process on this machine that no longer exists" in third.stderr, (
        third.stderr[-3000:]
    )
    _assert_one_killed_trial_and_nothing_doubled(home, "twice", trials=8)


def _wait_for_a_trial_in_flight(storage: str, study: str, timeout: float, process: subprocess.Popen, why_not) -> None:
    """Until a trial of the study is RUNNING and has reported an epoch."""

    def in_flight(trials) -> bool:
        return any(t.state == optuna.trial.TrialState.RUNNING and t.intermediate_values for t in trials)

    _wait_for_study(storage, study, in_flight, timeout, process, lambda: f"no trial in flight; {why_not()}")


def _assert_one_killed_trial_and_nothing_doubled(home, campaign: str, trials: int) -> None:
    """After a kill in the middle of a trial and a rerun: exactly the budget, the killed
    trial failed by its heartbeat and retried once, its MLflow run FAILED, one FINISHED
    run per trial, one repeat run per seed (one seed) and one results row per seed."""
    settings = get_settings(home=home)
    study = f"{campaign}/digits/mlp4/relu"
    found = optuna.load_study(study_name=study, storage=settings.optuna).trials
    assert sum(counts_towards_budget(t) for t in found) == trials
    killed = [t for t in found if t.state == optuna.trial.TrialState.FAIL and "failure" not in t.user_attrs]
    assert len(killed) == 1  # failed by its heartbeat, then retried once
    runs = campaign_runs(settings.tracking, campaign)
    trial_runs = [r for r in runs if r.data.tags["bru.role"] == "trial"]
    finished = [r for r in trial_runs if r.info.status == "FINISHED"]
    assert len({r.data.tags["bru.trial_number"] for r in finished}) == len(finished) == trials
    failed = [r for r in trial_runs if r.info.status == "FAILED"]
    assert [r.data.tags["bru.trial_number"] for r in failed] == [str(killed[0].number)]
    assert sum(r.data.tags["bru.role"] == "repeat" for r in runs) == 1
    assert _counts(home, campaign)["rows evaluations"] == 1


@pytest.mark.slow
def test_a_worker_killed_mid_trial_gives_back_its_slot_and_the_resubmitted_campaign_completes(prefect_server, tmp_path):
    """Service mode, in one piece: a `bru worker` and the flow-run process it started are
    SIGKILLed in the middle of a trial. The `gpu` slot they held comes back when its
    lease runs out, and the dead flow run is marked Crashed when its heartbeats have
    stopped for --crash-after seconds; the campaign submitted again and run by a new worker completes with
    exactly its budget, and nothing is doubled."""
    home = tmp_path / "home"
    env = prefect_server.env(
        BRU_HOME=str(home), PREFECT_WORKER_QUERY_SECONDS="1", BRU_GPU_LEASE_SECONDS="60",
        BRU_CAMPAIGN_LEASE_SECONDS="4", BRU_HEARTBEAT_SECONDS="1", BRU_HEARTBEAT_GRACE_SECONDS="4",
    )  # fmt: skip
    spec = _slow_spec(tmp_path, "workerkill", trials=3)
    deployed = _bru("deploy", "--crash-after", "90", env=env)  # three missed heartbeats
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    assert "without a heartbeat for 90 s is marked Crashed" in deployed.stdout
    worker = _start_worker(env, tmp_path / "worker-1.log")
    try:
        submitted = _bru("campaign", "submit", spec, env=env)
        assert submitted.returncode == 0, submitted.stderr[-3000:]
        flow_run_id = submitted.stdout.split("flow run ")[-1].split()[0]
        _wait_for_a_trial_in_flight(  # a loaded 2-core machine needs minutes to start a flow-run process
            get_settings(home=home).optuna, "workerkill/digits/mlp4/relu", 300, worker,
            lambda: f"worker log:\n{(tmp_path / 'worker-1.log').read_text()[-3000:]}",
        )  # fmt: skip
        assert _gpu_slots(prefect_server) == 1
        in_flight = _flow_run_processes(flow_run_id)
        assert in_flight
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    for pid in in_flight:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    # The slot's lease (60 s, Prefect's minimum) runs out and the server takes it back; the
    # dead flow run, which beat every 30 s, is marked Crashed by bru's automation.
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and (
        _gpu_slots(prefect_server) != 0 or _state(prefect_server, flow_run_id) != "CRASHED"
    ):
        time.sleep(1)
    assert _gpu_slots(prefect_server) == 0
    dead = _api(prefect_server, f"/flow_runs/{flow_run_id}")
    assert dead["state"]["type"] == "CRASHED" and "no heartbeat for 90 s" in dead["state"]["message"], dead["state"]
    worker = _start_worker(env, tmp_path / "worker-2.log")
    try:
        again = _bru("campaign", "submit", spec, "--wait", env=env)
        assert again.returncode == 0, again.stderr[-3000:] + (tmp_path / "worker-2.log").read_text()[-3000:]
        assert "flow run Completed" in again.stdout
    finally:
        _stop_worker(worker)
    _assert_one_killed_trial_and_nothing_doubled(home, "workerkill", trials=3)
    assert _gpu_slots(prefect_server) == 0


def _state(server, flow_run_id: str) -> str:
    return _api(server, f"/flow_runs/{flow_run_id}")["state"]["type"]


def _flow_run_processes(flow_run_id: str) -> list[int]:
    """The processes running the flow run (Prefect's flow-run process sets its id in their environment)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def _start_campaign(spec: str, env: dict[str, str], logs) -> subprocess.Popen:
    """`bru campaign run SPEC` in its own process group, its output in files: a pipe
    would also wait for anything the process left running."""
    return _start_python(["-m", "bru_core", "campaign", "run", spec], env, logs)


def _start_python(args: list[str], env: dict[str, str], logs) -> subprocess.Popen:
    logs.mkdir(exist_ok=True)
    return subprocess.Popen(
        [sys.executable, *args], env=env, cwd=ROOT,
        stdout=(logs / "out.log").open("w"), stderr=(logs / "err.log").open("w"), start_new_session=True,
    )  # fmt: skip


def _finish_campaign(process: subprocess.Popen, logs, timeout: float = 600) -> str:
    """Wait for the campaign process and return its stderr. Nothing it started may
    outlive it: a temporary Prefect server it left behind once held the port, the
    database and the test's pipes for good."""
    process.wait(timeout=timeout)
    deadline = time.monotonic() + 10  # a child being stopped may take a moment to go
    while group_alive(process.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    leftover = subprocess.run(["pgrep", "-a", "-g", str(process.pid)], capture_output=True, text=True).stdout
    assert not leftover, f"processes outlived the campaign:\n{leftover}"
    return (logs / "err.log").read_text()


def _resume_if_stopped(process: subprocess.Popen, err: str, spec: str, env: dict[str, str]) -> None:
    """A campaign that stopped must have said why in one last line; then, once its lock's
    lease has run out, running it again completes it."""
    if process.returncode == 0:
        return
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and "Traceback" not in err, err[-3000:]
    log = Path(lines[-1].split("Prefect's log of the run: ")[1])  # the tracebacks went there
    assert "Traceback" in log.read_text() and log.parent == Path(env["BRU_HOME"]) / "logs"
    time.sleep(5)  # its campaign lock's lease (4 s here) runs out
    again = _bru("campaign", "run", spec, env=env)
    assert again.returncode == 0, again.stderr[-3000:]


@pytest.mark.slow
def test_postgresql_restarted_mid_campaign(tmp_path, postgres_server, postgres_url):
    """The same restart under a whole embedded campaign (Prefect flow, tasks, repeats,
    aggregation): it recovers or stops with an error line and leaves nothing running,
    and running it again completes it with exactly its budget, nothing doubled."""
    home = tmp_path / "home"
    env = _env(home) | {"BRU_OPTUNA_STORAGE": postgres_url, "BRU_HEARTBEAT_SECONDS": "1",
                        "BRU_HEARTBEAT_GRACE_SECONDS": "4", "BRU_CAMPAIGN_LEASE_SECONDS": "4"}  # fmt: skip
    spec = _slow_spec(tmp_path, "pgcampaign")
    study = "pgcampaign/digits/mlp4/relu"
    first = _start_campaign(spec, env, tmp_path / "logs")
    try:
        _wait_for_trials(postgres_url, study, 2, first)
        postgres_server.pg_ctl("restart")
        _resume_if_stopped(first, _finish_campaign(first, tmp_path / "logs"), spec, env)
    finally:
        if group_alive(first.pid):
            os.killpg(first.pid, 9)
    trials = optuna.load_study(study_name=study, storage=postgres_url).trials
    assert sum(counts_towards_budget(t) for t in trials) == 8
    client = MlflowClient(get_settings(home=home).tracking)
    experiment = client.get_experiment_by_name("pgcampaign")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    finished = [r for r in runs if r.data.tags["bru.role"] == "trial" and r.info.status == "FINISHED"]
    assert len({r.data.tags["bru.trial_number"] for r in finished}) == len(finished) == 8
    assert sum(r.data.tags["bru.role"] == "repeat" and r.info.status == "FINISHED" for r in runs) == 1
    assert _counts(home, "pgcampaign")["rows evaluations"] == 1


@pytest.mark.slow
def test_mlflow_server_restarted_mid_campaign(tmp_path):
    """The MLflow server restarts under a whole embedded campaign: it recovers or stops
    with an error line and leaves nothing running, a rerun completes it, and every
    finished trial and repeat has all its metrics, nothing doubled."""
    from bru_core.tracking import start_server, stop_server, wait_healthy
    from tests.servers import free_port

    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    backend, artifacts = f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "artifacts")
    server = start_server(backend, artifacts, port=port, log_file=tmp_path / "mlflow-1.log")
    wait_healthy(uri, server)
    home = tmp_path / "home"
    env = _env(home) | {"BRU_TRACKING_URI": uri, "BRU_HEARTBEAT_SECONDS": "1",
                        "BRU_HEARTBEAT_GRACE_SECONDS": "4", "BRU_CAMPAIGN_LEASE_SECONDS": "4"}  # fmt: skip
    spec = _slow_spec(tmp_path, "mlcampaign")
    first = _start_campaign(spec, env, tmp_path / "logs")
    try:
        _wait_for_trials(f"sqlite:///{home / 'optuna.db'}", "mlcampaign/digits/mlp4/relu", 2, first)
        stop_server(server)
        time.sleep(2)
        server = start_server(backend, artifacts, port=port, log_file=tmp_path / "mlflow-2.log")
        wait_healthy(uri, server)
        _resume_if_stopped(first, _finish_campaign(first, tmp_path / "logs"), spec, env)
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("mlcampaign")
        runs = client.search_runs([experiment.experiment_id], max_results=1000)
        finished = [r for r in runs if r.data.tags["bru.role"] == "trial" and r.info.status == "FINISHED"]
        assert len({r.data.tags["bru.trial_number"] for r in finished}) == len(finished) == 8
        for run in finished:
            assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == list(range(1, 41))
        repeats = [r for r in runs if r.data.tags["bru.role"] == "repeat" and r.info.status == "FINISHED"]
        assert len(repeats) == 1 and "final_test_error" in repeats[0].data.metrics
    finally:
        if group_alive(first.pid):
            os.killpg(first.pid, 9)
        stop_server(server)


def test_a_storage_failure_names_the_driver_error_not_optunas_guess():
    """Optuna wraps a lost connection in "An exception is raised during the commit ...
    e.g. exceeding max length"; the line bru prints names the driver's error instead."""
    import sqlalchemy

    from bru_core.search.storage import _storage_failure

    lost = sqlalchemy.exc.OperationalError(
        "COMMIT", {}, Exception("terminating connection due to administrator command")
    )
    try:
        try:
            raise lost
        except sqlalchemy.exc.OperationalError as exc:
            raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from exc
    except optuna.exceptions.StorageInternalError as wrapped:
        try:
            raise UnboundLocalError("cannot access local variable 'frozen_trial'")  # as Optuna can
        except UnboundLocalError as unrelated:
            unrelated.__context__ = wrapped
            assert _storage_failure(unrelated) is lost
            assert "administrator command" in str(_storage_failure(unrelated)).splitlines()[0]
    alone = optuna.exceptions.StorageInternalError("no driver error behind it")
    assert _storage_failure(alone) is alone
    assert _storage_failure(ValueError("not a store")) is None
    looped = ValueError("a")
    looped.__context__ = KeyError("b")
    looped.__context__.__context__ = looped  # a cycle ends the walk
    assert _storage_failure(looped) is None


def test_a_store_lost_while_a_study_reads_its_budget_is_one_line_and_retried(monkeypatch):
    """A PostgreSQL restart can land between trials, while the session reads its budget,
    not only inside a trial (seen in CI): each session step names it in one line, and a
    flow's task treats it as infrastructure, so its retry resumes the study."""
    import sqlalchemy

    from bru_core.errors import StoreFailedError
    from bru_core.search import StudySession
    from bru_core.spec import parse_spec
    from flows.retries import is_infrastructure

    spec = parse_spec(
        {"name": "lost", "tasks": [{"dataset": "digits", "model": "mlp4", "epochs": 1}], "activations": ["relu"],
         "search": {"trials": 2, "space": {"lr": {"low": 1e-3, "high": 0.1, "log": True}}},
         "repeats": {"seeds": [1, 2]}, "compare": {"exploratory": True}}
    )  # fmt: skip

    def lost_connection(*args, **kwargs):
        try:
            raise sqlalchemy.exc.OperationalError(
                "SELECT", {}, Exception("terminating connection due to administrator command")
            )
        except sqlalchemy.exc.OperationalError as exc:
            raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from exc

    class LostStorage:  # every call to the storage fails as a restarted server's does
        def __getattr__(self, name):
            return lost_connection

    with StudySession(spec, "digits/mlp4", "relu") as session:
        monkeypatch.setattr(session.study, "_storage", LostStorage())
        monkeypatch.setattr("bru_core.search.study.fail_stale_trials", lost_connection)  # Optuna's own check
        for step in (session.next_step, session.state, session.best_value, session.wait):
            with pytest.raises(StoreFailedError, match=r"administrator command.*run the same command again") as told:
                step()
            assert len(str(told.value).splitlines()) == 1
            assert is_infrastructure(told.value)
        monkeypatch.undo()
        assert session.next_step() == "trial"  # nothing else about the session changed


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg://bru:s3cret@db:5432/optuna", "postgresql+psycopg://bru:***@db:5432/optuna"),
        ("postgresql://bru@db/optuna", "postgresql://bru@db/optuna"),
        ("http://user:p%40ss@127.0.0.1:5000", "http://user:***@127.0.0.1:5000"),
        ("sqlite:////tmp/home/optuna.db", "sqlite:////tmp/home/optuna.db"),
        ("mysql://:only-a-password@host/db", "mysql://:***@host/db"),
        # reserved characters left unencoded: nothing of the password may show
        ("postgresql://bru:p/ss#w?rd@db:5432/optuna", "postgresql://bru:***@db:5432/optuna"),
        ("postgresql+psycopg://bru:p@ss:w@db/results", "postgresql+psycopg://bru:***@db/results"),
    ],
)
def test_store_urls_are_printed_without_their_password(url, shown):
    from bru_core.settings import shown_url

    assert shown_url(url) == shown


def test_a_published_page_names_a_store_under_home_relative_to_it():
    """A report names its MLflow store as $BRU_HOME/..., not the path of the machine it
    ran on; a store elsewhere, or a server, is shown as it is (password masked)."""
    from bru_core.settings import shown_url

    home = Path("/srv/lab/home")
    assert shown_url("sqlite:////srv/lab/home/mlflow.db", home) == "sqlite:///$BRU_HOME/mlflow.db"
    assert shown_url("sqlite:////srv/lab/homework/mlflow.db", home) == "sqlite:////srv/lab/homework/mlflow.db"
    assert shown_url("http://u:pw@mlflow:5000", home) == "http://u:***@mlflow:5000"


def test_a_store_that_cannot_be_opened_does_not_print_its_password(tmp_path, capsys):
    from bru_core.cli import main

    code = main(["search", SMOKE, "--task", "digits/mlp4", "-a", "relu", "--home", str(tmp_path / "home"),
                 "--optuna-storage", "postgresql+psycopg://bru:s3cret@127.0.0.1:1/optuna"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "bru:***@127.0.0.1:1" in err and "s3cret" not in err, err


@pytest.mark.slow
def test_a_study_flow_run_alone_gives_its_slot_back_at_exit_and_leaves_nothing_running(tmp_path):
    """The `bru-search` flow run on its own keeps its `gpu` slot between trials and has
    no campaign to give it back: the exit hook does, before Prefect stops its temporary
    server (after, the release started a second server that nothing stopped)."""
    import sqlite3

    home = tmp_path / "home"
    spec = _slow_spec(tmp_path, "alone", trials=2)
    script = (
        "import sys, yaml; from flows.campaign import search_study; from flows.gpu import ensure_gpu_limit; "
        "ensure_gpu_limit(); print(search_study(yaml.safe_load(open(sys.argv[1])), 'digits/mlp4', 'relu'))"
    )
    process = _start_python(["-c", script, spec], _env(home), tmp_path / "logs")
    try:
        err = _finish_campaign(process, tmp_path / "logs")
    finally:
        if group_alive(process.pid):
            os.killpg(process.pid, 9)
    assert process.returncode == 0, err[-3000:]
    assert "'done': 2" in (tmp_path / "logs" / "out.log").read_text()
    assert "Error emitting event" not in err and "can't register atexit" not in err, err[-3000:]
    with sqlite3.connect(home / "prefect" / "prefect.db") as db:  # the temporary server's database
        assert db.execute("SELECT active_slots FROM concurrency_limit_v2 WHERE name = 'gpu'").fetchall() == [(0,)]


def test_a_dying_heartbeat_thread_is_one_log_line_not_a_traceback(monkeypatch, capsys, caplog):
    """A database restart kills Optuna's heartbeat thread; stderr gets no traceback (the
    campaign's last line stays its one error line), the log says what happens next, and
    any other thread's exception still reaches the previous hook."""
    import logging
    import threading

    from optuna.storages._heartbeat import HeartbeatThread

    from bru_core.search.storage import _log_heartbeat_thread_failures

    seen: list[str] = []  # what reaches the hook in place before bru's (monkeypatch restores the real one)
    monkeypatch.setattr(threading, "excepthook", lambda args: seen.append(args.exc_type.__name__))
    _log_heartbeat_thread_failures()
    _log_heartbeat_thread_failures()  # installed once

    class LostDatabase:
        def get_heartbeat_interval(self) -> int:
            return 1

        def record_heartbeat(self, trial_id: int) -> None:
            raise ConnectionError("terminating connection due to administrator command")

    beating = HeartbeatThread(3, LostDatabase())
    with caplog.at_level(logging.WARNING, logger="bru.search"):
        beating.start()
        beating._thread.join(timeout=10)
    assert "Traceback" not in capsys.readouterr().err and seen == []
    assert "heartbeat thread stopped (ConnectionError: terminating connection" in caplog.text

    other = threading.Thread(target=lambda: 1 / 0)
    other.start()
    other.join()
    assert seen == ["ZeroDivisionError"]
