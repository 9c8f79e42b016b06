"""Admins manage staff accounts in the console: add (password shown once), reset, disable,
roles, and the right to erase, which editors have only when an admin gives it."""
# ruff: noqa: F811 - the console's fixtures come from tests/test_staff_web.py by import

from __future__ import annotations

import re

from flask import Flask
from flask.testing import FlaskClient

from mailer.app import App
from mailer.subscribers import add, find
from tests.test_staff_web import (  # noqa: F401 - fixtures
    EDITOR_EMAIL,
    admin,
    app,
    audit_actions,
    client,
    editor,
    login,
    post,
    text,
    token,
    web,
)

SHOWN = re.compile(r'id="new-password-value"[^>]*value="([^"]+)"')


def member_id(page: str, email: str) -> str:
    match = re.search(r'/staff/team/(\d+)/\w[\w-]*"[^<]*<input[^>]*>\s*<button[^>]*>[^<]*'
                      r'<span class="visually-hidden"> ' + re.escape(email), page)
    assert match, email
    return match.group(1)


def test_an_admin_adds_an_account_that_signs_in_with_the_shown_password(
        admin: FlaskClient, web: Flask, app: App) -> None:
    made = post(admin, "/staff/team", email="New.Editor@Example.org", role="editor")
    shown = SHOWN.search(text(made))
    assert made.status_code == 200 and shown  # type: ignore[attr-defined]
    assert shown.group(1) not in text(admin.get("/staff/team"))  # once only
    fresh = web.test_client()
    assert login(fresh, "new.editor@example.org", shown.group(1)).status_code == 303  # type: ignore[attr-defined]
    assert "staff-added" in audit_actions(app)


def test_reset_disable_and_enable(admin: FlaskClient, web: Flask, app: App) -> None:
    other = web.test_client()
    assert login(other, EDITOR_EMAIL).status_code == 303  # type: ignore[attr-defined]
    ed = member_id(text(admin.get("/staff/team")), EDITOR_EMAIL)
    reset = SHOWN.search(text(post(admin, f"/staff/team/{ed}/reset")))
    assert reset
    assert other.get("/staff/").status_code == 302  # the old session ended
    assert login(web.test_client(), EDITOR_EMAIL).status_code != 303  # type: ignore[attr-defined]
    assert login(other, EDITOR_EMAIL, reset.group(1)).status_code == 303  # type: ignore[attr-defined]
    post(admin, f"/staff/team/{ed}/disable")
    assert other.get("/staff/").status_code == 302
    assert login(web.test_client(), EDITOR_EMAIL, reset.group(1)).status_code != 303  # type: ignore[attr-defined]
    assert "disabled" in text(admin.get("/staff/team"))
    post(admin, f"/staff/team/{ed}/enable")
    assert login(web.test_client(), EDITOR_EMAIL, reset.group(1)).status_code == 303  # type: ignore[attr-defined]
    assert {"staff-reset", "staff-disable", "staff-enable"} <= set(audit_actions(app))


def test_an_admin_cannot_lock_themselves_out(admin: FlaskClient) -> None:
    page = text(admin.get("/staff/team"))
    me = re.search(r'/staff/team/(\d+)/reset"[^<]*<input[^>]*>\s*<button[^>]*>[^<]*'
                   r'<span class="visually-hidden"> admin@example.org', page)
    assert me
    refused = post(admin, f"/staff/team/{me.group(1)}/disable")
    assert refused.status_code == 303  # type: ignore[attr-defined]
    after = admin.get("/staff/team")
    assert after.status_code == 200  # still signed in, still admin
    assert "You cannot do that to your own account" in text(after)


def test_editors_erase_only_when_an_admin_allows_it(web: Flask, app: App) -> None:
    with app.sessions.begin() as session:
        sub, _ = add(session, "reader@example.org")
        sub_id = sub.id
    ed_client, admin_client = web.test_client(), web.test_client()
    login(ed_client, EDITOR_EMAIL)
    login(admin_client)
    assert "ask an admin" in text(ed_client.get(f"/staff/subscribers/{sub_id}"))
    assert ed_client.get(f"/staff/subscribers/{sub_id}/erase").status_code == 403
    assert post(ed_client, f"/staff/subscribers/{sub_id}/erase",
                confirm="yes").status_code == 403  # type: ignore[attr-defined]
    assert ed_client.get("/staff/team").status_code == 403
    ed = member_id(text(admin_client.get("/staff/team")), EDITOR_EMAIL)
    post(admin_client, f"/staff/team/{ed}/allow-erase")
    assert "Erase…" in text(ed_client.get(f"/staff/subscribers/{sub_id}"))
    post(ed_client, f"/staff/subscribers/{sub_id}/erase", confirm="yes")
    with app.sessions() as session:
        assert find(session, "reader@example.org") is None
