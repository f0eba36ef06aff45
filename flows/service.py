"""Service mode: deployments on a work pool, submitting and following campaign runs.

Everything here talks to a Prefect API (PREFECT_API_URL). The CLI commands ``bru deploy``,
``bru worker`` and ``bru campaign submit`` are thin wrappers around these functions."""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bru_core.errors import BruError
from flows.names import AGGREGATE_FLOW, CAMPAIGN_FLOW, POOL, SEARCH_FLOW, campaign_run_name

REPO = Path(__file__).resolve().parent.parent
DEPLOYMENTS = {
    CAMPAIGN_FLOW: "flows/campaign.py:campaign",
    AGGREGATE_FLOW: "flows/aggregate.py:aggregate_flow",
}
INFRA = REPO / "infra"
# Flow runs beat every HEARTBEAT_SECONDS (Prefect's shortest period); one of bru's flow
# runs that has not beaten for crash_after seconds (default: ten beats) had its worker or
# process die, and an automation marks it Crashed, so that the UI and `bru campaign
# submit --wait` do not show it Running for ever.
HEARTBEAT_SECONDS = 30
CRASH_AFTER_SECONDS = 300
CRASH_AUTOMATION = "bru: crash flow runs that stop beating"
BRU_FLOWS = (CAMPAIGN_FLOW, SEARCH_FLOW, AGGREGATE_FLOW)


class ServiceError(BruError):
    """The Prefect service is not there, or not set up."""


def ping() -> None:
    """Run an empty flow: the first flow of a process without PREFECT_API_URL starts
    Prefect's temporary server, and a benchmark wants that cost on its own."""
    from prefect import flow

    @flow(name="bru-ping")
    def empty() -> None:
        return None

    empty()


def api_url() -> str:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or ""


def check_api() -> str:
    """The API URL, after checking it answers; one clear line when it does not."""
    from prefect.client.orchestration import get_client

    url = api_url()
    if not url:
        raise ServiceError(
            "no Prefect API configured: set PREFECT_API_URL (e.g. http://127.0.0.1:4200/api), or use bru campaign run"
        )
    from prefect.exceptions import PrefectHTTPStatusError
    from prefect.settings import PREFECT_API_AUTH_STRING

    with get_client(sync_client=True) as client:
        error = client.api_healthcheck()
        if error is not None:
            raise ServiceError(f"Prefect API at {url} cannot be reached: {str(error).splitlines()[0][:200]}")
        # /health answers anyone; one signed-in read says whether this client may go on.
        try:
            client.read_work_pools(limit=1)
        except PrefectHTTPStatusError as exc:
            if exc.response.status_code != 401:
                raise
            if not PREFECT_API_AUTH_STRING.value():
                raise ServiceError(
                    f"Prefect API at {url} requires a login: set PREFECT_API_AUTH_STRING "
                    "(user:password, the server's PREFECT_SERVER_API_AUTH_STRING)"
                ) from None
            raise ServiceError(
                f"Prefect API at {url} refused PREFECT_API_AUTH_STRING: set it to the server's PREFECT_SERVER_API_AUTH_STRING"
            ) from None
    return url


# Docker flow-run containers inherit nothing from the worker: they get the stores from
# these Prefect Secret blocks (encrypted at rest), which bru deploy copies from its own
# environment; the deployments' env names them and the worker resolves the references.
STORE_SECRETS = {
    "bru-tracking-uri": "BRU_TRACKING_URI",
    "bru-optuna-storage": "BRU_OPTUNA_STORAGE",
    "bru-results-url": "BRU_RESULTS_URL",
}
# The MLflow server's login (its basic-auth app), handed on the same way when set here.
LOGIN_SECRETS = {
    "bru-mlflow-username": "MLFLOW_TRACKING_USERNAME",
    "bru-mlflow-password": "MLFLOW_TRACKING_PASSWORD",
}
SECRET_SETTINGS = {**STORE_SECRETS, **LOGIN_SECRETS}


def secret_reference(block: str) -> str:
    """A job variable the worker replaces with the Secret block's value."""
    return "{{ prefect.blocks.secret." + block + " }}"


def _store_secrets(pool_type: str) -> dict[str, str]:
    """The Secret blocks a docker pool needs, from this environment; ServiceError naming
    the settings that are missing (nothing is created then)."""
    if pool_type != "docker":
        return {}
    from bru_core.settings import get_settings

    settings = get_settings()
    missing = settings.missing_shared_stores()
    if missing:
        raise ServiceError(
            f"--type docker: {', '.join(missing)} not set here; bru deploy hands the stores to docker flow runs "
            "as Prefect Secret blocks, so run it where they are set (the compose init service is)"
        )
    given = settings.shared_stores()
    logins = {block: os.environ[name] for block, name in LOGIN_SECRETS.items() if os.environ.get(name)}
    return {**{block: str(given[name]) for block, name in STORE_SECRETS.items()}, **logins}


def _base_job_template(pool_type: str) -> dict[str, Any]:
    if pool_type == "process":
        from prefect.workers.process import ProcessWorker

        return ProcessWorker.get_default_base_job_template()
    path = INFRA / pool_type / "base-job-template.json"
    if not path.exists():
        raise ServiceError(f"--type {pool_type}: needs {path} (the job template with the GPU request)")
    return json.loads(path.read_text())


CONTAINER_WORKDIR = "/opt/bru-lab"  # where infra/docker/Dockerfile puts the code


def _workdir_storage(path: str):
    """Flow code is read from this checkout to make the deployment; workers find it at ``path``."""
    from prefect.runner.storage import LocalStorage

    class WorkdirStorage(LocalStorage):
        def to_pull_step(self) -> dict[str, Any]:
            return {"prefect.deployments.steps.set_working_directory": {"directory": path}}

    return WorkdirStorage(path)


def deploy(
    pool: str = POOL,
    pool_type: str = "process",
    gpus: int | None = None,
    source: Path = REPO,
    workdir: str | None = None,
    image: str | None = None,
    crash_after: float = CRASH_AFTER_SECONDS,
    slots_per_gpu: int | None = None,
) -> dict[str, Any]:
    """Create the work pool (if missing), set the ``gpu`` limit and the crash automation,
    and (re)create the deployments ``bru-campaign`` and ``bru-aggregate``. The flows are
    read from ``source``; workers run them from ``workdir`` (default: the same folder for
    a process pool, the image's /opt/bru-lab for docker and kubernetes pools).

    The ``gpu`` limit: with ``gpus`` or ``slots_per_gpu`` given, it is set to gpus (default:
    this machine's GPUs, at least 1) x slots_per_gpu (default 1); with neither, it is
    created if missing (this machine's GPUs, at least 1) and otherwise kept.
    ``slots_per_gpu`` given also goes to every flow run as the job variable
    BRU_POOL_SLOTS_PER_GPU: up to that many trials share one GPU (flows/gpu.py)."""
    _check_deploy_options(pool_type, gpus, slots_per_gpu, crash_after)
    secrets = _store_secrets(pool_type)  # before anything is created: a missing store stops it all
    url = check_api()
    _save_secrets(secrets)
    _ensure_pool(pool, pool_type)
    slots = _set_gpu_limit(gpus, slots_per_gpu)
    ensure_crash_automation(crash_after)
    workdir = workdir or (str(source) if pool_type == "process" else CONTAINER_WORKDIR)
    job_variables = _job_variables(pool_type, secrets, slots_per_gpu, image)
    return {
        "api": url,
        "pool": pool,
        "type": pool_type,
        "gpu_slots": slots,
        "slots_per_gpu": slots_per_gpu,
        "crash_after": crash_after,
        "workdir": workdir,
        "deployments": _deploy_flows(source, workdir, pool, job_variables),
    }


def _check_deploy_options(pool_type: str, gpus: int | None, slots_per_gpu: int | None, crash_after: float) -> None:
    if pool_type not in ("process", "docker", "kubernetes"):
        raise ServiceError(f"--type: {pool_type!r} is not one of process, docker, kubernetes")
    if gpus is not None and gpus < 1:
        raise ServiceError(f"--gpus: must be at least 1, got {gpus}")
    if slots_per_gpu is not None and slots_per_gpu < 1:
        raise ServiceError(f"--slots-per-gpu: must be at least 1, got {slots_per_gpu}")
    if crash_after < 3 * HEARTBEAT_SECONDS:
        raise ServiceError(
            f"--crash-after: must be at least {3 * HEARTBEAT_SECONDS} s (three heartbeats of {HEARTBEAT_SECONDS} s), "
            f"got {crash_after:g}"
        )


def _save_secrets(secrets: dict[str, str]) -> None:
    """Create or overwrite the Prefect Secret blocks (block name -> value)."""
    if not secrets:
        return
    from prefect.blocks.system import Secret

    for name, value in secrets.items():
        Secret(value=value).save(name, overwrite=True)


def _ensure_pool(pool: str, pool_type: str) -> None:
    """Create the work pool if missing; ServiceError if one of another type has the name."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            existing = client.read_work_pool(pool)
            if existing.type != pool_type:
                raise ServiceError(
                    f"--pool: work pool {pool!r} exists with type {existing.type}, not {pool_type}; choose another name"
                )
        except ObjectNotFound:
            client.create_work_pool(
                WorkPoolCreate(name=pool, type=pool_type, base_job_template=_base_job_template(pool_type))
            )


def _set_gpu_limit(gpus: int | None, slots_per_gpu: int | None) -> int:
    """The ``gpu`` limit as deploy's docstring says; returns it."""
    from flows.gpu import ensure_gpu_limit, local_gpu_count

    if gpus is None and slots_per_gpu is None:
        return ensure_gpu_limit(missing=local_gpu_count() or 1)
    return ensure_gpu_limit((gpus or local_gpu_count() or 1) * (slots_per_gpu or 1))


def _job_variables(
    pool_type: str, secrets: dict[str, str], slots_per_gpu: int | None, image: str | None
) -> dict[str, Any]:
    """What every flow run of the deployments gets: its environment, and the image."""
    from flows.gpu import POOL_SLOTS_PER_GPU_ENV

    env = {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS)}
    if pool_type != "process":  # a container's own disk is thrown away: shared stores or nothing
        env["BRU_REQUIRE_SHARED_STORES"] = "true"
    for block in secrets:
        env[SECRET_SETTINGS[block]] = secret_reference(block)
    if slots_per_gpu is not None:  # what the flow runs' device pools use, unless their machine says otherwise
        env[POOL_SLOTS_PER_GPU_ENV] = str(slots_per_gpu)
    job_variables: dict[str, Any] = {"env": env}
    if image:
        job_variables["image"] = image
    return job_variables


def _deploy_flows(source: Path, workdir: str, pool: str, job_variables: dict[str, Any]) -> list[str]:
    """(Re)create the DEPLOYMENTS on the pool, flows read from ``source`` and run from
    ``workdir``; returns their ids."""
    from prefect import deploy as prefect_deploy
    from prefect import flow as prefect_flow

    deployments = []
    for name, entrypoint in DEPLOYMENTS.items():
        loaded = prefect_flow.from_source(source=str(source), entrypoint=entrypoint)
        deployment = loaded.to_deployment(name=name, work_pool_name=pool, job_variables=job_variables)
        deployment.storage = _workdir_storage(workdir)
        deployments.append(deployment)
    with contextlib.redirect_stdout(io.StringIO()):  # Prefect prints its own table of deployments
        ids = prefect_deploy(*deployments, work_pool_name=pool, build=False, push=False, print_next_steps_message=False)
    return [str(i) for i in ids]


def ensure_crash_automation(after_seconds: float = CRASH_AFTER_SECONDS) -> None:
    """Create, or bring up to date, the automation that marks one of bru's flow runs
    Crashed when its heartbeats stop (Prefect's recipe for "zombie" flow runs, limited to
    bru's flows, whose processes beat every HEARTBEAT_SECONDS)."""
    from datetime import timedelta

    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    wanted = Automation(
        name=CRASH_AUTOMATION,
        description=f"A flow run of {', '.join(BRU_FLOWS)} without a heartbeat for {after_seconds:g} s is Crashed.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            },
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            match_related=ResourceSpecification(
                {"prefect.resource.role": "flow", "prefect.resource.name": list(BRU_FLOWS)}
            ),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=after_seconds),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"no heartbeat for {after_seconds:g} s: its worker or its process died (bru)",
            )
        ],
    )
    try:
        existing = Automation.read(name=CRASH_AUTOMATION)
    except ValueError:  # not there yet
        wanted.create()
        return
    wanted.id = existing.id
    wanted.update()


def deployment_name(name: str) -> str:
    """Flow name / deployment name: the flows are named as their deployments."""
    return f"{name}/{name}"


def unfinished_campaign_runs(client: Any, campaign: str) -> list[Any]:
    """The campaign's flow runs on this server that have not ended (scheduled, pending,
    running, paused). A run whose worker died ends Crashed: the automation that
    `bru deploy` installs sees to it. A run being cancelled does not count: with its
    worker dead it may stay Cancelling for good."""
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterName,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    unfinished = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.PAUSED]
    return client.read_flow_runs(
        flow_filter=FlowFilter(name=FlowFilterName(any_=[CAMPAIGN_FLOW])),
        flow_run_filter=FlowRunFilter(
            name=FlowRunFilterName(any_=[campaign_run_name(campaign)]),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=unfinished)),
        ),
        limit=5,
    )


def submit(spec: dict[str, Any]) -> str:
    """Start a campaign flow run on the deployment; returns the flow run id. Refused
    while the same campaign has a flow run that has not ended (the campaign lock inside
    the flow would refuse it anyway, but only once a worker has started it)."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    check_api()
    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(deployment_name(CAMPAIGN_FLOW))
        except ObjectNotFound:
            raise ServiceError(f"no {CAMPAIGN_FLOW} deployment on this Prefect server: run bru deploy first") from None
        unfinished = unfinished_campaign_runs(client, spec["name"])
        if unfinished:
            busy = unfinished[0]
            state = busy.state.name if busy.state is not None else "no state"
            raise ServiceError(
                f"campaign {spec['name']!r} already has flow run {busy.id} ({state}); "
                f"wait for it to end, or cancel it with: prefect flow-run cancel {busy.id}"
            )
    run = run_deployment(
        deployment_name(CAMPAIGN_FLOW),
        parameters={"spec": spec},
        timeout=0,
        flow_run_name=campaign_run_name(spec["name"]),
    )
    return str(run.id)


def follow(
    flow_run_id: str,
    pool: str = POOL,
    poll: float = 2.0,
    warn_after: float = 30.0,
    on_tick: Callable[[str, str | None], None] | None = None,
) -> str:
    """Wait for a flow run to end; returns its final state name. ``on_tick(state, note)``
    is called every poll; ``note`` says when no worker has picked the run up."""
    from uuid import UUID

    from prefect.client.orchestration import get_client

    started = time.monotonic()
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(UUID(flow_run_id))
            state = run.state
            name = state.name if state is not None else "Unknown"
            if state is not None and state.is_final():
                return name
            note = None
            if (
                state is not None
                and (state.is_scheduled() or state.is_pending())
                and time.monotonic() - started > warn_after
            ):
                workers = client.read_workers_for_work_pool(pool)
                alive = [w for w in workers if w.status is not None and str(w.status.value).upper() == "ONLINE"]
                note = (
                    f"no worker is polling work pool {pool!r}: start one with bru worker --pool {pool}"
                    if not alive
                    else f"waiting for a free worker on {pool!r} ({len(alive)} online)"
                )
            if on_tick is not None:
                on_tick(name, note)
            time.sleep(poll)
