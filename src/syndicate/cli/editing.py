"""The editor's controls over sends: drafts, approve, skip, force, test and plan.

Commands of the `syndicate digest` group, kept apart from the everyday ones in digest.py.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from datetime import UTC, datetime

import click
from sqlalchemy.orm import Session

from syndicate import digest as digests
from syndicate import pipeline
from syndicate.cli.app import App, friendly_errors, pass_app, progress
from syndicate.cli.digest import PREVIEW_KEY, digest, report_errors, send_and_report
from syndicate.config import Config, DigestConfig
from syndicate.delivery import Recipient, open_transport
from syndicate.delivery.ledger import letter_for, recipient_for
from syndicate.digest import approval
from syndicate.digest.cadence import rhythm_for
from syndicate.digest.plan import Plan
from syndicate.digest.selection import select_for_issue
from syndicate.related import Settings
from syndicate.store import Subscriber
from syndicate.subscribers import find


@digest.command()
@click.argument("name")
@pass_app
def drafts(app: App, name: str) -> None:
    """List the issues of digest NAME waiting for approval (digest `approval: true`)."""
    with friendly_errors(), app.store() as store, store.session() as session:
        app.config.digest(name)
        waiting = approval.drafts(session, name)
        if not waiting:
            click.echo(f"Digest {name} has no drafts waiting.")
            return
        for issue in waiting:
            click.echo(
                f"#{issue.number}  {issue.created_at:%Y-%m-%d %H:%M}  "
                f"{issue.cadence or ''}  {approval.readers(session, issue.id)} reader(s)  "
                f"{len(issue.reviews)} review(s)  {issue.subject}"
            )
            click.echo(f"    preview: {approval.preview_url(app.config, issue.id)}")


@digest.command()
@click.argument("name")
@click.argument("number", type=int)
@click.option("--no-wait", is_flag=True, help="With Celery workers: return once queued.")
@pass_app
def approve(app: App, name: str, number: int, no_wait: bool) -> None:
    """Send draft NUMBER of digest NAME to the readers it was planned for."""
    config = app.config
    with friendly_errors(), app.store() as store:
        try:
            with store.session() as session:
                config.digest(name)
                issue_id = approval.approve(session, name, number).id
        except approval.NotADraft as exc:
            raise click.ClickException(str(exc)) from None
        with progress(f"Sending {name} #{number}") as bar:
            transport = open_transport(config)
            try:
                reports, _ = pipeline.send_issues(
                    config, store, [issue_id], transport, bar, wait=not no_wait
                )
            finally:
                transport.close()
    for report in reports:
        click.echo(report.summary())
        report_errors(app, report)


@digest.command()
@click.argument("name")
@click.argument("number", type=int)
@pass_app
def skip(app: App, name: str, number: int) -> None:
    """Drop draft NUMBER of digest NAME: it is not sent, and its reviews are not sent
    to its readers later either (the skip is recorded in their ledger)."""
    with friendly_errors(), app.store() as store:
        try:
            with store.session() as session:
                app.config.digest(name)
                dropped = approval.skip(session, name, number)
        except approval.NotADraft as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"Issue {number} of {name} skipped: not sent to its {dropped} reader(s).")


@digest.command()
@click.argument("name")
@click.option("--no-wait", is_flag=True, help="With Celery workers: return once queued.")
@pass_app
def force(app: App, name: str, no_wait: bool) -> None:
    """Send digest NAME now, to every reader with something new, even before their hour.

    Still exactly once: a reader gets only the reviews no issue has brought them, and
    their next issue at their usual hour carries what is new after this one.
    """
    send_and_report(app, name, wait=not no_wait, force=True)


def _parse_at(config: Config, text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not a date and time; expected e.g. '2026-12-07 08:00'",
            param_hint="--at",
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=config.timezone)


def _reader(session: Session, address: str) -> Subscriber:
    subscriber = find(session, address)
    if subscriber is None:
        raise click.ClickException(f"no subscriber with the address {address}")
    return subscriber


@digest.command()
@click.argument("name")
@click.option(
    "--at",
    "at_text",
    metavar="'YYYY-MM-DD HH:MM'",
    help="The moment to plan for, in the schedule's zone unless an offset is given. Default: now.",
)
@click.option("--subscriber", "address", metavar="EMAIL", help="Show this reader's reviews.")
@pass_app
def plan(app: App, name: str, at_text: str | None, address: str | None) -> None:
    """Show who would receive what from digest NAME at a moment, without sending.

    Counts per cadence and send slot, the readers still waiting for their hour, and for
    one reader (--subscriber) the exact reviews. Reads the ledger as it is now.
    """
    config = app.config
    at = _parse_at(config, at_text)
    with friendly_errors(), app.store() as store, store.session() as session:
        settings = config.digest(name)
        planned = digests.plan(config, session, settings, at)
        zone = config.timezone
        click.echo(
            f"Digest {name} at {at.astimezone(zone):%Y-%m-%d %H:%M %Z}: "
            f"{planned.readers} active reader(s), {len(planned.groups)} issue(s) to "
            f"{planned.recipients} reader(s)"
        )
        for group in planned.groups:
            slot = (
                f"slot {group.key.slot_at.astimezone(zone):%a %Y-%m-%d %H:%M %Z}"
                if group.key.slot_at
                else "now"
            )
            updated = f", {len(group.key.updated)} updated" if group.key.updated else ""
            click.echo(
                f"  {group.key.cadence:<8} {slot:<32} {len(group.subscriber_ids):>7} reader(s)"
                f"  {len(group.key.new)} new review(s){updated}"
            )
        for when, count in sorted(planned.waiting.items()):
            click.echo(
                f"  waiting  until {when.astimezone(zone):%a %Y-%m-%d %H:%M %Z}: {count} reader(s)"
            )
        if address:
            _show_reader(config, settings, planned, _reader(session, address), at)


def _show_reader(
    config: Config,
    settings: DigestConfig,
    planned: Plan,
    subscriber: Subscriber,
    at: datetime,
) -> None:
    subscription = next((s for s in subscriber.subscriptions if s.digest == settings.name), None)
    if subscription is None or subscriber.status != Subscriber.ACTIVE:
        click.echo(f"{subscriber.email}: not an active reader of {settings.name}")
        return
    rhythm = rhythm_for(
        config, settings, subscription.cadence, subscription.send_hour, subscription.timezone
    )
    hour = f" at {rhythm.send_hour:02d}:00 {rhythm.timezone}" if rhythm.timed else ""
    click.echo(f"{subscriber.email}: {rhythm.cadence}{hour}")
    groups = planned.groups_of(subscriber.id)
    if not groups:
        upcoming = rhythm.next_slot(at)
        when = (
            f"; next slot {upcoming.astimezone(config.timezone):%Y-%m-%d %H:%M %Z}"
            if upcoming
            else ""
        )
        click.echo(f"  nothing at this moment{when}")
    for group in groups:
        for review_id in group.key.new:
            review = planned.reviews[review_id]
            click.echo(f"  new      {review.published:%Y-%m-%d}  {review.title}")
        for review_id in group.key.updated:
            review = planned.reviews[review_id]
            click.echo(f"  updated  {review.published:%Y-%m-%d}  {review.title}")


@digest.command("test")
@click.argument("name")
@click.option("--to", "to", required=True, metavar="EMAIL", help="Where the test goes.")
@click.option(
    "--subscriber",
    "address",
    metavar="EMAIL",
    help="Send it as this reader would get it: their reviews, their links. Default: the "
    "next issue as a reader who has had every earlier one would get it.",
)
@pass_app
def test_send(app: App, name: str, to: str, address: str | None) -> None:
    """Send the next issue of digest NAME to EMAIL as a test, recording nothing.

    Subject marked [Test]. With --subscriber, exactly as that reader would get it now
    (their cadence, their pending reviews, their unsubscribe link, which works: it is
    theirs). Their ledger is not touched: they still get the issue when it is due.
    """
    config = app.config
    now = datetime.now(UTC)
    with friendly_errors(), app.store() as store, store.session() as session:
        settings = config.digest(name)
        key = os.environ.get(config.site.secret_env) or PREVIEW_KEY
        if address:
            subscriber = _reader(session, address)
            planned = digests.plan(config, session, settings, now, force=True, only=subscriber.id)
            groups = planned.groups_of(subscriber.id)
            if not groups:
                raise click.ClickException(
                    f"{address} has nothing new in {name}: no issue would go to them now"
                )
            last = digests.last_issue(session, name)
            number = (last.number if last else 0) + 1
            rendered = []
            for group in groups:
                new = [planned.reviews[r] for r in group.key.new]
                updated = [planned.reviews[r] for r in group.key.updated]
                selection = select_for_issue(
                    session, settings, new, now, Settings.from_config(config.related), updated
                )
                rendered.append(digests.render_issue(config, settings, number, selection, now))
        else:
            draft = digests.draft(config, session, settings, now)
            if draft is None:
                raise click.ClickException(f"digest {name} has nothing new to test with")
            subscriber = Subscriber(id=0, email="reader@example.com", name="Sample Reader")
            number, rendered = draft.number, [draft.rendered]
        values = recipient_for(config, subscriber, key, settings.name_fallback).values
    transport = open_transport(config)
    try:
        for n, issue in enumerate(rendered):
            letter = replace(
                letter_for(config, name, number, issue),
                subject=f"[Test] {issue.subject}",
                tag=f"test-{name}-{time.time_ns()}-{n}",
            )
            outcomes = transport.send(letter, [Recipient(0, to, values)])
            for outcome in outcomes:
                if not outcome.ok:
                    raise click.ClickException(f"the test to {to} was not sent: {outcome.error}")
    finally:
        transport.close()
    click.echo(f"Sent {len(rendered)} test email(s) of {name} to {to}; nothing was recorded.")
