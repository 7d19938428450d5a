"""A reader in a real browser (headless Chromium): sign up, confirm from the email the
transport wrote, receive an issue, unsubscribe from its link, with the database checked
after each step and a screenshot of each page kept as a test artefact."""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

import pytest
from sqlalchemy import select

from syndicate.store import Store, Subscriber
from syndicate.web import create_app
from tests.browser import Browser, LiveServer
from tests.conftest import Site

pytestmark = pytest.mark.browser
READER = "new.reader@example.org"


def newest_email(site: Site, prefix: str, to: str) -> EmailMessage:
    paths = sorted(site.outbox.glob(f"{prefix}*.eml"), key=lambda p: p.stat().st_mtime_ns)
    for path in reversed(paths):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        if to in str(message["To"]):
            return message  # type: ignore[return-value]
    raise AssertionError(f"no {prefix} email to {to} in {site.outbox}")


def html_link(message: EmailMessage, text: str) -> str:
    part = message.get_body(("html",))
    assert part is not None
    found = re.search(rf'<a [^>]*href="([^"]+)"[^>]*>\s*{text}', part.get_content())
    assert found, f"no link {text!r} in the email"
    return found.group(1).replace("&amp;", "&")


def status(site: Site, address: str) -> tuple[str, list[str]] | None:
    with Store(site.config.database_url) as store, store.session() as session:
        found = session.scalars(select(Subscriber).where(Subscriber.email == address)).first()
        return (found.status, found.digests) if found else None


@pytest.fixture
def live(site: Site, serve: Callable[..., LiveServer]) -> LiveServer:
    """The site's web side on loopback; the links in its emails point at it."""
    site.cli("gather")
    site.cli("feeds")

    def make_app(base_url: str) -> Any:
        text = site.config_path.read_text(encoding="utf-8")
        site.write_config(text + f"\nserver:\n  base_url: {base_url.rstrip('/')}/\n")
        return create_app(site.config)

    return serve(factory=make_app)


def test_a_reader_signs_up_confirms_receives_an_issue_and_unsubscribes(
    site: Site, live: LiveServer, browser: Browser
) -> None:
    browser.goto(live.url("/subscribe"))
    browser.screenshot("1-subscribe")
    browser.find("input[name=email]").send_keys(READER)
    browser.find("input[name=name]").send_keys("New Reader")
    browser.find("form button[type=submit]").click()
    browser.wait_for("main h1")
    assert "Check your inbox" in browser.find("main h1").text
    browser.screenshot("2-check-your-inbox")
    assert status(site, READER) == (Subscriber.PENDING, [])

    confirm = html_link(newest_email(site, "confirm-", READER), "Confirm my subscription")
    assert confirm.startswith(live.url("/confirm/"))
    browser.goto(confirm)
    browser.screenshot("3-confirm")
    assert status(site, READER) == (Subscriber.PENDING, [])  # opening the link is not enough
    browser.find("form button[type=submit]").click()
    browser.wait_for("main h1")
    assert "You are subscribed" in browser.find("main h1").text
    browser.screenshot("4-subscribed")
    assert status(site, READER) == (Subscriber.ACTIVE, ["weekly"])

    site.cli("run", "--once")
    issue = newest_email(site, "weekly-", READER)
    unsubscribe = html_link(issue, "Unsubscribe")
    browser.goto(unsubscribe)
    browser.screenshot("5-unsubscribe")
    assert status(site, READER) == (Subscriber.ACTIVE, ["weekly"])
    browser.find("form button[type=submit]").click()
    browser.wait_for("main h1")
    assert "You are unsubscribed" in browser.find("main h1").text
    browser.screenshot("6-unsubscribed")
    found = status(site, READER)
    assert found is not None and found[0] == Subscriber.UNSUBSCRIBED

    # The archive link in the email works too, and carries nothing personal.
    browser.goto(html_link(issue, "View in your browser"))
    browser.screenshot("7-archive-issue")
    assert READER not in browser.driver.page_source
    assert browser.horizontal_overflow() == 0


@pytest.mark.parametrize("window_size", [(375, 812)])
def test_the_reader_pages_fit_a_phone(
    site: Site, live: LiveServer, browser: Browser, window_size: tuple[int, int]
) -> None:
    browser.goto(live.url("/subscribe"))
    assert browser.horizontal_overflow() == 0
    browser.screenshot("subscribe-375")
    label = browser.find("label[for=email]")
    assert label.is_displayed() and browser.find("input[name=email]").is_displayed()
