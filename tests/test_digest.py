"""Email digests: what goes into an issue, how it is rendered, and what the editor sees.

Most tests drive `syndicate digest preview/send` against a temporary site with real
review files, a real SQLite database and the outbox transport, and read the files a
subscriber would get. Tests that need the clock to move (a second issue a week later)
call the pipeline with an explicit `now`, still with real files and a real database.
"""

from __future__ import annotations

import email
import email.policy
import re
import shutil
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import lxml.html
import pytest
import yaml
from sqlalchemy import select

from syndicate import digest as digests
from syndicate import pipeline, sources
from syndicate.config import BUILTIN_TEMPLATES
from syndicate.delivery import open_transport
from syndicate.digest import render
from syndicate.digest.selection import Selection, select_for_issue
from syndicate.related import Settings
from syndicate.store import Review, Store, Subscriber
from syndicate.tokens import read_token
from tests.conftest import SECRET, Site

BASE = "https://reelnotes.example.com/reviews/"
LEFTOVERS = ("{{", "}}", "{%", "%}", "{#", "<mj-", "</mj", "<mjml", "%%")


# --- helpers ---------------------------------------------------------------------------


def review(
    site: Site, slug: str, published: datetime, title: str | None = None, **front: Any
) -> None:
    """Write reviews/SLUG.md with front matter, as an editor would."""
    meta = {
        "title": title or slug.replace("-", " ").title(),
        "published": published.isoformat(),
        "author": "Maya Okafor",
        "summary": f"Summary of {slug}.",
        **front,
    }
    text = "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n\nBody.\n"
    site.write_review(f"{slug}.md", text)


def only_my_reviews(site: Site) -> None:
    shutil.rmtree(site.reviews)
    site.reviews.mkdir()


def configure(site: Site, top: dict[str, Any] | None = None, **digest: Any) -> None:
    """Change keys of the weekly digest (None removes a key) or top-level sections."""
    data = yaml.safe_load(site.config_path.read_text(encoding="utf-8"))
    for key, value in digest.items():
        if value is None:
            data["digests"][0].pop(key, None)
        else:
            data["digests"][0][key] = value
    data.update(top or {})
    site.write_config(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def preview(site: Site, *args: str) -> tuple[lxml.html.HtmlElement, str, EmailMessage]:
    site.cli("gather")
    site.cli("digest", "preview", "weekly", "--output", "out", *args)
    out = site.root / "out"
    html = (out / "weekly.html").read_text(encoding="utf-8")
    text = (out / "weekly.txt").read_text(encoding="utf-8")
    for leftover in LEFTOVERS:
        assert leftover not in html and leftover not in text, f"{leftover!r} left in the issue"
    return lxml.html.fromstring(html), text, read_eml(out / "weekly.eml")


def read_eml(path: Path) -> EmailMessage:
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def parts(message: EmailMessage) -> tuple[str, str]:
    html, text = message.get_body(("html",)), message.get_body(("plain",))
    assert html is not None and text is not None
    return html.get_content(), text.get_content()


def links(doc: lxml.html.HtmlElement) -> list[tuple[str, str]]:
    """Every link in the HTML as (visible text, href), in document order."""
    return [(" ".join(a.text_content().split()), a.get("href")) for a in doc.iter("a")]


def section(text: str, heading: str) -> list[str]:
    """The lines of the plain-text part under HEADING, up to the next blank-line gap."""
    lines = text.split(heading + "\n", 1)[1].split("\n\n", 1)[0]
    return lines.splitlines()


def line_of(path: Path, needle: str) -> int:
    hits = [n for n, line in enumerate(path.read_text().splitlines(), 1) if needle in line]
    assert len(hits) == 1, f"{needle!r} should be on exactly one line of {path}"
    return hits[0]


def draft_at(site: Site, now: datetime) -> digests.Draft | None:
    """Gather at `now` and draft the next weekly issue as it would be sent at `now`."""
    config = site.config
    with Store(config.database_url) as store:
        sources.gather(config, store, now)
        with store.session() as session:
            return digests.draft(config, session, config.digest("weekly"), now)


# --- preview: the whole issue ----------------------------------------------------------


def test_preview_writes_the_issue_with_featured_related_and_everything_new(site: Site) -> None:
    doc, text, message = preview(site)

    # Past Lives is the editor's pick (`featured: true`); its author linked two reviews.
    featured = BASE + "past-lives/"
    related = [BASE + "aftersun/", BASE + "parasite/"]
    hrefs = [href for _, href in links(doc)]
    assert ("Past Lives: the road not taken", featured) in links(doc)
    first_review = min(i for i, h in enumerate(hrefs) if h.startswith(BASE))
    assert hrefs[first_review] == featured
    assert ("Our review of Aftersun", related[0]) in links(doc)
    assert ("Our review of Parasite", related[1]) in links(doc)
    # Every other review published since first_issue_since is in "Also new".
    everything = {p.stem for p in site.reviews.glob("*.md")}
    assert {h.removeprefix(BASE).strip("/") for h in hrefs if h.startswith(BASE)} == everything
    assert "Also new" in doc.text_content() and "Related reviews" in doc.text_content()

    # The plain-text part carries the same issue.
    assert section(text, "FEATURED REVIEW")[0] == "Past Lives: the road not taken"
    assert [line.strip() for line in section(text, "RELATED REVIEWS")[1::2]] == related
    also_new = [line.strip() for line in section(text, "ALSO NEW")[1::2]]
    assert sorted(also_new) == sorted(BASE + s + "/" for s in everything - {"past-lives"})
    assert also_new[0] == BASE + "aftersun/"  # newest first
    assert "Hello Sample Reader," in text
    assert message["Subject"] == "The Week in Film: Past Lives: the road not taken"

    # A preview records and sends nothing.
    assert "no issues yet" in site.cli("digest", "status", "weekly").output
    assert site.emails() == []


def test_preview_as_a_subscriber_shows_their_name_and_their_working_links(site: Site) -> None:
    site.cli("subscribers", "add", "tom@example.com", "--name", "Tom & <Jerry>")
    doc, text, message = preview(site, "--subscriber", "TOM@Example.com")

    assert "Hello Tom & <Jerry>," in doc.text_content()
    assert "Hello Tom & <Jerry>," in text
    assert message["To"].addresses[0].addr_spec == "tom@example.com"
    unsubscribe = dict(links(doc))["Unsubscribe"]
    assert message["List-Unsubscribe"].strip().startswith(f"<{unsubscribe}>")
    assert f"Unsubscribe: {unsubscribe}" in text
    token = unsubscribe.rsplit("/", 1)[1]
    with Store(site.config.database_url) as store, store.session() as session:
        subscriber = session.get_one(Subscriber, read_token(SECRET, "unsubscribe", token))
        assert subscriber.email == "tom@example.com"

    missing = site.cli("digest", "preview", "weekly", "--subscriber", "no@example.com", ok=False)
    assert "no subscriber with the address no@example.com" in missing.output


def test_titles_with_markup_characters_are_shown_as_written(site: Site) -> None:
    only_my_reviews(site)
    now = datetime.now(UTC)
    review(
        site,
        "fast-furious",
        now - timedelta(hours=2),
        title="Fast & Furious <Redux>",
        film="Fast & Furious",
        summary='Cars & "family" <again>.',
    )
    configure(site, first_issue_since=None, preheader="{{ featured.summary }}")
    doc, text, message = preview(site)

    assert message["Subject"] == "The Week in Film: Fast & Furious <Redux>"
    assert ("Fast & Furious <Redux>", BASE + "fast-furious/") in links(doc)
    preheader = doc.xpath("//body/div[contains(@style, 'display:none')]")[0]
    assert preheader.text_content().strip() == 'Cars & "family" <again>.'
    assert doc.xpath("//script") == []
    assert "Fast & Furious <Redux>" in text


# --- choosing the featured review ------------------------------------------------------


@pytest.mark.parametrize(
    ("strategies", "drop", "expected"),
    [
        (["editors_pick", "highest_rated", "newest"], (), "Older Pick"),
        (["highest_rated", "editors_pick"], (), "Top Rated Newer"),
        (["newest", "editors_pick"], (), "Newest"),
        # Falling back in order: no pick -> highest rated; no ratings either -> newest.
        (["editors_pick", "highest_rated"], ("featured",), "Top Rated Newer"),
        (["editors_pick", "highest_rated"], ("featured", "rating"), "Newest"),
        (["editors_pick"], ("featured",), "Newest"),
    ],
)
def test_each_featured_strategy_picks_what_it_promises(
    site: Site, strategies: list[str], drop: tuple[str, ...], expected: str
) -> None:
    only_my_reviews(site)
    now = datetime.now(UTC)
    traits: dict[str, dict[str, Any]] = {
        "older-pick": {"featured": True, "rating": 3.0, "days": 5},
        "top-rated-older": {"rating": 4.5, "days": 4},
        "top-rated-newer": {"rating": 4.5, "days": 2},
        "newest": {"days": 0.1},
    }
    for slug, keys in traits.items():
        front = {k: v for k, v in keys.items() if k not in drop and k != "days"}
        review(site, slug, now - timedelta(days=keys["days"]), **front)
    configure(site, featured=strategies, first_issue_since=None)

    issue = draft_at(site, now)
    assert issue is not None and issue.selection is not None
    assert issue.rendered.subject == f"The Week in Film: {expected}"
    assert len(issue.selection.reviews) == 4  # the others are still listed


# --- related reviews -------------------------------------------------------------------


def test_related_links_put_the_authors_first_then_film_director_and_tags(site: Site) -> None:
    only_my_reviews(site)
    now = datetime.now(UTC)
    old = now - timedelta(days=120)
    review(
        site,
        "heat",
        now - timedelta(days=1),
        film="Heat",
        director="Michael Mann",
        tags=["crime", "thriller", "heist"],
        featured=True,
        related=[
            {"title": "Thief, where Mann began", "url": "/reviews/thief/"},
            {"title": "Mann in conversation", "url": "https://elsewhere.example.org/mann"},
        ],
    )
    # Something new in the same issue is listed under "Also new", never as related.
    review(site, "new-crime", now - timedelta(days=2), tags=["crime", "thriller", "heist"])
    # The archive, each less related than the one before.
    review(site, "thief", old, film="Thief", director="Michael Mann", tags=["crime"])
    review(site, "heat-1986", old, film="Heat", director="Dick Richards", author="Priya Raman")
    review(site, "collateral", old - timedelta(days=1), director="Michael Mann")
    review(site, "ronin", old, tags=["crime", "thriller"])
    review(site, "the-town", old, tags=["heist"])
    review(site, "paddington", old, tags=["family"])
    configure(site, first_issue_since=None, related=6)

    doc, text, _ = preview(site)
    lines = section(text, "RELATED REVIEWS")
    assert [line.strip() for line in lines[1::2]] == [
        BASE + "thief/",
        "https://elsewhere.example.org/mann",
        BASE + "heat-1986/",
        BASE + "collateral/",
        BASE + "ronin/",
        BASE + "the-town/",
    ]
    # Each related review is shown with its author and date; the author's titles are kept.
    assert lines[0].startswith("- Thief, where Mann began, by Maya Okafor, ")
    assert lines[2] == "- Mann in conversation"
    local = old.astimezone(ZoneInfo("Europe/London"))
    assert lines[4] == f"- Heat 1986, by Priya Raman, {local.day} {local:%B %Y}"
    assert ("Thief, where Mann began", BASE + "thief/") in links(doc)

    configure(site, related=3)
    _, text, _ = preview(site)
    assert [line.strip() for line in section(text, "RELATED REVIEWS")[1::2]] == [
        BASE + "thief/",
        "https://elsewhere.example.org/mann",
        BASE + "heat-1986/",
    ]


# --- which reviews an issue covers -----------------------------------------------------


def test_the_first_issue_covers_one_schedule_period_unless_told_otherwise(site: Site) -> None:
    only_my_reviews(site)
    now = datetime.now(UTC)
    review(site, "six-days-ago", now - timedelta(days=6))
    review(site, "eight-days-ago", now - timedelta(days=8))
    review(site, "next-week", now + timedelta(days=7))
    configure(site, first_issue_since=None)  # the schedule is weekly (Fridays 08:00)

    issue = draft_at(site, now)
    assert issue is not None and issue.selection is not None
    assert [r.slug for r in issue.selection.reviews] == ["six-days-ago"]

    since = (now - timedelta(days=30)).date().isoformat()
    configure(site, first_issue_since=since)
    issue = draft_at(site, now)
    assert issue is not None and issue.selection is not None
    assert [r.slug for r in issue.selection.reviews] == ["six-days-ago", "eight-days-ago"]

    configure(site, top={"schedules": {"digests": {"weekly": {"interval": "1d"}}}})
    configure(site, first_issue_since=None)
    assert draft_at(site, now) is None  # nothing in the last day


def test_a_later_issue_carries_only_what_no_earlier_issue_did(site: Site) -> None:
    only_my_reviews(site)
    site.cli("subscribers", "import", "subscribers.csv")
    now = datetime.now(UTC) + timedelta(minutes=1)
    review(site, "monday", now - timedelta(days=3))
    review(site, "wednesday", now - timedelta(days=1))
    configure(site, first_issue_since=None)
    config = site.config

    def send(at: datetime) -> pipeline.DigestOutcome:
        with Store(config.database_url) as store:
            sources.gather(config, store, at)
            return pipeline.send_digest(config, store, "weekly", open_transport(config), at)

    def reviews_in(number: int) -> list[str]:
        mails = sorted(site.outbox.glob(f"weekly-{number:04d}-*.eml"))
        assert len(mails) == 6  # one per subscriber
        _, text = parts(read_eml(mails[0]))
        return sorted(set(re.findall(re.escape(BASE) + r"([a-z0-9-]+)/", text)))

    first = send(now)
    assert first.report is not None and first.report.sent == 6
    assert reviews_in(1) == ["monday", "wednesday"]

    # A week later: one new review, one gathered late but dated inside the first issue's
    # week (it still gets its turn), and one old file found late (history, not news).
    review(site, "next-tuesday", now + timedelta(days=4))
    review(site, "late-arrival", now - timedelta(hours=2))
    review(site, "long-ago", now - timedelta(days=40))
    second = send(now + timedelta(days=7))
    assert second.report is not None and second.report.number == 2
    assert reviews_in(2) == ["late-arrival", "next-tuesday"]

    third = send(now + timedelta(days=14))
    assert third.report is None  # nothing new: no issue
    assert len(site.emails()) == 12


def test_nothing_new_means_no_issue_unless_send_when_empty(site: Site) -> None:
    site.cli("subscribers", "import", "subscribers.csv")
    site.cli("gather")
    site.cli("digest", "send", "weekly")
    assert len(site.emails()) == 6

    quiet = site.cli("digest", "preview", "weekly", "--output", "out")
    assert "nothing new since the last issue, so no issue would be sent" in quiet.output
    assert not (site.root / "out").exists()
    assert "nothing new" in site.cli("digest", "send", "weekly").output
    assert len(site.emails()) == 6

    configure(site, send_when_empty=True)
    doc, text, message = preview(site)
    assert message["Subject"] == "The Week in Film"  # not "The Week in Film: " nor an error
    assert "We have not published anything new since the last issue" in text
    assert "We have not published anything new" in doc.text_content()
    assert "Featured review" not in doc.text_content()


# --- subject and preheader -------------------------------------------------------------


def test_subject_and_preheader_templates_render_for_each_subscriber(site: Site) -> None:
    configure(
        site,
        subject="No. {{ issue.number }}:\n  {{ featured.film }} & {{ others|length }} more,"
        " for {{ subscriber.name }}",
        preheader="{{ featured.summary|truncate(40) }}",
    )
    site.cli("subscribers", "add", "ada@example.com", "--name", "Ada")
    doc, _, message = preview(site, "--subscriber", "ada@example.com")

    assert message["Subject"] == "No. 1: Past Lives & 9 more, for Ada"
    hidden = doc.xpath("//body/div[contains(@style, 'display:none')]")[0]
    assert hidden.text_content().strip() == "Celine Song's debut is a love story..."


# --- broken templates ------------------------------------------------------------------


BROKEN = {
    "syntax error": ("{% if related %}", "{% iff related %}", "digest.mjml.j2"),
    "unknown variable": (
        "<mj-text>{{ featured.summary }}</mj-text>",
        "<mj-text>{{ featured.blurb }}</mj-text>",
        "digest.mjml.j2",
    ),
    "unknown filter": (
        "{{ featured.summary|wordwrap(72) }}",
        "{{ featured.summary|shorten(72) }}",
        "digest.txt.j2",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_template_names_its_file_and_line_and_nothing_is_sent(
    site: Site, case: str
) -> None:
    old, new, name = BROKEN[case]
    templates = site.root / "templates"
    templates.mkdir()
    shutil.copy(BUILTIN_TEMPLATES / name, templates)
    path = (templates / name).resolve()
    path.write_text(path.read_text().replace(old, new, 1))
    configure(site, top={"templates": "templates"})
    site.cli("subscribers", "import", "subscribers.csv")
    site.cli("gather")

    for command in ("preview", "send"):
        result = site.cli("digest", command, "weekly", ok=False)
        assert "Traceback" not in result.output
        assert f"{path}, line {line_of(path, new)}:" in result.output, result.output
    assert site.emails() == []
    assert not (site.root / "var" / "preview").exists()
    assert "no issues yet" in site.cli("digest", "status", "weekly").output


def test_a_broken_subject_names_the_setting_and_nothing_is_sent(site: Site) -> None:
    configure(site, subject="{{ digest.title }}: {{ feature.title }}")
    site.cli("subscribers", "import", "subscribers.csv")
    site.cli("gather")
    result = site.cli("digest", "send", "weekly", ok=False)
    assert "subject (in " in result.output and "syndicate.yaml, digests: weekly)" in result.output
    assert "line 1: 'feature' is undefined" in result.output
    assert site.emails() == []


# --- one issue, many subscribers -------------------------------------------------------


def test_each_subscriber_gets_their_own_values_in_one_shared_issue(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    site.cli("subscribers", "import", "subscribers.csv")
    site.cli("subscribers", "add", "tom@example.com", "--name", "Tom & <Jerry>")
    site.cli("gather")
    site.cli("digest", "preview", "weekly", "--subscriber", "tom@example.com", "--output", "p")
    compiled = []
    real = render.mjml2html
    monkeypatch.setattr(render, "mjml2html", lambda source: compiled.append(1) or real(source))

    site.cli("digest", "send", "weekly")
    mails = [read_eml(path) for path in site.emails()]
    assert len(mails) == 7
    assert len(compiled) == 1  # MJML compiled once for the issue, not once per subscriber

    shared = set()
    with Store(site.config.database_url) as store, store.session() as session:
        for message in mails:
            html, text = parts(message)
            doc = lxml.html.fromstring(html)
            address = message["To"].addresses[0].addr_spec
            subscriber = session.scalars(
                select(Subscriber).where(Subscriber.email == address)
            ).one()
            name = subscriber.name or "reader"
            assert f"Hello {name}," in doc.text_content()
            assert f"Hello {name}," in text
            unsubscribe = dict(links(doc))["Unsubscribe"]
            preferences = dict(links(doc))["Email preferences"]
            assert message["List-Unsubscribe"].strip().startswith(f"<{unsubscribe}>")
            token = unsubscribe.rsplit("/", 1)[1]
            assert read_token(SECRET, "unsubscribe", token) == subscriber.id
            # Take out what is personal: what is left is the same issue for everybody.
            for value, marker in [
                (unsubscribe, "UNSUBSCRIBE"),
                (preferences, "PREFERENCES"),
                (address, "EMAIL"),
                (name.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"), "NAME"),
            ]:
                html = html.replace(value, marker)
            shared.add(html)
            if address == "tom@example.com":
                previewed = (site.root / "p" / "weekly.html").read_text(encoding="utf-8")
                assert previewed == parts(message)[0]  # the preview is what was sent
    assert len(shared) == 1


# --- updated reviews (issue 8): revised since readers got them --------------------------


CORRECTION = "Jeremy Renner plays the physicist, not the linguist."


def revise(site: Site, at: datetime) -> None:
    """Gather the example site, then revise two reviews as an editor would: Lady Bird's
    rating changes, Arrival gets a correction."""
    with Store(site.config.database_url) as store:
        sources.gather(site.config, store, at - timedelta(days=1))
    lady_bird = site.reviews / "lady-bird.md"
    lady_bird.write_text(lady_bird.read_text().replace("rating: 4.0", "rating: 3.5"))
    arrival = site.reviews / "arrival.md"
    arrival.write_text(
        arrival.read_text().replace("rating: 4.5", f"rating: 4.5\ncorrection: {CORRECTION}")
    )


def render_with(
    site: Site, new: list[str], updated: list[str], at: datetime
) -> tuple[Selection | None, render.RenderedIssue]:
    """Gather at `at`, then select and render an issue with these new and updated reviews."""
    config = site.config
    digest = config.digest("weekly")
    with Store(config.database_url) as store:
        report = sources.gather(config, store, at)
        assert not report.errors
        with store.session() as session:
            reviews = {r.id: r for r in session.scalars(select(Review))}
            selection = select_for_issue(
                session,
                digest,
                [reviews[r] for r in new],
                at,
                Settings.from_config(config.related),
                updated=[reviews[r] for r in updated],
            )
            rendered = render.render_issue(config, digest, 7, selection, at)
    for leftover in (*LEFTOVERS[:-1], "None"):
        assert leftover not in rendered.html and leftover not in rendered.text, leftover
    return selection, rendered


def updated_section(doc: lxml.html.HtmlElement) -> list[tuple[str, str]]:
    """The links after the "Updated" heading, up to the footer, as (text, href)."""
    assert doc.text_content().count("Updated") == 1
    heading = next(el for el in doc.iter() if (el.text or "").strip() == "Updated")
    found: list[tuple[str, str]] = []
    after = False
    for el in doc.iter():
        if el is heading:
            after = True
        elif after and el.tag == "a":
            if not el.get("href", "").startswith(BASE):
                break  # the footer
            found.append((" ".join(el.text_content().split()), el.get("href")))
    return found


def test_updated_reviews_are_rendered_after_the_new_ones_with_their_note_and_rating(
    site: Site,
) -> None:
    at = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
    revise(site, at)
    selection, rendered = render_with(
        site, ["past-lives", "aftersun"], ["lady-bird", "arrival"], at
    )

    assert selection is not None
    assert [r.id for r in selection.reviews] == ["past-lives", "aftersun"]  # the new ones
    assert [r.id for r in selection.updated] == ["lady-bird", "arrival"]
    assert BASE + "lady-bird/" not in [link.url for link in selection.related]

    doc = lxml.html.fromstring(rendered.html)
    text = doc.text_content()
    assert text.index("Also new") < text.index("Updated")
    assert updated_section(doc) == [
        ("Lady Bird: a love letter to Sacramento, and to mothers", BASE + "lady-bird/"),
        ("Read the review", BASE + "lady-bird/"),
        ("Arrival: first contact as a grammar lesson", BASE + "arrival/"),
        ("Read the review", BASE + "arrival/"),
    ]
    assert "Rating changed from 4/5 to 3.5/5." in text
    assert CORRECTION in text
    stars = [s.get("aria-label") for s in doc.find_class("stars")]
    assert stars[-2:] == ["3.5 out of 5", "4.5 out of 5"]  # the current ratings

    # The plain-text part has the same section, after "Also new".
    plain = rendered.text
    assert plain.index("ALSO NEW") < plain.index("UPDATED")
    assert section(plain, "UPDATED") == [
        "- Lady Bird: a love letter to Sacramento, and to mothers (3.5/5), by Maya Okafor",
        "  Rating changed from 4/5 to 3.5/5.",
        f"  {BASE}lady-bird/",
        "- Arrival: first contact as a grammar lesson (4.5/5), by Jonah Lindqvist",
        f"  {CORRECTION}",
        f"  {BASE}arrival/",
    ]


def test_an_issue_with_only_updated_reviews_renders(site: Site) -> None:
    at = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
    revise(site, at)
    configure(
        site, subject="{{ digest.title }}{% if updated %}: {{ updated|length }} revised{% endif %}"
    )
    selection, rendered = render_with(site, [], ["arrival"], at)

    assert selection is not None
    assert selection.featured is None and selection.reviews == [] and selection.related == []
    assert [r.id for r in selection.updated] == ["arrival"]
    assert rendered.subject == "The Week in Film: 1 revised"  # subjects see `updated` too

    doc = lxml.html.fromstring(rendered.html)
    text = " ".join(doc.text_content().split())
    assert "we have revised a review you read earlier" in text
    assert "Featured review" not in text and "Also new" not in text
    assert updated_section(doc)[0] == (
        "Arrival: first contact as a grammar lesson",
        BASE + "arrival/",
    )
    assert CORRECTION in text
    assert "we have revised a review you read earlier" in " ".join(rendered.text.split())
    assert section(rendered.text, "UPDATED")[1:] == [f"  {CORRECTION}", f"  {BASE}arrival/"]
    assert "FEATURED REVIEW" not in rendered.text

    # The default subject and preheader (about the featured review) still make sense.
    configure(
        site, subject="{{ digest.title }}: {{ featured.title }}", preheader="{{ featured.summary }}"
    )
    _, rendered = render_with(site, [], ["arrival"], at)
    assert (rendered.subject, rendered.preheader) == ("The Week in Film", "")


def test_nothing_new_and_nothing_updated_is_no_selection(site: Site) -> None:
    at = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
    config = site.config
    with Store(config.database_url) as store:
        sources.gather(config, store, at)
        with store.session() as session:
            digest = config.digest("weekly")
            assert select_for_issue(session, digest, [], at) is None
            past_lives = session.get_one(Review, "past-lives")
            # A review both new and revised for a reader is new to them: listed once.
            both = select_for_issue(session, digest, [past_lives], at, updated=[past_lives])
            assert both is not None
            assert (both.reviews, both.updated) == ([past_lives], [])
