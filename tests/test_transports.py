"""Transports against real things: a directory on disk and a real SMTP server (aiosmtpd).

No smtplib patching: the sink in tests/support/smtpsink.py misbehaves on request (refusals,
421s, dropped connections, timeouts) and the transport must turn each into the right outcome.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

import mailer.transports as transports
from mailer.config import Settings
from mailer.errors import TransportError
from mailer.smtp_status import is_hard_bounce
from mailer.transports import Dsn, Outgoing, Result, from_dsn, parse_dsn, register
from mailer.transports.base import Transport
from mailer.transports.file import FileTransport, eml_name
from mailer.transports.smtp import AMBIGUOUS_ERROR, SmtpTransport, wire_data
from mailer.urls import redact_url
from tests.support import smtpsink
from tests.support.smtpsink import SmtpSink

# The shared fixture (conftest.py may import it too; this makes the module self-contained).
smtp_sink = smtpsink.smtp_sink

SECRET = "s3cr%t/p@ss:word"
SECRET_DSN = "s3cr%25t%2Fp%40ss%3Aword"


@pytest.fixture
def settings() -> Settings:
    return Settings(from_addr="LabourList Daily <daily@labourlist.org>")


def outgoing(n: int, to: str | None = None, body: str = "Good morning.") -> Outgoing:
    recipient = to or f"reader{n}@example.org"
    message_id = f"<edition-1.{n}@daily.labourlist.org>"
    data = (
        f"From: LabourList Daily <daily@labourlist.org>\r\nTo: {recipient}\r\n"
        f"Subject: LabourList Daily {n}\r\nMessage-ID: {message_id}\r\n"
        f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    ).encode()
    return Outgoing(recipient=recipient, message_id=message_id, data=data, delivery_id=n)


def batch(count: int, start: int = 0) -> list[Outgoing]:
    return [outgoing(n) for n in range(start, start + count)]


def statuses(results: list[Result]) -> list[str]:
    return [r.status for r in results]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---- DSN -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("dsn", "path"),
    [
        ("file://outbox", "outbox"),
        ("file://outbox/daily", "outbox/daily"),
        ("file://./outbox", "./outbox"),
        ("file:///var/spool/mailer/outbox", "/var/spool/mailer/outbox"),
        ("file:///tmp/with%20space", "/tmp/with space"),
    ],
)
def test_parse_file_dsn(dsn: str, path: str) -> None:
    parsed = parse_dsn(dsn)
    assert (parsed.scheme, parsed.path, parsed.host, parsed.port) == ("file", path, "", None)


def test_parse_smtp_dsn_decodes_credentials_and_options() -> None:
    parsed = parse_dsn(
        f"SMTP://mailer%40labourlist.org:{SECRET_DSN}@Smtp.Example.org:587"
        "?verify_tls=0&timeout=12.5&local_hostname=mx.labourlist.org"
    )
    assert parsed == Dsn(
        scheme="smtp",
        user="mailer@labourlist.org",
        password=SECRET,
        host="smtp.example.org",
        port=587,
        options={"verify_tls": "0", "timeout": "12.5", "local_hostname": "mx.labourlist.org"},
    )


@pytest.mark.parametrize(
    ("dsn", "scheme", "user", "host", "port"),
    [
        ("smtps://u:p@smtp.example.org:465", "smtps", "u", "smtp.example.org", 465),
        ("smtp://relay.internal", "smtp", "", "relay.internal", None),
        ("smtp://[::1]:2525", "smtp", "", "::1", 2525),
        ("postmark+api://TOKEN-123@default?message_stream=broadcast", "postmark+api",
         "TOKEN-123", "default", None),
        ("sendgrid+api://SG.key@default", "sendgrid+api", "SG.key", "default", None),
        ("mailgun+api://KEY:mg.labourlist.org@eu", "mailgun+api", "KEY", "eu", None),
        ("ses+api://AKIA:secret@default?region=eu-west-2", "ses+api", "AKIA", "default", None),
    ],
)
def test_parse_other_schemes(dsn: str, scheme: str, user: str, host: str,
                             port: int | None) -> None:
    parsed = parse_dsn(dsn)
    assert (parsed.scheme, parsed.user, parsed.host, parsed.port) == (scheme, user, host, port)


def test_password_never_shown_in_repr_or_redacted() -> None:
    dsn = f"smtp://mailer:{SECRET_DSN}@smtp.example.org:587?timeout=5"
    parsed = parse_dsn(dsn)
    for text in (repr(parsed), str(parsed), redact_url(dsn)):
        assert SECRET not in text and SECRET_DSN not in text
    assert redact_url(dsn) == "smtp://mailer:***@smtp.example.org:587?timeout=5"
    transport = from_dsn(redact_url(dsn).replace("***", SECRET_DSN), Settings())
    assert SECRET not in repr(transport) and SECRET_DSN not in repr(transport)


@pytest.mark.parametrize("secret", [SECRET.replace("%", "%25"), "pa#ss", "p@ss/w:rd?x"])
def test_unencoded_credentials_are_read_whole(secret: str) -> None:
    """The credentials end at the last '@' (mailer/urls.py), so '/', '@', ':', '?' and '#'
    need no encoding there (tests/test_hostile_config.py has what is shown)."""
    parsed = parse_dsn(f"smtp://mailer:{secret}@smtp.example.org:587?timeout=5")
    assert (parsed.password, parsed.host, parsed.port, parsed.options) == (
        secret.replace("%25", "%"), "smtp.example.org", 587, {"timeout": "5"})


@pytest.mark.parametrize(
    "dsn",
    [
        "smtp://mailer:secretpw@smtp.example.org/x#pa#ss",  # '#' after the host
        "smtp://mailer:secretpw@smtp.example.org:notaport",
        "smtp://mailer:secretpw@smtp.example.org:99999",
    ],
)
def test_unreadable_dsn_errors_do_not_leak_the_password(dsn: str) -> None:
    with pytest.raises(TransportError) as err:
        from_dsn(dsn, Settings())
    message = str(err.value)
    assert "\n" not in message
    for fragment in ("secretpw", "pa#ss", "ss:word", "p@ss"):
        assert fragment not in message


def test_not_a_dsn() -> None:
    with pytest.raises(TransportError, match="must look like scheme://"):
        parse_dsn("outbox")
    with pytest.raises(TransportError, match="needs a directory"):
        parse_dsn("file://")


def test_unknown_scheme_names_the_choices() -> None:
    with pytest.raises(TransportError) as err:
        from_dsn("carrierpigeon://user:hunter2@loft", Settings())
    message = str(err.value)
    assert message.startswith(
        "unsupported transport 'carrierpigeon' in MAILER_DSN (use file://, smtp://, smtps://, "
        "postmark+api://"
    )
    assert "hunter2" not in message


def test_unknown_and_malformed_options_fail_at_construction() -> None:
    with pytest.raises(TransportError, match="'verfy_tls' is not understood by smtp://"):
        from_dsn("smtp://relay.internal?verfy_tls=0", Settings())
    with pytest.raises(TransportError, match="verify_tls='maybe'"):
        from_dsn("smtp://relay.internal?verify_tls=maybe", Settings())
    with pytest.raises(TransportError, match="timeout='-1' must be a positive number"):
        from_dsn("smtp://relay.internal?timeout=-1", Settings())
    with pytest.raises(TransportError, match="smtps:// always uses TLS"):
        from_dsn("smtps://relay.internal?tls=0", Settings())


def test_smtp_defaults_follow_symfony() -> None:
    plain = from_dsn("smtp://relay.internal", Settings())
    implicit = from_dsn("smtps://relay.internal", Settings())
    on_465 = from_dsn("smtp://relay.internal:465", Settings())
    assert isinstance(plain, SmtpTransport) and isinstance(implicit, SmtpTransport)
    assert isinstance(on_465, SmtpTransport)
    assert (plain.port, plain.implicit_tls, plain.starttls_mode, plain.timeout) == (
        25, False, "auto", 30.0)
    assert (implicit.port, implicit.implicit_tls) == (465, True)
    assert on_465.implicit_tls
    assert plain.sender == "daily@labourlist.org"  # settings.from_addr's address
    assert plain.max_batch == 50


def test_smtp_password_can_come_from_the_environment_setting() -> None:
    transport = from_dsn("smtp://mailer@relay.internal:587", Settings(smtp_password=SECRET))
    assert isinstance(transport, SmtpTransport)
    assert transport.user == "mailer" and transport._password == SECRET


def test_registry_is_open_for_other_schemes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transports, "_REGISTRY", dict(transports._REGISTRY))
    seen: list[Dsn] = []

    class Null(Transport):
        name = "null"

        def send(self, messages: list[Outgoing]) -> list[Result]:
            return [Result("sent") for _ in messages]

    def factory(dsn: Dsn, settings: Settings) -> Transport:
        seen.append(dsn)
        return Null()

    register("null+api", factory)
    transport = from_dsn("null+api://KEY@default?x=1", Settings())
    assert isinstance(transport, Null)
    assert seen[0].user == "KEY" and seen[0].options == {"x": "1"}
    assert "null+api" in transports.registered_schemes()


# ---- file transport ------------------------------------------------------------------------
def test_file_transport_writes_one_eml_per_message(tmp_path: Path, settings: Settings) -> None:
    outbox = tmp_path / "not" / "yet" / "there"
    transport = from_dsn(f"file://{outbox}", settings)
    assert isinstance(transport, FileTransport) and transport.max_batch >= 500
    messages = batch(3)
    with transport:
        results = transport.send(messages)
    assert statuses(results) == ["sent"] * 3
    files = sorted(outbox.iterdir())
    assert [f.name for f in files] == sorted(r.provider_id for r in results)
    for message, result in zip(messages, results, strict=True):
        assert result.provider_id == f"edition-1.{message.delivery_id}@daily.labourlist.org.eml"
        assert (outbox / result.provider_id).read_bytes() == message.data
    assert "3 message(s)" in transport.check()


def test_file_transport_rewrite_of_same_message_id_overwrites(tmp_path: Path,
                                                              settings: Settings) -> None:
    transport = from_dsn(f"file://{tmp_path}?fsync=1", settings)
    first = outgoing(7, body="first attempt")
    second = outgoing(7, body="second attempt")
    assert transport.send([first])[0].status == "sent"
    assert transport.send([second, outgoing(8)])[0].status == "sent"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "edition-1.7@daily.labourlist.org.eml",
        "edition-1.8@daily.labourlist.org.eml",
    ]  # no duplicates, and no temporary files left behind
    assert b"second attempt" in (tmp_path / "edition-1.7@daily.labourlist.org.eml").read_bytes()


def test_eml_names_are_safe_and_distinct() -> None:
    names = {eml_name(mid) for mid in ("<a/b@x>", "<a_b@x>", "<../../etc/passwd>", "<a b@x>")}
    assert len(names) == 4
    for name in names:
        assert "/" not in name and " " not in name and not name.startswith(".")
        assert name.endswith(".eml")
    assert eml_name("", b"data").startswith("noid-")
    assert len(eml_name("<" + "x" * 500 + "@y>")) < 150


def test_file_transport_unusable_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    transport = FileTransport(blocker / "outbox")
    with pytest.raises(TransportError, match="cannot create the outbox directory"):
        transport.open()
    results = transport.send(batch(2))  # send() itself reports, rather than raising
    assert statuses(results) == ["retry", "retry"]


# ---- SMTP: connections and credentials -----------------------------------------------------
def test_smtp_reuses_one_connection_across_messages_and_batches(smtp_sink: SmtpSink,
                                                                settings: Settings) -> None:
    transport = from_dsn(smtp_sink.dsn, settings)
    messages = batch(120)
    results: list[Result] = []
    with transport:
        for i in range(0, len(messages), transport.max_batch):
            results += transport.send(messages[i:i + transport.max_batch])
    assert statuses(results) == ["sent"] * 120
    assert all(r.provider_id.startswith("2.0.0 Ok: queued as ") for r in results)
    assert smtp_sink.connections == 1
    assert smtp_sink.verbs("EHLO") == 1 and smtp_sink.verbs("QUIT") == 1
    assert smtp_sink.recipients() == [m.recipient for m in messages]
    first = smtp_sink.messages[0]
    assert first.mail_from == "daily@labourlist.org"
    assert first.message["Subject"] == "LabourList Daily 0"


def test_smtp_data_is_dot_stuffed_and_crlf(smtp_sink: SmtpSink, settings: Settings) -> None:
    body = ".starts with a dot\n..two dots\r\n.\r\nlone dot above\nno final newline"
    message = outgoing(1, body=body)
    message.data = message.data.rstrip(b"\r\n")
    with from_dsn(smtp_sink.dsn, settings) as transport:
        assert transport.send([message])[0].status == "sent"
    received = smtp_sink.messages[0].data
    assert received == message.data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") + b"\r\n"
    assert wire_data(b"a\n.b") == b"a\r\n..b\r\n.\r\n"
    # what MessageTemplate.fill makes needs no stuffing: only the terminator is added
    ready = Outgoing(recipient="a@example.org", message_id="<m@example.org>",
                     data=b"a\r\n=2Eb\r\n", wire_ready=True)
    prepared = from_dsn(smtp_sink.dsn, settings).prepare(ready)  # type: ignore[attr-defined]
    assert prepared.data + prepared.end == b"a\r\n=2Eb\r\n.\r\n"


def test_message_data_and_terminator_survive_partial_writes() -> None:
    """The data and its terminator go out in one sendmsg without being joined; with a small
    send buffer, a slow reader and a socket timeout (as smtplib sets one) the kernel takes
    them a piece at a time, and every byte must arrive once, in order."""
    import socket
    import threading
    import time
    from types import SimpleNamespace

    from mailer.transports.smtp.wire import send_data

    server = socket.create_server(("127.0.0.1", 0))
    sender = socket.create_connection(server.getsockname())
    receiver, _ = server.accept()
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    sender.settimeout(10)
    data = bytes(range(256)) * 8192  # 2 MB, every offset distinguishable
    received = bytearray()

    def read_slowly() -> None:
        while chunk := receiver.recv(8192):
            received.extend(chunk)
            time.sleep(0.0005)

    reader = threading.Thread(target=read_slowly)
    reader.start()
    send_data(SimpleNamespace(sock=sender), data, b".\r\n")  # type: ignore[arg-type]
    sender.close()
    reader.join(timeout=30)
    receiver.close()
    server.close()
    assert bytes(received) == data + b".\r\n"


def test_smtp_auth_success(settings: Settings) -> None:
    with SmtpSink(auth=("mailer@labourlist.org", SECRET)) as sink:
        assert SECRET_DSN in sink.dsn
        transport = from_dsn(sink.dsn, settings)
        assert transport.check() == (
            f"smtp 127.0.0.1:{sink.port}: connected, EHLO ok, AUTH ok as 'mailer@labourlist.org'"
        )
        with transport:
            assert statuses(transport.send(batch(2))) == ["sent", "sent"]
        assert sink.logins == ["mailer@labourlist.org"] * 2


def test_smtp_bad_credentials_is_one_clean_line(settings: Settings) -> None:
    with SmtpSink(auth=("mailer", "right-password")) as sink:
        transport = from_dsn(f"smtp://mailer:{SECRET_DSN}@127.0.0.1:{sink.port}?tls=0", settings)
        with pytest.raises(TransportError) as err:
            transport.open()
        message = str(err.value)
        assert message.startswith("SMTP server refused the login for user 'mailer' (535")
        assert "\n" not in message and SECRET not in message and SECRET_DSN not in message
        with pytest.raises(TransportError, match="refused the login"):
            transport.check()
        assert sink.messages == []


def test_smtp_never_sends_a_password_in_clear_text_unless_told_to(settings: Settings) -> None:
    """tls=auto (the default) encrypts when the server offers STARTTLS. A server that does not
    (or a man in the middle who struck it from the EHLO reply) does not get the password:
    the operator has to say tls=0 for that."""
    with SmtpSink(auth=("mailer", "pw")) as sink:
        auto = sink.dsn.replace("?tls=0", "")
        assert "tls" not in auto
        transport = from_dsn(auto, settings)
        with pytest.raises(TransportError) as err:
            transport.open()
        assert str(err.value) == (
            f"SMTP server 127.0.0.1:{sink.port} does not offer STARTTLS: refusing to send the "
            "password for user 'mailer' in clear text (tls=0 in MAILER_DSN allows it, on a "
            "network you trust; smtps:// encrypts from the start)")
        assert sink.logins == []
        told = from_dsn(sink.dsn, settings)  # ?tls=0
        with told:
            assert statuses(told.send(batch(1))) == ["sent"]
        assert sink.logins == ["mailer"]


def test_smtp_credentials_but_no_auth_offered(smtp_sink: SmtpSink, settings: Settings) -> None:
    transport = from_dsn(f"smtp://mailer:pw@127.0.0.1:{smtp_sink.port}?tls=0", settings)
    with pytest.raises(TransportError, match="does not offer AUTH"):
        transport.open()


def test_smtp_refused_connection(settings: Settings) -> None:
    port = free_port()
    transport = from_dsn(f"smtp://127.0.0.1:{port}?tls=0&timeout=5", settings)
    with pytest.raises(TransportError) as err:
        transport.open()
    assert str(err.value) == f"cannot connect to SMTP server 127.0.0.1:{port}: Connection refused"
    results = transport.send(batch(3))  # never raises: the dispatcher backs off on retries
    assert statuses(results) == ["retry"] * 3
    assert results[0].error.startswith("SMTP server unavailable: cannot connect")


def test_smtp_server_gone_mid_batch_turns_the_rest_into_retries(settings: Settings) -> None:
    sink = SmtpSink().start()
    transport = from_dsn(sink.dsn + "&timeout=5", settings)
    try:
        transport.open()
        assert statuses(transport.send(batch(2))) == ["sent", "sent"]
        sink.stop()
        results = transport.send(batch(3, start=2))
    finally:
        sink.stop()
        transport.close()
    assert statuses(results) == ["retry"] * 3
    assert all(r.error.startswith("SMTP server unavailable: ") for r in results)


# ---- SMTP: per-recipient outcomes ----------------------------------------------------------
def test_smtp_451_then_250_on_retry(settings: Settings) -> None:
    def later_once(address: str, attempt: int) -> str | None:
        return "451 4.7.1 Try again later" if address == "reader1@example.org" and attempt == 1 \
            else None

    with SmtpSink(rcpt_policy=later_once) as sink, from_dsn(sink.dsn, settings) as transport:
        results = transport.send(batch(3))
        assert statuses(results) == ["sent", "retry", "sent"]
        assert results[1].error == "451 4.7.1 Try again later"
        assert not results[1].hard_bounce
        assert sink.verbs("RSET") == 1  # the refused transaction was reset, connection kept
        assert transport.send([outgoing(1)])[0].status == "sent"
        assert sink.recipients() == [
            "reader0@example.org", "reader2@example.org", "reader1@example.org"]
        assert sink.connections == 1


def test_smtp_550_511_is_a_hard_bounce(settings: Settings) -> None:
    def no_such_user(address: str, attempt: int) -> str | None:
        return "550 5.1.1 <reader1@example.org>: No such user" if "reader1" in address else None

    with SmtpSink(rcpt_policy=no_such_user) as sink, from_dsn(sink.dsn, settings) as transport:
        results = transport.send(batch(3))
    assert statuses(results) == ["sent", "failed", "sent"]
    assert results[1].hard_bounce and results[1].suppress_reason == "bounced"
    assert results[1].error == "550 5.1.1 <reader1@example.org>: No such user"
    assert sink.connections == 1


def test_smtp_552_after_data_fails_without_bouncing(settings: Settings) -> None:
    def too_big(rcpts: list[str], attempt: int) -> str | None:
        return "552 5.3.4 Message size exceeds fixed limit" if "reader0@example.org" in rcpts \
            else None

    with SmtpSink(data_policy=too_big) as sink, from_dsn(sink.dsn, settings) as transport:
        results = transport.send(batch(2))
    assert statuses(results) == ["failed", "sent"]
    assert results[0].error == "552 5.3.4 Message size exceeds fixed limit"
    assert not results[0].hard_bounce and results[0].suppress_reason == ""
    assert sink.connections == 1


def test_smtp_data_451_is_a_retry(settings: Settings) -> None:
    def greylist(rcpts: list[str], attempt: int) -> str | None:
        return "451 4.7.1 Greylisted, come back later" if attempt == 1 else None

    with SmtpSink(data_policy=greylist) as sink, from_dsn(sink.dsn, settings) as transport:
        assert transport.send([outgoing(1)])[0].status == "retry"
        assert transport.send([outgoing(1)])[0].status == "sent"
        assert sink.recipients() == ["reader1@example.org"]


@pytest.mark.parametrize(
    ("reply", "status"), [("451 4.3.0 Mail server busy", "retry"),
                          ("553 5.1.8 Sender address rejected", "failed")],
)
def test_smtp_mail_from_refused(settings: Settings, reply: str, status: str) -> None:
    with SmtpSink(mail_policy=lambda address, attempt: reply if attempt == 1 else None) as sink, \
            from_dsn(sink.dsn, settings) as transport:
        results = transport.send(batch(2))
    assert statuses(results) == [status, "sent"]
    assert results[0].error == f"MAIL FROM refused: {reply}"
    assert not results[0].hard_bounce  # our sender's problem, never the subscriber's


@pytest.mark.parametrize(
    ("code", "text", "hard"),
    [
        (550, "5.1.1 No such user", True),
        (550, "5.1.10 Recipient address has null MX", True),
        (554, "5.2.1 Mailbox disabled", True),
        (550, "No such user here", True),
        (553, "5.1.3 Bad destination mailbox address syntax", True),
        (553, "5.1.8 Bad sender's system address", False),
        (552, "5.2.2 Mailbox full", False),
        (554, "5.7.1 Message rejected as spam", False),
        (551, "User not local", False),
        (451, "4.1.1 Temporary lookup failure", False),
        (550, "4.1.1 inconsistent", False),
    ],
)
def test_hard_bounce_classification(code: int, text: str, hard: bool) -> None:
    assert is_hard_bounce(code, text) is hard


# ---- SMTP: broken connections --------------------------------------------------------------
def test_smtp_drop_before_data_is_a_retry_and_the_next_message_reconnects(
        settings: Settings) -> None:
    with SmtpSink(drop_after=1, drop_mode="before_data") as sink, \
            from_dsn(sink.dsn, settings) as transport:
        results = transport.send(batch(3))
        assert statuses(results) == ["sent", "retry", "sent"]
        assert "connection lost" in results[1].error
        assert sink.connections == 2
        assert transport.send([outgoing(1)])[0].status == "sent"  # the retry is safe
        assert sorted(sink.recipients()) == [f"reader{n}@example.org" for n in range(3)]
        assert sink.dropped == []


def test_smtp_drop_after_data_is_ambiguous(settings: Settings) -> None:
    with SmtpSink(drop_after=1, drop_mode="after_data") as sink, \
            from_dsn(sink.dsn, settings) as transport:
        results = transport.send(batch(3))
    assert statuses(results) == ["sent", "ambiguous", "sent"]
    assert results[1].error == AMBIGUOUS_ERROR
    assert [d.rcpt_tos for d in sink.dropped] == [["reader1@example.org"]]  # it did arrive
    assert sink.connections == 2


def test_smtp_timeout_waiting_for_final_reply_is_ambiguous(settings: Settings) -> None:
    with SmtpSink(data_delay=3) as sink:
        transport = from_dsn(sink.dsn + "&timeout=0.5", settings)
        with transport:
            result = transport.send([outgoing(1)])[0]
        assert result.status == "ambiguous" and result.error == AMBIGUOUS_ERROR


def test_smtp_421_at_rcpt_retries_and_reopens(settings: Settings) -> None:
    def closing(address: str, attempt: int) -> str | None:
        return "421 4.7.0 Too many messages, closing" if "reader1" in address and attempt == 1 \
            else None

    with SmtpSink(rcpt_policy=closing) as sink, from_dsn(sink.dsn, settings) as transport:
        results = transport.send(batch(3))
        assert statuses(results) == ["sent", "retry", "sent"]
        assert results[1].error == "421 4.7.0 Too many messages, closing"
        assert sink.connections == 2 and sink.verbs("RSET") == 0


def test_smtp_421_after_data_retries_and_reopens(settings: Settings) -> None:
    def closing(rcpts: list[str], attempt: int) -> str | None:
        return "421 4.4.2 Timeout, closing" if rcpts == ["reader0@example.org"] and attempt == 1 \
            else None

    with SmtpSink(data_policy=closing) as sink, from_dsn(sink.dsn, settings) as transport:
        results = transport.send(batch(2))
        assert statuses(results) == ["retry", "sent"]
        assert transport.send([outgoing(0)])[0].status == "sent"
        assert sink.connections == 2


def test_smtp_server_closing_idle_connections_is_survived(settings: Settings) -> None:
    # Yahoo-style: the server hangs up after N messages without an error; go on regardless.
    with SmtpSink(max_per_connection=2) as sink, from_dsn(sink.dsn, settings) as transport:
        results = transport.send(batch(5))
        assert statuses(results) == ["sent"] * 5
        assert sink.connections == 3
        assert len(sink.recipients()) == 5


# ---- SMTP: TLS and check() -------------------------------------------------------------------
def test_smtp_check_plain(smtp_sink: SmtpSink, settings: Settings) -> None:
    summary = from_dsn(smtp_sink.dsn, settings).check()
    assert summary == f"smtp 127.0.0.1:{smtp_sink.port}: connected, EHLO ok, no AUTH"
    assert smtp_sink.verbs("QUIT") == 1 and smtp_sink.messages == []


def test_smtp_starttls_with_auth(settings: Settings) -> None:
    with SmtpSink(tls="starttls", auth=("mailer", "pw")) as sink:
        transport = from_dsn(sink.dsn, settings)
        assert transport.check() == (
            f"smtp 127.0.0.1:{sink.port}: connected, EHLO ok, STARTTLS ok, AUTH ok as 'mailer'"
        )
        with transport:
            assert statuses(transport.send(batch(2))) == ["sent", "sent"]
        assert sink.connections == 2 and sink.verbs("EHLO") == 4  # EHLO again after STARTTLS


def test_smtps_implicit_tls(settings: Settings) -> None:
    with SmtpSink(tls="implicit") as sink:
        transport = from_dsn(sink.dsn, settings)
        assert transport.check().startswith(f"smtps 127.0.0.1:{sink.port}: connected (TLS)")
        with transport:
            assert transport.send([outgoing(1)])[0].status == "sent"


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
def test_tls_connections_chain_envelopes_too(settings: Settings, tls: str) -> None:
    """Over TLS (no sendmsg) the data and the next envelope go out as two writes, the
    envelope still ahead of the data's reply."""
    with SmtpSink(tls=tls, pipelining=True, data_delay=0.05) as sink:  # type: ignore[arg-type]
        with from_dsn(sink.dsn, settings) as transport:
            assert statuses(transport.send(batch(3))) == ["sent"] * 3
        assert [m.sent_behind for m in sink.messages] == [b"MAIL", b"MAIL", b""]
        assert sink.connections == 1


def test_smtp_tls_certificate_is_verified_by_default(settings: Settings) -> None:
    with SmtpSink(tls="starttls") as sink:
        transport = from_dsn(f"smtp://127.0.0.1:{sink.port}", settings)
        with pytest.raises(TransportError, match="certificate verification failed"):
            transport.open()


def test_smtp_tls_required_but_not_offered(smtp_sink: SmtpSink, settings: Settings) -> None:
    transport = from_dsn(f"smtp://127.0.0.1:{smtp_sink.port}?tls=1", settings)
    with pytest.raises(TransportError, match="does not offer STARTTLS"):
        transport.open()
    auto = from_dsn(f"smtp://127.0.0.1:{smtp_sink.port}", settings)
    assert "no STARTTLS offered" in auto.check()


# ---- RFC 2920 pipelining ------------------------------------------------------------------


def _pipelined(make_smtp_sink, **options):  # type: ignore[no-untyped-def]
    return make_smtp_sink(pipelining=True, **options)


def test_pipelining_used_when_offered_and_outcomes_unchanged(make_smtp_sink, settings) -> None:  # type: ignore[no-untyped-def]
    from mailer.transports import from_dsn
    from mailer.transports.base import Outgoing

    def rcpt(address: str, attempt: int) -> str | None:
        if address.startswith("dead"):
            return "550 5.1.1 No such user"
        if address.startswith("grey") and attempt == 1:
            return "451 4.7.1 Try later"
        return None

    sink = _pipelined(make_smtp_sink, rcpt_policy=rcpt)
    transport = from_dsn(sink.dsn, settings)
    recipients = ["ann@example.org", "dead@example.org", "grey@example.org", "bob@example.org"]
    messages = [Outgoing(recipient=r, message_id=f"<m{i}@example.org>",
                         data=f"Subject: t{i}\r\n\r\nbody {i}\r\n.starts with a dot\r\n".encode())
                for i, r in enumerate(recipients)]
    with transport:
        results = transport.send(messages)
        retry = transport.send([messages[2]])
    assert [r.status for r in results] == ["sent", "failed", "retry", "sent"]
    assert results[1].hard_bounce and not results[2].hard_bounce
    assert retry[0].status == "sent"
    assert sorted(sink.recipients()) == ["ann@example.org", "bob@example.org", "grey@example.org"]
    assert sink.connections == 1
    assert all(b"\r\n.starts with a dot" in m.data or b"\n.starts with a dot" in m.data
               for m in sink.messages)


def test_pipelining_sender_refused_and_drops(make_smtp_sink, settings) -> None:  # type: ignore[no-untyped-def]
    from mailer.transports import from_dsn
    from mailer.transports.base import Outgoing

    msg = Outgoing(recipient="ann@example.org", message_id="<x@example.org>",
                   data=b"Subject: x\r\n\r\nbody\r\n")
    refused = _pipelined(make_smtp_sink, mail_policy=lambda a, n: "553 5.7.1 Sender refused")
    with from_dsn(refused.dsn, settings) as transport:
        assert transport.send([msg])[0].status == "failed"
    assert refused.recipients() == []
    before = _pipelined(make_smtp_sink, drop_after=0, drop_mode="before_data")
    with from_dsn(before.dsn, settings) as transport:
        first = transport.send([msg])[0]
        second = transport.send([msg])[0]
    assert first.status == "retry" and second.status == "sent"
    after = _pipelined(make_smtp_sink, drop_after=0, drop_mode="after_data")
    with from_dsn(after.dsn, settings) as transport:
        assert transport.send([msg])[0].status == "ambiguous"


def test_next_envelope_goes_out_behind_the_data_and_outcomes_are_unchanged(
        make_smtp_sink, settings) -> None:  # type: ignore[no-untyped-def]
    """RFC 2920 chaining: each message's MAIL, RCPT and DATA follow the previous message's data
    in the same write, before its reply: one round trip per message instead of two. A refused
    RCPT, a refused message and a 4xx behave exactly as one command at a time."""
    from mailer.transports import from_dsn
    from mailer.transports.base import Outgoing

    def rcpt(address: str, attempt: int) -> str | None:
        return "550 5.1.1 No such user" if address.startswith("dead") else None

    def data(rcpts: list[str], attempt: int) -> str | None:
        return "552 5.3.4 Too big" if rcpts == ["big@example.org"] else None

    sink = _pipelined(make_smtp_sink, rcpt_policy=rcpt, data_policy=data, data_delay=0.05)
    recipients = ["ann@example.org", "dead@example.org", "bob@example.org", "big@example.org",
                  "cat@example.org", "dan@example.org"]
    messages = [Outgoing(recipient=r, message_id=f"<m{i}@example.org>",
                         data=f"Subject: t{i}\r\n\r\nbody {i}\r\n".encode())
                for i, r in enumerate(recipients)]
    with from_dsn(sink.dsn, settings) as transport:
        results = transport.send(messages)
    assert [r.status for r in results] == ["sent", "failed", "sent", "failed", "sent", "sent"]
    assert results[1].hard_bounce and not results[3].hard_bounce
    assert sink.recipients() == ["ann@example.org", "bob@example.org", "cat@example.org",
                                 "dan@example.org"]
    # Every accepted message but the last had the next envelope behind its data (ann's had
    # dead's, whose refused RCPT then let bob's go out on its own).
    assert [m.sent_behind for m in sink.messages] == [b"MAIL", b"MAIL", b"MAIL", b""]
    assert sink.connections == 1


def test_a_chained_envelope_is_never_mistaken_for_a_sent_message(make_smtp_sink,
                                                                 settings) -> None:  # type: ignore[no-untyped-def]
    """The connection drops after a message's data, with the next envelope behind it: the
    first is ambiguous, the second was never sent (retried on a new connection, delivered);
    and closing a connection left with a chained envelope delivers nothing of that message."""
    import time

    from mailer.transports import from_dsn
    from mailer.transports.base import Outgoing
    from mailer.transports.smtp import run_steps

    messages = [Outgoing(recipient=f"r{i}@example.org", message_id=f"<m{i}@example.org>",
                         data=f"Subject: t{i}\r\n\r\nbody {i}\r\n".encode())
                for i in range(3)]
    after = _pipelined(make_smtp_sink, drop_after=1, drop_mode="after_data")
    with from_dsn(after.dsn, settings) as transport:
        results = transport.send(messages)
    assert [r.status for r in results] == ["sent", "ambiguous", "sent"]
    assert after.recipients() == ["r0@example.org", "r2@example.org"]
    assert after.connections == 2

    sink = _pipelined(make_smtp_sink, data_delay=0.05)
    transport = from_dsn(sink.dsn + "&timeout=5", settings)
    transport.open()
    transport.upcoming = messages[1]  # (as a pool does when it has the next message)
    assert run_steps(transport.steps(messages[0])).status == "sent"
    started = time.monotonic()
    transport.close()
    assert time.monotonic() - started < 1  # (closing waits for nothing)
    assert sink.recipients() == ["r0@example.org"]
    assert [m.sent_behind for m in sink.messages] == [b"MAIL"]  # (so close() had one)


def test_pipelining_can_be_switched_off(make_smtp_sink, settings) -> None:  # type: ignore[no-untyped-def]
    from mailer.transports import from_dsn

    sink = _pipelined(make_smtp_sink)
    transport = from_dsn(sink.dsn + "&pipelining=0", settings)
    assert transport.pipelining is False  # type: ignore[attr-defined]


@pytest.mark.parametrize("ours", [False, True])
@pytest.mark.parametrize("server_says", [
    b"250 2.1.0 Ok\r\n",
    b"250 2.0.0 queued\r\n250 2.1.0 Ok\r\n250-a\r\n250 b\r\n354 go\r\n",
    b"2a0 odd\r\n",
    b"250-first\r\n250-second\r\n250 last\r\n",
    b"354 \r\n",
    b"xyz nonsense\r\n",
    b"250-continued and then the server hung up\r\n",
    b"",
    b"250 " + b"x" * 9000 + b"\r\n",
])
def test_fast_reply_reader_agrees_with_smtplib(server_says: bytes, ours: bool) -> None:
    """`getreply` (over a buffered file, or over `ReplyReader` as connections use it) gives
    smtplib's results reply after reply, a pipelined group's replies arriving together."""
    import smtplib

    from mailer.transports.smtp.replies import ReplyReader, getreply

    def read(reader: object, file: object) -> object:
        server, client = socket.socketpair()
        conn = smtplib.SMTP()
        conn.sock, conn.file = client, file(client)  # type: ignore[operator]
        server.sendall(server_says)
        server.close()
        replies: list[object] = []
        try:
            while True:
                replies.append(reader(conn))  # type: ignore[operator]
                if conn.file is None:
                    return replies
        except smtplib.SMTPResponseException as exc:
            return [*replies, ("refused", exc.smtp_code, exc.smtp_error)]
        except smtplib.SMTPServerDisconnected:
            return [*replies, "disconnected"]
        finally:
            client.close()

    ours_file = ReplyReader if ours else (lambda sock: sock.makefile("rb"))
    assert read(getreply, ours_file) == read(smtplib.SMTP.getreply,
                                              lambda sock: sock.makefile("rb"))


@pytest.mark.parametrize("limit", [-1, 5, 8193])
def test_reply_reader_reads_lines_as_a_buffered_file_does(limit: int) -> None:
    from mailer.transports.smtp.replies import ReplyReader

    stream = b"250-first\r\n250-" + b"x" * 9000 + b"\r\n250 last\r\n354 no end"

    def lines(make_reader: object) -> list[bytes]:
        server, client = socket.socketpair()
        server.sendall(stream)
        server.close()
        reader = make_reader(client)  # type: ignore[operator]
        out = []
        while line := reader.readline(limit):
            out.append(line)
        client.close()
        return out

    ours = lines(ReplyReader)
    assert ours == lines(lambda sock: sock.makefile("rb"))
    assert b"".join(ours) == stream


def test_reply_reader_says_when_a_whole_line_is_buffered() -> None:
    from mailer.transports.smtp.replies import ReplyReader

    server, client = socket.socketpair()
    with server, client:
        reader = ReplyReader(client)
        server.sendall(b"250 ok\r\n250 ok\r\n354 go")
        assert not reader.has_line()  # nothing read from the socket yet
        assert reader.readline() == b"250 ok\r\n"
        assert reader.has_line()  # the second reply came in the same read
        assert reader.readline() == b"250 ok\r\n"
        assert not reader.has_line()  # half a line: the rest must be waited for
