"""Publishing the feeds: RSS 2.0, Atom and JSON Feed, for the site, each tag and each extra
feed in the YAML, each with RFC 5005 archive pages; then WebSub pings for what changed.

A build plans every document from light rows (catalog), skips those whose fingerprint and
file are as the last build left them (state), renders the rest from full rows (items and
one module per format), and writes a file only when its bytes changed.
"""

from __future__ import annotations

import gc
import logging
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

from sqlalchemy.exc import IntegrityError

from syndicate import __version__
from syndicate.config import Config, FeedFormat
from syndicate.feeds.atom import render_atom
from syndicate.feeds.catalog import (
    Entry,
    Feed,
    Planned,
    load_archives,
    load_entries,
    place_in_archives,
    plan_documents,
    plan_feeds,
)
from syndicate.feeds.discovery import FeedLink, feed_links
from syndicate.feeds.items import load_items
from syndicate.feeds.jsonfeed import render_json
from syndicate.feeds.model import FILENAMES, Document, FeedSpec, review_id_uri
from syndicate.feeds.rss import render_rss
from syndicate.feeds.state import BuildState, fingerprint
from syndicate.feeds.websub import PingReport, publish
from syndicate.output import write_if_changed
from syndicate.store import Store

log = logging.getLogger(__name__)

__all__ = [
    "FILENAMES",
    "FeedLink",
    "FeedReport",
    "FeedSpec",
    "build_feeds",
    "feed_links",
    "review_id_uri",
]

WRITERS = 4
BATCH_ITEMS = 20_000  # reviews held in memory at once while rendering
PLAN_ATTEMPTS = 3
Job = tuple[Planned, str, list[FeedFormat]]  # a document, its fingerprint, formats to write
# A write in flight: whether it wrote, the file, its fingerprint, subscription?, items.
Pending = tuple["Future[bool]", str, str, bool, int]

RENDERERS: dict[FeedFormat, Callable[[Config, Document], bytes]] = {
    "rss": render_rss,
    "atom": render_atom,
    "json": render_json,
}


@cache
def _code_fingerprint() -> str:
    """This package's own source: a new syndicate version renders every document again."""
    return fingerprint(p.read_text(encoding="utf-8") for p in sorted(PACKAGE.glob("*.py")))


PACKAGE = Path(__file__).parent


@dataclass
class FeedReport:
    written: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)
    pings: PingReport | None = None

    def summary(self) -> str:
        text = f"{len(self.written)} feed file(s) written, {len(self.unchanged)} unchanged"
        return text + (f"; {self.pings.summary()}" if self.pings else "")


def settings_fingerprint(config: Config) -> str:
    """Everything besides the reviews that the documents' bytes depend on."""
    return fingerprint(
        [
            f"{__version__}/{_code_fingerprint()}",
            config.site.model_dump_json(),
            config.feeds.model_dump_json(exclude={"output", "state"}),
        ]
    )


def build_feeds(config: Config, store: Store, now: datetime | None = None) -> FeedReport:
    """Write every feed document under feeds.output; leave unchanged files untouched."""
    now = now or datetime.now(UTC)
    output = config.resolve(config.feeds.output)
    state = BuildState(config.resolve(config.feeds.state), settings_fingerprint(config))
    report = FeedReport()
    todo: list[Job] = []
    root = str(output)
    with _gc_paused():
        for feed in _plan(config, store, now, output):
            for planned in plan_documents(config, feed, output):
                print_ = planned.fingerprint()
                stale = []
                for fmt in config.feeds.formats:
                    relative = f"{planned.folder}{FILENAMES[fmt]}"
                    if state.fresh(relative, print_, f"{root}/{relative}"):
                        report.unchanged.append(output / relative)
                    else:
                        stale.append(fmt)
                if stale:
                    todo.append((planned, print_, stale))

    # Documents whose reviews appeared at about the same time go together (an archive
    # page of the site feed, the tag pages of the same weeks), so that each batch below
    # loads few reviews that another batch loads again.
    todo.sort(key=lambda job: min((e.order for e in job[0].entries), default=-1))
    hubs = tuple(config.feeds.websub.hubs)
    changed_feeds: list[str] = []

    def finish(pending: Pending) -> None:
        written, relative, print_, subscription, count = pending
        path = output / relative
        if written.result():
            report.written.append(path)
            log.info("wrote %s (%d items)", path, count)
            if subscription:
                changed_feeds.append(f"{config.site.url}{relative}")
        else:
            report.unchanged.append(path)
        state.record(relative, print_, path)

    # Rendering needs the CPU; each write ends in an fsync that waits on the disk. A few
    # writer threads overlap the two (a full build writes tens of thousands of files).
    # The queue is bounded, so only a few rendered documents are held in memory at once.
    queue: deque[Pending] = deque()
    with ThreadPoolExecutor(max_workers=WRITERS, thread_name_prefix="feeds-write") as pool:
        for batch, wanted in batches(todo):
            # A short transaction per batch: SQLite's is a write lock here (BEGIN
            # IMMEDIATE), which gathering and sending must not wait on for a whole build.
            with store.session() as session:
                items = load_items(config, session, wanted)
            for planned, print_, formats in batch:
                document = Document(
                    planned.spec,
                    # A review deleted from the database since planning is left out.
                    [items[e.id] for e in planned.entries if e.id in items],
                    planned.page,
                    planned.pages,
                    hubs if planned.page is None else (),  # subscriptions, not archives
                )
                for fmt in formats:
                    relative = f"{planned.folder}{FILENAMES[fmt]}"
                    content = RENDERERS[fmt](config, document)
                    written = pool.submit(write_if_changed, output / relative, content)
                    subscription = planned.page is None
                    queue.append((written, relative, print_, subscription, len(document.items)))
                    if len(queue) > 4 * WRITERS:
                        finish(queue.popleft())
        while queue:
            finish(queue.popleft())
    state.save()
    if hubs and changed_feeds:
        report.pings = publish(config.feeds.websub, changed_feeds)
    return report


def _plan(config: Config, store: Store, now: datetime, output: Path) -> list[Feed]:
    """Every feed, its members and, with archives on, its archive slots (stored)."""
    archives = config.feeds.archive.enabled
    for attempt in range(1, PLAN_ATTEMPTS + 1):
        try:
            with store.session() as session:
                entries = load_entries(session, now)
                known = load_archives(session) if archives else {}
                feeds = plan_feeds(config, entries, output, known)
                if archives:
                    place_in_archives(config, session, feeds, known)
            return feeds
        except IntegrityError:
            # Another build (PostgreSQL lets two run at once) gave out the same new slots
            # first: plan again on top of its slots.
            if attempt == PLAN_ATTEMPTS:
                raise
            log.info("another build placed reviews in the archives at the same time; again")
    raise AssertionError("unreachable")


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Planning makes a few hundred thousand small objects (rows, entries, slots, pages)
    and no cycles: the cycle collector, run again and again over them, would make it
    take a third longer."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def batches(todo: list[Job]) -> Iterator[tuple[list[Job], dict[str, Entry]]]:
    """The documents to render, in groups that show at most about BATCH_ITEMS reviews.

    Only one group's reviews are in memory at a time: a full build of 100,000 reviews
    would otherwise hold every one of them, HTML and all, until the end.
    """
    batch: list[Job] = []
    wanted: dict[str, Entry] = {}
    for job in todo:
        batch.append(job)
        wanted.update((entry.id, entry) for entry in job[0].entries)
        if len(wanted) >= BATCH_ITEMS:
            yield batch, wanted
            batch, wanted = [], {}
    if batch:
        yield batch, wanted
