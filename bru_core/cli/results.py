"""The evidence of a campaign: ``bru aggregate`` (statistics into the results database),
``bru results`` (query it) and ``bru report`` (HTML and plots); ``bru ui`` is in ui.py."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from bru_core.errors import ConfigError

from ._common import HomeOpt, ResultsOpt, TrackingOpt, out, print_json, progress_bar

FORMATS = ("table", "json", "csv", "markdown")


def _check_results_database(settings) -> None:
    """An embedded results database that does not exist yet: say which command makes it."""
    from bru_core.settings import shown_url, sqlite_file

    database = sqlite_file(settings.results)
    if database is not None and not database.exists():
        raise ConfigError(
            f"--results-url: no results database at {shown_url(settings.results)} yet; run bru aggregate first"
        )


# --------------------------------------------------------------------------- aggregate


def aggregate(
    campaign: Annotated[str, typer.Option(help="Campaign name (the MLflow experiment).")],
    home: HomeOpt = None,
    tracking_uri: TrackingOpt = None,
    results_url: ResultsOpt = None,
    report: Annotated[bool, typer.Option("--report/--no-report", help="Write the report and log it to MLflow.")] = True,
) -> None:
    """Read a campaign's repeat runs from MLflow, compute the statistics, write the results database."""
    from bru_core.aggregate import aggregate as run_aggregate
    from bru_core.settings import get_settings, shown_url

    settings = get_settings(home=home, tracking_uri=tracking_uri, results_url=results_url)
    with progress_bar() as progress:
        task = progress.add_task("reading repeat runs", total=None, status="")
        result = run_aggregate(
            campaign,
            settings,
            report=report,
            on_run=lambda done, total: progress.update(task, completed=done, total=total),
        )
    out.print(
        f"campaign {campaign}: {result.evaluations} evaluations, {result.comparisons} comparisons "
        f"({result.tests} tests) written to {shown_url(settings.results)}",
        highlight=False,
    )
    if result.failed:
        out.print(f"{result.failed} repeat run(s) diverged: counted as failures (the worst outcome)", highlight=False)
    if result.missing:
        out.print(f"no repeat runs yet for: {', '.join(result.missing)}", highlight=False)
    if result.report_dir:
        out.print(
            f"report: {Path(result.report_dir) / 'report.html'} (also in MLflow, campaign run, report/)",
            highlight=False,
        )
    out.print(f"see: bru results --campaign {campaign} --what comparisons", highlight=False)


# --------------------------------------------------------------------------- results


def results(
    campaign: Annotated[str | None, typer.Option(help="Only this campaign.")] = None,
    task: Annotated[str | None, typer.Option(help="Only this task (dataset/model).")] = None,
    metric: Annotated[str | None, typer.Option(help="Only this metric (test_error, test_loss, ...).")] = None,
    what: Annotated[
        str, typer.Option(help="summary, evaluations, comparisons, rankings, studies, curves, tasks or campaigns.")
    ] = "summary",
    output_format: Annotated[
        str,
        typer.Option("--format", help="table, json (one list on the last line), csv, or markdown (for docs)."),
    ] = "table",
    home: HomeOpt = None,
    results_url: ResultsOpt = None,
) -> None:
    """Query the results database."""
    from bru_core.results import BRIEF, WHAT, ResultsStore
    from bru_core.settings import get_settings

    if what not in WHAT:
        raise ConfigError(f"--what: {what!r} is not one of {', '.join(WHAT)}")
    if output_format not in FORMATS:
        raise ConfigError(f"--format: {output_format!r} is not one of {', '.join(FORMATS)}")
    settings = get_settings(home=home, results_url=results_url)
    _check_results_database(settings)
    with ResultsStore(settings.results) as store:
        rows = store.records(what, campaign, task, metric)
    if output_format == "json":
        print_json(rows)
    elif output_format == "csv":
        _print_csv(rows)
    elif not rows:
        out.print("no rows", highlight=False)
    else:
        columns = (["campaign"] if campaign is None and what != "campaigns" else []) + list(BRIEF[what])
        if output_format == "markdown":
            _print_markdown(rows, columns)
        else:
            _print_table(rows, columns, f"{what}" + (f" of {campaign}" if campaign else ""))


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else ("-" if value is None else str(value))


def _print_csv(rows: list[dict[str, Any]]) -> None:
    writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]) if rows else [], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in row.items()})


def _print_markdown(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """A GitHub table of the same columns as the terminal's, to paste into docs."""
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join(" ---: " if isinstance(rows[0][c], (int, float)) else " --- " for c in columns) + "|")
    for row in rows:
        print("| " + " | ".join(_cell(row[c]).replace("|", "\\|") for c in columns) + " |")


def _print_table(rows: list[dict[str, Any]], columns: list[str], title: str) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right" if isinstance(rows[0][column], (int, float)) else "left")
    for row in rows:
        table.add_row(*(_cell(row[c]) for c in columns))
    out.print(table)


# --------------------------------------------------------------------------- report, ui


def report(
    campaign: Annotated[str, typer.Option(help="An aggregated campaign.")],
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Folder for report.html and the PNGs (default <home>/reports/<campaign>)."),
    ] = None,
    home: HomeOpt = None,
    results_url: ResultsOpt = None,
) -> None:
    """Write the campaign report (self-contained HTML plus PNGs) from the results database."""
    from bru_core.report import report_path_error, write_report
    from bru_core.settings import get_settings

    settings = get_settings(home=home, results_url=results_url)
    folder = out_dir or settings.home_path / "reports" / campaign
    report_path_error(folder)
    if not folder.parent.exists():
        raise ConfigError(f"--out: folder {folder.parent} does not exist")
    _check_results_database(settings)
    path = write_report(campaign, folder, settings)
    out.print(f"wrote {path}", highlight=False)
