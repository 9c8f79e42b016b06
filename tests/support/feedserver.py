"""A real HTTP server on 127.0.0.1 that answers like WordPress's /feed/ endpoint.

Tests of the collector talk to it over real sockets, so timeouts, conditional GET, paging and
broken responses are exercised through requests and feedparser exactly as in production.

    with FeedServer() as server:
        server.serve_pages([page1_xml, page2_xml], etag='"abc"', last_modified="Wed, ...")
        settings = settings.replace(feed_url=server.url)
        ...
        assert server.requests[0].headers["user-agent"] == settings.user_agent

Behaviour, as WordPress's `feed-rss2.php` and `WP::send_headers()`:
- `/feed/` is page 1, `/feed/?paged=N` page N; a page past the end answers 404 with an HTML page.
- With validators configured, a request carrying them gets 304: when both If-None-Match and
  If-Modified-Since are sent both must match, exactly (byte for byte), else the one sent must.
- Any page can be overridden with a `Reply`: another status, body or content type, a delay
  before answering, a body that stalls half-way (`stall_after`), or an answer that trickles in
  one byte at a time (`drip`), from the body or from the status line on (`drip_headers`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

RSS_TYPE = "application/rss+xml; charset=UTF-8"
ATOM_TYPE = "application/atom+xml; charset=UTF-8"
RDF_TYPE = "application/rdf+xml; charset=UTF-8"

NOT_FOUND_PAGE = (
    "<!DOCTYPE html>\n<html lang=\"en-GB\"><head><meta charset=\"UTF-8\">"
    "<title>Page not found - LabourList</title></head>"
    "<body class=\"error404\"><h1>Oops! That page can&rsquo;t be found.</h1></body></html>\n"
)


@dataclass
class Reply:
    """What the server answers for one page or path."""

    status: int = 200
    body: bytes | str = b""
    content_type: str = RSS_TYPE
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before sending anything (or, with stall_after, mid-body)
    stall_after: int | None = None  # send headers and this many body bytes, then wait `delay`
    drip: float = 0.0  # seconds between bytes: never silent long enough for a read timeout
    drip_headers: bool = False  # drip from the status line on, not only the body

    def payload(self) -> bytes:
        return self.body.encode("utf-8") if isinstance(self.body, str) else self.body


@dataclass
class SeenRequest:
    """A request as the server received it (header names in lower case)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]

    @property
    def page(self) -> int:
        return int(self.query.get("paged", "1"))


class FeedServer:
    """Serves feed pages on an ephemeral port; use as a context manager or start()/stop()."""

    def __init__(self, feed_path: str = "/feed/") -> None:
        self.feed_path = feed_path
        self.requests: list[SeenRequest] = []
        self._pages: list[bytes] = []
        self.content_type = RSS_TYPE
        self._overrides: dict[int, Reply] = {}
        self._routes: dict[str, Reply] = {}
        self.etag: str | None = None
        self.last_modified: str | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> FeedServer:
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True,
                                        kwargs={"poll_interval": 0.05})
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes any handler that is sleeping for a timeout test
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FeedServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---- addresses ---------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("FeedServer not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def url(self) -> str:
        """The feed URL (page 1)."""
        return self.base_url + self.feed_path

    # ---- what to serve -----------------------------------------------------------------------
    def serve_pages(
        self,
        pages: list[str] | list[bytes],
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        content_type: str = RSS_TYPE,
    ) -> None:
        """Serve these documents as pages 1..N (404 after), with optional validators."""
        with self._lock:
            self._pages = [p.encode("utf-8") if isinstance(p, str) else p for p in pages]
            self.content_type = content_type
            self._overrides.clear()
            self.etag = etag
            self.last_modified = last_modified

    def set_reply(self, page: int, reply: Reply) -> None:
        """Answer feed page `page` with `reply` instead (errors, slow answers, HTML...)."""
        with self._lock:
            self._overrides[page] = reply

    def route(self, path: str, reply: Reply) -> str:
        """Serve `reply` at another path; returns its full URL."""
        with self._lock:
            self._routes[path] = reply
        return self.base_url + path

    def feed_requests(self) -> list[SeenRequest]:
        return [r for r in self.requests if r.path == self.feed_path]

    # ---- used by the handler -----------------------------------------------------------------
    def _answer(self, seen: SeenRequest) -> Reply:
        with self._lock:
            self.requests.append(seen)
            if seen.path != self.feed_path:
                return self._routes.get(seen.path) or Reply(404, NOT_FOUND_PAGE, "text/html")
            page = seen.page
            if page in self._overrides:
                return self._overrides[page]
            if not 1 <= page <= len(self._pages):
                return Reply(404, NOT_FOUND_PAGE, "text/html; charset=UTF-8")
            validators: dict[str, str] = {}
            if self.etag is not None:
                validators["ETag"] = self.etag
            if self.last_modified is not None:
                validators["Last-Modified"] = self.last_modified
            if validators and self._conditional_match(seen.headers):
                return Reply(304, b"", "", headers=validators)
            return Reply(200, self._pages[page - 1], self.content_type, headers=validators)

    def _conditional_match(self, headers: dict[str, str]) -> bool:
        sent_etag = headers.get("if-none-match")
        sent_modified = headers.get("if-modified-since")
        etag_ok = sent_etag is not None and sent_etag == self.etag
        modified_ok = sent_modified is not None and sent_modified == self.last_modified
        if sent_etag is not None and sent_modified is not None:
            return etag_ok and modified_ok
        return etag_ok or modified_ok


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: FeedServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The client hanging up on a deliberately slow answer is expected, not an error.
        return


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "nginx"
    sys_version = ""

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        seen = SeenRequest(
            method="GET",
            path=parts.path,
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            headers={k.lower(): v for k, v in self.headers.items()},
        )
        owner = self.server.owner
        reply = owner._answer(seen)
        body = reply.payload()
        if reply.delay and reply.stall_after is None:
            if owner._stopping.wait(reply.delay):
                return
        if reply.drip:
            self._drip(reply, body)
            return
        self.send_response(reply.status)
        if reply.content_type:
            self.send_header("Content-Type", reply.content_type)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.status != 304:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if reply.status == 304:
            return
        if reply.stall_after is not None:
            self.wfile.write(body[: reply.stall_after])
            self.wfile.flush()
            owner._stopping.wait(reply.delay)
            return
        self.wfile.write(body)

    def _drip(self, reply: Reply, body: bytes) -> None:
        """Write the answer a byte at a time until it is done, the client hangs up or the
        server stops: the shape of a slow-loris or a throttled proxy."""
        head = (f"HTTP/1.1 {reply.status} {self.responses.get(reply.status, ('',))[0]}\r\n"
                f"Content-Type: {reply.content_type}\r\nContent-Length: {len(body)}\r\n"
                + "".join(f"{k}: {v}\r\n" for k, v in reply.headers.items())
                + "Connection: close\r\n\r\n").encode("latin-1")
        self.close_connection = True
        if not reply.drip_headers:
            self.wfile.write(head)
            self.wfile.flush()
            head = b""
        stopping = self.server.owner._stopping
        try:
            for byte in head + body:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                if stopping.wait(reply.drip):
                    return
        except OSError:
            return  # the client gave up, as it should

    def log_message(self, format: str, *args: Any) -> None:
        return
