"""Who gets into a running stack (make test-services, after a campaign went through it):
every service refuses a caller without credentials, and a second local account reaches
neither PostgreSQL nor the stack's secrets. One line per check; exit 1 if any fails.

Reads the stack's settings from the environment (eval "$(infra/local/stack.sh env)") and
BRU_STACK_DIR. The second-account checks create the OS account `bru-stranger` (and remove
it again), so they need root; without root they are skipped with a line saying so, and
fail under CI=true.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

STRANGER = "bru-stranger"
failures: list[str] = []


def check(name: str, ok: bool, detail: str = "") -> None:
    print(f"{'ok  ' if ok else 'FAIL'} {name}{f' ({detail})' if detail and not ok else ''}")
    if not ok:
        failures.append(name)


def status(
    url: str, method: str = "GET", login: str | None = None, headers: dict | None = None, body: dict | None = None
) -> int:
    data = json.dumps(body or {}).encode() if method in ("POST", "DELETE", "PATCH") else None
    request = urllib.request.Request(url, method=method, data=data)
    request.add_header("Content-Type", "application/json")
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    if login is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(login.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def preflight_allows(url: str, origin: str) -> bool:
    request = urllib.request.Request(url, method="OPTIONS")
    request.add_header("Origin", origin)
    request.add_header("Access-Control-Request-Method", "POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.headers.get("Access-Control-Allow-Origin") in (origin, "*")
    except urllib.error.HTTPError as exc:
        return exc.headers.get("Access-Control-Allow-Origin") in (origin, "*")


def check_mlflow() -> None:
    base = os.environ["BRU_TRACKING_URI"].rstrip("/")
    search = f"{base}/api/2.0/mlflow/experiments/search?max_results=1"
    user, password = os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]
    check("mlflow /health answers without a login", status(f"{base}/health") == 200)
    check("mlflow API without a login: 401", (code := status(search)) == 401, f"got {code}")
    check("mlflow API with a wrong password: 401", (code := status(search, login=f"{user}:x")) == 401, f"got {code}")
    check(
        "mlflow API with the stack's login: 200",
        (code := status(search, login=f"{user}:{password}")) == 200,
        f"got {code}",
    )


def answer(url: str, login: str, body: dict | None = None) -> dict:
    """A signed-in call's JSON answer (GET without a body, POST with one)."""
    request = urllib.request.Request(url, method="POST" if body is not None else "GET")
    request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", "Basic " + base64.b64encode(login.encode()).decode())
    with urllib.request.urlopen(request, data=json.dumps(body).encode() if body is not None else None, timeout=10) as r:
        return json.loads(r.read() or b"{}")


def check_lab_member() -> None:
    """A lab member with an MLflow account of their own (docs/deploy.md, "a user per lab
    member"): reads the campaign's experiment, may not write into it (default_permission
    READ), and writes into an experiment of their own. The account is removed afterwards."""
    base = os.environ["BRU_TRACKING_URI"].rstrip("/")
    api = f"{base}/api/2.0/mlflow"
    admin = f"{os.environ['MLFLOW_TRACKING_USERNAME']}:{os.environ['MLFLOW_TRACKING_PASSWORD']}"
    experiments = answer(f"{api}/experiments/search", admin, {"max_results": 50}).get("experiments", [])
    campaign = next((e for e in experiments if e["name"] != "Default"), None)
    if campaign is None:
        check("a campaign's experiment exists for the lab-member checks", False, "run a campaign first")
        return
    name, password = f"bru-member-{secrets.token_hex(3)}", secrets.token_hex(16)
    member = f"{name}:{password}"
    answer(f"{api}/users/create", admin, {"username": name, "password": password})
    try:
        read = status(f"{api}/experiments/get?experiment_id={campaign['experiment_id']}", login=member)
        check(f"a lab member reads the campaign's experiment {campaign['name']}: 200", read == 200, f"got {read}")
        code = status(f"{api}/runs/create", "POST", member, body={"experiment_id": campaign["experiment_id"]})
        check("a lab member writing a run into it: 403", code == 403, f"got {code}")
        own = answer(f"{api}/experiments/create", member, {"name": f"{name}-own"})["experiment_id"]
        code = status(f"{api}/runs/create", "POST", member, body={"experiment_id": own})
        check("a lab member writes a run into an experiment of their own: 200", code == 200, f"got {code}")
        status(f"{api}/experiments/delete", "POST", member, body={"experiment_id": own})
    finally:
        status(f"{api}/users/delete", "DELETE", admin, body={"username": name})


def check_prefect() -> None:
    api = os.environ["PREFECT_API_URL"].rstrip("/")
    auth = os.environ["PREFECT_API_AUTH_STRING"]
    ui_origin = "{0.scheme}://{0.netloc}".format(urlsplit(api))
    check("prefect /api/health answers without a login", status(f"{api}/health") == 200)
    check("prefect API read without a login: 401", (code := status(f"{api}/admin/version")) == 401, f"got {code}")
    check(
        "prefect API read with a wrong auth string: 401",
        (code := status(f"{api}/admin/version", login="bru:x")) == 401,
        f"got {code}",
    )
    code = status(f"{api}/deployments/filter", method="POST")
    check("prefect API write without a login: 401 or 403", code in (401, 403), f"got {code}")
    # With the right auth string but no CSRF token, as a forged request from a page would be.
    code = status(f"{api}/deployments/filter", method="POST", login=auth)
    check("prefect API write without a CSRF token: 403", code == 403, f"got {code}")
    check(
        "prefect API write from the UI's own origin is allowed (CORS)",
        preflight_allows(f"{api}/flows/filter", ui_origin),
    )
    check(
        "prefect API write from another origin is not (CORS)",
        not preflight_allows(f"{api}/flows/filter", "http://attacker.example"),
    )


def check_postgres(stack: Path) -> None:
    optuna = urlsplit(os.environ["BRU_OPTUNA_STORAGE"].replace("+psycopg", ""))
    host, port = optuna.hostname, optuna.port
    try:
        with psycopg.connect(host=host, port=port, user=optuna.username, password=optuna.password, dbname="optuna"):
            pass
        check("the optuna role reaches its own database", True)
    except psycopg.Error as exc:
        check("the optuna role reaches its own database", False, str(exc).strip())
    for who, password, database in (
        ("postgres", None, "postgres"),
        (optuna.username, optuna.password, "mlflow"),
        (optuna.username, optuna.password, "prefect"),
    ):
        try:
            with psycopg.connect(host=host, port=port, user=who, password=password, dbname=database, connect_timeout=5):
                refused = False
        except psycopg.OperationalError:
            refused = True
        check(f"role {who} cannot connect to database {database} over TCP", refused)
    for name in ("secrets.env", "env.sh"):
        mode = stat.S_IMODE((stack / name).stat().st_mode)
        check(f"{name} is private to its owner (0600)", mode == 0o600, f"mode {mode:o}")


def check_stranger(stack: Path) -> None:
    if os.geteuid() != 0:
        message = "second-account checks skipped: creating an OS account needs root"
        print(f"skip {message}")
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            failures.append(message)
        return
    optuna = urlsplit(os.environ["BRU_OPTUNA_STORAGE"].replace("+psycopg", ""))
    sbin = "/usr/sbin:/sbin:/usr/bin:/bin"
    runuser = shutil.which("runuser", path=sbin) or "runuser"
    subprocess.run(
        [
            shutil.which("useradd", path=sbin) or "useradd",
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            STRANGER,
        ],
        check=False,
        capture_output=True,
    )
    try:

        def as_stranger(*command: str) -> subprocess.CompletedProcess:
            env = {"PATH": "/usr/bin:/bin", "PGCONNECT_TIMEOUT": "5"}
            return subprocess.run(
                [runuser, "-u", STRANGER, "--", *command],
                capture_output=True,
                text=True,
                env=env,
                timeout=30,
                check=False,
            )

        socket = stack / "postgres" / "socket"
        for user in ("postgres", optuna.username):
            result = as_stranger(
                "psql",
                "-X",
                "-w",
                "-h",
                str(socket),
                "-p",
                str(optuna.port),
                "-U",
                user,
                "-d",
                "postgres",
                "-c",
                "select 1",
            )
            check(f"a second local account cannot use the socket as {user}", result.returncode != 0, result.stdout)
            result = as_stranger(
                "psql",
                "-X",
                "-w",
                "-h",
                optuna.hostname,
                "-p",
                str(optuna.port),
                "-U",
                user,
                "-d",
                "optuna",
                "-c",
                "select 1",
            )
            check(f"a second local account cannot connect over TCP as {user}", result.returncode != 0, result.stdout)
        for name in ("secrets.env", "env.sh"):
            result = as_stranger("cat", str(stack / name))
            check(f"a second local account cannot read {name}", result.returncode != 0 and not result.stdout)
    finally:
        subprocess.run([shutil.which("userdel", path=sbin) or "userdel", STRANGER], check=False, capture_output=True)


def main() -> int:
    stack = Path(os.environ["BRU_STACK_DIR"])
    check_mlflow()
    check_lab_member()
    check_prefect()
    check_postgres(stack)
    check_stranger(stack)
    if failures:
        print(f"error: {len(failures)} access check(s) failed: {'; '.join(failures)}", file=sys.stderr)
        return 1
    print("access: every check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
