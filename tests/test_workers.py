"""Celery fan-out for real: `syndicate worker` processes on a real Redis broker (Debian's
redis-server, started by tests/redisserver.py), the ledger in a throwaway PostgreSQL
database, and the SendGrid stand-in on loopback as the witness of what was sent."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from syndicate import pipeline, workers
from syndicate.delivery import open_transport
from syndicate.store import DeliveryBatch, Store
from tests.conftest import EXAMPLE_READERS, Site, make_site
from tests.sendgrid_standin import StandIn
from tests.test_sendgrid import (
    API_KEY,
    SYNDICATE,
    add_readers,
    statuses,
    syndicate,
    use_sendgrid,
    wait_for,
)
from tests.test_smtp import StartServer, smtp_server, use_smtp  # noqa: F401 - a fixture

pytestmark = pytest.mark.postgres


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[StandIn]:
    server = StandIn(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def cluster_site(
    tmp_path: Path,
    postgres_server: str,
    redis_url: str,
    secret_env: str,
    standin: StandIn,
    monkeypatch: pytest.MonkeyPatch,
) -> Site:
    """The example site on PostgreSQL, sending through the stand-in via Celery workers."""
    from tests.pgcluster import create_database

    monkeypatch.setenv("SENDGRID_API_KEY", API_KEY)
    database = create_database(postgres_server, f"workers_{os.getpid()}_{time.monotonic_ns()}")
    site = make_site(tmp_path / "site", database_url=database)
    monkeypatch.chdir(site.root)
    use_sendgrid(site, standin.url)
    data = yaml.safe_load(site.config_path.read_text(encoding="utf-8"))
    # A short visibility timeout so the test need not wait an hour for a redelivery.
    data["workers"] = {"broker_url": redis_url, "visibility_timeout": "4s"}
    site.config_path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    site.cli("gather")
    site.cli("subscribers", "import", "subscribers.csv", "--digest", "weekly")
    return site


class Worker:
    """`syndicate worker` as its own process, its log in a file (a pipe nobody reads
    would fill up and stall it)."""

    def __init__(self, site: Site, name: str, concurrency: int = 2) -> None:
        self.log = site.root / f"{name}.log"
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                [
                    str(SYNDICATE),
                    "--config",
                    str(site.config_path),
                    "worker",
                    "-c",
                    str(concurrency),
                ],
                cwd=site.root,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        # Celery says "ready" once it consumes from the queue.
        wait_for(lambda: " ready." in self.output() or self.process.poll() is not None, 30)
        assert self.process.poll() is None, self.output()

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def kill(self) -> None:
        self.process.kill()
        # Reap it at once: a killed process stays a zombie until its parent waits, and a
        # zombie still looks alive to the other worker.
        self.process.wait()

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.output()


def batches(site: Site) -> dict[str, int]:
    with Store(site.config.database_url) as store, store.session() as session:
        return dict(
            session.execute(
                select(DeliveryBatch.status, func.count()).group_by(DeliveryBatch.status)
            ).all()  # type: ignore[arg-type]
        )


def test_a_worker_killed_mid_batch_loses_nobody_and_sends_nobody_twice(
    cluster_site: Site, standin: StandIn
) -> None:
    """Two workers, two batches each at a time, 20 batches of 1,000. Once both workers
    have their batches held inside the stand-in, one worker is killed with SIGKILL.

    Its two batches were posted (SendGrid has them) but not recorded as sent. The broker
    hands their tasks to the other worker after the visibility timeout; that worker
    finds the batches claimed by a dead process, marks them UNKNOWN and does not resend
    them; every other batch is sent once. So the stand-in sees every subscriber once.
    """
    everyone = set(EXAMPLE_READERS) | set(add_readers(cluster_site, 20_000 - len(EXAMPLE_READERS)))
    # Two batches answered at once, then four held for 3 s: two per worker.
    standin.add_faults(*[{}] * 2, *[{"delay": 3}] * 4)
    doomed, survivor = Worker(cluster_site, "doomed"), Worker(cluster_site, "survivor")
    sender = syndicate(cluster_site, "digest", "send", "weekly")
    try:

        def four_held() -> bool:
            stats = standin.stats()
            return stats["accepted_requests"] == 2 and stats["in_flight"] == 4

        wait_for(four_held, timeout=60, what="four requests held inside the stand-in")
        doomed.kill()
        killed_at = time.monotonic()
        output, _ = sender.communicate(timeout=60)
        took = time.monotonic() - killed_at
    finally:
        sender.kill()
        survivor_log = survivor.stop()
    assert sender.returncode == 0, output + survivor_log
    assert "(complete)" in output, output
    assert doomed.process.returncode == -signal.SIGKILL

    seen = standin.recipients()
    assert standin.stats()["duplicates"] == 0
    assert max(seen.values()) == 1, "somebody got the issue twice"
    assert set(seen) == everyone, f"missing: {len(everyone - set(seen))}"

    ledger = statuses(cluster_site)
    unknown = {a for a, s in ledger.items() if s == "unknown"}
    sent = {a for a, s in ledger.items() if s == "sent"}
    assert sent | unknown == everyone
    # The window: the killed worker's two batches in flight, posted but not recorded.
    assert len(unknown) == 2_000 and unknown <= set(seen)
    assert "took over from a worker that stopped" in survivor_log
    assert batches(cluster_site) == {"done": 20}
    print(f"\nworker killed; the send completed {took:.1f} s later (visibility timeout 4 s)")
    status = cluster_site.cli("digest", "status", "weekly").output
    assert "20000 subscribers: 18000 accepted, 0 pending, 0 failed, 2000 unknown" in status


def test_no_wait_returns_at_once_and_the_workers_finish_the_issue(
    cluster_site: Site, standin: StandIn
) -> None:
    everyone = set(EXAMPLE_READERS) | set(add_readers(cluster_site, 3_000))
    queued = cluster_site.cli("digest", "send", "weekly", "--no-wait").output
    assert "4 batch(es) queued" in queued, queued
    assert batches(cluster_site) == {"queued": 4}
    worker = Worker(cluster_site, "worker")
    try:
        wait_for(lambda: batches(cluster_site) == {"done": 4}, timeout=60, what="the batches")
        wait_for(
            lambda: "complete" in cluster_site.cli("digest", "status", "weekly").output,
            what="the issue to be marked complete by the last batch",
        )
    finally:
        worker.stop()
    seen = standin.recipients()
    assert set(seen) == everyone and max(seen.values()) == 1
    # Sending again finds the issue complete and nothing new: nobody is sent it twice.
    again = cluster_site.cli("digest", "send", "weekly").output
    assert "no issue sent" in again
    assert standin.stats()["duplicates"] == 0


def test_a_worker_without_a_broker_says_what_to_set(site: Site) -> None:
    result = site.cli("worker", ok=False)
    assert "workers.broker_url is not set" in result.output


# --- what the review of the workers found ---------------------------------------------------


def test_smtp_through_a_worker_with_four_threads_sends_each_reader_once(
    site: Site,
    redis_url: str,
    smtp_server: StartServer,  # noqa: F811 - the fixture imported from test_smtp
) -> None:
    """An SMTP connection cannot be shared: each worker thread has its own transport."""
    mailbox = smtp_server()
    use_smtp(site, mailbox.port)
    data = yaml.safe_load(site.config_path.read_text(encoding="utf-8"))
    data["delivery"]["batch_size"] = 5
    data["workers"] = {"broker_url": redis_url, "visibility_timeout": "4s"}
    site.config_path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    site.cli("gather")
    site.cli("subscribers", "import", "subscribers.csv")
    everyone = set(EXAMPLE_READERS) | set(add_readers(site, 34))
    worker = Worker(site, "smtp-worker", concurrency=4)
    try:
        result = site.cli("digest", "send", "weekly")
    finally:
        log = worker.stop()
    assert "40 sent, 0 failed" in result.output and "(complete)" in result.output, log
    assert sorted(mailbox.recipients) == sorted(everyone)  # each once
    assert set(statuses(site).values()) == {"sent"}


def test_tasks_lost_by_the_broker_are_queued_again_by_the_waiting_sender(
    cluster_site: Site, standin: StandIn, redis_url: str
) -> None:
    """Redis restarted without its append-only file: the queued tasks are gone, the
    batches are still queued in the database. The sender, seeing nothing move and an
    empty queue, queues them again."""
    import redis

    everyone = set(EXAMPLE_READERS) | set(add_readers(cluster_site, 2_500))
    sender = syndicate(cluster_site, "digest", "send", "weekly")
    try:
        wait_for(lambda: batches(cluster_site) == {"queued": 3}, what="the batches planned")
        time.sleep(0.5)  # the tasks reach the broker
        redis.Redis.from_url(redis_url).flushall()  # ... and are lost
        worker = Worker(cluster_site, "late-worker")
        try:
            output, _ = sender.communicate(timeout=60)
        finally:
            worker.stop()
    finally:
        sender.kill()
    assert "(complete)" in output, output
    assert "queued again" in output
    seen = standin.recipients()
    assert set(seen) == everyone and max(seen.values()) == 1


def test_a_database_blip_before_the_post_leaves_the_batch_to_be_sent_once(
    newsletter_with_workers: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker loses the database just as it starts a batch: the task is retried, and
    the retry sends the batch (not: marks its readers unknown after a 10-minute wait)."""
    site = newsletter_with_workers
    with Store(site.config.database_url) as store:
        transport = open_transport(site.config)
        outcome = pipeline.send_digest(site.config, store, "weekly", transport, wait=False)
        transport.close()
        with store.session() as session:
            batch_id = session.scalars(select(DeliveryBatch.id)).one()
    assert outcome.report is not None and outcome.report.queued == 1
    context = workers.WorkerContext(site.config)
    monkeypatch.setattr(workers, "_context", context)
    real_letter = context.letter
    blips = iter([OperationalError("SELECT", {}, Exception("server closed the connection"))])

    def letter(issue_id: int) -> Any:
        failure = next(blips, None)
        if failure is not None:
            raise failure
        return real_letter(issue_id)

    monkeypatch.setattr(context, "letter", letter)
    with pytest.raises(Retry):
        workers._send_batch(RetryingTask(), batch_id)
    assert set(statuses(site).values()) == {"queued"}  # nothing recorded as in flight
    workers._send_batch(RetryingTask(), batch_id)  # the retry, the database back
    context.close()
    assert set(statuses(site).values()) == {"sent"}
    assert len(site.emails()) == len(EXAMPLE_READERS)


class Retry(Exception):
    pass


class RetryingTask:
    """What a Celery task offers _send_batch: its retry count, and retry()."""

    class request:
        retries = 0

    def retry(self, countdown: float, exc: BaseException) -> Exception:
        return Retry(f"in {countdown} s: {exc}")


@pytest.fixture
def newsletter_with_workers(site: Site, redis_url: str) -> Site:
    """The example site with workers configured, and no worker running: the test runs
    the task itself."""
    data = yaml.safe_load(site.config_path.read_text(encoding="utf-8"))
    data["workers"] = {"broker_url": redis_url, "queue": f"nobody-{time.monotonic_ns()}"}
    site.config_path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    site.cli("gather")
    site.cli("subscribers", "import", "subscribers.csv")
    return site


def test_without_the_celery_extra_the_send_says_what_to_install(
    newsletter_with_workers: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workers, "Celery", None)  # as if `pip install syndicate` alone
    result = newsletter_with_workers.cli("digest", "send", "weekly", ok=False)
    assert "pip install 'syndicate[celery]'" in result.output
    assert "Traceback" not in result.output
    assert newsletter_with_workers.emails() == []
