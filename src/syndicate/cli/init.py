"""`syndicate init`: a new site folder with a config, templates and one example review."""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

import click

from syndicate.cli.app import show_path
from syndicate.config import BUILTIN_TEMPLATES

STARTER = Path(__file__).resolve().parent.parent / "starter"


@click.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), default=".")
@click.option("--force", is_flag=True, help="Overwrite files that already exist.")
def init(directory: Path, force: bool) -> None:
    """Create a new site in DIRECTORY (default: here): config, templates, one review.

    Then edit DIRECTORY/config/syndicate.yaml and run `syndicate run --once` there.
    """
    plan = {
        STARTER / "syndicate.yaml": directory / "config" / "syndicate.yaml",
        STARTER / "subscribers.csv": directory / "subscribers.csv",
        **{
            review: directory / "reviews" / review.name
            for review in sorted((STARTER / "reviews").glob("*.md"))
        },
        **{
            template: directory / "templates" / template.name
            for template in sorted(BUILTIN_TEMPLATES.glob("*.j2"))
        },
    }
    existing = [target for target in plan.values() if target.exists()]
    if existing and not force:
        names = ", ".join(show_path(p) for p in existing)
        raise click.ClickException(
            f"not overwriting existing files ({names}); use --force to replace them"
        )
    for source, target in plan.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.parent.name == "reviews":
            # Dated today, so the new site's first digest has it to send.
            target.write_text(_published_now(source.read_text(encoding="utf-8")), "utf-8")
        else:
            shutil.copyfile(source, target)
        click.echo(f"  created {show_path(target)}")
    (directory / "var").mkdir(exist_ok=True)
    click.echo(
        f"\nNew site in {show_path(directory)}. Next:\n"
        f"  cd {show_path(directory)}\n"
        f"  export SYNDICATE_SECRET=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')\n"
        f"  syndicate check\n"
        f"  syndicate subscribers import subscribers.csv\n"
        f"  syndicate run --once"
    )


def _published_now(text: str) -> str:
    now = datetime.now(UTC).replace(microsecond=0).isoformat()
    return re.sub(r"(?m)^published:.*$", f"published: {now}", text, count=1)
