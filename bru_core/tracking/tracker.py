"""``Tracker``: the connection to a campaign's tracking store, and the order of its writes.
What it writes is in its parts: the run tree (``runs.RunTree``), the campaign's run
(``campaigns.CampaignRecords``), the models and data sets (``models.ModelLogging``)."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from bru_core.settings import Settings, ensure_sqlite_folder, shown_url
from bru_core.tracking.campaigns import CampaignRecords
from bru_core.tracking.models import ModelLogging
from bru_core.tracking.server import check_server
from bru_core.tracking.store import TrackingError

_BATCH = 900  # MLflow takes at most 1000 metrics per log_batch call


class Tracker(CampaignRecords, ModelLogging):
    """The MLflow side of a campaign: find-or-create runs by tags, write them in batches."""

    def __init__(self, settings: Settings) -> None:
        self.uri = settings.tracking
        self.artifact_location = settings.artifact_location
        ensure_sqlite_folder(self.uri)
        self.client = MlflowClient(tracking_uri=self.uri)
        # A local store's writes are CPU work in this process: done in a background thread
        # they contend for the GIL with the training loop and cost more than done in line
        # (docs/benchmarks.md). A server's writes are mostly waiting: those go to the thread.
        self.background = self.artifact_location is None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bru-mlflow")  # keeps writes in order
        self._pending: list[Future] = []
        self._lock = threading.Lock()
        self._experiments: dict[str, str] = {}
        self.lease = settings.campaign_lease_seconds  # a holder of a campaign's run unseen this long is gone

    def _submit(self, fn, *args) -> None:
        if not self.background:
            try:
                fn(*args)
            except Exception as exc:
                raise TrackingError(f"MLflow at {shown_url(self.uri)} refused a write: {exc}") from exc
            return
        with self._lock:
            self._pending = [f for f in self._pending if not f.done() or f.exception() is not None]
            self._pending.append(self._pool.submit(fn, *args))

    def _write_batch(self, run_id: str, metrics: list[Metric], params: list[Param], tags: list[RunTag]) -> None:
        for i in range(0, max(len(metrics), 1), _BATCH):
            first = i == 0
            self.client.log_batch(
                run_id,
                metrics=metrics[i : i + _BATCH],
                params=params[:100] if first else (),
                tags=tags[:100] if first else (),
            )
        for i in range(100, max(len(params), len(tags)), 100):
            self.client.log_batch(run_id, params=params[i : i + 100], tags=tags[i : i + 100])

    def flush(self) -> None:
        """Wait for every write so far; re-raise the first one that failed."""
        with self._lock:
            pending, self._pending = self._pending, []
        errors = [f.exception() for f in pending if f.exception() is not None]
        if errors:
            raise TrackingError(f"MLflow at {shown_url(self.uri)} refused a write: {errors[0]}") from errors[0]

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check(self, *, server_checked: bool = False) -> None:
        """Fail early, with one line, when the tracking store cannot be reached
        (server_checked: the caller has just had check_server's answer)."""
        if not server_checked:
            check_server(self.uri)
        try:
            self.client.search_experiments(max_results=1)
        except Exception as exc:
            raise TrackingError(
                f"MLflow tracking at {shown_url(self.uri)} cannot be reached: {str(exc).splitlines()[0][:200]}"
            ) from None
