"""Reading another site's feed: RSS 0.9x/1.0/2.0 and Atom by feedparser, JSON Feed by
sources.jsonfeed. Every format becomes a list of Entry, newest first as the feed has it.

Ratings are read where the feed carries them in a form syndicate knows (docs/sources.md):
syndicate's own review: namespace (REVIEW_NS; the prefix may be anything), and in JSON
Feed its `_review` extension. Anything else is left unrated rather than guessed.
"""

from __future__ import annotations

import logging
import re
from datetime import tzinfo
from html import escape
from typing import Any
from urllib.parse import urljoin

import feedparser
from lxml import etree

from syndicate.feeds.model import REVIEW_NS
from syndicate.sources.content import plain_text
from syndicate.sources.entry import Entry, parse_date, scaled_rating, to_year
from syndicate.sources.jsonfeed import looks_like_json, parse_json_feed

log = logging.getLogger(__name__)

_IMG = re.compile(r"<img\b[^>]*?\bsrc\s*=\s*[\"']([^\"']+)", re.I)


class NotAFeed(ValueError):
    """The document is no feed syndicate can read; str() says what it is instead."""


def parse_feed(
    data: bytes, content_type: str, url: str, zone: tzinfo
) -> tuple[list[Entry], str | None]:
    """(the entries, the feed's home page: the channel's link, or None)."""
    if looks_like_json(data, content_type):
        try:
            return parse_json_feed(data, url, zone)
        except ValueError as exc:
            raise NotAFeed(f"not a feed: {exc}") from None
    parsed = feedparser.parse(
        data,
        # The HTTP charset matters for the encoding; no base URL, so that relative links
        # stay relative until they are resolved against each entry's own link.
        response_headers={"content-type": content_type or "application/xml"},
        sanitize_html=False,  # nh3 does it when the entry is stored, with our rules
    )
    problem = parsed.get("bozo_exception")
    if not parsed.get("version"):
        raise NotAFeed(_what_instead(data, content_type, problem))
    if parsed.bozo and not parsed.entries:
        raise NotAFeed(f"not a feed: malformed XML: {_describe(problem)}")
    if isinstance(problem, feedparser.CharacterEncodingOverride):
        # A wrong or missing charset, read in the one that fits: routine on the web.
        log.info("%s: %s", url, _describe(problem))
    elif parsed.bozo:
        # Salvaged by feedparser's lenient parser; better these entries than none.
        log.warning("%s: read despite a problem: %s", url, _describe(problem))
    extras = _review_elements(data, len(parsed.entries))
    entries = []
    for index, raw in enumerate(parsed.entries):
        entries.append(_entry(raw, url, zone, extras[index] if index < len(extras) else {}))
    home = parsed.feed.get("link")
    home = urljoin(url, home.strip()) if isinstance(home, str) and home.strip() else None
    return entries, home if home and home.startswith(("http://", "https://")) else None


def _entry(raw: Any, feed_url: str, zone: tzinfo, review: dict[str, str]) -> Entry:
    link = raw.get("link")
    link = urljoin(feed_url, link.strip()) if link else None
    content = ""
    for part in raw.get("content", []):
        # Atom may carry text and HTML versions; HTML reads better.
        if part.get("type", "") in ("text/html", "application/xhtml+xml") or not content:
            content = _as_html(part.get("value", ""), part.get("type", ""))
    summary = _as_html(raw.get("summary", ""), raw.get("summary_detail", {}).get("type", ""))
    author = raw.get("author_detail", {}).get("name") or raw.get("author")
    tags = [(t.get("label") or t.get("term") or "").strip() for t in raw.get("tags", [])]
    entry = Entry(
        guid=(raw.get("id") or "").strip() or None,
        link=link,
        title=_plain(raw.get("title", "")),
        body_html=content or summary,
        summary_html=summary if content else "",
        author=_plain(author) if author else None,
        published=parse_date(raw.get("published") or raw.get("created"), zone),
        updated=parse_date(dict.get(raw, "updated"), zone),  # no fallback to published
        tags=[t for t in dict.fromkeys(tags) if t],
        image=_image(raw, content or summary, link or feed_url),
    )
    if entry.published is None:
        entry.published = entry.updated
    if review:
        entry.rating = scaled_rating(
            review.get("rating"), review.get("rating@best"), review.get("rating@worst")
        )
        entry.film = review.get("film") or None
        entry.year = to_year(review.get("year"))
        entry.director = review.get("director") or None
    return entry


def _as_html(value: str, kind: str) -> str:
    if kind == "text/plain":
        return f"<p>{escape(value)}</p>" if value.strip() else ""
    return value


def _plain(value: str) -> str:
    return plain_text(value)


def _image(raw: Any, html: str, base: str) -> str | None:
    """The entry's picture: an image enclosure, then media:content or media:thumbnail,
    then the first <img> in its content."""
    for link in raw.get("links", []):
        if link.get("rel") == "enclosure" and str(link.get("type", "")).startswith("image/"):
            return urljoin(base, link.get("href", ""))
    for media in [*raw.get("media_content", []), *raw.get("media_thumbnail", [])]:
        kind = str(media.get("type") or media.get("medium") or "image")
        if media.get("url") and kind.startswith("image"):
            return urljoin(base, media["url"])
    match = _IMG.search(html)
    return urljoin(base, match.group(1)) if match else None


def _review_elements(data: bytes, count: int) -> list[dict[str, str]]:
    """review: elements per item, in document order (feedparser loses the values of
    elements with attributes, and names them by whatever prefix the feed chose)."""
    if REVIEW_NS.encode() not in data:
        return []
    parser = etree.XMLParser(recover=True, resolve_entities=False, no_network=True)
    try:
        root = etree.fromstring(data, parser)
    except (etree.XMLSyntaxError, ValueError):
        return []
    if root is None:
        return []
    items = [
        el
        for el in root.iter()
        if isinstance(el.tag, str) and etree.QName(el).localname in ("item", "entry")
    ]
    found: list[dict[str, str]] = []
    for item in items[:count]:
        values: dict[str, str] = {}
        for child in item:
            if not isinstance(child.tag, str) or etree.QName(child).namespace != REVIEW_NS:
                continue
            name = etree.QName(child).localname
            values[name] = (child.text or "").strip()
            for attribute in ("best", "worst"):
                if child.get(attribute) is not None:
                    values[f"{name}@{attribute}"] = child.get(attribute, "")
        found.append(values)
    return found


def _what_instead(data: bytes, content_type: str, problem: Any) -> str:
    head = data[:2000].lstrip().lower()
    if b"<html" in head or b"<!doctype html" in head or "html" in content_type.lower():
        return "not a feed: an HTML page" + (f" ({content_type})" if content_type else "")
    if not data.strip():
        return "not a feed: the response is empty"
    if problem is not None:
        return f"not a feed: malformed XML: {_describe(problem)}"
    return "not a feed: no RSS, Atom or JSON Feed found"


def _describe(problem: Any) -> str:
    text = str(problem or "unknown problem").strip().splitlines()[0]
    match = re.match(r"^<unknown>:(\d+):(\d+): (.*)$", text)  # expat's, via feedparser
    return f"line {match[1]}, column {match[2]}: {match[3]}" if match else text
