"""The DNS check in the send path and on the command line (issue 26): a broken domain refuses
the real send into a local SMTP server unless forced with a reason; a sound verdict is kept
for the local day (no second lookup), a refusal is looked up again at the next try."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from mailer.app import App
from mailer.cli import cli
from mailer.clock import FixedClock
from mailer.errors import PreflightError
from mailer.models import Edition
from mailer.pipeline import run_send
from mailer.preflight.dnscache import domain_report
from mailer.status import gather, render_text
from tests.support.dnszone import Zone
from tests.support.seed import seed_subscribers, with_feed
from tests.support.smtpsink import SmtpSink
from tests.support.staff import csrf_token, signed_in_admin

D = "labourlist.example"


def sound(zone: Zone) -> None:
    zone.clear()
    zone.add(D, "TXT", "v=spf1 ip4:127.0.0.1 -all")
    zone.add(D, "MX", f"mx.{D}")
    zone.add(f"_dmarc.{D}", "TXT", f"v=DMARC1; p=reject; rua=mailto:dmarc@{D}")
    zone.add(f"relay._domainkey.{D}", "TXT", "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEB")


def configure(app: App, tmp_path: Path, zone: Zone, dsn: str) -> None:
    app.settings = app.settings.replace(
        dsn=dsn, from_addr=f"LabourList Daily <daily@{D}>", dns_check=True,
        dns_resolver=zone.resolver, dkim_check_selectors=["relay"],
        spamassassin_command="/nonexistent/sa")
    with_feed(app, tmp_path)
    seed_subscribers(app, 2)


def test_a_domain_without_dmarc_refuses_the_send_until_fixed_or_forced(
        app: App, tmp_path: Path, dns_zone: Zone, clock: FixedClock) -> None:
    sound(dns_zone)
    dns_zone.remove(f"_dmarc.{D}", "TXT")
    with SmtpSink() as sink:
        configure(app, tmp_path, dns_zone, sink.dsn)
        with pytest.raises(PreflightError, match="publishes no DMARC record"):
            run_send(app)
        with app.sessions() as session:
            [edition] = session.query(Edition).all()
            [error] = edition.preflight["errors"]
            assert error["fix"] == (f'_dmarc.{D}. IN TXT '
                                    f'"v=DMARC1; p=none; rua=mailto:dmarc-reports@{D}"')
        dns_zone.add(f"_dmarc.{D}", "TXT", f"v=DMARC1; p=reject; rua=mailto:dmarc@{D}")
        asked = dns_zone.questions
        assert run_send(app).status == "sent"  # (the fix is seen at once: no stale refusal)
        assert dns_zone.questions > asked
        assert sink.wait_for(2)
        with app.sessions() as session:
            [edition] = session.query(Edition).all()
            assert "From is aligned with DKIM and SPF" in edition.preflight["domain"]["passed"]


def test_forcing_past_a_dns_error_needs_a_reason(app: App, tmp_path: Path,
                                                 dns_zone: Zone) -> None:
    sound(dns_zone)
    dns_zone.set(D, "TXT", "v=spf1 +all")
    with SmtpSink() as sink:
        configure(app, tmp_path, dns_zone, sink.dsn)
        with pytest.raises(PreflightError, match="needs a reason"):
            run_send(app, force=True)
        outcome = run_send(app, force=True, reason="SPF fix waits for the registrar")
        assert outcome.status == "sent"
        assert sink.wait_for(2)


def test_a_sound_verdict_is_kept_for_the_local_day(app: App, tmp_path: Path, dns_zone: Zone,
                                                   clock: FixedClock) -> None:
    sound(dns_zone)
    configure(app, tmp_path, dns_zone, "smtp://127.0.0.1:9")
    first, checked_at = domain_report(app)
    assert first.findings == []
    asked = dns_zone.questions
    clock.advance(hours=5)
    again, kept_at = domain_report(app)
    assert dns_zone.questions == asked and kept_at == checked_at
    app.settings = app.settings.replace(from_addr=f"Daily <news@{D}>")  # (other settings)
    domain_report(app)
    assert dns_zone.questions > asked
    asked = dns_zone.questions
    clock.advance(hours=19)  # the next local day
    domain_report(app)
    assert dns_zone.questions > asked


def test_mailer_preflight_dns_prints_each_fix_and_exits_5(tmp_path: Path, dns_zone: Zone,
                                                          app: App) -> None:
    sound(dns_zone)
    dns_zone.set(f"_dmarc.{D}", "TXT", "v=DMARC1; p=none")
    dns_zone.remove(f"relay._domainkey.{D}", "TXT")
    (tmp_path / "mailer.toml").write_text("")
    (tmp_path / "feed.xml").write_text("")
    env = {"MAILER_CONFIG": str(tmp_path / "mailer.toml"),
           "MAILER_DATABASE_URL": app.settings.database_url,
           "MAILER_DSN": "smtp://127.0.0.1:9", "MAILER_FROM": f"Daily <daily@{D}>",
           "MAILER_DNS_RESOLVER": dns_zone.resolver, "MAILER_DKIM_CHECK_SELECTORS": "relay",
           "MAILER_FEED_URL": str(tmp_path / "feed.xml"), "MAILER_DNS_CHECK": "0",
           "MAILER_SPAMASSASSIN_COMMAND": "/nonexistent/sa",
           "MAILER_TEMPLATES_DIR": str(tmp_path / "templates")}
    result = CliRunner().invoke(cli, ["preflight", "--dns", "--no-collect"], env=env)
    assert result.exit_code == 5, result.output
    lines = result.stdout.splitlines()
    assert f"error: no DKIM key for the relay at relay._domainkey.{D} " \
           "[dkim-provider-missing]" in lines
    assert (f'    fix: _dmarc.{D}. IN TXT "v=DMARC1; p=quarantine; '
            f'rua=mailto:dmarc-reports@{D}"') in lines
    assert f"ok: SPF of {D}: 0 of 10 lookups" in lines


def test_the_console_checks_the_domain_afresh_and_shows_each_record(
        app: App, tmp_path: Path, dns_zone: Zone) -> None:
    sound(dns_zone)
    dns_zone.set(f"_dmarc.{D}", "TXT", "v=DMARC1; p=none")
    configure(app, tmp_path, dns_zone, "smtp://127.0.0.1:9")
    assert run_send(app, dry_run=True).status == "dry-run"  # (builds the edition)
    client = signed_in_admin(app)
    day = app.clock.now().date().isoformat()
    asked = dns_zone.questions
    reply = client.post(f"/staff/editions/{day}/preflight",
                        data={"csrf_token": csrf_token(client)})
    assert reply.status_code == 303
    assert dns_zone.questions > asked
    html = client.get(f"/staff/editions/{day}").get_data(as_text=True)
    assert ('<code class="record">_dmarc.labourlist.example. IN TXT &#34;v=DMARC1; p=quarantine; '
            'rua=mailto:dmarc-reports@labourlist.example&#34;</code>') in html
    assert "OK: From is aligned with DKIM and SPF" in html


def test_mailer_status_tells_the_days_verdict_without_looking_anything_up(
        app: App, tmp_path: Path, dns_zone: Zone) -> None:
    sound(dns_zone)
    dns_zone.set(f"_dmarc.{D}", "TXT", f"v=DMARC1; p=none; rua=mailto:dmarc@{D}")
    configure(app, tmp_path, dns_zone, "smtp://127.0.0.1:9")
    asked = dns_zone.questions
    assert "sending domain: not checked yet today" in render_text(gather(app))
    assert dns_zone.questions == asked
    domain_report(app)
    status = gather(app)
    assert status.domain == {"checked_at": "2026-11-26T06:00:00+00:00", "warnings": 1}
    assert ("sending domain: SPF, DKIM and DMARC sound at 06:00 UTC, 1 warning "
            "(`mailer preflight --dns`)") in render_text(status).splitlines()
