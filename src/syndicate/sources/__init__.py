"""Gathering reviews from where they live into the store: folders of files, other
sites' feeds, and sites' sitemaps."""

from __future__ import annotations

from datetime import UTC, datetime

from syndicate.config import Config, FeedSource, FilesSource, SitemapSource
from syndicate.sources.files import FilesGatherer
from syndicate.sources.remote import gather_remote
from syndicate.sources.report import GatherReport
from syndicate.store import Store

__all__ = ["GatherReport", "gather"]


def gather(config: Config, store: Store, now: datetime | None = None) -> GatherReport:
    """Bring every source's reviews into the store. One bad file or source stops nothing."""
    now = now or datetime.now(UTC)
    report = GatherReport()
    for source in config.sources:
        if isinstance(source, FilesSource):
            gatherer = FilesGatherer(
                source, config.resolve(source.path), config.site.url, config.timezone, now
            )
            with store.session() as session:
                gatherer.gather(session, report)
    remote = [s for s in config.sources if isinstance(s, FeedSource | SitemapSource)]
    gather_remote(store, remote, config.site.url, now, report)
    return report
