"""Each reader's rhythm: cadence (instant, daily, weekly), local send hour and time zone,
and the send slots they give.

A slot is a local wall-clock time (08:00 on Fridays in Europe/Paris) turned into an
instant. Every local day has exactly one 08:00, so a daylight-saving change neither skips
nor doubles a send: a time that does not exist that day (02:30 when clocks jump from 02:00
to 03:00) is taken one hour later, as the clocks read it; a time that happens twice (01:30
when clocks fall back) is taken the first time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from syndicate.config import Config, DigestConfig
from syndicate.schedule.triggers import job_period

CADENCES = ("instant", "daily", "weekly")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
PERIOD = {"instant": timedelta(0), "daily": timedelta(days=1), "weekly": timedelta(days=7)}


class InvalidRhythm(ValueError):
    """A cadence, hour or zone a reader or an import asked for that the digest refuses;
    `field` says which ("cadence", "send_hour", "timezone"), for a CSV column or an
    option to name."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Rhythm:
    cadence: str
    send_hour: int | None  # None: whenever the digest's schedule runs
    timezone: str
    send_day: str = "friday"  # weekly only

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def timed(self) -> bool:
        """True when issues wait for the reader's hour (not instant, and an hour is set)."""
        return self.cadence != "instant" and self.send_hour is not None

    def last_slot(self, now: datetime) -> datetime | None:
        """The latest slot at or before `now` (UTC); None when the rhythm has no slots."""
        if not self.timed:
            return None
        local_today = now.astimezone(self.zone).date()
        for back in range(8):
            day = local_today - timedelta(days=back)
            if self._sends_on(day):
                slot = self.slot_on(day)
                if slot <= now:
                    return slot
        raise AssertionError("a weekly rhythm has a slot in any eight days")

    def next_slot(self, now: datetime) -> datetime | None:
        """The first slot after `now` (UTC)."""
        if not self.timed:
            return None
        local_today = now.astimezone(self.zone).date()
        for ahead in range(9):
            day = local_today + timedelta(days=ahead)
            if self._sends_on(day):
                slot = self.slot_on(day)
                if slot > now:
                    return slot
        raise AssertionError("a weekly rhythm has a slot in any nine days")

    def slot_on(self, day: date) -> datetime:
        """The send hour on local `day`, as a UTC instant (see the module doc for DST)."""
        assert self.send_hour is not None
        # fold=0: an hour that happens twice is taken the first time; an hour skipped by
        # a spring-forward is read with the offset from before the change, which is the
        # moment the clocks show one hour later.
        return datetime.combine(day, time(self.send_hour), tzinfo=self.zone).astimezone(UTC)

    def _sends_on(self, day: date) -> bool:
        return self.cadence == "daily" or WEEKDAYS[day.weekday()] == self.send_day


def rhythm_for(
    config: Config,
    digest: DigestConfig,
    cadence: str | None = None,
    send_hour: int | None = None,
    timezone: str | None = None,
) -> Rhythm:
    """A reader's rhythm: their choices where they made them, the digest's defaults else."""
    return Rhythm(
        cadence=cadence or digest.cadence,
        send_hour=send_hour if send_hour is not None else digest.send_hour,
        timezone=timezone or digest.timezone or config.site.timezone,
        send_day=digest.send_day,
    )


def check_choice(
    digest: DigestConfig, cadence: str | None, send_hour: int | str | None, timezone: str | None
) -> tuple[str | None, int | None, str | None]:
    """Validate what a reader (or a CSV row) chose; blanks mean "the digest's default".

    Returns the values to store; raises InvalidRhythm naming what is wrong and what is
    accepted.
    """
    cadence = (cadence or "").strip().lower() or None
    if cadence is not None and cadence not in digest.cadences:
        raise InvalidRhythm(
            "cadence",
            f"cadence {cadence!r} is not offered by digest {digest.name} "
            f"(choose {', '.join(digest.cadences)})",
        )
    hour: int | None = None
    if isinstance(send_hour, int):
        hour = send_hour
    elif send_hour is not None and str(send_hour).strip():
        text = str(send_hour).strip().removesuffix(":00")
        if not text.isdigit():
            raise InvalidRhythm(
                "send_hour", f"send hour {send_hour!r} is not an hour (0 to 23, e.g. 8)"
            )
        hour = int(text)
    if hour is not None and not 0 <= hour <= 23:
        raise InvalidRhythm("send_hour", f"send hour {hour} is not an hour (0 to 23)")
    if hour is not None and digest.send_hour is None:
        # It would take that reader off the editor's schedule.
        raise InvalidRhythm(
            "send_hour",
            f"digest {digest.name} has no send hour: each issue goes when the editor's "
            "schedule runs (leave the hour empty, or set send_hour for the digest)",
        )
    zone = (timezone or "").strip() or None
    if zone is not None:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidRhythm(
                "timezone",
                f"time zone {zone!r} is not an IANA zone name (e.g. Europe/Paris, America/New_York)",
            ) from None
    return cadence, hour, zone


def zone_names() -> list[str]:
    """IANA zone names a reader may pick, sorted (no legacy aliases such as US/Eastern)."""
    return sorted(
        name
        for name in available_timezones()
        if "/" in name and not name.startswith(("Etc/", "SystemV/", "US/", "posix/", "right/"))
    )


def timing_problems(config: Config) -> list[str]:
    """What in the YAML would keep readers from getting issues at their hour."""
    problems = []
    for digest in config.digests:
        schedule = config.schedules.digests.get(digest.name)
        if digest.send_hour is not None:
            if schedule is None:
                problems.append(
                    f"digest {digest.name} sends at each reader's hour (send_hour) but "
                    f"schedules.digests has no entry for it: add {digest.name}: "
                    "{interval: 15m}"
                )
            elif job_period(schedule, config.timezone) > timedelta(hours=1):
                every = job_period(schedule, config.timezone)
                problems.append(
                    f"digest {digest.name} sends at each reader's hour (send_hour) but its "
                    f"schedule runs every {every}: issues go out up to that late; run it "
                    "every 15 minutes ({interval: 15m})"
                )
        if "instant" in digest.cadences and config.schedules.gather is None:
            problems.append(
                f"digest {digest.name} offers instant readers each review as it is "
                "gathered, but schedules.gather is not set: they get reviews only when "
                "the digest is sent"
            )
    return problems
