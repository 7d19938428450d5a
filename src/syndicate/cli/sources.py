"""`syndicate sources`: each source's health, for the operator chasing a missing review."""

from __future__ import annotations

from datetime import datetime

import click
from sqlalchemy import func, select

from syndicate.cli.app import App, pass_app, show_path
from syndicate.store import Review, SourceState


@click.command("sources")
@pass_app
def sources_command(app: App) -> None:
    """List each source: its type, where it reads from, its last success and last error,
    and how many reviews it has brought in.

    Feeds and sitemaps are polled by `syndicate gather`; one that failed is tried again
    on the next run. The last error stays listed with its time: a later success means
    it is over.
    """
    config = app.config
    if not config.sources:
        click.echo("No sources: add one to the `sources` section of the config.")
        return
    zone = config.timezone
    with app.store() as store, store.session() as session:
        states = {state.name: state for state in session.scalars(select(SourceState))}
        counts = dict(
            session.execute(
                select(Review.source, func.count())
                .where(Review.withdrawn_at.is_(None))
                .group_by(Review.source)
            ).all()
        )

    def when(moment: datetime | None) -> str:
        return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z") if moment else "never"

    for source in config.sources:
        items = counts.get(source.name, 0)
        if source.type == "files":
            click.echo(f"{source.name} (files) {show_path(config.resolve(source.path))}")
            click.echo(f"  reviews:       {items}")
            continue
        state = states.get(source.name)
        click.echo(f"{source.name} ({source.type}) {source.url}")
        if state is not None and state.url != state.configured_url:
            click.echo(f"  moved to:      {state.url} (a permanent redirect)")
        if state is None or state.last_checked_at is None:
            click.echo("  not polled yet: `syndicate gather` polls it")
            continue
        click.echo(f"  last checked:  {when(state.last_checked_at)}")
        click.echo(f"  last success:  {when(state.last_success_at)}")
        if state.last_error:
            click.echo(f"  last error:    {when(state.last_error_at)}: {state.last_error}")
        else:
            click.echo("  last error:    none")
        click.echo(f"  reviews:       {items}")
