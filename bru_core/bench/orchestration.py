"""The cost of what surrounds training: an embedded campaign's orchestration (bru bench
pipeline) and trial throughput as worker processes are added (bru bench scale)."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass
class PipelineOverhead:
    campaign: str
    prefect_start_s: float  # the temporary Prefect server's start, once per process
    wall_s: float  # the campaign flow, from call to return (search, repeats, aggregation, report)
    training_s: float  # inside train(), summed over the trials and repeats
    runs: int
    wall_over_training: float
    trial_fixed_s: float  # per trial: first trial start to last trial end, less training, over trials
    repeat_fixed_s: float  # the same for the repeats (each also logs and uploads its model)
    campaign_fixed_s: float  # the rest of the wall time: set-up, aggregation, report, registry


def pipeline_overhead(
    campaign: str, prefect_start: float, wall: float, timings: list[tuple[str, float, float, float]]
) -> PipelineOverhead:
    """Split an embedded campaign's wall time into training and the costs around it, from
    the runs' own start and end times (``Tracker.run_timings``)."""
    if not timings:
        raise ValueError(f"campaign {campaign!r} recorded no training time; is the tracking store the one it used?")
    training = sum(t[3] for t in timings)
    spans = {}
    for role in ("trial", "repeat"):
        mine = [t for t in timings if t[0] == role]
        if mine:
            span = max(t[2] for t in mine) - min(t[1] for t in mine)
            spans[role] = (span, (span - sum(t[3] for t in mine)) / len(mine))
    phases = sum(span for span, _ in spans.values())
    return PipelineOverhead(
        campaign, prefect_start, wall, training, len(timings), wall / training,
        spans.get("trial", (0.0, 0.0))[1], spans.get("repeat", (0.0, 0.0))[1], wall - phases,
    )  # fmt: skip


# --------------------------------------------------------------------------- scale-out


@dataclass
class ScaleRow:
    workers: int
    trials: int  # finished trials (the budget)
    span_s: float  # first trial start to last trial end, from the study's own timestamps
    trials_per_s: float
    speedup: float  # trials_per_s over the one-worker figure
    mean_trial_s: float  # one trial, start to end, as a worker saw it


SCALE_SPEC = """name: {name}
description: bru bench scale - short trials, to measure coordination, not compute
tasks: [{{dataset: digits, model: mlp1, epochs: 1}}]
activations: [relu]
search: {{trials: {trials}, sampler: random, seed: 0, pruner: none, space: {{lr: {{low: 0.01, high: 0.1, log: true}}}}}}
repeats: {{seeds: [1]}}
compare: {{exploratory: true}}
"""


def bench_scale(
    workers: Iterable[int], trials: int, env: dict[str, str], optuna_storage: str, folder: Path
) -> list[ScaleRow]:
    """Trial throughput of 1, 2, 4... worker processes sharing one study (``bru search``
    processes on the same Optuna storage and MLflow store). Trials are a one-epoch mlp1 on
    digits, so the figure is the cost of coordination (Optuna, MLflow, the database)."""
    import subprocess
    import sys
    import uuid

    import optuna

    rows: list[ScaleRow] = []
    for count in workers:
        name = f"scale-{count}w-{uuid.uuid4().hex[:6]}"
        spec = folder / f"{name}.yaml"
        spec.write_text(SCALE_SPEC.format(name=name, trials=trials))
        command = [sys.executable, "-m", "bru_core", "search", str(spec), "--task", "digits/mlp1", "-a", "relu",
                   "--no-repeats", "--json"]  # fmt: skip
        processes = [
            subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for _ in range(count)
        ]
        errors = [p.communicate()[1] for p in processes]
        for process, error in zip(processes, errors, strict=True):
            if process.returncode != 0:
                raise RuntimeError(f"a bru search worker failed (exit {process.returncode}): {error.strip()[-500:]}")
        study = optuna.load_study(study_name=f"{name}/digits/mlp1/relu", storage=optuna_storage)
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
        mean = statistics.mean((t.datetime_complete - t.datetime_start).total_seconds() for t in done)
        throughput = len(done) / span
        speedup = throughput / rows[0].trials_per_s if rows else 1.0
        rows.append(ScaleRow(count, len(done), span, throughput, speedup, mean))
    return rows
