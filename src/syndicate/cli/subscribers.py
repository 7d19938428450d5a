"""`syndicate subscribers ...`: the reader list."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from sqlalchemy import select

from syndicate import subscribers as readers
from syndicate.cli.app import App, pass_app
from syndicate.store import Subscriber


@click.group()
def subscribers() -> None:
    """Add, remove, list, import and export subscribers."""


def _digests(app: App, chosen: tuple[str, ...]) -> list[str]:
    known = [d.name for d in app.config.digests]
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        raise click.BadParameter(
            f"unknown digest(s): {', '.join(unknown)} (configured: {', '.join(known) or 'none'})",
            param_hint="--digest",
        )
    return list(chosen) or known


@subscribers.command()
@click.argument("email")
@click.option("--name", default="", help="The reader's name, used in greetings.")
@click.option(
    "--digest",
    "chosen",
    multiple=True,
    metavar="NAME",
    help="A digest to receive (repeatable). Default: all.",
)
@pass_app
def add(app: App, email: str, name: str, chosen: tuple[str, ...]) -> None:
    """Add EMAIL, or update it. Re-adding an unsubscribed or removed address mails it again."""
    digests = _digests(app, chosen)
    with app.store() as store, store.session() as session:
        try:
            result = readers.add(session, email, name, digests, reactivate=True)
        except readers.InvalidAddress as exc:
            raise click.ClickException(str(exc)) from None
        verb = "Added" if result.created else ("Re-activated" if result.reactivated else "Updated")
        click.echo(f"{verb} {result.subscriber.email} ({', '.join(result.subscriber.digests)}).")


@subscribers.command()
@click.argument("email")
@pass_app
def remove(app: App, email: str) -> None:
    """Stop mailing EMAIL. The address is kept as suppressed so no import brings it back."""
    with app.store() as store, store.session() as session:
        try:
            subscriber = readers.suppress(
                session, email, Subscriber.REMOVED, "removed by the editor"
            )
        except readers.InvalidAddress as exc:
            raise click.ClickException(str(exc)) from None
        if subscriber is None:
            raise click.ClickException(f"no subscriber with the address {email}")
        click.echo(f"Removed {subscriber.email}; it will not be mailed again unless re-added.")


@subscribers.command("list")
@click.option(
    "--status",
    type=click.Choice(
        ["active", "pending", "unsubscribed", "removed", "bounced", "complained", "all"]
    ),
    default="active",
    show_default=True,
    help="Which subscribers to list.",
)
@pass_app
def list_(app: App, status: str) -> None:
    """List subscribers: address, name, digests and status."""
    with app.store() as store, store.session() as session:
        query = select(Subscriber).order_by(Subscriber.email)
        if status != "all":
            query = query.where(Subscriber.status == status)
        count = 0
        for subscriber in session.scalars(query):
            digests = ",".join(subscriber.digests) or "-"
            click.echo(
                f"{subscriber.email}\t{subscriber.name or '-'}\t{digests}\t{subscriber.status}"
            )
            count += 1
        click.echo(f"{count} subscriber(s).", err=True)


@subscribers.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--digest",
    "chosen",
    multiple=True,
    metavar="NAME",
    help="Digest(s) for rows whose 'digests' column is empty (repeatable). Default: all.",
)
@pass_app
def import_(app: App, file: Path, chosen: tuple[str, ...]) -> None:
    """Import subscribers from a CSV file with columns email, name, digests.

    `digests` holds digest names separated by ';'. Addresses already on the list are
    merged, never duplicated; unsubscribed or removed addresses stay suppressed. A bad
    row is reported with its line number and skipped; the exit status is then 1.
    """
    digests = _digests(app, chosen)
    known = {d.name for d in app.config.digests}
    with app.store() as store, store.session() as session:
        report = readers.import_csv(session, readers.read_csv(file), str(file), digests, known)
    click.echo(f"Imported {file}: {report.summary()}.")
    for error in report.errors:
        click.echo(f"  skipped {error}", err=True)
    if report.errors:
        sys.exit(1)


@subscribers.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path), required=False)
@pass_app
def export(app: App, file: Path | None) -> None:
    """Export every subscriber, suppressed ones included, as CSV to FILE (default stdout)."""
    with app.store() as store, store.session() as session:
        if file is None:
            readers.export_csv(session, sys.stdout)
            return
        with file.open("w", encoding="utf-8", newline="") as handle:
            count = readers.export_csv(session, handle)
    click.echo(f"Exported {count} subscriber(s) to {file}.")
