"""A review file's front matter, validated, with errors that name the file and line."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from syndicate.config import YamlLoader, describe_error, duplicate_keys, yaml_key_lines


class ReviewFileError(Exception):
    """A review file that cannot be gathered. The message names the file and the problem."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


# libyaml's C parser when PyYAML has it: parsing front matter is most of what a gather
# from scratch costs (4 ms a file in pure Python).
_Base: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", YamlLoader)  # type: ignore[assignment]


class _FrontMatterLoader(_Base):  # type: ignore[valid-type,misc]
    """Booleans are only true and false (as in YAML 1.2), not yes/no/on/off.

    Films are called Yes, No and On; `film: No` must not become False. An impossible date
    stays text, as in the config (YamlLoader).
    """


_FrontMatterLoader.yaml_constructors = {
    **_FrontMatterLoader.yaml_constructors,
    **YamlLoader.yaml_constructors,
}


_FrontMatterLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in YamlLoader.yaml_implicit_resolvers.items()
}
_FrontMatterLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _read_yaml(text: str) -> tuple[Any, yaml.Node | None]:
    """The data and its node tree (for line numbers), from one parse."""
    loader = _FrontMatterLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
    return data, node


_KEY_ON_LINE = re.compile(r"\s*(?:-\s+)?([^\s:#'\"\[{][^:#]*?)\s*:(?:\s|$)")


def _yaml_problem(exc: yaml.YAMLError, header: str) -> str:
    """Where the front matter stops being YAML, with the key on that line when there is one."""
    problem = getattr(exc, "problem", None) or str(exc)
    mark = getattr(exc, "problem_mark", None)
    context = getattr(exc, "context", None) or ""
    # An unclosed quote or bracket is only noticed lines later (often at the closing
    # '---'); the editor needs the line where it was opened.
    if context.startswith(("while scanning a quoted", "while parsing a flow")):
        mark = getattr(exc, "context_mark", None) or mark
    if mark is None:
        return f"front matter is not valid YAML: {problem}"
    where = f"line {mark.line + 2}: "  # +2: the header starts after the opening '---'
    lines = header.splitlines()
    key = _KEY_ON_LINE.match(lines[mark.line]) if mark.line < len(lines) else None
    if key:
        where += f"{key.group(1)}: "
    hint = ""
    if problem == "mapping values are not allowed here":
        hint = " (put a value that contains ': ' in quotes, and check the indentation)"
    return f"{where}front matter is not valid YAML: {problem}{hint}"


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
    # The editor's flag on an edit readers should hear about, in a sentence for them:
    # readers who got the earlier version see it in the digest (sources/revision.py).
    correction: str | None = None
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
        data, node = _read_yaml(header)
        data = data or {}
    except yaml.YAMLError as exc:
        raise ReviewFileError(path, _yaml_problem(exc, header)) from None
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
