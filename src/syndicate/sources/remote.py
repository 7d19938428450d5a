"""Polling remote sources (feeds and sitemaps) and recording what each one answered.

Sources are fetched in parallel threads (a slow site should not make every other wait)
and written to the store one at a time, in the order of the YAML. A source that fails,
whatever the reason, is recorded in its SourceState with the reason, reported, and
polled again on the next run; it never stops another source.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from syndicate.config import FeedSource, SitemapSource
from syndicate.sources.feed import NotAFeed, parse_feed
from syndicate.sources.http import PAGE_WORKERS, SOURCE_WORKERS, Fetcher, FetchError
from syndicate.sources.ingest import one_line, store_entries
from syndicate.sources.poll import PageState, Poll, Snapshot
from syndicate.sources.report import GatherReport
from syndicate.sources.sitemap import poll_sitemap
from syndicate.store import Review, SourcePage, SourceState, Store

log = logging.getLogger(__name__)

RemoteSource = FeedSource | SitemapSource
FEED_ACCEPT = (
    "application/rss+xml, application/atom+xml, application/feed+json, "
    "application/xml;q=0.9, text/xml;q=0.9, application/json;q=0.8, */*;q=0.1"
)
# Column sizes (store.models): a validator that does not fit is not stored (a cut one
# would never match), a URL that does not fit is not followed.
ETAG_LIMIT = 500
LAST_MODIFIED_LIMIT = 100
URL_LIMIT = 2000


def gather_remote(
    store: Store, sources: list[RemoteSource], site_url: str, now: datetime, report: GatherReport
) -> None:
    if not sources:
        return
    with store.session() as session:
        adopt_renamed(session, sources)
    with store.session() as session:
        snapshots = {source.name: snapshot(session, source) for source in sources}
    workers = min(SOURCE_WORKERS, len(sources))
    with (
        Fetcher(site_url, SOURCE_WORKERS, PAGE_WORKERS) as fetcher,
        ThreadPoolExecutor(workers, "source") as pool,
    ):
        futures = [(s, pool.submit(_poll, fetcher, s, snapshots[s.name])) for s in sources]
        for source, future in futures:
            poll = future.result()
            try:
                with store.session() as session:
                    record(session, source, snapshots[source.name], poll, now, report)
            except Exception as exc:  # rolled back; the sources after it still count
                log.exception("storing source %s", source.name)
                failed = Poll(error=f"could not be stored: {one_line(exc)}")
                try:
                    with store.session() as session:
                        record(session, source, snapshots[source.name], failed, now, report)
                except Exception as again:  # not even the error: reported, and on we go
                    log.exception("recording the failure of source %s", source.name)
                    report.error(f"source {source.name}", f"{failed.error}; {one_line(again)}")


def adopt_renamed(session: Session, sources: list[RemoteSource]) -> None:
    """A source renamed in the YAML keeps its reviews (and their ids) and its state: a
    state whose configured URL and type are a new source's, under a name no longer
    configured, is moved to the new name."""
    names = {source.name for source in sources}
    for source in sources:
        if session.get(SourceState, source.name) is not None:
            continue
        orphans = session.scalars(
            select(SourceState)
            .where(
                SourceState.configured_url == source.url,
                SourceState.type == source.type,
                SourceState.name.not_in(names),
            )
            .order_by(SourceState.last_checked_at.desc())
        ).all()
        if not orphans:
            continue
        old = orphans[0].name
        log.warning("source %s was renamed %s: its reviews and state follow", old, source.name)
        session.execute(update(Review).where(Review.source == old).values(source=source.name))
        session.execute(
            update(SourcePage).where(SourcePage.source == old).values(source=source.name)
        )
        session.execute(update(SourceState).where(SourceState.name == old).values(name=source.name))
        session.expire_all()


def snapshot(session: Session, source: RemoteSource) -> Snapshot:
    state = session.get(SourceState, source.name)
    if state is None or state.configured_url != source.url:
        # New, or the editor changed its URL: start afresh there, without validators.
        return Snapshot(url=source.url)
    pages = {}
    if isinstance(source, SitemapSource):
        rows = session.scalars(select(SourcePage).where(SourcePage.source == source.name))
        pages = {
            row.url: PageState(
                row.lastmod,
                row.etag,
                row.last_modified,
                row.error,
                fetched=row.fetched_at is not None or row.error is not None,
            )
            for row in rows
        }
    return Snapshot(state.url, state.etag, state.last_modified, pages)


def _poll(fetcher: Fetcher, source: RemoteSource, snap: Snapshot) -> Poll:
    try:
        if isinstance(source, SitemapSource):
            return poll_sitemap(fetcher, source, snap)
        return poll_feed(fetcher, source, snap)
    except Exception as exc:  # a bug or a surprise in one source must not stop the others
        log.exception("polling source %s", source.name)
        return Poll(error=f"unexpected error: {one_line(exc)}")


def poll_feed(fetcher: Fetcher, source: FeedSource, snap: Snapshot) -> Poll:
    try:
        fetched = fetcher.get(
            snap.url,
            accept=FEED_ACCEPT,
            timeout=source.timeout,
            max_bytes=source.max_bytes,
            etag=snap.etag,
            last_modified=snap.last_modified,
            origin=source.url,
        )
    except FetchError as exc:
        return Poll(error=str(exc))
    poll = Poll(etag=fetched.etag, last_modified=fetched.last_modified, moved_to=fetched.moved_to)
    if fetched.not_modified:
        poll.not_modified = True
        return poll
    try:
        poll.entries, poll.home = parse_feed(
            fetched.content, fetched.content_type, fetched.url, source.zone
        )
    except NotAFeed as exc:
        return Poll(error=str(exc))
    return poll


def record(
    session: Session,
    source: RemoteSource,
    snap: Snapshot,
    poll: Poll,
    now: datetime,
    report: GatherReport,
) -> None:
    state = session.get(SourceState, source.name)
    if state is None:
        state = SourceState(name=source.name, items=0)
        session.add(state)
    if state.configured_url != source.url:
        state.configured_url = state.url = source.url
        state.etag = state.last_modified = None
    state.type = source.type
    state.last_checked_at = now
    if poll.error is not None:
        state.last_error, state.last_error_at = poll.error, now
        report.error(f"source {source.name} ({snap.url})", poll.error)
        return
    if poll.moved_to and poll.moved_to != state.url and len(poll.moved_to) <= URL_LIMIT:
        log.warning("source %s moved permanently to %s", source.name, poll.moved_to)
        state.url = poll.moved_to
    # A 304 may carry fresh validators; when it carries none, the old ones still hold.
    if not poll.not_modified or poll.etag or poll.last_modified:
        state.etag, state.last_modified = _validators(poll.etag, poll.last_modified)
    # An entry without a link links to the feed's home page, else to the feed.
    base = poll.home or poll.moved_to or snap.url
    if poll.entries:
        poll.warnings.extend(store_entries(session, source.name, poll.entries, now, report, base))
    if poll.listed:
        _remember_listed(session, source, snap, poll)
    if poll.pages:
        _record_pages(session, source, poll, now, report, base)
    for warning in poll.warnings:
        report.error(f"source {source.name}", warning)
    state.last_success_at = now
    if poll.warnings:
        state.last_error, state.last_error_at = poll.warnings[0], now
    state.items = session.scalar(
        select(func.count())
        .select_from(Review)
        .where(Review.source == source.name, Review.withdrawn_at.is_(None))
    )


def _record_pages(
    session: Session,
    source: RemoteSource,
    poll: Poll,
    now: datetime,
    report: GatherReport,
    base: str,
) -> None:
    entries = []
    for page in poll.pages:
        row = session.get(SourcePage, (source.name, page.url))
        if row is None:
            row = SourcePage(source=source.name, url=page.url)
            session.add(row)
        if page.error is not None:
            row.error = page.error
            poll.warnings.append(f"{page.url}: {page.error}")
            continue
        row.error = None
        row.lastmod = page.lastmod
        if page.etag or page.last_modified or page.fetched:
            row.etag, row.last_modified = _validators(page.etag, page.last_modified)
        if page.fetched:
            row.fetched_at = now
        if page.entry is not None:
            entries.append(page.entry)
    if entries:
        poll.warnings.extend(store_entries(session, source.name, entries, now, report, base))


def _remember_listed(session: Session, source: RemoteSource, snap: Snapshot, poll: Poll) -> None:
    """Every matching page the sitemap lists gets a row, fetched or not, so that pages
    left over by max_pages (or the time budget) are fetched on later runs even while
    the sitemap is unchanged. A page not fetched yet keeps the lastmod listed."""
    # Rows the snapshot does not hold may exist all the same (the URL was edited in the
    # YAML, which starts the source afresh): ask the table, in one query.
    stored = set(session.scalars(select(SourcePage.url).where(SourcePage.source == source.name)))
    for url, lastmod in poll.listed:
        known = snap.pages.get(url)
        if url not in stored:
            session.add(SourcePage(source=source.name, url=url, lastmod=lastmod))
        elif known is not None and not known.fetched and known.lastmod != lastmod:
            row = session.get(SourcePage, (source.name, url))
            if row is not None and row.fetched_at is None:
                row.lastmod = lastmod
    session.flush()


def _validators(etag: str | None, last_modified: str | None) -> tuple[str | None, str | None]:
    """The validators that fit their columns; one that does not is not stored."""
    return (
        etag if etag and len(etag) <= ETAG_LIMIT else None,
        last_modified if last_modified and len(last_modified) <= LAST_MODIFIED_LIMIT else None,
    )
