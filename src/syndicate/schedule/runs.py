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

A run left behind. A row still `running` whose runner is gone (a process on this machine
that no longer runs, or one that no longer holds a live scheduler lease) is a run that
may have stopped half-way. The rule: such a run is started again, once, for the same
time, by the active scheduler, but only for jobs that are safe to resume:

- `gather` and `feeds`: idempotent; a second run finds the work done, or does the rest.
- `digest:<name>`: resuming is sending the unfinished issue. The delivery ledger finishes
  that issue exactly once per subscriber (it takes the dead sender's claim, leaves the
  messages that were in flight as `unknown` rather than resend them, and sends the rest);
  it never starts a second issue for the same run.

Any other job id (none exists today) is not resumed: its row stays as it is and the log
says so. The active scheduler looks for such runs when it becomes active (the job store
has already moved the job's next run time on, so APScheduler would not submit it again),
and resumes those still within `misfire_grace`; older ones are marked failed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_MISSED,
    JobExecutionEvent,
)
from apscheduler.executors.base import MaxInstancesReachedError, run_job
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.job import Job
from apscheduler.schedulers.base import BaseScheduler
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from syndicate.delivery.ledger import died_here, owner_name
from syndicate.schedule.leader import LEASE_NAME, database_now, short
from syndicate.store import JobRun, SchedulerLease, Store

log = logging.getLogger("syndicate.schedule")

RUN, SKIP, LATE = "run", "skip", "late"


def resumable(job_id: str) -> bool:
    """Whether a run that stopped half-way may be started again for the same time."""
    return job_id in ("gather", "feeds") or job_id.startswith("digest:")


def show(run_time: datetime) -> str:
    return run_time.strftime("%Y-%m-%d %H:%M:%S %Z")


class RunGate:
    """The `job_runs` table, for one runner (the process's lease holder name)."""

    def __init__(self, store: Store, runner: str | None = None, owns_store: bool = False) -> None:
        self.store = store
        self.runner = runner or owner_name()
        self.owns_store = owns_store

    def admit(self, job_id: str, run_time: datetime, grace: timedelta | None = None) -> str:
        """RUN: the run is ours (a new row, or one left by a runner that is gone); SKIP: it
        ran or runs elsewhere; LATE: past the grace time, for APScheduler to report."""
        if grace is not None and datetime.now(UTC) - run_time > grace:
            return LATE
        try:
            with self.store.session() as session:
                session.add(JobRun(job_id=job_id, scheduled_for=run_time, runner=self.runner))
                session.flush()
            return RUN
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
            if row.runner == self.runner or not self.gone(session, row.runner):
                log.info("%s: skipped, %s is running it", where, short(row.runner))
                return SKIP
            if not resumable(job_id):
                log.warning(
                    "%s: its runner %s stopped during the run; not safe to resume, left as it is",
                    where,
                    short(row.runner),
                )
                return SKIP
            taken = session.execute(
                update(JobRun)
                .where(
                    JobRun.job_id == job_id,
                    JobRun.scheduled_for == run_time,
                    JobRun.runner == row.runner,
                    JobRun.status == JobRun.RUNNING,
                )
                .values(runner=self.runner, started_at=datetime.now(UTC), error="")
                .execution_options(synchronize_session=False)
            ).rowcount  # type: ignore[attr-defined]
            if taken != 1:
                log.info("%s: skipped, another scheduler resumed it", where)
                return SKIP
            log.warning(
                "%s: resuming the run %s left unfinished (it stopped)", where, short(row.runner)
            )
            return RUN

    def gone(self, session: Session, runner: str) -> bool:
        """A runner that stopped here, or that no longer holds a live scheduler lease."""
        if runner == self.runner:
            return False
        if died_here(runner):
            return True
        lease = session.get(SchedulerLease, LEASE_NAME)
        return lease is None or lease.holder != runner or lease.expires_at < database_now(session)

    def finish(self, job_id: str, run_time: datetime, events: list[JobExecutionEvent]) -> None:
        status, error = JobRun.DONE, ""
        for event in events:
            if event.code == EVENT_JOB_ERROR:
                exc = event.exception
                status, error = JobRun.FAILED, f"{type(exc).__name__}: {exc}"
            elif event.code == EVENT_JOB_MISSED:
                status, error = JobRun.FAILED, "not started within the misfire grace time"
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
            rows = session.scalars(select(JobRun).where(JobRun.status == JobRun.RUNNING)).all()
            return [row for row in rows if self.gone(session, row.runner)]

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

    def __init__(self, gate: RunGate, max_workers: int = 10) -> None:
        super().__init__(max_workers)
        self.gate = gate

    def _do_submit_job(self, job: Job, run_times: list[datetime]) -> None:
        # On the scheduler's thread, before it moves the job's next run time on.
        grace = (
            timedelta(seconds=job.misfire_grace_time)
            if job.misfire_grace_time is not None
            else None
        )
        decisions = []
        for run_time in run_times:
            try:
                decisions.append(self.gate.admit(job.id, run_time, grace))
            except SQLAlchemyError as exc:
                log.error(
                    "job %s for %s: not run, the database did not answer: %s",
                    job.id,
                    show(run_time),
                    exc,
                )
                decisions.append(SKIP)
        future = self._pool.submit(self._run, job, run_times, decisions)
        future.add_done_callback(self._done(job.id))

    def _run(
        self, job: Job, run_times: list[datetime], decisions: list[str]
    ) -> list[JobExecutionEvent]:
        events: list[JobExecutionEvent] = []
        for run_time, decision in zip(run_times, decisions, strict=True):
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
        """Start again the runs that stopped half-way with their runner (see the module)."""
        for row in self.gate.left_behind():
            where = f"job {row.job_id} for {show(row.scheduled_for)}"
            job: Any = scheduler.get_job(row.job_id)
            if job is None:
                self.gate.abandon(row, f"its runner {short(row.runner)} stopped; no such job now")
                continue
            grace = job.misfire_grace_time
            if grace is not None and datetime.now(UTC) - row.scheduled_for > timedelta(
                seconds=grace
            ):
                log.warning(
                    "%s: stopped with %s and is too late to resume", where, short(row.runner)
                )
                self.gate.abandon(
                    row, f"its runner {short(row.runner)} stopped; too late to resume"
                )
                continue
            if not resumable(row.job_id):
                log.warning(
                    "%s: stopped with %s; not safe to resume, left as it is",
                    where,
                    short(row.runner),
                )
                continue
            try:
                self.submit_job(job, [row.scheduled_for])
            except MaxInstancesReachedError:
                log.info("%s: not resumed now, the job is running here", where)

    def shutdown(self, wait: bool = True) -> None:
        super().shutdown(wait)
        self.gate.close()
