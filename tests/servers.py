"""Pytest plugin: real PostgreSQL and MLflow servers on 127.0.0.1 for integration tests.

Load it with ``pytest_plugins = ["tests.servers"]`` in the top-level conftest (or ``-p tests.servers``).

Fixtures:

* ``postgres_server`` (session): a throwaway PostgreSQL cluster (initdb + pg_ctl) yielding a
  :class:`PostgresServer`; ``create_database(name)`` returns a SQLAlchemy URL.
* ``postgres_url`` (function): a fresh, empty database for one test, dropped afterwards.
* ``mlflow_server`` (session): ``mlflow server`` with a SQLite backend and proxied local
  artifacts, yielding a :class:`MlflowServer` whose ``uri`` is ``http://127.0.0.1:PORT``.

Both servers are started at most once per test session, and only when a test asks for them.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bru_core.tracking import TrackingError, wait_healthy
from tests.helpers.processes import group_alive

HOST = "127.0.0.1"
PG_USER = "postgres"  # the cluster's superuser (initdb -U) and, when we are root, the OS user that runs it

MLFLOW_START_TIMEOUT = 90.0  # seconds; it takes 5-20 s to become healthy on a small machine
MLFLOW_STOP_TIMEOUT = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the OS picks it; it could be taken before we use it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"<could not read {path}: {exc}>"


# --------------------------------------------------------------------------- PostgreSQL


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    data_dir: Path
    log_path: Path
    options: str = ""  # the server's options, for a pg_ctl start after a stop

    def pg_ctl(self, action: str) -> None:
        """``restart`` (fast), ``stop`` (fast) or ``start`` the server in place, waiting for
        it; as the postgres user, output to the server's log (the postmaster would keep an
        inherited pipe open)."""
        args = {"restart": ["-m", "fast"], "stop": ["-m", "fast"], "start": ["-o", self.options]}[action]
        command = [*_as_postgres_user(), str(_find_initdb().parent / "pg_ctl"), "-D", str(self.data_dir),
                   "-l", str(self.log_path), "-w", *args, action]  # fmt: skip
        done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
        assert done.returncode == 0, f"pg_ctl {action} failed:\n{_tail(self.log_path)}"

    def url(self, database: str) -> str:
        """SQLAlchemy URL (psycopg 3 driver) for ``database``; no password, the cluster trusts local TCP."""
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database}"

    def _admin_connection(self):
        import psycopg

        # CREATE/DROP DATABASE cannot run inside a transaction block, hence autocommit.
        return psycopg.connect(host=self.host, port=self.port, user=self.user, dbname="postgres", autocommit=True)

    def create_database(self, name: str) -> str:
        """Create an empty database ``name`` and return its SQLAlchemy URL.

        Idempotent by replacement: if ``name`` already exists it is dropped (closing any open
        connections to it) and created again, so the caller always gets an empty database.
        """
        from psycopg import sql

        with self._admin_connection() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name`` if it exists, closing any connections still open to it."""
        from psycopg import sql

        with self._admin_connection() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _find_initdb() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found)
    # Debian/Ubuntu keep the server binaries off PATH.
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(candidates[-1]) if candidates else None


def _as_postgres_user() -> list[str]:
    """Command prefix that runs a server binary as a non-root user.

    initdb and postgres refuse to run as root, so when the tests run as root (containers, CI)
    we run them as the existing ``postgres`` OS user via ``runuser`` (part of util-linux; unlike
    ``su``/``sudo`` it needs no password and no PAM setup). As a normal user, run them directly.
    """
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        pytest.fail(f"running as root, but there is no {PG_USER!r} OS user to run PostgreSQL as (initdb refuses root)")
    return ["runuser", "-u", PG_USER, "--"]


def _run(cmd: list[str], cwd: Path) -> None:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(
            f"command failed with exit code {result.returncode}: {' '.join(cmd)}\n"
            f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server on 127.0.0.1:<free port>, superuser ``postgres`` with trust auth."""
    initdb = _find_initdb()
    if initdb is None:
        pytest.skip("PostgreSQL server binaries not found (no initdb on PATH or in /usr/lib/postgresql/*/bin)")
    # pg_ctl from the same folder as initdb, so both are the same version (PATH entries may be symlinks).
    bin_dir = initdb.resolve().parent
    pg_ctl = str(bin_dir / "pg_ctl")
    prefix = _as_postgres_user()

    # A fresh folder under the system temp dir rather than under tmp_path_factory: pytest's base
    # folder is 0700 and owned by us, so the postgres OS user could not reach a cluster inside it.
    # The path is also short, which keeps the Unix socket path (-k) under its 107-byte limit.
    root = Path(tempfile.mkdtemp(prefix="pytest-pg-"))
    data_dir = root / "data"
    log_path = root / "postgres.log"
    if prefix:
        shutil.chown(root, user=PG_USER, group=pwd.getpwnam(PG_USER).pw_gid)

    port = free_port()
    # fsync/synchronous_commit/full_page_writes off: durability is pointless for a test cluster.
    # max_connections 400: the whole session shares this one cluster, and a campaign under
    # test opens several pools (Optuna's storage per study, its heartbeats, the lock, the
    # progress view) beside the tests' own polling; the default 100 was once exhausted in CI
    # ("sorry, too many clients already" in test_postgresql_restarted_mid_campaign).
    options = (
        f"-c listen_addresses={HOST} -p {port} -k {shlex.quote(str(root))} "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=400"
    )
    server = PostgresServer(host=HOST, port=port, user=PG_USER, data_dir=data_dir, log_path=log_path, options=options)
    started = False
    try:
        # --no-sync: the cluster is thrown away, so skip flushing to disk (faster on slow CI disks).
        _run(
            [*prefix, str(initdb), "-D", str(data_dir), "-U", PG_USER, "--auth=trust",
             "--encoding=UTF8", "--locale=C", "--no-sync"],
            cwd=root,
        )  # fmt: skip
        start = [*prefix, pg_ctl, "-D", str(data_dir), "-w", "-t", "60", "-o", options, "-l", str(log_path), "start"]
        started = True  # from here on, always try to stop it: a failed or timed-out start may have left it up
        result = subprocess.run(start, cwd=root, capture_output=True, text=True, timeout=90)
        if result.returncode != 0:
            raise RuntimeError(
                f"PostgreSQL failed to start on {HOST}:{port} (pg_ctl exit code {result.returncode})\n"
                f"--- pg_ctl output\n{result.stdout}{result.stderr}\n"
                f"--- tail of {log_path}\n{_tail(log_path)}"
            )
        yield server
    finally:
        if started:
            stop = [*prefix, pg_ctl, "-D", str(data_dir), "-m", "fast", "-w", "-t", "30", "stop"]
            result = subprocess.run(stop, cwd=root, capture_output=True, text=True, timeout=60)
            if result.returncode != 0 and "Is server running?" not in result.stderr:
                # Last resort, so that no postmaster outlives the test session.
                immediate = [*prefix, pg_ctl, "-D", str(data_dir), "-m", "immediate", "stop"]
                subprocess.run(immediate, cwd=root, capture_output=True, timeout=30)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """SQLAlchemy URL of a new, empty database for this test only (dropped after the test)."""
    # Postgres folds unquoted names to lower case and truncates them at 63 bytes; keep it plain.
    slug = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")[:40]
    name = f"t_{slug}_{uuid.uuid4().hex[:8]}"
    yield postgres_server.create_database(name)
    postgres_server.drop_database(name)


# --------------------------------------------------------------------------- MLflow


@dataclass(frozen=True)
class MlflowServer:
    uri: str
    port: int
    log_path: Path
    root: Path  # holds mlflow.db, artifacts/ and the log
    process: subprocess.Popen = field(repr=False, compare=False)


def _stop_process_group(process: subprocess.Popen, timeout: float) -> None:
    """SIGTERM the whole process group (mlflow CLI + uvicorn), then SIGKILL whatever is left after ``timeout``."""
    pgid = process.pid  # start_new_session=True made it a group leader
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=timeout)
    # The CLI forwards SIGTERM to uvicorn and exits when it does, but wait for the whole group.
    while time.monotonic() < deadline:
        if not group_alive(pgid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A real ``mlflow server`` (SQLite backend, proxied artifacts) on 127.0.0.1:<free port>."""
    root = tmp_path_factory.mktemp("mlflow-server")
    log_path = root / "server.log"
    port = free_port()
    uri = f"http://{HOST}:{port}"
    # The venv's own mlflow, so the server matches the client library under test.
    cmd = [
        str(Path(sys.executable).parent / "mlflow"), "server",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"),
        "--host", HOST, "--port", str(port),
        "--workers", "1",  # one uvicorn process instead of 4
    ]  # fmt: skip
    env = {
        **os.environ,
        # Without this, the server also starts a job runner with seven huey consumer processes
        # (~700 MB RSS, slower start on 2 cores) and leaves a huey folder behind in /dev/shm.
        # The tests need no server-side jobs (those are for GenAI scorers and trace maintenance).
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "PYTHONUNBUFFERED": "1",  # so the log is complete if we have to show its tail
    }
    with open(log_path, "wb") as log:
        # Its own session/process group, so teardown can signal the CLI and its uvicorn child together.
        # cwd=root: nothing (e.g. a default ./mlruns or ./mlartifacts) can land in the repository.
        process = subprocess.Popen(
            cmd, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    server = MlflowServer(uri=uri, port=port, log_path=log_path, root=root, process=process)
    try:
        try:
            wait_healthy(uri, process, MLFLOW_START_TIMEOUT)  # the product's own wait
        except TrackingError as exc:
            raise RuntimeError(f"{exc}\n--- tail of {log_path}\n{_tail(log_path)}") from None
        yield server
    finally:
        _stop_process_group(process, MLFLOW_STOP_TIMEOUT)


# --------------------------------------------------------------------------- Prefect

PREFECT_START_TIMEOUT = 90.0


@dataclass
class PrefectServer:
    api_url: str  # http://127.0.0.1:PORT/api
    home: Path  # PREFECT_HOME of the server (and of clients that should share its settings)
    log_path: Path
    process: subprocess.Popen = field(repr=False)

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a client, a worker or a bru command talking to this server."""
        return {
            **os.environ,
            "PREFECT_API_URL": self.api_url,
            "PREFECT_HOME": str(self.home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            **extra,
        }


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """A real ``prefect server start`` (SQLite, analytics off) on 127.0.0.1:<free port>,
    with the lease repossessor looping every second so freed GPU slots show up quickly."""
    root = tmp_path_factory.mktemp("prefect-server")
    home = root / "home"
    home.mkdir()
    log_path = root / "server.log"
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS": "1",
        "PREFECT_UI_ENABLED": "false",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("PREFECT_API_URL", None)
    cmd = [str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", HOST, "--port", str(port)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            cmd,
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = PrefectServer(api_url=f"http://{HOST}:{port}/api", home=home, log_path=log_path, process=process)
    try:
        deadline = time.monotonic() + PREFECT_START_TIMEOUT
        while True:
            try:
                with urllib.request.urlopen(f"{server.api_url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if process.poll() is not None:
                raise RuntimeError(
                    f"prefect server exited with code {process.returncode}\n--- tail of {log_path}\n{_tail(log_path)}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"prefect server not healthy after {PREFECT_START_TIMEOUT:.0f} s\n--- tail of {log_path}\n{_tail(log_path)}"
                )
            time.sleep(0.25)
        yield server
    finally:
        _stop_process_group(process, 15.0)
