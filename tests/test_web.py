"""The reader's web side over HTTP: every route, the way a browser or a mail client uses it.

Each test drives the Starlette app with httpx (Starlette's TestClient) against a real
site folder and database; emails the app sends land in the site's outbox and are read
back with Python's email package, as a reader's mail client would.
"""

from __future__ import annotations

import email
import email.policy
import html
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from email.message import EmailMessage
from urllib.parse import urlsplit

import httpx
import pytest
from itsdangerous import TimestampSigner
from sqlalchemy import select
from starlette.testclient import TestClient

from syndicate.config import MissingSecret
from syndicate.store import DigestIssue, Review, Store, Subscriber
from syndicate.tokens import make_token
from syndicate.web import create_app
from syndicate.web.ratelimit import client_key
from tests.conftest import EXAMPLE_READERS, ROOT, SECRET, Site

ADA = "ada.whitfield@example.com"
SYNDICATE = ROOT / ".venv" / "bin" / "syndicate"


@pytest.fixture
def client(site: Site) -> Iterator[TestClient]:
    site.cli("gather")
    site.cli("feeds")
    with TestClient(create_app(site.config), base_url="https://reelnotes.example.com") as http:
        yield http


def messages(site: Site, prefix: str = "confirm-") -> list[EmailMessage]:
    found = []
    for path in sorted(site.outbox.glob(f"{prefix}*.eml"), key=lambda p: p.stat().st_mtime_ns):
        found.append(email.message_from_bytes(path.read_bytes(), policy=email.policy.default))
    return found  # type: ignore[return-value]


def link(message: EmailMessage, kind: str) -> str:
    """The path of the first `kind` link (confirm, unsubscribe, ...) in the text part."""
    part = message.get_body(("plain",))
    assert part is not None
    found = re.search(rf"https?://\S+/{kind}/\S+", part.get_content())
    assert found, f"no {kind} link in:\n{part.get_content()}"
    return urlsplit(found.group(0)).path


def reader(site: Site, address: str) -> Subscriber | None:
    with Store(site.config.database_url) as store, store.session() as session:
        return session.scalars(select(Subscriber).where(Subscriber.email == address)).first()


def sign_up(client: TestClient, address: str, name: str = "", digest: str = "weekly") -> str:
    response = client.post("/subscribe", data={"email": address, "name": name, "digest": digest})
    assert response.status_code == 200, response.text
    return response.text


# --- subscribe and confirm ----------------------------------------------------------------


def test_the_form_lists_the_digests_and_a_sign_up_waits_for_confirmation(
    site: Site, client: TestClient
) -> None:
    form = client.get("/subscribe")
    assert form.status_code == 200 and "text/html" in form.headers["content-type"]
    assert 'name="email"' in form.text and "The Week in Film" in form.text

    page = sign_up(client, "new.reader@example.org", "New Reader")
    assert "Check your inbox" in page
    pending = reader(site, "new.reader@example.org")
    assert pending is not None and pending.status == Subscriber.PENDING
    assert pending.digests == []  # nothing is sent before the owner confirms

    (confirmation,) = messages(site)
    assert confirmation["To"].addresses[0].addr_spec == "new.reader@example.org"
    assert "Confirm your subscription" in str(confirmation["Subject"])
    assert "List-Unsubscribe" not in confirmation  # not a bulk mailing

    path = link(confirmation, "confirm")
    shown = client.get(path)  # what a mail scanner fetching the link would do
    assert shown.status_code == 200 and "Confirm my subscription" in shown.text
    assert reader(site, "new.reader@example.org").status == Subscriber.PENDING  # type: ignore[union-attr]

    done = client.post(path)
    assert done.status_code == 200 and "You are subscribed" in done.text
    confirmed = reader(site, "new.reader@example.org")
    assert confirmed is not None and confirmed.status == Subscriber.ACTIVE
    assert confirmed.digests == ["weekly"]

    # Confirmed readers get the next issue.
    site.cli("run", "--once")
    issue = [m for m in messages(site, "weekly-") if "new.reader" in str(m["To"])]
    assert len(issue) == 1


def test_the_answer_is_the_same_whoever_the_address_belongs_to(
    site: Site, client: TestClient
) -> None:
    site.cli("subscribers", "import", "subscribers.csv")
    site.cli("subscribers", "add", "pending@example.org")
    site.cli("subscribers", "remove", "pending@example.org")
    sign_up(client, "waiting@example.org")  # pending

    pages = {
        address: sign_up(client, address).replace(address, "ADDRESS")
        for address in ["brand.new@example.org", "waiting@example.org", ADA, "pending@example.org"]
    }
    assert len(set(pages.values())) == 1, "the page must not tell who is on the list"
    # Ada stays exactly as she was until she follows the link.
    assert reader(site, ADA).status == Subscriber.ACTIVE  # type: ignore[union-attr]
    assert reader(site, "pending@example.org").status == Subscriber.REMOVED  # type: ignore[union-attr]
    # Every owner hears about it, except the address the editor removed: the form must
    # not mail it, nor bring it back.
    assert len(messages(site)) == 4


def test_a_bad_address_or_no_digest_shows_the_form_again_with_what_to_fix(
    site: Site, client: TestClient
) -> None:
    bad = client.post("/subscribe", data={"email": "not-an-address", "digest": "weekly"})
    assert bad.status_code == 400 and "not an email address" in bad.text
    assert 'value="not-an-address"' in bad.text  # what was typed is kept
    none = client.post("/subscribe", data={"email": "x@example.org"})
    assert none.status_code == 400 and "Choose at least one" in none.text
    unknown = client.post("/subscribe", data={"email": "x@example.org", "digest": "nosuch"})
    assert unknown.status_code == 400
    assert messages(site) == [] and reader(site, "x@example.org") is None


def test_sign_ups_are_limited_per_address_and_per_ip(site: Site, client: TestClient) -> None:
    for _ in range(3):
        sign_up(client, "flood@example.org")
    fourth = client.post("/subscribe", data={"email": "flood@example.org", "digest": "weekly"})
    assert fourth.status_code == 429 and "try again later" in fourth.text
    assert len(messages(site)) == 3

    for n in range(16):  # 20 an hour from one IP; 4 used above
        sign_up(client, f"someone{n}@example.org")
    over = client.post("/subscribe", data={"email": "last@example.org", "digest": "weekly"})
    assert over.status_code == 429


def test_forged_expired_and_cross_purpose_confirmation_links_are_refused(
    site: Site, client: TestClient
) -> None:
    sign_up(client, "new.reader@example.org")
    path = link(messages(site)[0], "confirm")
    token = path.rsplit("/", 1)[1]

    middle = len(path) - 5  # inside the signature (its last character carries spare bits)
    forged = client.post(path[:middle] + ("A" if path[middle] != "A" else "B") + path[middle + 1 :])
    assert forged.status_code == 400 and "not valid" in forged.text
    own_id, _, rest = token.partition(":")
    other = client.post(path.replace(token, f"{int(own_id) + 1}:{rest}"))
    assert other.status_code == 400  # the id changed, the signature did not
    unsubscribe_token = make_token(SECRET, "unsubscribe", 1)
    assert client.post(f"/confirm/{unsubscribe_token}").status_code == 400

    subscriber = reader(site, "new.reader@example.org")
    assert subscriber is not None

    class EightDaysAgo(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - 8 * 86400

    old = EightDaysAgo(SECRET, salt="syndicate.confirm").sign(f"{subscriber.id}:weekly")
    expired = client.post(f"/confirm/{old.decode()}")
    assert expired.status_code == 410 and "expired" in expired.text
    assert reader(site, "new.reader@example.org").status == Subscriber.PENDING  # type: ignore[union-attr]


# --- unsubscribe and preferences ------------------------------------------------------------


@pytest.fixture
def sent(site: Site, client: TestClient) -> EmailMessage:
    """Issue 1 sent to the example readers; Ada's copy."""
    site.cli("subscribers", "import", "subscribers.csv")
    site.cli("run", "--once")
    (ada,) = [m for m in messages(site, "weekly-") if ADA in str(m["To"])]
    return ada


def test_one_click_unsubscribe_works_without_a_cookie_or_a_page(
    site: Site, client: TestClient, sent: EmailMessage
) -> None:
    header = str(sent["List-Unsubscribe"])
    url = re.search(r"<(https://[^>]+)>", header)
    assert url and sent["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    path = urlsplit(url.group(1)).path

    answer = client.post(
        path,
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 200
    assert "set-cookie" not in answer.headers
    ada = reader(site, ADA)
    assert ada is not None and ada.status == Subscriber.UNSUBSCRIBED
    # Twice is fine: a mail client may retry.
    assert client.post(path, content=b"List-Unsubscribe=One-Click").status_code == 200

    site.write_review("late.md", "---\ntitle: A late one\n---\nBody.\n")
    site.cli("run", "--once")
    later = [m for m in messages(site, "weekly-0002") if ADA in str(m["To"])]
    assert later == [] and len(messages(site, "weekly-0002")) == 5


def test_the_unsubscribe_page_asks_first_then_unsubscribes_with_one_button(
    site: Site, client: TestClient, sent: EmailMessage
) -> None:
    path = link(sent, "unsubscribe")
    page = client.get(path)
    assert page.status_code == 200 and "<form" in page.text and ADA in page.text
    assert "/preferences/" in page.text
    assert reader(site, ADA).status == Subscriber.ACTIVE  # type: ignore[union-attr]

    action = re.search(r'<form method="post" action="([^"]+)"', page.text)
    assert action
    done = client.post(action.group(1))
    assert done.status_code == 200 and "You are unsubscribed" in done.text
    assert reader(site, ADA).status == Subscriber.UNSUBSCRIBED  # type: ignore[union-attr]


def test_preferences_change_digests_unsubscribe_from_all_and_come_back(
    site: Site, client: TestClient, sent: EmailMessage
) -> None:
    path = link(sent, "preferences")
    page = client.get(path)
    assert page.status_code == 200 and 'value="weekly" checked' in page.text
    assert "Ada Whitfield" in page.text

    renamed = client.post(path, data={"name": "Ada W.", "digest": "weekly", "action": "save"})
    assert renamed.status_code == 200 and "Saved." in renamed.text
    assert reader(site, ADA).name == "Ada W."  # type: ignore[union-attr]

    gone = client.post(path, data={"name": "Ada W.", "action": "unsubscribe"})
    assert gone.status_code == 200 and "You are unsubscribed" in gone.text
    assert reader(site, ADA).status == Subscriber.UNSUBSCRIBED  # type: ignore[union-attr]

    back = client.post(path, data={"name": "Ada W.", "digest": "weekly", "action": "save"})
    assert back.status_code == 200
    ada = reader(site, ADA)
    assert ada is not None and ada.status == Subscriber.ACTIVE and ada.digests == ["weekly"]


def test_tokens_are_bound_to_their_purpose_and_their_subscriber(
    site: Site, client: TestClient, sent: EmailMessage
) -> None:
    unsubscribe = link(sent, "unsubscribe")
    preferences = link(sent, "preferences")
    token = unsubscribe.rsplit("/", 1)[1]
    assert client.get(f"/preferences/{token}").status_code == 400  # wrong purpose
    assert client.post(f"/preferences/{token}", data={"action": "unsubscribe"}).status_code == 400
    altered = client.post(unsubscribe[:-6] + "xx" + unsubscribe[-4:])
    assert altered.status_code == 400 and "not valid" in altered.text
    ada_id, _, signature = token.partition(".")
    other = client.post(f"/unsubscribe/{int(ada_id) + 1}.{signature}")
    assert other.status_code == 400
    assert {s.status for s in all_readers(site)} == {Subscriber.ACTIVE}
    assert client.get(preferences).status_code == 200


def all_readers(site: Site) -> list[Subscriber]:
    with Store(site.config.database_url) as store, store.session() as session:
        return list(session.scalars(select(Subscriber)))


def test_names_are_escaped_in_pages_and_emails(site: Site, client: TestClient) -> None:
    name = '<script>alert("x")</script> & Co'
    sign_up(client, "tricky@example.org", name)
    (confirmation,) = messages(site)
    html_part = confirmation.get_body(("html",))
    assert html_part is not None
    assert "<script>" not in html_part.get_content()
    assert "&lt;script&gt;" in html_part.get_content()
    subscriber = reader(site, "tricky@example.org")
    assert subscriber is not None
    page = client.get(f"/preferences/{make_token(SECRET, 'preferences', subscriber.id)}")
    assert "<script>alert" not in page.text and "&lt;script&gt;" in page.text


# --- each reader's rhythm on the preferences page -----------------------------------------

# The weekly digest goes at each reader's hour (08:00 by default) and offers daily or
# weekly; "premieres" goes when the editor's schedule runs (no send_hour).
RHYTHM_DIGESTS = """\
    first_issue_since: 2026-01-01
    cadences: [daily, weekly]
    send_hour: 8
  - name: premieres
    title: Premieres <& more>
    cadence: instant
    cadences: [instant, weekly]
"""


@pytest.fixture
def rhythms(site: Site) -> Iterator[tuple[TestClient, str]]:
    """A client, and the preferences page of Ada, who reads both digests."""
    text = site.config_path.read_text(encoding="utf-8")
    site.write_config(text.replace("    first_issue_since: 2026-01-01\n", RHYTHM_DIGESTS))
    site.cli(
        "subscribers", "add", ADA, "--name", "Ada", "--digest", "weekly", "--digest", "premieres"
    )
    ada = reader(site, ADA)
    assert ada is not None
    with TestClient(create_app(site.config), base_url="https://reelnotes.example.com") as http:
        yield http, f"/preferences/{make_token(SECRET, 'preferences', ada.id)}"


def stored_rhythms(
    site: Site, address: str
) -> dict[str, tuple[str | None, int | None, str | None]]:
    subscriber = reader(site, address)
    assert subscriber is not None
    return {s.digest: (s.cadence, s.send_hour, s.timezone) for s in subscriber.subscriptions}


def selected(page: str, select_id: str) -> str:
    """The selected option's value (or text) in the <select id=select_id>."""
    found = re.search(rf'<select id="{select_id}".*?</select>', page, re.S)
    assert found, f"no select {select_id}"
    option = re.search(r'<option(?: value="([^"]*)")? selected>([^<]*)<', found.group(0))
    assert option, f"nothing selected in {select_id}"
    return option.group(1) if option.group(1) is not None else option.group(2)


def test_preferences_set_cadence_hour_and_zone_and_show_them_back(
    site: Site, rhythms: tuple[TestClient, str]
) -> None:
    client, path = rhythms
    page = client.get(path).text
    # Only the cadences each digest offers, in words; the usual hour and zone shown.
    assert page.count("Each review as it is published") == 1  # premieres only
    assert "A daily digest" in page and "A weekly digest (Fridays)" in page
    assert 'name="cadence-weekly" value="weekly" checked' in page
    assert 'name="cadence-premieres" value="instant" checked' in page
    assert "the usual time (08:00)" in page and "the usual zone (Europe/London)" in page
    assert '<option value="7">07:00</option>' in page
    assert "<option>America/New_York</option>" in page
    assert selected(page, "send_hour-weekly") == "" and selected(page, "timezone-weekly") == ""
    assert 'name="timezone-weekly" data-guess-zone' in page  # none stored: the script may guess

    saved = client.post(
        path,
        data={
            "name": "Ada",
            "digest": ["weekly", "premieres"],
            "cadence-weekly": "daily",
            "send_hour-weekly": "7",
            "timezone-weekly": "America/New_York",
            "cadence-premieres": "instant",
            "send_hour-premieres": "9",  # not offered: not the reader's to set
            "action": "save",
        },
    )
    assert saved.status_code == 200 and "Saved." in saved.text
    assert stored_rhythms(site, ADA) == {
        "weekly": ("daily", 7, "America/New_York"),
        "premieres": (None, None, None),  # the default, still the default
    }
    page = client.get(path).text
    assert 'name="cadence-weekly" value="daily" checked' in page
    assert selected(page, "send_hour-weekly") == "7"
    assert selected(page, "timezone-weekly") == "America/New_York"
    assert 'name="timezone-weekly" data-guess-zone' not in page
    listed = site.cli("subscribers", "list").stdout
    assert "premieres: instant; weekly: daily 07:00 America/New_York" in listed

    # "The usual time" and "the usual zone" go back to the digest's defaults.
    client.post(
        path,
        data={
            "name": "Ada",
            "digest": "weekly",
            "cadence-weekly": "daily",
            "send_hour-weekly": "",
            "timezone-weekly": "",
            "action": "save",
        },
    )
    assert stored_rhythms(site, ADA) == {"weekly": ("daily", None, None)}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("cadence-weekly", "instant", "cadence &#39;instant&#39; is not offered by digest weekly"),
        ("timezone-weekly", "Mars/<b>Olympus", "time zone &#39;Mars/&lt;b&gt;Olympus&#39; is not"),
        ("send_hour-weekly", "25", "send hour 25 is not an hour (0 to 23)"),
    ],
)
def test_preferences_refuse_a_cadence_not_offered_or_a_bogus_zone_and_change_nothing(
    site: Site, rhythms: tuple[TestClient, str], field: str, value: str, message: str
) -> None:
    client, path = rhythms
    form = {"name": "Renamed", "digest": "weekly", "cadence-weekly": "daily", "action": "save"}
    answer = client.post(path, data={**form, field: value})
    assert answer.status_code == 400
    assert message in answer.text and "Nothing was changed." in answer.text
    assert "<b>" not in answer.text
    assert 'role="alert"' in answer.text and "Saved." not in answer.text
    assert stored_rhythms(site, ADA) == {
        "weekly": (None, None, None),
        "premieres": (None, None, None),
    }
    ada = reader(site, ADA)
    assert ada is not None and ada.name == "Ada"


def test_a_digest_sent_on_the_editors_schedule_offers_no_hour_or_zone(
    site: Site, rhythms: tuple[TestClient, str]
) -> None:
    client, path = rhythms
    page = client.get(path).text
    assert "send_hour-premieres" not in page and "timezone-premieres" not in page
    assert "Sent when the editor sends each issue." in page
    assert "Premieres &lt;&amp; more&gt;" in page and "Premieres <&" not in page
    # Saving the page as shown stores no choice: every value stays the digest's default.
    shown = {
        "name": "Ada",
        "digest": ["weekly", "premieres"],
        "cadence-weekly": "weekly",
        "send_hour-weekly": "",
        "timezone-weekly": "",
        "cadence-premieres": "instant",
        "action": "save",
    }
    assert client.post(path, data=shown).status_code == 200
    assert stored_rhythms(site, ADA) == {
        "weekly": (None, None, None),
        "premieres": (None, None, None),
    }
    weekly = client.post(path, data={**shown, "cadence-premieres": "weekly"})
    assert weekly.status_code == 200
    assert stored_rhythms(site, ADA)["premieres"] == ("weekly", None, None)


# --- feeds and the rest -------------------------------------------------------------------


def test_feeds_are_served_with_their_types_validators_and_gzip(
    site: Site, client: TestClient
) -> None:
    rss = client.get("/feed.xml")
    assert rss.status_code == 200
    assert rss.headers["content-type"].startswith("application/rss+xml")
    atom = client.get("/atom.xml")
    assert atom.headers["content-type"].startswith("application/atom+xml")
    etag, modified = rss.headers["etag"], rss.headers["last-modified"]

    assert client.get("/feed.xml", headers={"If-None-Match": etag}).status_code == 304
    assert client.get("/feed.xml", headers={"If-Modified-Since": modified}).status_code == 304
    stale = "Mon, 01 Jan 2001 00:00:00 GMT"
    assert client.get("/feed.xml", headers={"If-Modified-Since": stale}).status_code == 200

    zipped = client.get("/feed.xml", headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert "accept-encoding" in zipped.headers["vary"].lower()
    assert zipped.content == rss.content  # httpx undoes the gzip

    # A rebuild with nothing new keeps the validators: readers' caches stay valid.
    site.cli("feeds")
    assert client.get("/feed.xml").headers["etag"] == etag
    assert client.get("/no-such-file.xml").status_code == 404


def test_the_sendgrid_webhook_is_mounted_and_refuses_unsigned_posts(client: TestClient) -> None:
    answer = client.post("/webhooks/sendgrid", content=b"[]")
    assert answer.status_code == 401 and "Signature" in answer.text


def test_the_app_does_not_start_without_its_signing_key(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SYNDICATE_SECRET")
    with pytest.raises(MissingSecret, match="SYNDICATE_SECRET"):
        create_app(site.config)
    result = site.cli("serve", ok=False)
    assert "SYNDICATE_SECRET" in result.output and "Traceback" not in result.output


def test_home_goes_to_the_sign_up_page_when_there_is_no_index(client: TestClient) -> None:
    home = client.get("/", follow_redirects=False)
    assert home.status_code == 302
    assert home.headers["location"].endswith(("/subscribe", "/archive/"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_syndicate_serve_answers_one_click_unsubscribes_over_real_http(
    site: Site, sent: EmailMessage
) -> None:
    """`syndicate serve` as its own process: a mail provider's one-click POST, for real."""
    port = free_port()
    server = subprocess.Popen(
        [str(SYNDICATE), "--config", str(site.config_path), "serve", "--port", str(port)],
        cwd=site.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "syndicate serve did not start"
                time.sleep(0.05)
        answer = httpx.post(
            base + link(sent, "unsubscribe"),
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert answer.status_code == 200
        assert reader(site, ADA).status == Subscriber.UNSUBSCRIBED  # type: ignore[union-attr]
        assert httpx.get(f"{base}/feed.xml").status_code == 200
    finally:
        server.send_signal(signal.SIGINT)
        output, _ = server.communicate(timeout=20)
    assert server.returncode == 0, output
    assert f"serving Reel Notes at http://127.0.0.1:{port}/" in output


def test_syndicate_run_serves_the_web_side_beside_the_scheduler_when_enabled(
    site: Site,
) -> None:
    port = free_port()
    text = site.config_path.read_text(encoding="utf-8")
    site.config_path.write_text(
        text + f"\nserver:\n  enabled: true\n  port: {port}\n", encoding="utf-8"
    )
    process = subprocess.Popen(
        [str(SYNDICATE), "--config", str(site.config_path), "run"],
        cwd=site.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/subscribe")
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and process.poll() is None, "no web side"
                time.sleep(0.05)
        assert page.status_code == 200 and "Subscribe" in page.text
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
    assert process.returncode == 0, output
    assert f"web side at http://127.0.0.1:{port}/" in output
    assert "scheduler running" in output and "Traceback" not in output


# --- what the review of the web side found -----------------------------------------------


def test_addresses_taken_off_by_mail_or_editors_are_not_mailed_or_brought_back(
    site: Site, client: TestClient
) -> None:
    site.cli("subscribers", "import", "subscribers.csv")
    site.cli("subscribers", "remove", "zoe.martin@example.org")
    with Store(site.config.database_url) as store, store.session() as session:
        readers_ = {s.email: s for s in session.scalars(select(Subscriber))}
        readers_[ADA].status = Subscriber.COMPLAINED
        readers_["lena.novak@example.net"].status = Subscriber.BOUNCED
    before = {s.email: s.status for s in all_readers(site)}

    pages = {
        a: sign_up(client, a).replace(a, "ADDRESS")
        for a in [ADA, "lena.novak@example.net", "zoe.martin@example.org", "new@example.org"]
    }
    assert len(set(pages.values())) == 1  # the same answer...
    assert [str(m["To"]) for m in messages(site)] == ["new@example.org"]  # ...one email
    after = {s.email: s.status for s in all_readers(site)}
    assert {a: after[a] for a in before} == before

    preferences = f"/preferences/{make_token(SECRET, 'preferences', reader(site, ADA).id)}"  # type: ignore[union-attr]
    refused = client.post(preferences, data={"digest": "weekly", "action": "save"})
    assert refused.status_code == 409 and "cannot be subscribed again" in refused.text
    assert reader(site, ADA).status == Subscriber.COMPLAINED  # type: ignore[union-attr]


def test_plus_addresses_share_their_mailbox_limit_and_forwarded_for_is_not_believed(
    site: Site, client: TestClient
) -> None:
    for n in range(3):
        sign_up(client, f"victim+{n}@example.org")
    assert (
        client.post(
            "/subscribe", data={"email": "victim+x@example.org", "digest": "weekly"}
        ).status_code
        == 429
    )
    # Claiming to be someone else in X-Forwarded-For does not buy more sign-ups: only a
    # configured proxy is believed (by uvicorn), and this client is none.
    codes = [
        client.post(
            "/subscribe",
            data={"email": f"spoof{n}@example.org", "digest": "weekly"},
            headers={"X-Forwarded-For": f"10.0.0.{n}"},
        ).status_code
        for n in range(20)
    ]
    assert codes.count(429) >= 4  # 20 an hour from one client; 4 used above


def test_ipv6_clients_are_limited_by_their_64_prefix() -> None:
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::9")
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("192.0.2.7") == "192.0.2.7"


def test_a_sign_up_when_mail_cannot_be_sent_is_a_clear_503(site: Site) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    text = site.config_path.read_text(encoding="utf-8").replace(
        "transport: outbox",
        f"transport: smtp\n  smtp: {{host: 127.0.0.1, port: {closed}, security: none}}",
    )
    site.config_path.write_text(text, encoding="utf-8")
    site.cli("gather")
    with TestClient(create_app(site.config)) as http:
        answer = http.post("/subscribe", data={"email": "x@example.org", "digest": "weekly"})
    assert answer.status_code == 503 and "try again later" in answer.text
    assert "Traceback" not in answer.text


def test_a_base_url_with_a_path_keeps_forms_and_redirects_under_it(site: Site) -> None:
    site.config_path.write_text(
        site.config_path.read_text(encoding="utf-8")
        + "\nserver:\n  base_url: https://reelnotes.example.com/films/\n",
        encoding="utf-8",
    )
    site.cli("subscribers", "import", "subscribers.csv")
    site.cli("run", "--once")
    # Behind a proxy that strips /films/, the app sees /unsubscribe/...; the browser does not.
    (ada,) = [m for m in messages(site, "weekly-") if ADA in str(m["To"])]
    path = link(ada, "unsubscribe")
    assert path.startswith("/films/unsubscribe/")
    with TestClient(create_app(site.config)) as http:
        page = http.get(path.removeprefix("/films"))
        assert f'action="{path}"' in page.text
        assert http.get("/", follow_redirects=False).headers["location"].startswith("/films/")


def test_validators_are_weak_and_vary_and_dotfiles_are_not_served(
    site: Site, client: TestClient
) -> None:
    plain = client.get("/feed.xml")
    assert plain.headers["etag"].startswith('W/"') and plain.headers["vary"] == "Accept-Encoding"
    big = client.get("/feed.xml", headers={"Accept-Encoding": "gzip"})
    assert big.headers["content-encoding"] == "gzip" and big.headers["vary"] == "Accept-Encoding"
    zipped = client.get(
        "/feed.xml", headers={"If-None-Match": plain.headers["etag"], "Accept-Encoding": "gzip"}
    )
    assert zipped.status_code == 304 and zipped.headers["vary"] == "Accept-Encoding"
    strong = plain.headers["etag"].removeprefix("W/")
    assert client.get("/feed.xml", headers={"If-None-Match": strong}).status_code == 304
    (site.public / ".git").mkdir()
    (site.public / ".git" / "config").write_text("[core]\n")
    assert client.get("/.git/config").status_code == 404


def test_serve_on_a_port_in_use_says_so(site: Site) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = site.cli("serve", "--port", str(port), ok=False)
    assert f"cannot listen on 127.0.0.1:{port}" in result.output
    assert "--port" in result.output


# --- drafts ---------------------------------------------------------------------------------


def test_an_editor_opens_a_draft_from_their_email_and_sees_the_issue_without_anyones_data(
    site: Site,
) -> None:
    text = site.config_path.read_text(encoding="utf-8")
    site.write_config(
        text.replace(
            "    first_issue_since: 2026-01-01\n",
            "    first_issue_since: 2026-01-01\n"
            "    approval: true\n"
            "    editors: [editor@reelnotes.example.com, second@reelnotes.example.com]\n",
        )
    )
    site.cli("gather")
    site.cli("subscribers", "import", "subscribers.csv", "--digest", "weekly")
    sent = site.cli("digest", "send", "weekly").output
    assert "issue(s) 1 wait for approval" in sent
    notices = messages(site, "draft-weekly-0001-")
    assert sorted(str(m["To"]) for m in notices) == [
        "editor@reelnotes.example.com",
        "second@reelnotes.example.com",
    ]
    assert not list(site.outbox.glob("weekly-0001-*.eml")), "a draft reaches no reader"
    site.cli("pages")
    assert not (site.public / "archive" / "weekly" / "1").exists(), "nor the public archive"
    path = link(notices[0], "drafts")

    with TestClient(create_app(site.config), base_url="https://reelnotes.example.com") as http:
        page = http.get(path)
        assert page.status_code == 200
        assert page.headers["cache-control"] == "no-store"
        assert "a draft waiting for approval" in page.text
        assert "syndicate digest approve weekly 1" in page.text
        with Store(site.config.database_url) as store, store.session() as session:
            issue = session.scalars(select(DigestIssue)).one()
            featured = session.get_one(Review, issue.reviews[0].review_id)
            assert html.escape(featured.title) in page.text  # the issue itself
        assert "%%" not in page.text  # every placeholder filled with the sample's values
        assert ADA not in page.text  # nobody's data
        assert http.get(path[:-3] + "abc").status_code == 400  # an altered link

        site.cli("digest", "approve", "weekly", "1")
        assert "approved and sent" in http.get(path).text
    assert len(list(site.outbox.glob("weekly-0001-*.eml"))) == len(EXAMPLE_READERS)
    assert (site.public / "archive" / "weekly" / "1" / "index.html").exists()
