"""Per-recipient work of a send: one edition's template filled for one ledger row.

Everything here runs once per recipient, so everything that can be worked out once per
edition is (the template, the token signers, the Message-ID key); `outgoing` is a fill of a
few small values into pre-encoded bytes. Preflight builds its sample message with the same
code, so what it checks is what would be sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from email.utils import parseaddr

from sqlalchemy import select

from mailer import ledger
from mailer.app import App
from mailer.clicks.links import PER_READER
from mailer.clicks.tokens import LinkSigner
from mailer.message import MessageTemplate
from mailer.models import Edition, EditionVariant
from mailer.placeholders import Placeholders
from mailer.tokens import PREFERENCES, UNSUBSCRIBE, IdTokenSigner
from mailer.transports.base import Outgoing


@dataclass
class Personaliser:
    """Everything per-recipient, computed cheaply from pre-encoded parts."""

    app: App
    edition: Edition
    template: MessageTemplate
    domain: str
    #: The edition for each choice of sections in the audience (`mailer.variants`), and
    #: each subject test group's copy with its own subject, by `Delivery.variant`; a reader
    #: with "" (or a variant not rendered) gets `template`.
    variants: dict[str, MessageTemplate] = field(default_factory=dict)

    @classmethod
    def for_edition(cls, app: App, edition: Edition) -> Personaliser:
        settings = app.settings
        now = app.clock.now()

        def build(html: str, text: str, key: str, subject: str = "") -> MessageTemplate:
            return MessageTemplate.build(settings=settings, subject=subject or edition.subject,
                                         html=html, text=text, date=now,
                                         placeholders=Placeholders(key))

        template = build(edition.html, edition.text, edition.placeholder_key)
        with app.sessions() as session:
            variants = {v.variant: build(v.html, v.text, v.placeholder_key, v.subject)
                        for v in session.scalars(select(EditionVariant).where(
                            EditionVariant.edition_id == edition.id))}
        domain = parseaddr(settings.from_addr)[1].rpartition("@")[2] or "localhost"
        return cls(app=app, edition=edition, template=template, domain=domain,
                   variants=variants)

    def __post_init__(self) -> None:
        secret = self.app.secret_key
        self._unsubscribe = IdTokenSigner(secret, UNSUBSCRIBE)
        self._preferences = IdTokenSigner(secret, PREFERENCES)
        self._base = self.app.settings.base_url.rstrip("/")
        self._message_ids = ledger.MessageIds(secret, self.edition, self.domain)
        # Per-reader editions: every tracked link ends in a slot for this reader's signed
        # delivery (`mailer.clicks.tokens`); the others carry no such slot.
        per_reader = self.edition.click_tracking == PER_READER
        self._clicks = LinkSigner(secret) if per_reader else None

    def outgoing(self, c: ledger.Claim, with_fields: bool = True) -> Outgoing:
        base = self._base
        unsub = f"{base}/unsubscribe/{self._unsubscribe.make(c.subscriber_id)}"
        prefs = f"{base}/preferences/{self._preferences.make(c.subscriber_id)}"
        message_id = self._message_ids.make(c.id)
        click = "." + self._clicks.reader_tag(self.edition.id, c.id) if self._clicks else ""
        template = self.variants.get(c.variant, self.template) if c.variant else self.template
        data = template.fill(email=c.email, name=c.name, unsubscribe_url=unsub,
                             preferences_url=prefs, message_id=message_id, click=click,
                             first_name=c.first_name)
        if not with_fields:  # SMTP and the outbox: the bytes are all they send
            return Outgoing(c.email, message_id, data, {}, c.id, True)
        fields = template.fields(email=c.email, name=c.name, unsubscribe_url=unsub,
                                 preferences_url=prefs, message_id=message_id, click=click,
                                 first_name=c.first_name)
        return Outgoing(recipient=c.email, message_id=message_id, data=data, fields=fields,
                        delivery_id=c.id, wire_ready=True, template=template)
