"""Everything syndicate keeps: reviews, subscribers, digest issues and the delivery ledger."""

from syndicate.store.database import Store, upgrade_schema
from syndicate.store.models import (
    Delivery,
    DeliveryEvent,
    DigestIssue,
    IssueReview,
    Review,
    ReviewTag,
    Subscriber,
    Subscription,
    utcnow,
)

__all__ = [
    "Delivery",
    "DeliveryEvent",
    "DigestIssue",
    "IssueReview",
    "Review",
    "ReviewTag",
    "Store",
    "Subscriber",
    "Subscription",
    "upgrade_schema",
    "utcnow",
]
