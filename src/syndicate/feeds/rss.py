"""RSS 2.0 documents, with content:encoded, Media RSS, RFC 5005 and the review namespace."""

from __future__ import annotations

from syndicate import __version__
from syndicate.config import Config
from syndicate.feeds.markup import (
    attr,
    element,
    item_attr,
    item_element,
    item_text,
    number,
    rfc822,
)
from syndicate.feeds.model import REVIEW_NS, Document, Item, links

NAMESPACES = (
    'xmlns:atom="http://www.w3.org/2005/Atom" '
    'xmlns:content="http://purl.org/rss/1.0/modules/content/" '
    'xmlns:dc="http://purl.org/dc/elements/1.1/" '
    'xmlns:media="http://search.yahoo.com/mrss/" '
    'xmlns:fh="http://purl.org/syndication/history/1.0" '
    f'xmlns:review="{REVIEW_NS}"'
)


def render_rss(config: Config, document: Document) -> bytes:
    site = config.site
    spec = document.spec
    to = links(config, document, "rss")
    head = [
        "<?xml version='1.0' encoding='UTF-8'?>\n",
        f'<rss version="2.0" {NAMESPACES}>\n',
        "  <channel>\n",
        element("title", spec.title, "    "),
        element("link", to.alternate, "    "),
        element("description", spec.description or spec.title, "    "),
        f'    <atom:link rel="self" type="application/rss+xml" href="{attr(to.self)}"/>\n',
    ]
    for hub in document.hubs:
        head.append(f'    <atom:link rel="hub" href="{attr(hub)}"/>\n')
    if document.is_archive:
        head.append("    <fh:archive/>\n")
        head.append(
            f'    <atom:link rel="current" type="application/rss+xml" href="{attr(to.current)}"/>\n'
        )
    if to.prev_archive:
        head.append(
            f'    <atom:link rel="prev-archive" type="application/rss+xml" href="{attr(to.prev_archive)}"/>\n'
        )
    if to.next_archive:
        head.append(
            f'    <atom:link rel="next-archive" type="application/rss+xml" href="{attr(to.next_archive)}"/>\n'
        )
    head += [
        element("language", site.language, "    "),
        element("lastBuildDate", rfc822(document.updated(config)), "    "),
        element("generator", f"syndicate {__version__}", "    "),
        element("docs", "https://www.rssboard.org/rss-specification", "    "),
    ]
    body = [rss_item(item) for item in document.items]
    return "".join([*head, *body, "  </channel>\n</rss>\n"]).encode("utf-8")


def rss_item(item: Item) -> str:
    parts = [
        "    <item>\n",
        item_element("title", item.title, "      "),
        item_element("link", item.url, "      "),
        f'      <guid isPermaLink="false">{item_text(item.id)}</guid>\n',
        item_element("pubDate", rfc822(item.published), "      "),
        item_element("dc:creator", item.author, "      "),
    ]
    parts += [item_element("category", tag, "      ") for tag in item.tags]
    parts.append(item_element("description", item.summary or item.title, "      "))
    parts.append(item_element("content:encoded", item.body_html, "      "))
    if item.poster:
        poster = item.poster
        # RSS requires a length; 0 is the RSS Best Practices value for "not known".
        parts.append(
            f'      <enclosure url="{item_attr(poster.url)}" length="{poster.length or 0}" '
            f'type="{item_attr(poster.type)}"/>\n'
        )
        size = f' fileSize="{poster.length}"' if poster.length else ""
        parts.append(
            f'      <media:content url="{item_attr(poster.url)}" type="{item_attr(poster.type)}" '
            f'medium="image"{size}/>\n'
        )
    parts.append(review_elements(item, "      "))
    parts.append("    </item>\n")
    return "".join(parts)


def review_elements(item: Item, indent: str) -> str:
    """The film, year, director, rating and verdict, in the review namespace (docs/feeds.md)."""
    parts = [
        item_element("review:film", item.film, indent),
        item_element("review:year", str(item.year) if item.year else None, indent),
        item_element("review:director", item.director, indent),
    ]
    if item.rating is not None:
        parts.append(
            f'{indent}<review:rating worst="0" best="5">{number(item.rating)}</review:rating>\n'
        )
    parts.append(item_element("review:verdict", item.summary, indent))
    return "".join(parts)
