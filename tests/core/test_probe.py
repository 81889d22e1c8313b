"""Endpoint probes against the sandbox, a refused port, a failed lookup and a loopback proxy."""

from __future__ import annotations

import base64
import dataclasses
import select
import socket
import socketserver
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from qargo_desktop.core.http import RetryPolicy, TrustStoreAdapter, build_session, build_ssl_context
from qargo_desktop.core.probe import ClockSkew, probe_endpoint

SANDBOX_CA = "Qargo Desktop Sandbox local CA"


@pytest.fixture
def session(sandbox: Any, settings_for: Any) -> Iterator[requests.Session]:
    built = build_session(settings_for(sandbox), retry_policy=RetryPolicy(max_attempts=1))
    yield built
    built.close()


def test_every_layer_of_a_reachable_service(sandbox: Any, session: requests.Session) -> None:
    url = sandbox.info.graph_base_url

    probe = probe_endpoint("graph", url, session, http_url=f"{url}/me")

    assert probe.ok, probe.summary()
    assert [s.name for s in probe.steps] == ["dns", "tcp", "tls", "http"]
    assert all(s.elapsed_s is not None and s.elapsed_s >= 0 for s in probe.steps)
    assert probe.addresses == ("127.0.0.1",)
    assert probe.connected_to == f"127.0.0.1:{sandbox.info.https_port}"
    assert probe.tls is not None and probe.tls.verified
    assert probe.tls.version in ("TLSv1.2", "TLSv1.3")
    assert SANDBOX_CA in probe.tls.issuer
    # Unauthenticated, yet an answer: the service is reachable.
    assert probe.http_status == 401
    assert probe.proxy is None and probe.proxy_source == "bypassed"
    assert probe.skew_s is not None and abs(probe.skew_s) < 1.5
    assert probe.to_json()["steps"][2]["name"] == "tls"


def test_an_untrusted_certificate_names_its_issuer(sandbox: Any, settings_for: Any) -> None:
    # What a TLS-inspecting proxy looks like: a certificate from a CA the app does not trust.
    settings = dataclasses.replace(settings_for(sandbox), extra_ca_file=None)
    untrusting = build_session(settings, retry_policy=RetryPolicy(max_attempts=1))

    probe = probe_endpoint("api", sandbox.info.api_base_url, untrusting)

    tls = probe.step("tls")
    assert tls is not None and tls.ok is False
    assert tls.error_key == "net:tls"
    assert SANDBOX_CA in tls.detail
    assert probe.tls is not None and not probe.tls.verified
    http = probe.step("http")
    assert http is not None and http.ok is None
    untrusting.close()


def test_a_refused_connection(session: requests.Session) -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    # Nothing listens on the port any more.

    probe = probe_endpoint("api", f"https://127.0.0.1:{port}/api", session, timeout_s=2)

    tcp = probe.step("tcp")
    assert tcp is not None and tcp.ok is False and tcp.error_key == "net:connection"
    assert [s.ok for s in probe.steps] == [True, False, None, None]
    assert probe.failed_step is tcp


def test_a_failed_name_lookup(monkeypatch: pytest.MonkeyPatch, session: requests.Session) -> None:
    def no_such_name(*_args: object, **_kwargs: object) -> list[Any]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    # No real lookup: the probe must not ask a resolver anywhere.
    monkeypatch.setattr(socket, "getaddrinfo", no_such_name)

    probe = probe_endpoint("api", "https://api.qargo.invalid/api", session)

    dns = probe.step("dns")
    assert dns is not None and dns.ok is False and dns.error_key == "net:dns"
    assert "api.qargo.invalid" in dns.detail
    assert not probe.ok


def test_an_unavailable_service(sandbox: Any, session: requests.Session) -> None:
    sandbox.set_faults(unavailable_probability=1.0, services=["api"], max_faults=1)

    probe = probe_endpoint("api", sandbox.info.api_base_url, session)

    http = probe.step("http")
    assert http is not None and http.ok is False and http.error_key == "net:unavailable"
    assert probe.http_status == 503


def test_cancel_stops_between_layers(sandbox: Any, session: requests.Session) -> None:
    cancel = threading.Event()
    cancel.set()

    probe = probe_endpoint("api", sandbox.info.api_base_url, session, cancel=cancel)

    assert [s.name for s in probe.steps if s.ok is None] == ["tcp", "tls", "http"]


# -- through a proxy ----------------------------------------------------------------------


class _Proxy(socketserver.ThreadingTCPServer):
    """A CONNECT proxy on loopback that only tunnels to loopback."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, password: str | None) -> None:
        super().__init__(("127.0.0.1", 0), _Tunnel)
        self.password = password
        self.seen: list[tuple[str, str | None]] = []


class _Tunnel(socketserver.BaseRequestHandler):
    server: _Proxy

    def handle(self) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.request.recv(4096)
            if not chunk:
                return
            head += chunk
        lines = head.decode("latin-1").split("\r\n")
        method, target, _version = lines[0].split(" ", 2)
        auth = next(
            (
                line.split(":", 1)[1].strip()
                for line in lines
                if line.lower().startswith("proxy-authorization:")
            ),
            None,
        )
        self.server.seen.append((f"{method} {target}", auth))
        expected = (
            "Basic " + base64.b64encode(f"user:{self.server.password}".encode()).decode()
            if self.server.password
            else None
        )
        host, _, port = target.rpartition(":")
        if method != "CONNECT" or host != "127.0.0.1":
            self.request.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            return
        if expected and auth != expected:
            self.request.sendall(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b'Proxy-Authenticate: Basic realm="test"\r\nContent-Length: 0\r\n\r\n'
            )
            return
        with socket.create_connection((host, int(port)), timeout=5) as upstream:
            self.request.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            sockets = [self.request, upstream]
            while True:
                readable, _, _ = select.select(sockets, [], [], 5)
                if not readable:
                    return
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (upstream if sock is self.request else self.request).sendall(data)


@pytest.fixture
def proxy() -> Iterator[_Proxy]:
    server = _Proxy(password="s3cret")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def _proxied_session(sandbox: Any, proxy_url: str) -> requests.Session:
    # The app's own session never proxies loopback, so this one says so explicitly.
    session = requests.Session()
    session.trust_env = False
    session.proxies = {"https": proxy_url}
    adapter = TrustStoreAdapter(
        build_ssl_context((sandbox.info.ca_certificate,)),
        timeout=(5, 5),
        retry_policy=RetryPolicy(max_attempts=1),
    )
    session.mount("https://", adapter)
    return session


def test_through_a_proxy_tunnel(sandbox: Any, proxy: _Proxy) -> None:
    port = proxy.server_address[1]
    session = _proxied_session(sandbox, f"http://user:s3cret@127.0.0.1:{port}")

    probe = probe_endpoint("api", sandbox.info.api_base_url, session)

    assert probe.ok, probe.summary()
    assert [s.name for s in probe.steps] == ["dns", "tcp", "proxy", "tls", "http"]
    assert probe.proxy == f"http://user:***@127.0.0.1:{port}"
    assert probe.connected_to == f"127.0.0.1:{port}"
    assert probe.tls is not None and SANDBOX_CA in probe.tls.issuer
    tunnel = f"CONNECT 127.0.0.1:{sandbox.info.https_port}"
    expected_auth = "Basic " + base64.b64encode(b"user:s3cret").decode()
    # The probe's own tunnel and the HTTP request's both went through the proxy.
    assert proxy.seen.count((tunnel, expected_auth)) == 2
    session.close()


def test_a_proxy_that_wants_a_password(sandbox: Any, proxy: _Proxy) -> None:
    port = proxy.server_address[1]
    session = _proxied_session(sandbox, f"http://127.0.0.1:{port}")

    probe = probe_endpoint("api", sandbox.info.api_base_url, session)

    tunnel = probe.step("proxy")
    assert tunnel is not None and tunnel.ok is False
    assert tunnel.error_key == "net:proxy_auth"
    assert "407" in tunnel.detail
    session.close()


# -- clock skew ---------------------------------------------------------------------------


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def test_skew_readings_narrow_each_other() -> None:
    skew = ClockSkew()
    assert skew.estimate() is None
    assert skew.offset_s == 0.0

    # The server is 100.3 s ahead; its Date header drops the fraction.
    for local in (1000.0, 1000.45, 1001.2, 1001.9, 1002.65):
        server = local + 100.3
        skew.add(_at(int(server)), local - 0.01, local + 0.01)
    offset, uncertainty = skew.estimate() or (0.0, 0.0)

    assert abs(offset - 100.3) <= uncertainty
    assert uncertainty < 0.2
    assert skew.samples == 5


def test_skew_readings_that_disagree_fall_back_to_the_median() -> None:
    skew = ClockSkew()
    skew.add(_at(2000), 1000.0, 1000.1)
    skew.add(_at(2000), 1500.0, 1500.1)
    skew.add(_at(2010), 1009.0, 1009.1)
    skew.add(None, 1000.0, 1000.1)

    offset, uncertainty = skew.estimate() or (0.0, 0.0)

    assert offset == pytest.approx(1000.45, abs=0.01)
    assert uncertainty > 400
