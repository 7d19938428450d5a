"""`syndicate digest ...`: preview, send and inspect digests."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import click
from sqlalchemy import select

from syndicate import digest as digests
from syndicate import pipeline
from syndicate.cli.app import App, friendly_errors, pass_app, progress, show_path
from syndicate.delivery import SendReport, build_message, open_transport
from syndicate.delivery.ledger import letter_for, recipient_for
from syndicate.delivery.status import describe, issue_status
from syndicate.store import DigestIssue, Subscriber
from syndicate.subscribers import find

PREVIEW_KEY = "preview-only-key: links in previews do not work"


@click.group()
def digest() -> None:
    """Preview, send and inspect email digests."""


@digest.command()
@click.argument("name")
@click.option("--subscriber", "address", metavar="EMAIL", help="Preview as this subscriber.")
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the preview files. Default: var/preview.",
)
@pass_app
def preview(app: App, name: str, address: str | None, output: Path | None) -> None:
    """Write the next issue of digest NAME exactly as a subscriber would get it.

    Writes NAME.html, NAME.txt and NAME.eml and prints their paths. Nothing is recorded
    or sent. With nothing new to send, says so and writes nothing.
    """
    config = app.config
    output = output or config.resolve("var/preview")
    with friendly_errors(), app.store() as store, store.session() as session:
        settings = config.digest(name)
        draft = digests.draft(config, session, settings, datetime.now(UTC))
        if draft is None:
            click.echo(
                f"Digest {name}: nothing new since the last issue, so no issue would be sent."
            )
            return
        subscriber = find(session, address) if address else None
        if address and subscriber is None:
            raise click.ClickException(f"no subscriber with the address {address}")
        if subscriber is None:
            subscriber = Subscriber(id=0, email="reader@example.com", name="Sample Reader")
        key = os.environ.get(config.site.secret_env) or PREVIEW_KEY
        letter = letter_for(config, name, draft.number, draft.rendered)
        message = build_message(
            letter, recipient_for(config, subscriber, key, settings.name_fallback)
        )
    output.mkdir(parents=True, exist_ok=True)
    html_part = message.get_body(("html",))
    text_part = message.get_body(("plain",))
    assert html_part is not None and text_part is not None
    paths = {
        "html": output / f"{name}.html",
        "text": output / f"{name}.txt",
        "email": output / f"{name}.eml",
    }
    paths["html"].write_text(html_part.get_content(), encoding="utf-8")
    paths["text"].write_text(text_part.get_content(), encoding="utf-8")
    paths["email"].write_bytes(message.as_bytes())
    reviews = draft.selection.reviews if draft.selection else []
    click.echo(
        f"Issue {draft.number} of {name}: {str(message['Subject'])!r}, {len(reviews)} review(s)."
    )
    for kind, path in paths.items():
        click.echo(f"  {kind:<5} {show_path(path)}")


@digest.command()
@click.argument("name")
@click.option(
    "--no-wait",
    is_flag=True,
    help="With Celery workers (workers.broker_url): return once the batches are queued.",
)
@pass_app
def send(app: App, name: str, no_wait: bool) -> None:
    """Send digest NAME: finish interrupted issues, then send what is due now.

    Each reader gets the reviews no issue has brought them yet, at their rhythm: readers
    whose hour has not come wait (`syndicate digest force` sends now). Safe to run again
    at any time: nobody gets a review twice. With Celery workers configured, the batches
    are queued for them and this waits, showing progress, until they are all sent.
    """
    send_and_report(app, name, wait=not no_wait)


def send_and_report(app: App, name: str, wait: bool = True, force: bool = False) -> None:
    """Run a send and print what it did; exit status 1 when anyone failed."""
    config = app.config
    with friendly_errors(), app.store() as store, progress(f"Sending {name}") as bar:
        transport = open_transport(config)
        try:
            outcome = pipeline.send_digest(
                config, store, name, transport, progress=bar, wait=wait, force=force
            )
        finally:
            transport.close()
    click.echo(outcome.summary())
    report_errors(app, outcome.report)


def report_errors(app: App, report: SendReport | None) -> None:
    if report is None:
        return
    for error in report.errors[:20]:
        click.echo(f"  failed: {error}", err=True)
    if app.config.delivery.transport == "outbox":
        click.echo(f"Outbox: {show_path(app.config.resolve(app.config.delivery.outbox))}/")
    if report.failed:
        sys.exit(1)


@digest.command()
@click.argument("name")
@click.option("--limit", default=10, show_default=True, help="How many recent issues to show.")
@pass_app
def status(app: App, name: str, limit: int) -> None:
    """Show the recent issues of digest NAME and where each stands.

    Per issue: its subscribers, how many the transport accepted, how many are pending
    (not reached yet, to retry, or in a batch being sent), failed and unknown, with the
    reasons; and what SendGrid reported back (delivered, opened, clicked, bounced).
    """
    with friendly_errors(), app.store() as store, store.session() as session:
        app.config.digest(name)
        issues = session.scalars(
            select(DigestIssue)
            .where(DigestIssue.digest == name)
            .order_by(DigestIssue.number.desc())
            .limit(limit)
        ).all()
        if not issues:
            click.echo(f"Digest {name} has no issues yet.")
            return
        for issue in issues:
            for line in describe(issue_status(session, issue)):
                click.echo(line)
