"""`syndicate worker`: send digest batches for whichever `syndicate` queued them."""

from __future__ import annotations

import os

import click

from syndicate.cli.app import App, friendly_errors, pass_app


@click.command()
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="Batches this worker sends at once (threads).",
)
@click.option(
    "--loglevel",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    help="Celery's log level.",
)
@pass_app
def worker(app: App, concurrency: int, loglevel: str) -> None:
    """Run a Celery worker that sends digest batches, until stopped (Ctrl-C, SIGTERM).

    Needs `workers.broker_url` (or `workers.broker_url_env`) in the YAML and the Celery
    extra: pip install 'syndicate[celery]'. Start as many as you like, on any machines
    that reach the broker and the database; each needs the same YAML and secrets as the
    sender. A worker killed mid-batch loses nothing: the broker hands its batch to
    another worker (after workers.visibility_timeout), and nobody gets an email twice.
    """
    config = app.config
    if not config.workers.enabled:
        raise click.ClickException(
            f"workers.broker_url is not set in {app.config_path}: "
            "there is no queue for a worker to take batches from"
        )
    with friendly_errors():
        from syndicate.workers import CeleryMissing, run_worker

        try:
            run_worker(str(os.fspath(app.config_path)), concurrency, loglevel)
        except CeleryMissing as exc:
            raise click.ClickException(str(exc)) from None
