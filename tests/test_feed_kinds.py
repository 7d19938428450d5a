"""Named feeds from the YAML: per tag, per author, per source, and featured only."""

from __future__ import annotations

import logging
import re

import pytest

from syndicate.config import ExtraFeed
from syndicate.feeds import build_feeds
from syndicate.feeds.folders import feed_slug
from syndicate.sources.content import slugify
from syndicate.store import Store
from tests.conftest import Site
from tests.test_feed_formats import with_extra_feeds
from tests.test_feeds import (
    SITE_URL,
    build,
    edit,
    feed_files,
    ids,
    live_reviews,
    load_json,
    parse,
)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def test_without_extra_feeds_the_layout_is_as_before(site: Site) -> None:
    build(site)
    top = {
        p.relative_to(site.public).as_posix()
        for p in feed_files(site)
        if len(p.parts) - len(site.public.parts) == 1
    }
    assert top == {"feed.xml", "atom.xml", "feed.json"}
    assert {p.name for p in site.public.iterdir() if p.is_dir()} == {"tags", "history"}


def test_author_source_and_featured_feeds(site: Site) -> None:
    with_extra_feeds(site)
    build(site)
    reviews = live_reviews(site)

    authors = {r.author for r in reviews}
    assert {p.name for p in (site.public / "critics").iterdir()} == {slug(a) for a in authors}
    for author in authors:
        folder = site.public / "critics" / slug(author)
        expected = [r.id for r in reviews if r.author == author]
        for name in ("feed.xml", "atom.xml", "feed.json"):
            assert ids(folder / name) == expected
        atom = parse(folder / "atom.xml").feed
        assert atom.title == f"Reel Notes: reviews by {author}"
        assert atom.id == f"tag:reelnotes.example.com,2026:feed:critics:{slug(author)}"
        assert next(link.href for link in atom.links if link.rel == "self") == (
            f"{SITE_URL}critics/{slug(author)}/atom.xml"
        )

    assert ids(site.public / "from" / "reviews" / "feed.xml") == [r.id for r in reviews]
    assert parse(site.public / "from" / "reviews" / "atom.xml").feed.title == "Reel Notes: reviews"

    featured = [r.id for r in reviews if r.featured]
    assert featured == ["past-lives"]
    assert ids(site.public / "picks" / "feed.json") == featured
    picks = load_json(site.public / "picks" / "feed.json")
    assert picks["title"] == "Reel Notes: editors' picks"
    assert picks["feed_url"] == f"{SITE_URL}picks/feed.json"
    # Each feed has an id of its own.
    atom_ids = [
        parse(p).feed.id
        for p in feed_files(site)
        if p.name == "atom.xml" and "history" not in p.parts
    ]
    assert len(atom_ids) == len(set(atom_ids))


def test_a_review_that_stops_being_featured_leaves_the_featured_feed(site: Site) -> None:
    with_extra_feeds(site)
    build(site)
    text = (site.reviews / "past-lives.md").read_text(encoding="utf-8")
    (site.reviews / "past-lives.md").write_text(
        text.replace("featured: true\n", ""), encoding="utf-8"
    )
    build(site)
    for name in ("feed.xml", "atom.xml", "feed.json"):
        assert ids(site.public / "picks" / name) == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('    - {name: critics, kind: author, folder: "critics/"}\n', "needs {slug} once"),
        ('    - {name: picks, kind: featured, folder: "picks/{slug}/"}\n', "takes no {slug}"),
        ('    - {name: t2, kind: tag, folder: "tags/{slug}"}\n', "already used"),
        ('    - {name: up, kind: source, folder: "../{slug}/"}\n', "expected a folder"),
        ('    - {name: h, kind: tag, folder: "history/{slug}/"}\n', "history/ is taken"),
        (
            '    - {name: a, kind: author, folder: "a/{slug}/", title: "{sitetitle}"}\n',
            "unknown placeholder",
        ),
        ('    - {name: a, kind: director, folder: "a/{slug}/"}\n', "feeds.extra.0.kind"),
        # A placeholder with a format spec or conversion would fail every build.
        (
            '    - {name: a, kind: author, folder: "a/{slug}/", title: "{value:d}"}\n',
            "{value:d}: placeholders take no conversion or format spec",
        ),
        (
            '    - {name: a, kind: author, folder: "a/{slug}/", title: "{site!z}"}\n',
            "{site!z}: placeholders take no conversion or format spec",
        ),
        (
            '    - {name: a, kind: tag, folder: "a/{slug}/", description: "{value:>99999999999}"}\n',
            "feeds.extra.0.description: {value:>99999999999}: placeholders take no",
        ),
        ('    - {name: a, kind: tag, folder: "a/{slug}/", title: "{value"}\n', "literal brace"),
        # Folders that some tag, author or source would share with another feed.
        ('    - {name: t2, kind: tag, folder: "{slug}/1/"}\n', "can name the same folder"),
        ('    - {name: site, kind: featured, folder: "best/"}\n', "'site' is taken"),
        ('    - {name: tag, kind: author, folder: "c/{slug}/"}\n', "'tag' is taken"),
    ],
)
def test_mistakes_in_extra_feeds_are_named_with_their_line(
    site: Site, extra: str, message: str
) -> None:
    text = site.config_path.read_text(encoding="utf-8")
    text = text.replace("  items: 20\n", "  items: 20\n  extra:\n" + extra)
    site.write_config(text)
    out = site.cli("check", ok=False).output
    line = text.splitlines().index(extra.rstrip("\n")) + 1
    assert f"line {line}: feeds.extra.0" in out
    assert message in out


def test_an_archive_page_larger_than_the_feed_is_refused(site: Site) -> None:
    text = site.config_path.read_text(encoding="utf-8")
    site.write_config(text.replace("  items: 20\n", "  items: 20\n  archive: {page_size: 50}\n"))
    out = site.cli("check", ok=False).output
    assert "feeds.archive.page_size: expected at most feeds.items (20)" in out


def extra_feeds(site: Site, *lines: str) -> str:
    text = site.config_path.read_text(encoding="utf-8")
    text = text.replace("  items: 20\n", "  items: 20\n  extra:\n" + "".join(lines))
    site.write_config(text)
    return text


def test_folders_that_a_value_could_share_with_another_feed_are_refused(site: Site) -> None:
    """An author whose slug is "picks" would be written over the featured feed."""
    author = '    - {name: critics, kind: author, folder: "{slug}/"}\n'
    picks = '    - {name: picks, kind: featured, folder: "picks/"}\n'
    text = extra_feeds(site, author, picks)
    out = site.cli("check", ok=False).output
    line = text.splitlines().index(picks.rstrip("\n")) + 1
    assert f"line {line}: feeds.extra.1.folder: 'picks/' and '{{slug}}/'" in out
    assert "can name the same folder" in out

    # Apart, they are fine: picks/ and <author>/ never meet, and tags/<tag>/ neither.
    site.write_config(text.replace(author, author.replace("{slug}/", "by/{slug}/")))
    site.cli("check")


def test_a_value_never_takes_a_folder_another_feed_owns(site: Site) -> None:
    """Should a folder still be taken (here: the checks in the YAML are bypassed, and
    archive/ holds the digests' pages), that value's feeds are skipped with a warning."""
    site.cli("gather")
    edit(site.reviews / "man-on-wire.md", "author: Maya Okafor", "author: Picks")
    edit(site.reviews / "arrival.md", "author: Jonah Lindqvist", "author: Archive")
    site.cli("gather")
    config = site.config
    extra = [
        ExtraFeed(name="critics", kind="author", folder="{slug}/"),
        ExtraFeed(name="picks", kind="featured", folder="picks/"),
    ]
    config = config.model_copy(update={"feeds": config.feeds.model_copy(update={"extra": extra})})
    warnings: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warnings.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("syndicate.feeds")
    logger.addHandler(handler)
    try:
        with Store(config.database_url) as store:
            build_feeds(config, store)
    finally:
        logger.removeHandler(handler)

    assert ids(site.public / "picks" / "atom.xml") == ["past-lives"]  # the featured feed
    assert not (site.public / "archive" / "feed.xml").exists()
    assert ids(site.public / "maya-okafor" / "atom.xml")  # other authors have their feeds
    assert any("no author feed for 'Picks': its folder picks/ belongs to" in w for w in warnings)
    assert any("no author feed for 'Archive': its folder archive/" in w for w in warnings)


# --- folder names ------------------------------------------------------------------------


def test_tags_with_no_ascii_spelling_get_folders_of_their_own(site: Site) -> None:
    edit(site.reviews / "man-on-wire.md", "[documentary, true-story]", '[日本映画, "★", ".."]')
    edit(site.reviews / "spirited-away.md", "japanese-cinema]", "japanese-cinema, Ciné, 日本映画]")
    build(site)
    folders = {p.name for p in (site.public / "tags").iterdir()}

    # Accents are dropped; what has no ASCII spelling gets a short stable hash.
    assert {feed_slug("日本映画"), feed_slug("★"), feed_slug("..")} <= folders
    assert len({feed_slug("日本映画"), feed_slug("★"), feed_slug("..")}) == 3
    assert "cine" in folders and "review" not in folders and "cin" not in folders
    assert ids(site.public / "tags" / feed_slug("日本映画") / "atom.xml") == [
        "spirited-away",
        "man-on-wire",
    ]
    assert ids(site.public / "tags" / feed_slug("★") / "feed.json") == ["man-on-wire"]
    atom = parse(site.public / "tags" / "cine" / "atom.xml").feed
    assert atom.title == "Reel Notes: Ciné"
    # ASCII tags keep the folders they always had.
    assert {"japanese-cinema", "sci-fi", "korean-cinema", "coming-of-age"} <= folders


@pytest.mark.parametrize(
    ("value", "slug"),
    [
        # Never change these: they are feeds' URLs and Atom ids.
        ("Drama", "drama"),
        ("Music Films", "music-films"),
        ("  sci-fi!! ", "sci-fi"),
        ("C++ & you", "c-you"),
        ("Ciné", "cine"),
        ("Amélie Poulain", "amelie-poulain"),
        ("Straße", "strasse"),
        ("İstanbul", "istanbul"),
        ("日本映画", "t-b9a7c659"),
        ("★", "t-43ca686a"),
        ("..", "t-9d891e73"),
        ("日本映画 2024", "2024-1f064b74"),
    ],
)
def test_feed_slugs(value: str, slug: str) -> None:
    assert feed_slug(value) == slug


def test_feed_slugs_of_ascii_values_are_review_slugs() -> None:
    """The function that makes review ids is left alone; for ASCII the folders agree."""
    for value in ["Drama", "a--b", "-x-", "Sci-Fi & Fantasy", "2024", "under_score", "Ωmega"]:
        if value.isascii():
            assert feed_slug(value) == slugify(value)
    assert slugify("日本映画") == "review"  # review ids from file names never change
