"""The ``bru`` command line: a thin layer over bru_core.

Bad input of any kind ends with one line on stderr, ``error: ...``, and exit code 2;
training that diverges ends with one line and exit code 1.

One module per group of commands; this file puts them together in the order ``bru --help``
lists them. Only the commands that orchestrate (campaign, service, bench_campaign, and
_prefect, which readies their environment) import flows/ (tests/test_layers.py)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import typer

from . import bench, bench_campaign, campaign, catalog, check, results, service, study, train, ui
from ._common import exit_code, fail

app = typer.Typer(
    help="bru-lab: does one activation function really beat another? Train, compare, measure.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
for command in (
    train.train,
    train.compare,
    check.check,
    study.search,
    results.aggregate,
    results.results,
    results.report,
    ui.ui,
    service.deploy,
    service.worker,
    catalog.models,
):
    app.command()(command)

activations_app = typer.Typer(help="List the activation registry, or plot activations.", invoke_without_command=True)
activations_app.callback()(catalog.activations)
activations_app.command("plot")(catalog.activations_plot)

bench_app = typer.Typer(help="Benchmarks recorded in docs/benchmarks.md.", no_args_is_help=True)
for name, command in {
    "activations": bench.activations,
    "stats": bench_campaign.stats,
    "accuracy": bench.accuracy,
    "tracking": bench.tracking,
    "epochs": bench.epochs,
    "train": bench.train,
    "estimate": bench_campaign.estimate,
    "pipeline": bench_campaign.pipeline,
    "scale": bench_campaign.scale,
    "models": bench.models,
    "packed": bench.packed,
}.items():
    bench_app.command(name)(command)

campaign_app = typer.Typer(help="Run a whole campaign: in this process, or on a work pool.", no_args_is_help=True)
campaign_app.command("run")(campaign.campaign_run)
campaign_app.command("submit")(campaign.campaign_submit)

app.add_typer(activations_app, name="activations")
app.add_typer(bench_app, name="bench")
app.add_typer(campaign_app, name="campaign")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; every expected failure becomes one line on stderr and an exit code."""
    command = typer.main.get_command(app)
    try:
        result = command.main(args=list(argv) if argv is not None else None, prog_name="bru", standalone_mode=False)
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    except Exception as exc:
        code = exit_code(exc)
        if code is None:
            raise
        return code
    return int(result) if isinstance(result, int) else 0


def run() -> None:  # console script
    sys.exit(main())
