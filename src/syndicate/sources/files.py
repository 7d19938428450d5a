"""The `files` source: a folder of Markdown or HTML reviews with YAML front matter.

A review keeps one id for life. It comes from the front matter (`id`, else `slug`), else
from the file name when the review is first seen. A renamed file is recognised as the
same review (same id in its front matter, same content, or same title and film), so its
feed id never changes and readers are not shown an old review as new.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session, lazyload

from syndicate.config import FilesSource
from syndicate.sources import revision
from syndicate.sources.content import (
    first_paragraph,
    markdown_to_html,
    sanitise,
    sanitise_url,
    slugify,
    xml_safe,
)
from syndicate.sources.frontmatter import FrontMatter, ReviewFileError, parse
from syndicate.sources.report import GatherReport
from syndicate.store import Review

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FoundFile:
    key: str  # path relative to the source folder, with forward slashes
    path: Path
    mtime_ns: int
    size: int


def scan(folder: Path, extensions: list[str]) -> Iterator[FoundFile]:
    wanted = {ext.lower() for ext in extensions}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part.startswith((".", "_")) for part in relative.parts):
            continue
        if path.suffix.lower() not in wanted or path.stem.upper() == "README":
            continue
        if not path.is_file():
            continue
        stat = path.stat()
        yield FoundFile(relative.as_posix(), path, stat.st_mtime_ns, stat.st_size)


class FilesGatherer:
    def __init__(
        self, source: FilesSource, folder: Path, site_url: str, zone: ZoneInfo, now: datetime
    ) -> None:
        self.source = source
        self.folder = folder
        self.site_url = site_url
        self.zone = zone
        self.now = now
        self.withdrawn: dict[object, list[Review]] = {}

    def gather(self, session: Session, report: GatherReport) -> None:
        if not self.folder.is_dir():
            report.error(str(self.folder), f"source {self.source.name!r}: folder not found")
            return
        # Tags load only for the reviews that change: eagerly, they were most of the cost
        # of a gather in which nothing changed.
        known = {
            r.source_key: r
            for r in session.scalars(
                select(Review)
                .where(Review.source == self.source.name)
                .options(lazyload(Review.tag_rows))
            )
        }
        seen: set[str] = set()
        changed: list[tuple[FoundFile, bytes]] = []
        for found in scan(self.folder, self.source.extensions):
            seen.add(found.key)
            review = known.get(found.key)
            if (
                review is not None
                and review.live
                and (review.file_mtime_ns, review.file_size) == (found.mtime_ns, found.size)
            ):
                report.unchanged += 1
                continue
            try:
                changed.append((found, found.path.read_bytes()))
            except OSError as exc:
                # Unreadable for now (permissions, deleted mid-scan): the stored version stays.
                report.error(str(found.path), f"cannot be read: {exc.strerror or exc}")

        # Files that are gone are candidates for renames before they count as withdrawn.
        vanished = {key: r for key, r in known.items() if key not in seen and r.live}
        # Reviews withdrawn by earlier runs, by content and by title and film, newest
        # first: a new file may bring one back.
        self.withdrawn = {}
        for review in sorted(
            (r for r in known.values() if not r.live),
            key=lambda r: r.withdrawn_at or self.now,
            reverse=True,
        ):
            self.withdrawn.setdefault(review.fingerprint, []).append(review)
            self.withdrawn.setdefault((review.title, review.film), []).append(review)
        for found, raw in changed:
            try:
                self._store(session, found, raw, known.get(found.key), vanished, report)
            except ReviewFileError as exc:
                # The stored version (if any) stays as it was: a typo must not unpublish.
                report.error(exc.path, exc.problem)
        for review in vanished.values():
            review.withdrawn_at = self.now
            report.withdrawn += 1
            log.info("withdrawn %s (%s was deleted)", review.id, review.source_key)

    def _store(
        self,
        session: Session,
        found: FoundFile,
        raw: bytes,
        review: Review | None,
        vanished: dict[str, Review],
        report: GatherReport,
    ) -> None:
        display = str(found.path)
        fingerprint = hashlib.sha256(raw).hexdigest()
        if review is not None and review.live and review.fingerprint == fingerprint:
            review.file_mtime_ns, review.file_size = found.mtime_ns, found.size  # touched only
            report.unchanged += 1
            return
        try:
            text = xml_safe(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise ReviewFileError(display, f"not UTF-8 text (byte {exc.start})") from None
        meta, body = parse(text, display, self.zone)

        if review is None:
            review = self._match(session, meta, found, fingerprint, vanished)
        is_new = review is None
        if review is None:
            review_id = meta.id or meta.slug or slugify(Path(found.key).stem)
            clash = session.get(Review, review_id)
            if clash is not None and clash.live:
                raise ReviewFileError(
                    display,
                    f"id {review_id!r} is already used by {clash.source_key} "
                    f"(source {clash.source}); give this review its own 'id' or 'slug'",
                )
            review = clash or Review(id=review_id, first_seen=self.now)
            if clash is None:
                session.add(review)
        was_withdrawn = not is_new and not review.live
        self._apply(review, meta, body, found, fingerprint, is_new)
        if is_new:
            report.new += 1
            log.info("new review %s from %s", review.id, found.key)
        elif was_withdrawn:
            report.new += 1
            log.info("restored review %s from %s", review.id, found.key)
        else:
            report.updated += 1
            log.info("updated review %s from %s", review.id, found.key)

    def _match(
        self,
        session: Session,
        meta: FrontMatter,
        found: FoundFile,
        fingerprint: str,
        vanished: dict[str, Review],
    ) -> Review | None:
        """The stored review this new path continues, if the file was renamed or moved."""
        if meta.id or meta.slug:
            existing = session.get(Review, meta.id or meta.slug)
            if existing is not None and (not existing.live or existing.source_key in vanished):
                vanished.pop(existing.source_key, None)
                return existing
            return None
        for key, candidate in list(vanished.items()):
            if candidate.fingerprint == fingerprint or (
                (candidate.title, candidate.film) == (meta.title, meta.film)
            ):
                del vanished[key]
                log.info("%s was renamed to %s", key, found.key)
                return candidate
        # Renamed in an earlier run while the new file could not be read (a typo made with
        # the rename): the review was withdrawn then, and comes back under its own id.
        # Matched in memory: a query per new file made a first gather 4x slower.
        title_film = (meta.title, meta.film)
        candidates = [
            r
            for r in self.withdrawn.get(fingerprint, []) + self.withdrawn.get(title_film, [])
            if not r.live  # not brought back by another file in this run
        ]
        return max(candidates, key=lambda r: r.withdrawn_at or self.now, default=None)

    def _apply(
        self,
        review: Review,
        meta: FrontMatter,
        body: str,
        found: FoundFile,
        fingerprint: str,
        is_new: bool,
    ) -> None:
        slug = meta.slug or slugify(Path(found.key).stem)
        link = self.source.link.format(site_url=self.site_url, slug=slug, id=review.id)
        body_html = body if found.path.suffix.lower() == ".html" else markdown_to_html(body)
        body_html = sanitise(body_html, link)
        before = None if is_new else revision.snapshot(review)

        review.source = self.source.name
        review.source_key = found.key
        review.fingerprint = fingerprint
        review.file_mtime_ns, review.file_size = found.mtime_ns, found.size
        review.slug = slug
        review.url = link
        review.title = meta.title
        review.film = meta.film
        review.year = meta.year
        review.director = meta.director
        review.rating = meta.rating
        review.author = meta.author
        review.summary = meta.summary or first_paragraph(body_html)
        review.body_html = body_html
        review.image = sanitise_url(meta.image, link)
        review.featured = meta.featured
        # Only http(s) links: a javascript: or data: URL would run on the site's own pages.
        review.related = [
            {"title": item.title, "url": url}
            for item in meta.related
            if (url := sanitise_url(item.url, link)) is not None
        ]
        review.tags = list(dict.fromkeys(meta.tags))
        # A review without a date counts as published when first gathered.
        review.published = meta.published or review.first_seen or self.now
        if meta.updated is not None:
            review.updated = max(meta.updated, review.published)
        elif is_new:
            review.updated = review.published
        else:
            review.updated = max(self.now, review.published)
        review.withdrawn_at = None
        revision.note_revision(review, before, self.now, meta.correction)
