"""Getting ready to run flows: what a campaign needs checked before Prefect starts, and the
environment that the flows, the workers and Prefect itself read (set before Prefect is
imported). flows.service's module level imports no Prefect: its constants are cheap."""

from __future__ import annotations

import os
from pathlib import Path

from flows.service import HEARTBEAT_SECONDS


def export_settings(settings) -> None:
    """Flows and workers read BRU_* from the environment: make overrides visible to them."""
    os.environ["BRU_HOME"] = str(settings.home_path)
    for key, value in (("BRU_TRACKING_URI", settings.tracking_uri), ("BRU_OPTUNA_STORAGE", settings.optuna_storage),
                       ("BRU_RESULTS_URL", settings.results_url), ("BRU_DATA_DIR", settings.data_dir)):  # fmt: skip
        if value is not None:
            os.environ[key] = str(value)


def prepare_prefect(settings) -> None:
    """Before prefect is imported: quiet console logs, no analytics, and an embedded
    server's state under the bru home folder (unless the user set these)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")  # the client's telemetry, and its notice on a terminal
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_HOME", str(settings.home_path / "prefect"))
    # bru's flow runs beat often: a server's crash automation (bru deploy) expects it
    os.environ.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", str(HEARTBEAT_SECONDS))
    if not os.environ.get("PREFECT_API_URL"):  # an embedded server keeps its database there
        Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
        # It starts in 10-20 s on 2 idle cores, past Prefect's 20 s default on a busy
        # machine ("Timed out while attempting to connect to ephemeral Prefect API server").
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def preflight(campaign, settings) -> None:
    """Everything a campaign needs that can be checked before anything runs."""
    from bru_core.data import check_available
    from bru_core.locks import check_free
    from bru_core.search import check_stores

    for t in campaign.tasks:
        config = campaign.train_config(t.name, campaign.labels[0], {}, seed=0)
        check_available(t.dataset, config.data_dir or settings.data_path, config.download)
    check_stores(settings)  # a store that is down: one line now, not a traceback after Prefect starts
    check_free(settings.optuna, campaign.name, settings.campaign_lease_seconds)  # not running elsewhere
