"""related reviews: features, inverted index, frozen document frequencies, stored lists

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 14:30:00.000000

The tables start empty: the first gather after this upgrade builds every list.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _review_fk(column: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint([column], ["reviews.id"], ondelete="CASCADE", onupdate="CASCADE")


def upgrade() -> None:
    op.create_table(
        "related_builds",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("documents", sa.Integer(), nullable=False),
        sa.Column("settings", sa.String(length=64), nullable=False),
        sa.Column("changes", sa.Integer(), nullable=False),
        sa.Column("built_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "related_terms",
        sa.Column("term", sa.String(length=200), nullable=False),
        sa.Column("documents", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("term"),
    )
    op.create_table(
        "related_documents",
        sa.Column("review_id", sa.String(length=200), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("updated", sa.DateTime(), nullable=False),
        sa.Column("floor", sa.Float(), nullable=False),
        _review_fk("review_id"),
        sa.PrimaryKeyConstraint("review_id"),
    )
    op.create_table(
        "related_features",
        sa.Column("feature", sa.String(length=200), nullable=False),
        sa.Column("review_id", sa.String(length=200), nullable=False),
        sa.Column("weight", sa.Float(), nullable=False),
        _review_fk("review_id"),
        sa.PrimaryKeyConstraint("feature", "review_id"),
    )
    with op.batch_alter_table("related_features", schema=None) as batch_op:
        batch_op.create_index("ix_related_features_review", ["review_id"], unique=False)
    op.create_table(
        "related_links",
        sa.Column("review_id", sa.String(length=200), nullable=False),
        sa.Column("target_id", sa.String(length=200), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        _review_fk("review_id"),
        _review_fk("target_id"),
        sa.PrimaryKeyConstraint("review_id", "target_id"),
    )
    with op.batch_alter_table("related_links", schema=None) as batch_op:
        batch_op.create_index("ix_related_links_target", ["target_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("related_links", schema=None) as batch_op:
        batch_op.drop_index("ix_related_links_target")
    op.drop_table("related_links")
    with op.batch_alter_table("related_features", schema=None) as batch_op:
        batch_op.drop_index("ix_related_features_review")
    op.drop_table("related_features")
    op.drop_table("related_documents")
    op.drop_table("related_terms")
    op.drop_table("related_builds")
