"""Threat: a feed that turns `mailer preflight --check-links` into a probe of our own network.

The feed's author chooses every article link. Checking them from the sending server must not
reach its loopback services, the private network or the cloud metadata service (which hands out
credentials at 169.254.169.254), whether named directly, through a name that resolves there, or
through a redirect from an innocent-looking page.

Each test runs `mailer preflight --check-links` (click's runner) on an edition collected from a
real feed server on 127.0.0.1, with the links pointing at real HTTP servers. Two seams stand in
for the internet, which tests do not have: `mailer.netguard.resolve` (names to addresses, as a
DNS server would answer) and urllib3's `create_connection`, which records every connection
attempt and routes the one fictional public address to a local server (as a router would).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import urllib3.util.connection
from click.testing import CliRunner, Result

from mailer import netguard
from mailer.app import App
from mailer.cli import cli
from mailer.config import PROJECT_ROOT
from mailer.db import init_db
from tests.support.feeds import Post, rss
from tests.support.feedserver import FeedServer
from tests.support.quickhttp import HTTPServer
from tests.support.settings import make_settings

NOW = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
PUBLIC_IP = "93.184.215.14"  # a global address; the "network" below routes it to 127.0.0.1


@dataclass
class Network:
    """The fake DNS and router, and what went through them."""

    feed_port: int  # the feed server's connections (mailer collect's) are not the checker's
    names: dict[str, list[str]] = field(default_factory=dict)
    routes: dict[str, tuple[str, int]] = field(default_factory=dict)
    lookups: list[str] = field(default_factory=list)
    connections: list[str] = field(default_factory=list)

    def resolve(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        if host in self.names:
            return self.names[host]
        if host == "localhost" or _is_ip(host):
            return _real_resolve(host, port)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    def connect(self, address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        host, port = address[0], address[1]
        if port == self.feed_port:
            return _real_connect(address, *args, **kwargs)
        self.connections.append(host)
        assert _is_ip(host), f"a connection by name ({host}) means a second DNS lookup"
        target = self.routes.get(host, (host, port))
        if not netguard.ipaddress.ip_address(target[0]).is_loopback:
            raise ConnectionRefusedError(f"the test network has no route to {host}")
        return _real_connect(target, *args, **kwargs)


_real_resolve = netguard.resolve
_real_connect = urllib3.util.connection.create_connection


def _is_ip(host: str) -> bool:
    try:
        netguard.ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@pytest.fixture
def network(monkeypatch: pytest.MonkeyPatch, feed: FeedServer) -> Network:
    net = Network(feed_port=int(feed.base_url.rsplit(":", 1)[1]))
    monkeypatch.setattr(netguard, "resolve", net.resolve)
    monkeypatch.setattr(urllib3.util.connection, "create_connection", net.connect)
    return net


@pytest.fixture
def feed() -> Iterator[FeedServer]:
    with FeedServer() as server:
        yield server


@pytest.fixture
def site() -> Iterator[HTTPServer]:
    """A web server on 127.0.0.1 exactly (the shared `httpserver` listens on "localhost")."""
    server = HTTPServer(host="127.0.0.1", port=0)
    server.start()
    yield server
    server.clear()
    if server.is_running():
        server.stop()


@pytest.fixture
def preflight(tmp_path: Path, feed: FeedServer):  # type: ignore[no-untyped-def]
    """`preflight(links, allow_local=False)`: collect posts linking to `links`, check them."""
    settings = make_settings(tmp_path)
    app = App.create(settings)
    init_db(app.engine)
    app.close()

    def run(links: list[str], *, allow_local: bool = False) -> Result:
        posts = [Post(5000 + n, f"Story {n}: what the council said", NOW - timedelta(hours=n + 1),
                      link=link) for n, link in enumerate(links)]
        feed.serve_pages([rss(posts)])
        environ = {
            "MAILER_DATABASE_URL": settings.database_url, "MAILER_FEED_URL": feed.url,
            "MAILER_DSN": settings.dsn, "MAILER_BASE_URL": "https://mail.labourlist.org",
            "MAILER_SECRET_KEY": "links-secret", "MAILER_NOW": NOW.isoformat(),
            "MAILER_CONFIG": str(PROJECT_ROOT / "config" / "mailer.toml"),
            "MAILER_SPAMASSASSIN_COMMAND": "true", "MAILER_LINK_CHECK_TIMEOUT": "2",
            "MAILER_ALLOW_LOCAL_LINKS": "true" if allow_local else "false",
        }
        return CliRunner().invoke(cli, ["preflight", "--check-links"], env=environ,
                                  catch_exceptions=False)

    return run


def refused(result: Result) -> list[str]:
    return [line for line in result.output.splitlines() if line.endswith("[link-refused]")]


def test_a_loopback_link_is_refused_and_never_requested(
        preflight, network: Network, site: HTTPServer) -> None:  # type: ignore[no-untyped-def]
    site.expect_request("/admin/").respond_with_data("secret")
    by_address = site.url_for("/admin/")
    by_name = by_address.replace("127.0.0.1", "localhost")
    assert by_address.startswith("http://127.0.0.1:")

    result = preflight([by_address, by_name])

    assert result.exit_code == 0, result.output
    assert sorted(refused(result)) == sorted([
        f"warning: link not checked (127.0.0.1 is a loopback address): {by_address} "
        "[link-refused]",
        f"warning: link not checked (localhost resolves to {network_answer('localhost')}, "
        f"a loopback address): {by_name} [link-refused]",
    ])
    assert site.log == []
    assert network.connections == []


def network_answer(host: str) -> str:
    return _real_resolve(host, 80)[0]


@pytest.mark.parametrize("allow_local", [False, True], ids=["default", "allow_local_links"])
def test_metadata_link_local_and_private_addresses_are_refused_without_a_connection(
        preflight, network: Network, allow_local: bool) -> None:  # type: ignore[no-untyped-def]
    always = {
        "http://169.254.169.254/latest/meta-data/iam/": "169.254.169.254 is a cloud metadata "
                                                         "address",
        "http://[fd00:ec2::254]/latest/": "fd00:ec2::254 is a cloud metadata address",
        "http://169.254.10.1/": "169.254.10.1 is a link-local address",
        "http://[::ffff:169.254.169.254]/": "::ffff:169.254.169.254 is a cloud metadata address "
                                            "(IPv4 169.254.169.254)",
        "http://0.0.0.0/": "0.0.0.0 is an unspecified address",
        "http://meta.test/computeMetadata/v1/": "meta.test resolves to 169.254.169.254, "
                                                "a cloud metadata address",
    }
    local = {
        "http://10.0.0.1/": "10.0.0.1 is a private address",
        "http://100.64.0.1/": "100.64.0.1 is a shared (carrier-grade NAT) address",
        "http://[::ffff:127.0.0.1]/": "::ffff:127.0.0.1 is a loopback address "
                                      "(IPv4 127.0.0.1)",
        "http://mixed.test/": "mixed.test resolves to 192.168.1.20, a private address",
    }
    network.names["meta.test"] = ["169.254.169.254"]
    network.names["mixed.test"] = [PUBLIC_IP, "192.168.1.20"]  # any one bad address refuses

    result = preflight(list(always) + list(local), allow_local=allow_local)

    expected = always if allow_local else always | local
    assert result.exit_code == 0, result.output
    assert sorted(refused(result)) == sorted(
        f"warning: link not checked ({why}): {url} [link-refused]"
        for url, why in expected.items())
    never = {"169.254.169.254", "fd00:ec2::254", "::ffff:169.254.169.254", "169.254.10.1",
             "0.0.0.0"}
    assert not never & set(network.connections)
    if allow_local:  # admitted, and tried (the test network has no route: dead links)
        assert set(network.connections) == {"10.0.0.1", "100.64.0.1", "::ffff:127.0.0.1",
                                            PUBLIC_IP, "192.168.1.20"}
    else:
        assert network.connections == []


def test_a_public_page_that_redirects_inward_is_refused_at_that_hop(
        preflight, network: Network, site: HTTPServer) -> None:  # type: ignore[no-untyped-def]
    """The first hop is a public name (routed to a local server by the test network); its
    302 to loopback, and one to the metadata service, are refused before anything is sent."""
    port = site.port
    network.names["news.example"] = [PUBLIC_IP]
    network.routes[PUBLIC_IP] = ("127.0.0.1", port)
    site.expect_request("/to-loopback/").respond_with_data(
        "", status=302, headers={"Location": f"http://127.0.0.1:{port}/admin/"})
    site.expect_request("/to-metadata/").respond_with_data(
        "", status=301, headers={"Location": "http://169.254.169.254/latest/meta-data/"})
    site.expect_request("/admin/").respond_with_data("secret")
    to_loopback = f"http://news.example:{port}/to-loopback/"
    to_metadata = f"http://news.example:{port}/to-metadata/"

    result = preflight([to_loopback, to_metadata])

    assert sorted(refused(result)) == sorted([
        f"warning: link not checked (redirects to http://127.0.0.1:{port}/admin/: 127.0.0.1 "
        f"is a loopback address): {to_loopback} [link-refused]",
        "warning: link not checked (redirects to http://169.254.169.254/latest/meta-data/: "
        f"169.254.169.254 is a cloud metadata address): {to_metadata} [link-refused]",
    ])
    paths = sorted(request.path for request, _ in site.log)
    assert paths == ["/to-loopback/", "/to-metadata/"]  # HEAD only; /admin/ never asked for
    assert {request.headers["Host"] for request, _ in site.log} == {
        f"news.example:{port}"}
    # One lookup per URL, and the connection went to the address that was judged.
    assert network.lookups.count("news.example") == 2
    assert set(network.connections) == {PUBLIC_IP}


def test_allow_local_links_checks_loopback_but_never_the_metadata_service(
        preflight, network: Network, site: HTTPServer) -> None:  # type: ignore[no-untyped-def]
    """Staging and tests: loopback links are checked; a loopback page redirecting to the
    metadata service still has that hop refused."""
    site.expect_request("/live/", method="HEAD").respond_with_data("")
    site.expect_request("/gone/").respond_with_data("", status=404)
    site.expect_request("/steal/").respond_with_data(
        "", status=302, headers={"Location": "http://169.254.169.254/latest/api/token"})
    live, gone, steal = (site.url_for(p) for p in ("/live/", "/gone/", "/steal/"))

    result = preflight([live, gone, steal], allow_local=True)

    assert result.exit_code == 0, result.output
    assert f"warning: dead link (HTTP 404): {gone} [dead-link]" in result.output
    assert refused(result) == [
        "warning: link not checked (redirects to http://169.254.169.254/latest/api/token: "
        f"169.254.169.254 is a cloud metadata address): {steal} [link-refused]"]
    checked = [line for line in result.output.splitlines()
               if line.endswith(("[dead-link]", "[link-refused]"))]
    assert not any(live in line for line in checked)  # it was checked, and it is fine
    assert ("HEAD", "/live/") in [(r.method, r.path) for r, _ in site.log]
    assert "169.254.169.254" not in network.connections


def test_redirects_are_followed_only_so_far(
        preflight, network: Network, site: HTTPServer) -> None:  # type: ignore[no-untyped-def]
    site.expect_request("/loop/").respond_with_data(
        "", status=302, headers={"Location": "/loop/"})
    loop = site.url_for("/loop/")

    result = preflight([loop], allow_local=True)

    assert f"warning: dead link (more than {netguard.MAX_HOPS} redirects): {loop} " \
           "[dead-link]" in result.output
    assert len(site.log) == 2 * (netguard.MAX_HOPS + 1)  # HEAD, then GET
