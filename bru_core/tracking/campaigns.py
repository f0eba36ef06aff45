"""The campaign's own run (``bru.role=campaign``): its spec (so that a campaign can be
aggregated from MLflow alone), protocol and report, held RUNNING while processes work on
the campaign (``working_on``, by way of the holds)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Run

from bru_core.settings import shown_url
from bru_core.tracking.holds import holding
from bru_core.tracking.runs import ROLE, RunTree
from bru_core.tracking.store import TrackingError, dumps


def spec_digest(spec: Mapping[str, Any]) -> str:
    """What makes two campaigns comparable: the spec without its description and without
    ``repeats.pack`` (how the seeds are run, not what they compute; a spec from before it
    existed digests as it did then)."""
    design = {k: v for k, v in spec.items() if k != "description"}
    if isinstance(design.get("repeats"), Mapping):
        design["repeats"] = {k: v for k, v in design["repeats"].items() if k != "pack"}
    return hashlib.sha256(dumps(design).encode()).hexdigest()[:16]


class CampaignRecords(RunTree):
    """The campaign's run and what is read back from it: part of ``Tracker``, which gives
    it the run tree and ``lease`` (a holder unseen this long is gone)."""

    lease: float

    def record_campaign(self, campaign: str, spec: Mapping[str, Any], protocol: list[str]) -> str:
        """The campaign's own run (``bru.role=campaign``) holds its spec, so that a campaign
        can be aggregated from MLflow alone. A campaign started with a different spec under
        the same name is refused: its studies would not be comparable."""
        experiment_id = self.experiment_id(campaign)
        digest = spec_digest(spec)
        found = self.find_runs(experiment_id, {ROLE: "campaign"})
        if found:
            recorded = found[0].data.tags.get("bru.spec_digest")
            if recorded != digest:
                raise TrackingError(
                    f"campaign {campaign!r} was started with a different spec (digest {recorded}, this one {digest}); "
                    "give the new spec another name, or restore the old one"
                )
            return found[0].info.run_id
        run_id = self.create_run(
            experiment_id,
            {ROLE: "campaign", "bru.campaign": campaign, "bru.spec_digest": digest},
            f"campaign {campaign}",
        ).info.run_id
        self.client.log_dict(run_id, dict(spec), "spec.json")
        self.client.log_text(run_id, "\n".join(protocol) + "\n", "protocol.txt")
        return run_id

    def campaign_run(self, campaign: str) -> Run | None:
        experiment = self.client.get_experiment_by_name(campaign)
        if experiment is None:
            return None
        found = self.find_runs(experiment.experiment_id, {ROLE: "campaign"})
        return found[0] if found else None

    @contextmanager
    def working_on(self, campaign: str) -> Iterator[None]:
        """The campaign's run is RUNNING while the body works on the campaign, then closed:
        FINISHED, FAILED (an error) or KILLED (an interrupt), unless another live process
        still holds it. Every process that works on the campaign holds the run with a tag
        (``bru.holder.<id>``) that a thread renews every lease / 4 seconds; the last one to
        let go closes the run, so no process's work shows under a finished campaign. A
        holder that died without letting go counts as gone once its process no longer
        exists (on this machine) or its lease has run out (elsewhere). Nested and
        concurrent holds in one process share one tag; the outermost decides the status."""
        run = self.campaign_run(campaign)
        if run is None:
            raise TrackingError(f"campaign {campaign!r} has no run in {shown_url(self.uri)}: record it first")
        with holding(self.uri, run.info.run_id, self.lease):
            yield

    def campaign_spec(self, campaign: str) -> dict[str, Any]:
        run = self.campaign_run(campaign)
        if run is None:
            known = sorted(
                e.name for e in self.client.search_experiments() if self.find_runs(e.experiment_id, {ROLE: "campaign"})
            )
            raise TrackingError(
                f"unknown campaign {campaign!r}; campaigns in {shown_url(self.uri)}: {', '.join(known) or 'none yet'}"
            )
        return mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/spec.json")

    def log_report(self, campaign: str, folder: Path) -> None:
        """The report's files as artifacts of the campaign's run, under report/."""
        run = self.campaign_run(campaign)
        if run is not None:
            self.client.log_artifacts(run.info.run_id, str(folder), "report")

    def run_timings(self, campaign: str) -> list[tuple[str, float, float, float]]:
        """(role, start, end, seconds in train()) of the campaign's trials and repeats, by
        start time (epoch seconds), for `bru bench pipeline`'s overhead figures."""
        experiment = self.client.get_experiment_by_name(campaign)
        if experiment is None:
            return []
        timings = []
        for role in ("trial", "repeat"):
            for run in self.find_runs(experiment.experiment_id, {ROLE: role}):
                if "seconds" in run.data.metrics and run.info.end_time:
                    start, end = run.info.start_time / 1e3, run.info.end_time / 1e3
                    timings.append((role, start, end, run.data.metrics["seconds"]))
        return sorted(timings, key=lambda timing: timing[1])
