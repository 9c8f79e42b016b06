"""Netguard: requests to URLs that came from outside reach only the public internet.

The URLs a feed names (article links, images) are the feed author's to choose. Requesting them
from the server that sends the newsletter (`mailer preflight --check-links`) must not let that
author reach what only the server can: its loopback services, the private network, and above
all the cloud metadata service at 169.254.169.254, which hands out credentials. And the answer
(a status) comes back to us, so it must not become a port scanner either.

So the guard works by construction rather than by filtering URLs:

- Each host is resolved here, once, and refused if **any** address it resolves to is not
  public (`refusal`); IPv4-mapped, NAT64 and 6to4 IPv6 addresses are judged by the IPv4
  address inside them.
- The connection goes to the address that was judged, not to the name: a urllib3 pool on the
  IP, with the name kept for the Host header, TLS SNI and the certificate check. A second DNS
  lookup, which a hostile name server could answer differently (rebinding), never happens.
- Redirects are followed here, hop by hop (at most `MAX_HOPS`), each hop judged afresh before
  anything is sent to it, and only to http(s).
- Each request (one hop) has a wall-clock `Deadline`, so a server that drips bytes cannot hold
  a check open past its timeout.

`allow_local` (the `allow_local_links` setting, for staging sites and tests on 127.0.0.1)
admits loopback, private and shared (100.64/10) addresses. Link-local addresses (which hold
the metadata services), known metadata addresses, multicast, reserved and unspecified addresses
are refused even then: no web page a newsletter links to lives there.

`resolve` is the one place names become addresses; tests replace it to give a name any address.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import urllib3
from requests.certs import where as ca_bundle  # type: ignore[attr-defined]  # stub lacks it
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import NewConnectionError, SSLError

from mailer.deadline import Deadline

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_HOPS = 5
REDIRECTS = frozenset({301, 302, 303, 307, 308})
# Metadata services reachable without link-local addressing: AWS over IPv6 (in fc00::/7) and
# Alibaba Cloud (in 100.64/10). 169.254.169.254 (AWS, GCP, Azure, Oracle) is link-local.
METADATA = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "fd00:ec2::254", "100.100.100.200"))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SHARED = ipaddress.ip_network("100.64.0.0/10")


class Refused(Exception):
    """Nothing was sent: the URL, or a redirect hop, leads somewhere we do not connect to."""


class Unreachable(Exception):
    """The request was allowed but got no HTTP answer (no such name, refused, timed out)."""


@dataclass(frozen=True)
class Answer:
    status: int
    url: str  # the URL that answered (after redirects)
    hops: int  # redirects followed


def refusal(address: IPAddress, *, allow_local: bool = False) -> str:
    """Why we do not connect to `address` ("a loopback address"), or "" when we may."""
    inner = _embedded_ipv4(address)
    if inner is not None:
        why = refusal(inner, allow_local=allow_local)
        return f"{why} (IPv4 {inner})" if why else ""
    if address in METADATA:
        return "a cloud metadata address"
    for test, kind in ((address.is_link_local, "a link-local"),
                       (address.is_multicast, "a multicast"),
                       (address.is_unspecified, "an unspecified")):
        if test:
            return f"{kind} address"
    if address.is_loopback:
        return "" if allow_local else "a loopback address"
    if address.is_reserved:
        return "a reserved address"
    if address.is_global or allow_local:
        return ""
    if address.version == 4 and address in _SHARED:
        return "a shared (carrier-grade NAT) address"
    return "a private address"


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, in the resolver's order (IP literals as they are)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def probe(url: str, *, method: str = "HEAD", timeout: float = 5.0,
          headers: dict[str, str] | None = None, allow_local: bool = False,
          max_hops: int = MAX_HOPS) -> Answer:
    """Request `url` (body not read) following redirects; the final status, or an exception.

    Raises Refused before anything is sent to a refused address (on any hop), Unreachable when
    there is no answer. `timeout` bounds each hop in total, not each read.
    """
    current = url
    for hop in range(max_hops + 1):
        target = _Target.of(current, allow_local=allow_local, hop=hop)
        status, location = target.send(method, timeout, headers or {})
        if status not in REDIRECTS or not location:
            return Answer(status=status, url=current, hops=hop)
        current = urljoin(current, location)
    raise Unreachable(f"more than {max_hops} redirects")


class Pinned:
    """Many POSTs to one URL over a kept-alive connection to the address that was judged.

    For outgoing webhooks: the receiver's URL is checked once (the same rule as `probe`,
    redirects not followed: a receiver that redirects has not received), and every request
    of a batch reuses the connection, as a browser would. Not thread-safe: one per worker.
    """

    def __init__(self, url: str, *, allow_local: bool = False, timeout: float = 10.0) -> None:
        self._target = _Target.of(url, allow_local=allow_local, hop=0)
        self._timeout = urllib3.Timeout(connect=timeout, read=timeout)
        self._pool: urllib3.HTTPConnectionPool | None = None

    def post(self, body: bytes, headers: dict[str, str]) -> int:
        """The receiver's status (its body read and dropped); Unreachable without one."""
        target, problem = self._target, "no address"
        sent = {"Host": target._host_header(), **headers}
        for address in target.addresses:
            for fresh in (self._pool is None, True):
                pool = self._pool or self._open(address)
                try:
                    response = pool.urlopen("POST", target.path, body=body, headers=sent,
                                            redirect=False, retries=False,
                                            assert_same_host=False, preload_content=False)
                    response.drain_conn()
                    response.release_conn()
                except NewConnectionError as exc:
                    self.close()
                    problem = _reason(exc)
                    break  # the next address
                except (Urllib3Error, OSError) as exc:
                    self.close()
                    if fresh:  # (a kept-alive connection the receiver closed: once more)
                        raise Unreachable(_reason(exc)) from None
                    continue
                self._pool = pool
                return int(response.status)
        raise Unreachable(f"{target.host}: {problem}")

    def _open(self, address: str) -> urllib3.HTTPConnectionPool:
        target = self._target
        if target.scheme == "https":
            return urllib3.HTTPSConnectionPool(
                address, target.port, timeout=self._timeout, retries=False, maxsize=1,
                server_hostname=target.host, assert_hostname=target.host,
                cert_reqs="CERT_REQUIRED", ca_certs=ca_bundle())
        return urllib3.HTTPConnectionPool(address, target.port, timeout=self._timeout,
                                          retries=False, maxsize=1)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None


# ---- internals -------------------------------------------------------------------------------


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries to an IPv4 host, if it is one of those."""
    if address.version != 6:
        return None
    assert isinstance(address, ipaddress.IPv6Address)
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


@dataclass(frozen=True)
class _Target:
    """One hop: where it goes, checked, and the addresses it may be sent to."""

    scheme: str
    host: str
    port: int
    path: str
    addresses: tuple[str, ...]

    @classmethod
    def of(cls, url: str, *, allow_local: bool, hop: int) -> _Target:
        where = f"redirects to {url}: " if hop else ""
        try:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        except ValueError:
            raise Refused(f"{where}not a valid URL") from None
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise Refused(f"{where}not an http(s) URL")
        try:  # the ASCII form goes to the resolver and into the Host header
            host = parts.hostname.encode("idna").decode("ascii")
        except UnicodeError:
            raise Refused(f"{where}not a valid host name") from None
        try:
            addresses = resolve(host, port)
        except OSError as exc:
            raise Unreachable(f"{where}{host} does not resolve ({_reason(exc)})") from None
        for address in addresses:
            why = refusal(ipaddress.ip_address(address.split("%", 1)[0]),
                          allow_local=allow_local)
            if why and host == address:
                raise Refused(f"{where}{host} is {why}")
            if why:
                raise Refused(f"{where}{host} resolves to {address}, {why}")
        if not addresses:
            raise Unreachable(f"{where}{host} does not resolve")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(scheme, host, port, path, tuple(addresses))

    def send(self, method: str, timeout: float, headers: dict[str, str]) -> tuple[int, str]:
        """(status, Location) from the first address that takes the connection."""
        problem = "no address"
        for address in self.addresses:
            try:
                return self._send_to(address, method, timeout, headers)
            except NewConnectionError as exc:
                problem = _reason(exc)  # try the next address, as a browser would
        raise Unreachable(f"{self.host}: {problem}")

    def _send_to(self, address: str, method: str, timeout: float,
                 headers: dict[str, str]) -> tuple[int, str]:
        deadline = Deadline(timeout)
        limit = urllib3.Timeout(connect=timeout, read=timeout)
        if self.scheme == "https":
            pool = deadline.pool_class(urllib3.HTTPSConnectionPool)(
                address, self.port, timeout=limit, retries=False, maxsize=1,
                server_hostname=self.host, assert_hostname=self.host,
                cert_reqs="CERT_REQUIRED", ca_certs=ca_bundle())
        else:
            pool = deadline.pool_class(urllib3.HTTPConnectionPool)(
                address, self.port, timeout=limit, retries=False, maxsize=1)
        sent = {"Host": self._host_header(), "Accept": "*/*", **headers}
        try:
            with deadline, pool:
                response = pool.urlopen(method, self.path, headers=sent, redirect=False,
                                        retries=False, preload_content=False,
                                        assert_same_host=False)
                response.close()  # the status is the answer; the body is not ours to read
        except NewConnectionError:
            raise
        except (Urllib3Error, OSError) as exc:
            if deadline.expired or isinstance(exc, (TimeoutError, urllib3.exceptions.TimeoutError)):
                raise Unreachable(f"timed out after {timeout:g}s") from None
            if isinstance(exc, SSLError):
                raise Unreachable(f"TLS error ({_reason(exc)})") from None
            raise Unreachable(_reason(exc)) from None
        return response.status, response.headers.get("Location", "")

    def _host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def _reason(exc: BaseException) -> str:
    """The human part of a socket or urllib3 error, e.g. "Connection refused"."""
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "No route to host",
                   "certificate verify failed", "Network is unreachable"):
        if marker.lower() in text.lower():
            return marker
    return type(exc).__name__
