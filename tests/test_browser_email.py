"""The digest email itself in a real browser, at a phone's and a desktop mail pane's width.

Issue 1 of the example site goes to the outbox; each email's HTML part is served on loopback
and opened in headless Chromium: no horizontal scrolling, alt text on every image, and an
unsubscribe link that is shown and signed for that email's own reader. Screenshots go to
test-artifacts/screenshots/test_browser_email.py__<test>/.
"""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import quote

import pytest

from syndicate.store import Store, Subscriber
from syndicate.tokens import read_token
from tests.browser import Browser, LiveServer
from tests.conftest import EXAMPLE_READERS, SECRET, Site

# A poster far wider than any phone, standing in for the real image (the browser reaches
# no outside host): the layout must scale it down, not scroll sideways.
WIDE_POSTER = "data:image/svg+xml," + quote(
    '<svg xmlns="http://www.w3.org/2000/svg" width="1600" height="2400">'
    '<rect width="1600" height="2400" fill="#8a6d3b"/></svg>'
)


def read_email(path: Path) -> EmailMessage:
    with path.open("rb") as handle:
        return email.message_from_binary_file(handle, policy=email.policy.default)  # type: ignore[return-value]


def html_part(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("html",))
    assert part is not None, "the digest has no text/html part"
    return part.get_content()


@pytest.fixture(scope="module")
def issue_one(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[EmailMessage, int]]:
    """Issue 1 sent to the example readers: {address: (message, subscriber id)}."""
    from tests.conftest import make_site

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SYNDICATE_SECRET", SECRET)
        patch.delenv("SYNDICATE_CONFIG", raising=False)
        site: Site = make_site(tmp_path_factory.mktemp("email") / "site")
        patch.chdir(site.root)
        site.cli("subscribers", "import", "subscribers.csv")
        site.cli("run", "--once")
        messages = [read_email(path) for path in site.emails()]
        with Store(site.config.database_url) as store, store.session() as session:
            ids = {s.email: s.id for s in session.query(Subscriber)}
    assert len(messages) == len(EXAMPLE_READERS)
    sent = {}
    for message in messages:
        address = message["To"].addresses[0].addr_spec
        sent[address] = (message, ids[address])
    return sent


@pytest.fixture
def email_pages(
    issue_one: dict[str, tuple[EmailMessage, int]],
    serve: Callable[..., LiveServer],
    tmp_path: Path,
) -> dict[str, str]:
    """Each email's HTML part (and a copy with a huge poster) on loopback: {name: URL}."""
    folder = tmp_path / "emails"
    folder.mkdir()
    names = {}
    for address, (message, _) in issue_one.items():
        name = address.split("@")[0]
        html = html_part(message)
        (folder / f"{name}.html").write_text(html, encoding="utf-8")
        posters = re.sub(r'(<img\b[^>]*\bsrc=")[^"]*(")', rf"\g<1>{WIDE_POSTER}\g<2>", html)
        (folder / f"{name}-with-images.html").write_text(posters, encoding="utf-8")
        names[address] = name
    server = serve(folder)
    return {address: server.url(f"/{name}.html") for address, name in names.items()}


@pytest.mark.parametrize("window_size", [(375, 812), (800, 900)], ids=["375px", "800px"])
def test_digest_email_fits_the_screen_with_alt_text_and_a_working_unsubscribe_link(
    browser: Browser,
    issue_one: dict[str, tuple[EmailMessage, int]],
    email_pages: dict[str, str],
    window_size: tuple[int, int],
) -> None:
    width = window_size[0]
    for number, (address, (message, subscriber_id)) in enumerate(issue_one.items()):
        name = address.split("@")[0]
        for variant, url in (
            ("", email_pages[address]),
            ("-with-images", email_pages[address].replace(".html", "-with-images.html")),
        ):
            browser.goto(url)
            assert browser.viewport[0] == width
            if variant or number == 0:  # every reader's email as seen; one with alt text
                browser.screenshot(f"{name}{variant}")

            # No sideways scrolling, with the posters missing (alt text shown) or huge.
            scroll_width = browser.js("return document.documentElement.scrollWidth")
            assert scroll_width <= width, (
                f"{address}{variant}: the page is {scroll_width}px wide in a {width}px window"
            )
            assert browser.horizontal_overflow() <= 0
            images = browser.js(
                "return Array.from(document.images, i => [i.getAttribute('src'),"
                " i.getAttribute('alt'), i.getBoundingClientRect().right])"
            )
            assert images, "the digest shows the featured review's poster"
            for src, alt, right in images:
                assert alt and alt.strip(), f"{address}: <img src={src[:80]!r}> has no alt text"
                assert right <= width, f"{address}{variant}: an image sticks out ({right}px)"

        # The unsubscribe link: shown, on screen, the List-Unsubscribe URL, and signed for
        # this email's reader (the token names their subscriber id, for no other purpose).
        links = [a for a in browser.find_all("a[href]") if a.text.strip() == "Unsubscribe"]
        assert len(links) == 1, f"{address}: expected one Unsubscribe link, found {len(links)}"
        link = links[0]
        assert link.is_displayed()
        box = link.rect
        assert box["width"] > 0 and box["height"] > 0
        assert box["x"] >= 0 and box["x"] + box["width"] <= width
        href = link.get_attribute("href")
        assert href in message["List-Unsubscribe"]
        assert href.startswith("https://reelnotes.example.com/unsubscribe/")
        token = href.rsplit("/", 1)[1]
        assert read_token(SECRET, "unsubscribe", token) == subscriber_id
