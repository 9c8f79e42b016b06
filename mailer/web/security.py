"""CSRF protection and security headers for every page of the web app.

CSRF: a random secret lives in Flask's signed session cookie and each form carries an
itsdangerous-signed, time-stamped copy of it; a state-changing request must send back a token
that verifies and matches the session. Checking happens in one `before_request` hook, so a new
view is protected by default and must opt out explicitly with `csrf_exempt` (the RFC 8058
one-click endpoint, provider webhooks), which keeps the exceptions few and easy to review.

Headers: a strict Content-Security-Policy (no scripts at all, styles only from our /static),
framing forbidden (clickjacking a one-button unsubscribe page is the obvious attack), no
Referer (our URLs carry signed tokens that must not leak to linked sites), nosniff, and HSTS
plus secure, host-only cookies when the public base URL is https.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import Blueprint, Flask, Response, abort, current_app, request, session
from itsdangerous import BadData, URLSafeTimedSerializer

F = TypeVar("F", bound=Callable[..., Any])

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
CSRF_SESSION_KEY = "_csrf"
CSRF_MAX_AGE = 24 * 3600  # a form left open overnight still works
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
#: For HTML we did not write by hand (the archived email): its inline styles are needed, but
#: scripts, frames, forms and plugins stay forbidden.
EMAIL_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src https: http: data:; "
             "font-src https:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")

_EXEMPT_ATTR = "_mailer_csrf_exempt"
_exempt_blueprints: set[str] = set()


class CsrfError(Exception):
    """The form's CSRF token is missing, expired or does not match this browser's session."""


def csrf_exempt(view: F) -> F:
    """Mark a view as not needing a CSRF token (it must authenticate requests some other
    way: a signed URL token, a provider's signature)."""
    setattr(view, _EXEMPT_ATTR, True)
    return view


def exempt_blueprint(bp: Blueprint) -> Blueprint:
    """Exempt every view of a blueprint (provider webhooks, which carry their own auth)."""
    _exempt_blueprints.add(bp.name)
    return bp


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.secret_key or "", salt="mailer.csrf")


def generate_csrf() -> str:
    """The token to put in a form (available in templates as `csrf_token()`)."""
    if CSRF_SESSION_KEY not in session:
        session[CSRF_SESSION_KEY] = secrets.token_urlsafe(32)
    return str(_serializer().dumps(session[CSRF_SESSION_KEY]))


def csrf_token_sent() -> str:
    return request.form.get(CSRF_FIELD, "") or request.headers.get(CSRF_HEADER, "")


def validate_csrf(token: str | None = None) -> None:
    """Raise CsrfError unless the request carries a valid token for this session."""
    token = csrf_token_sent() if token is None else token
    if not token:
        raise CsrfError("missing")
    expected = session.get(CSRF_SESSION_KEY)
    if not expected:
        raise CsrfError("no session")
    try:
        value = _serializer().loads(token, max_age=CSRF_MAX_AGE)
    except BadData:
        raise CsrfError("invalid or expired") from None
    if not isinstance(value, str) or not hmac.compare_digest(value, expected):
        raise CsrfError("does not match the session")


def is_exempt() -> bool:
    if request.blueprint and request.blueprint.split(".")[0] in _exempt_blueprints:
        return True
    view = current_app.view_functions.get(request.endpoint or "")
    return bool(view is not None and getattr(view, _EXEMPT_ATTR, False))


def _check_csrf() -> None:
    if request.method not in UNSAFE_METHODS or request.endpoint is None or is_exempt():
        return
    try:
        validate_csrf()
    except CsrfError:
        abort(400, description="csrf")


def _set_headers(response: Response) -> Response:
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CSP)
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "no-referrer")
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    headers.setdefault("Cross-Origin-Resource-Policy", "same-origin")
    headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
    if current_app.config.get("MAILER_HTTPS"):
        headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    if request.endpoint != "static":
        # Pages carry personal data and signed links: no shared cache may keep them.
        headers.setdefault("Cache-Control", "no-store")
    return response


def init_app(app: Flask, base_url: str) -> None:
    """Install the CSRF check, the headers and the cookie policy on `app`."""
    https = urlsplit(base_url).scheme == "https"
    app.config.setdefault("MAILER_HTTPS", https)
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=https,
        # "__Host-" makes browsers refuse the cookie unless it is Secure, host-only, Path=/.
        SESSION_COOKIE_NAME="__Host-mailer" if https else "mailer_session",
    )
    app.before_request(_check_csrf)
    app.after_request(_set_headers)
    app.jinja_env.globals["csrf_token"] = generate_csrf
    app.jinja_env.globals["csrf_field"] = CSRF_FIELD
