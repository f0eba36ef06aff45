"""The results database: aggregated evidence that users query (SQLAlchemy 2 typed ORM).

One campaign's rows are replaced as a whole, in one transaction, each time it is
aggregated: never duplicated, never half-written. The schema is created and upgraded by
Alembic (bru_core/migrations), and documented for plain-SQL users in
docs/results-schema.md. SQLite under the bru home folder by default; any SQLAlchemy URL,
PostgreSQL through psycopg 3.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from bru_core.errors import BruError
from bru_core.settings import ensure_sqlite_folder, shown_url

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
WHAT = ("summary", "evaluations", "comparisons", "rankings", "studies", "curves", "tasks", "campaigns")
# The columns a terminal table shows (json and csv carry every column).
BRIEF = {
    "summary": ("task", "activation", "metric", "n", "n_failed", "mean", "sd", "median", "iqm", "ci_low", "ci_high"),
    "evaluations": (
        "task",
        "activation",
        "seed",
        "status",
        "test_error",
        "test_loss",
        "best_val_loss",
        "log_error_quotient",
        "train_loss_auc",
        "epochs_to_target",
    ),
    "comparisons": (
        "task",
        "metric",
        "a",
        "b",
        "family",
        "n",
        "estimate",
        "ci_low",
        "ci_high",
        "test",
        "p_value",
        "p_adjusted",
        "mdd",
        "better",
    ),
    "rankings": (
        "metric",
        "activation",
        "mean_rank",
        "n_tasks",
        "friedman_statistic",
        "friedman_p",
        "critical_difference",
    ),
    "studies": ("task", "activation", "trials", "done", "complete", "pruned", "failed", "lost", "best_value"),
    "curves": ("task", "activation", "seed", "metric", "epoch", "value"),
    "tasks": ("task", "objective", "epochs", "primary_metric", "target_metric", "target"),
    "campaigns": ("name", "aggregated_at", "bru_version", "tracking_uri"),
}


class Base(DeclarativeBase):
    pass


def _campaign_fk() -> Mapped[int]:
    return mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), index=True)


class Campaign(Base):
    __tablename__ = "campaigns"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    protocol: Mapped[str] = mapped_column(Text)
    tracking_uri: Mapped[str] = mapped_column(Text)
    mlflow_experiment_id: Mapped[str] = mapped_column(String(64))
    aggregated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    bru_version: Mapped[str] = mapped_column(String(40))


class Task(Base):
    __tablename__ = "tasks"
    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = _campaign_fk()
    task: Mapped[str] = mapped_column(String(100))
    dataset: Mapped[str] = mapped_column(String(50))
    model: Mapped[str] = mapped_column(String(50))
    objective: Mapped[str] = mapped_column(String(20))
    epochs: Mapped[int] = mapped_column(Integer)
    primary_metric: Mapped[str] = mapped_column(String(40))
    target_metric: Mapped[str] = mapped_column(String(40))
    target: Mapped[float | None] = mapped_column(Float)


class Study(Base):
    __tablename__ = "studies"
    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = _campaign_fk()
    task: Mapped[str] = mapped_column(String(100))
    activation: Mapped[str] = mapped_column(String(100))
    study_name: Mapped[str] = mapped_column(String(300))
    trials: Mapped[int | None] = mapped_column(Integer)  # the budget
    done: Mapped[int | None] = mapped_column(Integer)
    complete: Mapped[int | None] = mapped_column(Integer)
    pruned: Mapped[int | None] = mapped_column(Integer)
    failed: Mapped[int | None] = mapped_column(Integer)
    lost: Mapped[int | None] = mapped_column(Integer)
    best_value: Mapped[float | None] = mapped_column(Float)
    best_params: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    mlflow_run_id: Mapped[str] = mapped_column(String(64))


class Evaluation(Base):
    __tablename__ = "evaluations"
    __table_args__ = (UniqueConstraint("campaign_id", "task", "activation", "seed"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = _campaign_fk()
    task: Mapped[str] = mapped_column(String(100))
    activation: Mapped[str] = mapped_column(String(100))
    seed: Mapped[int] = mapped_column(Integer)
    mlflow_run_id: Mapped[str] = mapped_column(String(64))
    test_error: Mapped[float | None] = mapped_column(Float)
    test_loss: Mapped[float | None] = mapped_column(Float)
    best_val_loss: Mapped[float | None] = mapped_column(Float)
    error_quotient: Mapped[float | None] = mapped_column(Float)  # test / train loss, as logged (not analysed)
    log_error_quotient: Mapped[float | None] = mapped_column(Float)  # ln(test / max(train, floor)): analysed
    train_loss_auc: Mapped[float | None] = mapped_column(Float)
    epochs_to_target: Mapped[float | None] = mapped_column(Float)
    val_error: Mapped[float | None] = mapped_column(Float)
    val_loss: Mapped[float | None] = mapped_column(Float)
    train_loss: Mapped[float | None] = mapped_column(Float)
    epochs: Mapped[int] = mapped_column(Integer)
    seconds: Mapped[float | None] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(20), default="finished")  # finished | diverged (metrics empty)
    failure: Mapped[str | None] = mapped_column(Text)  # why it diverged


class SummaryRow(Base):
    __tablename__ = "summaries"
    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = _campaign_fk()
    task: Mapped[str] = mapped_column(String(100))
    activation: Mapped[str] = mapped_column(String(100))
    metric: Mapped[str] = mapped_column(String(40))
    lower_is_better: Mapped[bool] = mapped_column(Boolean)
    n: Mapped[int] = mapped_column(Integer)  # finite values
    n_failed: Mapped[int] = mapped_column(Integer, default=0)  # diverged seeds: not in n, mean or CI
    n_censored: Mapped[int] = mapped_column(Integer, default=0)  # epochs_to_target: seeds that never reached it
    mean: Mapped[float | None] = mapped_column(Float)  # None when every seed failed
    sd: Mapped[float | None] = mapped_column(Float)
    median: Mapped[float | None] = mapped_column(Float)
    iqm: Mapped[float | None] = mapped_column(Float)
    ci_low: Mapped[float | None] = mapped_column(Float)  # 95% t-interval of the mean
    ci_high: Mapped[float | None] = mapped_column(Float)


class ComparisonRow(Base):
    __tablename__ = "comparisons"
    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = _campaign_fk()
    task: Mapped[str] = mapped_column(String(100))
    metric: Mapped[str] = mapped_column(String(40))
    a: Mapped[str] = mapped_column(String(100))
    b: Mapped[str] = mapped_column(String(100))
    family: Mapped[str] = mapped_column(String(20), default="exploratory")  # confirmatory | exploratory
    n: Mapped[int] = mapped_column(Integer)  # seeds both have, failures included
    n_failed_a: Mapped[int] = mapped_column(Integer, default=0)
    n_failed_b: Mapped[int] = mapped_column(Integer, default=0)
    mean_a: Mapped[float | None] = mapped_column(Float)  # over the pairs where neither failed
    mean_b: Mapped[float | None] = mapped_column(Float)
    diff: Mapped[float | None] = mapped_column(Float)  # mean_a - mean_b
    estimate: Mapped[float | None] = mapped_column(Float)  # the test's own: Hodges-Lehmann (Wilcoxon), mean (t)
    ci_low: Mapped[float | None] = mapped_column(Float)  # 95% interval of the estimate, inverting the same test
    ci_high: Mapped[float | None] = mapped_column(Float)
    test: Mapped[str] = mapped_column(String(40))
    statistic: Mapped[float | None] = mapped_column(Float)
    p_value: Mapped[float | None] = mapped_column(Float)
    p_adjusted: Mapped[float | None] = mapped_column(Float)  # Holm, within the row's family
    mdd: Mapped[float | None] = mapped_column(Float)  # confirmatory: minimum detectable difference at 80% power
    effect_size: Mapped[float | None] = mapped_column(Float)
    effect_size_kind: Mapped[str] = mapped_column(String(20))
    better: Mapped[str] = mapped_column(String(20))  # better | worse | no difference | not tested (a against b)
    prob_improvement: Mapped[float | None] = mapped_column(Float)
    lower_is_better: Mapped[bool] = mapped_column(Boolean)
    note: Mapped[str] = mapped_column(Text, default="")


class RankingRow(Base):
    __tablename__ = "rankings"
    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = _campaign_fk()
    metric: Mapped[str] = mapped_column(String(40))  # "primary": each task's headline metric
    activation: Mapped[str] = mapped_column(String(100))
    mean_rank: Mapped[float] = mapped_column(Float)
    n_tasks: Mapped[int] = mapped_column(Integer)
    friedman_statistic: Mapped[float | None] = mapped_column(Float)
    friedman_p: Mapped[float | None] = mapped_column(Float)
    critical_difference: Mapped[float | None] = mapped_column(Float)
    note: Mapped[str] = mapped_column(Text, default="")


class CurvePoint(Base):
    __tablename__ = "curves"
    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = _campaign_fk()
    task: Mapped[str] = mapped_column(String(100))
    activation: Mapped[str] = mapped_column(String(100))
    seed: Mapped[int] = mapped_column(Integer)
    metric: Mapped[str] = mapped_column(String(40))
    epoch: Mapped[int] = mapped_column(Integer)
    value: Mapped[float] = mapped_column(Float)


TABLES: dict[str, type[Base]] = {
    "campaigns": Campaign,
    "tasks": Task,
    "studies": Study,
    "evaluations": Evaluation,
    "summary": SummaryRow,
    "comparisons": ComparisonRow,
    "rankings": RankingRow,
    "curves": CurvePoint,
}


# --------------------------------------------------------------------------- the store


def _engine(url: str) -> Engine:
    ensure_sqlite_folder(url)
    engine = create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        from sqlalchemy import event

        @event.listens_for(engine, "connect")
        def _foreign_keys(dbapi_connection, _record) -> None:  # SQLite enforces them only when asked
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

    return engine


def upgrade(engine: Engine) -> None:
    """Create or upgrade the schema to the newest Alembic revision."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def check_reachable(url: str) -> None:
    """Before a campaign starts: a results database on a server answers, so that a wrong
    BRU_RESULTS_URL is found now, not after days of training. Nothing is written (a SQLite
    file is created when the aggregation first writes it)."""
    if url.startswith("sqlite"):
        return
    try:
        engine = create_engine(url)
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()
    except (SQLAlchemyError, ImportError) as exc:
        raise BruError(
            f"results database {shown_url(url)} cannot be reached: {str(exc).splitlines()[0][:200]}; "
            "check BRU_RESULTS_URL (or --results-url)"
        ) from None


class ResultsStore:
    """The results database at ``url`` (schema upgraded on open)."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self.engine = _engine(url)
            upgrade(self.engine)
        except SQLAlchemyError as exc:
            raise BruError(
                f"results database {shown_url(url)} cannot be opened: {str(exc).splitlines()[0][:200]}"
            ) from None

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def replace_campaign(self, campaign: Campaign, rows: Iterable[Base]) -> None:
        """Delete the campaign's rows and write the new ones, in one transaction."""
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            old = session.scalar(select(Campaign).where(Campaign.name == campaign.name))
            if old is not None:
                for table in TABLES.values():
                    if table is not Campaign:
                        session.execute(delete(table).where(table.campaign_id == old.id))
                session.delete(old)
                session.flush()
            session.add(campaign)
            session.flush()
            for row in rows:
                row.campaign_id = campaign.id
                session.add(row)

    def campaigns(self) -> list[str]:
        with Session(self.engine) as session:
            return list(session.scalars(select(Campaign.name).order_by(Campaign.name)))

    def campaign(self, name: str) -> Campaign:
        with Session(self.engine) as session:
            found = session.scalar(select(Campaign).where(Campaign.name == name))
            if found is None:
                known = ", ".join(self.campaigns()) or "none yet (run bru aggregate)"
                raise BruError(f"unknown campaign {name!r}; aggregated campaigns: {known}")
            session.expunge(found)
            return found

    def records(
        self, what: str, campaign: str | None = None, task: str | None = None, metric: str | None = None
    ) -> list[dict[str, Any]]:
        """Rows of one table as plain dicts, with the campaign's name; filters are checked
        against what exists, so a typo names the alternatives."""
        if what not in TABLES:
            raise BruError(f"--what: {what!r} is not one of {', '.join(WHAT)}")
        table = TABLES[what]
        with Session(self.engine) as session:
            names = {c.id: c.name for c in session.scalars(select(Campaign))}
            if campaign is not None and campaign not in names.values():
                known = ", ".join(sorted(names.values())) or "none yet (run bru aggregate)"
                raise BruError(f"unknown campaign {campaign!r}; aggregated campaigns: {known}")
            query = select(table)
            if campaign is not None:
                wanted = next(i for i, n in names.items() if n == campaign)
                query = query.where((table.id if table is Campaign else table.campaign_id) == wanted)
            if task is not None:
                tasks = set(session.scalars(select(Task.task).where(Task.campaign_id.in_(_ids(names, campaign)))))
                if task not in tasks:
                    raise BruError(f"unknown task {task!r}; tasks: {', '.join(sorted(tasks)) or 'none'}")
                if hasattr(table, "task"):
                    query = query.where(table.task == task)
            if metric is not None:
                metrics = set(
                    session.scalars(select(SummaryRow.metric).where(SummaryRow.campaign_id.in_(_ids(names, campaign))))
                )
                if metric not in metrics:
                    raise BruError(f"unknown metric {metric!r}; metrics: {', '.join(sorted(metrics)) or 'none'}")
                if hasattr(table, "metric"):
                    query = query.where(table.metric.in_([metric, "primary"] if table is RankingRow else [metric]))
            rows = []
            for row in session.scalars(query.order_by(table.id)):
                record = {
                    c.key: getattr(row, c.key) for c in table.__table__.columns if c.key not in ("id", "campaign_id")
                }
                if table is not Campaign:
                    record = {"campaign": names[row.campaign_id], **record}
                elif isinstance(record.get("aggregated_at"), datetime):
                    record["aggregated_at"] = record["aggregated_at"].isoformat()
                rows.append(record)
            return rows


def _ids(names: dict[int, str], campaign: str | None) -> list[int]:
    return [i for i, n in names.items() if campaign is None or n == campaign]


def now() -> datetime:
    return datetime.now(UTC)


def load(
    what: str = "comparisons",
    campaign: str | None = None,
    task: str | None = None,
    metric: str | None = None,
    url: str | None = None,
):
    """The Python API: one table of the results database as a pandas DataFrame."""
    import pandas as pd

    from bru_core.settings import get_settings

    with ResultsStore(url or get_settings().results) as store:
        return pd.DataFrame(store.records(what, campaign, task, metric))
