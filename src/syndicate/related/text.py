"""Words for text similarity: a review's title, film, summary and body as comparable terms.

Deliberately plain (no language model, nothing downloaded): casefolded, accents dropped,
common English words and review boilerplate removed, and a plural `s` trimmed so that
"sandworms" meets "sandworm".
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections import Counter

_TAGS = re.compile(r"<[^>]+>")
_MARKS = re.compile(r"[\u0300-\u036f]")
_WORD = re.compile(r"[^\W\d_]{2,}")
# Names keep + and # ("C++" and "C#" are not the same tag); other punctuation goes.
_NOT_NAME = re.compile(r"[^\w+#]+|_+")
# Letters NFKD does not take apart: "Paweł" must meet "Pawel", "Søren" meet "Soren".
_LETTERS = str.maketrans(
    {"ł": "l", "ø": "o", "đ": "d", "ð": "d", "þ": "th", "æ": "ae", "œ": "oe", "ß": "ss", "ı": "i"}
)

# Words in nearly every review say nothing about which reviews belong together; they
# would only crowd the few distinctive ones out of a review's kept terms.
_STOPWORDS = """
    a about above after again against all almost also although always am among an and
    another any are around as at be because been before being below between both but by
    can cannot could did do does doing done down during each either else enough even ever
    every few first for from further get gets getting got had has have having he her here
    hers herself him himself his how however if in into is it its itself just last least
    less like made make makes many may me might more most much must my myself near neither
    never new no nor not nothing now of off often on once one only or other others our ours
    out over own perhaps quite rather really same say says see seems seen she should since
    so some something still such than that the their theirs them themselves then there
    these they thing things this those though through thus to too two under until up upon
    us very was way we well were what when where whether which while who whom whose why
    will with within without would yet you your yours yourself
    film films movie movies picture review reviews reviewer critic cinema screen scene
    scenes story stories character characters director directed directs minute minutes
    time times year years part watch watching audience viewer viewers
"""
STOPWORDS = frozenset(_STOPWORDS.split())


def plain_text(markup: str) -> str:
    """The words of an HTML fragment, without its tags."""
    return html.unescape(_TAGS.sub(" ", markup))


def fold(text: str) -> str:
    """Casefolded, without accents: "Kieślowski" and "Kieslowski" compare equal."""
    folded = text.casefold()
    if folded.isascii():  # most English text: nothing to decompose
        return folded
    return _MARKS.sub("", unicodedata.normalize("NFKD", folded.translate(_LETTERS)))


def key(text: str) -> str:
    """A name (film, director, tag) reduced to letters and digits for matching."""
    return " ".join(_NOT_NAME.sub(" ", fold(text)).split())


def _stem(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def words(text: str) -> list[str]:
    return [_stem(w) for w in _WORD.findall(fold(text)) if w not in STOPWORDS]


def term_counts(title: str, film: str | None, summary: str, body_html: str) -> Counter[str]:
    """How often each term occurs. Title and film count three times: they say what the
    review is about, where the body also wanders off to other films."""
    raw = Counter(_WORD.findall(fold(summary + " " + plain_text(body_html))))
    for word in _WORD.findall(fold(f"{title} {film or ''}")):
        raw[word] += 3
    # Stemmed once per distinct word, not per occurrence: a full build tokenises the
    # whole archive twice.
    counts: Counter[str] = Counter()
    for word, count in raw.items():
        if word not in STOPWORDS:
            counts[_stem(word)] += count
    return counts
