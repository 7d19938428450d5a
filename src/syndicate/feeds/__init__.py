"""Publishing RSS 2.0 and Atom feeds: the site feed and one per tag."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from syndicate.config import Config
from syndicate.feeds.documents import FeedSpec, render
from syndicate.output import write_if_changed
from syndicate.sources.content import slugify
from syndicate.store import Review, ReviewTag, Store

log = logging.getLogger(__name__)

__all__ = ["FeedReport", "build_feeds", "feed_specs"]

FILENAMES = {"rss": "feed.xml", "atom": "atom.xml"}


@dataclass
class FeedReport:
    written: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        return f"{len(self.written)} feed file(s) written, {len(self.unchanged)} unchanged"


def feed_specs(
    config: Config, tags: list[str], published_folders: Iterable[str] = ()
) -> list[FeedSpec]:
    """The site feed and one feed per tag folder.

    `published_folders` are tag folders that already hold feed files: one whose tag no
    review has any more gets an empty feed, rather than a stale file that keeps showing
    the reviews that dropped the tag.
    """
    site = config.site
    specs = [FeedSpec(key="site", title=site.title, description=site.description, folder="")]
    if config.feeds.per_tag:
        # Spellings that share a folder ("Drama", "drama") share one feed; otherwise each
        # would overwrite the other's file on every build.
        by_folder: dict[str, list[str]] = {}
        for tag in sorted(tags):
            by_folder.setdefault(slugify(tag), []).append(tag)
        for folder in published_folders:
            by_folder.setdefault(folder, [folder])
        for folder, spellings in sorted(by_folder.items()):
            tag = spellings[0]
            specs.append(
                FeedSpec(
                    # The folder, not a spelling: the feed keeps its id when a review
                    # brings a new spelling ("Drama") into an existing feed ("drama").
                    key=f"tag:{folder}",
                    title=f"{site.title}: {tag}",
                    description=f"Reviews tagged {tag} on {site.title}",
                    folder=f"tags/{folder}/",
                    tag=tag,
                    spellings=tuple(spellings),
                )
            )
    return specs


def published_tag_folders(output: Path) -> list[str]:
    """Tag folders under the output that hold a feed file from an earlier build."""
    return sorted(
        {
            path.parent.name
            for name in FILENAMES.values()
            for path in (output / "tags").glob(f"*/{name}")
            if slugify(path.parent.name) == path.parent.name
        }
    )


def build_feeds(config: Config, store: Store, now: datetime | None = None) -> FeedReport:
    """Write every feed file under feeds.output; leave unchanged files untouched."""
    now = now or datetime.now(UTC)
    output = config.resolve(config.feeds.output)
    report = FeedReport()
    with store.session() as session:
        visible = (Review.withdrawn_at.is_(None), Review.published <= now)
        # Tags of withdrawn reviews too: a tag whose last review was deleted gets an empty
        # feed, rather than a stale file that keeps showing the deleted review.
        tags = session.scalars(
            select(ReviewTag.tag)
            .join(Review)
            .where(Review.published <= now)
            .distinct()
            .order_by(ReviewTag.tag)
        ).all()
        for spec in feed_specs(config, list(tags), published_tag_folders(output)):
            query = select(Review).where(*visible)
            if spec.tag is not None:
                spellings = spec.spellings or (spec.tag,)
                query = query.where(Review.tag_rows.any(ReviewTag.tag.in_(spellings)))
            reviews = session.scalars(
                query.order_by(Review.published.desc(), Review.id).limit(config.feeds.items)
            ).all()
            for kind in config.feeds.formats:
                path = output / spec.folder / FILENAMES[kind]
                url = f"{config.site.url}{spec.folder}{FILENAMES[kind]}"
                content = render(kind, config, spec, url, list(reviews))
                if write_if_changed(path, content):
                    report.written.append(path)
                    log.info("wrote %s (%d items)", path, len(reviews))
                else:
                    report.unchanged.append(path)
    return report
