"""The one small interface every transport implements (after Django's mail backends).

A send hands a transport a batch of `Outgoing` messages (one per recipient) and gets back one
`Result` per message, in order. Transports never touch the database: the dispatcher records
outcomes in the ledger, so "progress" advances only on a confirmed send.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from mailer.message import MessageTemplate

# sent: accepted by the server/provider. retry: transient, safe to try again.
# failed: permanent for this recipient. ambiguous: the data may have been delivered
# (connection lost after DATA); never blindly re-sent.
Status = Literal["sent", "retry", "failed", "ambiguous"]


@dataclass
class Outgoing:
    """One message for one recipient, already fully rendered."""

    recipient: str
    message_id: str
    data: bytes  # the whole RFC 5322 message, CRLF line endings
    fields: dict[str, str] = field(default_factory=dict)  # per-recipient values (API providers)
    delivery_id: int | None = None
    # True when `data` is known to be 7-bit ASCII, to use CRLF line endings throughout, to end
    # in CRLF and to have no line that starts with a dot (MessageTemplate.fill guarantees all
    # four), so SMTP can send it without scanning, normalising or dot-stuffing a 50 KB message
    # per recipient.
    wire_ready: bool = False
    # The edition's shared template, for API transports that send one body with per-recipient
    # substitutions (SendGrid, Mailgun) instead of N complete messages.
    template: MessageTemplate | None = field(default=None, repr=False, compare=False)


@dataclass
class Result:
    status: Status
    provider_id: str = ""
    error: str = ""
    hard_bounce: bool = False  # permanent and the address is dead: suppress the subscriber
    suppress_reason: str = ""  # e.g. "bounced", "complained", set with hard_bounce


class Transport(ABC):
    """Open once, send many, close. `open()` says whether it made a new connection."""

    #: How many messages one `send` call may carry (providers' batch APIs take hundreds).
    max_batch: int = 1
    #: Short name for logs and status output.
    name: str = "transport"

    def open(self) -> bool:
        return False

    def close(self) -> None:
        return None

    @abstractmethod
    def send(self, messages: list[Outgoing]) -> list[Result]:
        """Send each message; return one Result per message, in order. Never raises for a
        per-recipient problem; raises `TransportError` only when the transport is unusable."""

    def check(self) -> str:
        """Verify configuration and credentials without sending; return a one-line summary."""
        return f"{self.name}: ok"

    def __enter__(self) -> Transport:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
