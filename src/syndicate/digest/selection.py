"""Which reviews go into the next issue: the new ones, the featured one, its relatives,
and the revised ones its readers got an earlier version of ("Updated")."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from syndicate.config import DigestConfig, FeaturedStrategy
from syndicate.related import Settings, related_reviews
from syndicate.store import DigestIssue, IssueReview, Review


@dataclass(frozen=True)
class RelatedLink:
    title: str
    url: str
    author: str | None = None
    published: datetime | None = None
    film: str | None = None


@dataclass(frozen=True)
class Selection:
    """An issue's reviews. `featured` is None only in an issue that carries nothing new,
    just revisions (`updated`: reviews its readers got before, revised since, each with
    its `revision_note`)."""

    featured: Review | None
    others: list[Review]
    related: list[RelatedLink]
    updated: list[Review] = field(default_factory=list)

    @property
    def reviews(self) -> list[Review]:
        """The new reviews, featured first; not the updated ones (recorded as UPDATED)."""
        return [self.featured, *self.others] if self.featured is not None else []


def new_reviews(session: Session, digest: str, floor: datetime, now: datetime) -> list[Review]:
    """Live reviews published in (floor, now] that no earlier issue of this digest carried."""
    already_sent = (
        select(IssueReview.review_id)
        .join(DigestIssue, DigestIssue.id == IssueReview.issue_id)
        .where(DigestIssue.digest == digest)
    )
    query = (
        select(Review)
        .where(
            Review.withdrawn_at.is_(None),
            Review.published > floor,
            Review.published <= now,
            Review.id.not_in(already_sent),
        )
        .order_by(Review.published.desc(), Review.id)
    )
    return list(session.scalars(query))


def choose_featured(reviews: Sequence[Review], strategies: Sequence[FeaturedStrategy]) -> Review:
    """The first strategy that finds a review wins; `newest` always does."""
    newest_first = sorted(reviews, key=lambda r: (r.published, r.id), reverse=True)
    for strategy in [*strategies, "newest"]:
        if strategy == "editors_pick":
            picks = [r for r in newest_first if r.featured]
            if picks:
                return picks[0]
        elif strategy == "highest_rated":
            rated = [r for r in newest_first if r.rating is not None]
            if rated:
                return max(rated, key=lambda r: r.rating or 0.0)  # max keeps the newest on ties
        elif strategy == "newest" and newest_first:
            return newest_first[0]
    raise ValueError("no reviews to choose from")


def related_links(
    session: Session,
    review: Review,
    limit: int,
    exclude: set[str],
    now: datetime,
    settings: Settings | None = None,
) -> list[RelatedLink]:
    """The author's own links first, then the review's stored related list (see
    syndicate.related), without reviews in `exclude`, withdrawn or not yet published."""
    links: list[RelatedLink] = []
    seen_urls = {review.url}
    for item in review.related:
        if item["url"] in seen_urls:
            continue
        match = session.scalars(select(Review).where(Review.url == item["url"])).first()
        # The author's choice stands, even for a review in this issue; but not a link to a
        # withdrawn review (its page is gone) or to one not published yet.
        if match is not None and (not match.live or match.published > now):
            continue
        links.append(
            RelatedLink(
                title=item["title"],
                url=item["url"],
                author=match.author if match else None,
                published=match.published if match else None,
                film=match.film if match else None,
            )
        )
        seen_urls.add(item["url"])
    if len(links) >= limit:
        return links[:limit]
    found = related_reviews(
        session,
        review,
        settings or Settings(),
        limit - len(links),
        now,
        exclude=exclude,
        exclude_urls=seen_urls,
    )
    for candidate in found:
        links.append(
            RelatedLink(
                title=candidate.title,
                url=candidate.url,
                author=candidate.author,
                published=candidate.published,
                film=candidate.film,
            )
        )
    return links


def select_for_issue(
    session: Session,
    digest: DigestConfig,
    reviews: Sequence[Review],
    now: datetime,
    settings: Settings | None = None,
    updated: Sequence[Review] = (),
) -> Selection | None:
    """The issue's selection from its new `reviews` and its `updated` (revised) ones, in
    the order given; None when it has neither. With only updated reviews, `featured` is
    None and there are no related links. A review among both is new, not updated."""
    new_ids = {r.id for r in reviews}
    revised = list({r.id: r for r in updated if r.id not in new_ids}.values())
    if not reviews:
        if not revised:
            return None
        return Selection(featured=None, others=[], related=[], updated=revised)
    featured = choose_featured(reviews, digest.featured)
    others = [r for r in reviews if r.id != featured.id]
    shown = {r.id for r in others} | {r.id for r in revised}
    related = related_links(session, featured, digest.related, shown, now, settings)
    return Selection(featured=featured, others=others, related=related, updated=revised)
