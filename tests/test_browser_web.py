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
from syndicate.tokens import make_token
from syndicate.web import create_app
from tests.browser import Browser, LiveServer
from tests.conftest import SECRET, Site

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


def test_the_preferences_page_preselects_the_browsers_time_zone_when_none_is_stored(
    site: Site, serve: Callable[..., LiveServer], browser: Browser
) -> None:
    text = site.config_path.read_text(encoding="utf-8")
    site.write_config(text.replace("first_issue_since: 2026-01-01", "send_hour: 8"))
    site.cli("feeds")  # the output folder the app also serves
    site.cli("subscribers", "add", READER)
    with Store(site.config.database_url) as store, store.session() as session:
        reader = session.scalars(select(Subscriber).where(Subscriber.email == READER)).one()
        token = make_token(SECRET, "preferences", reader.id)
    live = serve(create_app(site.config))
    browser.driver.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": "Asia/Tokyo"})
    try:
        browser.goto(live.url(f"/preferences/{token}"))
        zone = browser.find("select[name=timezone-weekly]")
        assert browser.js("return Intl.DateTimeFormat().resolvedOptions().timeZone") == "Asia/Tokyo"
        assert zone.get_attribute("value") == "Asia/Tokyo"
        browser.find("input[name=cadence-weekly][value=instant]").click()
        assert not browser.find("select[name=send_hour-weekly]").is_displayed()  # no hour
        browser.find("input[name=cadence-weekly][value=daily]").click()
        assert browser.find("select[name=send_hour-weekly]").is_displayed()
        browser.screenshot("preferences")
        browser.resize(375, 812)
        assert browser.horizontal_overflow() == 0  # the zone select fits a phone
        browser.screenshot("preferences-375")
        browser.find("button[value=save]").click()
        browser.wait_for("p.notice")
    finally:
        browser.driver.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": ""})
    with Store(site.config.database_url) as store, store.session() as session:
        reader = session.scalars(select(Subscriber).where(Subscriber.email == READER)).one()
        (weekly,) = reader.subscriptions
        assert (weekly.cadence, weekly.send_hour, weekly.timezone) == ("daily", None, "Asia/Tokyo")
