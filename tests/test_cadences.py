"""Readers' rhythms under time travel: a simulated month of reviews and readers who join,
leave and switch cadence, hour and zone, checked against the delivery ledger; daylight
saving in Europe and America; the editor's approve, skip, force, test and plan.

Time is moved with time_machine (tick=False), and the real functions are called as the
scheduler calls them: a gather (then a send to instant readers) when a review changes,
and the digest's send every hour and at every reader's slot. The CLI runs in-process
(click's CliRunner), so it sees the travelled time too.
"""

from __future__ import annotations

import email
import email.policy
import shutil
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from zoneinfo import ZoneInfo

import pytest
import time_machine
from sqlalchemy import select

from syndicate import pipeline
from syndicate.delivery import open_transport
from syndicate.digest.cadence import Rhythm
from syndicate.store import Delivery, DigestIssue, IssueReview, Review, Store, Subscriber
from tests.conftest import Site

DIGEST = "weekly"
LONDON = "Europe/London"
EPSILON = timedelta(microseconds=1)

CONFIG = """\
site:
  title: Reel Notes
  url: https://reelnotes.example.com/
  description: Film reviews.
  language: en
  timezone: Europe/London
  author: {{name: Reel Notes, email: editors@reelnotes.example.com}}
database:
  url: sqlite:///var/syndicate.db
sources:
  - name: reviews
    type: files
    path: reviews
feeds:
  output: public
  items: 20
pages:
  archive: {archive}
digests:
  - name: weekly
    title: The Week in Film
    send_hour: 8
    send_day: friday
    cadence: weekly
    cadences: [instant, daily, weekly]
{extra}delivery:
  transport: outbox
  from: {{name: Reel Notes, email: newsletter@reelnotes.example.com}}
  outbox: var/outbox
schedules:
  gather: {{interval: 15m}}
  digests:
    weekly: {{interval: 15m}}
"""


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def set_up(site: Site, archive: bool = False, extra: str = "") -> None:
    """The site with an empty reviews folder and the digest at readers' hours."""
    shutil.rmtree(site.reviews)
    site.reviews.mkdir()
    site.write_config(CONFIG.format(archive=str(archive).lower(), extra=extra))


def review_text(title: str, published: datetime, rating: float = 3.5) -> str:
    return (
        f'---\ntitle: "{title}"\nfilm: "{title}"\nauthor: Maya Okafor\nrating: {rating}\n'
        f"published: {published.isoformat()}\ntags: [drama]\n"
        f'summary: "What the critic thought of {title}."\n---\n\nThe body of {title}.\n'
    )


def rhythm(cadence: str, hour: int | None = 8, zone: str | None = LONDON) -> Rhythm:
    return Rhythm(cadence, 8 if hour is None else hour, zone or LONDON, "friday")


def first_slot(rhythm: Rhythm, moment: datetime) -> datetime:
    """The first slot at or after `moment` (instant: the moment itself)."""
    if not rhythm.timed:
        return moment
    slot = rhythm.next_slot(moment - EPSILON)
    assert slot is not None
    return slot


def parse(path: object) -> EmailMessage:
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)  # type: ignore[attr-defined]
    assert isinstance(message, EmailMessage)
    return message


def to_address(message: EmailMessage) -> str:
    return message["To"].addresses[0].addr_spec


def body_text(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    content = part.get_content()
    assert isinstance(content, str)
    return content


@dataclass
class LedgerRow:
    email: str
    number: int
    cadence: str | None
    slot_at: datetime | None
    created_at: datetime
    issue_status: str
    status: str
    sent_at: datetime | None
    reviews: list[tuple[str, str]]  # (review id, role)


def ledger(store: Store) -> list[LedgerRow]:
    """Every delivery of the digest with its issue and the issue's reviews."""
    with store.session() as session:
        issues = {i.id: i for i in session.scalars(select(DigestIssue))}
        carried: dict[int, list[tuple[str, str]]] = defaultdict(list)
        for issue_id, review_id, role in session.execute(
            select(IssueReview.issue_id, IssueReview.review_id, IssueReview.role).order_by(
                IssueReview.issue_id, IssueReview.position
            )
        ):
            carried[issue_id].append((review_id, role))
        rows = []
        for address, delivery in session.execute(
            select(Subscriber.email, Delivery).join(
                Delivery, Delivery.subscriber_id == Subscriber.id
            )
        ):
            issue = issues[delivery.issue_id]
            rows.append(
                LedgerRow(
                    address,
                    issue.number,
                    issue.cadence,
                    issue.slot_at,
                    issue.created_at,
                    issue.status,
                    delivery.status,
                    delivery.sent_at,
                    carried[issue.id],
                )
            )
        return sorted(rows, key=lambda r: (r.created_at, r.number, r.email))


def ledger_counts(store: Store) -> dict[str, int]:
    with store.session() as session:
        return dict(Counter(session.scalars(select(Delivery.status))))


# --- the simulated month ------------------------------------------------------------------

START = utc("2026-10-05 00:00")  # a Monday
END = utc("2026-11-08 00:00")  # a Sunday, after every reader's last Friday slot
JOINED = utc("2026-10-01 12:00")  # the list imported before the month
ZONES = [
    "Europe/London",
    "Europe/Paris",
    "America/New_York",
    "America/Los_Angeles",
    "Asia/Tokyo",
    "Australia/Sydney",
    "Asia/Kolkata",  # +05:30: slots on the half hour
]
HOURS = [None, 7, 8, 18, 2, 1]  # None: the digest's 08:00


@dataclass
class Reader:
    email: str
    joined: datetime
    segments: list[tuple[datetime, Rhythm]]  # from when, which rhythm
    left: datetime | None = None

    def rhythm_at(self, moment: datetime) -> Rhythm:
        return [r for since, r in self.segments if since <= moment][-1]

    def changes(self) -> list[datetime]:
        return [since for since, _ in self.segments[1:]]


@dataclass
class ReviewPlan:
    id: str
    written: datetime  # when the file appears (and is gathered)
    published: datetime
    withdrawn: datetime | None = None
    revised: datetime | None = None

    @property
    def visible(self) -> datetime:
        return max(self.written, self.published)


def month_reviews() -> list[ReviewPlan]:
    return [
        ReviewPlan("r01", utc("2026-10-05 09:20"), utc("2026-10-05 09:20")),
        ReviewPlan("r02", utc("2026-10-07 17:45"), utc("2026-10-07 17:45")),
        # Gathered at the London weekly slot itself (Friday 08:00 BST = 07:00 UTC).
        ReviewPlan("r03-at-slot", utc("2026-10-09 07:00"), utc("2026-10-09 07:00")),
        # Gathered two days late: dated Thursday, found on Saturday.
        ReviewPlan("r04-late", utc("2026-10-10 12:00"), utc("2026-10-08 12:00")),
        # Sent to instant and daily readers, then its rating changes: Updated.
        ReviewPlan(
            "r05-revised",
            utc("2026-10-12 10:00"),
            utc("2026-10-12 10:00"),
            revised=utc("2026-10-14 13:00"),
        ),
        # Scheduled: written on Tuesday evening, dated Wednesday morning.
        ReviewPlan("r06-scheduled", utc("2026-10-13 20:00"), utc("2026-10-14 06:00")),
        # Scheduled, then pulled before its date: nobody gets it.
        ReviewPlan(
            "r07-pulled",
            utc("2026-10-15 09:00"),
            utc("2026-10-16 12:00"),
            withdrawn=utc("2026-10-15 18:00"),
        ),
        ReviewPlan("r08", utc("2026-10-19 14:30"), utc("2026-10-19 14:30")),
        # Withdrawn six hours after it came out: whoever had it by then keeps it.
        ReviewPlan(
            "r09-withdrawn",
            utc("2026-10-21 10:05"),
            utc("2026-10-21 10:05"),
            withdrawn=utc("2026-10-21 16:00"),
        ),
        ReviewPlan("r10", utc("2026-10-23 18:00"), utc("2026-10-23 18:00")),
        ReviewPlan("r11", utc("2026-10-24 23:30"), utc("2026-10-24 23:30")),
        ReviewPlan("r12-eu-dst", utc("2026-10-25 01:30"), utc("2026-10-25 01:30")),
        ReviewPlan("r13", utc("2026-10-27 08:00"), utc("2026-10-27 08:00")),
        ReviewPlan("r14-late", utc("2026-10-29 22:00"), utc("2026-10-29 10:00")),
        ReviewPlan("r15-us-dst", utc("2026-11-01 05:30"), utc("2026-11-01 05:30")),
        ReviewPlan("r16", utc("2026-11-03 15:00"), utc("2026-11-03 15:00")),
        ReviewPlan("r17", utc("2026-11-04 19:00"), utc("2026-11-04 19:00")),
    ]


def initial_readers() -> list[tuple[str, str, int | None, str | None]]:
    """(address, cadence, hour, zone): 42 readers over every cadence, zone and hour."""
    people = []
    for n in range(42):
        cadence = ("weekly", "daily", "instant")[n % 3]
        zone = None if n % 8 == 0 else ZONES[n % 7]  # None: the digest's (London)
        hour = HOURS[(n // 3) % 6]
        people.append((f"reader{n:02d}@example.com", cadence, hour, zone))
    return people


# Rhythm changes, joins and departures during the month: (when, address, what).
CHANGES: list[tuple[str, str, dict[str, str]]] = [
    # daily -> instant on Tuesday morning, weekly -> daily on Wednesday afternoon.
    ("2026-10-13 10:30", "reader01@example.com", {"cadence": "instant"}),
    ("2026-10-14 14:00", "reader03@example.com", {"cadence": "daily"}),
    # A weekly reader in Sydney (Friday already gone) moves to New York (Friday to come).
    ("2026-10-16 06:00", "reader12@example.com", {"timezone": "America/New_York"}),
    ("2026-10-20 09:10", "reader02@example.com", {"cadence": "weekly"}),  # instant -> weekly
    ("2026-10-21 12:00", "reader04@example.com", {"send_hour": "18"}),  # daily 02:00 -> 18:00
    ("2026-10-22 03:00", "reader10@example.com", {"send_hour": "7"}),  # daily 18:00 -> 07:00
    ("2026-10-27 05:00", "reader07@example.com", {"timezone": "Asia/Tokyo"}),  # daily
    ("2026-10-28 20:00", "reader07@example.com", {"timezone": "America/Los_Angeles"}),
]
JOINS: list[tuple[str, str, str, int | None, str | None]] = [
    ("2026-10-14 16:00", "joiner-weekly@example.com", "weekly", None, None),
    ("2026-10-21 09:30", "joiner-daily@example.com", "daily", 8, "Asia/Tokyo"),
    ("2026-10-27 08:15", "joiner-instant@example.com", "instant", None, None),
    ("2026-10-30 06:00", "joiner-sydney@example.com", "weekly", 7, "Australia/Sydney"),
    ("2026-11-03 02:00", "joiner-ny@example.com", "daily", 1, "America/New_York"),
]
LEAVES: list[tuple[str, str]] = [
    ("2026-10-15 11:00", "reader16@example.com"),  # daily
    ("2026-10-23 10:00", "reader06@example.com"),  # weekly, after its Friday slot
    ("2026-10-29 09:00", "reader09@example.com"),  # weekly, before its Friday
    ("2026-11-02 12:00", "reader05@example.com"),  # instant
]


class Month:
    """Drives the site through time: events, gathers and sends, as the scheduler would."""

    def __init__(self, site: Site, store: Store, traveller: time_machine.Coordinates) -> None:
        self.site = site
        self.config = site.config
        self.store = store
        self.traveller = traveller
        self.transport = open_transport(self.config)
        self.runs = 0

    def move(self, moment: datetime) -> None:
        self.traveller.move_to(moment)
        assert datetime.now(UTC) == moment

    def gather(self, moment: datetime) -> None:
        """The gather job: gather, then send new reviews to instant readers."""
        report = pipeline.gather(self.config, self.store, moment)
        assert not report.errors, report.errors
        pipeline.send_digest(
            self.config, self.store, DIGEST, self.transport, now=moment, cadences={"instant"}
        )

    def send(self, moment: datetime) -> pipeline.DigestOutcome:
        """The digest job."""
        self.runs += 1
        return pipeline.send_digest(self.config, self.store, DIGEST, self.transport, now=moment)


def cli_subscribe(
    site: Site, address: str, cadence: str, hour: int | None, zone: str | None
) -> None:
    args = ["subscribers", "add", address, "--digest", DIGEST, "--cadence", cadence]
    if hour is not None:
        args += ["--send-hour", str(hour)]
    if zone is not None:
        args += ["--timezone", zone]
    site.cli(*args)


def run_month(site: Site) -> tuple[list[ReviewPlan], dict[str, Reader], Store, int, float]:
    set_up(site)
    reviews = month_reviews()
    readers: dict[str, Reader] = {}
    started = time.perf_counter()
    store = Store(site.config.database_url)
    with time_machine.travel(JOINED, tick=False) as traveller:
        rows = ["email,name,digests,cadence,send_hour,timezone"]
        for address, cadence, hour, zone in initial_readers():
            rows.append(f"{address},,{DIGEST},{cadence},{hour or ''},{zone or ''}")
            readers[address] = Reader(address, JOINED, [(JOINED, rhythm(cadence, hour, zone))])
        (site.root / "readers.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
        site.cli("subscribers", "import", "readers.csv", "--digest", DIGEST)

        events: dict[datetime, list[tuple[str, object]]] = defaultdict(list)
        for review in reviews:
            events[review.written].append(("write", review))
            if review.withdrawn:
                events[review.withdrawn].append(("withdraw", review))
            if review.revised:
                events[review.revised].append(("revise", review))
        for when, address, what in CHANGES:
            events[utc(when)].append(("change", (address, what)))
        for when, address, cadence, hour, zone in JOINS:
            events[utc(when)].append(("join", (address, cadence, hour, zone)))
        for when, address in LEAVES:
            events[utc(when)].append(("leave", address))

        ticks = set(events)
        moment = START
        while moment < END:
            ticks.add(moment)
            moment += timedelta(hours=1)
        # Readers in +05:30 have their slots on the half hour: the job runs then too.
        kolkata = rhythm("daily", 8, "Asia/Kolkata")
        for hour in {h for h in HOURS if h is not None} | {8}:
            kolkata = rhythm("daily", hour, "Asia/Kolkata")
            day = START.date()
            while day < END.date():
                ticks.add(kolkata.slot_on(day))
                day += timedelta(days=1)
        # Scheduled reviews become visible at their date without a gather.
        ticks |= {r.published for r in reviews}

        month = Month(site, store, traveller)
        for moment in sorted(t for t in ticks if START <= t < END):
            month.move(moment)
            gather = False
            for kind, what in events.get(moment, []):
                if kind == "write" or kind == "revise":
                    review = what  # type: ignore[assignment]
                    assert isinstance(review, ReviewPlan)
                    rating = 4.5 if kind == "revise" else 3.0
                    site.write_review(
                        f"{review.id}.md", review_text(review.id, review.published, rating)
                    )
                    gather = True
                elif kind == "withdraw":
                    assert isinstance(what, ReviewPlan)
                    (site.reviews / f"{what.id}.md").unlink()
                    gather = True
                elif kind == "change":
                    address, change = what  # type: ignore[misc]
                    reader = readers[address]
                    old = reader.rhythm_at(moment)
                    new = Rhythm(
                        change.get("cadence", old.cadence),
                        int(change.get("send_hour", old.send_hour)),
                        change.get("timezone", old.timezone),
                        "friday",
                    )
                    reader.segments.append((moment, new))
                    options = [
                        f"--{k.replace('_', '-')}" if k != "send_hour" else "--send-hour"
                        for k in change
                    ]
                    args = [x for pair in zip(options, change.values(), strict=True) for x in pair]
                    site.cli("subscribers", "add", address, "--digest", DIGEST, *args)
                elif kind == "join":
                    address, cadence, hour, zone = what  # type: ignore[misc]
                    cli_subscribe(site, address, cadence, hour, zone)
                    readers[address] = Reader(
                        address, moment, [(moment, rhythm(cadence, hour, zone))]
                    )
                elif kind == "leave":
                    site.cli("subscribers", "remove", what)  # type: ignore[arg-type]
                    readers[what].left = moment  # type: ignore[index]
            if gather:
                month.gather(moment)
            month.send(moment)
        month.transport.close()
        # Everything due has gone: nobody has anything pending, even forced.
        month.move(END)
        from syndicate import digest as digests

        with store.session() as session:
            left = digests.plan(site.config, session, site.config.digest(DIGEST), END, force=True)
        assert left.groups == [], [(g.key, g.subscriber_ids) for g in left.groups]
    return reviews, readers, store, month.runs, time.perf_counter() - started


def test_a_simulated_month_every_reader_gets_every_review_once_at_their_hour(
    site: Site,
) -> None:
    reviews, readers, store, runs, seconds = run_month(site)
    try:
        rows = ledger(store)
        with store.session() as session:
            issues = [(i.created_at, i.cadence) for i in session.scalars(select(DigestIssue))]
            stored = {r.id: r for r in session.scalars(select(Review))}
        check_month(reviews, readers, rows, issues, stored, runs, seconds)
    finally:
        store.close()


def floor_of(reader: Reader, issues: list[tuple[datetime, str | None]]) -> datetime:
    """plan.py's floor for a reader: when they joined, less one period of their cadence,
    but not before the last issue of their cadence that went out before they joined."""
    first = reader.segments[0][1]
    reach = {"instant": timedelta(0), "daily": timedelta(days=1), "weekly": timedelta(days=7)}
    floor = reader.joined - reach[first.cadence]
    before = [
        at for at, cadence in issues if cadence in (first.cadence, None) and at <= reader.joined
    ]
    return max([floor, *before])


def due_times(reader: Reader, start: datetime) -> set[datetime]:
    """When something that became theirs at `start` goes to the reader: their first slot
    at or after it; when their rhythm changes before that slot, the change itself (the
    new rhythm's slot has passed with it pending: sent at once) or the new rhythm's next
    slot."""
    current = reader.rhythm_at(start)
    due = first_slot(current, start)
    for change in reader.changes():
        if start < change <= due:
            new = reader.rhythm_at(change)
            return {change, first_slot(new, change)} | due_times(reader, change + EPSILON)
    return {due}


def check_month(
    reviews: list[ReviewPlan],
    readers: dict[str, Reader],
    rows: list[LedgerRow],
    issues: list[tuple[datetime, str | None]],
    stored: dict[str, Review],
    runs: int,
    seconds: float,
) -> None:
    problems: list[str] = []
    assert {r.status for r in rows} == {Delivery.SENT}
    assert all(r.sent_at == r.created_at for r in rows), "each issue goes in the run that plans it"

    got: dict[tuple[str, str], list[LedgerRow]] = defaultdict(list)
    updated: dict[tuple[str, str], list[LedgerRow]] = defaultdict(list)
    for row in rows:
        for review_id, role in row.reviews:
            (updated if role == IssueReview.UPDATED else got)[(row.email, review_id)].append(row)

    # (a) exactly once: every review owed to a reader, from their floor, once, when due.
    owed = delivered = 0
    for reader in readers.values():
        floor = floor_of(reader, issues)
        for review in reviews:
            mine = got.pop((reader.email, review.id), [])
            if len(mine) > 1:
                problems.append(f"{reader.email} got {review.id} {len(mine)} times")
            if review.published <= floor:
                if mine:
                    problems.append(f"{reader.email} got {review.id}, older than their floor")
                continue
            start = max(review.visible, reader.joined + EPSILON)
            due = due_times(reader, start)
            first = min(due)
            gone = min(t for t in (reader.left, review.withdrawn, END) if t is not None)
            if first >= gone:  # they left, or it was withdrawn, or the month ended first
                if mine and mine[0].created_at >= gone:
                    problems.append(f"{reader.email} got {review.id} after it was gone")
                continue
            if max(due) >= gone and not mine:
                continue  # only a catch-up right after a rhythm change would have made it
            owed += 1
            if not mine:
                problems.append(f"{reader.email} never got {review.id} (due {sorted(due)})")
                continue
            delivered += 1
            if mine[0].created_at not in due:
                problems.append(
                    f"{reader.email} got {review.id} at {mine[0].created_at:%m-%d %H:%M}, "
                    f"due {', '.join(f'{t:%m-%d %H:%M}' for t in sorted(due))}"
                )
    for (address, review_id), extra in got.items():
        problems.append(f"{address} got {review_id}, not theirs ({len(extra)} times)")

    # (b) every daily and weekly issue at the reader's hour in their zone, one per slot.
    per_slot: Counter[tuple[str, datetime]] = Counter()
    catch_up = 0
    for row in rows:
        reader = readers[row.email]
        their = reader.rhythm_at(row.created_at)
        if row.cadence != their.cadence:
            problems.append(f"{row.email} got a {row.cadence} issue as a {their.cadence} reader")
            continue
        if their.cadence == "instant":
            continue
        assert row.slot_at is not None
        local = row.slot_at.astimezone(their.zone)
        if row.slot_at != their.slot_on(local.date()) or local.hour != their.send_hour:
            problems.append(f"{row.email}: slot {row.slot_at} is not {their}")
        if their.cadence == "weekly" and local.strftime("%A") != "Friday":
            problems.append(f"{row.email}: weekly issue on a {local:%A}")
        per_slot[(row.email, row.slot_at)] += 1
        if row.created_at != row.slot_at:
            catch_up += 1
            if row.created_at not in reader.changes():
                problems.append(
                    f"{row.email}: issue {row.number} sent at {row.created_at:%m-%d %H:%M}, "
                    f"not at their slot {row.slot_at:%m-%d %H:%M}"
                )
    problems += [f"{a}: {n} issues for the slot {s}" for (a, s), n in per_slot.items() if n > 1]

    # (c) instant readers: one review per issue, sent when it was gathered.
    for row in rows:
        if row.cadence == "instant" and len(row.reviews) != 1:
            problems.append(f"instant issue {row.number} carries {row.reviews}")

    # (d) the revised review: Updated for exactly the readers who had the earlier version.
    revised = next(r for r in reviews if r.revised)
    assert stored[revised.id].revised_at == revised.revised
    expected_updates = 0
    for reader in readers.values():
        had = [
            row
            for row in rows
            if row.email == reader.email
            and row.created_at < revised.revised  # type: ignore[operator]
            and (revised.id, IssueReview.UPDATED) not in row.reviews
            and any(r == revised.id for r, _ in row.reviews)
        ]
        mine = updated.pop((reader.email, revised.id), [])
        if not had:
            if mine:
                problems.append(f"{reader.email} got an Updated {revised.id} without the original")
            continue
        expected_updates += 1
        due = due_times(reader, revised.revised)  # type: ignore[arg-type]
        if len(mine) != 1 or mine[0].created_at not in due:
            problems.append(f"{reader.email}: Updated {revised.id} {len(mine)} times, due {due}")
    problems += [f"{a} got Updated {r}" for (a, r) in updated]

    print_summary(
        reviews, readers, rows, runs, seconds, owed, delivered, expected_updates, catch_up, problems
    )
    assert not problems, "\n".join(problems[:40])
    assert owed > 400 and expected_updates > 10


def print_summary(
    reviews: list[ReviewPlan],
    readers: dict[str, Reader],
    rows: list[LedgerRow],
    runs: int,
    seconds: float,
    owed: int,
    delivered: int,
    updates: int,
    catch_up: int,
    problems: list[str],
) -> None:
    issues: dict[tuple[str, str], set[int]] = defaultdict(set)
    sent: Counter[tuple[str, str]] = Counter()
    for row in rows:
        if row.cadence == "instant":
            slot = "as gathered"
        else:
            their = readers[row.email].rhythm_at(row.created_at)
            day = "Fri " if row.cadence == "weekly" else ""
            slot = f"{day}{their.send_hour:02d}:00 {their.timezone}"
        issues[(row.cadence or "", slot)].add(row.number)
        sent[(row.cadence or "", slot)] += 1
    withdrawn = [r for r in reviews if r.withdrawn]
    lines = [
        "",
        f"Simulated month {START:%Y-%m-%d} to {END:%Y-%m-%d} (UTC), crossing the DST ends of "
        f"2026-10-25 (Europe) and 2026-11-01 (America): {runs} digest runs, {seconds:.1f}s",
        f"reviews: {len(reviews)} written, {len(reviews) - 1} published "
        f"(1 pulled before its date, {len(withdrawn) - 1} withdrawn 6h after publication), "
        f"1 revised, 2 gathered late",
        f"readers: {len(initial_readers())} at the start, {len(JOINS)} joined, "
        f"{len(LEAVES)} left, {len(CHANGES)} rhythm changes",
        f"{'cadence':<8} {'slot (local)':<28} {'issues':>6} {'emails':>6}",
    ]
    for (cadence, slot), numbers in sorted(issues.items()):
        lines.append(f"{cadence:<8} {slot:<28} {len(numbers):>6} {sent[(cadence, slot)]:>6}")
    lines.append(f"{'total':<8} {'':<28} {len({r.number for r in rows}):>6} {len(rows):>6}")
    lines.append(
        f"exactly once: {owed} (reader, review) pairs owed, {delivered} delivered, "
        f"{owed - delivered} missing, duplicates and strays: "
        f"{sum('times' in p or 'not theirs' in p for p in problems)}; "
        f"Updated sent to the {updates} readers who had the first version; "
        f"{catch_up} issue(s) off-slot, each right after a rhythm change: "
        f"{'PASS' if not problems else 'FAIL'}"
    )
    print("\n".join(lines))


# --- daylight saving ------------------------------------------------------------------------

# The UTC instants of local 01:00 and 02:00 on the days around each change, and of the
# weekly Friday 08:00 before and after it. Spring: 02:00 does not exist on the change
# day, and is taken as the clocks read it (03:00 summer time). Autumn: 01:00 (New York)
# or 02:00 (Paris) happens twice, and is taken the first time.
DST = {
    ("Europe/Paris", "spring"): {
        1: ["2026-03-28 00:00", "2026-03-29 00:00", "2026-03-29 23:00"],
        2: ["2026-03-28 01:00", "2026-03-29 01:00", "2026-03-30 00:00"],
        "weekly": ["2026-03-27 07:00", "2026-04-03 06:00"],
    },
    ("Europe/Paris", "autumn"): {
        1: ["2026-10-23 23:00", "2026-10-24 23:00", "2026-10-26 00:00"],
        2: ["2026-10-24 00:00", "2026-10-25 00:00", "2026-10-26 01:00"],
        "weekly": ["2026-10-23 06:00", "2026-10-30 07:00"],
    },
    ("America/New_York", "spring"): {
        1: ["2026-03-07 06:00", "2026-03-08 06:00", "2026-03-09 05:00"],
        2: ["2026-03-07 07:00", "2026-03-08 07:00", "2026-03-09 06:00"],
        "weekly": ["2026-03-06 13:00", "2026-03-13 12:00"],
    },
    ("America/New_York", "autumn"): {
        1: ["2026-10-31 05:00", "2026-11-01 05:00", "2026-11-02 06:00"],
        2: ["2026-10-31 06:00", "2026-11-01 07:00", "2026-11-02 07:00"],
        "weekly": ["2026-10-30 12:00", "2026-11-06 13:00"],
    },
}
CHANGE_DAY = {
    ("Europe/Paris", "spring"): date(2026, 3, 29),
    ("Europe/Paris", "autumn"): date(2026, 10, 25),
    ("America/New_York", "spring"): date(2026, 3, 8),
    ("America/New_York", "autumn"): date(2026, 11, 1),
}


@pytest.mark.parametrize("case", list(DST), ids=lambda c: f"{c[0]}-{c[1]}")
def test_slots_across_a_dst_change_one_per_local_day_at_the_expected_instant(
    case: tuple[str, str],
) -> None:
    zone, _ = case
    change = CHANGE_DAY[case]
    days = [change - timedelta(days=1), change, change + timedelta(days=1)]
    for hour in (1, 2):
        daily = Rhythm("daily", hour, zone)
        expected = [utc(t) for t in DST[case][hour]]  # type: ignore[index]
        assert [daily.slot_on(day) for day in days] == expected
        for day, slot in zip(days, expected, strict=True):
            assert slot.astimezone(ZoneInfo(zone)).date() == day  # on its own local day
            assert daily.last_slot(slot) == slot
            assert daily.last_slot(slot - EPSILON) == daily.slot_on(day - timedelta(days=1))
            assert daily.next_slot(slot - EPSILON) == slot
            assert daily.next_slot(slot) == daily.slot_on(day + timedelta(days=1))
    weekly = Rhythm("weekly", 8, zone, "friday")
    before, after = (utc(t) for t in DST[case]["weekly"])  # type: ignore[union-attr]
    assert weekly.next_slot(before) == after
    assert weekly.last_slot(after - EPSILON) == before
    moment = before
    while moment < after:  # every hour of the week in between: the same last slot
        assert weekly.last_slot(moment) == before
        moment += timedelta(hours=1)


@pytest.mark.parametrize("case", list(DST), ids=lambda c: f"{c[0]}-{c[1]}")
def test_sends_across_a_dst_change_one_issue_per_local_day_and_week(
    site: Site, case: tuple[str, str]
) -> None:
    """Through send_digest: readers at 01:00 and 02:00 daily and Friday 08:00 weekly in
    the zone, a review every six hours, the job run every hour (slots are on the hour),
    from the Friday before the change to the Friday after."""
    zone, _ = case
    set_up(site)
    before, after = (utc(t) for t in DST[case]["weekly"])  # type: ignore[union-attr]
    start, end = before - timedelta(hours=12), after + timedelta(hours=2)
    with time_machine.travel(start - timedelta(days=1), tick=False) as traveller:
        for address, cadence, hour in [
            ("one", "daily", 1),
            ("two", "daily", 2),
            ("week", "weekly", 8),
        ]:
            cli_subscribe(site, f"{address}@example.com", cadence, hour, zone)
        store = Store(site.config.database_url)
        month = Month(site, store, traveller)
        moment, n = start, 0
        while moment < end:
            month.move(moment)
            if moment.hour % 6 == 0:
                n += 1
                site.write_review(f"r{n:03d}.md", review_text(f"Review {n}", moment))
                month.gather(moment)
            month.send(moment)
            moment += timedelta(hours=1)
        month.transport.close()
    rows = ledger(store)
    store.close()
    assert {r.status for r in rows} == {Delivery.SENT}
    by_reader: dict[str, list[LedgerRow]] = defaultdict(list)
    for row in rows:
        by_reader[row.email.split("@")[0]].append(row)
    for row in rows:
        assert row.created_at == row.slot_at, "each issue is sent at its slot"
    change = CHANGE_DAY[case]
    for name, hour in (("one", 1), ("two", 2)):
        slots = [r.slot_at for r in by_reader[name]]
        days = [s.astimezone(ZoneInfo(zone)).date() for s in slots if s is not None]
        assert len(days) == len(set(days)), f"two issues on a local day: {slots}"
        assert days == [days[0] + timedelta(days=k) for k in range(len(days))], "a day skipped"
        around = [s for s, day in zip(slots, days, strict=True) if abs((day - change).days) <= 1]
        assert around == [utc(t) for t in DST[case][hour]]  # type: ignore[index]
    assert [r.slot_at for r in by_reader["week"]] == [before, after]
    got = [rid for r in by_reader["week"] for rid, _ in r.reviews]
    assert len(got) == len(set(got)) and len(got) > 20  # the whole week, once


# --- the editor's controls ------------------------------------------------------------------


def at(site: Site, when: str, *args: str, ok: bool | None = True) -> str:
    """Run a syndicate command at a moment (UTC)."""
    with time_machine.travel(utc(when), tick=False):
        return site.cli(*args, ok=ok).output


def publish(site: Site, when: str, slug: str) -> None:
    site.write_review(f"{slug}.md", review_text(slug, utc(when)))
    at(site, when, "gather")


def issue_reviews(store: Store, number: int) -> list[str]:
    with store.session() as session:
        issue = session.scalars(select(DigestIssue).where(DigestIssue.number == number)).one()
        return [r.review_id for r in issue.reviews]


def readers_of(rows: list[LedgerRow], number: int) -> dict[str, str]:
    return {r.email: r.status for r in rows if r.number == number}


def test_approval_drafts_approve_skip_and_the_reviews_a_draft_holds(site: Site) -> None:
    set_up(
        site,
        archive=True,
        extra="    approval: true\n    editors: [editor@reelnotes.example.com]\n",
    )
    for address, cadence in [("wa", "weekly"), ("wb", "weekly"), ("dc", "daily")]:
        at(
            site,
            "2026-10-01 12:00",
            "subscribers",
            "add",
            f"{address}@example.com",
            "--cadence",
            cadence,
        )
    publish(site, "2026-10-05 10:00", "r1")
    # Tuesday 08:00 BST: the daily reader's issue is a draft; only the editor is emailed.
    out = at(site, "2026-10-06 07:00", "digest", "send", DIGEST)
    assert "issue(s) 1 wait for approval" in out
    [notice] = [parse(p) for p in site.emails()]
    assert to_address(notice) == "editor@reelnotes.example.com"
    assert str(notice["Subject"]).startswith("[Draft] ")
    drafts = at(site, "2026-10-06 07:05", "digest", "drafts", DIGEST)
    assert drafts.startswith("#1 ") and "daily  1 reader(s)  1 review(s)" in drafts
    preview = drafts.split("preview: ")[1].split()[0]
    assert preview.startswith("https://reelnotes.example.com/drafts/")
    assert preview in body_text(notice)
    # While draft 1 waits, r1 is spoken for: Thursday's draft for the daily reader has r2 only.
    publish(site, "2026-10-07 09:00", "r2")
    at(site, "2026-10-08 07:00", "digest", "send", DIGEST)
    # Friday: the weekly readers' draft has both.
    at(site, "2026-10-09 07:00", "digest", "send", DIGEST)
    with Store(site.config.database_url) as store:
        assert issue_reviews(store, 1) == ["r1"]
        assert issue_reviews(store, 2) == ["r2"]
        assert sorted(issue_reviews(store, 3)) == ["r1", "r2"]
        rows = ledger(store)
    assert readers_of(rows, 3) == {"wa@example.com": "queued", "wb@example.com": "queued"}
    assert len(site.emails()) == 3  # three notices, no issue yet

    out = at(site, "2026-10-09 09:00", "digest", "approve", DIGEST, "3")
    assert "2 sent, 0 failed" in out
    sent = [parse(p) for p in site.emails()]
    assert sorted(to_address(m) for m in sent if not str(m["Subject"]).startswith("[Draft]")) == [
        "wa@example.com",
        "wb@example.com",
    ]
    out = at(site, "2026-10-09 09:05", "digest", "skip", DIGEST, "1")
    assert "not sent to its 1 reader(s)" in out
    at(site, "2026-10-09 09:10", "digest", "approve", DIGEST, "2")
    # Approving what is not a draft is a clear error, and changes nothing.
    for number, state in (("1", "skipped"), ("3", "sent")):
        error = at(site, "2026-10-09 09:20", "digest", "approve", DIGEST, number, ok=False)
        assert f"issue {number} of {DIGEST} is not a draft (it is {state})" in error
    assert "has no issue 9" in at(site, "2026-10-09 09:20", "digest", "skip", DIGEST, "9", ok=False)
    with Store(site.config.database_url) as store:
        rows = ledger(store)
    assert readers_of(rows, 1) == {"dc@example.com": "skipped"}
    assert readers_of(rows, 2) == {"dc@example.com": "sent"}
    # The next send gives the daily reader r3 alone: not the skipped r1 again, nor r2.
    publish(site, "2026-10-09 12:00", "r3")
    at(site, "2026-10-10 07:00", "digest", "send", DIGEST)
    with Store(site.config.database_url) as store:
        assert issue_reviews(store, 4) == ["r3"]
        assert readers_of(ledger(store), 4) == {"dc@example.com": "queued"}
    assert "#4 " in at(site, "2026-10-10 07:05", "digest", "drafts", DIGEST)


def test_force_sends_what_is_pending_now_and_the_next_slot_only_what_is_new(site: Site) -> None:
    set_up(site)
    at(site, "2026-10-01 12:00", "subscribers", "add", "week@example.com", "--cadence", "weekly")
    at(
        site,
        "2026-10-01 12:00",
        "subscribers",
        "add",
        "day@example.com",
        "--cadence",
        "daily",
        "--timezone",
        "Asia/Tokyo",
    )
    publish(site, "2026-10-05 10:00", "r1")
    # Monday noon: neither hour has come (Tokyo 08:00 is 23:00 UTC, London Friday 07:00).
    out = at(site, "2026-10-05 12:00", "digest", "send", DIGEST)
    assert "nothing due now; 2 reader(s) wait for their hour" in out
    assert "the next at 2026-10-06 00:00 BST" in out and "digest force weekly" in out
    assert site.emails() == []
    out = at(site, "2026-10-05 12:05", "digest", "force", DIGEST)
    assert out.count(": 1 sent, 0 failed") == 2  # a daily and a weekly issue
    assert sorted(to_address(parse(p)) for p in site.emails()) == [
        "day@example.com",
        "week@example.com",
    ]
    publish(site, "2026-10-05 14:00", "r2")
    for moment in ("2026-10-05 23:00", "2026-10-06 12:00", "2026-10-09 07:00"):
        at(site, moment, "digest", "send", DIGEST)
    with Store(site.config.database_url) as store:
        rows = ledger(store)
    got = [(r.email.split("@")[0], r.slot_at, [i for i, _ in r.reviews]) for r in rows]
    assert sorted(got, key=lambda g: (g[0], g[1] is not None)) == [
        ("day", None, ["r1"]),
        ("day", utc("2026-10-05 23:00"), ["r2"]),
        ("week", None, ["r1"]),
        ("week", utc("2026-10-09 07:00"), ["r2"]),
    ]


def test_a_test_send_records_nothing_and_plan_shows_the_readers_reviews(
    site: Site, secret_env: str
) -> None:
    from syndicate.tokens import read_token

    set_up(site)
    at(site, "2026-10-01 12:00", "subscribers", "add", "reader@example.com", "--cadence", "weekly")
    at(site, "2026-10-01 12:00", "subscribers", "add", "other@example.com", "--cadence", "daily")
    publish(site, "2026-10-05 10:00", "r1")
    with Store(site.config.database_url) as store:
        before = ledger_counts(store)
        with store.session() as session:
            reader_id = session.scalars(
                select(Subscriber.id).where(Subscriber.email == "reader@example.com")
            ).one()
    out = at(
        site,
        "2026-10-07 12:00",
        "digest",
        "test",
        DIGEST,
        "--to",
        "someone@example.com",
        "--subscriber",
        "reader@example.com",
    )
    assert "nothing was recorded" in out
    [message] = [parse(p) for p in site.emails()]
    assert to_address(message) == "someone@example.com"
    assert str(message["Subject"]).startswith("[Test] ")
    token = body_text(message).split("/unsubscribe/")[1].split()[0].rstrip(">)")
    assert read_token(secret_env, "unsubscribe", token) == reader_id
    with Store(site.config.database_url) as store:
        assert ledger_counts(store) == before
        with store.session() as session:
            assert session.scalars(select(DigestIssue)).all() == []

    out = at(
        site,
        "2026-10-07 12:05",
        "digest",
        "plan",
        DIGEST,
        "--at",
        "2026-10-09 08:00",
        "--subscriber",
        "reader@example.com",
    )
    assert "Digest weekly at 2026-10-09 08:00 BST: 2 active reader(s)" in out
    assert "weekly   slot Fri 2026-10-09 08:00 BST" in out
    assert "1 reader(s)  1 new review(s)" in out
    assert "reader@example.com: weekly at 08:00 Europe/London" in out
    assert "  new      2026-10-05  r1" in out
    assert len(site.emails()) == 1  # plan sends nothing

    # The reader still gets the issue when due, and it is recorded.
    at(site, "2026-10-09 07:00", "digest", "send", DIGEST)
    with Store(site.config.database_url) as store:
        rows = ledger(store)
    assert [
        (r.email, r.status, [i for i, _ in r.reviews]) for r in rows if r.cadence == "weekly"
    ] == [("reader@example.com", "sent", ["r1"])]
