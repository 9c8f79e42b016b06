"""The sending domain's DNS verdict, looked up once a day and shared by every process.

DNS records change rarely and a send may be started several times a morning (a retry, a
resumed send, the console's preflight button), so the verdict is kept in the database (one
`Meta` row) for the local day, and only for the settings it was made under: changing the From
address, the transport or a key makes it stale at once. Only a verdict without errors is
kept: after a refusal someone is fixing a record, and the next try must see the fix; a check
that could not be made (DNS did not answer) is not kept either.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from mailer.app import App
from mailer.db import put_meta
from mailer.dkimsign import load_keys
from mailer.errors import ConfigError
from mailer.models import Meta
from mailer.preflight.authdns import DomainReport, check_domain
from mailer.preflight.findings import ERROR

KEY = "dns-check"


def domain_report(app: App, *, fresh: bool = False) -> tuple[DomainReport, str]:
    """The day's verdict and when it was made (ISO time); looked up now when there is none
    for today and these settings, or when `fresh`."""
    today, fingerprint = stamp = _stamp(app)
    if not fresh and (kept := _kept(app, stamp)) is not None:
        return kept
    report = check_domain(app.settings)
    checked_at = app.clock.now().isoformat()
    if report.complete and not any(f.severity == ERROR for f in report.findings):
        value = json.dumps({"day": today, "fingerprint": fingerprint, "checked_at": checked_at,
                            "report": report.as_json()})
        put_meta(app.sessions, KEY, value)
    return report, checked_at


def kept_report(app: App) -> tuple[DomainReport, str] | None:
    """Today's kept verdict for these settings and when it was made, without looking anything
    up (`mailer status`); None when there is none."""
    return _kept(app, _stamp(app))


def _stamp(app: App) -> tuple[str, str]:
    """What a kept verdict must match: the local day, and the settings' fingerprint."""
    return (app.clock.now().astimezone(app.settings.tz).date().isoformat(), _fingerprint(app))


def _kept(app: App, stamp: tuple[str, str]) -> tuple[DomainReport, str] | None:
    with app.sessions() as session:
        row = session.get(Meta, KEY)
        kept = _load(row.value) if row is not None else None
    if kept and (kept.get("day"), kept.get("fingerprint")) == stamp:
        return DomainReport.from_json(kept["report"]), str(kept.get("checked_at", ""))
    return None


def _load(value: str) -> dict[str, Any] | None:
    try:
        data = json.loads(value)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _fingerprint(app: App) -> str:
    """A digest of every setting the verdict depends on (public key halves, never secrets)."""
    s = app.settings
    try:
        keys = [key.public_record() for key in load_keys(s)]
    except ConfigError as exc:
        keys = [str(exc)]
    parts = [s.from_addr, s.dsn, s.envelope_sender, s.dkim_domain, s.dkim_selector,
             s.dkim_ed25519_selector, ",".join(s.dkim_check_selectors), s.dns_resolver, *keys]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()
