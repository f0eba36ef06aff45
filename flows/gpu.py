"""GPU slots: a Prefect global concurrency limit named ``gpu`` (one slot per GPU in the
pool's cluster), plus a per-process pool of device names, so that on a worker with
several GPUs each concurrent trial trains on its own device.

Slots are leased: a worker that dies stops renewing, and the server takes the slot back
after the lease (``BRU_GPU_LEASE_SECONDS``, default 300 s, at least 60) runs out."""

from __future__ import annotations

import contextvars
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


class _SlotKeeper:
    """Holds one slot of the ``gpu`` limit for one local device, in its own thread, and
    lends it to this process's trials one after another.

    Asking the server for a slot again after each trial costs about 2 s: Prefect's
    limit counts recent refusals and makes the next request wait out the average
    occupancy, even when nobody else is waiting. So a slot taken stays with the process
    while its trials keep coming, and goes back after ``LINGER_SECONDS`` without one (or
    at ``release_idle_slots``, or at exit). The lease is renewed all the while, and runs
    out if the process dies, as before."""

    LINGER_SECONDS = 1.0

    def __init__(self) -> None:
        self.busy = False
        self.wanted = threading.Condition()
        self.acquired = threading.Event()
        self.error: BaseException | None = None
        self.stop = False
        self.holding = False
        context = contextvars.copy_context()  # the caller's Prefect settings (e.g. a temporary server)
        self.thread = threading.Thread(target=context.run, args=(self._hold,), name="bru-gpu-slot", daemon=True)
        self.thread.start()

    def _hold(self) -> None:
        from prefect.concurrency.sync import concurrency

        try:
            with concurrency(GPU_LIMIT, occupy=1, lease_duration=lease_seconds(), strict=True):
                self.holding = True
                self.acquired.set()
                with self.wanted:
                    while not self.stop:
                        idle = not self.busy
                        if not self.wanted.wait(timeout=self.LINGER_SECONDS) and idle and not self.busy:
                            self.stop = True  # nobody came back for it: return the slot
        except BaseException as exc:  # handed to the waiting trial
            self.error = exc
        finally:
            with self.wanted:
                self.stop = True
                self.holding = False
            self.acquired.set()

    def take(self) -> bool:
        """True if the slot is held for the caller; False if this keeper is finishing."""
        with self.wanted:
            if self.stop:
                return False
            self.busy = True
            self.wanted.notify_all()
        self.acquired.wait()
        if self.error is not None:
            raise self.error
        return self.holding

    def give(self) -> None:
        with self.wanted:
            self.busy = False
            self.wanted.notify_all()

    def release(self) -> None:
        with self.wanted:
            self.stop = True
            self.wanted.notify_all()
        self.thread.join(timeout=30)


_keepers: dict[str, _SlotKeeper] = {}
_release_at_exit_registered = False


def _release_at_exit() -> None:
    """Give the slots back when the interpreter exits, before Prefect's own exit hooks.

    threading's exit hooks run before the ``atexit`` module's, and Prefect stops a
    temporary server from ``atexit``: a slot released after that would make its client
    start a second temporary server, which nothing would stop (it outlived every
    ``bru campaign run`` that failed). Prefect's services use the same hook. It is
    registered with the first slot, not at import: threading's hooks run last in, first
    out, so it then runs before the hook of Prefect's events worker, which the release
    still needs."""
    global _release_at_exit_registered
    if not _release_at_exit_registered:
        threading._register_atexit(release_idle_slots)  # type: ignore[attr-defined]
        _release_at_exit_registered = True


@contextmanager
def gpu_slot() -> Iterator[str]:
    """Hold one slot of the ``gpu`` limit and one local device for the body."""
    # The local device first: threads of one process hand it over at once; then the
    # cluster-wide slot, which other processes and workers contend for.
    devices = _pool()
    device = devices.get()
    try:
        while True:
            with _lock:
                keeper = _keepers.get(device)
                if keeper is None or keeper.stop:
                    _release_at_exit()
                    keeper = _keepers[device] = _SlotKeeper()
            if keeper.take():
                break
            keeper.give()  # it was finishing as we came: a fresh one
        try:
            yield device
        finally:
            keeper.give()
    finally:
        devices.put(device)


def release_idle_slots() -> None:
    """Give back every slot this process holds (e.g. when its trials are all done)."""
    with _lock:
        keepers = list(_keepers.values())
        _keepers.clear()
    for keeper in keepers:
        keeper.release()


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
