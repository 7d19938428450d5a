"""A review file's front matter, validated, with errors that name the file and line."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from syndicate.config import describe_error, duplicate_keys, read_yaml, yaml_key_lines


class ReviewFileError(Exception):
    """A review file that cannot be gathered. The message names the file and the problem."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def _to_datetime(value: Any) -> Any:
    # YAML reads `2026-11-20` as a date and `2026-11-20 09:00` as a naive datetime.
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime.combine(value, time(0, 0))
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(
                f"expected a date such as 2026-11-20 or 2026-11-20T09:00:00+01:00, got {value!r}"
            ) from None
    return value


def _to_tags(value: Any) -> Any:
    if isinstance(value, str):
        value = value.split(",")
    if isinstance(value, list):
        return [str(tag).strip() for tag in value if str(tag).strip()]
    return value


Moment = Annotated[datetime, BeforeValidator(_to_datetime)]


class RelatedLink(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str
    url: str


class FrontMatter(BaseModel):
    """The keys a review file may set. Unknown keys are kept out of the way, not refused."""

    # Numbers are text where text is expected: films are called 1917, 2046 and 300.
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True, coerce_numbers_to_str=True)

    title: Annotated[str, Field(min_length=1)]
    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=200)] | None = None
    slug: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=200)] | None = None
    film: str | None = None
    year: Annotated[int, Field(ge=1870, le=2100)] | None = None
    director: str | None = None
    rating: Annotated[float, Field(ge=0, le=5)] | None = None
    author: str | None = None
    published: Moment | None = None
    updated: Moment | None = None
    tags: Annotated[list[str], BeforeValidator(_to_tags)] = []
    image: str | None = None
    summary: str | None = None
    related: list[RelatedLink] = []
    featured: bool = False


def parse(raw: str, path: str, default_zone: Any = UTC) -> tuple[FrontMatter, str]:
    """Split a file into validated front matter and its body."""
    if raw.startswith("\ufeff"):
        raw = raw[1:]
    lines = raw.splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        raise ReviewFileError(path, "line 1: expected front matter starting with '---'")
    end = next((i for i in range(1, len(lines)) if lines[i].strip() in ("---", "...")), None)
    if end is None:
        raise ReviewFileError(path, "front matter is not closed: expected a line '---' after it")
    header = "".join(lines[1:end])
    body = "".join(lines[end + 1 :])
    try:
        data, node = read_yaml(header)
        data = data or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 2}: " if mark else ""
        raise ReviewFileError(
            path, f"{where}front matter is not valid YAML: {getattr(exc, 'problem', exc)}"
        ) from None
    if not isinstance(data, dict):
        raise ReviewFileError(path, "line 2: front matter must be a mapping of keys (title: ...)")
    repeated = duplicate_keys(node, offset=1)  # +1: line numbers count the opening '---'
    if repeated:
        raise ReviewFileError(path, "; ".join(repeated))
    try:
        meta = FrontMatter.model_validate(data)
    except ValidationError as exc:
        # +1: line numbers count the opening '---'.
        key_lines = {key: line + 1 for key, line in yaml_key_lines(node).items()}
        problems = "; ".join(describe_error(err, key_lines) for err in exc.errors())
        raise ReviewFileError(path, problems) from None
    for field in ("published", "updated"):
        moment = getattr(meta, field)
        if moment is not None and moment.tzinfo is None:
            setattr(meta, field, moment.replace(tzinfo=default_zone))
    return meta, body
