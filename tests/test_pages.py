"""The static pages in the output folder: the archive of issues, review pages, JSON-LD,
feed autodiscovery, and rewriting nothing when nothing changed."""

from __future__ import annotations

import email
import email.policy
import json
import posixpath
import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import frontmatter
import lxml.html
import pytest

from syndicate import pipeline
from syndicate.delivery import OutboxTransport
from syndicate.delivery.message import Letter, Outcome, Recipient
from syndicate.store import Store
from tests.conftest import EXAMPLE_READERS, Site

BASE = "https://reelnotes.example.com/"
FEED_TYPES = {"application/rss+xml", "application/atom+xml", "application/feed+json"}


def send_first_issue(site: Site) -> None:
    site.cli("subscribers", "import", "subscribers.csv")
    site.cli("run", "--once")


def switch_on_review_pages(site: Site) -> None:
    text = site.config_path.read_text(encoding="utf-8")
    site.write_config(text + "pages:\n  review_pages: true\n")


def messages(site: Site) -> list[email.message.EmailMessage]:
    return [
        email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        for path in site.emails()
    ]


def html_part(message: email.message.EmailMessage) -> str:
    part = message.get_body(("html",))
    assert part is not None
    return part.get_content()


def json_ld(page: str) -> list[object]:
    tree = lxml.html.fromstring(page)
    return [json.loads(s.text) for s in tree.xpath('//script[@type="application/ld+json"]')]


def pages_in(site: Site) -> list[Path]:
    return sorted(site.public.rglob("index.html"))


def film_data(site: Site) -> dict[str, dict[str, object]]:
    """Film title -> the front matter of its review, from the example reviews."""
    data = {}
    for path in site.reviews.glob("*.md"):
        meta = frontmatter.load(path).metadata
        data[meta["film"]] = meta
    return data


# --- the archive -----------------------------------------------------------------------


def test_the_view_in_browser_link_of_every_email_leads_to_the_issue_page(site: Site) -> None:
    send_first_issue(site)
    sent = messages(site)
    assert len(sent) == 6
    for message in sent:
        links = lxml.html.fromstring(html_part(message)).xpath(
            '//a[contains(., "View in your browser")]/@href'
        )
        assert links and set(links) == {f"{BASE}archive/weekly/1/"}
    page = site.public / "archive" / "weekly" / "1" / "index.html"
    assert page.is_file()
    text = page.read_text(encoding="utf-8")
    assert 'href="https://reelnotes.example.com/archive/weekly/1/"' in text  # canonical
    assert "Hello reader," in text  # the digest's name_fallback, no subscriber's name


def test_the_issue_page_shows_no_subscriber_s_personal_values(site: Site) -> None:
    send_first_issue(site)
    page = (site.public / "archive" / "weekly" / "1" / "index.html").read_text("utf-8")
    personal: set[str] = set()
    for message in messages(site):
        personal.add(str(message["To"].addresses[0].addr_spec))
        for url in re.findall(r"<(https?://[^>]+)>", str(message["List-Unsubscribe"])):
            personal.add(url)
            personal.add(url.rsplit("/", 1)[-1])  # the token on its own
        personal.update(
            lxml.html.fromstring(html_part(message)).xpath(
                '//a[contains(@href, "/unsubscribe/") or contains(@href, "/preferences/")]/@href'
            )
        )
    personal.update(name for name in EXAMPLE_READERS.values() if name)
    personal.update(EXAMPLE_READERS)
    assert len(personal) > 12
    leaked = sorted(value for value in personal if value in page)
    assert leaked == []
    assert "%%" not in page
    assert "/unsubscribe/" not in page and "/preferences/" not in page
    # The unsubscribe and preference links became a sign-up and a past-issues link.
    tree = lxml.html.fromstring(page)
    assert tree.xpath(f'//div[@class="issue-email"]//a[@href="{BASE}subscribe"]')
    assert tree.xpath('//div[@class="issue-email"]//a[@href="../"][. = "Past issues"]')


def test_the_issue_page_carries_the_reviews_as_json_ld(site: Site) -> None:
    send_first_issue(site)
    page = (site.public / "archive" / "weekly" / "1" / "index.html").read_text("utf-8")
    [data] = json_ld(page)
    assert data["@context"] == "https://schema.org"
    assert data["@type"] == "ItemList"
    assert data["url"] == f"{BASE}archive/weekly/1/"
    films = film_data(site)
    items = [element["item"] for element in data["itemListElement"]]
    assert [e["position"] for e in data["itemListElement"]] == list(range(1, 11))
    assert {item["itemReviewed"]["name"] for item in items} == set(films)
    for item in items:
        meta = films[item["itemReviewed"]["name"]]
        assert item["@type"] == "Review"
        assert item["name"] == meta["title"]
        assert item["itemReviewed"]["@type"] == "Movie"
        assert item["itemReviewed"]["director"] == {"@type": "Person", "name": meta["director"]}
        assert item["itemReviewed"]["dateCreated"] == str(meta["year"])
        assert item["reviewRating"] == {
            "@type": "Rating",
            "ratingValue": pytest.approx(float(meta["rating"])),
            "bestRating": 5,
            "worstRating": 0,
        }
        assert item["author"] == {"@type": "Person", "name": meta["author"]}
        assert datetime.fromisoformat(item["datePublished"]) == meta["published"]
        assert item["url"].startswith(f"{BASE}reviews/")


def test_the_archive_indexes_list_the_issues_newest_first(site: Site) -> None:
    send_first_issue(site)
    site.write_review(
        "new-one.md",
        "---\ntitle: A brand new review\nfilm: New One\nyear: 2026\nrating: 3\n"
        "author: Sam Lee\npublished: 2026-11-25T08:00:00+00:00\n---\n\nShort.\n",
    )
    site.cli("run", "--once")
    assert (site.public / "archive" / "weekly" / "2" / "index.html").is_file()
    for index, prefix in [("archive/index.html", "weekly/"), ("archive/weekly/index.html", "")]:
        tree = lxml.html.fromstring((site.public / index).read_text("utf-8"))
        links = tree.xpath('//ul[@class="entries"]//a[@class="title"]/@href')
        assert links == [f"{prefix}2/", f"{prefix}1/"]
    # Issue 1 now links forward to issue 2, and issue 2 back to issue 1.
    one = lxml.html.fromstring((site.public / "archive/weekly/1/index.html").read_text("utf-8"))
    assert one.xpath('//a[@rel="next"]/@href') == ["../2/"]
    two = lxml.html.fromstring((site.public / "archive/weekly/2/index.html").read_text("utf-8"))
    assert two.xpath('//a[@rel="prev"]/@href') == ["../1/"]


def test_the_issue_page_is_written_before_the_first_email_goes_out(site: Site) -> None:
    """A reader who clicks "view in browser" in the first email of a long send finds it."""
    site.cli("subscribers", "import", "subscribers.csv")
    site.cli("gather")
    config = site.config
    page = site.public / "archive" / "weekly" / "1" / "index.html"
    seen: list[bool] = []

    class Watching(OutboxTransport):
        def send(self, letter: Letter, recipients: Sequence[Recipient]) -> list[Outcome]:
            seen.append(page.is_file())
            return super().send(letter, recipients)

    with Store(config.database_url) as store:
        outcome = pipeline.send_digest(config, store, "weekly", Watching(site.outbox))
    assert outcome.report is not None and outcome.report.sent == 6
    assert seen and all(seen)


# --- review pages ----------------------------------------------------------------------


def test_review_pages_are_written_only_when_switched_on(site: Site) -> None:
    send_first_issue(site)
    assert not (site.public / "reviews").exists()

    switch_on_review_pages(site)
    result = site.cli("pages")
    assert "wrote public/reviews/past-lives/index.html" in result.output
    assert len(list((site.public / "reviews").glob("*/index.html"))) == 10
    # Each is where the feeds and emails already link the review.
    feed = json.loads((site.public / "feed.json").read_text("utf-8"))
    for item in feed["items"]:
        path = urlsplit(item["url"]).path.lstrip("/")
        assert (site.public / path / "index.html").is_file(), item["url"]


def test_a_review_page_carries_review_json_ld(site: Site) -> None:
    switch_on_review_pages(site)
    site.cli("run", "--once")
    page = (site.public / "reviews" / "past-lives" / "index.html").read_text("utf-8")
    [data] = json_ld(page)
    meta = film_data(site)["Past Lives"]
    assert data["@context"] == "https://schema.org"
    assert data["@type"] == "Review"
    assert data["url"] == f"{BASE}reviews/past-lives/"
    assert data["itemReviewed"] == {
        "@type": "Movie",
        "name": "Past Lives",
        "director": {"@type": "Person", "name": "Celine Song"},
        "dateCreated": "2023",
        "image": f"{BASE}images/past-lives.jpg",
    }
    assert data["reviewRating"]["ratingValue"] == pytest.approx(float(meta["rating"]))
    assert data["reviewRating"]["bestRating"] == 5
    assert data["reviewRating"]["worstRating"] == 0
    assert data["author"] == {"@type": "Person", "name": meta["author"]}
    assert data["datePublished"] == "2026-11-20T09:00:00+00:00"
    tree = lxml.html.fromstring(page)
    assert tree.xpath('//link[@rel="canonical"]/@href') == [f"{BASE}reviews/past-lives/"]
    assert tree.xpath("//h1/text()") == ["Past Lives: the road not taken"]


def test_a_withdrawn_review_loses_its_page(site: Site) -> None:
    switch_on_review_pages(site)
    site.cli("run", "--once")
    page = site.public / "reviews" / "arrival" / "index.html"
    assert page.is_file()
    (site.reviews / "arrival.md").unlink()
    site.cli("gather")
    result = site.cli("pages")
    assert "removed public/reviews/arrival/index.html" in result.output
    assert not page.exists()
    assert not page.parent.exists()


def test_check_warns_when_review_links_are_not_under_the_site(site: Site) -> None:
    text = site.config_path.read_text(encoding="utf-8").replace(
        "    path: reviews\n",
        '    path: reviews\n    link: "https://elsewhere.example.org/{slug}.html"\n',
    )
    site.write_config(text)
    assert "warning" not in site.cli("check").output  # no review pages: nothing to warn
    switch_on_review_pages(site)
    result = site.cli("check")
    assert "source reviews: its reviews get no page" in result.output
    site.cli("run", "--once")
    assert not (site.public / "reviews").exists()


# --- escaping, autodiscovery, rewriting ------------------------------------------------

HOSTILE = """\
---
title: "Nasty </script><script>alert('title')</script> & co"
film: "<b>Bold</b> </script> film"
year: 2025
director: "Dir <img src=x onerror=alert(1)>"
rating: 2.5
author: "Eve <eve@example.com>"
published: 2026-11-25T06:00:00+00:00
summary: "A summary with <script>alert('summary')</script> in it."
tags: ["<tag>"]
---

Body text.
"""


def test_titles_and_names_are_escaped_and_json_ld_cannot_close_its_script(site: Site) -> None:
    switch_on_review_pages(site)
    site.write_review("nasty.md", HOSTILE)
    send_first_issue(site)
    pages = [
        site.public / "archive" / "weekly" / "1" / "index.html",
        site.public / "reviews" / "nasty" / "index.html",
        site.public / "archive" / "index.html",
    ]
    for path in pages:
        text = path.read_text("utf-8")
        assert "<script>alert" not in text, path
        assert "<img src=x" not in text, path
        assert "<b>Bold</b>" not in text, path
        tree = lxml.html.fromstring(text)
        scripts = tree.xpath("//script")
        assert all(s.get("type") == "application/ld+json" for s in scripts), path
        for script in scripts:
            assert "</" not in script.text and "<" not in script.text
    review = (site.public / "reviews" / "nasty" / "index.html").read_text("utf-8")
    assert "Nasty &lt;/script&gt;&lt;script&gt;alert(" in review
    [data] = json_ld(review)
    assert data["name"] == "Nasty </script><script>alert('title')</script> & co"
    assert data["itemReviewed"]["name"] == "<b>Bold</b> </script> film"
    assert data["itemReviewed"]["director"]["name"] == "Dir <img src=x onerror=alert(1)>"
    [issue] = json_ld((site.public / "archive" / "weekly" / "1" / "index.html").read_text("utf-8"))
    names = [e["item"]["name"] for e in issue["itemListElement"]]
    assert "Nasty </script><script>alert('title')</script> & co" in names


def test_every_page_links_the_feeds_and_its_stylesheet(site: Site) -> None:
    switch_on_review_pages(site)
    send_first_issue(site)
    pages = pages_in(site)
    assert len(pages) == 13  # 10 reviews, the issue, the digest's index, the archive index
    for path in pages:
        tree = lxml.html.fromstring(path.read_text("utf-8"))
        links = tree.xpath('//link[@rel="alternate"]')
        assert len(links) == 3, path  # once each, even on an issue page (the email has them)
        alternates = {link.get("type"): link.get("href") for link in links}
        assert alternates == {
            "application/rss+xml": f"{BASE}feed.xml",
            "application/atom+xml": f"{BASE}atom.xml",
            "application/feed+json": f"{BASE}feed.json",
        }, path
        assert set(alternates) == FEED_TYPES
        # Relative links to the output folder's own files resolve from any web server.
        folder = path.parent.relative_to(site.public).as_posix()
        for href in tree.xpath("//link[@rel='stylesheet']/@href | //a/@href"):
            if "://" in href or href.startswith(("#", "mailto:")):
                continue
            target = site.public / posixpath.normpath(posixpath.join(folder, href))
            assert target.is_file() or (target / "index.html").is_file(), (path, href)
        assert tree.xpath("//meta[@name='viewport']"), path
    assert (site.public / "static" / "style.css").is_file()


def test_building_again_with_nothing_changed_rewrites_nothing(site: Site) -> None:
    switch_on_review_pages(site)
    send_first_issue(site)
    files = sorted(p for p in site.public.rglob("*") if p.suffix in (".html", ".css"))
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files}
    result = site.cli("pages")
    assert "0 page file(s) written, 14 unchanged" in result.output
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files} == before
    again = site.cli("run", "--once")
    assert "Pages:    0 page file(s) written" in again.output
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files} == before


def test_pages_can_be_switched_off(site: Site) -> None:
    text = site.config_path.read_text(encoding="utf-8")
    site.write_config(text + "pages:\n  archive: false\n")
    send_first_issue(site)
    assert not (site.public / "archive" / "weekly").exists()
    assert "none are switched on" in site.cli("pages").output


def test_a_digest_named_like_a_feed_archive_page_is_refused(site: Site) -> None:
    text = site.config_path.read_text(encoding="utf-8")
    site.write_config(
        text.replace("  - name: weekly\n", "  - name: '2'\n").replace("    weekly: {", "    '2': {")
    )
    result = site.cli("check", ok=False)
    assert "digests.0.name: a digest name must not be only digits" in result.output


# --- the layout, shared with the web side ----------------------------------------------


def test_the_site_s_templates_override_the_layout_and_the_stylesheet(site: Site) -> None:
    """The web app renders its forms with pages/base.html.j2 via render_page(); a site
    changes the look with its own templates/pages/ files."""
    from syndicate.pages import render_page

    folder = site.root / "templates" / "pages"
    folder.mkdir(parents=True)
    (folder / "style.css").write_text("body { color: teal; }\n", encoding="utf-8")
    (folder / "hello.html.j2").write_text(
        '{% extends "pages/base.html.j2" %}{% block title %}Hi {{ who }}{% endblock %}'
        "{% block content %}<p>Hello {{ who }}</p>{% endblock %}",
        encoding="utf-8",
    )
    text = site.config_path.read_text(encoding="utf-8")
    site.write_config(text + "templates: templates\n")

    page = render_page(site.config, "pages/hello.html.j2", root="/", who="<Ann>")
    tree = lxml.html.fromstring(page)
    assert tree.xpath("//title/text()") == ["Hi <Ann>"]
    assert "<p>Hello &lt;Ann&gt;</p>" in page
    assert tree.xpath("//link[@rel='stylesheet']/@href") == ["/static/style.css"]
    assert {link.get("type") for link in tree.xpath("//link[@rel='alternate']")} == FEED_TYPES
    assert tree.xpath("//nav//a/text()")[:2] == ["Archive", "Subscribe"]

    send_first_issue(site)
    assert (site.public / "static" / "style.css").read_text("utf-8") == "body { color: teal; }\n"
