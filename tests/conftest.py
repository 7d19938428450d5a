"""Shared fixtures: a temporary site folder driven through the real CLI, and databases.

`site` builds a site in a temporary folder (the example reviews, a config, SQLite) and
runs `syndicate` commands against it the way an editor would. `database_url` gives a
fresh database, once on SQLite and once on a throwaway PostgreSQL cluster.
"""

from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from syndicate import config as configuration
from syndicate.cli import cli

# Real-browser fixtures (`browser`, `serve`, `window_size`): see tests/browser.py.
# A throwaway Redis server (`redis_url`): see tests/redisserver.py.
pytest_plugins = ["tests.browser", "tests.redisserver"]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_REVIEWS = ROOT / "examples" / "site" / "reviews"
EXAMPLE_SUBSCRIBERS = ROOT / "examples" / "site" / "subscribers.csv"
with EXAMPLE_SUBSCRIBERS.open(encoding="utf-8", newline="") as _csv:
    # The example site's readers, address -> name, as `subscribers import` reads them.
    EXAMPLE_READERS: dict[str, str] = {row["email"]: row["name"] for row in csv.DictReader(_csv)}
SECRET = "test-signing-secret"

SITE_CONFIG = """\
site:
  title: Reel Notes
  url: https://reelnotes.example.com/
  description: Film reviews.
  language: en
  timezone: Europe/London
  author: {{name: Reel Notes, email: editors@reelnotes.example.com}}
database:
  url: {database_url}
sources:
  - name: reviews
    type: files
    path: reviews
feeds:
  output: public
  items: 20
digests:
  - name: weekly
    title: The Week in Film
    subject: "{{{{ digest.title }}}}: {{{{ featured.title }}}}"
    first_issue_since: 2026-01-01
delivery:
  transport: outbox
  from: {{name: Reel Notes, email: newsletter@reelnotes.example.com}}
  outbox: var/outbox
schedules:
  gather: {{interval: 30m}}
  digests:
    weekly: {{cron: "0 8 * * fri"}}
"""


@dataclass
class Site:
    root: Path
    runner: CliRunner

    @property
    def config_path(self) -> Path:
        return self.root / "config" / "syndicate.yaml"

    @property
    def reviews(self) -> Path:
        return self.root / "reviews"

    @property
    def outbox(self) -> Path:
        return self.root / "var" / "outbox"

    @property
    def public(self) -> Path:
        return self.root / "public"

    @property
    def config(self) -> configuration.Config:
        return configuration.load(self.config_path)

    def cli(self, *args: str, ok: bool | None = True, input: str | None = None) -> Result:
        """Run `syndicate --config ... ARGS`. ok=True: must exit 0; False: must not; None: either."""
        result = self.runner.invoke(
            cli, ["--config", str(self.config_path), *args], input=input, catch_exceptions=False
        )
        if ok is True:
            assert result.exit_code == 0, f"syndicate {' '.join(args)} failed:\n{result.output}"
        elif ok is False:
            assert result.exit_code != 0, (
                f"syndicate {' '.join(args)} should fail:\n{result.output}"
            )
        return result

    def write_config(self, text: str) -> None:
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(text, encoding="utf-8")

    def write_review(self, name: str, text: str) -> Path:
        path = self.reviews / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    def emails(self) -> list[Path]:
        return sorted(self.outbox.glob("*.eml")) if self.outbox.exists() else []


def make_site(root: Path, database_url: str | None = None) -> Site:
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(EXAMPLE_REVIEWS, root / "reviews")
    shutil.copyfile(EXAMPLE_SUBSCRIBERS, root / "subscribers.csv")
    site = Site(root, CliRunner())
    site.write_config(SITE_CONFIG.format(database_url=database_url or "sqlite:///var/syndicate.db"))
    return site


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("SYNDICATE_SECRET", SECRET)
    return SECRET


@pytest.fixture
def site(tmp_path: Path, secret_env: str, monkeypatch: pytest.MonkeyPatch) -> Site:
    monkeypatch.delenv("SYNDICATE_CONFIG", raising=False)
    made = make_site(tmp_path / "site")
    monkeypatch.chdir(made.root)
    return made


# --- databases -------------------------------------------------------------------------


def _postgres_required() -> bool:
    return os.environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """One throwaway PostgreSQL cluster per test worker; tests get databases in it."""
    from tests.pgcluster import PostgresUnavailable, throwaway_cluster

    try:
        with throwaway_cluster() as url:
            yield url
    except PostgresUnavailable as exc:
        if _postgres_required():
            pytest.fail(f"PostgreSQL is required under CI=true but could not start: {exc}")
        pytest.skip(f"PostgreSQL is not available here: {exc}")


_database_counter = 0


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database: SQLite in a temporary file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'syndicate.db'}"
    from tests.pgcluster import create_database

    global _database_counter
    _database_counter += 1
    server = request.getfixturevalue("postgres_server")
    return create_database(server, f"test_{os.getpid()}_{_database_counter}")
