"""One active scheduler among several `syndicate run` processes: a lease in the database.

The lease is one row of `scheduler_leases` (name "scheduler"): who holds it ("host:pid:
nonce", from `owner_name()`) and until when. Every statement that changes it is a
conditional UPDATE or a plain INSERT, which behave alike on SQLite and PostgreSQL:

- the holder renews it every third of `schedules.takeover_after` with `UPDATE ... WHERE
  holder = me`;
- any other process reads the row and takes it with `UPDATE ... WHERE holder = <the holder
  it read> AND expires_at < now` once it has lapsed, or at once (without the time
  condition) when the holder was a process on this machine that no longer runs
  (`died_here`); a holder that renewed in between no longer matches, and of two processes
  taking it at once the second matches nothing (PostgreSQL re-checks the WHERE clause after
  the first one's commit; SQLite lets one writer in at a time);
- when there is no row yet, both INSERT it: the primary key lets the first one in and the
  other gets an IntegrityError and stays standby.

Whose clock: on PostgreSQL "now" is the database server's (`CURRENT_TIMESTAMP`), so the
machines' clocks may disagree without moving a takeover; SQLite is one machine, whose
clock every process shares.

A holder must stop running jobs before anyone else may start. `Elector` keeps the lease on
a thread of its own and believes it holds it only until `takeover_after - takeover_after/6`
after the start of its last successful renewal, measured on the monotonic clock, so it gives
up (and the runner pauses the jobs) before any other process can take over, even when the
database hangs instead of answering.

The same thread renews the heartbeat of the jobs this process is running (`Elector.also`,
runs.py), at every try at the lease: at least every third of `takeover_after`, whether
the process holds the lease or not. A job that goes on after the lease was lost is still
this process's run, and its heartbeat says so to the process that took over.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session
from sqlalchemy.sql import text

from syndicate.delivery.ledger import died_here, owner_name
from syndicate.store import SchedulerLease, Store

log = logging.getLogger("syndicate.schedule")

LEASE_NAME = "scheduler"


def database_now(session: Session) -> datetime:
    """The time by the database's clock on PostgreSQL (one clock for every machine)."""
    if session.get_bind().dialect.name == "postgresql":
        now = session.scalar(text("SELECT CURRENT_TIMESTAMP"))
        assert isinstance(now, datetime)
        return now.astimezone(UTC)
    return datetime.now(UTC)


def short(holder: str | None) -> str:
    """'host:pid' of a 'host:pid:nonce' holder, as the logs show it."""
    if not holder:
        return "nobody"
    host, _, rest = holder.partition(":")
    return f"{host}:{rest.partition(':')[0]}"


def show_time(when: datetime | None) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if when else "?"


@dataclass(frozen=True)
class Attempt:
    """What one try to acquire or renew the lease found."""

    held: bool
    holder: str | None  # who holds it now (us when held); None: nobody yet
    expires_at: datetime | None
    now: datetime | None = None  # by the clock the lease is kept with
    previous: str | None = None  # held: the process we took it from
    previous_until: datetime | None = None
    previous_stopped: bool = False  # ...which no longer runs on this machine
    renewed: bool = False


class Lease:
    """The lease row, for one holder (this process unless `holder` is given)."""

    def __init__(
        self, store: Store, length: timedelta, holder: str | None = None, name: str = LEASE_NAME
    ) -> None:
        self.store = store
        self.length = length
        self.me = holder or owner_name()
        self.name = name

    def acquire(self) -> Attempt:
        """Renew the lease if we hold it, else take it if it is free, lapsed, or held by a
        process on this machine that has stopped. Database errors are the caller's."""
        try:
            with self.store.session() as session:
                return self._acquire(session)
        except IntegrityError:
            # Another process inserted the first lease row at the same moment, and won.
            return self.look()

    def _acquire(self, session: Session) -> Attempt:
        now = database_now(session)
        until = now + self.length
        mine = SchedulerLease.name == self.name
        if self._update(session, mine, SchedulerLease.holder == self.me, expires_at=until):
            return Attempt(True, self.me, until, now, renewed=True)
        row = self._read(session)
        if row is None:
            session.add(
                SchedulerLease(name=self.name, holder=self.me, acquired_at=now, expires_at=until)
            )
            session.flush()  # an IntegrityError here: another process's row came first
            return Attempt(True, self.me, until, now)
        holder, expires_at = row
        stopped = died_here(holder)
        if not stopped and expires_at >= now:
            return Attempt(False, holder, expires_at, now)
        conditions = [mine, SchedulerLease.holder == holder]
        if not stopped:
            conditions.append(SchedulerLease.expires_at < now)
        if self._update(session, *conditions, holder=self.me, acquired_at=now, expires_at=until):
            return Attempt(True, self.me, until, now, holder, expires_at, stopped)
        # Someone else was quicker (or the holder renewed just now): standby.
        current = self._read(session)
        return Attempt(False, *(current or (None, None)), now)

    def _read(self, session: Session) -> tuple[str, datetime] | None:
        row = session.execute(
            select(SchedulerLease.holder, SchedulerLease.expires_at).where(
                SchedulerLease.name == self.name
            )
        ).one_or_none()
        return (row.holder, row.expires_at) if row is not None else None

    @staticmethod
    def _update(session: Session, *conditions: object, **values: object) -> bool:
        result = session.execute(
            update(SchedulerLease)
            .where(*conditions)  # type: ignore[arg-type]
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        return result.rowcount == 1  # type: ignore[attr-defined]

    def look(self) -> Attempt:
        """Who holds the lease, without trying to take it."""
        with self.store.session() as session:
            now = database_now(session)
            row = session.get(SchedulerLease, self.name)
            if row is None:
                return Attempt(False, None, None, now)
            live = row.expires_at >= now
            return Attempt(row.holder == self.me and live, row.holder, row.expires_at, now)

    def release(self) -> bool:
        """Give the lease up (a clean stop), so a standby takes over at its next look."""
        with self.store.session() as session:
            now = database_now(session)
            return self._update(
                session,
                SchedulerLease.name == self.name,
                SchedulerLease.holder == self.me,
                expires_at=now,
            )


class Elector:
    """Holds the lease on a background thread for as long as it can.

    `holds()` is what the runner asks, often and cheaply: it is answered from memory, and
    turns false by itself when renewals stop succeeding, before the lease can lapse.
    """

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self.me = lease.me
        length = lease.length.total_seconds()
        self.length = length
        self.renew_every = length / 3
        # A standby looks more often, to notice a stopped holder on this machine quickly.
        self.look_every = min(length / 3, max(0.25, length / 12))
        self.margin = length / 6
        self.reason = ""  # why we do not hold the lease (for the runner's log line)
        self._held_until = 0.0  # monotonic
        self._holding = False
        self._shown_holder: str | None = None
        self._problem = ""
        self._tasks: list[Callable[[], None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="syndicate-lease", daemon=True)

    def also(self, task: Callable[[], None]) -> None:
        """Call `task` on the lease thread after every try at the lease (held or not, the
        database answering or not): at least every third of the lease's length."""
        self._tasks.append(task)

    def holds(self) -> bool:
        return time.monotonic() < self._held_until

    def start(self) -> None:
        self._thread.start()

    def stop(self, release: bool = True) -> None:
        """Stop renewing; give the lease up if we hold it."""
        self._stop.set()
        self._thread.join(timeout=max(5.0, self.length))
        self._held_until = 0.0
        if release and self._holding:
            try:
                if self.lease.release():
                    log.info("scheduler: released the lease; a standby can take over now")
            except SQLAlchemyError as exc:
                log.warning("scheduler: could not release the lease (%s); it lapses", why(exc))

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            wait = self.look_every
            try:
                attempt = self.lease.acquire()
            except SQLAlchemyError as exc:
                problem = why(exc)
                if problem != self._problem:
                    log.warning(
                        "scheduler: the database did not answer about the lease: %s", problem
                    )
                self._problem = problem
                self.reason = f"no renewal since the database stopped answering: {problem}"
            else:
                if self._problem:
                    log.info("scheduler: the database answers again")
                    self._problem = ""
                self._note(attempt, started)
                if attempt.held:
                    wait = self.renew_every
                elif attempt.expires_at and attempt.now:
                    # Look again just after it lapses, if that comes before the next look.
                    lapses = (attempt.expires_at - attempt.now).total_seconds() + 0.05
                    wait = max(0.05, min(wait, lapses))
            for task in self._tasks:
                try:
                    task()
                except Exception:  # the lease thread must go on whatever a task does
                    log.exception("scheduler: a task on the lease thread failed")
            self._stop.wait(max(0.0, wait - (time.monotonic() - started)))

    def _note(self, attempt: Attempt, started: float) -> None:
        if attempt.held:
            was_active = self.holds()
            self._held_until = started + self.length - self.margin
            if not was_active:
                if attempt.previous:
                    why = (
                        "it no longer runs"
                        if attempt.previous_stopped
                        else f"its lease ran out at {show_time(attempt.previous_until)}"
                    )
                    log.warning("scheduler: took over from %s (%s)", short(attempt.previous), why)
                log.info("scheduler: active (lease held by %s)", short(self.me))
            self._holding = True
            self._shown_holder = self.me
            self.reason = ""
            return
        self._held_until = 0.0
        self._holding = False
        self.reason = f"{short(attempt.holder)} holds it now"
        if attempt.holder != self._shown_holder:
            self._shown_holder = attempt.holder
            log.info(
                "scheduler: standby; active is %s, lease until %s",
                short(attempt.holder),
                show_time(attempt.expires_at),
            )


def why(exc: BaseException) -> str:
    """The first line of a database error, as the logs show it."""
    return str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
