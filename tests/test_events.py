"""What comes back from SendGrid: signed Event Webhook posts, applied once each.

Each test sends a real digest through the outbox first (so there are real deliveries),
then posts events the way SendGrid does: a JSON array, signed with ECDSA P-256 over the
timestamp header followed by the raw body, with a key pair generated here. The custom
args SendGrid flattens into each event (digest, issue_id, subscriber_id) come from the
deliveries the send recorded.
"""

from __future__ import annotations

import base64
import email
import email.policy
import json
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from alembic import command
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select

from syndicate.delivery import events
from syndicate.delivery.events import SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookAnswer
from syndicate.store import Delivery, DeliveryEvent, DigestIssue, Store, Subscriber
from syndicate.store.database import alembic_config
from tests.conftest import EXAMPLE_READERS, Site, make_site

KEY_ENV = "SENDGRID_WEBHOOK_PUBLIC_KEY"  # delivery.sendgrid.webhook_public_key_env's default
PEOPLE = list(EXAMPLE_READERS)


# --- SendGrid's side: keys, signatures, events -------------------------------------------


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_b64(key: ec.EllipticCurvePrivateKey) -> str:
    """The public key as SendGrid shows it: base64 of the DER SubjectPublicKeyInfo."""
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode("ascii")


def sign(key: ec.EllipticCurvePrivateKey, body: bytes, timestamp: str) -> str:
    signature = key.sign(timestamp.encode("ascii") + body, ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(signature).decode("ascii")


def signed_headers(key: ec.EllipticCurvePrivateKey, body: bytes) -> dict[str, str]:
    timestamp = str(int(time.time()))
    return {SIGNATURE_HEADER: sign(key, body, timestamp), TIMESTAMP_HEADER: timestamp}


def body_of(payload: Any) -> bytes:
    # SendGrid's own layout: compact JSON, no trailing newline (the signature covers it all).
    return json.dumps(payload, separators=(",", ":")).encode("utf-8")


@dataclass
class Sent:
    """A site that has sent issue 1 of its weekly digest to its six subscribers."""

    site: Site
    key: ec.EllipticCurvePrivateKey
    issue_id: int
    ids: dict[str, int]  # address -> subscriber id

    def store(self) -> Store:
        return Store(self.site.config.database_url)

    def event(self, kind: str, address: str, **fields: Any) -> dict[str, Any]:
        """One event about `address` and issue 1, as SendGrid would post it."""
        event: dict[str, Any] = {
            "email": address,
            "timestamp": int(time.time()),
            "event": kind,
            "sg_event_id": base64.b64encode(uuid.uuid4().bytes).decode("ascii"),
            "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
            "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
            "category": ["weekly"],
            "digest": "weekly",
            "issue_id": str(self.issue_id),
            "subscriber_id": str(self.ids.get(address.lower(), "")) or None,
        }
        event.update(fields)
        return {k: v for k, v in event.items() if v is not None}

    def post(
        self,
        payload: Any,
        key: ec.EllipticCurvePrivateKey | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> WebhookAnswer:
        body = payload if isinstance(payload, bytes) else body_of(payload)
        if headers is None:
            headers = signed_headers(key or self.key, body)
        with self.store() as store:
            return events.handle_webhook(self.site.config, store, body, headers)

    def statuses(self) -> dict[str, str]:
        with self.store() as store, store.session() as session:
            return dict(session.execute(select(Subscriber.email, Subscriber.status)).all())

    def delivery(self, address: str) -> Delivery:
        with self.store() as store, store.session() as session:
            found = session.scalars(
                select(Delivery).where(
                    Delivery.issue_id == self.issue_id, Delivery.subscriber_id == self.ids[address]
                )
            ).one()
            return found

    def stored_events(self) -> int:
        with self.store() as store, store.session() as session:
            return session.scalar(select(func.count()).select_from(DeliveryEvent)) or 0


def send_first_issue(site: Site, key: ec.EllipticCurvePrivateKey) -> Sent:
    site.cli("subscribers", "import", "subscribers.csv")
    site.cli("run", "--once")
    assert len(site.emails()) == len(PEOPLE), "issue 1 should go to each example subscriber"
    with Store(site.config.database_url) as store, store.session() as session:
        issue_id = session.scalars(select(DigestIssue.id)).one()
        ids = dict(session.execute(select(Subscriber.email, Subscriber.id)).all())
        sent = session.scalar(
            select(func.count()).where(Delivery.issue_id == issue_id, Delivery.status == "sent")
        )
    assert sorted(ids) == sorted(PEOPLE) and sent == len(PEOPLE)
    return Sent(site, key, issue_id, ids)


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> ec.EllipticCurvePrivateKey:
    private = new_key()
    monkeypatch.setenv(KEY_ENV, public_b64(private))
    return private


@pytest.fixture
def sent(site: Site, key: ec.EllipticCurvePrivateKey) -> Sent:
    return send_first_issue(site, key)


def recipients(site: Site, paths: Sequence[Path]) -> list[str]:
    addresses = []
    for path in paths:
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        addresses.append(message["To"].addresses[0].addr_spec)
    return sorted(addresses)


def new_review(site: Site, slug: str) -> None:
    meta = {
        "title": slug.replace("-", " ").title(),
        "published": datetime.now(UTC).isoformat(),
        "author": "Maya Okafor",
        "summary": f"Summary of {slug}.",
    }
    site.write_review(f"{slug}.md", "---\n" + yaml.safe_dump(meta) + "---\n\nBody.\n")


# --- signatures --------------------------------------------------------------------------


def test_a_signed_post_is_applied_and_answered_with_its_counts(sent: Sent) -> None:
    ada = PEOPLE[0]
    payload = [
        sent.event("processed", ada),
        sent.event("delivered", ada, response="250 OK", timestamp=1_795_000_000),
        sent.event("open", ada, useragent="Mozilla/5.0"),
        sent.event("open", ada),
        sent.event("click", ada, url="https://reelnotes.example.com/reviews/aftersun/"),
    ]
    answer = sent.post(payload)

    assert answer.status == 200, answer.message
    assert "5 processed" in answer.message and "0 duplicate" in answer.message
    delivery = sent.delivery(ada)
    assert delivery.delivered_at == datetime.fromtimestamp(1_795_000_000, UTC)
    assert (delivery.opens, delivery.clicks) == (2, 1)
    # The others' deliveries are untouched.
    other = sent.delivery(PEOPLE[1])
    assert (other.delivered_at, other.opens, other.clicks) == (None, 0, 0)
    assert sent.stored_events() == 5


def test_forged_altered_or_unsigned_posts_are_refused_and_change_nothing(
    sent: Sent, key: ec.EllipticCurvePrivateKey
) -> None:
    payload = [sent.event("spamreport", PEOPLE[0]), sent.event("open", PEOPLE[1])]
    body = body_of(payload)
    good = signed_headers(key, body)
    altered = body_of([*payload, sent.event("bounce", PEOPLE[2], reason="550 no such user")])
    timestamp = good[TIMESTAMP_HEADER]
    attempts: dict[str, tuple[bytes, dict[str, str], int]] = {
        "body altered after signing": (altered, good, 403),
        "signed with another key": (body, signed_headers(new_key(), body), 403),
        "signature for another timestamp": (
            body,
            {**good, TIMESTAMP_HEADER: str(int(timestamp) + 1)},
            403,
        ),
        "signature of another body": (body, signed_headers(key, altered), 403),
        "signature not base64": (body, {**good, SIGNATURE_HEADER: "not*base64!"}, 403),
        "no headers": (body, {}, 401),
        "no timestamp": (body, {SIGNATURE_HEADER: good[SIGNATURE_HEADER]}, 401),
        "no signature": (body, {TIMESTAMP_HEADER: timestamp}, 401),
    }
    for case, (posted, headers, status) in attempts.items():
        answer = sent.post(posted, headers=headers)
        assert answer.status == status, f"{case}: {answer}"
        assert "signature" in answer.message.lower(), case

    assert set(sent.statuses().values()) == {"active"}
    assert sent.delivery(PEOPLE[1]).opens == 0
    assert sent.stored_events() == 0
    # The genuine post, with the headers as a web server hands them over (any case), works.
    answer = sent.post(body, headers={k.lower(): v for k, v in good.items()})
    assert answer.status == 200, answer.message
    assert sent.statuses()[PEOPLE[0]] == "complained"


def test_without_a_configured_key_nothing_is_accepted(
    sent: Sent, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = [sent.event("bounce", PEOPLE[0], reason="550 unknown user")]
    monkeypatch.delenv(KEY_ENV)
    assert sent.post(payload).status == 500
    monkeypatch.setenv(KEY_ENV, "this is not a key")
    answer = sent.post(payload)
    assert answer.status == 500 and "verification key" in answer.message
    assert sent.statuses()[PEOPLE[0]] == "active" and sent.stored_events() == 0


# --- validation --------------------------------------------------------------------------


def test_a_malformed_body_is_answered_400_and_changes_nothing(sent: Sent) -> None:
    ada, zoe = PEOPLE[:2]
    good = sent.event("bounce", ada, reason="550 no such user")
    bodies: dict[str, tuple[Any, str]] = {
        "not JSON": (b'[{"event": "bounce",', "not JSON"),
        "not UTF-8": (b'["\xff\xfe"]', "not JSON"),
        "an object, not a list": ({"events": [good]}, "array"),
        "a list of strings": ([good, "bounce"], "event 2"),
        "no sg_event_id": ([good, {**sent.event("open", zoe), "sg_event_id": ""}], "sg_event_id"),
        "no event type": ([good, {k: v for k, v in good.items() if k != "event"}], "event 2"),
        "no address": ([good, {**sent.event("open", zoe), "email": None}], "email"),
        "a timestamp as text": (
            [good, sent.event("open", zoe, timestamp="yesterday")],
            "timestamp",
        ),
        "a timestamp out of range": (
            [good, sent.event("open", zoe, timestamp=10**20)],
            "timestamp",
        ),
    }
    for case, (payload, words) in bodies.items():
        answer = sent.post(payload)
        assert answer.status == 400, f"{case}: {answer}"
        assert words in answer.message, f"{case}: {answer.message}"

    assert set(sent.statuses().values()) == {"active"}
    assert sent.stored_events() == 0


def test_an_unknown_event_type_is_refused_and_nothing_in_the_post_is_applied(sent: Sent) -> None:
    ada, zoe = PEOPLE[:2]
    payload = [
        sent.event("bounce", ada, reason="550 5.1.1 no such user", type="bounce"),
        sent.event("open", zoe),
        sent.event("teleported", zoe),
    ]
    answer = sent.post(payload)

    assert answer.status == 400
    assert "event 3" in answer.message and "'teleported'" in answer.message
    assert sent.statuses()[ada] == "active", "the bounce before the bad event must not apply"
    assert sent.delivery(zoe).opens == 0
    assert sent.stored_events() == 0


def test_an_empty_post_is_fine(sent: Sent) -> None:
    answer = sent.post([])
    assert answer.status == 200 and "0 event(s)" in answer.message


# --- effects -----------------------------------------------------------------------------


def test_bounces_drops_complaints_and_unsubscribes_stop_the_next_digest(sent: Sent) -> None:
    ada, zoe, kwame, nerd, hiroshi, lena = PEOPLE
    payload = [
        sent.event("bounce", ada, type="bounce", status="5.1.1", reason="550 no such user"),
        sent.event("dropped", zoe, reason="Bounced Address"),
        sent.event("spamreport", kwame),
        sent.event("unsubscribe", nerd),
        sent.event("group_unsubscribe", hiroshi, asm_group_id=1),
        # A block is the receiving server refusing for now: the address itself is fine.
        sent.event("bounce", lena, type="blocked", reason="421 try again later"),
        sent.event("deferred", lena, response="421 busy", attempt="1"),
    ]
    answer = sent.post(payload)

    assert answer.status == 200, answer.message
    assert "5 subscriber(s) suppressed" in answer.message
    assert sent.statuses() == {
        ada: "bounced",
        zoe: "bounced",
        kwame: "complained",
        nerd: "unsubscribed",
        hiroshi: "unsubscribed",
        lena: "active",
    }
    listed = sent.site.cli("subscribers", "list", "--status", "bounced").output
    assert ada in listed and zoe in listed and lena not in listed
    with sent.store() as store, store.session() as session:
        ada_row = session.scalars(select(Subscriber).where(Subscriber.email == ada)).one()
        assert "550 no such user" in ada_row.status_reason
        assert ada_row.status_changed_at > datetime.fromtimestamp(time.time() - 60, UTC)
    assert sent.delivery(kwame).suppressed_by == "spamreport"
    assert sent.delivery(lena).suppressed_by is None

    # The next issue goes to the one reader still active, and to nobody else.
    before = set(sent.site.emails())
    new_review(sent.site, "a-new-film")
    sent.site.cli("run", "--once")
    assert recipients(sent.site, sorted(set(sent.site.emails()) - before)) == [lena]


def test_a_suppressed_address_keeps_its_first_reason(sent: Sent) -> None:
    ada = PEOPLE[0]
    sent.post([sent.event("unsubscribe", ada)])
    answer = sent.post([sent.event("spamreport", ada), sent.event("bounce", ada, type="bounce")])
    assert answer.status == 200 and "0 subscriber(s) suppressed" in answer.message
    assert sent.statuses()[ada] == "unsubscribed"


def test_each_event_is_applied_once_however_often_it_is_posted(sent: Sent) -> None:
    ada, zoe = PEOPLE[:2]
    opened = sent.event("open", zoe)
    bounced = sent.event("bounce", ada, type="bounce", reason="550 no such user")
    first = sent.post([opened, opened, bounced])
    assert first.status == 200
    assert "2 processed" in first.message and "1 duplicate(s)" in first.message

    # SendGrid retries a post it thinks failed; an operator replays a file.
    again = sent.post([bounced, opened, sent.event("open", zoe)])
    assert again.status == 200
    assert "1 processed" in again.message and "2 duplicate(s)" in again.message
    assert sent.delivery(zoe).opens == 2
    assert sent.stored_events() == 3
    status = sent.site.cli("digest", "status", "weekly").output
    assert "reported back: 0 delivered, 1 opened, 0 clicked, 1 bounced" in status

    # The editor re-adds the bounced reader; the replayed bounce does not undo that.
    sent.site.cli("subscribers", "add", ada)
    assert sent.post([bounced]).status == 200
    assert sent.statuses()[ada] == "active"


def test_events_without_custom_args_are_matched_by_address(sent: Sent) -> None:
    ada, zoe, kwame = PEOPLE[:3]
    payload = [
        # Mail sent before custom args, or by hand: only the address to go by.
        sent.event("spamreport", ada.upper(), subscriber_id=None, issue_id=None, digest=None),
        # The issue, but no subscriber: the address finds the delivery.
        sent.event("open", zoe, subscriber_id=None),
        # Another sender's custom args on the same SendGrid account: the ids say Ada,
        # the address says Kwame. The address wins.
        sent.event("open", kwame, subscriber_id=str(sent.ids[ada])),
        # Someone not on the list at all.
        sent.event("bounce", "stranger@example.com", subscriber_id="99999", type="bounce"),
    ]
    answer = sent.post(payload)

    assert answer.status == 200, answer.message
    assert "1 about no subscriber" in answer.message
    assert sent.statuses()[ada] == "complained"
    assert sent.delivery(zoe).opens == 1
    assert (sent.delivery(kwame).opens, sent.delivery(ada).opens) == (1, 0)
    assert sent.stored_events() == 4


# --- both databases, and posts that race -------------------------------------------------


@pytest.fixture
def db_sent(
    tmp_path: Path,
    database_url: str,
    secret_env: str,
    key: ec.EllipticCurvePrivateKey,
    monkeypatch: pytest.MonkeyPatch,
) -> Sent:
    site = make_site(tmp_path / "site", database_url=database_url)
    monkeypatch.chdir(site.root)
    return send_first_issue(site, key)


def test_the_same_post_racing_itself_is_applied_once(db_sent: Sent) -> None:
    zoe = PEOPLE[1]
    payload = [db_sent.event("open", zoe) for _ in range(3)]
    payload += [db_sent.event("unsubscribe", PEOPLE[2]), db_sent.event("delivered", zoe)]
    body = body_of(payload)
    headers = signed_headers(db_sent.key, body)
    stores = [db_sent.store() for _ in range(4)]  # opened (and migrated) one at a time
    start = threading.Barrier(4, timeout=30)
    answers: list[WebhookAnswer] = []
    errors: list[BaseException] = []

    def post(store: Store) -> None:
        try:
            start.wait()
            answers.append(events.handle_webhook(db_sent.site.config, store, body, headers))
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)
            start.abort()

    threads = [threading.Thread(target=post, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in stores:
        store.close()

    assert not errors, errors
    assert [a.status for a in answers] == [200] * 4, [a.message for a in answers]
    reports = [a.report for a in answers if a.report]
    assert sorted(r.processed for r in reports) == [0, 0, 0, 5]
    assert sorted(r.duplicates for r in reports) == [0, 5, 5, 5]
    assert sum(r.suppressed for r in reports) == 1
    assert db_sent.delivery(zoe).opens == 3
    assert db_sent.statuses()[PEOPLE[2]] == "unsubscribed"
    assert db_sent.stored_events() == 5


# --- the command -------------------------------------------------------------------------


def test_events_ingest_applies_a_file_once_and_verifies_it_when_asked(sent: Sent) -> None:
    site = sent.site
    ada, zoe = PEOPLE[:2]
    body = body_of([sent.event("bounce", ada, type="bounce"), sent.event("click", zoe)])
    events_file = site.root / "events.json"
    events_file.write_bytes(body)
    headers = signed_headers(sent.key, body)
    signature, timestamp = headers[SIGNATURE_HEADER], headers[TIMESTAMP_HEADER]

    refused = site.cli(
        "events", "ingest", "events.json", "--signature", sign(new_key(), body, timestamp),
        "--timestamp", timestamp, ok=False,
    )  # fmt: skip
    assert "signature does not match events.json" in refused.output
    unsigned = site.cli("events", "ingest", "events.json", "--require-signature", ok=False)
    assert "--require-signature needs --signature" in unsigned.output
    half = site.cli("events", "ingest", "events.json", "--signature", signature, ok=False)
    assert "go together" in half.output
    assert sent.statuses()[ada] == "active" and sent.stored_events() == 0

    done = site.cli(
        "events", "ingest", "events.json", "--signature", signature, "--timestamp", timestamp,
        "--require-signature",
    )  # fmt: skip
    assert "(signature verified)" in done.output
    assert "2 processed" in done.output and "1 subscriber(s) suppressed" in done.output
    assert sent.statuses()[ada] == "bounced" and sent.delivery(zoe).clicks == 1

    replay = site.cli("events", "ingest", "events.json")  # unsigned: a replay of a saved file
    assert "0 processed" in replay.output and "2 duplicate(s)" in replay.output
    assert sent.delivery(zoe).clicks == 1


def test_events_ingest_refuses_a_bad_file_with_a_clear_message(sent: Sent) -> None:
    site = sent.site
    (site.root / "bad.json").write_text(
        json.dumps([sent.event("open", PEOPLE[0]), sent.event("opened", PEOPLE[1])])
    )
    result = site.cli("events", "ingest", "bad.json", ok=False)
    assert "bad.json: event 2: unknown event type 'opened'" in result.output
    assert "nothing was applied" in result.output
    assert sent.delivery(PEOPLE[0]).opens == 0

    stdin = site.cli("events", "ingest", "-", input=json.dumps([sent.event("open", PEOPLE[0])]))
    assert "Events from stdin" in stdin.output and sent.delivery(PEOPLE[0]).opens == 1


# --- the schema --------------------------------------------------------------------------


def test_an_existing_database_upgrades_and_its_deliveries_start_with_no_events(
    sent: Sent,
) -> None:
    with sent.store() as store:
        command.downgrade(alembic_config(store.engine), "0001")
    with sent.store() as store, store.session() as session:  # upgrades to head on opening
        rows = session.execute(
            select(Delivery.status, Delivery.opens, Delivery.clicks, Delivery.delivered_at)
        ).all()
    assert len(rows) == len(PEOPLE)
    assert {tuple(row) for row in rows} == {("sent", 0, 0, None)}
    assert sent.post([sent.event("open", PEOPLE[0])]).status == 200
    assert sent.delivery(PEOPLE[0]).opens == 1
