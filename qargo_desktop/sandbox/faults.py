"""Fault injection: latency, throttling, outages, dropped connections and truncated bodies.

One :class:`Faults` object holds the settings of a sandbox and counts every request; one
:class:`FaultMiddleware` wraps each service's WSGI app. Settings can be given at start
(``SandboxOptions.faults``) and changed while the sandbox runs (``Sandbox.set_faults`` or
``PUT /_sandbox/faults``). Every random choice comes from one RNG seeded with the sandbox's
seed, so a run with the same requests in the same order meets the same faults.

The mail knobs (``delivery_delay_s``, ``sync_delay_s``, ``lose_mail``, ``never_sync``) are
accepted here too, because the contract sets them through the same call, and forwarded to
the mail simulation.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import email.utils
import json
import logging
import math
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from qargo_desktop.sandbox.world import World

logger = logging.getLogger(__name__)

SERVICES: tuple[str, ...] = ("identity", "api", "graph")
MAIL_KEYS: tuple[str, ...] = ("delivery_delay_s", "sync_delay_s", "lose_mail", "never_sync")

_ACTIONS = ("rate_limit", "unavailable", "drop", "truncate")


@dataclass(frozen=True)
class FaultSettings:
    """What goes wrong, and where.

    Attributes:
        latency_s: Seconds added before each response.
        latency_jitter_s: Up to this many extra seconds, chosen at random per request.
        rate_limit_probability: Chance of a 429 with ``Retry-After``.
        retry_after: ``Retry-After`` of 429 and 503 responses: whole seconds, or
            ``"http-date"`` for an HTTP-date ``retry_after_s`` seconds from now.
        retry_after_s: The delay ``Retry-After`` asks for, in either format.
        unavailable_probability: Chance of a 503 with ``Retry-After``.
        drop_probability: Chance of closing the connection without any response.
        drop_phase: ``"before"`` the service sees the request, or ``"after"`` it acted on it
            (the response is lost, the change is not).
        truncate_probability: Chance of sending only half of the response body (the
            ``Content-Length`` still announces all of it) and closing the connection.
        services: Services the faults apply to (``identity``, ``api``, ``graph``).
        paths: Path prefixes the faults apply to (empty: every path), e.g. ``/graph/v1.0/me``.
        methods: HTTP methods the faults apply to (empty: every method).
        max_faults: Stop injecting after this many faults (None: no limit); with a
            probability of 1 this makes "the next N requests fail" exact.
    """

    latency_s: float = 0.0
    latency_jitter_s: float = 0.0
    rate_limit_probability: float = 0.0
    retry_after: int | str = 1
    retry_after_s: int = 1
    unavailable_probability: float = 0.0
    drop_probability: float = 0.0
    drop_phase: str = "before"
    truncate_probability: float = 0.0
    services: tuple[str, ...] = SERVICES
    paths: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    max_faults: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The settings as JSON-friendly values."""
        data = dataclasses.asdict(self)
        for key in ("services", "paths", "methods"):
            data[key] = list(data[key])
        return data


def _probability(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number between 0 and 1")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1")
    return float(value)


def _seconds(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{name} must be a non-negative number of seconds")
    return float(value)


def _whole(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative whole number")
    return value


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false")
    return value


def _strings(name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{name} must be a list of strings")
    return tuple(value)


def _retry_after(name: str, value: Any) -> int | str:
    if value == "http-date":
        return "http-date"
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ValueError(f'{name} must be whole seconds or "http-date"')


def _drop_phase(name: str, value: Any) -> str:
    if value not in ("before", "after"):
        raise ValueError(f'{name} must be "before" or "after"')
    return str(value)


def _services(name: str, value: Any) -> tuple[str, ...]:
    services = _strings(name, value)
    unknown = set(services) - set(SERVICES)
    if unknown:
        raise ValueError(f"unknown service(s): {', '.join(sorted(unknown))}")
    return services


def _methods(name: str, value: Any) -> tuple[str, ...]:
    return tuple(m.upper() for m in _strings(name, value))


def _optional_whole(name: str, value: Any) -> int | None:
    return None if value is None else _whole(name, value)


_VALIDATORS: dict[str, Callable[[str, Any], Any]] = {
    "latency_s": _seconds,
    "latency_jitter_s": _seconds,
    "rate_limit_probability": _probability,
    "retry_after": _retry_after,
    "retry_after_s": _whole,
    "unavailable_probability": _probability,
    "drop_probability": _probability,
    "drop_phase": _drop_phase,
    "truncate_probability": _probability,
    "services": _services,
    "paths": _strings,
    "methods": _methods,
    "max_faults": _optional_whole,
    # The mail knobs, forwarded to the mail simulation.
    "delivery_delay_s": _seconds,
    "sync_delay_s": _seconds,
    "lose_mail": _flag,
    "never_sync": _flag,
}


def _validated(changes: Mapping[str, Any]) -> dict[str, Any]:
    """Check and normalise a partial set of settings (fault and mail knobs)."""
    clean: dict[str, Any] = {}
    for name, value in changes.items():
        validator = _VALIDATORS.get(name)
        if validator is None:
            raise ValueError(f"unknown fault setting {name!r}")
        clean[name] = validator(name, value)
    if isinstance(clean.get("retry_after"), int):
        # Whole seconds given as retry_after set the delay itself.
        clean.setdefault("retry_after_s", clean["retry_after"])
    return clean


@dataclass(frozen=True)
class FaultDecision:
    """What the middleware does to one request."""

    delay_s: float = 0.0
    action: str | None = None  # one of _ACTIONS, or None


class Faults:
    """Fault settings, the seeded RNG that applies them, and request counters.

    Args:
        seed: Seed of the RNG.
        settings: Initial settings (fault and mail knobs mixed, as ``update`` takes them).
        mail_settings: Called with the mail knobs whenever they are set.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        settings: Mapping[str, Any] | None = None,
        mail_settings: Callable[..., None] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(f"faults:{seed}")
        self._settings = FaultSettings()
        self._faults_injected = 0
        self._counts: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self._injected: collections.Counter[tuple[str, str]] = collections.Counter()
        self.mail_settings = mail_settings
        self._mail_state: Callable[[], dict[str, Any]] | None = None
        self._pending_mail: dict[str, Any] = {}
        if settings:
            self.update(**settings)

    # Settings

    @property
    def settings(self) -> FaultSettings:
        """The current settings."""
        with self._lock:
            return self._settings

    def update(self, **changes: Any) -> FaultSettings:
        """Change some settings; the others keep their values.

        Raises:
            ValueError: An unknown setting or a value out of range (nothing is changed).
        """
        clean = _validated(changes)
        mail = {k: clean.pop(k) for k in list(clean) if k in MAIL_KEYS}
        with self._lock:
            self._settings = dataclasses.replace(self._settings, **clean)
            if "max_faults" in clean:
                self._faults_injected = 0
            settings = self._settings
        if mail:
            self._apply_mail(mail)
        logger.info("sandbox faults now %s", settings.to_json() | mail)
        return settings

    def reset(self) -> FaultSettings:
        """Clear every fault (the mail knobs keep their values)."""
        with self._lock:
            self._settings = FaultSettings()
            self._faults_injected = 0
            return self._settings

    def _apply_mail(self, mail: dict[str, Any]) -> None:
        if self.mail_settings is None:
            # The mail system attaches after the options are read; keep the knobs until then.
            self._pending_mail.update(mail)
        else:
            self.mail_settings(**mail)

    def attach_mail(
        self, configure: Callable[..., None], state: Callable[[], dict[str, Any]] | None = None
    ) -> None:
        """Connect the mail simulation, handing it any knobs set before it existed.

        Args:
            configure: Sets mail knobs (``MailSystem.configure``).
            state: Reads them back (``MailSystem.settings``), for :meth:`snapshot`.
        """
        self.mail_settings = configure
        self._mail_state = state
        if self._pending_mail:
            configure(**self._pending_mail)
            self._pending_mail = {}

    def snapshot(self) -> dict[str, Any]:
        """Every setting (fault and mail knobs) as JSON-friendly values."""
        data = self.settings.to_json()
        if self._mail_state is not None:
            data.update(self._mail_state())
        else:
            data.update(self._pending_mail)
        return data

    # Decisions

    def decide(self, service: str, method: str, path: str) -> FaultDecision:
        """Count one request and choose what happens to it."""
        with self._lock:
            self._counts[(service, method.upper(), path)] += 1
            settings = self._settings
            if not self._applies(settings, service, method, path):
                return FaultDecision()
            delay = settings.latency_s
            if settings.latency_jitter_s:
                delay += self._rng.uniform(0.0, settings.latency_jitter_s)
            if settings.max_faults is not None and self._faults_injected >= settings.max_faults:
                return FaultDecision(delay_s=delay)
            action = None
            for name, probability in (
                ("drop", settings.drop_probability),
                ("unavailable", settings.unavailable_probability),
                ("rate_limit", settings.rate_limit_probability),
                ("truncate", settings.truncate_probability),
            ):
                # Draw only for settings in use, so turning one fault on does not change the
                # sequence another fault sees.
                if probability > 0.0 and self._rng.random() < probability:
                    action = name
                    break
            if action is not None:
                self._faults_injected += 1
                self._injected[(service, action)] += 1
            return FaultDecision(delay_s=delay, action=action)

    @staticmethod
    def _applies(settings: FaultSettings, service: str, method: str, path: str) -> bool:
        if service not in settings.services:
            return False
        if settings.methods and method.upper() not in settings.methods:
            return False
        return not settings.paths or any(path.startswith(p) for p in settings.paths)

    def retry_after_header(self) -> str:
        """The ``Retry-After`` value for a 429 or 503 under the current settings."""
        settings = self.settings
        if settings.retry_after == "http-date":
            # Clients compare an HTTP-date with their own wall clock, not the sandbox clock.
            when = math.ceil(time.time()) + settings.retry_after_s
            return email.utils.formatdate(when, usegmt=True)
        return str(settings.retry_after_s)

    # Counters

    def request_count(
        self, service: str | None = None, method: str | None = None, path: str | None = None
    ) -> int:
        """How many requests arrived, filtered by service, method and exact path."""
        with self._lock:
            return sum(
                n
                for (s, m, p), n in self._counts.items()
                if (service is None or s == service)
                and (method is None or m == method.upper())
                and (path is None or p == path)
            )

    def injected_count(self, service: str | None = None, action: str | None = None) -> int:
        """How many faults were injected, filtered by service and action."""
        with self._lock:
            return sum(
                n
                for (s, a), n in self._injected.items()
                if (service is None or s == service) and (action is None or a == action)
            )

    def counters(self) -> dict[str, Any]:
        """Every counter, JSON-friendly: ``requests`` and ``faults`` lists."""
        with self._lock:
            return {
                "requests": [
                    {"service": s, "method": m, "path": p, "count": n}
                    for (s, m, p), n in sorted(self._counts.items())
                ],
                "faults": [
                    {"service": s, "action": a, "count": n}
                    for (s, a), n in sorted(self._injected.items())
                ],
            }

    def reset_counters(self) -> None:
        """Forget every count."""
        with self._lock:
            self._counts.clear()
            self._injected.clear()


# Error bodies in each service's own shape.


def _identity_error(status: int, correlation_id: str) -> tuple[bytes, str]:
    if status == 429:
        code, description = "temporarily_unavailable", "Too many requests. Try again later."
    else:
        code, description = (
            "temporarily_unavailable",
            "AADSTS90033: A transient error has occurred. Please try again.",
        )
    body = {
        "error": code,
        "error_description": f"{description}\r\nTrace ID: {uuid.uuid4()}\r\n"
        f"Correlation ID: {correlation_id}\r\nTimestamp: {_now_text()}",
        "error_codes": [90033] if status == 503 else [],
        "timestamp": _now_text(),
        "trace_id": str(uuid.uuid4()),
        "correlation_id": correlation_id,
    }
    return json.dumps(body).encode(), "application/json; charset=utf-8"


def _api_error(status: int, correlation_id: str) -> tuple[bytes, str]:
    if status == 429:
        code, title = "rate_limited", "Too many requests"
        detail = "The organisation API is throttling this client. Retry after the delay given."
    else:
        code, title = "service_unavailable", "Service unavailable"
        detail = "The organisation API is temporarily unavailable. Retry after the delay given."
    body = {
        "type": f"https://qargo.example/problems/{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        "correlation_id": correlation_id,
    }
    return json.dumps(body).encode(), "application/problem+json"


def _graph_error(status: int, correlation_id: str, path: str = "") -> tuple[bytes, str]:
    if status == 429:
        if "/messages" in path or path.endswith("/sendMail"):
            code, message = (
                "ApplicationThrottled",
                "Application is over its MailboxConcurrency limit.",
            )
        else:
            code, message = "TooManyRequests", "Too many requests."
    else:
        code, message = "ServiceNotAvailable", "The service is temporarily unavailable."
    body = {
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": _now_text(),
                "request-id": correlation_id,
                "client-request-id": correlation_id,
            },
        }
    }
    return json.dumps(body).encode(), "application/json"


def _now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FaultMiddleware:
    """Wrap one service's WSGI app with the sandbox's faults.

    Args:
        app: The service's WSGI app.
        service: ``identity``, ``api`` or ``graph``.
        faults: The shared settings and counters.
        sleep: How to wait for latency (tests may replace it).
    """

    def __init__(
        self,
        app: WSGIApplication,
        service: str,
        faults: Faults,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if service not in SERVICES:
            raise ValueError(f"unknown service {service!r}")
        self.app = app
        self.service = service
        self.faults = faults
        self._sleep = sleep

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Handle one request, perhaps badly."""
        method = str(environ.get("REQUEST_METHOD", "GET"))
        path = str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", ""))
        decision = self.faults.decide(self.service, method, path)
        if decision.delay_s > 0:
            self._sleep(decision.delay_s)

        action = decision.action
        if action is None:
            return self.app(environ, start_response)
        logger.info("sandbox fault %s on %s %s %s", action, self.service, method, path)

        if action in ("rate_limit", "unavailable"):
            status = 429 if action == "rate_limit" else 503
            correlation_id = str(uuid.uuid4())
            if self.service == "graph":
                body, content_type = _graph_error(status, correlation_id, path)
            elif self.service == "api":
                body, content_type = _api_error(status, correlation_id)
            else:
                body, content_type = _identity_error(status, correlation_id)
            retry_after = self.faults.retry_after_header()
            reason = "Too Many Requests" if status == 429 else "Service Unavailable"
            start_response(
                f"{status} {reason}",
                [
                    ("Content-Type", content_type),
                    ("Content-Length", str(len(body))),
                    ("Retry-After", retry_after),
                    ("request-id", correlation_id),
                    ("x-correlation-id", correlation_id),
                ],
            )
            return [body]

        if action == "drop" and self.faults.settings.drop_phase == "before":
            _drop_connection(environ)

        if action == "drop":
            return self._drop_after(environ)
        return self._truncated(environ, start_response)

    def _drop_after(self, environ: WSGIEnvironment) -> Iterable[bytes]:
        # Let the service act on the request, throw its response away, then hang up.
        def discard(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], object]:
            return lambda _data: None

        result = self.app(environ, discard)
        try:
            for _chunk in result:
                pass
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        _drop_connection(environ)
        return []  # pragma: no cover - _drop_connection always raises

    def _truncated(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterator[bytes]:
        captured: dict[str, Any] = {}

        def capture(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], object]:
            captured["status"] = status
            captured["headers"] = headers
            return lambda _data: None

        result = self.app(environ, capture)
        try:
            body = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        headers = [(k, v) for k, v in captured["headers"] if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(body))))
        start_response(captured["status"], headers)
        return self._half_then_hang_up(body, environ)

    @staticmethod
    def _half_then_hang_up(body: bytes, environ: WSGIEnvironment) -> Iterator[bytes]:
        yield body[: len(body) // 2]
        _drop_connection(environ)


def _drop_connection(environ: WSGIEnvironment) -> None:
    """Close the client's connection without another byte, then stop the request.

    werkzeug's server passes the connection as ``werkzeug.socket``; shutting it down sends a
    TCP FIN (with no TLS close_notify, as a crashed proxy would) and raising a
    ``ConnectionError`` makes the server treat the request as dropped rather than answer
    it with a 500.
    """
    sock = environ.get("werkzeug.socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    raise ConnectionAbortedError("sandbox fault: connection dropped")


def make_control_app(world: World) -> Callable[[WSGIEnvironment, StartResponse], Iterable[bytes]]:
    """``/_sandbox/faults``: read, change and clear faults; read and clear counters.

    - ``GET /_sandbox/faults``: ``{"settings": {...}, "counters": {...}}``;
    - ``PUT /_sandbox/faults`` with a JSON object: change those settings (the others keep
      their values, as ``Sandbox.set_faults`` does); 400 for an unknown name or bad value;
    - ``DELETE /_sandbox/faults``: clear every fault (mail knobs keep their values);
    - ``DELETE /_sandbox/faults/counters``: forget the request counters.
    """

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        faults: Faults | None = world.faults
        method = str(environ.get("REQUEST_METHOD", "GET"))
        path = str(environ.get("PATH_INFO", "/")).rstrip("/")
        status, body = 404, {"error": "not_found"}
        if faults is None:
            status, body = 503, {"error": "faults_unavailable"}
        elif path == "" and method in ("GET", "PUT", "DELETE"):
            status, body = _control_faults(faults, method, environ)
        elif path == "/counters" and method in ("GET", "DELETE"):
            if method == "DELETE":
                faults.reset_counters()
            status, body = 200, faults.counters()
        data = json.dumps(body).encode()
        start_response(
            f"{status} {'OK' if status == 200 else 'Error'}",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(data))),
                ("Cache-Control", "no-store"),
            ],
        )
        return [data]

    return app


def _control_faults(
    faults: Faults, method: str, environ: WSGIEnvironment
) -> tuple[int, dict[str, Any]]:
    if method == "PUT":
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            changes = json.loads(environ["wsgi.input"].read(length) or b"{}")
            if not isinstance(changes, dict):
                raise ValueError("the body must be a JSON object of settings")
            faults.update(**changes)
        except ValueError as error:
            return 400, {"error": "invalid_settings", "detail": str(error)}
    elif method == "DELETE":
        faults.reset()
    return 200, {"settings": faults.snapshot(), "counters": faults.counters()}
