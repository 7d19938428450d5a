"""Benchmark: related reviews on a 100,000-review archive (run by hand, `make bench`).

Generates an archive straight into a fresh database (SQLite in a temporary folder, or
--database-url): films reviewed once to a few times, directors with several films each,
tags from common ("drama") to rare, and bodies of about 150 words drawn from a Zipf
vocabulary plus each film's own names. Then times the full build of every related list
and its peak RSS, the refresh every gather runs when nothing changed, and the
incremental update for one new review (several times), one edit and one withdrawal.
Target (issue 6): one new review's related links in under 50 ms.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import random
import resource
import statistics
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, update

from syndicate import related
from syndicate.related.lookup import related_reviews
from syndicate.store import Review, ReviewTag, Store

SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in ("a", "e", "i", "o", "u", "ai", "ou")]
TAGS = [f"tag-{i}" for i in range(80)]
START = datetime(2010, 1, 1, tzinfo=UTC)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Archive:
    """Deterministic fake reviews: the same seed gives the same archive."""

    def __init__(self, seed: int = 6) -> None:
        self.random = random.Random(seed)
        words = {self._word(self.random.randint(1, 3)) for _ in range(60_000)}
        self.vocabulary = sorted(words)
        weights = [1 / (rank + 1) ** 1.05 for rank in range(len(self.vocabulary))]
        self.cumulative = list(_accumulate(weights))
        tag_weights = [1 / (rank + 1) for rank in range(len(TAGS))]
        self.tag_cumulative = list(_accumulate(tag_weights))

    def _word(self, syllables: int) -> str:
        return "".join(self.random.choice(SYLLABLES) for _ in range(syllables + 1))

    def film(self, number: int) -> tuple[str, int, str, list[str]]:
        """Film `number`: its title, year, director and three names its reviews mention."""
        r = random.Random(number)
        title = " ".join("".join(r.choice(SYLLABLES) for _ in range(3)).title() for _ in range(2))
        director = f"Director {r.randrange(8_000)}"
        names = ["".join(r.choice(SYLLABLES) for _ in range(3)) for _ in range(3)]
        return title, 1930 + r.randrange(95), director, names

    def review(self, index: int, film_count: int) -> tuple[dict[str, Any], list[str]]:
        r = self.random
        number = r.randrange(film_count)
        title, year, director, names = self.film(number)
        words = r.choices(self.vocabulary, cum_weights=self.cumulative, k=140)
        words += r.choices(names, k=8) + director.split()
        r.shuffle(words)
        body = "<p>" + " ".join(words) + ".</p>"
        tags = sorted(set(r.choices(TAGS, cum_weights=self.tag_cumulative, k=3)))
        published = START + timedelta(hours=index)
        review_id = f"review-{index:06d}"
        row = {
            "id": review_id,
            "source": "bench",
            "source_key": f"{review_id}.md",
            "fingerprint": hashlib.sha256(body.encode()).hexdigest(),
            "slug": review_id,
            "url": f"https://bench.example.com/reviews/{review_id}/",
            "title": f"{title}: a review",
            "film": title,
            "year": year,
            "director": director,
            "author": f"Critic {index % 40}",
            "summary": " ".join(words[:20]),
            "body_html": body,
            "featured": False,
            "related": [],
            "published": published,
            "updated": published,
            "first_seen": published,
        }
        return row, tags


def _accumulate(weights: list[float]) -> Iterator[float]:
    total = 0.0
    for w in weights:
        total += w
        yield total


def add(store: Store, rows: list[tuple[dict[str, Any], list[str]]]) -> None:
    if not rows:
        return
    with store.session() as session:
        session.execute(insert(Review.__table__), [row for row, _ in rows])
        tags = [
            {"review_id": row["id"], "tag": tag, "position": i}
            for row, row_tags in rows
            for i, tag in enumerate(row_tags)
        ]
        if tags:
            session.execute(insert(ReviewTag.__table__), tags)


def timed(label: str, action: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = action()
    elapsed = time.perf_counter() - start
    print(f"{label:<58} {elapsed * 1000:10.1f} ms", flush=True)
    return elapsed, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reviews", type=int, default=100_000)
    parser.add_argument("--new", type=int, default=5, help="new reviews added one at a time")
    parser.add_argument("--database-url", help="default: SQLite in a temporary folder")
    args = parser.parse_args()
    n = args.reviews
    print(f"python {platform.python_version()}, {os.cpu_count()} cores, {platform.machine()}")
    settings = related.Settings()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{tmp}/bench.db"
        store = Store(url)
        archive = Archive()
        films = max(1, int(n * 0.45))  # most films reviewed once, some several times
        start = time.perf_counter()
        batch: list[tuple[dict[str, Any], list[str]]] = []
        for i in range(n):
            batch.append(archive.review(i, films))
            if len(batch) == 5_000:
                add(store, batch)
                batch = []
        add(store, batch)
        print(f"generated {n:,} reviews in {time.perf_counter() - start:.1f} s")
        before = peak_rss_mb()

        def refresh(*ids: str, full: bool = False) -> related.Refresh:
            # As pipeline.gather does: only the reviews the gather touched are compared.
            with store.session() as session:
                return related.refresh(session, settings, full=full, review_ids=ids or None)

        build_time, report = timed(f"full build, {n:,} reviews", lambda: refresh(full=True))
        print(f"  {report.summary()}; peak RSS {peak_rss_mb():.0f} MB (before: {before:.0f} MB)")
        _, report = timed("`syndicate related`: compare every review, none changed", refresh)
        scan = report.scan_seconds

        times = []
        for k in range(args.new):
            row = archive.review(n + k, films)
            add(store, [row])
            new_id = row[0]["id"]
            elapsed, report = timed(
                f"one new review ({new_id}), incremental", lambda i=new_id: refresh(i)
            )
            assert not report.rebuilt and report.indexed == 1
            times.append(elapsed)
        edited = "review-000123"
        with store.session() as session:
            session.execute(
                update(Review)
                .where(Review.id == edited)
                .values(fingerprint="e" * 64, summary="an edited summary")
            )
        timed("one edited review, incremental", lambda: refresh(edited))
        with store.session() as session:
            session.execute(
                update(Review).where(Review.id == "review-000456").values(withdrawn_at=START)
            )
        timed("one withdrawn review, incremental", lambda: refresh("review-000456"))
        with store.session() as session:
            review = session.get(Review, f"review-{n:06d}")
            assert review is not None
            timed(
                "digest: a review's related links (stored list)",
                lambda: related_reviews(session, review, settings, 3, datetime.now(UTC)),
            )
        store.close()

    print("\nAs a Markdown table (for docs/benchmarks.md):\n")
    print("| Related reviews | Figure |\n| --- | ---: |")
    print(f"| full build, {n:,} reviews | {build_time:.1f} s |")
    print(f"| peak RSS of the run | {peak_rss_mb():.0f} MB |")
    print(
        f"| one new review: its list and the lists it enters (median of {len(times)}, max) | "
        f"{statistics.median(times) * 1000:.1f} ms, {max(times) * 1000:.1f} ms |"
    )
    print(
        f"| `syndicate related` with nothing changed (compares every review) | {scan * 1000:.0f} ms |"
    )


if __name__ == "__main__":
    main()
