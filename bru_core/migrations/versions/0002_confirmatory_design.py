"""The confirmatory design: comparison families, the test's own estimate, the minimum
detectable difference and failures counted; the log error quotient.

An older database upgrades in place: its comparison rows become ``exploratory`` (they were
adjusted over the whole campaign, with no declared family), its runs ``finished`` (only
finished runs were read then), and its counts of failures 0.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("comparisons") as table:
        table.add_column(sa.Column("family", sa.String(20), nullable=False, server_default="exploratory"))
        table.add_column(sa.Column("estimate", sa.Float))
        table.add_column(sa.Column("mdd", sa.Float))
        table.add_column(sa.Column("n_failed_a", sa.Integer, nullable=False, server_default="0"))
        table.add_column(sa.Column("n_failed_b", sa.Integer, nullable=False, server_default="0"))
    # The old rows' direction came from the mean difference: that is their estimate.
    op.execute("UPDATE comparisons SET estimate = diff")
    with op.batch_alter_table("summaries") as table:
        table.add_column(sa.Column("n_failed", sa.Integer, nullable=False, server_default="0"))
        table.add_column(sa.Column("n_censored", sa.Integer, nullable=False, server_default="0"))
        for name in ("mean", "median", "iqm"):
            table.alter_column(name, existing_type=sa.Float, nullable=True)
    with op.batch_alter_table("evaluations") as table:
        table.add_column(sa.Column("log_error_quotient", sa.Float))
        table.add_column(sa.Column("status", sa.String(20), nullable=False, server_default="finished"))
        table.add_column(sa.Column("failure", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("evaluations") as table:
        for name in ("failure", "status", "log_error_quotient"):
            table.drop_column(name)
    with op.batch_alter_table("summaries") as table:
        for name in ("mean", "median", "iqm"):
            table.alter_column(name, existing_type=sa.Float, nullable=False)
        for name in ("n_censored", "n_failed"):
            table.drop_column(name)
    with op.batch_alter_table("comparisons") as table:
        for name in ("n_failed_b", "n_failed_a", "mdd", "estimate", "family"):
            table.drop_column(name)
