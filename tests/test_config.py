"""The editor's YAML file: `syndicate check`, and the messages a mistake in it produces.

Every bad-config test edits the site's real config the way an editor would (a typo, a
wrong value, a missing section) and reads what `syndicate check` says. Expected line
numbers are looked up in the edited file, so they follow the file, not the code.
"""

from __future__ import annotations

import re
import typing
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import BaseModel

from syndicate import config as configuration
from syndicate.cli import cli
from tests.conftest import ROOT, Site


def edit_config(site: Site, old: str, new: str) -> str:
    """Replace `old` (which must be there, once) in the site's config; return the new text."""
    text = site.config_path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} should appear once in the config"
    text = text.replace(old, new)
    site.write_config(text)
    return text


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """The 1-based line of the `occurrence`-th line containing `needle`."""
    hits = [n for n, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(hits) >= occurrence, f"{needle!r} is not in the config {occurrence} time(s)"
    return hits[occurrence - 1]


def check_fails(site: Site) -> str:
    result = site.cli("check", ok=False)
    assert "Traceback" not in result.output
    # The editor is told which file is wrong.
    assert "syndicate.yaml" in result.output
    return result.output


def tree(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size) for p in root.rglob("*")
    }


# --- a valid config ----------------------------------------------------------------------


def test_check_reports_what_the_config_sets_up_and_changes_nothing(site: Site) -> None:
    before = tree(site.root)

    result = site.cli("check")

    out = result.output
    assert "is valid" in out
    assert "Reel Notes" in out and "https://reelnotes.example.com/" in out
    source_line = next(line for line in out.splitlines() if "source:" in line)
    assert "reviews" in source_line and "not found" not in source_line
    assert re.search(r"digest:\s+weekly \(The Week in Film\)", out)
    assert re.search(r"delivery:\s+outbox", out)
    # Each scheduled job, with a next run time that agrees with its cron expression.
    assert re.search(r"job:\s+gather next at", out)
    weekly = re.search(r"job:\s+digest:weekly next at (\d{4}-\d\d-\d\d \d\d:\d\d)", out)
    assert weekly, out
    when = datetime.strptime(weekly.group(1), "%Y-%m-%d %H:%M")
    assert (when.strftime("%A"), when.hour, when.minute) == ("Friday", 8, 0)
    # `check` changes nothing: no database, no folders, no file touched.
    assert tree(site.root) == before
    assert not (site.root / "var").exists()


def test_check_warns_about_a_missing_secret_but_still_passes(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SYNDICATE_SECRET")
    result = site.cli("check")
    assert "SYNDICATE_SECRET" in result.output and "not set" in result.output


def test_check_points_out_a_source_folder_that_does_not_exist(site: Site) -> None:
    edit_config(site, "path: reviews", "path: critiques")
    result = site.cli("check")
    source_line = next(line for line in result.output.splitlines() if "source:" in line)
    assert "critiques" in source_line and "not found" in source_line


def test_check_says_when_readers_hours_cannot_be_kept(site: Site) -> None:
    """send_hour sends at each reader's hour: a weekly cron for the digest cannot."""
    edit_config(site, "    first_issue_since: 2026-01-01", "    send_hour: 8")
    result = site.cli("check")
    assert "readers' default weekly 08:00 Europe/London" in result.output
    assert "its schedule runs every 7 days" in result.output
    edit_config(site, 'weekly: {cron: "0 8 * * fri"}', "weekly: {interval: 15m}")
    assert "warning" not in site.cli("check").output


# --- mistakes, each named with its file, line and key ------------------------------------


def test_a_misspelt_key_is_named_with_its_line(site: Site) -> None:
    text = edit_config(site, "  title: Reel Notes", "  titel: Reel Notes")
    out = check_fails(site)
    assert f"line {line_of(text, 'titel:')}: site.titel: unknown key" in out


def test_a_value_of_the_wrong_type_names_line_key_and_what_was_expected(site: Site) -> None:
    text = edit_config(site, "  items: 20", "  items: many")
    out = check_fails(site)
    assert f"line {line_of(text, 'items: many')}: feeds.items:" in out
    assert "integer" in out


def test_a_number_out_of_range_says_the_limit(site: Site) -> None:
    text = edit_config(site, "  items: 20", "  items: 0")
    out = check_fails(site)
    assert f"line {line_of(text, 'items: 0')}: feeds.items:" in out
    assert "greater than or equal to 1" in out


def test_a_missing_required_section_is_called_required(site: Site) -> None:
    text = site.config_path.read_text(encoding="utf-8")
    start = text.index("delivery:")
    end = text.index("schedules:")
    site.write_config(text[:start] + text[end:])
    out = check_fails(site)
    assert re.search(r"delivery: required", out)


def test_a_missing_key_inside_a_list_item_names_the_item(site: Site) -> None:
    edit_config(site, "    path: reviews\n", "")
    out = check_fails(site)
    assert "sources.0.path: required" in out


def test_a_bad_cron_expression_names_its_line(site: Site) -> None:
    text = edit_config(site, '"0 8 * * fri"', '"0 8 * * fry"')
    out = check_fails(site)
    assert f"line {line_of(text, 'fry')}: schedules.digests.weekly.cron:" in out
    assert "fry" in out


def test_an_interval_that_is_not_a_duration_names_its_line(site: Site) -> None:
    text = edit_config(site, "{interval: 30m}", "{interval: half an hour}")
    out = check_fails(site)
    assert f"line {line_of(text, 'half an hour')}: schedules.gather.interval:" in out


def test_invalid_yaml_gives_the_line(site: Site) -> None:
    # An unquoted colon inside a value: the commonest YAML slip.
    text = edit_config(site, "description: Film reviews.", "description: Films: reviewed.")
    out = check_fails(site)
    assert f"line {line_of(text, 'Films: reviewed.')}: not valid YAML" in out


def test_an_unknown_timezone_is_named(site: Site) -> None:
    text = edit_config(site, "timezone: Europe/London", "timezone: Europe/Lundon")
    out = check_fails(site)
    assert f"line {line_of(text, 'Lundon')}: site.timezone:" in out
    assert "Europe/Lundon" in out


def test_a_schedule_for_an_unknown_digest_names_its_line_and_the_known_digests(
    site: Site,
) -> None:
    text = edit_config(
        site, '    weekly: {cron: "0 8 * * fri"}', '    monthly: {cron: "0 8 1 * *"}'
    )
    out = check_fails(site)
    assert f"line {line_of(text, 'monthly:')}: schedules.digests.monthly:" in out
    assert "unknown digest" in out and "weekly" in out


def test_two_digests_with_the_same_name_are_refused_at_the_second(site: Site) -> None:
    text = edit_config(
        site,
        "\ndigests:\n",
        "\ndigests:\n  - name: weekly\n    title: Another weekly\n",
    )
    out = check_fails(site)
    second = line_of(text, "- name: weekly", occurrence=2)
    assert f"line {second}: digests.1.name:" in out
    assert "unique" in out and "weekly" in out


def test_a_key_given_twice_is_refused_not_silently_dropped(site: Site) -> None:
    text = edit_config(site, "  items: 20\n", "  items: 20\n  items: 5\n")
    out = check_fails(site)
    assert f"line {line_of(text, 'items: 5')}: feeds.items:" in out
    assert "twice" in out


def test_an_impossible_date_is_reported_not_a_crash(site: Site) -> None:
    text = edit_config(site, "first_issue_since: 2026-01-01", "first_issue_since: 2026-13-01")
    out = check_fails(site)
    assert f"line {line_of(text, '2026-13-01')}: digests.0.first_issue_since:" in out


def test_several_mistakes_are_reported_together(site: Site) -> None:
    text = edit_config(site, "  title: Reel Notes", "  titel: Reel Notes")
    text = edit_config(site, "timezone: Europe/London", "timezone: Mars/Olympus")
    out = check_fails(site)
    assert f"line {line_of(text, 'titel:')}: site.titel" in out
    assert f"line {line_of(text, 'Mars/Olympus')}: site.timezone" in out


def test_a_config_that_is_not_utf8_is_reported(site: Site) -> None:
    site.config_path.write_bytes(
        site.config_path.read_bytes().replace(b"Film reviews.", b"Cin\xe9ma reviews.")
    )
    out = check_fails(site)
    assert "UTF-8" in out


def test_every_command_refuses_a_bad_config_before_doing_anything(site: Site) -> None:
    edit_config(site, "  title: Reel Notes", "  titel: Reel Notes")
    result = site.cli("gather", ok=False)
    assert "site.titel: unknown key" in result.output
    assert not (site.root / "var").exists()


# --- which file is read -------------------------------------------------------------------


def other_config(site: Site, folder: Path, title: str) -> Path:
    """A copy of the site's config, elsewhere, with its own title."""
    path = folder / "elsewhere.yaml"
    text = site.config_path.read_text(encoding="utf-8").replace("Reel Notes", title)
    path.write_text(text, encoding="utf-8")
    return path


def test_a_missing_config_file_says_how_to_point_at_one(site: Site) -> None:
    result = CliRunner().invoke(cli, ["--config", "nowhere.yaml", "check"])
    assert result.exit_code != 0
    assert "nowhere.yaml" in result.output
    assert "--config" in result.output and "SYNDICATE_CONFIG" in result.output


def test_without_option_or_variable_the_default_file_is_used(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In the site folder (the fixture's working directory): config/syndicate.yaml.
    result = CliRunner().invoke(cli, ["check"])
    assert result.exit_code == 0, result.output
    assert "Reel Notes" in result.output
    # Anywhere else: the message names the default and the two ways to choose a file.
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["check"])
    assert result.exit_code != 0
    assert "config/syndicate.yaml" in result.output
    assert "--config" in result.output and "SYNDICATE_CONFIG" in result.output


def test_syndicate_config_variable_selects_the_file(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = other_config(site, tmp_path, "Second Reel")
    monkeypatch.setenv("SYNDICATE_CONFIG", str(path))
    result = CliRunner().invoke(cli, ["check"])
    assert result.exit_code == 0, result.output
    assert "Second Reel" in result.output and "Reel Notes" not in result.output


def test_config_option_wins_over_the_variable(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = other_config(site, tmp_path, "Second Reel")
    monkeypatch.setenv("SYNDICATE_CONFIG", str(site.config_path))
    result = CliRunner().invoke(cli, ["--config", str(path), "check"])
    assert result.exit_code == 0, result.output
    assert "Second Reel" in result.output


def test_relative_paths_in_a_config_folder_are_relative_to_the_site(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Run from elsewhere: the site's reviews and database are still the site's own.
    monkeypatch.chdir(tmp_path)
    config = configuration.load(site.config_path)
    assert config.resolve(config.sources[0].path) == site.reviews
    assert config.database_url == f"sqlite:///{site.root / 'var' / 'syndicate.db'}"


# --- the configs syndicate ships -----------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [ROOT / "config" / "syndicate.yaml", ROOT / "src" / "syndicate" / "starter" / "syndicate.yaml"],
    ids=["example-site", "starter"],
)
def test_shipped_configs_are_valid(path: Path) -> None:
    config = configuration.load(path)
    assert config.digests, "a shipped config should set up a digest"
    for source in config.sources:
        assert config.resolve(source.path).is_dir(), f"{source.name}: folder missing"
    for name in config.schedules.digests:
        config.digest(name)  # every scheduled digest exists


def test_the_shipped_example_config_passes_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNDICATE_SECRET", "x")
    before = tree(ROOT / "config")
    result = CliRunner().invoke(cli, ["--config", str(ROOT / "config" / "syndicate.yaml"), "check"])
    assert result.exit_code == 0, result.output
    assert "not found" not in result.output
    assert tree(ROOT / "config") == before


def config_keys(model: type[BaseModel], prefix: str = "") -> dict[str, str]:
    """Every key the YAML may hold, as `key: dotted.path`, from the pydantic models."""
    found: dict[str, str] = {}
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        key = field.alias or name
        found[f"{prefix}{key}"] = key
        pending = [field.annotation]
        while pending:
            annotation = pending.pop()
            pending.extend(typing.get_args(annotation))
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                found.update(config_keys(annotation, f"{prefix}{key}."))
    return found


def commented(lines: list[str], n: int) -> bool:
    """Line n has a comment, or a comment line sits just above or below it."""
    around = [lines[n - 1] if n else "", lines[n + 1] if n + 1 < len(lines) else ""]
    return " #" in lines[n] or any(line.lstrip().startswith("#") for line in around)


def test_the_example_config_shows_every_key_with_a_comment() -> None:
    """config/syndicate.yaml is the reference an editor reads: each key the config accepts
    appears in it (set, or commented out as an example), with a comment on its line or
    in the comment lines just above it."""
    lines = (ROOT / "config" / "syndicate.yaml").read_text().splitlines()
    undocumented = []
    for dotted, key in sorted(config_keys(configuration.Config).items()):
        # `key:` as a block key, inside a {flow: map}, or in a comment showing it.
        pattern = re.compile(rf"(^|[\s{{,#-]){re.escape(key)}:")
        places = [n for n, line in enumerate(lines) if pattern.search(line)]
        if not any(commented(lines, n) for n in places):
            undocumented.append(dotted)
    assert undocumented == [], "keys missing or without a comment in config/syndicate.yaml"
