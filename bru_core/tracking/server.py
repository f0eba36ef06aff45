"""An MLflow tracking server: checked before a campaign writes to it (``check_server``),
or started and stopped as a child process (``bru ui``, the benchmarks, the tests)."""

from __future__ import annotations

import base64
import os
import subprocess
import time
from pathlib import Path

from bru_core.errors import BruError
from bru_core.settings import shown_url
from bru_core.tracking.store import TrackingError


def check_server(uri: str, timeout: float = 5.0) -> None:
    """For an http(s) tracking URI, one GET of the server's /health within ``timeout``:
    MLflow's own client retries a refused connection with back-off for minutes, where a
    user starting a campaign wants one line at once. Then one signed-in read, so that a
    server with MLflow's basic-auth app that refuses this login says so before any trial
    runs (MLflow's client takes MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD from
    the environment). Other URIs pass."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    base = uri.rstrip("/")
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=timeout) as response:
            response.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingError(
            f"MLflow tracking at {shown_url(uri)} cannot be reached ({reason}); start the server or set BRU_TRACKING_URI"
        ) from None
    request = urllib.request.Request(f"{base}/api/2.0/mlflow/experiments/search?max_results=1")
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user:
        token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 401 and not user:
            raise TrackingError(
                f"MLflow tracking at {shown_url(uri)} requires a login; set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
            ) from None
        if exc.code == 401:
            raise TrackingError(
                f"MLflow tracking at {shown_url(uri)} refused the login of MLFLOW_TRACKING_USERNAME={user}; check MLFLOW_TRACKING_PASSWORD"
            ) from None
        if exc.code == 403:
            raise TrackingError(
                f"MLflow tracking at {shown_url(uri)} denies user {user} access; ask its admin for permission"
            ) from None
        # Anything else (a proxy that forbids the search, an old server) is left to the
        # calls that follow, which name their own error.
    except (urllib.error.URLError, OSError, ValueError):
        pass


def start_server(
    backend_uri: str, artifact_root: str, host: str = "127.0.0.1", port: int = 5000, log_file: Path | None = None
):
    """``mlflow server`` as a child process (one worker, no job runner: 2-core friendly).
    Returns the Popen; the caller stops it (``stop_server``)."""
    import shutil
    import sys

    mlflow_bin = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or shutil.which("mlflow")
    if mlflow_bin is None:
        raise BruError("mlflow: the mlflow command is not installed in this environment")
    command = [
        mlflow_bin, "server", "--backend-store-uri", backend_uri, "--default-artifact-root", artifact_root,
        "--host", host, "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    output = open(log_file, "ab") if log_file is not None else None  # noqa: SIM115 - the child owns it
    return subprocess.Popen(
        command, env=env, start_new_session=True, stdout=output, stderr=subprocess.STDOUT if output else None
    )


def wait_healthy(url: str, process: subprocess.Popen | None = None, timeout: float = 90.0) -> None:
    """Poll ``url``/health until it answers OK (MLflow takes 5-20 s to start)."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise TrackingError(f"mlflow server exited with code {process.returncode} before it was healthy")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    raise TrackingError(f"mlflow server at {shown_url(url)} not healthy after {timeout:.0f} s")


def stop_server(process: subprocess.Popen, timeout: float = 10.0) -> None:
    import signal

    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
