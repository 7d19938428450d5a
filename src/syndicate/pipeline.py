"""The stages in order: gather -> store -> related lists -> feeds, and digest -> delivery.

The CLI and the scheduler both run the stages through these functions, so a scheduled
run and a run by hand do exactly the same thing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.exc import IntegrityError

from syndicate import digest as digests
from syndicate import feeds, pages, related, sources, subscribers
from syndicate.config import Config
from syndicate.delivery import Sender, SendReport, Transport, open_transport
from syndicate.store import Store

log = logging.getLogger(__name__)


def gather(config: Config, store: Store, now: datetime | None = None) -> sources.GatherReport:
    """Gather every source, then bring the related lists up to date with what changed.

    The one place gathering happens (the `gather` and `run` commands, the scheduler), so
    no path leaves the lists behind. Only the reviews this gather touched are compared
    with the index (none: nothing to do, unless the weights changed); `syndicate related`
    compares them all, as needed after a failed refresh.
    """
    with related.watching(store) as touched:
        report = sources.gather(config, store, now)
    try:
        related.refresh_store(config, store, review_ids=touched)  # logs what it did
    except Exception as exc:  # the reviews are in; related links must not undo a gather
        log.exception("related lists not updated")
        report.error("related lists", f"not updated ({exc}); `syndicate related` retries")
    return report


@dataclass
class DigestOutcome:
    name: str
    report: SendReport | None  # None: no issue, for the reason below
    reason: str = "nothing new since the last issue; no issue sent"
    # Archive pages written when the issue was recorded, before its first email.
    pages_written: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        if self.report is None:
            return f"digest {self.name}: {self.reason}"
        return self.report.summary()


def send_digest(
    config: Config,
    store: Store,
    name: str,
    transport: Transport,
    now: datetime | None = None,
    progress: Callable[[int, int], None] | None = None,
    wait: bool = True,
) -> DigestOutcome:
    """Finish the digest's unfinished issue, or record and send a new one if anything is new.

    `progress(done, total)` is called after each batch. With Celery workers configured,
    the batches go to them; `wait=False` returns once they are queued.
    """
    now = now or datetime.now(UTC)
    digest = config.digest(name)
    for attempt in (1, 2):
        try:
            with store.session() as session:
                if digests.unfinished_issue(session, name) is None and not subscribers.has_active(
                    session, name
                ):
                    # An issue to nobody would use up the new reviews: they wait for a reader.
                    return DigestOutcome(name, None, "no active subscribers yet; no issue sent")
                issue = digests.issue_to_send(config, session, digest, now)
                issue_id = issue.id if issue is not None else None
            break
        except IntegrityError:
            # Another sender recorded the same new issue a moment before us (two `digest
            # send` started together on PostgreSQL): work on that one; its claim decides
            # who sends it.
            if attempt == 2:
                raise
            log.info("digest %s: another process recorded the issue first; using it", name)
    if issue_id is None:
        log.info("digest %s: nothing new; no issue", name)
        return DigestOutcome(name, None)
    # "View in your browser" works from the first email.
    archive = pages.publish_archive(config, store)
    fan_out = None
    if config.workers.enabled:
        from syndicate.workers import CeleryFanOut  # Celery is an optional extra

        fan_out = CeleryFanOut(config, wait=wait)
    sender = Sender(config, store, transport, fan_out)
    total = sender.remaining(issue_id)
    done = 0

    def step(count: int) -> None:
        nonlocal done
        done += count
        if progress:
            progress(done, total)

    report = sender.send(issue_id, step)
    log.info("%s", report.summary())
    return DigestOutcome(name, report, pages_written=archive.written if archive else [])


@dataclass
class RunReport:
    gathered: sources.GatherReport
    feeds: feeds.FeedReport
    digests: list[DigestOutcome] = field(default_factory=list)
    pages: pages.PagesReport | None = None

    @property
    def ok(self) -> bool:
        return not self.gathered.errors and all(
            d.report is None or not d.report.failed for d in self.digests
        )


def run_once(config: Config, store: Store, now: datetime | None = None) -> RunReport:
    """Gather, publish the feeds, and send every digest that has something new."""
    now = now or datetime.now(UTC)
    gathered = gather(config, store, now)
    published = feeds.build_feeds(config, store, now)
    report = RunReport(gathered, published)
    transport = open_transport(config)
    try:
        for digest in config.digests:
            report.digests.append(send_digest(config, store, digest.name, transport, now))
    finally:
        transport.close()
    report.pages = pages.build_pages(config, store)
    # Pages the sends wrote are this run's work too, not "unchanged".
    early = {path for outcome in report.digests for path in outcome.pages_written}
    report.pages.written = [*sorted(early), *(p for p in report.pages.written if p not in early)]
    report.pages.unchanged = [p for p in report.pages.unchanged if p not in early]
    return report
