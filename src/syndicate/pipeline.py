"""The stages in order: gather -> store -> related lists -> feeds, and digest -> delivery.

The CLI and the scheduler both run the stages through these functions, so a scheduled
run and a run by hand do exactly the same thing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from syndicate import digest as digests
from syndicate import feeds, pages, related, sources, subscribers
from syndicate.config import Config
from syndicate.delivery import Sender, SendReport, Transport, open_transport
from syndicate.delivery.ledger import owner_name
from syndicate.digest import approval
from syndicate.store import DigestIssue, Store

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
    reports: list[SendReport] = field(default_factory=list)  # one per issue sent
    reason: str = "nothing new since the last issue; no issue sent"
    # Archive pages written when the issues were recorded, before their first email.
    pages_written: list[Path] = field(default_factory=list)
    # Issues waiting for an editor (approval: true), by number.
    drafts: list[int] = field(default_factory=list)

    @property
    def report(self) -> SendReport | None:
        """The issues sent, added up (None: none was sent, for `reason`)."""
        if not self.reports:
            return None
        if len(self.reports) == 1:
            return self.reports[0]
        total = SendReport(self.name, self.reports[-1].number)
        for report in self.reports:
            total.add(report)
        total.complete = all(r.complete for r in self.reports)
        return total

    def summary(self) -> str:
        lines = [r.summary() for r in self.reports]
        if self.drafts:
            numbers = ", ".join(str(n) for n in self.drafts)
            lines.append(
                f"digest {self.name}: issue(s) {numbers} wait for approval "
                f"(`syndicate digest drafts {self.name}`)"
            )
        return "\n".join(lines) or f"digest {self.name}: {self.reason}"


def send_digest(
    config: Config,
    store: Store,
    name: str,
    transport: Transport,
    now: datetime | None = None,
    progress: Callable[[int, int], None] | None = None,
    wait: bool = True,
    force: bool = False,
    cadences: Collection[str] | None = None,
) -> DigestOutcome:
    """Finish the digest's unfinished issues, then plan, record and send what is due now.

    Each reader gets their own rhythm (syndicate.digest.plan): readers due now with the
    same reviews share an issue. `force` sends readers their pending reviews now, even
    before their hour; `cadences` limits the send to readers of those cadences. With
    `approval: true` new issues wait as drafts and the editors
    are emailed. `progress(done, total)` is called after each batch. With Celery workers
    configured, the batches go to them; `wait=False` returns once they are queued.
    """
    now = now or datetime.now(UTC)
    digest = config.digest(name)
    outcome = DigestOutcome(name)
    with store.session() as session:
        # Under the digest's lock, so a send started at the same moment waits, then
        # finds this one's issues (and sends or leaves them) instead of planning twice.
        digests.lock_digest(session, name, owner_name())
        unfinished = digests.unfinished_issues(session, name)
        if not unfinished and not subscribers.has_active(session, name):
            # An issue to nobody would use up the new reviews: they wait for a reader.
            outcome.reason = "no active subscribers yet; no issue sent"
            return outcome
        planned = digests.plan(config, session, digest, now, force=force, cadences=cadences)
        recorded = digests.record_plan(config, session, digest, planned)
        to_send = [i.id for i in unfinished] + [
            i.id for i in recorded if i.status == DigestIssue.SENDING
        ]
        outcome.drafts = [i.number for i in recorded if i.status == DigestIssue.DRAFT]
        draft_ids = [i.id for i in recorded if i.status == DigestIssue.DRAFT]
    if recorded:
        store.refresh_statistics("deliveries", "subscribers", "subscriptions")
    if draft_ids:
        approval.notify_editors(config, store, draft_ids, transport)
    if not to_send:
        if planned.waiting:
            first = min(planned.waiting)
            outcome.reason = (
                f"nothing due now; {sum(planned.waiting.values())} reader(s) wait for their "
                f"hour (the next at {first.astimezone(config.timezone):%Y-%m-%d %H:%M %Z}); "
                f"`syndicate digest force {name}` sends now"
            )
        log.info("digest %s: %s", name, outcome.reason)
        return outcome
    outcome.reports, outcome.pages_written = send_issues(
        config, store, to_send, transport, progress, wait
    )
    return outcome


def send_issues(
    config: Config,
    store: Store,
    issue_ids: list[int],
    transport: Transport,
    progress: Callable[[int, int], None] | None = None,
    wait: bool = True,
) -> tuple[list[SendReport], list[Path]]:
    """Send recorded issues to their queued readers; the reports and archive pages written."""
    # "View in your browser" works from the first email.
    archive = pages.publish_archive(config, store)
    fan_out = None
    if config.workers.enabled:
        from syndicate.workers import CeleryFanOut  # Celery is an optional extra

        fan_out = CeleryFanOut(config, wait=wait)
    sender = Sender(config, store, transport, fan_out)
    total = sum(sender.remaining(issue_id) for issue_id in issue_ids)
    done = 0

    def step(count: int) -> None:
        nonlocal done
        done += count
        if progress:
            progress(done, total)

    reports = []
    for issue_id in issue_ids:
        report = sender.send(issue_id, step)
        log.info("%s", report.summary())
        reports.append(report)
    return reports, archive.written if archive else []


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
