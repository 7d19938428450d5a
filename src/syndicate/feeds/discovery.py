"""Feed autodiscovery: the <link rel="alternate"> tags HTML pages carry for the site feeds."""

from __future__ import annotations

from dataclasses import dataclass

from syndicate.config import Config
from syndicate.feeds.model import FILENAMES, FORMAT_NAMES, MEDIA_TYPES


@dataclass(frozen=True)
class FeedLink:
    type: str
    title: str
    href: str


def feed_links(config: Config) -> list[FeedLink]:
    """The site feed in each configured format, the order of feeds.formats."""
    return [
        FeedLink(
            MEDIA_TYPES[fmt],
            f"{config.site.title} ({FORMAT_NAMES[fmt]})",
            f"{config.site.url}{FILENAMES[fmt]}",
        )
        for fmt in config.feeds.formats
    ]
