"""Staff alerts: a short plain-text email to `settings.staff_alerts` when a send goes wrong.

Alerts go through the configured transport, the same road as the editions, so an alert that
arrives also proves the road is open. They are for the moments when no person is watching (the
scheduler at 07:00, cron): a failed, skipped, late or missed send. An alert must never make a
bad morning worse, so `alert` never raises: if it cannot send, it logs, and the log is the
record of last resort. Every alert is also written to `SendLog(kind="alert")` for the staff
console.
"""

from __future__ import annotations

import logging
import socket

from sqlalchemy.exc import IntegrityError

from mailer.app import App
from mailer.message import simple_message
from mailer.models import Meta, SendLog
from mailer.transports import from_dsn
from mailer.transports.base import Outgoing

log = logging.getLogger("mailer.alerts")

SUBJECT_PREFIX = "[LabourList mailer] "
_ONCE_PREFIX = "alert-sent:"


def alert(app: App, subject: str, body: str, *, edition_id: int | None = None,
          once_key: str | None = None) -> bool:
    """Email the staff alert addresses; return True when every address was accepted.

    `once_key` makes the alert idempotent across processes and restarts ("missed:2026-11-26"):
    a scheduler in a restart loop must not send the same bad news every few seconds. Never
    raises: an alert is a side channel and must not turn a problem into a crash.
    """
    recipients = list(app.settings.staff_alerts)
    log.warning("alert: %s", subject)
    try:
        if once_key is not None and not _claim_once(app, once_key):
            log.info("alert %r was already sent; not repeating it", once_key)
            return False
    except Exception:  # noqa: BLE001 - the database may be the very thing that is down
        log.exception("could not check whether alert %r was already sent", once_key)
    if not recipients:
        log.warning("no staff_alerts addresses configured (MAILER_STAFF_ALERTS); "
                    "alert only logged: %s", subject)
        _record(app, edition_id, "", f"{subject}: not emailed (no staff_alerts configured)")
        return False
    failures: list[str] = []
    try:
        messages = []
        text = _body(app, body)
        for address in recipients:
            message_id, data = simple_message(
                app.settings, to=address, subject=SUBJECT_PREFIX + subject, text=text,
                # RFC 3834: auto-responders and ticket systems should not answer this.
                headers={"Auto-Submitted": "auto-generated", "X-Mailer-Alert": "1"},
                date=app.clock.now(),
            )
            messages.append(Outgoing(recipient=address, message_id=message_id, data=data,
                                     fields={"to": address, "message_id": message_id,
                                             "subject": SUBJECT_PREFIX + subject}))
        transport = from_dsn(app.settings.dsn, app.settings)
        with transport:
            for message in messages:
                (result,) = transport.send([message])
                if result.status != "sent":
                    failures.append(f"{message.recipient}: {result.status} {result.error}")
    except Exception as exc:  # noqa: BLE001 - see the docstring
        log.exception("could not email alert %r", subject)
        failures.append(f"transport error: {exc}")
    for failure in failures:
        log.error("alert %r not delivered: %s", subject, failure)
    if not failures:
        log.info("alert emailed to %s", ", ".join(recipients))
    detail = subject if not failures else f"{subject}: NOT DELIVERED ({'; '.join(failures)})"
    _record(app, edition_id, ",".join(recipients), detail)
    return not failures


def _body(app: App, body: str) -> str:
    now = app.clock.now()
    local = now.astimezone(app.settings.tz)
    return (f"{body.rstrip()}\n\n"
            f"-- \nSent by the LabourList mailer on {socket.gethostname()} at "
            f"{local:%Y-%m-%d %H:%M %Z} ({now:%H:%M} UTC).\n"
            f"Run `mailer status` on that machine for the full picture.\n")


def _claim_once(app: App, key: str) -> bool:
    """Insert the marker row; False when another process (or an earlier run) already did."""
    try:
        with app.sessions.begin() as session:
            if session.get(Meta, _ONCE_PREFIX + key) is not None:
                return False
            session.add(Meta(key=_ONCE_PREFIX + key, value=app.clock.now().isoformat(),
                             updated_at=app.clock.now()))
    except IntegrityError:
        return False
    return True


def _record(app: App, edition_id: int | None, recipients: str, detail: str) -> None:
    try:
        with app.sessions.begin() as session:
            session.add(SendLog(kind="alert", edition_id=edition_id, recipients=recipients,
                                detail=detail, created_at=app.clock.now()))
    except Exception:  # noqa: BLE001
        log.exception("could not record alert %r in send_log", detail)
