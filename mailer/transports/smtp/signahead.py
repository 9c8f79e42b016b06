"""DKIM signatures made ahead of the SMTP pool, on another thread.

Every reader's copy differs, so each is signed, and an RSA-2048 signature costs about as much
CPU as the rest of a message's send. The pool's one thread drives every connection; signing
there stalls them all. OpenSSL's private-key operations release the GIL, so a signing thread
runs on another core while the pool thread talks to the servers: `SignedAhead` keeps the next
few messages of the stream signing while the earlier ones are sent.

It reads ahead of the pool only as far as its window, never past a rate limit's `Pause` (the
pause is passed on in its place, so the pacing stays the source's), and the keys of messages
it took from the source but the pool never did are handed back with the abandoned ones
(`unsent`), so a stopped send releases them like any other unsent claim.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

from mailer.dkimsign import Signer
from mailer.transports.base import Outgoing, Pause

K = TypeVar("K")


class SignedAhead(Generic[K]):
    """The stream's items with each message signed (`Outgoing.signed`), `window` at a time."""

    def __init__(self, items: Iterable[tuple[K, Outgoing] | Pause], signer: Signer, *,
                 window: int) -> None:
        self.source = iter(items)
        self.signer = signer
        self.window = max(1, window)
        self.pending: deque[tuple[K, Future[Outgoing]] | Pause] = deque()
        self.exhausted = False
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dkim-sign")

    def __iter__(self) -> Iterator[tuple[K, Outgoing] | Pause]:
        while True:
            self._fill()
            if not self.pending:
                return
            head = self.pending.popleft()
            if isinstance(head, Pause):
                yield head
                continue
            key, signed = head
            yield key, signed.result()

    def close(self) -> None:
        """Stop the signing thread (signatures not yet made are not made)."""
        self.executor.shutdown(wait=False, cancel_futures=True)

    def _fill(self) -> None:
        signed_ahead = sum(1 for item in self.pending if not isinstance(item, Pause))
        while not self.exhausted and signed_ahead < self.window:
            if self.pending and isinstance(self.pending[-1], Pause):
                return  # (nothing is taken past a pause before the pause is over)
            item = next(self.source, None)
            if item is None:
                self.exhausted = True
                return
            if isinstance(item, Pause):
                # The pause counts from when the pool reaches it, as it would unsigned.
                self.pending.append(item)
                return
            key, message = item
            self.pending.append((key, self.executor.submit(self._sign, message)))
            signed_ahead += 1

    def _sign(self, message: Outgoing) -> Outgoing:
        data = self.signer.sign(message.data, now=int(time.time()))
        return dataclasses.replace(message, data=data, signed=True)

    def unsent(self) -> list[K]:
        """The keys taken from the source that the pool never took."""
        return [item[0] for item in self.pending if not isinstance(item, Pause)]
