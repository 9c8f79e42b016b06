"""A webhook receiver on 127.0.0.1 that verifies our signatures with the `standardwebhooks`
package, as a CRM would, and deduplicates by event id."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


class Receiver:
    """`status` is what it answers (200 while up); `delay` slows each answer."""

    def __init__(self) -> None:
        self.secret = ""
        self.status = 200
        self.delay = 0.0
        self.lock = threading.Lock()
        self.posts: list[tuple[str, dict[str, Any]]] = []  # every verified POST, repeats too
        self.refused = 0  # POSTs whose signature did not verify
        self.server: ThreadingHTTPServer | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/mailer"

    def unique(self) -> dict[str, dict[str, Any]]:
        """Events by id, as a receiver deduplicating by `webhook-id` keeps them."""
        with self.lock:
            return dict(self.posts)

    def types(self) -> list[str]:
        return [payload["type"] for payload in self.unique().values()]

    def start(self, port: int = 0) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver
            # One write per answer: headers and body written apart meet Nagle's algorithm
            # and the client's delayed ACK, 40 ms a request on loopback.
            wbufsize = 64 * 1024

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if receiver.delay:
                    time.sleep(receiver.delay)
                status = receiver.status
                if status < 300:
                    try:
                        payload = Webhook(receiver.secret).verify(body, dict(self.headers))
                    except WebhookVerificationError:
                        with receiver.lock:
                            receiver.refused += 1
                        status = 401
                    else:
                        with receiver.lock:
                            receiver.posts.append((self.headers["webhook-id"], payload))
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        # (polling for `stop` every 10 ms: the default half second is waited out at each stop)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01},
                         daemon=True).start()

    def stop(self) -> None:
        """Close the port (connection refused until `start(self.port)`)."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@contextmanager
def running_receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()


def payloads(receiver: Receiver, event_type: str) -> list[dict[str, Any]]:
    return [p["data"] for p in receiver.unique().values() if p["type"] == event_type]


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)
