"""The `syndicate` command."""

from __future__ import annotations

import logging
import os
import sys
from datetime import UTC, datetime

import click

from syndicate import __version__, feeds, pipeline
from syndicate.cli import editing  # noqa: F401  (adds the editor's commands to `digest`)
from syndicate.cli.app import (
    App,
    friendly_errors,
    pass_app,
    setup_logging,
    show_path,
    show_url,
)
from syndicate.cli.digest import digest
from syndicate.cli.events import events
from syndicate.cli.init import init
from syndicate.cli.pages import pages_command
from syndicate.cli.related import related_command
from syndicate.cli.serve import serve
from syndicate.cli.sources import sources_command
from syndicate.cli.subscribers import subscribers
from syndicate.cli.worker import worker
from syndicate.config import Config, DigestConfig, format_duration, secret
from syndicate.delivery import open_transport
from syndicate.digest.cadence import rhythm_for, timing_problems
from syndicate.pages import check_problems as page_problems
from syndicate.schedule.runner import next_runs, run_forever, scheduler_status
from syndicate.store.database import current_revision
from syndicate.subscribers import rhythm_text
from syndicate.web.server import serve_in_background


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--config",
    "config_path",
    metavar="PATH",
    envvar="SYNDICATE_CONFIG",
    help="The YAML file to use. Default: $SYNDICATE_CONFIG, else config/syndicate.yaml.",
)
@click.option("-v", "--verbose", count=True, help="Log more: -v for each step, -vv for libraries.")
@click.option("-q", "--quiet", is_flag=True, help="Log errors only.")
@click.version_option(__version__, prog_name="syndicate")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, verbose: int, quiet: bool) -> None:
    """Gather film reviews, publish feeds, and send email digests.

    Every command reads one YAML file (see `syndicate check`). Start a new site with
    `syndicate init DIR`, or run the whole pipeline once with `syndicate run --once`.
    """
    setup_logging(-1 if quiet else verbose)
    ctx.obj = App(config_path)


@cli.command()
@pass_app
def check(app: App) -> None:
    """Validate the config file and report what it sets up. Changes nothing."""
    config = app.config
    click.echo(f"{show_path(config.path)} is valid.")
    click.echo(f"  site:      {config.site.title} <{config.site.url}>")
    click.echo(f"  database:  {show_url(config.database_url)}")
    for source in config.sources:
        if source.type != "files":  # a feed or sitemap: `syndicate sources` shows its health
            click.echo(f"  source:    {source.name} ({source.type}) {source.url}")
            continue
        folder = config.resolve(source.path)
        state = "" if folder.is_dir() else "  (folder not found!)"
        click.echo(f"  source:    {source.name} ({source.type}) {show_path(folder)}{state}")
    click.echo(
        f"  feeds:     {', '.join(config.feeds.formats)} -> {show_path(config.resolve(config.feeds.output))}"
    )
    for d in config.digests:
        rhythm = rhythms_text_for(config, d)
        click.echo(f"  digest:    {d.name} ({d.title}), readers' default {rhythm}")
    for problem in timing_problems(config):
        click.echo(f"  warning:   {problem}", err=True)
    made = [("archive", config.pages.archive), ("review pages", config.pages.review_pages)]
    click.echo(f"  pages:     {', '.join(what for what, on in made if on) or 'none'}")
    for problem in page_problems(config):
        click.echo(f"  warning:   {problem}", err=True)
    click.echo(f"  delivery:  {config.delivery.transport}")
    for job, when in next_runs(config):
        click.echo(
            f"  job:       {job.id} next at {when:%Y-%m-%d %H:%M %Z}"
            if when
            else f"  job: {job.id}"
        )
    for name in config.secret_envs():
        if not os.environ.get(name):
            click.echo(f"  warning:   environment variable {name} is not set", err=True)


@cli.command()
@pass_app
def gather(app: App) -> None:
    """Bring new, edited and deleted reviews from every source into the store.

    A file that cannot be read is reported with its path and the problem; every other
    file is still gathered, and the exit status is 1.
    """
    with app.store() as store:
        report = pipeline.gather(app.config, store)
    click.echo(f"Gathered: {report.summary()}.")
    for error in report.errors:
        click.echo(f"  error: {error}", err=True)
    if report.errors:
        sys.exit(1)


@cli.command("feeds")
@pass_app
def feeds_command(app: App) -> None:
    """Write every feed (RSS 2.0, Atom, JSON Feed) and its archive pages (RFC 5005).

    Documents whose items did not change are not rewritten, so their files, dates and
    ETags stay put; hubs (feeds.websub) are pinged for the feeds that changed.
    """
    with app.store() as store:
        report = feeds.build_feeds(app.config, store)
    click.echo(f"Feeds: {report.summary()}.")
    for path in report.written:
        click.echo(f"  wrote {show_path(path)}")


@cli.command()
@click.option(
    "--once", is_flag=True, help="Run gather, feeds and every due digest once, then exit."
)
@pass_app
def run(app: App, once: bool) -> None:
    """Run the schedule from the YAML until stopped (Ctrl-C or SIGTERM).

    Several may run against one database: one runs the jobs, the others stand by and one
    takes over when it stops (within schedules.takeover_after). With --once, run the whole
    pipeline a single time and print where each output went.
    """
    config = app.config
    if not once:
        if logging.getLogger().level > logging.INFO:
            logging.getLogger().setLevel(logging.INFO)
        if config.schedules.digests:
            # A digest job without its secrets would fail on its first run, days from now.
            with friendly_errors():
                secret(config.site.secret_env, "key that signs unsubscribe links")
                open_transport(config).close()
        with app.store():  # applies migrations before the scheduler touches the database
            pass
        server = None
        if config.server.enabled:
            with friendly_errors():
                try:
                    server, _ = serve_in_background(config)
                except OSError as exc:
                    raise click.ClickException(str(exc)) from None
            click.echo(f"syndicate: web side at http://{config.server.host}:{config.server.port}/")
        click.echo(f"syndicate: scheduler running with {show_path(config.path)}; Ctrl-C stops it.")
        try:
            run_forever(config)
        finally:
            if server is not None:
                server.should_exit = True
        return
    with app.store() as store, friendly_errors():
        report = pipeline.run_once(config, store)
    output = config.resolve(config.feeds.output)
    click.echo(f"Gathered: {report.gathered.summary()}.")
    for error in report.gathered.errors:
        click.echo(f"  error: {error}", err=True)
    click.echo(f"Feeds:    {report.feeds.summary()} in {show_path(output)}/")
    if report.pages is not None:
        click.echo(f"Pages:    {report.pages.summary()}")
        for problem in report.pages.problems:
            click.echo(f"  warning: {problem}", err=True)
    for outcome in report.digests:
        click.echo(f"Digest:   {outcome.summary()}")
    if config.delivery.transport == "outbox":
        click.echo(f"Outbox:   {show_path(config.resolve(config.delivery.outbox))}/")
    if not report.ok:
        sys.exit(1)


@cli.command()
@pass_app
def schedule(app: App) -> None:
    """List each scheduled job and when it runs next, the active scheduler, the last runs.

    Of several `syndicate run` on one database, the one holding the scheduler lease runs
    the jobs; the others wait to take over.
    """
    now = datetime.now(UTC)
    rows = next_runs(app.config, now)
    if not rows:
        click.echo("No jobs are scheduled: add a `schedules` section to the config.")
        return
    width = max(len(job.id) for job, _ in rows)
    for job, when in rows:
        how = (
            f"cron '{job.schedule.cron}'"
            if job.schedule.cron
            else f"every {format_duration(job.schedule.interval)}"
        )
        local = when.strftime("%Y-%m-%d %H:%M %Z") if when else "never"
        click.echo(f"{job.id:<{width}}  next {local}  ({how})")
    lines = scheduler_status(app.config)
    if lines:
        click.echo()
        for line in lines:
            click.echo(line)


@cli.group()
def db() -> None:
    """Manage the database schema."""


@db.command()
@pass_app
def upgrade(app: App) -> None:
    """Apply any pending migrations (they also run automatically on start)."""
    with app.store() as store:
        click.echo(
            f"Database {store.engine.url.render_as_string()} is at revision {current_revision(store.engine)}."
        )


cli.add_command(digest)
cli.add_command(events)
cli.add_command(subscribers)
cli.add_command(init)
cli.add_command(pages_command)
cli.add_command(related_command)
cli.add_command(serve)
cli.add_command(sources_command)
cli.add_command(worker)


def rhythms_text_for(config: Config, digest: DigestConfig) -> str:
    text = rhythm_text(rhythm_for(config, digest))
    if digest.cadence != "instant" and digest.send_hour is None:
        text += " (each issue when the schedule runs)"
    return text + (", drafts wait for approval" if digest.approval else "")


def main() -> None:
    cli(prog_name="syndicate")
