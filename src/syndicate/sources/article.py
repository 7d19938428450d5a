"""The review on a web page, for sites with a sitemap and no feed: trafilatura finds the
article (no menus, footers or comments) and its title, author, date and picture.

A page's schema.org JSON-LD, when it has one, is read first: it is what the site itself
says about the review (its date to the second, its rating, the film), where trafilatura
can only guess from the text.
"""

from __future__ import annotations

import json
import re
from datetime import tzinfo
from html import escape
from typing import Any

import lxml.html
from lxml import etree

from syndicate.sources.entry import Entry, json_ld_nodes, parse_date, schema_review

_WRAPPER = re.compile(r"^\s*<html>\s*<body>|</body>\s*</html>\s*$", re.I)
_LEADING_H1 = re.compile(r"^\s*<h1>(.*?)</h1>", re.S | re.I)


class NoArticle(ValueError):
    """The page has no article text to speak of."""


def extract_article(data: bytes, url: str, zone: tzinfo) -> Entry:
    # Imported here: trafilatura takes a fifth of a second to import, and only sitemap
    # sources need it, not every `syndicate` command.
    import trafilatura
    from trafilatura.utils import decode_file

    text = decode_file(data)
    try:
        tree = lxml.html.document_fromstring(text)
    except (etree.ParserError, ValueError) as exc:
        raise NoArticle(f"not an HTML page: {exc}") from None
    linked = _json_ld(tree)
    meta = trafilatura.extract_metadata(text, default_url=url)
    body = trafilatura.extract(
        text,
        url=url,
        output_format="html",
        include_images=True,
        include_links=True,
        include_formatting=True,
        include_comments=False,
        include_tables=True,
    )
    if not body:
        raise NoArticle("no article found on the page")
    body = _WRAPPER.sub("", body).strip()
    title = (linked.get("headline") or meta.title or "").strip()
    heading = _LEADING_H1.match(body)
    if heading and lxml.html.fromstring(heading.group(0)).text_content().strip() == title:
        body = body[heading.end() :].lstrip()  # the title is shown once, as the title
    review = schema_review(linked.get("nodes"))
    published = (
        parse_date(linked.get("datePublished"), zone)
        or parse_date(_meta(tree, "article:published_time"), zone)
        or parse_date(meta.date, zone)  # trafilatura's guess, to the day
    )
    return Entry(
        guid=None,
        link=url,
        title=title,
        body_html=body,
        summary_html=f"<p>{escape(meta.description)}</p>" if meta.description else "",
        author=review.get("author") or linked.get("author") or meta.author,
        published=published,
        updated=parse_date(
            linked.get("dateModified") or _meta(tree, "article:modified_time"), zone
        ),
        tags=[t.strip() for t in (meta.tags or []) if t.strip()],
        image=linked.get("image") or meta.image,
        rating=review.get("rating"),
        film=review.get("film"),
        year=review.get("year"),
        director=review.get("director"),
    )


def _json_ld(tree: Any) -> dict[str, Any]:
    """Headline, dates, author and image from the page's JSON-LD, plus every node."""
    nodes: list[Any] = []
    for script in tree.xpath('//script[@type="application/ld+json"]'):
        try:
            nodes.append(json.loads(script.text_content() or "null"))
        except json.JSONDecodeError:
            continue  # broken JSON-LD is common; the rest of the page still counts
    found: dict[str, Any] = {"nodes": nodes}
    for node in json_ld_nodes(nodes):
        kinds = node.get("@type")
        kinds = kinds if isinstance(kinds, list) else [kinds]
        if not {"Review", "CriticReview", "Article", "NewsArticle", "BlogPosting"} & set(kinds):
            continue
        for key in ("headline", "datePublished", "dateModified"):
            if isinstance(node.get(key), str) and key not in found:
                found[key] = node[key]
        author = node.get("author")
        author = author[0] if isinstance(author, list) and author else author
        name = author.get("name") if isinstance(author, dict) else author
        if isinstance(name, str) and name.strip():
            found.setdefault("author", name.strip())
        image = node.get("image")
        image = image[0] if isinstance(image, list) and image else image
        image = image.get("url") if isinstance(image, dict) else image
        if isinstance(image, str) and image.strip():
            found.setdefault("image", image.strip())
    return found


def _meta(tree: Any, name: str) -> str | None:
    values = tree.xpath("//meta[@property=$name or @name=$name]/@content", name=name)
    return str(values[0]).strip() if values else None
