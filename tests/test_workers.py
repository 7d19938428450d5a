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

import pytest
import yaml
from sqlalchemy import func, select

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
