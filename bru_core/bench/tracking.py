"""What MLflow logging costs a training run (bru bench tracking)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bru_core.bench.timing import interleaved, warm_cpu_kernels
from bru_core.config import TrainConfig

if TYPE_CHECKING:
    import subprocess

    from bru_core.data import Data
    from bru_core.settings import Settings
    from bru_core.tracking import Tracker


@dataclass
class TrackingTiming:
    store: str  # "sqlite" (embedded) or "server" (a local mlflow server over HTTP)
    epochs: int
    mode: str  # "one run" (its writes waited for) or "study of N runs" (one wait at the end)
    runs: int
    seconds_without: float
    seconds_with: float
    ratio: float


def _store(folder: Path, server: bool) -> tuple[Settings, subprocess.Popen | None]:
    """Settings for an embedded SQLite store in ``folder``, or for a local mlflow server
    started there on a free port (the process, for stopping it)."""
    from bru_core.settings import Settings
    from bru_core.tracking import start_server, wait_healthy

    if not server:
        return Settings(home=folder), None
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = start_server(
        f"sqlite:///{folder / 'server.db'}",
        (folder / "artifacts").as_uri(),
        port=port,
        log_file=folder / "server.log",
    )
    wait_healthy(f"http://127.0.0.1:{port}", process)
    return Settings(home=folder, tracking_uri=f"http://127.0.0.1:{port}"), process


def _contenders(tracker: Tracker, config: TrainConfig, data: Data, study_runs: int) -> dict[str, Callable[[], float]]:
    """Timed calls: one run and a study of ``study_runs`` runs, each plain and tracked (a
    run per trial, parameters, per-epoch metrics, final metrics, status)."""
    from bru_core.tracking import as_final
    from bru_core.training import train

    experiment = tracker.experiment_id("bench")
    parent = tracker.create_run(experiment, {"bru.role": "study"}, "bench study").info.run_id  # as a campaign's are
    counter = iter(range(10**9))

    def tracked_run(number: int) -> None:
        run = tracker.start_trial(
            "bench", parent, "bench/digits/mlp4/relu", number, {"lr": config.lr, "activation": "relu"}, {}
        )
        history = train(config, on_epoch=lambda record: run.log_epoch(record), data=data, evaluate_test=False)
        run.log_metrics(as_final(history.final), step=config.epochs)
        run.end("FINISHED", {"bru.state": "complete"})

    def timed(runs: int, tracked: bool) -> Callable[[], float]:
        def run() -> float:
            started = time.perf_counter()
            for _ in range(runs):
                if tracked:
                    tracked_run(next(counter))
                else:
                    train(config, data=data, evaluate_test=False)
            if tracked:
                tracker.flush()  # its writes waited for, once per run or study
            return time.perf_counter() - started

        return run

    return {
        "plain_one": timed(1, False), "tracked_one": timed(1, True),
        "plain_study": timed(study_runs, False), "tracked_study": timed(study_runs, True),
    }  # fmt: skip


def _row(store: str, epochs: int, mode: str, runs: int, medians: dict[str, float]) -> TrackingTiming:
    plain, tracked = medians["plain"], medians["tracked"]
    return TrackingTiming(store, epochs, mode, runs, plain, tracked, tracked / plain)


def bench_tracking(
    epochs: int = 10, rounds: int = 7, study_runs: int = 6, server: bool = False
) -> list[TrackingTiming]:
    """Wall time of digits/mlp4 training runs with MLflow logging (bru's Tracker: a run per
    trial, parameters, per-epoch metrics, final metrics, status) over the same runs without."""
    import tempfile

    from bru_core.data import load_data
    from bru_core.tracking import Tracker, stop_server

    warm_cpu_kernels()
    folder = Path(tempfile.mkdtemp(prefix="bru-bench-tracking-"))
    process = None
    try:
        settings, process = _store(folder, server)
        data = load_data("digits", folder / "data")
        config = TrainConfig(dataset="digits", model="mlp4", activation="relu", epochs=epochs, lr=0.02)
        tracker = Tracker(settings)
        runs = _contenders(tracker, config, data, study_runs)
        runs["plain_one"](), runs["tracked_one"]()  # warm-up
        one = interleaved({"plain": runs["plain_one"], "tracked": runs["tracked_one"]}, rounds)
        study = interleaved({"plain": runs["plain_study"], "tracked": runs["tracked_study"]}, max(3, rounds // 2))
        tracker.close()
    finally:
        if process is not None:
            stop_server(process)
    store = "server" if server else "sqlite"
    return [
        _row(store, epochs, "one run", 1, one),
        _row(store, epochs, f"study of {study_runs} runs", study_runs, study),
    ]
