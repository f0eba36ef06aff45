"""What every benchmark shares: interleaved rounds, waiting for the device, a warm CPU.

Every comparison is interleaved: each round times every contender once, in turn, and the
figure reported is the median over rounds, so a slow spell of the machine hits all alike.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from typing import Any, TypeVar

import torch

Key = TypeVar("Key")


def sync(device: torch.device) -> None:
    """Wait for the device's queued kernels, so a timer stops when the work is done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def warm_cpu_kernels() -> None:
    """Put the baselines in their fast state before timing.

    Measured here (torch 2.14.1 CPU build, AMD EPYC): torch's ELU kernel on a 128x128
    tensor takes about 145 us in a process that has not yet run a vectorised ``pow`` and
    about 24 us after one has, for the rest of the process; the cause is unknown (not
    denormals: set_flush_denormal changes nothing). Comparing against the slow state would
    flatter every other activation, so each benchmark runs one ``pow`` first."""
    x = torch.rand(4096) + 0.5
    x.pow(x)


def interleaved(contenders: dict[Key, Callable[[], float]], rounds: int) -> dict[Key, float]:
    """Median seconds per contender; each call returns its own measured seconds."""
    times: dict[Key, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            times[name].append(run())
    return {name: statistics.median(values) for name, values in times.items()}


def timed_with_peak(device: torch.device, fn: Callable[..., object], *args: Any) -> tuple[float, float | None, Any]:
    """Seconds of fn(*args), on CUDA the peak memory it allocated beyond what was there,
    and what it returned."""
    sync(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    started = time.perf_counter()
    result = fn(*args)
    sync(device)
    seconds = time.perf_counter() - started
    peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20 if device.type == "cuda" else None
    return seconds, peak, result


def as_dicts(rows: Iterable[object]) -> list[dict[str, object]]:
    """Benchmark rows (dataclasses) as the JSON objects ``--json`` prints."""
    return [asdict(row) for row in rows]  # type: ignore[call-overload]
