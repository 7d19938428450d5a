"""What every command shares: the config, the store, logging and progress bars."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path

import click

from syndicate import config as configuration
from syndicate.config import Config, ConfigError, MissingSecret, UnknownDigest
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
        store = Store(self.config.database_url)
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
    except (MissingSecret, TemplateError, UnknownDigest) as exc:
        raise click.ClickException(str(exc)) from None


def show_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
