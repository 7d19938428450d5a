"""Incremental updates: index a few new, edited or withdrawn reviews without touching the
rest of the archive beyond the lists they enter or leave.

For each changed review: its features are (re)written, its own list is computed from the
reviews that share a proposing feature with it (the inverted index), and it is offered to
each of those reviews' lists, entering one only if it beats that list's floor. Lists that
held a changed review are recomputed whole (a hole cannot be filled from the list alone).
With the document frequencies frozen at the last full build, the result is the list a
full build would give with those frequencies (tests/test_related.py checks it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from syndicate.related.features import (
    TAG,
    WORD,
    Settings,
    features,
    tag_keys,
    word_keys,
)
from syndicate.related.index import (
    Entry,
    add_rows,
    best,
    doc_of,
    floor_of,
    floors,
    forget,
    frozen_df,
    lists_containing,
    postings,
    review_text,
    stored_vector,
    write_list,
)
from syndicate.store import RelatedDocument, RelatedFeature, RelatedLink, Review
from syndicate.store.database import in_batches


class Scorer:
    """Scores one review against the stored index; caches the frozen frequencies it reads."""

    def __init__(self, session: Session, settings: Settings, documents: int) -> None:
        self.session = session
        self.settings = settings
        self.documents = documents  # as of the last full build
        self._df: dict[str, int] = {}

    def df(self, keys: Iterable[str]) -> dict[str, int]:
        wanted = [k for k in keys if k.startswith((WORD, TAG))]
        missing = [k for k in wanted if k not in self._df]
        if missing:
            found = frozen_df(self.session, missing)
            self._df.update((k, found.get(k, 0)) for k in missing)
        return {k: self._df[k] for k in wanted}

    def vector(self, review: Review) -> dict[str, float]:
        counts = review_text(review.title, review.film, review.summary, review.body_html)
        doc = doc_of(review)
        frozen = self.df(word_keys(counts) + tag_keys(doc))
        # Counted as if it had been in the build: one more review, holding its own terms.
        df = {k: n + 1 for k, n in frozen.items()}
        return features(doc, counts, df, self.documents + 1, self.settings)

    def scores(self, review_id: str, vector: Mapping[str, float]) -> dict[str, float]:
        """Every review sharing a feature with this one, and its score."""
        acc: dict[str, float] = {}
        for other, feature, weight in postings(self.session, list(vector)):
            if other != review_id:
                acc[other] = acc.get(other, 0.0) + vector[feature] * weight
        return {other: round(score, 6) for other, score in acc.items()}


def update(session: Session, settings: Settings, documents: int, review_ids: Iterable[str]) -> int:
    """Bring these reviews' entries up to date; returns how many live ones were indexed."""
    changed = set(review_ids)
    scorer = Scorer(session, settings, documents)
    affected = lists_containing(session, changed) - changed
    forget(session, changed)
    reviews: list[Review] = []
    for batch in in_batches(sorted(changed)):
        query = select(Review).where(Review.id.in_(batch), Review.withdrawn_at.is_(None))
        reviews.extend(session.scalars(query))
    reviews.sort(key=lambda r: r.id)
    vectors = {r.id: scorer.vector(r) for r in reviews}
    add_rows(
        session,
        RelatedDocument,
        [
            {
                "review_id": r.id,
                "fingerprint": r.fingerprint,
                "updated": r.updated,
                "floor": settings.min_score,
            }
            for r in reviews
        ],
    )
    add_rows(
        session,
        RelatedFeature,
        [
            {"feature": k, "review_id": r.id, "weight": v}
            for r in reviews
            for k, v in vectors[r.id].items()
        ],
    )
    for review in reviews:
        scores = scorer.scores(review.id, vectors[review.id])
        write_list(session, review.id, best(scores, settings.keep, settings.min_score), settings)
        offers = {
            other: score
            for other, score in scores.items()
            if score >= settings.min_score and other not in changed and other not in affected
        }
        entering = {
            o: offers[o] for o, floor in floors(session, offers).items() if offers[o] >= floor
        }
        _enter(session, settings, review.id, entering)
    for owner in sorted(affected):
        scores = scorer.scores(owner, stored_vector(session, owner))
        write_list(session, owner, best(scores, settings.keep, settings.min_score), settings)
    return len(reviews)


def _enter(session: Session, settings: Settings, target: str, owners: dict[str, float]) -> None:
    """Put `target` into each owner's list at its score, dropping what falls past `keep`.

    A few statements for all the lists at once, not a few per list: on PostgreSQL each
    round trip costs about as much as the work it carries.
    """
    if not owners:
        return
    current: dict[str, list[Entry]] = {owner: [] for owner in owners}
    for batch in in_batches(owners):
        query = select(RelatedLink.review_id, RelatedLink.score, RelatedLink.target_id)
        for owner, score, other in session.execute(query.where(RelatedLink.review_id.in_(batch))):
            if other != target:
                current[owner].append((score, other))
    added, dropped, new_floors = [], [], []
    for owner, score in owners.items():
        ranked = sorted([*current[owner], (score, target)], key=lambda e: (-e[0], e[1]))
        kept = ranked[: settings.keep]
        if (score, target) not in kept:
            continue
        added.append({"review_id": owner, "target_id": target, "score": score})
        dropped.extend({"o": owner, "t": other} for _, other in ranked[settings.keep :])
        new_floors.append({"o": owner, "f": floor_of(kept, settings)})
    links, docs = RelatedLink.__table__, RelatedDocument.__table__
    if dropped:
        session.execute(
            links.delete().where(
                links.c.review_id == bindparam("o"), links.c.target_id == bindparam("t")
            ),
            dropped,
        )
    add_rows(session, RelatedLink, added)
    if new_floors:
        session.execute(
            docs.update().where(docs.c.review_id == bindparam("o")).values(floor=bindparam("f")),
            new_floors,
        )
