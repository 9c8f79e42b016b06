"""`/r/<token>` and `/o/<token>`: the click redirect and the open pixel, in front of Flask.

This is the hottest path the web app has (a newsroom's readers click within minutes of the
send), so it is a small WSGI middleware rather than a Flask view: it reads the token, finds
the link in the process's copy of the edition's link list (`mailer.clicks.store`), hands a
`Hit` to the buffer (`mailer.clicks.recorder`) and answers, without a database round trip,
a session or a template. A reader's click reaches its story even while the database is down
or being migrated, as long as this process has seen the edition (it preloads recent ones).

Only links the edition carried can be reached: the token names a position in the stored list
and the target is read from there, never from the request. Anything else (forged, truncated,
foreign or unknown tokens, a deleted edition) gets a small 404 page linking to the site.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable
from datetime import date
from html import escape
from typing import Any

from mailer.app import App
from mailer.clicks.classify import is_prefetch
from mailer.clicks.links import site_home
from mailer.clicks.recorder import ClickRecorder
from mailer.clicks.retention import Purged, purge
from mailer.clicks.store import LinkCache, recent_since
from mailer.clicks.tokens import BadLinkToken, LinkSigner
from mailer.clicks.writer_process import writer_for
from mailer.models import OPEN, TRAP

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

_GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
_COMMON = [("Cache-Control", "no-store"), ("Referrer-Policy", "no-referrer"),
           ("X-Robots-Tag", "noindex, nofollow"), ("X-Content-Type-Options", "nosniff")]


class ClickRedirects:
    """WSGI middleware answering `/r/` and `/o/`; every other path goes to `inner`."""

    def __init__(self, inner: WsgiApp, app: App, *, trusted_proxies: int = 0) -> None:
        self.inner = inner
        self.app = app
        self._proxies = trusted_proxies
        self.cache = LinkCache(app.sessions)
        self.recorder = ClickRecorder(app.sessions, writer=writer_for(app.settings, app.sessions),
                                      housekeeping=self.housekeeping)
        self._signer: LinkSigner | None = None
        self._home = site_home(app.settings)

    @property
    def signer(self) -> LinkSigner:
        if self._signer is None:  # the secret may live in the database: read it when needed
            self._signer = LinkSigner(self.app.secret_key)
        return self._signer

    def housekeeping(self) -> Purged:
        """The retention purge (`mailer.clicks.retention`), hourly from the flusher."""
        with self.app.sessions.begin() as session:
            return purge(session, self.app.clock.now(), self.app.settings)

    def preload(self, today: date) -> int:
        """Load the link lists of the retention period's editions (`mailer serve` start)."""
        return self.cache.preload(recent_since(today, self.app.settings.click_retention_days))

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path: str = environ.get("PATH_INFO", "")
        if path.startswith("/r/"):
            return self._answer(environ, start_response, path[3:], pixel=False)
        if path.startswith("/o/"):
            return self._answer(environ, start_response, path[3:], pixel=True)
        return self.inner(environ, start_response)

    def _answer(self, environ: dict[str, Any], start_response: StartResponse, token: str,
                *, pixel: bool) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        if method == "OPTIONS":
            start_response("204 No Content", [("Allow", "GET, HEAD"), *_COMMON])
            return []
        if method not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD"), *_COMMON])
            return []
        try:
            ref = self.signer.read(token)
        except BadLinkToken:
            ref = None
        link = self.cache.get(ref.edition_id, ref.position) if ref else None
        if link is None or ref is None or (link.kind == OPEN) != pixel:
            return self._not_found(start_response, method)
        if method == "GET" and not ref.reader_forged:
            self._count(environ, ref.edition_id, ref.position, ref.delivery_id,
                        trap=link.kind == TRAP, test_group=ref.test_group)
        if pixel:
            start_response("200 OK", [("Content-Type", "image/gif"),
                                      ("Content-Length", str(len(_GIF))), *_COMMON])
            return [] if method == "HEAD" else [_GIF]
        start_response("302 Found", [("Location", link.target), ("Content-Length", "0"),
                                     *_COMMON])
        return []

    def _count(self, environ: dict[str, Any], edition_id: int, position: int,
               delivery_id: int | None, *, trap: bool, test_group: int = 0) -> None:
        """Hand the click on as a plain tuple (`RawHit`): the flood rule, the conversions and
        everything else are the writer's, off the request path."""
        self.recorder.record((edition_id, position, self.app.clock.timestamp(),
                              self._client(environ),
                              (environ.get("HTTP_USER_AGENT") or "")[:512], delivery_id,
                              is_prefetch(environ), trap, test_group))

    def _client(self, environ: dict[str, Any]) -> str:
        """The reader's address: behind `trusted_proxies` proxies, the one the outermost of
        them saw (as werkzeug's ProxyFix picks it for the rest of the app), else the peer."""
        peer = str(environ.get("REMOTE_ADDR") or "")
        if not self._proxies:
            return peer
        # Only the last hops are split off: the chain's start is the client's to write.
        hops = str(environ.get("HTTP_X_FORWARDED_FOR", "")).rsplit(",", self._proxies)
        if len(hops) < self._proxies or not hops[-1].strip():
            return peer
        return hops[-self._proxies].strip()

    def _not_found(self, start_response: StartResponse, method: str) -> Iterable[bytes]:
        home = escape(self._home, quote=True)
        body = (
            "<!doctype html><html lang=\"en-GB\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<title>Link not found</title></head><body>"
            "<main><h1>This link does not work</h1>"
            "<p>It may have been copied incompletely, or the email it came from is gone.</p>"
            f"<p><a href=\"{home}\">Go to the home page</a></p></main></body></html>"
        ).encode()
        start_response("404 Not Found", [
            ("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body))),
            ("Content-Security-Policy", "default-src 'none'; base-uri 'none'"), *_COMMON])
        return [] if method == "HEAD" else [body]
