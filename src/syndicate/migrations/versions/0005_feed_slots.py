"""feed slots: each review's fixed place in each feed's archive pages, and each feed's page size

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 14:45:00.000000

The tables start empty: the first feeds build after this upgrade gives every review the
slot it had until now (its place in the feed in order of appearance) and records the page
size in use, so no archive page moves.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "feed_slots",
        sa.Column("feed_key", sa.String(length=500), nullable=False),
        sa.Column("review_id", sa.String(length=200), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("feed_key", "review_id"),
        sa.UniqueConstraint("feed_key", "slot", name="uq_feed_slots_slot"),
    )
    op.create_table(
        "feed_archives",
        sa.Column("feed_key", sa.String(length=500), nullable=False),
        sa.Column("page_size", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("feed_key"),
    )


def downgrade() -> None:
    op.drop_table("feed_archives")
    op.drop_table("feed_slots")
