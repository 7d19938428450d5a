"""The `syndicate` command as editors and operators meet it: help, init, run --once, db,
and the errors they can fix themselves (told plainly, never with a traceback).

Choosing the config file and `syndicate check` on a bad config are in tests/test_config.py.
"""

from __future__ import annotations

import email
import email.policy
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import feedparser
import pytest
from alembic.script import ScriptDirectory
from click.testing import CliRunner, Result
from sqlalchemy import create_engine

from syndicate.cli import cli
from syndicate.store.database import alembic_config
from tests.conftest import Site, make_site

HEAD = ScriptDirectory.from_config(alembic_config(create_engine("sqlite://"))).get_current_head()


def invoke(*args: str) -> Result:
    """Run `syndicate ARGS` in the current folder; an escaping exception fails the test."""
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def edit_config(site: Site, old: str, new: str) -> None:
    config = site.config_path.read_text(encoding="utf-8")
    assert config.count(old) == 1, f"{old!r} should appear once in the config"
    site.write_config(config.replace(old, new))


def refused(result: Result) -> str:
    """The output of a command that must fail the friendly way: one message, status 1."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "Error: " in result.output
    return result.output


def all_commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in sorted(group.commands.items()):
        yield (*path, name)
        if isinstance(command, click.Group):
            yield from all_commands(command, (*path, name))


# --- help ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [(), *all_commands(cli)], ids=lambda p: " ".join(p) or "-")
def test_every_command_explains_itself(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"], prog_name="syndicate")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: {' '.join(('syndicate', *path))} ")
    command: click.Command = cli
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    assert command.help, f"syndicate {' '.join(path)} has no help text"
    first_line = command.help.strip().splitlines()[0]
    assert " ".join(first_line.split()) in " ".join(result.output.split())
    # The short form works too.
    assert CliRunner().invoke(cli, [*path, "-h"]).exit_code == 0


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"], prog_name="syndicate")
    assert result.exit_code == 0
    assert re.fullmatch(r"syndicate, version \S+\n", result.output)


# --- init ------------------------------------------------------------------------------------


def test_init_makes_a_site_that_checks_and_runs_by_following_its_own_steps(
    tmp_path: Path, secret_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SYNDICATE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    made = invoke("init", "reels")
    assert made.exit_code == 0, made.output
    site = tmp_path / "reels"
    assert (site / "config" / "syndicate.yaml").is_file()

    # Do what it says to do next, line by line.
    steps = made.output.split("Next:")[1].strip().splitlines()
    commands = [shlex.split(step)[1:] for step in steps if step.strip().startswith("syndicate ")]
    assert steps[0].split() == ["cd", "reels"]
    assert any("SYNDICATE_SECRET" in step for step in steps)
    assert commands[0] == ["check"] and commands[-1] == ["run", "--once"]
    monkeypatch.chdir(site)
    outputs = []
    for args in commands:
        result = invoke(*args)
        assert result.exit_code == 0, f"syndicate {' '.join(args)}:\n{result.output}"
        outputs.append(result.output)
        if args == ["check"]:
            assert "is valid" in result.output and "not found" not in result.output
            assert not (site / "var" / "syndicate.db").exists()

    feed = feedparser.parse((site / "public" / "feed.xml").read_bytes())
    assert feed.bozo == 0 and len(feed.entries) == 1
    review_title = feed.entries[0].title
    emails = sorted((site / "var" / "outbox").glob("*.eml"))
    assert emails, f"the new site's first run sent nothing:\n{outputs[-1]}"
    message = email.message_from_bytes(emails[0].read_bytes(), policy=email.policy.default)
    assert review_title.split(":")[0] in message["Subject"]


def test_init_does_not_overwrite_an_existing_site_unless_forced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert invoke("init", "reels").exit_code == 0
    config = tmp_path / "reels" / "config" / "syndicate.yaml"
    config.write_text("# my own settings\n", encoding="utf-8")

    out = refused(invoke("init", "reels"))
    assert "syndicate.yaml" in out and "--force" in out
    assert config.read_text(encoding="utf-8") == "# my own settings\n"

    assert invoke("init", "reels", "--force").exit_code == 0
    assert "site:" in config.read_text(encoding="utf-8")


# --- run --once, db upgrade --------------------------------------------------------------------


def paths_in(output: str) -> tuple[Path, Path]:
    feeds = re.search(r"^Feeds:.* in (\S+)/$", output, re.MULTILINE)
    outbox = re.search(r"^Outbox:\s+(\S+)/$", output, re.MULTILINE)
    assert feeds and outbox, output
    return Path(feeds.group(1)), Path(outbox.group(1))


def test_run_once_prints_where_the_feeds_and_emails_went(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site.cli("subscribers", "import", "subscribers.csv")
    # From the site folder the paths are short; from anywhere else they still lead there.
    feeds, outbox = paths_in(site.cli("run", "--once").output)
    assert not feeds.is_absolute()
    assert (feeds / "feed.xml").resolve() == site.public / "feed.xml"
    assert len(list(outbox.glob("*.eml"))) == 6

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    feeds, outbox = paths_in(site.cli("run", "--once").output)
    assert len(feedparser.parse((feeds / "feed.xml").read_bytes()).entries) == 10
    assert len(list(outbox.glob("*.eml"))) == 6


def test_db_upgrade_reports_the_revision(
    database_url: str, tmp_path: Path, secret_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = make_site(tmp_path / "site", database_url)
    monkeypatch.chdir(site.root)
    for _ in range(2):  # creating the schema, then finding it current
        out = site.cli("db", "upgrade").output
        assert f"at revision {HEAD}" in out
        assert database_url.split("://")[0] in out
    if database_url.startswith("sqlite"):
        assert (tmp_path / "syndicate.db").exists()


# --- errors an editor or operator can fix --------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("digest", "send", "nosuch"),
        ("digest", "preview", "nosuch"),
        ("digest", "status", "nosuch"),
        ("subscribers", "add", "ann@example.com", "--digest", "nosuch"),
    ],
    ids=" ".join,
)
def test_an_unknown_digest_is_named_with_the_known_ones(site: Site, args: tuple[str, ...]) -> None:
    edit_config(
        site,
        "delivery:\n",
        "  - name: monthly\n    title: The Month in Film\ndelivery:\n",
    )
    result = site.cli(*args, ok=False)
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "nosuch" in result.output
    assert "weekly" in result.output and "monthly" in result.output
    assert not site.emails()


def test_a_missing_secret_is_named_by_every_command_that_needs_it(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    edit_config(
        site, "  timezone: Europe/London\n", "  timezone: Europe/London\n  secret_env: REEL_KEY\n"
    )
    monkeypatch.delenv("SYNDICATE_SECRET")
    monkeypatch.delenv("REEL_KEY", raising=False)
    site.cli("subscribers", "import", "subscribers.csv")
    site.cli("gather")

    assert "REEL_KEY" in site.cli("check").output  # a warning; check itself passes
    # (`syndicate run`, which would otherwise start, is in tests/test_schedule.py.)
    for args in (["digest", "send", "weekly"], ["run", "--once"]):
        out = refused(site.cli(*args, ok=False))
        assert "REEL_KEY" in out and "not set" in out
    assert not site.emails()

    # With SMTP, the credentials' variables are named the same way.
    monkeypatch.setenv("REEL_KEY", "a-secret")
    edit_config(
        site,
        "  transport: outbox\n",
        "  transport: smtp\n  smtp: {host: 127.0.0.1, port: 1, password_env: REEL_SMTP_PASSWORD,"
        " username_env: REEL_SMTP_USER}\n",
    )
    monkeypatch.setenv("REEL_SMTP_USER", "reel")
    monkeypatch.delenv("REEL_SMTP_PASSWORD", raising=False)
    out = refused(site.cli("digest", "send", "weekly", ok=False))
    assert "REEL_SMTP_PASSWORD" in out


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("postgresql+psycopg://reel:hunter2@127.0.0.1:1/reel", "refused"),
        ("nosuchdb://somewhere/reel", "nosuchdb"),
        ("not a database url", "URL"),
    ],
    ids=["server-down", "unknown-kind", "not-a-url"],
)
def test_a_database_that_cannot_be_opened_is_a_clear_error(
    site: Site, url: str, reason: str
) -> None:
    edit_config(site, "url: sqlite:///var/syndicate.db", f"url: {url}")
    for args in (["gather"], ["db", "upgrade"]):
        out = refused(site.cli(*args, ok=False))
        assert "cannot open the database" in out and "database.url" in out
        assert reason in out
        assert "hunter2" not in out  # a password in the URL is not printed
    assert "hunter2" not in site.cli("check").output


def test_errors_in_a_real_process_are_a_message_without_traceback(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("syndicate")
    command = (
        [str(script)]
        if script.exists()
        else [sys.executable, "-c", "from syndicate.cli import main; main()"]
    )
    env = {k: v for k, v in os.environ.items() if k != "SYNDICATE_CONFIG"}
    empty = tmp_path / "empty"
    empty.mkdir()
    # No config here: the message says which file it looked for and how to point at one.
    done = subprocess.run(
        [*command, "gather"], cwd=empty, env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("Error: ")
    for word in ["config/syndicate.yaml", "--config", "SYNDICATE_CONFIG"]:
        assert word in done.stderr
    assert not done.stdout
    assert list(empty.iterdir()) == []
