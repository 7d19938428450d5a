"""RFC 5005 archives: every review ever published, in pages that never shift.

A reader app (or a new subscriber) walks prev-archive from the subscription feed and gets
every review; pages it already has keep their bytes, so its cache stays right.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from lxml import etree
from sqlalchemy import delete

from syndicate.feeds import catalog
from syndicate.store import FeedArchive, FeedSlot, Store
from tests.conftest import Site, make_site
from tests.pgcluster import create_database
from tests.test_feed_formats import with_extra_feeds
from tests.test_feeds import (
    ATOM,
    ID_PREFIX,
    SITE_URL,
    age_all,
    build,
    edit,
    feed_files,
    ids,
    live_reviews,
    load_json,
    parse,
    rewritten,
    set_items,
    snapshot,
)

FH = "{http://purl.org/syndication/history/1.0}"
NAMES = ("feed.xml", "atom.xml", "feed.json")

NEW = """\
---
title: "Nomadland: the open road, and what it costs"
film: Nomadland
author: Priya Raman
published: {published}
tags: [drama]
---

Frances McDormand, living in a van, and the film never condescends to her.
"""


def page_size(site: Site, items: int, size: int) -> None:
    text = site.config_path.read_text(encoding="utf-8")
    site.write_config(
        text.replace("  items: 20\n", f"  items: {items}\n  archive: {{page_size: {size}}}\n")
    )


def page(site: Site, number: int, name: str = "atom.xml", folder: str = "") -> Path:
    return site.public / folder / "history" / str(number) / name


def links(path: Path) -> dict[str, str]:
    """RFC 5005 links of one document, in whichever format."""
    if path.suffix == ".json":
        archive = load_json(path).get("_archive", {})
        return {
            k: v for k, v in archive.items() if k in ("current", "prev-archive", "next-archive")
        }
    root = etree.parse(str(path)).getroot()
    channel = root.find("channel")
    holder = channel if channel is not None else root
    return {
        link.get("rel"): link.get("href")
        for link in holder.findall(f"{ATOM}link")
        if link.get("rel") in ("current", "prev-archive", "next-archive")
    }


def is_archive(path: Path) -> bool:
    if path.suffix == ".json":
        return load_json(path).get("_archive", {}).get("archive") is True
    root = etree.parse(str(path)).getroot()
    holder = root.find("channel") if root.find("channel") is not None else root
    return holder.find(f"{FH}archive") is not None


def walk(site: Site, name: str) -> list[list[str]]:
    """Follow prev-archive from the subscription feed, as RFC 5005 clients do."""
    pages, url = [], links(site.public / name).get("prev-archive")
    while url:
        path = site.public / url.removeprefix(SITE_URL)
        pages.append(ids(path))
        url = links(path).get("prev-archive")
    return pages


def test_archive_pages_hold_every_review_oldest_first_and_link_up(site: Site) -> None:
    page_size(site, items=3, size=3)
    build(site)
    reviews = live_reviews(site)  # newest first
    oldest_first = [r.id for r in reversed(reviews)]

    for name in NAMES:
        assert ids(site.public / name) == [r.id for r in reviews[:3]]
        assert not is_archive(site.public / name)
        assert links(site.public / name) == {"prev-archive": f"{SITE_URL}history/4/{name}"}
        pages = walk(site, name)
        # Ten reviews in pages of three: 4 pages, the newest one partly filled.
        assert [len(p) for p in pages] == [1, 3, 3, 3]
        assert [i for p in reversed(pages) for i in reversed(p)] == oldest_first
        for number in range(1, 5):
            path = page(site, number, name)
            assert is_archive(path)
            expected = {"current": f"{SITE_URL}{name}"}
            if number > 1:
                expected["prev-archive"] = f"{SITE_URL}history/{number - 1}/{name}"
            if number < 4:
                expected["next-archive"] = f"{SITE_URL}history/{number + 1}/{name}"
            assert links(path) == expected
    # Archive pages are pages of the same feed: the same Atom id.
    assert parse(page(site, 2)).feed.id == parse(site.public / "atom.xml").feed.id
    # JSON Feed readers page through older items with next_url.
    assert load_json(site.public / "feed.json")["next_url"] == f"{SITE_URL}history/4/feed.json"
    # Tag feeds have archives of their own: four reviews are tagged drama.
    assert [len(p) for p in walk(site, "tags/drama/atom.xml")] == [1, 3]


def test_a_new_review_rewrites_only_the_newest_page_and_the_subscription_feeds(
    site: Site,
) -> None:
    page_size(site, items=3, size=3)
    build(site)
    age_all(site)
    before = snapshot(site)

    site.write_review("nomadland.md", NEW.format(published="2026-11-24T12:00:00+00:00"))
    build(site)

    changed = rewritten(site)
    assert {p for p in changed if "history/" in p and not p.startswith("tags/")} == {
        f"history/4/{name}" for name in NAMES
    }
    assert "nomadland" in ids(page(site, 4))
    for number in (1, 2, 3):
        for name in NAMES:
            path = page(site, number, name)
            assert before[path] == (path.stat().st_mtime_ns, path.read_bytes())
    assert {f"{name}" for name in NAMES} <= changed
    assert not any(p.startswith("tags/romance/") for p in changed)

    # Two more fill page 4 and open page 5: page 4 gains its next-archive link, once.
    age_all(site)
    site.write_review(
        "n2.md", NEW.format(published="2026-11-24T13:00:00+00:00").replace("Nomadland", "Minari")
    )
    site.write_review(
        "n3.md", NEW.format(published="2026-11-24T14:00:00+00:00").replace("Nomadland", "Roma")
    )
    build(site)
    assert links(page(site, 4))["next-archive"] == f"{SITE_URL}history/5/atom.xml"
    assert [len(p) for p in walk(site, "atom.xml")] == [1, 3, 3, 3, 3]
    assert not any(
        p.startswith("history/1/") or p.startswith("history/3/") for p in rewritten(site)
    )


def test_a_backdated_review_lands_on_the_newest_page_not_an_old_one(site: Site) -> None:
    """Written today and dated 2019, it appears today: old pages stay as readers cached them."""
    page_size(site, items=3, size=3)
    build(site)
    age_all(site)

    site.write_review("nomadland.md", NEW.format(published="2019-02-01T09:00:00+00:00"))
    build(site)

    assert "nomadland" in ids(page(site, 4))
    assert not any(
        p.startswith(("history/1/", "history/2/", "history/3/")) for p in rewritten(site)
    )
    # Still sorted by its date among the items it is shown with.
    assert ids(page(site, 4))[-1] == "nomadland"


def test_a_deleted_review_leaves_its_page_and_no_page_shifts(site: Site) -> None:
    page_size(site, items=3, size=3)
    build(site)
    oldest = ids(page(site, 1))
    age_all(site)
    before = {n: ids(page(site, n)) for n in (2, 3, 4)}

    (site.reviews / f"{oldest[0]}.md").unlink()
    build(site)

    assert ids(page(site, 1)) == oldest[1:]
    assert {n: ids(page(site, n)) for n in (2, 3, 4)} == before
    assert not any(
        p.startswith(("history/2/", "history/3/", "history/4/")) for p in rewritten(site)
    )


def test_ids_and_pages_survive_moving_the_source_folder(site: Site) -> None:
    """The editor moves the reviews to another folder and points the source at it."""
    page_size(site, items=3, size=3)
    build(site)
    before = {
        e.id: (e.published, e.updated, e.link) for e in parse(site.public / "atom.xml").entries
    }
    archived = {n: ids(page(site, n)) for n in (1, 2, 3, 4)}
    age_all(site)

    shutil.move(site.reviews, site.root / "writing" / "critiques")
    text = site.config_path.read_text(encoding="utf-8")
    site.write_config(text.replace("    path: reviews\n", "    path: writing/critiques\n"))
    output = build(site)

    after = {
        e.id: (e.published, e.updated, e.link) for e in parse(site.public / "atom.xml").entries
    }
    assert after == before  # same ids, not one review shown as new or updated
    assert {n: ids(page(site, n)) for n in (1, 2, 3, 4)} == archived
    assert rewritten(site) == set()
    assert "0 feed file(s) written" in output
    assert all(i.startswith(ID_PREFIX) for i in after)


def test_the_state_file_is_only_a_shortcut(site: Site) -> None:
    """Deleted, nothing is rewritten; a feed file changed by hand is put right."""
    build(site)
    age_all(site)
    (site.root / "var" / "feeds-state.json").unlink()
    assert "0 feed file(s) written" in build(site)
    assert rewritten(site) == set()

    (site.public / "tags" / "drama" / "atom.xml").write_text("broken", encoding="utf-8")
    (site.public / "history" / "1" / "feed.json").unlink()
    output = build(site)
    assert "2 feed file(s) written" in output
    assert parse(site.public / "tags" / "drama" / "atom.xml").entries
    assert load_json(site.public / "history" / "1" / "feed.json")["items"]


def test_archives_can_be_switched_off(site: Site) -> None:
    text = site.config_path.read_text(encoding="utf-8")
    site.write_config(text.replace("  items: 20\n", "  items: 20\n  archive: {enabled: false}\n"))
    build(site)
    assert not [p for p in feed_files(site) if "history" in p.parts]
    assert links(site.public / "atom.xml") == {}
    edit(site.config_path, "enabled: false", "enabled: true")
    build(site)
    assert len(walk(site, "atom.xml")) == 1


def test_archives_on_each_database(
    tmp_path: Path, database_url: str, secret_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The light rows that plan a build are read with plain SQL: SQLite and PostgreSQL."""
    site = make_site(tmp_path / "site", database_url)
    monkeypatch.chdir(site.root)
    page_size(site, items=3, size=3)
    build(site)

    reviews = [r.id for r in live_reviews(site)]
    assert ids(site.public / "feed.json") == reviews[:3]
    assert [i for p in walk(site, "atom.xml") for i in p] == reviews
    age_all(site)
    assert "0 feed file(s) written" in build(site)
    assert rewritten(site) == set()


# --- slots that never move ---------------------------------------------------------------

DRAMA_PAGES = [["lady-bird", "arrival"], ["aftersun", "past-lives"]]  # oldest page first


def drama_pages(site: Site) -> list[list[str]]:
    return [ids(path) for path in sorted_pages(site, "tags/drama/")]


def sorted_pages(site: Site, folder: str) -> list[Path]:
    history = site.public / folder / "history"
    return [history / str(n) / "atom.xml" for n in range(1, len(list(history.iterdir())) + 1)]


def test_a_tag_added_to_or_taken_off_an_old_review_moves_no_page(
    tmp_path: Path, database_url: str, secret_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A review's slot in a tag feed is given when it joins that feed, and kept."""
    site = make_site(tmp_path / "site", database_url)
    monkeypatch.chdir(site.root)
    page_size(site, items=2, size=2)
    build(site)
    assert drama_pages(site) == DRAMA_PAGES
    age_all(site)

    # Man on Wire is older than every drama review: it still joins the newest page.
    edit(site.reviews / "man-on-wire.md", "[documentary, true-story]", "[documentary, drama]")
    build(site)
    assert drama_pages(site) == [*DRAMA_PAGES, ["man-on-wire"]]
    # Page 1 is untouched (page 2 gains its next-archive link, nothing else).
    assert not any(p.startswith("tags/drama/history/1/") for p in rewritten(site))

    # Taken off a review, the tag leaves an empty slot: no later review moves up.
    age_all(site)
    edit(site.reviews / "lady-bird.md", "[comedy, drama, coming-of-age]", "[comedy]")
    build(site)
    assert drama_pages(site) == [["arrival"], DRAMA_PAGES[1], ["man-on-wire"]]
    assert {p for p in rewritten(site) if p.startswith("tags/drama/history/")} == {
        f"tags/drama/history/1/{name}" for name in NAMES
    }
    # Given back, it takes its own slot again.
    edit(site.reviews / "lady-bird.md", "[comedy]", "[comedy, drama]")
    build(site)
    assert drama_pages(site) == [*DRAMA_PAGES, ["man-on-wire"]]

    # The slots are in the database: deleting the state file moves nothing either.
    age_all(site)
    (site.root / "var" / "feeds-state.json").unlink()
    assert "0 feed file(s) written" in build(site)
    assert rewritten(site) == set()


def test_author_source_and_featured_archives_keep_their_slots_too(site: Site) -> None:
    with_extra_feeds(site)
    page_size(site, items=2, size=2)
    build(site)
    maya = [ids(p) for p in sorted_pages(site, "critics/maya-okafor/")]
    age_all(site)

    # Maya's oldest review is given to another critic, then given back.
    edit(site.reviews / "man-on-wire.md", "author: Maya Okafor", "author: Priya Raman")
    build(site)
    assert [ids(p) for p in sorted_pages(site, "critics/maya-okafor/")] == [
        [i for i in page if i != "man-on-wire"] for page in maya
    ]
    assert not any(
        p.startswith("critics/maya-okafor/history/") and "/1/" not in p for p in rewritten(site)
    )
    edit(site.reviews / "man-on-wire.md", "author: Priya Raman", "author: Maya Okafor")
    build(site)
    assert [ids(p) for p in sorted_pages(site, "critics/maya-okafor/")] == maya


def test_a_site_from_before_feed_slots_keeps_its_pages(site: Site) -> None:
    """A database without slots (upgraded from before them) gives each review the slot it
    had: its place in the feed in order of appearance. Nothing is rewritten."""
    with_extra_feeds(site)
    page_size(site, items=2, size=2)
    build(site)
    age_all(site)
    with Store(site.config.database_url) as store, store.session() as session:
        session.execute(delete(FeedSlot))
        session.execute(delete(FeedArchive))
    (site.root / "var" / "feeds-state.json").unlink()

    assert "0 feed file(s) written" in build(site)
    assert rewritten(site) == set()
    with Store(site.config.database_url) as store, store.session() as session:
        assert session.query(FeedSlot).filter_by(feed_key="tag:drama").count() == 4


# --- the page size -----------------------------------------------------------------------


def test_raising_feeds_items_does_not_page_the_archives_again(site: Site) -> None:
    """Without feeds.archive.page_size, pages hold feeds.items reviews as it was when each
    feed's archive was first published: raising items later moves no review."""
    set_items(site, 3)
    build(site)
    archived = {n: ids(page(site, n)) for n in (1, 2, 3, 4)}
    assert [len(p) for p in archived.values()] == [3, 3, 3, 1]
    age_all(site)

    edit(site.config_path, "items: 3", "items: 5")
    build(site)
    assert {n: ids(page(site, n)) for n in (1, 2, 3, 4)} == archived
    assert not any(p.startswith(("history/", "tags/drama/history/")) for p in rewritten(site))
    assert len(ids(site.public / "atom.xml")) == 5  # the subscription feed shows five
    (site.root / "var" / "feeds-state.json").unlink()
    assert "0 feed file(s) written" in build(site)

    # Naming a page size re-pages every archive, as docs/feeds.md says.
    edit(site.config_path, "items: 5", "items: 5\n  archive: {page_size: 5}")
    output = build(site)
    assert "every archive page of" in output and "is paged again" in output
    assert [len(p) for p in walk(site, "atom.xml")] == [0, 0, 5, 5]
    assert "is paged again" not in build(site)  # once


@pytest.mark.postgres
def test_two_builds_giving_out_the_same_slot_at_once_both_succeed(
    tmp_path: Path, postgres_server: str, secret_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL lets two builds plan at once (SQLite queues them): the one that stores
    its new slots second is refused by the unique keys, and plans again on top of them."""
    database_url = create_database(postgres_server, f"slots_{tmp_path.name.lower()}"[:60])
    site = make_site(tmp_path / "site", database_url)
    monkeypatch.chdir(site.root)
    page_size(site, items=3, size=3)
    build(site)
    site.write_review("nomadland.md", NEW.format(published="2026-11-24T12:00:00+00:00"))
    site.cli("gather")

    # The other build stores the very slot this one is about to give, just before it does.
    real, raced = catalog.insert, []

    def racing(table):  # type: ignore[no-untyped-def]
        if table is FeedSlot and not raced:
            raced.append(True)
            with Store(database_url) as other, other.session() as theirs:
                theirs.add(FeedSlot(feed_key="site", review_id="nomadland", slot=10))
        return real(table)

    monkeypatch.setattr(catalog, "insert", racing)
    output = site.cli("-v", "feeds").output
    assert raced and "placed reviews in the archives at the same time" in output
    assert "nomadland" in ids(page(site, 4))
    with Store(database_url) as store, store.session() as session:
        slots = session.query(FeedSlot).filter_by(review_id="nomadland").all()
        assert {(s.feed_key, s.slot) for s in slots} == {("site", 10), ("tag:drama", 4)}
