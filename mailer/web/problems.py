"""Errors of the public API as RFC 9457 problem details (`application/problem+json`).

Every error under `/api/` takes this shape, whatever raised it: our own checks, APIFlask's
validation, the token check, and Flask's own 404 or 405 for a URL or method we do not serve
(the site's HTML error pages would mean nothing to a program). `type` names the problem
with a URL under the docs, `title` is the same for every occurrence of a type, `detail` says
what was wrong with this request.
"""

from __future__ import annotations

from typing import Any

from flask import Response, json, request

API_PREFIX = "/api/"
MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://labourlist.org/mailer/problems/"

TITLES = {
    400: "Bad request", 401: "Not authenticated", 403: "Not allowed", 404: "Not found",
    405: "Method not allowed", 409: "Conflict", 413: "Request too large",
    415: "Unsupported media type", 422: "Invalid request", 429: "Too many requests",
    500: "Internal error", 503: "Unavailable",
}
SLUGS = {
    400: "bad-request", 401: "unauthenticated", 403: "forbidden", 404: "not-found",
    405: "method-not-allowed", 409: "conflict", 413: "too-large", 415: "unsupported-media-type",
    422: "invalid", 429: "rate-limited", 500: "internal", 503: "unavailable",
}


def is_api_request() -> bool:
    return request.path.startswith(API_PREFIX)


def problem(status: int, detail: str = "", *, slug: str = "",
            headers: dict[str, str] | None = None, **extra: Any) -> Response:
    """The response for one problem; `extra` members (e.g. `errors`) are added as they are."""
    body: dict[str, Any] = {
        "type": TYPE_BASE + (slug or SLUGS.get(status, "error")),
        "title": TITLES.get(status, "Error"), "status": status,
    }
    if detail:
        body["detail"] = detail
    body["instance"] = request.path
    body.update(extra)
    response = Response(json.dumps(body), status=status, mimetype=MEDIA_TYPE)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response
