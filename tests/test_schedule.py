"""The schedule: `syndicate schedule`, APScheduler with its job store, and `syndicate run`.

The scheduler tests use the real BackgroundScheduler and SQLAlchemy job store on the
site's SQLite database, with jobs due within a second, and look at what the jobs leave
behind (feeds, outbox emails, digest issues). DST cases pass a fixed "now" to next_runs.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import feedparser
import pytest
from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MISSED,
    EVENT_JOB_SUBMITTED,
)
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import create_engine, text

from syndicate.config import Config
from syndicate.schedule.runner import build_scheduler, next_runs, sync_jobs
from syndicate.store import Store
from tests.conftest import Site

LONDON = ZoneInfo("Europe/London")
WAIT = 15.0  # seconds: the longest any test waits for a job (generous: CI machines are busy)


def set_schedules(site: Site, schedules: str) -> None:
    """Replace the config's `schedules` section (given unindented)."""
    config = site.config_path.read_text(encoding="utf-8")
    head, _, _ = config.partition("schedules:\n")
    site.write_config(
        head + "schedules:\n" + textwrap.indent(textwrap.dedent(schedules).strip(), "  ") + "\n"
    )


def edit_config(site: Site, old: str, new: str) -> None:
    config = site.config_path.read_text(encoding="utf-8")
    assert config.count(old) == 1, f"{old!r} should appear once in the config"
    site.write_config(config.replace(old, new))


def open_database(site: Site) -> Config:
    """Create the site's database (as `syndicate run` does before starting the scheduler)."""
    config = site.config
    Store(config.database_url).close()
    return config


def london(year: int, month: int, day: int, hour: int) -> datetime:
    return datetime(year, month, day, hour, tzinfo=LONDON)


def upcoming(weekday: int, hour: int, zone: ZoneInfo, after: datetime) -> datetime:
    """The first wall-clock `weekday` (Monday=0) at `hour`:00 in `zone` strictly after `after`."""
    local = after.astimezone(zone)
    for days in range(8):
        day = (local + timedelta(days=days)).date()
        candidate = datetime(day.year, day.month, day.day, hour, tzinfo=zone)
        if candidate.weekday() == weekday and candidate > after:
            return candidate
    raise AssertionError("no such day within a week")


class Starter(Protocol):
    def __call__(self, config: Config, sync: bool = True) -> BackgroundScheduler: ...


@pytest.fixture
def scheduler(site: Site) -> Iterator[Starter]:
    """Start schedulers the way `syndicate run` does (paused, synced, resumed); stop them all."""
    started: list[BackgroundScheduler] = []

    def start(config: Config, sync: bool = True) -> BackgroundScheduler:
        made = build_scheduler(config)
        made.start(paused=True)
        started.append(made)
        if sync:
            sync_jobs(made, config)
        return made

    yield start
    for made in started:
        if made.running:
            made.resume()  # a paused scheduler may not be shut down with due jobs
            made.shutdown(wait=True)


FINISHED = EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED


def job_events(scheduler: BackgroundScheduler, mask: int = FINISHED) -> queue.Queue[Any]:
    """A queue of the scheduler's job events of the kinds in `mask`, as they happen."""
    events: queue.Queue[Any] = queue.Queue()
    scheduler.add_listener(events.put, mask)
    return events


def wait_for(events: queue.Queue[Any], job_id: str) -> Any:
    deadline = time.monotonic() + WAIT
    while (left := deadline - time.monotonic()) > 0:
        try:
            event = events.get(timeout=left)
        except queue.Empty:
            break
        if event.job_id == job_id:
            assert getattr(event, "exception", None) is None, f"{job_id}: {event.traceback}"
            return event
    raise AssertionError(f"no event for job {job_id} within {WAIT} s")


def stored_job_ids(config: Config) -> list[str]:
    engine = create_engine(config.database_url)
    try:
        with engine.connect() as conn:
            return list(conn.scalars(text("SELECT id FROM apscheduler_jobs ORDER BY id")))
    finally:
        engine.dispose()


def pretend_stopped(config: Config, job_id: str, due: datetime) -> None:
    """Rewrite a stored job's next run time, as if syndicate had been down since before `due`."""
    store = SQLAlchemyJobStore(url=config.database_url)
    store.start(BackgroundScheduler(timezone=config.timezone), "default")
    try:
        job = store.lookup_job(job_id)
        assert job is not None, f"{job_id} is not in the job store"
        job.__setstate__({**job.__getstate__(), "next_run_time": due})
        store.update_job(job)
    finally:
        store.shutdown()


# --- `syndicate schedule` and next run times ------------------------------------------------


def test_schedule_lists_each_job_with_its_trigger_and_next_local_run(site: Site) -> None:
    set_schedules(
        site,
        """
        gather: {interval: 30m}
        feeds: {cron: "15 * * * *"}
        digests:
          weekly: {cron: "0 8 * * fri"}
        """,
    )
    before = datetime.now(UTC)
    out = site.cli("schedule").output
    after = datetime.now(UTC)

    rows = {}
    for line in out.partition("\n\n")[0].splitlines():  # then the scheduler's state
        match = re.match(r"(\S+)\s+next (\d{4}-\d\d-\d\d \d\d:\d\d) (\w+)\s+\((.+)\)$", line)
        assert match, f"unexpected line: {line!r}"
        job, when, zone, how = match.groups()
        rows[job] = (datetime.strptime(when, "%Y-%m-%d %H:%M"), zone, how)
    assert set(rows) == {"gather", "feeds", "digest:weekly"}

    friday = upcoming(4, 8, LONDON, before)
    when, zone, how = rows["digest:weekly"]
    assert "0 8 * * fri" in how
    assert (when, zone) == (friday.replace(tzinfo=None), friday.tzname())

    when, zone, how = rows["feeds"]
    assert "15 * * * *" in how
    local_now = before.astimezone(LONDON).replace(tzinfo=None)
    assert when.minute == 15 and timedelta(0) < when - local_now <= timedelta(hours=1)
    assert zone in ("GMT", "BST")

    when, zone, how = rows["gather"]
    assert "0:30:00" in how or "30m" in how
    earliest = (before + timedelta(minutes=29)).astimezone(LONDON).replace(tzinfo=None)
    latest = (after + timedelta(minutes=30)).astimezone(LONDON).replace(tzinfo=None)
    assert earliest <= when <= latest


def test_schedule_without_jobs_says_how_to_add_them(site: Site) -> None:
    config = site.config_path.read_text(encoding="utf-8")
    site.write_config(config.partition("schedules:\n")[0])
    out = site.cli("schedule").output
    assert "No jobs are scheduled" in out and "schedules" in out


@pytest.mark.parametrize(
    ("now", "expected_local", "expected_utc"),
    [
        # The week the clocks go back (25 October 2026): 08:00 BST, then 08:00 GMT.
        (london(2026, 10, 22, 12), london(2026, 10, 23, 8), datetime(2026, 10, 23, 7, tzinfo=UTC)),
        (london(2026, 10, 23, 9), london(2026, 10, 30, 8), datetime(2026, 10, 30, 8, tzinfo=UTC)),
        # The week they go forward (29 March 2026).
        (london(2026, 3, 27, 9), london(2026, 4, 3, 8), datetime(2026, 4, 3, 7, tzinfo=UTC)),
    ],
    ids=["before-dst-end", "across-dst-end", "across-dst-start"],
)
def test_a_weekly_cron_stays_at_local_time_across_dst(
    site: Site, now: datetime, expected_local: datetime, expected_utc: datetime
) -> None:
    runs = {job.id: when for job, when in next_runs(site.config, now)}
    when = runs["digest:weekly"]
    assert when is not None
    assert when == expected_utc  # the same instant...
    local = when.astimezone(LONDON)
    assert (local.weekday(), local.hour, local.minute) == (4, 8, 0)  # ...Friday 08:00 in London
    assert local.utcoffset() == expected_local.utcoffset()
    # An interval job's first run is one interval after the start.
    assert runs["gather"] == now + timedelta(minutes=30)


def test_a_digest_can_keep_time_in_its_own_zone(site: Site) -> None:
    set_schedules(
        site,
        """
        digests:
          weekly: {cron: "0 8 * * fri", timezone: America/New_York}
        """,
    )
    # 30 October 2026: London is back on GMT, New York still on EDT (until 1 November).
    [(job, when)] = next_runs(site.config, london(2026, 10, 26, 12))
    assert job.id == "digest:weekly" and when is not None
    assert when.astimezone(ZoneInfo("America/New_York")).hour == 8
    assert when.astimezone(LONDON) == london(2026, 10, 30, 12)


# --- the scheduler and its job store ----------------------------------------------------------


def test_due_jobs_run_in_the_background_and_their_work_is_visible(
    site: Site, scheduler: Starter
) -> None:
    set_schedules(
        site,
        """
        gather: {interval: 1s}
        digests:
          weekly: {cron: "0 8 * * fri"}
        """,
    )
    site.cli("subscribers", "import", "subscribers.csv")
    config = open_database(site)
    running = scheduler(config)
    events = job_events(running)
    running.resume()

    wait_for(events, "gather")
    # The gather job publishes the feeds as soon as it finds new reviews.
    feed = feedparser.parse((site.public / "feed.xml").read_bytes())
    assert feed.bozo == 0 and len(feed.entries) == 10

    # Friday 08:00 comes early: the digest job sends the issue to every subscriber.
    running.modify_job("digest:weekly", next_run_time=datetime.now(UTC))
    wait_for(events, "digest:weekly")
    assert len(site.emails()) == 6
    # ...and is back to waiting for next Friday.
    next_time = running.get_job("digest:weekly").next_run_time.astimezone(LONDON)
    assert (next_time.weekday(), next_time.hour) == (4, 8)
    assert next_time > datetime.now(UTC)


def test_jobs_persist_and_a_changed_config_replaces_and_removes_them(
    site: Site, scheduler: Starter
) -> None:
    set_schedules(
        site,
        """
        gather: {interval: 30m}
        feeds: {cron: "15 * * * *"}
        digests:
          weekly: {cron: "0 8 * * fri"}
        """,
    )
    config = open_database(site)
    scheduler(config).shutdown()

    # A restart finds the jobs in the database before the YAML is read again.
    restarted = scheduler(config, sync=False)
    assert sorted(job.id for job in restarted.get_jobs()) == ["digest:weekly", "feeds", "gather"]
    restarted.shutdown()

    # The editor moves the digest to Monday, gathers more often and drops the feeds job.
    set_schedules(
        site,
        """
        gather: {interval: 10m}
        digests:
          weekly: {cron: "0 9 * * mon"}
        """,
    )
    changed = site.config
    for _ in range(2):  # two restarts with the new YAML
        scheduler(changed).shutdown()

    assert stored_job_ids(changed) == ["digest:weekly", "gather"]
    final = scheduler(changed)
    jobs = {job.id: job for job in final.get_jobs()}
    assert jobs["gather"].trigger.interval == timedelta(minutes=10)
    monday = jobs["digest:weekly"].next_run_time.astimezone(LONDON)
    assert (monday.weekday(), monday.hour, monday.minute) == (0, 9, 0)
    assert monday == upcoming(0, 9, LONDON, datetime.now(UTC))


@pytest.mark.parametrize(
    ("grace", "issues"),
    [("8d", 1), ("1h", 0)],
    ids=["within-grace-runs-once", "beyond-grace-skipped"],
)
def test_a_weekly_digest_missed_during_downtime_runs_once_within_the_grace_time(
    site: Site, scheduler: Starter, grace: str, issues: int
) -> None:
    set_schedules(
        site,
        f"""
        misfire_grace: {grace}
        digests:
          weekly: {{cron: "0 8 * * fri"}}
        """,
    )
    # Every run sends an issue, so each run that happens shows up as one.
    edit_config(site, '    subject: "{{ digest.title }}: {{ featured.title }}"\n', "")
    edit_config(site, "first_issue_since: 2026-01-01", "send_when_empty: true")
    site.cli("subscribers", "import", "subscribers.csv")
    config = open_database(site)
    scheduler(config).shutdown()

    # Syndicate was stopped four weeks before the last Friday 08:00 and is started now.
    now = datetime.now(UTC)
    last_friday = upcoming(4, 8, LONDON, now - timedelta(days=7))
    pretend_stopped(config, "digest:weekly", last_friday - timedelta(weeks=4))

    restarted = scheduler(config)
    submitted = job_events(restarted, EVENT_JOB_SUBMITTED)
    finished = job_events(restarted)
    restarted.resume()
    # Five Fridays were missed; the job is handed over once, for the latest of them.
    assert wait_for(submitted, "digest:weekly").scheduled_run_times == [last_friday]
    restarted.shutdown(wait=True)  # lets the job finish

    outcome = wait_for(finished, "digest:weekly")
    assert outcome.code == (EVENT_JOB_EXECUTED if issues else EVENT_JOB_MISSED)
    assert finished.empty()
    status = site.cli("digest", "status", "weekly").output
    assert len(re.findall(r"^#\d+ ", status, re.MULTILINE)) == issues, status
    assert len(site.emails()) == 6 * issues
    # Either way the job waits for next Friday, not for another missed one.
    again = scheduler(config)
    next_time = again.get_job("digest:weekly").next_run_time
    assert next_time == upcoming(4, 8, LONDON, now)


# --- `syndicate run` ---------------------------------------------------------------------------


def syndicate_command() -> list[str]:
    script = Path(sys.executable).with_name("syndicate")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from syndicate.cli import main; main()"]


def test_syndicate_run_gathers_on_schedule_and_stops_cleanly_on_sigterm(site: Site) -> None:
    set_schedules(
        site,
        """
        gather: {interval: 1s}
        digests:
          weekly: {cron: "0 8 * * fri"}
        """,
    )
    env = {k: v for k, v in os.environ.items() if k != "SYNDICATE_CONFIG"}
    process = subprocess.Popen(
        [*syndicate_command(), "run"],
        cwd=site.root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        feed = site.public / "feed.xml"
        deadline = time.monotonic() + 3 + WAIT  # start-up (imports) plus the 1 s interval
        while not feed.exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        assert feed.exists(), "`syndicate run` wrote no feed"

        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=WAIT)  # stops within a few seconds
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    assert process.returncode == 0, stderr
    assert "scheduler running" in stdout
    assert "gather: 10 new" in stderr
    assert "Traceback" not in stderr
    assert len(feedparser.parse(feed.read_bytes()).entries) == 10


def test_syndicate_run_refuses_to_start_without_the_digest_secret(site: Site) -> None:
    # Otherwise the first digest job, days later, would be the first to notice.
    env = {k: v for k, v in os.environ.items() if k not in ("SYNDICATE_CONFIG", "SYNDICATE_SECRET")}
    done = subprocess.run(
        [*syndicate_command(), "run"],
        cwd=site.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT + 5,
    )
    assert done.returncode == 1
    assert "SYNDICATE_SECRET" in done.stderr and "not set" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (site.root / "var" / "syndicate.db").exists()
