"""APScheduler triggers built from the YAML's `schedules` section."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from syndicate.config import JobSchedule


def trigger(schedule: JobSchedule, default_zone: ZoneInfo) -> BaseTrigger:
    zone = ZoneInfo(schedule.timezone) if schedule.timezone else default_zone
    if schedule.cron is not None:
        # Cron fields are wall-clock times in the zone, so DST moves nothing by an hour.
        return CronTrigger.from_crontab(schedule.cron, timezone=zone)
    assert schedule.interval is not None
    return IntervalTrigger(seconds=int(schedule.interval.total_seconds()), timezone=zone)


def next_run(schedule: JobSchedule, default_zone: ZoneInfo, now: datetime) -> datetime | None:
    """When the job would first run if the scheduler started at `now`, in its zone."""
    if schedule.interval is not None:
        # An interval job first runs one interval after the start (the trigger itself
        # would count from the real clock, not from `now`).
        zone = ZoneInfo(schedule.timezone) if schedule.timezone else default_zone
        return (now + schedule.interval).astimezone(zone)
    return trigger(schedule, default_zone).get_next_fire_time(None, now)


def job_period(schedule: JobSchedule, default_zone: ZoneInfo) -> timedelta:
    """The usual time between two runs: a week for `0 8 * * fri`, a day for `0 7 * * *`."""
    if schedule.interval is not None:
        return schedule.interval
    # Measured from a fixed winter date so DST cannot stretch or shrink the answer.
    start = datetime(2026, 1, 5, tzinfo=default_zone)
    job = trigger(schedule, default_zone)
    first = job.get_next_fire_time(None, start)
    second = job.get_next_fire_time(first, first + timedelta(seconds=1)) if first else None
    if first is None or second is None:
        return timedelta(days=7)
    return second - first
