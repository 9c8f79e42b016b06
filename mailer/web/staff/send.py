"""Running a send from the console: `mailer.pipeline.run_send` on a background thread.

A send takes minutes, a request must not, so "Send now" starts `run_send` on a thread and
answers at once with the progress page. The thread calls exactly what `mailer send` calls,
with the same run lock and ledger: a second press, a second browser tab, another web process,
or cron firing at the same moment all end in "already running" or "already sent", and every
subscriber gets one copy.

The registry here only remembers, per web process, the thread it started and its last
`Progress` (for the live rate) and outcome or error (a late send or a failed preflight ends
before the ledger shows anything). Everything else the progress page shows comes from the
database, so any process (or a page reload after a restart) tells the same story.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import date

from flask import Flask

from mailer import audit
from mailer.app import App
from mailer.dispatch import Progress
from mailer.errors import MailerError, one_line
from mailer.models import DAILY
from mailer.pipeline import SendOutcome, run_send

log = logging.getLogger("mailer.web.staff")

EXTENSION = "mailer_staff_sends"


@dataclass
class SendJob:
    day: date
    actor: str
    kind: str  # "send" | "resume"
    edition_kind: str = DAILY  # the edition's kind: daily or the weekly digest
    started: float = field(default_factory=time.monotonic)
    progress: Progress | None = None
    outcome: SendOutcome | None = None
    error: str = ""
    finished: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return not self.finished.is_set()

    def update(self, progress: Progress) -> None:
        self.progress = progress


class SendRegistry:
    """The sends this web process started, by edition (kind and date: the weekly digest
    and the daily of one date are two sends)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.jobs: dict[tuple[str, date], SendJob] = {}

    def get(self, day: date, kind: str = DAILY) -> SendJob | None:
        with self.lock:
            return self.jobs.get((kind, day))


def registry(web: Flask) -> SendRegistry:
    found = web.extensions.get(EXTENSION)
    if found is None:
        found = web.extensions.setdefault(EXTENSION, SendRegistry())
    assert isinstance(found, SendRegistry)
    return found


def start(app: App, reg: SendRegistry, day: date, *, actor: str, kind: str = "send",
          force: bool = False, reason: str = "", inline: bool = False,
          audit_detail: str | None = None, edition_kind: str = DAILY) -> tuple[SendJob, bool]:
    """Start (or join) the send of `day`; (job, started_now).

    A job of this process that is still running is returned as it is: pressing the button
    twice starts nothing new. Across processes the pipeline's run lock does the same. With
    `audit_detail`, a "send-started" entry is written before the send begins (so the log
    reads in the order things happened, whatever the send's outcome).
    """
    with reg.lock:
        current = reg.jobs.get((edition_kind, day))
        if current is not None and current.running:
            return current, False
        job = SendJob(day=day, actor=actor, kind=kind, edition_kind=edition_kind)
        reg.jobs[(edition_kind, day)] = job
    if audit_detail is not None:
        with app.sessions.begin() as session:
            audit.record(session, actor, "send-started", audit.edition_target(day, edition_kind),
                         audit_detail, at=app.clock.now())
    if inline:  # tests: the request waits for the whole send
        _run(app, job, force=force, reason=reason)
    else:
        job.thread = threading.Thread(target=_run, args=(app, job),
                                      kwargs={"force": force, "reason": reason},
                                      name=f"staff-send-{day}", daemon=True)
        job.thread.start()
    return job, True


def _run(app: App, job: SendJob, *, force: bool, reason: str) -> None:
    action, detail = "send-finished", ""
    try:
        job.outcome = run_send(app, job.day, force=force, reason=reason, collect_first=False,
                               on_progress=job.update, kind=job.edition_kind)
        detail = f"{job.outcome.status}: {job.outcome.message}"
        if not job.outcome.ok:
            action = "send-failed"
    except MailerError as exc:
        job.error = one_line(exc)
        action, detail = "send-failed", job.error
    except Exception as exc:  # noqa: BLE001 - a thread must report, never vanish
        log.exception("console send of edition %s crashed", job.day)
        job.error = f"unexpected error: {exc!r}"
        action, detail = "send-failed", job.error
    finally:
        try:
            with app.sessions.begin() as session:
                audit.record(session, job.actor, action,
                             audit.edition_target(job.day, job.edition_kind),
                             detail, at=app.clock.now())
        except Exception:  # noqa: BLE001 - the send itself is recorded in the ledger
            log.exception("could not write the audit entry for the send of %s", job.day)
        job.finished.set()
