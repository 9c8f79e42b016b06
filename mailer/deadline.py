"""Deadline: a wall-clock limit on an outgoing HTTP exchange, however slowly the server sends.

Why it exists: a socket timeout (requests' and urllib3's `timeout=`) bounds each read, not the
exchange. A server that sends one byte every second is never silent for two, so a 2-second read
timeout never fires and the fetch can run for hours; `readline()` and buffered reads loop over
those reads inside http.client, out of reach of any check between chunks. urllib3's own
documentation recommends a watcher thread that cuts a slow request off; this is that watcher.

How: every connection opened under a `Deadline` registers its TCP socket the moment it is
connected, and when time is up a timer shuts those sockets down. A read blocked anywhere (TLS
handshake, status line, headers, body) returns at once with end-of-file, the library raises,
and the caller, seeing `expired`, reports a timeout. A connection attempted after the deadline
is refused before it connects. What is kept is a duplicate descriptor of each socket: wrapping a
socket in TLS detaches the original object, but shutdown() acts on the socket itself, so the
duplicate reaches it however it has been wrapped since. The duplicates are closed on exit.
Name resolution (getaddrinfo) cannot be interrupted this way and is bounded only by the system
resolver's own timeouts.

Use it with a requests Session (`mount_on`) or with urllib3 pools (`pool_class`), inside
`with deadline:` so the timer is cancelled when the exchange is over.
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3 import PoolManager


class DeadlineExceeded(TimeoutError):
    """A connection was attempted after the deadline had passed."""


class Deadline:
    """At most `seconds` of wall-clock time, from construction, for everything done under it."""

    def __init__(self, seconds: float) -> None:
        if seconds <= 0:
            raise ValueError("a deadline needs a positive number of seconds")
        self.seconds = seconds
        self._end = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._twins: list[socket.socket] = []  # duplicates of the watched sockets
        self._cut = False
        self._timer: threading.Timer | None = None

    # ---- time ------------------------------------------------------------------------------

    def remaining(self) -> float:
        return max(0.0, self._end - time.monotonic())

    @property
    def expired(self) -> bool:
        """True once the time is up (whether or not the timer has cut anything yet)."""
        return self._cut or time.monotonic() >= self._end

    def timeout(self, longest: float) -> float:
        """A per-read timeout for the next request: `longest`, or less when time is short."""
        return max(0.001, min(longest, self.remaining()))

    # ---- the watcher -----------------------------------------------------------------------

    def __enter__(self) -> Deadline:
        self._timer = threading.Timer(self.remaining(), self._expire)
        self._timer.daemon = True
        self._timer.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        with self._lock:
            twins, self._twins = self._twins, []
        for twin in twins:
            twin.close()

    def watch(self, sock: socket.socket) -> None:
        """Cut `sock` off when time is up (at once if it already is)."""
        try:
            twin = sock.dup()
        except OSError:
            return  # closed already: nothing left to cut
        with self._lock:
            if not self._cut:
                self._twins.append(twin)
                return
        _cut(twin)

    def _expire(self) -> None:
        with self._lock:
            self._cut = True
            twins, self._twins = self._twins, []
        for twin in twins:
            _cut(twin)

    # ---- plugging it into urllib3 and requests ---------------------------------------------

    def pool_class(self, base: type[Any]) -> type[Any]:
        """A subclass of a urllib3 connection pool class whose connections are watched."""
        if getattr(base, "deadline", None) is self:
            return base
        attrs = {"ConnectionCls": self._connection_class(base.ConnectionCls), "deadline": self}
        return type(f"Deadline{base.__name__}", (base,), attrs)

    def guard(self, manager: PoolManager) -> None:
        """Make a urllib3 PoolManager (or ProxyManager) open only watched connections."""
        classes = manager.pool_classes_by_scheme
        manager.pool_classes_by_scheme = {s: self.pool_class(c) for s, c in classes.items()}

    def mount_on(self, session: requests.Session) -> requests.Session:
        """Send every http(s) request of `session` through watched connections."""
        adapter = _DeadlineAdapter(self)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session

    def _connection_class(self, base: type[Any]) -> type[Any]:
        deadline = self

        class Watched(base):
            def _new_conn(self) -> socket.socket:
                if deadline.expired:
                    raise DeadlineExceeded(f"no time left ({deadline.seconds:g}s)")
                sock: socket.socket = super()._new_conn()
                deadline.watch(sock)
                return sock

        Watched.__name__ = Watched.__qualname__ = f"Deadline{base.__name__}"
        return Watched


class _DeadlineAdapter(HTTPAdapter):
    """requests' adapter, with the deadline's pool classes in every pool manager it makes."""

    def __init__(self, deadline: Deadline) -> None:
        self._deadline = deadline  # before super().__init__, which builds the pool manager
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self._deadline.guard(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        self._deadline.guard(manager)
        return manager


def _cut(twin: socket.socket) -> None:
    """Shut the socket down under whoever is reading it, then let go of the duplicate."""
    try:
        twin.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # the peer is gone already
    finally:
        twin.close()
