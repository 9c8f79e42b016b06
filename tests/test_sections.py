"""Readers get the sections they chose: the edition rendered once per distinct choice.

A real send of the sample feed through the file outbox to readers with different choices,
then each reader's copy: only their sections' stories, the first of them leading; nothing
at all (and "skipped" in the ledger) when their sections have no story today; the whole
edition, with a warning in their history, when none of their sections is offered any more.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select, update

from mailer.app import App
from mailer.cli import cli
from mailer.models import (
    DSKIPPED,
    Article,
    Delivery,
    EditionVariant,
    Subscriber,
    SubscriberEvent,
)
from mailer.pipeline import run_send
from mailer.subscribers import add
from tests.support.clicks import client_for, follow, read_outbox
from tests.support.providers import FakeSendGrid, running
from tests.support.seed import with_feed

READERS = {"all@example.org": [], "comment@example.org": ["Comment"],
           "analysis@example.org": ["Analysis", "Columnist"], "video@example.org": ["Video"],
           "gone@example.org": ["News"]}


def send_to_choices(app: App, tmp_path: Path, **settings: object) -> tuple[str, dict]:
    app.settings = app.settings.replace(
        sections=["News", "Comment", "Analysis", "Columnist", "Video"],
        spamassassin_command="/nonexistent/spamassassin", **settings)
    with_feed(app, tmp_path)
    with app.sessions.begin() as s:
        for email, sections in READERS.items():
            add(s, email, sections=sections)
        # A choice made when "Sport" was offered; the newsroom has dropped it since.
        s.execute(update(Subscriber).where(Subscriber.email == "gone@example.org")
                  .values(sections="Sport"))
    outcome = run_send(app, app.clock.today(app.settings.tz))
    assert outcome.status == "sent", outcome
    with app.sessions() as s:
        by_section: dict[str, list[str]] = {}
        for article in s.scalars(select(Article)):
            by_section.setdefault(article.section, []).append(article.title)
    return outcome.message, by_section


def test_each_reader_gets_their_sections_rendered_once_per_choice(
        app: App, tmp_path: Path) -> None:
    message, by_section = send_to_choices(app, tmp_path)
    copies = {c.email: c for c in read_outbox(tmp_path / "outbox")}
    assert set(copies) == set(READERS) - {"video@example.org"}
    assert "nothing in their sections today 1" in message

    def titles(email: str) -> set[str]:
        text = " ".join(copies[email].text.split())  # titles wrap in the text part
        return {t for ts in by_section.values() for t in ts if t in text}

    every = titles("all@example.org")
    assert every & set(by_section["News"]) and every & set(by_section["Comment"])
    assert titles("comment@example.org") == every & set(by_section["Comment"])
    assert titles("analysis@example.org") == every & set(
        by_section["Analysis"] + by_section["Columnist"])
    # The first story of their sections leads.
    top = copies["comment@example.org"].text.split("TOP STORY", 1)[1].split("\nBy ", 1)[0]
    assert " ".join(top.split()).lstrip("= ") in by_section["Comment"]
    # Whole edition for the reader whose only section is gone, and why in their history.
    assert titles("gone@example.org") == titles("all@example.org")
    with app.sessions() as s:
        variants = sorted(s.scalars(select(EditionVariant.variant)))
        skipped = s.scalar(select(Delivery.email).where(Delivery.state == DSKIPPED))
        events = [e.kind for e in s.scalars(select(SubscriberEvent).join(Subscriber).where(
            Subscriber.email == "gone@example.org"))]
    assert variants == ["Analysis;Columnist", "Comment"]  # rendered once per choice
    assert skipped == "video@example.org"
    assert "sections-gone" in events
    # A variant's links are the edition's: its click tokens lead to its own stories.
    client = client_for(app)
    for url in dict.fromkeys(copies["comment@example.org"].text_links[:2]):
        assert follow(client, url).status_code == 302
    # And a second run sends nobody anything.
    again = run_send(app, app.clock.today(app.settings.tz))
    assert again.status == "already-sent" or "already sent" in again.message


@pytest.mark.parametrize("mode", ["per-reader"])
def test_variants_through_a_substituting_provider(app: App, tmp_path: Path, mode: str) -> None:
    """SendGrid substitutes per reader into shared content: each choice is its own batch."""
    with running(FakeSendGrid) as fake:
        _, by_section = send_to_choices(
            app, tmp_path, click_tracking=mode,
            dsn=f"sendgrid+api://SG.test-key@default?endpoint={fake.url}")
        comment = " ".join(fake.delivered["comment@example.org"][0].text.split())
        whole = " ".join(fake.delivered["all@example.org"][0].text.split())
    assert any(t in comment for t in by_section["Comment"])
    assert not any(t in comment for t in by_section["News"])
    assert any(t in whole for t in by_section["News"])
    assert "%%" not in comment + whole  # every slot filled, in every variant


def test_preview_as_a_reader_of_some_sections(app: App, tmp_path: Path) -> None:
    app.settings = app.settings.replace(spamassassin_command="/nonexistent/spamassassin")
    with_feed(app, tmp_path)
    env = {"MAILER_DATABASE_URL": app.settings.database_url, "MAILER_SECRET_KEY": "k",
           "MAILER_FEED_URL": app.settings.feed_url, "MAILER_NOW": app.clock.now().isoformat(),
           "MAILER_TEMPLATES_DIR": str(tmp_path / "templates")}
    out = tmp_path / "comment.html"
    result = CliRunner().invoke(cli, ["preview", "--sections", "comment", "--out", str(out)],
                                env=env)
    assert result.exit_code == 0, result.output
    text = " ".join(out.with_suffix(".txt").read_text().split())
    with app.sessions() as s:
        sections = {a.title: a.section for a in s.scalars(select(Article))}
    shown = {title for title in sections if title in text}
    assert shown and {sections[t] for t in shown} == {"Comment"}
    assert "%%" not in text
    bad = CliRunner().invoke(cli, ["preview", "--sections", "Sport"], env=env)
    assert bad.exit_code != 0 and "unknown section 'Sport'" in bad.output
