"""Provider webhooks: verify the request, map its events to one event type, apply them once.

Each provider module (`postmark`, `sendgrid`, `mailgun`, `ses`) has two halves, kept apart so
the order can never be swapped: verification (basic auth, ECDSA, HMAC, SNS certificate) that
raises `WebhookRejected` before anything is read as an event, then a mapping from the provider's
event names to `EventKind` through plain dicts. `events.apply` is the only code that changes a
subscriber. The Flask routes live in `mailer.web.hooks`.
"""

from mailer.feedback.events import (
    DEFAULT_SOFT_BOUNCE_LIMIT,
    Event,
    EventKind,
    WebhookRejected,
    apply,
    apply_event,
)

__all__ = [
    "DEFAULT_SOFT_BOUNCE_LIMIT",
    "Event",
    "EventKind",
    "WebhookRejected",
    "apply",
    "apply_event",
]
