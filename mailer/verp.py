"""VERP: each SMTP message's envelope sender names the delivery it carries.

A bounce goes to the envelope sender. Reports in the standard shape (RFC 3464) return the
original Message-ID, and `mailer.feedback.bounces` finds the delivery by it; many do not: qmail's
plain-text bounces, reports that return no headers, forwarders, relays that rewrite the
message. With VERP the address the bounce was sent to says whose message it was, whatever
the bounce looks like: ``bounces+20261126.42.0123456789ab@labourlist.org`` for the delivery
whose Message-ID is ``<20261126.42.0123456789ab@labourlist.org>``.

The token is the Message-ID's left part, keyed hash included (`ledger.MessageIds`), so an
address cannot be made up for someone else's delivery, and a bounce is matched by the same
check as a report's returned Message-ID. The mail system that receives the bounce address
must deliver ``bounces+anything`` to the same place (Postfix ``recipient_delimiter = +``,
Exim ``local_part_suffix = +*``), which is why VERP is a setting (`bounce_verp`), off by
default.
"""

from __future__ import annotations

import re

DELIMITER = "+"
# `ledger.MessageIds`' left part: YYYYMMDD.{delivery id}.{12 hex digits}
_TOKEN = re.compile(r"\d{8}\.(\d{1,18})\.[0-9a-f]{12}")
# The longest token: 8 + 1 + 18 + 1 + 12; a local part may be 64 octets long (RFC 5321).
MAX_TOKEN = 40
MAX_LOCAL_PART = 64


def sender_for(base: str, message_id: str) -> str:
    """The envelope sender of the message `message_id` (`base` when it is not one of our
    deliveries' Message-IDs: a test send)."""
    token = message_id[1:message_id.find("@")]
    if _TOKEN.fullmatch(token) is None:
        return base
    local, _, domain = base.rpartition("@")
    return f"{local}{DELIMITER}{token}@{domain}"


def token_of(address: str, base: str) -> tuple[str, int] | None:
    """(token, delivery id) when `address` is a VERP address made from `base`, else None.

    The delivery id is only a candidate: the caller must check that the ledger gave this
    delivery the Message-ID whose left part is the token."""
    local, _, domain = address.strip().strip("<>").rpartition("@")
    base_local, _, base_domain = base.rpartition("@")
    if domain.lower() != base_domain.lower():
        return None
    prefix = base_local + DELIMITER
    if local[:len(prefix)].lower() != prefix.lower():
        return None
    token = local[len(prefix):].lower()
    match = _TOKEN.fullmatch(token)
    return (token, int(match.group(1))) if match else None


def fits(base: str) -> bool:
    """Whether VERP addresses made from `base` stay within a local part's 64 octets."""
    return len(base.rpartition("@")[0]) + len(DELIMITER) + MAX_TOKEN <= MAX_LOCAL_PART
