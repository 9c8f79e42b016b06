"""SMTP reply codes: which refusals mean the address itself is dead.

Both sides of the mailer read these codes: the SMTP transport, in a server's reply to RCPT or
to the message data, and the feedback side, in bounce reports by email and in providers'
webhook events. This module is pure and imports nothing else from the mailer, so both can use
it without depending on each other.
"""

from __future__ import annotations

import re

_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})(?!\d)")


def is_hard_bounce(code: int, text: str) -> bool:
    """Whether a permanent SMTP reply means the address itself is dead (suppress it).

    Enhanced status 5.1.x (bad mailbox / domain) and 5.2.1 (mailbox disabled) do; so does a
    bare 550 from servers that send no enhanced status. 5.1.7 and 5.1.8 are about *our* sender
    address: treating them as bounces would suppress the whole list over one DNS mistake.
    Everything else permanent (552 message too big, 5.7.x policy) fails this message only.
    """
    if not 500 <= code < 600:
        return False
    dead = dead_address_status(text)
    return code == 550 if dead is None else dead


def dead_address_status(text: str) -> bool | None:
    """Whether the enhanced status code that `text` starts with (5.1.1) says the address is
    dead, by `is_hard_bounce`'s rule; None when it starts with none. Bounce reports by email
    (`mailer.feedback.bounces`) carry the same codes."""
    match = _ENHANCED.match(text)
    if match is None:
        return None
    klass, subject, detail = match.groups()
    if klass != "5":
        return False
    if subject == "1":
        return detail not in {"7", "8"}
    return subject == "2" and detail == "1"
