"""The clock, the edition window across DST and midnight, and settings validation."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from mailer.clock import Clock, FixedClock, edition_window, parse_instant, send_datetime
from mailer.config import load_settings
from mailer.errors import ConfigError

LONDON = ZoneInfo("Europe/London")


@pytest.mark.parametrize(
    ("day", "expected_utc_hour"),
    [
        (date(2026, 3, 27), 7),  # Friday before the spring change: GMT
        (date(2026, 3, 30), 6),  # Monday after: BST
        (date(2026, 10, 23), 6),  # Friday before the autumn change: BST
        (date(2026, 10, 26), 7),  # Monday after: GMT
    ],
)
def test_send_instant_follows_london_clock_changes(day: date, expected_utc_hour: int) -> None:
    instant = send_datetime(day, (7, 0), LONDON)
    assert instant.tzinfo is not None
    assert instant.astimezone(UTC).hour == expected_utc_hour
    assert instant.astimezone(LONDON).hour == 7


def test_send_time_inside_spring_gap_still_exists_once() -> None:
    # 01:30 does not exist on 29 March 2026 in London; it becomes 02:30 BST (01:30 UTC).
    instant = send_datetime(date(2026, 3, 29), (1, 30), LONDON)
    assert instant == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)


def test_ambiguous_autumn_time_takes_first_occurrence() -> None:
    instant = send_datetime(date(2026, 10, 25), (1, 30), LONDON)
    assert instant == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 01:30 BST


def test_window_defaults_to_24_hours_and_spans_weekend() -> None:
    monday = send_datetime(date(2026, 11, 30), (7, 0), LONDON)
    friday = send_datetime(date(2026, 11, 27), (7, 0), LONDON)
    assert edition_window(monday, None, 24, 72).hours == 24
    weekend = edition_window(monday, friday, 24, 96)
    assert weekend.start == friday and weekend.end == monday
    capped = edition_window(monday, monday - timedelta(days=30), 24, 72)
    assert capped.hours == 72


def test_window_across_clock_change_is_23_real_hours() -> None:
    sat = send_datetime(date(2026, 3, 28), (7, 0), LONDON)
    sun = send_datetime(date(2026, 3, 29), (7, 0), LONDON)
    window = edition_window(sun, sat, 24, 72)
    assert window.hours == 23
    assert datetime(2026, 3, 29, 5, 59, tzinfo=UTC) in window
    assert datetime(2026, 3, 29, 6, 0, tzinfo=UTC) not in window  # half-open


def test_today_at_midnight_edges() -> None:
    # 23:30 UTC on 28 June is 00:30 on 29 June in London (BST).
    clock = FixedClock(datetime(2026, 6, 28, 23, 30, tzinfo=UTC))
    assert clock.today(LONDON) == date(2026, 6, 29)
    clock.set(datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC))
    assert clock.today(LONDON) == date(2026, 12, 31)
    clock.advance(seconds=1)
    assert clock.today(LONDON) == date(2027, 1, 1)


def test_env_clock_starts_at_mailer_now_and_runs() -> None:
    clock = Clock.from_env({"MAILER_NOW": "2026-03-29T00:59:00+00:00"})
    now = clock.now()
    assert abs((now - datetime(2026, 3, 29, 0, 59, tzinfo=UTC)).total_seconds()) < 5
    assert parse_instant("2026-01-01T07:00:00") == datetime(2026, 1, 1, 7, tzinfo=UTC)
    with pytest.raises(ConfigError):
        parse_instant("tomorrow")


def test_timestamp_is_the_clocks_now_as_a_number() -> None:
    """What the click redirect stamps hits with: the same shifted (or fixed) time as now()."""
    shifted = Clock.from_env({"MAILER_NOW": "2026-10-25T01:30:00+01:00"})
    assert abs(shifted.timestamp() - shifted.now().timestamp()) < 1
    fixed = FixedClock(datetime(2026, 10, 25, 1, 30, 0, 999999, tzinfo=ZoneInfo("Europe/London")))
    assert datetime.fromtimestamp(fixed.timestamp(), UTC) == fixed.now()


def test_settings_env_overrides_and_validation(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "m.toml"
    cfg.write_text('send_time = "06:30"\nconnections = 2\n')
    s = load_settings({"MAILER_CONFIG": str(cfg), "MAILER_CONNECTIONS": "8",
                       "MAILER_SKIP_CATEGORIES": "Daily email, Podcast"})
    assert s.send_time == "06:30" and s.connections == 8
    assert s.skip_categories == ["Daily email", "Podcast"]
    for env, key in [({"MAILER_SEND_TIME": "25:00"}, "send_time"),
                     ({"MAILER_TIMEZONE": "Mars/Olympus"}, "timezone"),
                     ({"MAILER_CONNECTIONS": "many"}, "connections"),
                     ({"MAILER_BASE_URL": "labourlist.org"}, "base_url"),
                     ({"MAILER_SEND_DAYS": "mon-funday"}, "send_days"),
                     ({"MAILER_FROM_ADDR": "x@y\r\nBcc: z@q"}, "from_addr")]:
        with pytest.raises(ConfigError) as err:
            load_settings({"MAILER_CONFIG": str(cfg), **env})
        assert key in str(err.value) and "\n" not in str(err.value)


def test_mailer_from_names_the_sender(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`MAILER_FROM` is the product's name for the sender (scripts set it); `MAILER_FROM_ADDR`,
    the key's own name, works too; both at once must agree."""
    cfg = tmp_path / "m.toml"
    cfg.write_text('from_addr = "File <file@example.org>"\n')
    base = {"MAILER_CONFIG": str(cfg)}
    assert load_settings(base).from_addr == "File <file@example.org>"
    sender = "LabourList Daily <daily@news.example.org>"
    assert load_settings({**base, "MAILER_FROM": sender}).from_addr == sender
    assert load_settings({**base, "MAILER_FROM_ADDR": sender}).from_addr == sender
    assert load_settings({**base, "MAILER_FROM": sender, "MAILER_FROM_ADDR": sender}
                         ).from_addr == sender
    with pytest.raises(ConfigError, match="MAILER_FROM and MAILER_FROM_ADDR disagree"):
        load_settings({**base, "MAILER_FROM": sender, "MAILER_FROM_ADDR": "x@example.org"})
    with pytest.raises(ConfigError, match="from_addr"):
        load_settings({**base, "MAILER_FROM": "x@y\r\nBcc: z@q"})


def test_secrets_refused_in_config_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "m.toml"
    cfg.write_text('secret_key = "oops"\n')
    with pytest.raises(ConfigError, match="secret_key"):
        load_settings({"MAILER_CONFIG": str(cfg)})
    cfg.write_text('no_such_key = 1\n')
    with pytest.raises(ConfigError, match="no_such_key"):
        load_settings({"MAILER_CONFIG": str(cfg)})


def test_shipped_config_loads() -> None:
    s = load_settings({})
    assert s.database_url == "sqlite:///subscribers.db"
    assert s.dsn.startswith("file://")
    assert s.timezone == "Europe/London"
