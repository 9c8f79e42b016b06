"""The console's API and webhooks page: admins make and revoke keys and register receivers,
each secret shown once, deliveries listed with "send again"; editors cannot."""
# ruff: noqa: F811 - the console's fixtures come from tests/test_staff_web.py by import

from __future__ import annotations

import re

from flask.testing import FlaskClient
from sqlalchemy import select

from mailer import apikeys
from mailer.app import App
from mailer.models import ApiKey, HookDelivery
from mailer.outgoing.delivery import drain
from mailer.subscribers import add
from tests.support.hookreceiver import running_receiver
from tests.test_staff_web import (  # noqa: F401 - fixtures
    admin,
    app,
    audit_actions,
    client,
    editor,
    post,
    text,
    token,
    web,
)


def test_admins_make_a_key_shown_once_and_revoke_it(admin: FlaskClient, app: App) -> None:
    made = post(admin, "/staff/integrations/keys", name="crm", scope="subscribers:read")
    page = text(made)
    key = re.search(r'id="new-key-value"[^>]*value="(llm_[^"]+)"', page)
    assert made.status_code == 200 and key  # type: ignore[attr-defined]
    with app.sessions() as session:
        row = session.scalars(select(ApiKey)).one()
        assert row.scopes == ["subscribers:read"] and row.key_hash != key.group(1)
        assert apikeys.authenticate(session, key.group(1), now=app.clock.now()) is not None
    later = text(admin.get("/staff/integrations"))
    assert key.group(1) not in later and row.prefix in later
    post(admin, f"/staff/integrations/keys/{row.id}/revoke")
    with app.sessions() as session:
        assert apikeys.authenticate(session, key.group(1), now=app.clock.now()) is None
    assert "revoked" in text(admin.get("/staff/integrations"))
    bad = post(admin, "/staff/integrations/keys", name="no scopes")
    assert bad.status_code == 400 and "scope" in text(bad)  # type: ignore[attr-defined]
    assert {"api-key-added", "api-key-revoked"} <= set(audit_actions(app))


def test_admins_register_a_receiver_and_send_a_delivery_again(admin: FlaskClient,
                                                               app: App) -> None:
    app.settings = app.settings.replace(allow_local_links=True)
    with running_receiver() as receiver:
        page = text(post(admin, "/staff/integrations/webhooks", url=receiver.url,
                         event="subscriber.created", description="CRM"))
        secret = re.search(r'id="new-secret-value"[^>]*value="(whsec_[^"]+)"', page)
        assert secret
        receiver.secret = secret.group(1)
        with app.sessions.begin() as session:
            add(session, "gil@example.org", at=app.clock.now())
        assert drain(app).delivered == 1 and len(receiver.posts) == 1
        with app.sessions() as session:
            delivery = session.scalars(select(HookDelivery)).one()
        listing = text(admin.get(f"/staff/integrations/webhooks/{delivery.endpoint_id}"))
        assert "subscriber.created" in listing and delivery.message_id in listing
        assert "HTTP 200" in listing and secret.group(1) not in listing
        post(admin, f"/staff/integrations/deliveries/{delivery.id}/again")
        assert drain(app).delivered == 1
        assert len(receiver.posts) == 2 and len(receiver.unique()) == 1  # same event id
    refused = post(admin, "/staff/integrations/webhooks", url="https://169.254.169.254/x")
    assert refused.status_code == 400 and "metadata" in text(refused)  # type: ignore[attr-defined]
    assert {"webhook-added", "webhook-resent"} <= set(audit_actions(app))


def test_editors_cannot_reach_the_page(editor: FlaskClient) -> None:
    assert editor.get("/staff/integrations").status_code == 403
    assert post(editor, "/staff/integrations/keys", name="x",
                scope="subscribers:write").status_code == 403  # type: ignore[attr-defined]


def test_a_refusal_keeps_the_console_frame_and_staff_pages_have_no_public_footer(
        editor: FlaskClient) -> None:
    refused = editor.get("/staff/settings")
    page = text(refused)
    assert refused.status_code == 403 and 'aria-label="Staff console"' in page
    assert "ask an admin" in page and "Past editions" not in page
    missing = editor.get("/staff/editions/2026-02-30")
    assert missing.status_code == 404 and 'aria-label="Staff console"' in text(missing)
    dashboard = text(editor.get("/staff/"))
    assert 'class="footer"' not in dashboard and "staff console" in dashboard
