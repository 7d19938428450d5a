"""Where an issue stands: who has it, who is still waiting, who failed and why, and what
the provider reported back (delivered, opened, clicked, bounced).

Read-only: `syndicate digest status` prints it; nothing here changes the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from syndicate.delivery.ledger import died_here
from syndicate.store import Delivery, DigestIssue

STATES = {
    DigestIssue.SENT: "complete",
    DigestIssue.SENDING: "sending",
    DigestIssue.DRAFT: "draft, waiting for approval",
    DigestIssue.SKIPPED: "skipped",
}
# How a suppressing event reads in the status (its SendGrid name otherwise).
SUPPRESSED_AS = {
    "bounce": "bounced",
    "dropped": "dropped",
    "spamreport": "marked as spam",
    "unsubscribe": "unsubscribed",
    "group_unsubscribe": "unsubscribed",
}


@dataclass(frozen=True)
class Reason:
    status: str  # failed, retry or unknown
    error: str
    count: int


@dataclass
class IssueStatus:
    issue: DigestIssue
    # Subscribers the issue is for: every delivery recorded, plus (while the issue is
    # unfinished) the active subscribers not reached yet.
    subscribers: int = 0
    accepted: int = 0  # taken by the transport (SendGrid's 202, the SMTP server's 250)
    # Still to go: not reached yet, waiting for a retry, or in a batch being sent now
    # (or left mid-batch by a sender that stopped: the next run settles those).
    not_reached: int = 0
    retrying: int = 0
    in_flight: int = 0
    failed: int = 0  # refused for good, or out of retries
    unknown: int = 0  # in flight when a sender died: not resent, may or may not have it
    skipped: int = 0  # the issue was a draft an editor skipped
    reasons: list[Reason] = field(default_factory=list)
    # From the provider's events (SendGrid's webhook); zero with the outbox and SMTP.
    delivered: int = 0
    opened: int = 0
    clicked: int = 0
    suppressed: dict[str, int] = field(default_factory=dict)
    sender: str = ""  # who is sending it now, or that the last sender stopped

    @property
    def pending(self) -> int:
        return self.not_reached + self.retrying + self.in_flight


# A delivery's status as the editor reads it: a retry out of attempts has failed.
_GAVE_UP = (Delivery.status == Delivery.RETRY) & (Delivery.attempts >= Delivery.MAX_ATTEMPTS)
BUCKET = case((_GAVE_UP, Delivery.FAILED), else_=Delivery.status)


def ledger_counts(session: Session, issue_id: int) -> dict[str, int]:
    """How many of the issue's readers are in each status (see BUCKET)."""
    return dict(
        session.execute(
            select(BUCKET, func.count()).where(Delivery.issue_id == issue_id).group_by(BUCKET)
        ).all()
    )


def issue_status(session: Session, issue: DigestIssue, now: datetime | None = None) -> IssueStatus:
    now = now or datetime.now(UTC)
    status = IssueStatus(issue)
    counts = ledger_counts(session, issue.id)
    status.accepted = counts.get(Delivery.SENT, 0)
    status.not_reached = counts.get(Delivery.QUEUED, 0)
    status.retrying = counts.get(Delivery.RETRY, 0)
    status.in_flight = counts.get(Delivery.SENDING, 0)
    status.failed = counts.get(Delivery.FAILED, 0)
    status.unknown = counts.get(Delivery.UNKNOWN, 0)
    status.skipped = counts.get(Delivery.SKIPPED, 0)
    status.subscribers = sum(counts.values())

    for state, error, count in session.execute(
        select(BUCKET, Delivery.error, func.count())
        .where(
            Delivery.issue_id == issue.id,
            Delivery.status.in_([Delivery.FAILED, Delivery.RETRY, Delivery.UNKNOWN]),
        )
        .group_by(BUCKET, Delivery.error)
        .order_by(func.count().desc())
    ):
        status.reasons.append(Reason(state, error or "(no reason recorded)", count))

    delivered, opened, clicked = session.execute(
        select(
            func.count(Delivery.delivered_at),
            func.count(case((Delivery.opens > 0, 1))),
            func.count(case((Delivery.clicks > 0, 1))),
        ).where(Delivery.issue_id == issue.id)
    ).one()
    status.delivered, status.opened, status.clicked = delivered, opened, clicked
    status.suppressed = dict(
        session.execute(
            select(Delivery.suppressed_by, func.count())
            .where(Delivery.issue_id == issue.id, Delivery.suppressed_by.is_not(None))
            .group_by(Delivery.suppressed_by)
        ).all()
    )
    status.sender = _sender(issue, now)
    return status


def _sender(issue: DigestIssue, now: datetime) -> str:
    if issue.status == DigestIssue.SENT or not issue.claimed_by:
        return ""
    host, _, rest = issue.claimed_by.partition(":")
    pid = rest.partition(":")[0]
    if died_here(issue.claimed_by):
        return f"the sender (process {pid}) stopped; `syndicate digest send` finishes it"
    if issue.claimed_until and issue.claimed_until > now:
        return f"being sent by process {pid} on {host}"
    return ""


def describe(status: IssueStatus) -> list[str]:
    """The lines `syndicate digest status` prints for one issue."""
    issue = status.issue
    state = STATES.get(issue.status, issue.status)
    rhythm = f"{issue.cadence}  " if issue.cadence else ""
    head = (
        f"#{issue.number}  {issue.created_at:%Y-%m-%d %H:%M}  {state}  {rhythm}"
        f"{len(issue.reviews)} review(s)  {issue.subject}"
    )
    counts = (
        f"    {status.subscribers} subscribers: {status.accepted} accepted, "
        f"{status.pending} pending, {status.failed} failed"
    )
    if status.unknown:
        counts += f", {status.unknown} unknown"
    if status.skipped:
        counts += f", {status.skipped} skipped by an editor"
    lines = [head, counts]
    waiting = [
        (status.not_reached, "not reached yet"),
        (status.retrying, "to retry"),
        (status.in_flight, "in a batch being sent or interrupted"),
    ]
    if status.pending:
        lines.append("    pending: " + ", ".join(f"{n} {what}" for n, what in waiting if n))
    if status.sender:
        lines.append(f"    {status.sender}")
    if status.delivered or status.opened or status.clicked or status.suppressed:
        events = (
            f"    reported back: {status.delivered} delivered, {status.opened} opened, "
            f"{status.clicked} clicked"
        )
        said: dict[str, int] = {}
        for kind, count in status.suppressed.items():
            said[SUPPRESSED_AS.get(kind, kind)] = said.get(SUPPRESSED_AS.get(kind, kind), 0) + count
        for label, count in sorted(said.items()):
            events += f", {count} {label}"
        lines.append(events)
    labels = {Delivery.FAILED: "failed", Delivery.RETRY: "to retry", Delivery.UNKNOWN: "unknown"}
    for reason in status.reasons:
        lines.append(f"      {reason.count} {labels[reason.status]}: {reason.error}")
    return lines
