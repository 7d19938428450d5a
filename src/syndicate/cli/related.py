"""`syndicate related`: bring the related lists up to date, rebuild them, or show one."""

from __future__ import annotations

from datetime import UTC, datetime

import click
from sqlalchemy.orm import Session

from syndicate import related
from syndicate.cli.app import App, pass_app
from syndicate.related.index import stored_list
from syndicate.store import Review


@click.command("related")
@click.argument("review_id", required=False)
@click.option("--rebuild", is_flag=True, help="Rebuild every list from scratch.")
@pass_app
def related_command(app: App, review_id: str | None, rebuild: bool) -> None:
    """Bring every review's related list up to date, or show REVIEW_ID's list.

    Gathering does this by itself, incrementally. --rebuild recomputes the whole archive
    and refreshes the word statistics the incremental updates keep frozen between builds
    (docs/related.md); it also happens by itself after the weights change or the archive
    grows by a fifth.
    """
    config = app.config
    with app.store() as store:
        report = related.refresh_store(config, store, full=rebuild)
        click.echo(f"Related: {report.summary()}.")
        if review_id is not None:
            with store.session() as session:
                show(session, review_id)


def show(session: Session, review_id: str) -> None:
    review = session.get(Review, review_id)
    if review is None:
        raise click.ClickException(f"no review with the id {review_id!r}")
    click.echo(f"{review.id}: {review.title}")
    for link in review.related:
        click.echo(f"  (author's) {link['title']} <{link['url']}>")
    now = datetime.now(UTC)
    for score, target in stored_list(session, review.id):
        other = session.get(Review, target)
        if other is None:
            continue
        when = "" if other.published <= now else f"  (published {other.published:%Y-%m-%d})"
        click.echo(f"  {score:6.3f}  {other.id}: {other.title}{when}")
