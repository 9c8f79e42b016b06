"""Benchmark: the click redirect (`/r/<token>`) under wrk, against a minimal redirect app.

  python bench/redirect_bench.py [--rounds 3] [--duration 10] [--connections 16]
                                 [--readers 200] [--send-n 100000] [--agents 4000]
                                 [--click-tracking aggregate] [--click-writer process]
                                 [--database-url URL] [--no-send]

Measured with wrk (a real HTTP load generator, Debian's /usr/bin/wrk), in one run:
(1) baseline: a minimal WSGI app that only answers a fixed 302 (the same Location length and
headers as a real redirect), served by waitress with the settings `mailer serve` uses (its
--threads default, read from the command itself, ident and clear_untrusted_proxy_headers), in
a subprocess on 127.0.0.1;
(2) the real app: a fresh database (SQLite in a temporary directory, or --database-url, which
must name a throwaway database: it is initialised, seeded and sent to), an edition really sent
to --readers readers through the file outbox, then the real `mailer serve` as a subprocess
(MAILER_* environment), and wrk cycling through a weighted mix of that edition's real
/r/ tokens as the readers' text parts carry them (the first stories more often; no trap, no
pixel) with browser request headers;
(3) both again while a send is running: before each of those wrk runs, `mailer send` starts
for a new day's edition (the sample feed with fresh article ids) to --send-n subscribers of
the same database, through bench/sink.py's SMTP sink, and wrk starts once its dispatch has
begun. The send then competes for the two cores (and, on SQLite, for the database file with
the click writer), as it would in production. --send-n must keep the send going past the
wrk run: each line says whether it did ("send ran throughout"); a faster machine needs more.

Baseline and real runs alternate (--rounds of each), each pair's ratios (requests/s real /
baseline, target >= 0.7; p99 real / baseline, target <= 2.0) are printed with their best and
median: these 2-core machines are noisy and a ratio of two runs seconds apart moves far less
than either figure. Absolute figures are printed too, and each server's CPU time per request
(user + system, from /proc; for `mailer serve` its own and its click writer process's): under
a send the throughput of one code moves from run to run, its CPU per request much less, so
that is the figure to compare changes by.

wrk runs with one thread (-t1) and 16 connections (-c16): one wrk thread drives far more
requests than one Python process answers, so it needs well under one core, leaving the other
to the server (one process; waitress's 8 threads share the interpreter lock, so it uses about
one core whatever its thread count). 16 connections keep every waitress thread busy with a
short queue behind it, the way a burst of readers after the send does; latency then includes
that queue, for the baseline as for the real app.

The clicks are checked: after each real run the bench waits until the clicks table stops
growing (the flusher writes about once a second) and prints how many rows the run added
against the requests wrk made. The redirect stops counting a source (address and user agent)
after 60 hits a minute (`FLOOD_PER_MINUTE`) but still redirects it. Both servers run as behind
one reverse proxy (`trusted_proxies = 1`, as production does behind nginx), and each request
carries one of --agents readers: an X-Forwarded-For address of its own and one of a few
hundred real browser user agents (a realistic mix: readers share browsers), so nearly every
hit is counted and the cost of counting is part of the figure. `--agents 1` measures the flood
path instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, func, insert, select  # noqa: E402

from mailer.app import App  # noqa: E402
from mailer.clock import FixedClock  # noqa: E402
from mailer.config import load_settings  # noqa: E402
from mailer.db import init_db  # noqa: E402
from mailer.models import ACTIVE, Click, Edition, Subscriber  # noqa: E402
from mailer.sample import SITE, write_sample_feed  # noqa: E402

NOW = datetime(2026, 11, 26, 6, 55, tzinfo=UTC)
BASE_URL = "https://mail.labourlist.org"
WRK = "/usr/bin/wrk"
TRUSTED_PROXIES = 1  # both servers as behind one reverse proxy
#: Browser user agents; %d is a build number, so that --agents of them are distinct.
AGENTS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1_%d like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.6099.%d Safari/537.36",
    "Mozilla/5.0 (Linux; Android 14; K) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.6099.%d Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0.%d",
)
_TEXT_URL = re.compile(r"https?://\S+/r/\S+")


# -- the baseline server ---------------------------------------------------------------------

def serve_baseline(port: int, location: str) -> None:
    """A WSGI app that only answers a fixed 302, under waitress as `mailer serve` runs it."""
    from waitress import serve  # noqa: PLC0415 - only the baseline subprocess needs it

    from mailer.web.redirects import _COMMON  # noqa: PLC0415 - the same response headers

    headers = [("Location", location), ("Content-Length", "0"), *_COMMON]

    def redirect(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("302 Found", headers)
        return []

    serve(redirect, host="127.0.0.1", port=port, **waitress_options())


def waitress_options() -> dict[str, Any]:
    """The keyword arguments `mailer serve` gives waitress (besides the app, host and port).
    The thread count is the command's own default, so the two cannot drift apart; the rest
    is copied from mailer/cli/serve.py (checked in `check_serve_source`)."""
    from mailer.cli.serve import serve  # noqa: PLC0415 - the baseline subprocess only
    from mailer.cli.serve import waitress_options as served  # noqa: PLC0415
    from mailer.config import Settings  # noqa: PLC0415

    threads = next(p.default for p in serve.params if p.name == "threads")
    return served(Settings(trusted_proxies=TRUSTED_PROXIES), threads)


# -- the real app's world --------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[Any], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{what} did not listen on port {port} within {timeout:g} s")


def seed(url: str, first: int, count: int, chunk: int = 20000) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        for start in range(first, first + count, chunk):
            conn.execute(insert(Subscriber), [
                {"email": f"reader{i}@example.org", "name": f"Reader {i}", "status": ACTIVE,
                 "source": "bench", "created_at": NOW, "updated_at": NOW, "confirmed_at": NOW,
                 "soft_bounces": 0}
                for i in range(start, min(first + count, start + chunk))])
    engine.dispose()


def base_env(url: str, mode: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env["MAILER_DNS_CHECK"] = "0"  # (the sink's sender domain is not ours to check)
    env.update({"MAILER_DATABASE_URL": url, "MAILER_SECRET_KEY": "bench",
                "MAILER_BASE_URL": BASE_URL, "MAILER_CLICK_TRACKING": mode,
                # no SpamAssassin run in preflight (seconds per send, and not what is measured)
                "MAILER_SPAMASSASSIN_COMMAND": "/nonexistent/spamassassin"})
    return env


def day_feed(tmp: Path, day: int) -> Path:
    """The sample feed dated for NOW + `day` days; from day 1 on with fresh article ids and
    addresses, so that each day's edition has articles of its own to send."""
    now = NOW + timedelta(days=day)
    path = write_sample_feed(tmp / f"feed{day}.xml", now)
    if day:
        text = path.read_text()
        text = text.replace(f"{SITE}/?p=", f"{SITE}/?p={day}00")
        text = text.replace(f"{SITE}/{now:%Y/%m}/", f"{SITE}/{now:%Y/%m}/day{day}-")
        path.write_text(text)
    return path


def send_command(tmp: Path, url: str, mode: str, day: int, dsn: str) -> tuple[list[str],
                                                                                  dict[str, str]]:
    env = base_env(url, mode)
    env.update({"MAILER_FEED_URL": str(day_feed(tmp, day)), "MAILER_DSN": dsn,
                "MAILER_NOW": (NOW + timedelta(days=day)).isoformat(),
                "MAILER_CONNECTIONS": "4"})
    return [sys.executable, "-m", "mailer", "send"], env


def send_first_edition(tmp: Path, url: str, mode: str, readers: int) -> list[str]:
    """Send day 0's edition to `readers` readers through the file outbox; the weighted mix
    of /r/ paths the readers' text parts carry."""
    outbox = tmp / "outbox"
    cmd, env = send_command(tmp, url, mode, 0, f"file://{outbox}")
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"mailer send failed:\n{done.stdout}{done.stderr}")
    paths: list[str] = []
    for eml in sorted(outbox.glob("*.eml")):
        msg = message_from_bytes(eml.read_bytes(), policy=policy.default)
        text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        links = [u[len(BASE_URL):] for u in _TEXT_URL.findall(text)]
        # readers click the first stories most: link i of n appears n - i times
        for i, link in enumerate(links):
            paths.extend([link] * (len(links) - i))
    if not paths:
        raise SystemExit("the sent edition carries no /r/ links (click_tracking off?)")
    random.Random(21).shuffle(paths)
    return paths


def clicks_count(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(Click)) or 0)
    finally:
        engine.dispose()


def settled_clicks(url: str, expected: int, timeout: float = 180.0) -> tuple[int, float]:
    """The clicks count once `expected` rows are there, or once it has stopped growing for
    10 s (the flusher writes about once a second, but one flush of a long backlog is one
    transaction); and how long after the call that was."""
    start = time.monotonic()
    last, since = clicks_count(url), time.monotonic()
    while last < expected and time.monotonic() - start < timeout:
        time.sleep(0.25)
        now_count = clicks_count(url)
        if now_count != last:
            last, since = now_count, time.monotonic()
        elif time.monotonic() - since >= 10:
            return last, since - start
    return last, time.monotonic() - start


def dispatch_started(url: str, day: date) -> bool:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.scalar(select(Edition.started_at).where(
                Edition.edition_date == day)) is not None
    finally:
        engine.dispose()


# -- wrk -------------------------------------------------------------------------------------

LUA = """
local paths = {%(paths)s}
local agents = {%(agents)s}
local variants = %(variants)d
local offset = %(offset)d
local i = 0
request = function()
  i = i + 1
  local k = offset + i %% variants
  local agent = string.format(agents[(k %% #agents) + 1], k %% 61)
  local address = string.format("10.%%d.%%d.%%d", math.floor(k / 65536) %% 256,
                                math.floor(k / 256) %% 256, k %% 256)
  return wrk.format("GET", paths[(i %% #paths) + 1], {
    ["User-Agent"] = agent,
    ["X-Forwarded-For"] = address,
    ["Accept"] = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    ["Accept-Language"] = "en-GB,en;q=0.9",
    ["Accept-Encoding"] = "gzip, deflate, br"})
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, ' ..
    '"errors": %%d, "status_errors": %%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""


@dataclass
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    cpu_us: float = 0.0        # the server's CPU time per request (user + system)
    child_cpu_us: float = 0.0  # and its click writer process's


class Mix:
    """wrk's Lua script for each run: the same paths, and --agents user agents that no earlier
    run used (new readers: fingerprints with a few clicks each, as readers have)."""

    def __init__(self, tmp: Path, paths: list[str], agents: int) -> None:
        self.tmp, self.paths, self.agents, self.runs = tmp, paths, agents, 0

    def script(self) -> Path:
        self.runs += 1
        script = self.tmp / f"mix{self.runs}.lua"
        script.write_text(LUA % {"paths": ", ".join(json.dumps(p) for p in self.paths),
                                 "agents": ", ".join(json.dumps(a) for a in AGENTS),
                                 "variants": self.agents, "offset": self.runs * self.agents})
        return script


def cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU time (user + system) used so far by `pid` itself and by its live descendants
    (the click writer process), from /proc; zeros once it has gone."""
    tick = os.sysconf("SC_CLK_TCK")

    def own(p: int) -> float:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / tick

    def children(p: int) -> list[int]:
        found: list[int] = []
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            try:
                found += [int(c) for c in task.read_text().split()]
            except OSError:
                continue
        return found

    below, todo = 0.0, children(pid)
    while todo:
        child = todo.pop()
        below += own(child)
        todo += children(child)
    return own(pid), below


def run_wrk(port: int, script: Path, args: argparse.Namespace, duration: int = 0) -> Run:
    cmd = [WRK, f"-t{args.wrk_threads}", f"-c{args.connections}",
           f"-d{duration or args.duration}s",
           "--latency", "--timeout", "5s", "-s", str(script), f"http://127.0.0.1:{port}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    line = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"wrk printed no result:\n{out}")
    r = json.loads(line[7:])
    return Run(r["requests"] / (r["duration_us"] / 1e6), r["p50_us"] / 1000,
               r["p99_us"] / 1000, r["requests"], r["errors"] + r["status_errors"])


def check_redirect(port: int, path: str) -> str:
    class NoFollow(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a: Any, **k: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoFollow)
    try:
        opener.open(f"http://127.0.0.1:{port}{path}", timeout=5)
    except urllib.error.HTTPError as exc:
        if exc.code == 302:
            return str(exc.headers["Location"])
        raise SystemExit(f"{path} answered {exc.code}") from None
    raise SystemExit(f"{path} did not redirect")


# -- the run ---------------------------------------------------------------------------------

class Sender:
    """`mailer send` of one more day's edition to the big audience, over the SMTP sink."""

    def __init__(self, tmp: Path, url: str, mode: str) -> None:
        self.tmp, self.url, self.mode, self.day = tmp, url, mode, 0
        self.sink = subprocess.Popen([sys.executable, str(ROOT / "bench" / "sink.py")],
                                     stdout=subprocess.PIPE, text=True)
        assert self.sink.stdout is not None
        self.port = int(self.sink.stdout.readline().split()[1])

    def start(self) -> subprocess.Popen[bytes]:
        self.day += 1
        cmd, env = send_command(self.tmp, self.url, self.mode, self.day,
                                f"smtp://127.0.0.1:{self.port}?tls=0")
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        day = (NOW + timedelta(days=self.day)).date()
        deadline = time.monotonic() + 120
        while not dispatch_started(self.url, day):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the send for {day} did not start dispatching")
            time.sleep(0.1)
        return proc

    def close(self) -> None:
        self.sink.terminate()
        self.sink.wait(timeout=10)


def measure(label: str, server: tuple[int, int], mix: Mix, args: argparse.Namespace,
            sender: Sender | None, url: str | None) -> Run:
    port, pid = server
    before = clicks_count(url) if url else 0
    send = sender.start() if sender else None
    cpu = cpu_seconds(pid)
    run = run_wrk(port, mix.script(), args)
    used = [(b - a) / run.requests * 1e6 for a, b in zip(cpu, cpu_seconds(pid), strict=True)]
    run = dataclasses.replace(run, cpu_us=used[0], child_cpu_us=used[1])
    note = ""
    if send is not None:
        still = send.poll() is None
        send.wait()
        note += "  send ran throughout" if still else "  SEND ENDED BEFORE WRK"
    if url:
        after, waited = settled_clicks(url, before + run.requests)
        note += (f"  clicks recorded {after - before}/{run.requests} "
                 f"({(after - before) / run.requests:.0%}, the last {waited:.1f} s after wrk)")
    print(f"  {label:<22}{run.rps:9.0f} req/s  p50 {run.p50_ms:6.2f} ms  p99 "
          f"{run.p99_ms:6.2f} ms  cpu {run.cpu_us:4.0f}+{run.child_cpu_us:2.0f} us/req  "
          f"errors {run.errors}{note}", flush=True)
    return run


def report(title: str, pairs: list[tuple[Run, Run]]) -> None:
    rps = [r.rps / b.rps for b, r in pairs]
    p99 = [r.p99_ms / b.p99_ms for b, r in pairs]
    best_b = max(b.rps for b, _ in pairs)
    best_r = max(r.rps for _, r in pairs)
    print(f"{title}:")
    print(f"  baseline  req/s median {statistics.median(b.rps for b, _ in pairs):7.0f} best "
          f"{best_b:7.0f}; p99 median {statistics.median(b.p99_ms for b, _ in pairs):.2f} ms")
    print(f"  real app  req/s median {statistics.median(r.rps for _, r in pairs):7.0f} best "
          f"{best_r:7.0f}; p99 median {statistics.median(r.p99_ms for _, r in pairs):.2f} ms")
    print(f"  ratio req/s real/baseline per round {'  '.join(f'{x:.2f}' for x in rps)}: "
          f"median {statistics.median(rps):.2f}, best {max(rps):.2f}, best/best "
          f"{best_r / best_b:.2f} (target >= 0.7)")
    print(f"  ratio p99 real/baseline per round   {'  '.join(f'{x:.2f}' for x in p99)}: "
          f"median {statistics.median(p99):.2f}, best {min(p99):.2f} (target <= 2.0)")
    cpu = [(r.cpu_us + r.child_cpu_us) / b.cpu_us for b, r in pairs if b.cpu_us]
    if cpu:
        print(f"  CPU per request real (server + writer) / baseline, median "
              f"{statistics.median(cpu):.2f}; real app's writer process median "
              f"{statistics.median(r.child_cpu_us for _, r in pairs):.0f} us/req")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--readers", type=int, default=200,
                        help="readers of the edition whose links are followed")
    parser.add_argument("--send-n", type=int, default=100000,
                        help="subscribers of the sends running during part (3)")
    parser.add_argument("--no-send", action="store_true", help="skip part (3)")
    parser.add_argument("--agents", type=int, default=4000,
                        help="distinct browser user agents in wrk's requests")
    parser.add_argument("--click-tracking", default="aggregate",
                        choices=("aggregate", "per-reader"))
    parser.add_argument("--click-writer", default="process", choices=("process", "thread"),
                        help="where `mailer serve` writes its clicks (the click_writer setting)")
    parser.add_argument("--database-url", default="",
                        help="a THROWAWAY database (it is initialised, seeded and sent to); "
                             "default: SQLite in a temporary directory")
    parser.add_argument("--serve-baseline", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--location", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_baseline:
        serve_baseline(args.serve_baseline, args.location)
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the servers on the way out
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        url = args.database_url or f"sqlite:///{tmp / 'bench.db'}"
        app = App.create(load_settings({}).replace(database_url=url, secret_key="bench"),
                         clock=FixedClock(NOW))
        init_db(app.engine)
        app.close()
        seed(url, 0, args.readers)
        paths = send_first_edition(tmp, url, args.click_tracking, args.readers)
        if not args.no_send:
            seed(url, args.readers, args.send_n)
        mix = Mix(tmp, paths, args.agents)

        real_port = free_port()
        env = base_env(url, args.click_tracking)
        env["MAILER_TRUSTED_PROXIES"] = str(TRUSTED_PROXIES)
        env["MAILER_CLICK_WRITER"] = args.click_writer
        # an hour after the send: readers' clicks, past the burst rule's half hour
        env["MAILER_NOW"] = (NOW + timedelta(hours=1)).isoformat()
        log = (tmp / "serve.log").open("w")
        real = subprocess.Popen([sys.executable, "-m", "mailer", "serve", "--port",
                                 str(real_port)], env=env, cwd=ROOT, stdout=log, stderr=log)
        procs = [real]
        sender = None
        try:
            wait_for_port(real_port, real, "mailer serve")
            location = check_redirect(real_port, paths[0])
            base_port = free_port()
            base = subprocess.Popen([sys.executable, __file__, "--serve-baseline",
                                     str(base_port), "--location", location], cwd=ROOT,
                                    stderr=subprocess.DEVNULL)
            procs.append(base)
            wait_for_port(base_port, base, "the baseline")
            check_redirect(base_port, paths[0])
            for port in (base_port, real_port):  # warm up (not reported)
                run_wrk(port, mix.script(), args, duration=2)
            settled_clicks(url, 1 << 40, timeout=60)  # the warm-up's clicks, before the runs
            commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                    capture_output=True, text=True).stdout.strip()
            dirty = subprocess.run(["git", "status", "--porcelain", "mailer"], cwd=ROOT,
                                   capture_output=True, text=True).stdout.strip()
            print(f"commit {commit}{' (mailer/ has uncommitted changes)' if dirty else ''}; "
                  f"waitress {waitress_options()}; wrk -t{args.wrk_threads} "
                  f"-c{args.connections} -d{args.duration}s; {args.rounds} rounds")
            print(f"database {url.split(':')[0]}; click_tracking {args.click_tracking}; "
                  f"click_writer {args.click_writer}; "
                  f"{len(set(paths))} distinct /r/ paths from {args.readers} readers, "
                  f"{len(paths)} in the weighted mix; {args.agents} user agents", flush=True)
            parts = [("idle", None)]
            if not args.no_send:
                sender = Sender(tmp, url, args.click_tracking)
                parts.append((f"while sending to {args.send_n} subscribers", sender))
            for title, snd in parts:
                print(f"{title}:")
                pairs = []
                for round_ in range(1, args.rounds + 1):
                    b = measure(f"{round_} baseline", (base_port, base.pid), mix, args, snd, None)
                    r = measure(f"{round_} real app", (real_port, real.pid), mix, args, snd, url)
                    pairs.append((b, r))
                report(f"{title}, summary", pairs)
        finally:
            if sender:
                sender.close()
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=15)
            log.close()


if __name__ == "__main__":
    main()
