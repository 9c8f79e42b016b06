"""Unsubscribe by email: List-Unsubscribe's mailto, as a mail client uses it, applied by
`mailer unsubscribes ingest`, on SQLite and the real PostgreSQL.

The messages are real (`mailer send` through a real SMTP server); each request is the email a
client composes from the mailto URI of the message a reader got.
"""

from __future__ import annotations

import base64
from email import message_from_bytes, policy
from email.header import Header
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from click.testing import CliRunner

from mailer.cli import cli
from mailer.erasure import erase
from mailer.feedback.unsubscribe_mail import REQUEST_EVENT
from mailer.models import ACTIVE, UNSUBSCRIBED
from mailer.subscribers import find
from mailer.tokens import PREFERENCES, make_token
from tests.support.newsroom import run_mailer
from tests.support.smtpsink import SmtpSink
from tests.test_bounces import only_event, status

READERS = ("ann@example.org", "sian@example.org", "bob@example.org")


def ingest(environ: dict[str, str], *args: str, stdin: bytes | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, ["unsubscribes", "ingest", *args], env=environ, input=stdin,
                              catch_exceptions=False)


@pytest.fixture
def sent(env, smtp_sink: SmtpSink):  # type: ignore[no-untyped-def]  # noqa: F811
    app, feed, environ = env
    result = run_mailer(environ, "send")
    assert result.exit_code == 0, result.output
    assert "sent 3" in result.output
    return app, feed, environ


def mailto_of(sink: SmtpSink, address: str) -> tuple[str, str]:
    """(to, subject) of the List-Unsubscribe mailto in the message `address` got."""
    [received] = [r for r in sink.messages if address in r.rcpt_tos]
    header = str(message_from_bytes(received.data, policy=policy.default)["List-Unsubscribe"])
    [uri] = [part.strip(" <>") for part in header.split(",") if "mailto:" in part]
    parts = urlsplit(uri)
    return unquote(parts.path), parse_qs(parts.query)["subject"][0]


def request(to: str, subject: str, *, sender: str, body: str = "") -> bytes:
    """The email a client sends for a mailto URI (Apple Mail's shape)."""
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{abs(hash((to, subject, sender, body)))}@icloud.com>\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n").encode()


def test_the_mailto_carries_each_readers_token(sent, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    subjects = set()
    for address in READERS:
        to, subject = mailto_of(smtp_sink, address)
        assert to == "unsubscribe@labourlist.org"
        word, token = subject.split(" ")
        assert word == "unsubscribe"
        [received] = [r for r in smtp_sink.messages if address in r.rcpt_tos]
        assert f"/unsubscribe/{token}".encode() in received.data  # the link's own token
        subjects.add(subject)
    assert len(subjects) == 3


def test_a_request_unsubscribes_its_reader_whatever_address_it_comes_from(  # type: ignore[no-untyped-def]
        sent, smtp_sink: SmtpSink) -> None:
    app, _feed, environ = sent
    to, subject = mailto_of(smtp_sink, "ann@example.org")
    # (Ann reads her mail under another address, which forwards: the token says who she is)
    mail = request(to, subject, sender="Ann <ann.active@icloud.com>")
    result = ingest(environ, stdin=mail)
    assert result.exit_code == 0, result.output
    assert ("stdin: applied: ann@example.org: unsubscribed (email from "
            "ann.active@icloud.com)") in result.output
    assert "1 message(s): 1 applied, 0 duplicate, 0 unmatched, 0 ignored" in result.output
    assert status(app, "ann@example.org") == UNSUBSCRIBED
    assert status(app, "sian@example.org") == status(app, "bob@example.org") == ACTIVE
    event = only_event(app, "ann@example.org", UNSUBSCRIBED)
    assert event.source == "mailto" and "ann.active@icloud.com" in event.detail
    again = ingest(environ, stdin=mail)
    assert "stdin: duplicate: ann@example.org: already gets nothing (unsubscribed)" in \
        again.output
    only_event(app, "ann@example.org", UNSUBSCRIBED)  # (still one)


def test_what_clients_and_people_do_to_the_subject(sent, smtp_sink: SmtpSink,  # type: ignore[no-untyped-def]
                                                  tmp_path: Path) -> None:
    """A reply prefix, an encoded subject, the URI's %20 left as it is, the token only in the
    text: each still unsubscribes, here through a Maildir."""
    app, _feed, environ = sent
    maildir = tmp_path / "unsubscribe"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True)
    to, subject = mailto_of(smtp_sink, "ann@example.org")
    token = subject.split(" ")[1]
    encoded = Header(f"Re: {subject} – merci", "utf-8").encode()
    _, sian_subject = mailto_of(smtp_sink, "sian@example.org")
    _, bob_subject = mailto_of(smtp_sink, "bob@example.org")
    mails = {
        "1.ann": request(to, encoded, sender="ann@example.org"),
        "2.sian": request(to, f"unsubscribe%20{sian_subject.split(' ')[1]}",
                          sender="sian@example.org"),
        "3.bob": request(to, "Unsubscribe", sender="bob@example.org",
                         body=f"Please.\r\n\r\n{bob_subject}\r\n"),
    }
    assert encoded.startswith("=?utf-8?") and token not in encoded  # (only decoded)
    for name, mail in mails.items():
        (maildir / "new" / name).write_bytes(mail)
    result = ingest(environ, "--maildir", str(maildir))
    assert result.exit_code == 0, result.output
    assert "3 message(s): 3 applied" in result.output
    for address in READERS:
        assert status(app, address) == UNSUBSCRIBED
    assert sorted(p.name for p in (maildir / "cur").iterdir()) == [
        "1.ann:2,S", "2.sian:2,S", "3.bob:2,S"]
    assert not list((maildir / "new").iterdir())


def test_without_a_valid_token_nothing_changes(sent, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    app, _feed, environ = sent
    to, subject = mailto_of(smtp_sink, "ann@example.org")
    token = subject.split(" ")[1]
    payload, _, signature = token.partition(".")
    with app.sessions() as session:
        ann = find(session, "ann@example.org")
        assert ann is not None
        ann_id = ann.id
    other = base64.urlsafe_b64encode(f"[{ann_id + 1}]".encode()).rstrip(b"=").decode()
    assert other != payload
    cases = {
        # a person's own words, from the reader's own address: noted for staff to act on
        request(to, "Please take me off this list", sender="Ann <ann@example.org>"):
            "unmatched: no unsubscribe token (email from ann@example.org); nothing changed: "
            "noted in ann@example.org's history for staff",
        # ... and from an address that is not on the list
        request(to, "Please take me off this list", sender="someone@example.net"):
            "unmatched: no unsubscribe token (email from someone@example.net); nothing "
            "changed: if they asked to leave, mailer subscribers unsubscribe ADDRESS",
        # forgeries: a tampered signature, another reader's id with Ann's signature, the
        # preferences token (another purpose), a token signed with another secret
        request(to, f"unsubscribe {payload}.{signature[:-2]}xx", sender="x@evil.example"):
            "unmatched: no valid unsubscribe token (email from x@evil.example)",
        request(to, f"unsubscribe {other}.{signature}", sender="x@evil.example"):
            "unmatched: no valid unsubscribe token",
        request(to, f"unsubscribe {make_token('e2e-secret', PREFERENCES, ann_id)}",
                sender="x@evil.example"): "unmatched: no valid unsubscribe token",
        request(to, f"unsubscribe {make_token('other-secret', 'unsubscribe', ann_id)}",
                sender="x@evil.example"): "unmatched: no valid unsubscribe token",
        b"Subject: x\r\n\r\n" + b"a" * (11 * 1024 * 1024): "ignored: larger than 10 MB",
        bytes(range(256)) * 64: "unmatched: no unsubscribe token (email from no address)",
    }
    for raw, said in cases.items():
        result = ingest(environ, stdin=raw)
        assert result.exit_code == 0, result.output
        assert f"stdin: {said}" in result.output, (said, result.output)
    for address in READERS:
        assert status(app, address) == ACTIVE
    # The same request delivered twice is noted once.
    again = ingest(environ, stdin=request(to, "Please take me off this list",
                                          sender="Ann <ann@example.org>"))
    assert "noted in ann@example.org's history for staff" in again.output
    event = only_event(app, "ann@example.org", REQUEST_EVENT)
    assert event.source == "mailto" and '"Please take me off this list"' in event.detail


def test_a_reader_who_was_erased_is_not_brought_back(sent, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    app, _feed, environ = sent
    to, subject = mailto_of(smtp_sink, "bob@example.org")
    with app.sessions.begin() as session:
        bob = find(session, "bob@example.org")
        assert bob is not None
        erase(session, bob, at=app.clock.now())
    result = ingest(environ, stdin=request(to, subject, sender="bob@example.org"))
    assert result.exit_code == 0
    assert "stdin: unmatched: the token is of a subscriber no longer on the list" in \
        result.output
    with app.sessions() as session:
        assert find(session, "bob@example.org") is None


def test_a_database_that_is_down_keeps_the_message() -> None:
    environ = {"MAILER_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/test",
               "MAILER_SECRET_KEY": "x"}
    result = CliRunner().invoke(cli, ["unsubscribes", "ingest"], env=environ, input=b"x")
    assert result.exit_code == 75, result.output
    assert "the message is kept, try again later" in result.output
