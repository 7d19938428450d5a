"""Deciding and recording the next issue of a digest."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from syndicate.config import Config, DigestConfig
from syndicate.digest.render import RenderedIssue, render_issue
from syndicate.digest.selection import Selection, new_reviews, select_for_issue
from syndicate.related import Settings
from syndicate.schedule.triggers import job_period
from syndicate.store import DigestIssue, IssueReview

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Draft:
    """An issue as it would be sent now, before it is recorded."""

    digest: DigestConfig
    number: int
    period_start: datetime
    period_end: datetime
    selection: Selection | None
    rendered: RenderedIssue


def period(config: Config, digest: DigestConfig) -> timedelta:
    """How far back a digest's first issue looks: one interval of its schedule."""
    schedule = config.schedules.digests.get(digest.name)
    return job_period(schedule, config.timezone) if schedule else timedelta(days=7)


def _aware(moment: datetime, config: Config) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=config.timezone)


def last_issue(session: Session, digest: str) -> DigestIssue | None:
    return session.scalars(
        select(DigestIssue).where(DigestIssue.digest == digest).order_by(DigestIssue.number.desc())
    ).first()


def unfinished_issue(session: Session, digest: str) -> DigestIssue | None:
    return session.scalars(
        select(DigestIssue)
        .where(DigestIssue.digest == digest, DigestIssue.status != DigestIssue.SENT)
        .order_by(DigestIssue.number)
    ).first()


def draft(config: Config, session: Session, digest: DigestConfig, now: datetime) -> Draft | None:
    """The next issue as it stands now, or None when there is nothing new to send."""
    previous = last_issue(session, digest.name)
    if previous is not None:
        # A review gathered late, dated inside the previous period, still gets its turn;
        # anything older than that is history, not news.
        floor = previous.period_start
        number = previous.number + 1
    elif digest.first_issue_since is not None:
        since = digest.first_issue_since
        if not isinstance(since, datetime):
            since = datetime.combine(since, datetime.min.time())
        floor = _aware(since, config)
        number = 1
    else:
        floor = now - period(config, digest)
        number = 1
    reviews = new_reviews(session, digest.name, floor, now)
    if not reviews and not digest.send_when_empty:
        return None
    settings = Settings.from_config(config.related)
    selection = select_for_issue(session, digest, reviews, now, settings)
    rendered = render_issue(config, digest, number, selection, now)
    start = previous.period_end if previous is not None else floor
    return Draft(digest, number, start, now, selection, rendered)


def record(session: Session, draft: Draft) -> DigestIssue:
    issue = DigestIssue(
        digest=draft.digest.name,
        number=draft.number,
        period_start=draft.period_start,
        period_end=draft.period_end,
        created_at=draft.period_end,
        subject=draft.rendered.subject,
        preheader=draft.rendered.preheader,
        html=draft.rendered.html,
        text=draft.rendered.text,
        status=DigestIssue.SENDING,
    )
    if draft.selection is not None:
        issue.reviews = [
            IssueReview(
                review_id=review.id,
                role=IssueReview.FEATURED if position == 0 else IssueReview.LISTED,
                position=position,
            )
            for position, review in enumerate(draft.selection.reviews)
        ]
    session.add(issue)
    session.flush()
    log.info(
        "digest %s: issue %d recorded with %d review(s)",
        issue.digest,
        issue.number,
        len(issue.reviews),
    )
    return issue


def issue_to_send(
    config: Config, session: Session, digest: DigestConfig, now: datetime
) -> DigestIssue | None:
    """The issue a send should work on: an unfinished one first, else a new one if due."""
    pending = unfinished_issue(session, digest.name)
    if pending is not None:
        return pending
    upcoming = draft(config, session, digest, now)
    return record(session, upcoming) if upcoming is not None else None


def issue_count(session: Session, digest: str) -> int:
    return session.scalar(select(func.count()).where(DigestIssue.digest == digest)) or 0
