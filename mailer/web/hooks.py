"""Provider webhooks under ``/webhooks/<provider>``: verify first, then apply events once.

Every route reads the raw body, hands it to its provider module for verification (nothing is
parsed as an event before that passes), maps the events and applies them in one transaction.
A refusal (`WebhookRejected`) answers with its status and a one-line JSON reason, and changes
nothing: the transaction is rolled back, Mailgun's replay token included.

The blueprint is exempt from CSRF as a whole (providers cannot carry our token; each route
authenticates the provider its own way) and accepts bodies up to `MAX_WEBHOOK_BODY`: SendGrid
batches many events into one post, far beyond the small limit our forms need. Mailgun and SES
carry their signature inside the JSON, so a stranger's body is parsed before it is verified:
those routes take `MAX_UNVERIFIED_BODY`.

Bodies are read as JSON through `jsonbody.loads`, so nesting deeper than its bound is a 400
like any other malformed body, never a RecursionError.

Answers: 200 applied (or duplicates, which providers must not retry); 400 malformed (not JSON,
or nested too deep); 401 Postmark without the right basic auth; 403 bad signature, unknown SNS
topic or webhook not configured; 406 Mailgun replay (Mailgun stops retrying on 406); 502 when
an SNS subscription could not be confirmed (SNS tries again).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from mailer.feedback import jsonbody
from mailer.feedback.events import (
    DEFAULT_SOFT_BOUNCE_LIMIT,
    Event,
    WebhookRejected,
    apply_event,
    claim_nonce,
)
from mailer.feedback.providers import mailgun, postmark, sendgrid, ses
from mailer.web.context import mailer_app
from mailer.web.security import exempt_blueprint

log = logging.getLogger("mailer.webhooks")

bp = exempt_blueprint(Blueprint("hooks", __name__, url_prefix="/webhooks"))

MAX_WEBHOOK_BODY = 8 * 1024 * 1024
#: Routes that must parse the JSON before they can verify it (the signature is inside it), so
#: any stranger's body is parsed: their events are a few kilobytes (an SNS message is at most
#: 256 KB), and parsing 8 MB of hostile JSON costs a second or two of CPU.
MAX_UNVERIFIED_BODY = 1024 * 1024
PARSED_BEFORE_VERIFIED = frozenset({"hooks.mailgun_hook", "hooks.ses_hook"})


@bp.before_request
def _allow_large_bodies() -> None:
    request.max_content_length = (MAX_UNVERIFIED_BODY if request.endpoint in
                                  PARSED_BEFORE_VERIFIED else MAX_WEBHOOK_BODY)


@bp.errorhandler(WebhookRejected)
def _rejected(exc: WebhookRejected) -> ResponseReturnValue:
    log.warning("webhook %s refused (%s): %s", request.path, exc.status, exc.reason)
    response = jsonify(ok=False, error=exc.reason)
    response.status_code = exc.status
    if exc.status == 401:
        response.headers["WWW-Authenticate"] = 'Basic realm="mailer webhooks"'
    return response


def _json_body() -> Any:
    """The body as JSON, nested at most `jsonbody.MAX_DEPTH` deep, or a 400 (logged as one
    line by `_rejected`: a hostile body is not an error of ours)."""
    try:
        return jsonbody.loads(request.get_data(cache=True))
    except jsonbody.JsonRefused as exc:
        raise WebhookRejected(400, str(exc)) from None


def _apply(provider: str, events: list[Event], *, nonce: str = "") -> ResponseReturnValue:
    """Apply `events` in one transaction (claiming `nonce` first, if any)."""
    app = mailer_app()
    now = app.clock.now()
    limit = int(getattr(app.settings, "soft_bounce_limit", DEFAULT_SOFT_BOUNCE_LIMIT))
    with app.sessions.begin() as session:
        if nonce and not claim_nonce(session, provider, nonce, now):
            raise WebhookRejected(406, "signature token already used")
        applied = sum(apply_event(session, event, now, soft_bounce_limit=limit)
                      for event in events)
    return jsonify(ok=True, events=len(events), applied=applied,
                   duplicates=len(events) - applied)


@bp.post("/postmark")
def postmark_hook() -> ResponseReturnValue:
    settings = mailer_app().settings
    auth = request.authorization
    postmark.verify(auth.username if auth else None, auth.password if auth else None,
                    expected_user=settings.postmark_webhook_user,
                    expected_password=settings.postmark_webhook_password)
    return _apply(postmark.PROVIDER, postmark.parse(_json_body()))


@bp.post("/sendgrid")
def sendgrid_hook() -> ResponseReturnValue:
    app = mailer_app()
    sendgrid.verify(request.get_data(cache=True),
                    request.headers.get(sendgrid.SIGNATURE_HEADER),
                    request.headers.get(sendgrid.TIMESTAMP_HEADER),
                    app.settings.sendgrid_webhook_public_key, app.clock.now())
    return _apply(sendgrid.PROVIDER, sendgrid.parse(_json_body()))


@bp.post("/mailgun")
def mailgun_hook() -> ResponseReturnValue:
    app = mailer_app()
    body = _json_body()
    token = mailgun.verify(body, app.settings.mailgun_webhook_signing_key, app.clock.now())
    return _apply(mailgun.PROVIDER, mailgun.parse(body), nonce=token)


def topic_arns(settings: Any) -> list[str]:
    """``ses_webhook_topic_arns`` as a list (a list setting, or a comma-separated string)."""
    raw = getattr(settings, "ses_webhook_topic_arns", None) or []
    if isinstance(raw, str):
        raw = raw.split(",")
    return [str(arn).strip() for arn in raw if str(arn).strip()]


@bp.post("/ses")
def ses_hook() -> ResponseReturnValue:
    app = mailer_app()
    message = ses.verify(_json_body(), topics=topic_arns(app.settings), now=app.clock.now(),
                         message_type_header=request.headers.get("x-amz-sns-message-type", ""))
    kind = message["Type"]
    if kind == "SubscriptionConfirmation":
        ses.confirm_subscription(message)
        log.warning("confirmed the SNS subscription to %s", message.get("TopicArn"))
        return jsonify(ok=True, confirmed=message.get("TopicArn"))
    if kind == "UnsubscribeConfirmation":
        log.warning("SNS unsubscribed us from %s", message.get("TopicArn"))
        return jsonify(ok=True)
    return _apply(ses.PROVIDER, ses.parse(message))
