"""GPU slots: a Prefect global concurrency limit named ``gpu`` (one slot per GPU in the
pool's cluster), plus a per-process pool of device names, so that on a worker with
several GPUs each concurrent trial trains on its own device.

Slots are leased: a worker that dies stops renewing, and the server takes the slot back
after the lease (``BRU_GPU_LEASE_SECONDS``, default 300 s, at least 60) runs out."""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager

GPU_LIMIT = "gpu"
_lock = threading.Lock()
_devices: queue.Queue[str] | None = None


def local_devices() -> list[str]:
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [f"cuda:{i}" for i in range(count)] or ["cpu"]


def _pool() -> queue.Queue[str]:
    global _devices
    with _lock:
        if _devices is None:
            _devices = queue.Queue()
            for device in local_devices():
                _devices.put(device)
        return _devices


def lease_seconds() -> float:
    """BRU_GPU_LEASE_SECONDS (default 300; Prefect's server accepts 60 at least)."""
    return max(60.0, float(os.environ.get("BRU_GPU_LEASE_SECONDS", "300")))


@contextmanager
def gpu_slot() -> Iterator[str]:
    """Hold one slot of the ``gpu`` limit and one local device for the body."""
    from prefect.concurrency.sync import concurrency

    with concurrency(GPU_LIMIT, occupy=1, lease_duration=lease_seconds(), strict=True):
        devices = _pool()
        device = devices.get()  # with more slots than local GPUs, wait for one to free up
        try:
            yield device
        finally:
            devices.put(device)


def ensure_gpu_limit(slots: int | None = None) -> int:
    """Create the ``gpu`` limit if it is missing (slots: the local GPU count, at least 1);
    with ``slots`` given, set it. Returns the limit."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(GPU_LIMIT)
        except ObjectNotFound:
            wanted = slots or len([d for d in local_devices() if d != "cpu"]) or 1
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=GPU_LIMIT, limit=wanted, active=True)
            )
            return wanted
        if slots is not None and (limit.limit != slots or not limit.active):
            client.update_global_concurrency_limit(GPU_LIMIT, GlobalConcurrencyLimitUpdate(limit=slots, active=True))
            return slots
        return limit.limit
