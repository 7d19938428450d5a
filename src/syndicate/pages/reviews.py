"""A page per review (pages.review_pages), for sites whose reviews have no other home.

Each page goes where the review's link already points (sources' `link`, by default
{site_url}reviews/{slug}/ -> reviews/<slug>/index.html), so the links in the feeds and
the emails lead to it with nothing else to change. A link outside site.url cannot be
served from the output folder: that review gets no page, and `syndicate check` warns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

import jinja2
from sqlalchemy import select
from sqlalchemy.orm import Session

from syndicate.config import Config
from syndicate.digest.selection import related_links
from syndicate.pages.jsonld import review_data, script_json
from syndicate.pages.layout import base_context, root_for
from syndicate.related import Settings
from syndicate.store import Review

# Folders of the output that other pages own: a review there would overwrite them.
RESERVED = ("archive", "static")
_PAGE_SUFFIXES = (".html", ".htm")


class NoPage(ValueError):
    """The review's link is not a place in the output folder."""


def page_path(config: Config, url: str) -> PurePosixPath:
    """The file, relative to the output folder, that is served at the review's `url`."""
    base = config.site.url
    if not url.startswith(base):
        raise NoPage(f"its link {url} is not under site.url ({base})")
    path = unquote(urlsplit(url[len(base) :]).path)
    parts = path.rstrip("/").split("/")
    if not path.strip("/") or any(p in ("", ".", "..") or "\\" in p for p in parts):
        raise NoPage(f"its link {url} does not name a page of its own")
    if parts[0] in RESERVED:
        raise NoPage(f"its link {url} is inside {parts[0]}/, which syndicate writes itself")
    if path.endswith("/") or not path.lower().endswith(_PAGE_SUFFIXES):
        return PurePosixPath(*parts, "index.html")
    return PurePosixPath(*parts)


def link_problems(config: Config) -> list[str]:
    """Sources whose review links cannot have pages in the output folder."""
    problems = []
    for source in config.sources:
        if source.type != "files":
            continue  # a feed's or sitemap's reviews live on their own site, not here
        sample = source.link.format(site_url=config.site.url, slug="a-review", id="a-review")
        try:
            page_path(config, sample)
        except NoPage as exc:
            problems.append(
                f"source {source.name}: its reviews get no page ({exc}); "
                "use a link such as {site_url}reviews/{slug}/"
            )
    return problems


def _reviews(session: Session) -> Iterator[Review]:
    query = select(Review).order_by(Review.published.desc(), Review.id)
    yield from session.scalars(query.execution_options(yield_per=500))


def build_review_pages(
    config: Config,
    session: Session,
    env: jinja2.Environment,
    write: Callable[[PurePosixPath, str], None],
    remove: Callable[[PurePosixPath], None],
    problem: Callable[[str], None],
) -> None:
    """Write a page per live review and remove the pages of withdrawn ones."""
    template = env.get_template("pages/review.html.j2")
    settings = Settings.from_config(config.related)
    now = datetime.now(UTC)
    taken: dict[PurePosixPath, str] = {}
    withdrawn: list[PurePosixPath] = []
    remote = {source.name for source in config.sources if source.type != "files"}
    for review in _reviews(session):
        if review.source in remote:
            continue  # it has its page on the site it came from
        try:
            path = page_path(config, review.url)
        except NoPage as exc:
            if review.live:
                problem(f"review {review.id}: no page: {exc}")
            continue
        if not review.live:
            withdrawn.append(path)
            continue
        if path in taken:
            problem(f"review {review.id}: no page: review {taken[path]} has the same link")
            continue
        taken[path] = review.id
        context = base_context(config, root_for(path))
        # The author's links, then the stored related list (syndicate.related).
        related = related_links(
            session, review, len(review.related) + config.related.page_links, set(), now, settings
        )
        html = template.render(
            {
                **context,
                "review": review,
                "related": related,
                "canonical": review.url,
                "description": review.summary,
                "jsonld": script_json(review_data(config, review)),
            }
        )
        write(path, html)
    for path in withdrawn:
        if path not in taken:  # a live review may have taken over the link
            remove(path)
