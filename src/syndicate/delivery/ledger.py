"""Sending an issue exactly once per subscriber, recorded in the deliveries table.

Each batch is recorded as SENDING (committed) before the transport is called, and as
SENT or failed after. A process that dies between the two leaves rows in SENDING; the
next send marks them UNKNOWN and does not retry them, so nobody gets the issue twice
(at most one batch, `delivery.batch_size` messages, is in that window). A transport that
raises in the middle of a batch is treated the same way, and the send stops. A transport
that cannot send at all (TransportUnavailable: no connection, login refused) has sent
nothing, so its batch is put back as it was and the send stops with that error.
Only one sender works on an issue at a time: it claims the issue row with a lease first.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.orm import Session

from syndicate.config import Config, secret
from syndicate.delivery.message import Letter, Recipient
from syndicate.delivery.transports import Transport, TransportUnavailable
from syndicate.digest.render import RenderedIssue
from syndicate.store import Delivery, DigestIssue, Store, Subscriber, Subscription
from syndicate.tokens import make_token

log = logging.getLogger(__name__)

LEASE = timedelta(minutes=10)
# What a batch's rows were before it was recorded as SENDING: (status, attempts, attempted_at),
# or None for a row the batch created.
Previous = dict[int, tuple[str, int, datetime] | None]
DONE = (Delivery.SENT, Delivery.FAILED, Delivery.UNKNOWN, Delivery.SENDING)


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

    def summary(self) -> str:
        text = f"issue {self.number} of {self.digest}: {self.sent} sent, {self.failed} failed"
        if self.deferred:
            text += f", {self.deferred} to retry"
        if self.unknown:
            text += f", {self.unknown} left unknown by an interrupted send (not resent)"
        return text + (" (complete)" if self.complete else "")


def letter_for(config: Config, digest_name: str, number: int, rendered: RenderedIssue) -> Letter:
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
    )


def recipient_for(
    config: Config, subscriber: Subscriber, secret_key: str, fallback: str
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


def _eligible(issue: DigestIssue):  # type: ignore[no-untyped-def]
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


class Sender:
    def __init__(self, config: Config, store: Store, transport: Transport) -> None:
        self.config = config
        self.store = store
        self.transport = transport
        self.owner = uuid.uuid4().hex
        self.secret = secret(config.site.secret_env, "key that signs unsubscribe links")

    def remaining(self, issue_id: int) -> int:
        with self.store.session() as session:
            issue = session.get_one(DigestIssue, issue_id)
            return (
                session.scalar(select(func.count()).select_from(Subscriber).where(_eligible(issue)))
                or 0
            )

    def send(self, issue_id: int, progress: Callable[[int], None] | None = None) -> SendReport:
        now = datetime.now(UTC)
        with self.store.session() as session:
            issue = session.get_one(DigestIssue, issue_id)
            report = SendReport(issue.digest, issue.number)
            self._claim(session, issue, now)
            rendered = RenderedIssue(issue.subject, issue.preheader, issue.html, issue.text)
            letter = letter_for(self.config, issue.digest, issue.number, rendered)
        try:
            # We hold the claim, so SENDING rows belong to a sender that died mid-batch.
            report.unknown = self._settle_sending(
                issue_id,
                "the sending process stopped before the transport answered; "
                "not resent, to avoid a duplicate",
            )
            for batch, previous in self._batches(issue_id):
                self._send_batch(issue_id, letter, batch, previous, report)
                if progress:
                    progress(len(batch))
            self._finish(issue_id, report)
        finally:
            self._release(issue_id)
        return report

    def _claim(self, session: Session, issue: DigestIssue, now: datetime) -> None:
        claimed = session.execute(
            update(DigestIssue)
            .where(
                DigestIssue.id == issue.id,
                or_(
                    DigestIssue.claimed_by.is_(None),
                    DigestIssue.claimed_until < now,
                    DigestIssue.claimed_by == self.owner,
                ),
            )
            .values(claimed_by=self.owner, claimed_until=now + LEASE)
            .execution_options(synchronize_session=False)
        ).rowcount
        if claimed != 1:
            raise IssueBusy(
                f"issue {issue.number} of {issue.digest} is being sent by another process; "
                f"try again when it has finished (its claim lapses after {LEASE})"
            )

    def _batches(self, issue_id: int) -> Iterator[tuple[list[Recipient], Previous]]:
        size = self.config.delivery.batch_size
        last_id = 0
        while True:
            with self.store.session() as session:
                issue = session.get_one(DigestIssue, issue_id)
                subscribers = session.scalars(
                    select(Subscriber)
                    .where(_eligible(issue), Subscriber.id > last_id)
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
            yield recipients, previous

    def _record_sending(
        self, session: Session, issue_id: int, recipients: list[Recipient]
    ) -> Previous:
        now = datetime.now(UTC)
        ids = [r.subscriber_id for r in recipients]
        retries = {
            d.subscriber_id: d
            for d in session.scalars(
                select(Delivery).where(
                    Delivery.issue_id == issue_id, Delivery.subscriber_id.in_(ids)
                )
            )
        }
        previous: Previous = {}
        for subscriber_id in ids:
            row = retries.get(subscriber_id)
            if row is None:
                previous[subscriber_id] = None
                session.add(
                    Delivery(issue_id=issue_id, subscriber_id=subscriber_id, attempted_at=now)
                )
            else:
                previous[subscriber_id] = (row.status, row.attempts, row.attempted_at)
                row.status, row.attempts, row.attempted_at = Delivery.SENDING, row.attempts + 1, now
        session.execute(
            update(DigestIssue)
            .where(DigestIssue.id == issue_id, DigestIssue.claimed_by == self.owner)
            .values(claimed_until=now + LEASE)
            .execution_options(synchronize_session=False)
        )
        return previous

    def _send_batch(
        self,
        issue_id: int,
        letter: Letter,
        recipients: list[Recipient],
        previous: Previous,
        report: SendReport,
    ) -> None:
        try:
            outcomes = {o.subscriber_id: o for o in self.transport.send(letter, recipients)}
        except TransportUnavailable:
            self._put_back(issue_id, previous)
            raise
        except Exception as exc:
            # Part of the batch may have gone before the transport failed: resending could
            # send it twice, so the batch is left UNKNOWN, like a crash, and the send stops.
            log.exception("transport %s failed in the middle of a batch", self.transport.name)
            self._settle_sending(
                issue_id,
                f"the transport failed during the send ({type(exc).__name__}: {exc}); "
                "may have been sent, so not resent",
            )
            raise
        error = "the transport gave no outcome for this recipient"
        now = datetime.now(UTC)
        with self.store.session() as session:
            rows = session.scalars(
                select(Delivery).where(
                    Delivery.issue_id == issue_id,
                    Delivery.subscriber_id.in_([r.subscriber_id for r in recipients]),
                )
            )
            emails = {r.subscriber_id: r.email for r in recipients}
            for row in rows:
                outcome = outcomes.get(row.subscriber_id)
                if outcome is not None and outcome.ok:
                    row.status, row.sent_at, row.message_id = Delivery.SENT, now, outcome.message_id
                    row.error = ""
                    report.sent += 1
                    continue
                row.error = outcome.error if outcome else error
                permanent = outcome.permanent if outcome else False
                if permanent or row.attempts >= Delivery.MAX_ATTEMPTS:
                    row.status = Delivery.FAILED
                    report.failed += 1
                else:
                    row.status = Delivery.RETRY
                    report.deferred += 1
                report.errors.append(f"{emails[row.subscriber_id]}: {row.error}")
                log.warning("delivery to %s failed: %s", emails[row.subscriber_id], row.error)

    def _put_back(self, issue_id: int, previous: Previous) -> None:
        """Undo `_record_sending` for a batch of which nothing was sent."""
        with self.store.session() as session:
            rows = session.scalars(
                select(Delivery).where(
                    Delivery.issue_id == issue_id, Delivery.subscriber_id.in_(list(previous))
                )
            ).all()
            for row in rows:
                before = previous[row.subscriber_id]
                if before is None:
                    session.delete(row)
                else:
                    row.status, row.attempts, row.attempted_at = before

    def _settle_sending(self, issue_id: int, error: str) -> int:
        with self.store.session() as session:
            return session.execute(
                update(Delivery)
                .where(Delivery.issue_id == issue_id, Delivery.status == Delivery.SENDING)
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
