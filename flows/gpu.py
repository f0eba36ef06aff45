"""GPU slots: a Prefect global concurrency limit named ``gpu`` (one slot per GPU in the
pool's cluster, or K per GPU: ``bru deploy --slots-per-gpu K``), plus a per-process pool
of device names, so that on a worker with several GPUs each concurrent trial trains on
its own device, or up to K trials share one (``BRU_SLOTS_PER_GPU``, docs/orchestration.md).

Slots are leased: a worker that dies stops renewing, and the server takes the slot back
after the lease (``BRU_GPU_LEASE_SECONDS``, default 300 s, at least 60) runs out."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from bru_core.errors import ConfigError
from bru_core.settings import get_settings

GPU_LIMIT = "gpu"
# Trials that may share one GPU. This machine's setting (``bru worker --slots-per-gpu``
# exports it to the flow runs it starts) comes first; then the pool's, which ``bru deploy
# --slots-per-gpu`` puts in the deployments' job variables (the only setting that reaches
# docker and kubernetes flow runs); then 1.
SLOTS_PER_GPU_ENV = "BRU_SLOTS_PER_GPU"
POOL_SLOTS_PER_GPU_ENV = "BRU_POOL_SLOTS_PER_GPU"
_lock = threading.Lock()


def local_devices() -> list[str]:
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [f"cuda:{i}" for i in range(count)] or ["cpu"]


def local_gpu_count() -> int:
    return len([d for d in local_devices() if d != "cpu"])


def check_slots_per_gpu(text: str, name: str = SLOTS_PER_GPU_ENV) -> int:
    """A slots-per-GPU value as an integer >= 1; ConfigError naming ``name`` otherwise."""
    try:
        value = int(text.strip())
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{name}: must be a whole number >= 1 (trials that may share one GPU), got {text!r}")
    return value


def slots_per_gpu(cpu: bool = False) -> int:
    """Trials that may share one local device: BRU_SLOTS_PER_GPU, else the pool's
    BRU_POOL_SLOTS_PER_GPU (from ``bru deploy --slots-per-gpu``), else 1. With ``cpu``
    (a machine without a GPU) only this machine's own BRU_SLOTS_PER_GPU counts: the
    pool's setting is about GPUs, and a CPU worker keeps one trial at a time."""
    settings = get_settings()
    own, pool = settings.slots_per_gpu, settings.pool_slots_per_gpu
    if own.strip():
        return check_slots_per_gpu(own, SLOTS_PER_GPU_ENV)
    if pool.strip() and not cpu:
        return check_slots_per_gpu(pool, POOL_SLOTS_PER_GPU_ENV)
    return 1


class _DevicePool:
    """Each local device ``per_device`` times. A trial takes the device with the fewest
    trials on it (the first such device on a tie, and its lowest free copy, whose slot
    keeper may still hold a slot), so trials spread over the GPUs before any GPU takes a
    second one; with every copy taken it waits for one to come back."""

    def __init__(self, devices: list[str], per_device: int) -> None:
        self.devices = list(devices)
        self.per_device = per_device
        self._free = {device: list(range(per_device)) for device in self.devices}
        self._changed = threading.Condition()

    @property
    def size(self) -> int:
        return len(self.devices) * self.per_device

    def take(self) -> tuple[str, int]:
        with self._changed:
            while not any(self._free.values()):
                self._changed.wait()
            device = max(self.devices, key=lambda d: len(self._free[d]))  # max keeps the first of equals
            copy = min(self._free[device])
            self._free[device].remove(copy)
            return device, copy

    def give(self, device: str, copy: int) -> None:
        with self._changed:
            self._free[device].append(copy)
            self._changed.notify()

    def in_use(self) -> dict[str, int]:
        with self._changed:
            return {device: self.per_device - len(free) for device, free in self._free.items()}


_devices: _DevicePool | None = None


def _pool() -> _DevicePool:
    global _devices
    with _lock:
        if _devices is None:
            devices = local_devices()
            _devices = _DevicePool(devices, slots_per_gpu(cpu=devices == ["cpu"]))
        return _devices


def lease_seconds() -> float:
    """BRU_GPU_LEASE_SECONDS (default 300; Prefect's server accepts 60 at least)."""
    return max(60.0, float(get_settings().gpu_lease_seconds))


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
        from prefect.concurrency.context import ConcurrencyContext
        from prefect.concurrency.sync import concurrency

        try:
            # A concurrency context of the keeper's own: in the copied context of the trial
            # that made the keeper, the lease would be recorded in that trial's task-run
            # context, which releases it when the task run ends, while the keeper still lends
            # the slot to the next trials (then another process could take the same slot,
            # and the renewal fails with "410 Gone ... Lease not found").
            with ConcurrencyContext(), concurrency(GPU_LIMIT, occupy=1, lease_duration=lease_seconds(), strict=True):
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


_keepers: dict[tuple[str, int], _SlotKeeper] = {}  # one per copy of a device in the pool
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
    """Hold one slot of the ``gpu`` limit and one local device for the body (a device
    that up to BRU_SLOTS_PER_GPU trials of this process may hold at once)."""
    # The local device first: threads of one process hand it over at once; then the
    # cluster-wide slot, which other processes and workers contend for. Each copy of a
    # device has its own keeper: K trials on one GPU hold K slots.
    devices = _pool()
    device, copy = devices.take()
    try:
        while True:
            with _lock:
                keeper = _keepers.get((device, copy))
                if keeper is None or keeper.stop:
                    _release_at_exit()
                    keeper = _keepers[(device, copy)] = _SlotKeeper()
            if keeper.take():
                break
            keeper.give()  # it was finishing as we came: a fresh one
        try:
            yield device
        finally:
            keeper.give()
    finally:
        devices.give(device, copy)


def release_idle_slots() -> None:
    """Give back every slot this process holds (e.g. when its trials are all done)."""
    with _lock:
        keepers = list(_keepers.values())
        _keepers.clear()
    for keeper in keepers:
        keeper.release()


def _temporary_server() -> bool:
    """True when this process talks to a temporary Prefect server of its own (no
    PREFECT_API_URL: ``bru campaign run``), whose ``gpu`` limit only this machine uses."""
    from prefect.settings import PREFECT_API_URL

    return not PREFECT_API_URL.value()


def ensure_gpu_limit(slots: int | None = None, missing: int | None = None) -> int:
    """With ``slots`` given, set the ``gpu`` limit to it. Otherwise create it if it is
    missing, with ``missing`` slots (default: this process's device pool, the local GPUs,
    at least 1, times BRU_SLOTS_PER_GPU); on a temporary server (an embedded campaign)
    an existing limit is brought to this pool's size, so that a changed
    BRU_SLOTS_PER_GPU counts; on a real server it is kept (``bru deploy`` sets it).
    Returns the limit."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectNotFound

    embedded = False
    if slots is None and missing is None:
        missing = _pool().size  # checks BRU_SLOTS_PER_GPU before anything runs
        if _temporary_server():
            slots, embedded = missing, True
    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(GPU_LIMIT)
        except ObjectNotFound:
            wanted = slots or missing or 1
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=GPU_LIMIT, limit=wanted, active=True)
            )
            return wanted
        # A temporary server keeps its leases in memory but the limit's count in its database
        # (under the bru home): slots of a process killed outright stay counted with no lease
        # left to expire, and the next embedded campaign would wait for them for ever. Its
        # server is this process's own (the limit is sized to this process's pool above), so
        # slots counted while this process holds none are stale.
        stale = embedded and limit.active_slots > 0 and not _keepers
        if slots is not None and (limit.limit != slots or not limit.active or stale):
            update = GlobalConcurrencyLimitUpdate(limit=slots, active=True, **({"active_slots": 0} if stale else {}))
            client.update_global_concurrency_limit(GPU_LIMIT, update)
            return slots
        return limit.limit
