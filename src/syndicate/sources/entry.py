"""One item read from a remote source (a feed entry, an article page), before it is stored.

Also the parsing that feeds and pages share: dates as real sites write them, and
ratings in the forms syndicate understands.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any


@dataclass
class Entry:
    guid: str | None  # the feed's own id for it (RSS guid, Atom id, JSON Feed id)
    link: str | None  # absolute
    title: str
    body_html: str = ""  # raw; sanitised when stored
    summary_html: str = ""
    author: str | None = None
    published: datetime | None = None
    updated: datetime | None = None
    tags: list[str] = field(default_factory=list)
    image: str | None = None
    rating: float | None = None  # 0-5
    film: str | None = None
    year: int | None = None
    director: str | None = None


# --- dates -------------------------------------------------------------------------------

_ISO = re.compile(
    r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?\s*(Z|[+-]\d{2}:?\d{2})?$", re.I
)
# Zone names seen in the wild; RFC 822's own plus the European ones sites use anyway.
_NAMED_ZONES = {
    "UT": 0, "UTC": 0, "GMT": 0, "Z": 0, "WET": 0, "BST": 1, "CET": 1, "WEST": 1,
    "CEST": 2, "EET": 2, "EEST": 3, "EST": -5, "EDT": -4, "CST": -6, "CDT": -5,
    "MST": -7, "MDT": -6, "PST": -8, "PDT": -7,
}  # fmt: skip
_RFC822 = re.compile(
    r"^(?:[A-Za-z]{2,9}\.?,?\s*)?"  # the weekday: noise, and often wrong
    r"(?P<day>\d{1,2})[\s-]+(?P<month>[A-Za-z]{3})[A-Za-z]*\.?[\s-]+(?P<year>\d{2,4})"
    r"(?:\s+(?P<hour>\d{1,2}):(?P<minute>\d{2})(?::(?P<second>\d{2}))?)?"
    r"(?:\s*(?P<zone>[+-]\d{2}:?\d{2}|[A-Za-z]{1,5}))?$"
)
_MONTHS = {
    m: n
    for n, m in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1
    )
}


# Dates outside these years are taken as no date: 0001-01-01 (a CMS's "unset") cannot
# even be converted to UTC, and 9999 is no better.
FIRST_YEAR, LAST_YEAR = 1900, 2200


def parse_date(text: str | None, zone: tzinfo = UTC) -> datetime | None:
    """A date from RFC 822 (RSS) or RFC 3339 (Atom, JSON Feed), forgiving what sites get
    wrong: no zone (taken as `zone`), a wrong weekday, a two-digit year, a zone name
    such as CEST, a space instead of "T". None when it is not a date at all, or not
    one between FIRST_YEAR and LAST_YEAR."""
    parsed = _parse_date(text, zone)
    if parsed is None or not FIRST_YEAR <= parsed.year <= LAST_YEAR:
        return None
    return parsed


def _parse_date(text: str | None, zone: tzinfo) -> datetime | None:
    if not text:
        return None
    text = " ".join(text.split())
    if _ISO.match(text):
        iso = re.sub(r"^(\S+) (?=\d)", r"\1T", text).replace(" ", "").upper()
        iso = re.sub(r"([+-]\d{2})(\d{2})$", r"\1:\2", iso).replace("Z", "+00:00")
        try:
            parsed = datetime.fromisoformat(iso)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=zone)
    match = _RFC822.match(text)
    if not match or match["month"].lower() not in _MONTHS:
        return None
    year = int(match["year"])
    if year < 100:
        year += 2000 if year < 70 else 1900
    try:
        naive = datetime(
            year,
            _MONTHS[match["month"].lower()],
            int(match["day"]),
            int(match["hour"] or 0),
            int(match["minute"] or 0),
            int(match["second"] or 0),
        )
    except ValueError:
        return None
    name = (match["zone"] or "").upper()
    if name[:1] in "+-" and name:
        digits = name[1:].replace(":", "")
        minutes = int(digits[:2]) * 60 + int(digits[2:])
        offset = timedelta(minutes=minutes if name[0] == "+" else -minutes)
        return naive.replace(tzinfo=timezone(offset))
    if name in _NAMED_ZONES:
        return naive.replace(tzinfo=timezone(timedelta(hours=_NAMED_ZONES[name])))
    return naive.replace(tzinfo=zone)  # no zone, or one nobody can be sure of


def plausible(when: datetime | None, now: datetime) -> datetime | None:
    """A date no later than now: a post dated next year (a wrong clock, a typo) would
    otherwise sit at the top of every feed and digest until then."""
    if when is None or not FIRST_YEAR <= when.year <= LAST_YEAR:
        return None
    return min(when, now)


# --- ratings -----------------------------------------------------------------------------


def to_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        match = re.search(r"-?\d+(?:[.,]\d+)?", value)
        if match:
            return float(match.group().replace(",", "."))
    return None


def scaled_rating(
    value: Any, best: Any = None, worst: Any = None, *, default_best: float = 5
) -> float | None:
    """A rating on syndicate's 0-5 scale, from a value on the source's own scale."""
    number = to_number(value)
    if number is None:
        return None
    top = to_number(best) or default_best
    bottom = to_number(worst) or 0.0
    if top <= bottom or not bottom <= number <= top:
        return None
    return round((number - bottom) / (top - bottom) * 5, 2)


def schema_review(data: Any) -> dict[str, Any]:
    """Film, year, director and rating from a schema.org Review (JSON-LD), in whatever
    nesting sites use (@graph, lists). Empty when there is none."""
    for node in json_ld_nodes(data):
        kinds = node.get("@type")
        kinds = kinds if isinstance(kinds, list) else [kinds]
        if "Review" not in kinds and "CriticReview" not in kinds:
            continue
        found: dict[str, Any] = {}
        rating = node.get("reviewRating")
        if isinstance(rating, dict):
            # schema.org's defaults are 1 and 5, but 0-5 and 0-10 scales say so explicitly.
            found["rating"] = scaled_rating(
                rating.get("ratingValue"), rating.get("bestRating"), rating.get("worstRating")
            )
        item = node.get("itemReviewed")
        if isinstance(item, dict):
            found["film"] = _text(item.get("name"))
            director = item.get("director")
            if isinstance(director, list):
                director = director[0] if director else None
            found["director"] = _text(
                director.get("name") if isinstance(director, dict) else director
            )
            created = str(item.get("dateCreated") or "")[:4]
            found["year"] = int(created) if created.isdigit() else None
        author = node.get("author")
        if isinstance(author, list):
            author = author[0] if author else None
        found["author"] = _text(author.get("name") if isinstance(author, dict) else author)
        return {key: value for key, value in found.items() if value is not None}
    return {}


def json_ld_nodes(data: Any) -> list[dict[str, Any]]:
    if isinstance(data, list):
        return [node for item in data for node in json_ld_nodes(item)]
    if isinstance(data, dict):
        return [data, *json_ld_nodes(data.get("@graph", []))]
    return []


def _text(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def to_year(value: Any) -> int | None:
    number = to_number(value)
    return int(number) if number is not None and 1870 <= number <= 2200 else None
