"""One active scheduler among several `syndicate run` on one database (issue 7).

Unit level: the lease (acquire, renew, lapse, takeover, the insert race) and the job_runs
gate (a job submitted twice for one time runs once; a run left behind is resumed only when
safe). Then real `syndicate run` processes on one database, SQLite and PostgreSQL: the
active one is SIGKILLed before, during or after the digest job, or frozen with SIGSTOP
(as a machine that hangs: no process gone here, so only the lease running out hands
over); the other takes over, and the job runs once for its time. The takeover times are
printed (pytest -s).
"""

from __future__ import annotations

import csv
import email
import email.policy
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import pytest
from apscheduler.events import EVENT_JOB_EXECUTED, EVENT_JOB_MISSED
from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from syndicate.delivery.ledger import owner_name
from syndicate.schedule.leader import Elector, Lease
from syndicate.schedule.runner import build_scheduler
from syndicate.schedule.runs import RUN, SKIP, OncePerRunTime, RunGate
from syndicate.store import Delivery, DigestIssue, JobRun, SchedulerLease, Store
from tests.conftest import Site, make_site
from tests.test_schedule import job_events, set_schedules, syndicate_command

HERE = owner_name().partition(":")[0]  # this machine's name, as lease holders spell it
TAKEOVER = 3  # seconds: schedules.takeover_after in the process tests
WAIT = 20.0  # seconds: the longest any step waits


def elsewhere(name: str) -> str:
    """A holder on another machine: alive as far as this one can tell."""
    return f"other-host-{name}:4242:{name}"


def dead_here() -> str:
    """A holder that was a process on this machine and has stopped."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    return f"{HERE}:{gone.pid}:deadbeef"


@pytest.fixture
def shared(
    tmp_path: Path, secret_env: str, monkeypatch: pytest.MonkeyPatch, database_url: str
) -> Site:
    """A site whose database is `database_url` (SQLite or PostgreSQL), migrated."""
    monkeypatch.delenv("SYNDICATE_CONFIG", raising=False)
    site = make_site(tmp_path / "site", database_url)
    monkeypatch.chdir(site.root)
    Store(database_url).close()
    return site


@pytest.fixture
def store(shared: Site) -> Iterator[Store]:
    with Store(shared.config.database_url, upgrade=False) as opened:
        yield opened


def lapse(store: Store, seconds: float = 1) -> None:
    """Let the lease run out now, as if its holder had stopped renewing a while ago."""
    with store.session() as session:
        session.execute(
            update(SchedulerLease).values(expires_at=datetime.now(UTC) - timedelta(seconds=seconds))
        )


# --- the lease ---------------------------------------------------------------------------


def test_the_lease_is_taken_renewed_respected_and_taken_over_when_it_lapses(store: Store) -> None:
    length = timedelta(seconds=30)
    a = Lease(store, length, elsewhere("a"))
    b = Lease(store, length, elsewhere("b"))

    first = a.acquire()
    assert first.held and first.holder == a.me and first.previous is None
    assert first.expires_at is not None and first.now is not None
    assert first.expires_at - first.now == length

    busy = b.acquire()  # a live holder on another machine: b waits
    assert not busy.held and busy.holder == a.me and busy.expires_at == first.expires_at

    renewed = a.acquire()
    assert renewed.held and renewed.renewed
    assert renewed.expires_at is not None and renewed.expires_at >= first.expires_at

    lapse(store)  # a stopped renewing (its machine went down)
    taken = b.acquire()
    assert taken.held and taken.previous == a.me and not taken.previous_stopped
    assert not a.acquire().held  # a comes back: b has it now, a is standby
    assert a.look().holder == b.me and not a.look().held
    assert not a.release()  # only the holder can give it up

    assert b.release()  # a clean stop: the lease lapses at once
    again = a.acquire()
    assert again.held and again.previous == b.me


def test_a_holder_that_stopped_on_this_machine_is_taken_over_at_once(store: Store) -> None:
    length = timedelta(minutes=10)
    with store.session() as session:
        stopped = dead_here()
        session.add(
            SchedulerLease(
                name="scheduler",
                holder=stopped,
                acquired_at=datetime.now(UTC),
                expires_at=datetime.now(UTC) + length,
            )
        )
    me = Lease(store, length)
    taken = me.acquire()
    assert taken.held and taken.previous == stopped and taken.previous_stopped

    # A live process here (this one, under another nonce) is respected like any holder.
    other = Lease(store, length, f"{HERE}:{os.getpid()}:another")
    assert not other.acquire().held


class Racing(Lease):
    """Reads the row (missing), then waits until its rival has read it too, so both go on
    to INSERT. PostgreSQL only: SQLite takes the write lock at BEGIN, so there the rival
    waits for it before reading, and the race cannot be staged (nor happen)."""

    def __init__(self, *args: Any, barrier: threading.Barrier | None) -> None:
        super().__init__(*args)
        self.barrier = barrier

    def _read(self, session: Session) -> tuple[str, datetime] | None:
        row = super()._read(session)
        if self.barrier is not None and row is None:
            self.barrier.wait(timeout=WAIT)
        return row


def test_two_processes_inserting_the_first_lease_at_once_one_wins(store: Store) -> None:
    length = timedelta(seconds=30)
    postgres = store.engine.dialect.name == "postgresql"
    for _ in range(3):
        with store.session() as session:
            session.execute(delete(SchedulerLease))
        barrier = threading.Barrier(2) if postgres else None
        rivals = [Racing(store, length, elsewhere(n), barrier=barrier) for n in ("a", "b")]
        results: dict[str, Any] = {}

        def acquire(lease: Lease, results: dict[str, Any] = results) -> None:
            results[lease.me] = lease.acquire()

        threads = [threading.Thread(target=acquire, args=(lease,)) for lease in rivals]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=WAIT)
        assert len(results) == 2
        winners = [me for me, attempt in results.items() if attempt.held]
        assert len(winners) == 1, results
        loser = next(attempt for attempt in results.values() if not attempt.held)
        assert loser.holder == winners[0]  # the loser knows who won, and stays standby
        assert rivals[0].look().holder == winners[0]


class Unreachable(Lease):
    """A lease whose database stops answering when told to."""

    down = False

    def acquire(self) -> Any:
        if self.down:
            raise OperationalError("UPDATE scheduler_leases ...", {}, ConnectionError("gone"))
        return super().acquire()


def test_the_elector_stops_believing_it_holds_the_lease_before_another_may_take_it(
    store: Store,
) -> None:
    lease = Unreachable(store, timedelta(seconds=3), elsewhere("me"))
    elector = Elector(lease)
    elector.start()
    try:
        deadline = time.monotonic() + WAIT
        while not elector.holds():
            assert time.monotonic() < deadline, "the elector never got the lease"
            time.sleep(0.01)
        lease.down = True  # from now on no renewal gets through
        cut = time.monotonic()
        time.sleep(0.1)  # (a renewal already under way lands first)
        renewed = lease.look().expires_at
        while elector.holds():
            assert time.monotonic() - cut < 3, "still believed held after the lease lapsed"
            time.sleep(0.01)
        gave_up = datetime.now(UTC)
        # Another process may take over only once the stored lease has run out: later.
        assert renewed is not None and gave_up < renewed - timedelta(seconds=0.3)
        assert "database" in elector.reason
        lease.down = False  # back: nobody took it meanwhile, so it is ours again
        while not elector.holds():
            assert time.monotonic() < deadline, "the lease was not taken back"
            time.sleep(0.01)
    finally:
        elector.stop()
    assert lease.look().holder == lease.me and not lease.look().held  # released


# --- the job_runs gate ---------------------------------------------------------------------


def count_run(path: str) -> None:
    """A job that leaves one line per run."""
    with Path(path).open("a", encoding="utf-8") as runs:
        runs.write("ran\n")


def test_the_same_job_and_time_submitted_to_two_schedulers_runs_once(
    shared: Site, store: Store
) -> None:
    config = shared.config
    ran = shared.root / "runs.txt"
    one, two = build_scheduler(config), build_scheduler(config)  # two runners, one database
    for made in (one, two):
        made.start(paused=True)
    try:
        one.add_job(count_run, "interval", hours=1, args=[str(ran)], id="digest:weekly")
        job = one.get_job("digest:weekly")
        due = datetime.now(UTC).replace(microsecond=0)
        finished = [job_events(made) for made in (one, two)]
        for made in (one, two, one):
            executor = made._lookup_executor("default")
            assert isinstance(executor, OncePerRunTime)
            executor.submit_job(job, [due])
            time.sleep(0.2)  # one after the other: the gate, not max_instances, decides
        codes = [event.code for events in finished for event in drain(events, job.id)]
        assert sorted(codes) == sorted([EVENT_JOB_EXECUTED, EVENT_JOB_MISSED, EVENT_JOB_MISSED])
    finally:
        for made in (one, two):
            made.shutdown(wait=True)
    assert ran.read_text(encoding="utf-8") == "ran\n"
    with store.session() as session:
        [row] = session.scalars(select(JobRun)).all()
    assert (row.job_id, row.scheduled_for, row.status, row.error) == (
        "digest:weekly",
        due,
        JobRun.DONE,
        "",
    )
    assert row.finished_at is not None and row.finished_at >= row.started_at


def drain(events: Any, job_id: str, expected: int = 3, timeout: float = WAIT) -> list[Any]:
    """The events for job_id that arrive within timeout (stops early at `expected`)."""
    found: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(found) < expected and (left := deadline - time.monotonic()) > 0:
        try:
            event = events.get(timeout=min(left, 0.5))
        except queue.Empty:
            if found:
                break
            continue
        if event.job_id == job_id:
            found.append(event)
    return found


def left_running(
    store: Store,
    job_id: str,
    when: datetime,
    runner: str,
    status: str,
    heartbeat: datetime | None = None,
) -> None:
    with store.session() as session:
        session.add(
            JobRun(
                job_id=job_id,
                scheduled_for=when,
                runner=runner,
                status=status,
                heartbeat_at=heartbeat or datetime.now(UTC),
            )
        )


def test_a_run_left_behind_is_resumed_only_if_its_runner_is_gone_and_the_job_is_safe(
    store: Store,
) -> None:
    when = datetime(2026, 11, 27, 8, tzinfo=UTC)
    me = RunGate(store, elsewhere("me"))
    # Its runner stopped on this machine: a digest send is resumed (the ledger finishes
    # the issue without resending); the run is now ours.
    left_running(store, "digest:weekly", when, dead_here(), JobRun.RUNNING)
    assert me.admit("digest:weekly", when) == RUN
    assert me.admit("digest:weekly", when) == SKIP  # ...once
    # A job not known to be safe to run twice is left alone.
    left_running(store, "cleanup", when, dead_here(), JobRun.RUNNING)
    assert me.admit("cleanup", when) == SKIP
    # A finished run is never run again, whoever ran it.
    left_running(store, "feeds", when, dead_here(), JobRun.DONE)
    assert me.admit("feeds", when) == SKIP
    # A runner on another machine whose heartbeat is fresh is alive, lease or no lease:
    # not resumed...
    other = elsewhere("other")
    left_running(store, "gather", when, other, JobRun.RUNNING)
    assert me.admit("gather", when) == SKIP
    assert [row.job_id for row in me.left_behind()] == ["cleanup"]
    # ...until its heartbeat is older than takeover_after (60 s by default).
    with store.session() as session:
        session.execute(
            update(JobRun)
            .where(JobRun.job_id == "gather")
            .values(heartbeat_at=datetime.now(UTC) - timedelta(seconds=61))
        )
    assert sorted(row.job_id for row in me.left_behind()) == ["cleanup", "gather"]
    assert me.admit("gather", when) == RUN

    me.finish("gather", when, [])
    with store.session() as session:
        runs = {row.job_id: row for row in session.scalars(select(JobRun))}
    assert runs["gather"].status == JobRun.DONE and runs["gather"].runner == me.runner
    assert runs["digest:weekly"].runner == me.runner
    assert runs["cleanup"].status == JobRun.RUNNING and runs["cleanup"].runner != me.runner
    assert runs["feeds"].status == JobRun.DONE and runs["feeds"].runner != me.runner


def test_a_runner_that_lost_the_lease_keeps_its_running_job_by_its_heartbeat(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """A's lease renewals stop getting through while its job goes on: B takes the lease
    over, but not the run, which A's lease thread keeps heartbeating; once A stops, B
    resumes the run, once. (The lease used to decide: B ran the job beside A.)"""
    length = timedelta(seconds=1)  # takeover_after, for the lease and the heartbeat
    when = datetime(2026, 12, 4, 8, tzinfo=UTC)
    lease_a = Unreachable(store, length, elsewhere("a"))
    gate_a = RunGate(store, lease_a.me, takeover_after=length)
    elector_a = Elector(lease_a)
    elector_a.also(gate_a.beat)
    elector_a.start()
    try:
        eventually(elector_a.holds, "A to hold the lease")
        assert gate_a.admit("gather", when) == RUN  # A starts the run
        lease_a.down = True  # A's renewals no longer get through; its job goes on
        eventually(lambda: not elector_a.holds(), "A to give the lease up")
        lease_b = Lease(store, timedelta(minutes=1), elsewhere("b"))
        eventually(lambda: lease_b.acquire().held, "B to take the lease over")
        gate_b = RunGate(store, lease_b.me, takeover_after=length)
        until = time.monotonic() + 2 * length.total_seconds()  # well past takeover_after
        while time.monotonic() < until:
            assert gate_b.left_behind() == []
            assert gate_b.admit("gather", when) == SKIP, "B runs the job beside A"
            time.sleep(0.1)
    finally:
        elector_a.stop(release=False)  # A stops, and its heartbeat with it
    stopped = time.monotonic()
    [row] = eventually(gate_b.left_behind, "A's run to be left behind")
    report("a stopped runner's run left behind after", store, time.monotonic() - stopped)
    assert row.runner == lease_a.me and time.monotonic() - stopped < 2 * length.total_seconds()
    assert gate_b.admit("gather", when) == RUN  # resumed by B...
    assert gate_b.admit("gather", when) == SKIP  # ...once
    assert RunGate(store, elsewhere("c"), takeover_after=length).admit("gather", when) == SKIP

    # Had A lived on, its next heartbeat would have told it (and not touched B's run).
    [taken] = runs_of(store, "gather")
    gate_a.beat()
    assert "another scheduler has taken the run over" in caplog.text
    [after] = runs_of(store, "gather")
    assert (after.runner, after.heartbeat_at) == (lease_b.me, taken.heartbeat_at)
    gate_a.finish("gather", when, [])  # A's end of the job changes nothing either
    gate_b.finish("gather", when, [])
    [done] = runs_of(store, "gather")
    assert (done.runner, done.status) == (lease_b.me, JobRun.DONE)


class Blips:
    """Makes a gate's INSERT fail, as a database restarting would: `times` times, or for
    as long as `down`."""

    def __init__(self, gate: RunGate, times: int = 0) -> None:
        self.real = gate.admit
        self.left = times
        self.down = False
        self.failed = 0
        gate.admit = self  # type: ignore[method-assign]

    def __call__(self, *args: Any) -> str:
        if self.down or self.left > 0:
            self.left -= 1
            self.failed += 1
            raise OperationalError(
                "INSERT INTO job_runs ...", {}, ConnectionError("the database is restarting")
            )
        return self.real(*args)


def gated(scheduler: Any) -> OncePerRunTime:
    executor = scheduler._lookup_executor("default")
    assert isinstance(executor, OncePerRunTime)
    return executor


def add_weekly(scheduler: Any, ran: Path, due: datetime, **options: Any) -> None:
    scheduler.add_job(
        count_run,
        "cron",
        day_of_week="fri",
        hour=8,
        args=[str(ran)],
        id="digest:weekly",
        next_run_time=due,
        **options,
    )


def test_a_database_blip_at_the_gate_is_tried_again_and_the_run_happens(
    shared: Site, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """Skipping the run would have lost it: the job store moves the next run time on a
    week, and no job_runs row is left for anyone to resume."""
    ran = shared.root / "runs.txt"
    scheduler = build_scheduler(shared.config)
    blips = Blips(gated(scheduler).gate, times=2)  # two tries fail, the third gets in
    scheduler.start(paused=True)
    try:
        due = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
        add_weekly(scheduler, ran, due)
        finished = job_events(scheduler)
        started = time.monotonic()
        scheduler.resume()
        [event] = drain(finished, "digest:weekly", expected=1)
        report("a run through a database blip at the gate", store, time.monotonic() - started)
        assert event.code == EVENT_JOB_EXECUTED
        moved_on = scheduler.get_job("digest:weekly").next_run_time
    finally:
        scheduler.shutdown(wait=True)
    assert blips.failed == 2 and ran.read_text(encoding="utf-8") == "ran\n"
    [row] = runs_of(store, "digest:weekly")
    assert (row.scheduled_for, row.status) == (due, JobRun.DONE)
    assert moved_on > datetime.now(UTC)
    assert "the database did not answer" in caplog.text
    assert "the database answers again" in caplog.text


def test_when_the_database_stays_away_the_run_waits_for_it_and_the_scheduler_goes_on(
    shared: Site, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """Past the short backoff the run is pending on a worker thread; the job store's
    update failing as well does not end APScheduler's thread; the run happens, once,
    when the database answers."""
    ran = shared.root / "runs.txt"
    scheduler = build_scheduler(shared.config, jobstore_retry_interval=0.3)
    executor = gated(scheduler)
    executor.backoff, executor.retry_every = (0.05, 0.05), 0.1
    blips = Blips(executor.gate)
    blips.down = True
    scheduler.start(paused=True)
    try:
        due = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
        add_weekly(scheduler, ran, due)
        jobstore = scheduler._lookup_jobstore("default")
        update_job, broken = jobstore.update_job, []

        def update_once_broken(job: Any) -> None:
            if not broken:
                broken.append(job.id)
                raise OperationalError("UPDATE apscheduler_jobs ...", {}, ConnectionError("gone"))
            update_job(job)

        jobstore.update_job = update_once_broken
        finished = job_events(scheduler)
        scheduler.resume()
        # The failed update left the job due; the scheduler looked again and moved it on.
        eventually(lambda: (next_due(store) or due) > due, "the next run time to move on")
        assert broken == ["digest:weekly"] and scheduler._thread.is_alive()
        assert not ran.exists() and runs_of(store, "digest:weekly") == []
        assert "the run is pending" in caplog.text
        blips.down = False  # the database answers again
        [event] = drain(finished, "digest:weekly", expected=1)
        assert event.code == EVENT_JOB_EXECUTED
    finally:
        scheduler.shutdown(wait=True)
    assert ran.read_text(encoding="utf-8") == "ran\n"
    [row] = runs_of(store, "digest:weekly")
    assert (row.scheduled_for, row.status) == (due, JobRun.DONE)
    assert "the database did not answer while updating the job store" in caplog.text
    assert "the database answers again; the pending run: run" in caplog.text


def test_a_pending_run_is_given_up_at_its_misfire_grace_and_at_a_stop_with_a_log_line(
    shared: Site, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    ran = shared.root / "runs.txt"
    scheduler = build_scheduler(shared.config)
    executor = gated(scheduler)
    executor.backoff, executor.retry_every = (0.05,), 0.1
    Blips(executor.gate).down = True  # for good
    scheduler.start(paused=True)
    try:
        due = datetime.now(UTC) - timedelta(seconds=0.2)
        add_weekly(scheduler, ran, due, misfire_grace_time=1)
        finished = job_events(scheduler)
        scheduler.resume()
        [event] = drain(finished, "digest:weekly", expected=1)
        assert event.code == EVENT_JOB_MISSED
        assert "not run, the database did not answer within its misfire grace" in caplog.text
        scheduler.add_job(count_run, "interval", hours=1, args=[str(ran)], id="gather")
        scheduler.modify_job("gather", next_run_time=datetime.now(UTC))
        eventually(lambda: "job gather for" in caplog.text, "the gather run to be pending")
    finally:
        scheduler.shutdown(wait=True)  # with the gather run still pending
    assert "job gather" in caplog.text and "syndicate stopped before the database" in caplog.text
    assert not ran.exists() and runs_of(store, "digest:weekly") == []


def test_takeover_after_must_leave_time_to_renew(site: Site) -> None:
    set_schedules(site, "takeover_after: 2s\ndigests:\n  weekly: {cron: '0 8 * * fri'}")
    out = site.cli("check", ok=False).output
    assert "schedules.takeover_after" in out and "at least 3s" in out
    set_schedules(site, "takeover_after: 3s")
    assert site.config.schedules.takeover_after == timedelta(seconds=3)
    set_schedules(site, "gather: {interval: 1h}")
    assert site.config.schedules.takeover_after == timedelta(seconds=60)


# --- real `syndicate run` processes ----------------------------------------------------------


class Run:
    """One `syndicate run` process, its log in a file (a pipe nobody reads could fill up)."""

    def __init__(self, site: Site, name: str) -> None:
        self.name = name
        self.log = site.root / f"{name}.log"
        self._out: IO[str] = self.log.open("w", encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if k != "SYNDICATE_CONFIG"}
        self.process = subprocess.Popen(
            [*syndicate_command(), "--config", str(site.config_path), "run"],
            cwd=site.root,
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.pid = self.process.pid
        self.short = f"{HERE}:{self.pid}"

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8")

    def kill(self) -> None:
        """SIGKILL, and reap it at once (until then it is a zombie, which looks alive)."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=WAIT)

    def stop(self) -> int:
        """SIGTERM, as systemd stops it; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=WAIT)
        finally:
            self._out.close()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._out.close()


def eventually(condition: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return result


def lease_holder(store: Store) -> str | None:
    with store.session() as session:
        lease = session.get(SchedulerLease, "scheduler")
        return lease.holder if lease is not None else None


def runs_of(store: Store, job_id: str) -> list[JobRun]:
    with store.session() as session:
        return list(
            session.scalars(
                select(JobRun).where(JobRun.job_id == job_id).order_by(JobRun.scheduled_for)
            )
        )


def pid_of(holder: str | None) -> int | None:
    return int(holder.split(":")[1]) if holder else None


@pytest.fixture
def pair(shared: Site, store: Store) -> Iterator[Callable[[], tuple[Run, Run]]]:
    """Start two `syndicate run` on the shared database; (active, standby) once both are up."""
    started: list[Run] = []

    def start() -> tuple[Run, Run]:
        started.extend([Run(shared, "first"), Run(shared, "second")])
        by_pid = {run.pid: run for run in started}
        for run in started:
            assert run.process.poll() is None, run.output()
        holder = eventually(lambda: pid_of(lease_holder(store)) in by_pid, "a lease holder")
        active = by_pid[pid_of(lease_holder(store))]  # type: ignore[index]
        standby = next(run for run in started if run is not active)
        eventually(lambda: "scheduler: standby; active is" in standby.output(), "a standby")
        assert holder and f"scheduler: active (lease held by {active.short})" in active.output()
        assert f"standby; active is {active.short}, lease until" in standby.output()
        return active, standby

    yield start
    for run in started:
        run.close()


def schedule_digest(site: Site, every: str) -> None:
    """Only the digest job, on an interval (cron has no seconds), failing over in 3 s."""
    set_schedules(site, f"takeover_after: {TAKEOVER}s\ndigests:\n  weekly: {{interval: {every}}}")


def prepare(site: Site, extra_readers: int = 0) -> list[str]:
    """Reviews and subscribers in the database; the addresses of everyone subscribed."""
    site.cli("gather")
    if extra_readers:
        with (site.root / "subscribers.csv").open("a", encoding="utf-8", newline="") as more:
            writer = csv.writer(more)
            for n in range(extra_readers):
                writer.writerow([f"reader{n:05d}@example.org", f"Reader {n}", "weekly"])
    site.cli("subscribers", "import", "subscribers.csv")
    with (site.root / "subscribers.csv").open(encoding="utf-8", newline="") as readers:
        return [row["email"] for row in csv.DictReader(readers)]


def issues(store: Store) -> list[DigestIssue]:
    with store.session() as session:
        return list(session.scalars(select(DigestIssue)))


def ledger(store: Store) -> dict[int, str]:
    with store.session() as session:
        return {d.subscriber_id: d.status for d in session.scalars(select(Delivery))}


def sent_to(site: Site) -> dict[str, int]:
    """How many outbox messages each address got."""
    counts: dict[str, int] = {}
    for path in site.emails():
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        address = message["To"].addresses[0].addr_spec
        counts[address] = counts.get(address, 0) + 1
    return counts


def next_due(store: Store) -> datetime | None:
    """The digest job's next run time in APScheduler's job store (shared by every process)."""
    try:
        with store.engine.connect() as conn:
            stamp = conn.scalar(
                text("SELECT next_run_time FROM apscheduler_jobs WHERE id = 'digest:weekly'")
            )
    except DBAPIError:  # no table yet: the active process has not started APScheduler
        return None
    return datetime.fromtimestamp(stamp, UTC) if stamp is not None else None


def report(what: str, store: Store, seconds: float) -> None:
    print(f"\n[failover] {store.engine.dialect.name}: {what}: {seconds:.2f} s")


def test_the_active_scheduler_killed_before_the_digest_the_standby_takes_over_and_sends_once(
    shared: Site, store: Store, pair: Callable[[], tuple[Run, Run]]
) -> None:
    schedule_digest(shared, "8s")
    readers = prepare(shared)
    active, standby = pair()
    due = eventually(lambda: next_due(store), "the digest job in the job store")

    active.kill()
    killed = time.monotonic()
    eventually(
        lambda: lease_holder(store) and pid_of(lease_holder(store)) == standby.pid, "takeover"
    )
    took = time.monotonic() - killed
    report("takeover after SIGKILL of the active scheduler", store, took)
    assert took < TAKEOVER + 1
    # The line is logged just after the lease is committed: wait for it, briefly.
    eventually(
        lambda: f"scheduler: took over from {active.short} (it no longer runs)" in standby.output(),
        "the takeover in the standby's log",
        timeout=5,
    )
    assert datetime.now(UTC) < due, "the digest fell due before the takeover: test too slow"

    [run] = eventually(
        lambda: [r for r in runs_of(store, "digest:weekly") if r.status != JobRun.RUNNING],
        "the digest run",
    )
    assert (run.scheduled_for, run.status, run.runner.startswith(standby.short + ":")) == (
        due,
        JobRun.DONE,
        True,
    )
    assert len(issues(store)) == 1
    assert sent_to(shared) == dict.fromkeys(readers, 1)
    assert set(ledger(store).values()) == {Delivery.SENT}
    assert standby.stop() == 0
    assert "released the lease" in standby.output()
    assert "Traceback" not in standby.output() + active.output()


def test_killed_while_sending_the_digest_the_standby_finishes_the_issue_without_resending(
    shared: Site, store: Store, pair: Callable[[], tuple[Run, Run]]
) -> None:
    schedule_digest(shared, "4s")
    readers = prepare(shared, extra_readers=400)  # a send long enough to be cut (~2 s)
    active, standby = pair()
    due = eventually(lambda: next_due(store), "the digest job in the job store")

    # Half-way through the send (some messages out, the run recorded as running): kill.
    eventually(lambda: len(shared.emails()) >= 30, "the send to start")
    active.kill()
    killed = time.monotonic()
    before = {path.name: path.read_bytes() for path in shared.emails()}
    [left] = runs_of(store, "digest:weekly")
    assert (left.scheduled_for, left.status) == (due, JobRun.RUNNING)
    assert left.runner.startswith(active.short + ":")
    assert len(before) < len(readers), "the send finished before the kill: make it longer"

    eventually(lambda: pid_of(lease_holder(store)) == standby.pid, "takeover")
    report("takeover after SIGKILL during the digest job", store, time.monotonic() - killed)
    # The standby resumes the run for the same time: the ledger finishes the issue.
    run = eventually(
        lambda: next(
            (
                r
                for r in runs_of(store, "digest:weekly")
                if r.scheduled_for == due and r.finished_at
            ),
            None,
        ),
        "the resumed run",
    )
    assert run.status == JobRun.DONE and run.runner.startswith(standby.short + ":")
    assert "resuming the run" in standby.output() and active.short in standby.output()
    assert len(issues(store)) == 1 and issues(store)[0].status == DigestIssue.SENT

    # Nobody twice: what went out before the kill was not sent again, and the messages the
    # killed process had in flight are `unknown`, not resent (at most once).
    counts = sent_to(shared)
    assert set(counts.values()) == {1}
    after = {path.name: path.read_bytes() for path in shared.emails()}
    assert {name: after[name] for name in before} == before
    statuses = list(ledger(store).values())
    sent, unknown = statuses.count(Delivery.SENT), statuses.count(Delivery.UNKNOWN)
    assert sent + unknown == len(statuses) == len(readers)
    assert unknown <= 100  # one batch (delivery.batch_size) at most was in flight
    assert sent <= len(counts) <= sent + unknown  # an unknown one may have gone, once
    print(f"[failover] {len(before)} sent before the kill, {unknown} unknown, {sent} sent in all")
    assert standby.stop() == 0


def test_killed_right_after_the_digest_ran_it_does_not_run_again_for_that_time(
    shared: Site, store: Store, pair: Callable[[], tuple[Run, Run]]
) -> None:
    schedule_digest(shared, "4s")
    readers = prepare(shared)
    active, standby = pair()
    due = eventually(lambda: next_due(store), "the digest job in the job store")
    eventually(lambda: [r for r in runs_of(store, "digest:weekly") if r.finished_at], "the run")
    active.kill()
    killed = time.monotonic()
    eventually(lambda: pid_of(lease_holder(store)) == standby.pid, "takeover")
    report("takeover after SIGKILL right after the digest job", store, time.monotonic() - killed)
    time.sleep(1)  # the new active scheduler has synchronised and looked for runs to resume

    first = runs_of(store, "digest:weekly")[0]
    assert (first.scheduled_for, first.status) == (due, JobRun.DONE)
    assert first.runner.startswith(active.short + ":")  # not run (nor resumed) by the other
    assert "resuming" not in standby.output()
    assert len(issues(store)) == 1
    assert sent_to(shared) == dict.fromkeys(readers, 1)

    # `syndicate schedule` says who runs the jobs, and who ran the last ones.
    shown = shared.cli("schedule").output
    assert f"Scheduler: active on {standby.short} since" in shown
    assert re.search(rf"digest:weekly +for .* done .* on {active.short}$", shown, re.M), shown
    assert standby.stop() == 0
    assert "Scheduler: none active; the last was" in shared.cli("schedule").output


def test_a_frozen_active_scheduler_is_taken_over_when_its_lease_lapses_and_steps_down(
    shared: Site, store: Store, pair: Callable[[], tuple[Run, Run]]
) -> None:
    """SIGSTOP: the process still exists, as a hung machine's would, so only the lease
    running out hands over; woken up, it finds the lease gone and stays standby."""
    schedule_digest(shared, "8s")
    readers = prepare(shared)
    active, standby = pair()
    due = eventually(lambda: next_due(store), "the digest job in the job store")

    active.process.send_signal(signal.SIGSTOP)
    frozen = time.monotonic()
    try:
        eventually(lambda: pid_of(lease_holder(store)) == standby.pid, "takeover")
        took = time.monotonic() - frozen
        report("takeover after SIGSTOP (the lease lapsing)", store, took)
        # It waited for the lease to run out: at least 2/3 of it (renewed every 1/3)...
        assert took > TAKEOVER * 2 / 3 - 0.2
        assert took < TAKEOVER + 1  # ...and took over within takeover_after and a margin
        eventually(  # logged just after the lease is committed
            lambda: (
                f"scheduler: took over from {active.short} (its lease ran out at"
                in standby.output()
            ),
            "the takeover in the standby's log",
            timeout=5,
        )
    finally:
        active.process.send_signal(signal.SIGCONT)
    eventually(lambda: "lost the lease" in active.output(), "the woken one to step down")
    eventually(lambda: f"standby; active is {standby.short}" in active.output(), "standby")
    assert datetime.now(UTC) < due, "the digest fell due before the takeover: test too slow"

    run = eventually(
        lambda: next((r for r in runs_of(store, "digest:weekly") if r.finished_at), None),
        "the digest run",
    )
    assert (run.scheduled_for, run.status) == (due, JobRun.DONE)
    assert run.runner.startswith(standby.short + ":")
    assert len(issues(store)) == 1
    assert sent_to(shared) == dict.fromkeys(readers, 1)
    assert active.stop() == 0 and standby.stop() == 0
    assert "released the lease" in standby.output()
    assert "released the lease" not in active.output()
