"""What comes back from SendGrid: the Event Webhook, verified, deduplicated and applied.

SendGrid posts JSON arrays of events, signed with ECDSA over the timestamp header followed
by the raw body. `handle_webhook` is the endpoint without a web framework: the web app
passes it the raw body and the headers and answers with its status and message;
`syndicate events ingest FILE.json` feeds it files (replays, tests).

- The signature is checked first, on the raw bytes (401 when the headers are missing,
  403 when they do not verify). Then the whole payload is validated (400 for anything
  malformed or an unknown event type) before anything is written: a refused post changes
  nothing, and SendGrid retries it.
- Each event is applied once: `sg_event_id` is unique in delivery_events, and rows are
  inserted with ON CONFLICT DO NOTHING, so a retried post, a replayed file or two posts
  racing each other count the repeats as duplicates and change nothing.
- Effects: a bounce (a hard one: SendGrid's bounce `type` "bounce", not "blocked", which is
  the receiving server refusing for now) or a drop suppresses the subscriber as bounced,
  a spam report as complained, an unsubscribe or group unsubscribe as unsubscribed; an
  address already suppressed keeps its first reason. `delivered` sets the delivery's
  delivered_at; `open` and `click` count up. The rest are recorded only.
- An event is matched to its subscriber by the `subscriber_id` custom arg when that
  subscriber has the event's address (custom args of other mail on the same SendGrid
  account cannot suppress the wrong reader), else by the address; and to its delivery by
  the `issue_id` custom arg and that subscriber.
"""

from __future__ import annotations

import binascii
import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from sendgrid.helpers.eventwebhook import EventWebhook, EventWebhookHeader
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from syndicate import subscribers as readers
from syndicate.config import Config, MissingSecret, secret
from syndicate.store import Delivery, DeliveryEvent, Store, Subscriber
from syndicate.store.database import in_batches

log = logging.getLogger(__name__)

SIGNATURE_HEADER = EventWebhookHeader.SIGNATURE
TIMESTAMP_HEADER = EventWebhookHeader.TIMESTAMP

# The event types that suppress the subscriber, and as what.
SUPPRESSING = {
    "bounce": Subscriber.BOUNCED,
    "dropped": Subscriber.BOUNCED,
    "spamreport": Subscriber.COMPLAINED,
    "unsubscribe": Subscriber.UNSUBSCRIBED,
    "group_unsubscribe": Subscriber.UNSUBSCRIBED,
}
COUNTED = ("delivered", "open", "click")
# Documented by SendGrid; kept in delivery_events, no other effect.
RECORDED = ("processed", "deferred", "group_resubscribe", "account_status_change")
KNOWN = frozenset([*SUPPRESSING, *COUNTED, *RECORDED])
# Account events are about the SendGrid account, not one address.
WITHOUT_ADDRESS = frozenset(["account_status_change"])

MAX_ID = 2**31 - 1  # ids are 32-bit integers in the database


class InvalidEvents(ValueError):
    """The payload is not a list of SendGrid events; nothing was applied."""


class InvalidPublicKey(ValueError):
    """The configured verification key is not a base64 ECDSA public key."""


def verify(public_key_b64: str, payload: bytes, signature: str, timestamp: str) -> bool:
    """Whether `signature` is SendGrid's signature of `timestamp` + `payload` (the raw body).

    Raises InvalidPublicKey for a key that cannot be read: the operator's to fix, and no
    reason to refuse the sender."""
    try:
        helper = EventWebhook(public_key_b64.strip())
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise InvalidPublicKey(
            f"the event webhook verification key is not a base64 public key: {exc}"
        ) from None
    if not isinstance(helper.public_key, EllipticCurvePublicKey):
        raise InvalidPublicKey("the event webhook verification key is not an ECDSA key")
    try:
        # The helper verifies text: SendGrid's body is UTF-8 JSON (handle_webhook refuses
        # anything else as malformed before it gets here).
        return bool(helper.verify_signature(payload.decode("utf-8"), signature, timestamp))
    except (UnicodeError, binascii.Error, ValueError, TypeError):
        return False


def parse_payload(body: bytes) -> list[dict[str, Any]]:
    """The events in a webhook body: a JSON array of objects, or InvalidEvents."""
    try:
        payload = json.loads(body)
    except (UnicodeError, ValueError) as exc:
        raise InvalidEvents(f"the body is not JSON: {exc}") from None
    if not isinstance(payload, list):
        raise InvalidEvents(f"expected a JSON array of events, got a JSON {_kind(payload)}")
    for number, item in enumerate(payload, 1):
        if not isinstance(item, dict):
            raise InvalidEvents(f"event {number}: expected a JSON object, got a {_kind(item)}")
    return payload


def _kind(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


@dataclass(frozen=True)
class Event:
    """One event, validated."""

    sg_event_id: str
    event: str
    email: str
    occurred_at: datetime
    issue_id: int | None
    subscriber_id: int | None
    detail: str
    # A bounce that is a block: the receiving server refused for now, the address is fine.
    blocked: bool = False

    @property
    def suppresses(self) -> str | None:
        return None if self.blocked else SUPPRESSING.get(self.event)


def validate(raw: Mapping[str, Any], number: int) -> Event:
    def fail(problem: str) -> InvalidEvents:
        return InvalidEvents(f"event {number}: {problem}")

    kind = raw.get("event")
    if not isinstance(kind, str) or not kind:
        raise fail("no 'event' type")
    if kind not in KNOWN:
        raise fail(f"unknown event type {kind[:40]!r} (known: {', '.join(sorted(KNOWN))})")
    event_id = raw.get("sg_event_id")
    if not isinstance(event_id, str) or not event_id.strip() or len(event_id) > 200:
        raise fail("no usable 'sg_event_id' (a string of at most 200 characters)")
    email = raw.get("email", "")
    if not isinstance(email, str) or (not email and kind not in WITHOUT_ADDRESS):
        raise fail(f"a {kind} event needs the recipient's 'email'")
    stamp = raw.get("timestamp")
    if isinstance(stamp, bool) or not isinstance(stamp, int | float):
        raise fail("'timestamp' must be a Unix time in seconds")
    try:
        occurred_at = datetime.fromtimestamp(stamp, UTC)
    except (OverflowError, OSError, ValueError):
        raise fail(f"'timestamp' {stamp} is not a usable time") from None
    blocked = kind == "bounce" and str(raw.get("type", "")).lower() == "blocked"
    return Event(
        sg_event_id=event_id,
        event=kind,
        email=email.strip()[:320],
        occurred_at=occurred_at,
        issue_id=_id(raw.get("issue_id")),
        subscriber_id=_id(raw.get("subscriber_id")),
        detail=_detail(raw, blocked),
        blocked=blocked,
    )


def _id(value: object) -> int | None:
    """A custom arg holding one of our ids (SendGrid hands them back as strings)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    return value if isinstance(value, int) and 0 < value <= MAX_ID else None


def _detail(raw: Mapping[str, Any], blocked: bool) -> str:
    """What explains the event to a person: the bounce or drop reason, the clicked URL."""
    parts = [str(raw[key]) for key in ("status", "reason", "response", "url") if raw.get(key)]
    text = " ".join(parts)
    return (f"blocked: {text}" if blocked else text)[:2000]


@dataclass
class IngestReport:
    received: int = 0
    processed: int = 0
    duplicates: int = 0
    suppressed: int = 0
    # Processed events about an address that is not on the list (or about the account).
    unmatched: int = 0
    by_type: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(self.by_type.items()))
        text = (
            f"{self.received} event(s): {self.processed} processed"
            + (f" ({kinds})" if kinds else "")
            + f", {self.duplicates} duplicate(s) skipped"
            + f", {self.suppressed} subscriber(s) suppressed"
        )
        if self.unmatched:
            text += f", {self.unmatched} about no subscriber on the list"
        return text


def ingest(store: Store, events: Sequence[Mapping[str, Any]]) -> IngestReport:
    """Apply SendGrid events, each once. Every event is validated before anything is
    written, so InvalidEvents means nothing changed."""
    validated = [validate(raw, number) for number, raw in enumerate(events, 1)]
    report = IngestReport(received=len(validated))
    fresh: dict[str, Event] = {}
    for event in validated:
        fresh.setdefault(event.sg_event_id, event)
    report.duplicates = len(validated) - len(fresh)
    with store.session() as session:
        seen = _existing(session, list(fresh))
        new = [e for e in fresh.values() if e.sg_event_id not in seen]
        report.duplicates += len(fresh) - len(new)
        if not new:
            return report
        subscribers = _subscribers(session, new)
        deliveries = _deliveries(session, new, subscribers)
        inserted = _insert(session, new, subscribers, deliveries)
        # Another post holding the same events may have been applied in the meantime.
        report.duplicates += len(new) - len(inserted)
        for event in new:
            if event.sg_event_id not in inserted:
                continue
            report.processed += 1
            report.by_type[event.event] += 1
            subscriber = subscribers.get(event)
            if subscriber is None:
                report.unmatched += 1
                continue
            delivery = deliveries.get((event.issue_id, subscriber.id))
            if _apply(session, event, subscriber, delivery):
                report.suppressed += 1
    log.info("SendGrid events: %s", report.summary())
    return report


def _apply(
    session: Session, event: Event, subscriber: Subscriber, delivery: Delivery | None
) -> bool:
    """Apply one new event; True when it suppressed the subscriber."""
    if delivery is not None:
        if event.event == "delivered":
            if delivery.delivered_at is None or event.occurred_at < delivery.delivered_at:
                delivery.delivered_at = event.occurred_at
        elif event.event == "open":
            delivery.opens += 1
        elif event.event == "click":
            delivery.clicks += 1
        elif event.suppresses and delivery.suppressed_by is None:
            delivery.suppressed_by = event.event
    status = event.suppresses
    if status is None or subscriber.status in readers.SUPPRESSED:
        return False
    when = f"{event.occurred_at:%Y-%m-%d %H:%M} UTC"
    reason = f"SendGrid {event.event} event at {when}" + (
        f": {event.detail}" if event.detail else ""
    )
    readers.suppress(session, subscriber.email, status, reason[:500])
    log.info("suppressed %s as %s: %s", subscriber.email, status, reason)
    return True


def _existing(session: Session, event_ids: list[str]) -> set[str]:
    seen: set[str] = set()
    for chunk in in_batches(event_ids):
        seen.update(
            session.scalars(
                select(DeliveryEvent.sg_event_id).where(DeliveryEvent.sg_event_id.in_(chunk))
            )
        )
    return seen


def _address(email: str) -> str:
    try:
        return readers.normalise(email)
    except readers.InvalidAddress:
        return email.strip().lower()


class _Subscribers:
    """The subscribers the events are about, loaded in a few queries."""

    def __init__(self, by_id: dict[int, Subscriber], by_email: dict[str, Subscriber]) -> None:
        self.by_id = by_id
        self.by_email = by_email

    def get(self, event: Event) -> Subscriber | None:
        if not event.email:
            return None
        address = _address(event.email)
        subscriber = self.by_id.get(event.subscriber_id) if event.subscriber_id else None
        if subscriber is not None and subscriber.email == address:
            return subscriber
        return self.by_email.get(address)


def _subscribers(session: Session, events: list[Event]) -> _Subscribers:
    ids = {e.subscriber_id for e in events if e.subscriber_id}
    by_id: dict[int, Subscriber] = {}
    for chunk in in_batches(ids):
        by_id.update(
            (s.id, s) for s in session.scalars(select(Subscriber).where(Subscriber.id.in_(chunk)))
        )
    known = {s.email for s in by_id.values()}
    addresses = {_address(e.email) for e in events if e.email} - known
    by_email = {s.email: s for s in by_id.values()}
    for chunk in in_batches(addresses):
        by_email.update(
            (s.email, s)
            for s in session.scalars(select(Subscriber).where(Subscriber.email.in_(chunk)))
        )
    return _Subscribers(by_id, by_email)


def _deliveries(
    session: Session, events: list[Event], subscribers: _Subscribers
) -> dict[tuple[int | None, int], Delivery]:
    wanted: dict[int, set[int]] = {}
    for event in events:
        subscriber = subscribers.get(event)
        if event.issue_id is not None and subscriber is not None:
            wanted.setdefault(event.issue_id, set()).add(subscriber.id)
    found: dict[tuple[int | None, int], Delivery] = {}
    for issue_id, subscriber_ids in wanted.items():
        for chunk in in_batches(subscriber_ids):
            for delivery in session.scalars(
                select(Delivery).where(
                    Delivery.issue_id == issue_id, Delivery.subscriber_id.in_(chunk)
                )
            ):
                found[(issue_id, delivery.subscriber_id)] = delivery
    return found


def _insert(
    session: Session,
    events: list[Event],
    subscribers: _Subscribers,
    deliveries: dict[tuple[int | None, int], Delivery],
) -> set[str]:
    """Record the events; the ids of those not already recorded (by a concurrent post)."""
    now = datetime.now(UTC)
    rows = []
    for event in events:
        subscriber = subscribers.get(event)
        rows.append(
            {
                "sg_event_id": event.sg_event_id,
                "event": event.event,
                "email": event.email,
                "subscriber_id": subscriber.id if subscriber else None,
                # Only an issue this subscriber was sent: a stray id must not break the FK.
                "issue_id": event.issue_id
                if subscriber and (event.issue_id, subscriber.id) in deliveries
                else None,
                "detail": event.detail,
                "occurred_at": event.occurred_at,
                "received_at": now,
            }
        )
    dialect = session.get_bind().dialect.name
    insert = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}[dialect]
    statement = (
        insert(DeliveryEvent.__table__)
        .on_conflict_do_nothing(index_elements=["sg_event_id"])
        .returning(DeliveryEvent.__table__.c.sg_event_id)
    )
    inserted: set[str] = set()
    for chunk in in_batches(rows):
        inserted.update(session.scalars(statement, chunk))
    return inserted


@dataclass(frozen=True)
class WebhookAnswer:
    status: int
    message: str
    report: IngestReport | None = None


def handle_webhook(
    config: Config, store: Store, body: bytes, headers: Mapping[str, str]
) -> WebhookAnswer:
    """Answer one POST from SendGrid's Event Webhook: verify, validate, apply.

    200 with the counts when applied (duplicates included: SendGrid may post an event
    twice); 401 without the signature headers; 403 when they do not verify; 400 for a
    body that is not a list of known SendGrid events; 500 when the verification key is
    not configured or unreadable (logged: the operator's to fix; SendGrid retries)."""
    lowered = {name.lower(): value for name, value in headers.items()}
    signature = lowered.get(SIGNATURE_HEADER.lower(), "").strip()
    timestamp = lowered.get(TIMESTAMP_HEADER.lower(), "").strip()
    if not signature or not timestamp:
        return WebhookAnswer(401, f"missing the {SIGNATURE_HEADER} and {TIMESTAMP_HEADER} headers")
    try:
        body.decode("utf-8")
    except UnicodeError as exc:
        return WebhookAnswer(400, f"the body is not JSON: it is not UTF-8 text ({exc.reason})")
    try:
        key = secret(
            config.delivery.sendgrid.webhook_public_key_env, "SendGrid event webhook public key"
        )
        valid = verify(key, body, signature, timestamp)
    except (MissingSecret, InvalidPublicKey) as exc:
        log.error("SendGrid event webhook: %s", exc)
        return WebhookAnswer(500, "the event webhook's verification key is missing or unreadable")
    if not valid:
        log.warning("SendGrid event webhook: refused a post whose signature does not verify")
        return WebhookAnswer(403, "the signature does not match the body")
    try:
        report = ingest(store, parse_payload(body))
    except InvalidEvents as exc:
        log.warning("SendGrid event webhook: refused a post: %s", exc)
        return WebhookAnswer(400, str(exc))
    return WebhookAnswer(200, report.summary(), report)
