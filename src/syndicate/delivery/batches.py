"""A send split into batches that any worker may take: what one batch does, in one place.

The sender plans an issue's batches (ranges of subscriber ids, up to delivery.batch
subscribers each) and hands them to workers: threads of its own process, or Celery
workers on other machines (syndicate.workers). Wherever it runs, a batch is taken,
posted and recorded by the functions here:

- `take` claims the batch row (only one worker holds a batch at a time), then records its
  subscribers as SENDING and returns them. A batch is recorded only when its worker is
  about to post it, so the at-most-once window stays the batches in flight.
- `complete` records what the transport said and marks the batch done, in one
  transaction. `abandon` handles a transport that raised.
- A batch whose worker died (its claim lapsed, or its process on this machine is gone)
  is taken over: its SENDING rows become UNKNOWN, not resent (the post may have reached
  the provider), and whoever in the range was not recorded yet is sent. So a task that
  a broker delivers twice, or redelivers after a worker was killed, sends nobody twice.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from syndicate.config import Config
from syndicate.delivery.ledger import (
    LEASE,
    Previous,
    SendReport,
    claim_lapsed,
    owner_name,
    put_back,
    recipient_for,
    record_outcomes,
    record_sending,
    settle_sending,
    waiting,
)
from syndicate.delivery.message import Outcome, Recipient
from syndicate.delivery.transports import TransportUnavailable
from syndicate.store import Delivery, DeliveryBatch, DigestIssue, Store

log = logging.getLogger(__name__)

OPEN = (DeliveryBatch.QUEUED, DeliveryBatch.SENDING)
DIED_MID_BATCH = (
    "the sending process stopped before the transport answered; not resent, to avoid a duplicate"
)


class BatchBusy(Exception):
    """Another live worker holds this batch."""

    def __init__(self, holder: str, until: datetime | None) -> None:
        super().__init__(f"batch held by {holder} until {until:%H:%M:%S}" if until else holder)
        self.holder = holder
        self.until = until


@dataclass
class Taken:
    """A batch a worker holds, recorded as SENDING."""

    batch_id: int
    issue_id: int
    recipients: list[Recipient]
    # What its rows were before, to undo the record if nothing was sent.
    previous: Previous


def _in_range(batch: DeliveryBatch | Row[Any]):  # type: ignore[no-untyped-def]
    return and_(Delivery.subscriber_id > batch.after_id, Delivery.subscriber_id <= batch.last_id)


class Batches:
    """The batches of issues, planned, taken and recorded."""

    def __init__(self, config: Config, store: Store, secret_key: str) -> None:
        self.config = config
        self.store = store
        self.secret_key = secret_key
        self._digests: dict[int, str] = {}

    # --- planning (the sender) -------------------------------------------------------

    def plan(self, issue_id: int) -> int:
        """Cut the issue's eligible subscribers that no open batch covers into new batches.

        Ranges never overlap an open batch's, so two workers never hold one subscriber.
        Returns how many batches were added.
        """
        size = self.config.delivery.batch
        with self.store.session() as session:
            issue = session.get_one(DigestIssue, issue_id)
            open_ranges = sorted(
                session.execute(
                    select(DeliveryBatch.after_id, DeliveryBatch.last_id).where(
                        DeliveryBatch.issue_id == issue_id, DeliveryBatch.status.in_(OPEN)
                    )
                ).all()
            )
            number = (
                session.scalar(
                    select(func.max(DeliveryBatch.number)).where(DeliveryBatch.issue_id == issue_id)
                )
                or 0
            )
            rows = []
            for after_id, last_id, readers in _ranges(session, issue, size, open_ranges):
                number += 1
                rows.append(
                    {
                        "issue_id": issue_id,
                        "number": number,
                        "after_id": after_id,
                        "last_id": last_id,
                        "readers": readers,
                        "status": DeliveryBatch.QUEUED,
                        "created_at": datetime.now(UTC),
                        "error": "",
                    }
                )
            if rows:
                session.execute(DeliveryBatch.__table__.insert(), rows)
        return len(rows)

    def queued(self, issue_id: int) -> list[int]:
        with self.store.session() as session:
            return list(
                session.scalars(
                    select(DeliveryBatch.id)
                    .where(
                        DeliveryBatch.issue_id == issue_id,
                        DeliveryBatch.status == DeliveryBatch.QUEUED,
                    )
                    .order_by(DeliveryBatch.number)
                )
            )

    def open_count(self, session: Session, issue_id: int) -> int:
        return (
            session.scalar(
                select(func.count()).where(
                    DeliveryBatch.issue_id == issue_id, DeliveryBatch.status.in_(OPEN)
                )
            )
            or 0
        )

    def recover(self, issue_id: int) -> int:
        """Settle what dead workers left: their batches go back to the queue, their SENDING
        rows become UNKNOWN. Rows SENDING outside any live batch (a sender from before
        batches, killed) too. Returns how many rows became UNKNOWN."""
        now = datetime.now(UTC)
        unknown = 0
        with self.store.session() as session:
            # Every open batch locked (PostgreSQL; SQLite's transactions are serial
            # anyway): a worker taking one now waits, so no row it records as SENDING
            # can be mistaken for a dead one's below.
            batches = session.scalars(
                select(DeliveryBatch)
                .where(DeliveryBatch.issue_id == issue_id, DeliveryBatch.status.in_(OPEN))
                .with_for_update()
            ).all()
            live = []
            for batch in batches:
                if batch.status != DeliveryBatch.SENDING:
                    continue
                if not claim_lapsed(batch.claimed_by, batch.claimed_until, now):
                    live.append(_in_range(batch))
                    continue
                log.warning(
                    "batch %d of issue %d: its worker (%s) stopped; taking it over",
                    batch.number,
                    issue_id,
                    batch.claimed_by,
                )
                batch.status = DeliveryBatch.QUEUED
                batch.claimed_by = batch.claimed_until = None
            outside = [~or_(*live)] if live else []
            unknown = settle_sending(session, issue_id, DIED_MID_BATCH, *outside)
        return unknown

    # --- one batch (any worker) ------------------------------------------------------

    def take(self, batch_id: int, report: SendReport) -> Taken | None:
        """Claim the batch and record its subscribers as SENDING. None when there is
        nothing to send (done already, or nobody in it is still eligible).

        Each take is its own claim (a new nonce), so two deliveries of one task in the
        same worker process cannot both think they hold the batch.
        """
        now = datetime.now(UTC)
        owner = owner_name()
        with self.store.session() as session:
            # The columns, not the ORM object: this runs a thousand times a million.
            batch = session.execute(
                select(
                    DeliveryBatch.issue_id,
                    DeliveryBatch.number,
                    DeliveryBatch.after_id,
                    DeliveryBatch.last_id,
                    DeliveryBatch.status,
                    DeliveryBatch.claimed_by,
                    DeliveryBatch.claimed_until,
                ).where(DeliveryBatch.id == batch_id)
            ).one()
            if batch.status == DeliveryBatch.DONE:
                return None
            holder, until = batch.claimed_by, batch.claimed_until
            taking_over = batch.status == DeliveryBatch.SENDING
            if taking_over and not claim_lapsed(holder, until, now):
                raise BatchBusy(holder or "?", until)
            claimed = session.execute(
                update(DeliveryBatch)
                .where(
                    DeliveryBatch.id == batch_id,
                    DeliveryBatch.status == batch.status,
                    DeliveryBatch.claimed_by.is_(None)
                    if holder is None
                    else DeliveryBatch.claimed_by == holder,
                )
                .values(
                    status=DeliveryBatch.SENDING,
                    claimed_by=owner,
                    claimed_until=now + LEASE,
                    error="",
                )
                .execution_options(synchronize_session=False)
            ).rowcount
            if claimed != 1:  # another worker got there between our read and our update
                session.rollback()
                raise BatchBusy("another worker", None)
            if taking_over:
                log.warning(
                    "batch %d of issue %d: took over from a worker that stopped (%s)",
                    batch.number,
                    batch.issue_id,
                    holder,
                )
                report.unknown += settle_sending(
                    session, batch.issue_id, DIED_MID_BATCH, _in_range(batch)
                )
            digest = self._digest_of(session, batch.issue_id)
            rows = session.execute(
                waiting(batch.issue_id, digest)
                .where(_in_range(batch))
                .order_by(Delivery.subscriber_id)
            ).all()
            if not rows:
                self._done(session, batch_id)
                return None
            fallback = self.config.digest(digest).name_fallback
            recipients = [recipient_for(self.config, r, self.secret_key, fallback) for r in rows]
            previous = {r.id: (r.status, r.attempts, r.attempted_at) for r in rows}
            record_sending(session, batch.issue_id, list(previous))
            return Taken(batch_id, batch.issue_id, recipients, previous)

    def _digest_of(self, session: Session, issue_id: int) -> str:
        """The issue's digest (it never changes: read once per issue, not per batch)."""
        digest = self._digests.get(issue_id)
        if digest is None:
            digest = self._digests[issue_id] = session.scalars(
                select(DigestIssue.digest).where(DigestIssue.id == issue_id)
            ).one()
        return digest

    def complete(self, taken: Taken, outcomes: Sequence[Outcome], report: SendReport) -> None:
        with self.store.session() as session:
            record_outcomes(
                session, taken.issue_id, taken.recipients, taken.previous, outcomes, report
            )
            self._done(session, taken.batch_id)

    def abandon(self, taken: Taken, exc: BaseException, transport_name: str) -> None:
        """The transport raised. Unavailable: nothing was sent, the batch goes back to the
        queue as it was, with the reason. Anything else may have sent part of it: UNKNOWN,
        not resent."""
        with self.store.session() as session:
            if isinstance(exc, TransportUnavailable):
                put_back(session, taken.issue_id, taken.previous)
                session.execute(
                    update(DeliveryBatch)
                    .where(DeliveryBatch.id == taken.batch_id)
                    .values(
                        status=DeliveryBatch.QUEUED,
                        claimed_by=None,
                        claimed_until=None,
                        error=str(exc) or type(exc).__name__,
                    )
                )
                return
            log.error(
                "transport %s failed in the middle of a batch: %s: %s",
                transport_name,
                type(exc).__name__,
                exc,
                exc_info=exc,
            )
            error = (
                f"the transport failed during the send ({type(exc).__name__}: {exc}); "
                "may have been sent, so not resent"
            )
            settle_sending(
                session,
                taken.issue_id,
                error,
                Delivery.subscriber_id.in_([r.subscriber_id for r in taken.recipients]),
            )
            self._done(session, taken.batch_id, error)

    def _done(self, session: Session, batch_id: int, error: str = "") -> None:
        session.execute(
            update(DeliveryBatch)
            .where(DeliveryBatch.id == batch_id)
            .values(
                status=DeliveryBatch.DONE,
                claimed_by=None,
                claimed_until=None,
                finished_at=datetime.now(UTC),
                error=error,
            )
        )

    def finish_issue(self, issue_id: int) -> bool:
        """Mark the issue sent when no batch is open and no delivery waits for a retry."""
        with self.store.session() as session:
            if self.open_count(session, issue_id):
                return False
            issue = session.get_one(DigestIssue, issue_id)
            if issue.status == DigestIssue.SENT:
                return True
            retry_left = session.scalar(
                select(func.count()).where(
                    Delivery.issue_id == issue_id,
                    Delivery.status == Delivery.RETRY,
                    Delivery.attempts < Delivery.MAX_ATTEMPTS,
                )
            )
            if retry_left:
                return False
            issue.status = DigestIssue.SENT
            issue.completed_at = datetime.now(UTC)
            return True


def _ranges(
    session: Session, issue: DigestIssue, size: int, open_ranges: Sequence[tuple[int, int]]
) -> list[tuple[int, int, int]]:
    """(after_id, last_id, readers): ranges (after_id, last_id] of up to `size` waiting
    readers, none touching an open batch's range.

    With no batch open (every new send) the database numbers the waiting rows and hands
    back only the first id of each run of `size` and the last id (a million readers: a
    thousand ids, not a million). Whoever in a range is no longer waiting when its batch
    is taken is skipped then.
    """
    ids = waiting(issue.id, issue.digest).with_only_columns(Delivery.subscriber_id)
    if open_ranges:
        rows = session.scalars(
            ids.order_by(Delivery.subscriber_id).execution_options(yield_per=10_000)
        )
        return [(run[0] - 1, run[-1], len(run)) for run in _chunks(rows, size, open_ranges)]
    numbered = ids.add_columns(
        func.row_number().over(order_by=Delivery.subscriber_id).label("n")
    ).subquery()
    starts = list(
        session.scalars(
            select(numbered.c.subscriber_id)
            .where((numbered.c.n - 1) % size == 0)
            .order_by(numbered.c.subscriber_id)
        )
    )
    if not starts:
        return []
    end, total = session.execute(select(func.max(numbered.c.subscriber_id), func.count())).one()
    counts = [size] * (len(starts) - 1) + [total - size * (len(starts) - 1)]
    return [
        (start - 1, following - 1, count)
        for start, following, count in zip(starts, [*starts[1:], end + 1], counts, strict=True)
    ]


def _chunks(
    ids: Iterator[int], size: int, open_ranges: Sequence[tuple[int, int]]
) -> Iterator[list[int]]:
    """Runs of up to `size` ids, none inside an open range, none spanning one."""
    afters = [after for after, _ in open_ranges]
    chunk: list[int] = []
    for sid in ids:
        at = bisect.bisect_left(afters, sid) - 1  # the last open range starting below sid
        if at >= 0 and sid <= open_ranges[at][1]:
            continue  # an open batch has it
        if chunk and (len(chunk) == size or bisect.bisect_left(afters, chunk[0]) <= at):
            yield chunk  # full, or an open range lies between its first id and this one
            chunk = []
        chunk.append(sid)
    if chunk:
        yield chunk
