"""Revisions readers care about, detected when a stored review is updated by any source.

Most edits are not news: a typo fixed in the body, a tag added, a new poster. A few are:
the rating changed, the verdict (the summary the critic wrote, which feeds publish as
`review:verdict`) says something else, or the editor flagged a correction (`correction:`
in a file's front matter). Such a revision sets `revised_at` to the gather's time and
`revision_note` to a sentence for readers, and the digest tells the readers who got the
earlier version (an "Updated" section); the feeds show the item as updated, not as new.

Every source calls the same two functions around its update of a review that was already
stored: `snapshot(review)` before, `note_revision(review, before, now, correction)` after.
A review's first version is never a revision.

Only the note is stored, not the correction on its own: a correction counts as new when
its text is not in the review's current note, so the note keeps the correction in force
(a later rating change says both), and saving the file again with the same correction is
not a revision.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from syndicate.sources.content import first_paragraph
from syndicate.store import Review

# Ratings from remote sources are rescaled and rounded to two decimals.
_RATING_TOLERANCE = 0.005
_WORD = re.compile(r"\w+")
# A word at least this long may have one letter fixed (added, dropped, changed, or two
# swapped) without it being a new verdict: "a love stroy" -> "a love story".
_SPELLING_MIN_LENGTH = 5


@dataclass(frozen=True)
class Before:
    """What readers care about in a stored review, taken before a source updates it."""

    rating: float | None
    verdict: str | None  # the summary when the critic wrote one; None when taken from the body
    updated: datetime
    note: str | None


def snapshot(review: Review) -> Before:
    return Before(
        rating=review.rating,
        verdict=verdict(review),
        updated=review.updated,
        note=review.revision_note,
    )


def verdict(review: Review) -> str | None:
    """The critic's own summary; None when the summary is the body's first paragraph
    (then an edit of the body, a typo fixed, must not count as a new verdict)."""
    summary = review.summary or ""
    if not summary.strip() or summary == first_paragraph(review.body_html or ""):
        return None
    return summary


def note_revision(
    review: Review, before: Before | None, now: datetime, correction: str | None = None
) -> bool:
    """After a source has updated `review` in place: mark it revised if readers should
    hear about it. `before` is None for a review's first version. True when revised."""
    if before is None:
        return False
    note = revision_note(before, review, correction)
    if note is None:
        return False
    review.revised_at = now
    review.revision_note = note
    # The feeds' modification date moves with the revision even when the front matter's
    # `updated` was left as it was (the published date, and so the item's place, stay).
    if review.updated is None or review.updated <= before.updated:
        review.updated = max(now, review.published)
    return True


def revision_note(before: Before, review: Review, correction: str | None = None) -> str | None:
    """The note for readers, or None when nothing they care about changed."""
    correction = " ".join((correction or "").split()) or None
    if correction is not None and correction not in (before.note or ""):
        return correction  # the editor's own words say it best
    changes = []
    rating = _rating_change(before.rating, review.rating)
    if rating:
        changes.append(rating)
    old, new = before.verdict, verdict(review)
    if old is not None and new is not None and not _same_words(old, new):
        changes.append("Verdict revised.")
    if not changes:
        return None
    if correction is not None:
        changes.append(correction)  # still in force: say it again, and remember it
    return " ".join(changes)


def rating_text(rating: float) -> str:
    return f"{round(rating, 2):g}/5"


def _rating_change(old: float | None, new: float | None) -> str | None:
    if old is None and new is None:
        return None
    if old is None:
        return f"Now rated {rating_text(new)}." if new is not None else None
    if new is None:
        return f"No longer rated (it was {rating_text(old)})."
    if abs(old - new) < _RATING_TOLERANCE:
        return None
    return f"Rating changed from {rating_text(old)} to {rating_text(new)}."


def _same_words(old: str, new: str) -> bool:
    """The same verdict: only punctuation, capitals, spacing or a spelling slip differ."""
    a, b = _WORD.findall(old.casefold()), _WORD.findall(new.casefold())
    if len(a) != len(b):
        return False
    return all(x == y or _spelling_fix(x, y) for x, y in zip(a, b, strict=True))


def _spelling_fix(a: str, b: str) -> bool:
    if min(len(a), len(b)) < _SPELLING_MIN_LENGTH or any(c.isdigit() for c in a + b):
        return False
    return _one_edit(a, b)


def _one_edit(a: str, b: str) -> bool:
    """One letter added, dropped or changed, or two neighbours swapped."""
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        if len(diff) == 1:
            return True
        return (
            len(diff) == 2
            and diff[1] == diff[0] + 1
            and (a[diff[0]], a[diff[1]]) == (b[diff[1]], b[diff[0]])
        )
    short, long = (a, b) if len(a) < len(b) else (b, a)
    i = next((i for i in range(len(short)) if short[i] != long[i]), len(short))
    return short[i:] == long[i + 1 :]
