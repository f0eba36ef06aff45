"""The campaign's own MLflow run around its studies and repeats: recorded once with the
spec, and held RUNNING while a command works on the campaign."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from bru_core.search.storage import open_storage
from bru_core.settings import Settings, get_settings
from bru_core.spec import CampaignSpec
from bru_core.tracking import Tracker


def record_campaign(tracker: Tracker, spec: CampaignSpec) -> None:
    """The campaign's run with its spec and protocol (refused if the name has another spec)."""
    tracker.record_campaign(spec.name, spec.model_dump(mode="json"), spec.protocol())


def prepare_campaign(spec: CampaignSpec, settings: Settings | None = None) -> None:
    """Create the stores' tables and the campaign's MLflow record once, before studies
    open them concurrently."""
    settings = settings or get_settings()
    open_storage(settings)
    with Tracker(settings) as tracker:
        tracker.check()
        record_campaign(tracker, spec)


@contextmanager
def working_on_campaign(spec: CampaignSpec, settings: Settings | None = None) -> Iterator[None]:
    """The campaign's run, recorded if new, held RUNNING over the body (Tracker.working_on):
    for a command that runs several stages, so that the run is not closed between them."""
    with Tracker(settings or get_settings()) as tracker:
        record_campaign(tracker, spec)
        with tracker.working_on(spec.name):
            yield
