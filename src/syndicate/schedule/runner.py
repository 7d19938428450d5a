"""`syndicate run`: APScheduler 3 with its job store in syndicate's own database.

Coalescing and a misfire grace time mean a weekly digest missed while the machine was
down runs once when it comes back (within the grace time), not once per missed week.
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger

from syndicate.config import Config, JobSchedule
from syndicate.schedule.triggers import next_run, trigger

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


def build_scheduler(config: Config, **scheduler_options: Any) -> BackgroundScheduler:
    scheduler = BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(url=config.database_url)},
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


def run_forever(config: Config, stop: threading.Event | None = None) -> None:
    """Run the jobs until SIGINT or SIGTERM (or `stop` is set); let a running job finish."""
    stop = stop or threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received signal %d; stopping after the running job", signum)
        stop.set()

    # Before anything else: a stop asked for during start-up is a clean stop too.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    scheduler = build_scheduler(config)
    scheduler.start(paused=True)
    sync_jobs(scheduler, config)
    for job in scheduler.get_jobs():
        log.info("job %s: next run %s", job.id, job.next_run_time)
    scheduler.resume()
    try:
        stop.wait()
    finally:
        scheduler.shutdown(wait=True)
