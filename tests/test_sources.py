"""Gathering reviews from a folder of Markdown files, as an editor adds, edits and deletes them.

Every test drives `syndicate gather` (and `syndicate feeds` where readers would notice)
against a temporary copy of the example site, then reads what was stored or published.
Expected line numbers are looked up in the file the test wrote, so they follow the file.
"""

from __future__ import annotations

import os
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import feedparser
import lxml.html
import pytest
from lxml import etree
from sqlalchemy import select

from syndicate import feeds, sources
from syndicate.sources import ingest
from syndicate.sources.entry import Entry
from syndicate.store import Review, Store
from tests.conftest import Site, make_site

SITE_URL = "https://reelnotes.example.com/"
ID_PREFIX = "tag:reelnotes.example.com,2026:review:"
CONTENT_ENCODED = "{http://purl.org/rss/1.0/modules/content/}encoded"

HEAT = """\
---
title: "Heat: two professionals and one city"
film: Heat
year: 1995
director: Michael Mann
rating: 4.5
author: Priya Raman
published: 2026-11-22T18:00:00+01:00
tags: [crime, thriller, Los Angeles]
summary: "Pacino and De Niro, finally in the same scene."
---

A cop and a thief who understand each other better than anyone else in their lives.

## The diner

Two men, one table, no guns drawn.
"""


def stored(site: Site) -> dict[str, Review]:
    """Every review in the store, withdrawn ones too, by id."""
    with Store(site.config.database_url) as store, store.session() as session:
        return {review.id: review for review in session.scalars(select(Review))}


def gather(site: Site, ok: bool | None = True) -> str:
    return site.cli("gather", ok=ok).output


def counts(output: str) -> tuple[int, int, int, int]:
    """(new, updated, unchanged, withdrawn) from the `Gathered: ...` line."""
    match = re.search(
        r"Gathered: (\d+) new, (\d+) updated, (\d+) unchanged, (\d+) withdrawn", output
    )
    assert match, f"no summary line in:\n{output}"
    new, updated, unchanged, withdrawn = (int(n) for n in match.groups())
    return new, updated, unchanged, withdrawn


def feed_ids(site: Site, relative: str = "feed.xml") -> list[str]:
    parsed = feedparser.parse((site.public / relative).read_bytes())
    assert parsed.bozo == 0, parsed.get("bozo_exception")
    return [entry.id.removeprefix(ID_PREFIX) for entry in parsed.entries]


def line_of(path: Path, needle: str) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    hits = [n for n, line in enumerate(lines, start=1) if needle in line]
    assert len(hits) == 1, f"{needle!r} should be on one line of {path.name}"
    return hits[0]


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} should appear once in {path.name}"
    path.write_text(text.replace(old, new), encoding="utf-8")


# --- new files ---------------------------------------------------------------------------


def test_a_new_file_is_gathered_with_its_front_matter(site: Site) -> None:
    assert counts(gather(site)) == (10, 0, 0, 0)
    site.write_review("heat.md", HEAT)

    assert counts(gather(site)) == (1, 0, 10, 0)

    heat = stored(site)["heat"]
    assert heat.title == "Heat: two professionals and one city"
    assert (heat.film, heat.year, heat.director) == ("Heat", 1995, "Michael Mann")
    assert heat.rating == 4.5
    assert heat.author == "Priya Raman"
    assert heat.tags == ["crime", "thriller", "Los Angeles"]
    assert heat.summary == "Pacino and De Niro, finally in the same scene."
    # 18:00 at +01:00 is 17:00 UTC, whatever zone the site is in.
    assert heat.published == datetime(2026, 11, 22, 17, 0, tzinfo=UTC)
    assert heat.updated == heat.published  # never revised
    assert heat.url == f"{SITE_URL}reviews/heat/"
    assert heat.live
    assert "<h2>The diner</h2>" in heat.body_html

    # An example review's own `updated` and `featured` come through as written.
    past_lives = stored(site)["past-lives"]
    assert past_lives.updated == datetime(2026, 11, 21, 10, 30, tzinfo=UTC)
    assert past_lives.featured is True


def test_a_date_without_a_zone_is_read_in_the_site_zone(site: Site) -> None:
    site.write_review(
        "summer.md", "---\ntitle: A summer review\npublished: 2026-07-01\n---\nHot.\n"
    )
    gather(site)
    # The site is in Europe/London: midnight on 1 July is 23:00 UTC the day before (BST).
    assert stored(site)["summer"].published == datetime(2026, 6, 30, 23, 0, tzinfo=UTC)


def test_film_titles_that_yaml_reads_as_numbers_or_booleans_stay_titles(site: Site) -> None:
    # Films called 1917, 2046, 300, No (Larraín, 2012) and Yes (Potter, 2004), unquoted.
    titles = ["1917", "2046", "300", "No", "Yes"]
    for title in titles:
        site.write_review(
            f"film-{title.lower()}.md",
            f"---\ntitle: {title}\nfilm: {title}\nyear: 2019\ntags: [{title}, war]\n---\nA film.\n",
        )

    assert counts(gather(site)) == (15, 0, 0, 0)

    reviews = stored(site)
    for title in titles:
        review = reviews[f"film-{title.lower()}"]
        assert (review.title, review.film, review.year) == (title, title, 2019)
        assert review.tags == [title, "war"]
    site.cli("feeds")
    parsed = feedparser.parse((site.public / "feed.xml").read_bytes())
    assert {e.title for e in parsed.entries if "film-" in e.id} == set(titles)
    assert feed_ids(site, "tags/1917/atom.xml") == ["film-1917"]


# --- edits, renames and deletions --------------------------------------------------------


def test_an_edit_updates_the_same_review_and_an_unchanged_run_reports_nothing(
    site: Site,
) -> None:
    gather(site)
    before = stored(site)["lady-bird"]
    assert counts(gather(site)) == (0, 0, 10, 0)

    path = site.reviews / "lady-bird.md"
    edit(path, "rating: 4.0", "rating: 3.5")
    edit(path, "a sketchbook of real wit and feeling.", "a sketchbook of real wit and feeling. Go.")
    started = datetime.now(UTC)

    assert counts(gather(site)) == (0, 1, 9, 0)

    after = stored(site)["lady-bird"]
    assert after.rating == 3.5
    assert "real wit and feeling. Go." in after.body_html
    assert after.published == before.published
    assert before.updated < started <= after.updated  # readers see it as revised, once
    assert len(stored(site)) == 10
    assert counts(gather(site)) == (0, 0, 10, 0)
    assert stored(site)["lady-bird"].updated == after.updated


def test_saving_a_file_without_changing_it_is_not_an_edit(site: Site) -> None:
    gather(site)
    before = stored(site)["arrival"]
    path = site.reviews / "arrival.md"
    path.write_bytes(path.read_bytes())  # saved again: a newer modification time, same bytes
    future = datetime.now().timestamp() + 60
    os.utime(path, (future, future))

    assert counts(gather(site)) == (0, 0, 10, 0)
    assert stored(site)["arrival"].updated == before.updated  # readers see no revision


@pytest.mark.parametrize(
    "change",
    ["rename", "rename-and-edit", "move-to-folder", "rename-with-id"],
)
def test_a_renamed_file_keeps_its_review_id(site: Site, change: str) -> None:
    old = site.reviews / "past-lives.md"
    if change == "rename-with-id":
        edit(old, 'title: "Past Lives', 'id: past-lives-2023\ntitle: "Past Lives')
    gather(site)
    before = stored(site)
    review_id = "past-lives-2023" if change == "rename-with-id" else "past-lives"
    assert review_id in before

    new = {
        "rename": site.reviews / "2023-past-lives.md",
        "rename-and-edit": site.reviews / "past-lives-celine-song.md",
        "move-to-folder": site.reviews / "2023" / "past-lives.md",
        "rename-with-id": site.reviews / "song-past-lives.md",
    }[change]
    new.parent.mkdir(exist_ok=True)
    old.rename(new)
    if change == "rename-and-edit":
        edit(new, "rating: 4.5", "rating: 5.0")
    if change == "rename-with-id":
        edit(new, 'title: "Past Lives: the road not taken"', 'title: "Past Lives, revisited"')

    new_count, updated, _, withdrawn = counts(gather(site))

    assert (new_count, updated, withdrawn) == (0, 1, 0)  # not "one withdrawn, one new"
    after = stored(site)
    assert set(after) == set(before)
    assert after[review_id].live
    assert after[review_id].source_key == new.relative_to(site.reviews).as_posix()
    assert after[review_id].published == before[review_id].published
    site.cli("feeds")
    assert feed_ids(site).count(review_id) == 1
    assert feed_ids(site, "tags/romance/atom.xml") == [review_id]


def test_a_file_renamed_with_a_mistake_in_it_keeps_its_id_once_fixed(site: Site) -> None:
    gather(site)
    new = site.reviews / "2023-past-lives.md"
    (site.reviews / "past-lives.md").rename(new)
    edit(new, "rating: 4.5", "rating: 4.5 stars")

    line = line_of(new, "rating: 4.5 stars")
    assert f"2023-past-lives.md: line {line}: rating:" in gather(site, ok=False)

    edit(new, "rating: 4.5 stars", "rating: 4.5")
    gather(site)

    reviews = stored(site)
    assert len(reviews) == 10 and "2023-past-lives" not in reviews  # no new id for it
    assert reviews["past-lives"].live
    assert reviews["past-lives"].source_key == "2023-past-lives.md"
    site.cli("feeds")
    assert feed_ids(site).count("past-lives") == 1


def test_a_deleted_file_withdraws_its_review_from_the_feeds(site: Site) -> None:
    gather(site)
    site.cli("feeds")
    assert "parasite" in feed_ids(site)
    assert "parasite" in feed_ids(site, "tags/korean-cinema/feed.xml")
    path = site.reviews / "parasite.md"
    text = path.read_text(encoding="utf-8")

    path.unlink()
    assert counts(gather(site)) == (0, 0, 9, 1)
    site.cli("feeds")

    assert stored(site)["parasite"].withdrawn_at is not None
    assert "parasite" not in feed_ids(site)
    assert "parasite" not in feed_ids(site, "atom.xml")
    assert "parasite" not in feed_ids(site, "tags/korean-cinema/feed.xml")
    assert len(feed_ids(site)) == 9
    assert counts(gather(site)) == (0, 0, 9, 0)  # withdrawn once, not on every run

    # Putting the file back brings the same review back, under the same id.
    path.write_text(text, encoding="utf-8")
    assert counts(gather(site)) == (1, 0, 9, 0)
    site.cli("feeds")
    assert stored(site)["parasite"].live
    assert "parasite" in feed_ids(site)


# --- broken files ------------------------------------------------------------------------

BROKEN = {
    # name: (front matter lines, the text on the bad line, the key named, what is said)
    "colon-in-value": (
        "title: ok\nfilm: Heat: the remake\nyear: 1995\n",
        "film: Heat",
        "film",
        "not valid YAML",
    ),
    "unclosed-list": (
        "title: ok\ntags: [crime, thriller\nyear: 1995\n",
        "tags: [crime",
        "tags",
        "not valid YAML",
    ),
    "unclosed-quote": (
        'title: "Heat\nfilm: Heat\nyear: 1995\n',
        'title: "Heat',
        "title",
        "not valid YAML",
    ),
    "missing-title": ("film: Heat\nyear: 1995\n", None, "title", "missing"),
    "rating-too-high": ("title: Heat\nrating: 7\n", "rating: 7", "rating", "5"),
    "rating-not-a-number": ("title: Heat\nrating: great\n", "rating: great", "rating", "number"),
    "impossible-date": ("title: Heat\npublished: 2026-13-45\n", "published:", "published", "date"),
    "not-a-date": ("title: Heat\npublished: next tuesday\n", "published:", "published", "date"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_a_broken_file_is_reported_and_the_others_are_still_gathered(site: Site, case: str) -> None:
    header, bad_line, key, says = BROKEN[case]
    path = site.write_review("broken.md", f"---\n{header}---\nThe body.\n")
    site.write_review("heat.md", HEAT)

    output = gather(site, ok=False)

    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if "error:" in line]
    assert len(errors) == 1, output
    error = errors[0]
    assert "broken.md" in error
    if bad_line is not None:
        assert f"line {line_of(path, bad_line)}:" in error
    assert re.search(rf"\b{key}\b", error), error
    assert says in error
    assert counts(output) == (11, 0, 0, 0)  # the ten examples and heat.md
    assert "broken" not in stored(site)


def test_a_broken_edit_keeps_the_stored_version(site: Site) -> None:
    gather(site)
    site.cli("feeds")
    before = stored(site)["lady-bird"]
    path = site.reviews / "lady-bird.md"
    good = path.read_text(encoding="utf-8")
    edit(path, "rating: 4.0", "rating: four")
    edit(path, "would like you to call her", "would really like you to call her")

    output = gather(site, ok=False)

    assert f"lady-bird.md: line {line_of(path, 'rating: four')}: rating:" in output
    assert counts(output) == (0, 0, 9, 0)  # nothing withdrawn: a typo does not unpublish
    kept = stored(site)["lady-bird"]
    assert kept.live
    assert (kept.rating, kept.body_html, kept.updated) == (
        before.rating,
        before.body_html,
        before.updated,
    )
    site.cli("feeds")
    assert "lady-bird" in feed_ids(site)
    assert "lady-bird" in feed_ids(site, "tags/comedy/atom.xml")
    # The editor keeps hearing about it until it is fixed.
    assert "lady-bird.md" in gather(site, ok=False)

    path.write_text(good.replace("rating: 4.0", "rating: 3.0"), encoding="utf-8")
    assert counts(gather(site)) == (0, 1, 9, 0)
    assert stored(site)["lady-bird"].rating == 3.0


def test_two_files_claiming_one_id_are_reported(site: Site) -> None:
    gather(site)
    site.write_review("past-lives-copy.md", "---\ntitle: A copy\nid: past-lives\n---\nCopy.\n")
    # And two new files in one run whose names give the same id.
    site.write_review("2025/heat.md", HEAT)
    site.write_review("2026/heat.md", HEAT.replace("Heat: two", "Heat again: two"))

    output = gather(site, ok=False)

    errors = [line for line in output.splitlines() if "error:" in line]
    assert len(errors) == 2, output
    copy_error = next(e for e in errors if "past-lives-copy.md" in e)
    assert "'past-lives'" in copy_error and "past-lives.md" in copy_error
    heat_error = next(e for e in errors if "2026/heat.md" in e)
    assert "'heat'" in heat_error and "2025/heat.md" in heat_error
    assert counts(output)[0] == 1  # one heat.md is gathered
    reviews = stored(site)
    assert reviews["past-lives"].title == "Past Lives: the road not taken"  # not overwritten
    assert reviews["heat"].title == "Heat: two professionals and one city"
    assert len(reviews) == 11


# --- what reaches readers ----------------------------------------------------------------

UNSAFE = """\
---
title: Unsafe
image: /images/unsafe.jpg
related:
  - title: Arrival
    url: /reviews/arrival/
  - title: A trap
    url: "javascript:alert(document.domain)"
  - title: Another
    url: "data:text/html,<script>alert(5)</script>"
---

Intro <script>alert("x")</script> with [a relative link](/reviews/lady-bird/),
[a sibling](../arrival/) and ![a still](/images/still.jpg "Still").

<p onclick="alert(1)">Click me <img src="poster.png" alt="poster" onerror="alert(2)"></p>

<a href="javascript:alert(3)">bad link</a> <a href=" JaVaScRiPt:alert(4)">bad too</a>
<iframe src="https://evil.example.net/"></iframe>
<a href="https://en.wikipedia.org/wiki/Heat_(1995_film)">outside</a>
"""


@pytest.mark.parametrize("name", ["unsafe.md", "unsafe.html"])
def test_body_html_is_sanitised_and_every_link_is_absolute(site: Site, name: str) -> None:
    text = UNSAFE
    if name.endswith(".html"):  # the same review written directly in HTML
        text = text.replace(
            "[a relative link](/reviews/lady-bird/)",
            '<a href="/reviews/lady-bird/">a relative link</a>',
        )
        text = text.replace("[a sibling](../arrival/)", '<a href="../arrival/">a sibling</a>')
        text = text.replace(
            '![a still](/images/still.jpg "Still")', '<img src="/images/still.jpg" alt="a still">'
        )
    site.write_review(name, text)
    gather(site)
    site.cli("feeds")

    review = stored(site)["unsafe"]
    body = review.body_html
    for unsafe in ("<script", "alert(", "onclick", "onerror", "javascript:", "<iframe"):
        assert unsafe not in body.lower()
    document = lxml.html.fragment_fromstring(body, create_parent="div")
    links = {a.text_content(): a.get("href") for a in document.iter("a")}
    assert links["a relative link"] == f"{SITE_URL}reviews/lady-bird/"
    assert links["a sibling"] == f"{SITE_URL}reviews/arrival/"
    assert links["outside"] == "https://en.wikipedia.org/wiki/Heat_(1995_film)"
    assert links["bad link"] is None and links["bad too"] is None  # text kept, link gone
    images = {img.get("alt"): img.get("src") for img in document.iter("img")}
    assert images["a still"] == f"{SITE_URL}images/still.jpg"
    # Relative to the review's page, where the site shows it.
    assert images["poster"] == f"{SITE_URL}reviews/unsafe/poster.png"
    assert "Click me" in body and "Intro" in body
    assert review.image == f"{SITE_URL}images/unsafe.jpg"
    assert review.related == [{"title": "Arrival", "url": f"{SITE_URL}reviews/arrival/"}]

    # Readers get the same clean HTML in the feed.
    rss = etree.fromstring((site.public / "feed.xml").read_bytes())
    item = next(i for i in rss.iter("item") if i.findtext("guid") == f"{ID_PREFIX}unsafe")
    assert item.findtext(CONTENT_ENCODED) == body


def test_control_characters_pasted_into_a_review_do_not_break_the_feeds(site: Site) -> None:
    # A form feed, a backspace and an escape, as word processors and terminals leave them.
    site.write_review(
        "pasted.md",
        "---\ntitle: Pasted\x0c from Word\n---\n\n"
        "Copied\x08 from a document\x1b with a page\x0cbreak.\n",
    )
    gather(site)

    site.cli("feeds")

    review = stored(site)["pasted"]
    assert review.title == "Pasted from Word"
    assert "Copied from a document with a pagebreak." in review.body_html
    assert feed_ids(site)[0] == "pasted"
    assert feed_ids(site, "atom.xml")[0] == "pasted"


def test_a_review_dated_in_the_future_waits_for_its_time(site: Site) -> None:
    soon = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    site.write_review(
        "premiere.md",
        f"---\ntitle: Premiere\npublished: {soon.isoformat()}\ntags: [premieres, drama]\n---\n"
        "Embargoed until the premiere.\n",
    )
    gather(site)
    site.cli("feeds")

    assert stored(site)["premiere"].published == soon
    assert "premiere" not in feed_ids(site)
    assert "premiere" not in feed_ids(site, "atom.xml")
    assert "premiere" not in feed_ids(site, "tags/drama/feed.xml")
    assert not (site.public / "tags" / "premieres").exists()

    # Once its time has come, the next build publishes it, at the top.
    with Store(site.config.database_url) as store:
        report = feeds.build_feeds(site.config, store, now=soon + timedelta(minutes=1))
    assert site.public / "feed.xml" in report.written
    assert feed_ids(site)[0] == "premiere"
    assert feed_ids(site, "atom.xml")[0] == "premiere"
    assert feed_ids(site, "tags/premieres/feed.xml") == ["premiere"]
    assert "premiere" in feed_ids(site, "tags/drama/feed.xml")


def test_two_gathers_storing_the_same_new_review_at_once_do_not_crash(
    tmp_path: Path, database_url: str, secret_env: str
) -> None:
    """Another gather has stored (not yet committed) the same new review: on PostgreSQL
    this one's insert then fails on the primary key. It must say so and stop cleanly; on
    SQLite it waits its turn and finds the review there."""
    site = make_site(tmp_path / "site", database_url=database_url)
    config = site.config
    with Store(config.database_url) as store, store.session() as other:
        other.add(
            Review(
                id="past-lives",
                source="reviews",
                source_key="past-lives.md",
                fingerprint="stored by the other gather",
                slug="past-lives",
                title="Past Lives",
                url="https://reelnotes.example.com/reviews/past-lives/",
                published=datetime.now(UTC),
                updated=datetime.now(UTC),
                first_seen=datetime.now(UTC),
            )
        )
        other.flush()  # the row is locked until this session commits
        reports: list[sources.GatherReport] = []

        def racer() -> None:
            with Store(config.database_url) as mine:
                reports.append(sources.gather(config, mine))

        thread = threading.Thread(target=racer)
        thread.start()
        time.sleep(0.5)
    thread.join(timeout=60)

    assert len(reports) == 1, "the racing gather crashed"
    if database_url.startswith("postgresql"):
        assert any("another gather was storing the same reviews" in e for e in reports[0].errors)
    again = sources.gather(config, Store(config.database_url))
    assert not again.errors
    with Store(config.database_url) as store, store.session() as session:
        assert len(session.scalars(select(Review)).all()) == 10


# --- revisions readers care about (issue 8: the digest's "Updated" section) -------------

LADY_BIRD_SUMMARY = (
    "Greta Gerwig's solo directing debut is a funny, sharp and deeply affectionate "
    "portrait of a teenager desperate to be anywhere else."
)
CORRECTION = "The director is Denis Villeneuve, not Ridley Scott."


def gather_at(site: Site, now: datetime) -> sources.GatherReport:
    """Gather as the scheduler would at `now`: revisions are dated by the gather."""
    with Store(site.config.database_url) as store:
        report = sources.gather(site.config, store, now)
    assert not report.errors, report.errors
    return report


def add_front_matter(path: Path, line: str) -> None:
    """Put LINE at the end of PATH's front matter, as an editor would."""
    text = path.read_text(encoding="utf-8")
    head, rest = text.split("\n---\n", 1)
    path.write_text(f"{head}\n{line}\n---\n{rest}", encoding="utf-8")


REVISIONS = {
    # case: (file, old text, new text, the note readers are shown)
    "a new rating": (
        "lady-bird",
        "rating: 4.0",
        "rating: 3.5",
        "Rating changed from 4/5 to 3.5/5.",
    ),
    "a rating taken away": ("lady-bird", "rating: 4.0\n", "", "No longer rated (it was 4/5)."),
    "a new verdict": (
        "lady-bird",
        "is a funny, sharp and deeply affectionate portrait",
        "is a shrill, shapeless portrait",
        "Verdict revised.",
    ),
    "a correction": ("arrival", None, f'correction: "{CORRECTION}"', CORRECTION),
    "a correction with a new rating": (
        "arrival",
        "rating: 4.5",
        f"rating: 4.0\ncorrection: {CORRECTION}",
        CORRECTION,  # the editor's words say it
    ),
    # The front matter's `updated` is left as it was: the revision still dates the item.
    "a new rating, `updated` not touched": (
        "arrival",
        "rating: 4.5",
        "rating: 5",
        "Rating changed from 4.5/5 to 5/5.",
    ),
}


@pytest.mark.parametrize("case", sorted(REVISIONS))
def test_a_new_rating_verdict_or_correction_is_a_revision(site: Site, case: str) -> None:
    slug, old, new, note = REVISIONS[case]
    first = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    gather_at(site, first)
    before = stored(site)[slug]
    assert before.revised_at is None and before.revision_note is None
    path = site.reviews / f"{slug}.md"
    if old is None:
        add_front_matter(path, new)
    else:
        edit(path, old, new)

    later = first + timedelta(hours=3)
    report = gather_at(site, later)

    assert (report.new, report.updated) == (0, 1)
    after = stored(site)[slug]
    assert after.revised_at == later
    assert after.revision_note == note
    assert after.updated == later  # feeds show it as updated ...
    assert after.published == before.published  # ... in its place, not as new
    assert after.id == before.id

    # Gathering again changes nothing: the revision is not counted twice.
    gather_at(site, later + timedelta(hours=1))
    again = stored(site)[slug]
    assert (again.revised_at, again.revision_note) == (later, note)


NOT_REVISIONS = {
    "a typo fixed in the body": ("would like you to call her", "would like you to cal her"),
    "a typo fixed in the first paragraph": ("Christine McPherson", "Christine McPhersen"),
    "tags": ("tags: [comedy, drama, coming-of-age]", "tags: [comedy, drama, sacramento]"),
    "a new image": ("tags: [", "image: /images/lady-bird.jpg\ntags: ["),
    "a new title": ("a love letter to Sacramento", "a love letter to Sacramento, California"),
    "a typo fixed in the verdict": ("deeply affectionate", "deeply afectionate"),
    "the verdict's punctuation": ("funny, sharp and", "funny, sharp, and"),
    "the same rating written otherwise": ("rating: 4.0", "rating: 4"),
}


@pytest.mark.parametrize("case", sorted(NOT_REVISIONS))
def test_edits_readers_need_not_hear_about_are_not_revisions(site: Site, case: str) -> None:
    old, new = NOT_REVISIONS[case]
    first = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    gather_at(site, first)
    edit(site.reviews / "lady-bird.md", old, new)

    later = first + timedelta(hours=3)
    report = gather_at(site, later)

    assert report.updated == 1  # an edit all the same: the feeds carry the new text
    after = stored(site)["lady-bird"]
    assert after.updated == later
    assert (after.revised_at, after.revision_note) == (None, None)


def test_without_a_summary_the_first_paragraph_is_not_a_verdict(site: Site) -> None:
    # The summary is then the start of the body: fixing a typo there is a body edit.
    site.write_review(
        "heat.md", HEAT.replace('summary: "Pacino and De Niro, finally in the same scene."\n', "")
    )
    at = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    gather_at(site, at)
    assert stored(site)["heat"].summary.startswith("A cop and a thief who understand")

    edit(
        site.reviews / "heat.md",
        "A cop and a thief who understand",
        "A cop and a thief, who understand",
    )
    gather_at(site, at + timedelta(hours=1))
    edit(site.reviews / "heat.md", "better than anyone else", "better than anybody else")
    gather_at(site, at + timedelta(hours=2))

    heat = stored(site)["heat"]
    assert heat.summary.startswith(
        "A cop and a thief, who understand each other better than anybody"
    )
    assert (heat.revised_at, heat.revision_note) == (None, None)

    # Given a verdict of its own later, it has one from then on; giving it is not news.
    add_front_matter(site.reviews / "heat.md", "summary: A masterpiece of nerves.")
    gather_at(site, at + timedelta(hours=3))
    assert stored(site)["heat"].revised_at is None
    edit(site.reviews / "heat.md", "A masterpiece of nerves.", "Long, and it feels it.")
    gather_at(site, at + timedelta(hours=4))
    heat = stored(site)["heat"]
    assert (heat.revised_at, heat.revision_note) == (at + timedelta(hours=4), "Verdict revised.")


def test_a_review_gathered_for_the_first_time_is_never_revised(site: Site) -> None:
    add_front_matter(site.reviews / "arrival.md", f'correction: "{CORRECTION}"')
    site.write_review(
        "heat.md", HEAT.replace("rating: 4.5", f"rating: 4.5\ncorrection: {CORRECTION}")
    )

    gather_at(site, datetime(2026, 11, 25, 12, 0, tzinfo=UTC))

    for slug in ("arrival", "heat", "lady-bird"):
        review = stored(site)[slug]
        assert (review.revised_at, review.revision_note) == (None, None), slug


def test_a_correction_counts_once_and_stays_in_the_note_until_replaced(site: Site) -> None:
    at = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    gather_at(site, at)
    path = site.reviews / "arrival.md"

    add_front_matter(path, f"correction: {CORRECTION}")
    corrected = at + timedelta(hours=1)
    gather_at(site, corrected)
    assert stored(site)["arrival"].revision_note == CORRECTION

    # A typo fixed later, the correction still in the file: not a new revision.
    edit(path, "vaguely lens-shaped", "vaguely lens shaped")
    gather_at(site, corrected + timedelta(hours=1))
    review = stored(site)["arrival"]
    assert (review.revised_at, review.revision_note) == (corrected, CORRECTION)

    # A new rating: said, with the correction that still stands.
    edit(path, "rating: 4.5", "rating: 4.0")
    rerated = corrected + timedelta(hours=2)
    gather_at(site, rerated)
    review = stored(site)["arrival"]
    assert review.revised_at == rerated
    assert review.revision_note == f"Rating changed from 4.5/5 to 4/5. {CORRECTION}"
    edit(path, "vaguely lens shaped", "vaguely lens-shaped")
    gather_at(site, rerated + timedelta(hours=1))
    assert stored(site)["arrival"].revised_at == rerated

    # A second correction replaces the first.
    edit(path, f"correction: {CORRECTION}", "correction: Amy Adams plays Louise Banks.")
    recorrected = rerated + timedelta(hours=2)
    gather_at(site, recorrected)
    review = stored(site)["arrival"]
    assert (review.revised_at, review.revision_note) == (
        recorrected,
        "Amy Adams plays Louise Banks.",
    )

    # Taking the correction out is not news.
    edit(path, "correction: Amy Adams plays Louise Banks.\n", "")
    gather_at(site, recorrected + timedelta(hours=1))
    assert stored(site)["arrival"].revised_at == recorrected


def test_a_remote_review_with_a_new_rating_or_verdict_is_revised(site: Site) -> None:
    """Feed and sitemap sources store their entries through one function (ingest), which
    notes revisions as the files source does: the rating and the verdict (the entry's
    own summary) count; an edit of the text does not."""

    def entry(rating: float | None, summary: str, body: str) -> Entry:
        return Entry(
            guid="https://friends.example.org/heat/",
            link="https://friends.example.org/heat/",
            title="Heat",
            summary_html=f"<p>{summary}</p>",
            body_html=f"<p>{body}</p><p>More.</p>",
            published=datetime(2026, 11, 20, 9, 0, tzinfo=UTC),
            rating=rating,
        )

    def store(e: Entry, now: datetime) -> Review:
        with Store(site.config.database_url) as db, db.session() as session:
            report = sources.GatherReport()
            assert ingest.store_entries(session, "friends", [e], now, report, SITE_URL) == []
            review = session.scalars(select(Review).where(Review.source == "friends")).one()
            session.expunge(review)
            return review

    at = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    verdict = "Pacino and De Niro, finally in the same scene."
    first = store(entry(3.75, verdict, "A cop and a thief."), at)
    assert first.revised_at is None

    typo = store(entry(3.75, verdict, "A cop and a theif."), at + timedelta(hours=1))
    assert typo.revised_at is None and typo.updated == at + timedelta(hours=1)

    rerated = store(entry(4.25, verdict, "A cop and a theif."), at + timedelta(hours=2))
    assert rerated.revised_at == at + timedelta(hours=2)
    assert rerated.revision_note == "Rating changed from 3.75/5 to 4.25/5."
    assert rerated.id == first.id and rerated.published == first.published

    later = at + timedelta(hours=3)
    revised = store(entry(4.25, "Overlong, and it knows it.", "A cop and a theif."), later)
    assert (revised.revised_at, revised.revision_note) == (later, "Verdict revised.")
