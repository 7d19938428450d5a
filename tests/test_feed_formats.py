"""Every feed document, judged by validators no one here wrote, and what reader apps show.

Atom is validated against RFC 4287's RELAX NG schema and JSON Feed against a JSON Feed 1.1
schema (both kept in tests/schemas/, with their provenance); RSS and Atom are parsed by
feedparser, and everything is compared with the store.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import lxml.html
from lxml import etree

from syndicate.store import Review
from tests.conftest import Site
from tests.test_feeds import (
    ATOM,
    CONTENT_ENCODED,
    ID_PREFIX,
    SITE_URL,
    build,
    feed_files,
    live_reviews,
    load_json,
    parse,
)

SCHEMAS = Path(__file__).parent / "schemas"
REVIEW = "{https://syndicate.example/ns/review/1.0}"
MEDIA = "{http://search.yahoo.com/mrss/}"
EXTRA_FEEDS = """\
  extra:
    - {name: critics, kind: author, folder: "critics/{slug}/"}
    - {name: sources, kind: source, folder: "from/{slug}/"}
    - {name: picks, kind: featured, folder: "picks/", title: "{site}: editors' picks"}
"""

HOSTILE = """\
---
title: "Nosferatu <remastered> & restored"
film: Nosferatu
year: 1922
director: F. W. Murnau
rating: 4.5
author: Priya Raman
published: 2026-11-22T10:00:00+01:00
tags: [horror, silent]
image: posters/nosferatu.png
---

A shadow climbs the stairs. <script>alert('x')</script>
<a href="javascript:alert(1)" onclick="steal()">click</a> and <a href="../silent-films/">more</a>.
<img src="stills/stairs.jpg" alt="The stairs" onerror="steal()">
"""


@cache
def atom_schema() -> etree.RelaxNG:
    return etree.RelaxNG(etree.parse(str(SCHEMAS / "atom.rng")))


@cache
def json_feed_validator() -> jsonschema.Draft7Validator:
    schema = json.loads((SCHEMAS / "jsonfeed-1.1.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    # The format checker enforces RFC 3339 dates (rfc3339-validator is a dev dependency).
    return jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())


def with_extra_feeds(site: Site) -> None:
    text = site.config_path.read_text(encoding="utf-8")
    site.write_config(text.replace("  items: 20\n", "  items: 20\n" + EXTRA_FEEDS))


def stored(site: Site) -> dict[str, Review]:
    return {f"{ID_PREFIX}{r.id}": r for r in live_reviews(site)}


def when(value: Any) -> datetime:
    return datetime(*value[:6], tzinfo=UTC)


# --- the validators ----------------------------------------------------------------------


def test_every_atom_document_is_valid_rfc_4287(site: Site) -> None:
    with_extra_feeds(site)
    site.write_review("nosferatu.md", HOSTILE)
    build(site)

    documents = [p for p in feed_files(site) if p.name == "atom.xml"]
    assert len(documents) > 40  # site, tags, critics, sources, picks, and their archives
    for path in documents:
        document = etree.parse(str(path))
        assert atom_schema().validate(document), f"{path}: {atom_schema().error_log}"
        # What the RELAX NG schema leaves to Schematron: an author for every entry.
        feed = document.getroot()
        assert feed.find(f"{ATOM}author/{ATOM}name") is not None


def test_every_json_feed_is_valid_json_feed_1_1(site: Site) -> None:
    with_extra_feeds(site)
    site.write_review("nosferatu.md", HOSTILE)
    build(site)

    documents = [p for p in feed_files(site) if p.name == "feed.json"]
    assert len(documents) > 40
    for path in documents:
        errors = [
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in json_feed_validator().iter_errors(load_json(path))
        ]
        assert errors == [], path


def test_every_document_agrees_with_the_store(site: Site) -> None:
    """feedparser sees each item with the store's title, link and dates, in every feed."""
    with_extra_feeds(site)
    build(site)
    reviews = stored(site)

    seen: set[str] = set()
    for path in feed_files(site):
        if path.suffix == ".json":
            for item in load_json(path)["items"]:
                review = reviews[item["id"]]
                assert (item["title"], item["url"]) == (review.title, review.url)
                assert datetime.fromisoformat(item["date_published"]) == review.published
                assert datetime.fromisoformat(item["date_modified"]) == review.updated
                seen.add(item["id"])
            continue
        for entry in parse(path).entries:
            review = reviews[entry.id]
            assert (entry.title, entry.link) == (review.title, review.url)
            assert when(entry.published_parsed) == review.published
            if path.name == "atom.xml":
                assert when(entry.updated_parsed) == review.updated
            seen.add(entry.id)
    assert seen == set(reviews)


# --- content -----------------------------------------------------------------------------


def test_content_is_the_whole_review_sanitised_with_absolute_links(site: Site) -> None:
    site.write_review("nosferatu.md", HOSTILE)
    build(site)
    review = stored(site)[f"{ID_PREFIX}nosferatu"]

    rss = etree.parse(str(site.public / "feed.xml")).getroot()
    item = next(i for i in rss.iter("item") if i.findtext("guid").endswith(":nosferatu"))
    atom = etree.parse(str(site.public / "atom.xml")).getroot()
    entry = next(
        e for e in atom.iter(f"{ATOM}entry") if e.findtext(f"{ATOM}id").endswith("nosferatu")
    )
    json_item = next(
        i for i in load_json(site.public / "feed.json")["items"] if i["id"].endswith("nosferatu")
    )
    bodies = [
        item.findtext(CONTENT_ENCODED),
        entry.findtext(f"{ATOM}content"),
        json_item["content_html"],
    ]
    assert bodies == [review.body_html] * 3
    page = lxml.html.fromstring(f"<div>{review.body_html}</div>")
    assert not page.xpath("//script") and "alert" not in review.body_html
    assert not [a for e in page.iter() for a in e.attrib if a.startswith("on")]
    hrefs = [a.get("href") for a in page.iter("a") if a.get("href")]
    assert f"{SITE_URL}reviews/silent-films/" in hrefs
    assert all(h.startswith("https://") for h in hrefs)
    assert page.xpath("//img/@src") == [f"{SITE_URL}reviews/nosferatu/stills/stairs.jpg"]
    # Titles with markup characters arrive as text, in every format.
    assert item.findtext("title") == entry.findtext(f"{ATOM}title") == review.title
    assert json_item["title"] == "Nosferatu <remastered> & restored"


def test_reviews_travel_as_reviews_in_every_format(site: Site) -> None:
    """Film, year, director, rating and verdict: the review namespace and `_review`."""
    build(site)
    dune = f"{ID_PREFIX}dune-part-two"
    expected = {
        "film": "Dune: Part Two",
        "year": "2024",
        "director": "Denis Villeneuve",
        "rating": "2.5",
        "verdict": stored(site)[dune].summary,
    }

    rss = etree.parse(str(site.public / "feed.xml")).getroot()
    item = next(i for i in rss.iter("item") if i.findtext("guid") == dune)
    atom = etree.parse(str(site.public / "atom.xml")).getroot()
    entry = next(e for e in atom.iter(f"{ATOM}entry") if e.findtext(f"{ATOM}id") == dune)
    for element in (item, entry):
        assert {k: element.findtext(f"{REVIEW}{k}") for k in expected} == expected
        rating = element.find(f"{REVIEW}rating")
        assert (rating.get("worst"), rating.get("best")) == ("0", "5")
    json_item = next(i for i in load_json(site.public / "feed.json")["items"] if i["id"] == dune)
    review = json_item["_review"]
    assert review["about"] == "https://syndicate.example/ns/review/1.0"
    assert (review["film"], review["year"], review["director"]) == (
        "Dune: Part Two",
        2024,
        "Denis Villeneuve",
    )
    assert review["rating"] == 2.5 and review["verdict"] == expected["verdict"]
    # feedparser, as reader apps built on it see the namespace.
    parsed = next(e for e in parse(site.public / "feed.xml").entries if e.id == dune)
    assert parsed.review_film == "Dune: Part Two"


def test_posters_are_enclosures_with_type_and_length_when_the_file_is_known(site: Site) -> None:
    poster = site.root / "www" / "images" / "dune-part-two.jpg"
    poster.parent.mkdir(parents=True)
    poster.write_bytes(b"\xff\xd8" + b"x" * 4321)
    text = site.config_path.read_text(encoding="utf-8")
    site.write_config(text.replace("  items: 20\n", "  items: 20\n  media_root: www\n"))
    build(site)
    dune, aftersun = f"{ID_PREFIX}dune-part-two", f"{ID_PREFIX}aftersun"
    image = f"{SITE_URL}images/dune-part-two.jpg"

    rss = etree.parse(str(site.public / "feed.xml")).getroot()
    items = {i.findtext("guid"): i for i in rss.iter("item")}
    enclosure = items[dune].find("enclosure")
    assert dict(enclosure.attrib) == {"url": image, "length": "4323", "type": "image/jpeg"}
    media = items[dune].find(f"{MEDIA}content")
    assert (media.get("url"), media.get("type"), media.get("medium")) == (
        image,
        "image/jpeg",
        "image",
    )
    assert media.get("fileSize") == "4323"
    # A poster not on disk: RSS's "length unknown" (0), and no length in Atom.
    assert items[aftersun].find("enclosure").get("length") == "0"

    atom = etree.parse(str(site.public / "atom.xml")).getroot()
    entries = {e.findtext(f"{ATOM}id"): e for e in atom.iter(f"{ATOM}entry")}
    link = entries[dune].find(f"{ATOM}link[@rel='enclosure']")
    assert (link.get("href"), link.get("type"), link.get("length")) == (image, "image/jpeg", "4323")
    assert entries[aftersun].find(f"{ATOM}link[@rel='enclosure']").get("length") is None
    json_items = {i["id"]: i for i in load_json(site.public / "feed.json")["items"]}
    assert json_items[dune]["image"] == image
    parsed = next(e for e in parse(site.public / "feed.xml").entries if e.id == dune)
    assert parsed.enclosures[0].href == image


def test_language_authors_and_categories(site: Site) -> None:
    text = site.config_path.read_text(encoding="utf-8")
    site.write_config(text.replace("language: en", "language: en-GB"))
    build(site)
    reviews = stored(site)

    atom = etree.parse(str(site.public / "atom.xml")).getroot()
    assert atom.get("{http://www.w3.org/XML/1998/namespace}lang") == "en-GB"
    assert parse(site.public / "feed.xml").feed.language == "en-GB"
    assert load_json(site.public / "feed.json")["language"] == "en-GB"
    for entry in parse(site.public / "atom.xml").entries:
        assert entry.author == reviews[entry.id].author
        assert [t.term for t in entry.tags] == reviews[entry.id].tags
    for item in load_json(site.public / "feed.json")["items"]:
        assert item["authors"] == [{"name": reviews[item["id"]].author}]


# --- autodiscovery -----------------------------------------------------------------------


def test_the_digest_page_links_the_site_feeds_for_autodiscovery(site: Site) -> None:
    site.cli("gather")
    site.cli("digest", "preview", "weekly", "--output", "out")
    page = lxml.html.fromstring((site.root / "out" / "weekly.html").read_bytes())

    links = {
        link.get("type"): link.get("href") for link in page.xpath("//head/link[@rel='alternate']")
    }
    assert links == {
        "application/rss+xml": f"{SITE_URL}feed.xml",
        "application/atom+xml": f"{SITE_URL}atom.xml",
        "application/feed+json": f"{SITE_URL}feed.json",
    }
