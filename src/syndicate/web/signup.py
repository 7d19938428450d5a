"""Sign-ups and their confirmation: what the subscribe form does, apart from HTTP.

Double opt-in: a sign-up never mails a digest to an address until its owner follows the
confirmation link sent to it. The form's answer is the same whatever the address's state
(new, pending, subscribed, unsubscribed), so the form cannot be used to find out who is
on the list; the email is what differs, and only the address's owner reads it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from syndicate import subscribers as readers
from syndicate.config import Config
from syndicate.delivery import open_transport
from syndicate.delivery.message import Letter, Recipient
from syndicate.digest.render import environment
from syndicate.store import Subscriber, Subscription
from syndicate.tokens import make_confirm_token

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SignUp:
    email: str  # normalised
    name: str
    digests: list[str]


# Taken off the list by the mail system or the editors, not by the reader: a sign-up
# form must not mail them (a bounce again, a complaint again) or bring them back.
NOT_BY_READER = frozenset([Subscriber.BOUNCED, Subscriber.COMPLAINED, Subscriber.REMOVED])


def record_signup(session: Session, signup: SignUp) -> int | None:
    """The id of the subscriber to send the confirmation to, or None for an address that
    must not be mailed. A new address waits as pending; an address already on the list
    is left exactly as it is until the link is followed."""
    subscriber = readers.find(session, signup.email)
    if subscriber is not None and subscriber.status in NOT_BY_READER:
        log.info("sign-up of %s ignored: the address is %s", signup.email, subscriber.status)
        return None
    if subscriber is None:
        subscriber = Subscriber(
            email=signup.email,
            name=signup.name,
            status=Subscriber.PENDING,
            status_reason="signed up on the web; waiting for confirmation",
        )
        session.add(subscriber)
    elif subscriber.status == Subscriber.PENDING and signup.name:
        subscriber.name = signup.name
    session.flush()
    return subscriber.id


def confirm(session: Session, subscriber_id: int, digests: list[str], known: set[str]) -> str:
    """Apply a followed confirmation link; the subscriber's address, for the page."""
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None or subscriber.status in NOT_BY_READER:
        raise LookupError("no such subscriber, or not one its reader may resubscribe")
    if subscriber.status != Subscriber.ACTIVE:
        subscriber.status = Subscriber.ACTIVE
        subscriber.status_reason = "confirmed by the reader"
        subscriber.status_changed_at = datetime.now(UTC)
    have = {s.digest for s in subscriber.subscriptions}
    for digest in digests:
        if digest in known and digest not in have:
            subscriber.subscriptions.append(Subscription(digest=digest))
    return subscriber.email


def send_confirmation(config: Config, secret_key: str, subscriber_id: int, signup: SignUp) -> None:
    """Email the confirmation link through the configured transport."""
    token = make_confirm_token(secret_key, subscriber_id, signup.digests)
    base = config.public_base_url
    env = environment(config)
    titles = [config.digest(name).title for name in signup.digests]
    values = {
        "site": config.site,
        "digests": titles,
        "days": config.server.confirm_days,
    }
    letter = Letter(
        subject=f"Confirm your subscription to {config.site.title}",
        html=env.get_template("web/confirm_email.html.j2").render(values),
        text=env.get_template("web/confirm_email.txt.j2").render(values),
        sender_name=config.delivery.sender.name,
        sender_email=config.delivery.sender.email or f"no-reply@{config.site.host}",
        reply_to=config.delivery.reply_to,
        list_id=f"{config.site.title} <signup.{config.site.host}>",
        # Unique per sign-up: the outbox names files by it, and a second sign-up must
        # not overwrite the first email.
        tag=f"confirm-{time.time_ns()}",
        domain=config.site.host,
        bulk=False,
    )
    recipient = Recipient(
        subscriber_id=subscriber_id,
        email=signup.email,
        values={
            "name": signup.name or "there",
            "display_name": signup.name,
            "email": signup.email,
            "confirm_url": f"{base}confirm/{token}",
        },
    )
    transport = open_transport(config)
    try:
        outcomes = transport.send(letter, [recipient])
    finally:
        transport.close()
    for outcome in outcomes:
        if not outcome.ok:
            log.warning("confirmation to %s not sent: %s", signup.email, outcome.error)
