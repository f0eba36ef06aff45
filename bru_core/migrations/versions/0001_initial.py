"""The results database: campaigns, tasks, studies, evaluations, summaries, comparisons,
rankings and learning curves.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _campaign_id() -> sa.Column:
    return sa.Column(
        "campaign_id", sa.Integer, sa.ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=False, index=True
    )


def upgrade() -> None:
    op.create_table(
        "campaigns",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("protocol", sa.Text, nullable=False),
        sa.Column("tracking_uri", sa.Text, nullable=False),
        sa.Column("mlflow_experiment_id", sa.String(64), nullable=False),
        sa.Column("aggregated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("bru_version", sa.String(40), nullable=False),
    )
    op.create_table(
        "tasks",
        sa.Column("id", sa.Integer, primary_key=True),
        _campaign_id(),
        sa.Column("task", sa.String(100), nullable=False),
        sa.Column("dataset", sa.String(50), nullable=False),
        sa.Column("model", sa.String(50), nullable=False),
        sa.Column("objective", sa.String(20), nullable=False),
        sa.Column("epochs", sa.Integer, nullable=False),
        sa.Column("primary_metric", sa.String(40), nullable=False),
        sa.Column("target_metric", sa.String(40), nullable=False),
        sa.Column("target", sa.Float),
    )
    op.create_table(
        "studies",
        sa.Column("id", sa.Integer, primary_key=True),
        _campaign_id(),
        sa.Column("task", sa.String(100), nullable=False),
        sa.Column("activation", sa.String(100), nullable=False),
        sa.Column("study_name", sa.String(300), nullable=False),
        *(sa.Column(name, sa.Integer) for name in ("trials", "done", "complete", "pruned", "failed", "lost")),
        sa.Column("best_value", sa.Float),
        sa.Column("best_params", sa.JSON),
        sa.Column("mlflow_run_id", sa.String(64), nullable=False),
    )
    op.create_table(
        "evaluations",
        sa.Column("id", sa.Integer, primary_key=True),
        _campaign_id(),
        sa.Column("task", sa.String(100), nullable=False),
        sa.Column("activation", sa.String(100), nullable=False),
        sa.Column("seed", sa.Integer, nullable=False),
        sa.Column("mlflow_run_id", sa.String(64), nullable=False),
        *(
            sa.Column(name, sa.Float)
            for name in (
                "test_error",
                "test_loss",
                "best_val_loss",
                "error_quotient",
                "train_loss_auc",
                "epochs_to_target",
                "val_error",
                "val_loss",
                "train_loss",
            )
        ),
        sa.Column("epochs", sa.Integer, nullable=False),
        sa.Column("seconds", sa.Float),
        sa.UniqueConstraint("campaign_id", "task", "activation", "seed"),
    )
    op.create_table(
        "summaries",
        sa.Column("id", sa.Integer, primary_key=True),
        _campaign_id(),
        sa.Column("task", sa.String(100), nullable=False),
        sa.Column("activation", sa.String(100), nullable=False),
        sa.Column("metric", sa.String(40), nullable=False),
        sa.Column("lower_is_better", sa.Boolean, nullable=False),
        sa.Column("n", sa.Integer, nullable=False),
        sa.Column("mean", sa.Float, nullable=False),
        sa.Column("sd", sa.Float),
        sa.Column("median", sa.Float, nullable=False),
        sa.Column("iqm", sa.Float, nullable=False),
        sa.Column("ci_low", sa.Float),
        sa.Column("ci_high", sa.Float),
    )
    op.create_table(
        "comparisons",
        sa.Column("id", sa.Integer, primary_key=True),
        _campaign_id(),
        sa.Column("task", sa.String(100), nullable=False),
        sa.Column("metric", sa.String(40), nullable=False),
        sa.Column("a", sa.String(100), nullable=False),
        sa.Column("b", sa.String(100), nullable=False),
        sa.Column("n", sa.Integer, nullable=False),
        *(sa.Column(name, sa.Float) for name in ("mean_a", "mean_b", "diff", "ci_low", "ci_high")),
        sa.Column("test", sa.String(40), nullable=False),
        *(sa.Column(name, sa.Float) for name in ("statistic", "p_value", "p_adjusted", "effect_size")),
        sa.Column("effect_size_kind", sa.String(20), nullable=False),
        sa.Column("better", sa.String(20), nullable=False),
        sa.Column("prob_improvement", sa.Float),
        sa.Column("lower_is_better", sa.Boolean, nullable=False),
        sa.Column("note", sa.Text, nullable=False),
    )
    op.create_table(
        "rankings",
        sa.Column("id", sa.Integer, primary_key=True),
        _campaign_id(),
        sa.Column("metric", sa.String(40), nullable=False),
        sa.Column("activation", sa.String(100), nullable=False),
        sa.Column("mean_rank", sa.Float, nullable=False),
        sa.Column("n_tasks", sa.Integer, nullable=False),
        *(sa.Column(name, sa.Float) for name in ("friedman_statistic", "friedman_p", "critical_difference")),
        sa.Column("note", sa.Text, nullable=False),
    )
    op.create_table(
        "curves",
        sa.Column("id", sa.Integer, primary_key=True),
        _campaign_id(),
        sa.Column("task", sa.String(100), nullable=False),
        sa.Column("activation", sa.String(100), nullable=False),
        sa.Column("seed", sa.Integer, nullable=False),
        sa.Column("metric", sa.String(40), nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("value", sa.Float, nullable=False),
    )


def downgrade() -> None:
    for table in ("curves", "rankings", "comparisons", "summaries", "evaluations", "studies", "tasks", "campaigns"):
        op.drop_table(table)
