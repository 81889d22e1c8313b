"""Support: the support bundle, crash reports, and who to send them to.

- :func:`save_support_bundle` writes one zip with the diagnostics report (JSON and text),
  the logs, crash reports, recent self-test reports and the config file, every text in it
  redacted once more on the way in. Never the token caches.
- :func:`format_crash_report` and :func:`save_crash_report` turn an unhandled exception
  into a redacted report (exception, traceback, versions, the last log lines) saved in
  the log folder as ``crash-<time>.txt``; :func:`report_crash` does both and logs it, and
  :func:`install_crash_handler` (from :mod:`qargo_desktop.core.crash_hooks`, light enough
  to be installed first thing at start-up) routes unhandled exceptions of every thread
  through it.
- :func:`contact_text` says where to send a bundle, naming the ``support_contact``
  setting.

Nothing here imports Qt: the crash dialog and the Diagnostics window show these objects.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sys
import tempfile
import threading
import traceback
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from qargo_desktop import APP_NAME
from qargo_desktop.core.config import AppPaths, Settings, app_paths
from qargo_desktop.core.crash_hooks import install_crash_handler
from qargo_desktop.core.logs import RingBufferHandler, redact

if TYPE_CHECKING:
    from qargo_desktop.core.diagnostics import DiagnosticsReport

# The diagnostics (and the HTTP stack behind them) are imported where they are used: the
# crash handler is installed before the window's first paint and must not delay it.

log = logging.getLogger(__name__)

#: The folder (under the data folder) where the self-test saves its reports.
SELFTEST_REPORTS_DIR = "selftest-reports"
#: How many of the newest self-test reports and crash reports a bundle takes.
BUNDLE_SELFTEST_REPORTS = 20
BUNDLE_CRASH_REPORTS = 10
#: How many log lines a crash report quotes.
CRASH_LOG_LINES = 60

PRIVACY_NOTE = (
    "This report holds no passwords, tokens or sign-in codes: they are removed. It may "
    "hold personal data: account names, mailbox addresses, this computer's name and its "
    "folder names."
)


def contact_text(settings: Settings) -> str:
    """The 'Contact Qargo Support' text: what to save and who to send it to."""
    from qargo_desktop.core.diagnostics import contact_sentence

    return contact_sentence(settings.support_contact)


# -- the support bundle ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SupportBundle:
    """A saved support bundle.

    Attributes:
        path: The zip file.
        files: The names inside it.
        size_bytes: Its size.
        contact: Where to send it, in words.
    """

    path: Path
    files: tuple[str, ...]
    size_bytes: int
    contact: str

    def to_json(self) -> dict[str, Any]:
        """The bundle's description as JSON-ready values."""
        return {
            "path": str(self.path),
            "files": list(self.files),
            "size_bytes": self.size_bytes,
            "contact": self.contact,
        }


def save_support_bundle(
    target: Path,
    settings: Settings,
    *,
    paths: AppPaths | None = None,
    report: DiagnosticsReport | None = None,
    now: datetime | None = None,
) -> SupportBundle:
    """Write the support bundle zip to ``target`` (atomically) and describe it.

    Args:
        target: The zip file to write (its folder must exist).
        settings: The app's settings.
        paths: The app's folders (default: from ``settings``).
        report: The diagnostics to include; ``None`` collects them now (probing the
            services, which takes a few seconds).
        now: When the bundle is made (tests).

    Raises:
        OSError: The zip could not be written; no partial file is left behind.
    """
    paths = paths or app_paths(settings)
    if report is None:
        from qargo_desktop.core.diagnostics import collect_diagnostics

        report = collect_diagnostics(settings, paths=paths)
    created = now or datetime.now(UTC)
    contact = contact_text(settings)
    entries: list[tuple[str, str]] = [
        ("README.txt", _readme(created, contact)),
        ("diagnostics.json", json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n"),
        ("diagnostics.txt", report.to_text()),
    ]
    entries += _files_under("logs", _log_files(paths.log_dir))
    crashes = _newest(paths.log_dir, "crash-*.txt", BUNDLE_CRASH_REPORTS)
    entries += _files_under("crash-reports", crashes)
    selftests = _newest(paths.data_dir / SELFTEST_REPORTS_DIR, "*.json", BUNDLE_SELFTEST_REPORTS)
    entries += _files_under(SELFTEST_REPORTS_DIR, selftests)
    if settings.config_file is not None and settings.config_file.is_file():
        entries += _files_under("settings", [settings.config_file])

    target = Path(target)
    descriptor, temporary = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".tmp", dir=target.parent
    )
    os.close(descriptor)
    try:
        with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
            stamp = created.astimezone(UTC).timetuple()[:6]
            for name, text in entries:
                info = zipfile.ZipInfo(name, date_time=stamp)
                info.compress_type = zipfile.ZIP_DEFLATED
                # Everything once more through the filter: old logs were written by
                # older versions, and reports by other parts of the app.
                bundle.writestr(info, redact(text))
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    size = target.stat().st_size
    log.info("Support bundle saved: %s (%d files, %.0f KB)", target, len(entries), size / 1024)
    return SupportBundle(target, tuple(name for name, _ in entries), size, contact)


def _readme(created: datetime, contact: str) -> str:
    return "\n".join(
        [
            f"{APP_NAME} support bundle, made {created.astimezone(UTC).isoformat()}",
            "",
            contact,
            "",
            "Inside:",
            "  diagnostics.txt / .json   versions, settings, proxy, service checks, clock,",
            "                            keyring and saved sign-ins (accounts and expiry only)",
            "  logs/                     the app's log files",
            "  crash-reports/            reports of unexpected errors",
            f"  {SELFTEST_REPORTS_DIR}/         the latest send/receive self-test reports",
            "  settings/                 the config file",
            "",
            PRIVACY_NOTE,
            "",
        ]
    )


def _log_files(log_dir: Path) -> list[Path]:
    if not log_dir.is_dir():
        return []
    return sorted(p for p in log_dir.glob(f"{APP_NAME}.log*") if p.is_file())


def _newest(folder: Path, pattern: str, count: int) -> list[Path]:
    if not folder.is_dir():
        return []
    found = []
    for path in folder.glob(pattern):
        with contextlib.suppress(OSError):
            if path.is_file():
                found.append((path.stat().st_mtime, path))
    found.sort(reverse=True)
    return sorted(path for _mtime, path in found[:count])


def _files_under(folder: str, files: Iterable[Path]) -> list[tuple[str, str]]:
    entries = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            text = f"(could not be read: {exc})\n"
        entries.append((f"{folder}/{path.name}", text))
    return entries


# -- crash reports --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CrashReport:
    """An unexpected error, formatted for a person and for support (redacted).

    Attributes:
        created_at: When it happened (UTC).
        exception_type: The exception's class name.
        message: The exception's message (redacted).
        where: Which thread (or part of the app) it happened in.
        text: The whole report.
        path: Where it was saved, once saved.
    """

    created_at: datetime
    exception_type: str
    message: str
    where: str
    text: str
    path: Path | None = None

    @property
    def summary(self) -> str:
        """One line: what happened."""
        return f"{self.exception_type}: {self.message}" if self.message else self.exception_type

    def to_text(self) -> str:
        """The whole report (what the crash dialog's Copy button copies)."""
        return self.text

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready values."""
        return {
            "created_at": self.created_at.isoformat().replace("+00:00", "Z"),
            "exception_type": self.exception_type,
            "message": self.message,
            "where": self.where,
            "path": str(self.path) if self.path else None,
            "text": self.text,
        }


def format_crash_report(
    exc_type: type[BaseException],
    exc: BaseException | None,
    tb: TracebackType | None,
    *,
    where: str | None = None,
    recent_log: Sequence[str] = (),
    now: datetime | None = None,
) -> CrashReport:
    """Format an unhandled exception with versions and recent log lines, redacted.

    Qt's version is included only when PySide6 is already loaded: a crash handler must
    not import a GUI toolkit.
    """
    from qargo_desktop.core.diagnostics import collect_versions

    created = now or datetime.now(UTC)
    where = where or threading.current_thread().name
    versions = collect_versions(include_qt="PySide6" in sys.modules)
    message = redact(str(exc) if exc is not None else "")
    trace = redact("".join(traceback.format_exception(exc_type, exc, tb)).rstrip("\n"))
    lines = [
        f"{APP_NAME} crash report",
        "",
        f"Time:    {created.astimezone(UTC).isoformat(timespec='seconds')}",
        f"Where:   {where}",
        f"App:     {APP_NAME} {versions.app}{' (bundled)' if versions.frozen else ''}",
        f"Python:  {versions.python}",
        f"Qt:      {versions.qt or 'not loaded'} (PySide6 {versions.pyside or '-'})",
        f"OS:      {versions.os} ({versions.machine})",
        "",
        PRIVACY_NOTE,
        "",
        "What happened",
        f"  {exc_type.__name__}: {message}",
        "",
        "Traceback",
        trace,
    ]
    if recent_log:
        lines += ["", "The last lines of the log", *(redact(line) for line in recent_log)]
    return CrashReport(
        created_at=created,
        exception_type=exc_type.__name__,
        message=message,
        where=where,
        text="\n".join(lines) + "\n",
    )


def save_crash_report(report: CrashReport, log_dir: Path) -> CrashReport:
    """Save the report as ``crash-<UTC time>.txt`` in the log folder; return it with its path.

    Raises:
        OSError: The folder cannot be created or the file written.
    """
    log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = report.created_at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = log_dir / f"crash-{stamp}.txt"
    counter = 1
    while True:
        try:
            # Exclusive creation: two crashes in one second keep both reports.
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            break
        except FileExistsError:
            counter += 1
            path = log_dir / f"crash-{stamp}-{counter}.txt"
    with os.fdopen(descriptor, "w", encoding="utf-8", newline="\n") as stream:
        stream.write(report.text)
    return dataclasses.replace(report, path=path)


def report_crash(
    exc_type: type[BaseException],
    exc: BaseException | None,
    tb: TracebackType | None,
    *,
    log_dir: Path | None,
    where: str | None = None,
    ring_buffer: RingBufferHandler | None = None,
) -> CrashReport:
    """Log an unhandled exception, format its report and save it; never raises.

    The report comes back even when it could not be saved (``path`` is then ``None``),
    so a dialog can still show and copy it.
    """
    recent = ring_buffer.lines()[-CRASH_LOG_LINES:] if ring_buffer is not None else []
    # Logging must not turn one crash into two.
    with contextlib.suppress(Exception):
        log.critical(
            "Unexpected error in %s", where or threading.current_thread().name,
            exc_info=(exc_type, exc, tb),  # type: ignore[arg-type]
        )  # fmt: skip
    report = format_crash_report(exc_type, exc, tb, where=where, recent_log=recent)
    if log_dir is None:
        return report
    try:
        saved = save_crash_report(report, log_dir)
    except OSError as exc_saving:
        with contextlib.suppress(Exception):
            log.error("The crash report could not be saved in %s: %s", log_dir, exc_saving)
        return report
    with contextlib.suppress(Exception):
        log.info("Crash report saved: %s", saved.path)
    return saved


__all__ = [
    "BUNDLE_CRASH_REPORTS",
    "BUNDLE_SELFTEST_REPORTS",
    "PRIVACY_NOTE",
    "SELFTEST_REPORTS_DIR",
    "CrashReport",
    "SupportBundle",
    "contact_text",
    "format_crash_report",
    "install_crash_handler",
    "report_crash",
    "save_crash_report",
    "save_support_bundle",
]
