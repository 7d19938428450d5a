"""Turning entries from a remote source into reviews, keeping each review's id for life.

Identity: an entry is the review it was before if it has the same guid, else the same
link, else the same content hash (an entry with neither guid nor link). The key it was
matched by is stored in `source_key` ("guid:...", "link:...", "hash:..."); a feed that
starts giving guids upgrades its reviews' keys without changing their ids.

A new review's id is `<source>-<slug>`, the slug from the link's last path segment (else
the title): readable, stable, and in its own namespace, so it cannot take the id of a
review from another source. A clash (two entries with the same slug) gets -2, -3 ...

A guid reused for another article (its link and its title both differ) is a new review:
the old one keeps its id, its key demoted to its link.

Each entry is stored in its own savepoint: one that cannot be stored is skipped and
reported in one line, and the others are stored all the same.

Entries that disappear from a feed stay in the archive: feeds list only their latest.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from syndicate.sources import revision
from syndicate.sources.content import first_paragraph, sanitise, sanitise_url, slugify, xml_safe
from syndicate.sources.entry import Entry, plausible
from syndicate.sources.report import GatherReport
from syndicate.store import Review

log = logging.getLogger(__name__)

_KEY_LIMIT = 900  # source_key holds 1,000 characters; a longer guid is kept as its hash


def identity(entry: Entry) -> str:
    if entry.guid:
        return _bounded("guid:" + entry.guid)
    if entry.link:
        return _bounded("link:" + entry.link)
    return "hash:" + _digest(entry.title, entry.body_html, entry.summary_html)


def _bounded(key: str) -> str:
    if len(key) <= _KEY_LIMIT:
        return key
    return key.split(":", 1)[0] + ":sha256:" + hashlib.sha256(key.encode()).hexdigest()


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def fingerprint(entry: Entry) -> str:
    """Everything a reader would see: when it changes, the entry was edited."""
    fields = {k: v for k, v in vars(entry).items() if k not in ("guid", "published", "updated")}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


def one_line(exc: BaseException) -> str:
    """An error as one line for an operator: the driver's own message, without the SQL
    statement and parameters SQLAlchemy appends."""
    inner = getattr(exc, "orig", None) or exc
    text = str(inner).split("[SQL:", 1)[0].strip()
    first = text.splitlines()[0].strip() if text else ""
    return f"{type(inner).__name__}: {first}"[:500] if first else type(inner).__name__


def store_entries(
    session: Session,
    source: str,
    entries: list[Entry],
    now: datetime,
    report: GatherReport,
    fallback_url: str,
) -> list[str]:
    """Store the entries; returns a line for each entry that could not be stored."""
    problems: list[str] = []
    known = list(session.scalars(select(Review).where(Review.source == source)))
    by_key = {r.source_key: r for r in known}
    by_url = {r.url: r for r in known}
    guids_now = {identity(e) for e in entries if e.guid}
    taken: set[str] = set()
    used = ids_in_use(session, source)
    for entry in entries:
        key = identity(entry)
        if key in taken:
            continue  # the same entry twice in one feed: the first (newest) wins
        review = by_key.get(key)
        if review is None and entry.link:
            review = by_key.get(_bounded("link:" + entry.link))
            candidate = by_url.get(entry.link)
            # The same link under a new guid (a CMS that changed its guid scheme) is the
            # same review, unless that guid is still in the feed as another entry.
            if review is None and candidate is not None and candidate.source_key not in guids_now:
                review = candidate
        if review is None:
            review = by_key.get("hash:" + _digest(entry.title, entry.body_html, entry.summary_html))
        if review is not None and review.id in taken:
            review = None
        reused = (
            review is not None and by_key.get(key) is review and _another_article(review, entry)
        )
        if reused:
            review = None
        taken.add(key)
        try:
            with session.begin_nested():
                if reused:
                    # The guid now names another article: the old review keeps its id
                    # under its link, and the entry becomes a review of its own.
                    old = by_key.pop(key)
                    old.source_key = _bounded("link:" + old.url)
                    by_key[old.source_key] = old
                outcome, stored = _store(
                    session, source, entry, key, review, now, fallback_url, used
                )
                session.flush()
        except Exception as exc:  # this entry only: the savepoint is rolled back
            log.warning("source %s: entry %s not stored", source, key, exc_info=True)
            problem = f"entry {(entry.link or entry.title or key)[:200]} not stored: "
            problems.append(problem + one_line(exc))
            continue
        setattr(report, outcome, getattr(report, outcome) + 1)
        if outcome != "unchanged":
            log.info("%s review %s from %s", outcome, stored.id, source)
        taken.add(stored.id)
    return problems


def _another_article(review: Review, entry: Entry) -> bool:
    """The same guid, but the link and the title both differ: a guid reused."""
    if not entry.guid or not entry.link or not review.url:
        return False
    title = (xml_safe(entry.title) or "")[:500]
    return entry.link != review.url and bool(title) and title != review.title


def _store(
    session: Session,
    source: str,
    entry: Entry,
    key: str,
    review: Review | None,
    now: datetime,
    fallback_url: str,
    used: set[str],
) -> tuple[str, Review]:
    """Store one entry; returns what it was ("new", "updated", "unchanged"), and its review."""
    print_ = fingerprint(entry)
    if review is not None and review.fingerprint == print_:
        review.source_key = key  # the same entry, found by its link or hash under a new key
        return "unchanged", review
    is_new = review is None
    if review is None:
        review = Review(id=_new_id(used, source, entry), first_seen=now)
        session.add(review)
    before = None if is_new else revision.snapshot(review)
    link = entry.link if entry.link and len(entry.link) <= 2000 else None
    base = link or fallback_url
    body = sanitise(xml_safe(entry.body_html), base)
    summary_html = sanitise(xml_safe(entry.summary_html), base) if entry.summary_html else ""
    review.source = source
    review.source_key = key
    review.fingerprint = print_
    review.file_mtime_ns = review.file_size = None
    review.slug = review.slug or review.id
    review.url = link or review.url or fallback_url
    review.title = (xml_safe(entry.title) or first_paragraph(body, 80) or "Untitled")[:500]
    review.film = entry.film[:500] if entry.film else None
    review.year = entry.year
    review.director = entry.director[:500] if entry.director else None
    review.rating = entry.rating
    review.author = xml_safe(entry.author)[:500] if entry.author else None
    review.summary = first_paragraph(summary_html or body)
    review.body_html = body
    image = sanitise_url(entry.image, base)
    review.image = image if image and len(image) <= 2000 else None
    review.featured = False
    review.related = []
    review.tags = list(dict.fromkeys(xml_safe(t)[:200] for t in entry.tags))
    published = plausible(entry.published, now)
    if is_new:
        review.published = published or now
        review.updated = max(plausible(entry.updated, now) or review.published, review.published)
        return "new", review
    review.published = published or review.published
    updated = plausible(entry.updated, now)
    # An edit the feed dated is dated so; one it did not date happened now, as we saw it.
    review.updated = max(updated if updated and updated > review.updated else now, review.published)
    review.withdrawn_at = None
    revision.note_revision(review, before, now)
    return "updated", review


def _new_id(used: set[str], source: str, entry: Entry) -> str:
    segment = ""
    if entry.link:
        path = urlsplit(entry.link).path.rstrip("/")
        segment = path.rsplit("/", 1)[-1].rsplit(".", 1)[0] if path else ""
    slug = slugify(segment or entry.title or "entry")[:80].strip("-") or "entry"
    base = f"{id_prefix(source)}-{slug}"
    candidate, counter = base, 1
    while candidate in used:
        counter += 1
        candidate = f"{base}-{counter}"
    used.add(candidate)
    return candidate


def id_prefix(source: str) -> str:
    return slugify(source)[:60]


def ids_in_use(session: Session, source: str) -> set[str]:
    """Every id a new review of this source could clash with, in one query (a query per
    entry made a first gather three times slower). Slugs hold no LIKE wildcards."""
    query = select(Review.id).where(Review.id.like(id_prefix(source) + "-%"))
    return set(session.scalars(query))
