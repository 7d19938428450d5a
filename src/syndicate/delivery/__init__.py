"""Delivering issues: building MIME messages, transports, and the exactly-once ledger."""

from syndicate.delivery.ledger import IssueBusy, SendReport
from syndicate.delivery.message import Letter, Outcome, Recipient, build_message
from syndicate.delivery.sender import Sender
from syndicate.delivery.transports import (
    OutboxTransport,
    SmtpTransport,
    Transport,
    TransportUnavailable,
    open_transport,
)

__all__ = [
    "IssueBusy",
    "Letter",
    "OutboxTransport",
    "Outcome",
    "Recipient",
    "SendReport",
    "Sender",
    "SmtpTransport",
    "Transport",
    "TransportUnavailable",
    "build_message",
    "open_transport",
]
