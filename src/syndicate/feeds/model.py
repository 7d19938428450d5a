"""What a feed document is made of, independent of its format (RSS, Atom or JSON Feed)."""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from syndicate.config import Config, FeedFormat

FILENAMES: dict[FeedFormat, str] = {"rss": "feed.xml", "atom": "atom.xml", "json": "feed.json"}
MEDIA_TYPES: dict[FeedFormat, str] = {
    "rss": "application/rss+xml",
    "atom": "application/atom+xml",
    "json": "application/feed+json",
}
FORMAT_NAMES: dict[FeedFormat, str] = {"rss": "RSS", "atom": "Atom", "json": "JSON Feed"}

# The namespace of syndicate's review elements in RSS and Atom, and the `about` of the
# `_review` object in JSON Feed (docs/feeds.md). An identifier, never fetched: keep it.
REVIEW_NS = "https://syndicate.example/ns/review/1.0"

# The folder of a feed's RFC 5005 archive pages: history/1/ is the oldest. Not "archive/",
# which holds the digests' issue pages (syndicate.pages).
HISTORY = "history"


def review_id_uri(config: Config, review_id: str) -> str:
    """An item's permanent id (RFC 4151 tag: URI), the same across edits and renames."""
    return f"tag:{config.site.host},{config.site.id_year}:review:{review_id}"


def feed_id_uri(config: Config, key: str) -> str:
    return f"tag:{config.site.host},{config.site.id_year}:feed:{key}"


@dataclass(frozen=True)
class FeedSpec:
    # "site", "tag:<folder slug>", "author:<slug>", "source:<slug>" or an extra feed's name:
    # part of the feed's Atom id, never change it.
    key: str
    title: str
    description: str
    folder: str  # relative to feeds.output, "" or ending in "/"


@dataclass(frozen=True, slots=True)
class Poster:
    url: str
    type: str
    length: int | None  # bytes, when the file was found under feeds.media_root


@dataclass(frozen=True, slots=True)
class Item:
    """One review as every feed shows it."""

    id: str  # the tag: URI
    url: str
    title: str
    summary: str
    body_html: str
    published: datetime
    updated: datetime
    tags: tuple[str, ...]
    author: str | None
    film: str | None
    year: int | None
    director: str | None
    rating: float | None
    poster: Poster | None


@dataclass(frozen=True)
class Document:
    """One file's worth of a feed: the subscription document, or archive page `page`."""

    spec: FeedSpec
    items: list[Item]  # newest first
    page: int | None  # None: the subscription document; 1 is the oldest archive page
    pages: int  # archive pages this feed has (0: no archives)
    hubs: tuple[str, ...] = ()

    @property
    def folder(self) -> str:
        if self.page is None:
            return self.spec.folder
        return archive_folder(self.spec.folder, self.page)

    @property
    def is_archive(self) -> bool:
        return self.page is not None

    def updated(self, config: Config) -> datetime:
        # The newest item's time, not the build's: an unchanged document keeps its bytes.
        fallback = datetime(config.site.id_year, 1, 1, tzinfo=UTC)
        return max((item.updated for item in self.items), default=fallback)


def archive_folder(feed_folder: str, page: int) -> str:
    return f"{feed_folder}{HISTORY}/{page}/"


@dataclass(frozen=True)
class Links:
    """The URLs one document links to, in one format."""

    self: str
    current: str
    alternate: str
    prev_archive: str | None
    next_archive: str | None


def links(config: Config, document: Document, fmt: FeedFormat) -> Links:
    base, name = config.site.url, FILENAMES[fmt]
    page, pages, folder = document.page, document.pages, document.spec.folder
    previous = (pages if page is None else page - 1) if pages else 0
    return Links(
        self=f"{base}{document.folder}{name}",
        current=f"{base}{folder}{name}",
        alternate=base,
        prev_archive=f"{base}{archive_folder(folder, previous)}{name}" if previous >= 1 else None,
        next_archive=(
            f"{base}{archive_folder(folder, page + 1)}{name}"
            if page is not None and page < pages
            else None
        ),
    )


def poster(config: Config, image: str | None) -> Poster | None:
    if not image:
        return None
    kind = mimetypes.guess_type(urlsplit(image).path)[0] or "image/jpeg"
    return Poster(image, kind, _local_size(config, image))


def _local_size(config: Config, image: str) -> int | None:
    """The poster's size in bytes, when feeds.media_root holds the site's files."""
    root = config.feeds.media_root
    if root is None or not image.startswith(config.site.url):
        return None
    relative = urlsplit(image[len(config.site.url) :]).path
    path = config.resolve(root) / relative
    try:
        resolved = path.resolve()
        if not resolved.is_relative_to(config.resolve(root).resolve()):
            return None
        return resolved.stat().st_size
    except OSError:
        return None
