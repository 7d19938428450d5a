"""The pages' Jinja environment and the context every page (and the web app's) shares.

Templates are looked up the way the digest's are (digest.render.environment): the site's
`templates` folder first, then syndicate's own; `pages/base.html.j2` is the layout, with
the blocks `title`, `head` and `content`.

Links to the output folder's own files (the stylesheet, the archive) are relative to the
page (`root`, e.g. "../../"), so the folder works from any web server and any host: the
site's, or `syndicate serve` on a laptop.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import jinja2

from syndicate.config import Config
from syndicate.digest.render import environment
from syndicate.feeds.discovery import feed_links

STYLESHEET = "static/style.css"
# What the navigation calls each feed.
_FEED_LABELS = {
    "application/rss+xml": "RSS",
    "application/atom+xml": "Atom",
    "application/feed+json": "JSON Feed",
}
_STYLE_SOURCE = "pages/style.css"


def page_environment(config: Config) -> jinja2.Environment:
    """The digest's environment (same loader, autoescape, filters), plus |iso."""
    env = environment(config)
    env.filters["iso"] = lambda moment: (
        moment.astimezone(config.timezone).replace(microsecond=0).isoformat()
    )
    return env


def root_for(relative: PurePosixPath | str) -> str:
    """The way back to the output folder from the file at `relative`: "../../" for
    archive/weekly/index.html, "" for index.html."""
    return "../" * (len(PurePosixPath(relative).parts) - 1)


def subscribe_url(config: Config) -> str | None:
    """The web side's sign-up page; None when there is no digest to sign up for."""
    return f"{config.public_base_url}subscribe" if config.digests else None


def base_context(config: Config, root: str) -> dict[str, Any]:
    """What pages/base.html.j2 needs. `root` is where the output folder is served from,
    relative to the page ("../../") or absolute ("/" in the web app)."""
    return {
        "site": config.site,
        "root": root,
        "feeds": [
            {
                "type": link.type,
                "title": link.title,
                "href": link.href,
                "label": _FEED_LABELS.get(link.type, link.title),
            }
            for link in feed_links(config)
        ],
        "subscribe_url": subscribe_url(config),
        "archive_url": f"{root}archive/" if config.pages.archive and config.digests else None,
    }


def render_page(
    config: Config,
    template: str,
    root: str,
    env: jinja2.Environment | None = None,
    **values: Any,
) -> str:
    """Render a template that extends pages/base.html.j2, e.g. the web app's forms."""
    env = env or page_environment(config)
    return env.get_template(template).render({**base_context(config, root), **values})


def stylesheet(env: jinja2.Environment) -> bytes:
    """pages/style.css: the site's own if its templates folder has one, else syndicate's."""
    assert env.loader is not None
    source, _, _ = env.loader.get_source(env, _STYLE_SOURCE)
    return source.encode("utf-8")
