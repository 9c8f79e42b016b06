"""DNS lookups for the sending-domain check, through one resolver the settings choose.

A record that does not exist and a DNS that cannot answer are different answers: the first is a
finding (publish this record), the second only means the check could not be made, which must
never stop the morning's send. So absence comes back as None or [], and an unreachable or
failing resolver as `DnsUnavailable`.
"""

from __future__ import annotations

import dns.exception
import dns.rdatatype
import dns.resolver

from mailer.config import Settings


class DnsUnavailable(Exception):
    """The resolver did not answer (timeout, refused, SERVFAIL): nothing is known."""


def make_resolver(settings: Settings) -> dns.resolver.Resolver:
    """The system's resolvers, or the one named by `dns_resolver` ("IP[:PORT]")."""
    if settings.dns_resolver:
        host, port = _host_port(settings.dns_resolver)
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [host]
        resolver.port = port
    else:
        resolver = dns.resolver.Resolver()
    resolver.lifetime = settings.dns_timeout
    resolver.timeout = min(2.0, settings.dns_timeout)
    return resolver


def _host_port(value: str) -> tuple[str, int]:
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else 53
    if value.count(":") == 1:
        host, port = value.split(":")
        return host, int(port)
    return value, 53


class Lookup:
    """TXT, CNAME and MX answers for names, as strings."""

    def __init__(self, resolver: dns.resolver.Resolver) -> None:
        self.resolver = resolver

    def _answer(self, name: str, kind: str) -> dns.resolver.Answer | None:
        try:
            return self.resolver.resolve(name, kind, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return None
        except (dns.exception.Timeout, dns.resolver.NoNameservers,
                dns.resolver.LifetimeTimeout) as exc:
            raise DnsUnavailable(f"no answer for {name} {kind}: {exc}") from None
        except dns.exception.DNSException as exc:
            raise DnsUnavailable(f"{name} {kind}: {exc}") from None

    def txt(self, name: str) -> list[str]:
        """Each TXT record at `name` (following a CNAME), its strings joined."""
        answer = self._answer(name, "TXT")
        if answer is None:
            return []
        return [b"".join(r.strings).decode("utf-8", "replace") for r in answer
                if r.rdtype == dns.rdatatype.TXT]

    def cname(self, name: str) -> str | None:
        """Where a CNAME at `name` points (no trailing dot), or None."""
        answer = self._answer(name, "CNAME")
        if answer is None:
            return None
        for rdata in answer:
            if rdata.rdtype == dns.rdatatype.CNAME:
                return str(rdata.target).rstrip(".").lower()
        return None

    def mx(self, name: str) -> list[str]:
        """The mail exchangers of `name`, most preferred first."""
        answer = self._answer(name, "MX")
        if answer is None:
            return []
        found = sorted((r.preference, str(r.exchange).rstrip(".").lower()) for r in answer
                       if r.rdtype == dns.rdatatype.MX)
        return [host for _, host in found]
