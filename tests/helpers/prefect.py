"""A real Prefect server (the prefect_server fixture of tests/servers.py): its REST API,
its `gpu` concurrency limit, and `bru worker` processes polling its work pool."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request

from tests.helpers.paths import BRU, ROOT


def api(server, path: str, body: dict | None = None) -> object:
    """GET ``path`` of the server's API, or POST ``body`` to it; the JSON answer."""
    request = urllib.request.Request(
        f"{server.api_url}{path}",
        data=json.dumps(body or {}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST" if body is not None else "GET",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def gpu_slots(server) -> int:
    """How many slots of the server's ``gpu`` limit are held now."""
    return api(server, "/v2/concurrency_limits/gpu")["active_slots"]


def start_worker(env: dict[str, str], log) -> subprocess.Popen:
    """`bru worker --pool bru-gpu` in its own process group, its stderr in ``log``."""
    with open(log, "w") as stream:
        return subprocess.Popen([BRU, "worker", "--pool", "bru-gpu"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=stream, start_new_session=True)  # fmt: skip


def stop_worker(worker: subprocess.Popen) -> None:
    """As Ctrl-C twice would; killed if it has not gone within 20 s."""
    for _ in range(2):  # a Prefect worker stops on the second SIGINT
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGINT)
            time.sleep(1)
    try:
        worker.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
