"""Remote sources: other sites' feeds and sitemaps, served by a real HTTP server on
loopback (tests/feedserver.py) and gathered through `syndicate gather` as an operator
would run it. Test documents live in tests/data/feeds/, with {base} for the server.
"""

from __future__ import annotations

import gzip
import re
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import feedparser
import pytest
from sqlalchemy import select

from syndicate.sources.entry import parse_date, scaled_rating
from syndicate.sources.http import Fetcher, FetchError
from syndicate.store import Review, SourcePage, SourceState, Store
from tests.conftest import Site
from tests.feedserver import FeedServer

DATA = Path(__file__).parent / "data" / "feeds"
FILE_REVIEWS = 10  # the example site's folder of Markdown reviews


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with FeedServer() as running:
        yield running


def document(server: FeedServer, name: str) -> bytes:
    return (DATA / name).read_bytes().replace(b"{base}", server.base.encode())


def configure(site: Site, sources: str) -> None:
    """The test site's config with these sources after its folder of reviews."""
    text = site.config_path.read_text()
    marker = "    path: reviews\n"
    site.write_config(text.replace(marker, marker + sources, 1))


def feed_source(name: str, url: str, extra: str = "") -> str:
    return f"  - {{name: {name}, type: feed, url: '{url}'{extra}}}\n"


def gather(site: Site, ok: bool | None = True) -> tuple[tuple[int, ...], str]:
    result = site.cli("gather", ok=ok)
    match = re.search(r"(\d+) new, (\d+) updated, (\d+) unchanged", result.output)
    assert match, result.output
    return tuple(int(n) for n in match.groups()), result.output


def reviews(site: Site, source: str) -> dict[str, Review]:
    with Store(site.config.database_url) as store, store.session() as session:
        rows = session.scalars(select(Review).where(Review.source == source))
        return {review.id: review for review in rows}


def state(site: Site, name: str) -> SourceState:
    with Store(site.config.database_url) as store, store.session() as session:
        found = session.get(SourceState, name)
        assert found is not None
        return found


# --- formats -------------------------------------------------------------------------------


def test_an_rss_feed_becomes_reviews_with_content_tags_image_and_rating(
    site: Site, server: FeedServer
) -> None:
    server.route("/feed.xml", document(server, "rss20.xml"), etag='"v1"')
    configure(site, feed_source("other", server.url("/feed.xml")))
    (new, updated, _), _ = gather(site)
    assert (new, updated) == (FILE_REVIEWS + 2, 0)

    found = reviews(site, "other")
    assert sorted(found) == ["other-heat", "other-thief"]
    heat = found["other-heat"]
    assert heat.url == server.url("/reviews/heat/")
    assert heat.title == "Heat: the diner scene"
    assert heat.author == "Priya Raman"
    assert heat.tags == ["crime", "Los Angeles"]
    assert heat.published == datetime(2026, 11, 23, 17, 0, tzinfo=UTC)
    assert heat.summary == "Pacino and De Niro, finally in the same scene."
    assert (heat.film, heat.year, heat.director, heat.rating) == ("Heat", 1995, "Michael Mann", 4.5)
    assert heat.image == server.url("/images/heat.jpg")  # the enclosure, before the <img>
    # Sanitised, and relative URLs resolved against the entry's own link.
    assert "<script" not in heat.body_html and "onclick" not in heat.body_html
    assert "javascript:" not in heat.body_html
    assert f'src="{server.url("/images/diner.jpg")}"' in heat.body_html
    assert f'href="{server.url("/reviews/thief/")}"' in heat.body_html
    assert found["other-thief"].image == server.url("/images/thief.jpg")  # media:content

    request = server.hits("/feed.xml")[0]
    assert request.headers["User-Agent"] == "syndicate/0.1.0 (+https://reelnotes.example.com/)"
    assert "gzip" in request.headers["Accept-Encoding"]

    # The site's own feeds carry them, and feed readers accept the result.
    site.cli("feeds")
    parsed = feedparser.parse((site.public / "feed.xml").read_bytes())
    assert parsed.bozo == 0
    assert "Heat: the diner scene" in [entry.title for entry in parsed.entries]


@pytest.mark.parametrize(
    ("name", "content_type", "expected"),
    [
        ("rss091.xml", "text/xml", {"title": "Vertigo", "link": "/vertigo.html"}),
        (
            "rss10.rdf",
            "application/rdf+xml",
            {"title": "Alien", "author": "Tom Okafor", "tags": ["science fiction"]},
        ),
        (
            "atom.xml",
            "application/atom+xml",
            {
                "title": "Dune: Part Two & the desert",
                "link": "/blog/dune-part-two/",  # resolved against xml:base
                "tags": ["Science fiction"],
                "image": "/blog/stills/sand.jpg",
                "updated": datetime(2026, 11, 21, 9, 0, tzinfo=UTC),
            },
        ),
        (
            "feed.json",
            "application/feed+json",
            {
                "title": "Paddington 2",
                "author": "Sam Ortiz",
                "rating": 5.0,
                "director": "Paul King",
                "image": "/img/paddington.jpg",
                "tags": ["family", "comedy"],
            },
        ),
    ],
    ids=["rss-0.91", "rss-1.0", "atom", "json-feed"],
)
def test_every_feed_format_is_read(
    site: Site, server: FeedServer, name: str, content_type: str, expected: dict[str, object]
) -> None:
    server.route(f"/{name}", document(server, name), content_type=content_type)
    configure(site, feed_source("remote", server.url(f"/{name}")))
    gather(site)
    found = reviews(site, "remote")
    review = next(r for r in found.values() if r.title == expected["title"])
    for key, value in expected.items():
        if key in ("link", "image"):
            assert getattr(review, "url" if key == "link" else key) == server.url(str(value))
        else:
            assert getattr(review, key) == value, key
    assert review.body_html


def test_json_feed_text_content_and_numeric_ids(site: Site, server: FeedServer) -> None:
    server.route("/feed.json", document(server, "feed.json"), content_type="application/json")
    configure(site, feed_source("j", server.url("/feed.json"), ", timezone: Europe/Paris"))
    gather(site)
    tar = reviews(site, "j")["j-tar"]
    assert tar.body_html == "<p>First paragraph.</p><p>Second &lt;paragraph&gt;.</p>"
    assert tar.author == "The Editors"  # the feed's author, for an item without one
    assert tar.source_key == "guid:plain-text"
    assert tar.published == datetime(2026, 11, 18, 8, 0, tzinfo=UTC)  # no zone: the source's
    assert reviews(site, "j")["j-paddington-2"].source_key == "guid:42"


# --- what real sites get wrong -------------------------------------------------------------


def test_latin1_feeds_declared_or_not_and_dates_without_zones(
    site: Site, server: FeedServer
) -> None:
    server.route("/declared", document(server, "latin1-declared.xml"), content_type="text/xml")
    server.route("/undeclared", document(server, "latin1-undeclared.xml"), content_type="text/xml")
    configure(
        site,
        feed_source("fr", server.url("/declared"))
        + feed_source("mis", server.url("/undeclared"), ", timezone: Europe/Paris"),
    )
    gather(site)
    amelie = reviews(site, "fr")["fr-amelie"]
    assert amelie.title == "Amélie"
    assert amelie.summary == "Le fabuleux destin, très drôle."
    assert amelie.published == datetime(2026, 11, 17, 19, 0, tzinfo=UTC)  # "CET"
    miserables = reviews(site, "mis")["mis-miserables"]
    assert miserables.title == "Les Misérables"
    # "Wednesday, 18 Nov 26 21:15:00": a long weekday, a two-digit year, no zone.
    assert miserables.published == datetime(2026, 11, 18, 20, 15, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Mon, 23 Nov 2026 18:00:00 +0100", datetime(2026, 11, 23, 17, 0, tzinfo=UTC)),
        ("Fri, 23 Nov 2026 18:00:00 +0100", datetime(2026, 11, 23, 17, 0, tzinfo=UTC)),
        ("23 Nov 2026 18:00 GMT", datetime(2026, 11, 23, 18, 0, tzinfo=UTC)),
        ("Mon, 23 Nov 26 18:00:00 EST", datetime(2026, 11, 23, 23, 0, tzinfo=UTC)),
        ("Mon, 23 Nov 2026 18:00:00 CEST", datetime(2026, 11, 23, 16, 0, tzinfo=UTC)),
        ("Mon, 23 Nov 2026 18:00:00", datetime(2026, 11, 23, 17, 0, tzinfo=UTC)),
        ("Monday, 23 November 2026 18:00:00 +01:00", datetime(2026, 11, 23, 17, 0, tzinfo=UTC)),
        ("23 Nov 2026", datetime(2026, 11, 22, 23, 0, tzinfo=UTC)),
        ("2026-11-23T18:00:00Z", datetime(2026, 11, 23, 18, 0, tzinfo=UTC)),
        ("2026-11-23 18:00:00", datetime(2026, 11, 23, 17, 0, tzinfo=UTC)),
        ("2026-11-23T18:00:00+0100", datetime(2026, 11, 23, 17, 0, tzinfo=UTC)),
        ("2026-11-23", datetime(2026, 11, 22, 23, 0, tzinfo=UTC)),
        ("yesterday", None),
        ("2026-13-45", None),
        ("", None),
    ],
)
def test_dates_as_sites_write_them(text: str, expected: datetime | None) -> None:
    # A date without a zone is in the source's `timezone` (here Paris, UTC+1 in November).
    assert parse_date(text, ZoneInfo("Europe/Paris")) == expected


def test_ratings_are_scaled_to_five() -> None:
    assert scaled_rating("8", "10") == 4.0
    assert scaled_rating("4,5") == 4.5
    assert scaled_rating(3, "5", "1") == 2.5
    assert scaled_rating("11", "10") is None
    assert scaled_rating("great") is None


def test_a_failing_source_is_recorded_and_stops_nothing(site: Site, server: FeedServer) -> None:
    server.route("/good.xml", document(server, "rss20.xml"))
    server.route("/broken.xml", document(server, "broken.xml"), content_type="text/xml")
    server.route("/html", document(server, "not-a-feed.html"), content_type="text/html")
    server.route("/error", "oops", status=500, content_type="text/plain")
    server.route("/empty", "", content_type="application/rss+xml")
    configure(
        site,
        feed_source("broken", server.url("/broken.xml"))
        + feed_source("html", server.url("/html"))
        + feed_source("error", server.url("/error"))
        + feed_source("empty", server.url("/empty"))
        + feed_source("refused", "http://127.0.0.1:9/feed.xml")
        + feed_source("good", server.url("/good.xml")),
    )
    (new, _, _), output = gather(site, ok=False)
    assert new == FILE_REVIEWS + 2  # the files and the good feed, all the same
    expected = {
        "broken": "not a feed: malformed XML: line 2, column",
        "html": "not a feed: an HTML page (text/html)",
        "error": "HTTP 500 Internal Server Error",
        "empty": "not a feed: the response is empty",
        "refused": "cannot connect to 127.0.0.1:9: connection refused",
    }
    for name, reason in expected.items():
        assert reason in state(site, name).last_error, name
        assert f"error: source {name} (" in output and reason in output
    assert state(site, "good").last_error is None

    listing = site.cli("sources").output
    assert "reviews (files)" in listing and f"reviews:       {FILE_REVIEWS}" in listing
    assert re.search(
        r"good \(feed\).*\n(.*\n){2}  last error:    none\n  reviews:       2", listing
    )
    assert re.search(r"error \(feed\).*\n(.*\n){2}  last error:    .*HTTP 500", listing)

    # Fixed on the site: the next run picks it up, and the old error is shown as past.
    server.route("/error", document(server, "rss20.xml"))
    gather(site, ok=False)
    fixed = state(site, "error")
    assert fixed.last_success_at is not None and fixed.last_error_at is not None
    assert fixed.last_success_at > fixed.last_error_at
    assert len(reviews(site, "error")) == 2


def test_a_slow_server_and_a_huge_response_are_abandoned(site: Site, server: FeedServer) -> None:
    big = b"<rss>" + b" " * 300_000
    server.route("/slow", document(server, "rss20.xml"), delay=3)
    server.route("/huge", big)
    server.route("/huge-streamed", big, length=False)
    server.route("/huge-gzipped", big, gzip=True)
    limits = ", timeout: 0.5, max_bytes: 100000"
    configure(
        site,
        feed_source("slow", server.url("/slow"), limits)
        + feed_source("huge", server.url("/huge"), limits)
        + feed_source("streamed", server.url("/huge-streamed"), limits)
        + feed_source("gzipped", server.url("/huge-gzipped"), limits),
    )
    started = time.monotonic()
    gather(site, ok=False)
    assert time.monotonic() - started < 2.5
    assert state(site, "slow").last_error == "timed out after 0.5 s"
    assert state(site, "huge").last_error == "too large: 300,005 bytes (max_bytes is 100,000)"
    for name in ("streamed", "gzipped"):  # no Content-Length, or a compressed one
        assert (
            state(site, name).last_error
            == "too large: more than 100,000 bytes (max_bytes is 100,000)"
        )


# --- HTTP: conditional GET and redirects -----------------------------------------------


def test_an_unchanged_feed_answers_304_and_nothing_is_rewritten(
    site: Site, server: FeedServer
) -> None:
    lastmod = "Mon, 23 Nov 2026 17:00:00 GMT"
    server.route("/feed.xml", document(server, "rss20.xml"), etag='"v1"', last_modified=lastmod)
    server.route("/feed.json", document(server, "feed.json"), gzip=True, etag='"j1"')
    configure(
        site,
        feed_source("other", server.url("/feed.xml")) + feed_source("j", server.url("/feed.json")),
    )
    gather(site)
    site.cli("feeds")
    before = {p: p.stat().st_mtime_ns for p in site.public.rglob("*") if p.is_file()}
    stored = {r.id: (r.updated, r.fingerprint) for r in reviews(site, "other").values()}

    counts, _ = gather(site)
    assert counts == (0, 0, FILE_REVIEWS)
    again = server.hits("/feed.xml")[-1]
    assert again.headers["If-None-Match"] == '"v1"'
    assert again.headers["If-Modified-Since"] == lastmod
    assert server.hits("/feed.json")[-1].headers["If-None-Match"] == '"j1"'
    assert {r.id: (r.updated, r.fingerprint) for r in reviews(site, "other").values()} == stored
    assert state(site, "other").etag == '"v1"'
    assert "0 feed file(s) written" in site.cli("feeds").output
    assert {p: p.stat().st_mtime_ns for p in site.public.rglob("*") if p.is_file()} == before


def test_a_permanent_redirect_is_recorded_and_a_loop_is_an_error(
    site: Site, server: FeedServer
) -> None:
    server.route("/old.xml", status=301, headers={"Location": "/new.xml"})
    server.route("/new.xml", document(server, "rss20.xml"))
    server.route("/temporary", status=302, headers={"Location": "/new.xml"})
    server.route("/a", status=301, headers={"Location": "/b"})
    server.route("/b", status=307, headers={"Location": "/a"})
    configure(
        site,
        feed_source("moved", server.url("/old.xml"))
        + feed_source("temp", server.url("/temporary"))
        + feed_source("loop", server.url("/a")),
    )
    gather(site, ok=False)
    assert state(site, "moved").url == server.url("/new.xml")
    assert state(site, "temp").url == server.url("/temporary")  # 302: ask there again
    assert state(site, "loop").last_error == (
        f"redirect loop: {server.url('/b')} redirects back to {server.url('/a')}"
    )
    assert "moved to:      " + server.url("/new.xml") in site.cli("sources").output

    hits = len(server.hits("/old.xml"))
    gather(site, ok=False)
    assert len(server.hits("/old.xml")) == hits  # the next poll went straight to the new URL
    assert len(reviews(site, "moved")) == 2


# --- identity --------------------------------------------------------------------------------

ITEM = """<item><title>{title}</title>{link}{guid}<description>{text}</description>
<pubDate>Mon, 23 Nov 2026 18:00:00 +0000</pubDate></item>"""


def rss(*items: str) -> str:
    return f'<?xml version="1.0"?><rss version="2.0"><channel><title>T</title>{"".join(items)}</channel></rss>'


def item(title: str, text: str, link: str = "", guid: str = "") -> str:
    return ITEM.format(
        title=title,
        text=text,
        link=f"<link>{link}</link>" if link else "",
        guid=f'<guid isPermaLink="false">{guid}</guid>' if guid else "",
    )


def test_an_entry_keeps_its_review_by_guid_then_link_then_hash(
    site: Site, server: FeedServer
) -> None:
    base = server.base
    server.route(
        "/feed",
        rss(
            item("By guid", "one", f"{base}/a/", guid="g-1"),
            item("By link", "two", f"{base}/b/"),
            item("By hash", "three"),
        ),
    )
    configure(site, feed_source("f", server.url("/feed")))
    gather(site)
    keys = {r.id: r.source_key for r in reviews(site, "f").values()}
    assert keys["f-a"] == "guid:g-1"
    assert keys["f-b"] == f"link:{base}/b/"
    assert keys["f-by-hash"].startswith("hash:")

    # The guid'd entry moves to a new link and is edited; the link'd entry
    # gains a guid; the hashed one is unchanged; a new entry arrives.
    server.route(
        "/feed",
        rss(
            item("New", "four", f"{base}/new/", guid="g-2"),
            item("By guid", "one, edited", f"{base}/a-moved/", guid="g-1"),
            item("By link", "two", f"{base}/b/", guid="g-b"),
            item("By hash", "three"),
        ),
    )
    (new, updated, _), _ = gather(site)
    assert (new, updated) == (1, 1)
    found = reviews(site, "f")
    assert sorted(found) == ["f-a", "f-b", "f-by-hash", "f-new"]
    assert found["f-a"].summary == "one, edited"
    assert found["f-a"].url == f"{base}/a-moved/"
    assert found["f-b"].source_key == "guid:g-b"  # same review, its key upgraded

    # Everything but the newest entry drops out of the feed: the archive keeps them.
    server.route("/feed", rss(item("New", "four", f"{base}/new/", guid="g-2")))
    (new, updated, _), _ = gather(site)
    assert (new, updated) == (0, 0)
    assert all(review.live for review in reviews(site, "f").values())
    assert len(reviews(site, "f")) == 4


def test_an_edited_entry_updates_its_review_and_its_date(site: Site, server: FeedServer) -> None:
    link = server.url("/r/")
    server.route("/feed", rss(item("Title", "first version", link, guid="g")))
    configure(site, feed_source("f", server.url("/feed")))
    gather(site)
    before = reviews(site, "f")["f-r"]

    server.route("/feed", rss(item("Title", "second version", link, guid="g")))
    (new, updated, _), _ = gather(site)
    assert (new, updated) == (0, 1)
    after = reviews(site, "f")["f-r"]
    assert after.summary == "second version"
    assert after.published == before.published
    assert after.updated > before.updated
    assert after.first_seen == before.first_seen


def test_ids_never_clash_across_sources(site: Site, server: FeedServer) -> None:
    # Two feeds with a review of the same film at the same path, and one with two entries
    # whose links end alike: each gets its own id, and keeps it.
    server.route("/one", rss(item("Heat", "a", server.url("/heat/"), guid="1")))
    server.route(
        "/two",
        rss(
            item("Heat", "b", server.url("/2024/heat/"), guid="1"),
            item("Heat again", "c", server.url("/2025/heat/"), guid="2"),
        ),
    )
    configure(site, feed_source("one", server.url("/one")) + feed_source("two", server.url("/two")))
    gather(site)
    assert sorted(reviews(site, "one")) == ["one-heat"]
    assert sorted(reviews(site, "two")) == ["two-heat", "two-heat-2"]
    gather(site)
    assert sorted(reviews(site, "two")) == ["two-heat", "two-heat-2"]


# --- sitemaps --------------------------------------------------------------------------------


def sitemap_site(site: Site, server: FeedServer, url: str, pattern: str = "") -> None:
    pattern = pattern or server.url("/reviews/*")
    configure(site, f"  - {{name: longtake, type: sitemap, url: '{url}', pattern: '{pattern}'}}\n")
    for name in ("heat", "vertigo"):
        server.route(
            f"/reviews/{name}/",
            document(server, f"{name}.html"),
            content_type="text/html; charset=utf-8",
            etag=f'"{name}-1"',
        )
    server.route("/about/", document(server, "about.html"), content_type="text/html")


def test_a_sitemap_brings_in_its_review_pages_once(site: Site, server: FeedServer) -> None:
    server.route(
        "/sitemap.xml",
        document(server, "sitemap.xml"),
        content_type="application/xml",
        etag='"s1"',
    )
    sitemap_site(site, server, server.url("/sitemap.xml"))
    (new, _, _), _ = gather(site)
    assert new == FILE_REVIEWS + 2
    found = reviews(site, "longtake")
    assert sorted(found) == ["longtake-heat", "longtake-vertigo"]
    assert not server.hits("/about/") and not server.hits("/")  # outside the pattern
    heat = found["longtake-heat"]
    assert heat.title == "Heat: two professionals and one city"
    assert heat.author == "Priya Raman"
    assert heat.published == datetime(2026, 11, 23, 17, 0, tzinfo=UTC)
    assert (heat.film, heat.director, heat.year, heat.rating) == ("Heat", "Michael Mann", 1995, 4.5)
    assert heat.image == server.url("/images/heat-og.jpg")
    assert f'src="{server.url("/images/diner.jpg")}"' in heat.body_html
    assert "Comments" not in heat.body_html and "All rights reserved" not in heat.body_html
    assert heat.summary == "Two professionals, one city, and the best diner scene ever filmed."
    vertigo = found["longtake-vertigo"]
    assert (vertigo.author, vertigo.published) == (
        "Tom Okafor",
        datetime(2026, 11, 20, 10, 0, tzinfo=UTC),
    )

    # Unchanged: the sitemap answers 304; the page with a lastmod is not fetched; the
    # one without gets a conditional GET, answered 304.
    counts, _ = gather(site)
    assert counts == (0, 0, FILE_REVIEWS)
    assert server.hits("/sitemap.xml")[-1].headers["If-None-Match"] == '"s1"'
    assert len(server.hits("/reviews/heat/")) == 1
    assert server.hits("/reviews/vertigo/")[-1].headers["If-None-Match"] == '"vertigo-1"'

    # Edited, with a new lastmod: fetched again and updated.
    edited = document(server, "heat.html").replace(b"famous for what it", b"celebrated for what it")
    server.route("/reviews/heat/", edited, content_type="text/html", etag='"heat-2"')
    server.route(
        "/sitemap.xml",
        document(server, "sitemap.xml").replace(b"2026-11-23T18:00:00", b"2026-11-24T09:00:00"),
        content_type="application/xml",
    )
    (new, updated, _), _ = gather(site)
    assert (new, updated) == (0, 1)
    assert "celebrated" in reviews(site, "longtake")["longtake-heat"].body_html
    assert len(server.hits("/reviews/heat/")) == 2


def test_a_sitemap_index_with_a_gzipped_sitemap_and_a_failing_page(
    site: Site, server: FeedServer
) -> None:
    server.route("/index.xml", document(server, "sitemap-index.xml"), content_type="text/xml")
    server.route(
        "/sitemap-pages.xml", document(server, "sitemap.xml").replace(b"/reviews/", b"/x/")
    )
    reviews_map = gzip.compress(
        document(server, "sitemap.xml").replace(b"</urlset>", b"")
        + f"<url><loc>{server.base}/reviews/gone/</loc></url></urlset>".encode()
    )
    server.route("/sitemap-reviews.xml.gz", reviews_map, content_type="application/x-gzip")
    sitemap_site(site, server, server.url("/index.xml"), pattern="^.*/reviews/[a-z-]+/$")
    server.route("/reviews/gone/", "boom", status=500, content_type="text/plain")
    (new, _, _), output = gather(site, ok=False)
    assert new == FILE_REVIEWS + 2
    assert sorted(reviews(site, "longtake")) == ["longtake-heat", "longtake-vertigo"]
    assert f"{server.url('/reviews/gone/')}: HTTP 500 Internal Server Error" in output
    assert "HTTP 500" in (state(site, "longtake").last_error or "")
    with Store(site.config.database_url) as store, store.session() as session:
        pages = {p.url: p for p in session.scalars(select(SourcePage))}
    assert pages[server.url("/reviews/gone/")].error == "HTTP 500 Internal Server Error"
    assert pages[server.url("/reviews/heat/")].lastmod == "2026-11-23T18:00:00+00:00"

    # Mended: the failed page is tried again on the next run.
    server.route(
        "/reviews/gone/",
        document(server, "vertigo.html").replace(b"Vertigo", b"Gone"),
        content_type="text/html",
    )
    (new, _, _), _ = gather(site)
    assert new == 1


def test_remote_source_settings_are_validated(site: Site) -> None:
    configure(
        site,
        "  - {name: bad, type: sitemap, url: 'ftp://x/', pattern: '^(unclosed'}\n"
        "  - {name: nourl, type: feed}\n",
    )
    output = site.cli("check", ok=False).output
    assert "sources.1.url: expected an absolute http(s) URL, got 'ftp://x/'" in output
    assert "sources.1.pattern: not a valid regular expression" in output
    assert "sources.2.url: required key is missing" in output


def test_check_and_sources_list_remote_sources_before_any_poll(
    site: Site, server: FeedServer
) -> None:
    configure(site, feed_source("later", server.url("/feed.xml")))
    assert f"later (feed) {server.url('/feed.xml')}" in site.cli("check").output
    assert "not polled yet" in site.cli("sources").output


def test_a_future_date_is_not_believed(site: Site, server: FeedServer) -> None:
    future = (datetime.now(UTC) + timedelta(days=400)).strftime("%a, %d %b %Y %H:%M:%S +0000")
    server.route(
        "/feed",
        rss(item("Tomorrow", "x", server.url("/t/"), guid="t")).replace(
            "Mon, 23 Nov 2026 18:00:00 +0000", future
        ),
    )
    configure(site, feed_source("f", server.url("/feed")))
    gather(site)
    assert reviews(site, "f")["f-t"].published <= datetime.now(UTC)


def test_dns_failure_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    # No resolver is asked: the lookup fails as it does for a mistyped host name.
    def no_such_host(host: str, *args: object, **kwargs: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    with Fetcher("https://reelnotes.example.com/") as fetcher, pytest.raises(FetchError) as caught:
        fetcher.get("https://reviews.invalid/feed", accept="*/*", timeout=2, max_bytes=10_000)
    assert str(caught.value) == "DNS: cannot resolve host reviews.invalid"


def test_review_pages_are_not_made_for_remote_reviews(site: Site, server: FeedServer) -> None:
    # Their page is on their own site: writing one here would only raise warnings.
    server.route("/feed.xml", document(server, "rss20.xml"))
    configure(site, feed_source("other", server.url("/feed.xml")))
    site.write_config(site.config_path.read_text() + "pages: {review_pages: true}\n")
    gather(site)
    result = site.cli("pages")
    assert "warning" not in result.output
    assert (site.public / "reviews" / "arrival" / "index.html").exists()
    assert not list(site.public.rglob("*heat*"))


# --- review findings: what a hostile or careless site can do ------------------------------


def sitemap_source(url: str, pattern: str, extra: str = "") -> str:
    return f"  - {{name: longtake, type: sitemap, url: '{url}', pattern: '{pattern}'{extra}}}\n"


def test_pages_left_over_are_fetched_while_the_sitemap_is_unchanged(
    site: Site, server: FeedServer
) -> None:
    server.route(
        "/sitemap.xml", document(server, "sitemap.xml"), content_type="text/xml", etag='"s1"'
    )
    sitemap_site(site, server, server.url("/sitemap.xml"))
    text = site.config_path.read_text()
    site.write_config(text.replace("/reviews/*'}", "/reviews/*', max_pages: 1}"))
    gather(site)
    assert len(reviews(site, "longtake")) == 1
    with Store(site.config.database_url) as store, store.session() as session:
        pending = [p for p in session.scalars(select(SourcePage)) if p.fetched_at is None]
    assert len(pending) == 1  # listed, remembered, not fetched yet
    (new, _, _), _ = gather(site)  # the sitemap answers 304: the page left over comes now
    assert server.hits("/sitemap.xml")[-1].headers.get("If-None-Match") == '"s1"'
    assert new == 1 and len(reviews(site, "longtake")) == 2


def test_a_child_sitemap_that_failed_is_read_again_though_the_index_is_unchanged(
    site: Site, server: FeedServer
) -> None:
    server.route(
        "/index.xml", document(server, "sitemap-index.xml"), content_type="text/xml", etag='"i1"'
    )
    server.route(
        "/sitemap-pages.xml", "<urlset xmlns='http://www.sitemaps.org/schemas/sitemap/0.9'/>"
    )
    server.route("/sitemap-reviews.xml.gz", "down", status=503, content_type="text/plain")
    sitemap_site(site, server, server.url("/index.xml"))
    gather(site, ok=None)
    assert not reviews(site, "longtake")
    assert state(site, "longtake").etag is None  # not kept: the index must be read again
    server.route("/sitemap-reviews.xml.gz", gzip.compress(document(server, "sitemap.xml")))
    (new, _, _), _ = gather(site)
    assert new == 2


def rss_with_home(*items: str) -> str:
    return rss(*items).replace("<title>T</title>", "<title>T</title><link>/home/</link>", 1)


def test_an_impossible_date_is_no_date_and_a_bad_entry_spoils_only_itself(
    site: Site, server: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert parse_date("0001-01-01T00:30:00+01:00") is None
    assert parse_date("9999-12-31T23:59:59Z") is None
    server.route(
        "/feed",
        rss(
            item("Zero", "z", server.url("/zero/"), guid="z").replace(
                "Mon, 23 Nov 2026 18:00:00 +0000", "0001-01-01T00:30:00+01:00"
            ),
            item("Good", "g", server.url("/good/"), guid="g"),
            item("Bad", "b", server.url("/bad/"), guid="b").replace("2026", "1999"),
        ),
    )
    configure(site, feed_source("f", server.url("/feed")))
    # An entry whose date cannot be stored (as 0001-01-01 could not): a real OverflowError
    # at flush time, for the entry dated 1999 only.
    from syndicate.sources import ingest

    real = ingest.plausible
    overflow = datetime(1, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1)))
    monkeypatch.setattr(
        ingest,
        "plausible",
        lambda when, now: overflow if when and when.year == 1999 else real(when, now),
    )
    (new, _, _), _ = gather(site, ok=False)
    assert new == FILE_REVIEWS + 2  # the bad entry is not counted
    assert sorted(reviews(site, "f")) == ["f-good", "f-zero"]
    error = state(site, "f").last_error or ""
    assert error.startswith(f"entry {server.url('/bad/')} not stored: OverflowError")
    assert "\n" not in error and "SQL" not in error
    assert (
        "f-zero" in reviews(site, "f")
        and reviews(site, "f")["f-zero"].published.year == datetime.now(UTC).year
    )


def test_the_pool_has_a_connection_for_every_worker(server: FeedServer) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from syndicate.sources.http import PAGE_WORKERS, SOURCE_WORKERS

    workers = SOURCE_WORKERS * PAGE_WORKERS
    server.route("/slow", "x", delay=0.4)
    with Fetcher("https://reelnotes.example.com/") as fetcher, ThreadPoolExecutor(workers) as pool:

        def fetch(_: int) -> str:
            try:
                fetcher.get(server.url("/slow"), accept="*/*", timeout=0.7, max_bytes=10_000)
            except FetchError as exc:
                return str(exc)
            return "ok"

        # A smaller pool makes the last requests wait for a connection, on their timeout.
        assert set(pool.map(fetch, range(workers))) == {"ok"}


def test_a_renamed_source_keeps_its_reviews(site: Site, server: FeedServer) -> None:
    server.route("/feed.xml", document(server, "rss20.xml"))
    configure(site, feed_source("old", server.url("/feed.xml")))
    gather(site)
    ids = sorted(reviews(site, "old"))
    text = site.config_path.read_text().replace("name: old,", "name: renamed,")
    site.write_config(text)
    (new, updated, _), _ = gather(site)
    assert (new, updated) == (0, 0)
    assert sorted(reviews(site, "renamed")) == ids and not reviews(site, "old")
    assert state(site, "renamed").items == len(ids)
    with Store(site.config.database_url) as store, store.session() as session:
        assert session.get(SourceState, "old") is None


def test_a_reused_guid_is_a_new_review(site: Site, server: FeedServer) -> None:
    server.route("/feed", rss(item("Heat", "one", server.url("/heat/"), guid="post-1")))
    configure(site, feed_source("f", server.url("/feed")))
    gather(site)
    server.route("/feed", rss(item("Thief", "two", server.url("/thief/"), guid="post-1")))
    (new, updated, _), _ = gather(site)
    assert (new, updated) == (1, 0)
    found = reviews(site, "f")
    assert found["f-heat"].title == "Heat" and found["f-thief"].title == "Thief"
    assert gather(site)[0][:2] == (0, 0)  # and it stays so


def test_slow_headers_and_slow_redirects_are_cut_at_the_timeout(server: FeedServer) -> None:
    server.route("/dribble", dribble=0.1)
    for hop in range(5):
        server.route(f"/hop{hop}", status=302, headers={"Location": f"/hop{hop + 1}"}, delay=0.25)
    server.route("/hop5", "done")
    with Fetcher("https://reelnotes.example.com/") as fetcher:
        for path in ("/dribble", "/hop0"):
            started = time.monotonic()
            with pytest.raises(FetchError) as caught:
                fetcher.get(server.url(path), accept="*/*", timeout=0.6, max_bytes=10_000)
            assert str(caught.value) == "timed out after 0.6 s", path
            assert time.monotonic() - started < 1.0, path


def test_a_gzip_bomb_is_not_inflated_past_the_cap(server: FeedServer) -> None:
    import tracemalloc
    import zlib

    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    bomb = b"".join(packer.compress(bytes(1_000_000)) for _ in range(40)) + packer.flush()
    server.route("/bomb", bomb, headers={"Content-Encoding": "gzip"})
    deflated = zlib.compress(b"<rss>deflate</rss>")
    server.route("/deflate", deflated, headers={"Content-Encoding": "deflate"})
    server.route("/raw-deflate", deflated[2:-4], headers={"Content-Encoding": "deflate"})
    with Fetcher("https://reelnotes.example.com/") as fetcher:
        tracemalloc.start()
        try:
            with pytest.raises(FetchError, match="too large: more than 100,000 bytes"):
                fetcher.get(server.url("/bomb"), accept="*/*", timeout=5, max_bytes=100_000)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 5_000_000, peak  # 40 MB once inflated
        for path in ("/deflate", "/raw-deflate"):
            got = fetcher.get(server.url(path), accept="*/*", timeout=5, max_bytes=100_000)
            assert got.content == b"<rss>deflate</rss>", path


def test_a_sitemap_poll_has_a_time_budget_and_too_many_sitemaps_are_reported(
    site: Site, server: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from syndicate.sources import sitemap

    monkeypatch.setattr(sitemap, "BUDGET_TIMEOUTS", 2)  # 2 x 0.5 s
    urls = "".join(f"<url><loc>{server.base}/p/{n}/</loc></url>" for n in range(12))
    server.route("/sitemap.xml", f"<urlset>{urls}</urlset>", content_type="text/xml")
    for n in range(12):
        server.route(f"/p/{n}/", document(server, "heat.html"), content_type="text/html", delay=0.4)
    configure(
        site, sitemap_source(server.url("/sitemap.xml"), server.url("/p/*"), ", timeout: 0.5")
    )
    started = time.monotonic()
    _, output = gather(site, ok=False)
    assert time.monotonic() - started < 2.5
    assert "time budget of 1 s used up: " in output and "page(s) left for the next run" in output
    assert 0 < len(reviews(site, "longtake")) < 12  # the rest wait for the next run

    children = "".join(f"<sitemap><loc>{server.base}/c/{n}.xml</loc></sitemap>" for n in range(102))
    server.route("/index.xml", f"<sitemapindex>{children}</sitemapindex>", content_type="text/xml")
    for n in range(102):
        server.route(f"/c/{n}.xml", "<urlset/>", content_type="text/xml")
    configure(
        site,
        sitemap_source(server.url("/index.xml"), server.url("/p/*")).replace("longtake", "big"),
    )
    _, output = gather(site, ok=False)
    assert "the sitemap index lists 102 sitemaps; only the first 100 are read" in output


def test_a_sitemap_may_have_50_mb_and_is_read_as_a_stream(site: Site, server: FeedServer) -> None:
    from syndicate.sources.sitemap import parse_sitemap

    padding = "".join(
        f"<url><loc>{server.base}/other/{n}/{'y' * 400}</loc></url>" for n in range(25_000)
    )
    big = document(server, "sitemap.xml").replace(b"</urlset>", padding.encode() + b"</urlset>")
    assert len(big) > 10_000_000  # over the default max_bytes, which pages keep
    server.route("/sitemap.xml", big, content_type="text/xml")
    sitemap_site(site, server, server.url("/sitemap.xml"))
    (new, _, _), _ = gather(site)
    assert new == FILE_REVIEWS + 2
    pages, _ = parse_sitemap(big, server.url("/sitemap.xml"))
    assert len(pages) == 25_004


def test_over_long_values_are_not_stored_and_a_failed_record_stops_nothing(
    site: Site, server: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.route("/feed.xml", document(server, "rss20.xml"), etag='"' + "e" * 600 + '"')
    long_page = server.url("/reviews/" + "x" * 2100 + "/")
    server.route(
        "/sitemap.xml",
        document(server, "sitemap.xml").replace(
            b"</urlset>", f"<url><loc>{long_page}</loc></url></urlset>".encode()
        ),
        content_type="text/xml",
        last_modified="Mon, 23 Nov 2026 17:00:00 GMT; " + "x" * 100,
    )
    sitemap_site(site, server, server.url("/sitemap.xml"))
    configure(
        site,
        feed_source("long", server.url("/feed.xml"))
        + feed_source("doomed", server.url("/feed.xml")),
    )
    from syndicate.sources import remote

    real = remote.record

    def record(session, source, *args):  # type: ignore[no-untyped-def]
        if source.name == "doomed":
            raise RuntimeError("the database is gone\nand this is line two")
        return real(session, source, *args)

    monkeypatch.setattr(remote, "record", record)
    (new, _, _), output = gather(site, ok=False)
    assert new == FILE_REVIEWS + 4  # the feed and the sitemap, despite the doomed source
    assert "source doomed: could not be stored: RuntimeError: the database is gone;" in output
    assert state(site, "long").etag is None  # too long to store: simply not kept
    assert state(site, "longtake").last_modified is None
    assert "1 page URL(s) longer than 2,000 characters skipped" in (
        state(site, "longtake").last_error or ""
    )
    with Store(site.config.database_url) as store, store.session() as session:
        assert all(len(p.url) <= 2000 for p in session.scalars(select(SourcePage)))


def test_a_public_source_is_not_led_to_a_private_address(
    site: Site, server: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from syndicate.sources import http

    assert http.is_private("127.0.0.1") and http.is_private("10.1.2.3")
    assert http.is_private("169.254.169.254") and http.is_private("::1")
    assert http.is_private("::ffff:192.168.0.1") and not http.is_private("93.184.216.34")
    # "localhost" plays a public host here; 127.0.0.1 stays private.
    real = http.is_private
    monkeypatch.setattr(http, "is_private", lambda host: host != "localhost" and real(host))
    port = server.server.server_address[1]
    public = f"http://localhost:{port}"
    server.route("/to-private", status=302, headers={"Location": server.url("/feed.xml")})
    server.route("/to-self", status=302, headers={"Location": "/feed.xml"})
    server.route("/feed.xml", document(server, "rss20.xml"))
    urls = f"<url><loc>{server.url('/reviews/heat/')}</loc></url>"
    server.route("/sitemap.xml", f"<urlset>{urls}</urlset>", content_type="text/xml")
    sitemap_site(site, server, f"{public}/sitemap.xml", pattern="*/reviews/*")
    configure(
        site,
        feed_source("sneaky", f"{public}/to-private")
        + feed_source("fine", f"{public}/to-self")
        + feed_source("internal", server.url("/to-self")),
    )
    gather(site, ok=False)
    assert state(site, "sneaky").last_error == (
        f"refused: {server.url('/feed.xml')} is on a private or loopback address, "
        f"and the source {public}/to-private is public"
    )
    assert state(site, "fine").last_error is None and state(site, "internal").last_error is None
    assert "refused: " in (state(site, "longtake").last_error or "")
    assert not server.hits("/reviews/heat/")


def test_an_entry_without_a_link_links_to_the_home_page_and_json_titles_are_plain(
    site: Site, server: FeedServer
) -> None:
    server.route("/feed", rss_with_home(item("No link", "text")))
    server.route(
        "/feed.json",
        '{"version": "https://jsonfeed.org/version/1.1", "home_page_url": "/site/", '
        '"items": [{"id": "1", "title": "<b>Bold</b> &amp; tagged", "content_text": "x"}]}',
        content_type="application/feed+json",
    )
    configure(
        site, feed_source("f", server.url("/feed")) + feed_source("j", server.url("/feed.json"))
    )
    gather(site)
    assert [r.url for r in reviews(site, "f").values()] == [server.url("/home/")]
    (json_review,) = reviews(site, "j").values()
    assert json_review.title == "Bold & tagged"
    assert json_review.url == server.url("/site/")
