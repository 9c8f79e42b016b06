"""A staff member signed in to the console through its real login form (Flask's test client)."""

from __future__ import annotations

import re
from typing import Any

from flask.testing import FlaskClient

from mailer.accounts import ADMIN, add_staff
from mailer.app import App
from mailer.web import create_app

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
ADMIN_EMAIL = "admin@labourlist.org"
ADMIN_PASSWORD = "a long staff password"


def csrf_token(client: FlaskClient, path: str = "/staff/") -> str:
    """The form token a page of the signed-in (or signing-in) session carries."""
    found = CSRF_RE.search(client.get(path).get_data(as_text=True))
    assert found, f"no CSRF token on {path}"
    return found.group(1)


def signed_in_admin(app: App, **config: Any) -> FlaskClient:
    """A new admin account, signed in; `config` goes to the Flask app (TESTING is set)."""
    with app.sessions.begin() as session:
        add_staff(session, ADMIN_EMAIL, ADMIN_PASSWORD, role=ADMIN)
    client = create_app(app, {"TESTING": True, **config}).test_client()
    answer = client.post("/staff/login", data={"csrf_token": csrf_token(client, "/staff/login"),
                                               "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    assert answer.status_code == 303
    return client
