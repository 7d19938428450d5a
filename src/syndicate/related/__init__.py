"""Related reviews: for every review, the most related others in the archive, stored and
kept current incrementally. docs/related.md gives the score and its reasoning.

- features: a review as a sparse vector, so relatedness is a dot product
- text: the words the text similarity compares
- index: the tables (store/related.py) read and written
- build: the full build; update: one review at a time; lookup: reading for a reader
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import event, or_, select
from sqlalchemy.orm import Session

from syndicate.config import Config
from syndicate.related.build import rebuild
from syndicate.related.features import Settings
from syndicate.related.lookup import related_reviews
from syndicate.related.update import update
from syndicate.store import RelatedBuild, RelatedDocument, Review, ReviewTag, Store
from syndicate.store.database import in_batches

log = logging.getLogger(__name__)

__all__ = [
    "Refresh",
    "Settings",
    "rebuild",
    "refresh",
    "refresh_store",
    "related_reviews",
    "watching",
]

# A full build replaces the incremental path once this share of the archive has been
# re-indexed since the last build (new, edited, withdrawn): one pass over everything is
# then cheap by comparison, and it refreshes the frozen document frequencies.
REBUILD_SHARE = 0.2
REBUILD_MIN = 20


@dataclass
class Refresh:
    rebuilt: bool = False
    indexed: int = 0
    removed: int = 0
    seconds: float = 0.0
    # Of which finding what changed: comparing the reviews with what the index holds.
    scan_seconds: float = 0.0

    def summary(self) -> str:
        if self.rebuilt:
            return f"related lists rebuilt for {self.indexed} review(s) in {self.seconds:.2f} s"
        if not (self.indexed or self.removed):
            return "related lists up to date"
        return (
            f"related lists updated for {self.indexed} new or edited and {self.removed} "
            f"withdrawn review(s) in {self.seconds:.2f} s"
        )


def stale(session: Session, among: Collection[str] | None = None) -> tuple[list[str], list[str]]:
    """Live reviews not indexed as they are now, and withdrawn ones still indexed: of
    all reviews (a pass over the whole table), or only of those `among`."""
    doc = RelatedDocument
    changed = select(Review.id).outerjoin(doc, doc.review_id == Review.id)
    changed = changed.where(
        Review.withdrawn_at.is_(None),
        or_(
            doc.review_id.is_(None),
            doc.fingerprint != Review.fingerprint,
            doc.updated != Review.updated,
        ),
    )
    gone = select(doc.review_id).join(Review, Review.id == doc.review_id)
    gone = gone.where(Review.withdrawn_at.is_not(None))
    if among is None:
        return list(session.scalars(changed)), list(session.scalars(gone))
    found: tuple[list[str], list[str]] = ([], [])
    for batch in in_batches(sorted(among)):
        found[0].extend(session.scalars(changed.where(Review.id.in_(batch))))
        found[1].extend(session.scalars(gone.where(doc.review_id.in_(batch))))
    return found


def refresh(
    session: Session,
    settings: Settings,
    *,
    full: bool = False,
    review_ids: Collection[str] | None = None,
) -> Refresh:
    """Bring the stored lists up to date: incrementally when little changed.

    `review_ids`: the reviews that may have changed (what a gather touched); without
    it, every review is compared with the index.
    """
    start = time.perf_counter()
    # Locked (on PostgreSQL) so two refreshes at once run one after the other: the
    # second then finds nothing left to do instead of inserting the same rows.
    build = session.get(RelatedBuild, 1, with_for_update=True)
    report = Refresh()
    # A build over a handful of reviews (a new site's first gather) has no word
    # frequencies worth keeping: until the archive has grown, rebuilding is cheap.
    grown = build is not None and build.documents >= REBUILD_MIN
    if build is not None and grown and not full and build.settings == settings.digest():
        changed, gone = stale(session, review_ids)
        report.scan_seconds = time.perf_counter() - start
        if not changed and not gone:
            return report
        allowance = max(REBUILD_MIN, int(build.documents * REBUILD_SHARE))
        if build.changes + len(changed) + len(gone) <= allowance:
            report.indexed = update(session, settings, build.documents, [*changed, *gone])
            report.removed = len(gone)
            build.changes += len(changed) + len(gone)
            report.seconds = time.perf_counter() - start
            log.info("%s", report.summary())
            return report
    report.rebuilt = True
    report.indexed = rebuild(session, settings)
    report.seconds = time.perf_counter() - start
    log.info("%s", report.summary())
    return report


def refresh_store(
    config: Config,
    store: Store,
    *,
    full: bool = False,
    review_ids: Collection[str] | None = None,
) -> Refresh:
    with store.session() as session:
        settings = Settings.from_config(config.related)
        return refresh(session, settings, full=full, review_ids=review_ids)


@contextmanager
def watching(store: Store) -> Iterator[set[str]]:
    """The ids of the reviews added, changed or deleted through `store` meanwhile, so a
    refresh after a gather need not compare the whole archive with the index."""
    touched: set[str] = set()

    def collect(session: Session, _context: object) -> None:
        for item in (*session.new, *session.dirty, *session.deleted):
            if isinstance(item, Review):
                touched.add(item.id)
            elif isinstance(item, ReviewTag):
                touched.add(item.review_id)

    event.listen(store.sessions, "after_flush", collect)
    try:
        yield touched
    finally:
        event.remove(store.sessions, "after_flush", collect)
