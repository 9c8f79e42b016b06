"""The sending domain's DNS check (issue 26): good and broken zones served by a local DNS
server (tests/support/dnszone.py), dnspython pointed at it by `dns_resolver`; no lookup leaves
the machine. Each broken zone gets the finding, its severity and the exact record to publish."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailer.config import Settings
from mailer.dkimsign import Key
from mailer.preflight.authdns import DomainReport, check_domain
from mailer.preflight.dnsrecords import key_matches, spf_with
from tests.support.dkimkeys import pem
from tests.support.dnszone import Zone
from tests.support.settings import make_settings

D = "labourlist.example"


def smtp_settings(tmp_path: Path, zone: Zone, key: rsa.RSAPrivateKey, **more: object) -> Settings:
    values: dict[str, object] = {
        "dsn": "smtp://relay.example:25", "from_addr": f"LabourList Daily <daily@{D}>",
        "dkim_domain": D, "dkim_selector": "mail2026", "dkim_private_key": pem(key),
        "dns_resolver": zone.resolver, "dns_check": True}
    values.update(more)
    return make_settings(tmp_path, **values)


def good_zone(zone: Zone, key: rsa.RSAPrivateKey) -> None:
    zone.clear()
    zone.add(D, "TXT", "v=spf1 a:relay.example -all")
    zone.add(D, "MX", f"mx.{D}")
    zone.add(f"_dmarc.{D}", "TXT", f"v=DMARC1; p=quarantine; rua=mailto:dmarc@{D}")
    zone.add(f"mail2026._domainkey.{D}", "TXT",
             Key("mail2026", "rsa-sha256", key).public_record())
    zone.add("relay.example", "TXT", "v=spf1 -all")


def codes(report: DomainReport) -> dict[str, str]:
    return {f.code: f.severity for f in report.findings}


def fix_of(report: DomainReport, code: str) -> str:
    return next(f.fix for f in report.findings if f.code == code)


def test_a_sound_domain_passes_with_what_was_checked(tmp_path: Path, dns_zone: Zone,
                                                     rsa_key: rsa.RSAPrivateKey) -> None:
    good_zone(dns_zone, rsa_key)
    report = check_domain(smtp_settings(tmp_path, dns_zone, rsa_key))
    assert report.findings == []
    assert report.complete
    assert report.passed == [
        f"DMARC at {D}: p=quarantine", f"SPF of {D}: 1 of 10 lookups",
        f"DKIM mail2026._domainkey.{D} matches our rsa-sha256 key", f"MX of {D}: mx.{D}",
        "From is aligned with DKIM and SPF"]


def test_no_dmarc_is_an_error_with_the_record_to_publish(tmp_path: Path, dns_zone: Zone,
                                                         rsa_key: rsa.RSAPrivateKey) -> None:
    good_zone(dns_zone, rsa_key)
    dns_zone.remove(f"_dmarc.{D}", "TXT")
    report = check_domain(smtp_settings(tmp_path, dns_zone, rsa_key))
    assert codes(report) == {"dmarc-missing": "error"}
    assert fix_of(report, "dmarc-missing") == (
        f'_dmarc.{D}. IN TXT "v=DMARC1; p=none; rua=mailto:dmarc-reports@{D}"')


def test_p_none_and_no_reports_are_warnings(tmp_path: Path, dns_zone: Zone,
                                            rsa_key: rsa.RSAPrivateKey) -> None:
    good_zone(dns_zone, rsa_key)
    dns_zone.set(f"_dmarc.{D}", "TXT", "v=DMARC1; p=none")
    report = check_domain(smtp_settings(tmp_path, dns_zone, rsa_key))
    assert codes(report) == {"dmarc-none": "warning", "dmarc-no-rua": "warning"}
    assert "p=quarantine" in fix_of(report, "dmarc-none")
    assert fix_of(report, "dmarc-no-rua").endswith(f'rua=mailto:dmarc-reports@{D}"')


def test_spf_with_eleven_lookups_is_an_error(tmp_path: Path, dns_zone: Zone,
                                             rsa_key: rsa.RSAPrivateKey) -> None:
    good_zone(dns_zone, rsa_key)
    for i in range(11):
        dns_zone.add(f"i{i}.example", "TXT", f"v=spf1 ip4:192.0.2.{i} -all")
    dns_zone.set(D, "TXT", "v=spf1 " + " ".join(f"include:i{i}.example" for i in range(11))
                 + " -all")
    report = check_domain(smtp_settings(tmp_path, dns_zone, rsa_key))
    assert codes(report) == {"spf-lookups": "error"}
    assert "11 DNS lookups" in report.findings[0].message


def test_plus_all_is_an_error_even_through_an_include(tmp_path: Path, dns_zone: Zone,
                                                      rsa_key: rsa.RSAPrivateKey) -> None:
    good_zone(dns_zone, rsa_key)
    dns_zone.set(D, "TXT", "v=spf1 ip4:192.0.2.1 +all")
    report = check_domain(smtp_settings(tmp_path, dns_zone, rsa_key))
    assert codes(report) == {"spf-plus-all": "error"}
    assert fix_of(report, "spf-plus-all") == (
        f'{D}. IN TXT "v=spf1 ip4:192.0.2.1 a:relay.example ~all"')
    dns_zone.add("open.example", "TXT", "v=spf1 +all")
    dns_zone.set(D, "TXT", "v=spf1 include:open.example -all")
    assert codes(check_domain(smtp_settings(tmp_path, dns_zone, rsa_key))) == {
        "spf-plus-all": "error"}


def test_a_dkim_key_that_does_not_match_ours_is_an_error(
        tmp_path: Path, dns_zone: Zone, rsa_key: rsa.RSAPrivateKey) -> None:
    good_zone(dns_zone, rsa_key)
    other = ed25519.Ed25519PrivateKey.generate()
    dns_zone.set(f"mail2026._domainkey.{D}", "TXT",
                 Key("x", "ed25519-sha256", other).public_record())
    report = check_domain(smtp_settings(tmp_path, dns_zone, rsa_key))
    assert codes(report) == {"dkim-mismatch": "error"}  # (SPF still aligns From)
    fix = fix_of(report, "dkim-mismatch")
    assert fix.startswith(f'mail2026._domainkey.{D}. IN TXT "v=DKIM1; k=rsa; p=MIIB')
    published = "".join(fix.split(" IN TXT ", 1)[1].replace('" "', "").strip('"'))
    assert key_matches(published, Key("mail2026", "rsa-sha256", rsa_key))
    dns_zone.remove(f"mail2026._domainkey.{D}", "TXT")
    assert codes(check_domain(smtp_settings(tmp_path, dns_zone, rsa_key))) == {
        "dkim-missing": "error"}


def test_ed25519_and_rsa_keys_both_checked(tmp_path: Path, dns_zone: Zone,
                                           rsa_key: rsa.RSAPrivateKey,
                                           ed_key: ed25519.Ed25519PrivateKey) -> None:
    good_zone(dns_zone, rsa_key)
    settings = smtp_settings(tmp_path, dns_zone, rsa_key, dkim_ed25519_selector="ed2026",
                             dkim_private_key=pem(rsa_key) + pem(ed_key))
    report = check_domain(settings)
    assert codes(report) == {"dkim-missing": "error"}
    assert "k=ed25519" in fix_of(report, "dkim-missing")
    dns_zone.add(f"ed2026._domainkey.{D}", "TXT",
                 Key("ed2026", "ed25519-sha256", ed_key).public_record())
    assert check_domain(settings).findings == []


def test_from_not_aligned_is_an_error(tmp_path: Path, dns_zone: Zone,
                                      rsa_key: rsa.RSAPrivateKey) -> None:
    """We sign as another domain and bounce at another: DMARC cannot pass for From."""
    good_zone(dns_zone, rsa_key)
    dns_zone.add("bounces.example", "TXT", "v=spf1 a:relay.example -all")
    dns_zone.add("bounces.example", "MX", "mx.bounces.example")
    dns_zone.add("mail2026._domainkey.signer.example", "TXT",
                 Key("mail2026", "rsa-sha256", rsa_key).public_record())
    report = check_domain(smtp_settings(tmp_path, dns_zone, rsa_key,
                                        dkim_domain="signer.example",
                                        bounce_address="b@bounces.example"))
    assert codes(report) == {"not-aligned": "error"}
    assert "d=signer.example" in report.findings[0].message
    assert fix_of(report, "not-aligned") == f'set dkim_domain = "{D}" and publish the key there'


def test_missing_mx_for_the_bounce_domain_is_a_warning(tmp_path: Path, dns_zone: Zone,
                                                       rsa_key: rsa.RSAPrivateKey) -> None:
    good_zone(dns_zone, rsa_key)
    dns_zone.remove(D, "MX")
    report = check_domain(smtp_settings(tmp_path, dns_zone, rsa_key))
    assert codes(report) == {"mx-missing": "warning"}


def test_sendgrid_needs_both_cnames_into_its_zone(tmp_path: Path, dns_zone: Zone,
                                                  rsa_key: rsa.RSAPrivateKey) -> None:
    good_zone(dns_zone, rsa_key)
    target = "domainkey.u123.wl45.sendgrid.net"
    for selector in ("s1", "s2"):
        dns_zone.add(f"{selector}._domainkey.{D}", "CNAME", f"{selector}.{target}")
        dns_zone.add(f"{selector}.{target}", "TXT", "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEB")
    settings = make_settings(tmp_path, dsn="sendgrid+api://SG.key@default",
                             from_addr=f"Daily <daily@{D}>", dns_resolver=dns_zone.resolver)
    report = check_domain(settings)
    assert report.findings == []
    assert "From is aligned with DKIM" in report.passed
    dns_zone.remove(f"s2._domainkey.{D}", "CNAME")  # the provider CNAME missing
    report = check_domain(settings)
    assert codes(report) == {"dkim-provider-missing": "error"}
    assert fix_of(report, "dkim-provider-missing").startswith(f"s2._domainkey.{D}. CNAME s2.")
    for selector in ("s1", "s2"):
        dns_zone.remove(f"{selector}._domainkey.{D}", "CNAME")
    assert codes(check_domain(settings)) == {"dkim-provider-missing": "error",
                                             "not-aligned": "error"}


def test_postmark_return_path_and_unknown_selector(tmp_path: Path, dns_zone: Zone,
                                                   rsa_key: rsa.RSAPrivateKey) -> None:
    good_zone(dns_zone, rsa_key)
    settings = make_settings(tmp_path, dsn="postmark+api://token@default",
                             from_addr=f"Daily <daily@{D}>", dns_resolver=dns_zone.resolver)
    report = check_domain(settings)
    assert codes(report) == {"return-path": "warning", "dkim-unknown": "warning",
                             "alignment-unknown": "warning"}
    assert fix_of(report, "return-path") == f"pm-bounces.{D}. CNAME pm.mtasv.net."
    dns_zone.add(f"pm-bounces.{D}", "CNAME", "pm.mtasv.net")
    dns_zone.add("pm.mtasv.net", "TXT", "v=spf1 ip4:192.0.2.0/24 ~all")
    dns_zone.add(f"20261101pm._domainkey.{D}", "TXT", "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEB")
    report = check_domain(settings.replace(dkim_check_selectors=["20261101pm"]))
    assert report.findings == []
    assert "From is aligned with DKIM and SPF" in report.passed


def test_a_dns_that_does_not_answer_is_a_warning_only(tmp_path: Path, dns_zone: Zone,
                                                      rsa_key: rsa.RSAPrivateKey) -> None:
    settings = smtp_settings(tmp_path, dns_zone, rsa_key, dns_resolver="127.0.0.1:9",
                             dns_timeout=0.3)
    started = time.monotonic()
    report = check_domain(settings)
    assert time.monotonic() - started < 3
    assert codes(report) == {"dns-unavailable": "warning"}
    assert not report.complete


def test_the_file_outbox_checks_nothing(tmp_path: Path, dns_zone: Zone) -> None:
    before = dns_zone.questions
    report = check_domain(make_settings(tmp_path, dns_resolver=dns_zone.resolver))
    assert report.findings == [] and dns_zone.questions == before


@pytest.mark.parametrize(("record", "include", "fixed"), [
    # (a transport of no known provider has no include to add)
    ("v=spf1 ip4:192.0.2.1 +all", "", "v=spf1 ip4:192.0.2.1 ~all"),
    (None, "a:relay.example", "v=spf1 a:relay.example ~all"),
    ("v=spf1 include:sendgrid.net ~all", "include:sendgrid.net",
     "v=spf1 include:sendgrid.net ~all"),
    ("v=spf1 ip4:192.0.2.1 -all", "include:sendgrid.net",
     "v=spf1 ip4:192.0.2.1 include:sendgrid.net -all"),
    ("v=spf1 redirect=_spf.example", "a:relay.example",
     "v=spf1 a:relay.example redirect=_spf.example"),
])
def test_the_spf_record_proposed(record: str | None, include: str, fixed: str) -> None:
    assert spf_with(record, include) == fixed


@pytest.mark.parametrize("name", [f"_dmarc.{D}", "spf.relay.example"])
def test_a_server_failing_midway_is_no_finding_about_the_domain(
        tmp_path: Path, dns_zone: Zone, rsa_key: rsa.RSAPrivateKey, name: str) -> None:
    """The first answer came, then a SERVFAIL inside checkdmarc's own lookups (DMARC, or an
    SPF include): that says nothing about the records, so no error stops the send."""
    good_zone(dns_zone, rsa_key)
    dns_zone.set(D, "TXT", "v=spf1 include:spf.relay.example -all")
    dns_zone.add("spf.relay.example", "TXT", "v=spf1 ip4:192.0.2.0/24 -all")
    assert check_domain(smtp_settings(tmp_path, dns_zone, rsa_key)).findings == []
    dns_zone.failing.add(name)
    report = check_domain(smtp_settings(tmp_path, dns_zone, rsa_key))
    assert codes(report) == {"dns-unavailable": "warning"}
    assert not report.complete
