"""Benchmark: readers created through the API against the CSV import path, in one run.

  python bench/api_bench.py [--n 10000] [--rounds 3] [--singles 1000] [--database-url URL]

Each round makes a fresh database and times, in turn:
(1) the CSV import path (`import_csv_batched`, 1,000 rows a transaction: what `mailer
    subscribers import` and the console's import run), for --n new readers;
(2) the API's batch create (`POST /api/v1/subscribers/batch`, 1,000 readers a request,
    `"confirmed": true`) for --n other readers, over HTTP to the app served by waitress on
    127.0.0.1, one kept-alive client connection;
(3) single creates (`POST /api/v1/subscribers`, `"confirmed": true`), --singles of them,
    for the absolute figure a form-by-form integration gets.
It prints readers per second for each, and the ratio (2)/(1) per round and its median.
Target (issue 24): the API reaches at least 0.5 of the import path's rate.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
from waitress.server import create_server  # noqa: E402

from mailer import apikeys  # noqa: E402
from mailer.app import App  # noqa: E402
from mailer.clock import FixedClock  # noqa: E402
from mailer.db import init_db  # noqa: E402
from mailer.subscribers import import_csv_batched  # noqa: E402
from mailer.web import create_app  # noqa: E402
from tests.support.settings import make_settings  # noqa: E402

BATCH = 1000
NOW = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)


def _app(folder: Path, database_url: str | None) -> App:
    overrides = {"api_rate_limit": 10_000_000}
    if database_url:
        overrides["database_url"] = database_url
    app = App.create(make_settings(folder, **overrides), clock=FixedClock(NOW))
    init_db(app.engine)
    return app


def _csv(prefix: str, n: int) -> str:
    return "email,name\n" + "".join(f"{prefix}{i}@example.org,Reader {i}\n" for i in range(n))


def one_round(n: int, singles: int, database_url: str | None) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        app = _app(Path(tmp), database_url)
        with app.sessions.begin() as session:
            _, key = apikeys.create(session, "bench", ["subscribers:write"], actor="bench",
                                    now=NOW)
        server = create_server(create_app(app), host="127.0.0.1", port=0, threads=4)
        threading.Thread(target=server.run, daemon=True).start()
        base = f"http://127.0.0.1:{server.effective_port}/api/v1"  # type: ignore[union-attr]
        try:
            started = time.perf_counter()
            report = import_csv_batched(app.sessions, io.StringIO(_csv("csv", n)), at=NOW,
                                        batch=BATCH)
            csv_rate = report.added / (time.perf_counter() - started)
            assert report.added == n, report.errors[:3]
            with requests.Session() as http:
                http.headers["Authorization"] = f"Bearer {key}"
                started = time.perf_counter()
                added = 0
                for first in range(0, n, BATCH):
                    readers = [{"email": f"api{i}@example.org", "name": f"Reader {i}"}
                               for i in range(first, min(first + BATCH, n))]
                    answer = http.post(f"{base}/subscribers/batch", timeout=120,
                                       json={"confirmed": True, "subscribers": readers})
                    answer.raise_for_status()
                    added += answer.json()["added"]
                api_rate = added / (time.perf_counter() - started)
                assert added == n
                started = time.perf_counter()
                for i in range(singles):
                    http.post(f"{base}/subscribers", timeout=30, json={
                        "email": f"one{i}@example.org", "confirmed": True}).raise_for_status()
                single_rate = singles / (time.perf_counter() - started)
        finally:
            server.close()
            app.close()
    return csv_rate, api_rate, single_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--singles", type=int, default=1000)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    ratios = []
    for number in range(1, args.rounds + 1):
        csv_rate, api_rate, single_rate = one_round(args.n, args.singles, args.database_url)
        ratios.append(api_rate / csv_rate)
        print(f"round {number}: CSV import {csv_rate:,.0f}/s, API batch {api_rate:,.0f}/s "
              f"(ratio {api_rate / csv_rate:.3f}), API single creates {single_rate:,.0f}/s")
    median = statistics.median(ratios)
    print(f"API batch / CSV import: median {median:.3f} over {len(ratios)} rounds "
          f"(target >= 0.5): {'MET' if median >= 0.5 else 'MISSED'}")


if __name__ == "__main__":
    main()
