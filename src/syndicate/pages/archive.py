"""The archive: a page per digest issue at the URL every email links as "View in your
browser" (archive/<digest>/<number>/), and indexes of them, newest first.

An issue's HTML is final once the issue is recorded (it is compiled once, before the
first email goes out), so its page is written then, even while the issue is still being
sent: a reader who clicks the link in the first email of a long send finds the page.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

import jinja2
from markupsafe import Markup, escape
from sqlalchemy import select
from sqlalchemy.orm import Session

from syndicate.config import Config, DigestConfig
from syndicate.digest.render import personalise
from syndicate.pages.jsonld import issue_data, script_json
from syndicate.pages.layout import base_context, root_for, subscribe_url
from syndicate.store import DigestIssue, Review

# The per-subscriber links, whole: on a public page they would act for nobody, so the
# unsubscribe link becomes a sign-up link and the preferences link one to past issues.
_PERSONAL_LINK = re.compile(
    r'<a\b([^>]*?)\bhref="%%(unsubscribe_url|preferences_url)%%"([^>]*)>(.*?)</a>',
    re.S | re.I,
)
_HEAD = re.compile(r"<head\b[^>]*>(.*?)</head>", re.S | re.I)
_STYLE = re.compile(r"<style\b[^>]*>.*?</style>", re.S | re.I)
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_BODY = re.compile(r"<body\b([^>]*)>(.*)</body>", re.S | re.I)
_STYLE_ATTRIBUTE = re.compile(r'\bstyle="([^"]*)"', re.I)


@dataclass(frozen=True)
class IssueEntry:
    digest: str
    digest_title: str
    number: int
    subject: str
    preheader: str
    date: datetime
    path: PurePosixPath  # of its index.html, relative to the output folder

    def url_from(self, folder: PurePosixPath) -> str:
        """Its link from a page in `folder` (relative to the output folder)."""
        return posixpath.relpath(self.path.parent, folder) + "/"


def issue_path(digest: str, number: int) -> PurePosixPath:
    return PurePosixPath("archive", digest, str(number), "index.html")


def digest_settings(config: Config, name: str) -> DigestConfig:
    """The digest's settings; a digest since removed from the YAML keeps its pages."""
    for digest in config.digests:
        if digest.name == name:
            return digest
    return DigestConfig(name=name, title=name)


def neutral_values(config: Config, digest: DigestConfig) -> dict[str, str]:
    """What a public page shows where each email shows its subscriber's values."""
    fallback_url = subscribe_url(config) or config.site.url
    return {
        "name": digest.name_fallback,
        "display_name": "",
        "email": "you",
        "unsubscribe_url": fallback_url,
        "preferences_url": fallback_url,
    }


def public_html(config: Config, digest: DigestConfig, html: str) -> str:
    """The issue's HTML with every per-subscriber value replaced by a neutral one."""
    signup = subscribe_url(config)

    def swap(match: re.Match[str]) -> str:
        before, which, after, _ = match.groups()
        if which == "unsubscribe_url" and signup:
            href, label = signup, "Subscribe"
        else:
            href, label = "../", "Past issues"
        return f'<a{before}href="{escape(href)}"{after}>{label}</a>'

    return personalise(_PERSONAL_LINK.sub(swap, html), neutral_values(config, digest), escape=True)


def email_parts(html: str) -> tuple[Markup, Markup, str]:
    """The email's own CSS (for the page's <head>), its body, and the body's style."""
    head = _HEAD.search(html)
    styles = _STYLE.findall(_COMMENT.sub("", head.group(1))) if head else []
    body = _BODY.search(html)
    if body is None:  # a template that wrote a fragment, not a document
        return Markup("\n".join(styles)), Markup(html), ""
    style = _STYLE_ATTRIBUTE.search(body.group(1))
    return Markup("\n".join(styles)), Markup(body.group(2).strip()), style.group(1) if style else ""


def _issue_reviews(session: Session, issue: DigestIssue) -> list[Review]:
    ids = [row.review_id for row in issue.reviews]
    if not ids:
        return []
    found = {r.id: r for r in session.scalars(select(Review).where(Review.id.in_(ids)))}
    return [found[i] for i in ids if i in found and found[i].live]


Write = Callable[[PurePosixPath, str], None]


def build_archive(config: Config, session: Session, env: jinja2.Environment, write: Write) -> None:
    """Write every issue's page and the indexes; `write(relative path, html)` writes one."""
    # Not drafts (an editor has not approved them yet) nor skipped ones.
    issues = session.scalars(
        select(DigestIssue)
        .where(DigestIssue.status.in_((DigestIssue.SENDING, DigestIssue.SENT)))
        .order_by(DigestIssue.digest, DigestIssue.number)
    ).all()
    entries: dict[str, list[IssueEntry]] = {}
    for issue in issues:
        digest = digest_settings(config, issue.digest)
        values = neutral_values(config, digest)
        entries.setdefault(issue.digest, []).append(
            IssueEntry(
                digest=issue.digest,
                digest_title=digest.title,
                number=issue.number,
                subject=personalise(issue.subject, values, escape=False),
                preheader=personalise(issue.preheader, values, escape=False),
                date=issue.created_at,
                path=issue_path(issue.digest, issue.number),
            )
        )
    for issue in issues:
        run = entries[issue.digest]
        position = next(i for i, e in enumerate(run) if e.number == issue.number)
        entry = run[position]
        previous = run[position - 1] if position > 0 else None
        following = run[position + 1] if position + 1 < len(run) else None
        write(entry.path, _issue_page(config, session, env, issue, entry, previous, following))

    configured = [d.name for d in config.digests]
    names = configured + sorted(name for name in entries if name not in configured)
    for name in names:
        digest = digest_settings(config, name)
        path = PurePosixPath("archive", name, "index.html")
        folder = path.parent
        listed = [_listed(e, folder) for e in reversed(entries.get(name, []))]
        write(
            path,
            _render(
                config, env, "pages/digest-archive.html.j2", path, digest=digest, issues=listed
            ),
        )

    path = PurePosixPath("archive", "index.html")
    everything = sorted(
        (e for run in entries.values() for e in run),
        key=lambda e: (e.date, e.digest, e.number),
        reverse=True,
    )
    digests = [
        {
            "name": name,
            "title": digest_settings(config, name).title,
            "description": digest_settings(config, name).description,
            "url": f"{name}/",
            "count": len(entries.get(name, [])),
        }
        for name in names
    ]
    issues_listed = [_listed(e, path.parent) for e in everything]
    write(
        path,
        _render(config, env, "pages/archive.html.j2", path, digests=digests, issues=issues_listed),
    )


def _listed(entry: IssueEntry, folder: PurePosixPath) -> dict[str, Any]:
    return {
        "digest_title": entry.digest_title,
        "number": entry.number,
        "subject": entry.subject,
        "preheader": entry.preheader,
        "date": entry.date,
        "url": entry.url_from(folder),
    }


def _issue_page(
    config: Config,
    session: Session,
    env: jinja2.Environment,
    issue: DigestIssue,
    entry: IssueEntry,
    previous: IssueEntry | None,
    following: IssueEntry | None,
) -> str:
    digest = digest_settings(config, issue.digest)
    styles, body, body_style = email_parts(public_html(config, digest, issue.html))
    url = f"{config.public_base_url}archive/{issue.digest}/{issue.number}/"
    title = f"{entry.subject} ({digest.title} No. {issue.number})"
    reviews = _issue_reviews(session, issue)
    folder = entry.path.parent
    return _render(
        config,
        env,
        "pages/issue.html.j2",
        entry.path,
        digest=digest,
        issue=_listed(entry, folder) | {"url": url},
        email_styles=styles,
        email_body=body,
        email_body_style=body_style,
        previous=_listed(previous, folder) if previous else None,
        next=_listed(following, folder) if following else None,
        canonical=url,
        description=entry.preheader,
        jsonld=script_json(issue_data(config, title, url, reviews)) if reviews else None,
    )


def _render(
    config: Config, env: jinja2.Environment, template: str, path: PurePosixPath, **values: Any
) -> str:
    context = base_context(config, root_for(path))
    return env.get_template(template).render({**context, **values})
