"""What polling a remote source found, handed from the fetching threads to the one that
writes to the store (fetching is slow and parallel; writing is quick and in order)."""

from __future__ import annotations

from dataclasses import dataclass, field

from syndicate.sources.entry import Entry


@dataclass(frozen=True)
class PageState:
    lastmod: str | None
    etag: str | None
    last_modified: str | None
    error: str | None
    fetched: bool = True  # False: listed in the sitemap, not fetched yet


@dataclass(frozen=True)
class Snapshot:
    """The stored state a poll starts from, read before any thread starts."""

    url: str  # the configured URL, or where it permanently moved
    etag: str | None = None
    last_modified: str | None = None
    pages: dict[str, PageState] = field(default_factory=dict)


@dataclass
class PageResult:
    url: str
    lastmod: str | None
    etag: str | None = None
    last_modified: str | None = None
    entry: Entry | None = None
    error: str | None = None
    fetched: bool = False  # False: unchanged, by lastmod or by a 304


@dataclass
class Poll:
    error: str | None = None  # the source as a whole failed: nothing else below counts
    not_modified: bool = False
    entries: list[Entry] = field(default_factory=list)
    etag: str | None = None
    last_modified: str | None = None
    moved_to: str | None = None
    pages: list[PageResult] = field(default_factory=list)
    # Every matching page the sitemap lists, fetched this run or not: (URL, lastmod).
    listed: list[tuple[str, str | None]] = field(default_factory=list)
    home: str | None = None  # a feed's home page: the link of an entry without one
    # Problems that did not stop the source (one page of a sitemap failed).
    warnings: list[str] = field(default_factory=list)
