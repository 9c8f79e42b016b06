"""Donation asks tested against each other: one ask per reader per edition, evenly split,
each where it says, and figures per ask from the real redirect and the donations import.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from mailer.app import App
from mailer.asks import parse_asks
from mailer.clicks.asks import AskFigures, asks_over, better, wilson
from mailer.clicks.gifts import import_gifts
from mailer.clicks.report import edition_stats
from mailer.config import load_settings
from mailer.errors import ConfigError
from mailer.ledger import ask_of
from mailer.models import Delivery, Edition, Subscriber
from mailer.pipeline import run_send
from tests.support.clicks import client_for, flush, follow, read_outbox
from tests.support.seed import seed_subscribers, with_feed

ASKS = [
    {"name": "monthly", "copy": "Ask A: every month keeps us going.", "amount": "£10 a month",
     "position": "after-lead"},
    {"name": "one-off", "copy": "Ask B: a one-off gift helps today.", "amount": "£25",
     "label": "Give", "position": "after-third"},
    {"name": "old", "copy": "Ask C: never shown.", "amount": "£1", "paused": True},
]


def _send(app: App, tmp_path: Path, readers: int = 300) -> dict[str, str]:
    """Send today's edition with the asks to `readers`; each reader's text part."""
    app.settings = app.settings.replace(donation_asks=ASKS, click_tracking="aggregate",
                                        spamassassin_command="/nonexistent/spamassassin")
    with_feed(app, tmp_path)
    seed_subscribers(app, readers)
    assert run_send(app, app.clock.today(app.settings.tz)).status == "sent"
    return {c.email: c.text for c in read_outbox(tmp_path / "outbox")}


def test_each_reader_sees_one_live_ask_where_it_says_and_the_split_is_even(
        app: App, tmp_path: Path) -> None:
    texts = _send(app, tmp_path)
    seen: Counter[str] = Counter()
    for text in texts.values():
        shown = [name for name, marker in (("monthly", "Ask A"), ("one-off", "Ask B"),
                                           ("old", "Ask C")) if marker in text]
        assert len(shown) == 1, text  # one ask per reader, never the paused one
        seen[shown[0]] += 1
        before, after = text.split("SUPPORT LABOURLIST", 1)
        if shown[0] == "monthly":  # right after the lead story
            assert "TOP STORY" in before and "* " not in before
            assert "Donate £10 a month: https://mail.example.org/r/" in after
        else:  # after the third story, its own button label
            assert before.count("\n* ") == 2 and "Give £25: https://mail.example.org/r/" in after
    assert set(seen) == {"monthly", "one-off"}
    assert all(120 <= n <= 180 for n in seen.values()), seen  # even, within chance
    # Stable: the same hash gives the ledger's ask again (a resumed send shows the same one);
    # another edition shuffles readers between asks.
    names = ["monthly", "one-off"]
    with app.sessions() as session:
        edition_id = session.scalar(select(Edition.id))
        assert edition_id is not None
        got = dict(session.execute(select(Delivery.subscriber_id, Delivery.variant)).all())
        again = dict(session.execute(select(Subscriber.id,
                                            ask_of(Subscriber.id, edition_id, names))).all())
        other = dict(session.execute(select(Subscriber.id,
                                            ask_of(Subscriber.id, edition_id + 1, names))).all())
    assert got == again
    assert 0.3 < sum(got[i] != other[i] for i in got) / len(got) < 0.7


def test_figures_per_ask_from_clicks_and_gifts(app: App, tmp_path: Path) -> None:
    texts = _send(app, tmp_path, readers=60)
    client = client_for(app)
    app.clock.advance(minutes=30)  # type: ignore[attr-defined]
    clicked: Counter[str] = Counter()
    for n, text in enumerate(sorted(texts.values())[:20]):
        line = next(line for line in text.splitlines()
                    if line.startswith(("Donate £10 a month:", "Give £25:")))
        url = line.split(": ", 1)[1]
        assert follow(client, url, address=f"198.51.100.{n + 1}").status_code == 302
        clicked["monthly" if line.startswith("Donate") else "one-off"] += 1
        app.clock.advance(minutes=2)  # type: ignore[attr-defined]
    flush(client)
    day = app.clock.today(app.settings.tz)
    export = ("date,amount,currency,utm_content\n"
              f"{day},10.00,GBP,donate-{day:%Y%m%d}-monthly\n"
              f"{day},25.00,GBP,donate-{day:%Y%m%d}-one-off\n"
              f"{day},5.00,GBP,donate-{day:%Y%m%d}-one-off\n")
    with app.sessions.begin() as session:
        import_gifts(session, io.StringIO(export), at=app.clock.now() + timedelta(hours=1))
    with app.sessions() as session:
        edition = session.scalar(select(Edition))
        assert edition is not None
        stats = edition_stats(session, edition)
    asks = {a["name"]: a for a in json.loads(json.dumps(stats))["donation_asks"]}
    assert set(asks) == {"monthly", "one-off"}
    assert sum(a["shown"] for a in asks.values()) == stats["delivered"] == 60
    assert {name: a["clicks_human"] for name, a in asks.items()} == dict(clicked)
    assert sum(a["clicks_human"] for a in asks.values()) == stats["donate_clicks_human"]
    assert asks["one-off"]["gifts"] == 2 and asks["one-off"]["amount"] == {"GBP": "30.00"}
    assert asks["monthly"]["gifts"] == 1
    low, high = asks["monthly"]["interval_95"]
    assert low <= asks["monthly"]["click_rate"] <= high
    assert not any(a["better"] for a in asks.values())  # 60 readers prove nothing
    # The console's period view sums editions: here, the one.
    with app.sessions() as session:
        period = {f.name: f for f in asks_over(session, day - timedelta(days=7), day)}
    assert {n: (f.shown, f.clicks_human, f.gifts) for n, f in period.items()} == {
        n: (a["shown"], a["clicks_human"], a["gifts"]) for n, a in asks.items()}
    with app.sessions() as session:
        assert asks_over(session, day + timedelta(days=1), day + timedelta(days=8)) == []


def test_wilson_interval_and_the_better_ask() -> None:
    low, high = wilson(30, 1000)
    assert low == pytest.approx(0.0211, abs=1e-4) and high == pytest.approx(0.0425, abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)
    clear = [AskFigures("a", shown=10000, clicks_human=300),
             AskFigures("b", shown=10000, clicks_human=200)]
    assert better(clear) == "a"
    close = [AskFigures("a", shown=1000, clicks_human=30),
             AskFigures("b", shown=1000, clicks_human=25)]
    assert better(close) is None


@pytest.mark.parametrize(("asks", "error"), [
    ([{"name": "a", "copy": "x", "position": "top"}], "position 'top' is not one of"),
    ([{"name": "a", "copy": "x"}, {"name": "a", "copy": "y"}], "the name 'a' is used twice"),
    ([{"name": "a b", "copy": "x"}], "name 'a b' must be a short name"),
    ([{"name": "a", "copy": ""}], "copy must not be empty"),
    ([{"name": "a", "copy": "x", "colour": "red"}], "unknown key 'colour'"),
    ([{"name": "a", "copy": "x", "paused": "yes"}], "paused must be true or false"),
])
def test_bad_asks_are_named(asks: list[dict[str, object]], error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        parse_asks(asks)


def test_asks_from_the_file_and_from_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "mailer.toml"
    config.write_text('[[donation_asks]]\nname = "a"\ncopy = "Copy A"\namount = "£5"\n'
                      '[[donation_asks]]\nname = "b"\ncopy = "Copy B"\nposition = "end"\n')
    assert [a.name for a in load_settings({}, config_file=config).asks] == ["a", "b"]
    env = {"MAILER_DONATION_ASKS": json.dumps([{"name": "c", "copy": "Copy C"}])}
    assert [a.copy for a in load_settings(env, config_file=config).asks] == ["Copy C"]
    with pytest.raises(ConfigError, match="setting donation_asks: cannot read"):
        load_settings({"MAILER_DONATION_ASKS": "not json"}, config_file=config)
