"""Tables that let several processes share the work: batches of a send that any worker
may take (syndicate.delivery.batches), the scheduler's lease (one active scheduler at a
time) and the record of each scheduled job run (a run happens once for its time)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from syndicate.store.models import Base, UTCDateTime, utcnow


class DeliveryBatch(Base):
    """Up to delivery.batch subscribers of one issue: those with ids in (after_id, last_id]
    who are still eligible when a worker takes the batch. Claimed by one worker at a time
    (claimed_by/claimed_until), so a task delivered twice sends its batch once."""

    __tablename__ = "delivery_batches"

    QUEUED = "queued"
    SENDING = "sending"
    DONE = "done"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    issue_id: Mapped[int] = mapped_column(ForeignKey("digest_issues.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    after_id: Mapped[int] = mapped_column(Integer)
    last_id: Mapped[int] = mapped_column(Integer)
    # Readers waiting in the range when it was planned (for progress; some may leave).
    readers: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(20), default=QUEUED)
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Why the batch stopped, when it did not finish (the transport failed, unreachable).
    error: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (
        UniqueConstraint("issue_id", "number", name="uq_delivery_batches_number"),
        Index("ix_delivery_batches_status", "issue_id", "status"),
    )


class SchedulerLease(Base):
    """Who runs the scheduled jobs: the holder renews the lease while it lives; another
    `syndicate run` takes it over when it lapses."""

    __tablename__ = "scheduler_leases"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    holder: Mapped[str] = mapped_column(String(100))
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class JobRun(Base):
    """One run of a scheduled job for one scheduled time: inserted before the job starts,
    so a second scheduler (or a restarted one) never runs it again for that time. Its
    runner renews heartbeat_at while the job runs (every third of takeover_after), so
    another scheduler can tell a run that goes on from one left behind."""

    __tablename__ = "job_runs"

    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"

    job_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    scheduled_for: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    runner: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20), default=RUNNING)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error: Mapped[str] = mapped_column(Text, default="")
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class DigestLock(Base):
    """One row per digest, locked (UPDATE) by whoever plans its next issues, so two
    planners never give one reader the same review in two issues."""

    __tablename__ = "digest_locks"

    digest: Mapped[str] = mapped_column(String(100), primary_key=True)
    holder: Mapped[str] = mapped_column(String(100), default="")
    locked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
