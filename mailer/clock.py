"""The one source of "now", "today" and the edition window.

Everything that asks what time it is goes through a `Clock`, so tests can set the time
(in-process with `FixedClock`, or across a process boundary with `MAILER_NOW`) and check
daylight-saving changes and midnight edges without waiting for them.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from mailer.errors import ConfigError


def parse_instant(text: str) -> datetime:
    """Parse an ISO 8601 instant; a naive value is taken as UTC."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"setting MAILER_NOW: {text!r} is not an ISO 8601 time") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class Clock:
    """Real time, or real time shifted so that the process starts at MAILER_NOW.

    A shifted clock keeps running, so a scheduler started "at 06:59" reaches 07:00 a minute
    later, just as in production.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._offset = timedelta(0)
        if start is not None:
            self._offset = start.astimezone(UTC) - datetime.now(UTC)
        self._offset_seconds = self._offset.total_seconds()

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Clock:
        env = os.environ if environ is None else environ
        raw = env.get("MAILER_NOW")
        return cls(parse_instant(raw)) if raw else cls()

    def now(self) -> datetime:
        """Aware UTC now."""
        return datetime.now(UTC) + self._offset

    def timestamp(self) -> float:
        """`now()` as seconds since the epoch, for the click redirect, which stamps every hit
        and hands it on as a plain number (`mailer.clicks.writer.RawHit`): a fraction of
        the cost of making the datetime."""
        return time.time() + self._offset_seconds

    @property
    def offset(self) -> timedelta:
        """How far this clock runs ahead of real time (MAILER_NOW); zero for real time and for
        a `FixedClock`, which does not run at all."""
        return self._offset

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))

    def wait(self, event: threading.Event, seconds: float, *, may_jump: bool = True) -> bool:
        """Wait until `event` is set or `seconds` pass; True when the event was set.

        `may_jump=False` says the wait is for someone else's progress (another worker's lease),
        which a test clock must not fake by jumping ahead; real time ignores it.
        """
        return event.wait(max(0.0, seconds))

    def local_now(self, tz: ZoneInfo) -> datetime:
        return self.now().astimezone(tz)

    def today(self, tz: ZoneInfo) -> date:
        return self.local_now(tz).date()


class FixedClock(Clock):
    """A clock that only moves when told to (tests)."""

    def __init__(self, at: datetime) -> None:
        super().__init__()
        if at.tzinfo is None:
            raise ValueError("FixedClock needs an aware datetime")
        self._now = at.astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    def timestamp(self) -> float:
        return self._now.timestamp()

    def set(self, at: datetime) -> None:
        self._now = at.astimezone(UTC)

    def advance(self, **kwargs: float) -> None:
        self._now += timedelta(**kwargs)

    def sleep(self, seconds: float) -> None:
        self._now += timedelta(seconds=max(0.0, seconds))

    def wait(self, event: threading.Event, seconds: float, *, may_jump: bool = True) -> bool:
        """Yield briefly for real, then move this clock on instead of waiting."""
        if event.wait(0.01):
            return True
        if may_jump:
            self.sleep(seconds)
        return False


def send_datetime(day: date, send_time: tuple[int, int], tz: ZoneInfo) -> datetime:
    """The aware instant of the send on a local calendar day.

    A wall time that does not exist (inside a spring-forward gap) is moved forward by the gap,
    and an ambiguous one (autumn fall-back) takes its first occurrence, so every day has exactly
    one send instant.
    """
    hour, minute = send_time
    local = datetime(day.year, day.month, day.day, hour, minute, tzinfo=tz, fold=0)
    as_utc = local.astimezone(UTC)
    round_trip = as_utc.astimezone(tz)
    if (round_trip.hour, round_trip.minute) != (hour, minute):
        # Non-existent local time: zoneinfo mapped it using the pre-gap offset; that instant
        # is already past the gap, which is the forward shift we want.
        return as_utc
    return as_utc


@dataclass(frozen=True)
class Window:
    """Half-open interval [start, end) of article publication times, in UTC."""

    start: datetime
    end: datetime

    def __contains__(self, instant: datetime) -> bool:
        return self.start <= instant < self.end

    @property
    def hours(self) -> float:
        return (self.end - self.start).total_seconds() / 3600


def edition_window(
    end: datetime,
    previous_end: datetime | None,
    window_hours: int,
    cap_hours: int,
) -> Window:
    """The edition's window: from the previous daily edition's end (capped), else N hours back.

    Starting where the last edition stopped is what makes Monday carry the weekend and keeps a
    skipped day's stories; the cap keeps a months-old previous edition from flooding the email.
    """
    end = end.astimezone(UTC)
    if previous_end is not None and previous_end.astimezone(UTC) < end:
        start = max(previous_end.astimezone(UTC), end - timedelta(hours=cap_hours))
    else:
        start = end - timedelta(hours=window_hours)
    return Window(start=start, end=end)
