"""`syndicate serve`: the reader's web side."""

from __future__ import annotations

import contextlib
import socket

import click

from syndicate.cli.app import App, friendly_errors, pass_app
from syndicate.web.server import make_server


@click.command()
@click.option("--host", metavar="HOST", help="Address to listen on. Default: server.host.")
@click.option("--port", type=int, metavar="PORT", help="Port to listen on. Default: server.port.")
@pass_app
def serve(app: App, host: str | None, port: int | None) -> None:
    """Serve the web side readers use until stopped (Ctrl-C).

    Sign-up (/subscribe), confirmation, one-click unsubscribe and preferences (the links
    in every email), the archive of past issues and the feeds (from feeds.output, with
    ETag, Last-Modified and gzip), and SendGrid's event webhook (/webhooks/sendgrid).
    """
    config = app.config
    with friendly_errors():
        with app.store():  # applies migrations before the first request
            pass
        server = make_server(config, host, port)
    try:  # a taken port is the usual first-run problem: say so before anything else
        socket.create_server((server.config.host, server.config.port)).close()
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on {server.config.host}:{server.config.port}: {exc.strerror}; "
            "stop what uses it, or pass --port (or set server.port)"
        ) from None
    where = f"http://{server.config.host}:{server.config.port}/"
    click.echo(f"syndicate: serving {config.site.title} at {where} (sign up: {where}subscribe)")
    click.echo(f"Links in emails point at {config.public_base_url}; Ctrl-C stops the server.")
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn stops, then passes Ctrl-C on
        server.run()
    click.echo("syndicate: web server stopped.")
