"""Gathering reviews from where they live into the store."""

from __future__ import annotations

from datetime import UTC, datetime

from syndicate.config import Config
from syndicate.sources.files import FilesGatherer
from syndicate.sources.report import GatherReport
from syndicate.store import Store

__all__ = ["GatherReport", "gather"]


def gather(config: Config, store: Store, now: datetime | None = None) -> GatherReport:
    """Bring every source's reviews into the store. One bad file or source stops nothing."""
    now = now or datetime.now(UTC)
    report = GatherReport()
    for source in config.sources:
        gatherer = FilesGatherer(
            source, config.resolve(source.path), config.site.url, config.timezone, now
        )
        with store.session() as session:
            gatherer.gather(session, report)
    return report
