"""The store on SQLite and PostgreSQL: schema, constraints, the send claim, and round-trips.

Every test runs on both databases through the `database_url` fixture (a fresh SQLite file,
or a new database in a throwaway PostgreSQL cluster), except the last, which runs the
whole pipeline through the CLI against PostgreSQL the way tests/test_pipeline.py does on
SQLite.
"""

from __future__ import annotations

import email
import email.policy
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, func, inspect, select, update
from sqlalchemy.exc import IntegrityError, StatementError

from syndicate import digest as digests
from syndicate.config import Config
from syndicate.delivery import IssueBusy, Letter, OutboxTransport, Outcome, Recipient, Sender
from syndicate.delivery.ledger import LEASE
from syndicate.store import Delivery, DigestIssue, Review, ReviewTag, Store, Subscriber
from syndicate.store.database import MIGRATIONS, current_revision
from syndicate.store.models import Base
from tests.conftest import Site, make_site
from tests.pgcluster import create_database

HEAD = ScriptDirectory(str(MIGRATIONS)).get_current_head()


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    with Store(database_url) as opened:
        yield opened


@pytest.fixture
def db_site(tmp_path: Path, database_url: str, secret_env: str) -> Site:
    """The example site, storing into `database_url`, with its subscribers imported."""
    made = make_site(tmp_path / "site", database_url=database_url)
    made.cli("subscribers", "import", str(made.root / "subscribers.csv"))
    made.cli("gather")
    return made


def new_issue(config: Config, store: Store) -> int:
    """Record the next weekly issue (as `syndicate digest send` does) without sending it."""
    with store.session() as session:
        upcoming = digests.draft(config, session, config.digest("weekly"), datetime.now(UTC))
        assert upcoming is not None, "the example reviews should make an issue"
        return digests.record(session, upcoming).id


def outbox(config: Config) -> OutboxTransport:
    return OutboxTransport(config.resolve(config.delivery.outbox))


def make_review(review_id: str, **values: object) -> Review:
    when = datetime(2026, 3, 6, 9, 30, tzinfo=UTC)
    fields: dict[str, object] = {
        "id": review_id,
        "source": "reviews",
        "source_key": f"{review_id}.md",
        "fingerprint": "0" * 64,
        "slug": review_id,
        "url": f"https://reelnotes.example.com/reviews/{review_id}/",
        "title": review_id.replace("-", " ").title(),
        "published": when,
        "updated": when,
    }
    fields.update(values)
    return Review(**fields)


# --- schema ----------------------------------------------------------------------------


def test_migration_builds_every_table_on_an_empty_database_and_upgrade_repeats_safely(
    tmp_path: Path, database_url: str
) -> None:
    empty = create_engine(database_url)
    try:
        assert inspect(empty).get_table_names() == []
    finally:
        empty.dispose()

    site = make_site(tmp_path / "site", database_url=database_url)
    first = site.cli("db", "upgrade")
    assert f"is at revision {HEAD}" in first.output

    with Store(database_url, upgrade=False) as store:
        tables = set(inspect(store.engine).get_table_names())
        assert tables == {*Base.metadata.tables, "alembic_version"}
        with store.session() as session:
            session.add(Subscriber(email="kept@example.com", name="Kept"))

    again = site.cli("db", "upgrade")
    assert f"is at revision {HEAD}" in again.output
    with Store(database_url) as store, store.session() as session:
        assert current_revision(store.engine) == HEAD
        assert session.scalars(select(Subscriber.email)).all() == ["kept@example.com"]


def test_models_and_migrations_describe_the_same_schema(store: Store) -> None:
    # What `alembic revision --autogenerate` would write for this database: nothing.
    with store.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        differences = compare_metadata(context, Base.metadata)
    assert differences == [], f"models differ from {MIGRATIONS / 'versions'}: {differences}"


# --- constraints -----------------------------------------------------------------------


def test_deliveries_refuse_a_second_row_for_the_same_issue_and_subscriber(
    db_site: Site, database_url: str
) -> None:
    with Store(database_url) as store:
        issue_id = new_issue(db_site.config, store)
        with store.session() as session:
            subscriber_id = session.scalars(select(Subscriber.id).order_by(Subscriber.id)).first()
        # Recording the issue queued a row for each reader: a second one is refused.
        with pytest.raises(IntegrityError), store.session() as session:
            session.add(Delivery(issue_id=issue_id, subscriber_id=subscriber_id, attempts=2))

        with store.session() as session:
            rows = session.scalars(
                select(Delivery).where(
                    Delivery.issue_id == issue_id, Delivery.subscriber_id == subscriber_id
                )
            ).all()
        assert [(r.status, r.attempts) for r in rows] == [(Delivery.QUEUED, 0)]


# --- the send claim ---------------------------------------------------------------------


class HandOffOutbox(OutboxTransport):
    """The real outbox, which runs `meanwhile` once, before writing its first batch."""

    def __init__(self, folder: Path, meanwhile: Callable[[], None]) -> None:
        super().__init__(folder)
        self.meanwhile: Callable[[], None] | None = meanwhile

    def send(self, letter: Letter, recipients: Sequence[Recipient]) -> list[Outcome]:
        if self.meanwhile is not None:
            meanwhile, self.meanwhile = self.meanwhile, None
            meanwhile()
        return super().send(letter, recipients)


def test_a_second_sender_is_refused_while_the_first_is_sending(
    db_site: Site, database_url: str
) -> None:
    config = db_site.config
    refusals: list[str] = []
    # Two stores, two connection pools: as if `syndicate digest send` ran twice at once.
    with Store(database_url) as first, Store(database_url) as second:
        issue_id = new_issue(config, first)

        def second_sender_tries() -> None:
            with pytest.raises(IssueBusy) as refused:
                Sender(config, second, outbox(config)).send(issue_id)
            refusals.append(str(refused.value))
            assert db_site.emails() == [], "the refused sender must not send anything"

        folder = config.resolve(config.delivery.outbox)
        report = Sender(config, first, HandOffOutbox(folder, second_sender_tries)).send(issue_id)

        assert len(refusals) == 1 and "is being sent by process" in refusals[0]
        assert (report.sent, report.failed, report.complete) == (6, 0, True)
        assert len(db_site.emails()) == 6
        # The claim is released once the issue is done: a later send may proceed.
        assert Sender(config, second, outbox(config)).send(issue_id).sent == 0


def test_two_senders_racing_for_one_issue_send_each_email_once(
    db_site: Site, database_url: str
) -> None:
    config = db_site.config
    with Store(database_url) as first, Store(database_url) as second:
        issue_id = new_issue(config, first)
        start = threading.Barrier(2)
        sent: list[int] = []
        busy: list[str] = []

        def race(store: Store) -> None:
            start.wait()
            try:
                sent.append(Sender(config, store, outbox(config)).send(issue_id).sent)
            except IssueBusy as exc:
                busy.append(str(exc))

        threads = [threading.Thread(target=race, args=(s,)) for s in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)

        assert len(sent) + len(busy) == 2
        assert sum(sent) == 6  # whoever won, nobody's email went out twice
        with first.session() as session:
            statuses = session.scalars(
                select(Delivery.status).where(Delivery.issue_id == issue_id)
            ).all()
        assert statuses == [Delivery.SENT] * 6
        assert len(db_site.emails()) == 6


def test_a_crashed_senders_claim_blocks_until_its_lease_lapses_then_is_taken_over(
    db_site: Site, database_url: str
) -> None:
    config = db_site.config
    with Store(database_url) as store:
        issue_id = new_issue(config, store)
        # What a sender killed mid-batch leaves: its claim, and one row still SENDING.
        with store.session() as session:
            interrupted = session.scalars(select(Subscriber).order_by(Subscriber.id)).first()
            assert interrupted is not None
            session.execute(
                update(Delivery)
                .where(Delivery.issue_id == issue_id, Delivery.subscriber_id == interrupted.id)
                .values(status=Delivery.SENDING, attempts=1)
            )
            session.execute(
                update(DigestIssue)
                .where(DigestIssue.id == issue_id)
                .values(claimed_by="crashed-sender", claimed_until=datetime.now(UTC) + LEASE)
            )

        with pytest.raises(IssueBusy, match="claim lapses after"):
            Sender(config, store, outbox(config)).send(issue_id)
        assert db_site.emails() == []

        with store.session() as session:  # the lease runs out
            session.execute(
                update(DigestIssue)
                .where(DigestIssue.id == issue_id)
                .values(claimed_until=datetime.now(UTC) - timedelta(seconds=1))
            )
        report = Sender(config, store, outbox(config)).send(issue_id)

        assert (report.sent, report.unknown, report.complete) == (5, 1, True)
        recipients = {
            email.message_from_bytes(p.read_bytes(), policy=email.policy.default)["To"]
            for p in db_site.emails()
        }
        assert len(recipients) == 5
        assert not any(interrupted.email in to for to in recipients)
        with store.session() as session:
            issue = session.get_one(DigestIssue, issue_id)
            assert (issue.claimed_by, issue.status) == (None, DigestIssue.SENT)


# --- round-trips -----------------------------------------------------------------------


def test_times_come_back_as_the_same_instant_in_utc(store: Store) -> None:
    # 07:30 in New York on the morning US clocks go forward is 11:30 UTC.
    new_york = datetime(2026, 3, 8, 7, 30, 15, 123456, tzinfo=ZoneInfo("America/New_York"))
    london = datetime(2026, 10, 25, 1, 30, tzinfo=ZoneInfo("Europe/London"), fold=1)
    with store.session() as session:
        session.add(make_review("arrival", published=new_york, updated=london))

    with store.session() as session:
        review = session.get_one(Review, "arrival")
        # (An ambiguous local time never compares equal across zones, so compare in UTC.)
        assert review.published == new_york.astimezone(UTC)
        assert review.updated == london.astimezone(UTC)
        assert review.published.tzinfo is UTC and review.updated.tzinfo is UTC
        assert review.published.isoformat() == "2026-03-08T11:30:15.123456+00:00"
        assert review.updated.isoformat() == "2026-10-25T01:30:00+00:00"
        # Comparisons in SQL use the same instants.
        later = session.scalars(
            select(Review.id).where(Review.published > datetime(2026, 3, 8, 11, 30, tzinfo=UTC))
        ).all()
        assert later == ["arrival"]


def test_a_time_without_a_zone_is_refused(store: Store) -> None:
    with pytest.raises(StatementError, match="without a zone"), store.session() as session:
        session.add(make_review("no-zone", published=datetime(2026, 3, 6, 9, 30)))
    with store.session() as session:
        assert session.scalar(select(func.count()).select_from(Review)) == 0


def test_review_tags_come_back_in_order_and_can_be_reordered(store: Store) -> None:
    with store.session() as session:
        review = make_review("amelie")
        review.tags = ["romance", "comédie", "paris"]
        session.add(review)

    with store.session() as session:
        review = session.get_one(Review, "amelie")
        assert review.tags == ["romance", "comédie", "paris"]
        review.tags = ["paris", "romance", "audrey tautou"]  # reorder, keep two, add one

    with store.session() as session:
        assert session.get_one(Review, "amelie").tags == ["paris", "romance", "audrey tautou"]
        tagged = session.scalars(select(ReviewTag.review_id).where(ReviewTag.tag == "comédie"))
        assert tagged.all() == []
        tagged = session.scalars(select(ReviewTag.review_id).where(ReviewTag.tag == "paris"))
        assert tagged.all() == ["amelie"]


# --- the whole pipeline on PostgreSQL --------------------------------------------------


@pytest.fixture
def postgres_site(
    tmp_path: Path, postgres_server: str, secret_env: str, monkeypatch: pytest.MonkeyPatch
) -> Site:
    monkeypatch.delenv("SYNDICATE_CONFIG", raising=False)
    url = create_database(postgres_server, f"pipeline_{tmp_path.name.lower()}"[:60])
    made = make_site(tmp_path / "site", database_url=url)
    monkeypatch.chdir(made.root)
    return made


@pytest.mark.postgres
def test_run_once_on_postgresql_sends_each_subscriber_one_email(postgres_site: Site) -> None:
    site = postgres_site
    assert site.config.database_url.startswith("postgresql")
    site.cli("subscribers", "import", "subscribers.csv")
    result = site.cli("run", "--once")

    assert "10 new" in result.output
    emails = site.emails()
    assert len(emails) == 6
    messages = [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in emails
    ]
    addresses = sorted(m["To"].addresses[0].addr_spec for m in messages)
    listed = (site.root / "subscribers.csv").read_text(encoding="utf-8").splitlines()[1:]
    assert addresses == sorted(line.split(",")[0] for line in listed)
    assert all(m["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click" for m in messages)

    again = site.cli("run", "--once")
    assert "nothing new" in again.output
    assert len(site.emails()) == 6
    with Store(site.config.database_url) as store, store.session() as session:
        assert session.scalar(select(func.count()).select_from(Delivery)) == 6


@pytest.mark.postgres
def test_processes_starting_together_on_an_empty_postgresql_database_all_open_it(
    postgres_server: str,
) -> None:
    """Schedulers, workers and the web side start together after an upgrade: each brings
    the schema up to date on opening; one does it while the others wait for its lock."""
    from tests.pgcluster import create_database

    url = create_database(postgres_server, f"together_{os.getpid()}")
    opener = (
        "import sys; from syndicate.store import Store; "
        "from syndicate.store.database import current_revision; "
        "store = Store(sys.argv[1]); print(current_revision(store.engine))"
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", opener, url],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=120)[0] for p in processes]
    assert [p.returncode for p in processes] == [0] * 4, outputs
    assert [out.strip().splitlines()[-1] for out in outputs] == [HEAD] * 4
