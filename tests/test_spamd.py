"""The spam check through a SpamAssassin daemon (`spamassassin_command = "spamc ..."`).

A real Debian `spamd` on 127.0.0.1 (local tests only, no user configuration), asked by the
real `spamc`: the score and rules are the `spamassassin` command's own, and a daemon that is
not there is a clear warning, not a hang or a silent pass.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mailer import preflight
from mailer.app import App
from mailer.preflight import spamassassin
from tests.support.spam import HAVE_SPAMD, free_port
from tests.test_preflight import sample_edition

pytestmark = pytest.mark.usefixtures("fresh_spamassassin")

needs_spamd = pytest.mark.skipif(
    not HAVE_SPAMD,
    reason="needs spamd and spamc (Debian: apt install spamassassin spamd spamc)")

GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


@pytest.fixture(scope="module")
def spamd(spamd_command: str | None) -> str:
    """A running spamd (the run's shared one); the spamassassin_command that reaches it."""
    if spamd_command is None:
        pytest.skip("needs spamd and spamc")
    return spamd_command


@needs_spamd
def test_spamd_scores_as_the_command_does(app: App, tmp_path: Path, spamd: str) -> None:
    data = preflight.sample_message(app, sample_edition(app, tmp_path)).data
    command = spamassassin.spam_score(data)
    spamassassin._spam_cache.clear()
    daemon = spamassassin.spam_score(data, command=spamd)
    assert daemon.score == command.score
    assert [(r.name, r.score) for r in daemon.rules] == [
        (r.name, r.score) for r in command.rules]
    assert {r.name for r in daemon.rules} >= {"HTML_MESSAGE"}


@needs_spamd
def test_spam_is_refused_through_spamd(app: App, tmp_path: Path, spamd: str) -> None:
    edition = sample_edition(app, tmp_path)
    edition.text += "\n" + GTUBE.decode() + "\n"  # (the test string every SpamAssassin knows)
    app.settings = app.settings.replace(spamassassin_command=spamd)
    report = preflight.run_checks(app, edition)
    assert report.spam_score is not None and report.spam_score >= 1000
    assert any(f.code == "spam-score" and "GTUBE" in f.message for f in report.errors)


@needs_spamd
def test_a_daemon_that_is_not_there_is_a_warning(app: App, tmp_path: Path) -> None:
    data = preflight.sample_message(app, sample_edition(app, tmp_path)).data
    with pytest.raises(spamassassin.SpamCheckUnavailable,
                       match=r"spamc gave no score \(exit 69.*is spamd running\?"):
        # (one attempt: spamc's default is three, a second apart, to the same answer)
        spamassassin.spam_score(
            data, command=f"spamc -d 127.0.0.1 -p {free_port()} --connect-retries=1",
            timeout=20)


def test_spamc_output_is_read() -> None:
    out = ("7.5/5.0\nSpam detection software...\n\nContent analysis details:   (7.5 points, "
           "5.0 required)\n\n pts rule name              description\n---- "
           "---------------------- ----------\n 7.5 CANNED_RULE            A canned rule\n"
           "                            that goes on\n")
    result = spamassassin.parse_spamc(out)
    assert result is not None and result.score == 7.5
    assert [(r.name, r.score, r.description) for r in result.rules] == [
        ("CANNED_RULE", 7.5, "A canned rule that goes on")]
    assert spamassassin.parse_spamc("0/0\n") == spamassassin.SpamResult(0.0, [])
    assert spamassassin.parse_spamc("Message passed through\n") is None


def test_an_unreadable_command_is_a_warning() -> None:
    with pytest.raises(spamassassin.SpamCheckUnavailable, match="cannot be read"):
        spamassassin.spam_score(b"x", command='spamc -d "127.0.0.1')
