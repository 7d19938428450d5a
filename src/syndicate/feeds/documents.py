"""One feed document, RSS 2.0 or Atom, rendered with feedgen from stored reviews."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from feedgen.feed import FeedGenerator

from syndicate import __version__
from syndicate.config import Config
from syndicate.store import Review


@dataclass(frozen=True)
class FeedSpec:
    key: str  # "site" or "tag:<folder>": part of the feed's Atom id, never change it
    title: str
    description: str
    folder: str  # relative to feeds.output, "" or ending in "/"
    tag: str | None = None
    spellings: tuple[str, ...] = ()  # every tag spelling this feed collects ("Drama", "drama")


def review_id_uri(config: Config, review_id: str) -> str:
    """An item's permanent id (RFC 4151 tag: URI), the same across edits and renames."""
    return f"tag:{config.site.host},{config.site.id_year}:review:{review_id}"


def render(
    kind: Literal["rss", "atom"], config: Config, spec: FeedSpec, url: str, reviews: list[Review]
) -> bytes:
    site = config.site
    feed = FeedGenerator()
    feed.load_extension("dc", atom=False, rss=True)
    feed.id(f"tag:{site.host},{site.id_year}:feed:{spec.key}")
    feed.title(spec.title)
    feed.description(spec.description or spec.title)
    feed.subtitle(spec.description or spec.title)
    feed.language(site.language)
    feed.author(
        {"name": site.author.name, **({"email": site.author.email} if site.author.email else {})}
    )
    feed.generator("syndicate", __version__)
    # Self first, alternate last: feedgen's RSS <link> takes the last link given.
    feed.link(href=url, rel="self")
    feed.link(href=site.url, rel="alternate")
    # The feed changes only when its items do, so the bytes (and caches) stay put otherwise.
    newest = max((r.updated for r in reviews), default=datetime(site.id_year, 1, 1, tzinfo=UTC))
    feed.updated(newest)
    feed.lastBuildDate(newest)

    for review in reviews:
        entry = feed.add_entry(order="append")
        entry.id(review_id_uri(config, review.id))
        entry.guid(review_id_uri(config, review.id), permalink=False)
        entry.title(review.title)
        entry.link(href=review.url, rel="alternate")
        entry.published(review.published)
        entry.updated(review.updated)
        entry.summary(review.summary or review.title)
        entry.description(review.summary or review.title)
        entry.content(review.body_html, type="CDATA" if kind == "rss" else "html")
        for tag in review.tags:
            entry.category(term=tag)
        if review.author:
            entry.author({"name": review.author})
            if kind == "rss":
                entry.dc.dc_creator(review.author)
    if kind == "rss":
        return feed.rss_str(pretty=True)
    return feed.atom_str(pretty=True)
