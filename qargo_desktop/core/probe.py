"""Endpoint probes: can this computer reach a service, and where does the time go?

Each probe takes one service address through the layers a request goes through, timing
each: the name lookup (DNS), the TCP connection, the TLS handshake (with the certificate's
issuer and the TLS version, which is how a TLS-inspecting proxy shows itself) and an HTTP
request through the app's own session. When a proxy is in use, DNS and TCP concern the
proxy and TLS runs through its ``CONNECT`` tunnel, as the real requests do. A caller whose
own first request to the service will show its HTTP layer anyway can leave that layer out
and add the answer later (:meth:`EndpointProbe.with_http`), sparing the service a request.

The ``Date`` header of each answer also tells how far the local clock is from the
servers'; :class:`ClockSkew` combines those readings.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import math
import socket
import ssl
import statistics
import threading
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

import requests

from qargo_desktop.core.errors import network_error

log = logging.getLogger(__name__)

#: Step names, in the order a request meets them.
DNS, TCP, TLS, HTTP = "dns", "tcp", "tls", "http"

_DEFAULT_TIMEOUT_S = 10.0
_MAX_PROXY_ANSWER = 16 * 1024


@dataclass(frozen=True, slots=True)
class ProbeStep:
    """One layer of one probe.

    Attributes:
        name: ``dns``, ``tcp``, ``tls`` or ``http``.
        ok: Whether it worked; ``None`` when it did not run (an earlier layer failed).
        elapsed_s: How long it took (``None`` when it did not run).
        detail: What it found, in words.
        error_key: The advice key (``net:dns``, ``net:tls``...) when it failed.
    """

    name: str
    ok: bool | None
    elapsed_s: float | None
    detail: str
    error_key: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The step as JSON-ready values."""
        return {
            "name": self.name,
            "ok": self.ok,
            "elapsed_ms": None if self.elapsed_s is None else round(self.elapsed_s * 1000, 1),
            "detail": self.detail,
            "error_key": self.error_key,
        }


@dataclass(frozen=True, slots=True)
class TlsDetails:
    """What the TLS handshake showed.

    Attributes:
        version: The negotiated version (``TLSv1.3``).
        cipher: The negotiated cipher suite.
        issuer: The server certificate's issuer (RFC 4514 text).
        subject: The server certificate's subject.
        not_after: When the certificate expires (ISO 8601), if known.
        verified: Whether the certificate was trusted.
    """

    version: str
    cipher: str
    issuer: str
    subject: str
    not_after: str | None
    verified: bool

    def to_json(self) -> dict[str, Any]:
        """The details as JSON-ready values."""
        return {
            "version": self.version,
            "cipher": self.cipher,
            "issuer": self.issuer,
            "subject": self.subject,
            "not_after": self.not_after,
            "verified": self.verified,
        }


@dataclass(frozen=True, slots=True)
class EndpointProbe:
    """The result of probing one service address.

    Attributes:
        name: Which service (``api``, ``identity``, ``graph``).
        url: The address probed.
        host: The service's host name.
        port: The service's port.
        proxy: The proxy in use (password masked), or ``None`` for a direct connection.
        proxy_source: Where the proxy choice came from (``settings``, ``system``,
            ``environment``, ``bypassed``, ``disabled``, ``none``).
        steps: The layers, in order.
        addresses: What the name resolved to (the proxy's name when one is in use).
        connected_to: The address the TCP connection reached.
        tls: What the TLS handshake showed, when it got that far.
        http_status: The HTTP status of the probe request.
        server_date: The ``Date`` header of that answer.
        local_before: Local wall-clock time just before the HTTP request.
        local_after: Local wall-clock time just after its answer.
    """

    name: str
    url: str
    host: str
    port: int
    proxy: str | None
    proxy_source: str
    steps: tuple[ProbeStep, ...]
    addresses: tuple[str, ...] = ()
    connected_to: str | None = None
    tls: TlsDetails | None = None
    http_status: int | None = None
    server_date: datetime | None = None
    local_before: float | None = None
    local_after: float | None = None

    @property
    def ok(self) -> bool:
        """Whether every layer worked."""
        return all(step.ok for step in self.steps)

    @property
    def failed_step(self) -> ProbeStep | None:
        """The first layer that failed, if any."""
        return next((step for step in self.steps if step.ok is False), None)

    @property
    def skew_s(self) -> float | None:
        """Server clock minus local clock from this answer alone (within about a second)."""
        if self.server_date is None or self.local_before is None or self.local_after is None:
            return None
        # The Date header is truncated to the second: the server's clock read D..D+1.
        return self.server_date.timestamp() + 0.5 - (self.local_before + self.local_after) / 2

    def step(self, name: str) -> ProbeStep | None:
        """The layer with this name."""
        return next((step for step in self.steps if step.name == name), None)

    def with_http(
        self,
        step: ProbeStep,
        *,
        status: int | None = None,
        server_date: datetime | None = None,
        local_before: float | None = None,
        local_after: float | None = None,
    ) -> EndpointProbe:
        """This probe with its HTTP layer taken from a request made elsewhere.

        For a probe made without its HTTP layer: the caller's own first request to the
        service (an authenticated one, say) shows that layer as well as the probe's would.

        Args:
            step: The HTTP layer (see :func:`http_answer_step`).
            status: The HTTP status of that request's answer, if it got one.
            server_date: The answer's ``Date`` header.
            local_before: Local wall-clock time just before the request.
            local_after: Local wall-clock time just after its answer.
        """
        return replace(
            self,
            steps=(*(s for s in self.steps if s.name != HTTP), step),
            http_status=status,
            server_date=server_date,
            local_before=local_before,
            local_after=local_after,
        )

    def summary(self) -> str:
        """One line: each layer's time, or what failed."""
        parts = []
        for step in self.steps:
            if step.ok is None:
                continue
            if step.ok:
                parts.append(f"{step.name.upper()} {_ms(step.elapsed_s)}")
            else:
                parts.append(f"{step.name.upper()} failed: {step.detail}")
        return ", ".join(parts)

    def to_json(self) -> dict[str, Any]:
        """The probe as JSON-ready values."""
        return {
            "name": self.name,
            "url": self.url,
            "host": self.host,
            "port": self.port,
            "proxy": self.proxy,
            "proxy_source": self.proxy_source,
            "ok": self.ok,
            "steps": [step.to_json() for step in self.steps],
            "addresses": list(self.addresses),
            "connected_to": self.connected_to,
            "tls": self.tls.to_json() if self.tls else None,
            "http_status": self.http_status,
            "server_date": _iso(self.server_date),
            "skew_s": None if self.skew_s is None else round(self.skew_s, 3),
        }


# -- clock skew ---------------------------------------------------------------------------


@dataclass
class ClockSkew:
    """How far the servers' clocks are ahead of the local clock, from ``Date`` headers.

    Each reading bounds the offset: the server read its clock (to the second) while the
    request was in flight. The readings' bounds are intersected, so a few readings pin the
    offset well below a second; readings that disagree (servers whose clocks differ, a
    clock that jumped) fall back to their median.
    """

    _bounds: list[tuple[float, float]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, server_date: datetime | None, local_before: float, local_after: float) -> None:
        """Add one reading: the answer's ``Date`` and the local times around the request."""
        if server_date is None or local_after < local_before:
            return
        date = server_date.timestamp()
        with self._lock:
            self._bounds.append((date - local_after, date + 1.0 - local_before))

    @property
    def samples(self) -> int:
        """How many readings there are."""
        with self._lock:
            return len(self._bounds)

    def estimate(self) -> tuple[float, float] | None:
        """``(offset_s, uncertainty_s)``: server minus local clock, plus or minus; or None."""
        with self._lock:
            bounds = list(self._bounds)
        if not bounds:
            return None
        low = max(b[0] for b in bounds)
        high = min(b[1] for b in bounds)
        if low <= high:
            return (low + high) / 2, (high - low) / 2
        middles = [(b[0] + b[1]) / 2 for b in bounds]
        median = statistics.median(middles)
        spread = max(abs(m - median) for m in middles)
        return median, spread + 0.5

    @property
    def offset_s(self) -> float:
        """The best estimate of the offset (0 when there is no reading)."""
        estimate = self.estimate()
        return estimate[0] if estimate else 0.0

    @property
    def uncertainty_s(self) -> float | None:
        """How far off the estimate may be (None when there is no reading)."""
        estimate = self.estimate()
        return estimate[1] if estimate else None


# -- probing ------------------------------------------------------------------------------


def probe_endpoint(
    name: str,
    url: str,
    session: requests.Session,
    *,
    http_url: str | None = None,
    check_http: bool = True,
    timeout_s: float = _DEFAULT_TIMEOUT_S,
    cancel: threading.Event | None = None,
    clock: Callable[[], float] = time.time,
) -> EndpointProbe:
    """Probe one service address layer by layer.

    Args:
        name: Which service, for the report (``api``, ``identity``, ``graph``).
        url: The service's base address.
        session: The app's HTTP session: its proxy choice and TLS trust are the ones probed.
        http_url: The address of the HTTP request (default ``url``); any HTTP answer counts
            as reachable, even 401 or 404, except 407 (proxy) and 5xx.
        check_http: False leaves the HTTP layer out (the probe then has no such step): the
            caller's own request will show it (see :meth:`EndpointProbe.with_http`).
        timeout_s: Timeout of each layer.
        cancel: Stops between layers when set (the rest are reported as not run).
        clock: The local wall clock (tests move it).
    """
    target = _Target.of(url, session, timeout_s)
    steps: list[ProbeStep] = []
    result: dict[str, Any] = {}

    def cancelled() -> bool:
        return cancel is not None and cancel.is_set()

    addresses: list[tuple[Any, ...]] = []
    step = _dns(target.connect_host, target.connect_port, target.which, addresses)
    steps.append(step)
    result["addresses"] = tuple(dict.fromkeys(str(a[4][0]) for a in addresses))
    if step.ok and not cancelled():
        steps.extend(_connect_and_handshake(target, addresses, result, cancelled))
    if check_http and all(s.ok for s in steps) and not cancelled():
        steps.append(_http(session, http_url or url, timeout_s, clock, result))

    expected = [DNS, TCP, *(["proxy"] if target.proxy else []), *([TLS] if target.secure else [])]
    if check_http:
        expected.append(HTTP)
    done = {s.name for s in steps}
    steps.extend(ProbeStep(n, None, None, "not run") for n in expected if n not in done)
    probe = EndpointProbe(
        name=name,
        url=url,
        host=target.host,
        port=target.port,
        proxy=_mask(target.proxy.geturl()) if target.proxy else None,
        proxy_source=target.proxy_source,
        steps=tuple(steps),
        **result,
    )
    log.info("Probe of %s (%s): %s", name, target.host, probe.summary())
    return probe


@dataclass(frozen=True)
class _Target:
    """Where a probe goes: the service, and the proxy in front of it if any."""

    url: str
    host: str
    port: int
    secure: bool
    proxy: SplitResult | None
    proxy_source: str
    session: requests.Session
    timeout_s: float

    @classmethod
    def of(cls, url: str, session: requests.Session, timeout_s: float) -> _Target:
        parts = urlsplit(url)
        secure = parts.scheme.lower() == "https"
        proxy, source = _proxy_for(session, url)
        return cls(
            url=url,
            host=parts.hostname or "",
            port=parts.port or (443 if secure else 80),
            secure=secure,
            proxy=urlsplit(proxy) if proxy else None,
            proxy_source=source,
            session=session,
            timeout_s=timeout_s,
        )

    # Through a proxy the name lookup and the connection are the proxy's; the tunnel then
    # carries TLS to the service itself.

    @property
    def connect_host(self) -> str:
        return (self.proxy.hostname or "") if self.proxy else self.host

    @property
    def connect_port(self) -> int:
        if self.proxy is None:
            return self.port
        return self.proxy.port or (443 if self.proxy.scheme == "https" else 80)

    @property
    def which(self) -> str:
        return "the proxy " if self.proxy else ""


def _connect_and_handshake(
    target: _Target,
    addresses: list[tuple[Any, ...]],
    result: dict[str, Any],
    cancelled: Callable[[], bool],
) -> list[ProbeStep]:
    """The TCP, proxy tunnel and TLS layers."""

    def connect() -> tuple[list[ProbeStep], socket.socket | None]:
        done: list[ProbeStep] = []
        tcp_step, sock = _tcp(addresses, target.timeout_s, target.which)
        done.append(tcp_step)
        if sock is not None and target.proxy is not None:
            tunnel_step, sock = _tunnel(sock, target)
            done.append(tunnel_step)
        return done, sock

    steps, sock = connect()
    if sock is None:
        return steps
    try:
        result["connected_to"] = _address_text(sock.getpeername())
        if target.secure and target.proxy is not None and target.proxy.scheme == "https":
            # TODO: probe TLS to the service inside the TLS tunnel to an https:// proxy
            # (needs ssl.MemoryBIO); until then the HTTP layer alone covers that hop.
            steps.append(ProbeStep(TLS, True, 0.0, "inside the proxy's TLS tunnel"))
        elif target.secure and not cancelled():
            context = _ssl_context(target.session, target.url)
            tls_step, tls = _tls(sock, target.host, context, target.timeout_s, reconnect=connect)
            steps.append(tls_step)
            result["tls"] = tls
            sock = None  # the TLS layer took it over and closed it
    finally:
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
    return steps


def probe_all(
    targets: Iterable[tuple[str, str, str | None]],
    session: requests.Session,
    *,
    timeout_s: float = _DEFAULT_TIMEOUT_S,
    cancel: threading.Event | None = None,
    clock: Callable[[], float] = time.time,
    on_probe: Callable[[EndpointProbe], None] | None = None,
    skip_http: Collection[str] = (),
) -> list[EndpointProbe]:
    """Probe each ``(name, url, http_url)`` in turn; ``on_probe`` sees each as it finishes.

    The services named in ``skip_http`` are probed without their HTTP layer.
    """
    probes = []
    for name, url, http_url in targets:
        if cancel is not None and cancel.is_set():
            break
        probe = probe_endpoint(
            name, url, session, http_url=http_url, check_http=name not in skip_http,
            timeout_s=timeout_s, cancel=cancel, clock=clock,
        )  # fmt: skip
        probes.append(probe)
        if on_probe is not None:
            on_probe(probe)
    return probes


def _dns(host: str, port: int, which: str, out: list[tuple[Any, ...]]) -> ProbeStep:
    started = time.monotonic()
    # getaddrinfo has no timeout of its own; the system resolver's applies.
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        return ProbeStep(
            DNS,
            False,
            time.monotonic() - started,
            f"{which}{host} could not be resolved ({exc})",
            "net:dns",
        )
    out.extend(found)
    addresses = ", ".join(dict.fromkeys(str(a[4][0]) for a in found))
    return ProbeStep(DNS, True, time.monotonic() - started, f"{which}{host} is {addresses}")


def _tcp(
    addresses: list[tuple[Any, ...]], timeout_s: float, which: str
) -> tuple[ProbeStep, socket.socket | None]:
    started = time.monotonic()
    errors = []
    for family, kind, proto, _name, address in addresses:
        sock = socket.socket(family, kind, proto)
        sock.settimeout(timeout_s)
        try:
            sock.connect(address)
        except OSError as exc:
            sock.close()
            errors.append(f"{_address_text(address)}: {exc.strerror or exc}")
            continue
        return (
            ProbeStep(
                TCP,
                True,
                time.monotonic() - started,
                f"connected to {which}{_address_text(address)}",
            ),
            sock,
        )
    key = "net:timeout" if any("timed out" in e for e in errors) else "net:connection"
    return (
        ProbeStep(
            TCP,
            False,
            time.monotonic() - started,
            f"could not connect to {which.strip() or 'the service'}: " + "; ".join(errors),
            key,
        ),
        None,
    )


def _tunnel(sock: socket.socket, target: _Target) -> tuple[ProbeStep, socket.socket | None]:
    """Open a ``CONNECT`` tunnel through the proxy to the service."""
    proxy = target.proxy
    assert proxy is not None
    host, port, timeout_s = target.host, target.port, target.timeout_s
    started = time.monotonic()
    try:
        if proxy.scheme == "https":
            # TLS to the proxy itself, trusted as the session trusts everything else.
            context = _ssl_context(target.session, f"https://{proxy.hostname}")
            sock = context.wrap_socket(sock, server_hostname=proxy.hostname)
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
        if proxy.username:
            credentials = f"{unquote(proxy.username)}:{unquote(proxy.password or '')}"
            token = base64.b64encode(credentials.encode()).decode()
            lines.append(f"Proxy-Authorization: Basic {token}")
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        answer = b""
        sock.settimeout(timeout_s)
        while b"\r\n\r\n" not in answer and len(answer) < _MAX_PROXY_ANSWER:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    except (OSError, ssl.SSLError) as exc:
        error = network_error(exc, service="proxy")
        with contextlib.suppress(OSError):
            sock.close()
        return ProbeStep("proxy", False, time.monotonic() - started, str(exc), error.key), None
    status_line = answer.split(b"\r\n", 1)[0].decode("latin-1", "replace")
    fields = status_line.split(" ", 2)
    status = int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else 0
    elapsed = time.monotonic() - started
    if status == 200:
        return ProbeStep("proxy", True, elapsed, f"tunnel to {authority} open"), sock
    with contextlib.suppress(OSError):
        sock.close()
    key = "net:proxy_auth" if status == 407 else "net:connection"
    shown = status_line or "no answer"
    return ProbeStep("proxy", False, elapsed, f"the proxy refused the tunnel ({shown})", key), None


def _tls(
    sock: socket.socket,
    host: str,
    context: ssl.SSLContext,
    timeout_s: float,
    *,
    reconnect: Callable[[], tuple[list[ProbeStep], socket.socket | None]],
) -> tuple[ProbeStep, TlsDetails | None]:
    """Handshake as the session would; on an untrusted certificate, say who issued it."""
    started = time.monotonic()
    sock.settimeout(timeout_s)
    try:
        # wrap_socket takes the socket over: closing the TLS socket closes it.
        with context.wrap_socket(sock, server_hostname=host) as tls:
            elapsed = time.monotonic() - started
            details = _tls_details(tls, verified=True)
    except ssl.SSLCertVerificationError as exc:
        elapsed = time.monotonic() - started
        # Show who signed the certificate anyway: a TLS-inspecting proxy names itself here.
        unverified = _unverified_details(host, timeout_s, reconnect)
        issuer = f"; it was issued by {unverified.issuer}" if unverified else ""
        reason = exc.verify_message or str(exc)
        return (
            ProbeStep(TLS, False, elapsed, f"the certificate is not trusted ({reason}){issuer}",
                      "net:tls"),
            unverified,
        )  # fmt: skip
    except (OSError, ssl.SSLError, ValueError) as exc:
        with contextlib.suppress(OSError):
            sock.close()
        error = network_error(exc, service="TLS")
        return ProbeStep(TLS, False, time.monotonic() - started, str(exc), error.key), None
    return (
        ProbeStep(TLS, True, elapsed, f"{details.version}, certificate issued by {details.issuer}"),
        details,
    )


def _tls_details(tls: ssl.SSLSocket, *, verified: bool) -> TlsDetails:
    from cryptography import x509

    der = tls.getpeercert(binary_form=True)
    issuer = subject = ""
    not_after: str | None = None
    if der:
        certificate = x509.load_der_x509_certificate(der)
        issuer = certificate.issuer.rfc4514_string()
        subject = certificate.subject.rfc4514_string()
        not_after = certificate.not_valid_after_utc.isoformat().replace("+00:00", "Z")
    cipher = tls.cipher()
    return TlsDetails(
        version=tls.version() or "",
        cipher=cipher[0] if cipher else "",
        issuer=issuer,
        subject=subject,
        not_after=not_after,
        verified=verified,
    )


def _unverified_details(
    host: str,
    timeout_s: float,
    reconnect: Callable[[], tuple[list[ProbeStep], socket.socket | None]],
) -> TlsDetails | None:
    """Handshake again without verifying, only to read the certificate for the report."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    _steps, raw = reconnect()
    if raw is None:
        return None
    try:
        raw.settimeout(timeout_s)
        with context.wrap_socket(raw, server_hostname=host) as tls:
            return _tls_details(tls, verified=False)
    except (OSError, ValueError):
        with contextlib.suppress(OSError):
            raw.close()
        return None


def _http(
    session: requests.Session,
    url: str,
    timeout_s: float,
    clock: Callable[[], float],
    result: dict[str, Any],
) -> ProbeStep:
    from qargo_desktop.core.graph import parse_http_date

    started = time.monotonic()
    before = clock()
    try:
        response = session.get(
            url,
            timeout=(timeout_s, timeout_s),
            allow_redirects=False,
            headers={"Accept": "application/json"},
        )
    except requests.RequestException as exc:
        error = network_error(exc, service="HTTP")
        return ProbeStep(HTTP, False, time.monotonic() - started, str(exc), error.key)
    after = clock()
    elapsed = time.monotonic() - started
    response.close()
    result["http_status"] = response.status_code
    result["server_date"] = parse_http_date(response.headers.get("Date"))
    result["local_before"] = before
    result["local_after"] = after
    return http_answer_step(response.status_code, elapsed)


def http_answer_step(status: int, elapsed_s: float) -> ProbeStep:
    """The HTTP layer of a probe whose request was answered with ``status``.

    Any answer counts as reachable, even 401 or 404, except 407 (the proxy wants a sign-in)
    and 5xx.
    """
    if status == 407:
        return ProbeStep(
            HTTP, False, elapsed_s, "the proxy wants a sign-in (407)", "net:proxy_auth"
        )
    if status >= 500:
        key = "net:unavailable" if status in (502, 503, 504) else "net:bad_response"
        return ProbeStep(HTTP, False, elapsed_s, f"the service answered {status}", key)
    return ProbeStep(HTTP, True, elapsed_s, f"answered {status}")


def _proxy_for(session: requests.Session, url: str) -> tuple[str | None, str]:
    """The proxy the session uses for ``url`` (with credentials) and where it came from."""
    settings = getattr(session, "settings", None)
    if settings is not None:
        from qargo_desktop.core.http import resolve_proxy

        proxy, source = resolve_proxy(settings, url)
        return proxy, str(source)
    merged = session.merge_environment_settings(url, {}, None, None, None)
    proxy = requests.utils.select_proxy(url, merged.get("proxies") or {})
    return proxy, "environment" if proxy else "none"


def _ssl_context(session: requests.Session, url: str) -> ssl.SSLContext:
    """The TLS context the session's adapter verifies with (the OS trust store if none)."""
    adapter = session.get_adapter(url)
    context = getattr(adapter, "_ssl_context", None)
    if context is None:
        manager = getattr(adapter, "poolmanager", None)
        context = getattr(manager, "connection_pool_kw", {}).get("ssl_context")
    if isinstance(context, ssl.SSLContext):
        return context
    from qargo_desktop.core.http import build_ssl_context

    return build_ssl_context()


def _mask(url: str) -> str:
    from qargo_desktop.core.config import mask_url_credentials

    return mask_url_credentials(url)


def _address_text(address: Any) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def _ms(seconds: float | None) -> str:
    if seconds is None or math.isnan(seconds):
        return "-"
    return f"{seconds * 1000:.0f} ms"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


__all__ = [
    "DNS",
    "HTTP",
    "TCP",
    "TLS",
    "ClockSkew",
    "EndpointProbe",
    "ProbeStep",
    "TlsDetails",
    "http_answer_step",
    "probe_all",
    "probe_endpoint",
]
