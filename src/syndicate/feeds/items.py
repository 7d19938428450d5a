"""Loading the reviews that the documents being rendered show, as feed items."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import select
from sqlalchemy.orm import Session

from syndicate.config import Config
from syndicate.feeds.catalog import Entry
from syndicate.feeds.model import Item, poster, review_id_uri
from syndicate.sources.content import xml_safe
from syndicate.store import Review

CHUNK = 500  # ids per query: well under every database's limit on bound parameters

COLUMNS = (
    Review.id,
    Review.url,
    Review.title,
    Review.summary,
    Review.body_html,
    Review.published,
    Review.updated,
    Review.author,
    Review.film,
    Review.year,
    Review.director,
    Review.rating,
    Review.image,
)


def load_items(config: Config, session: Session, wanted: dict[str, Entry]) -> dict[str, Item]:
    """Items for the entries in `wanted` (by review id); tags come from the entries."""
    items: dict[str, Item] = {}
    for row in _rows(session, sorted(wanted)):
        review_id, url, title, summary, body, published, updated, author = row[:8]
        film, year, director, rating, image = row[8:]
        # Cleaned of characters XML forbids once here, not in every document that shows
        # the item (markup.item_text). Gathering cleans them already; this is the guard.
        items[review_id] = Item(
            id=review_id_uri(config, review_id),
            url=xml_safe(url),
            title=xml_safe(title),
            summary=xml_safe(summary or ""),
            body_html=xml_safe(body or ""),
            published=published,
            updated=updated,
            tags=tuple(xml_safe(tag) for tag in wanted[review_id].tags),
            author=_clean(author),
            film=_clean(film),
            director=_clean(director),
            year=year,
            rating=rating,
            poster=poster(config, _clean(image)),
        )
    return items


def _clean(value: str | None) -> str | None:
    return xml_safe(value) if value else value


def _rows(session: Session, ids: list[str]) -> Iterator[tuple]:  # type: ignore[type-arg]
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        yield from session.execute(select(*COLUMNS).where(Review.id.in_(chunk)))
