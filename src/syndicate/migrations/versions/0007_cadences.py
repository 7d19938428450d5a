"""cadences: each reader's rhythm, hour and zone; issues per cadence and slot; drafts;
revisions readers care about; a per-digest planning lock

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 20:20:00.000000

Issues now list their readers as QUEUED deliveries when they are planned. An issue left
unfinished by an earlier version has no such rows: the upgrade adds them for the readers
that version would still have sent it to (active, subscribed before the issue, no row yet).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Plain ALTER TABLE ADD/DROP COLUMN, not Alembic's batch mode: on SQLite batch mode copies
# and drops the table, and dropping digest_issues or reviews would cascade to the rows
# that reference them (deliveries, tags). SQLite has had DROP COLUMN since 3.35.
NEW_COLUMNS = {
    "subscriptions": [
        sa.Column("cadence", sa.String(length=10), nullable=True),
        sa.Column("send_hour", sa.Integer(), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=True),
    ],
    "reviews": [
        sa.Column("revised_at", sa.DateTime(), nullable=True),
        sa.Column("revision_note", sa.Text(), nullable=True),
    ],
    "digest_issues": [
        sa.Column("cadence", sa.String(length=10), nullable=True),
        sa.Column("slot_at", sa.DateTime(), nullable=True),
    ],
}


def upgrade() -> None:
    for table, columns in NEW_COLUMNS.items():
        for column in columns:
            op.add_column(table, column)
    op.create_table(
        "digest_locks",
        sa.Column("digest", sa.String(length=100), nullable=False),
        sa.Column("holder", sa.String(length=100), nullable=False),
        sa.Column("locked_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("digest"),
    )
    op.execute(
        """
        INSERT INTO deliveries (issue_id, subscriber_id, status, attempts, attempted_at, error,
                                opens, clicks)
        SELECT i.id, s.id, 'queued', 0, i.created_at, '', 0, 0
        FROM digest_issues i
        JOIN subscriptions sn ON sn.digest = i.digest AND sn.created_at <= i.created_at
        JOIN subscribers s ON s.id = sn.subscriber_id AND s.status = 'active'
        WHERE i.status <> 'sent'
          AND NOT EXISTS (SELECT 1 FROM deliveries d
                          WHERE d.issue_id = i.id AND d.subscriber_id = s.id)
        """
    )


def downgrade() -> None:
    op.execute("DELETE FROM deliveries WHERE status = 'queued'")
    op.drop_table("digest_locks")
    for table, columns in NEW_COLUMNS.items():
        for column in columns:
            op.drop_column(table, column.name)
