"""The full build: every review's features and list from scratch, in memory.

Used for the first build, after the weights change, after the archive has grown or
changed by more than a fifth since the last build (its frozen document frequencies have
drifted), and by `syndicate related --rebuild`.
"""

from __future__ import annotations

import heapq
import logging
from array import array
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Row, delete, select
from sqlalchemy.orm import Session

from syndicate.related.features import WORD, Doc, Settings, features, tag_keys, word_keys
from syndicate.related.index import add_plain_rows, add_rows, review_text, tags_by_review
from syndicate.store import (
    RelatedBuild,
    RelatedDocument,
    RelatedFeature,
    RelatedLink,
    RelatedTerm,
    Review,
)

log = logging.getLogger(__name__)

_COLUMNS = (
    Review.id,
    Review.title,
    Review.film,
    Review.year,
    Review.director,
    Review.summary,
    Review.body_html,
    Review.fingerprint,
    Review.updated,
)


def _live(session: Session) -> Iterator[Row[Any]]:
    query = select(*_COLUMNS).where(Review.withdrawn_at.is_(None))
    yield from session.execute(query, execution_options={"yield_per": 1000})


def rebuild(session: Session, settings: Settings) -> int:
    """Replace the whole index; returns how many reviews it holds."""
    for model in (RelatedLink, RelatedFeature, RelatedDocument, RelatedTerm, RelatedBuild):
        session.execute(delete(model))
    # Secondary indexes are dropped for the bulk load and made again at the end: one sort
    # instead of millions of inserts in random order. Inside the transaction, so a build
    # that fails leaves them (and everything else) as they were.
    indexes = [*RelatedFeature.__table__.indexes, *RelatedLink.__table__.indexes]
    connection = session.connection()
    for index in indexes:
        index.drop(connection)
    tags = tags_by_review(session)

    # One pass over the text: each review's words kept as compact arrays of word numbers
    # and counts (a Counter per review would not fit for a large archive), and document
    # frequencies counted on the way.
    numbers: dict[str, int] = {}
    docs: list[Doc] = []
    stamps: list[tuple[str, Any]] = []
    bags: list[tuple[array[int], array[int]]] = []
    df: Counter[str] = Counter()
    for row in _live(session):
        doc = Doc(row.id, row.film, row.year, row.director, tuple(tags.get(row.id, ())))
        counts = review_text(row.title, row.film, row.summary, row.body_html)
        keys = word_keys(counts)
        df.update(keys)
        df.update(tag_keys(doc))
        ids = array("I", (numbers.setdefault(k, len(numbers)) for k in keys))
        bags.append((ids, array("I", counts.values())))
        docs.append(doc)
        stamps.append((row.fingerprint, row.updated))
    words = list(numbers)  # word number -> key
    documents = len(docs)
    # Python's order of ids, not the database's collation: ties between equal scores go
    # to the smaller id, exactly as in the incremental update.
    order = sorted(range(documents), key=lambda i: docs[i].id)
    docs, stamps, bags = (
        [docs[i] for i in order],
        [stamps[i] for i in order],
        [bags[i] for i in order],
    )
    vectors = []
    for doc, (ids, counts) in zip(docs, bags, strict=True):
        bag = Counter({words[i][len(WORD) :]: c for i, c in zip(ids, counts, strict=True)})
        vectors.append(features(doc, bag, df, documents, settings))
    del bags, numbers, words
    log.debug("related build: %d reviews read and weighed", documents)
    postings = _postings(vectors)
    entries = [sorted(heap, reverse=True) for heap in _best_pairs(vectors, postings, settings)]
    del vectors
    log.debug("related build: lists chosen")

    add_rows(
        session,
        RelatedDocument,
        (
            {
                "review_id": doc.id,
                "fingerprint": stamp[0],
                "updated": stamp[1],
                "floor": entries[i][-1][0]
                if len(entries[i]) >= settings.keep
                else settings.min_score,
            }
            for i, (doc, stamp) in enumerate(zip(docs, stamps, strict=True))
        ),
    )
    # In primary-key order (feature, then review): B-tree inserts in order are faster.
    log.debug("related build: documents written")
    add_plain_rows(
        session,
        RelatedFeature,
        ((k, docs[i].id, v) for k in sorted(postings) for i, v in zip(*postings[k], strict=True)),
    )
    log.debug("related build: features written")
    add_plain_rows(
        session,
        RelatedLink,
        ((docs[i].id, docs[-neg].id, score) for i in range(documents) for score, neg in entries[i]),
    )
    log.debug("related build: links written")
    # Words on a single review are left out: a missing word counts as on none, which
    # changes its IDF too little to matter and halves the table.
    add_plain_rows(session, RelatedTerm, ((term, n) for term, n in sorted(df.items()) if n > 1))
    for index in indexes:
        index.create(connection)
    session.add(RelatedBuild(id=1, documents=documents, settings=settings.digest()))
    session.flush()
    log.debug("related build: written")
    return documents


Postings = dict[str, tuple[list[int], list[float]]]


def _postings(vectors: list[dict[str, float]]) -> Postings:
    """Feature -> (review indexes, weights), indexes ascending."""
    found: Postings = {}
    for i, vector in enumerate(vectors):
        for k, v in vector.items():
            entry = found.get(k)
            if entry is None:
                found[k] = ([i], [v])
            else:
                entry[0].append(i)
                entry[1].append(v)
    return found


def _best_pairs(
    vectors: list[dict[str, float]], postings: Postings, settings: Settings
) -> list[list[tuple[float, int]]]:
    """Per review, a min-heap of its best `keep` (score, -index) pairs.

    Each pair sharing a feature is scored once (from its lower index, through the
    postings of its features) and offered to both heaps. Indexes follow review ids, so
    "-index" breaks ties the way the incremental update does: towards the smaller id.
    """
    keep, minimum = settings.keep, settings.min_score
    heaps: list[list[tuple[float, int]]] = [[] for _ in vectors]
    for a, vector in enumerate(vectors):
        acc: dict[int, float] = {}
        get = acc.get
        for k, va in vector.items():
            found, values = postings[k]
            for j in range(bisect_right(found, a), len(found)):
                b = found[j]
                acc[b] = get(b, 0.0) + va * values[j]
        for b, raw in acc.items():
            score = round(raw, 6)
            if score < minimum:
                continue
            for owner, item in ((a, (score, -b)), (b, (score, -a))):
                heap = heaps[owner]
                if len(heap) < keep:
                    heapq.heappush(heap, item)
                elif item > heap[0]:
                    heapq.heapreplace(heap, item)
    return heaps
