"""The editor's YAML file, validated.

Every error names the file, the line and the dotted key, and says what was expected,
because the person reading it is an editor, not the author of this module.
Secrets never live here: the YAML names environment variables, and `secret()` reads them.
"""

from __future__ import annotations

import fnmatch
import os
import re
import string
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

DEFAULT_CONFIG = Path("config/syndicate.yaml")
CONFIG_ENV = "SYNDICATE_CONFIG"


class ConfigError(Exception):
    """The configuration cannot be used. `problems` holds one line per problem."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(problems))

    def __str__(self) -> str:
        if self.problems == [NOT_FOUND]:
            return f"{self.path} not found (use --config PATH or SYNDICATE_CONFIG)"
        lines = "\n".join(f"  {p}" for p in self.problems)
        return f"{self.path} is not valid:\n{lines}"


NOT_FOUND = "file not found (use --config PATH or SYNDICATE_CONFIG)"


# --- value types -----------------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w)\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return timedelta(seconds=value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"expected a duration such as 30m, 6h, 1d or 2w, got {value!r}")
    amount, unit = match.groups()
    return timedelta(**{_UNITS[unit]: int(amount)})


def format_duration(value: timedelta) -> str:
    """The YAML spelling of a duration: 30m, 6h, 1d; the largest unit that divides it."""
    seconds = int(value.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"expected an IANA time zone such as Europe/Paris, got {name!r}") from None
    return name


def _check_absolute_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"expected an absolute http(s) URL, got {url!r}")
    return url if url.endswith("/") else url + "/"


def _check_env_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"expected the NAME of an environment variable, got {name!r}")
    return name


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
TimeZoneName = Annotated[str, AfterValidator(_check_timezone)]
AbsoluteUrl = Annotated[str, AfterValidator(_check_absolute_url)]
EnvName = Annotated[str, AfterValidator(_check_env_name)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- sections --------------------------------------------------------------------


class Person(Section):
    name: str
    email: str | None = None


class SiteConfig(Section):
    title: str
    url: AbsoluteUrl
    description: str = ""
    language: str = "en"
    author: Person
    timezone: TimeZoneName = "UTC"
    # Year used in tag: URIs (RFC 4151). Part of every feed item's id: never change it.
    id_year: int = Field(default=2026, ge=1990, le=2100)
    secret_env: EnvName = "SYNDICATE_SECRET"

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "localhost"


class DatabaseConfig(Section):
    url: str = "sqlite:///var/syndicate.db"


class FilesSource(Section):
    type: Literal["files"]
    name: str
    path: Path
    # Where each review lives on the web; {slug} and {id} are filled in.
    link: str = "{site_url}reviews/{slug}/"
    extensions: list[str] = [".md", ".markdown", ".html"]


def _check_source_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"expected an absolute http(s) URL, got {url!r}")
    return url  # as given: a feed's address may or may not end in "/"


class RemoteSource(Section):
    """What feed and sitemap sources share: an address, and limits on each request."""

    name: str
    url: Annotated[str, AfterValidator(_check_source_url)]
    # Seconds a request may take before the source counts as failed for this run.
    timeout: float = Field(default=20, gt=0, le=300)
    # Bytes a response may have (after gzip); a bigger one is abandoned, not half-read.
    max_bytes: int = Field(default=10_000_000, ge=10_000, le=500_000_000)
    # The zone of dates the site writes without one (feeds get this wrong surprisingly often).
    timezone: TimeZoneName = "UTC"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class FeedSource(RemoteSource):
    """Another site's RSS, Atom or JSON Feed; each entry becomes a review."""

    type: Literal["feed"]


class SitemapSource(RemoteSource):
    """A site with no feed: review pages are found in its sitemap and their article extracted."""

    type: Literal["sitemap"]
    # Which pages are reviews: a glob on the full URL (https://site/reviews/*), or a
    # regular expression when it starts with ^.
    pattern: str
    # Pages fetched per run at most; a big site's first run continues on the next runs.
    max_pages: int = Field(default=200, ge=1, le=100_000)

    @field_validator("pattern")
    @classmethod
    def _valid_pattern(cls, value: str) -> str:
        if value.startswith("^"):
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value

    def matches(self, url: str) -> bool:
        if self.pattern.startswith("^"):
            return re.search(self.pattern, url) is not None
        return fnmatch.fnmatchcase(url, self.pattern)


Source = Annotated[FilesSource | FeedSource | SitemapSource, Field(discriminator="type")]


FeedFormat = Literal["rss", "atom", "json"]
FeedKind = Literal["tag", "author", "source", "featured"]
_FEED_TEMPLATE_FIELDS = {"site", "value"}


def _check_hub_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"expected an absolute http(s) URL, got {url!r}")
    return url  # as given: a hub's endpoint may or may not end in "/"


def _check_feed_text(text: str) -> str:
    # Checked here, not at build time: str.format would fail every build with a traceback.
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:  # a lone "{" or "}"
        raise ValueError(f"{exc}; write {{{{ and }}}} for a literal brace") from None
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in _FEED_TEMPLATE_FIELDS:
            raise ValueError(f"unknown placeholder {{{field}}}; use {{site}} or {{value}}")
        if spec or conversion:
            written = (
                f"{{{field}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}}"
            )
            raise ValueError(
                f"{written}: placeholders take no conversion or format spec; write {{{field}}}"
            )
    return text


FeedText = Annotated[str, AfterValidator(_check_feed_text)]


_DIGITS = "\x00digits"  # a folder segment that is an archive page number


def _folder_segments(folder: str) -> list[list[str]]:
    """The segments of every folder a feed (family) writes to: its own folder, and its
    archive pages' (<folder>history/<n>/)."""
    own = folder.rstrip("/").split("/") if folder else []
    return [own, [*own, "history", _DIGITS]]


def _segment_pattern(segment: str) -> str:
    if segment == _DIGITS:
        return "[0-9]+"
    before, _, after = segment.partition("{slug}")
    return f"{re.escape(before)}[a-z0-9-]+{re.escape(after)}"


def _segments_overlap(a: str, b: str) -> bool:
    """Whether some folder name can match both segments (generously, for two {slug}s)."""
    fixed_a = a != _DIGITS and "{slug}" not in a
    fixed_b = b != _DIGITS and "{slug}" not in b
    if fixed_a and fixed_b:
        return a == b
    if fixed_a or fixed_b:
        literal, pattern = (a, b) if fixed_a else (b, a)
        return re.fullmatch(_segment_pattern(pattern), literal) is not None
    if _DIGITS in (a, b):
        other = b if a == _DIGITS else a
        return other == _DIGITS or other.replace("{slug}", "").isdigit() or other == "{slug}"
    before_a, _, after_a = a.partition("{slug}")
    before_b, _, after_b = b.partition("{slug}")
    return (before_a.startswith(before_b) or before_b.startswith(before_a)) and (
        after_a.endswith(after_b) or after_b.endswith(after_a)
    )


def _folders_overlap(a: str, b: str) -> bool:
    """Whether two feeds' folder patterns (with {slug} or without) can ever give the same
    folder, counting each one's archive pages: then one feed would overwrite the other."""
    return any(
        len(x) == len(y) and all(_segments_overlap(p, q) for p, q in zip(x, y, strict=True))
        for x in _folder_segments(a)
        for y in _folder_segments(b)
    )


class ExtraFeed(Section):
    """A named feed, or a family of feeds (one per tag, author or source)."""

    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")]
    kind: FeedKind
    # Where its files go under feeds.output, e.g. "critics/{slug}/"; {slug} is the tag,
    # author or source as a URL segment. Part of each feed's URL: changing it moves feeds.
    folder: str
    title: FeedText | None = None  # {site} is the site's title, {value} the tag/author/source
    description: FeedText | None = None

    @model_validator(mode="after")
    def _folder(self) -> ExtraFeed:
        folder = self.folder.strip()
        if not folder.endswith("/"):
            folder += "/"
        parts = folder.rstrip("/").split("/")
        if folder.startswith("/") or "://" in folder or any(p in ("", ".", "..") for p in parts):
            raise _conflict(
                ("folder",),
                f"expected a folder such as critics/{{slug}}/ under feeds.output, got {self.folder!r}",
            )
        if parts[0] in ("history", "archive"):
            # history/ holds the site feed's archive pages, archive/ the digests' issue pages.
            raise _conflict(("folder",), f"{parts[0]}/ is taken; choose another folder")
        per_value = self.kind != "featured"
        if per_value and folder.count("{slug}") != 1:
            raise _conflict(
                ("folder",),
                f"a {self.kind} feed needs {{slug}} once in its folder, e.g. {self.kind}s/{{slug}}/",
            )
        if not per_value and "{" in folder:
            raise _conflict(("folder",), "a featured feed is one feed: its folder takes no {slug}")
        object.__setattr__(self, "folder", folder)
        return self


class ArchiveConfig(Section):
    enabled: bool = True
    # Reviews per archive page; at most feeds.items, so the newest (still filling) page
    # never holds a review the subscription feed does not. Unset: feeds.items as it was
    # when each feed's archive began (the database keeps it, so raising items later moves
    # nothing). Set to another size, every page of every feed is paged again.
    page_size: int | None = Field(default=None, ge=1, le=1000)


class WebSubConfig(Section):
    hubs: list[Annotated[str, AfterValidator(_check_hub_url)]] = []
    # Seconds, in all, that the pings after a build may take; the build never waits longer.
    timeout: float = Field(default=10, gt=0, le=120)
    retries: int = Field(default=3, ge=0, le=10)  # retries of a ping that failed for now
    max_backoff: float = Field(default=2, gt=0)  # seconds between two retries at most


class FeedsConfig(Section):
    output: Path = Path("public")
    items: int = Field(default=20, ge=1, le=1000)
    formats: list[FeedFormat] = ["rss", "atom", "json"]
    per_tag: bool = True
    extra: list[ExtraFeed] = []
    archive: ArchiveConfig = ArchiveConfig()
    websub: WebSubConfig = WebSubConfig()
    # The site's web root on disk, to give poster enclosures their length; optional.
    media_root: Path | None = None
    # What the last build wrote, so the next renders only the documents that changed.
    state: Path = Path("var/feeds-state.json")

    @model_validator(mode="after")
    def _checks(self) -> FeedsConfig:
        names = [feed.name for feed in self.extra]
        # Each feed's folder, and whose it is: no two may ever name the same folder.
        folders = [("", "the site feed")]
        if self.per_tag:
            folders.append(("tags/{slug}/", "per_tag"))
        for index, feed in enumerate(self.extra):
            if feed.name in names[:index]:
                raise _conflict(
                    ("extra", index, "name"),
                    f"feed names must be unique; {feed.name!r} is repeated",
                )
            # Part of each feed's key (its Atom id): "site" is the site feed's, and the
            # per_tag feeds' keys are tag:<slug>.
            if feed.name == "site" or (feed.name == "tag" and self.per_tag):
                raise _conflict(
                    ("extra", index, "name"),
                    f"{feed.name!r} is taken by the "
                    + ("site feed" if feed.name == "site" else "per_tag feeds")
                    + "; choose another name",
                )
            for other, owner in folders:
                if feed.folder == other:
                    raise _conflict(
                        ("extra", index, "folder"),
                        f"{feed.folder!r} is already used by another feed ({owner})",
                    )
                if _folders_overlap(feed.folder, other):
                    raise _conflict(
                        ("extra", index, "folder"),
                        f"{feed.folder!r} and {other or '(the output folder)'!r} ({owner}) can "
                        "name the same folder for some tag, author or source, and one feed "
                        "would overwrite the other; choose folders that cannot meet",
                    )
            folders.append((feed.folder, f"feeds.extra {feed.name!r}"))
        if self.archive.page_size is not None and self.archive.page_size > self.items:
            raise _conflict(
                ("archive", "page_size"),
                f"expected at most feeds.items ({self.items}), so the newest archive page "
                "holds nothing the subscription feed does not",
            )
        return self


class PagesConfig(Section):
    """The static web pages written into feeds.output beside the feeds."""

    # A page per digest issue at archive/<digest>/<number>/ (the emails' "view in
    # browser" link), and archive/ and archive/<digest>/ indexes of them.
    archive: bool = True
    # A page per review at its link (sources' `link`, under site.url), for sites whose
    # reviews have no other home on the web (a folder of Markdown files).
    review_pages: bool = False


class RelatedWeights(Section):
    """What each shared trait adds to two reviews' relatedness (docs/related.md)."""

    film: float = Field(default=4.0, ge=0, le=100)
    title: float = Field(default=1.5, ge=0, le=100)
    director: float = Field(default=2.0, ge=0, le=100)
    tag: float = Field(default=1.0, ge=0, le=100)
    text: float = Field(default=3.0, ge=0, le=100)


class RelatedConfig(Section):
    """Related reviews: the lists kept per review, and what makes two reviews related."""

    # Links stored per review; the digest and the pages take theirs from these.
    keep: int = Field(default=10, ge=1, le=50)
    # Links shown on each review page (pages.review_pages), after the author's own.
    page_links: int = Field(default=5, ge=0, le=50)
    # Below this score a review is filler, not a relative, and is never linked.
    min_score: float = Field(default=0.5, ge=0)
    weights: RelatedWeights = RelatedWeights()


FeaturedStrategy = Literal["editors_pick", "highest_rated", "newest"]
Cadence = Literal["instant", "daily", "weekly"]
Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


class DigestConfig(Section):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")]
    title: str
    description: str = ""
    subject: str = "{{ digest.title }}: {{ featured.title }}"
    preheader: str = "{{ featured.summary }}"
    template: str = "digest.mjml.j2"
    text_template: str = "digest.txt.j2"
    featured: list[FeaturedStrategy] = ["editors_pick", "highest_rated", "newest"]
    related: int = Field(default=3, ge=0, le=20)
    # Send an issue even when nothing new was published since the last one.
    send_when_empty: bool = False
    # The first issue covers one period (for a weekly digest, 7 days); this overrides it.
    first_issue_since: date | datetime | None = None
    # Used when a subscriber has no name: "Hello, reader".
    name_fallback: str = "reader"
    # Readers' rhythm (docs/cadences.md). The cadence readers get unless they choose:
    # instant (an email per new review), daily or weekly (a digest).
    cadence: Cadence = "weekly"
    # The cadences readers may choose on the preferences page and in CSV imports.
    cadences: list[Cadence] = Field(default_factory=lambda: ["instant", "daily", "weekly"])
    # Readers' default local hour for daily and weekly issues. None: an issue goes to
    # every reader each time the digest's schedule runs (schedules.digests).
    send_hour: int | None = Field(default=None, ge=0, le=23)
    send_day: Weekday = "friday"  # the day weekly issues go out, in each reader's zone
    timezone: TimeZoneName | None = None  # readers' default zone; else site.timezone
    # Each issue waits as a draft for `syndicate digest approve`; editors are emailed.
    approval: bool = False
    editors: list[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")]] = []

    @model_validator(mode="after")
    def _cadences(self) -> DigestConfig:
        if self.cadence not in self.cadences:
            raise ValueError(
                f"cadence {self.cadence!r} must be one of the cadences readers may choose "
                f"({', '.join(self.cadences)})"
            )
        if self.approval and not self.editors:
            raise ValueError("approval: true needs editors: the addresses told of each draft")
        return self


class SmtpConfig(Section):
    host: str = "localhost"
    port: int = Field(default=587, ge=1, le=65535)
    security: Literal["starttls", "ssl", "none"] = "starttls"
    username_env: EnvName | None = None
    password_env: EnvName | None = None
    timeout: float = Field(default=30, gt=0)


class SendGridConfig(Section):
    api_key_env: EnvName = "SENDGRID_API_KEY"
    # SendGrid's API; https://api.eu.sendgrid.com for EU data residency; a local server in tests.
    base_url: AbsoluteUrl = "https://api.sendgrid.com"
    sandbox: bool = False  # SendGrid validates each request but delivers nothing
    concurrency: int = Field(default=4, ge=1, le=32)  # requests in flight at once
    categories: list[Annotated[str, Field(min_length=1, max_length=255)]] = Field(
        default_factory=list, max_length=10
    )
    timeout: float = Field(default=30, gt=0)  # seconds per request
    # Server errors and dropped connections are retried with capped exponential backoff.
    retries: int = Field(default=5, ge=0, le=20)
    max_backoff: float = Field(default=60, gt=0)  # seconds between two retries at most
    # The Event Webhook's verification key (Mail Settings > Event Webhook > Signed Event Webhook).
    webhook_public_key_env: EnvName = "SENDGRID_WEBHOOK_PUBLIC_KEY"


class DeliveryConfig(Section):
    transport: Literal["outbox", "smtp", "sendgrid"] = "outbox"
    sender: Person = Field(alias="from")
    reply_to: str | None = None
    outbox: Path = Path("var/outbox")
    smtp: SmtpConfig = SmtpConfig()
    sendgrid: SendGridConfig = SendGridConfig()
    # Optional mailto: address offered in List-Unsubscribe beside the one-click URL.
    unsubscribe_mailto: str | None = None
    # Subscribers per batch; a SendGrid request carries one batch, so at most 1,000.
    batch_size: int | None = Field(default=None, ge=1, le=1000)

    @property
    def batch(self) -> int:
        """The batch size in effect: as set, else 1,000 for SendGrid and 100 otherwise."""
        return self.batch_size or (1000 if self.transport == "sendgrid" else 100)


def _check_broker_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in {"redis", "rediss", "amqp", "amqps", "pyamqp", "sentinel"}:
        raise ValueError(
            f"expected a Redis or RabbitMQ URL (redis://host:6379/0, amqp://host//), got {value!r}"
        )
    if parts.password:
        raise ValueError(
            "the broker URL holds a password: put the whole URL in an environment "
            "variable and name it in workers.broker_url_env instead"
        )
    return value


class WorkersConfig(Section):
    """Celery fan-out (pip install 'syndicate[celery]'): set, digest sends are split into
    batches that `syndicate worker` processes on any machine send."""

    broker_url: Annotated[str, AfterValidator(_check_broker_url)] | None = None
    # For a URL with credentials: the environment variable holding it.
    broker_url_env: EnvName | None = None
    queue: str = Field(default="syndicate", min_length=1, max_length=100)
    # Redis: a batch taken by a worker that then died goes to another after this long.
    visibility_timeout: Duration = timedelta(hours=1)

    @model_validator(mode="after")
    def _one_url(self) -> WorkersConfig:
        if self.broker_url and self.broker_url_env:
            raise ValueError("set workers.broker_url or workers.broker_url_env, not both")
        if self.visibility_timeout < timedelta(seconds=1):
            raise ValueError("workers.visibility_timeout must be at least 1s")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.broker_url or self.broker_url_env)

    def url(self) -> str:
        if self.broker_url_env:
            return secret(self.broker_url_env, "Celery broker URL (workers.broker_url_env)")
        if not self.broker_url:
            raise ValueError("workers.broker_url is not set")
        return self.broker_url


class ServerConfig(Section):
    # The public address of syndicate's web side: unsubscribe and preference links use it.
    base_url: AbsoluteUrl | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    # `syndicate run` also serves the web side, beside the scheduler.
    enabled: bool = False
    # Days a confirmation link stays valid.
    confirm_days: int = Field(default=7, ge=1, le=90)
    # Sign-ups accepted per hour from one address, and from one client IP.
    signups_per_address: int = Field(default=3, ge=1)
    signups_per_ip: int = Field(default=20, ge=1)
    # Behind a reverse proxy: its addresses. Only requests from these may say, in
    # X-Forwarded-For, which client they come from (anyone else could claim any address
    # and dodge the sign-up limit).
    trusted_proxies: list[str] = []


class JobSchedule(Section):
    cron: str | None = None
    interval: Duration | None = None
    timezone: TimeZoneName | None = None

    @model_validator(mode="after")
    def _one_of(self) -> JobSchedule:
        if (self.cron is None) == (self.interval is None):
            raise ValueError("expected exactly one of 'cron' or 'interval'")
        return self

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        if value is not None:
            from apscheduler.triggers.cron import CronTrigger

            try:
                CronTrigger.from_crontab(value, timezone="UTC")
            except ValueError as exc:
                raise ValueError(
                    f"expected a 5-field cron expression (minute hour day month weekday), "
                    f"got {value!r}: {exc}"
                ) from None
        return value


class SchedulesConfig(Section):
    timezone: TimeZoneName | None = None
    misfire_grace: Duration = timedelta(hours=1)
    # Several `syndicate run` on one database: one runs the jobs and renews a lease of this
    # length; when it stops renewing, another takes over after at most this long.
    takeover_after: Duration = timedelta(seconds=60)
    gather: JobSchedule | None = None
    feeds: JobSchedule | None = None
    digests: dict[str, JobSchedule] = {}

    @field_validator("takeover_after")
    @classmethod
    def _long_enough(cls, value: timedelta) -> timedelta:
        # The active scheduler renews every third of it; a database round trip must fit.
        if value < timedelta(seconds=3):
            raise ValueError(
                f"takeover_after must be at least 3s (the active scheduler renews its lease "
                f"every third of it), got {format_duration(value)}"
            )
        return value


class Config(Section):
    site: SiteConfig
    database: DatabaseConfig = DatabaseConfig()
    sources: list[Source] = []
    feeds: FeedsConfig = FeedsConfig()
    pages: PagesConfig = PagesConfig()
    digests: list[DigestConfig] = []
    related: RelatedConfig = RelatedConfig()
    delivery: DeliveryConfig
    server: ServerConfig = ServerConfig()
    workers: WorkersConfig = WorkersConfig()
    schedules: SchedulesConfig = SchedulesConfig()
    templates: Path | None = None

    # Set by load(): the file this came from, so relative paths are relative to it.
    path: Path = Field(default=Path("syndicate.yaml"), exclude=True)

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        # Each problem carries the key it is about, so the message can name its line.
        names = [d.name for d in self.digests]
        for index, name in enumerate(names):
            if name in names[:index]:
                raise _conflict(
                    ("digests", index, "name"), f"digest names must be unique; {name!r} is repeated"
                )
            if name.isdigit() and self.pages.archive and self.feeds.archive.enabled:
                # archive/<digest>/ holds its issue pages; archive/<n>/ is a feed archive page.
                raise _conflict(
                    ("digests", index, "name"),
                    f"a digest name must not be only digits ({name!r}): archive/{name}/ "
                    f"is also where the feeds' archive page {name} goes",
                )
        unknown = [name for name in self.schedules.digests if name not in names]
        if unknown:
            raise _conflict(
                ("schedules", "digests", unknown[0]),
                f"schedules.digests names unknown digests: {', '.join(unknown)} "
                f"(configured: {', '.join(names) or 'none'})",
            )
        source_names = [s.name for s in self.sources]
        for index, name in enumerate(source_names):
            if name in source_names[:index]:
                raise _conflict(
                    ("sources", index, "name"), f"source names must be unique; {name!r} is repeated"
                )
        return self

    # Paths in the YAML are relative to the YAML file's folder's parent when the file is
    # in a config/ folder (the project layout), otherwise to the file's own folder.
    @property
    def root(self) -> Path:
        folder = self.path.resolve().parent
        return folder.parent if folder.name == "config" else folder

    def resolve(self, path: Path | str) -> Path:
        path = Path(path)
        return path if path.is_absolute() else self.root / path

    @property
    def database_url(self) -> str:
        url = self.database.url
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
            return prefix + str(self.resolve(url[len(prefix) :]))
        return url

    @property
    def public_base_url(self) -> str:
        return self.server.base_url or self.site.url

    @property
    def timezone(self) -> ZoneInfo:
        return ZoneInfo(self.schedules.timezone or self.site.timezone)

    def digest(self, name: str) -> DigestConfig:
        for digest in self.digests:
            if digest.name == name:
                return digest
        known = ", ".join(d.name for d in self.digests) or "none configured"
        raise UnknownDigest(f"no digest named {name!r} in {self.path} (configured: {known})")

    def secret_envs(self) -> list[str]:
        """The environment variables this configuration reads secrets from."""
        names = [self.site.secret_env]
        if self.delivery.transport == "smtp":
            smtp = self.delivery.smtp
            names += [n for n in (smtp.username_env, smtp.password_env) if n]
        if self.workers.broker_url_env:
            names.append(self.workers.broker_url_env)
        return names

    def template_dirs(self) -> list[Path]:
        dirs = [self.resolve(self.templates)] if self.templates else []
        return [*dirs, BUILTIN_TEMPLATES]


BUILTIN_TEMPLATES = Path(__file__).parent / "templates"


def _conflict(at: tuple[Any, ...], message: str) -> PydanticCustomError:
    """A validation error about the key at `at`, which describe_error turns into a line."""
    return PydanticCustomError("conflict", "{message}", {"message": message, "at": at})


class UnknownDigest(LookupError):
    """A command named a digest the YAML does not define."""


class MissingSecret(Exception):
    def __init__(self, env_name: str, purpose: str) -> None:
        super().__init__(
            f"the environment variable {env_name} is not set; it holds the {purpose}. "
            f"Set it (export {env_name}=...) before running syndicate."
        )
        self.env_name = env_name


def secret(env_name: str, purpose: str) -> str:
    value = os.environ.get(env_name, "")
    if not value:
        raise MissingSecret(env_name, purpose)
    return value


# --- loading ---------------------------------------------------------------------


def config_path(explicit: str | Path | None = None) -> Path:
    return Path(explicit or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)


class YamlLoader(yaml.SafeLoader):
    """SafeLoader, except that an impossible date (2026-13-45) stays text.

    PyYAML raises a bare ValueError for it, with no line; as text it reaches validation,
    which rejects it with its key and line like any other bad value.
    """


def _timestamp_or_text(loader: YamlLoader, node: yaml.ScalarNode) -> Any:
    try:
        return yaml.SafeLoader.construct_yaml_timestamp(loader, node)
    except ValueError:
        return loader.construct_scalar(node)


YamlLoader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_or_text)


def read_yaml(text: str) -> tuple[Any, yaml.Node | None]:
    """The data and the node tree (for line numbers). Raises yaml.YAMLError."""
    node = yaml.compose(text, Loader=YamlLoader)
    data = yaml.load(text, Loader=YamlLoader)  # YamlLoader is a SafeLoader
    return data, node


def load(path: str | Path | None = None) -> Config:
    """Read and validate the YAML file; raise ConfigError naming every problem found."""
    path = config_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, [NOT_FOUND]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(path, [f"not UTF-8 text (byte {exc.start})"]) from None
    except OSError as exc:
        raise ConfigError(path, [f"cannot be read: {exc.strerror or exc}"]) from None
    try:
        data, node = read_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        raise ConfigError(
            path, [f"{where}not valid YAML: {getattr(exc, 'problem', exc)}"]
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(path, ["line 1: expected a mapping of sections (site, delivery, ...)"])
    repeated = duplicate_keys(node)
    if repeated:
        raise ConfigError(path, repeated)
    lines = yaml_key_lines(node)
    try:
        config = Config.model_validate({**data, "path": path})
    except ValidationError as exc:
        raise ConfigError(path, [describe_error(err, lines) for err in exc.errors()]) from None
    return config


def duplicate_keys(
    node: yaml.Node | None, prefix: tuple[Any, ...] = (), offset: int = 0
) -> list[str]:
    """A key given twice in one mapping; PyYAML would silently keep only the last."""
    problems: list[str] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            key = (*prefix, key_node.value)
            if key_node.value in seen:
                line = key_node.start_mark.line + 1 + offset
                dotted = ".".join(str(p) for p in key)
                problems.append(f"line {line}: {dotted}: appears twice in the same section")
            seen.add(key_node.value)
            problems += duplicate_keys(value_node, key, offset)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            problems += duplicate_keys(item, (*prefix, index), offset)
    return problems


def yaml_key_lines(
    node: yaml.Node | None, prefix: tuple[Any, ...] = ()
) -> dict[tuple[Any, ...], int]:
    """Map each key path, e.g. ('digests', 0, 'name'), to the 1-based line it is on."""
    lines: dict[tuple[Any, ...], int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = (*prefix, key_node.value)
            lines[key] = key_node.start_mark.line + 1
            lines.update(yaml_key_lines(value_node, key))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            key = (*prefix, index)
            lines[key] = item.start_mark.line + 1
            lines.update(yaml_key_lines(item, key))
    return lines


_TYPE_TAGS = {"str", "int", "float", "bool", "date", "datetime", "list", "dict", "none"}


def _is_type_tag(part: Any) -> bool:
    return isinstance(part, str) and (part in _TYPE_TAGS or "[" in part)


def describe_error(error: Any, lines: dict[tuple[Any, ...], int]) -> str:
    # Pydantic adds the discriminator's tag ('files', 'feed') to the location; not a YAML key.
    loc = tuple(part for part in error["loc"] if part not in ("files", "feed", "sitemap"))
    loc += tuple((error.get("ctx") or {}).get("at", ()))
    # A union (date | datetime) adds the member's type name; the YAML has no such key either.
    while len(loc) > 1 and loc not in lines and loc[:-1] in lines and _is_type_tag(loc[-1]):
        loc = loc[:-1]
    line = None
    for end in range(len(loc), 0, -1):
        line = lines.get(loc[:end])
        if line:
            break
    key = ".".join(str(p) for p in loc) or "(top level)"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "missing":
        message = "required key is missing"
    elif error["type"] == "extra_forbidden":
        message = "unknown key (check its spelling and indentation)"
    where = f"line {line}: " if line else ""
    return f"{where}{key}: {message}"
