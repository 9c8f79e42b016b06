"""Settings: embedded defaults, then a TOML file, then MAILER_* environment variables.

Loaded and validated once per process, so a bad value fails at start-up with one line naming
the key rather than half-way through a send.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from email.utils import parseaddr
from pathlib import Path
from typing import Any, get_type_hints
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mailer.asks import DonationAsk, parse_asks
from mailer.errors import ConfigError
from mailer.urls import check_database_url
from mailer.verp import MAX_LOCAL_PART, MAX_TOKEN
from mailer.verp import fits as verp_fits

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The bundled templates live inside the package, so that an installed (not editable) mailer has
# them too; a file of the same name in `templates_dir` replaces one of them (mailer.templating).
BUNDLED_TEMPLATES = Path(__file__).resolve().parent / "templates"
DEFAULT_CONFIG = PROJECT_ROOT / "config" / "mailer.toml"

# Keys that may only come from the environment (never from a file that could be committed).
# The product's names for settings whose key reads otherwise (`MAILER_FROM` is the name the
# deployment scripts use for the sender; `MAILER_FROM_ADDR` works too).
ENV_ALIASES = {"from_addr": "MAILER_FROM"}
SECRET_KEYS = frozenset(
    {
        "secret_key",
        "postmark_webhook_password",
        "sendgrid_webhook_public_key",
        "mailgun_webhook_signing_key",
        "smtp_password",
        "dkim_private_key",
        "dkim_key_file",
    }
)

# MAILER_* variables that are read, but not as settings: they must not be reported as typos.
ENV_NOT_SETTINGS = frozenset(
    {
        "MAILER_CONFIG",  # the settings file (load_settings)
        "MAILER_NOW",  # where the clock starts (mailer/clock.py)
        # The test suite's own, set in developers' shells and CI (tests/, README)
        "MAILER_TEST_POSTGRES_URL",
        "MAILER_KILL_TRIALS",
        "MAILER_SCREENSHOT_DIR",
    }
)

#: `click_tracking` values, least personal first.
CLICK_TRACKING_MODES = ("off", "aggregate", "per-reader")
#: `click_writer` values: where a web process writes its clicks (mailer/clicks/writer_process.py).
CLICK_WRITERS = ("process", "thread")
_WEEKLY_RE = re.compile(r"(mon|tue|wed|thu|fri|sat|sun) ([01]?\d|2[0-3]):[0-5]\d")
_RESOLVER_RE = re.compile(r"(\d{1,3}(\.\d{1,3}){3}|\[[0-9a-fA-F:]+\])(:\d{1,5})?|[0-9a-fA-F:]+")
_SELECTOR_RE = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
log = logging.getLogger(__name__)
_warned_env: set[str] = set()


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite:///subscribers.db"
    feed_url: str = "https://labourlist.org/feed/"
    dsn: str = "file://outbox"
    base_url: str = "http://localhost:8000"
    secret_key: str = ""

    from_addr: str = "LabourList Daily <daily@labourlist.org>"
    reply_to: str = "editor@labourlist.org"
    bounce_address: str = ""  # SMTP envelope sender (Return-Path); "" means from_addr's
    bounce_verp: bool = False  # each SMTP message's own envelope sender (mailer/verp.py)
    list_id: str = "LabourList Daily <daily.labourlist.org>"
    unsubscribe_mailto: str = "unsubscribe@labourlist.org"
    postal_address: str = "LabourList, 1 Example Street, London SE1 0AA"
    # The masthead (docs/operations.md): a logo image (https; with the dark-mode variant when it
    # would vanish on a dark background) and its alt text; "" keeps the text masthead.
    logo_url: str = ""
    logo_dark_url: str = ""
    logo_alt: str = ""
    # Signs the editor's note, e.g. "Hannah, LabourList editor" ("" for no sign-off).
    editor_signoff: str = ""
    # Fields: {date} ("Thursday 26 November 2026"), {lead_title}, {story_count}.
    subject: str = "LabourList Daily: {date}"
    # The inbox line after the subject when an edition has neither an editor's note nor a
    # lead story (otherwise their first line or headline: `render.build_view`).
    preheader: str = "Today's news and comment from the labour movement"
    # A subject test before each daily send (docs/subject-test.md): the edition's subject and
    # each of `subject_variants` (1 to 3 templates, same fields as `subject`; default: the
    # lead headline) go to a random `test_share` of the audience each, `test_minutes` before
    # send_time; at send_time the one with the best human click rate goes to the rest, or the
    # edition's own subject when no difference is significant.
    subject_test: bool = False
    subject_variants: list[str] = field(default_factory=list)
    test_minutes: int = 40
    test_share: float = 0.10

    timezone: str = "Europe/London"
    send_time: str = "07:00"
    send_days: str = "mon-fri"
    window_hours: int = 24
    window_cap_hours: int = 72
    late_send_hours: float = 3.0
    # The weekly digest, for readers who chose it: day and local time, and how many stories.
    weekly_send: str = "sat 08:00"
    weekly_stories: int = 10
    weekly_subject: str = "LabourList Weekly: the week to {date}"
    weekly_preheader: str = "The week's most-read news and comment from the labour movement"
    # Whether the weekly digest is offered and sent. Off: no page offers it, no weekly
    # edition goes out, and readers who chose it (CLI, imports) get the daily (docs/web.md).
    weekly_digest: bool = True
    # A welcome email to each reader once, when they confirm (template welcome.mjml.j2).
    welcome_email: bool = True

    skip_categories: list[str] = field(default_factory=lambda: ["Daily email"])
    sections: list[str] = field(
        default_factory=lambda: ["News", "Comment", "Analysis", "Columnist"]
    )

    donation_copy: str = (
        "LabourList is funded by its readers. If you value our reporting, please support us."
    )
    donation_amount: str = "£10 a month"
    donation_url: str = "https://labourlist.org/donate/"
    signup_url: str = "https://labourlist.org/newsletter/"

    utm_source: str = "labourlist-daily"
    utm_medium: str = "email"
    # Names the donation ask in the donate link's utm_content, so the donation platform's
    # export can attribute gifts to the edition and the ask (`mailer donations import`).
    donation_ask: str = "standard"
    # Several asks tested against each other (docs/donations.md): [[donation_asks]] tables of
    # name, copy, amount, label ("Donate"), position (after-lead, after-third, end) and
    # paused. Empty: the one ask above (donation_copy, donation_amount, donation_ask).
    donation_asks: list[dict[str, Any]] = field(default_factory=list)
    # Asks paused from the console's Donation asks page (names, comma-separated), on top of
    # any `paused = true` in the tables above: shown to nobody from the next edition on.
    paused_asks: str = ""

    # Click measurement (docs/privacy.md): "aggregate" counts clicks with no reader in them,
    # "per-reader" also names the delivery, "off" links straight to the site.
    click_tracking: str = "aggregate"
    open_tracking: bool = False  # an open pixel; opens are shown labelled as unreliable
    click_retention_days: int = 400
    # Where a web process writes the clicks it buffers: "process", a child process of its own
    # (the redirects keep the interpreter to themselves), or "thread", in the web process.
    click_writer: str = "process"
    most_read_block: bool = False
    most_read_days: int = 1
    most_read_min_clicks: int = 5

    feed_timeout: float = 20.0
    feed_max_pages: int = 10
    user_agent: str = "LabourListMailer/0.1 (+https://labourlist.org/)"

    connections: int = 4
    rate_limit: float = 0.0
    batch_size: int = 100
    max_attempts: int = 5
    lease_seconds: int = 300
    db_outage_grace: float = 300.0  # seconds a send waits for a database that went away
    collect_every_minutes: int = 0
    settings_check_seconds: float = 60.0
    soft_bounce_limit: int = 3
    ses_webhook_topic_arns: list[str] = field(default_factory=list)
    trusted_proxies: int = 0
    spam_threshold: float = 5.0
    spamassassin_command: str = "spamassassin"
    spamassassin_timeout: float = 60.0
    link_check_timeout: float = 5.0
    allow_local_links: bool = False  # staging only: localhost links are not an error

    host: str = "127.0.0.1"
    port: int = 8000
    confirm_max_age_days: int = 7
    staff_alerts: list[str] = field(default_factory=list)
    # The public API: requests a minute per key (docs/api.md); outgoing webhooks: how often
    # the scheduler delivers what the outbox holds, and each POST's timeout.
    api_rate_limit: int = 600
    webhook_every_seconds: float = 5.0
    webhook_timeout: float = 10.0

    postmark_webhook_user: str = "postmark"
    postmark_webhook_password: str = ""
    sendgrid_webhook_public_key: str = ""
    mailgun_webhook_signing_key: str = ""
    smtp_password: str = ""
    # DKIM signing of what we send over SMTP ourselves (docs/sending.md): the d= domain, the
    # selector of the RSA key and of the Ed25519 key; the key(s) from the environment only.
    dkim_domain: str = ""
    dkim_selector: str = ""
    dkim_ed25519_selector: str = ""
    dkim_private_key: str = ""
    dkim_key_file: str = ""
    # The sending domain's DNS check (SPF, DKIM, DMARC, MX; docs/deliverability.md): run before
    # the day's first send and kept for the day. `dkim_check_selectors` names the selectors a
    # relay or provider signs with, where it cannot be guessed (Postmark, SES).
    dns_check: bool = True
    dkim_check_selectors: list[str] = field(default_factory=list)
    dns_timeout: float = 5.0
    dns_resolver: str = ""  # "IP[:PORT]" instead of the system's resolvers (tests)
    # The newsroom's own email templates, each overriding the bundled file of the same name.
    # Relative to the working directory, as the default database is; a missing folder means
    # the bundled templates only; "" turns the overrides off.
    templates_dir: str = "templates"

    # ---- derived values -------------------------------------------------------------
    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def send_hour_minute(self) -> tuple[int, int]:
        hour, minute = self.send_time.split(":")
        return int(hour), int(minute)

    @property
    def asks(self) -> list[DonationAsk]:
        """Every configured donation ask (validated by `validate`)."""
        if not self.donation_asks:
            return [DonationAsk(self.donation_ask, self.donation_copy, self.donation_amount)]
        paused = {name.strip() for name in self.paused_asks.split(",") if name.strip()}
        return [dataclasses.replace(ask, paused=True) if ask.name in paused else ask
                for ask in parse_asks(self.donation_asks)]

    @property
    def weekly_weekday(self) -> int:
        """The weekday (Monday=0) of `weekly_send`."""
        day = self.weekly_send.strip().lower()[:3]
        return ("mon", "tue", "wed", "thu", "fri", "sat", "sun").index(day)

    @property
    def weekly_hour_minute(self) -> tuple[int, int]:
        hour, minute = self.weekly_send.strip().split()[1].split(":")
        return int(hour), int(minute)

    @property
    def send_weekdays(self) -> frozenset[int]:
        """Weekday numbers (Monday=0) on which the daily edition goes out."""
        return parse_days(self.send_days)

    @property
    def envelope_sender(self) -> str:
        """Where bounces go: `bounce_address`, else the From address (with VERP, the base of
        each message's own sender)."""
        return self.bounce_address or parseaddr(self.from_addr)[1]

    @property
    def templates_path(self) -> Path:
        """The overriding folder (the bundled one when overrides are off)."""
        return Path(self.templates_dir) if self.templates_dir else BUNDLED_TEMPLATES

    def replace(self, **changes: Any) -> Settings:
        """A validated copy with some keys changed (tests and the staff console use this)."""
        new = dataclasses.replace(self, **changes)
        validate(new)
        return new


def parse_days(spec: str) -> frozenset[int]:
    """Parse cron-style day lists such as ``mon-fri`` or ``mon,wed,fri``."""
    days: set[int] = set()
    for part in spec.lower().replace(" ", "").split(","):
        if not part:
            continue
        if "-" in part:
            start, end = part.split("-", 1)
            if start not in _DAYS or end not in _DAYS:
                raise ValueError(part)
            a, b = _DAYS.index(start), _DAYS.index(end)
            if a > b:
                raise ValueError(part)
            days.update(range(a, b + 1))
        elif part in _DAYS:
            days.add(_DAYS.index(part))
        else:
            raise ValueError(part)
    if not days:
        raise ValueError(spec)
    return frozenset(days)


def _coerce(key: str, raw: Any, kind: Any) -> Any:
    try:
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            return str(raw).strip().lower() in {"1", "true", "yes", "on"}
        if kind is int:
            if isinstance(raw, bool):
                raise ValueError(raw)
            return int(raw)
        if kind is float:
            return float(raw)
        if kind == list[dict[str, Any]]:
            # (a TOML array of tables; in the environment, the same as JSON)
            value = json.loads(raw) if isinstance(raw, str) else raw
            if not isinstance(value, list):
                raise ValueError(raw)
            return value
        if kind == list[str]:
            if isinstance(raw, list):
                return [str(x) for x in raw]
            text = str(raw).strip()
            if text.startswith("["):  # a JSON array: for items with commas (subjects)
                items = json.loads(text)
                if not isinstance(items, list):
                    raise ValueError(raw)
                return [str(x) for x in items]
            return [p.strip() for p in text.split(",") if p.strip()] if text else []
        return str(raw)
    except (TypeError, ValueError):
        kind_name = getattr(kind, "__name__", str(kind))
        raise ConfigError(f"setting {key}: cannot read {raw!r} as {kind_name}") from None


def _check(key: str, ok: bool, why: str) -> None:
    if not ok:
        raise ConfigError(f"setting {key}: {why}")


def validate(s: Settings) -> None:
    """Raise ConfigError naming the first bad key."""
    check_database_url(s.database_url)
    _check("feed_url", bool(s.feed_url.strip()), "must not be empty")
    _check("dsn", "://" in s.dsn, "must be a DSN such as file://outbox or smtp://host:587")
    base = urlsplit(s.base_url)
    _check("base_url", base.scheme in ("http", "https") and bool(base.netloc),
           "must be an absolute http(s) URL")
    try:
        ZoneInfo(s.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"setting timezone: unknown time zone {s.timezone!r}") from None
    _check("send_time", bool(re.fullmatch(r"([01]?\d|2[0-3]):[0-5]\d", s.send_time)),
           f"{s.send_time!r} is not HH:MM")
    try:
        parse_days(s.send_days)
    except ValueError:
        raise ConfigError(f"setting send_days: {s.send_days!r} is not like mon-fri") from None
    _check("window_hours", 1 <= s.window_hours <= 24 * 14, "must be between 1 and 336")
    _check("window_cap_hours", s.window_cap_hours >= s.window_hours,
           "must be at least window_hours")
    _check("late_send_hours", s.late_send_hours > 0, "must be positive")
    _check("weekly_send", bool(_WEEKLY_RE.fullmatch(s.weekly_send.strip().lower())),
           f"{s.weekly_send!r} is not like 'sat 08:00'")
    _check("weekly_stories", 1 <= s.weekly_stories <= 50, "must be between 1 and 50")
    _check_subject_test(s)
    _check("connections", 1 <= s.connections <= 64, "must be between 1 and 64")
    _check("rate_limit", s.rate_limit >= 0, "must be 0 (unlimited) or positive")
    _check("batch_size", 1 <= s.batch_size <= 10000, "must be between 1 and 10000")
    _check("max_attempts", 1 <= s.max_attempts <= 50, "must be between 1 and 50")
    _check("lease_seconds", s.lease_seconds >= 5, "must be at least 5")
    _check("db_outage_grace", s.db_outage_grace >= 0, "must be 0 (stop at once) or positive")
    _check("collect_every_minutes", s.collect_every_minutes >= 0,
           "must be 0 (off) or positive")
    _check("settings_check_seconds", s.settings_check_seconds > 0, "must be positive")
    _check("soft_bounce_limit", s.soft_bounce_limit >= 1, "must be at least 1")
    _check("spamassassin_timeout", s.spamassassin_timeout > 0, "must be positive")
    _check("link_check_timeout", s.link_check_timeout > 0, "must be positive")
    _check("dns_timeout", 0 < s.dns_timeout <= 60, "must be between 0 and 60 seconds")
    _check("dns_resolver", not s.dns_resolver or bool(_RESOLVER_RE.fullmatch(s.dns_resolver)),
           "must be an IP address, with :PORT if not 53 (like 127.0.0.1:5353)")
    for selector in s.dkim_check_selectors:
        _check("dkim_check_selectors", bool(_SELECTOR_RE.fullmatch(selector)),
               f"{selector!r} is not a DKIM selector (letters, digits, '.', '-', '_')")
    for key in ("logo_url", "logo_dark_url"):
        value = getattr(s, key)
        _check(key, not value or urlsplit(value).scheme in ("https", "http")
               and bool(urlsplit(value).netloc), "must be an absolute https:// address or empty")
    _check("logo_dark_url", not s.logo_dark_url or bool(s.logo_url),
           "needs logo_url too (it is the light-mode logo)")
    _check("api_rate_limit", s.api_rate_limit >= 1, "must be at least 1 request a minute")
    _check("webhook_every_seconds", s.webhook_every_seconds > 0, "must be positive")
    _check("webhook_timeout", s.webhook_timeout > 0, "must be positive")
    _check("trusted_proxies", 0 <= s.trusted_proxies <= 5, "must be between 0 and 5")
    _check("port", 0 < s.port < 65536, "must be a TCP port")
    _check("click_tracking", s.click_tracking in CLICK_TRACKING_MODES,
           f"must be one of {', '.join(CLICK_TRACKING_MODES)}")
    _check("click_writer", s.click_writer in CLICK_WRITERS,
           f"must be one of {', '.join(CLICK_WRITERS)}")
    _check("click_retention_days", s.click_retention_days >= 1, "must be at least 1")
    _check("most_read_days", 1 <= s.most_read_days <= 31, "must be between 1 and 31")
    _check("most_read_min_clicks", s.most_read_min_clicks >= 1, "must be at least 1")
    parse_asks(s.donation_asks)
    _check("donation_ask", bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}", s.donation_ask)),
           "must be a short name of letters, digits, '.', '_' or '-'")
    _check("feed_timeout", s.feed_timeout > 0, "must be positive")
    _check("feed_max_pages", s.feed_max_pages >= 1, "must be at least 1")
    for key in ("from_addr", "reply_to", "bounce_address", "list_id", "subject", "weekly_subject",
                "unsubscribe_mailto"):
        value = getattr(s, key)
        _check(key, "\r" not in value and "\n" not in value, "must not contain a line break")
    _check("from_addr", "@" in s.from_addr, "must contain an address")
    _check("bounce_address", not s.bounce_address or bool(
        re.fullmatch(r"[^@\s<>()\[\],;:\"]+@[^@\s<>()\[\],;:\"]+", s.bounce_address)),
        "must be a bare address like bounces@labourlist.org")
    _check("bounce_verp", not s.bounce_verp or verp_fits(s.envelope_sender),
           f"needs a bounce address whose part before the @ is at most "
           f"{MAX_LOCAL_PART - MAX_TOKEN - 1} characters long (set bounce_address)")


def _check_subject_test(s: Settings) -> None:
    _check("subject_variants", len(s.subject_variants) <= 3,
           "at most 3 (with the edition's own subject, 4 lines in the test)")
    for line in s.subject_variants:
        _check("subject_variants", bool(line.strip()) and "\r" not in line and "\n" not in line,
               "each must be a non-empty line")
    _check("test_minutes", 5 <= s.test_minutes <= 240, "must be between 5 and 240")
    groups = 1 + max(1, len(s.subject_variants))
    _check("test_share", 0.01 <= s.test_share and groups * s.test_share <= 0.5,
           f"must be at least 0.01, and with {groups} subject lines at most "
           f"{0.5 / groups:.2f} (half the audience at most is in the test)")
    hour, minute = s.send_hour_minute
    _check("test_minutes", not s.subject_test or hour * 60 + minute >= s.test_minutes,
           f"a subject test of {s.test_minutes} minutes must start on the day of the send: "
           f"send_time {s.send_time} is too early for it")


def load_settings(
    environ: dict[str, str] | None = None, config_file: str | Path | None = None
) -> Settings:
    """Build Settings from defaults, the TOML file and the environment; validate once."""
    env = dict(os.environ if environ is None else environ)
    path: Path | None
    if config_file is not None:
        path = Path(config_file)
    elif env.get("MAILER_CONFIG"):
        path = Path(env["MAILER_CONFIG"])
    else:
        local = Path.cwd() / "config" / "mailer.toml"
        path = local if local.is_file() else (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)

    hints = get_type_hints(Settings)
    known = {f.name for f in fields(Settings)}
    values: dict[str, Any] = {}
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"setting MAILER_CONFIG: no such file {path}")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
        for key, raw in data.items():
            if key not in known:
                raise ConfigError(f"setting {key}: unknown key in {path}")
            if key in SECRET_KEYS:
                raise ConfigError(
                    f"setting {key}: secrets come only from the environment "
                    f"(MAILER_{key.upper()}), not from {path.name}"
                )
            values[key] = _coerce(key, raw, hints[key])
    for key in known:
        env_key = f"MAILER_{key.upper()}"
        if env_key in env:
            values[key] = _coerce(key, env[env_key], hints[key])
    for key, alias in ENV_ALIASES.items():
        if alias not in env:
            continue
        own = f"MAILER_{key.upper()}"
        if own in env and env[own] != env[alias]:
            raise ConfigError(f"setting {key}: {alias} and {own} disagree; set one of them")
        values[key] = _coerce(key, env[alias], hints[key])
    warn_unknown_env(env)
    settings = Settings(**values)
    validate(settings)
    return settings


def warn_unknown_env(env: Mapping[str, str]) -> None:
    """Log one warning per unknown MAILER_* name, once per process, naming the closest one.

    A misspelt key in the file is an error, but `MAILER_FEED_URLL` would otherwise be ignored
    without a word while the mailer sends from the default feed. A warning rather than an
    error: the variable does nothing, and refusing the 07:00 send over it would do more harm.
    The value is never shown (it may be a secret).
    """
    expected = ({f"MAILER_{f.name.upper()}" for f in fields(Settings)}
                | set(ENV_ALIASES.values()) | ENV_NOT_SETTINGS)
    for name in sorted(env):
        if not name.startswith("MAILER_") or name in expected or name in _warned_env:
            continue
        _warned_env.add(name)
        # Compared without the prefix every candidate shares, or everything looks close.
        closest = difflib.get_close_matches(name.removeprefix("MAILER_"),
                                            sorted(e.removeprefix("MAILER_") for e in expected),
                                            n=1)
        log.warning("environment variable %s is not a mailer setting and is ignored%s", name,
                    f"; did you mean MAILER_{closest[0]}?" if closest else "")
