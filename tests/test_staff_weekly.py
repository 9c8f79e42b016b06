"""The weekly digest's own console pages: built, edited, tested and sent apart from the daily
edition of the same date, with its audience, its registry entry and its audit trail."""
# ruff: noqa: F811 - the console's fixtures come from tests/test_staff_web.py by import

from __future__ import annotations

from datetime import date
from pathlib import Path

from flask.testing import FlaskClient
from sqlalchemy import select

from mailer.app import App
from mailer.audit import AuditEntry
from mailer.models import DAILY, SENT, WEEKLY, Edition
from mailer.subscribers import add
from tests.support.seed import eml_recipients, with_feed
from tests.test_staff_web import (  # noqa: F401 - fixtures
    admin,
    app,
    client,
    post,
    text,
    token,
    web,
)

SATURDAY = date(2026, 11, 28)  # the weekly digest after the fixture's Thursday
WEEKLY_READERS = ["w1@example.org", "w2@example.org", "w3@example.org"]


def _readers(app: App, tmp_path: Path) -> None:
    app.settings = app.settings.replace(spamassassin_command="/nonexistent/spamassassin")
    with_feed(app, tmp_path)
    with app.sessions.begin() as session:
        for email in WEEKLY_READERS:
            add(session, email, frequency=WEEKLY)
        for email in ("d1@example.org", "d2@example.org"):
            add(session, email, frequency=DAILY)


def test_the_weekly_digest_has_its_own_pages_and_send(admin: FlaskClient, app: App,
                                                      tmp_path: Path) -> None:
    _readers(app, tmp_path)
    base = f"/staff/editions/weekly/{SATURDAY}"
    page = text(admin.get(base))
    assert "Weekly digest of" in page and 'action="/staff/editions/weekly/' in page
    post(admin, f"{base}/build")
    post(admin, f"{base}/content", subject="The week in Labour", preheader="", editor_note="")
    with app.sessions() as session:
        editions = {e.kind: e for e in session.scalars(select(Edition))}
    assert set(editions) == {WEEKLY}  # the daily of that date is untouched
    assert editions[WEEKLY].subject == "The week in Labour"
    page = text(admin.get(base))
    assert "The week in Labour" in page and f"{base}/preview" in page
    assert admin.get(f"{base}/preview").status_code == 200
    confirm = " ".join(text(admin.get(f"{base}/send")).split())
    assert "Send the weekly digest of" in confirm and "3" in confirm  # its own audience
    response = post(admin, f"{base}/send")
    assert response.headers["Location"].endswith(f"{base}/progress")  # type: ignore[attr-defined]
    assert set(eml_recipients(tmp_path / "outbox")) == set(WEEKLY_READERS)
    progress = text(admin.get(f"{base}/progress"))
    assert "weekly digest of" in progress
    with app.sessions() as session:
        edition = session.scalar(select(Edition).where(Edition.kind == WEEKLY))
        assert edition is not None and edition.state == SENT
        targets = set(session.scalars(select(AuditEntry.target)))
    assert f"edition:weekly:{SATURDAY}" in targets
    assert f"edition:{SATURDAY}" not in targets
    # The registry keeps the two kinds apart: the daily of that date has no job.
    registry = admin.application.extensions["mailer_staff_sends"]
    assert registry.get(SATURDAY, WEEKLY) is not None
    assert registry.get(SATURDAY) is None


def test_the_dashboard_links_to_the_weekly_digest(admin: FlaskClient, app: App) -> None:
    page = text(admin.get("/staff/"))
    assert f'href="/staff/editions/weekly/{SATURDAY}" id="weekly-link"' in page
    app.settings = app.settings.replace(weekly_digest=False)
    assert 'id="weekly-link"' not in text(admin.get("/staff/"))
