"""``bru campaign run`` (a whole campaign in this process, on a temporary Prefect server)
and ``bru campaign submit`` (on the workers of a work pool), then the campaign's outcome."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from bru_core.errors import ConfigError
from flows.names import POOL

from ._common import DataDirOpt, HomeOpt, ResultsOpt, SpecArg, StorageOpt, TrackingOpt, err, out
from ._prefect import export_settings, preflight, prepare_prefect
from ._watch import CampaignWatch


def campaign_run(
    spec: SpecArg,
    home: HomeOpt = None,
    tracking_uri: TrackingOpt = None,
    optuna_storage: StorageOpt = None,
    results_url: ResultsOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Run a whole campaign in this process (Prefect starts a temporary server for it)."""
    import time

    from bru_core.settings import get_settings
    from bru_core.spec import load_spec
    from flows.console import libraries_to_the_log, route_logs_to

    campaign = load_spec(spec)
    settings = get_settings(
        home=home, tracking_uri=tracking_uri, optuna_storage=optuna_storage, results_url=results_url, data_dir=data_dir
    )
    run_log = settings.home_path / "logs" / f"campaign-{campaign.name}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    preflight(campaign, settings)  # bad input: one line, and nothing written
    route_logs_to(run_log)  # the libraries' records there; here, bru's progress and one error line
    export_settings(settings)
    prepare_prefect(settings)
    started = time.monotonic()
    err.print(f"campaign {campaign.name}: {len(campaign.tasks) * len(campaign.labels)} studies of {campaign.search.trials} trials, "
              f"{len(campaign.repeats.seeds)} seeds each; starting Prefect (a temporary local server takes 10-20 s)\n"
              f"log: {run_log}", highlight=False, soft_wrap=True)  # fmt: skip
    import optuna

    from flows.campaign import campaign as campaign_flow

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not a line per trial, even in the file
    libraries_to_the_log()

    with CampaignWatch(campaign, settings):
        try:
            campaign_flow(campaign.model_dump(mode="json"))
        except Exception as exc:
            if run_log.exists():
                exc.add_note(f"Prefect's log of the run: {run_log}")
            raise
    out.print(f"campaign {campaign.name} done in {time.monotonic() - started:.0f} s", highlight=False)
    _print_outcome(campaign.name, settings)


def campaign_submit(
    spec: SpecArg,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Follow the flow run and print the results summary.")
    ] = False,
    pool: Annotated[str, typer.Option(help="The work pool the deployment uses (for the waiting message).")] = POOL,
    patience: Annotated[
        float, typer.Option(help="Seconds in Scheduled/Pending before saying that no worker has it.")
    ] = 30.0,
) -> None:
    """Start the campaign on the bru-campaign deployment (PREFECT_API_URL); workers run it."""
    from bru_core.settings import get_settings
    from bru_core.spec import load_spec

    campaign = load_spec(spec)
    settings = get_settings()
    if not os.environ.get("PREFECT_API_URL"):  # before anything is set up or written
        raise ConfigError(
            "PREFECT_API_URL: not set; point it at the Prefect server (e.g. http://127.0.0.1:4200/api), "
            "or run the campaign here with bru campaign run"
        )
    prepare_prefect(settings)
    from flows.service import follow, submit

    flow_run_id = submit(campaign.model_dump(mode="json"))
    out.print(f"submitted campaign {campaign.name}: flow run {flow_run_id}", highlight=False)
    if not wait:
        return
    last_note = [None]

    def tick(state: str, note: str | None) -> None:
        if note and note != last_note[0]:
            err.print(note, highlight=False)
        last_note[0] = note

    final = follow(flow_run_id, pool=pool, warn_after=patience, on_tick=tick)
    if final != "Completed":
        err.print(
            f"error: flow run {flow_run_id} ended {final}; see the Prefect UI or `prefect flow-run logs {flow_run_id}`",
            highlight=False,
        )
        raise typer.Exit(1)
    out.print(f"campaign {campaign.name}: flow run {final}", highlight=False)
    _print_outcome(campaign.name, settings)


def _comparison_lines(campaign_name: str, settings) -> list[str]:
    from bru_core.report import family_size, headline_rows, sentence
    from bru_core.results import ResultsStore

    with ResultsStore(settings.results) as store:
        tasks = {t["task"]: t["primary_metric"] for t in store.records("tasks", campaign_name)}
        rows = store.records("comparisons", campaign_name)
    return [sentence(r, family_size(rows, r)) for r in headline_rows(rows, tasks)]


def _print_outcome(campaign_name: str, settings) -> None:
    out.print(f"\ncomparisons ({campaign_name}):", highlight=False)
    for line in _comparison_lines(campaign_name, settings):
        out.print(f"  {line}", highlight=False)
    report_path = settings.home_path / "reports" / campaign_name / "report.html"
    if report_path.exists():
        out.print(f"report: {report_path}", highlight=False)
    out.print(f"results: bru results --campaign {campaign_name} --what comparisons", highlight=False)
    out.print(f"MLflow: {_runs_link(campaign_name, settings)}", highlight=False)


def _runs_link(campaign_name: str, settings) -> str:
    """Where the campaign's runs are: the MLflow UI's page (``bru ui`` first, for the
    embedded store)."""
    from mlflow import MlflowClient

    from bru_core.settings import shown_url
    from bru_core.tracking import runs_page

    experiment = MlflowClient(settings.tracking).get_experiment_by_name(campaign_name)
    embedded = settings.artifact_location is not None
    ui = "http://127.0.0.1:5000" if embedded else shown_url(settings.tracking)
    page = runs_page(ui, experiment.experiment_id) if experiment is not None else ui
    return f"bru ui, then {page}" if embedded else page
