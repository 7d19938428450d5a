"""`syndicate run`: APScheduler 3 with its job store in syndicate's own database.

Coalescing and a misfire grace time mean a weekly digest missed while the machine was
down runs once when it comes back (within the grace time), not once per missed week.

Several `syndicate run` may share one database: the one holding the scheduler lease
(leader.py) runs APScheduler, the others wait as standbys without starting it. A standby
that gets the lease starts the scheduler, and a run that fell due during the handover is
still due in the shared job store, so it runs then, once. A process that loses the lease
pauses its scheduler at once. Every run passes the `job_runs` gate (runs.py), so a job
never runs twice for one scheduled time, even in the moment two processes overlap.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from apscheduler.job import Job
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from syndicate.config import Config, JobSchedule
from syndicate.schedule.leader import LEASE_NAME, Elector, Lease, database_now, short, why
from syndicate.schedule.runs import OncePerRunTime, RunGate
from syndicate.schedule.triggers import next_run, trigger
from syndicate.store import JobRun, SchedulerLease, Store

log = logging.getLogger("syndicate.schedule")

JOBS_MODULE = "syndicate.schedule.jobs"


@dataclass(frozen=True)
class PlannedJob:
    id: str
    func: str
    args: tuple[str, ...]
    schedule: JobSchedule


def planned_jobs(config: Config) -> list[PlannedJob]:
    path = str(config.path.resolve())
    jobs = []
    if config.schedules.gather:
        jobs.append(
            PlannedJob("gather", f"{JOBS_MODULE}:gather_job", (path,), config.schedules.gather)
        )
    if config.schedules.feeds:
        jobs.append(
            PlannedJob("feeds", f"{JOBS_MODULE}:feeds_job", (path,), config.schedules.feeds)
        )
    for name, schedule in config.schedules.digests.items():
        jobs.append(
            PlannedJob(f"digest:{name}", f"{JOBS_MODULE}:digest_job", (path, name), schedule)
        )
    return jobs


def next_runs(
    config: Config, now: datetime | None = None
) -> list[tuple[PlannedJob, datetime | None]]:
    now = now or datetime.now(UTC)
    return [(job, next_run(job.schedule, config.timezone, now)) for job in planned_jobs(config)]


class LeaderJobStore(SQLAlchemyJobStore):
    """The shared job store, read for due jobs only while this process holds the lease.

    The runner pauses the scheduler when the lease is lost; this closes the moment between
    the two, so a process that has just lost the lease never moves a job's next run time
    on (which would take the run away from the process that took over).
    """

    def __init__(self, elector: Elector, **options: Any) -> None:
        super().__init__(**options)
        self.elector = elector

    def get_due_jobs(self, now: datetime) -> list[Job]:
        return super().get_due_jobs(now) if self.elector.holds() else []

    def get_next_run_time(self) -> datetime | None:
        # Not holding: nothing to wake up for (a past time would make the scheduler spin).
        return super().get_next_run_time() if self.elector.holds() else None


class Scheduler(BackgroundScheduler):
    """APScheduler's background scheduler, whose thread outlives a database that does not
    answer while it moves a job's next run time on (APScheduler lets that error end the
    thread, and with it every later run, while the lease is still held)."""

    def _process_jobs(self) -> float | None:
        try:
            return super()._process_jobs()  # type: ignore[no-any-return]
        except SQLAlchemyError as exc:
            # The job stays due in the store: the next look submits it again, and the
            # job_runs gate keeps it to one run for its time.
            log.error(
                "scheduler: the database did not answer while updating the job store (%s); "
                "looking again in %d s",
                why(exc),
                self.jobstore_retry_interval,
            )
            return float(self.jobstore_retry_interval)


def build_scheduler(
    config: Config,
    *,
    store: Store | None = None,
    elector: Elector | None = None,
    **scheduler_options: Any,
) -> BackgroundScheduler:
    """The scheduler, its job store in the database, every run through the job_runs gate.

    With an `elector`, jobs are taken from the store only while it holds the lease, runs
    are recorded under its name, and its thread renews their heartbeat (without one, as in
    tests, nothing does: a run looks left behind to others after takeover_after); `store`
    is the syndicate store to record them in (else one is opened, and closed when the
    scheduler shuts down).
    """
    gate = RunGate(
        store or Store(config.database_url, upgrade=False),
        runner=elector.me if elector else None,
        owns_store=store is None,
        takeover_after=config.schedules.takeover_after,
    )
    if elector:
        elector.also(gate.beat)
    jobstore = (
        LeaderJobStore(elector, url=config.database_url)
        if elector
        else SQLAlchemyJobStore(url=config.database_url)
    )
    scheduler = Scheduler(
        jobstores={"default": jobstore},
        executors={"default": OncePerRunTime(gate)},
        job_defaults={
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": int(config.schedules.misfire_grace.total_seconds()),
        },
        timezone=config.timezone,
        **scheduler_options,
    )
    return scheduler


def _timing(job_trigger: BaseTrigger) -> tuple[str, str]:
    # str() gives the cron fields or the interval, without an interval's start time.
    return str(job_trigger), str(getattr(job_trigger, "timezone", None))


def sync_jobs(scheduler: BackgroundScheduler, config: Config) -> None:
    """Make the persistent job store match the YAML: add or update jobs, drop removed ones.

    A job whose timing did not change keeps its stored next run time, so a run that fell
    due while syndicate was stopped still happens (once, within the misfire grace time).
    """
    wanted = planned_jobs(config)
    stored = {job.id: job for job in scheduler.get_jobs()}
    for job in wanted:
        new_trigger = trigger(job.schedule, config.timezone)
        options: dict[str, Any] = {}
        old = stored.get(job.id)
        if old is not None and old.next_run_time and _timing(old.trigger) == _timing(new_trigger):
            options["next_run_time"] = old.next_run_time
        scheduler.add_job(
            job.func,
            new_trigger,
            args=job.args,
            id=job.id,
            name=job.id,
            replace_existing=True,
            **options,
        )
    for stale in scheduler.get_jobs():
        if stale.id not in {job.id for job in wanted}:
            log.info("removing job %s: no longer in the config", stale.id)
            stale.remove()


TICK = 0.2  # seconds: how often the runner compares what it does with what the lease says


def run_forever(config: Config, stop: threading.Event | None = None) -> None:
    """Run the jobs while this process holds the scheduler lease, wait as a standby while
    another does, until SIGINT or SIGTERM (or `stop` is set); let a running job finish and
    give the lease up on the way out."""
    stop = stop or threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received signal %d; stopping after the running job", signum)
        stop.set()

    # Before anything else: a stop asked for during start-up is a clean stop too.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    store = Store(config.database_url, upgrade=False)
    elector = Elector(Lease(store, config.schedules.takeover_after))
    elector.start()
    scheduler: BackgroundScheduler | None = None
    active = False
    retry_at = 0.0
    look_at = 0.0  # for runs left behind (resume_left_behind), while active
    try:
        while not stop.is_set():
            holds = elector.holds()
            if holds and not active and time.monotonic() >= retry_at:
                scheduler = scheduler or build_scheduler(config, store=store, elector=elector)
                try:
                    _activate(scheduler, config)
                    active = True
                    look_at = time.monotonic() + elector.renew_every
                except Exception as exc:  # the database went away while starting: retry
                    log.error("scheduler: could not start the jobs: %s", exc)
                    if scheduler.running:
                        scheduler.pause()
                    retry_at = time.monotonic() + elector.renew_every
            elif active and holds and time.monotonic() >= look_at:
                # A runner on another machine stops heartbeating its run only after we
                # took over: look again every third of takeover_after.
                assert scheduler is not None
                look_at = time.monotonic() + elector.renew_every
                try:
                    _executor(scheduler).resume_left_behind(scheduler)
                except SQLAlchemyError as exc:
                    log.warning("scheduler: could not look for runs left behind: %s", why(exc))
            elif active and not holds:
                assert scheduler is not None
                scheduler.pause()
                active = False
                log.warning(
                    "scheduler: lost the lease (%s); jobs paused, back to standby",
                    elector.reason or "not renewed in time",
                )
            stop.wait(TICK)
    finally:
        try:
            if scheduler is not None and scheduler.running:
                scheduler.shutdown(wait=True)  # the lease is kept renewed while a job finishes
        finally:
            elector.stop(release=True)
            store.close()


def _activate(scheduler: BackgroundScheduler, config: Config) -> None:
    """Start (or resume) the jobs: this process has just got the lease."""
    if not scheduler.running:
        scheduler.start(paused=True)
    sync_jobs(scheduler, config)
    for job in scheduler.get_jobs():
        log.info("job %s: next run %s", job.id, job.next_run_time)
    _executor(scheduler).resume_left_behind(scheduler)
    scheduler.resume()


def _executor(scheduler: BackgroundScheduler) -> OncePerRunTime:
    executor = scheduler._lookup_executor("default")
    assert isinstance(executor, OncePerRunTime)
    return executor


def scheduler_status(config: Config, last: int = 10) -> list[str]:
    """For `syndicate schedule`: who holds the scheduler lease, and the last job runs.
    Nothing when there is no database yet (an SQLite file is not created for this)."""
    url = make_url(config.database_url)
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
        return []
    try:
        with Store(config.database_url, upgrade=False) as store, store.session() as session:
            now = database_now(session)
            lease = session.get(SchedulerLease, LEASE_NAME)
            runs = session.scalars(
                select(JobRun).order_by(JobRun.started_at.desc()).limit(last)
            ).all()
    except SQLAlchemyError as exc:  # not migrated yet, or unreachable
        return [f"Scheduler: unknown ({why(exc)})"]
    zone = config.timezone
    if lease is None:
        lines = ["Scheduler: no `syndicate run` has held the lease yet."]
    elif lease.expires_at >= now:
        lines = [
            f"Scheduler: active on {short(lease.holder)} since "
            f"{lease.acquired_at.astimezone(zone):%Y-%m-%d %H:%M:%S %Z}, lease until "
            f"{lease.expires_at.astimezone(zone):%H:%M:%S %Z}."
        ]
    else:
        lines = [
            f"Scheduler: none active; the last was {short(lease.holder)}, whose lease ended "
            f"{lease.expires_at.astimezone(zone):%Y-%m-%d %H:%M:%S %Z}."
        ]
    if runs:
        lines.append("Last runs:")
        width = max(len(run.job_id) for run in runs)
        for run in runs:
            took = (
                f"{(run.finished_at - run.started_at).total_seconds():.0f}s"
                if run.finished_at
                else "-"
            )
            error = f"  {run.error.splitlines()[0]}" if run.error else ""
            lines.append(
                f"  {run.job_id:<{width}}  for {run.scheduled_for.astimezone(zone):%Y-%m-%d %H:%M %Z}"
                f"  {run.status:<7}  {took:>5}  on {short(run.runner)}{error}"
            )
    return lines
