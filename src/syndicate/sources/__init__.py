"""Gathering reviews from where they live into the store: folders of files, other
sites' feeds, and sites' sitemaps."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError

from syndicate.config import Config, FeedSource, FilesSource, SitemapSource
from syndicate.sources.files import FilesGatherer
from syndicate.sources.remote import gather_remote
from syndicate.sources.report import GatherReport
from syndicate.store import Store

__all__ = ["GatherReport", "gather"]

log = logging.getLogger(__name__)


def gather(config: Config, store: Store, now: datetime | None = None) -> GatherReport:
    """Bring every source's reviews into the store. One bad file or source stops nothing."""
    now = now or datetime.now(UTC)
    report = GatherReport()
    for source in config.sources:
        if isinstance(source, FilesSource):
            gatherer = FilesGatherer(
                source, config.resolve(source.path), config.site.url, config.timezone, now
            )
            try:
                with store.session() as session:
                    gatherer.gather(session, report)
            except IntegrityError:
                # Another gather (a second process on PostgreSQL) stored the same new
                # reviews a moment earlier: this folder's changes are rolled back whole,
                # and the next gather finds the folder and the store in step.
                log.warning("source %s: another gather stored the same reviews", source.name)
                report.error(
                    str(config.resolve(source.path)),
                    f"source {source.name!r}: another gather was storing the same reviews at "
                    "the same moment; nothing from this folder was stored by this one, and "
                    "the next gather takes it up",
                )
    remote = [s for s in config.sources if isinstance(s, FeedSource | SitemapSource)]
    gather_remote(store, remote, config.site.url, now, report)
    return report
