"""Named feeds from the YAML: per tag, per author, per source, and featured only."""

from __future__ import annotations

import re

import pytest

from tests.conftest import Site
from tests.test_feed_formats import with_extra_feeds
from tests.test_feeds import SITE_URL, build, feed_files, ids, live_reviews, load_json, parse


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
