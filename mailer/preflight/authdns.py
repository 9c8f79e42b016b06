"""The sending domain's authentication, checked in DNS before the morning send.

Gmail and Yahoo want bulk mail to pass SPF and DKIM, the From domain to publish DMARC, and one
of the two to be aligned with From. A newsroom usually learns it is out of line from a bounce
storm, so this looks the records up first (dnspython; SPF and DMARC through `checkdmarc`, whose
parsers count SPF's lookups the way receivers do) and says, for each problem, the exact record
to publish.

What is looked up depends on how we send: over SMTP, our own DKIM keys (`dkim_domain`) must be
the ones published and the envelope sender's domain must have SPF; through a provider, the
provider signs and bounces, so its documented records are checked (SendGrid's s1/s2 CNAMEs,
Postmark's pm-bounces Return-Path, Mailgun's sending domain, SES's DKIM CNAMEs), with the
selectors named in `dkim_check_selectors` where the provider's cannot be guessed.

A DNS that does not answer is a warning, never a refusal: the check could not be made.
`checkdmarc` is slow to import (an HTTP client, the public suffix list), so it is imported where
a check runs, not by every command that loads preflight.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import Any

from mailer.config import Settings
from mailer.dkimsign import Key, load_keys
from mailer.errors import ConfigError
from mailer.preflight.dnslookup import DnsUnavailable, Lookup, make_resolver
from mailer.preflight.dnsrecords import (
    aligned,
    dkim_public_bytes,
    dmarc_record,
    key_matches,
    spf_with,
    tags,
    txt,
)
from mailer.preflight.findings import ERROR, WARNING, Finding
from mailer.transports.dsn import parse_dsn

SPF_LOOKUP_LIMIT = 10


@dataclass(frozen=True)
class Provider:
    """What a provider documents for a domain it sends for."""

    name: str
    spf_include: str
    selectors: tuple[str, ...] = ()  # DKIM selectors to look up when none are configured
    dkim_target: str = ""  # where its DKIM CNAMEs point (a suffix)
    return_path: tuple[str, str] | None = None  # (label, target) of the Return-Path CNAME
    mx: tuple[str, ...] = ()  # the bounce domain's mail exchangers


PROVIDERS = {
    "postmark": Provider("Postmark", "include:spf.mtasv.net",
                         return_path=("pm-bounces", "pm.mtasv.net")),
    "sendgrid": Provider("SendGrid", "include:sendgrid.net", selectors=("s1", "s2"),
                         dkim_target="sendgrid.net"),
    "mailgun": Provider("Mailgun", "include:mailgun.org",
                        mx=("mxa.mailgun.org", "mxb.mailgun.org")),
    "ses": Provider("Amazon SES", "include:amazonses.com", dkim_target="dkim.amazonses.com"),
}


@dataclass(frozen=True)
class Setup:
    """How this deployment sends, as far as DNS is concerned."""

    from_domain: str
    provider: Provider | None  # None: our own SMTP relay
    relay_host: str = ""
    envelope_domain: str = ""  # the Return-Path's domain, when it is ours
    dkim_domain: str = ""  # where DKIM selectors are looked up (d=)
    keys: tuple[Key, ...] = ()  # the keys we sign with ourselves
    selectors: tuple[str, ...] = ()  # the selectors a relay or provider signs with


def setup_of(settings: Settings) -> Setup | None:
    """None when nothing is sent anywhere (the file:// outbox)."""
    dsn = parse_dsn(settings.dsn)
    family = dsn.scheme.split("+", 1)[0]
    if family == "file":
        return None
    from_domain = _domain(parseaddr(settings.from_addr)[1])
    selectors = tuple(settings.dkim_check_selectors)
    if family in ("smtp", "smtps"):
        keys = tuple(load_keys(settings))
        return Setup(from_domain, None, relay_host=dsn.host,
                     envelope_domain=_domain(settings.envelope_sender),
                     dkim_domain=(settings.dkim_domain or from_domain).lower(), keys=keys,
                     selectors=selectors)
    provider = PROVIDERS.get(family)
    if provider is None:
        return Setup(from_domain, Provider(family, ""), dkim_domain=from_domain,
                     selectors=selectors)
    if family == "mailgun":  # (mailgun+api://KEY:DOMAIN@default: it signs and bounces there)
        sending = dsn.password.lower() or from_domain
        return Setup(from_domain, provider, envelope_domain=sending, dkim_domain=sending,
                     selectors=selectors)
    return Setup(from_domain, provider, dkim_domain=from_domain,
                 selectors=selectors or provider.selectors)


def _domain(address: str) -> str:
    return address.rpartition("@")[2].strip().lower().rstrip(".")


@dataclass
class DomainReport:
    """The findings, and what passed (for the console and `mailer preflight --dns`)."""

    findings: list[Finding] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)
    complete: bool = True  # False: DNS did not answer, so nothing is known

    def add(self, severity: str, code: str, message: str, fix: str = "") -> None:
        self.findings.append(Finding(severity, code, message, fix))

    def as_json(self) -> dict[str, Any]:
        return {"findings": [f.as_json() for f in self.findings], "passed": self.passed,
                "complete": self.complete}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DomainReport:
        return cls([Finding(f["severity"], f["code"], f["message"], f.get("fix", ""))
                    for f in data.get("findings", [])],
                   list(data.get("passed", [])), bool(data.get("complete", True)))


@dataclass
class _State:
    """What the steps learn for the alignment verdict."""

    adkim: str = "r"
    aspf: str = "r"
    dmarc: bool = False
    dkim_domains: list[str] = field(default_factory=list)  # where a signing key was found
    dkim_known: bool = False  # whether any selector could be checked at all
    spf_domain: str = ""  # the envelope domain, when its SPF is sound


def check_domain(settings: Settings) -> DomainReport:
    """Look the sending domain's records up afresh and judge them."""
    report = DomainReport()
    try:
        setup = setup_of(settings)
    except ConfigError as exc:
        report.add(ERROR, "dkim-config", str(exc))
        return report
    if setup is None:
        report.passed.append("nothing to check: the file:// outbox sends to no one")
        return report
    from checkdmarc.utils import DNS_CACHE  # noqa: PLC0415 - see the module docstring

    DNS_CACHE.clear()  # (a record fixed a minute ago must be seen now)
    lookup = Lookup(make_resolver(settings))
    state = _State()
    try:
        lookup.txt(setup.from_domain)  # (does DNS answer at all?)
        _dmarc(setup, lookup, report, state)
        _spf(setup, lookup, report, state)
        _our_dkim(setup, lookup, report, state)
        _their_dkim(setup, lookup, report, state)
        _bounce_mx(setup, lookup, report)
    except DnsUnavailable as exc:
        report.findings = [Finding(WARNING, "dns-unavailable",
                                   f"the sending domain's DNS could not be checked ({exc}); "
                                   "the send is not stopped for it")]
        report.passed = []
        report.complete = False
        return report
    _alignment(setup, report, state)
    return report


def _dmarc(setup: Setup, lookup: Lookup, report: DomainReport, state: _State) -> None:
    from checkdmarc.dmarc import check_dmarc  # noqa: PLC0415

    domain = setup.from_domain
    result = check_dmarc(domain, resolver=lookup.resolver, timeout=lookup.resolver.lifetime)
    if result.get("error"):
        error = _known(str(result["error"]))
        if "does not exist" in error:
            report.add(ERROR, "dmarc-missing",
                       f"{domain} publishes no DMARC record: Gmail and Yahoo refuse bulk mail "
                       "without one", dmarc_record(domain))
        else:
            report.add(ERROR, "dmarc-invalid", f"{domain}'s DMARC record is not valid: {error}",
                       dmarc_record(domain))
        return
    record = str(result.get("record") or "")
    found = {name: str(tag.get("value", "")) for name, tag in result.get("tags", {}).items()}
    state.dmarc = True
    state.adkim, state.aspf = found.get("adkim", "r"), found.get("aspf", "r")
    policy = found.get("p", "none")
    rua = tags(record).get("rua", "")
    if policy == "none":
        report.add(WARNING, "dmarc-none",
                   f"{domain}'s DMARC policy is p=none: enough for Gmail and Yahoo, but "
                   "anyone can still send as you; once the reports are clean, move to "
                   "quarantine", dmarc_record(domain, "quarantine", rua))
    if not rua:
        report.add(WARNING, "dmarc-no-rua",
                   f"{domain}'s DMARC record asks for no aggregate reports (rua=), so nobody "
                   "sees who fails", dmarc_record(domain, policy))
    report.passed.append(f"DMARC at {result.get('location') or domain}: p={policy}")


def _spf(setup: Setup, lookup: Lookup, report: DomainReport, state: _State) -> None:
    """SPF of the envelope domain when it is ours; of the From domain otherwise (a provider
    bounces at its own domain, so only a dangerous From record matters there)."""
    include = (setup.provider.spf_include if setup.provider
               else f"a:{setup.relay_host}" if setup.relay_host else "")
    if setup.envelope_domain:
        if _spf_of(setup.envelope_domain, include, lookup, report, required=True):
            state.spf_domain = setup.envelope_domain
    if setup.from_domain != setup.envelope_domain:
        _spf_of(setup.from_domain, include, lookup, report, required=False)
    if setup.provider and setup.provider.return_path:
        _return_path(setup, lookup, report, state)


def _spf_of(domain: str, include: str, lookup: Lookup, report: DomainReport, *,
            required: bool) -> bool:
    from checkdmarc.spf import check_spf  # noqa: PLC0415

    result = check_spf(domain, resolver=lookup.resolver, timeout=lookup.resolver.lifetime)
    if result.get("error"):
        _known(str(result["error"]))
    record = result.get("record")
    fix = txt(domain, spf_with(record, include)) if include else ""
    if record is None:
        if required:
            report.add(ERROR, "spf-missing",
                       f"{domain} (the envelope sender's domain) publishes no SPF record",
                       fix)
        return False
    lookups = int(result.get("dns_lookups") or 0)
    if lookups > SPF_LOOKUP_LIMIT:
        report.add(ERROR, "spf-lookups",
                   f"{domain}'s SPF record needs {lookups} DNS lookups; receivers stop at "
                   f"{SPF_LOOKUP_LIMIT} and fail it (permerror): replace includes with the "
                   f"addresses they stand for, or drop the ones no longer used "
                   f"({_costly(result)})", txt(domain, str(record)))
        return False
    if _passes_all(result.get("parsed") or {}):
        report.add(ERROR, "spf-plus-all",
                   f"{domain}'s SPF record ends in +all (itself or through an include), "
                   "which lets anyone send as you: receivers treat it as no SPF",
                   txt(domain, spf_with(str(record), include or "")))
        return False
    if result.get("error"):
        report.add(ERROR, "spf-invalid", f"{domain}'s SPF record is not valid: "
                   f"{result['error']}", fix)
        return False
    report.passed.append(f"SPF of {domain}: {lookups} of {SPF_LOOKUP_LIMIT} lookups")
    return True


#: How checkdmarc's errors say that DNS did not answer (dnspython's messages, passed on).
_NO_ANSWER = ("timed out", "lifetime expired", "nameservers failed", "servfail",
              "no nameservers", "network is unreachable", "connection refused")


def _known(error: str) -> str:
    """`error`, when it says something about the records; DnsUnavailable when it only says
    that DNS did not answer (a timeout inside checkdmarc is no finding about the domain)."""
    if any(words in error.lower() for words in _NO_ANSWER):
        raise DnsUnavailable(error)
    return error


def _passes_all(parsed: dict[str, Any]) -> bool:
    if parsed.get("all") == "pass":
        return True
    return any(_passes_all(m.get("parsed") or {}) for m in parsed.get("mechanisms", [])
               if isinstance(m, dict))


def _costly(result: dict[str, Any]) -> str:
    counts = [(int(m.get("dns_lookups") or 1), str(m.get("value", "")))
              for m in (result.get("parsed") or {}).get("mechanisms", [])
              if isinstance(m, dict) and m.get("mechanism") in ("include", "redirect")]
    counts.sort(reverse=True)
    return ", ".join(f"{name} {n}" for n, name in counts[:3]) or "see the record"


def _return_path(setup: Setup, lookup: Lookup, report: DomainReport, state: _State) -> None:
    assert setup.provider is not None and setup.provider.return_path is not None
    label, target = setup.provider.return_path
    name = f"{label}.{setup.from_domain}"
    if lookup.cname(name) == target:
        state.spf_domain = name
        report.passed.append(f"Return-Path {name} points at {setup.provider.name}")
        return
    report.add(WARNING, "return-path",
               f"{name} does not point at {target}: {setup.provider.name} bounces at its own "
               "domain, so SPF cannot align with From (DKIM must)",
               f"{name}. CNAME {target}.")


def _our_dkim(setup: Setup, lookup: Lookup, report: DomainReport, state: _State) -> None:
    for key in setup.keys:
        state.dkim_known = True
        name = f"{key.selector}._domainkey.{setup.dkim_domain}"
        fix = txt(name, key.public_record())
        records = [r for r in lookup.txt(name) if "p=" in r]
        if not records:
            report.add(ERROR, "dkim-missing",
                       f"no DKIM key at {name}: every message we sign with selector "
                       f"{key.selector} fails DKIM", fix)
        elif not any(key_matches(r, key) for r in records):
            report.add(ERROR, "dkim-mismatch",
                       f"the DKIM key at {name} is not the public half of the configured "
                       f"{key.algorithm.split('-')[0].upper()} key: every signature fails",
                       fix)
        else:
            state.dkim_domains.append(setup.dkim_domain)
            report.passed.append(f"DKIM {name} matches our {key.algorithm} key")


def _their_dkim(setup: Setup, lookup: Lookup, report: DomainReport, state: _State) -> None:
    """The selectors a relay or provider signs with: published (and, where the provider
    documents it, a CNAME into its zone)."""
    provider = setup.provider
    if not setup.selectors:
        if not setup.keys:
            who = provider.name if provider else "the SMTP relay"
            report.add(WARNING, "dkim-unknown",
                       f"cannot check the DKIM key {who} signs with: name its selector(s) in "
                       "dkim_check_selectors (the part before ._domainkey in the record it "
                       "asked you to publish)")
        return
    state.dkim_known = True
    for selector in setup.selectors:
        name = f"{selector}._domainkey.{setup.dkim_domain}"
        target = lookup.cname(name) if provider and provider.dkim_target else None
        records = [r for r in lookup.txt(name) if dkim_public_bytes(r)]
        wrong_zone = bool(provider and provider.dkim_target and not (
            target and (target == provider.dkim_target
                        or target.endswith("." + provider.dkim_target))))
        if records and not wrong_zone:
            state.dkim_domains.append(setup.dkim_domain)
            report.passed.append(f"DKIM {name} published")
            continue
        who = provider.name if provider else "the relay"
        if provider and provider.dkim_target:
            fix = (f"{name}. CNAME {selector}.<as shown by {who}>.{provider.dkim_target}. "
                   f"(copy the exact target from {who}'s domain settings)")
        else:
            fix = f"{name}. IN TXT \"v=DKIM1; k=rsa; p=<the public key {who} shows>\""
        report.add(ERROR, "dkim-provider-missing",
                   f"no DKIM key for {who} at {name}"
                   + (f" (it should be a CNAME into {provider.dkim_target})"
                      if wrong_zone and provider else ""), fix)


def _bounce_mx(setup: Setup, lookup: Lookup, report: DomainReport) -> None:
    """Bounces and feedback reach the envelope domain by its MX (an A record also works, but
    many receivers refuse a sender domain that cannot receive mail)."""
    domain = setup.envelope_domain
    if not domain:
        return
    hosts = lookup.mx(domain)
    expected = setup.provider.mx if setup.provider else ()
    if not hosts:
        fix = "  ".join(f"{domain}. MX 10 {host}." for host in expected) if expected else (
            f"{domain}. MX 10 <the host that receives {domain}'s mail>.")
        report.add(WARNING, "mx-missing",
                   f"{domain} (where bounces go) has no MX record: bounces and complaints "
                   "may never come back, and some receivers refuse such a sender", fix)
    elif setup.provider and expected and not set(expected) & set(hosts):
        report.add(WARNING, "mx-provider",
                   f"{domain}'s MX ({', '.join(hosts)}) is not {setup.provider.name}'s "
                   f"({', '.join(expected)}): its bounces go elsewhere",
                   "  ".join(f"{domain}. MX 10 {host}." for host in expected))
    else:
        report.passed.append(f"MX of {domain}: {hosts[0]}")


def _alignment(setup: Setup, report: DomainReport, state: _State) -> None:
    if not state.dmarc:
        return
    dkim_ok = any(aligned(d, setup.from_domain, state.adkim) for d in state.dkim_domains)
    spf_ok = bool(state.spf_domain) and aligned(state.spf_domain, setup.from_domain,
                                                state.aspf)
    if dkim_ok or spf_ok:
        report.passed.append("From is aligned with " + " and ".join(
            name for name, ok in (("DKIM", dkim_ok), ("SPF", spf_ok)) if ok))
        return
    signer = setup.dkim_domain if setup.keys else ""
    if signer and not aligned(signer, setup.from_domain, state.adkim):
        why = f"we sign as d={signer}, which is not {setup.from_domain}'s domain"
        fix = f"set dkim_domain = \"{setup.from_domain}\" and publish the key there"
    elif not state.dkim_known:
        report.add(WARNING, "alignment-unknown",
                   f"cannot tell whether mail from {setup.from_domain} passes DMARC: SPF is "
                   "not aligned and the DKIM selector is unknown (dkim_check_selectors)")
        return
    else:
        why = "no valid DKIM key was found for it and SPF is not aligned"
        fix = "publish the DKIM record(s) above"
    report.add(ERROR, "not-aligned",
               f"From ({setup.from_domain}) is not aligned: {why}, so DMARC fails", fix)
