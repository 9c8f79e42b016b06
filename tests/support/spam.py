"""SpamAssassin for tests: a clean slate per test, and one shared daemon (spamd) per run."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from mailer.preflight import spamassassin

SPAMD = shutil.which("spamd") or shutil.which("spamd", path="/usr/sbin:/usr/local/sbin")
HAVE_SPAMD = (SPAMD is not None and shutil.which("spamc") is not None
              and shutil.which("spamassassin") is not None)


@pytest.fixture
def fresh_spamassassin() -> Iterator[None]:
    """Clear the score cache, and stop a SpamAssassin started ahead, before and after a test."""
    spamassassin._spam_cache.clear()
    yield
    spamassassin.release()
    spamassassin._spam_cache.clear()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def spamd_command(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str | None]:
    """A real Debian `spamd` on 127.0.0.1 for the whole run; yields the `spamassassin_command`
    that reaches it (`spamc ...`), or None where spamd and spamc are not installed.

    Tests that start many `mailer send` processes use it so that each asks one daemon with its
    rules loaded instead of loading them in a Perl process of its own (seconds of CPU each)."""
    if not HAVE_SPAMD:
        yield None
        return
    home = tmp_path_factory.mktemp("spamd")
    port = free_port()
    log = (home / "spamd.log").open("wb")
    proc = subprocess.Popen(
        [SPAMD or "spamd", "--local", "--nouser-config", "--max-children=1",
         f"--listen=127.0.0.1:{port}", "--syslog=stderr", f"--pidfile={home / 'pid'}"],
        stdout=log, stderr=log, env={**os.environ, "HOME": str(home)})
    command = f"spamc -d 127.0.0.1 -p {port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ping = subprocess.run(["spamc", "-d", "127.0.0.1", "-p", str(port), "-K"],
                                  capture_output=True, check=False)
            if ping.returncode == 0:
                break
            if proc.poll() is not None:
                pytest.fail(f"spamd exited: {(home / 'spamd.log').read_text()[-2000:]}")
            time.sleep(0.2)
        else:
            pytest.fail("spamd did not answer within 60 s")
        yield command
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
