"""What every API view shares: the blueprint, the key check, rate limits, idempotent POSTs.

- Keys: `Authorization: Bearer <key>` through APIFlask's `HTTPTokenAuth`, so the OpenAPI
  document states the scheme; a key's scopes are its "roles", and a view names the scope it
  needs (`scoped`). No key or an unknown or revoked one: 401; a key without the scope: 403.
- Rate limits: `api_rate_limit` requests a minute per key (a fixed window per process),
  stated on every answer with the `RateLimit-Policy` and `RateLimit` headers of the IETF
  draft, and 429 with `Retry-After` past it.
- `Idempotency-Key` on a POST: the first answer (status, body, Location) is kept for 24 hours
  and given again for the same key and the same request; the same key with a different
  request is a 422, and with a request still being answered a 409. Answers of 5xx are not
  kept, so the client's retry runs again.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import Any, TypeVar, cast

from apiflask import APIBlueprint, HTTPTokenAuth
from apiflask.exceptions import HTTPError
from flask import Response, current_app, g, make_response, request
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from mailer import apikeys
from mailer.models import ApiKey, ApiReply
from mailer.web import problems
from mailer.web.context import mailer_app
from mailer.web.security import exempt_blueprint

F = TypeVar("F", bound=Callable[..., Any])

bp = cast(APIBlueprint, exempt_blueprint(APIBlueprint(
    "api", __name__, url_prefix="/api/v1", tag="API")))
auth = HTTPTokenAuth(scheme="Bearer", description="An API key made with `mailer api-keys add`.")

REPLAY_FOR = timedelta(hours=24)
#: A batch of 1,000 readers is about 100 KB; everything else fits the app's 64 KB.
MAX_BATCH_BODY = 1024 * 1024
WINDOW = 60
MAX_IDEMPOTENCY_KEY = 255
_KEPT_HEADERS = ("Location", "Content-Type")


@bp.url_value_preprocessor
def _allow_batches(endpoint: str | None, values: dict[str, Any] | None) -> None:
    # Before anything reads the body (the size limit applies when it is read).
    if endpoint == "api.create_many":
        request.max_content_length = MAX_BATCH_BODY


@auth.verify_token
def _verify(token: str) -> ApiKey | None:
    app = mailer_app()
    with app.sessions.begin() as session:
        key = apikeys.authenticate(session, token or "", now=app.clock.now())
        if key is not None:
            session.expunge(key)
    if key is not None:
        g.api_key = key
        _count_request(key)
    return key


@auth.get_user_roles
def _scopes(key: ApiKey) -> list[str]:
    return list(key.scopes)


@auth.error_processor
def _auth_error(error: HTTPError) -> Response:
    if error.status_code == 401:
        return problems.problem(401, "send an API key: Authorization: Bearer <key>",
                                headers={"WWW-Authenticate": 'Bearer realm="api"'})
    return problems.problem(403, "this key does not have the scope this request needs")


def scoped(scope: str) -> Callable[[F], F]:
    """The view needs a key with `scope`."""
    assert scope in apikeys.SCOPES
    return bp.auth_required(auth, roles=[scope])


def current_key() -> ApiKey:
    key: ApiKey = g.api_key
    return key


def actor() -> str:
    """How the audit log and a reader's history name the key: "api:NAME"."""
    return f"api:{current_key().name}"


def error(status: int, detail: str, **extra: Any) -> HTTPError:
    """An exception a view raises; the error processor turns it into a problem."""
    return HTTPError(status, detail, extra_data=extra)


def problem_of(err: HTTPError) -> Response:
    """APIFlask's errors (ours, validation's) as problem details."""
    extra = dict(err.extra_data or {})
    slug = str(extra.pop("slug", ""))
    detail = err.detail if isinstance(err.detail, str) else ""
    if err.status_code == 422 and isinstance(err.detail, dict) and err.detail:
        extra["errors"] = err.detail
        detail = "the request's fields are not valid: see errors"
    if not detail and isinstance(err.message, str) and err.message != problems.TITLES.get(
            err.status_code):
        detail = err.message
    headers = {name: str(value) for name, value in dict(err.headers or {}).items()}
    return problems.problem(err.status_code, detail, slug=slug, headers=headers, **extra)


# ---- rate limits -------------------------------------------------------------------------


class _Windows:
    """Requests per key in the current minute, per process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.windows: dict[int, tuple[int, int]] = {}

    def hit(self, key_id: int, limit: int, now: float) -> tuple[int, int]:
        """(requests left, seconds to the window's end) after this one."""
        window = int(now // WINDOW)
        with self.lock:
            start, count = self.windows.get(key_id, (window, 0))
            if start != window:
                start, count = window, 0
            count += 1
            self.windows[key_id] = (start, count)
        return limit - count, int((window + 1) * WINDOW - now) or 1


def _windows() -> _Windows:
    found = current_app.extensions.setdefault("mailer.api.windows", _Windows())
    assert isinstance(found, _Windows)
    return found


def _count_request(key: ApiKey) -> None:
    limit = mailer_app().settings.api_rate_limit
    left, reset = _windows().hit(key.id, limit, time.time())
    g.api_rate = (limit, max(left, 0), reset)
    if left < 0:
        raise error(429, f"this key may make {limit} requests a minute; try again in "
                         f"{reset} s")


@bp.after_request
def _rate_headers(response: Response) -> Response:
    rate = g.get("api_rate")
    if rate is not None:
        limit, left, reset = rate
        response.headers["RateLimit-Policy"] = f'"per-key";q={limit};w={WINDOW}'
        response.headers["RateLimit"] = f'"per-key";r={left};t={reset}'
        if response.status_code == 429:
            response.headers["Retry-After"] = str(reset)
    return response


# ---- idempotent POSTs --------------------------------------------------------------------


def about_subscriber(subscriber_id: int) -> None:
    """The answer being made is about this reader (its stored copy goes when they are
    erased)."""
    g.api_subscriber_id = subscriber_id


def idempotent(view: F) -> F:
    """Honour `Idempotency-Key` on the decorated POST view (inside the key check)."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        idem = request.headers.get("Idempotency-Key")
        if idem is None:
            return view(*args, **kwargs)
        if not 0 < len(idem) <= MAX_IDEMPOTENCY_KEY or not idem.isprintable():
            raise error(400, "Idempotency-Key must be 1 to 255 printable characters")
        claimed = _claim(idem)
        if isinstance(claimed, Response):
            return claimed
        try:
            response = make_response(view(*args, **kwargs))
        except BaseException:
            _release(claimed)
            raise
        _keep(claimed, response)
        return response

    return cast(F, wrapper)


def _fingerprint() -> str:
    digest = hashlib.sha256(f"{request.method} {request.path}\n".encode())
    digest.update(request.get_data(cache=True))
    return digest.hexdigest()


def _claim(idem: str) -> int | Response:
    """The id of our claim on the key, or the answer to give instead (a replay)."""
    app, key = mailer_app(), current_key()
    now, fingerprint = app.clock.now(), _fingerprint()
    try:
        with app.sessions.begin() as session:
            session.execute(delete(ApiReply).where(ApiReply.key_id == key.id,
                                                   ApiReply.idempotency_key == idem,
                                                   ApiReply.created_at < now - REPLAY_FOR))
            row = session.scalar(select(ApiReply).where(ApiReply.key_id == key.id,
                                                        ApiReply.idempotency_key == idem))
            if row is None:
                row = ApiReply(key_id=key.id, idempotency_key=idem, fingerprint=fingerprint,
                               status=0, body="", headers={}, created_at=now)
                session.add(row)
                session.flush()
                return row.id
            if row.fingerprint != fingerprint:
                raise error(422, "this Idempotency-Key was used with a different request",
                            slug="idempotency-key-reused")
            if row.status == 0:
                raise error(409, "a request with this Idempotency-Key is still being answered",
                            slug="idempotency-key-in-use")
            response = Response(row.body, status=row.status)
            for name, value in row.headers.items():
                response.headers[name] = value
            response.headers["Idempotent-Replayed"] = "true"
            return response
    except IntegrityError:  # another request took the key between our look and our insert
        raise error(409, "a request with this Idempotency-Key is still being answered",
                    slug="idempotency-key-in-use") from None


def _release(claim: int) -> None:
    with mailer_app().sessions.begin() as session:
        session.execute(delete(ApiReply).where(ApiReply.id == claim))


def _keep(claim: int, response: Response) -> None:
    if response.status_code >= 500:
        _release(claim)
        return
    headers = {name: response.headers[name] for name in _KEPT_HEADERS if name in response.headers}
    with mailer_app().sessions.begin() as session:
        row = session.get(ApiReply, claim)
        if row is not None:
            row.status = response.status_code
            row.body = response.get_data(as_text=True)
            row.headers = headers
            row.subscriber_id = g.get("api_subscriber_id")
