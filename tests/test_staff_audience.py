"""The console's audience page: readers by frequency and sections, and the edition as the
readers of any combination of sections get it (or that they would be skipped)."""
# ruff: noqa: F811 - the console's fixtures come from tests/test_staff_web.py by import

from __future__ import annotations

from html import unescape
from pathlib import Path

from flask.testing import FlaskClient
from sqlalchemy import select

from mailer.app import App
from mailer.models import Article, Edition
from mailer.subscribers import add
from tests.support.seed import with_feed
from tests.test_staff_web import (  # noqa: F401 - fixtures
    DAY,
    admin,
    app,
    client,
    post,
    text,
    token,
    web,
)

SECTIONS = ["News", "Comment", "Analysis", "Columnist", "Video"]
READERS = [("a@example.org", "daily", []), ("b@example.org", "daily", ["Comment"]),
           ("c@example.org", "weekly", ["Comment", "Analysis"]),
           ("d@example.org", "weekly", []), ("e@example.org", "daily", ["Video"])]


def _setup(app: App, tmp_path: Path) -> None:
    app.settings = app.settings.replace(sections=SECTIONS,
                                        spamassassin_command="/nonexistent/spamassassin")
    with_feed(app, tmp_path)
    with app.sessions.begin() as session:
        for email, frequency, sections in READERS:
            add(session, email, frequency=frequency, sections=sections)
        add(session, "left@example.org", status="unsubscribed", sections=["News"])


def test_the_audience_by_frequency_and_sections(admin: FlaskClient, app: App,
                                                tmp_path: Path) -> None:
    _setup(app, tmp_path)
    page = " ".join(text(admin.get("/staff/audience")).split())
    assert "3 <span class=\"small\">daily</span>" in page
    assert "2 <span class=\"small\">weekly digest</span>" in page
    table = page.split('id="per-section"', 1)[1].split("</table>", 1)[0]
    got = dict(zip([c.split("<", 1)[0] for c in table.split('<th scope="row">')[1:]],
                   [int(c.split("<", 1)[0]) for c in table.split('<td class="num">')[1:]],
                   strict=True))
    # 2 chose everything; the unsubscribed reader counts nowhere.
    assert got == {"News": 2, "Comment": 4, "Analysis": 3, "Columnist": 2, "Video": 3}
    assert "2 chose them all" in page
    assert "Comment, Analysis: 1 reader" in page
    # The edition page counts the daily's own audience: the daily readers.
    post(admin, f"/staff/editions/{DAY}/build")
    edition_page = text(admin.get(f"/staff/editions/{DAY}"))
    assert "Preview it as readers of some sections get it" in edition_page


def test_preview_any_combination_or_say_it_is_skipped(admin: FlaskClient, app: App,
                                                      tmp_path: Path) -> None:
    _setup(app, tmp_path)
    assert admin.get(f"/staff/editions/{DAY}/preview-for").status_code == 404  # not built
    post(admin, f"/staff/editions/{DAY}/build")
    with app.sessions() as session:
        assert session.scalar(select(Edition)) is not None
        by_section: dict[str, list[str]] = {}
        for article in session.scalars(select(Article)):
            by_section.setdefault(article.section, []).append(article.title)
    response = admin.get(f"/staff/editions/{DAY}/preview-for?section=comment")
    assert response.status_code == 200
    assert "frame-ancestors 'self'" in response.headers["Content-Security-Policy"]
    html = unescape(response.get_data(as_text=True))
    assert any(title in html for title in by_section["Comment"]), (by_section, html[:3000])
    assert not any(title in html for title in by_section["News"]), [
        (t, html[html.index(t) - 300:html.index(t)]) for t in by_section["News"] if t in html]
    whole = unescape(text(admin.get(f"/staff/editions/{DAY}/preview-for")))
    assert any(title in whole for title in by_section["News"]), (by_section["News"], [
        line for line in whole.splitlines() if "News" in line][:5])
    skipped = admin.get(f"/staff/editions/{DAY}/preview-for?section=Video")
    assert skipped.status_code == 200 and "would be skipped" in text(skipped)
    assert admin.get(f"/staff/editions/{DAY}/preview-for?section=Sport").status_code == 400
