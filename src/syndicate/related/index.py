"""The stored index: reading and writing features, frozen document frequencies and lists.

Everything here is plain SQL through SQLAlchemy Core, the same on SQLite and PostgreSQL.
Long IN lists are cut into chunks: SQLite caps a statement's parameters.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from syndicate.related.features import Doc, Settings
from syndicate.related.text import term_counts
from syndicate.store import (
    RelatedDocument,
    RelatedFeature,
    RelatedLink,
    RelatedTerm,
    Review,
    ReviewTag,
)
from syndicate.store.database import in_batches

Entry = tuple[float, str]  # (score, target id)


def best(scores: dict[str, float], keep: int, min_score: float) -> list[Entry]:
    """The `keep` best entries: highest score first, ties to the smaller id."""
    ranked = sorted((-s, t) for t, s in scores.items() if s >= min_score)
    return [(-s, t) for s, t in ranked[:keep]]


def floor_of(entries: Sequence[Entry], settings: Settings) -> float:
    return entries[-1][0] if len(entries) >= settings.keep else settings.min_score


def review_text(
    title: str, film: str | None, summary: str | None, body_html: str | None
) -> Counter[str]:
    return term_counts(title, film, summary or "", body_html or "")


def doc_of(review: Review) -> Doc:
    return Doc(review.id, review.film, review.year, review.director, tuple(review.tags))


def frozen_df(session: Session, keys: Iterable[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for batch in in_batches(set(keys)):
        query = select(RelatedTerm.term, RelatedTerm.documents).where(RelatedTerm.term.in_(batch))
        found.update(session.execute(query).all())
    return found


def stored_vector(session: Session, review_id: str) -> dict[str, float]:
    query = select(RelatedFeature.feature, RelatedFeature.weight).where(
        RelatedFeature.review_id == review_id
    )
    return dict(session.execute(query).all())


def postings(session: Session, features: Sequence[str]) -> Iterator[tuple[str, str, float]]:
    """(review id, feature, weight) for every review with one of these features."""
    for batch in in_batches(features):
        query = select(RelatedFeature.review_id, RelatedFeature.feature, RelatedFeature.weight)
        yield from session.execute(query.where(RelatedFeature.feature.in_(batch)))


def stored_list(session: Session, review_id: str) -> list[Entry]:
    query = (
        select(RelatedLink.score, RelatedLink.target_id)
        .where(RelatedLink.review_id == review_id)
        .order_by(RelatedLink.score.desc(), RelatedLink.target_id)
    )
    return list(session.execute(query))


def floors(session: Session, review_ids: Iterable[str]) -> dict[str, float]:
    found: dict[str, float] = {}
    for batch in in_batches(review_ids):
        query = select(RelatedDocument.review_id, RelatedDocument.floor).where(
            RelatedDocument.review_id.in_(batch)
        )
        found.update(session.execute(query).all())
    return found


def lists_containing(session: Session, review_ids: Iterable[str]) -> set[str]:
    found: set[str] = set()
    for batch in in_batches(review_ids):
        query = select(RelatedLink.review_id).where(RelatedLink.target_id.in_(batch))
        found.update(session.scalars(query))
    return found


def forget(session: Session, review_ids: Iterable[str]) -> None:
    """Drop reviews from the index: their features, their lists, their place in others'."""
    for batch in in_batches(review_ids):
        session.execute(delete(RelatedFeature).where(RelatedFeature.review_id.in_(batch)))
        session.execute(delete(RelatedLink).where(RelatedLink.review_id.in_(batch)))
        session.execute(delete(RelatedLink).where(RelatedLink.target_id.in_(batch)))
        session.execute(delete(RelatedDocument).where(RelatedDocument.review_id.in_(batch)))


def write_list(
    session: Session, review_id: str, entries: Sequence[Entry], settings: Settings
) -> None:
    session.execute(delete(RelatedLink).where(RelatedLink.review_id == review_id))
    add_rows(
        session,
        RelatedLink,
        [{"review_id": review_id, "target_id": t, "score": s} for s, t in entries],
    )
    set_floor(session, review_id, floor_of(entries, settings))


def set_floor(session: Session, review_id: str, floor: float) -> None:
    session.execute(
        RelatedDocument.__table__.update()
        .where(RelatedDocument.__table__.c.review_id == review_id)
        .values(floor=floor)
    )


def add_rows(session: Session, model: Any, rows: Iterable[dict[str, Any]]) -> None:
    """Core executemany inserts: no ORM objects, which a full build could not afford."""
    for batch in in_batches(rows, 5000):
        session.execute(insert(model.__table__), batch)


def add_plain_rows(session: Session, model: Any, rows: Iterable[tuple[Any, ...]]) -> None:
    """Rows of plain strings and numbers, in column order, straight to the driver's
    executemany: a full build writes millions, and SQLAlchemy's per-row work on dicts
    was most of its time. Only for tables whose columns need no type conversion."""
    table = model.__table__
    style = session.get_bind().dialect.paramstyle
    marker = "?" if style == "qmark" else "%s"  # sqlite3; psycopg ("format"/"pyformat")
    names = ", ".join(c.name for c in table.columns)
    sql = f"INSERT INTO {table.name} ({names}) VALUES ({', '.join([marker] * len(table.columns))})"
    connection = session.connection()
    for batch in in_batches(rows, 10_000):
        connection.exec_driver_sql(sql, batch)


def tags_by_review(
    session: Session, review_ids: Iterable[str] | None = None
) -> dict[str, list[str]]:
    query = select(ReviewTag.review_id, ReviewTag.tag).order_by(
        ReviewTag.review_id, ReviewTag.position
    )
    found: dict[str, list[str]] = {}
    batches = [None] if review_ids is None else list(in_batches(review_ids))
    for batch in batches:
        q = query if batch is None else query.where(ReviewTag.review_id.in_(batch))
        for review_id, tag in session.execute(q):
            found.setdefault(review_id, []).append(tag)
    return found
