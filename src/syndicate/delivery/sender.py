"""Sending an issue: claim it, plan its batches, have them sent, mark it done.

Only one sender drives an issue at a time: it claims the issue row first. The claim
names its host and process, so a rerun on the same machine takes over at once from a
sender that was killed; a claim from another machine lapses after LEASE without renewal.

The batches are sent by threads of this process (`concurrency` of them, as the
transport allows) or, with `workers.broker_url` set, by Celery workers on any machine
(syndicate.workers). Either way each batch goes through syndicate.delivery.batches, so
what a batch does, and the exactly-once guarantee, do not depend on where it runs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from syndicate.config import Config, secret
from syndicate.delivery.batches import BatchBusy, Batches, Taken
from syndicate.delivery.ledger import (
    LEASE,
    IssueBusy,
    SendReport,
    died_here,
    letter_for,
    owner_name,
    waiting,
)
from syndicate.delivery.message import Letter, Outcome
from syndicate.delivery.transports import Transport
from syndicate.digest.render import RenderedIssue
from syndicate.store import DigestIssue, Store

log = logging.getLogger(__name__)

Progress = Callable[[int], None]


class FanOut(Protocol):
    """Sends an issue's queued batches elsewhere (Celery) and waits for them."""

    def send(
        self, batches: Batches, issue_id: int, report: SendReport, progress: Progress | None
    ) -> None: ...


def issue_letter(config: Config, issue: DigestIssue) -> Letter:
    rendered = RenderedIssue(issue.subject, issue.preheader, issue.html, issue.text)
    return letter_for(config, issue.digest, issue.number, rendered, issue.id)


class Sender:
    def __init__(
        self, config: Config, store: Store, transport: Transport, fan_out: FanOut | None = None
    ) -> None:
        self.config = config
        self.store = store
        self.transport = transport
        self.fan_out = fan_out
        self.owner = owner_name()
        self.batches = Batches(
            config, store, secret(config.site.secret_env, "key that signs unsubscribe links")
        )
        # A transport says how many batches it can send at once; the default, one, suits
        # transports that are not thread-safe (an SMTP connection).
        self.concurrency = max(1, getattr(transport, "concurrency", 1))
        self._renewed = 0.0

    def remaining(self, issue_id: int) -> int:
        with self.store.session() as session:
            issue = session.get_one(DigestIssue, issue_id)
            return (
                session.scalar(
                    select(func.count()).select_from(waiting(issue.id, issue.digest).subquery())
                )
                or 0
            )

    def send(self, issue_id: int, progress: Progress | None = None) -> SendReport:
        now = datetime.now(UTC)
        with self.store.session() as session:
            issue = session.get_one(DigestIssue, issue_id)
            report = SendReport(issue.digest, issue.number)
            self._claim(session, issue, now)
            self._renewed = time.monotonic()
            letter = issue_letter(self.config, issue)
        try:
            # Batches whose worker died go back to the queue; what they had in flight
            # becomes UNKNOWN (not resent).
            report.unknown = self.batches.recover(issue_id)
            self.batches.plan(issue_id)
            if self.fan_out is not None:
                self.fan_out.send(self.batches, issue_id, report, self._renewing(progress))
            else:
                self._send_here(issue_id, letter, report, progress)
            report.complete = self.batches.finish_issue(issue_id)
        finally:
            self._release(issue_id)
        return report

    def _renewing(self, progress: Progress | None) -> Progress:
        """Progress that also renews the issue claim while workers elsewhere send."""

        def step(count: int) -> None:
            self._renew()
            if progress and count:
                progress(count)

        return step

    def _send_here(
        self, issue_id: int, letter: Letter, report: SendReport, progress: Progress | None
    ) -> None:
        """Keep up to `concurrency` batches in flight in threads; record each as it ends.

        Batches are taken and recorded in this thread, posted in the pool's: a batch is
        recorded only when a thread can post it at once, and SQLite has one writer.
        """
        waiting = iter(self.batches.queued(issue_id))
        in_flight: dict[Future[list[Outcome]], Taken] = {}
        failure: BaseException | None = None
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="syndicate-send") as pool:
            while True:
                if failure is None and len(in_flight) < self.concurrency:
                    batch_id = next(waiting, None)
                    if batch_id is not None:
                        try:
                            taken = self.batches.take(batch_id, report)
                        except BatchBusy as busy:  # a Celery worker has it: it finishes it
                            log.info("batch %d: %s; leaving it to that worker", batch_id, busy)
                            continue
                        if taken is not None:
                            future = pool.submit(self.transport.send, letter, taken.recipients)
                            in_flight[future] = taken
                            self._renew()
                        continue
                if not in_flight:
                    break
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    taken = in_flight.pop(future)
                    try:
                        outcomes = future.result()
                    except Exception as exc:
                        self.batches.abandon(taken, exc, self.transport.name)
                        failure = failure or exc
                        continue
                    self.batches.complete(taken, outcomes, report)
                    if progress:
                        progress(len(taken.recipients))
        if failure is not None:
            raise failure

    def _claim(self, session: Session, issue: DigestIssue, now: datetime) -> None:
        if self._try_claim(session, issue.id, now, dead_owner=None):
            return
        holder = session.scalar(select(DigestIssue.claimed_by).where(DigestIssue.id == issue.id))
        if holder and died_here(holder) and self._try_claim(session, issue.id, now, holder):
            log.warning(
                "issue %s of %s: took over from a sender that stopped (%s)",
                issue.number,
                issue.digest,
                holder,
            )
            return
        host, _, rest = (holder or "?:?").partition(":")
        raise IssueBusy(
            f"issue {issue.number} of {issue.digest} is being sent by process "
            f"{rest.partition(':')[0]} on {host}; try again when it has finished "
            f"(if that process is gone, its claim lapses after {LEASE})"
        )

    def _try_claim(
        self, session: Session, issue_id: int, now: datetime, dead_owner: str | None
    ) -> bool:
        free = or_(
            DigestIssue.claimed_by.is_(None),
            DigestIssue.claimed_until < now,
            DigestIssue.claimed_by == self.owner,
        )
        if dead_owner is not None:
            free = or_(free, DigestIssue.claimed_by == dead_owner)
        return (
            session.execute(
                update(DigestIssue)
                .where(DigestIssue.id == issue_id, free)
                .values(claimed_by=self.owner, claimed_until=now + LEASE)
                .execution_options(synchronize_session=False)
            ).rowcount
            == 1
        )

    def _renew(self) -> None:
        # A few times a lease is plenty; not a transaction per batch.
        if time.monotonic() - self._renewed < LEASE.total_seconds() / 10:
            return
        self._renewed = time.monotonic()
        with self.store.session() as session:
            session.execute(
                update(DigestIssue)
                .where(DigestIssue.claimed_by == self.owner)
                .values(claimed_until=datetime.now(UTC) + LEASE)
                .execution_options(synchronize_session=False)
            )

    def _release(self, issue_id: int) -> None:
        with self.store.session() as session:
            session.execute(
                update(DigestIssue)
                .where(DigestIssue.id == issue_id, DigestIssue.claimed_by == self.owner)
                .values(claimed_by=None, claimed_until=None)
                .execution_options(synchronize_session=False)
            )
