"""Where a click's time goes: the redirect called directly as WSGI, and the flusher's write.

  python bench/redirect_profile.py [--n 20000] [--agents 4000] [--profile]

No HTTP server: a real edition is sent (file outbox, as in bench/redirect_bench.py), the web
app is built as `mailer serve` builds it, and the `/r/` middleware is called directly with
--n WSGI environs cycling through the edition's real tokens, each from one of --agents
browser user agents (the flusher thread is kept from starting, so the request path is timed
alone). Then the buffered hits are written by `ClickRecorder.flush()`, as the flusher thread
would, and timed per click. Prints microseconds per request (counted, and with the recorder
replaced by a no-op) and per click written; `--profile` adds cProfile's top functions of each
part. The figures say where the CPU goes that bench/redirect_bench.py measures as a rate:
both parts share one process, and the interpreter lock, with waitress's threads.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import redirect_bench as rb  # noqa: E402  (bench/ is not a package)

from mailer.app import App  # noqa: E402
from mailer.clock import Clock, FixedClock  # noqa: E402
from mailer.config import load_settings  # noqa: E402
from mailer.db import init_db  # noqa: E402
from mailer.web import CLICKS_KEY, create_app  # noqa: E402


def start_response(status: str, headers: list[tuple[str, str]]) -> None:
    pass


def timed(call: Any, environs: list[dict[str, Any]], profile: bool, title: str) -> float:
    profiler = cProfile.Profile() if profile else None
    start = time.perf_counter()
    if profiler:
        profiler.enable()
    for environ in environs:
        call(environ, start_response)
    if profiler:
        profiler.disable()
    elapsed = (time.perf_counter() - start) / len(environs) * 1e6
    if profiler:
        print(f"--- {title}")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(12)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--agents", type=int, default=4000)
    parser.add_argument("--readers", type=int, default=50)
    parser.add_argument("--click-tracking", default="aggregate",
                        choices=("aggregate", "per-reader"))
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        url = f"sqlite:///{tmp / 'bench.db'}"
        app = App.create(load_settings({}).replace(database_url=url, secret_key="bench"),
                         clock=FixedClock(rb.NOW))
        init_db(app.engine)
        app.close()
        rb.seed(url, 0, args.readers)
        paths = rb.send_first_edition(tmp, url, args.click_tracking, args.readers)
        env = rb.base_env(url, args.click_tracking)
        env["MAILER_NOW"] = (rb.NOW + rb.timedelta(hours=1)).isoformat()
        # The writer in this process: its work is what is timed and profiled per click (in
        # the default writer process, cProfile would see only the hand-over, and the time
        # the child's start-up).
        env["MAILER_CLICK_WRITER"] = "thread"
        os.environ.update({k: v for k, v in env.items() if k.startswith("MAILER_")})
        app = App.create(load_settings(), clock=Clock.from_env())
        web = create_app(app)
        clicks = web.extensions[CLICKS_KEY]
        clicks.preload(app.clock.now().date())
        clicks.recorder._thread = True  # noqa: SLF001 - no flusher thread: flushed below

        def environs(offset: int) -> list[dict[str, Any]]:
            return [{"REQUEST_METHOD": "GET", "PATH_INFO": paths[i % len(paths)],
                     "REMOTE_ADDR": "127.0.0.1",
                     "HTTP_USER_AGENT": rb.AGENTS[i % len(rb.AGENTS)] % (offset + i % args.agents),
                     "HTTP_ACCEPT": "text/html,application/xhtml+xml"} for i in range(args.n)]

        counted = timed(clicks, environs(0), args.profile, "request path, counted")
        pending = clicks.recorder.pending()
        start = time.perf_counter()
        profiler = cProfile.Profile() if args.profile else None
        if profiler:
            profiler.enable()
        written = clicks.recorder.flush()
        if profiler:
            profiler.disable()
            print("--- flush")
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
        flush_us = (time.perf_counter() - start) / max(1, written) * 1e6
        record = clicks.recorder.record
        clicks.recorder.record = lambda hit: None  # type: ignore[method-assign]
        uncounted = timed(clicks, environs(args.agents), False, "")
        clicks.recorder.record = record  # type: ignore[method-assign]
        print(f"{args.n} requests, {len(set(paths))} distinct tokens, {args.agents} agents")
        print(f"request path (middleware called directly), counted   {counted:7.1f} us")
        print(f"request path, recorder.record a no-op                {uncounted:7.1f} us")
        print(f"flush: {written} of {pending} hits written           {flush_us:7.1f} us/click")


if __name__ == "__main__":
    main()
