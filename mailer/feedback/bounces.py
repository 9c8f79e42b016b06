"""Bounces that come back by email: delivery status reports (RFC 3464) for the SMTP transport.

A relay accepts every message with 250 and finds out later that a mailbox is gone; it then
mails a report to the envelope sender. API providers tell us by webhook; for SMTP these
reports are the only news of a dead address, and a list that never reads them keeps mailing
dead addresses until its relay or its reputation gives out.

`mailer bounces ingest` reads such messages (from the MTA's pipe, a file, or a Maildir) and
applies them through the same one place as the providers' webhooks (`feedback.events.apply`):
hard bounce -> ``bounced``; other failures counted as soft bounces; delays stored only.

Only reports about our own messages count. The envelope sender is a public address, so anyone
could mail it a report saying that a subscriber bounced; a report is applied only when it
returns the original message's Message-ID and that is the Message-ID the ledger recorded for
the delivery it names (Message-IDs carry a keyed hash of the delivery: `ledger.MessageIds`).

With VERP (`mailer.verp`) the address a bounce was delivered to names the delivery by the same
keyed token, so bounces that are not reports, or return no headers, are applied too: the
status code in their text says what happened (qmail's "(#5.1.1)", Exim's "550 5.1.1 ...");
one with no status in it is stored and changes nothing, and an automatic reply ("out of the
office", sent to the envelope sender as RFC 3834 asks) is ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from email.message import Message
from email.parser import BytesHeaderParser, HeaderParser
from email.utils import getaddresses, parseaddr

from sqlalchemy.orm import Session

from mailer.feedback.events import EventKind, apply
from mailer.feedback.inbound import (
    MAX_TEXT,
    Outcome,
    Unreadable,
    message_key,
    parse,
    part_text,
    squash,
)
from mailer.models import Delivery
from mailer.smtp_status import dead_address_status, is_hard_bounce
from mailer.verp import token_of

PROVIDER = "dsn"
SOURCE = "bounce-email"  # what a subscriber's history says a change came from
# A report is about one message, and each of ours has one recipient: more blocks than this are
# not a report about us (only the first are read).
MAX_RECIPIENTS = 20
# `ledger.MessageIds`: <YYYYMMDD.{delivery id}.{keyed hash}@domain>
_OUR_MESSAGE_ID = re.compile(r"^<\d{8}\.(\d+)\.[0-9a-f]{12}@[^<>\s]+>$")
# Where the address a message was delivered to may be found, most specific first (Postfix's
# local delivery adds X-Original-To and Delivered-To, Exim's Envelope-To; a bounce's To is
# the envelope sender of the message it returns).
_DELIVERED_TO = ("X-Original-To", "Delivered-To", "Envelope-To", "X-Envelope-To", "To")
# A status in a bounce's text: an enhanced code anywhere ("(#5.1.1)"), else an SMTP reply
# code at the start of a line ("550 No such user"). Text after the returned copy of the
# message is not read: the copy is ours, and says nothing about what happened to it.
_TEXT_ENHANCED = re.compile(r"(?<![\d.])([245]\.\d{1,3}\.\d{1,3})(?![\d.])")
_TEXT_REPLY = re.compile(r"(?m)^[ \t]*([45]\d\d)[ -](.*)$")
_COPY_FOLLOWS = re.compile(r"(?im)^[ \t]*-+ ?(below this line is a copy|this is a copy|original "
                           r"message|the original message)")
_AUTO_REPLY_SUBJECT = re.compile(r"(?i)^\s*(auto(matic)?[- ]?(reply|response)|out of (the )?"
                                 r"office|away from|on vacation|abwesenheit|absence)")


class NotAReport(Unreadable):
    """The message is not a delivery status report (an auto-reply, spam, a person)."""


@dataclass(frozen=True)
class Recipient:
    """One per-recipient block of a report."""

    address: str  # Final-Recipient (Original-Recipient when there is no Final-Recipient)
    action: str  # failed | delayed | delivered | relayed | expanded
    status: str  # "5.1.1"
    diagnostic: str  # Diagnostic-Code without its type ("smtp; "), one line


@dataclass(frozen=True)
class Report:
    """What a delivery status report says."""

    report_id: str  # the report's own Message-ID (or a hash of it), for applying it once
    original_message_id: str  # the Message-ID of the message that failed, "" if not returned
    recipients: list[Recipient]


def _address(value: str) -> str:
    """The address of a "rfc822; someone@example.org" field."""
    kind, _, address = (value or "").partition(";")
    if not address:
        address = kind
    return parseaddr(address.strip())[1].strip().lower()


def read_report(raw: bytes) -> Report:
    """Parse a report; NotAReport (with the reason) for anything else."""
    try:
        message = parse(raw)
    except Unreadable as exc:
        raise NotAReport(str(exc)) from None
    return _report_of(message, raw)


def _report_of(message: Message, raw: bytes) -> Report:
    if message.get_content_type() != "multipart/report" or (
            # (an RFC 2231 tuple fails here, and the message is "unreadable", as it was)
            (message.get_param("report-type") or "").lower()  # type: ignore[union-attr]
            != "delivery-status"):
        raise NotAReport(f"not a delivery status report ({message.get_content_type()})")
    status_part: Message | None = None
    original: Message | None = None
    for part in message.walk():
        kind = part.get_content_type()
        if kind == "message/delivery-status" and status_part is None:
            status_part = part
        elif kind == "message/rfc822" and original is None:
            payload = part.get_payload()
            first = payload[0] if isinstance(payload, list) and payload else None
            original = first if isinstance(first, Message) else None
        elif kind == "text/rfc822-headers" and original is None:
            text = part.get_payload(decode=True)
            original = BytesHeaderParser().parsebytes(text if isinstance(text, bytes) else b"")
    if status_part is None:
        raise NotAReport("a report without a message/delivery-status part")
    blocks = _status_blocks(status_part)
    recipients = []
    for block in blocks[1:MAX_RECIPIENTS + 1]:  # (the first is about the message itself)
        final = _address(block.get("Final-Recipient", ""))
        before = _address(block.get("Original-Recipient", ""))
        if not (final or before):
            continue
        diagnostic = squash(block.get("Diagnostic-Code", ""))
        diagnostic = diagnostic.split(";", 1)[1].strip() if ";" in diagnostic else diagnostic
        recipients.append(Recipient(address=final or before,
                                    action=squash(block.get("Action", "")).lower(),
                                    status=squash(block.get("Status", "")),
                                    diagnostic=diagnostic[:500]))
    if not recipients:
        raise NotAReport("a delivery status report that names no recipient")
    return Report(report_id=message_key(message, raw),
                  original_message_id=squash(original.get("Message-ID", ""))
                  if original is not None else "",
                  recipients=recipients)


def _status_blocks(part: Message) -> list[Message]:
    """The header blocks of a message/delivery-status part (the email package parses them
    into sub-messages; a part it could not split is read as text)."""
    payload = part.get_payload()
    if isinstance(payload, list) and payload:
        return [p for p in payload if isinstance(p, Message)]
    # (read as UTF-8 whatever charset the part names: RFC 3464's fields are ASCII)
    text = part_text(part, limit=None, charset="utf-8")
    chunks = re.split(r"\r?\n[ \t]*\r?\n", text.strip())
    return [HeaderParser().parsestr(chunk + "\n") for chunk in chunks if chunk.strip()]


def kind_of(recipient: Recipient) -> EventKind:
    """The event a report's recipient block is, by the same rule as SMTP replies."""
    if recipient.action == "delivered":
        return EventKind.DELIVERED
    if recipient.action == "delayed":
        return EventKind.DEFERRED
    dead = dead_address_status(recipient.status)
    if recipient.action != "failed" or dead is None:
        return EventKind.UNKNOWN
    return EventKind.BOUNCE_HARD if dead else EventKind.BOUNCE_SOFT


def ingest(session: Session, raw: bytes, now: datetime, *, soft_bounce_limit: int,
           bounce_address: str = "", recipient: str = "") -> list[Outcome]:
    """Apply one message to the subscribers it is about; never raises for a bad message.

    `bounce_address`: the base of VERP addresses (`Settings.envelope_sender`); `recipient`:
    the address the mail system delivered the message to, when it says (else the headers
    that record it are read)."""
    # The message is parsed once; reading it may fail anywhere (hostile structure), writing
    # to the database may not be hidden (the caller keeps the message for later).
    try:
        message = parse(raw)
        candidates = _delivered_to(message, recipient) if bounce_address else []
    except Unreadable as exc:
        return [Outcome("ignored", str(exc))]
    except Exception as exc:  # noqa: BLE001 - a message the email package cannot read
        return [_unreadable(exc)]
    verp = _verp_delivery(session, candidates, bounce_address)
    try:
        report = _report_of(message, raw)
    except NotAReport as exc:
        if verp is None:
            return [Outcome("ignored", str(exc))]
        try:
            bounce = _plain_bounce_of(message, raw)
        except Exception as exc:  # noqa: BLE001
            return [_unreadable(exc)]
        return [_apply_plain_bounce(session, bounce, verp, now, soft_bounce_limit)]
    except Exception as exc:  # noqa: BLE001 - a message the email package cannot read
        return [_unreadable(exc)]
    delivery = verp or _our_delivery(session, report.original_message_id)
    if delivery is None:
        why = ("it does not return the original Message-ID" if not report.original_message_id
               else f"{report.original_message_id} is not a message we sent")
        return [Outcome("unmatched", f"report about {r.address}: {why}; nothing changed")
                for r in report.recipients]
    # The Message-ID proves which delivery failed; the address the report names may be where
    # that subscriber's mail was forwarded to.
    email_address = delivery.email
    outcomes = []
    for rcpt in report.recipients:
        kind = kind_of(rcpt)
        detail = f"{rcpt.status} {rcpt.diagnostic}".strip() or rcpt.action
        payload = {"report": report.report_id, "message_id": report.original_message_id,
                   "recipient": rcpt.address, "action": rcpt.action, "status": rcpt.status,
                   "diagnostic": rcpt.diagnostic, "delivery": delivery.id}
        event_id = f"{report.report_id}|{rcpt.address}"
        if apply(session, PROVIDER, event_id, kind, email_address, payload, now,
                 detail=f"delivery status report: {detail}"[:500],
                 soft_bounce_limit=soft_bounce_limit, source=SOURCE):
            outcomes.append(Outcome("applied", f"{email_address}: {kind.value} ({detail})"))
        else:
            outcomes.append(Outcome("duplicate", f"{email_address}: already applied"))
    return outcomes


def _unreadable(exc: Exception) -> Outcome:
    return Outcome("ignored", f"unreadable message ({type(exc).__name__}: {exc})")


def _delivered_to(message: Message, recipient: str) -> list[str]:
    """The addresses the message may have been delivered to: `recipient` (what the mail
    system said), then those its delivery headers record."""
    candidates = [recipient] if recipient else []
    for name in _DELIVERED_TO:
        for value in message.get_all(name) or []:
            candidates += [address for _, address in getaddresses([str(value)])]
    return candidates[:MAX_RECIPIENTS]


def _verp_delivery(session: Session, candidates: list[str],
                   bounce_address: str) -> Delivery | None:
    """The delivery whose VERP address the message was delivered to, if any (its token
    checked against the Message-ID the ledger recorded, as a report's would be)."""
    for address in candidates:
        found = token_of(address, bounce_address)
        if found is None:
            continue
        token, delivery_id = found
        delivery = session.get(Delivery, delivery_id)
        if delivery is not None and delivery.message_id.lower().startswith(f"<{token}@"):
            return delivery
    return None


def _is_auto_reply(message: Message) -> bool:
    """An out-of-office or other automatic answer (not a bounce) by the marks they carry.
    (Not Auto-Submitted alone: bounces carry "auto-replied" too.)"""
    if message.get("X-Autoreply") or message.get("X-Autorespond"):
        return True
    if squash(message.get("Precedence", "")).lower() == "auto_reply":
        return True
    return bool(_AUTO_REPLY_SUBJECT.match(squash(message.get("Subject", ""))))


def _bounce_text(message: Message) -> str:
    """The text of a bounce up to the returned copy of our message (attached copies and
    headers are skipped), at most MAX_TEXT characters."""
    texts: list[str] = []
    parts: list[Message] = [message]
    while parts and sum(map(len, texts)) < MAX_TEXT:
        part = parts.pop(0)
        kind = part.get_content_type()
        if part.is_multipart():
            payload = part.get_payload()
            parts[:0] = [p for p in payload if isinstance(p, Message)][:MAX_RECIPIENTS]
        elif kind == "text/plain" or (kind == "text/html" and not texts):
            text = part_text(part)
            texts.append(re.sub(r"<[^>]*>", " ", text) if kind == "text/html" else text)
        # (message/rfc822, text/rfc822-headers: our own message, not read)
    text = "\n".join(texts)[:MAX_TEXT]
    copy = _COPY_FOLLOWS.search(text)
    return text[:copy.start()] if copy else text


def plain_bounce_kind(text: str) -> tuple[EventKind, str]:
    """What a bounce that is not a report says, by its first status code, and the line that
    says it. Same rules as SMTP replies and reports."""
    enhanced = _TEXT_ENHANCED.search(text)
    if enhanced is not None:
        status = enhanced.group(1)
        start = text.rfind("\n", 0, enhanced.start()) + 1
        end = text.find("\n", enhanced.end())
        line = squash(text[start:end if end >= 0 else len(text)])
        if status.startswith("4"):
            return EventKind.DEFERRED, line
        if status.startswith("2"):
            return EventKind.DELIVERED, line
        return (EventKind.BOUNCE_HARD if dead_address_status(status)
                else EventKind.BOUNCE_SOFT), line
    reply = _TEXT_REPLY.search(text)
    if reply is None:
        return EventKind.UNKNOWN, ""
    code, rest = int(reply.group(1)), reply.group(2)
    line = squash(f"{code} {rest}")
    if code < 500:
        return EventKind.DEFERRED, line
    return (EventKind.BOUNCE_HARD if is_hard_bounce(code, rest) else EventKind.BOUNCE_SOFT), line


@dataclass(frozen=True)
class PlainBounce:
    """What a message that is not a report says (read before anything is written)."""

    report_id: str  # its Message-ID, or a hash of it
    auto_reply: str  # its subject when it is an automatic reply, else ""
    kind: EventKind
    line: str  # the line that gave the status, "" when none did


def _plain_bounce_of(message: Message, raw: bytes) -> PlainBounce:
    report_id = message_key(message, raw)
    if _is_auto_reply(message):
        subject = squash(message.get("Subject", ""))[:80] or "no subject"
        return PlainBounce(report_id, subject, EventKind.UNKNOWN, "")
    kind, line = plain_bounce_kind(_bounce_text(message))
    return PlainBounce(report_id, "", kind, line)


def _apply_plain_bounce(session: Session, bounce: PlainBounce, delivery: Delivery,
                        now: datetime, soft_bounce_limit: int) -> Outcome:
    """A message to a delivery's VERP address that is not a report."""
    if bounce.auto_reply:
        return Outcome("ignored", f"{delivery.email}: an automatic reply, not a bounce "
                                  f"({bounce.auto_reply})")
    payload = {"report": bounce.report_id, "message_id": delivery.message_id,
               "delivery": delivery.id, "verp": True, "line": bounce.line[:500]}
    detail = bounce.line or "no status in it"
    if not apply(session, PROVIDER, f"{bounce.report_id}|{delivery.email}", bounce.kind,
                 delivery.email, payload, now,
                 detail=f"bounce to the VERP address: {detail}"[:500],
                 soft_bounce_limit=soft_bounce_limit, source=SOURCE):
        return Outcome("duplicate", f"{delivery.email}: already applied")
    return Outcome("applied", f"{delivery.email}: {bounce.kind.value} ({detail[:200]})")


def _our_delivery(session: Session, message_id: str) -> Delivery | None:
    match = _OUR_MESSAGE_ID.match(message_id)
    if match is None:
        return None
    delivery = session.get(Delivery, int(match.group(1)))
    if delivery is None or delivery.message_id != message_id:
        return None
    return delivery
