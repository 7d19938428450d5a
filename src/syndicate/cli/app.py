"""What every command shares: the config, the store, logging and progress bars."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path

import click
from alembic.util import CommandError as AlembicError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from syndicate import config as configuration
from syndicate.config import Config, ConfigError, MissingSecret, UnknownDigest
from syndicate.delivery import IssueBusy, TransportUnavailable
from syndicate.digest import TemplateError
from syndicate.store import Store


class App:
    def __init__(self, config_path: str | None) -> None:
        self.config_path = configuration.config_path(config_path)

    @cached_property
    def config(self) -> Config:
        try:
            return configuration.load(self.config_path)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None

    @contextmanager
    def store(self) -> Iterator[Store]:
        url = self.config.database_url
        try:
            store = Store(url)
        except (SQLAlchemyError, ImportError, AlembicError) as exc:
            # A server that is down, a mistyped URL or a missing driver: the operator's to fix.
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            raise click.ClickException(
                f"cannot open the database {show_url(url)} (database.url in "
                f"{show_path(self.config.path)}): {reason}"
            ) from None
        try:
            yield store
        finally:
            store.close()


pass_app = click.make_pass_decorator(App)


def setup_logging(verbosity: int) -> None:
    level = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    # Third-party chatter stays at WARNING unless asked for with -vv.
    for noisy in ("apscheduler", "alembic", "sqlalchemy"):
        logging.getLogger(noisy).setLevel(logging.WARNING if verbosity < 2 else logging.INFO)


@contextmanager
def progress(label: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on a terminal; nothing (the logs say enough) otherwise."""
    if not sys.stderr.isatty():
        yield lambda done, total: None
        return
    bar = None
    try:

        def update(done: int, total: int) -> None:
            nonlocal bar
            if bar is None:
                bar = click.progressbar(length=total, label=label, file=sys.stderr)
                bar.__enter__()
            bar.update(done - bar.pos)

        yield update
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)


@contextmanager
def friendly_errors() -> Iterator[None]:
    """Turn the errors an editor can fix into one clear message and exit status 1."""
    try:
        yield
    except (IssueBusy, MissingSecret, TemplateError, TransportUnavailable, UnknownDigest) as exc:
        raise click.ClickException(str(exc)) from None


def show_url(url: str) -> str:
    """A database URL with any password masked."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def show_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
