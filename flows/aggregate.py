"""The aggregation flow: MLflow repeat runs -> statistics -> results database and report."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import flow

from bru_core.aggregate import aggregate
from flows.names import AGGREGATE_FLOW
from flows.stores import refuse_embedded_stores


@flow(name=AGGREGATE_FLOW, flow_run_name="aggregate {campaign}", retries=1, retry_delay_seconds=30)
def aggregate_flow(campaign: str) -> dict[str, Any]:
    refuse_embedded_stores()
    return asdict(aggregate(campaign))
