"""The one small interface every transport implements (after Django's mail backends).

A send hands a transport a batch of `Outgoing` messages (one per recipient) and gets back one
`Result` per message, in order. The dispatcher uses one method, `stream`, which by default
batches through `send()`; the SMTP pool overrides it to keep many connections busy from one
thread. Transports never touch the database: the dispatcher records outcomes in the ledger,
so "progress" advances only on a confirmed send.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from mailer.errors import TransportError

if TYPE_CHECKING:
    from mailer.message import MessageTemplate

K = TypeVar("K")

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
    # True when `data` already carries our DKIM signature(s) (signed ahead of an SMTP pool).
    signed: bool = False


@dataclass
class Result:
    status: Status
    provider_id: str = ""
    error: str = ""
    hard_bounce: bool = False  # permanent and the address is dead: suppress the subscriber
    suppress_reason: str = ""  # e.g. "bounced", "complained", set with hard_bounce


@dataclass(frozen=True)
class Pause:
    """Yielded by a `Transport.stream` source instead of an item: no item for `seconds`."""

    seconds: float


#: What `Transport.stream` hands its caller's `record`: finished messages with their keys.
Record = Callable[[list[tuple[K, Outgoing, Result]]], bool]


class StreamStopped(TransportError):
    """`stream` stopped because no further message can be sent (bad API key, quota used up);
    `unsent` are the keys of the messages it had in hand, none of them sent."""

    def __init__(self, cause: TransportError, unsent: list[Any]) -> None:
        super().__init__(str(cause))
        self.unsent = unsent


class Transport(ABC):
    """Open once, send many, close. `open()` says whether it made a new connection."""

    #: How many messages one `send` call may carry (providers' batch APIs take hundreds).
    max_batch: int = 1
    #: Short name for logs and status output.
    name: str = "transport"
    #: Whether `send` reads `Outgoing.fields` (API providers' substitutions); when it does
    #: not (SMTP, the outbox), the dispatcher skips working them out for every recipient.
    uses_fields: bool = True
    _lost = False

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

    @property
    def lost(self) -> bool:
        """Whether the last `stream` ended because the connection is probably gone: the
        caller then drops this transport and builds a new one."""
        return self._lost

    def pooled(self, factory: Callable[[], Transport],
               connections: int) -> Callable[[], Transport] | None:
        """A factory for one transport that drives `connections` connections from a single
        thread, or None (the default) when each connection wants a thread of its own: API
        transports spend their time waiting for HTTP responses, and a thread each is the
        simple right answer. `factory` builds one more transport like this one."""
        return None

    def stream(self, items: Iterable[tuple[K, Outgoing] | Pause],
               record: Record[K]) -> list[K]:
        """Send `items` until they run out or `record` returns False; return the keys of
        messages taken but abandoned unsent (none here: see `SmtpPool.stream` for a stream
        that has messages under way when told to stop).

        This default sends `max_batch` messages per `send()` call and hands their outcomes
        to `record` before taking more. A `Pause` before a batch's first message is slept
        out; one inside a batch is not, since the batch goes out at once, at its first
        message's turn (a rate limit's next batch then waits for its own first turn).
        A batch all "retry" ends the stream and sets `lost`: its connection is probably gone.
        Raises `StreamStopped` when `send()` raises an error that stops the send.
        """
        self._lost = False
        source = iter(items)
        chunk = max(1, self.max_batch)
        while True:
            keys: list[K] = []
            messages: list[Outgoing] = []
            for item in source:
                if isinstance(item, Pause):
                    if not messages and item.seconds > 0:
                        time.sleep(item.seconds)
                    continue
                keys.append(item[0])
                messages.append(item[1])
                if len(messages) >= chunk:
                    break
            if not messages:
                return []
            results = self._send_batch(messages, keys)
            if not record(list(zip(keys, messages, results, strict=True))):
                return []
            if all(r.status == "retry" for r in results):
                self._lost = True
                return []

    def _send_batch(self, messages: list[Outgoing], keys: list[K]) -> list[Result]:
        """`send(messages)`, its outcomes made whole: a transport error that does not stop
        the send is a retry for each, and a wrong number of results an ambiguous outcome."""
        try:
            results = self.send(messages)
        except TransportError as exc:
            if getattr(exc, "stop_send", False):
                raise StreamStopped(exc, keys) from exc
            results = [Result("retry", error=str(exc)) for _ in messages]
        if len(results) != len(messages):
            results = [Result("ambiguous", error="transport returned a wrong result count")
                       for _ in messages]
        return results

    def __enter__(self) -> Transport:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
