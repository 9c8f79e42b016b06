"""The newsroom's templates: files in `templates_dir` (./templates by default) override the
bundled ones file by file, in what is really sent, and `mailer templates copy` puts them there."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from mailer.app import App
from mailer.cli import cli
from mailer.config import BUNDLED_TEMPLATES, PROJECT_ROOT
from mailer.db import init_db
from mailer.render import build_view, render_archive
from mailer.subscribers import add
from mailer.templating import bundled_templates
from mailer.web import create_app
from tests.support.feeds import Post, rss
from tests.support.settings import make_settings

# Thursday 26 November 2026, 06:59 London: the edition is due at 07:00.
NOW = datetime(2026, 11, 26, 6, 59, tzinfo=UTC)
DAY = date(2026, 11, 26)


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A working directory like a newsroom's checkout: a database, a local feed, a file outbox,
    no templates/ yet and no templates_dir setting (the default applies)."""
    monkeypatch.chdir(tmp_path)
    settings = make_settings(tmp_path)
    app = App.create(settings)
    init_db(app.engine)
    with app.sessions.begin() as session:
        add(session, "ann@example.org", name="Ann")
    app.close()
    feed = tmp_path / "feed.xml"
    feed.write_text(rss([Post(101, "Councils and unions respond", NOW - timedelta(hours=1)),
                         Post(102, "A second story", NOW - timedelta(hours=2))]),
                    encoding="utf-8")
    yield {
        "MAILER_DATABASE_URL": settings.database_url, "MAILER_FEED_URL": str(feed),
        "MAILER_DSN": settings.dsn, "MAILER_SECRET_KEY": "templates-secret",
        "MAILER_BASE_URL": "https://mail.labourlist.org", "MAILER_NOW": NOW.isoformat(),
        "MAILER_CONFIG": str(PROJECT_ROOT / "config" / "mailer.toml"),
    }


def mailer(environ: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env=environ, catch_exceptions=False)


def edit(path: Path, old: str, new: str) -> None:
    source = path.read_text(encoding="utf-8")
    assert old in source
    path.write_text(source.replace(old, new, 1), encoding="utf-8")


def sent_messages(outbox: Path) -> list[EmailMessage]:
    return [message_from_bytes(p.read_bytes(), policy=policy.default)  # type: ignore[misc]
            for p in sorted(outbox.glob("*.eml"))]


def test_an_override_in_templates_reaches_the_sent_message(
        checkout: dict[str, str], tmp_path: Path) -> None:
    copied = mailer(checkout, "templates", "copy", "edition.txt.j2", "partials/story.mjml.j2")
    assert copied.exit_code == 0, copied.output
    assert copied.stdout.splitlines() == ["copied templates/edition.txt.j2",
                                          "copied templates/partials/story.mjml.j2"]
    templates = tmp_path / "templates"
    edit(templates / "edition.txt.j2", "{{ date_long }}", "{{ date_long }} (EDITED TEXT)")
    # A partial: included by the bundled edition.mjml.j2, which is not overridden.
    edit(templates / "partials" / "story.mjml.j2", "{{ a.title }}", "{{ a.title }} EDITED-HTML")

    sent = mailer(checkout, "send")
    assert sent.exit_code == 0, sent.output
    [message] = sent_messages(tmp_path / "outbox")
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "Thursday 26 November 2026 (EDITED TEXT)" in text
    assert "A second story EDITED-HTML" in html  # (the first is the lead, not a partial)
    assert "LabourList" in html and "unsubscribe" in html.lower()  # the rest is bundled


def test_a_missing_override_falls_back_to_the_bundled_file(tmp_path: Path) -> None:
    bundled = make_settings(tmp_path, templates_dir="")
    view = build_view(DAY, [], bundled)
    expected = render_archive(view, bundled)
    (tmp_path / "partial").mkdir()
    shutil.copyfile(BUNDLED_TEMPLATES / "edition.txt.j2", tmp_path / "partial" / "edition.txt.j2")
    for folder in ("absent", "partial"):
        settings = make_settings(tmp_path, templates_dir=str(tmp_path / folder))
        assert render_archive(view, settings) == expected


def test_an_override_saved_while_running_is_used_at_the_next_render(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, templates_dir=str(tmp_path / "templates"))
    view = build_view(DAY, [], settings)
    assert "SAVED-LATER" not in render_archive(view, settings)
    (tmp_path / "templates").mkdir()
    override = tmp_path / "templates" / "edition.mjml.j2"
    shutil.copyfile(BUNDLED_TEMPLATES / "edition.mjml.j2", override)
    edit(override, "{{ signup_url }}", "{{ signup_url }}?SAVED-LATER")
    assert "SAVED-LATER" in render_archive(view, settings)
    override.unlink()
    assert "SAVED-LATER" not in render_archive(view, settings)


def test_templates_copy_copies_and_refuses_to_overwrite(
        checkout: dict[str, str], tmp_path: Path) -> None:
    first = mailer(checkout, "templates", "copy")
    assert first.exit_code == 0, first.output
    names = bundled_templates()
    assert first.stdout.splitlines() == [f"copied templates/{name}" for name in names]
    assert not any(name.startswith("web/") for name in names)  # the web pages stay bundled
    for name in names:
        copy = tmp_path / "templates" / name
        assert copy.read_bytes() == (BUNDLED_TEMPLATES / name).read_bytes()

    mine = tmp_path / "templates" / "edition.mjml.j2"
    mine.write_text("an editor's work", encoding="utf-8")
    again = mailer(checkout, "templates", "copy")
    assert again.exit_code == 1
    assert again.stderr == ("error: templates/confirm.mjml.j2 already exists (and "
                            f"{len(names) - 1} more); --force overwrites\n")
    assert again.stdout == ""
    assert mine.read_text(encoding="utf-8") == "an editor's work"

    forced = mailer(checkout, "templates", "copy", "--force", "edition.mjml.j2")
    assert forced.exit_code == 0, forced.output
    assert mine.read_bytes() == (BUNDLED_TEMPLATES / "edition.mjml.j2").read_bytes()

    listed = mailer(checkout, "templates", "list")
    assert "edition.mjml.j2" in listed.stdout and "override" in listed.stdout


def test_a_template_that_does_not_parse_is_a_one_line_error(
        checkout: dict[str, str], tmp_path: Path) -> None:
    copied = mailer(checkout, "templates", "copy", "partials/head.mjml.j2")
    assert copied.exit_code == 0, copied.output
    head = tmp_path / "templates" / "partials" / "head.mjml.j2"
    edit(head, "{{ title }}", "{{ title }")  # the editor's typo, in a partial
    line = 1 + head.read_text(encoding="utf-8").split("{{ title }")[0].count("\n")
    result = mailer(checkout, "preview", "--no-collect")
    assert result.exit_code == 1
    assert result.stderr == (f"error: template templates/partials/head.mjml.j2, line {line}: "
                             "unexpected '}'\n")


def test_a_web_folder_in_the_templates_dir_leaves_the_pages_alone(tmp_path: Path) -> None:
    """templates/ overrides email templates only: the pages stay the bundled ones."""
    settings = make_settings(tmp_path)
    web_dir = settings.templates_path / "web"
    web_dir.mkdir(parents=True)
    (web_dir / "base.html").write_text("HIJACKED", encoding="utf-8")
    (web_dir / "subscribe.html").write_text("HIJACKED", encoding="utf-8")
    app = App.create(settings)
    init_db(app.engine)
    try:
        page = create_app(app, {"TESTING": True}).test_client().get("/subscribe")
    finally:
        app.close()
    assert page.status_code == 200
    assert "HIJACKED" not in page.get_data(as_text=True)
