"""Bounces by email (SMTP transport): delivery status reports in each common MTA's shape, read
and applied through `mailer bounces ingest`, on SQLite and the real PostgreSQL.

The messages the reports are about are real: `mailer send` through a real SMTP server, so each
report returns the headers of a message we sent, as the MTA would.
"""

from __future__ import annotations

from datetime import timedelta
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailer.cli import cli
from mailer.feedback.bounces import NotAReport, Recipient, kind_of, read_report
from mailer.feedback.events import EventKind
from mailer.models import ACTIVE, BOUNCED
from mailer.subscribers import find
from tests.support import dsn
from tests.support.feeds import Post, rss
from tests.support.newsroom import NOW, posts, run_mailer
from tests.support.smtpsink import SmtpSink

BOUNCES = "bounces@labourlist.org"


def ingest(environ: dict[str, str], *args: str, stdin: bytes | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, ["bounces", "ingest", *args], env=environ, input=stdin,
                              catch_exceptions=False)


def sent_to(sink: SmtpSink, address: str) -> bytes:
    [received] = [r for r in sink.messages if address in r.rcpt_tos]
    return received.data


def message_id(data: bytes) -> str:
    return str(message_from_bytes(data, policy=policy.default)["Message-ID"])


def status(app, address: str) -> str:  # type: ignore[no-untyped-def]
    with app.sessions() as session:
        sub = find(session, address)
        assert sub is not None
        return sub.status


def only_event(app, address: str, kind: str):  # type: ignore[no-untyped-def]
    """The one event of `kind` in the subscriber's history (a change applied once)."""
    with app.sessions() as session:
        sub = find(session, address)
        assert sub is not None
        [event] = [e for e in sub.events if e.kind == kind]
        return event


@pytest.fixture
def sent(env, smtp_sink: SmtpSink):  # type: ignore[no-untyped-def]  # noqa: F811
    """The e2e edition sent through SMTP with a bounce address: ann, siân and bob got it."""
    app, feed, environ = env
    environ["MAILER_BOUNCE_ADDRESS"] = BOUNCES
    result = run_mailer(environ, "send")
    assert result.exit_code == 0, result.output
    assert "sent 3" in result.output
    return app, feed, environ


def test_the_envelope_sender_is_the_bounce_address(sent, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    """Reports go to the envelope sender (Return-Path), not to the From a reader sees."""
    assert {r.mail_from for r in smtp_sink.messages} == {BOUNCES}
    for received in smtp_sink.messages:
        assert "daily@labourlist.org" in str(message_from_bytes(received.data)["From"])


def test_each_mta_shape_is_read(sent, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    original = sent_to(smtp_sink, "bob@example.org")
    mid = message_id(original)
    cases = [
        (dsn.postfix(original, "bob@example.org"), "5.1.1", EventKind.BOUNCE_HARD),
        (dsn.exim(original, "bob@example.org"), "5.0.0", EventKind.BOUNCE_SOFT),
        (dsn.gmail(original, "bob@example.org"), "5.1.1", EventKind.BOUNCE_HARD),
        (dsn.exchange(original, "bob@example.org"), "5.1.10", EventKind.BOUNCE_HARD),
        (dsn.postfix(original, "bob@example.org", status="4.4.1", action="delayed",
                     diagnostic="connect to mx.example.net: Connection timed out"),
         "4.4.1", EventKind.DEFERRED),
    ]
    for raw, code, kind in cases:
        report = read_report(raw)
        assert report.original_message_id == mid
        [recipient] = report.recipients
        assert (recipient.address, recipient.status) == ("bob@example.org", code)
        assert kind_of(recipient) is kind
        assert "\n" not in recipient.diagnostic
    [google] = read_report(dsn.gmail(original, "bob@example.org")).recipients
    assert google.diagnostic.startswith("The email account that you tried to reach does not")
    for not_a_report in (dsn.out_of_office(mid), b"\x00\xff garbage", b""):
        with pytest.raises(NotAReport):
            read_report(not_a_report)


@pytest.mark.parametrize(("status", "action", "kind"), [
    ("5.1.1", "failed", EventKind.BOUNCE_HARD),  # no such user
    ("5.1.10", "failed", EventKind.BOUNCE_HARD),  # Exchange: recipient not found
    ("5.2.1", "failed", EventKind.BOUNCE_HARD),  # mailbox disabled
    ("5.2.2", "failed", EventKind.BOUNCE_SOFT),  # mailbox full
    ("5.7.1", "failed", EventKind.BOUNCE_SOFT),  # refused as spam: not the address's fault
    ("5.1.7", "failed", EventKind.BOUNCE_SOFT),  # our sender address: never suppress for it
    ("4.4.7", "failed", EventKind.BOUNCE_SOFT),  # gave up retrying
    ("4.4.1", "delayed", EventKind.DEFERRED),
    ("2.0.0", "delivered", EventKind.DELIVERED),
    ("", "failed", EventKind.UNKNOWN),
])
def test_which_reports_suppress_an_address(status: str, action: str, kind: EventKind) -> None:
    assert kind_of(Recipient("a@example.org", action, status, "")) is kind


def test_a_hard_bounce_suppresses_once_and_the_next_edition_leaves_them_out(  # type: ignore[no-untyped-def]
        sent, smtp_sink: SmtpSink) -> None:
    app, feed, environ = sent
    report = dsn.postfix(sent_to(smtp_sink, "bob@example.org"), "bob@example.org")
    first = ingest(environ, stdin=report)  # as an MTA's alias pipe runs it
    assert first.exit_code == 0, first.output
    assert "stdin: applied: bob@example.org: bounce_hard (5.1.1 550 5.1.1" in first.output
    assert status(app, "bob@example.org") == BOUNCED
    again = ingest(environ, stdin=report)  # the MTA delivered it twice
    assert again.exit_code == 0 and "duplicate" in again.output
    with app.sessions() as session:
        bob = find(session, "bob@example.org")
        assert bob is not None
        [event] = [e for e in bob.events if e.kind == "bounced"]  # applied once
        assert event.source == "bounce-email" and "5.1.1" in event.detail

    # The next day's edition: Bob is left out.
    page1, _ = posts()
    tomorrow = [Post(201, "Next day's story", NOW + timedelta(hours=23), categories=("News",))]
    feed.serve_pages([rss(tomorrow + page1)])
    environ["MAILER_NOW"] = (NOW + timedelta(days=1)).isoformat()
    before = len(smtp_sink.messages)
    result = run_mailer(environ, "send")
    assert result.exit_code == 0, result.output
    assert sorted(r for m in smtp_sink.messages[before:] for r in m.rcpt_tos) == [
        "ann@example.org", "sian@example.org"]


def test_a_forged_report_changes_nothing(sent, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    """Anyone can mail the bounce address. A report must return the Message-ID the ledger
    recorded for that very delivery: a made-up one, another subscriber's, or none at all
    changes nothing."""
    app, _feed, environ = sent
    ann_data = sent_to(smtp_sink, "ann@example.org")
    mid = message_id(ann_data)
    date, delivery, _mac = mid.strip("<>").split("@")[0].split(".")
    forged_ids = [
        f"<{date}.{delivery}.000000000000@labourlist.org>",  # the hash does not match
        f"<{date}.999999.{_mac}@labourlist.org>",  # no such delivery
        "<CAF=something@mail.gmail.com>",  # not one of ours at all
    ]
    for forged in forged_ids:
        report = dsn.postfix(ann_data.replace(mid.encode(), forged.encode()), "ann@example.org",
                             report_id=f"<forged-{len(forged)}@example.net>")
        result = ingest(environ, stdin=report)
        assert result.exit_code == 0, result.output
        assert "unmatched" in result.output and "nothing changed" in result.output
    no_headers = dsn.postfix(b"Subject: x\r\n\r\nbody", "ann@example.org")
    result = ingest(environ, stdin=no_headers)
    assert "does not return the original Message-ID" in result.output
    assert status(app, "ann@example.org") == ACTIVE


def test_soft_bounces_add_up_to_a_suppression(sent, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    app, _feed, environ = sent
    original = sent_to(smtp_sink, "sian@example.org")
    for n in range(1, 4):  # soft_bounce_limit is 3
        report = dsn.postfix(original, "sian@example.org", status="5.2.2",
                             diagnostic="552 5.2.2 Mailbox full",
                             report_id=f"<full-{n}@relay.labourlist.org>")
        assert "bounce_soft" in ingest(environ, stdin=report).output
        assert status(app, "sian@example.org") == (BOUNCED if n == 3 else ACTIVE)


def test_a_maildir_is_read_and_each_message_filed(sent, smtp_sink: SmtpSink,  # type: ignore[no-untyped-def]
                                                  tmp_path: Path) -> None:
    app, _feed, environ = sent
    box = tmp_path / "Maildir"
    for folder in ("new", "cur", "tmp"):
        (box / folder).mkdir(parents=True)
    bob = sent_to(smtp_sink, "bob@example.org")
    messages = {
        "1.gmail": dsn.gmail(bob, "bob@example.org"),
        "2.exchange": dsn.exchange(sent_to(smtp_sink, "sian@example.org"), "sian@example.org"),
        "3.ooo": dsn.out_of_office(message_id(bob)),
        "4.junk": b"\xff\xfe not mail at all",
    }
    for name, raw in messages.items():
        (box / "new" / name).write_bytes(raw)
    result = ingest(environ, "--maildir", str(box))
    assert result.exit_code == 0, result.output
    assert "4 message(s): 2 applied, 0 duplicate, 0 unmatched, 2 ignored" in result.output
    assert "3.ooo: ignored: not a delivery status report (text/plain)" in result.output
    assert list((box / "new").iterdir()) == []
    assert sorted(p.name for p in (box / "cur").iterdir()) == sorted(
        f"{name}:2,S" for name in messages)
    assert status(app, "bob@example.org") == BOUNCED
    assert status(app, "sian@example.org") == BOUNCED  # 5.1.10: not found
    assert status(app, "ann@example.org") == ACTIVE


def test_a_database_that_is_down_keeps_the_message(tmp_path: Path) -> None:
    """The MTA's pipe gets EX_TEMPFAIL (75): it keeps the report and tries again later."""
    environ = {"MAILER_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/test",
               "MAILER_SECRET_KEY": "x"}
    result = CliRunner().invoke(cli, ["bounces", "ingest"], env=environ, input=b"x")
    assert result.exit_code == 75, result.output
    assert "error: database unreachable: " in result.output
    assert "the message is kept, try again later" in result.output


def test_hostile_messages_are_ignored_with_a_reason(sent, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    """Whatever arrives at a public address: nothing crashes, nothing changes, exit 0."""
    app, _feed, environ = sent
    original = sent_to(smtp_sink, "bob@example.org")
    report = dsn.postfix(original, "bob@example.org")
    head, _, rest = report.partition(b"Final-Recipient:")
    many = head + b"".join(b"Final-Recipient: rfc822; x%d@example.net\r\nAction: failed\r\n"
                           b"Status: 5.1.1\r\n\r\n" % i for i in range(500)) + \
        b"Final-Recipient:" + rest
    nested = (b"Content-Type: multipart/report; report-type=delivery-status; boundary=b0\r\n\r\n"
              + b"".join(b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n"
                         % (i, i + 1) for i in range(2000)))
    cases = {  # what arrives: what the command says of it
        b"Subject: x\r\n\r\n" + b"a" * (11 * 1024 * 1024): "ignored: larger than 10 MB",
        nested: "ignored: unreadable message (RecursionError",
        bytes(range(256)) * 64: "ignored: not a delivery status report",
        # a CR LF in the recipient only ends that line of the report: Bob's delivery, applied
        dsn.postfix(original, "bob@example.org\r\nX-Evil: yes", report_id="<evil@example.net>"):
            "applied: bob@example.org: bounce_hard",
    }
    for raw, said in cases.items():
        result = ingest(environ, stdin=raw)
        assert result.exit_code == 0, result.output
        assert f"stdin: {said}" in result.output, (said, result.output)
    result = ingest(environ, stdin=many)
    assert result.exit_code == 0
    assert result.output.count("applied:") == 20  # (MAX_RECIPIENTS), all about Bob's delivery
    with app.sessions() as session:
        bob = find(session, "bob@example.org")
        assert bob is not None and bob.status == BOUNCED
        assert all("\n" not in e.detail and "\r" not in e.detail for e in bob.events)
    assert status(app, "ann@example.org") == ACTIVE and status(app, "sian@example.org") == ACTIVE
