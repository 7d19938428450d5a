"""Reading related reviews: the stored list, filtered for the moment and the reader.

The stored list is used when it is current. A review the index has not seen yet (the
gather that brings it has not refreshed the lists, or a test gathered by hand), or one
whose list runs out after filtering, is scored live against the index instead: the same
scores, nothing written.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, lazyload, load_only

from syndicate.related.features import Settings
from syndicate.related.index import Entry, best, stored_list, stored_vector
from syndicate.related.update import Scorer
from syndicate.store import RelatedBuild, RelatedDocument, Review
from syndicate.store.database import in_batches


def is_current(session: Session, review: Review) -> bool:
    doc = session.get(RelatedDocument, review.id)
    return (
        doc is not None
        and review.live
        and (doc.fingerprint, doc.updated) == (review.fingerprint, review.updated)
    )


def related_reviews(
    session: Session,
    review: Review,
    settings: Settings,
    limit: int,
    now: datetime,
    exclude: Collection[str] = (),
    exclude_urls: Collection[str] = (),
) -> list[Review]:
    """Up to `limit` live, already published reviews most related to `review`, best first."""
    if limit <= 0:
        return []
    current = is_current(session, review)
    entries = stored_list(session, review.id) if current else []
    picked = _usable(session, entries, now, {*exclude, review.id}, exclude_urls)
    if len(picked) >= limit or (current and len(entries) < settings.keep):
        return picked[:limit]
    build = session.get(RelatedBuild, 1)
    if build is None:
        return picked[:limit]
    scorer = Scorer(session, settings, build.documents)
    vector = stored_vector(session, review.id) if current else scorer.vector(review)
    scores = scorer.scores(review.id, vector)
    # Enough to survive the filters: what was excluded, plus a margin for the unpublished.
    wanted = limit + len(exclude) + settings.keep
    entries = best(scores, wanted, settings.min_score)
    return _usable(session, entries, now, {*exclude, review.id}, exclude_urls)[:limit]


def _usable(
    session: Session,
    entries: list[Entry],
    now: datetime,
    exclude: Collection[str],
    exclude_urls: Collection[str],
) -> list[Review]:
    wanted = [t for _, t in entries if t not in exclude]
    found: dict[str, Review] = {}
    # Only what a link shows: review pages ask this for every review in the archive.
    columns = load_only(
        Review.id, Review.title, Review.url, Review.author, Review.published, Review.film
    )
    for batch in in_batches(wanted):
        query = select(Review).options(columns, lazyload(Review.tag_rows))
        query = query.where(
            Review.id.in_(batch), Review.withdrawn_at.is_(None), Review.published <= now
        )
        found.update((r.id, r) for r in session.scalars(query))
    return [found[t] for t in wanted if t in found and found[t].url not in exclude_urls]
