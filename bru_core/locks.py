"""One running campaign per name: a leased lock row in the Optuna storage database.

Two processes running the same campaign at once would share its studies safely (trials
are admitted by number against the budget) but could train the same repeat seed twice,
since a repeat is reused only once it has finished. So the second start is refused:

* the lock is a row in ``bru_campaign_locks`` (created next to Optuna's tables, in the
  database every worker of the campaign already shares), taken with an INSERT that the
  primary key makes atomic;
* its holder renews it every ``lease / 4`` seconds from a background thread; a holder
  that dies stops renewing, and after ``lease`` seconds (BRU_CAMPAIGN_LEASE_SECONDS,
  default 90) the next start takes the lock over;
* but a holder on this machine whose process no longer exists (bru_core.processes: the
  same boot and pid namespace, the same pid and start time) is taken over at once, so a
  campaign killed outright can be rerun straight away; each take-over is a compare-and-set,
  so that two late starters cannot both win, and says which case it was in one log line;
* the holder gives it back when the campaign ends, whether it succeeded or failed.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from bru_core.errors import BruError
from bru_core.processes import Identity, alive_here, process_identity, this_machine
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


_IDENTITY = re.compile(r"^(?P<shown>.*) machine=(?P<machine>\S+) started=(?P<started>\d+)$")


def new_holder() -> str:
    """This process as a holder: ``host:pid:token`` to show, then where its pid means
    something and when it started (bru_core.processes), so that a holder on this machine
    whose process has died can be told from one that is only slow to renew."""
    me = process_identity()
    shown = f"{me.pid}:{uuid.uuid4().hex[:8]}"
    if me.machine is None or me.started is None:  # no /proc: the lease rule alone
        return f"{_host(255 - len(shown) - 1)}:{shown}"
    identity = f" machine={me.machine} started={me.started}"
    return f"{_host(255 - len(shown) - 1 - len(identity))}:{shown}{identity}"


def _host(room: int) -> str:
    """The host name, one word (the holder's parts are separated by spaces), cut to fit."""
    return re.sub(r"\s", "-", socket.gethostname())[: max(room, 1)]


def _parse(holder: str) -> tuple[str, Identity | None]:
    """(what to show, the holder's process) from a holder; no process for a holder written
    by an older bru (plain ``host:pid:token``) or given by hand."""
    match = _IDENTITY.match(holder)
    if match is None:
        return holder, None
    try:
        pid = int(match["shown"].rsplit(":", 2)[-2])
    except (IndexError, ValueError):
        return match["shown"], None
    return match["shown"], Identity(match["machine"], pid, match["started"])


class Held(NamedTuple):
    """Who holds a campaign's lock, and what can be told about it."""

    holder: str
    age: float  # seconds since it last renewed
    alive_here: bool | None  # its process on this machine runs (True) or is gone (False); None: cannot tell

    @property
    def shown(self) -> str:
        return _parse(self.holder)[0]

    def free(self, lease: float) -> bool:
        """The lock may be taken over: its holder is a dead process on this machine, or
        (alive or not, wherever it is) it has not renewed within the lease."""
        return self.alive_here is False or self.age > lease


def _held(holder: str, renewed_at: float, now: float) -> Held:
    identity = _parse(holder)[1]
    return Held(holder, now - renewed_at, alive_here(*identity) if identity is not None else None)


def _engine(url: str) -> sa.Engine:
    ensure_sqlite_folder(url)
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    engine = sa.create_engine(url, **kwargs)
    _metadata.create_all(engine, checkfirst=True)
    return engine


def holder_of(url: str, campaign: str, lease: float) -> Held | None:
    """The holder that keeps the campaign's lock now, else None (no lock, or one that may
    be taken over)."""
    engine = _engine(url)
    try:
        with engine.connect() as connection:
            row = connection.execute(sa.select(LOCKS).where(LOCKS.c.campaign == campaign)).first()
    finally:
        engine.dispose()
    if row is None:
        return None
    held = _held(row.holder, row.renewed_at, time.time())
    return None if held.free(lease) else held


def check_free(url: str, campaign: str, lease: float) -> None:
    """CampaignBusyError (one line) if a live holder has the campaign's lock: the check a
    command makes before it starts anything; the flow's own acquisition settles races."""
    held = holder_of(url, campaign, lease)
    if held is not None:
        raise _busy(campaign, held, lease)


def _busy(campaign: str, held: Held, lease: float) -> CampaignBusyError:
    identity = _parse(held.holder)[1]
    if held.alive_here:
        where = "a live process on this machine"
    elif identity is None:
        where = "a holder that does not say where it runs"
    elif identity.machine == this_machine():
        where = "a process on this machine that bru cannot look at"
    else:
        where = "a process on another machine"
    return CampaignBusyError(
        f"campaign {campaign!r} is already running ({held.shown}, {where}, seen {held.age:.0f} s ago; "
        f"its lease ends in {max(lease - held.age, 0):.0f} s unless renewed); wait for it to finish, "
        "or give this campaign another name"
    )


def _took_over(campaign: str, held: Held, lease: float) -> None:
    if held.alive_here is False:
        why = "a process on this machine that no longer exists"
    else:
        why = f"which had not renewed it for {held.age:.0f} s (lease {lease:.0f} s)"
    logging.getLogger("bru.locks").warning("campaign %s: took over the lock of %s, %s", campaign, held.shown, why)


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
        held = _held(row.holder, row.renewed_at, now)
        if not held.free(lease):
            raise _busy(campaign, held, lease)
        taken = connection.execute(  # a dead holder's lock: take it over, unless someone just did
            sa.update(LOCKS)
            .where(LOCKS.c.campaign == campaign, LOCKS.c.holder == row.holder, LOCKS.c.renewed_at == row.renewed_at)
            .values(holder=holder, acquired_at=now, renewed_at=now)
        )
        if taken.rowcount != 1:
            raise CampaignBusyError(
                f"campaign {campaign!r} is already running (another start took its lock over just now); "
                "wait for it to finish, or give this campaign another name"
            )
    _took_over(campaign, held, lease)


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
