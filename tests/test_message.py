"""Message stage: the per-edition template, the per-recipient fill, header safety, and what
Python's own email parser reads back from the bytes we produce."""

from __future__ import annotations

import email
import email.message
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from email.message import EmailMessage
from email.policy import default as default_policy
from urllib.parse import quote

import pytest

from mailer.config import Settings
from mailer.message import MessageTemplate, new_message_id, simple_message
from mailer.mime import sanitize_header_value
from mailer.models import Article
from mailer.placeholders import Placeholders
from mailer.render import build_view, render_edition

SLOTS = Placeholders("5eed" * 8)
GREETING, UNSUBSCRIBE_URL, PREFERENCES_URL = (
    SLOTS.greeting, SLOTS.unsubscribe_url, SLOTS.preferences_url)

SENT_AT = datetime(2026, 11, 26, 7, 0, tzinfo=UTC)
UNSUB = "https://mail.example.org/unsubscribe/WzEyM10.abcDEF_123-xyz"
PREFS = "https://mail.example.org/preferences/WzEyM10.ghi?tab=topics&x=1"

HTML = (
    f"<!doctype html><html><body><p>{GREETING}</p><p>Donate £10 a month – it’s what keeps us "
    f'going.</p><a href="{UNSUBSCRIBE_URL}">Unsubscribe</a> '
    f'<a href="{PREFERENCES_URL}">Manage preferences</a></body></html>'
)
TEXT = (
    f"{GREETING}\n\nDonate £10 a month – it’s what keeps us going.\n\n"
    f"Unsubscribe: {UNSUBSCRIBE_URL}\nManage preferences: {PREFERENCES_URL}\n"
)


def build(settings: Settings, **overrides: object) -> MessageTemplate:
    values: dict[str, object] = {
        "settings": settings,
        "subject": "LabourList Daily: Thursday 26 November 2026",
        "html": HTML,
        "text": TEXT,
        "date": SENT_AT,
        "placeholders": SLOTS,
    }
    values.update(overrides)
    return MessageTemplate.build(**values)  # type: ignore[arg-type]


def fill(template: MessageTemplate, settings: Settings, **overrides: str) -> bytes:
    values = {
        "email": "sian@example.org",
        "name": "Siân",
        "unsubscribe_url": UNSUB,
        "preferences_url": PREFS,
        "message_id": new_message_id(settings, "e1.s1"),
    }
    values.update(overrides)
    return template.fill(**values)


def parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=default_policy)
    assert isinstance(msg, EmailMessage)
    return msg


def bodies(msg: EmailMessage) -> tuple[str, str]:
    text_part = msg.get_body(preferencelist=("plain",))
    html_part = msg.get_body(preferencelist=("html",))
    assert text_part is not None and html_part is not None
    return (text_part.get_content().replace("\r\n", "\n"),
            html_part.get_content().replace("\r\n", "\n"))


def assert_wire_format(data: bytes) -> None:
    """CRLF everywhere, no line over 998 octets, body lines within quoted-printable's 76."""
    assert b"\n" not in data.replace(b"\r\n", b""), "bare LF"
    assert b"\r" not in data.replace(b"\r\n", b""), "bare CR"
    head, _, body = data.partition(b"\r\n\r\n")
    for line in data.split(b"\r\n"):
        assert len(line) <= 998
    for line in body.split(b"\r\n"):
        assert len(line) <= 76, line
        # no line starts with a dot, so SMTP can send the message without dot-stuffing it
        assert not line.startswith(b"."), line
    assert data.endswith(b"--\r\n")
    assert head.isascii() and body.isascii()


# ---- headers ---------------------------------------------------------------------------------


def test_filled_message_has_every_required_header(settings: Settings) -> None:
    template = build(settings)
    message_id = new_message_id(settings, "e1.s1")
    data = fill(template, settings, message_id=message_id)
    assert_wire_format(data)
    msg = parse(data)

    assert msg["From"] == settings.from_addr
    assert msg["Reply-To"] == settings.reply_to
    assert msg["To"].addresses[0].display_name == "Siân"
    assert msg["To"].addresses[0].addr_spec == "sian@example.org"
    assert msg["Subject"] == "LabourList Daily: Thursday 26 November 2026"
    assert msg["Date"].datetime == SENT_AT
    assert msg["Message-ID"] == message_id
    assert msg["MIME-Version"] == "1.0"
    assert msg["List-Id"] == settings.list_id
    assert msg["List-Unsubscribe"] == (
        f"<{UNSUB}>, <mailto:{settings.unsubscribe_mailto}?subject=unsubscribe%20"
        "WzEyM10.abcDEF_123-xyz>"
    )
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "X-Mailer-Test" not in msg
    assert msg.get_content_type() == "multipart/alternative"
    for name in ("From", "To", "Subject", "Date", "Message-ID", "List-Unsubscribe"):
        assert len(msg.get_all(name) or []) == 1, name
    assert not msg.defects


def test_parts_are_text_then_html_quoted_printable_utf8(settings: Settings) -> None:
    msg = parse(fill(build(settings), settings))
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    for part in parts:
        assert part.get_content_charset() == "utf-8"
        assert part["Content-Transfer-Encoding"] == "quoted-printable"
        assert not part.defects
    # get_body prefers html when asked for either, and the plain part comes first
    body = msg.get_body(preferencelist=("plain", "html"))
    assert body is not None and body.get_content_type() == "text/plain"


def test_per_recipient_values_round_trip_in_both_parts(settings: Settings) -> None:
    msg = parse(fill(build(settings), settings))
    text, page = bodies(msg)
    assert text == TEXT.replace(GREETING, "Good morning, Siân").replace(
        UNSUBSCRIBE_URL, UNSUB).replace(PREFERENCES_URL, PREFS)
    assert "<p>Good morning, Siân</p>" in page
    assert f'href="{UNSUB}"' in page
    assert 'href="https://mail.example.org/preferences/WzEyM10.ghi?tab=topics&amp;x=1"' in page
    assert "£10" in page and "it’s" in page and "£10" in text and "–" in text
    for placeholder in (GREETING, UNSUBSCRIBE_URL, PREFERENCES_URL):
        assert placeholder not in text and placeholder not in page


def test_no_name_gives_plain_greeting_and_bare_address(settings: Settings) -> None:
    msg = parse(fill(build(settings), settings, name="  "))
    text, page = bodies(msg)
    assert text.startswith("Good morning\n")
    assert "<p>Good morning</p>" in page
    assert msg["To"].addresses[0].display_name == ""
    assert msg["To"].addresses[0].addr_spec == "sian@example.org"


def test_name_is_html_escaped_in_html_and_plain_in_text(settings: Settings) -> None:
    name = '<b>Eve</b> & "Co" = 1'
    msg = parse(fill(build(settings), settings, name=name))
    text, page = bodies(msg)
    assert f"Good morning, {name}" in text
    assert "Good morning, &lt;b&gt;Eve&lt;/b&gt; &amp; &quot;Co&quot; = 1" in page
    assert "<b>Eve" not in page
    assert msg["To"].addresses[0].display_name == name


def test_test_send_is_marked(settings: Settings) -> None:
    template = build(settings, test=True)
    msg = parse(fill(template, settings))
    assert msg["Subject"] == "[TEST] LabourList Daily: Thursday 26 November 2026"
    assert msg["X-Mailer-Test"] == "yes"
    assert template.subject.startswith("[TEST] ")
    assert template.common_headers()["X-Mailer-Test"] == "yes"


def test_non_ascii_and_long_headers_are_encoded_and_folded(settings: Settings) -> None:
    subject = "LabourList Daily: Siân’s £10 question – " + "and a very long subject " * 6
    name = "Dr Siân Llewellyn-Ó Súilleabháin and the Whole Family of Ynys Môn"
    data = fill(build(settings, subject=subject), settings, name=name)
    assert_wire_format(data)
    head = data.partition(b"\r\n\r\n")[0]
    in_list_unsubscribe = False
    for line in head.split(b"\r\n"):
        if not line.startswith((b" ", b"\t")):
            in_list_unsubscribe = line.startswith(b"List-Unsubscribe:")
        if not in_list_unsubscribe:  # (its URIs are never broken; each has a line of its own)
            assert len(line) <= 78, line
    msg = parse(data)
    assert msg["Subject"] == subject.strip()
    assert msg["To"].addresses[0].display_name == name


@pytest.mark.parametrize("name", [
    "Siân", "Ó Súilleabháin", "Siân O'Brien, MP", "José María García-López de la Torre y Ñúñez",
    "Siân Llewellyn-Ó Súilleabháin " * 5, "李小龍", "🌹" * 200, 'Siân "the editor" \\ Berry',
])
def test_display_names_read_back_exactly(settings: Settings, name: str) -> None:
    """Never two encoded words side by side: RFC 2047 decoders drop the space between them,
    Python's address parser keeps it; both must read the name we meant."""
    data = fill(build(settings), settings, name=name)
    assert_wire_format(data)
    expected = " ".join(name.split())[:120].strip()
    assert parse(data)["To"].addresses[0].display_name == expected


def test_long_ascii_subject_folds_at_spaces(settings: Settings) -> None:
    subject = "Today: " + " ".join(f"word{n}" for n in range(60))
    data = fill(build(settings, subject=subject), settings)
    assert b"=?" not in data.partition(b"\r\n\r\n")[0].split(b"Subject:")[1][:20]
    assert parse(data)["Subject"] == subject


def test_date_keeps_its_offset_and_naive_dates_are_refused(settings: Settings) -> None:
    bst = datetime(2026, 6, 1, 7, 0, tzinfo=timezone(timedelta(hours=1)))
    msg = parse(fill(build(settings, date=bst), settings))
    assert msg["Date"].datetime == bst
    assert str(msg["Date"]).endswith("+0100")
    with pytest.raises(ValueError):
        build(settings, date=datetime(2026, 6, 1, 7, 0))


# ---- header injection ------------------------------------------------------------------------

HEADERS = {
    "from", "to", "subject", "date", "message-id", "reply-to", "mime-version", "list-id",
    "list-unsubscribe", "list-unsubscribe-post", "content-type",
}


def test_name_cannot_add_a_header(settings: Settings) -> None:
    for name in ("Eve\r\nBcc: x@y", "Eve\nBcc: x@y", "Eve\rBcc: x@y", "Eve\u2028Bcc: x@y",
                 "Eve\x00\x1b\x85\r\n\r\nInjected body"):
        data = fill(build(settings), settings, name=name)
        assert_wire_format(data)
        msg = parse(data)
        assert {k.lower() for k in msg.keys()} == HEADERS
        assert len(msg["To"].addresses) == 1
        assert msg["To"].addresses[0].addr_spec == "sian@example.org"
        assert "\n" not in msg["To"] and "\r" not in msg["To"]


def test_subject_cannot_add_a_header(settings: Settings) -> None:
    msg = parse(fill(build(settings, subject="Hello\nBcc: x@y\r\n\r\nbody"), settings))
    assert {k.lower() for k in msg.keys()} == HEADERS
    assert msg["Subject"] == "Hello Bcc: x@y body"


def test_bad_recipient_values_are_refused_or_neutralised(settings: Settings) -> None:
    template = build(settings)
    for address in ("a@b.org\r\nBcc: c@d.org", "a@b.org, c@d.org", "<a@b.org>", "nobody",
                    "Eve <a@b.org>", "a@b@c.org"):
        with pytest.raises(ValueError):
            fill(template, settings, email=address)
    with pytest.raises(ValueError):
        fill(template, settings, unsubscribe_url="javascript:alert(1)")
    with pytest.raises(ValueError):
        fill(template, settings, message_id="no-at-sign")
    with pytest.raises(ValueError):
        fill(template, settings, message_id="<a.b@labourlist.org>\r\nBcc: x@y")
    # a line break inside a URL is neutralised (sanitised, then the space percent-encoded)
    msg = parse(fill(template, settings, unsubscribe_url=UNSUB + "\r\nBcc: x@y"))
    assert {k.lower() for k in msg.keys()} == HEADERS
    assert msg["List-Unsubscribe"].startswith(f"<{UNSUB}%20Bcc:%20x@y>")


def test_url_characters_that_could_break_out_are_percent_encoded(settings: Settings) -> None:
    msg = parse(fill(build(settings), settings,
                     unsubscribe_url='https://mail.example.org/u/a"><b>x</b> y'))
    text, page = bodies(msg)
    encoded = "https://mail.example.org/u/a%22%3E%3Cb%3Ex%3C/b%3E%20y"
    assert msg["List-Unsubscribe"].startswith(f"<{encoded}>")
    assert f'href="{encoded}"' in page and encoded in text


def test_idn_domain_is_punycoded(settings: Settings) -> None:
    msg = parse(fill(build(settings), settings, email="leser@bücher.example"))
    assert msg["To"].addresses[0].addr_spec == "leser@xn--bcher-kva.example"


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("plain", "plain"),
        ("a\r\nb", "a b"),
        ("a\n\n\nb", "a b"),
        ("  lead\ttab  ", "lead tab"),
        ("nul\x00 esc\x1b del\x7f c1\x9b", "nul esc del c1"),
        ("line\u2028sep\u2029para\x85nel", "line sep para nel"),
        ("Siân £10 ’", "Siân £10 ’"),
    ],
)
def test_sanitize_header_value(raw: str, clean: str) -> None:
    assert sanitize_header_value(raw) == clean


# ---- quoted-printable and placeholders -------------------------------------------------------


@pytest.mark.parametrize("column", range(0, 82))
def test_placeholders_are_never_split_by_soft_breaks(settings: Settings, column: int) -> None:
    """Wherever a placeholder falls on a long line, the filled value comes back intact."""
    prefix = ("é" if column % 3 == 0 else "x") * column
    text = f"{prefix}{UNSUBSCRIBE_URL}{GREETING}tail=\n{PREFERENCES_URL}\n{prefix} {GREETING} \n"
    page = f"<p>{prefix}<a href=\"{UNSUBSCRIBE_URL}\">u</a>{GREETING}</p>"
    unsub = UNSUB + "?a=1&b=" + "=" * column
    name = "Siân " + "Ō" * (column % 7)
    data = fill(build(settings, text=text, html=page), settings,
                unsubscribe_url=unsub, name=name)
    assert_wire_format(data)
    got_text, got_html = bodies(parse(data))
    greeting = f"Good morning, {name.strip()}"
    assert got_text == (f"{prefix}{unsub}{greeting}tail=\n{PREFS}\n{prefix} {greeting} \n")
    assert f'href="{unsub.replace("&", "&amp;")}"' in got_html
    assert got_html.startswith(f"<p>{prefix}<a ")
    assert f"</a>{greeting}</p>" in got_html


@pytest.mark.parametrize("column", [0, 1, 40, 70, 72, 73, 74, 75, 76, 77, 150])
def test_dots_that_start_lines_are_encoded_so_no_dot_stuffing_is_needed(
    settings: Settings, column: int
) -> None:
    """CSS (".mj-column {"), an ellipsis, a lone "." line: wherever a dot lands at the start
    of an encoded line, hard or soft, it is written "=2E" and reads back unchanged."""
    filler = "é" * (column // 2) + "x" * (column - column // 2)
    text = (f".starts\n.\n...\n{filler}.after {filler}\n{'.' * 200}\n"
            f"{filler}{GREETING}.tail\n{'=.' * 90}\n")
    page = f".mj-column {{ width:100% }}\n<p>{filler}.{filler}.{filler}</p>\n{'.' * 160}\n"
    dotted_url = "https://mail.example.org/" + "." * 120
    data = fill(build(settings, text=text, html=page), settings, name="." + "a" * column,
                unsubscribe_url=UNSUB, preferences_url=dotted_url)
    assert_wire_format(data)
    assert b"\r\n." not in data
    got_text, got_html = bodies(parse(data))
    greeting = "Good morning, ." + "a" * column
    assert got_text == text.replace(GREETING, greeting)
    assert got_html == page


@pytest.mark.parametrize("url", [
    "https://mail.labourlist.org/unsubscribe/WzFd.abc-_", "http://h:8080/p?a=1&b=%20#f",
    "https://x.org/(a)[b]*+,;'!~", "https://x.org/a b", "https://x.org/<a>", "https://x.org/\"",
    "https://x.org/é", "https://x.org/a\r\nBcc: x", "https://x.org/{a}|^`", "https://a@b/",
])
def test_clean_url_fast_path_agrees_with_the_full_steps(url: str) -> None:
    from mailer.mime import clean_url

    expected = quote(sanitize_header_value(url), safe="!#$%&'()*+,-./:;=?@[]_~")
    assert clean_url(url) == expected


@pytest.mark.parametrize("name", [
    "Reader 1", "Siân", " Reader", "Reader ", "A  B", "a\tb", "%%GREETING%%", "x" * 250,
    "O'Brien-Smith", "a\x7fb", "",
])
def test_clean_name_fast_path_agrees_with_the_full_steps(name: str) -> None:
    import unicodedata

    from mailer.mime import clean_name

    slow = " ".join(unicodedata.normalize("NFC", sanitize_header_value(name)).split())
    slow = slow[:200].strip()  # a name is never scanned for slots: nothing to remove
    assert clean_name(name) == slow


def test_long_fill_values_keep_body_lines_short(settings: Settings) -> None:
    long_url = "https://mail.example.org/unsubscribe/" + "T=" * 450
    data = fill(build(settings), settings, unsubscribe_url=long_url, name="Ŵ" * 200,
                preferences_url=long_url)
    assert_wire_format(data)  # body lines <= 76 even with ~1 KB values
    text, page = bodies(parse(data))
    assert long_url in text and long_url in page
    assert "Good morning, " + "Ŵ" * 200 in text
    # a URL too long for one header line is refused, not folded into something broken
    with pytest.raises(ValueError):
        fill(build(settings), settings, unsubscribe_url=long_url + "x" * 100)


def test_real_edition_round_trips(settings: Settings) -> None:
    articles = [
        Article(guid=f"g{n}", title=f"Labour’s story {n} & more", section="News",
                link=f"https://labourlist.org/2026/11/story-{n}/", author="Siân Berry",
                summary_text="An excerpt with £10 and “quotes”.",
                published_at=SENT_AT, image_url="")
        for n in range(25)
    ]
    view = build_view(date(2026, 11, 26), articles, settings, editor_note="Morning – all.")
    rendered = render_edition(view, settings)
    slots = rendered.placeholders
    assert slots is not None
    template = MessageTemplate.build(settings=settings, subject=view.subject,
                                     html=rendered.html, text=rendered.text, date=SENT_AT,
                                     placeholders=slots)
    data = fill(template, settings)
    assert_wire_format(data)
    text, page = bodies(parse(data))
    assert text == rendered.text.replace(slots.greeting, "Good morning, Siân").replace(
        slots.unsubscribe_url, UNSUB).replace(slots.preferences_url, PREFS)
    assert page.strip() == rendered.html.replace(slots.greeting, "Good morning, Siân").replace(
        slots.unsubscribe_url, UNSUB).replace(
        slots.preferences_url, PREFS.replace("&", "&amp;")).strip()
    for a in view.articles:
        assert a.url in text
    # Gmail's clip applies to the HTML as sent: check the encoded part too
    html_part = data.split(b"Content-Type: text/html")[1]
    assert len(html_part) < 102 * 1000


# ---- per-recipient identity, API-provider views ----------------------------------------------


def test_each_fill_has_its_own_message_id(settings: Settings) -> None:
    template = build(settings)
    first = parse(fill(template, settings, message_id=new_message_id(settings, "e1.s1")))
    second = parse(fill(template, settings, message_id=new_message_id(settings, "e1.s1")))
    assert first["Message-ID"] != second["Message-ID"]
    for msg in (first, second):
        assert re.fullmatch(r"<e1\.s1\.[0-9a-f]{20}@labourlist\.org>", msg["Message-ID"])


def test_new_message_id_is_unique_and_well_formed(settings: Settings) -> None:
    ids = {new_message_id(settings, "e 1/<s>\r\n") for _ in range(2000)}
    assert len(ids) == 2000
    assert all(re.fullmatch(r"<[A-Za-z0-9._-]+@labourlist\.org>", i) for i in ids)


def test_fields_and_common_headers_for_api_providers(settings: Settings) -> None:
    template = build(settings)
    message_id = new_message_id(settings, "e1.s9")
    fields = template.fields(email="sian@example.org", name="Siân\r\nBcc: x@y",
                             unsubscribe_url=UNSUB, preferences_url=PREFS,
                             message_id=message_id)
    assert set(fields) == {"to", "greeting", "unsubscribe_url", "preferences_url", "click",
                           "message_id", "list_unsubscribe"}
    assert fields["to"] == '"Siân Bcc: x@y" <sian@example.org>'
    assert fields["greeting"] == "Good morning, Siân Bcc: x@y"
    assert fields["unsubscribe_url"] == UNSUB and fields["preferences_url"] == PREFS
    assert fields["message_id"] == message_id
    assert fields["list_unsubscribe"] == template.list_unsubscribe(UNSUB) == (
        f"<{UNSUB}>, <mailto:unsubscribe@labourlist.org?subject=unsubscribe%20"
        "WzEyM10.abcDEF_123-xyz>"
    )
    for value in fields.values():
        assert "\r" not in value and "\n" not in value
    assert template.common_headers() == {
        "List-Id": settings.list_id,
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "Reply-To": settings.reply_to,
    }
    assert GREETING in template.html and UNSUBSCRIBE_URL in template.text
    text, page = template.personalise(name="<Eve>", unsubscribe_url=UNSUB, preferences_url=PREFS)
    assert "Good morning, <Eve>" in text and "Good morning, &lt;Eve&gt;" in page


def test_fill_is_a_join_not_an_email_message(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Smoke test for the hot path: a thousand fills, with EmailMessage made unusable."""
    template = build(settings)

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("fill must not build an EmailMessage")

    monkeypatch.setattr(email.message.Message, "__init__", forbidden)
    sizes = set()
    for n in range(1000):
        data = template.fill(email=f"reader{n}@example.org", name=f"Reader {n}",
                             unsubscribe_url=f"{UNSUB}{n}", preferences_url=f"{PREFS}{n}",
                             message_id=new_message_id(settings, f"e1.s{n}"))
        sizes.add(len(data))
        assert f"reader{n}@example.org".encode() in data
    assert len(sizes) > 1


# ---- one-off messages ------------------------------------------------------------------------


def test_simple_message(settings: Settings) -> None:
    message_id, data = simple_message(
        settings, to="Siân <sian@example.org>", subject="Please confirm\r\nBcc: x@y",
        text="Confirm: https://mail.example.org/confirm/abc – £10 " + "long " * 40,
        html="<p>Confirm: <a href=\"https://mail.example.org/confirm/abc\">link</a> £10</p>",
        headers={"X-Mailer-Kind": "confirm\nBcc: y@z"},
    )
    assert_wire_format(data)
    msg = parse(data)
    assert msg["Message-ID"] == message_id
    assert msg["Subject"] == "Please confirm Bcc: x@y"
    assert msg["X-Mailer-Kind"] == "confirm Bcc: y@z"
    assert "Bcc" not in msg
    assert msg["To"].addresses[0].display_name == "Siân"
    assert msg["Date"] is not None and msg["From"] == settings.from_addr
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(p["Content-Transfer-Encoding"] == "quoted-printable" for p in parts)
    text, page = bodies(msg)
    assert "£10" in text and "https://mail.example.org/confirm/abc" in page


def test_simple_message_text_only_and_bad_header_name(settings: Settings) -> None:
    _, data = simple_message(settings, to="a@example.org", subject="Alert", text="Plain only")
    msg = parse(data)
    assert msg.get_content_type() == "text/plain"
    assert msg["Content-Transfer-Encoding"] == "quoted-printable"
    with pytest.raises(ValueError):
        simple_message(settings, to="a@example.org", subject="x", text="y",
                       headers={"Bad Name:": "v"})


@pytest.mark.parametrize("address", [
    "reader1@example.org", "o'brien+news@sub.example.co.uk", "a@b", "Reader <a@b.org>",
    "a b@c.org", "a@b.org\r\nBcc: x@y.org", "a@@b.org", "@b.org", "a@", "é@b.org", "a@bü.org",
    " a@b.org ", "a@b.org\x00", "x" * 320 + "@b.org", "a;b@c.org",
])
def test_clean_address_fast_path_agrees_with_the_full_steps(address: str) -> None:
    from mailer import mime

    def slow(email: str) -> str:
        email = sanitize_header_value(email)
        local, at, domain = email.rpartition("@")
        if (not at or not local or not domain or mime._ADDR_BAD_RE.search(email)
                or "@" in local or not local.isascii()):
            raise ValueError(email)
        addr = f"{local}@{mime.idna(domain)}"
        if len(addr) > mime.MAX_ADDRESS:
            raise ValueError(email)
        return addr

    assert _outcome(mime.clean_address, address) == _outcome(slow, address)


@pytest.mark.parametrize("message_id", [
    "<20261126.1.abcdef@labourlist.org>", "<a@b>", "a@b", "<a b@c>", "<a@b>\r\nBcc: x",
    "<é@b>", "<" + "x" * 300 + "@b>", "<a@b@c>", " <a@b> ", "<a@b>\x7f",
])
def test_clean_message_id_fast_path_agrees_with_the_full_steps(message_id: str) -> None:
    from mailer import mime

    def slow(value: str) -> str:
        value = sanitize_header_value(value)
        if not value.startswith("<"):
            value = f"<{value}>"
        if not value.isascii() or not mime._MSGID_RE.fullmatch(value) or len(value) > 250:
            raise ValueError(value)
        return value

    assert _outcome(mime.clean_message_id, message_id) == _outcome(slow, message_id)


@pytest.mark.parametrize("header", ["To", "Reply-To"])
def test_a_plain_name_is_folded_only_past_78_characters(header: str) -> None:
    """Names of every length around the limit: one line exactly while it fits (the short
    cut), folded at spaces into lines of at most 78 once it does not, never altered."""
    from mailer.mime import encode_mailbox

    addr = "reader12345@example.org"
    for length in range(1, 90):
        name = ("Ann Lee " * 12)[:length].strip() or "A"
        value = encode_mailbox(name, addr, header)
        lines = f"{header}: {value}".split("\r\n")
        assert value.replace("\r\n ", " ") == f"{name} <{addr}>"
        assert (len(lines) == 1) == (len(header) + len(name) + len(addr) + 5 <= 78), length
        assert all(len(line) <= 78 for line in lines), (length, lines)


def _outcome(clean: Callable[[str], str], value: str) -> str:
    """What a clean-up step makes of `value`, or "ValueError" when it refuses it."""
    try:
        return clean(value)
    except ValueError:
        return "ValueError"


def test_a_long_link_is_broken_as_the_general_rewrap_breaks_it() -> None:
    """`_qp_value` makes the one soft break most links need itself; it must be exactly what
    `_rewrap` makes, for every length and wherever a dot falls (a line must never start with
    one: SMTP would take it for the end of the data)."""
    from mailer.mime import CRLF, _qp_value, _rewrap

    for length in range(1, 200):
        for dot in (None, 0, 1, 71, 72, 73, length - 1):
            chars = [chr(ord("a") + i % 26) for i in range(length)]
            if dot is not None and 0 < dot < length:
                chars[dot] = "."
            value = "h" + "".join(chars)
            encoded = value.encode()
            expected = encoded if len(encoded) <= 75 else _rewrap(encoded, 75, CRLF)
            assert _qp_value(value) == expected
            assert b"\n." not in expected
