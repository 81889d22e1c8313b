"""The one HTTP session factory that MSAL, the Qargo API client and the Graph client share.

What every session built here does:

- verifies TLS with the operating system's trust store (through truststore on Windows and
  macOS, OpenSSL's default CA locations elsewhere, loaded once per session), plus an
  optional extra CA file, and nothing else: ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` and a
  per-request ``verify=`` cannot weaken or replace that trust;
- keeps connections open for the next request to the same host (one TLS handshake per
  host and pool slot, not per request);
- goes through the proxy the settings choose (the system's, none, or a URL), and always
  straight to loopback addresses;
- gives every request a connect and a read timeout;
- sends ``User-Agent: qargo-desktop/<version> (<os>; Python x.y)``;
- retries idempotent requests after connection failures and 429/502/503/504, honouring
  ``Retry-After`` within a time budget, and never repeats a POST or PATCH unless it carries
  an ``Idempotency-Key``. Waits between attempts end at once when the operation is
  cancelled (see :func:`cancel_scope`).
"""

from __future__ import annotations

import contextlib
import contextvars
import email.utils
import logging
import os
import platform
import random
import re
import ssl
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import requests
import requests.adapters
import requests.utils
import truststore
from requests.models import PreparedRequest, Response
from urllib3.exceptions import ReadTimeoutError

from qargo_desktop import APP_NAME, __version__
from qargo_desktop.core.config import Settings, mask_url_credentials

log = logging.getLogger(__name__)

#: Where the proxy for a request came from, for diagnostics.
ProxySource = Literal["settings", "disabled", "environment", "system", "bypassed", "none"]

_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


class RequestCancelled(requests.RequestException):
    """The operation was cancelled while the session waited to retry."""


# -- cancellation --------------------------------------------------------------------------

_scope_event: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar(
    "qargo_http_cancel", default=None
)


@contextlib.contextmanager
def cancel_scope(event: threading.Event) -> Iterator[threading.Event]:
    """Make retry waits in this thread (or task context) end when ``event`` is set.

    The background-task primitive wraps each task in this, so a cancelled task stops waiting
    for a ``Retry-After`` at once and its request raises :class:`RequestCancelled`.
    """
    token = _scope_event.set(event)
    try:
        yield event
    finally:
        _scope_event.reset(token)


# -- retry policy --------------------------------------------------------------------------

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})
RETRY_STATUSES = frozenset({429, 502, 503, 504})


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class RetryPolicy:
    """When and how long to wait before repeating a request.

    Attributes:
        max_attempts: Attempts in all, the first included.
        backoff_base_s: First wait when the server gives no ``Retry-After``; it doubles.
        backoff_max_s: Longest wait without a ``Retry-After``.
        jitter: Fraction of each backoff wait that is random, so that many clients that
            failed together do not come back together.
        total_wait_budget_s: The most time spent waiting over all attempts. A
            ``Retry-After`` beyond what is left is not waited for: the response goes back to
            the caller, who can tell the person when to try again.
        retry_statuses: Status codes worth another attempt.
        idempotent_methods: Methods repeated without an ``Idempotency-Key``.
        sleep: Replaces the wait (tests record the delays); it gets the delay in seconds.
        cancel_event: Session-wide cancellation (application shutdown), checked beside the
            per-operation event of :func:`cancel_scope`.
        now: The clock for ``Retry-After`` dates.
    """

    max_attempts: int = 4
    backoff_base_s: float = 0.5
    backoff_max_s: float = 8.0
    jitter: float = 0.25
    total_wait_budget_s: float = 60.0
    retry_statuses: frozenset[int] = RETRY_STATUSES
    idempotent_methods: frozenset[str] = IDEMPOTENT_METHODS
    sleep: Callable[[float], None] | None = None
    cancel_event: threading.Event | None = None
    now: Callable[[], datetime] = field(default=_utc_now)

    def may_retry(self, request: PreparedRequest) -> bool:
        """Whether repeating this request cannot do something twice."""
        method = (request.method or "GET").upper()
        if method not in self.idempotent_methods and not request.headers.get("Idempotency-Key"):
            return False
        # A streamed body is consumed by the first attempt and cannot be sent again.
        return request.body is None or isinstance(request.body, bytes | str)

    def backoff(self, retry_number: int) -> float:
        """The wait before retry ``retry_number`` (1 for the first) without Retry-After."""
        delay = min(self.backoff_max_s, self.backoff_base_s * 2.0 ** (retry_number - 1))
        if self.jitter:
            delay *= 1 - self.jitter * random.random()
        return delay

    def retry_after(self, response: Response) -> float | None:
        """The wait the server asked for, in seconds, or ``None`` if it did not say."""
        value = response.headers.get("Retry-After")
        return parse_retry_after(None if value is None else str(value), self.now())

    def cancelled(self) -> bool:
        """Whether the current operation or the whole session was cancelled."""
        return any(event.is_set() for event in self._events())

    def wait(self, delay: float) -> None:
        """Wait ``delay`` seconds unless cancelled first.

        Raises:
            RequestCancelled: The operation or the session was cancelled.
        """
        if self.cancelled():
            raise RequestCancelled("cancelled before retrying")
        if self.sleep is not None:
            self.sleep(delay)
        else:
            events = self._events()
            if not events:
                time.sleep(delay)
            elif len(events) == 1:
                events[0].wait(delay)
            else:
                # Two events cannot be waited on together; short slices keep both prompt.
                deadline = time.monotonic() + delay
                while (left := deadline - time.monotonic()) > 0 and not self.cancelled():
                    events[0].wait(min(left, 0.05))
        if self.cancelled():
            raise RequestCancelled("cancelled while waiting to retry")

    def _events(self) -> list[threading.Event]:
        scoped = _scope_event.get()
        return [e for e in (scoped, self.cancel_event) if e is not None]


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Read ``Retry-After`` in either form: delta-seconds or an HTTP-date.

    Returns:
        The seconds to wait (never negative), or ``None`` when absent or unreadable.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        # RFC 9110 dates are GMT; a zone-less parse means "-0000", which is UTC too.
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or _utc_now())).total_seconds())


# -- the adapter ---------------------------------------------------------------------------


# Where OpenSSL-based systems keep their CA bundle, for when OpenSSL's own default
# locations hold none: the same places, in the same order, as truststore looks.
_CA_BUNDLE_CANDIDATES = (
    "/etc/ssl/cert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/pki/tls/cert.pem",
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/ssl/ca-bundle.pem",
)
_HASHED_CERT_NAME = re.compile(r"^[0-9a-fA-F]{8}\.[0-9]$")


def _os_verifies_certificates() -> bool:
    # Where truststore hands verification to the OS (Windows, macOS) rather than to OpenSSL.
    return platform.system() in {"Windows", "Darwin"}


def _load_system_cas(context: ssl.SSLContext) -> None:
    """Load the system's CA certificates into ``context``, as truststore does on Linux."""
    defaults = ssl.get_default_verify_paths()
    if defaults.cafile or (defaults.capath and _has_hashed_certs(defaults.capath)):
        # Honours SSL_CERT_FILE and SSL_CERT_DIR, as OpenSSL (and truststore) always have.
        context.set_default_verify_paths()
        return
    for candidate in _CA_BUNDLE_CANDIDATES:
        if os.path.isfile(candidate):
            context.load_verify_locations(cafile=candidate)
            return


def _has_hashed_certs(folder: str) -> bool:
    try:
        return any(_HASHED_CERT_NAME.match(name) for name in os.listdir(folder))
    except OSError:
        return False


def build_ssl_context(extra_ca_files: tuple[Path, ...] = ()) -> ssl.SSLContext:
    """Return a client TLS context on the OS trust store plus the given CA files.

    On Windows and macOS this is truststore's context: each handshake's certificate is
    verified by the OS. Elsewhere truststore's context is OpenSSL verifying against the
    system's CA bundle, which it reads again before every new connection (about 20 ms on
    the connecting thread, and one connection at a time); here the bundle is read once,
    into a plain OpenSSL context, with the same trust.

    Raises:
        ValueError: A CA file cannot be loaded.
    """
    context: ssl.SSLContext
    if _os_verifies_certificates():
        context = truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        _load_system_cas(context)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    for ca_file in extra_ca_files:
        try:
            context.load_verify_locations(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"extra CA file {ca_file} cannot be loaded: {exc}") from exc
    return context


class TrustStoreAdapter(requests.adapters.HTTPAdapter):
    """A transport adapter with our TLS context, default timeouts and retry policy.

    TLS always uses the adapter's context, whatever ``verify`` the caller or the
    environment passes: trust is decided once, from the settings, for every client.
    """

    def __init__(
        self,
        ssl_context: ssl.SSLContext,
        *,
        timeout: tuple[float, float],
        retry_policy: RetryPolicy,
    ) -> None:
        # Set before the base __init__, which builds the pool manager with the context.
        self._ssl_context = ssl_context
        self.default_timeout = timeout
        self.retry_policy = retry_policy
        super().__init__()

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        """Build the pool manager with our TLS context."""
        pool_kwargs["ssl_context"] = self._ssl_context
        super().init_poolmanager(connections, maxsize, block=block, **pool_kwargs)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        """Build a proxy manager whose tunnels (and TLS to the proxy) use our context."""
        proxy_kwargs["ssl_context"] = self._ssl_context
        if proxy.lower().startswith("https:"):
            proxy_kwargs["proxy_ssl_context"] = self._ssl_context
        return super().proxy_manager_for(proxy, **proxy_kwargs)

    def build_connection_pool_key_attributes(
        self, request: PreparedRequest, verify: Any, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Select pools by host and our context only, never by a caller's CA bundle."""
        host_params, _ignored = super().build_connection_pool_key_attributes(request, True, None)
        pool_kwargs: dict[str, Any] = {}
        if host_params.get("scheme") == "https":
            pool_kwargs = {"ssl_context": self._ssl_context, "cert_reqs": "CERT_REQUIRED"}
        return host_params, pool_kwargs

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        """Require verification and load no CA bundle into the connection.

        requests would point the connection at certifi (or the bundle in
        ``REQUESTS_CA_BUNDLE``), and urllib3 would then add that bundle to our shared
        context; the context alone decides.
        """
        if url.lower().startswith("https"):
            conn.cert_reqs = "CERT_REQUIRED"
        conn.ca_certs = None
        conn.ca_cert_dir = None

    def send(  # noqa: PLR0917 (requests calls it with this signature)
        self,
        request: PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Mapping[str, str] | None = None,
    ) -> Response:
        """Send with the default timeout, retrying where the policy allows."""
        attempts = _Attempts(self.retry_policy, request)
        while True:
            if self.retry_policy.cancelled():
                raise RequestCancelled("cancelled before sending", request=request)
            try:
                response = super().send(
                    request,
                    stream=stream,
                    timeout=self.default_timeout if timeout is None else timeout,
                    verify=True,
                    cert=None,
                    proxies=dict(proxies) if proxies else None,
                )
                if not stream:
                    # Read the body here so that a connection cut mid-body is retried too.
                    _ = response.content
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
                delay = attempts.after_error(exc)
                if delay is None:
                    raise
            else:
                delay = attempts.after_response(response)
                if delay is None:
                    return response
                response.close()
            self.retry_policy.wait(delay)
            attempts.waited += delay
            attempts.number += 1


class _Attempts:
    """The retry bookkeeping of one request: decides whether, and how long, to wait."""

    def __init__(self, policy: RetryPolicy, request: PreparedRequest) -> None:
        self.policy = policy
        self.request = request
        self.retryable = policy.may_retry(request)
        self.number = 1
        self.waited = 0.0

    def after_error(self, exc: Exception) -> float | None:
        """The wait before retrying after ``exc``, or ``None`` to raise it."""
        if isinstance(exc, requests.exceptions.SSLError | requests.exceptions.ProxyError):
            # A certificate or proxy problem does not go away by asking again.
            return None
        if _is_read_timeout(exc):
            # The server may still be working on it, and a whole read timeout has been
            # spent already: repeating it would only double the wait.
            return None
        if not self._has_attempts_left():
            return None
        delay = self.policy.backoff(self.number)
        if self.waited + delay > self.policy.total_wait_budget_s:
            return None
        self._log_retry(type(exc).__name__, delay)
        return delay

    def after_response(self, response: Response) -> float | None:
        """The wait before retrying after ``response``, or ``None`` to return it."""
        if response.status_code not in self.policy.retry_statuses:
            return None
        if not self._has_attempts_left():
            return None
        asked = self.policy.retry_after(response)
        delay = asked if asked is not None else self.policy.backoff(self.number)
        if self.waited + delay > self.policy.total_wait_budget_s:
            log.info(
                "%s %s answered %d; its wait of %.0f s is beyond the retry budget",
                self.request.method,
                _describe_url(self.request.url),
                response.status_code,
                delay,
            )
            return None
        self._log_retry(f"HTTP {response.status_code}", delay)
        return delay

    def _has_attempts_left(self) -> bool:
        return self.retryable and self.number < self.policy.max_attempts

    def _log_retry(self, what: str, delay: float) -> None:
        log.info(
            "%s %s failed (%s); retrying in %.1f s (attempt %d of %d)",
            self.request.method,
            _describe_url(self.request.url),
            what,
            delay,
            self.number + 1,
            self.policy.max_attempts,
        )


def _is_read_timeout(exc: BaseException) -> bool:
    # requests reports a read timeout in the middle of a body as a ConnectionError
    # wrapping urllib3's ReadTimeoutError.
    return any(isinstance(arg, ReadTimeoutError) for arg in exc.args)


def _describe_url(url: str | None) -> str:
    # Host and path only: query strings can carry codes and other secrets.
    parts = urlsplit(url or "")
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


# -- proxies -------------------------------------------------------------------------------


def _is_loopback(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host in _LOOPBACK_HOSTS or host.startswith("127.")


def _environment_proxies() -> dict[str, str]:
    found = urllib.request.getproxies_environment()
    found.pop("no", None)
    return found


def _system_proxies() -> tuple[dict[str, str], ProxySource]:
    environment = _environment_proxies()
    if environment:
        return environment, "environment"
    # On Windows and macOS this reads the OS settings; elsewhere it is the environment.
    system = urllib.request.getproxies()
    system.pop("no", None)
    if system:
        return system, "system"
    return {}, "none"


def resolve_proxy(settings: Settings, url: str) -> tuple[str | None, ProxySource]:
    """Return the proxy a request to ``url`` goes through, and where that choice came from.

    The URL returned keeps its credentials (it is used to connect); show
    :func:`describe_proxy` to people instead.
    """
    if _is_loopback(url):
        # A proxy elsewhere cannot reach this machine's loopback (the sandbox lives there).
        return None, "bypassed"
    mode = settings.proxy
    if mode == "none":
        return None, "disabled"
    if mode != "system":
        return mode, "settings"
    proxies, source = _system_proxies()
    if not proxies:
        return None, "none"
    if requests.utils.should_bypass_proxies(url, no_proxy=None):
        return None, "bypassed"
    chosen = requests.utils.select_proxy(url, proxies)
    if not chosen:
        return None, "none"
    return chosen, source


def describe_proxy(settings: Settings, url: str | None = None) -> tuple[str | None, ProxySource]:
    """Return the proxy for ``url`` (default: the API) with its password masked, and its source.

    Sources: ``settings`` (a URL in the settings), ``disabled`` (settings say ``none``),
    ``environment`` (``HTTPS_PROXY`` and friends), ``system`` (the OS proxy settings),
    ``bypassed`` (loopback or ``NO_PROXY``), ``none`` (no proxy configured anywhere).
    """
    target = url or settings.api_base_url or settings.graph_base_url
    proxy, source = resolve_proxy(settings, target)
    return (mask_url_credentials(proxy) if proxy else None), source


# -- the session ---------------------------------------------------------------------------


class QargoSession(requests.Session):
    """A ``requests.Session`` whose trust, proxy and timeouts come from the settings.

    ``trust_env`` is off, so nothing in the environment (CA bundles, ``.netrc``) changes a
    request behind the settings' back; proxies from the environment or the OS are still
    used when the settings say ``proxy = "system"``.
    """

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.trust_env = False
        self.settings = settings

    def merge_environment_settings(
        self,
        url: str,
        proxies: Any,
        stream: Any,
        verify: Any,
        cert: Any,
    ) -> dict[str, Any]:
        """Choose the proxy by our policy; trust is the adapter's, never the environment's."""
        chosen: dict[str, str] = dict(proxies or {}) or dict(self.proxies or {})
        if not chosen:
            proxy, _source = resolve_proxy(self.settings, url)
            if proxy:
                chosen = {urlsplit(url).scheme.lower(): proxy}
        return {
            "proxies": chosen,
            "stream": self.stream if stream is None else stream,
            "verify": True,
            "cert": None,
        }

    def rebuild_proxies(self, prepared_request: PreparedRequest, proxies: Any) -> dict[str, str]:
        """Choose the proxy afresh for a redirect's target."""
        prepared_request.headers.pop("Proxy-Authorization", None)
        proxy, _source = resolve_proxy(self.settings, prepared_request.url or "")
        if not proxy:
            return {}
        return {urlsplit(prepared_request.url or "").scheme.lower(): proxy}


def default_user_agent() -> str:
    """``qargo-desktop/<version> (<os>; Python x.y)``."""
    system = platform.system() or sys.platform
    if system == "Darwin":
        os_name = f"macOS {platform.mac_ver()[0]}".strip()
    elif system == "Windows":
        os_name = f"Windows {platform.release()}".strip()
    else:
        os_name = f"{system} {platform.release()}".strip()
    # Parentheses and semicolons structure the comment part of the header.
    os_name = os_name.replace("(", "").replace(")", "").replace(";", ",")
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    return f"{APP_NAME}/{__version__} ({os_name}; Python {python})"


def build_session(
    settings: Settings,
    *,
    user_agent: str | None = None,
    extra_ca_file: Path | None = None,
    retry_policy: RetryPolicy | None = None,
) -> QargoSession:
    """Build the HTTP session every client of the app uses.

    Args:
        settings: Trust, proxy and timeouts come from here.
        user_agent: Replaces :func:`default_user_agent`.
        extra_ca_file: A PEM file trusted in addition to ``settings.extra_ca_file`` (the
            sandbox's CA).
        retry_policy: Replaces the default :class:`RetryPolicy`.

    Raises:
        ValueError: A CA file cannot be loaded.
    """
    ca_files = tuple(
        dict.fromkeys(p for p in (settings.extra_ca_file, extra_ca_file) if p is not None)
    )
    context = build_ssl_context(ca_files)
    session = QargoSession(settings)
    adapter = TrustStoreAdapter(
        context,
        timeout=(settings.http_connect_timeout_s, settings.http_timeout_s),
        retry_policy=retry_policy or RetryPolicy(),
    )
    # Replace requests' own adapters so that no scheme escapes ours.
    session.adapters.clear()
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers["User-Agent"] = user_agent or default_user_agent()

    proxy, source = describe_proxy(settings)
    log.info(
        "HTTP session ready: proxy %s (%s), timeouts %.0f s connect / %.0f s read%s",
        proxy or "none",
        source,
        settings.http_connect_timeout_s,
        settings.http_timeout_s,
        f", extra CA {', '.join(str(p) for p in ca_files)}" if ca_files else "",
    )
    return session
