"""What a transport sends: one issue-level letter and the recipients it goes to."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from syndicate.digest.render import personalise


@dataclass(frozen=True)
class Letter:
    """The part of a message that is the same for every recipient (placeholders unfilled)."""

    subject: str
    html: str
    text: str
    sender_name: str
    sender_email: str
    list_id: str  # e.g. 'The Week in Film <weekly.reviews.example.com>'
    tag: str  # names the letter in file names and Message-IDs, e.g. 'weekly-0003'
    domain: str  # the domain Message-IDs are made in
    reply_to: str | None = None
    unsubscribe_mailto: str | None = None
    bulk: bool = True  # a digest (List-Unsubscribe and friends) rather than a one-off email
    digest: str = ""  # the digest's name and the issue's id, for tracing provider events back
    issue_id: int = 0


@dataclass(frozen=True)
class Recipient:
    subscriber_id: int
    email: str
    # Placeholder values: name, email, unsubscribe_url, preferences_url, ...
    values: Mapping[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.values.get("display_name", "")


@dataclass(frozen=True)
class Outcome:
    subscriber_id: int
    ok: bool
    message_id: str | None = None
    error: str = ""
    # A permanent failure (address refused) is not retried; a temporary one is.
    permanent: bool = False


# Line breaks and other control characters in a header value could start a new header.
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")


def header_text(value: str) -> str:
    """`value` as one header-safe line: control characters become spaces."""
    return " ".join(_CONTROL.sub(" ", value).split())


def build_message(
    letter: Letter, recipient: Recipient, now: datetime | None = None
) -> EmailMessage:
    """One RFC 5322 message: text/plain first, text/html second, one-click unsubscribe."""
    message = EmailMessage()
    # Header values come from subscribers (names) and editors: each is made one line, so
    # a name such as "Ann\r\nBcc: x@example.com" stays a name and cannot add a header.
    message["From"] = Address(header_text(letter.sender_name), addr_spec=letter.sender_email)
    message["To"] = Address(header_text(recipient.name), addr_spec=recipient.email)
    message["Subject"] = header_text(personalise(letter.subject, recipient.values, escape=False))
    message["Date"] = format_datetime(now or datetime.now(UTC))
    message["Message-ID"] = make_msgid(
        idstring=f"{letter.tag}.{recipient.subscriber_id}", domain=letter.domain
    )
    if letter.reply_to:
        message["Reply-To"] = letter.reply_to
    if letter.bulk:
        message["List-Id"] = letter.list_id
        unsubscribe = f"<{recipient.values['unsubscribe_url']}>"
        if letter.unsubscribe_mailto:
            unsubscribe += f", <mailto:{letter.unsubscribe_mailto}?subject=unsubscribe>"
        message["List-Unsubscribe"] = unsubscribe
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        message["Precedence"] = "bulk"
    message.set_content(
        personalise(letter.text, recipient.values, escape=False), cte="quoted-printable"
    )
    message.add_alternative(
        personalise(letter.html, recipient.values, escape=True),
        subtype="html",
        cte="quoted-printable",
    )
    return message
