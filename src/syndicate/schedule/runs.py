"""A scheduled job runs once for its scheduled time, however many schedulers see it due.

The lease (leader.py) makes one `syndicate run` the active scheduler, but for a moment
around a handover two may both believe they are (one frozen and woken, the other just
taken over). So before a job runs, a row is inserted in `job_runs` with the job's id and
the run time APScheduler computed for it (with `coalesce`, the one time it runs for), and
the primary key on the two lets exactly one process in: an IntegrityError means the job
ran, or is running, for that time, and this process skips it with a log line. The row
becomes `done`, or `failed` with the error, when the job returns.

Where the gate is: `OncePerRunTime`, a small subclass of APScheduler's thread pool
executor. Its `_do_submit_job` inserts the row on the scheduler's own thread, before the
scheduler moves the job's next run time on in the job store, and only then hands the job
to a worker thread. Wrapping the job functions instead would have put the row after that
move, with a window in which a process that died would lose the run without a trace; the
executor also sees the run time, which a job function does not.

A run left behind. A row still `running` whose runner is gone is a run that may have
stopped half-way. Gone means: a process on this machine that no longer runs, or a runner
whose heartbeat on the row is older than `schedules.takeover_after`. The heartbeat
(`heartbeat_at`, by the database's clock on PostgreSQL, as the lease) is set when the run
starts and renewed every third of `takeover_after` by the runner's lease thread (leader.py)
for as long as the job runs, whether or not that process still holds the lease: a process
that lost the lease because its lease renewals did not get through, but whose job goes on,
keeps its run, and nobody starts it a second time beside it. (Whether the runner holds the
lease says nothing about its job: that was the first rule, and it let a second run start
while the first one still sent.) The rule: such a run is started again, once, for the same
time, by the active scheduler, but only for jobs that are safe to resume:

- `gather` and `feeds`: idempotent; a second run finds the work done, or does the rest.
- `digest:<name>`: resuming is sending the unfinished issue. The delivery ledger finishes
  that issue exactly once per subscriber (it takes the dead sender's claim, leaves the
  messages that were in flight as `unknown` rather than resend them, and sends the rest);
  it never starts a second issue for the same run.

Any other job id (none exists today) is not resumed: its row stays as it is and the log
says so. The active scheduler looks for such runs when it becomes active (the job store
has already moved the job's next run time on, so APScheduler would not submit it again)
and then every third of `takeover_after` while it stays active (a runner on another
machine may stop heartbeating only after the takeover), and resumes those still within
`misfire_grace`; older ones are marked failed. Taking a run over is a conditional UPDATE
(same runner, heartbeat still older than `takeover_after`), so a runner that beats in
between keeps its run. A runner taken over all the same (frozen for longer than
`takeover_after`) finds out at its next heartbeat, and logs it.

When the database does not answer at the gate. A blip (a restart, a failover) must not
cost a run: skipping it would let APScheduler move the next run time on with no row left
for anyone to resume, and a weekly digest would be gone for a week. So the INSERT is tried
again with a short backoff (0.5, 1, 2, 4, 8, 15 s: about 30 s, and never past the job's
misfire grace), still on the scheduler's thread, so the row is in before the next run time
moves on, as above. If the database is still away, the run becomes *pending*: it is handed
to a worker thread that tries the INSERT every 15 s until the misfire grace runs out, and
starts the job when it gets in (or skips it, when another scheduler ran it meanwhile).
Each step is logged. A pending run lives in this process's memory only (with the database
away there is nowhere else to put it): if `syndicate run` stops before the database
answers, the error in the log is what is left of it, and it says so. (When APScheduler
then fails to move the next run time on, the job simply stays due: runner.py keeps the
scheduler's thread alive through that error, and the gate keeps it to one run.)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_MISSED,
    JobExecutionEvent,
)
from apscheduler.executors.base import run_job
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.job import Job
from apscheduler.schedulers.base import STATE_STOPPED, BaseScheduler
from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from syndicate.delivery.ledger import died_here, owner_name
from syndicate.schedule.leader import database_now, short, why
from syndicate.store import JobRun, Store

log = logging.getLogger("syndicate.schedule")

RUN, SKIP, LATE = "run", "skip", "late"
PENDING = "pending"  # the database did not answer at the gate: a worker keeps trying

# Seconds between tries of the gate's INSERT while the database does not answer: on the
# scheduler's thread (about 30 s in all), then every RETRY_EVERY on a worker thread.
BACKOFF: tuple[float, ...] = (0.5, 1, 2, 4, 8, 15)
RETRY_EVERY = 15.0


def resumable(job_id: str) -> bool:
    """Whether a run that stopped half-way may be started again for the same time."""
    return job_id in ("gather", "feeds") or job_id.startswith("digest:")


def show(run_time: datetime) -> str:
    return run_time.strftime("%Y-%m-%d %H:%M:%S %Z")


class RunGate:
    """The `job_runs` table, for one runner (the process's lease holder name)."""

    def __init__(
        self,
        store: Store,
        runner: str | None = None,
        owns_store: bool = False,
        takeover_after: timedelta = timedelta(seconds=60),
    ) -> None:
        self.store = store
        self.runner = runner or owner_name()
        self.owns_store = owns_store
        self.takeover_after = takeover_after  # a heartbeat older than this: the runner is gone
        self._running: set[tuple[str, datetime]] = set()  # the runs to heartbeat
        self._lock = threading.Lock()
        self._problem = ""

    def admit(self, job_id: str, run_time: datetime, grace: timedelta | None = None) -> str:
        """RUN: the run is ours (a new row, or one left by a runner that is gone); SKIP: it
        ran or runs elsewhere; LATE: past the grace time, for APScheduler to report.
        Database errors are the caller's."""
        if grace is not None and datetime.now(UTC) - run_time > grace:
            return LATE
        try:
            with self.store.session() as session:
                session.add(
                    JobRun(
                        job_id=job_id,
                        scheduled_for=run_time,
                        runner=self.runner,
                        heartbeat_at=database_now(session),
                    )
                )
                session.flush()
            return self._started(job_id, run_time)
        except IntegrityError:
            pass  # a row for this job and time exists: see whose it is
        with self.store.session() as session:
            row = session.get(JobRun, (job_id, run_time))
            if row is None:  # removed in between: nobody else is running it
                return self.admit(job_id, run_time, grace)
            where = f"job {job_id} for {show(run_time)}"
            if row.status != JobRun.RUNNING:
                log.info(
                    "%s: skipped, it ran already (%s on %s)", where, row.status, short(row.runner)
                )
                return SKIP
            now = database_now(session)
            if not self.gone(row, now):
                log.info("%s: skipped, %s is running it", where, short(row.runner))
                return SKIP
            if not resumable(job_id):
                log.warning(
                    "%s: its runner %s stopped during the run; not safe to resume, left as it is",
                    where,
                    short(row.runner),
                )
                return SKIP
            conditions = [
                JobRun.job_id == job_id,
                JobRun.scheduled_for == run_time,
                JobRun.runner == row.runner,
                JobRun.status == JobRun.RUNNING,
            ]
            stopped = died_here(row.runner)
            if not stopped:  # ...and it has not beaten since we looked
                conditions.append(
                    or_(
                        JobRun.heartbeat_at.is_(None),
                        JobRun.heartbeat_at < now - self.takeover_after,
                    )
                )
            taken = session.execute(
                update(JobRun)
                .where(*conditions)
                .values(
                    runner=self.runner, started_at=datetime.now(UTC), heartbeat_at=now, error=""
                )
                .execution_options(synchronize_session=False)
            ).rowcount  # type: ignore[attr-defined]
            if taken != 1:
                log.info("%s: skipped, another scheduler resumed it (or it goes on)", where)
                return SKIP
            log.warning(
                "%s: resuming the run %s left unfinished (%s)",
                where,
                short(row.runner),
                "it stopped" if stopped else f"no heartbeat since {show(self.last_beat(row))}",
            )
        return self._started(job_id, run_time)

    def _started(self, job_id: str, run_time: datetime) -> str:
        with self._lock:
            self._running.add((job_id, run_time))
        return RUN

    @staticmethod
    def last_beat(row: JobRun) -> datetime:
        return row.heartbeat_at or row.started_at

    def gone(self, row: JobRun, now: datetime) -> bool:
        """The run's runner stopped here, or has not renewed its heartbeat on the run for
        takeover_after (`now` by the database's clock). Whether it holds the lease does not
        matter: a process that lost the lease may still be running the job."""
        if row.runner == self.runner:
            return False
        if died_here(row.runner):
            return True
        return self.last_beat(row) < now - self.takeover_after

    def beat(self) -> None:
        """Renew the heartbeat of the runs this process has running (the lease thread calls
        this every third of takeover_after, holding the lease or not)."""
        with self._lock:
            runs = sorted(self._running)
        if not runs:
            return
        lost = []
        try:
            with self.store.session() as session:
                now = database_now(session)
                for job_id, run_time in runs:
                    kept = session.execute(
                        update(JobRun)
                        .where(
                            JobRun.job_id == job_id,
                            JobRun.scheduled_for == run_time,
                            JobRun.runner == self.runner,
                            JobRun.status == JobRun.RUNNING,
                        )
                        .values(heartbeat_at=now)
                        .execution_options(synchronize_session=False)
                    ).rowcount  # type: ignore[attr-defined]
                    if kept != 1:
                        lost.append((job_id, run_time))
        except SQLAlchemyError as exc:
            problem = why(exc)
            if problem != self._problem:
                log.warning("job runs: could not renew the heartbeat of running jobs: %s", problem)
            self._problem = problem
            return
        if self._problem:
            log.info("job runs: heartbeat renewed again")
            self._problem = ""
        for run in lost:
            with self._lock:
                if run not in self._running:
                    continue  # it finished meanwhile
                self._running.discard(run)
            log.warning(
                "job %s for %s: another scheduler has taken the run over "
                "(no heartbeat got through for %s); it goes on here too",
                run[0],
                show(run[1]),
                self.takeover_after,
            )

    def finish(self, job_id: str, run_time: datetime, events: list[JobExecutionEvent]) -> None:
        status, error = JobRun.DONE, ""
        for event in events:
            if event.code == EVENT_JOB_ERROR:
                exc = event.exception
                status, error = JobRun.FAILED, f"{type(exc).__name__}: {exc}"
            elif event.code == EVENT_JOB_MISSED:
                status, error = JobRun.FAILED, "not started within the misfire grace time"
        with self._lock:
            self._running.discard((job_id, run_time))
        try:
            with self.store.session() as session:
                finished = session.execute(
                    update(JobRun)
                    .where(
                        JobRun.job_id == job_id,
                        JobRun.scheduled_for == run_time,
                        JobRun.runner == self.runner,
                    )
                    .values(status=status, error=error, finished_at=datetime.now(UTC))
                    .execution_options(synchronize_session=False)
                ).rowcount  # type: ignore[attr-defined]
        except SQLAlchemyError as exc:
            log.error(
                "job %s for %s: could not record that it %s: %s",
                job_id,
                show(run_time),
                status,
                exc,
            )
            return
        if finished != 1:
            log.warning(
                "job %s for %s: finished, but another scheduler had taken the run over",
                job_id,
                show(run_time),
            )

    def left_behind(self) -> list[JobRun]:
        """Runs still `running` whose runner is gone."""
        with self.store.session() as session:
            now = database_now(session)
            rows = session.scalars(select(JobRun).where(JobRun.status == JobRun.RUNNING)).all()
            return [row for row in rows if self.gone(row, now)]

    def abandon(self, row: JobRun, reason: str) -> None:
        with self.store.session() as session:
            session.execute(
                update(JobRun)
                .where(
                    JobRun.job_id == row.job_id,
                    JobRun.scheduled_for == row.scheduled_for,
                    JobRun.runner == row.runner,
                    JobRun.status == JobRun.RUNNING,
                )
                .values(status=JobRun.FAILED, error=reason, finished_at=datetime.now(UTC))
                .execution_options(synchronize_session=False)
            )

    def close(self) -> None:
        if self.owns_store:
            self.store.close()


class OncePerRunTime(ThreadPoolExecutor):
    """APScheduler's thread pool, with the `job_runs` gate in front of every run."""

    backoff = BACKOFF  # seconds between tries on the scheduler's thread
    retry_every = RETRY_EVERY  # ...and then on a worker thread, for a pending run

    def __init__(self, gate: RunGate, max_workers: int = 10) -> None:
        super().__init__(max_workers)
        self.gate = gate
        self._stopping = threading.Event()
        self._reported: set[tuple[str, datetime]] = set()  # left behind, said so once

    def _do_submit_job(self, job: Job, run_times: list[datetime]) -> None:
        # On the scheduler's thread, before it moves the job's next run time on.
        grace = misfire_grace(job)
        decisions = [self._admit_soon(job, run_time, grace) for run_time in run_times]
        self._hand_over(job, run_times, decisions)

    def _hand_over(self, job: Job, run_times: list[datetime], decisions: list[str]) -> None:
        future = self._pool.submit(self._run, job, run_times, decisions)
        future.add_done_callback(self._done(job.id))

    def _admit_soon(self, job: Job, run_time: datetime, grace: timedelta | None) -> str:
        """The gate, tried again with a backoff while the database does not answer; PENDING
        when it still does not, after `backoff` (or the misfire grace) has run out."""
        where = f"job {job.id} for {show(run_time)}"
        started = time.monotonic()
        problem = ""
        for delay in (0.0, *self.backoff):
            if delay:
                if grace is not None and datetime.now(UTC) + timedelta(seconds=delay) > (
                    run_time + grace
                ):
                    break
                if self._pause(delay):
                    break
            try:
                decision = self.gate.admit(job.id, run_time, grace)
            except SQLAlchemyError as exc:
                if not problem:
                    log.warning(
                        "%s: the database did not answer (%s); trying again", where, why(exc)
                    )
                problem = why(exc)
                continue
            if problem:
                log.warning("%s: the database answers again", where)
            return decision
        log.error(
            "%s: not started yet, the database has not answered for %.0f s (%s); the run is "
            "pending: it is tried again every %.0f s until %s (the misfire grace)",
            where,
            time.monotonic() - started,
            problem,
            self.retry_every,
            show(run_time + grace) if grace is not None else "it answers",
        )
        return PENDING

    def _pause(self, seconds: float) -> bool:
        """Sleep on the scheduler's thread; True as soon as the scheduler is shutting down
        (which waits for this thread before it shuts the executor down)."""
        until = time.monotonic() + seconds
        while not self._stopped():
            left = until - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(left, 0.1))
        return True

    def _stopped(self) -> bool:
        return self._stopping.is_set() or self._scheduler.state == STATE_STOPPED

    def _admit_later(self, job: Job, run_time: datetime, grace: timedelta | None) -> str:
        """A pending run, on a worker thread: the gate every `retry_every` seconds until it
        answers, the misfire grace runs out (LATE) or syndicate stops (SKIP)."""
        where = f"job {job.id} for {show(run_time)}"
        while True:
            wait = self.retry_every
            if grace is not None:
                left = (run_time + grace - datetime.now(UTC)).total_seconds()
                if left < 0:
                    log.error(
                        "%s: not run, the database did not answer within its misfire grace (%s)",
                        where,
                        grace,
                    )
                    return LATE
                wait = min(wait, left + 0.01)
            if self._stopping.wait(wait):
                log.error(
                    "%s: not run, syndicate stopped before the database answered; nothing "
                    "records the run: start the job by hand if it is still wanted",
                    where,
                )
                return SKIP
            try:
                decision = self.gate.admit(job.id, run_time, grace)
            except SQLAlchemyError:
                continue
            log.warning("%s: the database answers again; the pending run: %s", where, decision)
            return decision

    def _run(
        self, job: Job, run_times: list[datetime], decisions: list[str]
    ) -> list[JobExecutionEvent]:
        events: list[JobExecutionEvent] = []
        for run_time, decision in zip(run_times, decisions, strict=True):
            if decision == PENDING:
                decision = self._admit_later(job, run_time, misfire_grace(job))
            if decision == SKIP:  # reported as missed: it did not run here
                events.append(
                    JobExecutionEvent(EVENT_JOB_MISSED, job.id, job._jobstore_alias, run_time)
                )
                continue
            # LATE: run_job sees it is past the grace time, logs and reports it, as ever.
            outcome = run_job(job, job._jobstore_alias, [run_time], self._logger.name)
            if decision == RUN:
                self.gate.finish(job.id, run_time, outcome)
            events += outcome
        return events

    def _done(self, job_id: str) -> Callable[[Future[list[JobExecutionEvent]]], None]:
        # As the base class's callback: count the instance finished, dispatch the events.
        def callback(future: Future[list[JobExecutionEvent]]) -> None:
            exc = future.exception()
            if exc is not None:
                self._run_job_error(job_id, exc, exc.__traceback__)
            else:
                self._run_job_success(job_id, future.result())

        return callback

    def resume_left_behind(self, scheduler: BaseScheduler) -> None:
        """Start again the runs that stopped half-way with their runner (see the module).
        The runner calls this when it becomes active, then every third of takeover_after.
        Database errors are the caller's (a run not resumed now is found again next time)."""
        for row in self.gate.left_behind():
            run = (row.job_id, row.scheduled_for)
            where = f"job {row.job_id} for {show(row.scheduled_for)}"
            job: Any = scheduler.get_job(row.job_id)
            if job is None:
                self.gate.abandon(row, f"its runner {short(row.runner)} stopped; no such job now")
                continue
            grace = misfire_grace(job)
            if grace is not None and datetime.now(UTC) - row.scheduled_for > grace:
                log.warning(
                    "%s: stopped with %s and is too late to resume", where, short(row.runner)
                )
                self.gate.abandon(
                    row, f"its runner {short(row.runner)} stopped; too late to resume"
                )
                continue
            if not resumable(row.job_id):
                if run not in self._reported:
                    log.warning(
                        "%s: stopped with %s; not safe to resume, left as it is",
                        where,
                        short(row.runner),
                    )
                    self._reported.add(run)
                continue
            with self._lock:  # as submit_job, without the backoff: the next look tries again
                if self._instances[job.id] >= job.max_instances:
                    if run not in self._reported:
                        log.info("%s: not resumed now, the job is running here", where)
                        self._reported.add(run)
                    continue
                if self.gate.admit(job.id, row.scheduled_for, grace) != RUN:
                    continue
                self._hand_over(job, [row.scheduled_for], [RUN])
                self._instances[job.id] += 1

    def shutdown(self, wait: bool = True) -> None:
        self._stopping.set()
        super().shutdown(wait)
        self.gate.close()


def misfire_grace(job: Job) -> timedelta | None:
    return timedelta(seconds=job.misfire_grace_time) if job.misfire_grace_time is not None else None
