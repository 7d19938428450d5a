"""The subscriber list: adding, removing, importing and exporting readers.

Addresses are validated and normalised with email-validator (no DNS look-ups: syntax only,
so an offline import is fast and repeatable). A removed or unsubscribed address is kept,
suppressed, so that no import can mail it again; only an explicit `add` brings it back.

Each subscription carries the reader's rhythm (cadence, send hour, time zone; None: the
digest's default). The values are validated by syndicate.digest.cadence.check_choice;
`check_rhythm` here only says which field (CSV column, CLI option) a refusal is about.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select
from sqlalchemy.orm import Session

from syndicate.config import Config, DigestConfig
from syndicate.digest.cadence import InvalidRhythm, Rhythm, check_choice, rhythm_for
from syndicate.store import Subscriber, Subscription

log = logging.getLogger(__name__)

SUPPRESSED = (
    Subscriber.UNSUBSCRIBED,
    Subscriber.REMOVED,
    Subscriber.BOUNCED,
    Subscriber.COMPLAINED,
)
# The reader's rhythm, per subscription: CSV columns, and Subscription's attributes.
RHYTHM_FIELDS = ("cadence", "send_hour", "timezone")
CSV_COLUMNS = ("email", "name", "digests", "status", "created_at", *RHYTHM_FIELDS)
# What an imported row may say in its optional `status` column (an export writes it).
IMPORT_STATUSES = (Subscriber.ACTIVE, Subscriber.PENDING, *SUPPRESSED)


class InvalidAddress(ValueError):
    pass


@dataclass(frozen=True)
class Choice:
    """What to store on a subscription; None: the digest's default."""

    cadence: str | None = None
    send_hour: int | None = None
    timezone: str | None = None

    def apply(self, subscription: Subscription, fields: Iterable[str] = RHYTHM_FIELDS) -> None:
        for name in fields:
            setattr(subscription, name, getattr(self, name))


def check_rhythm(
    digests: Iterable[DigestConfig],
    cadence: str | None = None,
    send_hour: int | str | None = None,
    timezone: str | None = None,
) -> Choice:
    """Check a choice for every digest it will apply to (see check_choice); blank means
    the digest's default. Raises InvalidRhythm naming the refused field."""
    choice = Choice()
    for digest in digests:
        choice = Choice(*check_choice(digest, cadence, send_hour, timezone))
    return choice


def rhythm_text(rhythm: Rhythm) -> str:
    """A rhythm in a few words: "instant", "weekly", "daily 07:00 America/New_York"."""
    if rhythm.cadence == "instant" or rhythm.send_hour is None:
        return rhythm.cadence
    return f"{rhythm.cadence} {rhythm.send_hour:02d}:00 {rhythm.timezone}"


def rhythms_text(config: Config, subscriber: Subscriber) -> str:
    """Each subscription's effective rhythm: "weekly 08:00 Europe/Paris" for one digest,
    "news: instant; weekly: weekly 08:00 Europe/Paris" for several."""
    parts = []
    for subscription in sorted(subscriber.subscriptions, key=lambda s: s.digest):
        digest = next((d for d in config.digests if d.name == subscription.digest), None)
        if digest is None:
            parts.append((subscription.digest, "not configured"))
            continue
        rhythm = rhythm_for(
            config,
            digest,
            subscription.cadence,
            subscription.send_hour,
            subscription.timezone,
        )
        parts.append((subscription.digest, rhythm_text(rhythm)))
    if not parts:
        return "-"
    if len(parts) == 1:
        return parts[0][1]
    return "; ".join(f"{name}: {text}" for name, text in parts)


def normalise(address: str) -> str:
    """The canonical form of an address: validated, domain lower-cased (IDNA-aware)."""
    try:
        result = validate_email(address.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidAddress(f"{address.strip()!r} is not a valid email address: {exc}") from None
    return result.normalized.lower() if result.local_part.isascii() else result.normalized


def find(session: Session, address: str) -> Subscriber | None:
    return session.scalars(select(Subscriber).where(Subscriber.email == normalise(address))).first()


def has_active(session: Session, digest: str) -> bool:
    """Whether anyone would receive an issue of `digest` now."""
    return (
        session.scalar(
            select(Subscription.subscriber_id)
            .join(Subscriber)
            .where(Subscription.digest == digest, Subscriber.status == Subscriber.ACTIVE)
            .limit(1)
        )
        is not None
    )


@dataclass
class AddResult:
    subscriber: Subscriber
    created: bool
    reactivated: bool


def add(
    session: Session,
    address: str,
    name: str = "",
    digests: Iterable[str] = (),
    *,
    reactivate: bool = True,
    rhythm: Mapping[str, Any] | None = None,
) -> AddResult:
    """Add a reader, or merge into the existing one. Suppressed readers stay suppressed
    unless `reactivate` (an explicit add by the editor, not an import).

    `rhythm` ({"cadence": "daily", "send_hour": 7}: the fields to set, already checked
    with `check_rhythm`) is set on the subscriptions to `digests`, new or existing; the
    fields it does not name are left as they are."""
    email = normalise(address)
    subscriber = session.scalars(select(Subscriber).where(Subscriber.email == email)).first()
    created = subscriber is None
    reactivated = False
    if subscriber is None:
        subscriber = Subscriber(email=email, name=name.strip(), status=Subscriber.ACTIVE)
        session.add(subscriber)
    else:
        if name.strip():
            subscriber.name = name.strip()
        if subscriber.status in SUPPRESSED and reactivate:
            subscriber.status = Subscriber.ACTIVE
            subscriber.status_reason = "re-added by the editor"
            subscriber.status_changed_at = datetime.now(UTC)
            reactivated = True
    have = {s.digest: s for s in subscriber.subscriptions}
    for digest in digests:
        if digest not in have:
            have[digest] = Subscription(digest=digest)
            subscriber.subscriptions.append(have[digest])
        for name, value in (rhythm or {}).items():
            if name not in RHYTHM_FIELDS:
                raise ValueError(f"not a rhythm field: {name!r}")
            setattr(have[digest], name, value)
    session.flush()
    return AddResult(subscriber, created, reactivated)


def suppress(session: Session, address: str, status: str, reason: str) -> Subscriber | None:
    subscriber = find(session, address)
    if subscriber is not None and subscriber.status != status:
        subscriber.status = status
        subscriber.status_reason = reason
        subscriber.status_changed_at = datetime.now(UTC)
    return subscriber


@dataclass
class ImportReport:
    added: int = 0
    merged: int = 0
    suppressed_kept: int = 0
    suppressed_by_import: int = 0
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = f"{self.added} added, {self.merged} merged into existing subscribers"
        if self.suppressed_by_import:
            text += f", {self.suppressed_by_import} marked unsubscribed, removed or bounced in the file (not mailed)"
        if self.suppressed_kept:
            text += f", {self.suppressed_kept} left suppressed (unsubscribed, removed or bounced)"
        if self.errors:
            text += f", {len(self.errors)} row(s) skipped"
        return text


@dataclass
class _Row:
    line: int
    email: str  # normalised
    name: str
    digests: list[str]
    status: str
    created_at: datetime | None
    rhythm: Choice = Choice()  # for the subscriptions this row creates


IMPORT_CHUNK = 500  # rows looked up in one query


def import_csv(
    session: Session,
    handle: TextIO,
    source: str,
    default_digests: list[str],
    known_digests: set[str],
    configs: Iterable[DigestConfig] = (),
) -> ImportReport:
    """Import rows of `email,name,digests` (digests separated by ';'). Bad rows are
    reported with their line number and skipped; the good rows are imported.

    The optional `status` and `created_at` columns (as `export_csv` writes them) are
    honoured, so an export imported elsewhere keeps its suppressed addresses suppressed:
    a row marked unsubscribed, removed, bounced or complained is never mailed.

    The optional `cadence`, `send_hour` and `timezone` columns (blank: the digest's
    default) are checked against each of the row's digests (`configs`) and set on the
    subscriptions the row creates; a subscription already on the list keeps the rhythm
    its reader chose. A refused value is reported with its line and column.

    Every row is checked before anything is written, then the rows are applied a chunk
    at a time with one query for the chunk's existing addresses: an import of 100,000
    readers takes seconds, not minutes."""
    report = ImportReport()
    reader = csv.DictReader(handle)
    if reader.fieldnames is None or "email" not in [f.strip().lower() for f in reader.fieldnames]:
        report.errors.append(f"{source}: line 1: expected a header row with an 'email' column")
        return report
    settings = {digest.name: digest for digest in configs}
    rows: list[_Row] = []
    for row in reader:
        try:
            rows.append(_checked(row, reader.line_num, default_digests, known_digests, settings))
        except InvalidAddress as exc:
            report.errors.append(f"{source}: line {reader.line_num}: {exc}")
    # Addresses already on the list, or earlier in this file (a later row merges into it).
    seen: dict[str, Subscriber] = {}
    for start in range(0, len(rows), IMPORT_CHUNK):
        chunk = rows[start : start + IMPORT_CHUNK]
        wanted = {r.email for r in chunk} - seen.keys()
        if wanted:
            seen.update(
                (s.email, s)
                for s in session.scalars(select(Subscriber).where(Subscriber.email.in_(wanted)))
            )
        for row in chunk:
            _apply_row(session, row, seen, source, report)
        session.flush()
    return report


def _checked(
    raw: dict[str | None, str | None],
    line: int,
    default_digests: list[str],
    known_digests: set[str],
    settings: Mapping[str, DigestConfig],
) -> _Row:
    """One CSV row, validated; InvalidAddress says what is wrong with it."""
    row = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items() if k}
    digests = [d.strip() for d in row.get("digests", "").replace(",", ";").split(";") if d.strip()]
    unknown = sorted(set(digests) - known_digests)
    if unknown:
        raise InvalidAddress(f"unknown digest(s) {', '.join(unknown)}")
    status = row.get("status", "").lower() or Subscriber.ACTIVE
    if status not in IMPORT_STATUSES:
        raise InvalidAddress(
            f"unknown status {status!r} (expected one of {', '.join(IMPORT_STATUSES)})"
        )
    email = normalise(row.get("email", ""))
    digests = list(dict.fromkeys(digests or default_digests))
    return _Row(
        line=line,
        email=email,
        name=row.get("name", "").strip(),
        digests=digests,
        status=status,
        created_at=_timestamp(row.get("created_at", "")),
        rhythm=_row_rhythm(row, digests, settings),
    )


def _row_rhythm(
    row: dict[str, str], digests: list[str], settings: Mapping[str, DigestConfig]
) -> Choice:
    given = {name: row.get(name, "") for name in RHYTHM_FIELDS}
    if not any(given.values()):
        return Choice()
    unknown = [d for d in digests if d not in settings]
    if unknown:  # a caller that did not pass the digests' settings
        column = next(name for name, value in given.items() if value)
        raise InvalidAddress(
            f"column {column}: no settings for digest {unknown[0]} to check the value against"
        )
    try:
        return check_rhythm([settings[d] for d in digests], **given)
    except InvalidRhythm as exc:
        raise InvalidAddress(f"column {exc.field}: {exc}") from None


def _apply_row(
    session: Session, row: _Row, seen: dict[str, Subscriber], source: str, report: ImportReport
) -> None:
    """Add or merge one checked row, as `add(..., reactivate=False)` would."""
    subscriber = seen.get(row.email)
    created = subscriber is None
    if subscriber is None:
        subscriber = Subscriber(email=row.email, name=row.name, status=Subscriber.ACTIVE)
        if row.created_at is not None:
            subscriber.created_at = row.created_at
        session.add(subscriber)
        seen[row.email] = subscriber
    elif row.name:
        subscriber.name = row.name
    have = {s.digest for s in subscriber.subscriptions}
    for digest in row.digests:
        if digest not in have:
            subscription = Subscription(digest=digest)
            row.rhythm.apply(subscription)
            subscriber.subscriptions.append(subscription)
            have.add(digest)
    was_suppressed = not created and subscriber.status in SUPPRESSED
    if (created and row.status != Subscriber.ACTIVE) or (
        row.status in SUPPRESSED and not was_suppressed
    ):
        subscriber.status = row.status
        subscriber.status_reason = f"{row.status} according to {source}"
        subscriber.status_changed_at = datetime.now(UTC)
    if created:
        report.added += 1
    else:
        report.merged += 1
        if was_suppressed:
            report.suppressed_kept += 1
    if row.status in SUPPRESSED and not was_suppressed:
        report.suppressed_by_import += 1


def _timestamp(value: str) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidAddress(
            f"created_at {value!r} is not a date such as 2026-11-20T09:00:00+00:00"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def export_rows(session: Session) -> Iterator[list[dict[str, str]]]:
    """Per subscriber, its CSV rows: one for each rhythm among its subscriptions (usually
    one), so that importing the rows gives each subscription its rhythm back."""
    for subscriber in session.scalars(select(Subscriber).order_by(Subscriber.id)):
        groups: dict[tuple[str, str, str], list[str]] = {}
        for subscription in sorted(subscriber.subscriptions, key=lambda s: s.digest):
            key = (
                subscription.cadence or "",
                "" if subscription.send_hour is None else str(subscription.send_hour),
                subscription.timezone or "",
            )
            groups.setdefault(key, []).append(subscription.digest)
        common = {
            "email": subscriber.email,
            "name": subscriber.name,
            "status": subscriber.status,
            "created_at": subscriber.created_at.isoformat(),
        }
        yield [
            {**common, "digests": ";".join(digests), **dict(zip(RHYTHM_FIELDS, key, strict=True))}
            for key, digests in (groups or {("", "", ""): []}).items()
        ]


def export_csv(session: Session, handle: TextIO) -> int:
    """Write every subscriber as CSV; the number of subscribers written."""
    writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    count = 0
    for rows in export_rows(session):
        writer.writerows(rows)
        count += 1
    return count


def read_csv(path: Path) -> io.StringIO:
    # utf-8-sig: spreadsheets often save a byte-order mark before the header.
    return io.StringIO(path.read_text(encoding="utf-8-sig"))
