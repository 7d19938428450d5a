"""`syndicate events ...`: what SendGrid reports back (bounces, complaints, opens, clicks)."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import click

from syndicate.cli.app import App, friendly_errors, pass_app, show_path
from syndicate.config import secret
from syndicate.delivery import events as webhook


@click.group()
def events() -> None:
    """Take in SendGrid's Event Webhook events: bounces, complaints, unsubscribes, opens."""


@events.command()
@click.argument("file", type=click.File("rb"))
@click.option(
    "--signature",
    metavar="S",
    help=f"The post's {webhook.SIGNATURE_HEADER} header: verify FILE with it.",
)
@click.option(
    "--timestamp",
    metavar="T",
    help=f"The post's {webhook.TIMESTAMP_HEADER} header (with --signature).",
)
@click.option(
    "--require-signature",
    is_flag=True,
    help="Refuse FILE unless --signature and --timestamp are given.",
)
@pass_app
def ingest(
    app: App,
    file: BinaryIO,
    signature: str | None,
    timestamp: str | None,
    require_signature: bool,
) -> None:
    """Apply the events in FILE (- for stdin): a JSON array as SendGrid's webhook posts it.

    Bounces and drops suppress the subscriber as bounced, spam reports as complained,
    unsubscribes as unsubscribed; delivered, open and click events are counted on the
    issue's deliveries. Each event is applied once (by its sg_event_id), so replaying a
    file is safe. A file that is not valid, or has an unknown event type, changes nothing.

    With --signature and --timestamp, FILE must be the exact body SendGrid signed; it is
    checked with the key in delivery.sendgrid.webhook_public_key_env.
    """
    given = getattr(file, "name", "-")
    name = "stdin" if given in ("<stdin>", "-") else show_path(Path(given))
    if (signature is None) != (timestamp is None):
        raise click.UsageError("--signature and --timestamp go together: give both or neither.")
    if require_signature and signature is None:
        raise click.UsageError("--require-signature needs --signature and --timestamp.")
    body = file.read()
    config = app.config
    if signature is not None and timestamp is not None:
        with friendly_errors():
            key = secret(
                config.delivery.sendgrid.webhook_public_key_env,
                "SendGrid event webhook public key",
            )
        try:
            valid = webhook.verify(key, body, signature, timestamp)
        except webhook.InvalidPublicKey as exc:
            raise click.ClickException(
                f"{exc} (the environment variable {config.delivery.sendgrid.webhook_public_key_env})"
            ) from None
        if not valid:
            raise click.ClickException(
                f"the signature does not match {name}: it is not the body SendGrid signed "
                "with that timestamp; nothing was applied."
            )
    try:
        raw = webhook.parse_payload(body)
        with app.store() as store:
            report = webhook.ingest(store, raw)
    except webhook.InvalidEvents as exc:
        raise click.ClickException(f"{name}: {exc}; nothing was applied.") from None
    verified = " (signature verified)" if signature is not None else ""
    click.echo(f"Events from {name}{verified}: {report.summary()}.")
