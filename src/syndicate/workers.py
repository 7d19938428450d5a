"""Celery fan-out: an issue's batches sent by `syndicate worker` processes on any machine.

Optional (pip install 'syndicate[celery]'), switched on by `workers.broker_url`. The
sender plans the batches in the database and enqueues one task per batch; a task
carries only the batch's id. What a task does is what a thread of an in-process send
does (syndicate.delivery.batches), so the ledger keeps its guarantee however the
tasks are delivered:

- acks late: a task is acknowledged after its batch is recorded, so a worker killed
  mid-batch leaves the task to the broker, which hands it to another worker (Redis: after
  workers.visibility_timeout). That worker finds the batch claimed by a dead process,
  marks what it had in flight UNKNOWN (not resent) and sends whoever was not reached.
- A task delivered twice finds its batch done, or held by a live worker: it waits for
  that worker (retrying) and then has nothing to do.
- Workers on the same machine as a dead one see at once that its process is gone; a
  worker on another machine waits for the batch's claim to lapse (10 minutes).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.exc import InterfaceError, OperationalError

from syndicate import config as configuration
from syndicate.config import Config, secret
from syndicate.delivery.batches import BatchBusy, Batches
from syndicate.delivery.ledger import SendReport, owner_name
from syndicate.delivery.message import Letter
from syndicate.delivery.sender import Progress, issue_letter
from syndicate.delivery.status import ledger_counts
from syndicate.delivery.transports import Transport, TransportUnavailable, open_transport
from syndicate.store import DeliveryBatch, DigestIssue, Store

try:
    from celery import Celery
    from kombu.exceptions import ChannelError, KombuError
except ImportError:  # the extra is not installed
    Celery = None
    ChannelError = KombuError = OSError

log = logging.getLogger(__name__)

TASK = "syndicate.send_batch"


class CeleryMissing(TransportUnavailable):
    """workers.broker_url is set but the `celery` extra is not installed: nothing is sent."""


def celery_app(config: Config) -> Any:
    if Celery is None:
        raise CeleryMissing(
            "workers.broker_url is set but Celery is not installed: pip install 'syndicate[celery]'"
        )
    workers = config.workers
    visibility = max(1, int(workers.visibility_timeout.total_seconds()))
    app = Celery("syndicate", broker=workers.url(), set_as_current=False)
    app.conf.update(
        task_default_queue=workers.queue,
        task_acks_late=True,
        # A worker process killed outright: the task goes back to the broker.
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        # One task at a time per worker slot: a prefetched task a dead worker held would
        # wait a visibility timeout for nothing.
        worker_prefetch_multiplier=1,
        broker_transport_options={
            "visibility_timeout": visibility,
            # Look for tasks of dead workers (older than the visibility timeout) every
            # few seconds, not kombu's default of every 100 s.
            "unacked_restore_interval": max(1, min(10, visibility // 4)),
            "unacked_restore_throttle": 1,
        },
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    app.task(name=TASK, bind=True, max_retries=None)(_send_batch)
    return app


class CeleryFanOut:
    """The sender's side: enqueue the issue's queued batches, wait until none is open.

    While waiting it watches for batches nobody will send: when nothing has moved for a
    while and the broker's queue is empty (tasks lost with a Redis that restarted without
    its append-only file, or a worker that died holding them), it settles what dead
    workers left and queues the open batches again (the tasks are idempotent). When no
    batch has moved for workers.visibility_timeout it stops waiting with an error; the
    batches stay queued in the database for the next send.
    """

    def __init__(self, config: Config, wait: bool = True, poll: float = 0.5) -> None:
        self.app = celery_app(config)
        self.queue = config.workers.queue
        self.wait = wait
        self.poll = poll
        visibility = config.workers.visibility_timeout.total_seconds()
        self.stall = min(60.0, visibility)  # nothing moved: look for lost tasks
        self.give_up = max(visibility, 60.0)  # nothing moved for this long: stop waiting

    def send(
        self, batches: Batches, issue_id: int, report: SendReport, progress: Progress | None
    ) -> None:
        before = _counts(batches.store, issue_id)
        queued = self._enqueue(batches, issue_id)
        log.info("issue %d: %d batch(es) queued for the workers", issue_id, len(queued))
        if not self.wait:
            report.queued = len(queued)
            return
        try:
            self._wait(batches, issue_id, progress or (lambda _n: None))
        finally:
            after = _counts(batches.store, issue_id)
            report.add(
                SendReport(
                    report.digest,
                    report.number,
                    sent=after["sent"] - before["sent"],
                    failed=after["failed"] - before["failed"],
                    deferred=max(0, after["retry"] - before["retry"]),
                    unknown=after["unknown"] - before["unknown"],
                )
            )

    def _enqueue(self, batches: Batches, issue_id: int) -> list[int]:
        queued = batches.queued(issue_id)
        try:
            for batch_id in queued:
                self.app.send_task(TASK, args=[batch_id])
        except KombuError as exc:
            # The batches stay queued in the database: the next send enqueues them again.
            raise TransportUnavailable(
                f"cannot reach the Celery broker ({type(exc).__name__}: {exc}); "
                "the batches are planned and the next `syndicate digest send` queues them"
            ) from exc
        return queued

    def _waiting_tasks(self) -> int | None:
        """Tasks in the broker's queue; None when the broker cannot say."""
        try:
            with self.app.connection_for_write() as connection:
                return connection.default_channel.queue_declare(
                    queue=self.queue, passive=True
                ).message_count
        except ChannelError as exc:
            # Redis keeps a queue as a list, which it deletes when empty: "no queue".
            return 0 if "NOT_FOUND" in str(exc) else None
        except Exception:  # unknown: assume tasks may still be there
            return None

    def _wait(self, batches: Batches, issue_id: int, progress: Progress) -> None:
        store = batches.store
        seen, _ = _batch_progress(store, issue_id)
        state = None
        moved_at = looked_at = time.monotonic()
        while True:
            done, open_batches = _batch_progress(store, issue_id)
            progress(done - seen)
            seen = done
            if not open_batches:
                return
            stuck = _stuck(store, issue_id, open_batches)
            if stuck is not None:
                # Every open batch was put back because the transport cannot send:
                # waiting would wait for ever. The next `digest send` queues them again.
                raise TransportUnavailable(stuck)
            now = time.monotonic()
            if (done, open_batches) != state:
                state, moved_at, looked_at = (done, open_batches), now, now
            elif now - moved_at > self.give_up:
                raise TransportUnavailable(
                    f"no batch of the issue has moved for {self.give_up:.0f} s: are "
                    "`syndicate worker` processes running and reaching the broker? The "
                    f"{open_batches} batch(es) left stay queued; `syndicate digest send` "
                    "queues them again"
                )
            elif now - looked_at > self.stall and self._waiting_tasks() == 0:
                batches.recover(issue_id)
                again = self._enqueue(batches, issue_id)
                log.warning(
                    "issue %d: nothing moved for %.0f s and the broker holds no task: "
                    "%d batch(es) queued again",
                    issue_id,
                    now - moved_at,
                    len(again),
                )
                looked_at = now
            time.sleep(self.poll)


def _batch_progress(store: Store, issue_id: int) -> tuple[int, int]:
    """Readers in the issue's finished batches, and how many batches are open: read from
    the batches (a thousand rows for a million readers), not the ledger."""
    finished = DeliveryBatch.status == DeliveryBatch.DONE
    with store.session() as session:
        done, open_batches = session.execute(
            select(
                func.coalesce(func.sum(case((finished, DeliveryBatch.readers), else_=0)), 0),
                func.count(case((~finished, 1))),
            ).where(DeliveryBatch.issue_id == issue_id)
        ).one()
    return int(done), int(open_batches)


def _stuck(store: Store, issue_id: int, open_batches: int) -> str | None:
    """The transport's reason when every open batch was put back by it, else None."""
    with store.session() as session:
        reasons = session.scalars(
            select(DeliveryBatch.error).where(
                DeliveryBatch.issue_id == issue_id,
                DeliveryBatch.status == DeliveryBatch.QUEUED,
                DeliveryBatch.error != "",
            )
        ).all()
    return reasons[0] if reasons and len(reasons) == open_batches else None


def _counts(store: Store, issue_id: int) -> dict[str, int]:
    with store.session() as session:
        counts = ledger_counts(session, issue_id)
    return {name: counts.get(name, 0) for name in ("sent", "failed", "retry", "unknown")}


# --- the worker's side -------------------------------------------------------------------


class WorkerContext:
    """What a worker process keeps between tasks: config, database, transport, letters."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.store = Store(config.database_url)
        # A transport per worker thread: an SMTP connection cannot be shared.
        self._local = threading.local()
        self._transports: list[Transport] = []
        self.batches = Batches(
            config, self.store, secret(config.site.secret_env, "key that signs unsubscribe links")
        )
        self._letters: dict[int, Letter] = {}
        self._lock = threading.Lock()

    def letter(self, issue_id: int) -> Letter:
        with self._lock:
            if issue_id not in self._letters:
                with self.store.session() as session:
                    issue = session.get_one(DigestIssue, issue_id)
                    self._letters[issue_id] = issue_letter(self.config, issue)
            return self._letters[issue_id]

    @property
    def transport(self) -> Transport:
        transport = getattr(self._local, "transport", None)
        if transport is None:
            transport = self._local.transport = open_transport(self.config)
            with self._lock:
                self._transports.append(transport)
        return transport

    def close(self) -> None:
        for transport in self._transports:
            transport.close()
        self.store.close()


_context: WorkerContext | None = None


def _send_batch(task: Any, batch_id: int) -> dict[str, int]:
    """The task: take the batch, post it, record it. Idempotent (see the module doc)."""
    assert _context is not None, "the task runs in `syndicate worker`, which sets the context"
    work = _context.batches
    report = SendReport("", 0)
    try:
        return _take_and_send(batch_id, work, report)
    except (OperationalError, InterfaceError) as exc:
        # The database is unreachable (a restart, a failover): try again later rather
        # than drop the task, which would leave its batch queued with nobody to send it.
        countdown = min(300, 5 * 2 ** min(task.request.retries, 6))
        log.warning(
            "batch %d: database unavailable (%s); retrying in %d s", batch_id, exc, countdown
        )
        raise task.retry(countdown=countdown, exc=exc) from None
    except BatchBusy as busy:
        # A live worker holds it (or the broker redelivered a task still running):
        # look again when its claim would lapse, in case that worker dies.
        wait = 60.0
        if busy.until is not None:
            wait = max(1.0, min(wait, (busy.until - datetime.now(UTC)).total_seconds() + 1))
        raise task.retry(countdown=wait, exc=busy) from None


def _take_and_send(batch_id: int, work: Batches, report: SendReport) -> dict[str, int]:
    assert _context is not None
    with _context.store.session() as session:
        issue_id = session.get_one(DeliveryBatch, batch_id).issue_id
    # Everything that reads the database comes before the batch is recorded as SENDING,
    # so a database error cannot strand a batch that was never posted.
    letter = _context.letter(issue_id)
    transport = _context.transport
    taken = work.take(batch_id, report)
    if taken is not None:
        try:
            outcomes = transport.send(letter, taken.recipients)
        except Exception as exc:
            failure = exc  # the name `exc` ends with the except block; the lambda needs it
            _stubbornly(lambda: work.abandon(taken, failure, transport.name))
            if isinstance(exc, TransportUnavailable):
                # Nothing went; the batch is queued again with the reason, which the
                # waiting sender reports. The next `digest send` enqueues it again.
                log.error("batch %d not sent: %s", batch_id, exc)
                return {"sent": 0}
            raise
        # The post happened: record it, retrying through a database blip, rather than
        # rerun the task (which could only mark these readers unknown).
        _stubbornly(lambda: work.complete(taken, outcomes, report))
    work.finish_issue(issue_id)
    return {"sent": report.sent, "failed": report.failed, "unknown": report.unknown}


RECORD_RETRIES = (1, 2, 5, 10, 30, 60)  # seconds between tries: about two minutes in all


def _stubbornly(record: Callable[[], None]) -> None:
    """Run a ledger write, retrying while the database is unreachable."""
    for pause in (*RECORD_RETRIES, None):
        try:
            record()
            return
        except (OperationalError, InterfaceError) as exc:
            if pause is None:
                raise
            log.warning("database unavailable (%s); recording again in %d s", exc, pause)
            time.sleep(pause)


def run_worker(config_path: str, concurrency: int, loglevel: str) -> None:
    """`syndicate worker`: a Celery worker (threads: the work is posting HTTP requests)."""
    global _context
    config = configuration.load(config_path)
    app = celery_app(config)
    _context = WorkerContext(config)
    try:
        app.worker_main(
            [
                "worker",
                "--pool=threads",
                f"--concurrency={concurrency}",
                f"--queues={config.workers.queue}",
                f"--loglevel={loglevel}",
                f"--hostname=syndicate-{owner_name().split(':')[1]}@%h",
                "--without-gossip",
                "--without-mingle",
            ]
        )
    finally:
        _context.close()
        _context = None
