"""The tables. One row per review, subscriber, subscription, digest issue, delivery and
provider event (bounces, opens: what came back).

Times are stored as naive UTC (SQLite has no zones) and always handed back zone-aware.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class UTCDateTime(TypeDecorator[datetime]):
    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"refusing to store a datetime without a zone: {value!r}")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None else None


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Review(Base):
    __tablename__ = "reviews"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    source: Mapped[str] = mapped_column(String(100))
    # Where the review came from inside its source (a relative file path).
    source_key: Mapped[str] = mapped_column(String(1000))
    fingerprint: Mapped[str] = mapped_column(String(64))
    file_mtime_ns: Mapped[int | None] = mapped_column(BigInteger)
    file_size: Mapped[int | None] = mapped_column(BigInteger)

    slug: Mapped[str] = mapped_column(String(200))
    url: Mapped[str] = mapped_column(String(2000))
    title: Mapped[str] = mapped_column(String(500))
    film: Mapped[str | None] = mapped_column(String(500))
    year: Mapped[int | None] = mapped_column(Integer)
    director: Mapped[str | None] = mapped_column(String(500))
    rating: Mapped[float | None] = mapped_column(Float)
    author: Mapped[str | None] = mapped_column(String(500))
    summary: Mapped[str] = mapped_column(Text, default="")
    body_html: Mapped[str] = mapped_column(Text, default="")
    image: Mapped[str | None] = mapped_column(String(2000))
    featured: Mapped[bool] = mapped_column(Boolean, default=False)
    related: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)

    published: Mapped[datetime] = mapped_column(UTCDateTime)
    updated: Mapped[datetime] = mapped_column(UTCDateTime)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A revision readers care about (a new rating or verdict, a correction the editor
    # flagged): readers who got the earlier version see it in an "Updated" section.
    revised_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revision_note: Mapped[str | None] = mapped_column(Text)

    tag_rows: Mapped[list[ReviewTag]] = relationship(
        back_populates="review",
        cascade="all, delete-orphan",
        lazy="selectin",
        order_by="ReviewTag.position",
    )

    __table_args__ = (
        Index("ix_reviews_source_key", "source", "source_key"),
        Index("ix_reviews_published", "published"),
    )

    @property
    def tags(self) -> list[str]:
        return [row.tag for row in self.tag_rows]

    @tags.setter
    def tags(self, tags: list[str]) -> None:
        # Reuse existing rows: deleting and re-inserting the same key in one flush fails.
        existing = {row.tag: row for row in self.tag_rows}
        rows = []
        for position, tag in enumerate(tags):
            row = existing.get(tag) or ReviewTag(tag=tag)
            row.position = position
            rows.append(row)
        self.tag_rows = rows

    @property
    def live(self) -> bool:
        return self.withdrawn_at is None


class ReviewTag(Base):
    __tablename__ = "review_tags"

    review_id: Mapped[str] = mapped_column(
        ForeignKey("reviews.id", ondelete="CASCADE", onupdate="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(200), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, default=0)
    review: Mapped[Review] = relationship(back_populates="tag_rows")

    __table_args__ = (Index("ix_review_tags_tag", "tag"),)


class Subscriber(Base):
    __tablename__ = "subscribers"

    ACTIVE = "active"
    PENDING = "pending"
    # Suppressed states: never mailed again unless explicitly re-added.
    UNSUBSCRIBED = "unsubscribed"
    REMOVED = "removed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(20), default=ACTIVE)
    status_reason: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    status_changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    subscriptions: Mapped[list[Subscription]] = relationship(
        back_populates="subscriber", cascade="all, delete-orphan", lazy="selectin"
    )

    __table_args__ = (Index("ix_subscribers_status", "status"),)

    @property
    def digests(self) -> list[str]:
        return sorted(s.digest for s in self.subscriptions)


class Subscription(Base):
    __tablename__ = "subscriptions"

    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True
    )
    digest: Mapped[str] = mapped_column(String(100), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The reader's rhythm; None: the digest's default from the YAML (syndicate.digest.slots).
    cadence: Mapped[str | None] = mapped_column(String(10))
    send_hour: Mapped[int | None] = mapped_column(Integer)  # local hour, 0-23
    timezone: Mapped[str | None] = mapped_column(String(64))  # IANA name
    subscriber: Mapped[Subscriber] = relationship(back_populates="subscriptions")

    __table_args__ = (Index("ix_subscriptions_digest", "digest", "subscriber_id"),)


class DigestIssue(Base):
    __tablename__ = "digest_issues"

    DRAFT = "draft"  # waiting for an editor's approval (digest approval: true)
    SENDING = "sending"
    SENT = "sent"
    SKIPPED = "skipped"  # an editor dropped the draft; its reviews go to the next issue

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    digest: Mapped[str] = mapped_column(String(100))
    number: Mapped[int] = mapped_column(Integer)
    # Whom it is for: readers of this cadence whose send slot is slot_at (None: instant).
    cadence: Mapped[str | None] = mapped_column(String(10))
    slot_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The issue covers reviews published in (period_start, period_end] not in earlier issues.
    period_start: Mapped[datetime] = mapped_column(UTCDateTime)
    period_end: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    subject: Mapped[str] = mapped_column(String(500))
    preheader: Mapped[str] = mapped_column(String(500), default="")
    # Compiled once per issue, with %%placeholders%% for the per-subscriber values.
    html: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default=SENDING)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A sender claims the issue for a lease so two senders never work on it at once.
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)

    reviews: Mapped[list[IssueReview]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", order_by="IssueReview.position"
    )

    __table_args__ = (UniqueConstraint("digest", "number", name="uq_digest_issues_number"),)


class IssueReview(Base):
    __tablename__ = "issue_reviews"

    FEATURED = "featured"
    LISTED = "listed"
    UPDATED = "updated"  # sent before; carried again for a revision readers care about

    issue_id: Mapped[int] = mapped_column(
        ForeignKey("digest_issues.id", ondelete="CASCADE"), primary_key=True
    )
    review_id: Mapped[str] = mapped_column(
        ForeignKey("reviews.id", onupdate="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(20))
    position: Mapped[int] = mapped_column(Integer)

    __table_args__ = (Index("ix_issue_reviews_review", "review_id"),)


class Delivery(Base):
    __tablename__ = "deliveries"

    # Planned: the subscriber is one of the issue's readers, not sent yet.
    QUEUED = "queued"
    # Recorded before the transport is called; a row left in SENDING by a dead process
    # means "may have been sent", and is never retried automatically (see delivery.ledger).
    SENDING = "sending"
    SENT = "sent"
    # Temporary failure (a 4xx SMTP reply, a dropped connection): retried by the next send.
    RETRY = "retry"
    # Permanent failure (an address refused): recorded with the reason, not retried.
    FAILED = "failed"
    UNKNOWN = "unknown"
    # The issue was a draft an editor skipped: not sent, and its reviews count as had.
    SKIPPED = "skipped"
    MAX_ATTEMPTS = 3

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    issue_id: Mapped[int] = mapped_column(ForeignKey("digest_issues.id", ondelete="CASCADE"))
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(20), default=SENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    message_id: Mapped[str | None] = mapped_column(String(500))
    error: Mapped[str] = mapped_column(Text, default="")
    # What the provider reported afterwards (SendGrid's event webhook, delivery.events).
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    opens: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    clicks: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The event that suppressed the subscriber after this delivery: bounce, dropped,
    # spamreport, unsubscribe or group_unsubscribe.
    suppressed_by: Mapped[str | None] = mapped_column(String(30))

    __table_args__ = (
        UniqueConstraint("issue_id", "subscriber_id", name="uq_deliveries_issue_subscriber"),
        Index("ix_deliveries_status", "issue_id", "status"),
    )


class DeliveryEvent(Base):
    """One event from the provider's webhook, kept once: `sg_event_id` is the dedupe key."""

    __tablename__ = "delivery_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sg_event_id: Mapped[str] = mapped_column(String(200), unique=True)
    event: Mapped[str] = mapped_column(String(30))
    email: Mapped[str] = mapped_column(String(320), default="")
    # Who and which issue it was about, when it could be matched; NULL otherwise.
    subscriber_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscribers.id", ondelete="SET NULL")
    )
    issue_id: Mapped[int | None] = mapped_column(
        ForeignKey("digest_issues.id", ondelete="SET NULL")
    )
    # The bounce or drop reason, the clicked URL: what explains the event to a person.
    detail: Mapped[str] = mapped_column(Text, default="")
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SourceState(Base):
    """How a remote source (feed, sitemap) answered when last polled: for the next
    conditional GET, for `syndicate sources`, and for the operator chasing a failure."""

    __tablename__ = "source_states"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    type: Mapped[str] = mapped_column(String(20))
    # The configured URL, and where a permanent redirect (301, 308) said it now lives:
    # the next poll goes there directly.
    configured_url: Mapped[str] = mapped_column(String(2000))
    url: Mapped[str] = mapped_column(String(2000))
    etag: Mapped[str | None] = mapped_column(String(500))
    last_modified: Mapped[str | None] = mapped_column(String(100))
    last_checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The latest failure; kept after a later success, whose time shows it is over.
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    items: Mapped[int] = mapped_column(Integer, default=0)


class SourcePage(Base):
    """One page a sitemap source lists: its lastmod and validators, so an unchanged page
    is not fetched again."""

    __tablename__ = "source_pages"

    source: Mapped[str] = mapped_column(String(100), primary_key=True)
    url: Mapped[str] = mapped_column(String(2000), primary_key=True)
    lastmod: Mapped[str | None] = mapped_column(String(100))
    etag: Mapped[str | None] = mapped_column(String(500))
    last_modified: Mapped[str | None] = mapped_column(String(100))
    fetched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Why the last fetch or extraction failed; such a page is tried again next run.
    error: Mapped[str | None] = mapped_column(Text)


class FeedSlot(Base):
    """A review's place in one feed's RFC 5005 archive (syndicate.feeds): given when the
    review first appears in that feed, after every review already there, and never
    changed or reused. A review that leaves the feed (a tag removed, withdrawn) keeps
    its row, so its slot stays empty instead of every later review moving up."""

    __tablename__ = "feed_slots"

    # The feed's key: "site", "tag:<slug>", "<extra feed name>[:<slug>]".
    feed_key: Mapped[str] = mapped_column(String(500), primary_key=True)
    # No foreign key: a review deleted from the database leaves its slot taken.
    review_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    slot: Mapped[int] = mapped_column(Integer)  # 0-based; archive page slot // page_size + 1

    __table_args__ = (UniqueConstraint("feed_key", "slot", name="uq_feed_slots_slot"),)


class FeedArchive(Base):
    """How one feed's archive is paged, as first published: raising feeds.items later
    does not re-page it (docs/feeds.md)."""

    __tablename__ = "feed_archives"

    feed_key: Mapped[str] = mapped_column(String(500), primary_key=True)
    page_size: Mapped[int] = mapped_column(Integer)
