"""The public API over real HTTP: the app served on loopback, `requests` as the client, keys
made with the CLI, the same rules as the form and the import (suppression, leaving, consent),
problem details, Idempotency-Key replays, rate limits and the OpenAPI document."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner
from sqlalchemy import select
from werkzeug.serving import make_server

from mailer import apikeys
from mailer.app import App
from mailer.cli import cli
from mailer.clock import FixedClock
from mailer.db import init_db
from mailer.models import WITHDRAWN, ApiKey, Delivery, SubscriberEvent
from mailer.subscribers import add, find, set_status
from mailer.web import create_app
from tests.support.clicks import read_outbox
from tests.support.seed import seed_subscribers, start_sending, with_feed
from tests.support.settings import make_settings

DAY = date(2026, 11, 26)
ALL = list(apikeys.SCOPES)
PROBLEM = "application/problem+json"


@dataclass
class Api:
    app: App
    base: str
    http: requests.Session

    def key(self, *scopes: str, name: str = "site") -> dict[str, str]:
        with self.app.sessions.begin() as session:
            _, key = apikeys.create(session, name, scopes or ALL, actor="test",
                                    now=self.app.clock.now())
        return {"Authorization": f"Bearer {key}"}

    def call(self, method: str, path: str, headers: dict[str, str] | None = None,
             **kwargs: Any) -> requests.Response:
        return self.http.request(method, self.base + path, headers=headers, timeout=30,
                                 **kwargs)


@pytest.fixture
def api(tmp_path: Path, clock: FixedClock) -> Iterator[Api]:
    app = App.create(make_settings(tmp_path, sections=["News", "Comment"]), clock=clock)
    init_db(app.engine)
    web = create_app(app, {"MAILER_SEND_INLINE": True})
    server = make_server("127.0.0.1", 0, web, threaded=True)
    # (polling for `shutdown` every 10 ms: the default half second is waited out per test)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01},
                              daemon=True)
    thread.start()
    with requests.Session() as http:
        yield Api(app, f"http://127.0.0.1:{server.server_port}/api/v1", http)
    server.shutdown()
    app.close()


def test_a_key_made_with_the_cli_is_shown_once_stored_hashed_and_revocable(
        api: Api, tmp_path: Path) -> None:
    environ = {"MAILER_DATABASE_URL": api.app.settings.database_url,
               "MAILER_SECRET_KEY": "k", "MAILER_CONFIG": str(tmp_path / "none.toml")}
    (tmp_path / "none.toml").write_text("")
    runner = CliRunner()
    made = runner.invoke(cli, ["api-keys", "add", "crm", "--scope", "subscribers:read"],
                         env=environ)
    assert made.exit_code == 0, made.output
    key = made.stdout.strip()
    assert key.startswith("llm_") and len(key) > 40
    with api.app.sessions() as session:
        row = session.scalars(select(ApiKey)).one()
        assert key not in (row.key_hash, row.prefix) and key.startswith(row.prefix)
    auth = {"Authorization": f"Bearer {key}"}
    assert api.call("GET", "/subscribers", auth).status_code == 200
    listed = runner.invoke(cli, ["api-keys", "list"], env=environ).output
    assert "crm" in listed and row.prefix in listed and key not in listed and "last used" in listed
    assert runner.invoke(cli, ["api-keys", "revoke", "crm"], env=environ).exit_code == 0
    refused = api.call("GET", "/subscribers", auth)
    assert refused.status_code == 401 and refused.headers["Content-Type"] == PROBLEM
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")


def test_scopes_limit_a_key_and_errors_are_problem_details(api: Api) -> None:
    reader = api.key("subscribers:read")
    denied = api.call("POST", "/subscribers", reader, json={"email": "a@example.org"})
    assert denied.status_code == 403 and denied.headers["Content-Type"] == PROBLEM
    body = denied.json()
    assert body["status"] == 403 and body["type"].endswith("/forbidden") and body["title"]
    assert api.call("GET", "/subscribers").status_code == 401
    missing = api.call("GET", "/nothing-here", reader)
    assert missing.status_code == 404 and missing.json()["instance"] == "/api/v1/nothing-here"
    wrong = api.call("PUT", "/subscribers", reader)
    assert wrong.status_code == 405 and "GET" in wrong.headers["Allow"]


def test_subscribers_round_trip_with_the_forms_rules(api: Api, tmp_path: Path) -> None:
    auth = api.key()
    # Double opt-in by default: pending, and the confirmation email goes out.
    made = api.call("POST", "/subscribers", auth, json={"email": "Ann@Example.org",
                                                      "name": "Ann Jones"})
    assert made.status_code == 201 and made.json()["status"] == "pending"
    assert made.headers["Location"] == f"/api/v1/subscribers/{made.json()['id']}"
    [mail] = read_outbox(tmp_path / "outbox")
    assert mail.email == "ann@example.org" and "/confirm/" in mail.text
    # Confirmed by the site: active, with the consent recorded under the key's name.
    bob = api.call("POST", "/subscribers", auth, json={
        "email": "bob@example.org", "confirmed": True, "frequency": "weekly",
        "sections": ["comment"]}).json()
    assert (bob["status"], bob["frequency"], bob["sections"]) == ("active", "weekly",
                                                                 ["Comment"])
    with api.app.sessions() as session:
        history = list(session.scalars(select(SubscriberEvent.detail)
                                       .where(SubscriberEvent.subscriber_id == bob["id"])))
    assert any("API key site" in line for line in history)
    # Read by address or id; change; bad input named by field.
    assert api.call("GET", "/subscribers/bob@example.org", auth).json()["id"] == bob["id"]
    changed = api.call("PATCH", f"/subscribers/{bob['id']}", auth,
                       json={"first_name": "Bobby", "sections": []})
    assert changed.json()["first_name"] == "Bobby" and changed.json()["sections"] == []
    bad = api.call("PATCH", f"/subscribers/{bob['id']}", auth, json={"sections": ["Sport"]})
    assert bad.status_code == 422 and "sections" in bad.json()["errors"]["json"]
    invalid = api.call("POST", "/subscribers", auth, json={"email": "not-an-address"})
    assert invalid.status_code == 422 and invalid.json()["errors"]["json"]["email"]
    # Leave, with a reason; a confirmed re-add of someone who left is refused.
    left = api.call("POST", f"/subscribers/{bob['id']}/unsubscribe", auth,
                    json={"reason": "asked by phone"})
    assert left.json()["status"] == "unsubscribed"
    again = api.call("POST", "/subscribers", auth, json={"email": "bob@example.org",
                                                         "confirmed": True})
    assert again.status_code == 409 and again.json()["type"].endswith("/left-the-list")
    # List a page at a time.
    first = api.call("GET", "/subscribers?limit=1", auth).json()
    second = api.call("GET", f"/subscribers?limit=1&cursor={first['next_cursor']}", auth).json()
    assert [first["data"][0]["email"], second["data"][0]["email"]] == [
        "ann@example.org", "bob@example.org"] and second["next_cursor"] is None
    only = api.call("GET", "/subscribers?status=unsubscribed", auth).json()["data"]
    assert [s["email"] for s in only] == ["bob@example.org"]
    # Erase: gone, and not to be added back silently.
    assert api.call("DELETE", "/subscribers/bob@example.org", auth).status_code == 204
    assert api.call("GET", f"/subscribers/{bob['id']}", auth).status_code == 404
    back = api.call("POST", "/subscribers", auth, json={"email": "bob@example.org"})
    assert back.status_code == 409 and back.json()["type"].endswith("/suppressed")


def test_an_unsubscribe_through_the_api_withdraws_the_reader_from_a_send_under_way(
        api: Api, tmp_path: Path) -> None:
    with_feed(api.app, tmp_path)
    seed_subscribers(api.app, 3)
    edition_id, _ = start_sending(api.app, DAY)
    assert api.call("POST", "/subscribers/reader1@example.org/unsubscribe",
                    api.key()).status_code == 200
    with api.app.sessions() as session:
        states = dict(session.execute(select(Delivery.email, Delivery.state)
                                      .where(Delivery.edition_id == edition_id)).all())
    assert states["reader1@example.org"] == WITHDRAWN
    assert states["reader0@example.org"] != WITHDRAWN


def test_idempotency_key_replays_the_first_answer_for_a_day(api: Api) -> None:
    auth = api.key()
    body = {"email": "cara@example.org", "confirmed": True}
    first = api.call("POST", "/subscribers", {**auth, "Idempotency-Key": "signup-1"}, json=body)
    replay = api.call("POST", "/subscribers", {**auth, "Idempotency-Key": "signup-1"}, json=body)
    assert first.status_code == replay.status_code == 201
    assert replay.json() == first.json() and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.headers["Location"] == first.headers["Location"]
    reused = api.call("POST", "/subscribers", {**auth, "Idempotency-Key": "signup-1"},
                      json={"email": "dev@example.org"})
    assert reused.status_code == 422 and reused.json()["type"].endswith("idempotency-key-reused")
    api.app.clock.advance(hours=25)  # type: ignore[attr-defined]
    later = api.call("POST", "/subscribers", {**auth, "Idempotency-Key": "signup-1"}, json=body)
    assert later.status_code == 200 and "Idempotent-Replayed" not in later.headers
    with api.app.sessions() as session:
        assert find(session, "dev@example.org") is None


def test_rate_limits_per_key_are_stated_and_enforced(api: Api) -> None:
    api.app.settings = api.app.settings.replace(api_rate_limit=3)
    auth, other = api.key(), api.key(name="other")
    answers = [api.call("GET", "/subscribers", auth) for _ in range(4)]
    assert [a.status_code for a in answers[:3]] == [200, 200, 200]
    assert answers[0].headers["RateLimit-Policy"] == '"per-key";q=3;w=60'
    assert answers[0].headers["RateLimit"].startswith('"per-key";r=2;t=')
    limited = answers[3]
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert limited.headers["Content-Type"] == PROBLEM
    assert api.call("GET", "/subscribers", other).status_code == 200  # per key


def test_the_openapi_document_is_generated_from_the_code(api: Api) -> None:
    spec = api.http.get(api.base + "/openapi.json", timeout=30).json()
    assert spec["openapi"] == "3.1.0"
    assert {"/api/v1/subscribers", "/api/v1/subscribers/{ref}", "/api/v1/editions/{day}/send",
            "/api/v1/editions/{day}/preview"} <= set(spec["paths"])
    assert not any(path.startswith("/staff") for path in spec["paths"])
    schemes = spec["components"]["securitySchemes"]
    assert any(s.get("scheme", "").lower() == "bearer" for s in schemes.values())
    create = spec["paths"]["/api/v1/subscribers"]["post"]
    assert "confirmed" in str(spec["components"]["schemas"]) and "requestBody" in create


def test_editions_list_show_preview_test_and_send_now(api: Api, tmp_path: Path) -> None:
    with_feed(api.app, tmp_path)
    seed_subscribers(api.app, 4)
    auth = api.key()
    reader = api.key("editions:read", name="reader")
    assert api.call("POST", f"/editions/{DAY}/send", reader).status_code == 403
    tested = api.call("POST", f"/editions/{DAY}/test", auth, json={"to": ["ed@example.org"]})
    assert tested.status_code == 200, tested.text
    assert [c.email for c in read_outbox(tmp_path / "outbox")] == ["ed@example.org"]
    html = api.call("GET", f"/editions/{DAY}/preview", auth)
    text = api.call("GET", f"/editions/{DAY}/preview?format=text", auth)
    assert html.headers["Content-Type"].startswith("text/html") and "<html" in html.text.lower()
    assert text.headers["Content-Type"].startswith("text/plain") and "<html" not in text.text
    started = api.call("POST", f"/editions/{DAY}/send", auth, json={})
    assert started.status_code == 202 and started.headers["Location"] == f"/api/v1/editions/{DAY}"
    shown = api.call("GET", f"/editions/{DAY}", auth).json()
    assert shown["state"] == "sent" and shown["sent_count"] == 4
    assert shown["stats"]["delivered"] == 4
    assert api.call("GET", f"/editions/{DAY}", reader).json()["stats"] is None
    listed = api.call("GET", "/editions", reader).json()["data"]
    assert [e["date"] for e in listed] == [DAY.isoformat()]
    assert api.call("GET", "/editions?kind=weekly", reader).json()["data"] == []
    assert api.call("GET", "/editions/2026-13-01", auth).status_code == 404


def test_a_reader_who_left_comes_back_only_through_confirmation(api: Api,
                                                                 tmp_path: Path) -> None:
    with api.app.sessions.begin() as session:
        sub, _ = add(session, "dan@example.org")
        set_status(session, sub, "unsubscribed", source="page")
    auth = api.key()
    asked = api.call("POST", "/subscribers", auth, json={"email": "dan@example.org"})
    assert asked.status_code == 200 and asked.json()["status"] == "pending"
    assert [c.email for c in read_outbox(tmp_path / "outbox")] == ["dan@example.org"]


def test_a_batch_of_confirmed_readers_goes_through_the_imports_checks(api: Api) -> None:
    auth = api.key()
    with api.app.sessions.begin() as session:
        add(session, "old@example.org")
    readers = [{"email": f"r{n}@example.org", "name": f"R {n}"} for n in range(1000)]
    readers[5] = {"email": "broken"}
    readers[6] = {"email": "old@example.org"}
    readers[7] = {"email": "r8@example.org", "sections": ["Sport"]}
    done = api.call("POST", "/subscribers/batch", auth, json={"confirmed": True,
                                                              "subscribers": readers})
    assert done.status_code == 200, done.text
    report = done.json()
    assert (report["added"], report["unchanged"]) == (997, 1)
    assert [e["index"] for e in report["errors"]] == [5, 7]
    assert "Sport" in report["errors"][1]["error"]
    unconfirmed = api.call("POST", "/subscribers/batch", auth,
                           json={"confirmed": False, "subscribers": readers[:1]})
    assert unconfirmed.status_code == 422
