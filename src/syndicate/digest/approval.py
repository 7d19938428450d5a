"""Editors keep control: drafts waiting for approval, approving or skipping one, and the
email that tells the editors a draft is ready.

With `approval: true` a digest's new issues are recorded as drafts, already queued for
their readers (so the reviews in them are spoken for, and the next plan neither repeats
nor loses them). Approving sends the draft as planned; skipping drops it: its readers are
recorded as SKIPPED, so nobody gets those reviews from it, or twice later.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Sequence

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from syndicate.config import Config, secret
from syndicate.delivery.message import Letter, Recipient
from syndicate.delivery.transports import Transport
from syndicate.store import Delivery, DigestIssue, Store
from syndicate.tokens import make_token

log = logging.getLogger(__name__)


class NotADraft(ValueError):
    pass


def drafts(session: Session, digest: str) -> list[DigestIssue]:
    return list(
        session.scalars(
            select(DigestIssue)
            .where(DigestIssue.digest == digest, DigestIssue.status == DigestIssue.DRAFT)
            .order_by(DigestIssue.number)
        )
    )


def readers(session: Session, issue_id: int) -> int:
    return session.scalar(select(func.count()).where(Delivery.issue_id == issue_id)) or 0


def _draft(session: Session, digest: str, number: int) -> DigestIssue:
    issue = session.scalars(
        select(DigestIssue).where(DigestIssue.digest == digest, DigestIssue.number == number)
    ).first()
    if issue is None:
        raise NotADraft(f"digest {digest} has no issue {number}")
    if issue.status != DigestIssue.DRAFT:
        raise NotADraft(
            f"issue {number} of {digest} is not a draft (it is {issue.status}); "
            f"`syndicate digest drafts {digest}` lists the drafts"
        )
    return issue


def approve(session: Session, digest: str, number: int) -> DigestIssue:
    """Make the draft an issue to send (the caller sends it)."""
    issue = _draft(session, digest, number)
    issue.status = DigestIssue.SENDING
    log.info("digest %s: issue %d approved", digest, number)
    return issue


def skip(session: Session, digest: str, number: int) -> int:
    """Drop the draft; returns how many readers it was for."""
    issue = _draft(session, digest, number)
    issue.status = DigestIssue.SKIPPED
    dropped = session.execute(
        update(Delivery)
        .where(Delivery.issue_id == issue.id, Delivery.status == Delivery.QUEUED)
        .values(status=Delivery.SKIPPED, error="skipped by an editor")
        .execution_options(synchronize_session=False)
    ).rowcount
    log.info("digest %s: issue %d skipped (%d readers)", digest, number, dropped)
    return dropped


def preview_url(config: Config, issue_id: int) -> str:
    key = secret(config.site.secret_env, "key that signs links")
    return f"{config.public_base_url}drafts/{make_token(key, 'draft', issue_id)}"


def notify_editors(
    config: Config, store: Store, issue_ids: Sequence[int], transport: Transport
) -> None:
    """Email each editor of the digest, per draft: what it holds and where to see it."""
    with store.session() as session:
        for issue_id in issue_ids:
            issue = session.get_one(DigestIssue, issue_id)
            digest = config.digest(issue.digest)
            count = readers(session, issue_id)
            url = preview_url(config, issue_id)
            who = f"{issue.cadence or 'every'} reader(s)"
            if issue.slot_at is not None:
                who += f" due at {issue.slot_at.astimezone(config.timezone):%Y-%m-%d %H:%M %Z}"
            text = (
                f"Issue {issue.number} of {digest.title} is a draft waiting for you.\n\n"
                f"Subject: {issue.subject}\nFor: {count} {who}\n"
                f"Reviews: {len(issue.reviews)}\n\nSee it: {url}\n\n"
                f"Send it:  syndicate digest approve {digest.name} {issue.number}\n"
                f"Drop it:  syndicate digest skip {digest.name} {issue.number}\n"
            )
            link = f'<a href="{html.escape(url)}">{html.escape(url)}</a>'
            body = html.escape(text).replace(html.escape(url), link).replace("\n", "<br>")
            for n, editor in enumerate(digest.editors):
                letter = Letter(
                    subject=f"[Draft] {issue.subject}",
                    html=f"<p>{body}</p>",
                    text=text,
                    sender_name=config.delivery.sender.name,
                    sender_email=config.delivery.sender.email or f"no-reply@{config.site.host}",
                    list_id=f"{digest.title} drafts <drafts.{digest.name}.{config.site.host}>",
                    tag=f"draft-{digest.name}-{issue.number:04d}-{n}",
                    domain=config.site.host,
                    bulk=False,
                )
                recipient = Recipient(0, editor, {"name": editor, "email": editor})
                for outcome in transport.send(letter, [recipient]):
                    if not outcome.ok:
                        log.warning("draft notice to %s not sent: %s", editor, outcome.error)
