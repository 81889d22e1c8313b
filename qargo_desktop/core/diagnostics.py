"""Diagnostics: what support needs to know about this computer's view of the services.

:func:`collect_diagnostics` gathers, without a single token or password:

- the versions of the app, Python, Qt (read from PySide6 only when asked for) and the OS;
- the settings and where each value came from, and any problem loading them;
- the keyring backend and the token caches (accounts and expiry times, never a token);
- the proxy in use for each service and where that choice came from;
- for each configured service (Qargo API, Microsoft sign-in, Microsoft Graph) the name
  lookup, TCP connection, TLS handshake and an HTTP request, each timed
  (:mod:`qargo_desktop.core.probe`), with who issued the certificate: a TLS-inspecting
  proxy or an unknown CA is named as such;
- how far the local clock is from the servers';
- the last warnings and errors from the log.

The :class:`DiagnosticsReport` it returns is plain data: :meth:`~DiagnosticsReport.to_json`
for the support bundle and ``diagnose --json``, :meth:`~DiagnosticsReport.to_text` for
people, and :attr:`~DiagnosticsReport.findings` (one sentence each, worst first) for the
top of a Diagnostics window. Everything is blocking I/O: run it off the GUI thread.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import importlib.metadata
import logging
import os
import platform
import re
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from qargo_desktop import APP_NAME, __version__
from qargo_desktop.core.config import (
    DEFAULT_SUPPORT_CONTACT,
    AppPaths,
    Settings,
    app_paths,
    mask_url_credentials,
)
from qargo_desktop.core.errors import advice_for
from qargo_desktop.core.logs import RingBufferHandler, redact
from qargo_desktop.core.probe import ClockSkew, EndpointProbe, probe_endpoint

log = logging.getLogger(__name__)

#: Severities of a finding, mildest first.
SEVERITIES = ("ok", "warning", "problem")

#: The clock may be this far off before the report warns (Microsoft allows five minutes).
CLOCK_WARN_S = 120.0
CLOCK_PROBLEM_S = 300.0

SERVICE_LABELS = {"api": "Qargo API", "identity": "Microsoft sign-in", "graph": "Microsoft Graph"}

_PROXY_SOURCE_WORDS = {
    "settings": "set in the settings",
    "disabled": 'turned off in the settings (proxy = "none")',
    "environment": "from the HTTPS_PROXY/HTTP_PROXY environment variables",
    "system": "from the system's proxy settings",
    "bypassed": "not used for this address: loopback, or listed in NO_PROXY",
    "none": "none configured: a direct connection",
}
_SETTING_SOURCE_WORDS = {
    "default": "the default",
    "file": "the config file",
    "environment": "the QARGO_PROXY environment variable",
    "flag": "the command line",
}


# -- the parts of a report ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    """One conclusion, in plain words, for the top of the report.

    Attributes:
        severity: ``ok``, ``warning`` or ``problem``.
        topic: What it is about (``settings``, ``network``, ``tls``, ``proxy``, ``clock``,
            ``keyring``, ``token_cache``).
        text: One or two sentences for a person.
        advice_key: The error table key, when there is one (``net:tls``...).
    """

    severity: str
    topic: str
    text: str
    advice_key: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The finding as JSON-ready values."""
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class Versions:
    """What is running.

    Attributes:
        app: The app's version.
        python: Python's version and implementation.
        executable: The interpreter or frozen executable.
        frozen: Whether this is the bundled app.
        pyside: The PySide6 version (``None`` when not read or not installed).
        qt: The Qt runtime version (``None`` likewise).
        os: The operating system, its release and version.
        machine: The processor architecture.
        openssl: The OpenSSL that Python's ``ssl`` uses.
        libraries: Versions of the libraries that talk to the services.
    """

    app: str
    python: str
    executable: str
    frozen: bool
    pyside: str | None
    qt: str | None
    os: str
    machine: str
    openssl: str
    libraries: Mapping[str, str]

    def to_json(self) -> dict[str, Any]:
        """The versions as JSON-ready values."""
        values = dataclasses.asdict(self)
        values["libraries"] = dict(self.libraries)
        return values


@dataclass(frozen=True, slots=True)
class TlsAssessment:
    """Who issued a service's certificate, and what that means.

    Attributes:
        kind: ``public_ca`` (a well-known public CA), ``extra_ca`` (the CA file in the
            settings), ``inspection_proxy`` (a known TLS-inspecting product, or a name
            that says so) or ``unknown_ca`` (none of these).
        issuer: The issuer as RFC 4514 text.
        issuer_name: Its common name (or organisation), for sentences.
        product: The inspecting product, when the issuer names one (``Zscaler``...).
        verified: Whether the certificate was trusted.
        text: What it means, in words.
    """

    kind: str
    issuer: str
    issuer_name: str
    product: str | None
    verified: bool
    text: str

    @property
    def in_the_way(self) -> bool:
        """Whether something other than a public or configured CA signed the certificate."""
        return self.kind in ("inspection_proxy", "unknown_ca")

    def to_json(self) -> dict[str, Any]:
        """The assessment as JSON-ready values."""
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class EndpointReport:
    """One service, probed layer by layer.

    Attributes:
        name: ``api``, ``identity`` or ``graph``.
        label: ``Qargo API``, ``Microsoft sign-in``, ``Microsoft Graph``.
        probe: What each layer found, timed.
        tls: Who issued the certificate, when the handshake got that far.
        explanation: What went wrong, in plain words (``None`` when reachable).
        advice_key: The error table key of what went wrong.
    """

    name: str
    label: str
    probe: EndpointProbe
    tls: TlsAssessment | None
    explanation: str | None
    advice_key: str | None

    @property
    def ok(self) -> bool:
        """Whether every layer worked."""
        return self.probe.ok

    def to_json(self) -> dict[str, Any]:
        """The endpoint as JSON-ready values."""
        return {
            "name": self.name,
            "label": self.label,
            "ok": self.ok,
            "explanation": self.explanation,
            "advice_key": self.advice_key,
            "tls_assessment": self.tls.to_json() if self.tls else None,
            "probe": self.probe.to_json(),
        }


@dataclass(frozen=True, slots=True)
class ProxyRoute:
    """The proxy one service is reached through."""

    name: str
    url: str
    proxy: str | None
    source: str
    words: str

    def to_json(self) -> dict[str, Any]:
        """The route as JSON-ready values."""
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class ProxyReport:
    """The proxy settings and what each service goes through.

    Attributes:
        setting: The ``proxy`` setting (``system``, ``none`` or a URL, password masked).
        setting_source: Where the setting came from (``default``, ``file``...).
        environment: Proxy variables in the environment (passwords masked).
        routes: The proxy each service goes through.
    """

    setting: str
    setting_source: str
    environment: Mapping[str, str]
    routes: tuple[ProxyRoute, ...]

    def to_json(self) -> dict[str, Any]:
        """The proxy report as JSON-ready values."""
        return {
            "setting": self.setting,
            "setting_source": self.setting_source,
            "environment": dict(self.environment),
            "routes": [route.to_json() for route in self.routes],
        }


@dataclass(frozen=True, slots=True)
class ClockReport:
    """How far the servers' clocks are from this computer's.

    Attributes:
        offset_s: Server minus local clock (positive: this computer is behind).
        uncertainty_s: How far off the estimate may be.
        samples: How many answers it is based on.
        text: In words.
    """

    offset_s: float | None
    uncertainty_s: float | None
    samples: int
    text: str

    def to_json(self) -> dict[str, Any]:
        """The clock report as JSON-ready values."""
        return {
            "offset_s": None if self.offset_s is None else round(self.offset_s, 3),
            "uncertainty_s": None if self.uncertainty_s is None else round(self.uncertainty_s, 3),
            "samples": self.samples,
            "text": self.text,
        }


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One warning or error from the log (redacted).

    Attributes:
        time: When it was logged, as the log shows it.
        level: ``WARNING``, ``ERROR`` or ``CRITICAL``.
        logger: Which part of the app logged it.
        message: The first line, plus the exception's last line when there is one.
    """

    time: str
    level: str
    logger: str
    message: str

    def to_json(self) -> dict[str, Any]:
        """The entry as JSON-ready values."""
        return dataclasses.asdict(self)

    def to_text(self) -> str:
        """One line, as in the log."""
        return f"{self.time} {self.level:<8} {self.logger} {self.message}"


@dataclass(frozen=True)
class DiagnosticsReport:
    """Everything :func:`collect_diagnostics` found.

    Attributes:
        generated_at: When the report was made (UTC).
        duration_s: How long it took.
        versions: What is running.
        settings: The settings and their sources (:meth:`Settings.describe`).
        config_problems: Why the settings could not be loaded, if they could not.
        paths: The app's folders and files.
        keyring: The keyring backend and whether the app may keep its key there.
        token_caches: Per cache (``admin``, ``mailboxes``): accounts, expiry, where and
            how it is kept; never a token.
        proxy: The proxy settings and routes.
        endpoints: Each service, probed (empty when probing was skipped).
        clock: The clock difference.
        recent_problems: The last warnings and errors from the log.
        findings: Conclusions, worst first.
        support_contact: Where support bundles go (the ``support_contact`` setting).
    """

    generated_at: datetime
    duration_s: float
    versions: Versions
    settings: Mapping[str, Any]
    config_problems: tuple[str, ...]
    paths: Mapping[str, Any]
    keyring: Mapping[str, Any]
    token_caches: Mapping[str, Mapping[str, Any]]
    proxy: ProxyReport
    endpoints: tuple[EndpointReport, ...]
    clock: ClockReport
    recent_problems: tuple[LogEntry, ...]
    findings: tuple[Finding, ...]
    support_contact: str = DEFAULT_SUPPORT_CONTACT

    @property
    def severity(self) -> str:
        """The worst finding's severity (``ok`` when there is nothing to worry about)."""
        worst = max((SEVERITIES.index(f.severity) for f in self.findings), default=0)
        return SEVERITIES[worst]

    @property
    def ok(self) -> bool:
        """Whether no finding is a problem."""
        return self.severity != "problem"

    def endpoint(self, name: str) -> EndpointReport | None:
        """The report of one service by name (``api``, ``identity``, ``graph``)."""
        return next((e for e in self.endpoints if e.name == name), None)

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready values (redacted once more, to be sure)."""
        values: dict[str, Any] = {
            "format": 1,
            "app": APP_NAME,
            "generated_at": _iso(self.generated_at),
            "duration_s": round(self.duration_s, 3),
            "severity": self.severity,
            "findings": [f.to_json() for f in self.findings],
            "versions": self.versions.to_json(),
            "settings": dict(self.settings),
            "config_problems": list(self.config_problems),
            "paths": dict(self.paths),
            "keyring": dict(self.keyring),
            "token_caches": {k: dict(v) for k, v in self.token_caches.items()},
            "proxy": self.proxy.to_json(),
            "endpoints": [e.to_json() for e in self.endpoints],
            "clock": self.clock.to_json(),
            "recent_problems": [e.to_json() for e in self.recent_problems],
            "support_contact": self.support_contact,
        }
        redacted = _redact_values(values)
        assert isinstance(redacted, dict)
        return redacted

    def to_text(self) -> str:
        """The report for people: findings first, then each section."""
        lines = [
            f"{APP_NAME} diagnostics, {_iso(self.generated_at)} ({self.duration_s:.1f} s)",
        ]
        for section in (
            _text_findings,
            _text_versions,
            _text_services,
            _text_proxy,
            _text_clock,
            _text_keyring_and_caches,
            _text_settings,
            _text_folders,
            _text_recent,
        ):
            lines += ["", *section(self)]
        lines += ["", f"Support: {contact_sentence(self.support_contact)}", ""]
        return redact("\n".join(lines))


# -- the text form, section by section ---------------------------------------------------------


def _text_findings(report: DiagnosticsReport) -> list[str]:
    marks = {"ok": "OK     ", "warning": "WARNING", "problem": "PROBLEM"}
    return ["Findings"] + [f"  {marks[f.severity]} {f.text}" for f in report.findings]


def _text_versions(report: DiagnosticsReport) -> list[str]:
    v = report.versions
    return [
        "Versions",
        f"  App:     {APP_NAME} {v.app}{' (bundled)' if v.frozen else ''}",
        f"  Python:  {v.python}",
        f"  Qt:      {v.qt or 'not loaded'} (PySide6 {v.pyside or '-'})",
        f"  OS:      {v.os} ({v.machine})",
        f"  OpenSSL: {v.openssl}",
        "  Libraries: " + ", ".join(f"{k} {val}" for k, val in v.libraries.items()),
    ]


def _text_services(report: DiagnosticsReport) -> list[str]:
    lines = ["Services"]
    if not report.endpoints:
        lines.append("  not checked")
    for endpoint in report.endpoints:
        state = "reachable" if endpoint.ok else "NOT reachable"
        lines.append(f"  {endpoint.label}: {state} ({endpoint.probe.url})")
        for step in endpoint.probe.steps:
            if step.ok is None:
                lines.append(f"    {step.name.upper():<5} not run")
                continue
            took = "-" if step.elapsed_s is None else f"{step.elapsed_s * 1000:.0f} ms"
            status = "ok    " if step.ok else "FAILED"
            lines.append(f"    {step.name.upper():<5} {status} {took:>8}  {step.detail}")
        if endpoint.tls is not None:
            lines.append(f"    Certificate: {endpoint.tls.text}")
        if endpoint.explanation:
            lines.append(f"    What it means: {endpoint.explanation}")
    return lines


def _text_proxy(report: DiagnosticsReport) -> list[str]:
    proxy = report.proxy
    lines = ["Proxy", f"  Setting: {proxy.setting} (from {proxy.setting_source})"]
    for route in proxy.routes:
        label = SERVICE_LABELS.get(route.name, route.name)
        lines.append(f"  {label}: {route.proxy or 'direct'} ({route.words})")
    lines += [f"  Environment {name}={value}" for name, value in proxy.environment.items()]
    return lines


def _text_clock(report: DiagnosticsReport) -> list[str]:
    return ["Clock", f"  {report.clock.text}"]


def _text_keyring_and_caches(report: DiagnosticsReport) -> list[str]:
    lines = ["Keyring"]
    lines += [f"  {key}: {value}" for key, value in report.keyring.items() if value is not None]
    lines += ["", "Saved sign-ins (token caches)"]
    for role, cache in report.token_caches.items():
        lines.append(f"  {role}: {_cache_summary(cache)}")
        lines += [f"    account {a.get('username')}" for a in cache.get("accounts") or []]
        for token in cache.get("access_tokens") or []:
            scopes = " ".join(token.get("scopes") or [])
            state = "expired" if token.get("expired") else "valid"
            lines.append(f"    access token for {scopes}: {state} until {token.get('expires_at')}")
    return lines


def _text_settings(report: DiagnosticsReport) -> list[str]:
    lines = ["Settings"] + [f"  PROBLEM {problem}" for problem in report.config_problems]
    for key, value in report.settings.items():
        if isinstance(value, Mapping):
            lines.append(f"  {key} = {value.get('value')!r} ({value.get('source')})")
        else:
            lines.append(f"  {key} = {value!r}")
    return lines


def _text_folders(report: DiagnosticsReport) -> list[str]:
    return ["Folders"] + [f"  {key}: {value}" for key, value in report.paths.items()]


def _text_recent(report: DiagnosticsReport) -> list[str]:
    lines = ["Recent warnings and errors in the log"]
    if not report.recent_problems:
        lines.append("  none")
    lines += [f"  {entry.to_text()}" for entry in report.recent_problems]
    return lines


# -- collecting -----------------------------------------------------------------------------

ProgressCallback = Callable[[str], None]


def collect_diagnostics(
    settings: Settings,
    *,
    paths: AppPaths | None = None,
    session: requests.Session | None = None,
    token_caches: Mapping[str, Any] | None = None,
    ring_buffer: RingBufferHandler | None = None,
    config_problems: Sequence[str] = (),
    probe: bool = True,
    timeout_s: float | None = None,
    cancel: threading.Event | None = None,
    on_progress: ProgressCallback | None = None,
    include_qt: bool = True,
) -> DiagnosticsReport:
    """Gather the diagnostics report. Blocking: call it from a worker thread.

    Args:
        settings: The app's settings (defaults when they could not be loaded; pass the
            loading errors as ``config_problems``).
        paths: The app's folders (default: from ``settings``).
        session: The HTTP session to probe with (default: a fresh one from ``settings``,
            without retries, so each layer's first answer is what is reported).
        token_caches: The token caches by role (``Services.token_stores()``); default: the
            cache files in the data folder, opened as the app would.
        ring_buffer: The in-app log view's buffer, for recent problems when there is no
            log file.
        config_problems: Why the settings could not be loaded.
        probe: Whether to probe the services (off: no network at all).
        timeout_s: Timeout of each layer (default: the settings' connect timeout).
        cancel: Stops probing between layers.
        on_progress: Receives a short line as each part starts.
        include_qt: Report Qt's version (never imports Qt; see :func:`qt_versions`).
    """
    started = time.monotonic()
    generated_at = datetime.now(UTC)
    paths = paths or app_paths(settings)

    def progress(text: str) -> None:
        log.debug("Diagnostics: %s", text)
        if on_progress is not None:
            on_progress(text)

    progress("Reading versions and settings")
    versions = collect_versions(include_qt=include_qt)
    recent = recent_problems(paths.log_file, ring_buffer)
    keyring_info = describe_keyring()
    progress("Reading the saved sign-ins")
    caches = describe_token_caches(settings, paths, token_caches)
    proxy = describe_proxies(settings)

    endpoints: tuple[EndpointReport, ...] = ()
    clock = ClockReport(None, None, 0, "not measured (the services were not checked)")
    session_problem: str | None = None
    if probe:
        own_session = session is None
        if session is None:
            session, session_problem = _diagnostics_session(settings)
        try:
            endpoints = probe_services(
                settings,
                session,
                timeout_s=timeout_s or settings.http_connect_timeout_s,
                cancel=cancel,
                on_progress=progress,
            )
        finally:
            if own_session:
                session.close()
        clock = clock_report(endpoints)

    report = DiagnosticsReport(
        generated_at=generated_at,
        duration_s=0.0,
        versions=versions,
        settings=settings.describe(),
        config_problems=tuple(config_problems),
        paths=describe_paths(settings, paths),
        keyring=keyring_info,
        token_caches=caches,
        proxy=proxy,
        endpoints=endpoints,
        clock=clock,
        recent_problems=tuple(recent),
        findings=(),
        support_contact=settings.support_contact,
    )
    findings = derive_findings(report, settings, session_problem=session_problem, probed=probe)
    report = dataclasses.replace(
        report, findings=tuple(findings), duration_s=time.monotonic() - started
    )
    log.info(
        "Diagnostics done in %.1f s: %s (%s)",
        report.duration_s,
        report.severity,
        "; ".join(f.text for f in report.findings if f.severity != "ok") or "nothing found",
    )
    return report


def _diagnostics_session(settings: Settings) -> tuple[requests.Session, str | None]:
    from qargo_desktop.core.http import RetryPolicy, build_session

    policy = RetryPolicy(max_attempts=1)
    try:
        return build_session(settings, retry_policy=policy), None
    except ValueError as exc:
        # Probe anyway: who issued each certificate is worth knowing all the more.
        problem = f"{exc}; the services were checked without it"
        return build_session(
            dataclasses.replace(settings, extra_ca_file=None), retry_policy=policy
        ), problem


def service_targets(settings: Settings) -> list[tuple[str, str, str]]:
    """The configured services as ``(name, base URL, URL of the HTTP request)``."""
    targets: list[tuple[str, str, str]] = []
    if settings.api_base_url:
        api = settings.api_base_url.rstrip("/")
        targets.append(("api", api, f"{api}/v1/me"))
    if settings.authority:
        authority = settings.authority.rstrip("/")
        targets.append(
            ("identity", authority, f"{authority}/v2.0/.well-known/openid-configuration")
        )
    if settings.graph_base_url:
        graph = settings.graph_base_url.rstrip("/")
        targets.append(("graph", graph, f"{graph}/me"))
    return targets


def probe_services(
    settings: Settings,
    session: requests.Session,
    *,
    timeout_s: float,
    cancel: threading.Event | None = None,
    on_progress: ProgressCallback | None = None,
) -> tuple[EndpointReport, ...]:
    """Probe every configured service at once and explain what each probe found."""
    targets = service_targets(settings)
    if not targets:
        return ()
    extra_ca = extra_ca_subjects(settings.extra_ca_file)
    for name, url, _http in targets:
        if on_progress is not None:
            on_progress(f"Checking {SERVICE_LABELS[name]} ({url})")
    # In parallel: a service that times out must not make the others wait.
    with concurrent.futures.ThreadPoolExecutor(
        max_workers=len(targets), thread_name_prefix="diagnostics-probe"
    ) as pool:
        futures = [
            pool.submit(
                probe_endpoint,
                name,
                url,
                session,
                http_url=http,
                timeout_s=timeout_s,
                cancel=cancel,
            )
            for name, url, http in targets
        ]
        probes = [future.result() for future in futures]
    return tuple(explain_probe(p, settings, extra_ca) for p in probes)


def explain_probe(
    probe: EndpointProbe, settings: Settings, extra_ca: Iterable[str] = ()
) -> EndpointReport:
    """Turn one probe into plain words: what failed, why, and who issued the certificate."""
    label = SERVICE_LABELS.get(probe.name, probe.name)
    tls = assess_certificate(probe, extra_ca) if probe.tls is not None else None
    failed = probe.failed_step
    if failed is None:
        return EndpointReport(probe.name, label, probe, tls, None, None)

    key = failed.error_key or "net:connection"
    where = f"{probe.host} (through the proxy {probe.proxy})" if probe.proxy else probe.host
    if failed.name == "proxy" and key == "net:connection":
        # The tunnel was refused with some other status: the proxy's own choice.
        key = "net:proxy_refused"
    if failed.name in ("dns", "tcp") and probe.proxy and key in ("net:dns", "net:connection"):
        key = "net:proxy_unreachable"
    advice = advice_for(key)
    parts = [f"{label} cannot be reached: {advice.summary}"]
    if key == "net:dns":
        parts.append(f"The name {probe.host} could not be looked up.")
    elif key == "net:timeout":
        parts.append(
            f"{where} did not answer within {_seconds_words(failed.elapsed_s)} "
            f"(at the {failed.name.upper()} step)."
        )
    elif key == "net:proxy_auth":
        parts.append(f"The proxy {probe.proxy} ({_route_words(probe.proxy_source)}) answered 407.")
    elif key in ("net:proxy_refused", "net:proxy_unreachable"):
        parts.append(f"Proxy: {probe.proxy} ({_route_words(probe.proxy_source)}): {failed.detail}.")
    elif tls is not None and key.startswith("net:tls"):
        parts.append(tls.text)
    elif key == "net:connection":
        parts.append(f"{failed.detail}.")
    if advice.detail:
        parts.append(advice.detail)
    return EndpointReport(probe.name, label, probe, tls, " ".join(parts), key)


# -- certificates ---------------------------------------------------------------------------

# Organisations and names of well-known public certificate authorities (issuing and root
# names as they appear in issuers). A match only says "a public CA issued this".
_PUBLIC_CAS = (
    "DigiCert", "Microsoft", "GlobalSign", "Let's Encrypt", "ISRG", "Sectigo", "COMODO",
    "USERTrust", "AAA Certificate Services", "Entrust", "GoDaddy", "Go Daddy", "Starfield",
    "Amazon", "Google Trust Services", "GTS CA", "GTS Root", "Baltimore", "CyberTrust",
    "IdenTrust", "QuoVadis", "SwissSign", "Buypass", "Certum", "Asseco", "Actalis", "HARICA",
    "SSL.com", "Thawte", "GeoTrust", "RapidSSL", "VeriSign", "Network Solutions", "T-Systems",
    "Telekom Security", "D-TRUST", "Certigna", "Izenpe", "Cloudflare, Inc", "ZeroSSL",
    "Apple", "SECOM", "Certainly", "emSign", "TWCA", "Chunghwa", "WISeKey", "OISTE",
    "Firmaprofesional", "ACCV", "FNMT", "Atos", "TrustCor", "Trustwave", "E-Tugra",
    "Certainly", "Hongkong Post", "NetLock", "Microsec", "Disig", "KPN", "Staat der Nederlanden",
)  # fmt: skip

# Products that open HTTPS to inspect it, as they name themselves in the certificates they
# make. Checked before the public list: some vendors are both.
_INSPECTION_PRODUCTS = (
    ("Zscaler", r"zscaler"),
    ("Netskope", r"netskope"),
    ("Fortinet FortiGate", r"forti(?:net|gate)"),
    ("Palo Alto Networks", r"palo\s*alto"),
    ("Symantec/Blue Coat ProxySG", r"blue\s*coat|proxysg"),
    ("Cisco Umbrella", r"umbrella|opendns"),
    ("Cisco", r"\bcisco\b"),
    ("Sophos", r"sophos"),
    ("Forcepoint", r"forcepoint|websense"),
    ("Skyhigh/McAfee Web Gateway", r"skyhigh|mcafee"),
    ("Check Point", r"check\s*point"),
    ("Barracuda", r"barracuda"),
    ("SonicWall", r"sonicwall"),
    ("WatchGuard", r"watchguard"),
    ("Kaspersky", r"kaspersky"),
    ("ESET", r"\beset\b"),
    ("Avast", r"\bavast\b"),
    ("AVG", r"\bavg\b"),
    ("Bitdefender", r"bitdefender"),
    ("Norton", r"\bnorton\b"),
    ("Trend Micro", r"trend\s*micro"),
    ("iboss", r"\biboss\b"),
    ("Menlo Security", r"menlo\s*security"),
    ("Cloudflare Gateway", r"cloudflare\s+(?:for\s+teams|gateway)"),
    ("Cato Networks", r"cato\s*networks"),
    ("Untangle", r"untangle"),
    ("Smoothwall", r"smoothwall"),
    ("Lightspeed", r"lightspeed"),
    ("Squid", r"\bsquid\b"),
    ("mitmproxy", r"mitmproxy"),
    ("Charles Proxy", r"charles\s*proxy"),
    ("Fiddler", r"fiddler"),
    ("Burp Suite", r"portswigger|\bburp\b"),
    ("Proxyman", r"proxyman"),
)
# Words an in-house inspection CA tends to have in its name.
_INSPECTION_WORDS = re.compile(
    r"inspect|intercept|decrypt|\bmitm\b|\bproxy\b|firewall|web\s*filter|\bdpi\b|\bssl\s*vpn",
    re.IGNORECASE,
)
_RDN = re.compile(r"(?:^|,)\s*(CN|O|OU)=((?:\\.|[^,])*)")


def extra_ca_subjects(path: Path | None) -> tuple[str, ...]:
    """The subjects (RFC 4514) of the certificates in the extra CA file, if any."""
    if path is None:
        return ()
    from cryptography import x509

    try:
        certificates = x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError):
        return ()
    return tuple(c.subject.rfc4514_string() for c in certificates)


def assess_certificate(probe: EndpointProbe, extra_ca: Iterable[str] = ()) -> TlsAssessment:
    """Say who issued a service's certificate, and whether that is someone in the way.

    A certificate from neither a well-known public CA nor the extra CA in the settings
    means a TLS-inspecting proxy or an unknown CA is in the way; a known inspection
    product is named.
    """
    assert probe.tls is not None
    return classify_issuer(probe.tls.issuer, verified=probe.tls.verified, extra_ca=extra_ca)


def classify_issuer(issuer: str, *, verified: bool, extra_ca: Iterable[str] = ()) -> TlsAssessment:
    """Classify a certificate issuer (RFC 4514 text); see :func:`assess_certificate`."""
    names = {kind: value.replace("\\", "") for kind, value in _RDN.findall(issuer)}
    shown = names.get("CN") or names.get("O") or issuer or "an unnamed issuer"
    searchable = " ".join(names.values()) or issuer
    product = next(
        (name for name, pattern in _INSPECTION_PRODUCTS if re.search(pattern, searchable, re.I)),
        None,
    )
    trusted = "This computer trusts it." if verified else "This computer does not trust it."

    if issuer and issuer in set(extra_ca):
        text = f"issued by {shown}, the extra CA in the settings (extra_ca_file)"
        if product:
            text += f"; it belongs to a TLS-inspecting proxy ({product})"
        return TlsAssessment("extra_ca", issuer, shown, product, verified, text + ".")
    if product is not None:
        text = (
            f"issued by {shown}: a TLS-inspecting proxy ({product}) is in the way, opening "
            f"and re-signing the secure connection. {trusted}"
        )
        return TlsAssessment("inspection_proxy", issuer, shown, product, verified, text)
    if any(re.search(rf"(?<![A-Za-z]){re.escape(ca)}", searchable, re.I) for ca in _PUBLIC_CAS):
        text = f"issued by {shown}, a well-known public certificate authority."
        if not verified:
            text += (
                " Yet this computer does not trust it: its list of trusted roots may be out of "
                "date, or its clock may be wrong."
            )
        return TlsAssessment("public_ca", issuer, shown, None, verified, text)
    kind = "inspection_proxy" if _INSPECTION_WORDS.search(searchable) else "unknown_ca"
    text = (
        f"issued by {shown}, which is neither a well-known public certificate authority nor "
        "the extra CA in the settings: a TLS-inspecting proxy (corporate firewall, "
        f"antivirus) or an unknown CA is in the way. {trusted}"
    )
    return TlsAssessment(kind, issuer, shown, None, verified, text)


# -- the other sections ---------------------------------------------------------------------


_LIBRARIES = (
    "msal",
    "requests",
    "urllib3",
    "truststore",
    "keyring",
    "cryptography",
    "platformdirs",
)


def collect_versions(*, include_qt: bool = True) -> Versions:
    """The versions of everything that matters for support."""
    if include_qt:
        pyside, qt = qt_versions()
    else:
        pyside, qt = _distribution_version("PySide6-Essentials"), None
    libraries = {name: _distribution_version(name) or "not installed" for name in _LIBRARIES}
    system = platform.system() or sys.platform
    if system == "Windows":
        os_text = f"Windows {platform.release()} (build {platform.version()})"
    elif system == "Darwin":
        os_text = f"macOS {platform.mac_ver()[0]}"
    else:
        os_text = platform.platform()
    return Versions(
        app=__version__,
        python=f"{platform.python_version()} ({platform.python_implementation()})",
        executable=sys.executable,
        frozen=bool(getattr(sys, "frozen", False)),
        pyside=pyside,
        qt=qt,
        os=os_text,
        machine=platform.machine(),
        openssl=ssl.OPENSSL_VERSION,
        libraries=libraries,
    )


def qt_versions() -> tuple[str | None, str | None]:
    """Return ``(PySide6 version, Qt runtime version)`` without importing Qt.

    The core never imports PySide6. The installed PySide6 version comes from the package
    metadata; Qt's runtime version is asked of QtCore when the window already loaded it,
    and otherwise is the PySide6 version (each PySide6 release ships the Qt of the same
    number).
    """
    pyside = _distribution_version("PySide6-Essentials") or _distribution_version("PySide6")
    qt_core = sys.modules.get("PySide6.QtCore")
    q_version = getattr(qt_core, "qVersion", None)
    return pyside, str(q_version()) if callable(q_version) else pyside


def _distribution_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def describe_keyring() -> dict[str, Any]:
    """The default keyring backend, and the one the token cache key would live in."""
    import keyring

    from qargo_desktop.core.token_cache import backend_name, choose_keyring_backend

    try:
        default = backend_name(keyring.get_keyring())
        chosen, refusal = choose_keyring_backend()
    except Exception as exc:  # a broken backend raises anything
        return {"default_backend": "unknown", "usable": False, "problem": str(exc)}
    return {
        "default_backend": default,
        "used_backend": backend_name(chosen) if chosen is not None else None,
        "usable": chosen is not None,
        "problem": refusal,
    }


def describe_token_caches(
    settings: Settings, paths: AppPaths, stores: Mapping[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """Accounts and expiry times of each token cache; never a token."""
    if stores is not None:
        return {role: _describe_store(store) for role, store in stores.items()}
    if not settings.client_id:
        return {}
    from qargo_desktop.core.token_cache import EncryptedTokenCache

    # The same files, app ids and key names as bootstrap.build_services uses.
    files = {
        "admin": (paths.cache_file, settings.client_id, "token-cache-key"),
        "mailboxes": (
            paths.data_dir / "mailbox_token_cache.bin",
            f"{settings.client_id}/mailboxes",
            "mailbox-token-cache-key",
        ),
    }
    described: dict[str, dict[str, Any]] = {}
    for role, (path, app_id, key_username) in files.items():
        if not path.exists():
            described[role] = {"file": str(path), "file_exists": False, "accounts": []}
            continue
        cache = EncryptedTokenCache(path, app_id=app_id, key_username=key_username)
        described[role] = _describe_store(cache)
    return described


def _describe_store(store: Any) -> dict[str, Any]:
    describe = getattr(store, "describe", None)
    try:
        if callable(describe):
            return dict(describe())
        cache = store.cache
        accounts = [
            {"username": a.get("username"), "home_account_id": a.get("home_account_id")}
            for a in cache.search(cache.CredentialType.ACCOUNT)
        ]
    except Exception as exc:  # a locked or unreadable cache is itself a finding
        return {"problem": f"could not be read: {exc}", "accounts": []}
    return {"backend": "memory only", "persistent": False, "accounts": accounts}


def _cache_summary(cache: Mapping[str, Any]) -> str:
    if cache.get("file_exists") is False:
        return f"no saved sign-ins ({cache.get('file')} does not exist)"
    parts = []
    if "persistent" in cache:
        parts.append("kept encrypted on disk" if cache["persistent"] else "kept in memory only")
    if cache.get("backend"):
        parts.append(f"key in {cache['backend']}")
    parts.append(f"{len(cache.get('accounts') or [])} account(s)")
    if cache.get("problem"):
        parts.append(f"problem: {cache['problem']}")
    return ", ".join(parts)


def describe_proxies(settings: Settings) -> ProxyReport:
    """The proxy setting, the environment's proxy variables, and each service's route."""
    from qargo_desktop.core.http import describe_proxy

    routes = []
    for name, url, _http in service_targets(settings):
        proxy, source = describe_proxy(settings, url)
        routes.append(ProxyRoute(name, url, proxy, source, _route_words(source, settings)))
    environment = {
        name: mask_url_credentials(value)
        for name, value in sorted(os.environ.items())
        if name.lower() in ("https_proxy", "http_proxy", "all_proxy", "no_proxy") and value
    }
    return ProxyReport(
        setting=mask_url_credentials(settings.proxy),
        setting_source=_SETTING_SOURCE_WORDS.get(settings.source_of("proxy"), "the default"),
        environment=environment,
        routes=tuple(routes),
    )


def _route_words(source: str, settings: Settings | None = None) -> str:
    words = _PROXY_SOURCE_WORDS.get(source, source)
    if source == "settings" and settings is not None:
        words += f" ({_SETTING_SOURCE_WORDS.get(settings.source_of('proxy'), 'the default')})"
    return words


def clock_report(endpoints: Iterable[EndpointReport]) -> ClockReport:
    """Combine the services' ``Date`` headers into one clock difference."""
    skew = ClockSkew()
    for endpoint in endpoints:
        probe = endpoint.probe
        if probe.local_before is not None and probe.local_after is not None:
            skew.add(probe.server_date, probe.local_before, probe.local_after)
    estimate = skew.estimate()
    if estimate is None:
        return ClockReport(None, None, 0, "not measured (no service answered with its time)")
    offset, uncertainty = estimate
    if abs(offset) < max(1.0, uncertainty):
        text = f"in step with the servers (within {_seconds_words(max(uncertainty, 1.0))})"
    else:
        side = "behind" if offset > 0 else "ahead of"
        text = (
            f"this computer's clock is {_seconds_words(abs(offset))} {side} the servers' "
            f"(give or take {_seconds_words(uncertainty)})"
        )
    return ClockReport(offset, uncertainty, skew.samples, text)


def describe_paths(settings: Settings, paths: AppPaths) -> dict[str, Any]:
    """The folders and files support may need to find."""
    log_files = sorted(paths.log_dir.glob(f"{APP_NAME}.log*")) if paths.log_dir.is_dir() else []
    crash_files = sorted(paths.log_dir.glob("crash-*.txt")) if paths.log_dir.is_dir() else []
    return {
        "config_file": str(settings.config_file) if settings.config_file else None,
        "config_dir": str(paths.config_dir),
        "data_dir": str(paths.data_dir),
        "log_dir": str(paths.log_dir),
        "log_files": [f"{p.name} ({_size(p)})" for p in log_files],
        "crash_reports": [p.name for p in crash_files],
    }


def _size(path: Path) -> str:
    with contextlib.suppress(OSError):
        size = path.stat().st_size
        return f"{size / 1024:.0f} KB" if size >= 1024 else f"{size} bytes"
    return "unreadable"


# -- recent problems from the log -----------------------------------------------------------

_LOG_LINE = re.compile(
    r"^(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (?P<level>[A-Z]+)\s+(?P<logger>\S+) "
    r"\[[^\]]*\] (?P<message>.*)$"
)
_PROBLEM_LEVELS = ("WARNING", "ERROR", "CRITICAL")
_TAIL_BYTES = 512 * 1024


def recent_problems(
    log_file: Path | None, ring_buffer: RingBufferHandler | None = None, limit: int = 20
) -> list[LogEntry]:
    """The last warnings and errors, oldest first: from the log files, or else the buffer."""
    entries: list[LogEntry] = []
    if log_file is not None:
        # The current file, then the one before it if the current one is short.
        for path in (log_file.with_name(log_file.name + ".1"), log_file):
            entries.extend(_problems_in(path))
    if not entries and ring_buffer is not None:
        for record in ring_buffer.records():
            if record.levelno >= logging.WARNING:
                when = datetime.fromtimestamp(record.created).strftime("%Y-%m-%d %H:%M:%S")
                text = redact(record.getMessage().splitlines()[0] if record.getMessage() else "")
                entries.append(LogEntry(when, record.levelname, record.name, text))
    return entries[-limit:]


def _problems_in(path: Path) -> list[LogEntry]:
    try:
        with path.open("rb") as stream:
            stream.seek(0, os.SEEK_END)
            size = stream.tell()
            stream.seek(max(0, size - _TAIL_BYTES))
            text = stream.read().decode("utf-8", "replace")
    except OSError:
        return []
    found: list[LogEntry] = []
    current: dict[str, str] | None = None
    last_extra = ""

    def flush() -> None:
        if current is not None and current["level"] in _PROBLEM_LEVELS:
            message = current["message"]
            if last_extra:
                message = f"{message} [{last_extra}]"
            found.append(
                LogEntry(current["time"], current["level"], current["logger"], redact(message))
            )

    for line in text.splitlines():
        match = _LOG_LINE.match(line)
        if match:
            flush()
            current, last_extra = match.groupdict(), ""
        elif current is not None and line.strip() and not line.startswith(" "):
            # The last unindented line of a traceback names the exception.
            last_extra = line.strip()[:300]
    flush()
    return found


# -- findings -------------------------------------------------------------------------------


def derive_findings(
    report: DiagnosticsReport,
    settings: Settings,
    *,
    session_problem: str | None = None,
    probed: bool = True,
) -> list[Finding]:
    """The report's conclusions, worst first."""
    findings: list[Finding] = []
    for problem in report.config_problems:
        findings.append(Finding("problem", "settings", f"Setting unusable: {problem}"))
    missing = settings.missing_for_production()
    if missing and not settings.sandbox:
        findings.append(
            Finding(
                "problem",
                "settings",
                "The settings are incomplete (missing: " + ", ".join(missing) + ").",
                "app:sign_in_required",
            )
        )
    if session_problem:
        findings.append(Finding("problem", "settings", f"extra_ca_file: {session_problem}."))

    if not report.keyring.get("usable", False):
        findings.append(
            Finding(
                "warning",
                "keyring",
                "No usable keyring ("
                + str(report.keyring.get("problem") or "unknown reason")
                + "): sign-ins are kept only until the app closes.",
            )
        )
    for role, cache in report.token_caches.items():
        if cache.get("problem"):
            findings.append(
                Finding("warning", "token_cache", f"Token cache ({role}): {cache['problem']}")
            )

    findings += _network_findings(report)

    offset = report.clock.offset_s
    if offset is not None and abs(offset) > CLOCK_WARN_S:
        severity = "problem" if abs(offset) > CLOCK_PROBLEM_S else "warning"
        findings.append(
            Finding(
                severity,
                "clock",
                f"The clock is off: {report.clock.text}. Sign-ins fail beyond five minutes.",
                "selftest:clock_skew",
            )
        )

    if not probed:
        findings.append(Finding("ok", "network", "The services were not checked."))
    findings.sort(key=lambda f: -SEVERITIES.index(f.severity))
    return findings


def _network_findings(report: DiagnosticsReport) -> list[Finding]:
    findings: list[Finding] = []
    reachable = []
    for endpoint in report.endpoints:
        if not endpoint.ok:
            findings.append(
                Finding(
                    "problem",
                    "network",
                    endpoint.explanation or f"{endpoint.label} cannot be reached.",
                    endpoint.advice_key,
                )
            )
        else:
            reachable.append(endpoint.label)
            if endpoint.tls is not None and endpoint.tls.in_the_way:
                findings.append(
                    Finding(
                        "warning",
                        "tls",
                        f"{endpoint.label}: the certificate was {endpoint.tls.text}",
                        "net:tls",
                    )
                )
    if reachable:
        findings.append(Finding("ok", "network", "Reachable: " + ", ".join(reachable) + "."))
    return findings


def contact_sentence(support_contact: str) -> str:
    """What to do with a support bundle, naming the configured contact."""
    return (
        f"Save a support bundle (Diagnostics > Save support bundle, or "
        f"`{APP_NAME} diagnose --bundle FILE.zip`) and send it to {support_contact}. "
        "It holds no passwords or tokens, but it does hold account names, mailbox addresses "
        "and this computer's name and folders."
    )


# -- helpers --------------------------------------------------------------------------------


def _redact_values(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {str(k): _redact_values(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_values(v) for v in value]
    return value


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _seconds_words(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.0f} minutes"


__all__ = [
    "CLOCK_PROBLEM_S",
    "CLOCK_WARN_S",
    "SERVICE_LABELS",
    "SEVERITIES",
    "ClockReport",
    "DiagnosticsReport",
    "EndpointReport",
    "Finding",
    "LogEntry",
    "ProxyReport",
    "ProxyRoute",
    "TlsAssessment",
    "Versions",
    "assess_certificate",
    "classify_issuer",
    "collect_diagnostics",
    "collect_versions",
    "contact_sentence",
    "describe_keyring",
    "describe_proxies",
    "describe_token_caches",
    "explain_probe",
    "probe_services",
    "qt_versions",
    "recent_problems",
    "service_targets",
]
