"""When the daily send falls due: the trigger, the next and past send instants, the late-send grace.

Pure calendar arithmetic on the settings (send_days, send_time, the time zone), shared by the
scheduler daemon, `mailer status` and the console, so all three agree on "next run" across
clock changes. Nothing here runs a job.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

from apscheduler.triggers.cron import CronTrigger

from mailer.config import Settings
from mailer.edition import send_instant

_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class DailyTrigger(CronTrigger):
    """A CronTrigger that fires at most once per local calendar day.

    Plain cron fires twice when the send time falls in the hour that repeats at the autumn
    clock change (01:30 on the last Sunday of October exists twice in Europe/London). We keep
    the first occurrence, the instant `clock.send_datetime` (and so the late-send guard) uses;
    a time inside the spring gap fires once, an hour later in wall-clock terms, as there.

    `shift` is how far the app's clock runs ahead of real time (MAILER_NOW, `Clock.offset`):
    APScheduler keeps real time, so the fire times it is given are the app clock's send times
    moved back by the shift. Zero (real time) in production.
    """

    def __init__(self, *, shift: timedelta = timedelta(0), **fields: Any) -> None:
        super().__init__(**fields)
        self.shift = shift

    def get_next_fire_time(self, previous_fire_time: datetime | None,
                           now: datetime) -> datetime | None:
        if not self.shift:
            return self._next_on_clock(previous_fire_time, now)
        previous = moved(previous_fire_time, self.shift) if previous_fire_time else None
        fire = self._next_on_clock(previous, moved(now, self.shift))
        return moved(fire, -self.shift) if fire is not None else None

    def _next_on_clock(self, previous_fire_time: datetime | None,
                       now: datetime) -> datetime | None:
        candidate: datetime | None = super().get_next_fire_time(previous_fire_time, now)
        while candidate is not None and not _first_occurrence(candidate):
            candidate = super().get_next_fire_time(candidate, candidate)
        return candidate

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "shift": self.shift}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.shift = state.get("shift", timedelta(0))


def moved(moment: datetime, by: timedelta) -> datetime:
    """`moment` + `by` in elapsed time (not wall time: a clock change may lie between)."""
    return (moment.astimezone(UTC) + by).astimezone(moment.tzinfo)


def _first_occurrence(fire: datetime) -> bool:
    first = fire.replace(fold=0)
    return fire.astimezone(UTC) == first.astimezone(UTC)


def cron_days(settings: Settings) -> str:
    """send_days in the spelling APScheduler's cron fields accept (``mon,tue,...``)."""
    return ",".join(_DAY_NAMES[d] for d in sorted(settings.send_weekdays))


def build_trigger(settings: Settings, shift: timedelta = timedelta(0)) -> DailyTrigger:
    """The one trigger: used by the daemon, by `mailer status` and by the tests."""
    hour, minute = settings.send_hour_minute
    return DailyTrigger(day_of_week=cron_days(settings), hour=hour, minute=minute,
                        timezone=settings.tz, shift=shift)


def subject_test_trigger(settings: Settings, shift: timedelta = timedelta(0)) -> DailyTrigger:
    """The subject test's trigger: `test_minutes` before the send, on the send days (the
    settings keep it on the day of the send: `config.validate`)."""
    hour, minute = settings.send_hour_minute
    start = max(0, hour * 60 + minute - settings.test_minutes)
    return DailyTrigger(day_of_week=cron_days(settings), hour=start // 60, minute=start % 60,
                        timezone=settings.tz, shift=shift)


def weekly_trigger(settings: Settings, shift: timedelta = timedelta(0)) -> DailyTrigger:
    """The weekly digest's trigger: `weekly_send`'s day and local time, once that day."""
    hour, minute = settings.weekly_hour_minute
    day = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[settings.weekly_weekday]
    return DailyTrigger(day_of_week=day, hour=hour, minute=minute, timezone=settings.tz,
                        shift=shift)


def next_run(settings: Settings, now: datetime) -> datetime | None:
    """The next scheduled send strictly after `now` (aware, in the configured zone)."""
    after = now.astimezone(settings.tz) + timedelta(microseconds=1)
    return build_trigger(settings).get_next_fire_time(None, after)


def next_edition_day(settings: Settings, day: date) -> date | None:
    """The date of the daily edition after `day`'s, by the schedule (None: no send days)."""
    upcoming = next_run(settings, send_instant(settings, day))
    return upcoming.astimezone(settings.tz).date() if upcoming is not None else None


def fire_times(settings: Settings, start: datetime, end: datetime) -> Iterator[datetime]:
    """Every scheduled send in [start, end): what the daemon would do over that period."""
    trigger = build_trigger(settings)
    fire = trigger.get_next_fire_time(None, start.astimezone(settings.tz))
    while fire is not None and fire < end:
        yield fire
        fire = trigger.get_next_fire_time(fire, fire)


def grace_seconds(settings: Settings) -> int:
    """APScheduler's misfire_grace_time: the same limit as the pipeline's late-send guard."""
    return max(1, int(settings.late_send_hours * 3600))


def due_day(settings: Settings, now: datetime, slack: timedelta = timedelta(0)) -> date | None:
    """The most recent send day whose send instant is at or before `now` (+ `slack`)."""
    limit = now + slack
    today = limit.astimezone(settings.tz).date()
    for back in range(8):
        day = today - timedelta(days=back)
        if day.weekday() in settings.send_weekdays and send_instant(settings, day) <= limit:
            return day
    return None


def schedule_of(settings: Settings) -> tuple[tuple[int, int], frozenset[int], str, int]:
    """What the daily job's (and the subject test's) triggers are built from."""
    return (settings.send_hour_minute, settings.send_weekdays, settings.timezone,
            settings.test_minutes)
