"""The delivery ledger: one row per subscriber and issue, written so nobody gets an issue twice.

A batch's rows are recorded as SENDING (committed) before the transport is called, and
as SENT or failed after. A process that dies between the two leaves rows in SENDING;
whoever takes the batch over marks them UNKNOWN and does not resend them. That
at-most-once window is the batches in flight when the process died (see
syndicate.delivery.batches: a batch is recorded only when it is about to be posted).

Rows are written with bulk statements (one per batch, not one per row): at 1,000
subscribers a batch, the bookkeeping must cost far less than the request it records.
Who may work on what (the issue's claim, each batch's claim) is in sender.py and
batches.py; this module only reads and writes rows.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy import and_, bindparam, exists, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from syndicate.config import Config
from syndicate.delivery.message import Letter, Outcome, Recipient
from syndicate.digest.render import RenderedIssue
from syndicate.store import Delivery, Subscriber, Subscription
from syndicate.tokens import make_token

log = logging.getLogger(__name__)

LEASE = timedelta(minutes=10)
# What a batch's rows were before it was recorded as SENDING: (status, attempts, attempted_at).
Previous = dict[int, tuple[str, int, datetime]]
DONE = (Delivery.SENT, Delivery.FAILED, Delivery.UNKNOWN, Delivery.SENDING)
MAX_REPORTED_ERRORS = 50  # a report lists this many failures; the status command has them all
DELIVERIES = Delivery.__table__  # Core statements: executemany, no ORM objects per row


class IssueBusy(Exception):
    """Another sender is working on this issue right now."""


def claim_lapsed(holder: str | None, until: datetime | None, now: datetime) -> bool:
    """True when a claim (an issue's, a batch's) no longer holds: none, expired, or its
    process on this machine is gone."""
    return holder is None or until is None or until < now or died_here(holder)


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
    # Batches handed to Celery workers by a send that does not wait for them.
    queued: int = 0

    def note_error(self, error: str) -> None:
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(error)

    def add(self, other: SendReport) -> None:
        self.sent += other.sent
        self.failed += other.failed
        self.deferred += other.deferred
        self.unknown += other.unknown
        for error in other.errors:
            self.note_error(error)

    def summary(self) -> str:
        if self.queued:
            return (
                f"issue {self.number} of {self.digest}: {self.queued} batch(es) queued for "
                f"the workers; `syndicate digest status {self.digest}` shows their progress"
            )
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


def waiting(issue_id: int, digest: str):  # type: ignore[no-untyped-def]
    """The issue's readers still to send, as a query on its ledger rows (so it walks the
    (issue, subscriber) index, whatever the planner thinks of the table): a QUEUED row or
    a RETRY with attempts left, and the reader still active and subscribed (one who
    leaves mid-send is skipped). Add a range of Delivery.subscriber_id to bound it."""
    subscribed = exists().where(
        Subscription.subscriber_id == Delivery.subscriber_id,
        Subscription.digest == digest,
    )
    return (
        select(
            Subscriber.id,
            Subscriber.email,
            Subscriber.name,
            # What the row was, for undoing a batch of which nothing went.
            Delivery.status,
            Delivery.attempts,
            Delivery.attempted_at,
        )
        .join(Delivery, Delivery.subscriber_id == Subscriber.id)
        .where(
            Delivery.issue_id == issue_id,
            or_(
                Delivery.status == Delivery.QUEUED,
                and_(Delivery.status == Delivery.RETRY, Delivery.attempts < Delivery.MAX_ATTEMPTS),
            ),
            Subscriber.status == Subscriber.ACTIVE,
            subscribed,
        )
    )


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


def record_sending(session: Session, issue_id: int, subscriber_ids: list[int]) -> None:
    """Record a batch as SENDING, in the caller's transaction: one UPDATE ... IN (...)
    for the batch rather than a statement per row."""
    session.execute(
        update(DELIVERIES)
        .where(DELIVERIES.c.issue_id == issue_id, DELIVERIES.c.subscriber_id.in_(subscriber_ids))
        .values(
            status=Delivery.SENDING,
            attempts=DELIVERIES.c.attempts + 1,
            attempted_at=datetime.now(UTC),
        )
    )


def record_outcomes(
    session: Session,
    issue_id: int,
    recipients: Sequence[Recipient],
    previous: Previous,
    outcomes: Sequence[Outcome],
    report: SendReport,
) -> None:
    """Record what the transport said for each recipient of a batch, in the caller's
    transaction; count it in `report`."""
    by_id = {o.subscriber_id: o for o in outcomes}
    now = datetime.now(UTC)
    sent: list[dict[str, object]] = []
    failed: list[dict[str, object]] = []
    for recipient in recipients:
        outcome = by_id.get(recipient.subscriber_id)
        if outcome is not None and outcome.ok:
            sent.append({"sid": recipient.subscriber_id, "mid": outcome.message_id})
            continue
        before = previous.get(recipient.subscriber_id)
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
            .values(status=Delivery.SENT, sent_at=now, message_id=bindparam("mid"), error=""),
            single,
        )
    if failed:
        session.execute(
            update(DELIVERIES).where(*where).values(status=bindparam("st"), error=bindparam("err")),
            failed,
        )


def put_back(session: Session, issue_id: int, previous: Previous) -> None:
    """Undo `record_sending` for a batch of which nothing was sent."""
    session.execute(
        update(DELIVERIES)
        .where(
            DELIVERIES.c.issue_id == issue_id,
            DELIVERIES.c.subscriber_id == bindparam("sid"),
        )
        .values(
            status=bindparam("st"), attempts=bindparam("attempts"), attempted_at=bindparam("at")
        ),
        [
            {"sid": sid, "st": status, "attempts": attempts, "at": at}
            for sid, (status, attempts, at) in previous.items()
        ],
    )


def settle_sending(session: Session, issue_id: int, error: str, *where: ColumnElement[bool]) -> int:
    """Mark the issue's SENDING rows (those matching `where`) UNKNOWN: they may have gone."""
    return session.execute(
        update(Delivery)
        .where(Delivery.issue_id == issue_id, Delivery.status == Delivery.SENDING, *where)
        .values(status=Delivery.UNKNOWN, error=error)
        .execution_options(synchronize_session=False)
    ).rowcount
