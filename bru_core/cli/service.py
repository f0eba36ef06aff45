"""Service mode: ``bru deploy`` sets up a Prefect server for bru (work pool, gpu limit,
crash automation, deployments) and ``bru worker`` starts a worker that runs its flows."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from flows.names import POOL
from flows.service import CRASH_AFTER_SECONDS, HEARTBEAT_SECONDS  # constants only: no Prefect import

from ._common import err, out
from ._prefect import export_settings, prepare_prefect

PoolTypeOpt = Annotated[str, typer.Option("--type", help="process, docker or kubernetes (job templates in infra/).")]
GpusOpt = Annotated[
    int | None,
    typer.Option(
        help="GPUs in the whole pool: the gpu concurrency limit gets this many slots x --slots-per-gpu "
        "(default: this machine's, at least 1)."
    ),
]
WorkdirOpt = Annotated[
    str | None,
    typer.Option(help="Where workers find this code (default: this checkout; /opt/bru-lab in containers)."),
]
ImageOpt = Annotated[str | None, typer.Option(help="Worker image for docker/kubernetes pools (a job variable).")]
CrashAfterOpt = Annotated[
    float,
    typer.Option(
        help=f"Seconds without a heartbeat (one every {HEARTBEAT_SECONDS} s) before a flow run is marked Crashed."
    ),
]
PoolSlotsPerGpuOpt = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Trials that may share one GPU (small networks): the gpu limit gets GPUs x this many slots, and every "
        "flow run gets it as BRU_POOL_SLOTS_PER_GPU (default 1; docs/orchestration.md).",
    ),
]
WorkerSlotsPerGpuOpt = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Trials of one flow run that may share one of this machine's GPUs (exported as BRU_SLOTS_PER_GPU; "
        "default: BRU_SLOTS_PER_GPU, else bru deploy's --slots-per-gpu, else 1).",
    ),
]


def deploy(
    pool: Annotated[str, typer.Option(help="Work pool name.")] = POOL,
    pool_type: PoolTypeOpt = "process",
    gpus: GpusOpt = None,
    workdir: WorkdirOpt = None,
    image: ImageOpt = None,
    crash_after: CrashAfterOpt = CRASH_AFTER_SECONDS,
    slots_per_gpu: PoolSlotsPerGpuOpt = None,
) -> None:
    """Create the work pool, the gpu concurrency limit, the crash automation and the deployments (PREFECT_API_URL)."""
    from bru_core.settings import get_settings

    prepare_prefect(get_settings())
    from flows.service import deploy as run_deploy

    result = run_deploy(
        pool, pool_type, gpus, workdir=workdir, image=image, crash_after=crash_after, slots_per_gpu=slots_per_gpu
    )
    per_gpu = f" ({result['slots_per_gpu']} per GPU)" if result["slots_per_gpu"] else ""
    out.print(f"Prefect API {result['api']}: work pool {result['pool']} ({result['type']}), gpu limit {result['gpu_slots']} slot(s){per_gpu}, "
              f"deployments bru-campaign and bru-aggregate (code at {result['workdir']} on the workers); "
              f"a flow run without a heartbeat for {result['crash_after']:g} s is marked Crashed", highlight=False)  # fmt: skip
    out.print(f"next: bru worker --pool {result['pool']}   then: bru campaign submit SPEC --wait", highlight=False)


def worker(
    pool: Annotated[str, typer.Option(help="Work pool to poll.")] = POOL,
    slots_per_gpu: WorkerSlotsPerGpuOpt = None,
) -> None:
    """Start a Prefect worker on the pool, with this environment's BRU_* settings (Ctrl-C twice stops it)."""
    from bru_core.settings import get_settings
    from flows.gpu import SLOTS_PER_GPU_ENV, check_slots_per_gpu

    if slots_per_gpu is not None:  # the flow runs this worker starts inherit its environment
        os.environ[SLOTS_PER_GPU_ENV] = str(slots_per_gpu)
    elif os.environ.get(SLOTS_PER_GPU_ENV, "").strip():
        check_slots_per_gpu(os.environ[SLOTS_PER_GPU_ENV])  # a bad value: one line now, not in every flow run
    settings = get_settings()
    prepare_prefect(settings)
    export_settings(settings)
    from flows.service import check_api

    check_api()
    prefect = Path(sys.executable).parent / "prefect"
    command = [str(prefect), "worker", "start", "--pool", pool]
    shared = os.environ.get(SLOTS_PER_GPU_ENV, "").strip()
    per_gpu = f" ({shared} trial(s) per GPU)" if shared else ""
    err.print(f"worker on pool {pool}{per_gpu}: {' '.join(command)}", highlight=False)
    os.execve(str(prefect), command, dict(os.environ))
