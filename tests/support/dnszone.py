"""A domain's DNS for tests: a dnslib server on 127.0.0.1 answering from records the test sets.

Answers TXT, CNAME and MX (a CNAME is followed within the zone, as a recursive resolver
would), NXDOMAIN for names it has nothing at, and counts the questions it was asked, so a test
can tell whether a check looked anything up. No lookup leaves the machine.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from dnslib import CNAME, MX, QTYPE, RCODE, RR, TXT
from dnslib.server import BaseResolver, DNSLogger, DNSServer


class Zone(BaseResolver):  # type: ignore[misc]
    """Records by (name, type); names without the trailing dot, any case."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], list[Any]] = {}
        self.failing: set[str] = set()  # names answered with SERVFAIL (a broken DNS server)
        self.questions = 0
        self.port = 0

    def clear(self) -> None:
        self.records.clear()
        self.failing.clear()

    def add(self, name: str, kind: str, value: str, preference: int = 10) -> None:
        key = (name.lower().rstrip("."), kind)
        if kind == "TXT":
            chunks = [value[i:i + 255] for i in range(0, len(value), 255)]
            rdata: Any = TXT(chunks)
        elif kind == "CNAME":
            rdata = CNAME(value)
        elif kind == "MX":
            rdata = MX(value, preference)
        else:
            raise ValueError(kind)
        self.records.setdefault(key, []).append(rdata)

    def set(self, name: str, kind: str, value: str) -> None:
        self.records.pop((name.lower().rstrip("."), kind), None)
        self.add(name, kind, value)

    def remove(self, name: str, kind: str) -> None:
        self.records.pop((name.lower().rstrip("."), kind), None)

    @property
    def resolver(self) -> str:
        """The `dns_resolver` setting that points at this zone."""
        return f"127.0.0.1:{self.port}"

    def resolve(self, request: Any, handler: Any) -> Any:
        self.questions += 1
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        kind = QTYPE[request.q.qtype]
        if name in self.failing:
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        qname = request.q.qname
        for _ in range(8):  # (follow CNAMEs inside the zone)
            cname = self.records.get((name, "CNAME"))
            if cname and kind != "CNAME":
                reply.add_answer(RR(qname, QTYPE.CNAME, rdata=cname[0], ttl=60))
                qname = str(cname[0].label)
                name = qname.rstrip(".").lower()
                continue
            break
        found = self.records.get((name, kind), [])
        for rdata in found:
            reply.add_answer(RR(qname, getattr(QTYPE, kind), rdata=rdata, ttl=60))
        if not reply.rr and not any(key[0] == name for key in self.records):
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


@pytest.fixture(scope="module")
def dns_zone() -> Iterator[Zone]:
    """One server per test module; each test sets the records it needs (`clear` first)."""
    zone = Zone()
    server = DNSServer(zone, port=0, address="127.0.0.1",
                       logger=DNSLogger(log="-request,-reply,-truncated,-data", prefix=False))
    server.start_thread()
    zone.port = server.server.server_address[1]
    yield zone
    server.stop()
