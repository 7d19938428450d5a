"""Deciding and recording the next issue of a digest."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import insert, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from syndicate.config import Config, DigestConfig
from syndicate.digest.plan import Plan, period
from syndicate.digest.render import RenderedIssue, render_issue
from syndicate.digest.selection import Selection, new_reviews, select_for_issue
from syndicate.related import Settings
from syndicate.store import (
    Delivery,
    DigestIssue,
    DigestLock,
    IssueReview,
    Subscriber,
    Subscription,
)
from syndicate.store.models import UTCDateTime

DELIVERIES = Delivery.__table__
QUEUE_CHUNK = 10_000

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


def _aware(moment: datetime, config: Config) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=config.timezone)


def last_issue(session: Session, digest: str) -> DigestIssue | None:
    return session.scalars(
        select(DigestIssue).where(DigestIssue.digest == digest).order_by(DigestIssue.number.desc())
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


def record(
    session: Session,
    draft: Draft,
    subscriber_ids: Sequence[int] | None = None,
    cadence: str | None = None,
    slot_at: datetime | None = None,
    status: str = DigestIssue.SENDING,
) -> DigestIssue:
    """Record the issue and queue it for its readers: `subscriber_ids`, or (None) every
    active reader of the digest who had subscribed by the time of the issue."""
    issue = DigestIssue(
        digest=draft.digest.name,
        number=draft.number,
        cadence=cadence,
        slot_at=slot_at,
        period_start=draft.period_start,
        period_end=draft.period_end,
        created_at=draft.period_end,
        subject=draft.rendered.subject,
        preheader=draft.rendered.preheader,
        html=draft.rendered.html,
        text=draft.rendered.text,
        status=status,
    )
    reviews = draft.selection.reviews if draft.selection is not None else []
    # The selection's: without repeats, and a review both new and revised counts as new.
    updated = draft.selection.updated if draft.selection is not None else []
    issue.reviews = [
        IssueReview(
            review_id=review.id,
            role=IssueReview.FEATURED if position == 0 else IssueReview.LISTED,
            position=position,
        )
        for position, review in enumerate(reviews)
    ] + [
        IssueReview(review_id=review.id, role=IssueReview.UPDATED, position=len(reviews) + n)
        for n, review in enumerate(updated)
    ]
    session.add(issue)
    session.flush()
    queued = _queue(session, issue, subscriber_ids)
    log.info(
        "digest %s: issue %d recorded with %d review(s) for %d reader(s)",
        issue.digest,
        issue.number,
        len(issue.reviews),
        queued,
    )
    return issue


def _queue(session: Session, issue: DigestIssue, subscriber_ids: Sequence[int] | None) -> int:
    """QUEUED delivery rows: the ledger's list of whom the issue is for."""
    now = issue.created_at
    if subscriber_ids is None:
        readers = (
            select(
                literal(issue.id),
                Subscriber.id,
                literal(Delivery.QUEUED),
                literal(0),
                literal(now, UTCDateTime()),
                literal(""),
            )
            .join(Subscription, Subscription.subscriber_id == Subscriber.id)
            .where(
                Subscription.digest == issue.digest,
                Subscription.created_at <= now,
                Subscriber.status == Subscriber.ACTIVE,
            )
        )
        columns = ["issue_id", "subscriber_id", "status", "attempts", "attempted_at", "error"]
        return session.execute(insert(DELIVERIES).from_select(columns, readers)).rowcount
    for start in range(0, len(subscriber_ids), QUEUE_CHUNK):
        session.execute(
            insert(DELIVERIES),
            [
                {
                    "issue_id": issue.id,
                    "subscriber_id": sid,
                    "status": Delivery.QUEUED,
                    "attempts": 0,
                    "attempted_at": now,
                    "error": "",
                }
                for sid in subscriber_ids[start : start + QUEUE_CHUNK]
            ],
        )
    return len(subscriber_ids)


def record_plan(
    config: Config, session: Session, digest: DigestConfig, planned: Plan
) -> list[DigestIssue]:
    """Render and record one issue per group of the plan, queued for its readers.

    With `approval: true` the issues are drafts until an editor approves them.
    """
    issues = []
    previous = last_issue(session, digest.name)
    number = previous.number if previous is not None else 0
    settings = Settings.from_config(config.related)
    status = DigestIssue.DRAFT if digest.approval else DigestIssue.SENDING
    for group in planned.groups:
        number += 1
        # The usual case, every reader due with the same reviews: queue them with one
        # INSERT ... SELECT rather than a row of parameters each (at a million readers,
        # seconds).
        everyone = (
            planned.whole
            and len(planned.groups) == 1
            and len(group.subscriber_ids) == planned.readers
        )
        new = [planned.reviews[r] for r in group.key.new]
        updated = [planned.reviews[r] for r in group.key.updated]
        selection = select_for_issue(session, digest, new, planned.at, settings, updated=updated)
        rendered = render_issue(config, digest, number, selection, planned.at)
        start = min((r.published for r in new), default=planned.at)
        draft = Draft(digest, number, start, planned.at, selection, rendered)
        issues.append(
            record(
                session,
                draft,
                None if everyone else group.subscriber_ids,
                cadence=group.key.cadence,
                slot_at=group.key.slot_at,
                status=status,
            )
        )
    return issues


def lock_digest(session: Session, digest: str, holder: str) -> None:
    """Hold the digest's planning lock until the session's transaction ends: two planners
    at once would give a reader the same review twice. An UPDATE takes the row lock on
    PostgreSQL and the write lock on SQLite."""
    now = datetime.now(UTC)
    locked = session.execute(
        update(DigestLock)
        .where(DigestLock.digest == digest)
        .values(holder=holder, locked_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    if not locked:
        try:
            with session.begin_nested():
                session.add(DigestLock(digest=digest, holder=holder, locked_at=now))
        except IntegrityError:  # another planner made the row first: wait for its lock
            session.execute(
                update(DigestLock)
                .where(DigestLock.digest == digest)
                .values(holder=holder, locked_at=now)
                .execution_options(synchronize_session=False)
            )


def unfinished_issues(session: Session, digest: str) -> list[DigestIssue]:
    """Issues being sent (not drafts waiting for an editor), oldest first."""
    return list(
        session.scalars(
            select(DigestIssue)
            .where(DigestIssue.digest == digest, DigestIssue.status == DigestIssue.SENDING)
            .order_by(DigestIssue.number)
        )
    )
