"""Everything syndicate keeps: reviews, subscribers, digest issues and the delivery ledger."""

from syndicate.store.coordination import DeliveryBatch, DigestLock, JobRun, SchedulerLease
from syndicate.store.database import Store, upgrade_schema
from syndicate.store.models import (
    Delivery,
    DeliveryEvent,
    DigestIssue,
    FeedArchive,
    FeedSlot,
    IssueReview,
    Review,
    ReviewTag,
    SourcePage,
    SourceState,
    Subscriber,
    Subscription,
    utcnow,
)
from syndicate.store.related import (  # registers the related_* tables with the metadata
    RelatedBuild,
    RelatedDocument,
    RelatedFeature,
    RelatedLink,
    RelatedTerm,
)

__all__ = [
    "Delivery",
    "DeliveryBatch",
    "DeliveryEvent",
    "DigestIssue",
    "DigestLock",
    "FeedArchive",
    "FeedSlot",
    "IssueReview",
    "JobRun",
    "RelatedBuild",
    "RelatedDocument",
    "RelatedFeature",
    "RelatedLink",
    "RelatedTerm",
    "Review",
    "ReviewTag",
    "SchedulerLease",
    "SourcePage",
    "SourceState",
    "Store",
    "Subscriber",
    "Subscription",
    "upgrade_schema",
    "utcnow",
]
