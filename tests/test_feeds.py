"""The RSS, Atom and JSON feeds, as feed readers and web servers see them.

Feeds are built with `syndicate run --once` or `syndicate gather` + `syndicate feeds` on
a temporary copy of the example site; feedparser (what many reader apps use) and lxml
read the files, and the store is the truth they are compared with.
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

import feedparser
from lxml import etree
from sqlalchemy import select

from syndicate.store import Review, Store
from tests.conftest import Site

SITE_URL = "https://reelnotes.example.com/"
ID_PREFIX = "tag:reelnotes.example.com,2026:review:"
ATOM = "{http://www.w3.org/2005/Atom}"
CONTENT_ENCODED = "{http://purl.org/rss/1.0/modules/content/}encoded"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
OLD = 1_000_000_000  # 2001-09-09: a modification time no build could produce

DRAMA = """\
---
title: "Tár: the conductor and the score"
film: Tár
year: 2022
director: Todd Field
rating: 4.0
author: Maya Okafor
published: 2026-11-23T09:00:00+00:00
tags: [Drama, Music Films]
---

Cate Blanchett, in total command.
"""


def live_reviews(site: Site) -> list[Review]:
    """What readers should see: live reviews, newest first."""
    with Store(site.config.database_url) as store, store.session() as session:
        reviews = session.scalars(select(Review).where(Review.withdrawn_at.is_(None))).all()
    return sorted(reviews, key=lambda r: (-r.published.timestamp(), r.id))


def parse(path: Path) -> feedparser.FeedParserDict:
    assert path.suffix == ".xml", "feedparser 6.0 reads RSS and Atom; see load_json"
    parsed = feedparser.parse(path.read_bytes())
    assert parsed.bozo == 0, f"{path}: {parsed.get('bozo_exception')}"
    return parsed


def load_json(path: Path) -> dict:
    feed = json.loads(path.read_bytes())
    assert feed["version"] == "https://jsonfeed.org/version/1.1"
    return feed


def ids(path: Path) -> list[str]:
    if path.suffix == ".json":
        return [item["id"].removeprefix(ID_PREFIX) for item in load_json(path)["items"]]
    return [entry.id.removeprefix(ID_PREFIX) for entry in parse(path).entries]


FEED_NAMES = {"feed.xml", "atom.xml", "feed.json"}


def feed_files(site: Site) -> list[Path]:
    """The feed documents (the output folder also holds the pages, syndicate.pages)."""
    return sorted(p for p in site.public.rglob("*") if p.name in FEED_NAMES and p.is_file())


def snapshot(site: Site) -> dict[Path, tuple[int, bytes]]:
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in feed_files(site)}


def age_all(site: Site) -> None:
    """Give every feed file an old modification time, so any rewrite shows."""
    for path in feed_files(site):
        os.utime(path, (OLD, OLD))


def rewritten(site: Site) -> set[str]:
    return {
        p.relative_to(site.public).as_posix()
        for p in feed_files(site)
        if p.stat().st_mtime_ns != OLD * 1_000_000_000
    }


def written_by(output: str) -> set[str]:
    return set(re.findall(r"wrote public/(\S+)", output))


def build(site: Site) -> str:
    site.cli("gather")
    return site.cli("feeds").output


def set_items(site: Site, items: int) -> None:
    text = site.config_path.read_text(encoding="utf-8")
    assert "items: 20" in text
    site.write_config(text.replace("items: 20", f"items: {items}"))


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} should appear once in {path.name}"
    path.write_text(text.replace(old, new), encoding="utf-8")


# --- what readers get --------------------------------------------------------------------


def test_every_feed_parses_cleanly_after_a_run(site: Site) -> None:
    site.cli("run", "--once")

    files = feed_files(site)
    for name in ("feed.xml", "atom.xml", "feed.json"):
        assert site.public / name in files
        assert site.public / "history" / "1" / name in files
    assert len(files) > 60  # the site feeds, three per tag, and their archive pages
    for path in files:
        if path.name == "feed.json":
            assert load_json(path)["items"]
            continue
        parsed = parse(path)
        assert parsed.version == ("rss20" if path.name == "feed.xml" else "atom10")
        assert parsed.entries
        etree.fromstring(path.read_bytes())  # well-formed for strict XML parsers too


def test_entries_match_the_store_newest_first_up_to_feeds_items(site: Site) -> None:
    set_items(site, 3)
    build(site)
    expected = live_reviews(site)[:3]

    for name in ("feed.xml", "atom.xml"):
        entries = parse(site.public / name).entries

        assert [e.id for e in entries] == [f"{ID_PREFIX}{r.id}" for r in expected]
        for entry, review in zip(entries, expected, strict=True):
            assert entry.title == review.title
            assert entry.link == review.url
            assert entry.link.startswith(SITE_URL)
            assert datetime(*entry.published_parsed[:6], tzinfo=UTC) == review.published
            if name == "atom.xml":
                assert datetime(*entry.updated_parsed[:6], tzinfo=UTC) == review.updated
            assert entry.summary == review.summary
            assert [t.term for t in entry.tags] == review.tags
            assert entry.author == review.author
        published = [e.published_parsed for e in entries]
        assert published == sorted(published, reverse=True)

        # Tag feeds are limited the same way: four reviews are tagged drama.
        assert len(ids(site.public / "tags" / "drama" / name)) == 3

    items = load_json(site.public / "feed.json")["items"]
    assert [i["id"] for i in items] == [f"{ID_PREFIX}{r.id}" for r in expected]
    for item, review in zip(items, expected, strict=True):
        assert item["title"] == review.title
        assert item["url"] == review.url
        assert datetime.fromisoformat(item["date_published"]) == review.published
        assert datetime.fromisoformat(item["date_modified"]) == review.updated
        assert item["summary"] == review.summary
        assert item["content_html"] == review.body_html
        assert item["tags"] == review.tags
        assert item["authors"] == [{"name": review.author}]
    assert len(ids(site.public / "tags" / "drama" / "feed.json")) == 3


def test_atom_has_the_required_elements(site: Site) -> None:
    build(site)
    for path in [site.public / "atom.xml", site.public / "tags" / "sci-fi" / "atom.xml"]:
        url = SITE_URL + path.relative_to(site.public).as_posix()
        feed = etree.fromstring(path.read_bytes())

        assert feed.tag == f"{ATOM}feed"
        assert feed.findtext(f"{ATOM}id").startswith("tag:reelnotes.example.com,")
        assert feed.findtext(f"{ATOM}title")
        assert RFC3339.match(feed.findtext(f"{ATOM}updated"))
        assert feed.findtext(f"{ATOM}author/{ATOM}name") == "Reel Notes"
        links = {link.get("rel"): link.get("href") for link in feed.findall(f"{ATOM}link")}
        assert links["self"] == url
        assert links["alternate"] == SITE_URL
        entries = feed.findall(f"{ATOM}entry")
        assert entries
        for entry in entries:
            assert entry.findtext(f"{ATOM}id").startswith(ID_PREFIX)
            assert entry.findtext(f"{ATOM}title")
            assert RFC3339.match(entry.findtext(f"{ATOM}updated"))
            assert RFC3339.match(entry.findtext(f"{ATOM}published"))
            assert entry.findtext(f"{ATOM}summary")
            assert entry.find(f"{ATOM}content").get("type") == "html"
            link = entry.find(f"{ATOM}link")
            assert link.get("rel", "alternate") == "alternate"
            assert link.get("href").startswith(f"{SITE_URL}reviews/")


def test_rss_has_guids_self_link_language_and_full_html_content(site: Site) -> None:
    build(site)
    reviews = {r.id: r for r in live_reviews(site)}
    rss = etree.fromstring((site.public / "feed.xml").read_bytes())
    channel = rss.find("channel")

    assert rss.get("version") == "2.0"
    assert channel.findtext("title") == "Reel Notes"
    assert channel.findtext("link") == SITE_URL
    assert channel.findtext("description") == "Film reviews."
    assert channel.findtext("language") == "en"
    self_link = channel.find(f"{ATOM}link")
    assert (self_link.get("rel"), self_link.get("href")) == ("self", f"{SITE_URL}feed.xml")

    items = channel.findall("item")
    assert len(items) == len(reviews) == 10
    for item in items:
        guid = item.find("guid")
        assert guid.get("isPermaLink") == "false"
        assert guid.text.startswith(ID_PREFIX)
        review = reviews[guid.text.removeprefix(ID_PREFIX)]
        assert item.findtext("link") == review.url
        assert parsedate_to_datetime(item.findtext("pubDate")) == review.published
        assert item.findtext("pubDate").endswith("+0000")  # RFC 822 with a zone
        assert item.findtext("description") == review.summary
        assert [c.text for c in item.findall("category")] == review.tags
        # The whole review, not a teaser: the last paragraph of the file is there.
        assert item.findtext(CONTENT_ENCODED) == review.body_html
    dune = next(i for i in items if i.findtext("guid") == f"{ID_PREFIX}dune-part-two")
    content = dune.findtext(CONTENT_ENCODED)
    assert "<h2>Where the story picks up</h2>" in content
    assert "<blockquote>" in content
    assert "haunted by anyone you meet along the way.</p>" in content
    assert f'href="{SITE_URL}reviews/arrival/"' in content


# --- ids that never change ---------------------------------------------------------------


def test_ids_stay_the_same_across_rebuilds_edits_and_renames(site: Site) -> None:
    build(site)

    def by_title(name: str) -> dict[str, str]:
        return {e.title: e.id for e in parse(site.public / name).entries}

    before = {name: by_title(name) for name in ("feed.xml", "atom.xml")}
    atom_before = {e.id: e for e in parse(site.public / "atom.xml").entries}
    feed_ids_before = {
        name: parse(site.public / name).feed.id for name in ("atom.xml", "tags/drama/atom.xml")
    }

    site.cli("feeds")  # a rebuild
    # Spirited Away has no `updated` key: the edit itself makes it an update.
    edit(site.reviews / "spirited-away.md", "rating: 5.0", "rating: 4.5")
    edit(site.reviews / "spirited-away.md", "animation season", "animation season, again")
    (site.reviews / "2019").mkdir()
    (site.reviews / "parasite.md").rename(site.reviews / "2019" / "parasite.md")
    (site.reviews / "get-out.md").rename(site.reviews / "get-out-2017.md")
    # A new spelling of an existing tag joins the drama feed; that feed stays the same feed.
    site.write_review("tar.md", DRAMA)
    build(site)

    for name in ("feed.xml", "atom.xml"):
        after = by_title(name)
        assert {t: after[t] for t in before[name]} == before[name]
    atom_after = {e.id: e for e in parse(site.public / "atom.xml").entries}
    edited = f"{ID_PREFIX}spirited-away"
    assert atom_after[edited].published == atom_before[edited].published
    assert atom_after[edited].updated_parsed > atom_before[edited].updated_parsed
    assert "animation season, again" in atom_after[edited].content[0].value
    assert atom_after[f"{ID_PREFIX}parasite"].link == f"{SITE_URL}reviews/parasite/"
    for name, feed_id in feed_ids_before.items():
        assert parse(site.public / name).feed.id == feed_id


def test_a_revised_review_is_marked_updated_in_its_place_not_as_new(site: Site) -> None:
    """A revision readers care about (issue 8): the item keeps its id, its publication
    date and its place; only its modification date moves (RSS has none to move)."""
    build(site)

    def read() -> dict[str, list[dict[str, object]]]:
        """Per format, each item's id, published and updated (None in RSS), in order."""
        found: dict[str, list[dict[str, object]]] = {}
        for name in ("feed.xml", "atom.xml", "tags/sci-fi/atom.xml"):
            found[name] = [
                {
                    "id": e.id.removeprefix(ID_PREFIX),
                    "published": datetime(*e.published_parsed[:6], tzinfo=UTC),
                    "updated": (
                        datetime(*e.updated_parsed[:6], tzinfo=UTC) if "atom" in name else None
                    ),
                }
                for e in parse(site.public / name).entries
            ]
        found["feed.json"] = [
            {
                "id": i["id"].removeprefix(ID_PREFIX),
                "published": datetime.fromisoformat(i["date_published"]),
                "updated": datetime.fromisoformat(i["date_modified"]),
            }
            for i in load_json(site.public / "feed.json")["items"]
        ]
        return found

    before = read()
    # Arrival keeps `updated: 2026-10-02...` in its front matter: the editor changes the
    # rating and flags a correction, but leaves that date alone.
    arrival = site.reviews / "arrival.md"
    edit(arrival, "rating: 4.5", "rating: 4.0\ncorrection: Jeremy Renner plays the physicist.")
    started = datetime.now(UTC).replace(microsecond=0)
    build(site)
    after = read()

    with Store(site.config.database_url) as store, store.session() as session:
        revised = session.get_one(Review, "arrival")
    assert revised.revised_at is not None and revised.revised_at >= started
    assert revised.revision_note == "Jeremy Renner plays the physicist."
    moved = revised.revised_at.replace(microsecond=0)
    for name, items in after.items():
        order = [item["id"] for item in items]
        assert order == [item["id"] for item in before[name]], name  # nothing moved
        assert order.index("arrival") > 0, name  # not first: it was not first before
        old = next(item for item in before[name] if item["id"] == "arrival")
        new = next(item for item in items if item["id"] == "arrival")
        assert new["published"] == old["published"], name
        if name == "feed.xml":
            assert new["updated"] is None  # RSS: pubDate stays, there is no updated date
        else:
            assert old["updated"] == datetime(2026, 10, 2, 16, 0, tzinfo=UTC)
            assert new["updated"] == moved, name
        # Every other item is exactly as it was.
        assert [i for i in items if i["id"] != "arrival"] == [
            i for i in before[name] if i["id"] != "arrival"
        ], name


# --- files written only when they change -------------------------------------------------


def test_a_rebuild_with_nothing_changed_rewrites_no_file(site: Site) -> None:
    first = build(site)
    count = len(feed_files(site))
    assert f"{count} feed file(s) written, 0 unchanged" in first
    age_all(site)
    before = snapshot(site)

    again = build(site)
    site.cli("run", "--once")

    assert f"0 feed file(s) written, {count} unchanged" in again
    assert written_by(again) == set()
    assert snapshot(site) == before  # same bytes, same modification times, no new files


def test_an_edit_rewrites_only_the_feeds_it_appears_in(site: Site) -> None:
    build(site)
    age_all(site)

    # Man on Wire is tagged documentary and true-story, and no other review is.
    edit(site.reviews / "man-on-wire.md", "gripping caper", "gripping, sly caper")
    output = build(site)

    # Its feeds, and the archive page of each that holds it: nothing else.
    affected = {
        f"{folder}{page}{name}"
        for folder in ("", "tags/documentary/", "tags/true-story/")
        for page in ("", "history/1/")
        for name in ("feed.xml", "atom.xml", "feed.json")
    }
    assert rewritten(site) == affected
    assert written_by(output) == affected
    assert f"18 feed file(s) written, {len(feed_files(site)) - 18} unchanged" in output
    entry = next(
        e
        for e in parse(site.public / "tags/documentary/atom.xml").entries
        if e.id == f"{ID_PREFIX}man-on-wire"
    )
    assert "gripping, sly caper" in entry.summary


# --- tag feeds ---------------------------------------------------------------------------


def test_each_tag_has_its_own_feeds_and_spellings_share_one(site: Site) -> None:
    site.write_review("tar.md", DRAMA)
    build(site)
    reviews = live_reviews(site)

    slugs = {re.sub(r"[^a-z0-9]+", "-", tag.lower()) for r in reviews for tag in r.tags}
    assert {p.name for p in (site.public / "tags").iterdir()} == slugs
    for slug in sorted(slugs):
        tagged = [
            r.id
            for r in reviews
            if slug in {re.sub(r"[^a-z0-9]+", "-", tag.lower()) for tag in r.tags}
        ]
        assert ids(site.public / "tags" / slug / "feed.xml") == tagged
        assert ids(site.public / "tags" / slug / "feed.json") == tagged
        atom = parse(site.public / "tags" / slug / "atom.xml")
        assert [e.id.removeprefix(ID_PREFIX) for e in atom.entries] == tagged
        self_link = next(link.href for link in atom.feed.links if link.rel == "self")
        assert self_link == f"{SITE_URL}tags/{slug}/atom.xml"

    # "Drama" (Tár) and "drama" (four examples) are one feed, not two that overwrite each other.
    drama = ids(site.public / "tags" / "drama" / "feed.xml")
    assert {"tar", "aftersun", "past-lives", "arrival", "lady-bird"} <= set(drama)
    assert ids(site.public / "tags" / "music-films" / "atom.xml") == ["tar"]


def test_a_deleted_review_leaves_its_tag_feeds(site: Site) -> None:
    build(site)
    assert ids(site.public / "tags" / "romance" / "feed.xml") == ["past-lives"]
    assert "past-lives" in ids(site.public / "tags" / "korean-cinema" / "atom.xml")

    (site.reviews / "past-lives.md").unlink()
    build(site)

    # Past Lives was the only romance: the feed stays, empty, rather than showing it forever.
    for name in ("feed.xml", "atom.xml", "feed.json"):
        assert ids(site.public / "tags" / "romance" / name) == []
        assert "past-lives" not in ids(site.public / "tags" / "korean-cinema" / name)
        assert "past-lives" not in ids(site.public / "tags" / "drama" / name)
        assert "past-lives" not in ids(site.public / name)


def test_a_tag_removed_from_a_review_leaves_that_tag_feed(site: Site) -> None:
    build(site)
    edit(site.reviews / "past-lives.md", "tags: [drama, romance,", "tags: [drama,")
    edit(site.reviews / "man-on-wire.md", "tags: [documentary, true-story]", "tags: [documentary]")
    build(site)

    for name in ("feed.xml", "atom.xml", "feed.json"):
        assert ids(site.public / "tags" / "romance" / name) == []
        assert ids(site.public / "tags" / "true-story" / name) == []
        # Its archive page no longer shows it either.
        assert ids(site.public / "tags" / "romance" / "history" / "1" / name) == []
        assert "past-lives" in ids(site.public / "tags" / "drama" / name)
