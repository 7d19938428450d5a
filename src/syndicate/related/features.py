"""A review as a sparse vector of weighted features, so that relatedness is one dot product.

Each feature's value is the square root of what sharing it is worth, so the product of
two reviews' values for a shared feature is exactly that worth (for words, the weights
multiply out to the cosine of the two TF-IDF vectors). docs/related.md has the formula.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import astuple, dataclass

from syndicate.config import RelatedConfig
from syndicate.related.text import key

# Words kept per review: its most distinctive ones. The rest would cost storage and time
# and change the cosine little (they are common, so their IDF is low).
TERMS_KEPT = 24
# A word or tag on more reviews than this (1% of the archive, at least 50 and at most
# 500) is left out of the vectors: it says little about which reviews belong together,
# and its long postings list is what would make a build quadratic and an update slow.
MIN_COMMON = 50
MAX_COMMON = 500

WORD, TAG, DIRECTOR, TITLE, FILM = "w:", "t:", "d:", "f:", "y:"
_CO_DIRECTORS = re.compile(r",|&|/|\band\b", re.IGNORECASE)
_KEY_LENGTH = 200


FEATURES_VERSION = 2  # 2: names keep + and #, and fold letters such as ł and ø


@dataclass(frozen=True)
class Settings:
    keep: int = 10
    min_score: float = 0.5
    film: float = 4.0
    title: float = 1.5
    director: float = 2.0
    tag: float = 1.0
    text: float = 3.0

    @classmethod
    def from_config(cls, config: RelatedConfig) -> Settings:
        w = config.weights
        return cls(config.keep, config.min_score, w.film, w.title, w.director, w.tag, w.text)

    def digest(self) -> str:
        """Changes when anything that shapes the stored lists does: then they are rebuilt."""
        # Code that shapes them counts too: FEATURES_VERSION changes with how features
        # are made (how names are keyed, say), so stored builds are redone.
        shape = (FEATURES_VERSION, TERMS_KEPT, MIN_COMMON, MAX_COMMON)
        values = (*shape, *(float(v) for v in astuple(self)))  # 2 and 2.0 alike
        return hashlib.sha256(repr(values).encode()).hexdigest()


@dataclass(frozen=True)
class Doc:
    """What the features of a review are made from."""

    id: str
    film: str | None
    year: int | None
    director: str | None
    tags: tuple[str, ...]


def common_above(documents: int) -> int:
    return max(MIN_COMMON, min(documents // 100, MAX_COMMON))


def feature_key(prefix: str, value: str) -> str:
    raw = prefix + value
    if len(raw) <= _KEY_LENGTH:
        return raw
    return raw[:180] + "~" + hashlib.sha1(raw.encode()).hexdigest()[:16]


def idf(df: int, documents: int) -> float:
    return math.log((1 + documents) / (1 + df))


def rarity(df: int, documents: int) -> float:
    """1 for a tag on two reviews (the fewest that can share it), 0 for one on all."""
    if documents <= 2:
        return 1.0
    return min(1.0, max(0.0, math.log(documents / max(df, 1)) / math.log(documents / 2)))


def word_keys(counts: Counter[str]) -> list[str]:
    return [WORD + t if len(t) < _KEY_LENGTH - 2 else feature_key(WORD, t) for t in counts]


def tag_keys(doc: Doc) -> list[str]:
    return list(dict.fromkeys(feature_key(TAG, key(t)) for t in doc.tags if key(t)))


def features(
    doc: Doc,
    counts: Counter[str],
    df: Mapping[str, int],
    documents: int,
    settings: Settings,
) -> dict[str, float]:
    """The feature vector. `df` and `documents` count this review too."""
    found: dict[str, float] = {}
    weighted = []
    log = math.log
    common = common_above(documents)
    for term, count in counts.items():
        k = WORD + term if len(term) < _KEY_LENGTH - 2 else feature_key(WORD, term)
        n = df.get(k, 1)
        if n > common:
            continue
        weight = (1 + log(count)) * log((1 + documents) / (1 + n))  # tf x idf
        if weight > 0:
            # A word on no other review cannot match anything yet, and has the highest
            # IDF: ranked by weight alone, such words crowd out the shared ones.
            weighted.append((n <= 1, -weight, k))
    kept = [(w, k) for _, w, k in sorted(weighted)[:TERMS_KEPT]]
    norm = math.sqrt(sum(w * w for w, _ in kept))
    if kept and settings.text > 0:
        scale = math.sqrt(settings.text) / norm
        found.update((k, -w * scale) for w, k in kept)
    if settings.tag > 0:
        for k in tag_keys(doc):
            n = df.get(k, 1)
            worth = settings.tag * rarity(n, documents) if n <= common else 0.0
            if worth > 0:
                found[k] = math.sqrt(worth)
    names = [key(n) for n in _CO_DIRECTORS.split(doc.director or "") if key(n)]
    if names and settings.director > 0:
        # Co-directors share the weight: the Coens' two names count as one director.
        share = math.sqrt(settings.director / len(names))
        for name in names:
            found[feature_key(DIRECTOR, name)] = share
    film = key(doc.film or "")
    if film:
        title = min(settings.title, settings.film)
        if title > 0:
            found[feature_key(TITLE, film)] = math.sqrt(title)
        if settings.film - title > 0:
            year = str(doc.year) if doc.year else "?"
            found[feature_key(FILM, f"{film}|{year}")] = math.sqrt(settings.film - title)
    return found


def score(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    if len(b) < len(a):
        a, b = b, a
    return round(sum(v * b[k] for k, v in a.items() if k in b), 6)
