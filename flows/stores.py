"""A flow run on a container pool must write to the shared stores, never to SQLite inside
a container that is thrown away when the run ends (the campaign would "complete" and its
studies, runs and results would go with the pod)."""

from __future__ import annotations

from bru_core.errors import ConfigError
from bru_core.settings import Settings, get_settings


def refuse_embedded_stores(settings: Settings | None = None) -> None:
    """ConfigError naming the store settings left at the embedded default, when this run
    must use shared ones (BRU_REQUIRE_SHARED_STORES, which `bru deploy` sets for docker and
    kubernetes pools); nothing otherwise."""
    settings = settings or get_settings()
    missing = settings.missing_shared_stores() if settings.require_shared_stores else []
    if missing:
        raise ConfigError(
            f"{', '.join(missing)} not set: this flow run is on a container pool, where the embedded stores "
            "under BRU_HOME vanish with the container; give them in the stores secret (kubernetes) or the "
            "pool's job variables env (docker), docs/deploy.md"
        )
