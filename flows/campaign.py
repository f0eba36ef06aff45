"""The campaign flow: searches (one subflow per task x activation, concurrently), then the
repeats, then the aggregation. Each trial and each pack of repeat seeds (trained as one
batched model, bru_core.packed) is one task run, named after what it trains, e.g.
``digits/mlp4 oru:3>2 trial 7`` or ``digits/mlp4 oru:3>2 seeds 1-12``."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait
from prefect.task_runners import ThreadPoolTaskRunner

from bru_core.locks import campaign_lock
from bru_core.search import StudySession, prepare_campaign, register_best_model, run_repeats, working_on_campaign
from bru_core.settings import get_settings
from bru_core.spec import CampaignSpec, parse_spec
from flows.aggregate import aggregate_flow
from flows.gpu import ensure_gpu_limit, gpu_slot, release_idle_slots
from flows.names import CAMPAIGN_FLOW, CAMPAIGN_RUN_NAME, SEARCH_FLOW
from flows.retries import RETRY_DELAYS, infrastructure_failure
from flows.stores import refuse_embedded_stores


def _rename_task_run(name: str) -> None:
    """A trial's number is known only once Optuna asks it: name the task run then."""
    from prefect.client.orchestration import get_client
    from prefect.context import TaskRunContext

    context = TaskRunContext.get()
    if context is None:
        return
    # The task engine reports its run (name included) with every state event, so the
    # local copy is renamed too, or the next event would put the old name back.
    context.task_run.name = name
    try:
        with get_client(sync_client=True) as client:
            client.set_task_run_name(context.task_run.id, name)
    except Exception:
        # Best effort: under load the server may not have recorded the task run yet (its
        # creation arrives as an event; seen as a 404 in CI); the next state event carries
        # the new name anyway. A name must never fail a trial.
        pass


@task(
    name="trial",
    retries=2,
    retry_delay_seconds=RETRY_DELAYS,
    retry_condition_fn=infrastructure_failure,
    cache_policy=NO_CACHE,
)
def train_trial(session: StudySession) -> dict[str, Any] | None:
    """One Optuna trial of a study on a GPU slot (None: beyond the budget, closed at once)."""
    with gpu_slot() as device:
        outcome = session.run_trial(
            on_start=lambda number: _rename_task_run(f"{session.task} {session.activation} trial {number}"),
            device=device,
        )
    return asdict(outcome) if outcome is not None else None


@flow(name=SEARCH_FLOW, flow_run_name="search {task} {activation}")
def search_study(spec: dict[str, Any], task: str, activation: str) -> dict[str, Any]:
    """Run (or resume) one study to exactly its budget, a trial task at a time."""
    refuse_embedded_stores()
    campaign = parse_spec(spec)
    with working_on_campaign(campaign), StudySession(campaign, task, activation) as session:
        while (step := session.next_step()) != "done":
            if step == "wait":
                session.wait()  # the rest of the budget runs elsewhere, or waits out a dead worker's heartbeat
                continue
            train_trial.with_options(task_run_name=f"{session.task} {session.activation} trial")(session)
        result = session.finish()
    return {k: v for k, v in asdict(result).items() if k != "trials"}


@task(
    name="study",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=RETRY_DELAYS,
    retry_condition_fn=infrastructure_failure,
)
def run_search(spec: dict[str, Any], task: str, activation: str) -> dict[str, Any]:
    # A subflow called from a task: the way to run several subflows at once.
    return search_study(spec, task, activation)


@task(
    name="repeat",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=RETRY_DELAYS,
    retry_condition_fn=infrastructure_failure,
)
def train_repeat(spec: dict[str, Any], task: str, activation: str, seeds: list[int]) -> list[dict[str, Any]]:
    """One pack of repeat seeds of a study's best configuration, on one GPU slot (seeds
    with an outcome are kept)."""
    with gpu_slot() as device:
        results = run_repeats(parse_spec(spec), task, activation, seeds=seeds, device=device)
    return [asdict(result) for result in results]


def _packs(campaign: CampaignSpec) -> list[list[int]]:
    """The repeat seeds of a study as the packs its repeat tasks train: every seed in one
    task for ``repeats.pack: auto`` (the task sizes its packs to its device), else groups
    of ``pack``."""
    seeds, size = campaign.repeats.seeds, campaign.repeats.pack
    size = len(seeds) if size == "auto" else size
    return [seeds[i : i + size] for i in range(0, len(seeds), size)]


def _seeds_label(seeds: list[int]) -> str:
    """``seed 3``, ``seeds 1-12`` or ``seeds 1,5,9``: what a repeat task's run name says it trains."""
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    if seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"seeds {seeds[0]}-{seeds[-1]}"
    return "seeds " + ",".join(map(str, seeds))


def _studies(campaign: CampaignSpec) -> list[tuple[str, str]]:
    return [(t.name, a) for t in campaign.tasks for a in campaign.labels]


@flow(name=CAMPAIGN_FLOW, flow_run_name=CAMPAIGN_RUN_NAME, task_runner=ThreadPoolTaskRunner(max_workers=16))
def campaign(spec: dict[str, Any], repeats: bool = True, aggregate: bool = True) -> dict[str, Any]:
    """A whole campaign: the spec as data (a checked campaign spec, e.g. parsed YAML)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # bru reports trials itself
    checked = parse_spec(spec, "spec parameter")
    settings = get_settings()
    refuse_embedded_stores(settings)
    # One running campaign per name: a second start is refused (bru_core.locks).
    with campaign_lock(settings.optuna, checked.name, settings.campaign_lease_seconds):
        return _campaign(checked, repeats, aggregate)


def _campaign(checked: CampaignSpec, repeats: bool, aggregate: bool) -> dict[str, Any]:
    ensure_gpu_limit()
    prepare_campaign(checked)
    # The campaign's MLflow run is RUNNING from here to the end of the aggregation, then
    # closed FINISHED (FAILED, KILLED) as this flow ends, unless another process holds it.
    with working_on_campaign(checked):
        return _stages(checked, repeats, aggregate)


def _stages(checked: CampaignSpec, repeats: bool, aggregate: bool) -> dict[str, Any]:
    data = checked.model_dump(mode="json")
    studies = _studies(checked)
    try:
        searches = [run_search.with_options(task_run_name=f"study {t} {a}").submit(data, t, a) for t, a in studies]
        wait(searches)
        results = {"studies": [f.result() for f in searches]}  # re-raises a failed search
        if repeats:
            packs = [
                train_repeat.with_options(task_run_name=f"{t} {a} {_seeds_label(p)}").submit(data, t, a, p)
                for t, a in studies
                for p in _packs(checked)
            ]
            wait(packs)
            results["repeats"] = [r for f in packs for r in f.result()]
    finally:
        # The GPUs are free for other campaigns while this one aggregates; and after a
        # failed study the slots go back while the Prefect API is still there.
        release_idle_slots()
    if repeats:
        for t, a in studies:
            register_best_model(checked, t, a)
        if aggregate:
            results["aggregate"] = aggregate_flow(checked.name)
    return results
