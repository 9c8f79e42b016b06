"""Bounces that come back by email: delivery status reports (RFC 3464) for the SMTP transport.

A relay accepts every message with 250 and finds out later that a mailbox is gone; it then
mails a report to the envelope sender. API providers tell us by webhook; for SMTP these
reports are the only news of a dead address, and a list that never reads them keeps mailing
dead addresses until its relay or its reputation gives out.

`mailer bounces ingest` reads such messages (from the MTA's pipe, a file, or a Maildir) and
applies them through the same one place as the providers' webhooks (`webhooks.events.apply`):
hard bounce -> ``bounced``; other failures counted as soft bounces; delays stored only.

Only reports about our own messages count. The envelope sender is a public address, so anyone
could mail it a report saying that a subscriber bounced; a report is applied only when it
returns the original message's Message-ID and that is the Message-ID the ledger recorded for
the delivery it names (Message-IDs carry a keyed hash of the delivery: `ledger.MessageIds`).
"""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass
from datetime import datetime
from email.message import Message
from email.parser import BytesHeaderParser, HeaderParser
from email.utils import parseaddr

from sqlalchemy.orm import Session

from mailer.models import Delivery
from mailer.transports.smtp import dead_address_status
from mailer.webhooks.events import EventKind, apply, digest

PROVIDER = "dsn"
MAX_REPORT_BYTES = 10 * 1024 * 1024
# A report is about one message, and each of ours has one recipient: more blocks than this are
# not a report about us (only the first are read).
MAX_RECIPIENTS = 20
# `ledger.MessageIds`: <YYYYMMDD.{delivery id}.{keyed hash}@domain>
_OUR_MESSAGE_ID = re.compile(r"^<\d{8}\.(\d+)\.[0-9a-f]{12}@[^<>\s]+>$")


class NotAReport(ValueError):
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


def _one_line(value: object) -> str:
    return " ".join(str(value or "").split())


def read_report(raw: bytes) -> Report:
    """Parse a report; NotAReport (with the reason) for anything else."""
    if len(raw) > MAX_REPORT_BYTES:
        raise NotAReport(f"larger than {MAX_REPORT_BYTES // (1024 * 1024)} MB")
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    if message.get_content_type() != "multipart/report" or (
            (message.get_param("report-type") or "").lower() != "delivery-status"):
        raise NotAReport(f"not a delivery status report ({message.get_content_type()})")
    status_part: Message | None = None
    original: Message | None = None
    for part in message.walk():
        kind = part.get_content_type()
        if kind == "message/delivery-status" and status_part is None:
            status_part = part
        elif kind == "message/rfc822" and original is None:
            payload = part.get_payload()
            original = payload[0] if isinstance(payload, list) and payload else None
        elif kind == "text/rfc822-headers" and original is None:
            text = part.get_payload(decode=True) or b""
            original = BytesHeaderParser().parsebytes(text)
    if status_part is None:
        raise NotAReport("a report without a message/delivery-status part")
    blocks = _status_blocks(status_part)
    recipients = []
    for block in blocks[1:MAX_RECIPIENTS + 1]:  # (the first is about the message itself)
        final = _address(block.get("Final-Recipient", ""))
        before = _address(block.get("Original-Recipient", ""))
        if not (final or before):
            continue
        diagnostic = _one_line(block.get("Diagnostic-Code", ""))
        diagnostic = diagnostic.split(";", 1)[1].strip() if ";" in diagnostic else diagnostic
        recipients.append(Recipient(address=final or before,
                                    action=_one_line(block.get("Action", "")).lower(),
                                    status=_one_line(block.get("Status", "")),
                                    diagnostic=diagnostic[:500]))
    if not recipients:
        raise NotAReport("a delivery status report that names no recipient")
    own_id = _one_line(message.get("Message-ID", ""))
    return Report(report_id=own_id or digest(raw.decode("utf-8", "replace")),
                  original_message_id=_one_line(original.get("Message-ID", ""))
                  if original is not None else "",
                  recipients=recipients)


def _status_blocks(part: Message) -> list[Message]:
    """The header blocks of a message/delivery-status part (the email package parses them
    into sub-messages; a part it could not split is read as text)."""
    payload = part.get_payload()
    if isinstance(payload, list) and payload:
        return [p for p in payload if isinstance(p, Message)]
    text = part.get_payload(decode=True) or b""
    chunks = re.split(r"\r?\n[ \t]*\r?\n", text.decode("utf-8", "replace").strip())
    return [HeaderParser().parsestr(chunk + "\n") for chunk in chunks if chunk.strip()]


@dataclass(frozen=True)
class Outcome:
    """What ingesting one report did, for the command's one line per report."""

    status: str  # applied | duplicate | unmatched | ignored
    detail: str


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


def ingest(session: Session, raw: bytes, now: datetime, *,
           soft_bounce_limit: int) -> list[Outcome]:
    """Apply one message to the subscribers it is about; never raises for a bad message."""
    try:
        report = read_report(raw)
    except NotAReport as exc:
        return [Outcome("ignored", str(exc))]
    except Exception as exc:  # noqa: BLE001 - a message the email package cannot read
        return [Outcome("ignored", f"unreadable message ({type(exc).__name__}: {exc})")]
    delivery = _our_delivery(session, report.original_message_id)
    if delivery is None:
        why = ("it does not return the original Message-ID" if not report.original_message_id
               else f"{report.original_message_id} is not a message we sent")
        return [Outcome("unmatched", f"report about {r.address}: {why}; nothing changed")
                for r in report.recipients]
    # The Message-ID proves which delivery failed; the address the report names may be where
    # that subscriber's mail was forwarded to.
    email_address = delivery.email
    outcomes = []
    for recipient in report.recipients:
        kind = kind_of(recipient)
        detail = f"{recipient.status} {recipient.diagnostic}".strip() or recipient.action
        payload = {"report": report.report_id, "message_id": report.original_message_id,
                   "recipient": recipient.address, "action": recipient.action,
                   "status": recipient.status, "diagnostic": recipient.diagnostic,
                   "delivery": delivery.id}
        event_id = f"{report.report_id}|{recipient.address}"
        if apply(session, PROVIDER, event_id, kind, email_address, payload, now,
                 detail=f"delivery status report: {detail}"[:500],
                 soft_bounce_limit=soft_bounce_limit):
            outcomes.append(Outcome("applied", f"{email_address}: {kind.value} ({detail})"))
        else:
            outcomes.append(Outcome("duplicate", f"{email_address}: already applied"))
    return outcomes


def _our_delivery(session: Session, message_id: str) -> Delivery | None:
    match = _OUR_MESSAGE_ID.match(message_id)
    if match is None:
        return None
    delivery = session.get(Delivery, int(match.group(1)))
    if delivery is None or delivery.message_id != message_id:
        return None
    return delivery

