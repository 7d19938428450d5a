"""WebSub: hub links in the feeds, and publish pings to a real (local) hub after a change.

The hub is a stdlib HTTP server in a thread that records each POST and answers with the
statuses the test scripts; nothing is mocked.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest
from lxml import etree

from tests.conftest import Site
from tests.test_feeds import ATOM, SITE_URL, build, load_json

FORMATS = ("feed.xml", "atom.xml", "feed.json")


class Hub:
    """A WebSub hub: records publish pings; answers each with the next scripted status."""

    def __init__(self) -> None:
        self.pings: list[dict[str, list[str]]] = []
        self.statuses: list[int] = []  # consumed one per request; then 204
        self.delay = 0.0
        # "body" or "headers": answer 200 but send that part one byte a second, for 20 s.
        self.trickle: str | None = None
        self.lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                form = parse_qs(self.rfile.read(length).decode())
                with hub.lock:
                    hub.pings.append(form)
                    status = hub.statuses.pop(0) if hub.statuses else 204
                time.sleep(hub.delay)
                if hub.trickle:
                    self.trickle(hub.trickle)
                    return
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def trickle(self, part: str) -> None:
                head = b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n"
                if part == "body":
                    self.wfile.write(head + b"\r\n")
                    head = b""
                for byte in (head[i : i + 1] for i in range(len(head))) if head else [b"x"] * 20:
                    try:
                        self.wfile.write(byte)
                    except OSError:  # the client gave up: as it should
                        return
                    time.sleep(1)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/publish"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def published(self) -> list[str]:
        assert all(p["hub.mode"] == ["publish"] for p in self.pings)
        return sorted(url for p in self.pings for url in p["hub.url"])


@pytest.fixture
def hub() -> Iterator[Hub]:
    hub = Hub()
    hub.thread.start()
    yield hub
    hub.server.shutdown()
    hub.server.server_close()


def use_hubs(site: Site, *urls: str, timeout: float = 5, retries: int = 3) -> None:
    text = site.config_path.read_text(encoding="utf-8")
    hubs = ", ".join(urls)
    websub = (
        f"  websub: {{hubs: [{hubs}], timeout: {timeout}, retries: {retries}, max_backoff: 0.2}}\n"
    )
    site.write_config(text.replace("  items: 20\n", "  items: 20\n" + websub))


def test_feeds_link_their_hub_and_themselves(site: Site, hub: Hub) -> None:
    use_hubs(site, hub.url)
    build(site)

    rss = etree.parse(str(site.public / "feed.xml")).getroot().find("channel")
    rss_links = {link.get("rel"): link.get("href") for link in rss.findall(f"{ATOM}link")}
    assert rss_links["hub"] == hub.url and rss_links["self"] == f"{SITE_URL}feed.xml"
    atom = etree.parse(str(site.public / "tags/drama/atom.xml")).getroot()
    atom_links = {link.get("rel"): link.get("href") for link in atom.findall(f"{ATOM}link")}
    assert atom_links["hub"] == hub.url
    assert atom_links["self"] == f"{SITE_URL}tags/drama/atom.xml"
    feed = load_json(site.public / "feed.json")
    assert feed["hubs"] == [{"type": "WebSub", "url": hub.url}]
    assert feed["feed_url"] == f"{SITE_URL}feed.json"
    # Archive pages are not subscribed to: no hub there.
    assert "hub" not in (site.public / "history/1/atom.xml").read_text(encoding="utf-8")


def test_a_change_pings_the_hub_for_each_changed_feed_and_nothing_else(
    site: Site, hub: Hub
) -> None:
    use_hubs(site, hub.url)
    output = build(site)
    first = hub.published()
    assert f"{SITE_URL}feed.xml" in first and f"{SITE_URL}tags/drama/feed.json" in first
    assert not [url for url in first if "/history/" in url]
    assert "WebSub ping(s) to 1 hub(s)" in output

    hub.pings.clear()
    build(site)
    assert hub.pings == []  # nothing changed, nothing to tell

    text = (site.reviews / "man-on-wire.md").read_text(encoding="utf-8")
    (site.reviews / "man-on-wire.md").write_text(
        text.replace("caper", "sly caper"), encoding="utf-8"
    )
    build(site)
    assert hub.published() == sorted(
        f"{SITE_URL}{folder}{name}"
        for folder in ("", "tags/documentary/", "tags/true-story/")
        for name in FORMATS
    )


def test_a_hub_that_fails_for_now_is_retried(site: Site, hub: Hub) -> None:
    use_hubs(site, hub.url)
    site.cli("gather")
    hub.statuses = [503, 429]  # the first two pings fail; their retries succeed
    output = site.cli("feeds").output
    assert "failed" not in output
    published = hub.published()
    assert len(published) == len(set(published)) + 2  # two feeds were pinged twice
    assert len(set(published)) == output.count("wrote public/") - output.count("/history/")


def test_a_hub_that_refuses_is_not_retried_and_the_build_succeeds(site: Site, hub: Hub) -> None:
    use_hubs(site, hub.url)
    site.cli("gather")
    hub.statuses = [400] * 1000
    output = site.cli("feeds").output  # exit status 0
    assert len(hub.pings) == len(set(hub.published()))  # each feed once: no retries
    assert "0 WebSub ping(s) to 0 hub(s)" in output and "failed" in output


def test_a_hub_that_is_down_or_slow_never_holds_the_build_past_its_budget(
    site: Site, hub: Hub
) -> None:
    # One hub hangs on every request, another refuses connections.
    hub.delay = 30
    use_hubs(site, hub.url, "http://127.0.0.1:9/publish", timeout=1.5, retries=10)
    site.cli("gather")
    start = time.monotonic()
    result = site.cli("feeds")
    elapsed = time.monotonic() - start

    assert elapsed < 6, elapsed
    assert (site.public / "feed.xml").exists()
    assert "failed" in result.output


@pytest.mark.parametrize("part", ["body", "headers"])
def test_a_hub_trickling_its_answer_never_holds_the_build_past_its_budget(
    site: Site, hub: Hub, part: str
) -> None:
    """Each read gets a byte within the socket's timeout: only the budget can stop it."""
    hub.trickle = part
    use_hubs(site, hub.url, timeout=3, retries=0)
    edit_config = site.config_path.read_text(encoding="utf-8")
    site.write_config(edit_config.replace("  items: 20\n", "  items: 20\n  per_tag: false\n"))
    site.cli("gather")
    start = time.monotonic()
    result = site.cli("feeds")
    elapsed = time.monotonic() - start

    assert elapsed < 6, elapsed
    assert hub.pings  # the hub was reached; its answer never finished in time
    if part == "body":
        # The hub said 200 at once: the rest of its answer is not needed.
        assert "failed" not in result.output
    else:
        assert "failed" in result.output
