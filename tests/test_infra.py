"""The service stack's files: docker-compose.yml, infra/, and infra/local/stack.sh's
failure modes. (Docker has no engine here: the compose file is validated against the
compose specification and against the commands infra/local runs; the real services run
in `make test-services`.)"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from flows.service import CONTAINER_WORKDIR
from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
STACK = ROOT / "infra" / "local" / "stack.sh"


def test_compose_file_is_valid_compose():
    checker = Path(sys.executable).parent / "check-jsonschema"
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(ROOT / "docker-compose.yml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_has_the_services():
    assert set(COMPOSE["services"]) == {"postgres", "mlflow", "prefect-server", "init", "worker"}
    worker = COMPOSE["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert COMPOSE["services"]["init"]["command"][:2] == ["bru", "deploy"]
    assert COMPOSE["services"]["postgres"]["healthcheck"]
    assert "postgres-data:/var/lib/postgresql/data" in COMPOSE["services"]["postgres"]["volumes"]


def _stack_commands() -> dict[str, list[str]]:
    """`start NAME COMMAND...` lines of stack.sh, continuation lines joined, $BIN/ stripped."""
    text = STACK.read_text().replace("\\\n", " ")
    commands = {}
    for line in text.splitlines():
        match = re.search(r"\bstart (\S+) (\"\$BIN/.*)$", line)
        if match and match.group(1) != "NAME":
            name = match.group(1).strip('"').replace("$name", "worker")
            tokens = shlex.split(match.group(2).replace("$BIN/", ""), posix=True)
            commands[name] = tokens
    return commands


def _program_and_flags(tokens: list[str]) -> tuple[list[str], set[str]]:
    program = [t for t in tokens[:3] if not t.startswith("-")][:2] if tokens[0] != "bru" else tokens[:2]
    return program, {t for t in tokens if t.startswith("--")}


@pytest.mark.parametrize(
    ("service", "local"), [("mlflow", "mlflow"), ("prefect-server", "prefect-server"), ("worker", "worker")]
)
def test_each_compose_service_runs_the_command_infra_local_runs(service, local):
    compose_command = [str(t) for t in COMPOSE["services"][service]["command"]]
    local_command = _stack_commands()[local]
    assert _program_and_flags(compose_command) == _program_and_flags(local_command)


def test_the_init_service_is_what_test_services_runs():
    assert "$BIN/bru deploy" in (ROOT / "infra" / "local" / "test-services.sh").read_text()


def test_both_stacks_use_the_same_drivers_and_settings():
    mlflow = COMPOSE["services"]["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"]
    assert mlflow.startswith("postgresql+psycopg://")
    assert 'MLFLOW_BACKEND_STORE_URI="postgresql+psycopg://' in STACK.read_text()
    prefect_env = COMPOSE["services"]["prefect-server"]["environment"]
    assert prefect_env["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")
    assert 'PREFECT_API_DATABASE_CONNECTION_URL="postgresql+asyncpg://' in STACK.read_text()
    assert COMPOSE["services"]["mlflow"]["environment"]["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false" in STACK.read_text()
    for db in ("mlflow", "prefect", "optuna", "results"):
        assert f"CREATE DATABASE {db};" in (ROOT / "infra" / "docker" / "postgres-init.sql").read_text()
    assert 'DATABASES="mlflow prefect optuna results"' in STACK.read_text()


# --------------------------------------------------------------------------- security


def test_every_published_port_is_on_loopback():
    for name, service in COMPOSE["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port}"
    assert "HOST=127.0.0.1" in STACK.read_text()


def test_no_credentials_in_the_repository():
    raw = (ROOT / "docker-compose.yml").read_text()
    assert "${POSTGRES_PASSWORD:?" in raw  # required, no default
    assert re.search(r"^POSTGRES_PASSWORD=\s*$", (ROOT / ".env.example").read_text(), re.M)
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    for path in tracked:
        if path.endswith((".py", ".sh", ".yml", ".yaml", ".json", ".toml", ".md")) and (ROOT / path).exists():
            text = (ROOT / path).read_text(errors="ignore")
            assert not re.search(r"(password|secret|token)\s*[=:]\s*['\"][^'\"$<{]{6,}['\"]", text, re.I), path


def test_no_password_on_a_command_line():
    """A store URI with its password goes through the environment: command lines are
    visible to every local account (ps) and to `docker inspect`."""
    mlflow = COMPOSE["services"]["mlflow"]
    assert not [arg for arg in mlflow["command"] if "POSTGRES_PASSWORD" in str(arg) or "@postgres" in str(arg)]
    assert "${POSTGRES_PASSWORD}@postgres:5432/mlflow" in mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"]


def test_mlflow_keeps_its_host_check_with_explicit_hosts():
    command = COMPOSE["services"]["mlflow"]["command"]
    hosts = command[command.index("--allowed-hosts") + 1].split(",")
    assert "mlflow:5000" in hosts  # inside the compose network the port is always 5000
    assert {"localhost:${MLFLOW_PORT:-5000}", "127.0.0.1:${MLFLOW_PORT:-5000}"} <= set(hosts)  # the published port
    assert "--allowed-hosts" in STACK.read_text()
    assert "--disable-security-middleware" not in STACK.read_text() + str(command)


def test_torch_load_only_with_weights_only_and_sql_only_bound():
    for path in [*(ROOT / "bru_core").rglob("*.py"), *(ROOT / "flows").rglob("*.py")]:
        text = path.read_text()
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, f"{path}: {call}"
        assert not re.search(r"text\(\s*f[\"']", text), f"{path}: SQL built from an f-string"
        assert not re.search(r"execute\(\s*f[\"']", text), f"{path}: SQL built from an f-string"


def test_dockerfile_runs_as_a_user_from_the_deployments_workdir():
    dockerfile = (ROOT / "infra" / "docker" / "Dockerfile").read_text()
    assert re.search(r"^USER bru$", dockerfile, re.M)
    assert f"WORKDIR {CONTAINER_WORKDIR}" in dockerfile
    assert "pip install torch==2.14.1 torchvision==0.29.1" in dockerfile
    assert "torch==2.14.1 torchvision==0.29.1" in (ROOT / "Makefile").read_text()


# --------------------------------------------------------------------------- stack.sh


@pytest.fixture
def stack_dir(tmp_path):
    """Under /tmp and world-traversable: PostgreSQL runs as the postgres user when we are root."""
    folder = Path(tempfile.mkdtemp(prefix="bru-stack-test-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _stack(folder: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "BRU_STACK_DIR": str(folder / "stack"), "BRU_STACK_BIN": str(Path(sys.executable).parent),
            "BRU_STACK_PG_PORT": str(free_port()), "BRU_STACK_MLFLOW_PORT": str(free_port()),
            "BRU_STACK_PREFECT_PORT": str(free_port()), **env}  # fmt: skip
    return subprocess.run(["bash", str(STACK), *args], env=full, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_stack_up_on_a_taken_port_names_it_and_starts_nothing(stack_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _stack(stack_dir, "up", BRU_STACK_MLFLOW_PORT=str(port))
    assert result.returncode == 2
    assert f"error: port {port} (mlflow) is taken; set BRU_STACK_MLFLOW_PORT" in result.stderr
    assert not (stack_dir / "stack" / "postgres").exists()  # nothing was started


@pytest.mark.slow
def test_stack_up_with_a_service_not_healthy_in_time_stops_what_it_started(stack_dir):
    result = _stack(stack_dir, "up", BRU_STACK_TIMEOUT="2")
    assert result.returncode == 1, result.stderr
    log = stack_dir / "stack" / "logs" / "mlflow.log"
    assert f"error: mlflow did not become healthy within 2s; see {log}" in result.stderr
    assert "stopping what this call started: postgres mlflow" in result.stderr
    status = _stack(stack_dir, "status")
    assert "postgres        stopped" in status.stdout and "mlflow          stopped" in status.stdout


def test_stack_usage_errors(tmp_path):
    result = _stack(tmp_path, "sideways")
    assert result.returncode == 2 and result.stderr.startswith("error: usage:")
    result = _stack(tmp_path, "up", "--wrong", BRU_STACK_BIN=str(tmp_path / "nothing"))
    assert result.returncode == 2 and "error: " in result.stderr


# --------------------------------------------------------------------------- container pools


def _rendered_job(pool_type: str, **variables: object) -> dict:
    """A pool's job configuration as its worker fills it in: the template's defaults, then
    the given job variables (Prefect's own templating)."""
    import json

    from prefect.utilities.templating import apply_values

    template = json.loads((ROOT / "infra" / pool_type / "base-job-template.json").read_text())
    values = {name: spec.get("default") for name, spec in template["variables"]["properties"].items()}
    return apply_values(template["job_configuration"], {**values, **variables})


def test_kubernetes_flow_run_pods_get_the_stores_in_the_namespace_that_holds_them():
    """The worker's Role and the stores secret live in bru-lab; a flow-run pod does not
    inherit the worker's environment, so the secret is its envFrom."""
    job = _rendered_job("kubernetes", env={"BRU_REQUIRE_SHARED_STORES": "true"})
    assert job["namespace"] == job["job_manifest"]["metadata"]["namespace"] == "bru-lab"
    (container,) = job["job_manifest"]["spec"]["template"]["spec"]["containers"]
    assert container["envFrom"] == [{"secretRef": {"name": "bru-lab-stores"}}]
    assert job["env"] == {"BRU_REQUIRE_SHARED_STORES": "true"}
    values = (ROOT / "infra" / "kubernetes" / "worker-values.yaml").read_text()
    assert "create namespace bru-lab" in values and "extraEnvVarsSecret: bru-lab-stores" in values
    for key in ("BRU_TRACKING_URI", "BRU_OPTUNA_STORAGE", "BRU_RESULTS_URL"):
        assert f"--from-literal={key}=" in values  # the secret the pods read holds every store


def test_docker_flow_run_containers_join_the_compose_network():
    """Without the compose network a flow-run container cannot resolve postgres or mlflow."""
    assert COMPOSE["name"] == "bru-lab"  # so the default network is bru-lab_default
    assert _rendered_job("docker")["networks"] == ["bru-lab_default"]


def test_a_flow_run_that_needs_shared_stores_refuses_the_embedded_ones(monkeypatch):
    """One error line naming each store setting that is missing, before anything runs."""
    from bru_core.errors import ConfigError
    from bru_core.settings import get_settings
    from flows.stores import refuse_embedded_stores

    for name in ("BRU_TRACKING_URI", "BRU_OPTUNA_STORAGE", "BRU_RESULTS_URL", "BRU_REQUIRE_SHARED_STORES"):
        monkeypatch.delenv(name, raising=False)
    refuse_embedded_stores(get_settings())  # an embedded run: nothing required
    monkeypatch.setenv("BRU_REQUIRE_SHARED_STORES", "true")
    monkeypatch.setenv("BRU_OPTUNA_STORAGE", "postgresql+psycopg://bru@postgres/optuna")
    with pytest.raises(ConfigError) as error:
        refuse_embedded_stores(get_settings())
    message = str(error.value)
    assert message.startswith("BRU_TRACKING_URI, BRU_RESULTS_URL not set: this flow run is on a container pool")
    assert "\n" not in message and "BRU_OPTUNA_STORAGE" not in message
    monkeypatch.setenv("BRU_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv("BRU_RESULTS_URL", "postgresql+psycopg://bru@postgres/results")
    refuse_embedded_stores(get_settings())
