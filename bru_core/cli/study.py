"""``bru search``: one Optuna study of a campaign (resumed if it exists) and its repeats,
in this process and without Prefect."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from ._common import (
    DataDirOpt,
    HomeOpt,
    JsonOpt,
    SpecArg,
    StorageOpt,
    TrackingOpt,
    num,
    out,
    pct,
    print_json,
    progress_bar,
)

TaskOpt = Annotated[str, typer.Option(help="Task as dataset/model, e.g. digits/mlp4.")]
ActivationOpt = Annotated[str, typer.Option("--activation", "-a", help="One of the spec's activations.")]
RepeatsOpt = Annotated[bool, typer.Option("--repeats/--no-repeats", help="Train the best config on every repeat seed.")]


def search(
    spec: SpecArg,
    task: TaskOpt,
    activation: ActivationOpt,
    repeats: RepeatsOpt = True,
    home: HomeOpt = None,
    tracking_uri: TrackingOpt = None,
    optuna_storage: StorageOpt = None,
    data_dir: DataDirOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Run one study (resuming it if it exists) and its repeats, without Prefect."""
    import optuna

    from bru_core.settings import get_settings, shown_url
    from bru_core.spec import load_spec

    campaign = load_spec(spec)
    task_name = campaign.task(task).name
    label = campaign.activation(activation)
    settings = get_settings(home=home, tracking_uri=tracking_uri, optuna_storage=optuna_storage, data_dir=data_dir)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    result, repeat_rows = _run(campaign, task_name, label, settings, repeats)
    if json_output:
        from dataclasses import asdict

        print_json(
            {
                "study": {k: v for k, v in asdict(result).items() if k != "trials"},
                "repeats": [asdict(r) for r in repeat_rows],
            }
        )
        return
    out.print(
        f"study {result.study_name}: {result.done}/{result.budget} trials with an outcome "
        f"({result.complete} complete, {result.pruned} pruned, {result.failed} failed; {result.lost} lost and retried); "
        f"best {result.best_value} (trial {result.best_trial}) with {result.best_params}",
        highlight=False,
    )
    if repeat_rows:
        _print_repeats(repeat_rows, f"repeats of the best configuration: {task_name} {label}")
    out.print(
        f"MLflow: {shown_url(settings.tracking)} (bru ui to browse); Optuna: {shown_url(settings.optuna)}",
        highlight=False,
    )


def _run(campaign, task_name: str, label: str, settings, repeats: bool):
    """The study, then (with ``repeats``) its repeats, with a bar for each."""
    from bru_core.search import run_repeats, run_study
    from bru_core.tracking import Tracker

    with Tracker(settings) as tracker, progress_bar() as progress:
        tracker.check()
        tracker.record_campaign(campaign.name, campaign.model_dump(mode="json"), campaign.protocol())
        # One hold over the study and its repeats: the campaign's run stays RUNNING between them.
        with tracker.working_on(campaign.name):
            bar = progress.add_task(f"{task_name} {label}: trials", total=campaign.search.trials, status="")

            def on_trial(outcome, state, best) -> None:
                best_text = f"best {best:.4g}" if best is not None else "no complete trial yet"
                progress.update(
                    bar, completed=state.done, status=f"trial {outcome.number} {outcome.state}; {best_text}"
                )

            def on_wait(state) -> None:
                progress.update(bar, completed=state.done, status=f"waiting for {state.active} running trial(s)")

            result = run_study(
                campaign, task_name, label, settings=settings, tracker=tracker, on_trial=on_trial, on_wait=on_wait
            )
            progress.update(bar, completed=result.done)
            repeat_rows = []
            if repeats:
                seeds = progress.add_task(f"{task_name} {label}: seeds", total=len(campaign.repeats.seeds), status="")
                repeat_rows = run_repeats(
                    campaign, task_name, label, settings=settings, tracker=tracker,
                    on_seed=lambda r: progress.update(seeds, advance=1, status=f"seed {r.seed} {'kept' if r.reused else 'done'}"),
                )  # fmt: skip
    return result, repeat_rows


def _print_repeats(repeat_rows: list, title: str) -> None:
    table = Table(title=title)
    for column in ("seed", "val error", "test error", "test loss", "train loss", "error quotient", ""):
        table.add_column(column, justify="right")
    for r in repeat_rows:
        f = r.final
        state = ("kept" if r.reused else "new") + ("; diverged" if r.status != "finished" else "")
        table.add_row(
            str(r.seed), pct(f.get("val_error")), pct(f.get("test_error")), num(f.get("test_loss")),
            num(f.get("train_loss")), num(f.get("error_quotient"), 2), state,
        )  # fmt: skip
    out.print(table)
