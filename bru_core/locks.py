"""One running campaign per name: a leased lock row in the Optuna storage database.

Two processes running the same campaign at once would share its studies safely (trials
are admitted by number against the budget) but could train the same repeat seed twice,
since a repeat is reused only once it has finished. So the second start is refused:

* the lock is a row in ``bru_campaign_locks`` (created next to Optuna's tables, in the
  database every worker of the campaign already shares), taken with an INSERT that the
  primary key makes atomic;
* its holder renews it every ``lease / 4`` seconds from a background thread; a holder
  that dies stops renewing, and after ``lease`` seconds (BRU_CAMPAIGN_LEASE_SECONDS,
  default 90) the next start takes the lock over, with a compare-and-set so that two
  late starters cannot both win;
* the holder gives it back when the campaign ends, whether it succeeded or failed.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from bru_core.errors import BruError
from bru_core.settings import ensure_sqlite_folder

_metadata = sa.MetaData()
LOCKS = sa.Table(
    "bru_campaign_locks",
    _metadata,
    sa.Column("campaign", sa.String(255), primary_key=True),
    sa.Column("holder", sa.String(255), nullable=False),
    sa.Column("acquired_at", sa.Float, nullable=False),
    sa.Column("renewed_at", sa.Float, nullable=False),
)


class CampaignBusyError(BruError):
    """The campaign is already running elsewhere (its lock is held and renewed)."""


def new_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _engine(url: str) -> sa.Engine:
    ensure_sqlite_folder(url)
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    engine = sa.create_engine(url, **kwargs)
    _metadata.create_all(engine, checkfirst=True)
    return engine


def holder_of(url: str, campaign: str, lease: float) -> tuple[str, float] | None:
    """(holder, seconds since it last renewed) if a live holder has the lock, else None."""
    engine = _engine(url)
    try:
        with engine.connect() as connection:
            row = connection.execute(sa.select(LOCKS).where(LOCKS.c.campaign == campaign)).first()
    finally:
        engine.dispose()
    if row is None or time.time() - row.renewed_at > lease:
        return None
    return row.holder, time.time() - row.renewed_at


def check_free(url: str, campaign: str, lease: float) -> None:
    """CampaignBusyError (one line) if a live holder has the campaign's lock: the check a
    command makes before it starts anything; the flow's own acquisition settles races."""
    held = holder_of(url, campaign, lease)
    if held is not None:
        raise _busy(campaign, *held)


def _busy(campaign: str, holder: str, age: float) -> CampaignBusyError:
    return CampaignBusyError(
        f"campaign {campaign!r} is already running ({holder}, seen {age:.0f} s ago); wait for it to finish, "
        "or give this campaign another name"
    )


def _acquire(engine: sa.Engine, campaign: str, holder: str, lease: float) -> None:
    now = time.time()
    take = sa.insert(LOCKS).values(campaign=campaign, holder=holder, acquired_at=now, renewed_at=now)
    try:
        with engine.begin() as connection:
            connection.execute(take)
        return
    except IntegrityError:
        pass
    with engine.begin() as connection:
        row = connection.execute(sa.select(LOCKS).where(LOCKS.c.campaign == campaign)).first()
        if row is None:  # released in between: try once more
            connection.execute(take)
            return
        if row.holder == holder:
            return
        if now - row.renewed_at <= lease:
            raise _busy(campaign, row.holder, now - row.renewed_at)
        taken = connection.execute(  # a dead holder's lock: take it over, unless someone just did
            sa.update(LOCKS)
            .where(LOCKS.c.campaign == campaign, LOCKS.c.holder == row.holder, LOCKS.c.renewed_at == row.renewed_at)
            .values(holder=holder, acquired_at=now, renewed_at=now)
        )
        if taken.rowcount != 1:
            raise _busy(campaign, "another process", 0.0)


@contextmanager
def campaign_lock(url: str, campaign: str, lease: float, holder: str | None = None) -> Iterator[str]:
    """Hold the campaign's lock for the body, renewing it; CampaignBusyError if a live
    holder has it. Yields the holder id."""
    holder = holder or new_holder()
    engine = _engine(url)
    try:
        _acquire(engine, campaign, holder, lease)
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(lease / 4):
                try:
                    with engine.begin() as connection:
                        connection.execute(
                            sa.update(LOCKS)
                            .where(LOCKS.c.campaign == campaign, LOCKS.c.holder == holder)
                            .values(renewed_at=time.time())
                        )
                except Exception:  # a database restart: try again at the next beat
                    pass

        renewer = threading.Thread(target=renew, name="bru-campaign-lock", daemon=True)
        renewer.start()
        try:
            yield holder
        finally:
            stop.set()
            renewer.join(timeout=5)
            with engine.begin() as connection:
                connection.execute(sa.delete(LOCKS).where(LOCKS.c.campaign == campaign, LOCKS.c.holder == holder))
    finally:
        engine.dispose()
