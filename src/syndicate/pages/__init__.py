"""Static HTML pages in the output folder (feeds.output), beside the feeds: the archive
of digest issues (the emails' "view in browser" pages) and, if switched on, a page per
review. Any static web server can serve them; `syndicate serve` does too.

Pages carry feed autodiscovery links and schema.org JSON-LD; files are only rewritten
when their bytes change, and nothing in them depends on when they were built.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from syndicate.config import Config
from syndicate.output import write_if_changed
from syndicate.pages.archive import build_archive, issue_path, public_html
from syndicate.pages.layout import (
    STYLESHEET,
    base_context,
    page_environment,
    render_page,
    stylesheet,
)
from syndicate.pages.reviews import build_review_pages, link_problems, page_path
from syndicate.store import Store

log = logging.getLogger(__name__)

__all__ = [
    "PagesReport",
    "base_context",
    "build_pages",
    "check_problems",
    "issue_path",
    "page_path",
    "public_html",
    "publish_archive",
    "render_page",
    "write_stylesheet",
]


@dataclass
class PagesReport:
    written: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = f"{len(self.written)} page file(s) written, {len(self.unchanged)} unchanged"
        if self.removed:
            text += f", {len(self.removed)} removed"
        if self.problems:
            text += f"; {len(self.problems)} problem(s)"
        return text


class _Writer:
    def __init__(self, output: Path, report: PagesReport) -> None:
        self.output = output
        self.report = report

    def write(self, relative: PurePosixPath | str, content: str | bytes) -> None:
        path = self.output / relative
        data = content.encode("utf-8") if isinstance(content, str) else content
        if write_if_changed(path, data):
            self.report.written.append(path)
            log.info("wrote %s", path)
        else:
            self.report.unchanged.append(path)

    def remove(self, relative: PurePosixPath) -> None:
        path = self.output / relative
        if path.is_file():
            path.unlink()
            self.report.removed.append(path)
            log.info("removed %s (its review was withdrawn)", path)
            with contextlib.suppress(OSError):  # the folder goes only if it is empty
                path.parent.rmdir()

    def problem(self, text: str) -> None:
        self.report.problems.append(text)
        log.warning("pages: %s", text)


def build_pages(config: Config, store: Store, *, reviews: bool = True) -> PagesReport:
    """Write the archive pages and (pages.review_pages) the review pages, and the
    stylesheet they share; files whose bytes did not change are left untouched."""
    report = PagesReport()
    settings = config.pages
    if not (settings.archive or (reviews and settings.review_pages)):
        return report
    env = page_environment(config)
    writer = _Writer(config.resolve(config.feeds.output), report)
    writer.write(STYLESHEET, stylesheet(env))
    with store.session() as session:
        if settings.archive:
            build_archive(config, session, env, writer.write)
        if reviews and settings.review_pages:
            build_review_pages(config, session, env, writer.write, writer.remove, writer.problem)
    return report


def publish_archive(config: Config, store: Store) -> PagesReport | None:
    """The archive pages, written as soon as an issue is recorded, before its first email.

    Never raises: a page that cannot be written is logged, and the send goes on.
    """
    try:
        return build_pages(config, store, reviews=False)
    except Exception:
        log.exception("pages: the archive pages could not be written; sending anyway")
        return None


def write_stylesheet(config: Config) -> bool:
    """Write static/style.css into the output folder (for the web app's own pages)."""
    env = page_environment(config)
    return write_if_changed(config.resolve(config.feeds.output) / STYLESHEET, stylesheet(env))


def check_problems(config: Config) -> list[str]:
    """What `syndicate check` should warn about the pages' settings."""
    return link_problems(config) if config.pages.review_pages else []
