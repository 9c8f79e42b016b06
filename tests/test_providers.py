"""Provider transports against local servers that speak each provider's documented API.

No `requests` or boto3 patching: the fakes in tests/support/providers.py check credentials and
request shapes, apply substitutions the way the provider would and record what each recipient
would receive. Messages are built by `MessageTemplate.fill` / `.fields`, as the dispatcher
builds them.
"""

from __future__ import annotations

import html
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mailer.app import App
from mailer.config import Settings
from mailer.errors import TransportError
from mailer.message import MessageTemplate
from mailer.placeholders import Placeholders
from mailer.transports import from_dsn
from mailer.transports.base import Outgoing, Result, Transport
from mailer.transports.http import SendStopped, retry_after
from tests.support.providers import (
    FakeMailgun,
    FakePostmark,
    FakeProvider,
    FakeSendGrid,
    FakeSes,
    running,
)

ONE_CLICK = "List-Unsubscribe=One-Click"


# ---- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture
def settings() -> Settings:
    return Settings(from_addr="LabourList Daily <daily@labourlist.org>",
                    reply_to="editor@labourlist.org",
                    list_id="LabourList Daily <daily.labourlist.org>")


@pytest.fixture
def template(settings: Settings) -> MessageTemplate:
    slots = Placeholders.new()
    body = (f"<p>{slots.greeting}</p><p>Rishi &amp; Keir: 50% of the story</p>"
            f'<p><a href="{slots.unsubscribe_url}">Unsubscribe</a> · '
            f'<a href="{slots.preferences_url}">Preferences</a></p>')
    text = (f"{slots.greeting}\n\nRishi & Keir: 50% of the story\n\n"
            f"Unsubscribe: {slots.unsubscribe_url}\nPreferences: {slots.preferences_url}\n")
    return MessageTemplate.build(settings=settings, subject="LabourList Daily: Thursday",
                                 html=body, text=text,
                                 date=datetime(2026, 11, 26, 7, tzinfo=UTC), placeholders=slots)


def unsubscribe_url(n: int) -> str:
    return f"https://mail.example.org/unsubscribe/tok-{n}?a=1&b=2"


def make_outgoing(template: MessageTemplate, n: int, address: str | None = None,
                  name: str | None = None, *, attach: bool = True) -> Outgoing:
    """One message as the dispatcher builds it (full bytes, fields and, when `attach`, the
    shared template for substitution-based providers)."""
    kwargs = dict(
        email=address or f"reader{n}@example.org",
        name=f"Reader {n}" if name is None else name,
        unsubscribe_url=unsubscribe_url(n),
        preferences_url=f"https://mail.example.org/preferences/tok-{n}",
        message_id=f"<edition-1.{n}@daily.labourlist.org>",
    )
    message = Outgoing(recipient=kwargs["email"], message_id=kwargs["message_id"],
                       data=template.fill(**kwargs), fields=template.fields(**kwargs),
                       delivery_id=n)
    if attach:
        message.template = template  # type: ignore[attr-defined]
    return message


def audience(template: MessageTemplate, n: int, *, attach: bool = True) -> list[Outgoing]:
    return [make_outgoing(template, i, attach=attach) for i in range(n)]


def statuses(results: list[Result]) -> list[str]:
    return [r.status for r in results]


class Waits:
    """Replaces a transport's sleep: records the waits instead of sleeping."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def transport_for(fake: FakeProvider, settings: Settings, provider: str,
                  **options: str) -> Transport:
    query = "&".join(f"{k}={v}" for k, v in {"endpoint": fake.url, **options}.items())
    dsn = {
        "postmark": "postmark+api://pm-token@default",
        "sendgrid": "sendgrid+api://SG.test-key@default",
        "mailgun": "mailgun+api://mg-key:mg.labourlist.org@default",
        "ses": "ses+api://AKIDFAKE:fake-secret@default?region=eu-west-2",
    }[provider]
    dsn += ("&" if "?" in dsn else "?") + query
    transport = from_dsn(dsn, settings)
    transport.sleep = Waits()  # type: ignore[attr-defined]
    return transport


FAKES = {"postmark": FakePostmark, "sendgrid": FakeSendGrid, "mailgun": FakeMailgun,
         "ses": FakeSes}
SEND_PATH = {"postmark": "/email/batch", "sendgrid": "/v3/mail/send",
             "mailgun": "/messages", "ses": "/v2/email/outbound-emails"}
BATCH = {"postmark": 500, "sendgrid": 1000, "mailgun": 1000, "ses": 1}


@pytest.fixture(params=["postmark", "sendgrid", "mailgun", "ses"])
def provider(request: pytest.FixtureRequest) -> Iterator[tuple[str, FakeProvider]]:
    with running(FAKES[request.param]) as fake:
        yield request.param, fake


def assert_received_as_sent(fake: FakeProvider, messages: list[Outgoing]) -> None:
    """Each recipient got exactly one message, with their own unsubscribe headers, links and
    Message-ID (where the API lets us set it)."""
    counts = Counter(fake.recipients())
    assert set(counts) == {m.recipient for m in messages}
    assert set(counts.values()) == {1}
    for message in messages:
        got = fake.delivered[message.recipient][0]
        assert got.header("List-Unsubscribe") == message.fields["list_unsubscribe"]
        assert got.header("List-Unsubscribe-Post") == ONE_CLICK
        assert got.header("List-Id") == "LabourList Daily <daily.labourlist.org>"
        assert got.header("Message-ID") == message.message_id
        url = message.fields["unsubscribe_url"]
        assert url in got.text and html.escape(url) in got.html
        assert message.fields["greeting"] in got.text
        assert got.subject == "LabourList Daily: Thursday"


# ---- 2,500 recipients through each provider ------------------------------------------------


@pytest.mark.slow
def test_2500_recipients_land_in_provider_sized_batches(
        provider: tuple[str, FakeProvider], settings: Settings,
        template: MessageTemplate) -> None:
    name, fake = provider
    # (SES takes one message a call: 300 calls say as much as 2,500, in an eighth the time)
    n = 300 if name == "ses" else 2500
    messages = audience(template, n)
    transport = transport_for(fake, settings, name)
    assert transport.max_batch == BATCH[name]
    with transport:
        results = transport.send(messages)
    assert statuses(results) == ["sent"] * n
    assert all(r.provider_id for r in results)
    sizes = fake.batch_sizes(SEND_PATH[name])
    expected = {"postmark": [500] * 5, "sendgrid": [1000, 1000, 500],
                "mailgun": [1000, 1000, 500], "ses": [1] * 300}[name]
    assert sizes == expected
    assert_received_as_sent(fake, messages)


def test_dispatcher_sized_calls_and_names_with_punctuation(
        provider: tuple[str, FakeProvider], settings: Settings,
        template: MessageTemplate) -> None:
    """The dispatcher calls send() with at most max_batch messages; names that need quoting
    and non-ASCII names reach the provider intact."""
    name, fake = provider
    messages = [make_outgoing(template, 0, name="O'Neill, Siân"),
                make_outgoing(template, 1, name='Tom "The Quill" Belger'),
                make_outgoing(template, 2, name="")]
    transport = transport_for(fake, settings, name)
    with transport:
        results = [r for i in range(0, 3, transport.max_batch)
                   for r in transport.send(messages[i:i + transport.max_batch])]
    assert statuses(results) == ["sent"] * 3
    assert_received_as_sent(fake, messages)
    to = fake.delivered["reader0@example.org"][0].to
    assert "Siân" in to or "=?utf-8?" in to.lower()


def test_messages_without_the_template_are_parsed_from_their_bytes(
        provider: tuple[str, FakeProvider], settings: Settings,
        template: MessageTemplate) -> None:
    """The slow path: no shared template attached, each message sent from its own bytes."""
    name, fake = provider
    messages = audience(template, 3, attach=False)
    with transport_for(fake, settings, name) as transport:
        assert statuses(transport.send(messages)) == ["sent"] * 3
    assert_received_as_sent(fake, messages)


# ---- mixed outcomes in one batch ---------------------------------------------------------------


def test_postmark_batch_with_mixed_error_codes(settings: Settings,
                                                template: MessageTemplate) -> None:
    with running(FakePostmark) as fake:
        messages = audience(template, 6)
        messages[1] = make_outgoing(template, 1, "inactive1@example.org")
        messages[4] = make_outgoing(template, 4, "invalid4@example.org")
        with transport_for(fake, settings, "postmark") as transport:
            results = transport.send(messages)
        assert statuses(results) == ["sent", "failed", "sent", "sent", "failed", "sent"]
        assert results[1].hard_bounce and results[1].suppress_reason == "bounced"
        assert "406" in results[1].error
        assert not results[4].hard_bounce and "300" in results[4].error
        assert len(fake.calls) == 1
        assert sorted(fake.recipients()) == sorted(
            m.recipient for i, m in enumerate(messages) if i not in (1, 4))
        sent = fake.delivered["reader0@example.org"][0]
        assert sent.extra["stream"] == "broadcast"
        assert sent.extra["metadata"] == {"delivery_id": "0"}
        assert sent.header("Reply-To") == "editor@labourlist.org"


def test_postmark_batches_are_bounded_by_size_too(settings: Settings,
                                                  template: MessageTemplate,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Every Postmark message carries the whole edition: a heavy one must not make a 500-message
    call pass the API's 50 MB limit."""
    import mailer.transports.postmark as postmark

    messages = audience(template, 25)
    budget = sum(len(m.data) for m in messages[:10])
    monkeypatch.setattr(postmark, "MAX_BATCH_BYTES", budget)
    with running(FakePostmark) as fake:
        with transport_for(fake, settings, "postmark") as transport:
            assert statuses(transport.send(messages)) == ["sent"] * 25
        sizes = fake.batch_sizes("/email/batch")
    assert sizes[0] == 10 and sum(sizes) == 25 and len(sizes) == 3
    start = 0
    for size in sizes:
        assert sum(len(m.data) for m in messages[start:start + size]) <= budget
        start += size


def test_sendgrid_refused_personalizations_fail_alone_the_rest_is_resent(
        settings: Settings, template: MessageTemplate) -> None:
    with running(FakeSendGrid) as fake:
        messages = audience(template, 5)
        messages[2] = make_outgoing(template, 2, "invalid2@example.org")
        with transport_for(fake, settings, "sendgrid") as transport:
            results = transport.send(messages)
        assert statuses(results) == ["sent", "sent", "failed", "sent", "sent"]
        assert "valid address" in results[2].error
        assert [c.status for c in fake.calls] == [400, 202]
        assert_received_as_sent(fake, [m for i, m in enumerate(messages) if i != 2])
        got = fake.delivered["reader0@example.org"][0]
        assert got.extra["tracking"] == {"subscription_tracking": {"enable": False}}
        assert got.extra["custom_args"] == {"delivery_id": "0"}


def test_sendgrid_duplicate_address_goes_in_a_second_call(settings: Settings,
                                                          template: MessageTemplate) -> None:
    with running(FakeSendGrid) as fake:
        messages = [make_outgoing(template, 0), make_outgoing(template, 1),
                    make_outgoing(template, 2, "READER0@example.org")]
        with transport_for(fake, settings, "sendgrid") as transport:
            assert statuses(transport.send(messages)) == ["sent"] * 3
        assert fake.batch_sizes("/v3/mail/send") == [2, 1]


def test_mailgun_finds_the_refused_address_by_halving(settings: Settings,
                                                      template: MessageTemplate) -> None:
    with running(FakeMailgun) as fake:
        messages = audience(template, 16)
        messages[11] = make_outgoing(template, 11, "invalid11@example.org")
        with transport_for(fake, settings, "mailgun") as transport:
            results = transport.send(messages)
        assert statuses(results) == ["sent"] * 11 + ["failed"] + ["sent"] * 4
        assert_received_as_sent(fake, [m for i, m in enumerate(messages) if i != 11])
        assert sum(fake.batch_sizes("/messages")) == 15
        assert fake.delivered["reader3@example.org"][0].extra["v"] == {"v:delivery_id": "3"}


def test_ses_unverified_recipient_fails_alone(settings: Settings,
                                              template: MessageTemplate) -> None:
    with running(FakeSes) as fake:
        messages = audience(template, 3)
        messages[1] = make_outgoing(template, 1, "unverified1@example.org")
        with transport_for(fake, settings, "ses") as transport:
            results = transport.send(messages)
        assert statuses(results) == ["sent", "failed", "sent"]
        assert "MessageRejected" in results[1].error and not results[1].hard_bounce
        # Raw MIME: our message arrived byte for byte.
        assert fake.raw == [messages[0].data, messages[2].data]


# ---- 429, 500, 401 -------------------------------------------------------------------------------


def rate_limited(name: str, seconds: int) -> tuple[int, Any, dict[str, str]]:
    if name == "ses":
        return FakeSes.error(429, "TooManyRequestsException", "Maximum sending rate exceeded.")
    if name == "sendgrid":
        return 429, {"errors": [{"message": "too many requests"}]}, {
            "X-RateLimit-Reset": str(int(time.time()) + seconds)}
    return 429, {"ErrorCode": 429, "Message": "Rate limit exceeded"}, {
        "Retry-After": str(seconds)}


def test_429_is_waited_out_honouring_retry_after(provider: tuple[str, FakeProvider],
                                                 settings: Settings,
                                                 template: MessageTemplate) -> None:
    name, fake = provider
    fake.fail_next(*rate_limited(name, 3))
    messages = audience(template, 4 if name != "ses" else 1)
    transport = transport_for(fake, settings, name)
    with transport:
        assert statuses(transport.send(messages)) == ["sent"] * len(messages)
    waits = transport.sleep.waits  # type: ignore[attr-defined]
    assert len(waits) == 1
    if name == "ses":
        assert waits[0] == 1.0  # SES gives no Retry-After: our backoff
    else:
        assert 1.5 <= waits[0] <= 3.0
    assert_received_as_sent(fake, messages)


def test_429_with_a_long_retry_after_hands_the_batch_back(provider: tuple[str, FakeProvider],
                                                          settings: Settings,
                                                          template: MessageTemplate) -> None:
    name, fake = provider
    fake.fail_next(*rate_limited(name, 600), times=10)
    transport = transport_for(fake, settings, name, max_wait="5")
    messages = audience(template, 3 if name != "ses" else 1)
    with transport:
        results = transport.send(messages)
    assert statuses(results) == ["retry"] * len(messages)
    assert sum(transport.sleep.waits) <= 5  # type: ignore[attr-defined]
    assert fake.recipients() == []


def server_error(name: str) -> tuple[int, Any, dict[str, str]]:
    if name == "ses":
        return FakeSes.error(500, "InternalFailure", "internal error")
    return 500, {"message": "internal error"}, {}


def test_500_is_retried_then_sent(provider: tuple[str, FakeProvider], settings: Settings,
                                  template: MessageTemplate) -> None:
    name, fake = provider
    fake.fail_next(*server_error(name), times=2)
    messages = audience(template, 3 if name != "ses" else 1)
    transport = transport_for(fake, settings, name)
    with transport:
        assert statuses(transport.send(messages)) == ["sent"] * len(messages)
    assert transport.sleep.waits == [1.0, 2.0]  # type: ignore[attr-defined]
    assert_received_as_sent(fake, messages)


def test_persistent_500_becomes_retry_results(provider: tuple[str, FakeProvider],
                                              settings: Settings,
                                              template: MessageTemplate) -> None:
    name, fake = provider
    fake.fail_next(*server_error(name), times=20)
    messages = audience(template, 2 if name != "ses" else 1)
    with transport_for(fake, settings, name) as transport:
        results = transport.send(messages)
    assert statuses(results) == ["retry"] * len(messages)
    assert all("500" in r.error or "InternalFailure" in r.error for r in results)


def test_401_stops_the_send_with_check_your_api_key(provider: tuple[str, FakeProvider],
                                                    settings: Settings,
                                                    template: MessageTemplate) -> None:
    name, fake = provider
    bad = {"postmark": "postmark+api://wrong@default",
           "sendgrid": "sendgrid+api://SG.wrong@default",
           "mailgun": "mailgun+api://wrong:mg.labourlist.org@default",
           "ses": "ses+api://AKIDWRONG:secret@default?region=eu-west-2"}[name]
    sep = "&" if "?" in bad else "?"
    transport = from_dsn(f"{bad}{sep}endpoint={fake.url}", settings)
    with transport, pytest.raises(SendStopped, match="check your API key") as info:
        transport.send(audience(template, 2 if name != "ses" else 1))
    assert getattr(info.value, "stop_send", False)
    assert isinstance(info.value, TransportError)
    assert fake.recipients() == []
    with pytest.raises(TransportError, match="check your API key"):
        transport.check()


def test_a_stop_after_an_accepted_batch_keeps_its_results(settings: Settings,
                                                          template: MessageTemplate) -> None:
    """Postmark accepts the first 500 then the token is revoked: the 500 are reported sent,
    the rest retry, and the next send() raises the stop."""
    with running(FakePostmark) as fake:
        messages = audience(template, 700)
        transport = transport_for(fake, settings, "postmark")
        original = fake.handle

        def revoke_after_first(request: Any) -> Any:
            if len(fake.calls) >= 1:
                fake.token = "revoked"
            return original(request)

        fake.handle = revoke_after_first  # type: ignore[method-assign]
        with transport:
            results = transport.send(messages)
            assert statuses(results) == ["sent"] * 500 + ["retry"] * 200
            with pytest.raises(SendStopped, match="check your API key"):
                transport.send(messages[500:])
        assert len(fake.recipients()) == 500


def test_no_answer_after_sending_is_ambiguous_never_resent(settings: Settings,
                                                           template: MessageTemplate) -> None:
    with running(FakePostmark) as fake:
        fake.fail_next(200, [], delay=1.5)
        transport = transport_for(fake, settings, "postmark", timeout="0.5")
        with transport:
            results = transport.send(audience(template, 3))
        assert statuses(results) == ["ambiguous"] * 3
        assert transport.sleep.waits == []  # type: ignore[attr-defined]
        assert len(fake.calls) == 1


def test_unreachable_provider_is_a_safe_retry(settings: Settings,
                                              template: MessageTemplate) -> None:
    fake = FakePostmark().start()
    url = fake.url
    fake.stop()
    transport = from_dsn(f"postmark+api://pm-token@default?endpoint={url}&max_wait=3",
                         settings)
    transport.sleep = Waits()  # type: ignore[attr-defined]
    with transport:
        results = transport.send(audience(template, 2))
    assert statuses(results) == ["retry", "retry"]
    assert "unreachable" in results[0].error


def test_postmark_unverified_sender_stops_the_send(settings: Settings,
                                                   template: MessageTemplate) -> None:
    with running(FakePostmark) as fake:
        answer = [{"ErrorCode": 300, "Message": "Invalid 'From' address: 'daily@labourlist.org'"
                   " is not a verified sender signature.", "To": "x"}] * 2
        fake.fail_next(200, answer)
        with transport_for(fake, settings, "postmark") as transport, \
                pytest.raises(SendStopped, match="sender"):
            transport.send(audience(template, 2))


def test_ses_daily_quota_stops_and_rate_limit_retries(settings: Settings,
                                                      template: MessageTemplate) -> None:
    with running(FakeSes) as fake:
        fake.fail_next(*FakeSes.error(400, "LimitExceededException",
                                      "Daily message quota exceeded."))
        with transport_for(fake, settings, "ses") as transport, \
                pytest.raises(SendStopped, match="daily sending quota"):
            transport.send(audience(template, 1))
        fake.fail_next(*FakeSes.error(429, "TooManyRequestsException",
                                      "Maximum sending rate exceeded."), times=2)
        transport = transport_for(fake, settings, "ses")
        with transport:
            assert statuses(transport.send(audience(template, 1))) == ["sent"]
        assert transport.sleep.waits == [1.0, 2.0]  # type: ignore[attr-defined]


def test_ses_configuration_set_and_tags(settings: Settings, template: MessageTemplate) -> None:
    with running(FakeSes) as fake:
        with transport_for(fake, settings, "ses", configuration_set="daily") as transport:
            transport.send([make_outgoing(template, 7)])
        got = fake.delivered["reader7@example.org"][0]
        assert got.extra == {"configuration_set": "daily",
                             "tags": [{"Name": "delivery_id", "Value": "7"}]}


# ---- check, DSNs ------------------------------------------------------------------------------


def test_check_uses_each_providers_credential_endpoint(provider: tuple[str, FakeProvider],
                                                       settings: Settings) -> None:
    name, fake = provider
    summary = transport_for(fake, settings, name).check()
    assert summary.startswith(name) and "ok" in summary
    assert fake.recipients() == []
    assert all(c.method == "GET" for c in fake.calls)


def test_postmark_check_refuses_an_unknown_stream(settings: Settings) -> None:
    with running(FakePostmark) as fake:
        with pytest.raises(TransportError, match="422"):
            transport_for(fake, settings, "postmark", stream="nope").check()
        assert "warning" in transport_for(fake, settings, "postmark", stream="outbound").check()


def test_cli_transports_check(tmp_path: Path, settings: Settings) -> None:
    from mailer.cli import cli

    with running(FakeSendGrid) as fake:
        runner = CliRunner()
        env = {"MAILER_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
               "MAILER_DSN": f"sendgrid+api://SG.test-key@default?endpoint={fake.url}"}
        result = runner.invoke(cli, ["transports", "check"], env=env)
        assert result.exit_code == 0, result.output
        assert "mail.send allowed" in result.output and "SG.test-key" not in result.output
        env["MAILER_DSN"] = f"sendgrid+api://SG.wrong@default?endpoint={fake.url}"
        result = runner.invoke(cli, ["transports", "check"], env=env)
        assert result.exit_code == 1 and "check your API key" in result.output
        assert fake.recipients() == []


@pytest.mark.parametrize(("dsn", "base"), [
    ("postmark+api://t@default", "https://api.postmarkapp.com"),
    ("sendgrid+api://k@default", "https://api.sendgrid.com"),
    ("mailgun+api://k:mg.example.org@default", "https://api.mailgun.net"),
    ("mailgun+api://k:mg.example.org@default?region=eu", "https://api.eu.mailgun.net"),
    ("mailgun+api://k:mg.example.org@default?region=eu&endpoint=http://127.0.0.1:9/",
     "http://127.0.0.1:9"),
])
def test_dsn_base_urls(dsn: str, base: str, settings: Settings) -> None:
    assert from_dsn(dsn, settings).base_url == base  # type: ignore[attr-defined]


@pytest.mark.parametrize("dsn", [
    "postmark+api://@default",
    "postmark+api://t@default?strem=broadcast",
    "sendgrid+api://k@default?endpoint=ftp://x",
    "mailgun+api://k@default",
    "mailgun+api://k:d@default?region=mars",
    "ses+api://id@default?region=eu-west-2",
])
def test_bad_provider_dsns_fail_at_construction(dsn: str, settings: Settings) -> None:
    with pytest.raises(TransportError):
        from_dsn(dsn, settings)


def test_retry_after_forms() -> None:
    class R:
        def __init__(self, headers: dict[str, str]) -> None:
            self.headers = headers

    now = 1_800_000_000.0
    assert retry_after(R({"Retry-After": "7"}), now) == 7  # type: ignore[arg-type]
    assert retry_after(R({"Retry-After": "Fri, 15 Jan 2027 08:00:10 GMT"}),  # type: ignore[arg-type]
                       datetime(2027, 1, 15, 8, 0, tzinfo=UTC).timestamp()) == 10
    assert retry_after(R({"X-RateLimit-Reset": str(int(now) + 12)}), now) == 12  # type: ignore[arg-type]
    assert retry_after(R({}), now) is None  # type: ignore[arg-type]


# ---- end to end: the real pipeline through Postmark ---------------------------------------------


def test_run_send_through_fake_postmark_records_every_outcome(app: App,
                                                              tmp_path: Path) -> None:
    from sqlalchemy import select

    from mailer import ledger
    from mailer.models import BOUNCED, Delivery, Subscriber
    from mailer.pipeline import run_send
    from mailer.subscribers import add
    from tests.support.seed import seed_subscribers, with_feed

    with running(FakePostmark) as fake:
        app.settings = app.settings.replace(
            dsn=f"postmark+api://pm-token@default?endpoint={fake.url}", connections=2)
        with_feed(app, tmp_path)
        emails = seed_subscribers(app, 1200)
        with app.sessions.begin() as session:
            add(session, "inactive@example.org", name="Gone")
            add(session, "invalid@example.org", name="Typo")
        fake.fail_next(429, {"ErrorCode": 429, "Message": "Rate limit"}, {"Retry-After": "0"})
        outcome = run_send(app, app.clock.today(app.settings.tz))
        assert outcome.status == "sent", outcome.message
        with app.sessions() as session:
            counts = ledger.counts(session, outcome.edition_id or 0)
            assert counts["sent"] == 1200 and counts["failed"] == 2
            assert counts["queued"] == counts["claimed"] == counts["ambiguous"] == 0
            gone = session.scalar(select(Subscriber).where(
                Subscriber.email == "inactive@example.org"))
            typo = session.scalar(select(Subscriber).where(
                Subscriber.email == "invalid@example.org"))
            assert gone is not None and gone.status == BOUNCED
            assert typo is not None and typo.status == "active"
            ids = session.scalars(select(Delivery.provider_id).where(
                Delivery.state == "sent")).all()
            assert len(set(ids)) == 1200
        got = Counter(fake.recipients())
        assert set(got) == set(emails) and set(got.values()) == {1}
        for address in ("reader0@example.org", "reader1199@example.org"):
            message = fake.delivered[address][0]
            assert message.header("List-Unsubscribe").startswith(
                "<https://mail.example.org/unsubscribe/")
            assert message.header("List-Unsubscribe-Post") == ONE_CLICK
            assert message.header("Message-ID").endswith(">")
        assert max(fake.batch_sizes("/email/batch")) <= 500


@pytest.mark.parametrize("name", ["sendgrid", "mailgun"])
def test_run_send_with_the_shared_template_batches_real_editions(
        name: str, app: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real edition HTML (MJML output) through substitution-based batching: every
    recipient's copy equals the one `MessageTemplate.fill` would have produced."""
    import email as email_lib
    import email.policy

    from sqlalchemy import select

    from mailer import personalise
    from mailer.models import Edition, Subscriber
    from mailer.pipeline import run_send
    from mailer.tokens import PREFERENCES, UNSUBSCRIBE, make_token
    from tests.support.seed import seed_subscribers, with_feed

    outgoing = personalise.Personaliser.outgoing

    def with_template(self: personalise.Personaliser, c: Any, with_fields: bool = True) -> Outgoing:
        message = outgoing(self, c, with_fields)
        message.template = self.template  # type: ignore[attr-defined]
        return message

    monkeypatch.setattr(personalise.Personaliser, "outgoing", with_template)
    fake_type = {"sendgrid": FakeSendGrid, "mailgun": FakeMailgun}[name]
    with running(fake_type) as fake:
        query = f"endpoint={fake.url}"
        app.settings = app.settings.replace(
            dsn={"sendgrid": f"sendgrid+api://SG.test-key@default?{query}",
                 "mailgun": f"mailgun+api://mg-key:mg.labourlist.org@default?{query}"}[name],
            batch_size=1000, connections=1)
        with_feed(app, tmp_path)
        emails = seed_subscribers(app, 1500)
        outcome = run_send(app, app.clock.today(app.settings.tz))
        assert outcome.status == "sent", outcome.message
        assert outcome.details["sent"] == 1500
        assert sorted(fake.batch_sizes(SEND_PATH[name])) == [500, 1000]
        got = Counter(fake.recipients())
        assert set(got) == set(emails) and set(got.values()) == {1}
        message = fake.delivered["reader7@example.org"][0]
        assert message.header("List-Unsubscribe").startswith(
            "<https://mail.example.org/unsubscribe/")
        assert message.header("List-Unsubscribe-Post") == ONE_CLICK
        assert "%%" not in message.html and "%recipient." not in message.html
        assert "%%" not in message.text and "Good morning, Reader7" in message.text
        # The same recipient's message as SMTP would have sent it: same bodies.
        with app.sessions() as session:
            edition = session.get(Edition, outcome.edition_id)
            assert edition is not None
            template = MessageTemplate.build(settings=app.settings, subject=edition.subject,
                                             html=edition.html, text=edition.text,
                                             date=app.clock.now(),
                                             placeholders=Placeholders(edition.placeholder_key))
            sub_id = session.scalar(select(Subscriber.id).where(
                Subscriber.email == "reader7@example.org"))
        base = app.settings.base_url
        unsub = f"{base}/unsubscribe/{make_token(app.secret_key, UNSUBSCRIBE, sub_id or 0)}"
        prefs = f"{base}/preferences/{make_token(app.secret_key, PREFERENCES, sub_id or 0)}"
        assert message.header("List-Unsubscribe").startswith(f"<{unsub}>")
        reference = email_lib.message_from_bytes(template.fill(
            email="reader7@example.org", name="Reader 7", unsubscribe_url=unsub,
            preferences_url=prefs, message_id="<x@y>", first_name="Reader7"),
            policy=email.policy.default)
        html_part = reference.get_body(preferencelist=("html",))
        text_part = reference.get_body(preferencelist=("plain",))
        assert html_part is not None and text_part is not None
        assert message.text.replace("\r\n", "\n") == text_part.get_content().replace("\r\n", "\n")
        assert message.html.replace("\r\n", "\n") == html_part.get_content().replace("\r\n", "\n")
