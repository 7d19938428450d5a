"""Turning an author's Markdown or HTML into HTML that is safe to put in a feed or an email."""

from __future__ import annotations

import html
import re
from functools import cache
from urllib.parse import urljoin, urlsplit

import nh3
from markdown_it import MarkdownIt

_EXTRA_TAGS = {"figure", "figcaption", "picture", "source", "details", "summary"}
_URL_ATTRIBUTES = {"href", "src", "cite", "poster"}


@cache
def _markdown() -> MarkdownIt:
    return MarkdownIt("commonmark", {"typographer": True}).enable(["table", "strikethrough"])


def markdown_to_html(text: str) -> str:
    return _markdown().render(text)


def sanitise(fragment: str, base_url: str) -> str:
    """Keep formatting, drop scripts and event handlers, and make every link absolute.

    Readers see this HTML in feed readers and mail clients, far from the site, so a
    relative link or image would point nowhere.
    """

    def absolute(tag: str, attribute: str, value: str) -> str | None:
        if attribute in _URL_ATTRIBUTES:
            return urljoin(base_url, value.strip())
        return value

    return nh3.clean(
        fragment,
        tags=nh3.ALLOWED_TAGS | _EXTRA_TAGS,
        attribute_filter=absolute,
        link_rel="noopener",
    ).strip()


# What XML 1.0 forbids: C0 controls other than tab, newline and return, and U+FFFE/U+FFFF.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def xml_safe(text: str) -> str:
    """Drop characters no feed may contain (a form feed pasted from a word processor, say).

    Left in, one of them would make every feed that lists the review unwritable.
    """
    return _NOT_XML.sub("", text)


_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")


def plain_text(fragment: str) -> str:
    return _SPACE.sub(" ", html.unescape(_TAG.sub(" ", fragment))).strip()


def first_paragraph(fragment: str, limit: int = 280) -> str:
    """A summary for reviews whose author did not write one."""
    match = re.search(r"<p>(.*?)</p>", fragment, re.S)
    text = plain_text(match.group(1) if match else fragment)
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0]
    return cut.rstrip(",;:.") + "…"


def slugify(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug or "review"


def sanitise_url(url: str | None, base: str) -> str | None:
    if not url:
        return None
    absolute = urljoin(base, url.strip())
    return absolute if urlsplit(absolute).scheme in ("http", "https") else None
