"""The service stack's files: docker-compose.yml, infra/, and infra/local/stack.sh's
failure modes. (Docker has no engine here: the compose file is validated against the
compose specification and against the commands infra/local runs; the real services run
in `make test-services`.)"""

from __future__ import annotations

import configparser
import glob
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import pytest
import yaml

from flows.service import CONTAINER_WORKDIR
from tests.helpers.paths import ROOT
from tests.servers import free_port

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
STACK = ROOT / "infra" / "local" / "stack.sh"
DOCKERFILE = ROOT / "infra" / "docker" / "Dockerfile"
CONSTRAINTS = ROOT / "infra" / "docker" / "constraints.txt"


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
    stack = STACK.read_text()
    mlflow_env = COMPOSE["services"]["mlflow"]["environment"]
    assert mlflow_env["MLFLOW_BACKEND_STORE_URI"] == "postgresql+psycopg:///mlflow"
    assert "MLFLOW_BACKEND_STORE_URI=postgresql+psycopg:///mlflow" in stack
    assert mlflow_env["PGUSER"] == "bru_mlflow" and "PGUSER=bru_mlflow" in stack
    assert mlflow_env["MLFLOW_AUTH_CONFIG_PATH"] == "/opt/bru-lab/infra/mlflow/basic-auth.ini"
    assert "MLFLOW_AUTH_CONFIG_PATH=$ROOT/infra/mlflow/basic-auth.ini" in stack
    prefect_env = COMPOSE["services"]["prefect-server"]["environment"]
    assert prefect_env["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://bru_prefect:")
    assert 'PREFECT_API_DATABASE_CONNECTION_URL="postgresql+asyncpg://bru_prefect:' in stack
    assert mlflow_env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false" in stack
    # one script makes the roles and databases of both
    volumes = COMPOSE["services"]["postgres"]["volumes"]
    assert "./infra/postgres/stores.sql:/docker-entrypoint-initdb.d/10-stores.sql:ro" in volumes
    assert '-f "$ROOT/infra/postgres/stores.sql"' in stack


# --------------------------------------------------------------------------- security


def test_every_published_port_is_on_loopback():
    for name, service in COMPOSE["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port}"
    assert "HOST=127.0.0.1" in STACK.read_text()


SECRETS = ("POSTGRES_PASSWORD", "BRU_PG_MLFLOW_PASSWORD", "BRU_PG_PREFECT_PASSWORD", "BRU_PG_OPTUNA_PASSWORD",
           "BRU_PG_RESULTS_PASSWORD", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY",
           "BRU_PREFECT_API_PASSWORD")  # fmt: skip


def test_no_credentials_in_the_repository():
    raw = (ROOT / "docker-compose.yml").read_text()
    example = (ROOT / ".env.example").read_text()
    for name in SECRETS:
        assert "${" + name + ":?" in raw, name  # required, no default
        assert re.search(rf"^{name}=\s*$", example, re.M), name  # and empty in the example
        assert name in example.split("do\n")[0], name  # in the command that generates them
    # the local stack generates the same ones (but POSTGRES_PASSWORD: its superuser has none)
    assert set(SECRETS) - {"POSTGRES_PASSWORD"} <= set(
        re.search(r'SECRET_NAMES="([^"]*)"', STACK.read_text())[1].split()
    )
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    for path in tracked:
        if path.endswith((".py", ".sh", ".yml", ".yaml", ".json", ".toml", ".md")) and (ROOT / path).exists():
            text = (ROOT / path).read_text(errors="ignore")
            assert not re.search(r"(password|secret|token)\s*[=:]\s*['\"][^'\"$<{]{6,}['\"]", text, re.I), path


def test_no_password_on_a_command_line():
    """A store URI with its password goes through the environment: command lines are
    visible to every local account (ps) and to `docker inspect`."""
    for name, service in COMPOSE["services"].items():
        command = " ".join(str(arg) for arg in service.get("command", []))
        assert "@" not in command and not any(secret in command for secret in SECRETS), name
    mlflow = COMPOSE["services"]["mlflow"]["environment"]
    assert mlflow["PGPASSWORD"] == "${BRU_PG_MLFLOW_PASSWORD}"
    # nor in a file: the MLflow users database is named without host, role or password
    auth = configparser.ConfigParser()
    auth.read(ROOT / "infra" / "mlflow" / "basic-auth.ini")
    assert auth["mlflow"]["database_uri"] == "postgresql+psycopg:///mlflow_auth"
    assert "admin_password" not in auth["mlflow"]


def test_every_service_wants_a_login():
    """MLflow runs its basic-auth app, Prefect wants its auth string, checks CSRF tokens and
    answers browsers from its own UI only; bru's side of each carries the login."""
    stack = STACK.read_text()
    mlflow = COMPOSE["services"]["mlflow"]["command"]
    assert mlflow[mlflow.index("--app-name") + 1] == "basic-auth" and "--app-name basic-auth" in stack
    auth = configparser.ConfigParser()
    auth.read(ROOT / "infra" / "mlflow" / "basic-auth.ini")
    assert auth["mlflow"]["default_permission"] in ("READ", "NO_PERMISSIONS")  # signed in is not allowed to write
    prefect = COMPOSE["services"]["prefect-server"]["environment"]
    assert prefect["PREFECT_SERVER_API_AUTH_STRING"] == "bru:${BRU_PREFECT_API_PASSWORD}"
    assert prefect["PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED"] == "true"
    origins = prefect["PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS"].split(",")
    assert "*" not in origins and all(o.startswith(("http://127.0.0.1:", "http://localhost:")) for o in origins)
    for setting in (
        "PREFECT_SERVER_API_AUTH_STRING=",
        "PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED=true",
        "PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS=",
    ):
        assert setting in stack
    clients = COMPOSE["x-bru-settings"]
    assert clients["PREFECT_API_AUTH_STRING"].startswith("bru:${BRU_PREFECT_API_PASSWORD")
    assert clients["MLFLOW_TRACKING_USERNAME"] == "admin"
    assert clients["MLFLOW_TRACKING_PASSWORD"].startswith("${MLFLOW_AUTH_ADMIN_PASSWORD")
    for setting in ("PREFECT_API_AUTH_STRING", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        assert f"export {setting}=" in stack
    # on Kubernetes: Prefect's worker chart reads the auth string from its secret
    worker = yaml.safe_load((ROOT / "infra" / "kubernetes" / "worker-values.yaml").read_text())["worker"]
    assert worker["basicAuth"] == {"enabled": True, "existingSecret": "prefect-basic-auth"}


def test_workers_reach_only_the_stores_they_write():
    clients = COMPOSE["x-bru-settings"]
    assert clients["BRU_OPTUNA_STORAGE"].startswith("postgresql+psycopg://bru_optuna:")
    assert clients["BRU_RESULTS_URL"].startswith("postgresql+psycopg://bru_results:")
    assert "MLFLOW_BACKEND_STORE_URI" not in clients and "PREFECT_API_DATABASE_CONNECTION_URL" not in clients
    stack = STACK.read_text()
    assert "BRU_OPTUNA_STORAGE=postgresql+psycopg://bru_optuna:" in stack
    assert "BRU_RESULTS_URL=postgresql+psycopg://bru_results:" in stack


STORE_ROLES = {
    "mlflow": "bru_mlflow",
    "mlflow_auth": "bru_mlflow",
    "prefect": "bru_prefect",
    "optuna": "bru_optuna",
    "results": "bru_results",
}
STORE_PASSWORDS = {
    f"BRU_PG_{role.removeprefix('bru_').upper()}_PASSWORD": f"pw-{role}" for role in STORE_ROLES.values()
}


def _run_stores_sql(server, **env: str) -> subprocess.CompletedProcess:
    psql = shutil.which("psql") or str(Path(glob.glob("/usr/lib/postgresql/*/bin/psql")[-1]))
    return subprocess.run(
        [
            psql,
            "-X",
            "-q",
            "-h",
            server.host,
            "-p",
            str(server.port),
            "-U",
            server.user,
            "-d",
            "postgres",
            "-f",
            str(ROOT / "infra" / "postgres" / "stores.sql"),
        ],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.slow
def test_stores_sql_gives_each_store_its_own_role(postgres_server):
    """infra/postgres/stores.sql on a real PostgreSQL: a missing password creates nothing;
    then each database is owned by its role, no other role may connect to it, and a second
    run (every stack.sh up) changes nothing."""
    import psycopg

    admin = dict(host=postgres_server.host, port=postgres_server.port, user=postgres_server.user)
    incomplete = {k: v for k, v in STORE_PASSWORDS.items() if k != "BRU_PG_RESULTS_PASSWORD"}
    result = _run_stores_sql(postgres_server, **incomplete)
    assert result.returncode != 0 and "not set: BRU_PG_RESULTS_PASSWORD" in result.stderr, result.stderr
    with psycopg.connect(**admin, dbname="postgres") as conn:
        assert not conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE 'bru\\_%'").fetchall()
    for _ in range(2):
        result = _run_stores_sql(postgres_server, **STORE_PASSWORDS)
        assert result.returncode == 0, result.stderr
    with psycopg.connect(**admin, dbname="postgres") as conn:
        owners = dict(conn.execute("SELECT datname, pg_get_userbyid(datdba) FROM pg_database").fetchall())
        roles = conn.execute(
            "SELECT rolname, rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname LIKE 'bru\\_%'"
        ).fetchall()
    assert {db: owners.get(db) for db in STORE_ROLES} == STORE_ROLES
    assert sorted(r[0] for r in roles) == sorted(set(STORE_ROLES.values())) and not any(any(r[1:]) for r in roles)
    for database, owner in STORE_ROLES.items():
        for role in set(STORE_ROLES.values()):
            try:
                with psycopg.connect(**{**admin, "user": role}, dbname=database, connect_timeout=5):
                    allowed = True
            except psycopg.OperationalError as exc:
                assert "permission denied" in str(exc), exc
                allowed = False
            assert allowed == (role == owner), (role, database)


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
        # SQLAlchemy's text(...) and execute(...), not e.g. Path.write_text(f"...")
        assert not re.search(r"(?<![\w.])text\(\s*f[\"']", text), f"{path}: SQL built from an f-string"
        assert not re.search(r"execute\(\s*f[\"']", text), f"{path}: SQL built from an f-string"


def test_dockerfile_runs_as_a_user_from_the_deployments_workdir():
    dockerfile = DOCKERFILE.read_text()
    uid, gid = _image_user()
    assert uid == gid != 0
    assert re.search(rf"^USER {uid}:{gid}$", dockerfile, re.M)  # numeric: runAsNonRoot can check it
    assert re.search(rf"useradd .*--uid {uid} --gid {gid} bru\b", dockerfile)
    assert f"WORKDIR {CONTAINER_WORKDIR}" in dockerfile
    assert "torch==2.14.1 torchvision==0.29.1" in dockerfile
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


# --------------------------------------------------------------------------- hardening and versions


def _image_user() -> tuple[int, int]:
    """The uid and gid the Dockerfile gives its user bru (its group has the same gid)."""
    dockerfile = DOCKERFILE.read_text()
    uid, gid = re.search(r"useradd .*--uid (\d+) --gid (\d+) bru\b", dockerfile).groups()
    assert re.search(rf"groupadd --gid {gid} bru\b", dockerfile)
    return int(uid), int(gid)


def _template(pool_type: str) -> dict:
    return json.loads((ROOT / "infra" / pool_type / "base-job-template.json").read_text())


def _pod(job: dict) -> dict:
    return job["job_manifest"]["spec"]["template"]["spec"]


@pytest.mark.parametrize("pool_type", ["docker", "kubernetes"])
def test_every_placeholder_of_a_job_template_is_a_variable(pool_type):
    """A placeholder without a variable renders as nothing, silently: e.g. no tolerations."""
    from prefect.utilities.templating import find_placeholders

    template = _template(pool_type)
    names = {p.name for p in find_placeholders(json.dumps(template["job_configuration"]))}
    assert names <= set(template["variables"]["properties"])


def test_kubernetes_flow_run_pods_run_unprivileged():
    """A flow run runs as the image's non-root user, cannot gain privileges, holds no Linux
    capability and no Kubernetes API token (it needs none), under the runtime's seccomp
    profile; no job variable can change that (none of it is a placeholder)."""
    uid, gid = _image_user()
    pod = _pod(_rendered_job("kubernetes"))
    assert pod["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": uid, "runAsGroup": gid, "seccompProfile": {"type": "RuntimeDefault"}
    }  # fmt: skip
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "privileged": False,
        "runAsNonRoot": True,
    }  # fmt: skip
    template_pod = _pod(_template("kubernetes")["job_configuration"])
    fixed = [template_pod["securityContext"], template_pod["automountServiceAccountToken"]]
    assert "{{" not in json.dumps([*fixed, template_pod["containers"][0]["securityContext"]])


def test_kubernetes_flow_run_jobs_reserve_resources_reach_gpu_nodes_and_are_cleaned_up():
    job = _rendered_job("kubernetes")
    pod = _pod(job)
    (container,) = pod["containers"]
    assert container["resources"]["requests"] == {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": 1}
    assert container["resources"]["limits"]["memory"] == "16Gi"
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["nodeSelector"] == {}
    assert job["job_manifest"]["spec"]["ttlSecondsAfterFinished"] == 86400  # a day to read a failed pod
    # each of them is a job variable that a deployment (or the pool) can set
    job = _rendered_job(
        "kubernetes", cpu_request="8", memory_request="32Gi", node_selector={"pool": "h100"}, tolerations=[],
        finished_job_ttl=600,
    )  # fmt: skip
    pod = _pod(job)
    assert pod["containers"][0]["resources"]["requests"] == {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": 1}
    assert pod["nodeSelector"] == {"pool": "h100"} and pod["tolerations"] == []
    assert job["job_manifest"]["spec"]["ttlSecondsAfterFinished"] == 600


def test_docker_flow_run_containers_run_unprivileged():
    job = _rendered_job("docker")
    assert job["privileged"] is False
    kwargs = job["container_create_kwargs"]
    assert kwargs["cap_drop"] == ["ALL"] and kwargs["security_opt"] == ["no-new-privileges:true"]
    assert kwargs["device_requests"][0]["Driver"] == "nvidia"  # the GPU comes without privileges


def test_compose_services_gain_no_privilege_and_keep_only_the_capabilities_they_need():
    """postgres' entrypoint starts as root to own its data directory, then drops to the
    postgres user: the five capabilities that takes, and no others."""
    for name, service in COMPOSE["services"].items():
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        assert service.get("cap_drop") == ["ALL"], name
        needed = {"CHOWN", "SETUID", "SETGID", "DAC_OVERRIDE", "FOWNER"} if name == "postgres" else set()
        assert set(service.get("cap_add", [])) == needed, name
        assert not service.get("privileged"), name


def _images() -> dict[str, str]:
    """Every image reference that a default pulls or suggests: compose's services (their
    `${VAR:-default}`), the job templates' defaults and examples, the Dockerfile's base, and
    the worker chart's image."""
    images = {}
    for name, service in COMPOSE["services"].items():
        images[f"docker-compose.yml {name}"] = re.sub(r"^\$\{\w+:-(.*)\}$", r"\1", service["image"])
    for pool_type in ("docker", "kubernetes"):
        spec = _template(pool_type)["variables"]["properties"]["image"]
        for i, image in enumerate([spec["default"], *spec.get("examples", [])]):
            images[f"{pool_type} job template image {i}"] = image
    for i, image in enumerate(re.findall(r"^FROM (\S+)", DOCKERFILE.read_text(), re.M)):
        images[f"Dockerfile FROM {i}"] = image
    chart = yaml.safe_load((ROOT / "infra" / "kubernetes" / "worker-values.yaml").read_text())["worker"]["image"]
    images["worker-values.yaml"] = f"{chart['repository']}:{chart['prefectTag']}"
    return images


def test_every_image_has_an_exact_version_tag():
    """Never :latest, no tag, or a floating one (postgres:15, python:3.11-slim): the same
    file pulls the same software next month. The bru-lab image's tag is the package's version."""
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    images = _images()
    assert len(images) >= 8, images
    for where, image in images.items():
        name = image.partition("@")[0]
        repository, _, tag = name.rpartition("/")[2].partition(":")
        assert tag and "latest" not in tag, f"{where}: {image}"
        exact = r"\d+\.\d+([-.]|$)" if repository == "postgres" else r"\d+\.\d+\.\d+([-.]|$)"  # PostgreSQL: 15.15
        assert re.match(exact, tag), f"{where}: {image} is not an exact version"
        if repository == "bru-lab-worker":
            assert tag == version, f"{where}: {image} is not bru-lab {version}"


def _constraints() -> dict[str, str]:
    from packaging.utils import canonicalize_name

    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line and not line.startswith("#"):
            assert re.fullmatch(r"[A-Za-z0-9._-]+==[A-Za-z0-9.+!]+", line), line
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def _runtime_distributions() -> set[str]:
    """bru-lab[auth,dashboard] and all it pulls in, as installed here (canonical names)."""
    from importlib.metadata import distribution

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    todo, seen = [("bru-lab", frozenset({"auth", "dashboard"}))], set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        for line in distribution(name).requires or []:
            requirement = Requirement(line)
            marker = requirement.marker
            if marker is None or any(marker.evaluate({"extra": extra}) for extra in {"", *extras}):
                todo.append((canonicalize_name(requirement.name), frozenset(requirement.extras)))
    return {name for name, _ in seen} - {"bru-lab"}


def test_the_image_installs_the_versions_ci_tested():
    """Every pip install in the image is constrained to infra/docker/constraints.txt, which
    pins each runtime dependency at the version this (CI's) environment runs."""
    from importlib.metadata import PackageNotFoundError, version

    dockerfile = DOCKERFILE.read_text()
    installs = re.findall(r"^RUN pip install (.*)$", dockerfile, re.M)
    assert len(installs) == 2 and "pip install" not in re.sub(r"^RUN pip install .*$", "", dockerfile, flags=re.M)
    for install in installs:
        assert install.startswith("-c infra/docker/constraints.txt "), install
    assert "COPY infra/docker/constraints.txt ./infra/docker/constraints.txt" in dockerfile
    assert installs[-1].endswith("'/opt/bru-lab[auth]'")  # the MLflow server's basic-auth app
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["auth"] == [
        "mlflow[auth]"
    ]
    pins = _constraints()
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
    assert "flask-wtf" in pins  # mlflow[auth]
    assert not {"bru-lab", "pytest", "ruff", "hypothesis", "check-jsonschema"} & set(pins)  # runtime only
    assert _runtime_distributions() <= set(pins)
    drift = {}
    for name, pinned in pins.items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = None
        if installed != pinned:
            drift[name] = f"pinned {pinned}, tested {installed}"
    assert not drift, f"regenerate infra/docker/constraints.txt (its header says how): {drift}"
