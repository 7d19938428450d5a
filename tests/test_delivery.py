"""Delivery through the outbox: the MIME message each subscriber gets, and the ledger that
sends each issue to each subscriber exactly once, through crashes, failures and races."""

from __future__ import annotations

import email
import email.policy
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select, update

from syndicate import digest as digests
from syndicate import pipeline
from syndicate.delivery import Letter, OutboxTransport, Outcome, Recipient
from syndicate.store import Delivery, DigestIssue, Store, Subscriber
from syndicate.tokens import InvalidToken, read_token
from tests.conftest import EXAMPLE_READERS, SECRET, Site

SUBJECT = "Cinéma, {{ subscriber.name }}: {{ featured.title }}"
MAILTO = "unsubscribe@reelnotes.example.com"
CSV_PEOPLE = EXAMPLE_READERS


# --- helpers ---------------------------------------------------------------------------


def edit_config(site: Site, **delivery: Any) -> None:
    """Give the weekly digest a personalised, non-ASCII subject; add a monthly digest;
    set delivery options (batch_size, ...)."""
    data = yaml.safe_load(site.config_path.read_text(encoding="utf-8"))
    data["digests"][0]["subject"] = SUBJECT
    data["digests"].append(
        {"name": "monthly", "title": "Monthly Reels", "first_issue_since": "2026-01-01"}
    )
    data["delivery"].update({"unsubscribe_mailto": MAILTO, **delivery})
    site.config_path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")


@pytest.fixture
def newsletter(site: Site) -> Site:
    """The example site with its reviews gathered and the six example subscribers."""
    edit_config(site)
    site.cli("gather")
    site.cli("subscribers", "import", "subscribers.csv", "--digest", "weekly")
    return site


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def outbox(site: Site) -> dict[str, bytes]:
    """The raw bytes of every message in the outbox, by file name."""
    return {path.name: path.read_bytes() for path in site.emails() if path.is_file()}


def inbox(site: Site) -> dict[str, list[EmailMessage]]:
    """Every message in the outbox, by the address it is to."""
    found: dict[str, list[EmailMessage]] = {}
    for raw in outbox(site).values():
        message = parse(raw)
        found.setdefault(message["To"].addresses[0].addr_spec, []).append(message)
    return found


def ids(site: Site) -> dict[str, int]:
    with Store(site.config.database_url) as store, store.session() as session:
        return {s.email: s.id for s in session.scalars(select(Subscriber))}


def ledger(site: Site, number: int = 1, digest: str = "weekly") -> dict[str, Delivery]:
    """The deliveries of one issue, by subscriber address."""
    with Store(site.config.database_url) as store, store.session() as session:
        rows = session.execute(
            select(Subscriber.email, Delivery)
            .join(Delivery, Delivery.subscriber_id == Subscriber.id)
            .join(DigestIssue, DigestIssue.id == Delivery.issue_id)
            .where(DigestIssue.digest == digest, DigestIssue.number == number)
        ).all()
        return {address: delivery for address, delivery in rows}  # noqa: C416


def statuses(site: Site, number: int = 1) -> dict[str, str]:
    return {address: d.status for address, d in ledger(site, number).items()}


def header_block(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]


def text_of(message: EmailMessage, kind: str) -> str:
    part = message.get_body((kind,))
    assert part is not None, f"no text/{kind} part"
    content = part.get_content()
    assert isinstance(content, str)
    return content


# --- the message -------------------------------------------------------------------------


def test_each_subscriber_gets_one_well_formed_multipart_message(newsletter: Site) -> None:
    result = newsletter.cli("digest", "send", "weekly")
    assert "6 sent, 0 failed" in result.output

    raws = list(outbox(newsletter).values())
    assert len(raws) == 6
    messages = [parse(raw) for raw in raws]
    by_address = {m["To"].addresses[0].addr_spec: m for m in messages}
    assert set(by_address) == set(CSV_PEOPLE)
    message_ids = {m["Message-ID"].strip() for m in messages}
    assert len(message_ids) == 6, "every message needs its own Message-ID"

    for raw, message in zip(raws, messages, strict=True):
        address = message["To"].addresses[0].addr_spec
        name = CSV_PEOPLE[address]
        assert not message.defects
        # Headers are 7-bit on the wire: non-ASCII names and subjects are encoded words.
        assert header_block(raw).isascii()
        assert message["From"].addresses[0].display_name == "Reel Notes"
        assert message["From"].addresses[0].addr_spec == "newsletter@reelnotes.example.com"
        assert message["To"].addresses[0].display_name == name
        assert str(message["Subject"]).startswith(f"Cinéma, {name or 'reader'}: ")
        sent_at = message["Date"].datetime
        assert sent_at.tzinfo is not None
        assert abs(datetime.now(UTC) - sent_at) < timedelta(minutes=5)
        assert re.fullmatch(r"<[^<>@\s]+@reelnotes\.example\.com>", message["Message-ID"].strip())
        assert message["MIME-Version"] == "1.0"
        assert [p.get_content_type() for p in message.walk()] == [
            "multipart/alternative",
            "text/plain",
            "text/html",
        ]
        assert message["List-Id"] == "The Week in Film <weekly.reelnotes.example.com>"
        links = re.findall(r"<([^<>]+)>", message["List-Unsubscribe"])
        assert len(links) == 2
        assert links[0].startswith("https://reelnotes.example.com/unsubscribe/")
        assert links[1] == f"mailto:{MAILTO}?subject=unsubscribe"
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert message["Precedence"] == "bulk"
        # The greeting and the footer are this subscriber's.
        assert f"Hello {name or 'reader'}," in text_of(message, "plain")
        assert f"because {address} subscribed" in text_of(message, "plain")
        assert links[0] in text_of(message, "html")

    zoe = by_address["zoe.martin@example.org"]
    assert str(zoe["Subject"]).startswith("Cinéma, Zoë Martín: ")
    assert "Hello Zoë Martín," in text_of(zoe, "plain")
    assert "Zoë Martín" in text_of(zoe, "html")


def test_unsubscribe_link_works_for_its_own_subscriber_only(newsletter: Site) -> None:
    newsletter.cli("digest", "send", "weekly")
    by_id = {subscriber_id: address for address, subscriber_id in ids(newsletter).items()}

    tokens = {}
    for address, (message,) in inbox(newsletter).items():
        url = re.findall(r"<(https://[^<>]+)>", message["List-Unsubscribe"])[0]
        token = url.rsplit("/", 1)[1]
        assert by_id[read_token(SECRET, "unsubscribe", token)] == address
        tokens[address] = token

    assert len(set(tokens.values())) == 6
    token = tokens["ada.whitfield@example.com"]
    with pytest.raises(InvalidToken):
        read_token(SECRET, "preferences", token)  # another purpose
    with pytest.raises(InvalidToken):
        read_token("another-secret", "unsubscribe", token)  # forged with another key
    with pytest.raises(InvalidToken):
        read_token(SECRET, "unsubscribe", token[:-2] + ("AA" if token[-2:] != "AA" else "BB"))


def test_a_name_cannot_inject_headers_or_html(newsletter: Site) -> None:
    newsletter.cli(
        "subscribers",
        "add",
        "mallory@example.com",
        "--name",
        "Mallory\r\nBcc: victim@example.net\r\nX-Injected: yes",
        "--digest",
        "weekly",
    )
    newsletter.cli(
        "subscribers",
        "add",
        "scripty@example.com",
        "--name",
        '<script>alert("x")</script> Sam',
        "--digest",
        "weekly",
    )
    result = newsletter.cli("digest", "send", "weekly")
    assert "8 sent, 0 failed" in result.output

    raw = next(r for r in outbox(newsletter).values() if b"mallory@example.com" in header_block(r))
    mallory = parse(raw)
    assert mallory["Bcc"] is None and mallory["X-Injected"] is None
    assert not re.search(rb"^(Bcc|X-Injected):", header_block(raw), re.MULTILINE | re.IGNORECASE)
    assert [a.addr_spec for a in mallory["To"].addresses] == ["mallory@example.com"]
    # The name is still there, on one line, in To and in the personalised Subject.
    assert (
        mallory["To"].addresses[0].display_name == "Mallory Bcc: victim@example.net X-Injected: yes"
    )
    assert str(mallory["Subject"]).startswith("Cinéma, Mallory Bcc: victim@example.net X-Inj")

    scripty = inbox(newsletter)["scripty@example.com"][0]
    html = text_of(scripty, "html")
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; Sam" in html
    assert scripty["To"].addresses[0].display_name == '<script>alert("x")</script> Sam'


# --- exactly once ------------------------------------------------------------------------


def test_sending_again_sends_nothing_twice(newsletter: Site) -> None:
    newsletter.cli("digest", "send", "weekly")
    first = outbox(newsletter)
    assert len(first) == 6

    again = newsletter.cli("digest", "send", "weekly")
    assert "nothing new" in again.output
    assert outbox(newsletter) == first  # no file rewritten: nothing sent again

    newsletter.write_review(
        "2026/late-addition.md",
        "---\ntitle: A late addition\nfilm: Late Film\nauthor: Maya Okafor\n"
        f"date: {datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}\n---\nShort and new.\n",
    )
    newsletter.cli("gather")
    second = newsletter.cli("digest", "send", "weekly")
    assert "issue 2 of weekly: 6 sent" in second.output
    for address, messages in inbox(newsletter).items():
        subjects = sorted(str(m["Subject"]) for m in messages)
        assert len(messages) == 2, f"{address} got {subjects}"
        assert len({m["Message-ID"] for m in messages}) == 2
    status = newsletter.cli("digest", "status", "weekly").output
    assert re.search(
        r"#2 .* complete .*\n    6 subscribers: 6 accepted, 0 pending, 0 failed\n", status
    )
    assert re.search(
        r"#1 .* complete .*\n    6 subscribers: 6 accepted, 0 pending, 0 failed\n", status
    )


def test_a_later_subscriber_does_not_get_an_issue_sent_before_they_joined(
    newsletter: Site,
) -> None:
    # Issue 1 is left unfinished: one address cannot be written yet and waits for a retry.
    blocked = newsletter.outbox / f"weekly-0001-{ids(newsletter)['ada.whitfield@example.com']}.eml"
    blocked.mkdir(parents=True)
    newsletter.cli("digest", "send", "weekly")
    assert statuses(newsletter)["ada.whitfield@example.com"] == Delivery.RETRY

    newsletter.cli("subscribers", "add", "newcomer@example.com", "--digest", "weekly")
    blocked.rmdir()
    result = newsletter.cli("digest", "send", "weekly")

    assert "1 sent" in result.output and "(complete)" in result.output
    assert set(inbox(newsletter)) == set(CSV_PEOPLE)  # not the newcomer
    assert "newcomer@example.com" not in ledger(newsletter)


def test_only_active_subscribers_of_that_digest_receive_it(newsletter: Site) -> None:
    cli = newsletter.cli
    cli("subscribers", "add", "monthly.only@example.com", "--digest", "monthly")
    cli("subscribers", "add", "both@example.com", "--digest", "weekly", "--digest", "monthly")
    cli("subscribers", "remove", "kwame.boateng@example.net")
    with Store(newsletter.config.database_url) as store, store.session() as session:
        session.execute(
            update(Subscriber)
            .where(Subscriber.email == "lena.novak@example.net")
            .values(status=Subscriber.BOUNCED)
        )
        session.execute(
            update(Subscriber)
            .where(Subscriber.email == "hiroshi.tanaka@example.org")
            .values(status=Subscriber.PENDING)
        )

    assert "4 sent, 0 failed" in cli("digest", "send", "weekly").output
    assert set(inbox(newsletter)) == {
        "ada.whitfield@example.com",
        "zoe.martin@example.org",
        "film.nerd.1983@example.com",
        "both@example.com",
    }

    assert "2 sent, 0 failed" in cli("digest", "send", "monthly").output
    monthly = [
        m["To"].addresses[0].addr_spec
        for m in (parse(raw) for raw in outbox(newsletter).values())
        if m["List-Id"].startswith("Monthly Reels")
    ]
    assert sorted(monthly) == ["both@example.com", "monthly.only@example.com"]


# --- failures, crashes and races ---------------------------------------------------------


def test_a_failing_address_is_retried_then_failed_while_the_others_are_sent(
    newsletter: Site,
) -> None:
    # The outbox cannot write Zoë's file: a directory is in the way.
    zoe = "zoe.martin@example.org"
    (newsletter.outbox / f"weekly-0001-{ids(newsletter)[zoe]}.eml").mkdir(parents=True)

    first = newsletter.cli("digest", "send", "weekly")
    assert "5 sent, 0 failed, 1 to retry" in first.output
    assert "(complete)" not in first.output
    sent = outbox(newsletter)
    assert len(sent) == 5
    status = newsletter.cli("digest", "status", "weekly").output
    assert "6 subscribers: 5 accepted, 1 pending, 0 failed" in status
    assert "pending: 1 to retry" in status and "1 to retry: " in status
    assert "Is a directory" in status

    for attempt in range(2, Delivery.MAX_ATTEMPTS):
        result = newsletter.cli("digest", "send", "weekly")
        assert "0 sent, 0 failed, 1 to retry" in result.output
        assert ledger(newsletter)[zoe].attempts == attempt
    last = newsletter.cli("digest", "send", "weekly", ok=False)
    assert "0 sent, 1 failed" in last.output and "(complete)" in last.output
    assert zoe in last.output  # the failure names the address

    assert outbox(newsletter) == sent  # the five were never sent again
    record = ledger(newsletter)[zoe]
    assert (record.status, record.attempts) == (Delivery.FAILED, Delivery.MAX_ATTEMPTS)
    status = newsletter.cli("digest", "status", "weekly").output
    assert re.search(
        r"#1 .* complete .*\n    6 subscribers: 5 accepted, 0 pending, 1 failed", status
    )
    assert "nothing new" in newsletter.cli("digest", "send", "weekly").output


KILLED_MID_BATCH = """
import os, signal, sys
from syndicate import config, pipeline
from syndicate.delivery import OutboxTransport
from syndicate.store import Store

class DiesMidBatch(OutboxTransport):
    count = 0

    def send(self, letter, recipients):
        outcomes = []
        for recipient in recipients:
            outcomes += super().send(letter, [recipient])
            DiesMidBatch.count += 1
            if DiesMidBatch.count == int(sys.argv[2]):
                os.kill(os.getpid(), signal.SIGKILL)
        return outcomes

site = config.load(sys.argv[1])
with Store(site.database_url) as store:
    pipeline.send_digest(site, store, "weekly", DiesMidBatch(site.resolve(site.delivery.outbox)))
"""


def test_a_send_killed_mid_batch_is_finished_without_resending(site: Site) -> None:
    edit_config(site, batch_size=2)
    site.cli("gather")
    site.cli("subscribers", "import", "subscribers.csv", "--digest", "weekly")
    order = sorted(ids(site), key=ids(site).__getitem__)

    # The process is killed after handing over the 3rd message, in the middle of batch 2.
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_MID_BATCH, str(site.config_path), "3"],
        cwd=site.root,
        capture_output=True,
        timeout=60,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    before = outbox(site)
    assert len(before) == 3
    assert statuses(site) == {
        order[0]: Delivery.SENT,
        order[1]: Delivery.SENT,
        order[2]: Delivery.SENDING,
        order[3]: Delivery.SENDING,
        order[4]: Delivery.QUEUED,  # planned for the issue, not reached yet
        order[5]: Delivery.QUEUED,
    }

    # Its claim names its host and process: a rerun here sees it is gone and takes over.
    result = site.cli("digest", "send", "weekly")
    assert "2 sent, 0 failed" in result.output
    assert "took over from a sender that stopped" in result.output
    assert "2 left unknown by an interrupted send (not resent)" in result.output
    assert "(complete)" in result.output

    after = outbox(site)
    assert {name: after[name] for name in before} == before  # none of the first three again
    assert set(inbox(site)) == set(order) - {order[3]}  # the 4th may have gone: not resent
    status = site.cli("digest", "status", "weekly").output
    assert re.search(
        r"#1 .* complete .*\n    6 subscribers: 4 accepted, 0 pending, 0 failed, 2 unknown", status
    )
    assert "2 unknown: the sending process stopped before the transport answered" in status


def test_a_claim_held_by_a_live_process_is_respected_until_it_dies(site: Site) -> None:
    site.cli("gather")
    site.cli("subscribers", "import", "subscribers.csv", "--digest", "weekly")
    site.cli("digest", "preview", "weekly")  # nothing recorded yet
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with Store(site.config.database_url) as store, store.session() as session:
            config = site.config
            upcoming = digests.draft(config, session, config.digest("weekly"), datetime.now(UTC))
            assert upcoming is not None
            issue = digests.record(session, upcoming)
            issue.claimed_by = f"{socket.gethostname()[:60]}:{holder.pid}:abc"
            issue.claimed_until = datetime.now(UTC) + timedelta(minutes=10)
        busy = site.cli("digest", "send", "weekly", ok=False)
        assert f"being sent by process {holder.pid}" in busy.output
        assert outbox(site) == {}
    finally:
        holder.kill()
        holder.wait()
    result = site.cli("digest", "send", "weekly")
    assert "took over from a sender that stopped" in result.output
    assert len(outbox(site)) == 6


class FailsAfter(OutboxTransport):
    """Writes `good` messages, then raises as a broken transport would."""

    def __init__(self, folder: Path, good: int) -> None:
        super().__init__(folder)
        self.good = good

    def send(self, letter: Letter, recipients: Sequence[Recipient]) -> list[Outcome]:
        outcomes = []
        for recipient in recipients:
            if self.good == 0:
                raise RuntimeError("the provider's client library crashed")
            outcomes += super().send(letter, [recipient])
            self.good -= 1
        return outcomes


def test_a_transport_that_raises_mid_batch_leaves_the_batch_unknown(site: Site) -> None:
    edit_config(site, batch_size=2)
    site.cli("gather")
    site.cli("subscribers", "import", "subscribers.csv", "--digest", "weekly")
    config = site.config
    with Store(config.database_url) as store, pytest.raises(RuntimeError, match="crashed"):
        pipeline.send_digest(config, store, "weekly", FailsAfter(site.outbox, good=3))
    assert sorted(statuses(site).values()) == (
        [Delivery.QUEUED] * 2 + [Delivery.SENT] * 2 + [Delivery.UNKNOWN] * 2
    )
    first = outbox(site)

    result = site.cli("digest", "send", "weekly")
    assert "2 sent, 0 failed" in result.output and "(complete)" in result.output
    after = outbox(site)
    assert {name: after[name] for name in first} == first
    assert len(after) == 5
    status = site.cli("digest", "status", "weekly").output
    assert (
        "4 accepted, 0 pending, 0 failed, 2 unknown" in status
        and "the provider's client library crashed" in status
    )


class SecondSenderMeanwhile(OutboxTransport):
    """Runs `syndicate digest send` again while this send holds the issue."""

    def __init__(self, site: Site) -> None:
        super().__init__(site.outbox)
        self.site = site
        self.second: str | None = None

    def send(self, letter: Letter, recipients: Sequence[Recipient]) -> list[Outcome]:
        if self.second is None:
            self.second = self.site.cli("digest", "send", "weekly", ok=False).output
        return super().send(letter, recipients)


def test_a_second_send_while_one_is_running_is_refused_clearly(newsletter: Site) -> None:
    transport = SecondSenderMeanwhile(newsletter)
    config = newsletter.config
    with Store(config.database_url) as store:
        outcome = pipeline.send_digest(config, store, "weekly", transport)

    assert transport.second is not None
    assert "issue 1 of weekly is being sent by process" in transport.second
    assert "try again" in transport.second
    assert outcome.report is not None and outcome.report.sent == 6 and outcome.report.complete
    assert {address: len(m) for address, m in inbox(newsletter).items()} == dict.fromkeys(
        CSV_PEOPLE, 1
    )
    assert "nothing new" in newsletter.cli("digest", "send", "weekly").output
