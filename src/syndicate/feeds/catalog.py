"""Which feeds exist, which reviews each holds, and how its archive is paged.

Everything here works on a light row per review (no HTML), so that deciding what to
rewrite after one new review costs a fraction of a second even with 100,000 reviews.

Archive pages have fixed boundaries: each review has a slot in each feed, given when it
first appears in that feed (after every review already there) and kept in the database
(feed_slots), and page k (1-based) holds slots (k-1)*size .. k*size-1. A slot is never
given again: a review that leaves the feed (withdrawn, or the tag taken off it) leaves
its slot empty, and one that comes back takes its slot again. A new review therefore only
ever lands on the newest page, and older pages keep their items, their bytes and their
caches. Reviews that appear in a feed at the same build get slots in order of appearance:
when a review first became visible, the later of its publication date and the moment it
was first gathered. A review written today but dated last year cannot slip into an old
page, because it appears today. The page size is kept per feed too (feed_archives).
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import math
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Select,
    String,
    bindparam,
    case,
    cast,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.orm import Session

from syndicate.config import Config, ExtraFeed
from syndicate.feeds.folders import Folders, feed_slug
from syndicate.feeds.model import FILENAMES, HISTORY, FeedSpec, archive_folder
from syndicate.store import FeedArchive, FeedSlot, Review, ReviewTag

log = logging.getLogger(__name__)


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
    members: list[Entry]  # the reviews in this feed now, withdrawn too, in order of appearance
    # With archives on (place_in_archives): each member's archive slot, see the top.
    slots: list[int] = field(default_factory=list)
    slot_count: int = 0  # slots given so far, to members and former members alike
    page_size: int = 0


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


def plan_feeds(
    config: Config, entries: list[Entry], output: Path, known: Iterable[str] = ()
) -> list[Feed]:
    """The site feed, then each family's feeds, each with its members.

    `known` are the keys of feeds an earlier build gave archive slots: like those whose
    folder holds files from an earlier build, they are kept (empty) when no review has
    their tag (author, source) any more.
    """
    site = config.site
    feeds = [Feed(FeedSpec("site", site.title, site.description, ""), entries)]
    found = families(config)
    # Feeds with a fixed folder first: a tag (author, source) never takes their place.
    folders = Folders()
    folders.claim("", "the site feed")
    for family in found:
        if family.kind == "featured":
            folders.claim(family.folder, f"the {family.key!r} feed")
    known_slugs: dict[str, set[str]] = {}
    for key in known:
        prefix, colon, slug = key.partition(":")
        if colon and slug:
            known_slugs.setdefault(prefix, set()).add(slug)
    for family in found:
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
                    slug = slugs[value] = feed_slug(value)
                    spellings.setdefault(slug, set()).add(value)
                if slug not in seen:
                    seen.add(slug)
                    by_slug.setdefault(slug, []).append(entry)
        # A feed from an earlier build whose tag (author, source) no review has any more
        # gets empty feeds, not stale ones that keep showing it.
        for slug in published_slugs(output, family.folder) | known_slugs.get(family.key, set()):
            by_slug.setdefault(slug, [])
        for slug, members in sorted(by_slug.items()):
            folder = family.folder.replace("{slug}", slug)
            value = min(spellings.get(slug, {slug}))
            owner = folders.owner(folder)
            if owner is not None:
                if slug in spellings:  # a value some review has now, not a leftover
                    log.warning(
                        "feeds: no %s feed for %r: its folder %s belongs to %s; "
                        "rename the %s or change feeds.extra folders",
                        family.kind,
                        value,
                        folder,
                        owner,
                        family.kind,
                    )
                continue
            key = f"{family.key}:{slug}"
            folders.claim(folder, f"the {key!r} feed")
            spec = FeedSpec(
                # The slug, not a spelling: the feed keeps its id when a review brings a
                # new spelling ("Drama") into an existing feed ("drama").
                key=key,
                title=family.title.format(**text, value=value),
                description=family.description.format(**text, value=value),
                folder=folder,
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
            if slug and feed_slug(slug) == slug:
                found.add(slug)
    return found


def load_archives(session: Session) -> dict[str, int]:
    """The feeds that have archive slots: feed key -> page size."""
    query = select(FeedArchive.feed_key, FeedArchive.page_size)
    return dict(_plain_rows(session.connection(), query))  # type: ignore[arg-type]


INSERT_CHUNK = 5_000
SLOTS = select(FeedSlot.review_id, FeedSlot.slot).where(FeedSlot.feed_key == bindparam("key"))


def place_in_archives(
    config: Config, session: Session, feeds: list[Feed], archives: dict[str, int]
) -> None:
    """Give each feed its page size and its members their slots, new members new ones,
    and store what is new (in the session's transaction: two builds at once cannot give
    one slot twice).

    A database without slots yet (a site from before feed_slots) gives every member the
    slot it had until then, its place in order of appearance: no page moves.
    """
    _page_sizes(config, session, feeds, archives)
    connection = session.connection()
    rows: list[tuple[str, str, int]] = []
    for feed in feeds:
        key = feed.spec.key
        # One query per feed, a few thousand at most: each costs far less than its rows.
        found = connection.execute(SLOTS, {"key": key}).cursor.fetchall()  # type: ignore[union-attr]
        known: dict[str, int] = dict(found)
        count = max(known.values(), default=-1) + 1
        slots = list(map(known.get, [entry.id for entry in feed.members]))
        if None in slots:
            for index, slot in enumerate(slots):
                if slot is None:
                    slots[index] = count
                    rows.append((key, feed.members[index].id, count))
                    count += 1
        feed.slots, feed.slot_count = slots, count  # type: ignore[assignment]
    # In chunks: a first build gives every review a slot in each of its feeds at once.
    for start in range(0, len(rows), INSERT_CHUNK):
        connection.execute(
            insert(FeedSlot),
            [
                {"feed_key": key, "review_id": review_id, "slot": slot}
                for key, review_id, slot in rows[start : start + INSERT_CHUNK]
            ],
        )


def _page_sizes(
    config: Config, session: Session, feeds: list[Feed], recorded: dict[str, int]
) -> None:
    """Each feed keeps the page size its archive was first published with, unless
    feeds.archive.page_size names another: then every page of it is paged again."""
    settings = config.feeds
    new, repaged, oversized = [], [], []
    for feed in feeds:
        key, before = feed.spec.key, recorded.get(feed.spec.key)
        feed.page_size = settings.archive.page_size or before or settings.items
        if before is None:
            new.append({"feed_key": key, "page_size": feed.page_size})
        elif before != feed.page_size:
            repaged.append(key)
        if feed.page_size > settings.items:
            oversized.append(feed)
    if new:
        session.execute(insert(FeedArchive), new)
    if repaged:
        session.execute(
            update(FeedArchive)
            .where(FeedArchive.feed_key.in_(repaged))
            .values(page_size=settings.archive.page_size)
        )
        log.warning(
            "feeds: feeds.archive.page_size is now %d: every archive page of %d feed(s) "
            "is paged again and rewritten",
            settings.archive.page_size,
            len(repaged),
        )
    if oversized:
        log.warning(
            "feeds: the archive pages of %d feed(s) hold %d reviews, more than feeds.items "
            "(%d): their newest page can show reviews the subscription feed does not. Set "
            "feeds.archive.page_size: %d to page them again (every archive page is rewritten)",
            len(oversized),
            max(feed.page_size for feed in oversized),
            settings.items,
            settings.items,
        )


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
    """The subscription document and, if archives are on, every archive page (after
    place_in_archives)."""
    pages = 0
    if config.feeds.archive.enabled:
        size = feed.page_size
        # Pages are never taken away: a URL once published keeps answering.
        pages = max(math.ceil(feed.slot_count / size), published_pages(output, feed.spec.folder))
    # The newest feeds.items live reviews: found on plain ranks, which is much faster
    # than comparing entries by a key.
    ranks = heapq.nsmallest(config.feeds.items, [e.rank for e in feed.members if e.live])
    last = ranks[-1] if ranks else -1
    latest = _newest_first(e for e in feed.members if e.live and e.rank <= last)
    yield Planned(feed.spec, None, pages, latest)
    if not pages:
        return
    # The members in slot order (nearly their order already: a cheap sort), then each
    # page's run of slots found by bisection.
    order = sorted(range(len(feed.members)), key=feed.slots.__getitem__)
    slots = list(map(feed.slots.__getitem__, order))
    members = list(map(feed.members.__getitem__, order))
    end = 0
    for page in range(1, pages + 1):
        start, end = end, bisect_left(slots, page * size, end)
        yield Planned(
            feed.spec, page, pages, _newest_first(e for e in members[start:end] if e.live)
        )
