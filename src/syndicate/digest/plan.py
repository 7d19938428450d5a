"""Who gets which reviews, when: a digest's next issues, planned from the delivery ledger.

For each active reader of the digest the plan works out:

- their rhythm (syndicate.digest.cadence): instant, daily or weekly, at their local hour;
- whether they are due: instant readers and readers without an hour whenever the digest
  runs; the others once their latest send slot has passed, nothing was planned for
  them since (or since they subscribed), and a review pending for them was there at
  that slot (one gathered after it waits for the next slot);
- their pending reviews: live reviews published after their floor (when they joined,
  less one period, but not before the last issue of their cadence they joined after)
  that no issue of this digest carried to them. "Carried" is read from the ledger (any delivery row: queued,
  sent, unknown, failed, or skipped by an editor), so changing cadence, hour or zone
  never repeats or skips one;
- their updated reviews: revised (Review.revised_at) after the last issue that carried
  them to this reader.

Readers due with the same cadence, slot and reviews share one issue, rendered once. An
instant reader gets one issue per new review. The plan only reads; recording it is
syndicate.digest.issues.record_plan.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from syndicate.config import Config, DigestConfig
from syndicate.digest.cadence import PERIOD, Rhythm, rhythm_for
from syndicate.schedule.triggers import job_period
from syndicate.store import (
    Delivery,
    DigestIssue,
    IssueReview,
    Review,
    Subscriber,
    Subscription,
)

# A review published longer ago than this is history, not news: a reader who has been
# subscribed all along is not sent it (say, a source added today brings years of
# reviews). first_issue_since reaches further back for a digest's first readers.
HISTORY = timedelta(days=14)


@dataclass(frozen=True)
class GroupKey:
    cadence: str
    slot_at: datetime | None  # the send slot; None: instant or the digest's schedule
    new: tuple[str, ...]  # review ids, newest first
    updated: tuple[str, ...] = ()


@dataclass
class Group:
    key: GroupKey
    subscriber_ids: list[int] = field(default_factory=list)


@dataclass
class Plan:
    digest: str
    at: datetime
    groups: list[Group] = field(default_factory=list)
    readers: int = 0  # active readers of the digest (the one asked for, with `only`)
    whole: bool = True  # planned for every reader (not `only` one)
    # Readers with something pending whose slot has not come: by their next slot.
    waiting: dict[datetime, int] = field(default_factory=dict)
    reviews: dict[str, Review] = field(default_factory=dict)  # every review the plan names

    @property
    def recipients(self) -> int:
        return len({sid for group in self.groups for sid in group.subscriber_ids})

    def groups_of(self, subscriber_id: int) -> list[Group]:
        return [g for g in self.groups if subscriber_id in g.subscriber_ids]


def period(config: Config, digest: DigestConfig) -> timedelta:
    """How far back a digest's first issue looks: one interval of its schedule."""
    schedule = config.schedules.digests.get(digest.name)
    return job_period(schedule, config.timezone) if schedule else timedelta(days=7)


def plan(
    config: Config,
    session: Session,
    digest: DigestConfig,
    now: datetime,
    force: bool = False,
    only: int | None = None,
    cadences: Collection[str] | None = None,
) -> Plan:
    """The issues a send at `now` would make. `force`: everyone with something pending
    is due now, whatever their slot. `only`: plan for this subscriber alone. `cadences`:
    plan for readers of these cadences only (after a gather: instant readers)."""
    result = Plan(digest.name, now, whole=only is None)
    first_issue_at = session.scalar(
        select(func.min(DigestIssue.created_at)).where(DigestIssue.digest == digest.name)
    )
    since = _first_issue_since(config, digest)
    lower = now - HISTORY
    if since is not None and (first_issue_at is None or since < lower):
        lower = min(lower, since)
    untimed_period = period(config, digest)

    candidates = list(
        session.scalars(
            select(Review)
            .where(
                Review.withdrawn_at.is_(None),
                Review.published > lower,
                Review.published <= now,
            )
            .order_by(Review.published, Review.id)
        )
    )
    published = [r.published for r in candidates]
    candidate_ids = {r.id for r in candidates}
    revised = {
        r.id: r
        for r in session.scalars(
            select(Review).where(
                Review.withdrawn_at.is_(None),
                Review.revised_at.is_not(None),
                Review.revised_at > now - HISTORY,
                Review.revised_at <= now,
            )
        )
    }
    result.reviews = {r.id: r for r in candidates} | revised

    # The digest's recent issues: which candidates each carried, and when it was planned.
    issue_rows = session.execute(
        select(DigestIssue.id, DigestIssue.created_at, DigestIssue.cadence).where(
            DigestIssue.digest == digest.name, DigestIssue.created_at > lower
        )
    ).all()
    planned_at = {row.id: row.created_at for row in issue_rows}
    # When each cadence's issues went out (issues from before cadences count for all):
    # a reader who joins after an issue does not get that issue's reviews later.
    went_out: dict[str, list[datetime]] = {
        c: sorted(row.created_at for row in issue_rows if row.cadence in (c, None)) for c in PERIOD
    }
    carried: dict[int, frozenset[str]] = defaultdict(frozenset)
    if planned_at:
        pairs: dict[int, set[str]] = defaultdict(set)
        for issue_id, review_id in session.execute(
            select(IssueReview.issue_id, IssueReview.review_id).where(
                IssueReview.issue_id.in_(list(planned_at))
            )
        ):
            if review_id in candidate_ids:
                pairs[issue_id].add(review_id)
        carried.update({k: frozenset(v) for k, v in pairs.items()})

    readers = _readers(config, session, digest, only)
    delivered = (
        select(Delivery.subscriber_id, Delivery.issue_id)
        .where(Delivery.issue_id.in_(list(planned_at) or [-1]))
        .order_by(Delivery.subscriber_id)
        .execution_options(yield_per=50_000)
    )
    if only is not None:
        delivered = delivered.where(Delivery.subscriber_id == only)
    deliveries = _by_subscriber(session.execute(delivered))
    versions = _by_subscriber(_versions_sent(session, digest, list(revised), only))

    groups: dict[GroupKey, Group] = {}
    pending_cache: dict[tuple[int, frozenset[int]], tuple[str, ...]] = {}
    # What depends only on the rhythm, worked out once per rhythm, not once per reader.
    timing: dict[Rhythm, tuple[timedelta, datetime | None]] = {}
    starts: dict[tuple[datetime, timedelta, str], int] = {}
    history = now - HISTORY
    no_issues: frozenset[int] = frozenset()
    for reader_id, joined, rhythm in readers:
        result.readers += 1
        if cadences is not None and rhythm.cadence not in cadences:
            continue
        rows = deliveries.take(reader_id)
        their_issues = frozenset(issue for _, issue in rows) if rows else no_issues
        known = timing.get(rhythm)
        if known is None:
            if rhythm.cadence == "instant":
                reach = timedelta(0)
            else:
                reach = PERIOD[rhythm.cadence] if rhythm.timed else untimed_period
            known = timing[rhythm] = (reach, None if force else rhythm.last_slot(now))
        reach, slot = known
        # Where their pending reviews start in `candidates`: the same for everyone who
        # joined at one moment (a list imported at once) with one reach and cadence.
        start = starts.get((joined, reach, rhythm.cadence))
        if start is None:
            if since is not None and (first_issue_at is None or joined < first_issue_at):
                floor = since
            else:
                floor = max(joined - reach, history)
                before = went_out[rhythm.cadence]
                at = bisect.bisect_right(before, joined)
                if at:
                    floor = max(floor, before[at - 1])
            start = starts[(joined, reach, rhythm.cadence)] = bisect.bisect_right(published, floor)
        key = (start, their_issues)
        new = pending_cache.get(key)
        if new is None:
            got = frozenset().union(*(carried[i] for i in their_issues))
            new = tuple(r.id for r in reversed(candidates[start:]) if r.id not in got)
            pending_cache[key] = new
        updated: tuple[str, ...] = ()
        if revised:
            updated = tuple(
                sorted(
                    review_id
                    for _, (review_id, sent_at) in versions.take(reader_id)
                    if review_id not in new and sent_at < revised[review_id].revised_at  # type: ignore[operator]
                )
            )
        if slot is not None:
            last = max((planned_at[i] for i in their_issues), default=joined)
            # Due: this slot's issue has not gone to them (nor did they join after it),
            # and it has something: a review that was there at the slot. One that came
            # after it waits for the next slot, not for the next run of the job.
            if last >= slot or not (
                digest.send_when_empty or _there_at(slot, new, updated, result.reviews)
            ):
                if new or updated:
                    upcoming = rhythm.next_slot(now)
                    assert upcoming is not None
                    result.waiting[upcoming] = result.waiting.get(upcoming, 0) + 1
                continue
        if rhythm.cadence == "instant":
            for review_id in new:
                _join(groups, GroupKey("instant", None, (review_id,)), reader_id)
            if updated:
                _join(groups, GroupKey("instant", None, (), updated), reader_id)
        elif new or updated or (digest.send_when_empty and not force):
            _join(groups, GroupKey(rhythm.cadence, slot, new, updated), reader_id)
    result.groups = sorted(
        groups.values(),
        key=lambda g: (g.key.cadence, g.key.slot_at or now, -len(g.subscriber_ids), g.key.new),
    )
    return result


def _there_at(
    slot: datetime, new: tuple[str, ...], updated: tuple[str, ...], reviews: dict[str, Review]
) -> bool:
    """Whether any of a reader's pending reviews (or revisions) was there at `slot`:
    published and gathered (a review dated in the past is there from its gathering)."""
    return any(max(reviews[r].published, reviews[r].first_seen) <= slot for r in new) or any(
        reviews[r].revised_at <= slot  # type: ignore[operator]
        for r in updated
    )


def _join(groups: dict[GroupKey, Group], key: GroupKey, subscriber_id: int) -> None:
    group = groups.get(key)
    if group is None:
        group = groups[key] = Group(key)
    group.subscriber_ids.append(subscriber_id)


def _first_issue_since(config: Config, digest: DigestConfig) -> datetime | None:
    since = digest.first_issue_since
    if since is None:
        return None
    if not isinstance(since, datetime):
        since = datetime.combine(since, datetime.min.time())
    return since if since.tzinfo else since.replace(tzinfo=config.timezone)


def _readers(
    config: Config, session: Session, digest: DigestConfig, only: int | None
) -> Iterator[tuple[int, datetime, Rhythm]]:
    """(subscriber id, when they joined, their rhythm) for each active reader, by id."""
    query = (
        select(
            Subscriber.id,
            Subscription.created_at,
            Subscription.cadence,
            Subscription.send_hour,
            Subscription.timezone,
        )
        .join(Subscription, Subscription.subscriber_id == Subscriber.id)
        .where(Subscription.digest == digest.name, Subscriber.status == Subscriber.ACTIVE)
        .order_by(Subscriber.id)
        .execution_options(yield_per=10_000)
    )
    if only is not None:
        query = query.where(Subscriber.id == only)
    rhythms: dict[tuple[str | None, int | None, str | None], Rhythm] = {}
    for sid, joined, cadence, hour, zone in session.execute(query):
        key = (cadence, hour, zone)
        rhythm = rhythms.get(key)
        if rhythm is None:
            rhythm = rhythms[key] = rhythm_for(config, digest, cadence, hour, zone)
        yield sid, joined, rhythm


def _versions_sent(
    session: Session, digest: DigestConfig, review_ids: list[str], only: int | None
) -> Iterator[tuple[int, tuple[str, datetime]]]:
    """(subscriber, (review, when the last issue carrying it to them was planned)), for
    the revised reviews, in subscriber order. Failed deliveries never reached them."""
    if not review_ids:
        return
    query = (
        select(Delivery.subscriber_id, IssueReview.review_id, func.max(DigestIssue.created_at))
        .join(IssueReview, IssueReview.issue_id == Delivery.issue_id)
        .join(DigestIssue, DigestIssue.id == Delivery.issue_id)
        .where(
            DigestIssue.digest == digest.name,
            IssueReview.review_id.in_(review_ids),
            Delivery.status != Delivery.FAILED,
        )
        .group_by(Delivery.subscriber_id, IssueReview.review_id)
        .order_by(Delivery.subscriber_id)
        .execution_options(yield_per=50_000)
    )
    if only is not None:
        query = query.where(Delivery.subscriber_id == only)
    for sid, review_id, when in session.execute(query):
        yield sid, (review_id, when)


class _by_subscriber:
    """Rows (subscriber_id, value) in subscriber order, handed out reader by reader as
    the readers (also in id order) are walked: a merge, so nothing is held for all."""

    def __init__(self, rows: Iterator[tuple[int, object]] | object) -> None:
        self._rows = iter(rows)  # type: ignore[call-overload]
        self._head: tuple[int, object] | None = next(self._rows, None)

    def take(self, subscriber_id: int) -> list[tuple[int, object]]:
        taken = []
        while self._head is not None and self._head[0] <= subscriber_id:
            if self._head[0] == subscriber_id:
                taken.append(self._head)
            self._head = next(self._rows, None)
        return taken
