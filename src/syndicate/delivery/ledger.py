"""Sending an issue exactly once per subscriber, recorded in the deliveries table.

Each batch is recorded as SENDING (committed) before the transport is called, and as
SENT or failed after. A process that dies between the two leaves rows in SENDING; the
next send marks them UNKNOWN and does not retry them, so nobody gets the issue twice.
That at-most-once window is the batches in flight when the process died: at most
`concurrency` batches of `delivery.batch_size` (a batch is recorded only when a worker is
free to send it at once, so none waits recorded-but-unsent in a queue).

A transport that raises in the middle of a batch is treated the same way, and the send
stops. A transport that cannot send at all (TransportUnavailable: no connection, login
refused) has sent nothing, so its batch is put back as it was and the send stops.

Only one sender works on an issue at a time: it claims the issue row first. The claim
names its host and process, so a rerun on the same machine takes over at once from a
sender that was killed; a claim from another machine lapses after LEASE without renewal.
The ledger is written with bulk statements (one per batch, not one per row): at 1,000
subscribers a batch, the bookkeeping must cost far less than the request it records.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy import and_, bindparam, exists, func, insert, literal, or_, select, update
from sqlalchemy.orm import Session

from syndicate.config import Config, secret
from syndicate.delivery.message import Letter, Outcome, Recipient
from syndicate.delivery.transports import Transport, TransportUnavailable
from syndicate.digest.render import RenderedIssue
from syndicate.store import Delivery, DigestIssue, Store, Subscriber, Subscription
from syndicate.store.models import UTCDateTime
from syndicate.tokens import make_token

log = logging.getLogger(__name__)

LEASE = timedelta(minutes=10)
# What a batch's rows were before it was recorded as SENDING: (status, attempts, attempted_at),
# or None for a row the batch created.
Previous = dict[int, tuple[str, int, datetime] | None]
DONE = (Delivery.SENT, Delivery.FAILED, Delivery.UNKNOWN, Delivery.SENDING)
MAX_REPORTED_ERRORS = 50  # a report lists this many failures; the status command has them all
DELIVERIES = Delivery.__table__  # Core statements: executemany, no ORM objects per row


class IssueBusy(Exception):
    """Another sender is working on this issue right now."""


@dataclass
class SendReport:
    digest: str
    number: int
    sent: int = 0
    failed: int = 0
    deferred: int = 0
    unknown: int = 0
    complete: bool = False
    errors: list[str] = field(default_factory=list)

    def note_error(self, error: str) -> None:
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(error)

    def summary(self) -> str:
        text = f"issue {self.number} of {self.digest}: {self.sent} sent, {self.failed} failed"
        if self.deferred:
            text += f", {self.deferred} to retry"
        if self.unknown:
            text += f", {self.unknown} left unknown by an interrupted send (not resent)"
        return text + (" (complete)" if self.complete else "")


def letter_for(
    config: Config, digest_name: str, number: int, rendered: RenderedIssue, issue_id: int = 0
) -> Letter:
    digest = config.digest(digest_name)
    host = config.site.host
    return Letter(
        subject=rendered.subject,
        html=rendered.html,
        text=rendered.text,
        sender_name=config.delivery.sender.name,
        sender_email=config.delivery.sender.email or f"no-reply@{host}",
        reply_to=config.delivery.reply_to,
        list_id=f"{digest.title} <{digest.name}.{host}>",
        tag=f"{digest.name}-{number:04d}",
        domain=host,
        unsubscribe_mailto=config.delivery.unsubscribe_mailto,
        digest=digest.name,
        issue_id=issue_id,
    )


class Addressee(Protocol):
    """A subscriber as the ledger reads it: a Subscriber, or a row of those three columns."""

    id: int
    email: str
    name: str


def recipient_for(
    config: Config, subscriber: Addressee, secret_key: str, fallback: str
) -> Recipient:
    base = config.public_base_url
    return Recipient(
        subscriber_id=subscriber.id,
        email=subscriber.email,
        values={
            "name": subscriber.name or fallback,
            "display_name": subscriber.name,
            "email": subscriber.email,
            "unsubscribe_url": f"{base}unsubscribe/{make_token(secret_key, 'unsubscribe', subscriber.id)}",
            "preferences_url": f"{base}preferences/{make_token(secret_key, 'preferences', subscriber.id)}",
        },
    )


def eligible(issue: DigestIssue):  # type: ignore[no-untyped-def]
    """Active subscribers of the digest who have no settled delivery of this issue."""
    settled = exists().where(
        Delivery.issue_id == issue.id,
        Delivery.subscriber_id == Subscriber.id,
        or_(
            Delivery.status.in_(DONE),
            and_(Delivery.status == Delivery.RETRY, Delivery.attempts >= Delivery.MAX_ATTEMPTS),
        ),
    )
    subscribed = exists().where(
        Subscription.subscriber_id == Subscriber.id,
        Subscription.digest == issue.digest,
        Subscription.created_at <= issue.created_at,
    )
    return and_(Subscriber.status == Subscriber.ACTIVE, subscribed, ~settled)


@dataclass
class Batch:
    recipients: list[Recipient]
    # What the batch's rows were before it was recorded as SENDING, to undo it.
    previous: Previous


def owner_name() -> str:
    """Who holds a claim: host and process (so a dead one can be told), plus a nonce."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def died_here(owner: str) -> bool:
    """True when `owner` was a process on this machine that no longer runs."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname()[:60] or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


class Sender:
    def __init__(self, config: Config, store: Store, transport: Transport) -> None:
        self.config = config
        self.store = store
        self.transport = transport
        self.owner = owner_name()
        self.secret = secret(config.site.secret_env, "key that signs unsubscribe links")
        # A transport says how many batches it can send at once; the default, one, suits
        # transports that are not thread-safe (an SMTP connection).
        self.concurrency = max(1, getattr(transport, "concurrency", 1))

    def remaining(self, issue_id: int) -> int:
        with self.store.session() as session:
            issue = session.get_one(DigestIssue, issue_id)
            return (
                session.scalar(select(func.count()).select_from(Subscriber).where(eligible(issue)))
                or 0
            )

    def send(self, issue_id: int, progress: Callable[[int], None] | None = None) -> SendReport:
        now = datetime.now(UTC)
        with self.store.session() as session:
            issue = session.get_one(DigestIssue, issue_id)
            report = SendReport(issue.digest, issue.number)
            self._claim(session, issue, now)
            rendered = RenderedIssue(issue.subject, issue.preheader, issue.html, issue.text)
            letter = letter_for(self.config, issue.digest, issue.number, rendered, issue.id)
        try:
            # We hold the claim, so SENDING rows belong to a sender that died mid-batch.
            report.unknown = self._settle_sending(
                issue_id,
                None,
                "the sending process stopped before the transport answered; "
                "not resent, to avoid a duplicate",
            )
            self._send_all(issue_id, letter, report, progress)
            self._finish(issue_id, report)
        finally:
            self._release(issue_id)
        return report

    def _send_all(
        self,
        issue_id: int,
        letter: Letter,
        report: SendReport,
        progress: Callable[[int], None] | None,
    ) -> None:
        """Keep up to `concurrency` batches in flight; record each outcome as it comes."""
        batches = self._batches(issue_id)
        in_flight: dict[Future[list[Outcome]], Batch] = {}
        failure: BaseException | None = None
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="syndicate-send") as pool:
            while True:
                # Record the next batch only when a worker can post it at once.
                if failure is None and len(in_flight) < self.concurrency:
                    batch = next(batches, None)
                    if batch is not None:
                        in_flight[pool.submit(self.transport.send, letter, batch.recipients)] = (
                            batch
                        )
                        continue
                if not in_flight:
                    break
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    batch = in_flight.pop(future)
                    try:
                        outcomes = future.result()
                    except Exception as exc:
                        self._transport_failed(issue_id, batch, exc)
                        failure = failure or exc
                        continue
                    self._record_outcomes(issue_id, batch, outcomes, report)
                    if progress:
                        progress(len(batch.recipients))
        if failure is not None:
            raise failure

    def _claim(self, session: Session, issue: DigestIssue, now: datetime) -> None:
        if self._try_claim(session, issue.id, now, dead_owner=None):
            return
        holder = session.scalar(select(DigestIssue.claimed_by).where(DigestIssue.id == issue.id))
        if holder and died_here(holder) and self._try_claim(session, issue.id, now, holder):
            log.warning(
                "issue %s of %s: took over from a sender that stopped (%s)",
                issue.number,
                issue.digest,
                holder,
            )
            return
        host, _, rest = (holder or "?:?").partition(":")
        raise IssueBusy(
            f"issue {issue.number} of {issue.digest} is being sent by process "
            f"{rest.partition(':')[0]} on {host}; try again when it has finished "
            f"(if that process is gone, its claim lapses after {LEASE})"
        )

    def _try_claim(
        self, session: Session, issue_id: int, now: datetime, dead_owner: str | None
    ) -> bool:
        free = or_(
            DigestIssue.claimed_by.is_(None),
            DigestIssue.claimed_until < now,
            DigestIssue.claimed_by == self.owner,
        )
        if dead_owner is not None:
            free = or_(free, DigestIssue.claimed_by == dead_owner)
        return (
            session.execute(
                update(DigestIssue)
                .where(DigestIssue.id == issue_id, free)
                .values(claimed_by=self.owner, claimed_until=now + LEASE)
                .execution_options(synchronize_session=False)
            ).rowcount
            == 1
        )

    def _batches(self, issue_id: int) -> Iterator[Batch]:
        size = self.config.delivery.batch
        last_id = 0
        while True:
            with self.store.session() as session:
                issue = session.get_one(DigestIssue, issue_id)
                subscribers = session.execute(
                    select(Subscriber.id, Subscriber.email, Subscriber.name)
                    .where(eligible(issue), Subscriber.id > last_id)
                    .order_by(Subscriber.id)
                    .limit(size)
                ).all()
                if not subscribers:
                    return
                last_id = subscribers[-1].id
                name_fallback = self.config.digest(issue.digest).name_fallback
                recipients = [
                    recipient_for(self.config, s, self.secret, name_fallback) for s in subscribers
                ]
                previous = self._record_sending(session, issue_id, recipients)
            yield Batch(recipients, previous)

    def _record_sending(
        self, session: Session, issue_id: int, recipients: list[Recipient]
    ) -> Previous:
        now = datetime.now(UTC)
        ids = [r.subscriber_id for r in recipients]
        previous: Previous = dict.fromkeys(ids)
        for row in session.execute(
            select(
                Delivery.subscriber_id, Delivery.status, Delivery.attempts, Delivery.attempted_at
            ).where(Delivery.issue_id == issue_id, Delivery.subscriber_id.in_(ids))
        ):
            previous[row.subscriber_id] = (row.status, row.attempts, row.attempted_at)
        fresh = [sid for sid, before in previous.items() if before is None]
        if fresh:
            # One INSERT ... SELECT for the batch rather than a row of parameters each.
            constants = select(
                literal(issue_id),
                Subscriber.id,
                literal(Delivery.SENDING),
                literal(1),
                literal(now, UTCDateTime()),
                literal(""),
            ).where(Subscriber.id.in_(fresh))
            session.execute(
                insert(DELIVERIES).from_select(
                    ["issue_id", "subscriber_id", "status", "attempts", "attempted_at", "error"],
                    constants,
                )
            )
        again = [
            {"sid": sid, "attempts": before[1] + 1}
            for sid, before in previous.items()
            if before is not None
        ]
        if again:
            session.execute(
                update(DELIVERIES)
                .where(
                    DELIVERIES.c.issue_id == issue_id,
                    DELIVERIES.c.subscriber_id == bindparam("sid"),
                )
                .values(status=Delivery.SENDING, attempts=bindparam("attempts"), attempted_at=now),
                again,
            )
        session.execute(
            update(DigestIssue)
            .where(DigestIssue.id == issue_id, DigestIssue.claimed_by == self.owner)
            .values(claimed_until=now + LEASE)
            .execution_options(synchronize_session=False)
        )
        return previous

    def _transport_failed(self, issue_id: int, batch: Batch, exc: Exception) -> None:
        if isinstance(exc, TransportUnavailable):
            self._put_back(issue_id, batch.previous)
            return
        # Part of the batch may have gone before the transport failed: resending could
        # send it twice, so the batch is left UNKNOWN, like a crash, and the send stops.
        log.error(
            "transport %s failed in the middle of a batch: %s: %s",
            self.transport.name,
            type(exc).__name__,
            exc,
            exc_info=exc,
        )
        self._settle_sending(
            issue_id,
            [r.subscriber_id for r in batch.recipients],
            f"the transport failed during the send ({type(exc).__name__}: {exc}); "
            "may have been sent, so not resent",
        )

    def _record_outcomes(
        self, issue_id: int, batch: Batch, outcomes: Sequence[Outcome], report: SendReport
    ) -> None:
        by_id = {o.subscriber_id: o for o in outcomes}
        now = datetime.now(UTC)
        sent: list[dict[str, object]] = []
        failed: list[dict[str, object]] = []
        for recipient in batch.recipients:
            outcome = by_id.get(recipient.subscriber_id)
            if outcome is not None and outcome.ok:
                sent.append({"sid": recipient.subscriber_id, "mid": outcome.message_id})
                continue
            before = batch.previous.get(recipient.subscriber_id)
            attempts = 1 if before is None else before[1] + 1
            error = outcome.error if outcome else "the transport gave no outcome for this recipient"
            permanent = outcome.permanent if outcome else False
            if permanent or attempts >= Delivery.MAX_ATTEMPTS:
                status = Delivery.FAILED
                report.failed += 1
            else:
                status = Delivery.RETRY
                report.deferred += 1
            failed.append({"sid": recipient.subscriber_id, "st": status, "err": error})
            report.note_error(f"{recipient.email}: {error}")
            log.warning("delivery to %s failed: %s", recipient.email, error)
        report.sent += len(sent)
        where = (
            DELIVERIES.c.issue_id == issue_id,
            DELIVERIES.c.subscriber_id == bindparam("sid"),
        )
        # A batch API answers a whole batch with one message id: one UPDATE ... IN (...)
        # for those, instead of a statement per row; SMTP's own ids go row by row.
        by_message: dict[object, list[object]] = {}
        for row in sent:
            by_message.setdefault(row["mid"], []).append(row["sid"])
        shared = {mid: ids for mid, ids in by_message.items() if len(ids) > 1}
        single = [row for row in sent if row["mid"] not in shared]
        with self.store.session() as session:
            for mid, ids in shared.items():
                session.execute(
                    update(DELIVERIES)
                    .where(DELIVERIES.c.issue_id == issue_id, DELIVERIES.c.subscriber_id.in_(ids))
                    .values(status=Delivery.SENT, sent_at=now, message_id=mid, error="")
                )
            if single:
                session.execute(
                    update(DELIVERIES)
                    .where(*where)
                    .values(
                        status=Delivery.SENT, sent_at=now, message_id=bindparam("mid"), error=""
                    ),
                    single,
                )
            if failed:
                session.execute(
                    update(DELIVERIES)
                    .where(*where)
                    .values(status=bindparam("st"), error=bindparam("err")),
                    failed,
                )

    def _put_back(self, issue_id: int, previous: Previous) -> None:
        """Undo `_record_sending` for a batch of which nothing was sent."""
        created = [sid for sid, before in previous.items() if before is None]
        restored = [
            {"sid": sid, "st": before[0], "attempts": before[1], "at": before[2]}
            for sid, before in previous.items()
            if before is not None
        ]
        with self.store.session() as session:
            if created:
                session.execute(
                    DELIVERIES.delete().where(
                        DELIVERIES.c.issue_id == issue_id,
                        DELIVERIES.c.subscriber_id.in_(created),
                    )
                )
            if restored:
                session.execute(
                    update(DELIVERIES)
                    .where(
                        DELIVERIES.c.issue_id == issue_id,
                        DELIVERIES.c.subscriber_id == bindparam("sid"),
                    )
                    .values(
                        status=bindparam("st"),
                        attempts=bindparam("attempts"),
                        attempted_at=bindparam("at"),
                    ),
                    restored,
                )

    def _settle_sending(self, issue_id: int, subscriber_ids: list[int] | None, error: str) -> int:
        """Mark SENDING rows UNKNOWN: all of the issue's, or only these subscribers'."""
        where = [Delivery.issue_id == issue_id, Delivery.status == Delivery.SENDING]
        if subscriber_ids is not None:
            where.append(Delivery.subscriber_id.in_(subscriber_ids))
        with self.store.session() as session:
            return session.execute(
                update(Delivery)
                .where(*where)
                .values(status=Delivery.UNKNOWN, error=error)
                .execution_options(synchronize_session=False)
            ).rowcount

    def _finish(self, issue_id: int, report: SendReport) -> None:
        with self.store.session() as session:
            issue = session.get_one(DigestIssue, issue_id)
            retry_left = session.scalar(
                select(func.count()).where(
                    Delivery.issue_id == issue_id,
                    Delivery.status == Delivery.RETRY,
                    Delivery.attempts < Delivery.MAX_ATTEMPTS,
                )
            )
            if not retry_left:
                issue.status = DigestIssue.SENT
                issue.completed_at = datetime.now(UTC)
                report.complete = True

    def _release(self, issue_id: int) -> None:
        with self.store.session() as session:
            session.execute(
                update(DigestIssue)
                .where(DigestIssue.id == issue_id, DigestIssue.claimed_by == self.owner)
                .values(claimed_by=None, claimed_until=None)
                .execution_options(synchronize_session=False)
            )
