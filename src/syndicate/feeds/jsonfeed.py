"""JSON Feed 1.1 documents, with the `_review` and `_archive` extension objects.

JSON Feed has no archives of its own: `next_url` (older items) chains the subscription
feed to the newest archive page and each page to the one before it, and `_archive`
carries RFC 5005's links under the same names as in RSS and Atom.
"""

from __future__ import annotations

import json
from typing import Any

from syndicate.config import Config
from syndicate.feeds.markup import rfc3339
from syndicate.feeds.model import REVIEW_NS, Document, Item, links

VERSION = "https://jsonfeed.org/version/1.1"


def render_json(config: Config, document: Document) -> bytes:
    site = config.site
    spec = document.spec
    to = links(config, document, "json")
    feed: dict[str, Any] = {
        "version": VERSION,
        "title": spec.title,
        "home_page_url": to.alternate,
        "feed_url": to.self,
        "description": spec.description or spec.title,
        "language": site.language,
        "authors": [{"name": site.author.name}],
    }
    if document.hubs:
        feed["hubs"] = [{"type": "WebSub", "url": hub} for hub in document.hubs]
    if to.prev_archive:
        feed["next_url"] = to.prev_archive  # JSON Feed's next page holds older items
    if document.is_archive or to.prev_archive:
        archive: dict[str, Any] = {"about": "https://www.rfc-editor.org/rfc/rfc5005"}
        if document.is_archive:
            archive["archive"] = True
            archive["current"] = to.current
        if to.prev_archive:
            archive["prev-archive"] = to.prev_archive
        if to.next_archive:
            archive["next-archive"] = to.next_archive
        feed["_archive"] = archive
    # The feed's own keys indented, then one item per line: readable, and each item goes
    # through json's C encoder (an `indent` would switch the whole document to the slow
    # pure-Python one, which matters with thousands of archive pages).
    head = json.dumps(feed, ensure_ascii=False, indent=1)
    items = ",\n  ".join(json.dumps(json_item(item), ensure_ascii=False) for item in document.items)
    body = f"[\n  {items}\n ]" if items else "[]"
    return f'{head[:-2]},\n "items": {body}\n}}\n'.encode()


def json_item(item: Item) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": item.id,
        "url": item.url,
        "title": item.title,
        "content_html": item.body_html,
        "summary": item.summary or item.title,
        "date_published": rfc3339(item.published),
        "date_modified": rfc3339(item.updated),
    }
    if item.tags:
        entry["tags"] = list(item.tags)
    if item.author:
        entry["authors"] = [{"name": item.author}]
    if item.poster:
        entry["image"] = item.poster.url
    review: dict[str, Any] = {"about": REVIEW_NS}
    for key in ("film", "year", "director", "rating"):
        value = getattr(item, key)
        if value is not None:
            review[key] = value
    if item.summary:
        review["verdict"] = item.summary
    entry["_review"] = review
    return entry
