"""VERP (`bounce_verp`): each SMTP message's envelope sender names its delivery, so bounces in
any shape are applied, through `mailer bounces ingest`, to the subscriber they are about.

The messages are real: `mailer send` through a real SMTP server (pipelined, and one command
at a time), and each bounce is addressed to the envelope sender that server saw.
"""

from __future__ import annotations

from email import message_from_bytes, policy

import pytest

from mailer.config import load_settings
from mailer.errors import ConfigError
from mailer.feedback.bounces import plain_bounce_kind
from mailer.feedback.events import EventKind
from mailer.models import ACTIVE, BOUNCED
from mailer.verp import sender_for, token_of
from tests.support import dsn
from tests.support.newsroom import run_mailer
from tests.support.smtpsink import SmtpSink
from tests.test_bounces import BOUNCES, ingest, only_event, status

READERS = ("ann@example.org", "sian@example.org", "bob@example.org")


@pytest.fixture(params=["pipelined", "stepwise"])
def sent(request: pytest.FixtureRequest, env, smtp_sink: SmtpSink):  # type: ignore[no-untyped-def]  # noqa: F811
    """The e2e edition sent with VERP on: ann, siân and bob got it."""
    app, feed, environ = env
    environ["MAILER_BOUNCE_ADDRESS"] = BOUNCES
    environ["MAILER_BOUNCE_VERP"] = "true"
    if request.param == "stepwise":
        environ["MAILER_DSN"] = smtp_sink.dsn + "&pipelining=0"
    result = run_mailer(environ, "send")
    assert result.exit_code == 0, result.output
    assert "sent 3" in result.output
    return app, feed, environ


def envelope_sender(sink: SmtpSink, address: str) -> str:
    [received] = [r for r in sink.messages if address in r.rcpt_tos]
    return received.mail_from


def test_each_message_has_its_own_envelope_sender(sent, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    senders = {}
    for received in smtp_sink.messages:
        message_id = str(message_from_bytes(received.data, policy=policy.default)["Message-ID"])
        left = message_id.strip("<>").split("@")[0]
        assert received.mail_from == f"bounces+{left}@labourlist.org"
        # (the From a reader sees is unchanged)
        assert "daily@labourlist.org" in str(message_from_bytes(received.data)["From"])
        senders[received.rcpt_tos[0]] = received.mail_from
    assert set(senders) == set(READERS)
    assert len(set(senders.values())) == 3


def test_a_plain_text_bounce_is_applied_by_the_address_it_reached(  # type: ignore[no-untyped-def]
        sent, smtp_sink: SmtpSink) -> None:
    """qmail returns no report and names the recipient only in its text: the VERP address it
    was delivered to says whose message it was."""
    app, _feed, environ = sent
    [received] = [r for r in smtp_sink.messages if "ann@example.org" in r.rcpt_tos]
    bounce = dsn.qmail(received.data, "ann@example.org", received.mail_from)
    result = ingest(environ, stdin=bounce)
    assert result.exit_code == 0, result.output
    assert "stdin: applied: ann@example.org: bounce_hard" in result.output
    assert "(#5.1.1)" in result.output
    assert status(app, "ann@example.org") == BOUNCED
    assert status(app, "sian@example.org") == status(app, "bob@example.org") == ACTIVE
    event = only_event(app, "ann@example.org", BOUNCED)
    assert event.source == "bounce-email"
    assert event.detail.startswith("bounce to the VERP address: Sorry, no mailbox")
    again = ingest(environ, stdin=bounce)
    assert "stdin: duplicate: ann@example.org: already applied" in again.output


def test_exim_text_bounces_and_delay_warnings(sent, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    app, _feed, environ = sent
    bob, sian = (envelope_sender(smtp_sink, a) for a in ("bob@example.org", "sian@example.org"))
    delayed = ingest(environ, stdin=dsn.exim_text(
        "sian@example.org", sian, reply="451 4.4.1 Connection timed out", temporary=True))
    assert "stdin: applied: sian@example.org: deferred (451 4.4.1" in delayed.output
    # an old relay with no enhanced status: a bare 550 means the mailbox is gone
    failed = ingest(environ, stdin=dsn.exim_text("bob@example.org", bob))
    assert "stdin: applied: bob@example.org: bounce_hard (550 User unknown)" in failed.output
    assert status(app, "bob@example.org") == BOUNCED
    assert status(app, "sian@example.org") == status(app, "ann@example.org") == ACTIVE


def test_a_report_that_returns_no_headers_is_applied_with_the_recipient_option(  # type: ignore[no-untyped-def]
        sent, smtp_sink: SmtpSink) -> None:
    """Without VERP such a report is unmatched; the MTA's pipe passes the address it was
    delivered to (Postfix: ${original_recipient}), here with no header that records it."""
    app, _feed, environ = sent
    report = dsn.postfix(b"", "sian@example.org")
    assert b"bounces+" not in report
    result = ingest(environ, "--recipient", envelope_sender(smtp_sink, "sian@example.org"),
                    stdin=report)
    assert "stdin: applied: sian@example.org: bounce_hard" in result.output, result.output
    assert status(app, "sian@example.org") == BOUNCED
    plain = ingest(environ, stdin=dsn.postfix(b"", "ann@example.org",
                                              report_id="<other@relay>"))
    assert "stdin: unmatched: report about ann@example.org" in plain.output
    assert status(app, "ann@example.org") == ACTIVE


def test_automatic_replies_and_forged_addresses_change_nothing(sent, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    app, _feed, environ = sent
    ann, bob = (envelope_sender(smtp_sink, a) for a in ("ann@example.org", "bob@example.org"))
    left = ann.split("+", 1)[1].split("@")[0]
    date, delivery, mac = left.split(".")
    bob_delivery = bob.split("+", 1)[1].split(".")[1]
    forged = {
        # ann's keyed hash with bob's delivery id: not the Message-ID the ledger gave bob
        f"bounces+{date}.{bob_delivery}.{mac}@labourlist.org": "not a delivery status report",
        # a hash made up for ann's delivery
        f"bounces+{date}.{delivery}.{'0' * 12}@labourlist.org": "not a delivery status report",
        # ann's token at another domain, and under another local part
        ann.replace("labourlist.org", "example.net"): "not a delivery status report",
        ann.replace("bounces+", "daily+"): "not a delivery status report",
    }
    for to, said in forged.items():
        result = ingest(environ, stdin=dsn.exim_text("bob@example.org", to))
        assert result.exit_code == 0
        assert f"stdin: ignored: {said}" in result.output, (to, result.output)
    vacation = ingest(environ, stdin=dsn.vacation(ann))
    assert "stdin: ignored: ann@example.org: an automatic reply, not a bounce" in vacation.output
    # a message with no status in it is stored and changes nothing
    note = ingest(environ, stdin=dsn.exim_text("ann@example.org", ann, reply="Thanks!")
                  .replace(b"Mail delivery failed", b"Hello"))
    assert "stdin: applied: ann@example.org: unknown (no status in it)" in note.output
    for address in READERS:
        assert status(app, address) == ACTIVE


def test_verp_is_off_by_default_and_checked() -> None:
    assert load_settings({}).bounce_verp is False
    assert load_settings({"MAILER_BOUNCE_VERP": "1"}).envelope_sender == "daily@labourlist.org"
    with pytest.raises(ConfigError, match="bounce_verp"):
        load_settings({"MAILER_BOUNCE_VERP": "1",
                       "MAILER_BOUNCE_ADDRESS": "x" * 30 + "@labourlist.org"})


@pytest.mark.parametrize("text,kind", [
    ("Sorry, no mailbox here by that name. (#5.1.1)", EventKind.BOUNCE_HARD),
    ("550 5.2.1 The email account that you tried to reach is disabled", EventKind.BOUNCE_HARD),
    ("552 5.2.2 Mailbox full", EventKind.BOUNCE_SOFT),
    ("This address no longer accepts mail. (#5.1.7)", EventKind.BOUNCE_SOFT),  # our sender
    ("    550 User unknown", EventKind.BOUNCE_HARD),
    ("    554 Message rejected as spam", EventKind.BOUNCE_SOFT),
    ("Delayed: 4.4.7 still trying", EventKind.DEFERRED),
    ("  421 Try again later", EventKind.DEFERRED),
    ("Running Postfix 3.5.6 since 2020; we moved 550 boxes", EventKind.UNKNOWN),
    ("", EventKind.UNKNOWN),
])
def test_the_status_in_a_bounce_text(text: str, kind: EventKind) -> None:
    assert plain_bounce_kind(text)[0] is kind


def test_addresses_round_trip() -> None:
    base = "bounces@labourlist.org"
    address = sender_for(base, "<20261126.42.0123456789ab@labourlist.org>")
    assert address == "bounces+20261126.42.0123456789ab@labourlist.org"
    assert token_of(address.upper(), base) == ("20261126.42.0123456789ab", 42)
    assert token_of("<" + address + ">", base) == ("20261126.42.0123456789ab", 42)
    assert token_of(address, "daily@labourlist.org") is None
    assert token_of("bounces+junk@labourlist.org", base) is None
    assert token_of("bounces@labourlist.org", base) is None
    # a test send's Message-ID is not a delivery's: the plain bounce address
    assert sender_for(base, "<176422.abc@labourlist.org>") == base
