"""SpamAssassin started ahead (`spamassassin.warmed`): the command's own score, with the rules
loaded while the edition is built; nothing left running afterwards, whatever happens.

The real Debian `spamassassin` and its Perl library throughout.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from mailer import preflight
from mailer.app import App
from mailer.config import PROJECT_ROOT
from mailer.preflight import spamassassin
from tests.test_preflight import needs_spamassassin, sample_edition

# Each test scores afresh, and leaves no SpamAssassin started ahead to the next.
pytestmark = pytest.mark.usefixtures("fresh_spamassassin")

CANNED = """X-Spam-Status: No, score=3.2 required=5.0 tests=CANNED_RULE autolearn=no
Subject: x

Content analysis details:   (3.2 points, 5.0 required)

 pts rule name              description
---- ---------------------- --------------------------------------------------
 3.2 CANNED_RULE            A rule of the operator's wrapper
"""


def sample(app: App, tmp_path: Path) -> bytes:
    return preflight.sample_message(app, sample_edition(app, tmp_path)).data


def ended(pid: int) -> bool:
    """Gone, or a zombie nobody reaps (a container's PID 1 may not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


@needs_spamassassin
def test_the_warm_score_is_the_commands(app: App, tmp_path: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    data = sample(app, tmp_path)
    cold = spamassassin.spam_score(data)
    spamassassin._spam_cache.clear()
    caplog.set_level(logging.INFO, logger="mailer.spamassassin")
    with spamassassin.warmed():
        warm = spamassassin._warm
        assert warm is not None and warm.proc.poll() is None  # loading its rules meanwhile
        result = spamassassin.spam_score(data)
        assert spamassassin._warm is None  # taken by the check ...
    assert warm.proc.returncode == 0  # ... which it answered itself (no fallback)
    assert "gave no score" not in caplog.text
    assert result == cold  # same score, same rules and descriptions
    assert {r.name for r in result.rules} >= {"HTML_MESSAGE"}


@needs_spamassassin
def test_a_check_teaches_bayes_nothing(app: App, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """SpamAssassin learns every message it scores unless told not to: with a shared
    `bayes_path`, each day's check would train the operator's filter on our newsletter. What
    each check's HOME holds when it is removed shows whether it learned (bayes_toks)."""
    left: list[list[str]] = []

    class Recorded(tempfile.TemporaryDirectory):  # type: ignore[type-arg]
        def cleanup(self) -> None:
            own = Path(self.name) / ".spamassassin"
            if Path(self.name).exists():
                left.append(sorted(p.name for p in own.iterdir()) if own.exists() else [])
            super().cleanup()

    monkeypatch.setattr(spamassassin.tempfile, "TemporaryDirectory", Recorded)
    data = sample(app, tmp_path)
    cold = spamassassin.spam_score(data)  # the command
    spamassassin._spam_cache.clear()
    with spamassassin.warmed():
        warm = spamassassin.spam_score(data)  # the library started ahead
    assert warm == cold
    assert len(left) == 2
    assert not [name for names in left for name in names if name.startswith("bayes")], left


@needs_spamassassin
def test_a_spamassassin_started_and_not_needed_is_ended() -> None:
    with spamassassin.warmed():
        warm = spamassassin._warm
        assert warm is not None
    assert warm.proc.poll() is not None and spamassassin._warm is None
    home = Path(warm.home.name)
    assert not home.exists()
    # Sending starts without a check (a resumed send): the pipeline releases it there.
    with spamassassin.warmed():
        warm = spamassassin._warm
        assert warm is not None
        spamassassin.release()
        assert warm.proc.poll() is not None and spamassassin._warm is None


@needs_spamassassin
def test_a_killed_mailer_leaves_no_spamassassin_behind() -> None:
    """The mailer dies (kill -9) with SpamAssassin waiting for its message: it reads the end of
    its input and exits on its own once its rules are loaded."""
    code = ("import os; from mailer.preflight import spamassassin as sa; "
            "cm = sa.warmed(); cm.__enter__(); "
            "print(sa._warm.proc.pid, flush=True); os._exit(0)")
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    pid = int(out.strip())
    deadline = time.monotonic() + 30
    while not ended(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ended(pid)


@needs_spamassassin
def test_a_failing_warm_spamassassin_falls_back_to_the_command(
        app: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    data = sample(app, tmp_path)
    expected = spamassassin.spam_score(data)
    spamassassin._spam_cache.clear()
    # (a library that cannot load, a Perl that dies: the started process exits without a score)
    monkeypatch.setattr(spamassassin, "_WARM_SCRIPT", 'die "no library here\\n";')
    caplog.set_level(logging.INFO, logger="mailer.spamassassin")
    with spamassassin.warmed():
        assert spamassassin.spam_score(data) == expected
    assert "gave no score (exit 255: no library here); running spamassassin" in caplog.text


def test_only_spamassassins_own_script_is_started_ahead(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """An operator's wrapper (any script but SpamAssassin's own) runs as it is, never bypassed
    by the library."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "sa-wrapper"
    wrapper.write_text("#!/bin/sh\ncat >/dev/null\ncat <<'EOF'\n" + CANNED + "EOF\n")
    wrapper.chmod(0o755)
    perl_wrapper = bin_dir / "sa-perl-wrapper"
    perl_wrapper.write_text("#!/usr/bin/perl\nuse Mail::SpamAssassin;\n# site options ...\n")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    assert spamassassin._perl_of(str(wrapper)) is None
    assert spamassassin._perl_of(str(perl_wrapper)) is None
    with spamassassin.warmed("sa-wrapper"):
        assert spamassassin._warm is None
        result = spamassassin.spam_score(b"Subject: x\r\n\r\nhello\r\n", command="sa-wrapper")
    assert result.score == 3.2 and [r.name for r in result.rules] == ["CANNED_RULE"]
    installed = shutil.which("spamassassin")
    if installed is not None:
        perl = spamassassin._perl_of(installed)
        assert perl is not None
        assert perl[0][0].endswith("perl") and len(perl[1]) == 4


@needs_spamassassin
def test_a_warm_spamassassin_stands_in_only_for_its_own_command(app: App, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                ) -> None:
    """Staff may change `spamassassin_command` in the database after the process started one
    ahead for the file's setting: the check runs the command it is given."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "sa-wrapper"
    wrapper.write_text("#!/bin/sh\ncat >/dev/null\ncat <<'EOF'\n" + CANNED + "EOF\n")
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    with spamassassin.warmed("spamassassin"):
        warm = spamassassin._warm
        result = spamassassin.spam_score(b"Subject: x\r\n\r\nhello\r\n", command="sa-wrapper")
        assert spamassassin._warm is warm  # still waiting: not the command asked for
    assert result.score == 3.2
