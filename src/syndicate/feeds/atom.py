"""Atom (RFC 4287) documents, with RFC 5005 archive links and the review namespace."""

from __future__ import annotations

from syndicate import __version__
from syndicate.config import Config
from syndicate.feeds.markup import attr, element, item_attr, item_element, item_text, rfc3339
from syndicate.feeds.model import REVIEW_NS, Document, Item, feed_id_uri, links
from syndicate.feeds.rss import review_elements

NAMESPACES = (
    'xmlns="http://www.w3.org/2005/Atom" '
    'xmlns:fh="http://purl.org/syndication/history/1.0" '
    f'xmlns:review="{REVIEW_NS}"'
)
ATOM_TYPE = "application/atom+xml"


def render_atom(config: Config, document: Document) -> bytes:
    site = config.site
    spec = document.spec
    to = links(config, document, "atom")
    head = [
        "<?xml version='1.0' encoding='UTF-8'?>\n",
        f'<feed {NAMESPACES} xml:lang="{attr(site.language)}">\n',
        # Archive pages share the feed's id: RFC 5005 pages are one logical feed.
        element("id", feed_id_uri(config, spec.key), "  "),
        element("title", spec.title, "  "),
        element("subtitle", spec.description, "  "),
        element("updated", rfc3339(document.updated(config)), "  "),
        "  <author>\n",
        element("name", site.author.name, "    "),
        element("email", site.author.email, "    "),
        "  </author>\n",
        f'  <link rel="self" type="{ATOM_TYPE}" href="{attr(to.self)}"/>\n',
        f'  <link rel="alternate" type="text/html" href="{attr(to.alternate)}"/>\n',
    ]
    head += [f'  <link rel="hub" href="{attr(hub)}"/>\n' for hub in document.hubs]
    if document.is_archive:
        head.append("  <fh:archive/>\n")
        head.append(f'  <link rel="current" type="{ATOM_TYPE}" href="{attr(to.current)}"/>\n')
    if to.prev_archive:
        head.append(
            f'  <link rel="prev-archive" type="{ATOM_TYPE}" href="{attr(to.prev_archive)}"/>\n'
        )
    if to.next_archive:
        head.append(
            f'  <link rel="next-archive" type="{ATOM_TYPE}" href="{attr(to.next_archive)}"/>\n'
        )
    head.append(
        f'  <generator version="{attr(__version__)}">syndicate</generator>\n',
    )
    body = [atom_entry(item) for item in document.items]
    return "".join([*head, *body, "</feed>\n"]).encode("utf-8")


def atom_entry(item: Item) -> str:
    parts = [
        "  <entry>\n",
        item_element("id", item.id, "    "),
        item_element("title", item.title, "    "),
        f'    <link rel="alternate" type="text/html" href="{item_attr(item.url)}"/>\n',
        item_element("published", rfc3339(item.published), "    "),
        item_element("updated", rfc3339(item.updated), "    "),
    ]
    if item.author:
        parts.append(f"    <author>\n{item_element('name', item.author, '      ')}    </author>\n")
    parts += [f'    <category term="{item_attr(tag)}"/>\n' for tag in item.tags]
    parts.append(f'    <summary type="text">{item_text(item.summary or item.title)}</summary>\n')
    parts.append(f'    <content type="html">{item_text(item.body_html)}</content>\n')
    if item.poster:
        poster = item.poster
        length = f' length="{poster.length}"' if poster.length else ""
        parts.append(
            f'    <link rel="enclosure" type="{item_attr(poster.type)}" href="{item_attr(poster.url)}"{length}/>\n'
        )
    parts.append(review_elements(item, "    "))
    parts.append("  </entry>\n")
    return "".join(parts)
