"""The tables behind related reviews (syndicate.related): each review's features, the
inverted index over them, the document frequencies of the last full build, and the
stored related lists. docs/related.md explains the score they serve.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from syndicate.store.models import Base, UTCDateTime, utcnow

_REVIEW = "reviews.id"


class RelatedDocument(Base):
    """A review as last indexed. A live review without a row here, or whose fingerprint
    or `updated` differ from its review's, is stale: the next refresh re-indexes it."""

    __tablename__ = "related_documents"

    review_id: Mapped[str] = mapped_column(
        ForeignKey(_REVIEW, ondelete="CASCADE", onupdate="CASCADE"), primary_key=True
    )
    fingerprint: Mapped[str] = mapped_column(String(64))
    updated: Mapped[datetime] = mapped_column(UTCDateTime)
    # The lowest score a newcomer must beat to enter this review's list: its last link's
    # score when the list is full, else the minimum score. Saves reading the list.
    floor: Mapped[float] = mapped_column(Float)


class RelatedFeature(Base):
    """One weighted feature of a review (a distinctive word, a tag, the director, the
    film); the primary key is ordered by feature so it doubles as the inverted index."""

    __tablename__ = "related_features"

    feature: Mapped[str] = mapped_column(String(200), primary_key=True)
    review_id: Mapped[str] = mapped_column(
        ForeignKey(_REVIEW, ondelete="CASCADE", onupdate="CASCADE"), primary_key=True
    )
    weight: Mapped[float] = mapped_column(Float)

    __table_args__ = (Index("ix_related_features_review", "review_id"),)


class RelatedTerm(Base):
    """Document frequency of a word or tag at the last full build (IDF is frozen between
    builds so that an incremental update scores exactly as that build would)."""

    __tablename__ = "related_terms"

    term: Mapped[str] = mapped_column(String(200), primary_key=True)
    documents: Mapped[int] = mapped_column(Integer)


class RelatedBuild(Base):
    """The last full build: how big the archive was, and with which settings."""

    __tablename__ = "related_builds"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    documents: Mapped[int] = mapped_column(Integer)
    settings: Mapped[str] = mapped_column(String(64))
    # Reviews re-indexed or removed since, one by one: past a fifth of `documents`, the
    # frozen frequencies have drifted enough to rebuild.
    changes: Mapped[int] = mapped_column(Integer, default=0)
    built_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RelatedLink(Base):
    """One entry of a review's stored related list, best first by (score, target_id)."""

    __tablename__ = "related_links"

    review_id: Mapped[str] = mapped_column(
        ForeignKey(_REVIEW, ondelete="CASCADE", onupdate="CASCADE"), primary_key=True
    )
    target_id: Mapped[str] = mapped_column(
        ForeignKey(_REVIEW, ondelete="CASCADE", onupdate="CASCADE"), primary_key=True
    )
    score: Mapped[float] = mapped_column(Float)

    # "Which lists is this review in?": asked when it is edited or withdrawn.
    __table_args__ = (Index("ix_related_links_target", "target_id"),)
