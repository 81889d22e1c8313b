"""Corporate networks: proxies, TLS inspection, DNS failures and timeouts, each recognised
and explained in plain words, by the shared HTTP session (MSAL, the API and Graph alike),
by ``network_error`` and by the diagnostics.

Every server here is written for the test and listens on 127.0.0.1: an HTTPS service, a
CONNECT proxy (plain, asking for a password with 407, or refusing with 403), a proxy that
terminates TLS itself with a certificate from its own CA (what a TLS-inspecting firewall
does), and a server that accepts connections and never answers. The services are named
under the reserved ``.invalid`` domain: the client hands such names to the proxy, which
connects every tunnel to the loopback service, and a lookup of such a name without a proxy
fails here without asking any resolver (see ``_loopback_only_lookups``).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import http.server
import json
import selectors
import socket
import socketserver
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from qargo_desktop.core.config import Settings, load_settings
from qargo_desktop.core.diagnostics import (
    DiagnosticsReport,
    classify_issuer,
    collect_diagnostics,
)
from qargo_desktop.core.errors import NetworkError, network_error
from qargo_desktop.core.http import RetryPolicy, build_session
from qargo_desktop.core.identity import IdentityClient

LOOPBACK = "127.0.0.1"
NAMES = ("api.qargo.invalid", "login.qargo.invalid", "graph.qargo.invalid")
CLIENT_ID = "0b6f8a2e-3c51-4d7e-9a6b-2f1c8e4d5a70"
PROXY_USER, PROXY_PASSWORD = "ann", "s3cret-proxy-pw"


# -- certificates ---------------------------------------------------------------------------


@dataclasses.dataclass
class Pki:
    """A CA and a server certificate (for NAMES) it signed, as PEM files."""

    ca_pem: Path
    cert_pem: Path
    key_pem: Path
    ca_name: str


def make_pki(folder: Path, ca_name: str, organisation: str, names: tuple[str, ...] = NAMES) -> Pki:
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, ca_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
        ]
    )
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_subject)
        .issuer_name(ca_subject)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pki = Pki(folder / "ca.pem", folder / "cert.pem", folder / "key.pem", ca_name)
    pki.ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.cert_pem.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    pki.key_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pki


def server_context(pki: Pki) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.cert_pem, pki.key_pem)
    return context


# -- the servers ----------------------------------------------------------------------------


class _Service(http.server.BaseHTTPRequestHandler):
    """Answers like the three services would, enough for probes and MSAL's first steps."""

    protocol_version = "HTTP/1.1"

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.endswith("/.well-known/openid-configuration"):
            base = "https://login.qargo.invalid/tenant"
            self._send(
                200,
                {
                    "issuer": f"{base}/v2.0",
                    "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                    "token_endpoint": f"{base}/oauth2/v2.0/token",
                    "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                },
            )
        elif self.path.endswith("/me"):
            self._send(401, {"error": "no token"})
        else:
            self._send(200, {"path": self.path})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self._send(
            200,
            {
                "user_code": "BCDFGHJKL",
                "device_code": "device-code-from-the-fake-service",
                "verification_uri": "http://127.0.0.1:9/devicelogin",
                "expires_in": 900,
                "interval": 5,
                "message": "Enter BCDFGHJKL",
            },
        )

    def log_message(self, format: str, *args: object) -> None:
        pass


class _TlsServer(http.server.ThreadingHTTPServer):
    """Each connection's TLS handshake runs on its own thread, as in a real server: done in
    ``accept`` it would make every client wait for the slowest one."""

    daemon_threads = True

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__((LOOPBACK, 0), _Service)
        self.context = context

    def get_request(self) -> tuple[Any, Any]:
        connection, address = self.socket.accept()
        return self.context.wrap_socket(
            connection, server_side=True, do_handshake_on_connect=False
        ), address

    def finish_request(self, request: Any, client_address: Any) -> None:
        try:
            request.settimeout(5)
            request.do_handshake()
        except (OSError, ssl.SSLError):
            return  # a client that gave up, or refused the certificate
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients closing early are part of these tests


class Service:
    """An HTTPS server on loopback with a certificate for every name in NAMES."""

    def __init__(self, pki: Pki) -> None:
        self.server = _TlsServer(server_context(pki))
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, args=(0.05,), name="test-service", daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class _ProxyServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, proxy: Proxy) -> None:
        super().__init__((LOOPBACK, 0), _ProxyHandler)
        self.proxy = proxy


class _ProxyHandler(socketserver.BaseRequestHandler):
    server: _ProxyServer

    def handle(self) -> None:
        proxy = self.server.proxy
        sock: socket.socket = self.request
        sock.settimeout(5)
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 65536:
            chunk = sock.recv(4096)
            if not chunk:
                return
            head += chunk
        lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        method, target, _version = lines[0].split(" ", 2)
        headers = {
            name.strip().lower(): value.strip()
            for name, value in (line.split(":", 1) for line in lines[1:] if ":" in line)
        }
        if method != "CONNECT":
            sock.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            return
        proxy.connects.append(target)
        if proxy.credentials is not None:
            expected = "Basic " + base64.b64encode(":".join(proxy.credentials).encode()).decode()
            if headers.get("proxy-authorization") != expected:
                sock.sendall(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                    b'Proxy-Authenticate: Basic realm="corp"\r\n'
                    b"Content-Length: 0\r\nConnection: close\r\n\r\n"
                )
                return
        if proxy.refuse:
            sock.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            return
        if proxy.inspect is not None:
            self._terminate_tls(sock, proxy.inspect)
            return
        # Every tunnel, whatever name it asks for, leads to the loopback service.
        upstream = socket.create_connection((LOOPBACK, proxy.service_port), timeout=5)
        sock.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self._relay(sock, upstream, proxy.stopping)

    @staticmethod
    def _terminate_tls(sock: socket.socket, context: ssl.SSLContext) -> None:
        sock.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        try:
            with context.wrap_socket(sock, server_side=True) as tls:
                tls.recv(65536)
                body = b'{"inspected": true}'
                tls.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                    + str(len(body)).encode()
                    + b"\r\nConnection: close\r\n\r\n"
                    + body
                )
        except (OSError, ssl.SSLError):
            pass  # the client refused the certificate: the point of the exercise

    @staticmethod
    def _relay(a: socket.socket, b: socket.socket, stopping: threading.Event) -> None:
        selector = selectors.DefaultSelector()
        selector.register(a, selectors.EVENT_READ, b)
        selector.register(b, selectors.EVENT_READ, a)
        try:
            while not stopping.is_set():
                for key, _events in selector.select(0.1):
                    source: socket.socket = key.fileobj  # type: ignore[assignment]
                    try:
                        data = source.recv(65536)
                    except OSError:
                        return
                    if not data:
                        return
                    key.data.sendall(data)
        finally:
            selector.close()
            b.close()


class Proxy:
    """A CONNECT proxy on loopback."""

    def __init__(
        self,
        service_port: int,
        *,
        credentials: tuple[str, str] | None = None,
        inspect: Pki | None = None,
        refuse: bool = False,
    ) -> None:
        self.service_port = service_port
        self.credentials = credentials
        self.inspect = server_context(inspect) if inspect else None
        self.refuse = refuse
        self.connects: list[str] = []
        self.stopping = threading.Event()
        self.server = _ProxyServer(self)
        self.port = self.server.server_address[1]
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, args=(0.05,), name="test-proxy", daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class SilentServer:
    """Accepts TCP connections on loopback and never says a word."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((LOOPBACK, 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._accept, name="test-silent", daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                connection, _address = self.sock.accept()
            except OSError:
                continue
            self.held.append(connection)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        for connection in self.held:
            connection.close()
        self.sock.close()


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _loopback_only_lookups(monkeypatch: pytest.MonkeyPatch) -> None:
    """Names under .invalid fail at once, as a resolver would say; no other name is looked up.

    Without this, this machine's resolver would send the question to its DNS server.
    """
    real = socket.getaddrinfo

    def lookup(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = (host.decode() if isinstance(host, bytes) else str(host)).rstrip(".").lower()
        if name.endswith(".invalid"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        assert name in (LOOPBACK, "::1", "localhost", "none"), f"lookup of {name!r}"
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", lookup)


@pytest.fixture(scope="module")
def pkis(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Pki]:
    folder = tmp_path_factory.mktemp("pki")
    return {
        "service": make_pki(folder / "service", "Qargo Test Root CA", "Qargo Test"),
        "inspection": make_pki(
            folder / "inspection", "Contoso Web Filter Inspection CA", "Contoso IT"
        ),
        "zscaler": make_pki(folder / "zscaler", "Zscaler Intermediate Root CA", "Zscaler Inc."),
        "unknown": make_pki(folder / "unknown", "Fabrikam Root 2024", "Fabrikam"),
    }


@pytest.fixture
def service(pkis: dict[str, Pki]) -> Iterator[Service]:
    running = Service(pkis["service"])
    yield running
    running.stop()


@pytest.fixture
def proxies(service: Service, pkis: dict[str, Pki]) -> Iterator[dict[str, Proxy]]:
    running = {
        "plain": Proxy(service.port),
        "auth": Proxy(service.port, credentials=(PROXY_USER, PROXY_PASSWORD)),
        "refusing": Proxy(service.port, refuse=True),
        "inspecting": Proxy(service.port, inspect=pkis["inspection"]),
        "zscaler": Proxy(service.port, inspect=pkis["zscaler"]),
        "unknown": Proxy(service.port, inspect=pkis["unknown"]),
    }
    yield running
    for proxy in running.values():
        proxy.stop()


@pytest.fixture
def settings_with(tmp_path: Path, pkis: dict[str, Pki]):  # type: ignore[no-untyped-def]
    def build(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "authority": "https://login.qargo.invalid/tenant",
            "client_id": CLIENT_ID,
            "api_base_url": "https://api.qargo.invalid/api",
            "graph_base_url": "https://graph.qargo.invalid/v1.0",
            "admin_scopes": "api://qargo/Organisation.Manage",
            "extra_ca_file": str(pkis["service"].ca_pem),
            "http_timeout_s": 2,
            "http_connect_timeout_s": 2,
            "config_dir": str(tmp_path / "app"),
        }
        values.update(overrides)
        return load_settings(None, {}, values)

    return build


def _get(settings: Settings, url: str) -> requests.Response | NetworkError:
    session = build_session(settings, retry_policy=RetryPolicy(max_attempts=1))
    try:
        return session.get(url)
    except requests.RequestException as exc:
        return network_error(exc, service="Qargo API")
    finally:
        session.close()


def _diagnose(settings: Settings) -> DiagnosticsReport:
    return collect_diagnostics(settings, timeout_s=2, include_qt=False)


def _everything(report: DiagnosticsReport) -> str:
    return report.to_text() + json.dumps(report.to_json())


# -- a plain proxy --------------------------------------------------------------------------


def test_one_proxy_for_the_api_graph_and_msal(
    settings_with: Any, proxies: dict[str, Proxy]
) -> None:
    proxy = proxies["plain"]
    settings = settings_with(proxy=proxy.url)

    answer = _get(settings, "https://api.qargo.invalid/api/v1/organisation")
    assert isinstance(answer, requests.Response) and answer.status_code == 200

    # MSAL's own requests (discovery, the device code request) take the same way.
    session = build_session(settings)
    identity = IdentityClient(
        settings.authority or "", CLIENT_ID, session, validate_authority=False
    )
    flow = identity.start_device_flow(settings.admin_scopes)
    assert flow.user_code == "BCDFGHJKL"
    session.close()

    report = _diagnose(settings)
    assert report.ok, report.to_text()
    assert [e.ok for e in report.endpoints] == [True, True, True]
    for route in report.proxy.routes:
        assert route.proxy == proxy.url
        assert route.source == "settings"
        assert "set in the settings" in route.words
    api = report.endpoint("api")
    assert api is not None and api.tls is not None
    assert api.tls.kind == "extra_ca"
    assert "Qargo Test Root CA" in api.tls.text
    assert [s.name for s in api.probe.steps] == ["dns", "tcp", "proxy", "tls", "http"]
    assert set(proxy.connects) >= {
        "api.qargo.invalid:443",
        "login.qargo.invalid:443",
        "graph.qargo.invalid:443",
    }


def test_a_certificate_for_another_name(settings_with: Any, proxies: dict[str, Proxy]) -> None:
    settings = settings_with(proxy=proxies["plain"].url)

    answer = _get(settings, "https://portal.qargo.invalid/")

    assert isinstance(answer, NetworkError)
    assert answer.key == "net:tls_hostname"
    assert "different address" in answer.explain()


# -- a proxy that wants a password ----------------------------------------------------------


def test_a_proxy_asking_for_a_password(settings_with: Any, proxies: dict[str, Proxy]) -> None:
    proxy = proxies["auth"]
    settings = settings_with(proxy=proxy.url)

    answer = _get(settings, "https://api.qargo.invalid/api/v1/organisation")
    assert isinstance(answer, NetworkError)
    assert answer.key == "net:proxy_auth"
    assert "user name and password" in answer.explain()

    report = _diagnose(settings)
    assert not report.ok
    api = report.endpoint("api")
    assert api is not None and api.advice_key == "net:proxy_auth"
    tunnel = api.probe.step("proxy")
    assert tunnel is not None and tunnel.ok is False and "407" in tunnel.detail
    assert api.explanation is not None
    assert "407" in api.explanation and proxy.url in api.explanation
    assert "user name and password" in api.explanation
    assert report.findings[0].severity == "problem"
    assert report.findings[0].advice_key == "net:proxy_auth"


def test_a_proxy_password_works_and_never_shows(
    settings_with: Any, proxies: dict[str, Proxy], tmp_path: Path
) -> None:
    from qargo_desktop.core.support import save_support_bundle

    proxy = proxies["auth"]
    url = f"http://{PROXY_USER}:{PROXY_PASSWORD}@{LOOPBACK}:{proxy.port}"
    settings = settings_with(proxy=url)

    answer = _get(settings, "https://api.qargo.invalid/api/v1/organisation")
    assert isinstance(answer, requests.Response) and answer.status_code == 200

    report = _diagnose(settings)
    assert report.ok, report.to_text()
    masked = f"http://{PROXY_USER}:***@{LOOPBACK}:{proxy.port}"
    assert report.proxy.setting == masked
    assert all(route.proxy == masked for route in report.proxy.routes)
    assert PROXY_PASSWORD not in _everything(report)

    bundle = save_support_bundle(tmp_path / "bundle.zip", settings, report=report)
    import zipfile

    with zipfile.ZipFile(bundle.path) as archive:
        for name in archive.namelist():
            assert PROXY_PASSWORD not in archive.read(name).decode("utf-8"), name


def test_a_proxy_that_refuses_the_tunnel(settings_with: Any, proxies: dict[str, Proxy]) -> None:
    settings = settings_with(proxy=proxies["refusing"].url)

    answer = _get(settings, "https://api.qargo.invalid/api/v1/organisation")
    assert isinstance(answer, NetworkError) and answer.key == "net:proxy_refused"

    api = _diagnose(settings).endpoint("api")
    assert api is not None and api.advice_key == "net:proxy_refused"
    assert api.explanation is not None and "403" in api.explanation


def test_a_proxy_that_is_not_there(settings_with: Any) -> None:
    with socket.socket() as placeholder:
        placeholder.bind((LOOPBACK, 0))
        port = placeholder.getsockname()[1]
    settings = settings_with(proxy=f"http://{LOOPBACK}:{port}")

    answer = _get(settings, "https://api.qargo.invalid/api/v1/organisation")
    assert isinstance(answer, NetworkError) and answer.key == "net:proxy_unreachable"

    api = _diagnose(settings).endpoint("api")
    assert api is not None and api.advice_key == "net:proxy_unreachable"
    assert api.explanation is not None and "proxy could not be reached" in api.explanation


# -- a TLS-inspecting proxy -----------------------------------------------------------------


def test_a_tls_inspecting_proxy_is_named(settings_with: Any, proxies: dict[str, Proxy]) -> None:
    settings = settings_with(proxy=proxies["inspecting"].url)

    answer = _get(settings, "https://api.qargo.invalid/api/v1/organisation")
    assert isinstance(answer, NetworkError)
    assert answer.key == "net:tls"
    assert "TLS-inspecting proxy" in answer.explain()

    report = _diagnose(settings)
    api = report.endpoint("api")
    assert api is not None and not api.ok
    assert api.advice_key == "net:tls"
    assert api.tls is not None
    assert api.tls.kind == "inspection_proxy"
    assert not api.tls.verified
    assert api.tls.issuer_name == "Contoso Web Filter Inspection CA"
    assert api.explanation is not None
    assert "Contoso Web Filter Inspection CA" in api.explanation
    assert "TLS-inspecting proxy" in api.explanation
    assert "does not trust it" in api.explanation
    assert "extra_ca_file" in api.explanation


def test_a_known_inspection_product_is_named(settings_with: Any, proxies: dict[str, Proxy]) -> None:
    report = _diagnose(settings_with(proxy=proxies["zscaler"].url))

    api = report.endpoint("api")
    assert api is not None and api.tls is not None
    assert api.tls.kind == "inspection_proxy"
    assert api.tls.product == "Zscaler"
    assert "TLS-inspecting proxy (Zscaler)" in (api.explanation or "")


def test_an_unknown_ca_is_called_what_it_may_be(
    settings_with: Any, proxies: dict[str, Proxy]
) -> None:
    report = _diagnose(settings_with(proxy=proxies["unknown"].url))

    api = report.endpoint("api")
    assert api is not None and api.tls is not None
    assert api.tls.kind == "unknown_ca"
    assert "neither a well-known public certificate authority nor the extra CA" in api.tls.text
    assert "TLS-inspecting proxy" in api.tls.text and "unknown CA" in api.tls.text


def test_trusting_the_inspection_ca_is_the_fix(
    settings_with: Any, proxies: dict[str, Proxy], pkis: dict[str, Pki]
) -> None:
    settings = settings_with(
        proxy=proxies["inspecting"].url, extra_ca_file=str(pkis["inspection"].ca_pem)
    )

    answer = _get(settings, "https://api.qargo.invalid/api/v1/organisation")

    assert isinstance(answer, requests.Response) and answer.json() == {"inspected": True}
    api = _diagnose(settings).endpoint("api")
    assert api is not None and api.ok
    assert api.tls is not None and api.tls.kind == "extra_ca" and api.tls.verified


# -- DNS and timeouts -----------------------------------------------------------------------


def test_a_name_that_cannot_be_looked_up(settings_with: Any) -> None:
    settings = settings_with(proxy="none")

    answer = _get(settings, "https://api.qargo.invalid/api/v1/me")
    assert isinstance(answer, NetworkError)
    assert answer.key == "net:dns"
    assert "could not be found (DNS)" in answer.explain()

    report = _diagnose(settings)
    assert [e.advice_key for e in report.endpoints] == ["net:dns"] * 3
    api = report.endpoint("api")
    assert api is not None and api.explanation is not None
    assert "api.qargo.invalid could not be looked up" in api.explanation
    assert [s.ok for s in api.probe.steps] == [False, None, None, None]


def test_a_proxy_name_that_cannot_be_looked_up(settings_with: Any) -> None:
    settings = settings_with(proxy="http://proxy.corp.invalid:3128")

    answer = _get(settings, "https://api.qargo.invalid/api/v1/me")
    assert isinstance(answer, NetworkError) and answer.key == "net:proxy_unreachable"

    api = _diagnose(settings).endpoint("api")
    assert api is not None and api.advice_key == "net:proxy_unreachable"


def test_a_service_that_never_answers(settings_with: Any) -> None:
    silent = SilentServer()
    try:
        settings = settings_with(
            proxy="none",
            api_base_url=f"https://{LOOPBACK}:{silent.port}/api",
            http_timeout_s=1,
            http_connect_timeout_s=1,
        )
        answer = _get(settings, f"https://{LOOPBACK}:{silent.port}/api/v1/me")
        assert isinstance(answer, NetworkError)
        assert answer.key == "net:timeout"
        assert "did not answer in time" in answer.explain()

        report = collect_diagnostics(settings, timeout_s=1, include_qt=False)
        api = report.endpoint("api")
        assert api is not None and api.advice_key == "net:timeout"
        assert api.explanation is not None
        assert "did not answer within 1.0 s (at the TLS step)" in api.explanation
    finally:
        silent.stop()


# -- the words for other failures and issuers -----------------------------------------------


@pytest.mark.parametrize(
    ("message", "key"),
    [
        ("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: certificate has expired",
         "net:tls_expired"),
        ("certificate verify failed: self-signed certificate in certificate chain", "net:tls"),
        ("[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)", "net:tls_handshake"),
        ("Tunnel connection failed: 502 Bad Gateway", "net:proxy_refused"),
        ("getaddrinfo failed", "net:dns"),
        ("Read timed out. (read timeout=30)", "net:timeout"),
        ("Connection refused", "net:connection"),
    ],
)  # fmt: skip
def test_network_error_words(message: str, key: str) -> None:
    exception: Exception
    if "SSL" in message or "certificate" in message:
        exception = requests.exceptions.SSLError(message)
    elif "Tunnel" in message:
        exception = requests.exceptions.ProxyError(OSError(message))
    else:
        exception = requests.exceptions.ConnectionError(message)
    assert network_error(exception, service="test").key == key


@pytest.mark.parametrize(
    ("issuer", "kind", "product"),
    [
        ("CN=DigiCert Global G2 TLS RSA SHA256 2020 CA1,O=DigiCert Inc,C=US", "public_ca", None),
        ("CN=Microsoft Azure RSA TLS Issuing CA 04,O=Microsoft Corporation,C=US", "public_ca",
         None),
        ("CN=R11,O=Let's Encrypt,C=US", "public_ca", None),
        ("CN=Zscaler Intermediate Root CA (zscalertwo.net),O=Zscaler Inc.", "inspection_proxy",
         "Zscaler"),
        ("CN=FortiGate CA,O=Fortinet,C=US", "inspection_proxy", "Fortinet FortiGate"),
        ("CN=Corp SSL Decryption,O=Example Corp", "inspection_proxy", None),
        ("CN=Fabrikam Root 2024,O=Fabrikam", "unknown_ca", None),
    ],
)  # fmt: skip
def test_issuers_are_classified(issuer: str, kind: str, product: str | None) -> None:
    assessment = classify_issuer(issuer, verified=False)
    assert assessment.kind == kind
    assert assessment.product == product


def test_the_extra_ca_wins_over_every_other_reading() -> None:
    issuer = "CN=Zscaler Root CA,O=Zscaler Inc."
    assessment = classify_issuer(issuer, verified=True, extra_ca=[issuer])
    assert assessment.kind == "extra_ca"
    assert not assessment.in_the_way
    assert "extra CA in the settings" in assessment.text
