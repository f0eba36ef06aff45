"""``bru bench`` of whole campaigns: what one would cost (estimate), what the orchestration
adds (pipeline), how a study scales over workers (scale), and whether the statistics hold
their error rates and power (stats, on simulated campaigns)."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from bru_core.errors import ConfigError

from ._common import DeviceOpt, JsonOpt, SpecArg, StorageOpt, TrackingOpt, comma_list, out, print_json, progress_bar
from ._prefect import export_settings, preflight, prepare_prefect
from .bench import bench_table


def estimate(
    spec: SpecArg,
    device: DeviceOpt = "cpu",
    batches: Annotated[int, typer.Option(min=1, help="Batches timed per task and activation.")] = 8,
    precision: Annotated[str | None, typer.Option(help="fp32 or bf16 (default: the spec's).")] = None,
    compile_model: Annotated[bool, typer.Option("--compile", help="torch.compile each model.")] = False,
    json_output: JsonOpt = False,
) -> None:
    """Device-hours of a campaign, from step times measured here (no data needed)."""
    from bru_core.bench import as_dicts, estimate_campaign
    from bru_core.spec import load_spec

    if precision not in (None, "fp32", "bf16"):
        raise ConfigError(f"--precision: must be fp32 or bf16, got {precision!r}")
    campaign = load_spec(spec)
    rows = as_dicts(
        estimate_campaign(campaign, device=device, batches=batches, precision=precision, compile=compile_model)
    )
    grid = sum(r["grid_hours"] for r in rows)
    total = sum(r["campaign_hours"] for r in rows)
    if json_output:
        print_json([*rows, {"task": "total", "grid_hours": grid, "campaign_hours": total}])
        return
    bench_table(rows, f"estimated cost of {campaign.name} on {rows[0]['device']}", False)
    out.print(
        f"total: {grid:.2f} device-hours for the grid (every task x activation once, {campaign.tasks[0].epochs} epochs"
        f" for the first task), {total:.1f} for the campaign as written"
        f" ({campaign.search.trials} trials + {len(campaign.repeats.seeds)} seeds per study, before pruning)"
    )


def pipeline(
    spec: Annotated[Path, typer.Argument(help="Campaign spec to run embedded.")] = Path("configs/smoke.yaml"),
    json_output: JsonOpt = False,
) -> None:
    """Orchestration overhead of an embedded campaign: its wall time against the time its
    trials and repeats spent training, with Prefect's one-off start timed apart. Runs in
    a fresh temporary bru home, so nothing is reused."""
    from bru_core.bench import as_dicts, pipeline_overhead
    from bru_core.settings import get_settings
    from bru_core.spec import load_spec
    from bru_core.tracking import Tracker

    campaign = load_spec(spec)
    with tempfile.TemporaryDirectory(prefix="bru-bench-pipeline-") as home:
        settings = get_settings(home=Path(home))
        preflight(campaign, settings)
        export_settings(settings)
        prepare_prefect(settings)
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        started = time.perf_counter()
        from flows.campaign import campaign as campaign_flow
        from flows.service import ping

        ping()  # the temporary Prefect server starts here, once per process
        prefect_start = time.perf_counter() - started
        started = time.perf_counter()
        campaign_flow(campaign.model_dump(mode="json"))
        wall = time.perf_counter() - started
        with Tracker(settings) as tracker:
            timings = tracker.run_timings(campaign.name)
    row = pipeline_overhead(campaign.name, prefect_start, wall, timings)
    bench_table(as_dicts([row]), f"pipeline overhead, embedded campaign {campaign.name}", json_output)


def scale(
    workers: Annotated[str, typer.Option(help="Comma list of worker counts.")] = "1,2,4",
    trials: Annotated[int, typer.Option(min=1, help="Trials per study (the budget).")] = 40,
    threads: Annotated[int, typer.Option(min=1, help="torch threads per worker (OMP_NUM_THREADS).")] = 1,
    tracking_uri: TrackingOpt = None,
    optuna_storage: StorageOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Trial throughput of 1, 2 and 4 worker processes on one PostgreSQL-backed study of
    short trials (coordination cost, not compute). Needs the stack's PostgreSQL and
    MLflow server: `eval "$(bash infra/local/stack.sh env)"` first."""
    from bru_core.bench import as_dicts, bench_scale
    from bru_core.settings import get_settings

    counts = []
    for part in comma_list(workers):
        if not part.isdigit() or int(part) < 1:
            raise ConfigError(f"--workers: {part!r} is not a worker count (a whole number >= 1)")
        counts.append(int(part))
    settings = get_settings(tracking_uri=tracking_uri, optuna_storage=optuna_storage)
    _check_shared_stores(settings)
    # One thread per worker: the figure is about coordination, and on a small machine
    # several 2-thread workers would measure CPU oversubscription instead.
    env = dict(
        os.environ,
        BRU_OPTUNA_STORAGE=settings.optuna,
        BRU_TRACKING_URI=str(settings.tracking_uri),
        OMP_NUM_THREADS=str(threads),
    )
    with tempfile.TemporaryDirectory(prefix="bru-bench-scale-") as folder:
        rows = as_dicts(bench_scale(counts, trials, env, settings.optuna, Path(folder)))
    bench_table(rows, f"scale-out: one study of {trials} one-epoch trials", json_output)


def _check_shared_stores(settings) -> None:
    """Worker processes share one study and one tracking store: embedded SQLite will not do."""
    from bru_core.settings import shown_url

    if not settings.optuna.startswith("postgresql"):
        raise ConfigError(
            f"BRU_OPTUNA_STORAGE: bru bench scale needs a PostgreSQL storage, not {shown_url(settings.optuna)}; "
            'start the stack and run eval "$(bash infra/local/stack.sh env)"'
        )
    if not str(settings.tracking_uri or "").startswith(("http://", "https://", "postgresql")):
        raise ConfigError(
            "BRU_TRACKING_URI: bru bench scale needs an MLflow server or a PostgreSQL store shared by the workers; "
            'run eval "$(bash infra/local/stack.sh env)"'
        )


def stats(
    spec: Annotated[
        Path | None,
        typer.Argument(
            help="Campaign spec whose family shape and seeds to simulate (default: quick.yaml's shape, 12 seeds)."
        ),
    ] = None,
    seeds: Annotated[int | None, typer.Option(min=2, help="Seeds per activation (default: the spec's, or 12).")] = None,
    effect_dz: Annotated[
        float, typer.Option("--effect-dz", min=0.01, help="The true effect, in sds of the paired differences.")
    ] = 1.0,
    simulations: Annotated[int, typer.Option(min=100, help="Simulated campaigns per scenario.")] = 1000,
    failure_rate: Annotated[
        float, typer.Option(min=0.0, max=0.9, help="Share of runs diverging in the failure scenario.")
    ] = 0.1,
    json_output: JsonOpt = False,
) -> None:
    """The statistics of bru aggregate on simulated campaigns: family-wise false positives with no effect, power with one."""
    from bru_core.power import bench_stats, quick_shape, with_seeds
    from bru_core.spec import load_spec

    campaign = quick_shape(seeds or 12) if spec is None else load_spec(spec)
    if spec is not None and seeds is not None:
        campaign = with_seeds(campaign, seeds)
    with progress_bar() as progress:
        bars: dict[str, Any] = {}

        def on_step(label: str, done: int, total: int) -> None:
            if label not in bars:
                bars[label] = progress.add_task(label, total=total, status="")
            progress.update(bars[label], completed=done)

        result = bench_stats(
            campaign, effect_dz=effect_dz, simulations=simulations, failure_rate=failure_rate, on_step=on_step
        )
    if json_output:
        print_json(result)
        return
    _print_stats(result, simulations, effect_dz)


def _print_stats(result: dict[str, Any], simulations: int, effect_dz: float) -> None:
    table = Table(title=f"{result['campaign']}: {result['family_size']} confirmatory comparisons, {result['seeds']} seeds, "
                        f"{result['test']}, Holm at alpha {result['alpha']:g}; {simulations} simulated campaigns each")  # fmt: skip
    for column in (
        "scenario",
        "effect d_z",
        "family-wise error",
        "power (average)",
        "any",
        "all",
        "wrong direction",
        "+- (MC)",
    ):
        table.add_column(column, justify="left" if column == "scenario" else "right")
    for r in result["scenarios"]:
        cells = [r["fwer"], r["power"], r["power_any"], r["power_all"], r["wrong_direction"]]
        table.add_row(r["scenario"], f"{r['effect_dz']:g}", *("-" if v is None else f"{v:.3f}" for v in cells),
                      f"{r['monte_carlo_se']:.3f}")  # fmt: skip
    out.print(table)
    out.print(f"fwer (worst case) {result['fwer']:.3f}; power (worst case) {result['power']:.3f} for d_z = {effect_dz:g}",
              highlight=False)  # fmt: skip
