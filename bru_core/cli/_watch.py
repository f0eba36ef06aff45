"""What ``bru campaign run`` shows while it works, read from the stores every two seconds.

On a terminal: a live view, one row per study (trials done of the budget, the best
validation value so far, repeat seeds done) under a campaign row with its stage and the
elapsed time. In a pipe or CI, where a live view would be noise: one line when a study's
search is done, one when its repeats are, and one when the campaign moves to a stage."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from ._common import err, progress_bar

POLL_SECONDS = 2.0


def _stage(rows: list[Any]) -> str:
    if any(r.done < r.budget for r in rows):
        return "searching"
    if any(r.seeds_done < r.seeds for r in rows):
        return "repeating the best configurations"
    return "aggregating and reporting"


class CampaignWatch:
    """A thread that follows a campaign's studies in the stores (``campaign_status``) and
    shows them: ``with CampaignWatch(spec, settings): run the campaign``."""

    def __init__(self, spec: Any, settings: Any, live: bool | None = None) -> None:
        self.spec = spec
        self.settings = settings
        self.live = err.is_terminal if live is None else live
        self.started = time.monotonic()
        self.stop = threading.Event()
        self.progress = progress_bar()
        self.thread = threading.Thread(target=self._loop, name="bru-campaign-watch", daemon=True)
        self._bars: dict[tuple[str, str], Any] = {}
        self._said: set[tuple[str, str, str]] = set()
        self._stage = ""
        self.say: Callable[[str], None] = lambda line: err.print(line, highlight=False, soft_wrap=True)

    def __enter__(self) -> CampaignWatch:
        if self.live:
            self.progress.start()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        if self.live:
            self.progress.stop()

    def elapsed(self) -> str:
        seconds = int(time.monotonic() - self.started)
        return f"{seconds // 60}:{seconds % 60:02d}"

    def _loop(self) -> None:
        from bru_core.search import campaign_status
        from bru_core.tracking import Tracker

        tracker = None
        while not self.stop.is_set():
            try:
                tracker = tracker or Tracker(self.settings)
                self.show(campaign_status(self.spec, self.settings, tracker))
            except Exception:  # the stores may not exist yet, or be busy: the next poll
                pass
            self.stop.wait(POLL_SECONDS)
        if tracker is not None:
            tracker.close()

    def show(self, rows: list[Any]) -> None:
        """One poll's statuses: the live view's rows, or a line for each change."""
        stage = _stage(rows)
        if self.live:
            self._update_bars(rows, stage)
            return
        for r in rows:
            metric = self.spec.validation_metric(r.task)
            best = f", best {metric} {r.best_value:.4g}" if r.best_value is not None else ""
            if r.done >= r.budget:
                self._once(r, "searched", f"{r.done}/{r.budget} trials{best}")
            if r.seeds and r.seeds_done >= r.seeds:
                self._once(r, "repeated", f"{r.seeds_done}/{r.seeds} seeds")
        if stage != self._stage:
            self._stage = stage
            self.say(f"campaign {self.spec.name}: {stage} ({self.elapsed()})")

    def _once(self, row: Any, what: str, detail: str) -> None:
        key = (row.task, row.activation, what)
        if key not in self._said:
            self._said.add(key)
            self.say(f"study {row.task} {row.activation}: {what}, {detail} ({self.elapsed()})")

    def _update_bars(self, rows: list[Any], stage: str) -> None:
        progress = self.progress
        total = sum(r.budget + r.seeds for r in rows)
        done = sum(min(r.done, r.budget) + min(r.seeds_done, r.seeds) for r in rows)
        if ("", "") not in self._bars:
            self._bars[("", "")] = progress.add_task(f"campaign {self.spec.name}", total=total, status="")
        progress.update(self._bars[("", "")], total=total, completed=done, status=stage)
        for r in rows:
            key = (r.task, r.activation)
            if key not in self._bars:
                self._bars[key] = progress.add_task(f"  {r.task} {r.activation}", total=r.budget + r.seeds, status="")
            metric = self.spec.validation_metric(r.task)
            best = f"best {metric} {r.best_value:.4g}" if r.best_value is not None else "no result yet"
            progress.update(
                self._bars[key],
                completed=min(r.done, r.budget) + min(r.seeds_done, r.seeds),
                status=f"trials {r.done}/{r.budget}, {best}; seeds {r.seeds_done}/{r.seeds}",
            )
