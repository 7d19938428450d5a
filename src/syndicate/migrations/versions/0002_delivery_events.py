"""delivery events: what SendGrid's event webhook reports, and per-delivery counts

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 11:15:15.621023
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "delivery_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("sg_event_id", sa.String(length=200), nullable=False),
        sa.Column("event", sa.String(length=30), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=True),
        sa.Column("issue_id", sa.Integer(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["issue_id"], ["digest_issues.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["subscriber_id"], ["subscribers.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sg_event_id"),
    )
    # Existing deliveries start with no events: zero opens and clicks.
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("delivered_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("opens", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("clicks", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("suppressed_by", sa.String(length=30), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("suppressed_by")
        batch_op.drop_column("clicks")
        batch_op.drop_column("opens")
        batch_op.drop_column("delivered_at")

    op.drop_table("delivery_events")
