"""schema.org JSON-LD for review and issue pages, so search engines show them as reviews.

A review is a `Review` of a `Movie` with a `Rating` out of 5; an issue page is an
`ItemList` of the reviews it carried.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from markupsafe import Markup

from syndicate.config import Config
from syndicate.store import Review

# Inside <script>, "</script>" (or "<!--") in a string would end or break the element;
# these escapes keep the JSON identical in meaning and leave no "<" or ">" in the HTML.
_SCRIPT_SAFE = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def script_json(data: Any) -> Markup:
    """JSON to put between <script type="application/ld+json"> and </script>."""
    text = json.dumps(data, ensure_ascii=False, indent=2, sort_keys=False)
    return Markup(text.translate(_SCRIPT_SAFE))


def _date(moment: datetime, config: Config) -> str:
    return moment.astimezone(config.timezone).replace(microsecond=0).isoformat()


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


def review_data(config: Config, review: Review, context: bool = True) -> dict[str, Any]:
    movie: dict[str, Any] = {"@type": "Movie", "name": review.film or review.title}
    if review.director:
        movie["director"] = {"@type": "Person", "name": review.director}
    if review.year:
        movie["dateCreated"] = str(review.year)
    if review.image:
        movie["image"] = review.image
    data: dict[str, Any] = {"@context": "https://schema.org"} if context else {}
    data.update(
        {
            "@type": "Review",
            "name": review.title,
            "url": review.url,
            "itemReviewed": movie,
            "author": {"@type": "Person", "name": review.author or config.site.author.name},
            "datePublished": _date(review.published, config),
            "dateModified": _date(review.updated, config),
            "publisher": {
                "@type": "Organization",
                "name": config.site.title,
                "url": config.site.url,
            },
            "inLanguage": config.site.language,
        }
    )
    if review.rating is not None:
        data["reviewRating"] = {
            "@type": "Rating",
            "ratingValue": _number(review.rating),
            "bestRating": 5,
            "worstRating": 0,
        }
    if review.summary:
        data["description"] = review.summary
    if review.tags:
        data["keywords"] = ", ".join(review.tags)
    return data


def issue_data(config: Config, name: str, url: str, reviews: list[Review]) -> dict[str, Any]:
    return {
        "@context": "https://schema.org",
        "@type": "ItemList",
        "name": name,
        "url": url,
        "numberOfItems": len(reviews),
        "itemListElement": [
            {
                "@type": "ListItem",
                "position": position,
                "item": review_data(config, review, context=False),
            }
            for position, review in enumerate(reviews, start=1)
        ],
    }
