"""Sending through SendGrid: the v3 mail/send requests the real `sendgrid` library makes,
checked and recorded by a stand-in for SendGrid's API on loopback (tests/sendgrid_standin.py,
its own process), through rate limits, server errors, dropped connections, refused
requests, a sender killed with SIGKILL mid-send, and two senders at once."""

from __future__ import annotations

import email
import email.policy
import html
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import func, insert, select

from syndicate import digest as digests
from syndicate import pipeline
from syndicate.delivery import OutboxTransport, open_transport
from syndicate.delivery.ledger import letter_for, recipient_for
from syndicate.digest.render import RenderedIssue
from syndicate.store import Delivery, DigestIssue, Store, Subscriber, Subscription
from syndicate.tokens import read_token
from tests.conftest import EXAMPLE_READERS, ROOT, SECRET, Site, make_site
from tests.sendgrid_standin import StandIn

API_KEY = "SG.test-key.not-a-real-one"
MAILTO = "unsubscribe@reelnotes.example.com"
CATEGORIES = ["digest", "weekly"]
# Read from the CSV, with one name that would break HTML if it were not escaped.
TRICKY_NAME = 'Tom <b>&</b> "Jerry"'
CSV_PEOPLE = {**EXAMPLE_READERS, "tom@example.com": TRICKY_NAME}
SYNDICATE = ROOT / ".venv" / "bin" / "syndicate"


# --- helpers ---------------------------------------------------------------------------


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[StandIn]:
    server = StandIn(tmp_path, keep_requests=True)
    yield server
    server.stop()


def use_sendgrid(site: Site, base_url: str, batch_size: int | None = None, **sendgrid: Any) -> None:
    """Point the site's delivery at SendGrid (the stand-in), with quick retries."""
    data = yaml.safe_load(site.config_path.read_text(encoding="utf-8"))
    data["digests"][0]["subject"] = "{{ digest.title }} for {{ subscriber.name }}"
    data["delivery"] = {
        "transport": "sendgrid",
        "from": data["delivery"]["from"],
        "unsubscribe_mailto": MAILTO,
        "sendgrid": {
            "base_url": base_url,
            "categories": CATEGORIES,
            "retries": 2,
            "max_backoff": 0.05,
            "timeout": 10,
            **sendgrid,
        },
    }
    if batch_size is not None:
        data["delivery"]["batch_size"] = batch_size
    site.config_path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")


@pytest.fixture
def newsletter(site: Site, standin: StandIn, monkeypatch: pytest.MonkeyPatch) -> Site:
    """The example site sending through the stand-in, reviews gathered, seven subscribers."""
    monkeypatch.setenv("SENDGRID_API_KEY", API_KEY)
    use_sendgrid(site, standin.url)
    with (site.root / "subscribers.csv").open("a", encoding="utf-8") as csv:
        csv.write('tom@example.com,"Tom <b>&</b> ""Jerry""",weekly\n')
    site.cli("gather")
    site.cli("subscribers", "import", "subscribers.csv", "--digest", "weekly")
    return site


def add_readers(site: Site, count: int, digest: str = "weekly") -> list[str]:
    """`count` active subscribers of `digest`, inserted in bulk; their addresses, in id order."""
    joined = datetime.now(UTC) - timedelta(days=1)
    addresses = [f"reader{n:06d}@example.com" for n in range(count)]
    with Store(site.config.database_url) as store, store.session() as session:
        session.execute(
            insert(Subscriber.__table__),
            [
                {
                    "email": address,
                    "name": f"Reader {n}",
                    "status": Subscriber.ACTIVE,
                    "status_reason": "",
                    "created_at": joined,
                    "status_changed_at": joined,
                }
                for n, address in enumerate(addresses)
            ],
        )
        ids = session.scalars(
            select(Subscriber.id).where(Subscriber.email.like("reader%@example.com"))
        ).all()
        session.execute(
            insert(Subscription.__table__),
            [{"subscriber_id": i, "digest": digest, "created_at": joined} for i in ids],
        )
    return addresses


def subscriber_ids(site: Site) -> dict[str, int]:
    with Store(site.config.database_url) as store, store.session() as session:
        return dict(session.execute(select(Subscriber.email, Subscriber.id)).all())  # type: ignore[arg-type]


def statuses(site: Site, number: int = 1) -> dict[str, str]:
    """Each subscriber's delivery status for issue `number` of the weekly digest."""
    with Store(site.config.database_url) as store, store.session() as session:
        rows = session.execute(
            select(Subscriber.email, Delivery.status)
            .join(Delivery, Delivery.subscriber_id == Subscriber.id)
            .join(DigestIssue, DigestIssue.id == Delivery.issue_id)
            .where(DigestIssue.digest == "weekly", DigestIssue.number == number)
        )
        return dict(rows.all())  # type: ignore[arg-type]


def personalizations(standin: StandIn) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Each recorded personalization by its address, with the request body it came in."""
    found: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for body in standin.requests():
        for person in body["personalizations"]:
            address = person["to"][0]["email"]
            assert address not in found, f"{address} was sent twice"
            found[address] = (person, body)
    return found


def substitute(template: str, substitutions: dict[str, str]) -> str:
    """What SendGrid does with a personalization's substitutions: plain text replacement."""
    for key, value in substitutions.items():
        template = template.replace(key, value)
    return template


def content(body: dict[str, Any], kind: str) -> str:
    values = [c["value"] for c in body["content"] if c["type"] == kind]
    assert len(values) == 1, f"{kind}: {values}"
    return values[0]


def body_of(message: EmailMessage, kind: str) -> str:
    """A MIME part's text, without the final newline MIME adds to a part that lacks one."""
    part = message.get_body((kind,))
    assert part is not None
    text = part.get_content()
    assert isinstance(text, str)
    return text.removesuffix("\n")


def wait_for(condition: Callable[[], bool], timeout: float = 20, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def syndicate(site: Site, *args: str) -> subprocess.Popen[str]:
    """`syndicate ARGS` as its own process, the way a terminal or cron runs it."""
    return subprocess.Popen(
        [str(SYNDICATE), "--config", str(site.config_path), *args],
        cwd=site.root,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


# --- the requests ------------------------------------------------------------------------


def test_each_subscriber_is_one_personalization_of_a_batch_request(
    newsletter: Site, standin: StandIn
) -> None:
    readers = add_readers(newsletter, 2_100)
    result = newsletter.cli("digest", "send", "weekly")
    assert "2107 sent, 0 failed" in result.output

    bodies = standin.requests()
    sizes = sorted(len(b["personalizations"]) for b in bodies)
    assert sizes == [107, 1000, 1000]  # default batch: SendGrid's 1,000, no more
    assert standin.stats()["rejected"] == []
    people = personalizations(standin)
    assert set(people) == set(CSV_PEOPLE) | set(readers)
    ids = subscriber_ids(newsletter)
    with Store(newsletter.config.database_url) as store, store.session() as session:
        issue_id = session.scalar(select(DigestIssue.id))

    # The issue is compiled once: every request carries the same text and HTML, text first.
    first = bodies[0]
    for body in bodies:
        assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]
        assert body["content"] == first["content"]
        assert body["subject"] == first["subject"]
        assert body["from"] == {"email": "newsletter@reelnotes.example.com", "name": "Reel Notes"}
        assert body["custom_args"] == {"digest": "weekly", "issue_id": str(issue_id)}
        assert body["categories"] == CATEGORIES
        assert not body.get("mail_settings", {}).get("sandbox_mode", {}).get("enable")
    placeholders = set(re.findall(r"%%\w+%%", first["subject"] + str(first["content"])))
    assert placeholders, "no per-subscriber values in the compiled issue"

    for address, (person, _) in people.items():
        subscriber_id = ids[address]
        assert person["custom_args"] == {"subscriber_id": str(subscriber_id)}
        # Every placeholder of the issue has this subscriber's value, and only those.
        subs = person["substitutions"]
        assert set(subs) == placeholders
        name = CSV_PEOPLE[address] if address in CSV_PEOPLE else f"Reader {int(address[6:12])}"
        values = set(subs.values())
        assert (name or "reader") in values  # plain text and subject: as written
        assert html.escape(name or "reader") in values  # HTML: escaped
        if name == TRICKY_NAME:
            html_values = {subs[k] for k in subs if k in content(first, "text/html")}
            assert TRICKY_NAME not in html_values

        # Links sign this subscriber's id, for their purpose only.
        links = {
            purpose: [v for v in values if f"reelnotes.example.com/{purpose}/" in v]
            for purpose in ("unsubscribe", "preferences")
        }
        for purpose, found in links.items():
            assert len(found) == 1, (purpose, subs)
            token = found[0].rsplit("/", 1)[1]
            assert read_token(SECRET, purpose, token) == subscriber_id  # type: ignore[arg-type]

        # One-click unsubscribe (RFC 8058), per subscriber, with the mailto fallback.
        unsubscribe_url = links["unsubscribe"][0]
        assert person["headers"] == {
            "List-Unsubscribe": f"<{unsubscribe_url}>, <mailto:{MAILTO}?subject=unsubscribe>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        }
        assert person["to"][0].get("name", "") == name

    # The stand-in traced every address back through custom_args, as webhook events are.
    traced = standin.custom_args()
    assert traced["ada.whitfield@example.com"] == {
        "digest": "weekly",
        "issue_id": str(issue_id),
        "subscriber_id": str(ids["ada.whitfield@example.com"]),
    }


@pytest.mark.parametrize("suffix", ["/", "/v3", "/v3/"])
def test_a_base_url_with_a_path_or_slash_reaches_the_api(
    newsletter: Site, standin: StandIn, suffix: str
) -> None:
    """Copied from SendGrid's docs, the EU host is often written with a slash or /v3."""
    use_sendgrid(newsletter, standin.url + suffix, sandbox=True)
    result = newsletter.cli("digest", "send", "weekly")
    assert "7 sent, 0 failed" in result.output
    (body,) = standin.requests()
    assert body["mail_settings"]["sandbox_mode"]["enable"] is True
    assert set(standin.recipients()) == set(CSV_PEOPLE)


def test_substituting_each_personalization_gives_what_the_outbox_would_send(
    newsletter: Site, standin: StandIn, tmp_path: Path
) -> None:
    """The per-subscriber values are right: SendGrid's substitution of them into the one
    compiled body yields, character for character, the message the outbox transport builds for that
    subscriber from the same issue."""
    newsletter.cli("digest", "send", "weekly")
    people = personalizations(standin)
    assert set(people) == set(CSV_PEOPLE)

    config = newsletter.config
    outbox = OutboxTransport(tmp_path / "outbox")
    with Store(config.database_url) as store, store.session() as session:
        issue = session.scalars(select(DigestIssue)).one()
        rendered = RenderedIssue(issue.subject, issue.preheader, issue.html, issue.text)
        letter = letter_for(config, "weekly", issue.number, rendered, issue.id)
        subscribers = session.scalars(select(Subscriber)).all()
        recipients = [recipient_for(config, s, SECRET, "reader") for s in subscribers]
    assert all(o.ok for o in outbox.send(letter, recipients))

    for recipient in recipients:
        eml = outbox.path_for(letter, recipient).read_bytes()
        expected = email.message_from_bytes(eml, policy=email.policy.default)
        assert isinstance(expected, EmailMessage)
        person, body = people[recipient.email]
        subs = person["substitutions"]
        assert substitute(body["subject"], subs) == expected["Subject"]
        html_part = substitute(content(body, "text/html"), subs)
        assert html_part.removesuffix("\n") == body_of(expected, "html")
        text_part = substitute(content(body, "text/plain"), subs)
        assert text_part.removesuffix("\n") == body_of(expected, "plain")
        (to,) = expected["To"].addresses
        assert person["to"] == [
            {"email": to.addr_spec, "name": to.display_name}
            if to.display_name
            else {"email": to.addr_spec}
        ]
        unfolded = " ".join(str(expected["List-Unsubscribe"]).split())
        assert person["headers"]["List-Unsubscribe"] == unfolded

    tom = people["tom@example.com"][0]["substitutions"]
    page = substitute(content(people["tom@example.com"][1], "text/html"), tom)
    assert "Hello Tom &lt;b&gt;&amp;&lt;/b&gt; &quot;Jerry&quot;," in page
    text = substitute(content(people["tom@example.com"][1], "text/plain"), tom)
    assert f"Hello {TRICKY_NAME}," in text


# --- what SendGrid answers ------------------------------------------------------------------


def test_a_429_waits_until_the_rate_limit_resets_then_sends(
    newsletter: Site, standin: StandIn
) -> None:
    standin.add_faults({"status": 429, "reset_in": 0.3})
    result = newsletter.cli("digest", "send", "weekly")
    assert "7 sent, 0 failed" in result.output and "(complete)" in result.output

    limited, accepted = standin.calls()
    assert (limited["answer"], accepted["answer"]) == ("429", "202")
    reset = int(limited["x-ratelimit-reset"])  # epoch seconds, as SendGrid sends it
    assert reset <= accepted["arrived"] < reset + 1.0  # not before, and not long after
    assert standin.recipients() == dict.fromkeys(CSV_PEOPLE, 1)


@pytest.mark.parametrize(
    ("faults", "said"),
    [
        ([{"status": 500}], "500 stand-in fault 500"),
        ([{"status": 503}, {"status": 502}], "502 stand-in fault 502"),
        ([{"drop": True}], "RemoteDisconnected"),
    ],
    ids=["500", "503-then-502", "dropped-connection"],
)
def test_server_errors_and_dropped_connections_are_retried(
    newsletter: Site, standin: StandIn, faults: list[dict[str, Any]], said: str
) -> None:
    standin.add_faults(*faults)
    result = newsletter.cli("digest", "send", "weekly")
    assert "7 sent, 0 failed" in result.output and "(complete)" in result.output
    assert said in result.output and "trying again" in result.output
    answers = [c["answer"] for c in standin.calls()]
    assert answers == [str(f.get("status", "drop")) for f in faults] + ["202"]
    assert standin.recipients() == dict.fromkeys(CSV_PEOPLE, 1)
    assert set(statuses(newsletter).values()) == {Delivery.SENT}


def test_a_refused_batch_fails_with_sendgrids_words_and_the_rest_go_out(
    newsletter: Site, standin: StandIn
) -> None:
    use_sendgrid(newsletter, standin.url, batch_size=3, concurrency=1)
    why = "The from address does not match a verified Sender Identity."
    standin.add_faults({"status": 400, "message": why})
    result = newsletter.cli("digest", "send", "weekly", ok=False)
    assert "4 sent, 3 failed (complete)" in result.output
    assert f"ada.whitfield@example.com: SendGrid refused the request (400): {why}" in result.output

    # The first batch (the three oldest subscribers) failed, not retried; the others went.
    assert [c["answer"] for c in standin.calls()] == ["400", "202", "202"]
    first = ["ada.whitfield@example.com", "zoe.martin@example.org", "kwame.boateng@example.net"]
    assert set(standin.recipients()) == set(CSV_PEOPLE) - set(first)
    assert statuses(newsletter) == {
        a: Delivery.FAILED if a in first else Delivery.SENT for a in CSV_PEOPLE
    }
    status = newsletter.cli("digest", "status", "weekly").output
    assert "#1 " in status and "7 subscribers: 4 accepted, 0 pending, 3 failed" in status, status
    assert f"3 failed: SendGrid refused the request (400): {why}" in status
    # Failed for good: sending again sends nothing more.
    again = newsletter.cli("digest", "send", "weekly")
    assert "nothing new" in again.output
    assert len(standin.calls()) == 3


def test_a_batch_still_failing_after_its_retries_is_sent_by_the_next_run(
    newsletter: Site, standin: StandIn
) -> None:
    standin.add_faults(*[{"status": 503}] * 3)  # the first try and both retries
    result = newsletter.cli("digest", "send", "weekly", ok=None)
    assert "0 sent, 0 failed, 7 to retry" in result.output
    assert "(complete)" not in result.output
    assert standin.recipients() == {}
    status = newsletter.cli("digest", "status", "weekly").output
    assert "7 subscribers: 0 accepted, 7 pending, 0 failed" in status
    assert "7 to retry: SendGrid answered 503: stand-in fault 503" in status

    rerun = newsletter.cli("digest", "send", "weekly")
    assert "7 sent, 0 failed (complete)" in rerun.output
    assert [c["answer"] for c in standin.calls()] == ["503"] * 3 + ["202"]
    assert standin.recipients() == dict.fromkeys(CSV_PEOPLE, 1)


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


@pytest.mark.parametrize("trouble", ["unreachable", "401", "403"])
def test_a_wrong_address_or_key_stops_the_send_without_failing_anyone(
    newsletter: Site, standin: StandIn, trouble: str
) -> None:
    """Every batch would meet the same answer: the send stops, nobody is marked failed,
    and once it is fixed the next run sends to everyone."""
    if trouble == "unreachable":
        use_sendgrid(newsletter, closed_port_url())
        hint = "SendGrid cannot be reached at http://127.0.0.1:"
    else:
        standin.add_faults({"status": int(trouble), "message": "access forbidden"})
        hint = f"SendGrid refused the request ({trouble}: access forbidden); check"
    result = newsletter.cli("digest", "send", "weekly", ok=False)
    assert hint in result.output
    assert "Traceback" not in result.output
    # Nothing recorded as sent, failed or retried: the readers are still queued.
    assert set(statuses(newsletter).values()) == {Delivery.QUEUED}

    use_sendgrid(newsletter, standin.url)
    rerun = newsletter.cli("digest", "send", "weekly")
    assert "7 sent, 0 failed (complete)" in rerun.output
    assert standin.recipients() == dict.fromkeys(CSV_PEOPLE, 1)


@pytest.mark.parametrize("variable", [None, "REELNOTES_SENDGRID_KEY"])
def test_a_missing_api_key_is_named_and_nothing_is_recorded(
    newsletter: Site, standin: StandIn, monkeypatch: pytest.MonkeyPatch, variable: str | None
) -> None:
    if variable:
        use_sendgrid(newsletter, standin.url, api_key_env=variable)  # the old one stays set
    else:
        monkeypatch.delenv("SENDGRID_API_KEY")
    result = newsletter.cli("digest", "send", "weekly", ok=False)
    assert f"the environment variable {variable or 'SENDGRID_API_KEY'} is not set" in result.output
    assert "SendGrid API key" in result.output
    assert standin.stats()["requests"] == 0
    with Store(newsletter.config.database_url) as store, store.session() as session:
        assert session.scalar(select(func.count()).select_from(Delivery)) == 0


# --- exactly once ------------------------------------------------------------------------


def test_a_send_killed_with_sigkill_is_finished_by_a_rerun_exactly_once(
    newsletter: Site, standin: StandIn
) -> None:
    """20,000 subscribers, 1,000 a request, 4 requests at once; the sender is killed -9.

    The window: a batch is recorded as sending (committed) before its POST and as sent
    after SendGrid's 202. A sender killed between the two leaves its batches in flight
    recorded as sending, and the rerun marks them unknown and does not resend them: an
    at-most-once window of at most concurrency x batch size = 4 x 1,000 subscribers, who
    may or may not have it. Everyone else gets the issue exactly once.

    Here the kill is timed to land while all four requests in flight are inside the
    stand-in (bodies read, answers not yet written): SendGrid has accepted those batches,
    so in practice everyone, the unknown 4,000 included, gets the issue exactly once.
    """
    everyone = set(CSV_PEOPLE) | set(add_readers(newsletter, 20_000 - len(CSV_PEOPLE)))
    use_sendgrid(newsletter, standin.url, concurrency=4)
    # The first four requests are answered at once; the next four are held in the
    # stand-in for a few seconds (then accepted): the kill lands while they are held.
    standin.add_faults(*[{}] * 4, *[{"delay": 3}] * 4)

    def four_requests_held() -> bool:
        stats = standin.stats()
        return stats["accepted_requests"] == 4 and stats["in_flight"] == 4

    sender = syndicate(newsletter, "digest", "send", "weekly")
    try:
        wait_for(four_requests_held, what="four requests held inside the stand-in")
        os.kill(sender.pid, signal.SIGKILL)
    finally:
        sender.kill()
        output, _ = sender.communicate(timeout=30)
    assert sender.returncode == -signal.SIGKILL, output
    wait_for(lambda: standin.stats()["in_flight"] == 0, what="the stand-in to finish")
    first_run = standin.recipients()
    assert len(first_run) == 8_000
    assert set(statuses(newsletter).values()) <= {Delivery.SENT, Delivery.SENDING, Delivery.QUEUED}

    # Before the rerun, the status tells the editor what is left and what to do.
    interrupted = newsletter.cli("digest", "status", "weekly").output
    assert "20000 subscribers: 4000 accepted, 16000 pending, 0 failed" in interrupted
    assert "pending: 12000 not reached yet, 4000 in a batch being sent or interrupted" in (
        interrupted
    )
    assert f"the sender (process {sender.pid}) stopped; `syndicate digest send`" in interrupted

    rerun = newsletter.cli("digest", "send", "weekly")
    assert "took over from a sender that stopped" in rerun.output
    assert "(complete)" in rerun.output
    ledger = statuses(newsletter)
    unknown = {address for address, status in ledger.items() if status == Delivery.UNKNOWN}
    sent = {address for address, status in ledger.items() if status == Delivery.SENT}
    assert sent | unknown == everyone
    assert f"{len(unknown)} left unknown by an interrupted send (not resent)" in rerun.output

    seen = standin.recipients()
    assert standin.stats()["duplicates"] == 0
    assert max(seen.values()) == 1  # nobody twice
    assert sent <= set(seen)  # everyone recorded as sent was accepted
    assert set(seen) - set(first_run) == everyone - set(first_run) - unknown  # the rest, once
    assert 0 < len(unknown) <= 4 * 1000  # the window: the batches in flight at the kill
    # The kill landed inside the stand-in: the four batches in flight were accepted.
    assert len(unknown) == 4_000 and unknown <= set(first_run)
    assert set(seen) == everyone
    status = newsletter.cli("digest", "status", "weekly").output
    assert "20000 subscribers: 16000 accepted, 0 pending, 0 failed, 4000 unknown" in status


@pytest.fixture
def db_newsletter(
    tmp_path: Path,
    database_url: str,
    secret_env: str,
    standin: StandIn,
    monkeypatch: pytest.MonkeyPatch,
) -> Site:
    """The newsletter on SQLite or on a throwaway PostgreSQL database."""
    monkeypatch.setenv("SENDGRID_API_KEY", API_KEY)
    site = make_site(tmp_path / "site", database_url=database_url)
    monkeypatch.chdir(site.root)
    use_sendgrid(site, standin.url, concurrency=2)
    site.cli("gather")
    site.cli("subscribers", "import", "subscribers.csv", "--digest", "weekly")
    return site


def test_two_senders_started_together_send_each_subscriber_once(
    db_newsletter: Site, standin: StandIn
) -> None:
    """Two terminals (or the scheduler and a person) run `digest send` at the same moment:
    one sends, the other says who is sending and stops; nobody gets the issue twice."""
    everyone = set(CSV_PEOPLE) - {"tom@example.com"} | set(add_readers(db_newsletter, 3_000))
    standin.add_faults(*[{"delay": 1.0}] * 4)  # the first requests linger: the runs overlap
    senders = [syndicate(db_newsletter, "digest", "send", "weekly") for _ in range(2)]
    outputs = [sender.communicate(timeout=120)[0] for sender in senders]

    finished = [out for out in outputs if "(complete)" in out]
    refused = [out for out in outputs if "is being sent by process" in out]
    assert len(finished) == 1 and len(refused) == 1, outputs
    assert sorted(sender.returncode != 0 for sender in senders) == [False, True]
    assert "Traceback" not in refused[0]
    seen = standin.recipients()
    assert set(seen) == everyone and max(seen.values()) == 1
    assert standin.stats()["duplicates"] == 0


def test_a_reader_who_unsubscribes_during_a_send_is_skipped_from_the_next_batch(
    newsletter: Site, standin: StandIn
) -> None:
    readers = add_readers(newsletter, 3_000)
    use_sendgrid(newsletter, standin.url, concurrency=1)
    leaving = readers[-1]  # in the last batch
    standin.add_faults({"delay": 1.5})  # the first batch is held while the reader leaves
    sender = syndicate(newsletter, "digest", "send", "weekly")
    try:
        wait_for(lambda: standin.stats()["in_flight"] == 1, what="the first batch to arrive")
        newsletter.cli("subscribers", "remove", leaving)
    finally:
        output, _ = sender.communicate(timeout=60)
    assert sender.returncode == 0, output
    seen = standin.recipients()
    assert leaving not in seen
    assert len(seen) == len(CSV_PEOPLE) + 3_000 - 1 and max(seen.values()) == 1


def test_a_sender_that_loses_the_race_to_record_an_issue_sends_that_issue(
    db_newsletter: Site, standin: StandIn
) -> None:
    """The other process plans and records issue 1 while this one starts its send: this
    one waits for the digest's lock, then finds issue 1 (its readers already queued), and
    sends it once instead of planning a second issue for the same readers."""
    config = db_newsletter.config
    now = datetime.now(UTC)
    with Store(config.database_url) as store, store.session() as other:
        digests.lock_digest(other, "weekly", "the other process")
        planned = digests.plan(config, other, config.digest("weekly"), now)
        digests.record_plan(config, other, config.digest("weekly"), planned)

        outcomes: list[pipeline.DigestOutcome] = []

        def send() -> None:
            with Store(config.database_url) as mine:
                transport = open_transport(config)
                outcomes.append(pipeline.send_digest(config, mine, "weekly", transport, now))

        racer = threading.Thread(target=send)
        racer.start()
        time.sleep(0.5)  # the racer drafts issue 1 too, and waits on the row
    racer.join(timeout=60)  # the other session committed on leaving the block

    assert len(outcomes) == 1 and outcomes[0].report is not None
    assert outcomes[0].report.number == 1 and outcomes[0].report.complete
    assert set(standin.recipients()) == set(EXAMPLE_READERS)
    with Store(config.database_url) as store, store.session() as session:
        assert session.scalar(select(func.count()).select_from(DigestIssue)) == 1
