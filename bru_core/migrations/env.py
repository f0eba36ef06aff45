"""Alembic environment for the results database.

bru runs the migrations itself whenever it opens the store (bru_core.results.upgrade,
which passes its connection in ``config.attributes``). A new revision, after changing the
models in bru_core/results.py: ``alembic -c bru_core/migrations/alembic.ini -x url=URL
revision --autogenerate -m "what changed"``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from bru_core.results import Base

config = context.config
target_metadata = Base.metadata


def _run(connection) -> None:
    # batch mode lets later revisions alter tables on SQLite too
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        from bru_core.settings import get_settings

        url = get_settings().results
    return url


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
    else:
        with create_engine(_url()).begin() as own:
            _run(own)
