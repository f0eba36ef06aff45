"""Which processes hold a campaign's run open: each one that works on the campaign sets a
tag (``bru.holder.<id>``) on the run and renews it from a thread; the last one to let go
closes the run (``Tracker.working_on``). A holder that died without letting go is gone once
its process no longer exists (on this machine) or its lease has run out (elsewhere)."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import mlflow
from mlflow import MlflowClient

from bru_core.processes import alive_here, process_identity
from bru_core.tracking.store import dumps

HOLDER = "bru.holder."  # tag prefix on a campaign's run: one tag per process working on the campaign now


def holder_alive(record: Mapping[str, Any], lease: float, now: float | None = None) -> bool:
    """Whether the process behind a ``bru.holder.*`` tag may still work on the campaign: on
    this machine, while its process exists; elsewhere (or where /proc cannot tell), while
    it renews within ``lease``."""
    alive = alive_here(record.get("machine"), int(record.get("pid", 0)), record.get("started"))
    if alive is not None:
        return alive
    return (now if now is not None else time.time()) - float(record.get("renewed", 0)) <= lease


@dataclass
class _Hold:
    """This process's hold on a campaign's run: one tag, renewed by a thread."""

    client: MlflowClient
    run_id: str
    key: str
    record: dict[str, Any]
    lease: float
    stop: threading.Event
    renewer: threading.Thread | None = None
    count: int = 0

    @classmethod
    def take(cls, client: MlflowClient, run_id: str, lease: float) -> _Hold:
        now, me = time.time(), process_identity()
        record = {
            "host": socket.gethostname(), "pid": me.pid, "machine": me.machine,
            "started": me.started, "since": now, "renewed": now,
        }  # fmt: skip
        hold = cls(client, run_id, HOLDER + uuid.uuid4().hex[:12], record, lease, threading.Event())
        client.set_tag(run_id, hold.key, dumps(record))
        client.update_run(run_id, status="RUNNING")  # after the tag: see release
        hold.renewer = threading.Thread(target=hold._renew, name="bru-campaign-hold", daemon=True)
        hold.renewer.start()
        return hold

    def _renew(self) -> None:
        while not self.stop.wait(self.lease / 4):
            with suppress(Exception):  # a store restart: the next beat tries again, well within the lease
                self.client.set_tag(self.run_id, self.key, dumps({**self.record, "renewed": time.time()}))
                if self.stop.is_set():  # let go while the write was retried: it must not outlive the hold
                    self.client.delete_tag(self.run_id, self.key)

    def _live_holders(self) -> list[str]:
        """Tags of the other processes that hold the run now; a dead holder's tag is removed."""
        tags = self.client.get_run(self.run_id).data.tags
        live, now = [], time.time()
        for key, value in tags.items():
            if not key.startswith(HOLDER) or key == self.key:
                continue
            try:
                alive = holder_alive(json.loads(value), self.lease, now)
            except (ValueError, TypeError, KeyError):
                alive = False
            if alive:
                live.append(key)
            else:
                with suppress(mlflow.exceptions.MlflowException):  # another holder removed it just now
                    self.client.delete_tag(self.run_id, key)
        return live

    def release(self, exc: BaseException | None) -> None:
        """Let go of the run, and close it unless another live process holds it.

        Each holder removes its tag before it looks at the others', so of two that let go
        together the later one sees neither tag and closes the run. One that takes hold
        while the run is being closed has set its tag before it marks the run RUNNING: the
        closer that looks again after closing sees it and reopens the run, or else its own
        RUNNING comes last."""
        self.stop.set()
        if self.renewer is not None:
            self.renewer.join(timeout=10)
        # Already removed as dead by another holder (after a long store outage): let go all the same.
        with suppress(mlflow.exceptions.MlflowException):
            self.client.delete_tag(self.run_id, self.key)
        if self._live_holders():
            return
        tags = self.client.get_run(self.run_id).data.tags
        if exc is None:
            status = "FINISHED"
            if "bru.failure" in tags:  # it described an earlier command
                self.client.delete_tag(self.run_id, "bru.failure")
        else:
            status = "FAILED" if isinstance(exc, Exception) else "KILLED"
            first_line = (str(exc).strip().splitlines() or [""])[0]
            self.client.set_tag(self.run_id, "bru.failure", f"{type(exc).__name__}: {first_line}"[:500])
        self.client.set_terminated(self.run_id, status)
        if self._live_holders():
            self.client.update_run(self.run_id, status="RUNNING")


_HOLDS: dict[tuple[int, str, str], _Hold] = {}  # (pid, tracking URI, run id) -> this process's hold
_HOLDS_LOCK = threading.Lock()


@contextmanager
def holding(uri: str, run_id: str, lease: float) -> Iterator[None]:
    """This process holds the run over the body, then lets go with the body's outcome.
    Nested and concurrent holds in one process share one tag; the outermost decides the status."""
    place = (os.getpid(), uri, run_id)  # a forked child holds on its own
    with _HOLDS_LOCK:
        hold = _HOLDS.get(place)
        if hold is None:
            hold = _HOLDS[place] = _Hold.take(MlflowClient(tracking_uri=uri), run_id, lease)
        hold.count += 1
    try:
        yield
    except BaseException as exc:
        _let_go(place, exc)
        raise
    _let_go(place, None)


def _let_go(place: tuple[int, str, str], exc: BaseException | None) -> None:
    with _HOLDS_LOCK:
        hold = _HOLDS[place]
        hold.count -= 1
        if hold.count:
            return
        del _HOLDS[place]
        try:
            hold.release(exc)
        except Exception as failure:  # the work is done; a status not written is no reason to fail it
            logging.getLogger("bru.tracking").warning(
                "the campaign's run %s could not be closed: %s", hold.run_id, str(failure).splitlines()[0][:200]
            )
