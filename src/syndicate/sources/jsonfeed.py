"""A small JSON Feed (1.0 and 1.1) reader; feedparser reads only XML.

Lenient where sites are sloppy (a number as an id, `author` from 1.0 beside `authors`
from 1.1, text content only), strict about what makes it a JSON Feed at all: a `version`
of https://jsonfeed.org/version/... and a list of `items`.
"""

from __future__ import annotations

import json
from datetime import tzinfo
from html import escape
from typing import Any
from urllib.parse import urljoin

from syndicate.sources.content import plain_text
from syndicate.sources.entry import Entry, parse_date, scaled_rating, to_year

VERSION_PREFIX = "https://jsonfeed.org/version/"


def looks_like_json(data: bytes, content_type: str) -> bool:
    kind = content_type.split(";")[0].strip().lower()
    if kind.endswith("json"):
        return True
    return data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"{"


def parse_json_feed(data: bytes, url: str, zone: tzinfo) -> tuple[list[Entry], str | None]:
    """(the entries, the feed's home_page_url or None)."""
    try:
        document = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"JSON that is not UTF-8 (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"malformed JSON: line {exc.lineno}: {exc.msg}") from None
    if not isinstance(document, dict):
        raise ValueError("JSON, but not a JSON Feed (not an object)")
    version = str(document.get("version", ""))
    if not version.startswith(VERSION_PREFIX):
        raise ValueError("JSON, but not a JSON Feed (no https://jsonfeed.org/version/ version)")
    items = document.get("items")
    if not isinstance(items, list):
        raise ValueError("a JSON Feed without an items list")
    base = str(document.get("home_page_url") or document.get("feed_url") or url)
    feed_author = _author(document)
    entries = [_entry(item, base, zone, feed_author) for item in items if isinstance(item, dict)]
    home = _string(document.get("home_page_url"))
    home = urljoin(url, home) if home else None
    return entries, home if home and home.startswith(("http://", "https://")) else None


def _entry(item: dict[str, Any], base: str, zone: tzinfo, feed_author: str | None) -> Entry:
    link = _string(item.get("url")) or _string(item.get("external_url"))
    link = urljoin(base, link) if link else None
    text = _string(item.get("content_text"))
    body = _string(item.get("content_html")) or (
        "".join(f"<p>{escape(p)}</p>" for p in text.split("\n\n") if p.strip()) if text else ""
    )
    summary = _string(item.get("summary"))
    tags = [str(t).strip() for t in item.get("tags") or [] if isinstance(t, str | int)]
    entry = Entry(
        guid=_string(item.get("id")),
        link=link,
        title=plain_text(_string(item.get("title")) or ""),  # as RSS titles: no tags
        body_html=body or (f"<p>{escape(summary)}</p>" if summary else ""),
        summary_html=f"<p>{escape(summary)}</p>" if summary else "",
        author=_author(item) or feed_author,
        published=parse_date(_string(item.get("date_published")), zone),
        updated=parse_date(_string(item.get("date_modified")), zone),
        tags=[t for t in dict.fromkeys(tags) if t],
        image=_image(item, link or base),
    )
    if entry.published is None:
        entry.published = entry.updated
    review = item.get("_review")
    if isinstance(review, dict):
        # syndicate's own extension (docs/feeds.md): a 0-5 rating and the film's details.
        entry.rating = scaled_rating(review.get("rating"))
        entry.film = _string(review.get("film"))
        entry.year = to_year(review.get("year"))
        entry.director = _string(review.get("director"))
    return entry


def _string(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float | str):
        return str(value).strip() or None
    return None


def _author(holder: dict[str, Any]) -> str | None:
    authors = holder.get("authors")
    if isinstance(authors, list) and authors and isinstance(authors[0], dict):
        return _string(authors[0].get("name"))
    author = holder.get("author")  # JSON Feed 1.0
    return _string(author.get("name")) if isinstance(author, dict) else None


def _image(item: dict[str, Any], base: str) -> str | None:
    for key in ("image", "banner_image"):
        if _string(item.get(key)):
            return urljoin(base, str(item[key]).strip())
    for attachment in item.get("attachments") or []:
        if isinstance(attachment, dict) and str(attachment.get("mime_type", "")).startswith(
            "image/"
        ):
            return urljoin(base, str(attachment.get("url", "")))
    return None
