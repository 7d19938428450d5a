"""Which feeds exist, which reviews each holds, and how its archive is paged.

Everything here works on a light row per review (no HTML), so that deciding what to
rewrite after one new review costs a fraction of a second even with 100,000 reviews.

Archive pages have fixed boundaries: page k (1-based) holds the feed's reviews number
(k-1)*size .. k*size-1 in order of appearance, counting every review ever published in
the feed, withdrawn ones too (their slot stays, empty). A new review therefore only ever
lands on the newest page, and older pages keep their items, their bytes and their caches.
The order of appearance is when a review first became visible: the later of its
publication date and the moment it was first gathered. A review written today but dated
last year cannot slip into an old page, because it appears today.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Select, String, case, cast, literal, select
from sqlalchemy.orm import Session

from syndicate.config import Config, ExtraFeed
from syndicate.feeds.model import FILENAMES, HISTORY, FeedSpec, archive_folder
from syndicate.sources.content import slugify
from syndicate.store import Review, ReviewTag


@dataclass(slots=True)
class Entry:
    id: str
    stamp: str  # the id and what the review's rendering depends on; changes with either
    rank: int  # position when every review is sorted newest first (published, then id)
    order: int  # position in order of appearance
    live: bool
    author: str | None
    source: str
    featured: bool
    tags: list[str]


@dataclass
class Feed:
    spec: FeedSpec
    members: list[Entry]  # every review ever published in this feed, in order of appearance


@dataclass
class Planned:
    """A document to write: the subscription feed (page None) or one archive page."""

    spec: FeedSpec
    page: int | None
    pages: int
    entries: list[Entry]  # the live reviews it shows, newest first

    @property
    def folder(self) -> str:
        return (
            self.spec.folder if self.page is None else archive_folder(self.spec.folder, self.page)
        )

    def fingerprint(self) -> str:
        """Changes whenever the document's content may: its feed, its links, its items."""
        spec = self.spec
        # An archive page changes when a newer page appears (its next-archive link); the
        # subscription feed whenever the newest page number changes (its prev-archive).
        links = self.pages if self.page is None else (self.page, self.page < self.pages)
        head = f"{spec.key}\x1f{spec.title}\x1f{spec.description}\x1f{spec.folder}\x1f{self.page}\x1f{links}"
        text = "\x1e".join([head, *(entry.stamp for entry in self.entries)])
        return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def load_entries(session: Session, now: datetime) -> list[Entry]:
    """Every review published by `now`, withdrawn or not, in order of appearance.

    Built for speed, since every build reads all of them: the stamp is put together by
    the database, and times stay as the database's plain values.
    """
    connection = session.connection()
    tags: dict[str, list[str]] = {}
    query = select(ReviewTag.review_id, ReviewTag.tag).order_by(
        ReviewTag.review_id, ReviewTag.position
    )
    for review_id, tag in _plain_rows(connection, query):
        tags.setdefault(review_id, []).append(tag)
    appeared = case(
        (Review.first_seen > Review.published, Review.first_seen), else_=Review.published
    )
    sep = literal("\x1f", String)
    stamp = (
        Review.id
        + sep
        + Review.fingerprint
        + sep
        + cast(Review.updated, String)
        + sep
        + cast(Review.published, String)
        + sep
        + Review.url
    )
    rows = _plain_rows(
        connection,
        select(
            Review.id,
            stamp,
            # As the database writes it: ordered like the times, and much cheaper to read.
            cast(Review.published, String),
            Review.withdrawn_at.is_(None),
            Review.author,
            Review.source,
            Review.featured,
        )
        .where(Review.published <= now)
        .order_by(appeared, Review.published, Review.id),
    )
    entries = [
        Entry(
            id=review_id,
            stamp=stamp,
            rank=0,
            order=order,
            live=bool(live),
            author=author,
            source=source,
            featured=bool(featured),
            tags=tags.get(review_id, []),
        )
        for order, (review_id, stamp, _, live, author, source, featured) in enumerate(rows)
    ]
    # Newest first, ties by id: two stable sorts (a reversed sort keeps ties in order).
    published = {row[0]: row[2] for row in rows}
    newest_first = sorted(entries, key=attrgetter("id"))
    newest_first.sort(key=lambda e: published[e.id], reverse=True)
    for rank, entry in enumerate(newest_first):
        entry.rank = rank
    return entries


def _plain_rows(connection: Connection, statement: Select[Any]) -> list[tuple[Any, ...]]:
    """The driver's own tuples, skipping SQLAlchemy's per-row objects and conversions:
    reading 300,000 rows at every build takes half the time this way. Only plain
    columns (text, numbers) are read like this."""
    return connection.execute(statement).cursor.fetchall()  # type: ignore[union-attr]


@dataclass(frozen=True)
class Family:
    """Feeds made the same way: one per tag, author or source, or one featured feed."""

    key: str  # prefix of each feed's key: "tag" for per_tag, else the extra feed's name
    kind: str
    folder: str  # with {slug}, except for featured
    title: str
    description: str


DEFAULT_TEXT = {
    "tag": ("{site}: {value}", "Reviews tagged {value} on {site}"),
    "author": ("{site}: reviews by {value}", "Reviews by {value} on {site}"),
    "source": ("{site}: {value}", "Reviews from {value} on {site}"),
    "featured": ("{site}: featured reviews", "Featured reviews on {site}"),
}

VALUES: dict[str, Callable[[Entry], Iterable[str]]] = {
    "tag": lambda e: e.tags,
    "author": lambda e: [e.author] if e.author else [],
    "source": lambda e: [e.source],
}


def families(config: Config) -> list[Family]:
    found = []
    if config.feeds.per_tag:
        title, description = DEFAULT_TEXT["tag"]
        found.append(Family("tag", "tag", "tags/{slug}/", title, description))
    for extra in config.feeds.extra:
        found.append(_family(extra))
    return found


def _family(extra: ExtraFeed) -> Family:
    title, description = DEFAULT_TEXT[extra.kind]
    return Family(
        extra.name,
        extra.kind,
        extra.folder,
        extra.title or title,
        extra.description or description,
    )


def plan_feeds(config: Config, entries: list[Entry], output: Path) -> list[Feed]:
    """The site feed, then each family's feeds, each with its members."""
    site = config.site
    feeds = [Feed(FeedSpec("site", site.title, site.description, ""), entries)]
    for family in families(config):
        text = {"site": site.title}
        if family.kind == "featured":
            members = [e for e in entries if e.featured]
            spec = FeedSpec(
                family.key,
                family.title.format(**text, value=""),
                family.description.format(**text, value=""),
                family.folder,
            )
            feeds.append(Feed(spec, members))
            continue
        values = VALUES[family.kind]
        slugs: dict[str, str] = {}
        by_slug: dict[str, list[Entry]] = {}
        spellings: dict[str, set[str]] = {}
        for entry in entries:
            # Spellings that share a folder ("Drama", "drama") share one feed; otherwise
            # each would overwrite the other's files on every build.
            seen: set[str] = set()
            for value in values(entry):
                slug = slugs.get(value)
                if slug is None:
                    slug = slugs[value] = slugify(value)
                    spellings.setdefault(slug, set()).add(value)
                if slug not in seen:
                    seen.add(slug)
                    by_slug.setdefault(slug, []).append(entry)
        # A folder that holds feeds from an earlier build but whose tag (author, source)
        # no review has any more gets empty feeds, not stale ones that keep showing it.
        for slug in published_slugs(output, family.folder):
            by_slug.setdefault(slug, [])
            spellings.setdefault(slug, {slug})
        for slug, members in sorted(by_slug.items()):
            value = min(spellings[slug])
            spec = FeedSpec(
                # The slug, not a spelling: the feed keeps its id when a review brings a
                # new spelling ("Drama") into an existing feed ("drama").
                key=f"{family.key}:{slug}",
                title=family.title.format(**text, value=value),
                description=family.description.format(**text, value=value),
                folder=family.folder.replace("{slug}", slug),
            )
            feeds.append(Feed(spec, members))
    return feeds


def published_slugs(output: Path, folder: str) -> set[str]:
    """Slugs of the folders matching `folder` that hold a feed file from an earlier build."""
    before, after = folder.split("{slug}", 1)
    found = set()
    for name in FILENAMES.values():
        for path in output.glob(f"{before}*{after}{name}"):
            relative = path.relative_to(output).as_posix()
            slug = relative[len(before) : len(relative) - len(after) - len(name)]
            if slug and slugify(slug) == slug:
                found.add(slug)
    return found


def published_pages(output: Path, folder: str) -> int:
    """The highest archive page number an earlier build wrote for this feed."""
    try:
        names = [p.name for p in (output / folder / HISTORY).iterdir() if p.is_dir()]
    except OSError:
        return 0
    return max((int(n) for n in names if n.isdigit()), default=0)


def _newest_first(entries: Iterable[Entry]) -> list[Entry]:
    return sorted(entries, key=attrgetter("rank"))


def plan_documents(config: Config, feed: Feed, output: Path) -> Iterator[Planned]:
    """The subscription document and, if archives are on, every archive page."""
    size, pages = config.feeds.page_size, 0
    if config.feeds.archive.enabled:
        # Pages are never taken away: a URL once published keeps answering.
        pages = max(math.ceil(len(feed.members) / size), published_pages(output, feed.spec.folder))
    # The newest feeds.items live reviews: found on plain ranks, which is much faster
    # than comparing entries by a key.
    ranks = heapq.nsmallest(config.feeds.items, [e.rank for e in feed.members if e.live])
    last = ranks[-1] if ranks else -1
    latest = _newest_first(e for e in feed.members if e.live and e.rank <= last)
    yield Planned(feed.spec, None, pages, latest)
    for page in range(1, pages + 1):
        slots = feed.members[(page - 1) * size : page * size]
        yield Planned(feed.spec, page, pages, _newest_first(e for e in slots if e.live))
