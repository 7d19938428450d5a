"""Escaping and dates for hand-written XML and JSON feed documents.

The documents are assembled from strings, not element trees: a full build renders every
review into several feeds and archive pages, and string assembly is several times faster.
Everything that goes in passes through `text()` or `attr()`; the tests parse every
document with strict XML parsers and validate Atom against RFC 4287's schema.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

from syndicate.sources.content import xml_safe

# Item values are cleaned of XML-forbidden characters once, when loaded (items.py), so
# the item_ functions, called for every item of every document, only escape; the others
# clean first.


def item_text(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def item_attr(value: str) -> str:
    return item_text(value).replace('"', "&quot;")


def item_element(name: str, value: str | None, indent: str) -> str:
    """`<name>value</name>` on its own line, or nothing when there is no value."""
    if value is None or value == "":
        return ""
    return f"{indent}<{name}>{item_text(value)}</{name}>\n"


def text(value: str) -> str:
    """Character data: &, < and > escaped, characters XML forbids dropped."""
    return item_text(xml_safe(value))


def attr(value: str) -> str:
    """An attribute value for double quotes."""
    return item_attr(xml_safe(value))


def element(name: str, value: str | None, indent: str) -> str:
    return item_element(name, None if value is None else xml_safe(value), indent)


def rfc822(moment: datetime) -> str:
    """RSS dates: 'Tue, 17 Nov 2026 09:00:00 +0000', always in UTC with its zone."""
    return format_datetime(moment.astimezone(UTC))


def rfc3339(moment: datetime) -> str:
    """Atom and JSON Feed dates: '2026-11-17T09:00:00+00:00'."""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat()


def number(value: float) -> str:
    """4.0 -> '4', 4.5 -> '4.5': ratings as people write them."""
    return f"{value:g}"
