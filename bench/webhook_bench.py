"""Benchmark: draining the webhook outbox against a plain loop POSTing the same payloads.

  python bench/webhook_bench.py [--n 2000] [--rounds 3] [--database-url URL]

One local receiver (Python's threading HTTP server, HTTP/1.1 keep-alive, answering 200 at
once) takes both. Each round, in turn:
(1) the baseline: a loop that signs each event's payload with the `standardwebhooks` package
    and POSTs it over one kept-alive `requests.Session`, nothing recorded anywhere;
(2) the outbox: --n events for one endpoint written to `hook_deliveries` (not timed), then
    `mailer.outgoing.delivery.drain` (leases, signs, POSTs over its pinned connection, records
    every outcome) until nothing is due.
It prints events per second for each and the ratio (2)/(1) per round and its median.
Target (issue 24): the outbox drains at least 0.8 as fast as the plain loop.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
from sqlalchemy import select  # noqa: E402
from standardwebhooks.webhooks import Webhook  # noqa: E402

from mailer.app import App  # noqa: E402
from mailer.clock import FixedClock  # noqa: E402
from mailer.db import init_db  # noqa: E402
from mailer.models import HookDelivery  # noqa: E402
from mailer.outbox import emit_many  # noqa: E402
from mailer.outgoing import endpoints  # noqa: E402
from mailer.outgoing.delivery import drain  # noqa: E402
from tests.support.settings import make_settings  # noqa: E402

NOW = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    received = 0

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).received += 1
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def _events(n: int) -> list[tuple[dict[str, Any], int | None]]:
    return [({"id": i, "email": f"reader{i}@example.org", "status": "unsubscribed",
              "name": f"Reader {i}", "first_name": "", "frequency": "daily", "sections": [],
              "source": "one-click", "channel": "one-click", "detail": ""}, i)
            for i in range(n)]


def baseline(url: str, secret: str, rows: list[tuple[str, dict[str, Any]]]) -> float:
    signer = Webhook(secret)
    started = time.perf_counter()
    with requests.Session() as http:
        for message_id, payload in rows:
            body = json.dumps(payload, separators=(",", ":")).encode()
            stamp = datetime.now(UTC)
            http.post(url, data=body, timeout=10, headers={
                "Content-Type": "application/json", "webhook-id": message_id,
                "webhook-timestamp": str(int(stamp.timestamp())),
                "webhook-signature": signer.sign(message_id, stamp, body)}).raise_for_status()
    return len(rows) / (time.perf_counter() - started)


def one_round(n: int, url: str, database_url: str | None) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        overrides: dict[str, object] = {"allow_local_links": True}
        if database_url:
            overrides["database_url"] = database_url
        app = App.create(make_settings(Path(tmp), **overrides), clock=FixedClock(NOW))
        init_db(app.engine)
        try:
            with app.sessions.begin() as session:
                secret = endpoints.add(session, url, ["subscriber.unsubscribed"],
                                       app.settings, now=NOW).secret
                emit_many(session, "subscriber.unsubscribed", _events(n), at=NOW)
            with app.sessions() as session:
                rows = [(r.message_id, r.payload) for r in session.scalars(select(HookDelivery))]
            plain = baseline(url, secret, rows)
            started = time.perf_counter()
            report = drain(app, max_seconds=600)
            ours = report.delivered / (time.perf_counter() - started)
            assert report.delivered == n, report
        finally:
            app.close()
    return plain, ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    ratios = []
    for number in range(1, args.rounds + 1):
        plain, ours = one_round(args.n, url, args.database_url)
        ratios.append(ours / plain)
        print(f"round {number}: plain loop {plain:,.0f}/s, outbox drain {ours:,.0f}/s "
              f"(ratio {ours / plain:.3f})")
    server.shutdown()
    median = statistics.median(ratios)
    print(f"outbox drain / plain loop: median {median:.3f} over {len(ratios)} rounds "
          f"(target >= 0.8): {'MET' if median >= 0.8 else 'MISSED'}")


if __name__ == "__main__":
    main()
