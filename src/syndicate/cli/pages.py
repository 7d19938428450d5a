"""`syndicate pages`: write the archive's and the reviews' web pages."""

from __future__ import annotations

import click

from syndicate.cli.app import App, friendly_errors, pass_app, show_path
from syndicate.pages import build_pages


@click.command("pages")
@pass_app
def pages_command(app: App) -> None:
    """Write the web pages: the archive of digest issues and, if on, a page per review.

    They go into the feeds' output folder, for any web server; files whose content did
    not change are left alone. `run --once` and the scheduler write them too.
    """
    config = app.config
    with friendly_errors(), app.store() as store:
        report = build_pages(config, store)
    output = config.resolve(config.feeds.output)
    if not (config.pages.archive or config.pages.review_pages):
        click.echo("Pages: none are switched on (pages.archive and pages.review_pages).")
        return
    click.echo(f"Pages: {report.summary()} in {show_path(output)}/.")
    for path in report.written:
        click.echo(f"  wrote {show_path(path)}")
    for path in report.removed:
        click.echo(f"  removed {show_path(path)}")
    for problem in report.problems:
        click.echo(f"  warning: {problem}", err=True)
