"""Rendering an issue: Jinja fills the MJML template, MRML compiles it once per issue.

Per-subscriber values are not known when the issue is compiled, so the template sees
placeholders (`%%name%%`, `%%unsubscribe_url%%`, ...) and `personalise()` swaps in each
subscriber's values at send time, without compiling again. A batch provider such as
SendGrid can take the same placeholders as substitutions.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jinja2
from mjml import mjml2html

from syndicate.config import Config, DigestConfig
from syndicate.digest.selection import RelatedLink, Selection
from syndicate.feeds.discovery import feed_links
from syndicate.store import Review

log = logging.getLogger(__name__)

# Gmail clips messages whose HTML is larger than this, hiding the footer (and unsubscribe).
GMAIL_CLIP_BYTES = 102 * 1024

PLACEHOLDER = re.compile(r"%%([a-z_]+)%%")
SUBSCRIBER_FIELDS = ("name", "email", "unsubscribe_url", "preferences_url")


class TemplateError(Exception):
    """The editor's template could not be rendered; the message says where."""


@dataclass(frozen=True)
class RenderedIssue:
    subject: str
    preheader: str
    html: str
    text: str


class _Placeholders:
    """What templates see as `subscriber` and `links`: markers filled in per subscriber."""

    def __getattr__(self, name: str) -> str:
        if name.startswith("_"):
            raise AttributeError(name)
        return f"%%{name}%%"


def stars(rating: float | None) -> str:
    if rating is None:
        return ""
    full = int(rating)
    half = rating - full >= 0.5
    return "★" * full + ("½" if half else "") + "☆" * (5 - full - (1 if half else 0))


def film_line(review: Review) -> str:
    """'Past Lives (2023), dir. Celine Song': the film a review is about, as one line."""
    text = review.film or ""
    if review.year:
        text += f" ({review.year})"
    if review.director:
        text += f", dir. {review.director}" if text else f"dir. {review.director}"
    return text


def long_date(moment: datetime | None, zone: Any = None) -> str:
    if moment is None:
        return ""
    local = moment.astimezone(zone) if zone else moment
    return f"{local.day} {local:%B %Y}"


def environment(config: Config) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(p) for p in config.template_dirs()]),
        autoescape=jinja2.select_autoescape(["html", "mjml", "mjml.j2", "html.j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["stars"] = stars
    env.filters["film_line"] = film_line
    env.filters["date"] = lambda moment: long_date(moment, config.timezone)
    return env


def context(
    config: Config, digest: DigestConfig, number: int, selection: Selection | None, when: datetime
) -> dict[str, Any]:
    base = config.public_base_url
    return {
        "site": config.site,
        "digest": digest,
        "issue": {
            "number": number,
            "date": when,
            "url": f"{base}archive/{digest.name}/{number}/",
        },
        "featured": selection.featured if selection else None,
        "related": selection.related if selection else [],
        "others": selection.others if selection else [],
        # Reviews these readers got before, revised since (each has its revision_note).
        "updated": selection.updated if selection else [],
        # The site's feeds, for <link rel="alternate"> autodiscovery in the page's head.
        "feeds": feed_links(config),
        "subscriber": _Placeholders(),
        "links": _Placeholders(),
    }


def render_issue(
    config: Config, digest: DigestConfig, number: int, selection: Selection | None, when: datetime
) -> RenderedIssue:
    env = environment(config)
    # Subject and preheader are plain text: escaping them here would put '&amp;' in the
    # Subject header, and escape the preheader twice once the MJML template inserts it.
    plain = env.overlay(autoescape=False)
    values = context(config, digest, number, selection, when)
    nothing_new = selection is None or selection.featured is None
    if nothing_new:
        # An empty issue (send_when_empty), or one with only updated reviews:
        # `featured.title` in a subject renders as nothing instead of failing, and
        # `{% if featured %}` is false.
        values["featured"] = jinja2.ChainableUndefined(name="featured")
    where = f"in {config.path}, digests: {digest.name}"
    subject = _one_line(
        _render(lambda: plain.from_string(digest.subject), values, f"subject ({where})")
    )
    if nothing_new:
        subject = subject.rstrip(" :;,-–—·|")
    preheader = _one_line(
        _render(lambda: plain.from_string(digest.preheader), values, f"preheader ({where})")
    )
    values["preheader"] = preheader
    looked = ", ".join(str(folder) for folder in config.template_dirs())
    mjml_source = _render(
        lambda: env.get_template(digest.template), values, digest.template, looked
    )
    text = _render(
        lambda: env.get_template(digest.text_template), values, digest.text_template, looked
    )
    try:
        compiled = mjml2html(mjml_source)
    except ValueError as exc:
        path = env.get_template(digest.template).filename or digest.template
        raise TemplateError(f"{path}: the MJML it produces cannot be compiled: {exc}") from None
    size = len(compiled.encode("utf-8"))
    if size > GMAIL_CLIP_BYTES:
        log.warning(
            "digest %s: the HTML is %d KB; Gmail clips messages over 102 KB",
            digest.name,
            size // 1024,
        )
    return RenderedIssue(
        subject=subject, preheader=preheader, html=compiled, text=text.strip() + "\n"
    )


def _render(
    load: Callable[[], jinja2.Template], values: dict[str, Any], label: str, looked: str = ""
) -> str:
    """Load and render one of the editor's templates; any error names the file and line."""
    try:
        return load().render(values)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{exc.filename or label}, line {exc.lineno}: {exc.message}") from None
    except jinja2.TemplateNotFound as exc:
        raise TemplateError(f"template {exc.name!r} not found (looked in {looked})") from None
    except Exception as exc:  # an unknown variable, a bad filter argument, ...
        filename, line = _template_frame(exc)
        where = f"{filename or label}, line {line}" if line else (filename or label)
        message = exc.message if isinstance(exc, jinja2.TemplateError) else None
        raise TemplateError(f"{where}: {message or f'{type(exc).__name__}: {exc}'}") from None


def _template_frame(exc: BaseException) -> tuple[str | None, int | None]:
    """The template file (None for a template given as a string) and line that failed.

    Jinja rewrites tracebacks so that template frames carry the template's file name and
    line; the innermost one (an included template, say) is where the error is.
    """
    found: tuple[str | None, int | None] = (None, None)
    frame = exc.__traceback__
    while frame is not None:
        filename = frame.tb_frame.f_code.co_filename
        if not filename.endswith(".py"):
            found = (None if filename == "<template>" else filename, frame.tb_lineno)
        frame = frame.tb_next
    return found


def _one_line(text: str) -> str:
    return " ".join(text.split())


def personalise(template: str, values: Mapping[str, str], *, escape: bool) -> str:
    """Swap each %%placeholder%% for the subscriber's value (HTML-escaped for HTML)."""

    def swap(match: re.Match[str]) -> str:
        value = values.get(match.group(1))
        if value is None:
            return match.group(0)
        return html.escape(value, quote=True) if escape else value

    return PLACEHOLDER.sub(swap, template)


__all__ = ["RelatedLink", "RenderedIssue", "Review", "personalise", "render_issue"]
