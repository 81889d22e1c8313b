"""The shared HTTP session against real servers on 127.0.0.1: retries, timeouts, trust, proxies."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import select
import socket
import ssl
import sys
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from qargo_desktop import __version__
from qargo_desktop.core.config import Settings
from qargo_desktop.core.http import (
    QargoSession,
    RequestCancelled,
    RetryPolicy,
    build_session,
    cancel_scope,
    default_user_agent,
    describe_proxy,
    parse_retry_after,
    resolve_proxy,
)

FAR_HOST = "api.qargo.invalid"  # never resolved: requests to it must go through our proxy
_LOOPBACK_NAMES = {"127.0.0.1", "::1", "localhost"}


# -- a guard: nothing in these tests may resolve or reach anything but loopback -------------


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    real_getaddrinfo = socket.getaddrinfo

    def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name not in _LOOPBACK_NAMES:
            raise socket.gaierror(socket.EAI_NONAME, f"test guard: {name} is not loopback")
        return real_getaddrinfo(host, *args, **kwargs)

    def refuse(name: str) -> str:
        raise socket.gaierror(socket.EAI_NONAME, f"test guard: {name}")

    monkeypatch.setattr(socket, "getaddrinfo", guarded)
    monkeypatch.setattr(socket, "gethostbyname", refuse)


# -- a scriptable server ------------------------------------------------------------------


@dataclass
class Action:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    drop: bool = False  # close the connection without answering
    truncate: bool = False  # promise the whole body, send half, close


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Script:
    def __init__(self) -> None:
        self.actions: dict[str, deque[Action]] = defaultdict(deque)
        self.seen: list[Seen] = []
        self.lock = threading.Lock()

    def on(self, path: str, *actions: Action) -> None:
        self.actions[path].extend(actions)

    def take(self, path: str) -> Action:
        with self.lock:
            queue = self.actions.get(path)
            return queue.popleft() if queue else Action()

    def requests_to(self, path: str) -> list[Seen]:
        return [s for s in self.seen if urlsplit(s.path).path == path]


class ScriptedHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ScriptedServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        script = self.server.script
        with script.lock:
            script.seen.append(Seen(self.command, self.path, dict(self.headers), body))
        action = script.take(urlsplit(self.path).path)
        if action.delay_s:
            time.sleep(action.delay_s)
        if action.drop:
            self.close_connection = True
            return
        self.send_response(action.status)
        for name, value in action.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(action.body)))
        self.end_headers()
        if action.truncate:
            self.wfile.write(action.body[: len(action.body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(action.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle  # noqa: N815 (http.server names)


class ScriptedServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), ScriptedHandler)
        self.script = Script()
        self.tls = tls
        self.connections = 0

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = self.socket.accept()
        self.connections += 1
        if self.tls is None:
            return sock, address
        try:
            return self.tls.wrap_socket(sock, server_side=True), address
        except OSError:
            sock.close()
            raise

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url(self, path: str = "/", host: str = "127.0.0.1") -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{host}:{self.port}{path}"


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with _serving(ScriptedServer()) as running:
        yield running


def _serving(server: ThreadingHTTPServer) -> Any:
    class Running:
        def __enter__(self) -> Any:
            self.thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            self.thread.start()
            return server

        def __exit__(self, *exc: object) -> None:
            server.shutdown()
            server.server_close()
            self.thread.join(5)

    return Running()


# -- certificates ---------------------------------------------------------------------------


@dataclass
class Pki:
    ca_file: Path
    other_ca_file: Path
    server_context: ssl.SSLContext


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _make_ca(common: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(_name(common))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca_key, ca_cert = _make_ca("qargo-desktop test CA")
    _other_key, other_cert = _make_ca("unrelated test CA")

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.DNSName("localhost"),
                    x509.DNSName(FAR_HOST),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_file = folder / "ca.pem"
    ca_file.write_bytes(ca_cert.public_bytes(pem))
    other_ca_file = folder / "other-ca.pem"
    other_ca_file.write_bytes(other_cert.public_bytes(pem))
    chain = folder / "server.pem"
    chain.write_bytes(
        server_cert.public_bytes(pem)
        + key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain)
    return Pki(ca_file, other_ca_file, context)


@pytest.fixture
def tls_server(pki: Pki) -> Iterator[ScriptedServer]:
    with _serving(ScriptedServer(tls=pki.server_context)) as running:
        yield running


# -- helpers --------------------------------------------------------------------------------


class Sleeps(list[float]):
    def __call__(self, delay: float) -> None:
        self.append(delay)


def _session(settings: Settings | None = None, **policy: Any) -> tuple[QargoSession, Sleeps]:
    sleeps = Sleeps()
    options: dict[str, Any] = {"jitter": 0.0, "sleep": sleeps}
    options.update(policy)
    session = build_session(settings or Settings(), retry_policy=RetryPolicy(**options))
    return session, sleeps


# -- retries --------------------------------------------------------------------------------


def test_retry_after_seconds_is_honoured(server: ScriptedServer) -> None:
    server.script.on("/v1/me", Action(503, headers={"Retry-After": "2"}), Action(200, b"{}"))
    session, sleeps = _session()

    response = session.get(server.url("/v1/me"))

    assert response.status_code == 200
    assert sleeps == [2.0]
    assert len(server.script.requests_to("/v1/me")) == 2


def test_retry_after_http_date_is_honoured(server: ScriptedServer) -> None:
    now = dt.datetime(2025, 3, 4, 10, 0, 0, tzinfo=dt.UTC)
    when = format_datetime(now + dt.timedelta(seconds=30), usegmt=True)
    server.script.on("/x", Action(429, headers={"Retry-After": when}), Action(200))
    session, sleeps = _session(now=lambda: now)

    assert session.get(server.url("/x")).status_code == 200
    assert sleeps == [30.0]


def test_retry_after_beyond_the_budget_returns_the_response(server: ScriptedServer) -> None:
    server.script.on("/x", Action(429, b"slow down", headers={"Retry-After": "120"}))
    session, sleeps = _session()

    response = session.get(server.url("/x"))

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "120"
    assert response.text == "slow down"
    assert sleeps == []
    assert len(server.script.requests_to("/x")) == 1


def test_total_wait_budget_is_respected(server: ScriptedServer) -> None:
    busy = Action(503, headers={"Retry-After": "25"})
    server.script.on("/x", busy, busy, busy, busy)
    session, sleeps = _session()

    assert session.get(server.url("/x")).status_code == 503
    assert sleeps == [25.0, 25.0]  # a third wait would pass 60 s
    assert len(server.script.requests_to("/x")) == 3


def test_backoff_without_retry_after_and_attempt_limit(server: ScriptedServer) -> None:
    server.script.on("/x", Action(502), Action(504), Action(503), Action(503), Action(200))
    session, sleeps = _session()

    assert session.get(server.url("/x")).status_code == 503
    assert sleeps == [0.5, 1.0, 2.0]
    assert len(server.script.requests_to("/x")) == 4


def test_other_errors_are_not_retried(server: ScriptedServer) -> None:
    server.script.on("/x", Action(500), Action(200))
    session, sleeps = _session()
    assert session.get(server.url("/x")).status_code == 500
    assert sleeps == []


def test_post_is_never_retried(server: ScriptedServer) -> None:
    server.script.on("/v1/things", Action(503, headers={"Retry-After": "1"}), Action(201))
    session, sleeps = _session()

    response = session.post(server.url("/v1/things"), json={"address": "a@b.example"})

    assert response.status_code == 503
    assert sleeps == []
    assert len(server.script.requests_to("/v1/things")) == 1


def test_post_is_not_retried_after_a_dropped_connection(server: ScriptedServer) -> None:
    server.script.on("/v1/things", Action(drop=True), Action(201))
    session, sleeps = _session()

    with pytest.raises(requests.ConnectionError):
        session.post(server.url("/v1/things"), json={"address": "a@b.example"})
    assert sleeps == []
    assert len(server.script.requests_to("/v1/things")) == 1


def test_patch_is_not_retried_either(server: ScriptedServer) -> None:
    server.script.on("/x", Action(503), Action(200))
    session, _sleeps = _session()
    assert session.patch(server.url("/x"), data=b"{}").status_code == 503


def test_post_with_idempotency_key_is_retried(server: ScriptedServer) -> None:
    server.script.on(
        "/v1/things", Action(drop=True), Action(429, headers={"Retry-After": "1"}), Action(201)
    )
    session, sleeps = _session()

    response = session.post(
        server.url("/v1/things"),
        json={"address": "a@b.example"},
        headers={"Idempotency-Key": "5c3e0d1a-key"},
    )

    assert response.status_code == 201
    assert sleeps == [0.5, 1.0]
    seen = server.script.requests_to("/v1/things")
    assert len(seen) == 3
    assert {s.body for s in seen} == {b'{"address": "a@b.example"}'}
    assert {s.headers["Idempotency-Key"] for s in seen} == {"5c3e0d1a-key"}


def test_dropped_connection_is_retried_for_get(server: ScriptedServer) -> None:
    server.script.on("/x", Action(drop=True), Action(200, b"fine"))
    session, sleeps = _session()

    response = session.get(server.url("/x"))

    assert response.text == "fine"
    assert sleeps == [0.5]


def test_truncated_body_is_retried_for_get(server: ScriptedServer) -> None:
    server.script.on("/x", Action(200, b"0123456789" * 10, truncate=True), Action(200, b"whole"))
    session, sleeps = _session()

    assert session.get(server.url("/x")).text == "whole"
    assert sleeps == [0.5]


def test_put_and_delete_are_retried(server: ScriptedServer) -> None:
    server.script.on("/x", Action(503), Action(200), Action(503), Action(204, b""))
    session, sleeps = _session()
    assert session.put(server.url("/x"), json={"a": 1}).status_code == 200
    assert session.delete(server.url("/x")).status_code == 204
    assert sleeps == [0.5, 0.5]


def test_refused_connection_is_retried_for_get_then_raised() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    session, sleeps = _session()

    with pytest.raises(requests.ConnectionError):
        session.get(f"http://127.0.0.1:{port}/x")
    assert sleeps == [0.5, 1.0, 2.0]


def test_read_timeout_comes_from_settings_and_is_not_retried(server: ScriptedServer) -> None:
    server.script.on("/slow", Action(200, delay_s=2.0), Action(200))
    session, sleeps = _session(Settings(http_timeout_s=0.3))

    started = time.monotonic()
    with pytest.raises(requests.ReadTimeout):
        session.get(server.url("/slow"))  # no timeout given: the settings' applies

    assert time.monotonic() - started < 1.5
    assert sleeps == []
    assert len(server.script.requests_to("/slow")) == 1


def test_an_explicit_timeout_wins(server: ScriptedServer) -> None:
    server.script.on("/slow", Action(200, delay_s=0.5))
    session, _sleeps = _session(Settings(http_timeout_s=0.2))
    assert session.get(server.url("/slow"), timeout=5).status_code == 200


def test_cancellation_interrupts_a_retry_wait(server: ScriptedServer) -> None:
    server.script.on("/x", Action(503, headers={"Retry-After": "30"}), Action(200))
    cancel = threading.Event()
    session = build_session(Settings(), retry_policy=RetryPolicy(cancel_event=cancel))
    threading.Timer(0.2, cancel.set).start()

    started = time.monotonic()
    with pytest.raises(RequestCancelled):
        session.get(server.url("/x"))
    assert time.monotonic() - started < 2.0
    assert len(server.script.requests_to("/x")) == 1


def test_cancel_scope_interrupts_only_its_own_operation(server: ScriptedServer) -> None:
    server.script.on("/x", Action(503, headers={"Retry-After": "30"}))
    session = build_session(Settings())
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()

    started = time.monotonic()
    with cancel_scope(cancel), pytest.raises(RequestCancelled):
        session.get(server.url("/x"))
    assert time.monotonic() - started < 2.0

    # Outside the scope a new request is not affected by the set event.
    server.script.on("/y", Action(200))
    assert session.get(server.url("/y")).status_code == 200


def test_already_cancelled_sends_nothing(server: ScriptedServer) -> None:
    cancel = threading.Event()
    cancel.set()
    session = build_session(Settings())
    with cancel_scope(cancel), pytest.raises(RequestCancelled):
        session.get(server.url("/x"))
    assert server.script.seen == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("7", 7.0),
        (" 0 ", 0.0),
        ("soon", None),
        ("-5", None),
        ("Tue, 04 Mar 2025 10:01:00 GMT", 60.0),
        ("Tue, 04 Mar 2025 09:00:00 GMT", 0.0),  # in the past: no wait
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    now = dt.datetime(2025, 3, 4, 10, 0, 0, tzinfo=dt.UTC)
    assert parse_retry_after(value, now) == expected


def test_streamed_bodies_are_not_repeated() -> None:
    policy = RetryPolicy()
    request = requests.Request("PUT", "http://127.0.0.1/x", data=iter([b"a", b"b"])).prepare()
    assert not policy.may_retry(request)
    keyed = requests.Request("POST", "http://127.0.0.1/x", headers={"Idempotency-Key": "k"})
    assert policy.may_retry(keyed.prepare())


# -- headers --------------------------------------------------------------------------------


def test_user_agent_names_app_os_and_python(server: ScriptedServer) -> None:
    session, _sleeps = _session()
    session.get(server.url("/x"))
    agent = server.script.seen[0].headers["User-Agent"]
    assert agent == default_user_agent()
    assert re.fullmatch(
        rf"qargo-desktop/{re.escape(__version__)} \([^();]+; Python \d+\.\d+\)", agent
    )
    custom = build_session(Settings(), user_agent="qargo-desktop-selftest/1")
    custom.get(server.url("/x"))
    assert server.script.seen[1].headers["User-Agent"] == "qargo-desktop-selftest/1"


def test_netrc_is_not_read(
    server: ScriptedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine 127.0.0.1 login someone password hunter2\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    session, _sleeps = _session()
    session.get(server.url("/x"))
    assert "Authorization" not in server.script.seen[0].headers


# -- trust ----------------------------------------------------------------------------------


def test_untrusted_server_is_refused(tls_server: ScriptedServer) -> None:
    session, sleeps = _session()
    with pytest.raises(requests.exceptions.SSLError):
        session.get(tls_server.url("/x"))
    assert sleeps == []  # a certificate problem is not retried
    assert tls_server.connections == 1


def test_extra_ca_file_from_settings_is_trusted(tls_server: ScriptedServer, pki: Pki) -> None:
    session, _sleeps = _session(Settings(extra_ca_file=pki.ca_file))
    assert session.get(tls_server.url("/x")).text == "ok"
    assert session.get(tls_server.url("/x", host="localhost")).text == "ok"


def test_extra_ca_file_argument_is_trusted(tls_server: ScriptedServer, pki: Pki) -> None:
    session = build_session(Settings(extra_ca_file=pki.other_ca_file), extra_ca_file=pki.ca_file)
    assert session.get(tls_server.url("/x")).status_code == 200


def test_ca_environment_variables_do_not_add_trust(
    tls_server: ScriptedServer, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki.ca_file))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(pki.ca_file))
    # The premise: a plain requests session lets the variable decide trust.
    assert requests.Session().get(tls_server.url("/x"), timeout=5).status_code == 200

    session, _sleeps = _session()
    with pytest.raises(requests.exceptions.SSLError):
        session.get(tls_server.url("/x"))


def test_ca_environment_variables_do_not_remove_trust(
    tls_server: ScriptedServer, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki.other_ca_file))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(pki.other_ca_file))
    with pytest.raises(requests.exceptions.SSLError):
        requests.Session().get(tls_server.url("/x"), timeout=5)

    session, _sleeps = _session(Settings(extra_ca_file=pki.ca_file))
    assert session.get(tls_server.url("/x")).status_code == 200


def test_verify_argument_cannot_weaken_or_replace_trust(
    tls_server: ScriptedServer, pki: Pki
) -> None:
    session, _sleeps = _session()
    with pytest.raises(requests.exceptions.SSLError):
        session.get(tls_server.url("/x"), verify=False)
    with pytest.raises(requests.exceptions.SSLError):
        session.get(tls_server.url("/x"), verify=str(pki.ca_file))


def test_a_connection_carries_the_next_request(tls_server: ScriptedServer, pki: Pki) -> None:
    session, _sleeps = _session(Settings(extra_ca_file=pki.ca_file))
    for _ in range(3):
        assert session.get(tls_server.url("/x")).text == "ok"
    assert tls_server.connections == 1


@pytest.mark.skipif(
    sys.platform in ("win32", "darwin"), reason="the OS verifies certificates there"
)
def test_system_cas_are_read_once_per_session(
    tls_server: ScriptedServer, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    # OpenSSL's default CA file stands for the system's bundle here.
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_file))
    session, _sleeps = _session()
    monkeypatch.delenv("SSL_CERT_FILE")

    # A new connection (another host name, another pool) trusts what was read at the start.
    assert session.get(tls_server.url("/x", host="localhost")).text == "ok"
    assert session.get(tls_server.url("/x")).text == "ok"
    assert tls_server.connections == 2
    # A session built now reads the real system bundle, which does not know the test CA.
    with pytest.raises(requests.exceptions.SSLError):
        _session()[0].get(tls_server.url("/x"))


def test_bad_extra_ca_file_is_reported(tmp_path: Path) -> None:
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(ValueError, match="cannot be loaded"):
        build_session(Settings(extra_ca_file=broken))


# -- proxies --------------------------------------------------------------------------------


class ProxyHandler(BaseHTTPRequestHandler):
    """A forward proxy: absolute-URI requests are answered, CONNECT tunnels go to a route."""

    protocol_version = "HTTP/1.1"
    server: ProxyServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.seen.append(f"{self.command} {self.path}")
        body = b"via proxy"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_CONNECT(self) -> None:
        self.server.seen.append(f"CONNECT {self.path}")
        port = self.server.routes.get(self.path)
        if port is None:
            self.send_error(502)
            return
        upstream = socket.create_connection(("127.0.0.1", port))
        self.send_response(200, "Connection established")
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        sockets = [self.connection, upstream]
        try:
            while True:
                readable, _w, _x = select.select(sockets, [], [], 5)
                if not readable:
                    return
                for source in readable:
                    data = source.recv(65536)
                    if not data:
                        return
                    (upstream if source is self.connection else self.connection).sendall(data)
        finally:
            upstream.close()


class ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ProxyHandler)
        self.seen: list[str] = []
        self.routes: dict[str, int] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def proxy() -> Iterator[ProxyServer]:
    with _serving(ProxyServer()) as running:
        yield running


def test_proxy_from_settings_is_used(proxy: ProxyServer) -> None:
    session, _sleeps = _session(Settings(proxy=proxy.url))
    response = session.get(f"http://{FAR_HOST}/v1/me?x=1")
    assert response.text == "via proxy"
    assert proxy.seen == [f"GET http://{FAR_HOST}/v1/me?x=1"]


def test_https_through_a_connect_proxy_uses_our_trust(
    proxy: ProxyServer, tls_server: ScriptedServer, pki: Pki
) -> None:
    proxy.routes[f"{FAR_HOST}:443"] = tls_server.port
    untrusting, _sleeps = _session(Settings(proxy=proxy.url))
    with pytest.raises(requests.exceptions.SSLError):
        untrusting.get(f"https://{FAR_HOST}/v1/me")

    session, _sleeps = _session(Settings(proxy=proxy.url, extra_ca_file=pki.ca_file))
    assert session.get(f"https://{FAR_HOST}/v1/me").text == "ok"
    assert proxy.seen[-1] == f"CONNECT {FAR_HOST}:443"
    assert tls_server.script.seen[-1].path == "/v1/me"


def test_environment_proxy_used_in_system_mode(
    proxy: ProxyServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    session, _sleeps = _session(Settings(proxy="system"))
    assert session.get(f"http://{FAR_HOST}/x").text == "via proxy"


def test_proxy_none_ignores_the_environment(
    proxy: ProxyServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    session, _sleeps = _session(Settings(proxy="none"), max_attempts=1)
    with pytest.raises(requests.ConnectionError):
        session.get(f"http://{FAR_HOST}/x")  # direct: the guard refuses the name lookup
    assert proxy.seen == []


def test_loopback_is_never_proxied(server: ScriptedServer, proxy: ProxyServer) -> None:
    session, _sleeps = _session(Settings(proxy=proxy.url))
    assert session.get(server.url("/x")).text == "ok"
    assert session.get(server.url("/x", host="localhost")).text == "ok"
    assert proxy.seen == []


def test_redirect_to_another_host_chooses_its_proxy_afresh(
    server: ScriptedServer, proxy: ProxyServer
) -> None:
    server.script.on("/go", Action(302, b"", headers={"Location": f"http://{FAR_HOST}/there"}))
    session, _sleeps = _session(Settings(proxy=proxy.url))
    response = session.get(server.url("/go"), headers={"Authorization": "Bearer abc"})
    assert response.text == "via proxy"
    assert proxy.seen == [f"GET http://{FAR_HOST}/there"]


def test_describe_proxy_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    api = "https://api.qargo.example/api"

    assert describe_proxy(Settings(proxy="http://me:pw@127.0.0.1:3128"), api) == (
        "http://me:***@127.0.0.1:3128",
        "settings",
    )
    assert resolve_proxy(Settings(proxy="http://me:pw@127.0.0.1:3128"), api) == (
        "http://me:pw@127.0.0.1:3128",
        "settings",
    )
    assert describe_proxy(Settings(proxy="none"), api) == (None, "disabled")
    assert describe_proxy(Settings(), api) == (None, "none")
    assert describe_proxy(
        Settings(proxy="http://127.0.0.1:3128"), "https://127.0.0.1:8443/api"
    ) == (
        None,
        "bypassed",
    )

    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    assert describe_proxy(Settings(), api) == ("http://127.0.0.1:3128", "environment")
    assert describe_proxy(Settings(api_base_url=api)) == ("http://127.0.0.1:3128", "environment")
    monkeypatch.setenv("NO_PROXY", ".qargo.example")
    assert describe_proxy(Settings(), api) == (None, "bypassed")


def test_session_is_a_requests_session_with_our_adapter_only() -> None:
    session = build_session(Settings())
    assert isinstance(session, requests.Session)
    assert set(session.adapters) == {"https://", "http://"}
    assert session.trust_env is False
