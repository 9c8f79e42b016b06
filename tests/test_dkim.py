"""DKIM signing of what we send over SMTP: real sends into a local SMTP server, verified with
dkimpy's verifier against a local DNS server (dnslib on 127.0.0.1) serving the public keys,
dnspython pointed at it. RSA-2048, Ed25519, and both at once; keys from the environment only."""

from __future__ import annotations

import time
from pathlib import Path

import dkim
import dns.resolver
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailer.app import App
from mailer.cli import cli
from mailer.config import load_settings
from mailer.dkimsign import Key, Signer, load_keys
from mailer.errors import ConfigError
from mailer.pipeline import run_send
from tests.support.dkimkeys import pem
from tests.support.dnszone import Zone
from tests.support.seed import seed_subscribers, with_feed
from tests.support.smtpsink import SmtpSink

DOMAIN = "labourlist.example"


def verified(data: bytes, port: int) -> list[bool]:
    """dkimpy's verdict on each signature, its keys looked up through our DNS server."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers, resolver.port = ["127.0.0.1"], port

    def lookup(name: bytes, timeout: int = 5) -> bytes:
        answer = resolver.resolve(name.decode().rstrip("."), "TXT", lifetime=timeout)
        return b"".join(b"".join(rdata.strings) for rdata in answer)

    checker = dkim.DKIM(data)
    count = data.count(b"DKIM-Signature:")
    return [bool(checker.verify(idx=i, dnsfunc=lookup)) for i in range(count)]


def send_signed(app: App, tmp_path: Path, sink: SmtpSink, **settings: str) -> list[bytes]:
    app.settings = app.settings.replace(dsn=sink.dsn, dkim_domain=DOMAIN,
                                        spamassassin_command="/nonexistent/sa", **settings)
    with_feed(app, tmp_path)
    seed_subscribers(app, 3)
    assert run_send(app).status == "sent"
    assert sink.wait_for(3)
    return [received.data for received in sink.messages]


@pytest.mark.parametrize("which", ["rsa", "ed25519", "both"])
def test_every_sent_copy_verifies_with_dkimpy_against_our_dns(
        which: str, app: App, tmp_path: Path, dns_zone: Zone,
        rsa_key: rsa.RSAPrivateKey, ed_key: ed25519.Ed25519PrivateKey) -> None:
    port = dns_zone.port
    keys = {"rsa": pem(rsa_key), "ed25519": pem(ed_key)}
    private = keys["rsa"] + keys["ed25519"] if which == "both" else keys[which]
    for selector, key in (("mail2026", Key("mail2026", "rsa-sha256", rsa_key)),
                          ("ed2026", Key("ed2026", "ed25519-sha256", ed_key))):
        dns_zone.set(f"{selector}._domainkey.{DOMAIN}", "TXT", key.public_record())
    with SmtpSink() as sink:
        copies = send_signed(app, tmp_path, sink, dkim_selector="mail2026",
                             dkim_ed25519_selector="ed2026", dkim_private_key=private)
    for data in copies:
        verdicts = verified(data, port)
        assert verdicts == [True] * (2 if which == "both" else 1), data[:600]
        head = data.split(b"\r\n\r\n", 1)[0].lower()
        assert b"list-unsubscribe:list-unsubscribe-post" in head.replace(b"\r\n\t", b"")
    # A key in DNS that is not ours fails, as a receiver would see it.
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    dns_zone.set(f"mail2026._domainkey.{DOMAIN}", "TXT",
                 Key("x", "rsa-sha256", other).public_record())
    if which == "rsa":
        assert verified(copies[0], port) == [False]


def test_keys_come_from_the_environment_only(tmp_path: Path,
                                             rsa_key: rsa.RSAPrivateKey) -> None:
    config = tmp_path / "mailer.toml"
    config.write_text(f'dkim_private_key = """{pem(rsa_key)}"""\n')
    with pytest.raises(ConfigError, match="environment"):
        load_settings({"MAILER_CONFIG": str(config)})
    key_file = tmp_path / "dkim.pem"
    key_file.write_text(pem(rsa_key))
    config.write_text("")
    settings = load_settings({"MAILER_CONFIG": str(config), "MAILER_DKIM_DOMAIN": DOMAIN,
                              "MAILER_DKIM_SELECTOR": "s1",
                              "MAILER_DKIM_KEY_FILE": str(key_file)})
    [key] = load_keys(settings)
    assert (key.selector, key.algorithm) == ("s1", "rsa-sha256")
    with pytest.raises(ConfigError, match="dkim_selector"):
        load_keys(settings.replace(dkim_selector=""))
    with pytest.raises(ConfigError, match="no DKIM key"):
        load_keys(settings.replace(dkim_key_file=""))
    assert Signer.of(settings.replace(dkim_domain="", dkim_key_file="")) is None


def test_a_message_with_bare_newlines_is_signed_as_it_will_travel(
        rsa_key: rsa.RSAPrivateKey, dns_zone: Zone) -> None:
    port = dns_zone.port
    key = Key("lf", "rsa-sha256", rsa_key)
    dns_zone.set(f"lf._domainkey.{DOMAIN}", "TXT", key.public_record())
    message = (b"From: a@labourlist.example\nTo: b@example.org\nSubject: hi\n\nline one\n"
               b"line two\n")
    signed = Signer(DOMAIN, [key]).sign(message, now=int(time.time()))
    assert verified(signed.replace(b"\n", b"\r\n"), port) == [True]


def test_the_records_to_publish_are_printed_for_the_configured_keys(
        tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ed_key: ed25519.Ed25519PrivateKey) -> None:
    (tmp_path / "mailer.toml").write_text("")
    env = {"MAILER_CONFIG": str(tmp_path / "mailer.toml"), "MAILER_DKIM_DOMAIN": DOMAIN,
           "MAILER_DKIM_SELECTOR": "mail2026", "MAILER_DKIM_ED25519_SELECTOR": "ed2026",
           "MAILER_DKIM_PRIVATE_KEY": pem(rsa_key) + pem(ed_key),
           "MAILER_DATABASE_URL": f"sqlite:///{tmp_path / 'none.db'}"}
    result = CliRunner().invoke(cli, ["transports", "dkim-records"], env=env)
    assert result.exit_code == 0, result.output
    rsa_line, ed_line = result.stdout.splitlines()
    record = Key("mail2026", "rsa-sha256", rsa_key).public_record()
    assert rsa_line == (f'mail2026._domainkey.{DOMAIN}. IN TXT "{record[:255]}" '
                        f'"{record[255:]}"')
    assert ed_line.startswith(f'ed2026._domainkey.{DOMAIN}. IN TXT "v=DKIM1; k=ed25519; p=')
    off = CliRunner().invoke(cli, ["transports", "dkim-records"],
                             env={k: v for k, v in env.items() if "DKIM" not in k})
    assert off.exit_code != 0 and "DKIM signing is off" in off.output
