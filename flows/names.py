"""The names bru gives its Prefect objects, in one place: the flows name their runs with
them, and the service finds those runs, deploys those flows and polls that pool by them.
Plain constants, no Prefect import: the CLI reads them before Prefect is configured."""

from __future__ import annotations

POOL = "bru-gpu"  # the work pool `bru deploy` creates and `bru worker` polls
# The flows; each is deployed under its own name (deployment "bru-campaign/bru-campaign").
CAMPAIGN_FLOW = "bru-campaign"
SEARCH_FLOW = "bru-search"
AGGREGATE_FLOW = "bru-aggregate"
# A campaign's flow run is named after the campaign (Prefect formats it with the flow's
# parameters): `bru campaign submit` names its runs the same way and finds them by it.
CAMPAIGN_RUN_NAME = "campaign {spec[name]}"


def campaign_run_name(campaign: str) -> str:
    """A campaign's flow run name, as the bru-campaign flow names its runs."""
    return CAMPAIGN_RUN_NAME.format(spec={"name": campaign})
