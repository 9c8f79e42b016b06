"""Provider webhooks: one route, ``/webhooks/<provider>``, verify first, then apply events once.

The route finds the provider's module through `mailer.feedback.providers.load` (by name, so a
new provider is one module there and nothing here changes), hands it the raw request to
verify (nothing is parsed as an event before that passes), maps the events and applies them
in one transaction. A name that is not a provider never matches the route (its converter
matches only `providers.names()`), so it is the same 404 as any other URL we do not serve. A refusal
(`WebhookRejected`) answers with its status and a one-line JSON reason, and changes nothing:
the transaction is rolled back, Mailgun's replay token included.

The blueprint is exempt from CSRF as a whole (providers cannot carry our token; each provider
authenticates its own way) and accepts bodies up to `MAX_WEBHOOK_BODY`: SendGrid batches many
events into one post, far beyond the small limit our forms need. Mailgun and SES carry their
signature inside the JSON (``PARSED_BEFORE_VERIFIED``), so a stranger's body is parsed before
it is verified: those take `MAX_UNVERIFIED_BODY`.

Bodies are read as JSON through `feedback.jsonbody.loads`, so nesting deeper than its bound is
a 400 like any other malformed body, never a RecursionError.

Answers: 200 applied (or duplicates, which providers must not retry); 400 malformed (not JSON,
or nested too deep); 401 Postmark without the right basic auth; 403 bad signature, unknown SNS
topic or webhook not configured; 406 Mailgun replay (Mailgun stops retrying on 406); 502 when
an SNS subscription could not be confirmed (SNS tries again); 503 when a package the
provider's module needs is not installed.
"""

from __future__ import annotations

import logging
import re
from types import ModuleType
from typing import Any

from flask import Blueprint, jsonify, request
from flask.blueprints import BlueprintSetupState
from flask.typing import ResponseReturnValue
from werkzeug.routing import BaseConverter, Map

from mailer.feedback import providers
from mailer.feedback.events import Event, WebhookRejected, apply_event, claim_nonce
from mailer.feedback.providers import WebhookRequest
from mailer.web.context import mailer_app
from mailer.web.security import exempt_blueprint

log = logging.getLogger("mailer.webhooks")

bp = exempt_blueprint(Blueprint("hooks", __name__, url_prefix="/webhooks"))

MAX_WEBHOOK_BODY = 8 * 1024 * 1024
#: For providers that must parse the JSON before they can verify it (the signature is inside
#: it), so any stranger's body is parsed: their events are a few kilobytes (an SNS message is
#: at most 256 KB), and parsing 8 MB of hostile JSON costs a second or two of CPU.
MAX_UNVERIFIED_BODY = 1024 * 1024


class ProviderConverter(BaseConverter):
    """Matches only the name of a provider module, so any other name is the app's 404 (for
    every method, as with any URL we do not serve)."""

    def __init__(self, url_map: Map, *args: Any, **kwargs: Any) -> None:
        super().__init__(url_map, *args, **kwargs)
        self.regex = "|".join(re.escape(name) for name in providers.names())


@bp.record_once
def _register_converter(state: BlueprintSetupState) -> None:
    # (recorded before the route below, so the converter exists when the rule is added)
    state.app.url_map.converters["webhook_provider"] = ProviderConverter


def _provider(name: str) -> ModuleType:
    module = providers.load(name)
    if module is None:  # (not after the converter matched it: only if the file just went)
        raise WebhookRejected(404, "no such provider")
    return module


@bp.before_request
def _allow_large_bodies() -> None:
    module = _provider((request.view_args or {})["provider"])
    request.max_content_length = (MAX_UNVERIFIED_BODY if module.PARSED_BEFORE_VERIFIED
                                  else MAX_WEBHOOK_BODY)


@bp.errorhandler(WebhookRejected)
def _rejected(exc: WebhookRejected) -> ResponseReturnValue:
    log.warning("webhook %s refused (%s): %s", request.path, exc.status, exc.reason)
    response = jsonify(ok=False, error=exc.reason)
    response.status_code = exc.status
    if exc.status == 401:
        response.headers["WWW-Authenticate"] = 'Basic realm="mailer webhooks"'
    return response


@bp.post("/<webhook_provider:provider>")
def hook(provider: str) -> ResponseReturnValue:
    """Verify the request with the provider's module, then apply what it parses."""
    module = _provider(provider)
    app = mailer_app()
    auth = request.authorization
    verified = module.verify(
        WebhookRequest(read_body=lambda: request.get_data(cache=True), headers=request.headers,
                       username=auth.username if auth else None,
                       password=auth.password if auth else None),
        app.settings, app.clock.now())
    if verified.answer is not None:
        return jsonify(verified.answer)
    return _apply(module.PROVIDER, module.parse(verified.body), nonce=verified.nonce)


def _apply(provider: str, events: list[Event], *, nonce: str = "") -> ResponseReturnValue:
    """Apply `events` in one transaction (claiming `nonce` first, if any)."""
    app = mailer_app()
    now = app.clock.now()
    limit = app.settings.soft_bounce_limit
    with app.sessions.begin() as session:
        if nonce and not claim_nonce(session, provider, nonce, now):
            raise WebhookRejected(406, "signature token already used")
        applied = sum(apply_event(session, event, now, soft_bounce_limit=limit)
                      for event in events)
    return jsonify(ok=True, events=len(events), applied=applied,
                   duplicates=len(events) - applied)
