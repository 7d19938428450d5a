"""`syndicate subscribers ...`: the reader list."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from sqlalchemy import select

from syndicate import subscribers as readers
from syndicate.cli.app import App, pass_app
from syndicate.digest.cadence import InvalidRhythm
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


OPTIONS = {"cadence": "--cadence", "send_hour": "--send-hour", "timezone": "--timezone"}


def _rhythm(app: App, digests: list[str], given: dict[str, str | None]) -> dict[str, object]:
    """The rhythm fields to set ("default": back to the digest's default), checked for
    each digest; the options not given are left out."""
    wanted = {name: value for name, value in given.items() if value is not None}
    if not wanted:
        return {}
    blanked = {
        name: "" if value.strip().lower() == "default" else value for name, value in wanted.items()
    }
    try:
        choice = readers.check_rhythm([app.config.digest(d) for d in digests], **blanked)
    except InvalidRhythm as exc:
        raise click.BadParameter(str(exc), param_hint=OPTIONS[exc.field]) from None
    return {name: getattr(choice, name) for name in wanted}


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
@click.option(
    "--cadence",
    metavar="CADENCE",
    help="instant (an email per review), daily or weekly; one the digest offers. "
    "'default': the digest's.",
)
@click.option(
    "--send-hour",
    metavar="HOUR",
    help="The reader's local hour for daily and weekly issues, 0 to 23. 'default': the digest's.",
)
@click.option(
    "--timezone",
    metavar="ZONE",
    help="The reader's time zone, an IANA name such as Europe/Paris. 'default': the digest's.",
)
@pass_app
def add(
    app: App,
    email: str,
    name: str,
    chosen: tuple[str, ...],
    cadence: str | None,
    send_hour: str | None,
    timezone: str | None,
) -> None:
    """Add EMAIL, or update it. Re-adding an unsubscribed or removed address mails it again.

    --cadence, --send-hour and --timezone set the reader's rhythm for the digests named
    (or all), whether new or already subscribed; an option left out changes nothing.
    """
    digests = _digests(app, chosen)
    rhythm = _rhythm(
        app, digests, {"cadence": cadence, "send_hour": send_hour, "timezone": timezone}
    )
    with app.store() as store, store.session() as session:
        try:
            result = readers.add(session, email, name, digests, reactivate=True, rhythm=rhythm)
        except readers.InvalidAddress as exc:
            raise click.ClickException(str(exc)) from None
        verb = "Added" if result.created else ("Re-activated" if result.reactivated else "Updated")
        click.echo(f"{verb} {result.subscriber.email} ({', '.join(result.subscriber.digests)}).")
        if rhythm:
            click.echo(f"  rhythm: {readers.rhythms_text(app.config, result.subscriber)}")


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
    """List subscribers: address, name, digests, status and rhythm.

    The rhythm is what each subscription gets, the reader's choices over the digest's
    defaults: "instant", "weekly" (when the editor's schedule runs) or "daily 07:00
    America/New_York"; "digest: rhythm; ..." for a reader of several digests.
    """
    with app.store() as store, store.session() as session:
        query = select(Subscriber).order_by(Subscriber.email)
        if status != "all":
            query = query.where(Subscriber.status == status)
        count = 0
        for subscriber in session.scalars(query):
            digests = ",".join(subscriber.digests) or "-"
            rhythm = readers.rhythms_text(app.config, subscriber)
            click.echo(
                f"{subscriber.email}\t{subscriber.name or '-'}\t{digests}\t{subscriber.status}"
                f"\t{rhythm}"
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

    Optional columns: status and created_at (as `export` writes them); cadence (instant,
    daily or weekly, one the digest offers), send_hour (0 to 23, the reader's local hour)
    and timezone (an IANA name such as Europe/Paris), set on the subscriptions a row
    creates; empty means the digest's default.
    """
    digests = _digests(app, chosen)
    known = {d.name for d in app.config.digests}
    with app.store() as store, store.session() as session:
        report = readers.import_csv(
            session,
            readers.read_csv(file),
            str(file),
            digests,
            known,
            configs=app.config.digests,
        )
    click.echo(f"Imported {file}: {report.summary()}.")
    for error in report.errors:
        click.echo(f"  skipped {error}", err=True)
    if report.errors:
        sys.exit(1)


@subscribers.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path), required=False)
@pass_app
def export(app: App, file: Path | None) -> None:
    """Export every subscriber, suppressed ones included, as CSV to FILE (default stdout).

    The columns are the ones `import` reads: email, name, digests, status, created_at,
    cadence, send_hour, timezone (empty: the digest's default). A reader whose digests
    have different rhythms gets one row per rhythm.
    """
    with app.store() as store, store.session() as session:
        if file is None:
            readers.export_csv(session, sys.stdout)
            return
        with file.open("w", encoding="utf-8", newline="") as handle:
            count = readers.export_csv(session, handle)
    click.echo(f"Exported {count} subscriber(s) to {file}.")
