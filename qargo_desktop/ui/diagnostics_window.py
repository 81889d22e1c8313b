"""The Diagnostics window: what support needs to know, checked from this computer.

It runs :func:`qargo_desktop.core.diagnostics.collect_diagnostics` in a background task
(with the running app's settings, folders and token caches), then shows the findings,
worst first, each with an icon and a word as well as a colour, and the evidence behind
them in tabs: each service's name lookup, connection, secure handshake and request, timed,
with who issued its certificate; the proxy and where that choice came from; the clock;
the keyring and the saved sign-ins; the versions; the last warnings and errors.

From here the person copies the report, saves a support bundle (also in the background)
or prepares one for Qargo Support and is told where to send it. The window is not modal:
the app stays usable while it runs.
:class:`~qargo_desktop.ui.support_windows.SupportWindows` keeps one of it, and one log
view, per main window.
"""

from __future__ import annotations

import html
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QCoreApplication, QEvent, QSize, QStandardPaths, Qt
from PySide6.QtGui import (
    QCloseEvent,
    QFont,
    QFontDatabase,
    QGuiApplication,
    QKeySequence,
    QShortcut,
)
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QStyle,
    QTabWidget,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from qargo_desktop import APP_DISPLAY_NAME
from qargo_desktop.core.config import AppPaths, Settings, app_paths
from qargo_desktop.core.errors import QargoError
from qargo_desktop.ui import dialogs, texts
from qargo_desktop.ui.i18n import translatable
from qargo_desktop.ui.log_view import FolderOpener, open_folder
from qargo_desktop.ui.tasks import Progress, TaskHandle, TaskRunner
from qargo_desktop.ui.theme import MessageLevel, Theme

if TYPE_CHECKING:
    # The diagnostics bring the HTTP stack: imported when the window first runs them, so
    # that the main window's first paint does not wait for it.
    from qargo_desktop.core.diagnostics import (
        DiagnosticsReport,
        EndpointReport,
        Finding,
        ProxyRoute,
    )
    from qargo_desktop.core.logs import RingBufferHandler
    from qargo_desktop.core.services import Services
    from qargo_desktop.core.support import SupportBundle

log = logging.getLogger(__name__)

translate = QCoreApplication.translate

#: Where "Contact Qargo Support" prepares its bundle, under the data folder.
SUPPORT_BUNDLES_DIR = "support-bundles"

# Severity -> (message level for the colours, standard icon, word, symbol for text).
_SEVERITY_LEVEL = {
    "problem": MessageLevel.ERROR,
    "warning": MessageLevel.WARNING,
    "ok": MessageLevel.INFO,
}
_SEVERITY_ICON = {
    "problem": QStyle.StandardPixmap.SP_MessageBoxCritical,
    "warning": QStyle.StandardPixmap.SP_MessageBoxWarning,
    "ok": QStyle.StandardPixmap.SP_DialogApplyButton,
}
_SEVERITY_WORDS = {
    "problem": translatable("DiagnosticsWindow", "Problem"),
    "warning": translatable("DiagnosticsWindow", "Warning"),
    "ok": translatable("DiagnosticsWindow", "OK"),
}
_SYMBOL = {"problem": "\u2716", "warning": "\u26a0", "ok": "\u2714", "skipped": "\u2013"}

_STEP_WORDS = {
    "dns": translatable("DiagnosticsWindow", "Name lookup (DNS)"),
    "tcp": translatable("DiagnosticsWindow", "Connection (TCP)"),
    "proxy": translatable("DiagnosticsWindow", "Proxy tunnel (CONNECT)"),
    "tls": translatable("DiagnosticsWindow", "Secure handshake (TLS)"),
    "http": translatable("DiagnosticsWindow", "Request (HTTP)"),
}
_ISSUER_WORDS = {
    "public_ca": translatable("DiagnosticsWindow", "Public certificate authority"),
    "extra_ca": translatable("DiagnosticsWindow", "The extra CA in the settings"),
    "inspection_proxy": translatable("DiagnosticsWindow", "TLS-inspecting proxy"),
    "unknown_ca": translatable("DiagnosticsWindow", "Unknown certificate authority"),
}


def _e(value: object) -> str:
    return html.escape(str(value), quote=False)


def _h3(text: str) -> str:
    return f"<h3>{_e(text)}</h3>"


def _p(text: str) -> str:
    return f"<p>{_e(text)}</p>"


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "\u2013"
    return f"{seconds * 1000:.0f} ms"


def bundle_file_name(now: datetime | None = None) -> str:
    """The name of a support bundle made now: ``qargo-support-20250314-093000.zip``."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"qargo-support-{moment:%Y%m%d-%H%M%S}.zip"


# -- the report as pages -----------------------------------------------------------------------


class ReportPages:
    """Turns a report into the HTML of each tab (plain data in, text out; no widgets).

    Args:
        theme: The colours of the severity words.
    """

    def __init__(self, theme: Theme) -> None:
        self._theme = theme

    def _mark(self, severity: str, words: str | None = None) -> str:
        """A symbol and a word in the severity's colour: never the colour alone."""
        colour = self._theme.message_colours(_SEVERITY_LEVEL.get(severity, MessageLevel.INFO))
        word = (
            words
            if words is not None
            else translate("DiagnosticsWindow", _SEVERITY_WORDS.get(severity, "OK"))
        )
        symbol = _SYMBOL.get(severity, "")
        return (
            f'<span style="color: {colour.foreground}; font-weight: bold;">'
            f"{symbol}&nbsp;{_e(word)}</span>"
        )

    @staticmethod
    def _page(*parts: str) -> str:
        style = (
            "<style>th { text-align: left; padding: 2px 10px 2px 0; }"
            "td { padding: 2px 10px 2px 0; vertical-align: top; }"
            "h3 { margin-top: 14px; margin-bottom: 4px; }</style>"
        )
        return style + "".join(parts)

    @staticmethod
    def _rows(rows: Iterable[Sequence[str]], header: Sequence[str] = ()) -> str:
        head = "".join(f"<th>{_e(cell)}</th>" for cell in header)
        body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
        return f'<table cellspacing="0">{f"<tr>{head}</tr>" if head else ""}{body}</table>'

    def services(self, report: DiagnosticsReport) -> str:
        """Each service layer by layer, timed, with its certificate's issuer and proxy."""
        if not report.endpoints:
            return self._page(
                "<p>"
                + _e(
                    translate(
                        "DiagnosticsWindow",
                        "The services were not checked: their addresses are not known, or "
                        "checking was turned off.",
                    )
                )
                + "</p>"
            )
        routes = {route.name: route for route in report.proxy.routes}
        return self._page(*(self._endpoint(e, routes.get(e.name)) for e in report.endpoints))

    def _endpoint(self, endpoint: EndpointReport, route: ProxyRoute | None) -> str:
        probe = endpoint.probe
        state = (
            self._mark("ok", translate("DiagnosticsWindow", "Reachable"))
            if endpoint.ok
            else self._mark("problem", translate("DiagnosticsWindow", "Not reachable"))
        )
        rows: list[list[str]] = []
        for step in probe.steps:
            if step.ok is None:
                result = self._mark("skipped", translate("DiagnosticsWindow", "Not run"))
            elif step.ok:
                result = self._mark("ok")
            else:
                result = self._mark("problem", translate("DiagnosticsWindow", "Failed"))
            name = translate("DiagnosticsWindow", _STEP_WORDS.get(step.name, step.name.upper()))
            rows.append([_e(name), result, _e(_ms(step.elapsed_s)), _e(step.detail)])
        tls = endpoint.tls
        if tls is not None:
            if not tls.verified:
                severity = "problem"
            elif tls.in_the_way:
                severity = "warning"
            else:
                severity = "ok"
            issuer = self._mark(
                severity, translate("DiagnosticsWindow", _ISSUER_WORDS.get(tls.kind, tls.kind))
            )
            rows.append(
                [_e(translate("DiagnosticsWindow", "Certificate")), issuer, "", _e(tls.text)]
            )
        through = probe.proxy or translate("DiagnosticsWindow", "Direct connection")
        why = route.words if route is not None else probe.proxy_source
        rows.append([_e(translate("DiagnosticsWindow", "Proxy")), _e(through), "", _e(why)])
        header = [
            translate("DiagnosticsWindow", "Check"),
            translate("DiagnosticsWindow", "Result"),
            translate("DiagnosticsWindow", "Time"),
            translate("DiagnosticsWindow", "What it found"),
        ]
        parts = [
            f"<h3>{_e(endpoint.label)}: {state}</h3>",
            f"<p>{_e(probe.url)}</p>",
            self._rows(rows, header),
        ]
        if endpoint.explanation:
            meaning = translate("DiagnosticsWindow", "What it means:")
            parts.append(f"<p><b>{_e(meaning)}</b> {_e(endpoint.explanation)}</p>")
        return "".join(parts)

    def network(self, report: DiagnosticsReport) -> str:
        """The proxy setting and route per service, and the clock."""
        proxy = report.proxy
        rows = [
            [
                _e(translate("DiagnosticsWindow", "Setting")),
                _e(
                    translate("DiagnosticsWindow", "{setting} (from {source})").format(
                        setting=proxy.setting, source=proxy.setting_source
                    )
                ),
            ]
        ]
        from qargo_desktop.core.diagnostics import SERVICE_LABELS

        direct = translate("DiagnosticsWindow", "Direct connection")
        for route in proxy.routes:
            label = SERVICE_LABELS.get(route.name, route.name)
            rows.append(
                [
                    _e(label),
                    _e(f"{route.proxy or direct} ({route.words})"),
                ]
            )
        for name, value in proxy.environment.items():
            rows.append([_e(name), _e(value)])
        clock = report.clock
        clock_rows = [[_e(translate("DiagnosticsWindow", "Difference")), _e(clock.text)]]
        if clock.offset_s is not None:
            clock_rows.append(
                [
                    _e(translate("DiagnosticsWindow", "Measured")),
                    _e(
                        translate(
                            "DiagnosticsWindow",
                            "{offset:+.1f} s, give or take {uncertainty:.1f} s ({samples} answers)",
                        ).format(
                            offset=clock.offset_s,
                            uncertainty=clock.uncertainty_s or 0.0,
                            samples=clock.samples,
                        )
                    ),
                ]
            )
        return self._page(
            _h3(translate("DiagnosticsWindow", "Proxy")),
            self._rows(rows),
            _h3(translate("DiagnosticsWindow", "Clock")),
            self._rows(clock_rows),
        )

    def sign_ins(self, report: DiagnosticsReport) -> str:
        """The keyring backend and each token cache: accounts and expiry, never a token."""
        keyring = report.keyring
        usable = bool(keyring.get("usable"))
        keyring_rows = [
            [
                _e(translate("DiagnosticsWindow", "Keyring")),
                self._mark("ok", translate("DiagnosticsWindow", "Usable"))
                if usable
                else self._mark("warning", translate("DiagnosticsWindow", "Not usable")),
            ],
            [
                _e(translate("DiagnosticsWindow", "Backend")),
                _e(keyring.get("used_backend") or keyring.get("default_backend")),
            ],
        ]
        if keyring.get("problem"):
            keyring_rows.append([_e(translate("DiagnosticsWindow", "Why")), _e(keyring["problem"])])
        parts = [
            _h3(translate("DiagnosticsWindow", "Keyring")),
            self._rows(keyring_rows),
        ]
        labels = {
            "admin": translate("DiagnosticsWindow", "Your sign-in (admin)"),
            "mailboxes": translate("DiagnosticsWindow", "Mailbox accounts"),
        }
        for role, cache in report.token_caches.items():
            parts.append(f"<h3>{_e(labels.get(role, role))}</h3>")
            parts.append(self._rows(self._cache_rows(cache)))
        if not report.token_caches:
            parts.append(_p(translate("DiagnosticsWindow", "No saved sign-ins were found.")))
        return self._page(*parts)

    def _cache_rows(self, cache: Mapping[str, Any]) -> list[list[str]]:
        rows: list[list[str]] = []
        if cache.get("file_exists") is False and not cache.get("accounts"):
            rows.append(
                [
                    _e(translate("DiagnosticsWindow", "State")),
                    _e(translate("DiagnosticsWindow", "No saved sign-ins yet")),
                ]
            )
        elif "persistent" in cache:
            kept = (
                self._mark("ok", translate("DiagnosticsWindow", "Kept encrypted on disk"))
                if cache["persistent"]
                else self._mark(
                    "warning",
                    translate("DiagnosticsWindow", "Kept in memory only, until the app closes"),
                )
            )
            rows.append([_e(translate("DiagnosticsWindow", "State")), kept])
        if cache.get("backend"):
            rows.append([_e(translate("DiagnosticsWindow", "Key kept in")), _e(cache["backend"])])
        if cache.get("file"):
            rows.append([_e(translate("DiagnosticsWindow", "File")), _e(cache["file"])])
        if cache.get("problem"):
            rows.append(
                [
                    _e(translate("DiagnosticsWindow", "Problem")),
                    self._mark("warning", str(cache["problem"])),
                ]
            )
        accounts = [str(a.get("username") or "?") for a in cache.get("accounts") or []]
        rows.append(
            [
                _e(translate("DiagnosticsWindow", "Accounts")),
                _e(", ".join(accounts) or translate("DiagnosticsWindow", "none")),
            ]
        )
        for token in cache.get("access_tokens") or []:
            scopes = " ".join(token.get("scopes") or [])
            state = (
                self._mark("warning", translate("DiagnosticsWindow", "expired"))
                if token.get("expired")
                else self._mark("ok", translate("DiagnosticsWindow", "valid"))
            )
            until = _e(
                translate("DiagnosticsWindow", "until {time}").format(time=token.get("expires_at"))
            )
            rows.append(
                [_e(translate("DiagnosticsWindow", "Access for")), f"{_e(scopes)}: {state} {until}"]
            )
        for token in cache.get("refresh_tokens") or []:
            rows.append(
                [
                    _e(translate("DiagnosticsWindow", "Sign-in last renewed")),
                    _e(token.get("last_modified_at") or "\u2013"),
                ]
            )
        return rows

    def versions(self, report: DiagnosticsReport) -> str:
        """What is running."""
        v = report.versions
        not_loaded = translate("DiagnosticsWindow", "not loaded")
        rows = [
            [
                _e(translate("DiagnosticsWindow", "App")),
                _e(f"{APP_DISPLAY_NAME} {v.app}" + (" (bundled)" if v.frozen else "")),
            ],
            [_e("Python"), _e(v.python)],
            [
                _e("Qt"),
                _e(f"{v.qt or not_loaded} (PySide6 {v.pyside or '-'})"),
            ],
            [_e(translate("DiagnosticsWindow", "Operating system")), _e(f"{v.os} ({v.machine})")],
            [_e("OpenSSL"), _e(v.openssl)],
        ]
        rows += [[_e(name), _e(version)] for name, version in v.libraries.items()]
        folders = [[_e(key), _e(value)] for key, value in report.paths.items()]
        return self._page(
            _h3(translate("DiagnosticsWindow", "Versions")),
            self._rows(rows),
            _h3(translate("DiagnosticsWindow", "Folders")),
            self._rows(folders),
        )

    def recent(self, report: DiagnosticsReport) -> str:
        """The last warnings and errors of the log."""
        if not report.recent_problems:
            return self._page(
                _p(translate("DiagnosticsWindow", "No warnings or errors in the log."))
            )
        rows = []
        for entry in reversed(report.recent_problems):
            severity = "warning" if entry.level == "WARNING" else "problem"
            rows.append(
                [_e(entry.time), self._mark(severity, entry.level.capitalize()), _e(entry.message)]
            )
        header = [
            translate("DiagnosticsWindow", "When"),
            translate("DiagnosticsWindow", "Level"),
            translate("DiagnosticsWindow", "What happened (newest first)"),
        ]
        return self._page(self._rows(rows, header))


# -- the findings -----------------------------------------------------------------------------


class FindingsPanel(QWidget):
    """The findings, worst first: an icon, a word and a sentence each, on the level's colours.

    Args:
        theme: The colours per severity.
        parent: The owning widget.
    """

    def __init__(self, theme: Theme, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._theme = theme
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.setSpacing(4)
        self._rows: list[QFrame] = []
        self._findings: tuple[Finding, ...] = ()

    @property
    def findings(self) -> tuple[Finding, ...]:
        """The findings shown."""
        return self._findings

    def texts(self) -> list[str]:
        """What each row says, as a screen reader hears it (``Problem: ...``)."""
        return [row.accessibleName() for row in self._rows]

    def set_findings(self, findings: Sequence[Finding]) -> None:
        """Show these findings (already worst first)."""
        for row in self._rows:
            self._layout.removeWidget(row)
            row.deleteLater()
        self._rows = []
        self._findings = tuple(findings)
        for finding in self._findings:
            row = self._row(finding)
            self._layout.addWidget(row)
            self._rows.append(row)

    def _row(self, finding: Finding) -> QFrame:
        level = _SEVERITY_LEVEL.get(finding.severity, MessageLevel.INFO)
        colours = self._theme.message_colours(level)
        frame = QFrame(self)
        frame.setObjectName("diagnosticsFinding")
        frame.setStyleSheet(
            f"QFrame#diagnosticsFinding {{ background: {colours.background}; "
            f"border: 1px solid {colours.foreground}; border-radius: 4px; }}"
            f"QFrame#diagnosticsFinding QLabel {{ color: {colours.foreground}; }}"
        )
        row = QHBoxLayout(frame)
        row.setContentsMargins(8, 5, 8, 5)
        icon = QLabel(frame)
        standard = _SEVERITY_ICON.get(
            finding.severity, QStyle.StandardPixmap.SP_MessageBoxInformation
        )
        icon.setPixmap(self.style().standardIcon(standard).pixmap(QSize(20, 20)))
        word = QLabel(
            translate("DiagnosticsWindow", _SEVERITY_WORDS.get(finding.severity, finding.severity)),
            frame,
        )
        bold = QFont(word.font())
        bold.setBold(True)
        word.setFont(bold)
        word.setMinimumWidth(70)
        text = QLabel(finding.text, frame)
        text.setWordWrap(True)
        text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        row.addWidget(icon, 0, Qt.AlignmentFlag.AlignTop)
        row.addWidget(word, 0, Qt.AlignmentFlag.AlignTop)
        row.addWidget(text, 1)
        frame.setAccessibleName(f"{word.text()}: {finding.text}")
        return frame


# -- the window ---------------------------------------------------------------------------------


class DiagnosticsWindow(QWidget):
    """Runs the diagnostics and shows what they found; copies, saves and sends a bundle.

    Signals: none of its own; the report and bundle are available as attributes.

    Args:
        parent: The main window (this is a window of its own, not modal).
        settings: The settings the running app uses.
        services: The running app's services (their token caches), once built.
        tasks: The task runner that does the work.
        theme: Colours per severity.
        ring_buffer: The log's ring buffer (recent problems when there is no log file).
        opener: Opens a folder in the file manager (tests replace it).
    """

    def __init__(
        self,
        parent: QWidget | None,
        *,
        settings: Settings,
        services: Services | None,
        tasks: TaskRunner,
        theme: Theme,
        ring_buffer: RingBufferHandler | None = None,
        opener: FolderOpener | None = None,
    ) -> None:
        super().__init__(parent, Qt.WindowType.Window)
        self.setObjectName("diagnosticsWindow")
        self.resize(940, 720)
        self._settings = settings
        self._services = services
        self._tasks = tasks
        self._theme = theme
        self._ring_buffer = ring_buffer
        self.opener: FolderOpener = opener or open_folder
        self._run_handle: TaskHandle | None = None
        self._bundle_handle: TaskHandle | None = None
        self.report: DiagnosticsReport | None = None
        self.bundle: SupportBundle | None = None
        self._pages = ReportPages(theme)

        layout = QVBoxLayout(self)
        self.heading = QLabel(self)
        heading_font = QFont(self.heading.font())
        heading_font.setBold(True)
        heading_font.setPointSizeF(heading_font.pointSizeF() * 1.3)
        self.heading.setFont(heading_font)
        self.summary = QLabel(self)
        self.summary.setWordWrap(True)
        self.summary.setObjectName("diagnosticsSummary")
        self.busy = QProgressBar(self)
        self.busy.setRange(0, 0)
        self.busy.setTextVisible(False)
        self.busy.setMaximumHeight(8)
        self.findings = FindingsPanel(theme, self)
        self._build_tabs()

        for widget in (self.heading, self.summary, self.busy, self.findings):
            layout.addWidget(widget)
        layout.addWidget(self.tabs, 1)
        layout.addWidget(self._build_contact_panel())
        self.message = QLabel(self)
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.message.setVisible(False)
        layout.addWidget(self.message)
        self.privacy = QLabel(self)
        self.privacy.setWordWrap(True)
        layout.addWidget(self.privacy)
        layout.addLayout(self._build_buttons())
        QShortcut(QKeySequence(QKeySequence.StandardKey.Close), self, self.close)
        QShortcut(QKeySequence(Qt.Key.Key_Escape), self, self.close)
        self._retranslate()
        self._update_buttons()

    def _build_tabs(self) -> None:
        """One tab per part of the evidence, and the whole report as text."""
        self.tabs = QTabWidget(self)
        self.tabs.setDocumentMode(True)
        self.browsers: dict[str, QTextBrowser] = {}
        for key in ("services", "network", "sign_ins", "versions", "recent"):
            browser = QTextBrowser(self.tabs)
            browser.setOpenLinks(False)
            self.browsers[key] = browser
            self.tabs.addTab(browser, "")
        self.full_text = QTextBrowser(self.tabs)
        self.full_text.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.full_text.setLineWrapMode(QTextBrowser.LineWrapMode.NoWrap)
        self.tabs.addTab(self.full_text, "")

    def _build_contact_panel(self) -> QFrame:
        self.contact_panel = QFrame(self)
        self.contact_panel.setObjectName("contactPanel")
        self.contact_panel.setFrameShape(QFrame.Shape.StyledPanel)
        panel = QVBoxLayout(self.contact_panel)
        self.contact_heading = QLabel(self.contact_panel)
        bold = QFont(self.contact_heading.font())
        bold.setBold(True)
        self.contact_heading.setFont(bold)
        self.contact_text = QLabel(self.contact_panel)
        self.contact_text.setWordWrap(True)
        self.contact_text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        row = QHBoxLayout()
        self.bundle_caption = QLabel(self.contact_panel)
        self.bundle_path = QLineEdit(self.contact_panel)
        self.bundle_path.setReadOnly(True)
        self.bundle_caption.setBuddy(self.bundle_path)
        self.open_folder_button = QPushButton(self.contact_panel)
        self.open_folder_button.clicked.connect(self.open_bundle_folder)
        self.copy_path_button = QPushButton(self.contact_panel)
        self.copy_path_button.clicked.connect(self._on_copy_path_clicked)
        for widget in (self.bundle_caption, self.bundle_path):
            row.addWidget(widget)
        row.addWidget(self.open_folder_button)
        row.addWidget(self.copy_path_button)
        row.setStretch(1, 1)
        panel.addWidget(self.contact_heading)
        panel.addWidget(self.contact_text)
        panel.addLayout(row)
        self.contact_panel.setVisible(False)
        return self.contact_panel

    def _build_buttons(self) -> QHBoxLayout:
        buttons = QHBoxLayout()
        self.run_button = QPushButton(self)
        self.run_button.clicked.connect(self.run)
        self.copy_button = QPushButton(self)
        self.copy_button.clicked.connect(self.copy_report)
        self.save_button = QPushButton(self)
        self.save_button.clicked.connect(self.save_bundle_as)
        self.contact_button = QPushButton(self)
        self.contact_button.clicked.connect(self.contact_support)
        self.close_button = QPushButton(self)
        self.close_button.clicked.connect(self.close)
        for button in (self.run_button, self.copy_button, self.save_button, self.contact_button):
            button.setAutoDefault(False)
            buttons.addWidget(button)
        buttons.addStretch(1)
        buttons.addWidget(self.close_button)
        return buttons

    # -- context ------------------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        """The settings the checks use."""
        return self._settings

    @property
    def paths(self) -> AppPaths:
        """The app's folders, from the settings."""
        return app_paths(self._settings)

    def set_context(self, settings: Settings, services: Services | None) -> None:
        """Check with these settings and services from the next run on."""
        self._settings = settings
        self._services = services

    @property
    def running(self) -> bool:
        """Whether the checks are running."""
        return self._run_handle is not None

    @property
    def saving(self) -> bool:
        """Whether a support bundle is being written."""
        return self._bundle_handle is not None

    # -- running ------------------------------------------------------------------------------

    def run(self) -> None:
        """Run the checks (again) in the background."""
        if self.running:
            return
        settings = self._settings
        paths = self.paths
        stores = self._services.token_stores() if self._services is not None else None
        ring = self._ring_buffer

        def work(cancel: threading.Event, progress: Progress) -> DiagnosticsReport:
            from qargo_desktop.core.diagnostics import collect_diagnostics

            return collect_diagnostics(
                settings,
                paths=paths,
                token_caches=stores,
                ring_buffer=ring,
                cancel=cancel,
                on_progress=progress,
            )

        self.message.setVisible(False)
        self.summary.setText(translate("DiagnosticsWindow", "Checking..."))
        self._run_handle = self._tasks.start(
            "diagnostics",
            work,
            on_finished=self._on_run_finished,
            on_progress=self._on_run_progressed,
        )
        self._update_buttons()
        log.info("Diagnostics started from the window")

    def _on_run_progressed(self, value: object) -> None:
        self.summary.setText(
            translate("DiagnosticsWindow", "Checking: {step}...").format(step=value)
        )

    def _on_run_finished(self, result: Any, error: BaseException | None) -> None:
        self._run_handle = None
        self._update_buttons()
        if error is not None:
            self.summary.setText(
                translate("DiagnosticsWindow", "The checks could not run: {problem}").format(
                    problem=texts.explain(error)
                )
                if isinstance(error, QargoError)
                else translate(
                    "DiagnosticsWindow", "The checks stopped unexpectedly: {problem}"
                ).format(problem=error)
            )
            return
        self.show_report(result)

    def show_report(self, report: DiagnosticsReport) -> None:
        """Show a report (the last run's, or one made elsewhere)."""
        self.report = report
        self.findings.set_findings(report.findings)
        self._show_summary()
        pages = self._pages
        self.browsers["services"].setHtml(pages.services(report))
        self.browsers["network"].setHtml(pages.network(report))
        self.browsers["sign_ins"].setHtml(pages.sign_ins(report))
        self.browsers["versions"].setHtml(pages.versions(report))
        self.browsers["recent"].setHtml(pages.recent(report))
        self.full_text.setPlainText(report.to_text())
        self._retranslate_tabs()
        self._update_buttons()

    def _show_summary(self) -> None:
        report = self.report
        if report is None:
            self.summary.setText(translate("DiagnosticsWindow", "Not checked yet."))
            return
        problems = sum(1 for f in report.findings if f.severity == "problem")
        warnings = sum(1 for f in report.findings if f.severity == "warning")
        if problems:
            verdict = translate("DiagnosticsWindow", "%n problem(s) found", None, problems)
        elif warnings:
            verdict = translate("DiagnosticsWindow", "No problems, %n warning(s)", None, warnings)
        else:
            verdict = translate("DiagnosticsWindow", "Nothing wrong found")
        when = texts.local_time(report.generated_at, seconds=True)
        self.summary.setText(
            translate("DiagnosticsWindow", "{verdict}. Checked {when}, in {seconds:.1f} s.").format(
                verdict=verdict, when=when, seconds=report.duration_s
            )
        )

    # -- copy, save, contact ------------------------------------------------------------------

    def copy_report(self) -> None:
        """Put the report, as text, on the clipboard."""
        if self.report is not None:
            QGuiApplication.clipboard().setText(self.report.to_text())
            self._say(translate("DiagnosticsWindow", "The report was copied."), MessageLevel.INFO)

    def save_bundle_as(self) -> None:
        """Ask where to save a support bundle, then save it in the background."""
        if self.report is None or self.saving:
            return
        documents = QStandardPaths.writableLocation(
            QStandardPaths.StandardLocation.DocumentsLocation
        )
        folder = Path(documents) if documents else Path.home()
        path = dialogs.ask_support_bundle_path(self, folder / bundle_file_name())
        if path is not None:
            self.save_bundle(path)

    def contact_support(self) -> None:
        """Prepare a support bundle in the data folder and say where to send it."""
        if self.report is None or self.saving:
            return
        folder = self.paths.data_dir / SUPPORT_BUNDLES_DIR
        self.save_bundle(folder / bundle_file_name())

    def save_bundle(self, path: Path) -> None:
        """Save a support bundle with the report shown, in the background."""
        if self.report is None or self.saving:
            return
        settings = self._settings
        paths = self.paths
        report = self.report

        def work(_cancel: threading.Event, _progress: Progress) -> SupportBundle:
            from qargo_desktop.core.support import save_support_bundle

            path.parent.mkdir(parents=True, exist_ok=True)
            return save_support_bundle(path, settings, paths=paths, report=report)

        self._say(translate("DiagnosticsWindow", "Saving the support bundle..."), MessageLevel.INFO)
        self._bundle_handle = self._tasks.start(
            "save support bundle",
            work,
            on_finished=self._on_bundle_saved,
            expected=(OSError,),
        )
        self._update_buttons()

    def _on_bundle_saved(self, result: Any, error: BaseException | None) -> None:
        self._bundle_handle = None
        self._update_buttons()
        if error is not None:
            self._say(
                translate(
                    "DiagnosticsWindow", "The support bundle could not be saved: {problem}"
                ).format(problem=error),
                MessageLevel.ERROR,
            )
            return
        from qargo_desktop.core.support import contact_text

        self.bundle = result
        self.message.setVisible(False)
        self.bundle_path.setText(str(result.path))
        self.bundle_path.setCursorPosition(0)
        self.contact_text.setText(contact_text(self._settings))
        self.contact_panel.setVisible(True)
        self.open_folder_button.setFocus()

    def open_bundle_folder(self) -> None:
        """Show the folder of the saved bundle in the file manager."""
        if self.bundle is None:
            return
        folder = self.bundle.path.parent
        if not self.opener(folder):
            self._say(
                translate(
                    "DiagnosticsWindow", "The folder could not be opened. It is {folder}"
                ).format(folder=folder),
                MessageLevel.WARNING,
            )

    def _on_copy_path_clicked(self) -> None:
        QGuiApplication.clipboard().setText(self.bundle_path.text())

    def _say(self, text: str, level: MessageLevel) -> None:
        colours = self._theme.message_colours(level)
        self.message.setText(text)
        self.message.setStyleSheet(f"QLabel {{ color: {colours.foreground}; }}")
        self.message.setAccessibleName(
            translate("DiagnosticsWindow", _SEVERITY_WORDS[_level_severity(level)])
        )
        self.message.setVisible(True)

    def _update_buttons(self) -> None:
        running = self.running
        has_report = self.report is not None
        self.busy.setVisible(running or self.saving)
        self.run_button.setEnabled(not running)
        self.copy_button.setEnabled(has_report and not running)
        self.save_button.setEnabled(has_report and not running and not self.saving)
        self.contact_button.setEnabled(has_report and not running and not self.saving)

    # -- words --------------------------------------------------------------------------------

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 (Qt name)
        """Put the words up again when the language changes."""
        if event.type() == QEvent.Type.LanguageChange:
            self._retranslate()
        super().changeEvent(event)

    def _retranslate(self) -> None:
        self.setWindowTitle(
            translate("DiagnosticsWindow", "{app}: diagnostics").format(app=APP_DISPLAY_NAME)
        )
        self.heading.setText(translate("DiagnosticsWindow", "Diagnostics"))
        self.busy.setAccessibleName(translate("DiagnosticsWindow", "Working"))
        self.findings.setAccessibleName(translate("DiagnosticsWindow", "Findings, worst first"))
        self.tabs.setAccessibleName(translate("DiagnosticsWindow", "The evidence"))
        self._retranslate_tabs()
        self.contact_heading.setText(
            translate("DiagnosticsWindow", "Send the support bundle to Qargo Support")
        )
        self.bundle_caption.setText(translate("DiagnosticsWindow", "&Bundle:"))
        self.bundle_path.setAccessibleName(
            translate("DiagnosticsWindow", "Where the support bundle was saved")
        )
        self.open_folder_button.setText(translate("DiagnosticsWindow", "&Open folder"))
        self.open_folder_button.setToolTip(
            translate("DiagnosticsWindow", "Show the bundle in the file manager")
        )
        self.copy_path_button.setText(translate("DiagnosticsWindow", "Copy &path"))
        self.privacy.setText(
            translate(
                "DiagnosticsWindow",
                "A support bundle holds this report and the app's logs: no passwords or "
                "tokens, but account names, mailbox addresses and this computer's name and "
                "folders.",
            )
        )
        self.run_button.setText(translate("DiagnosticsWindow", "&Run again"))
        self.run_button.setToolTip(translate("DiagnosticsWindow", "Check everything again"))
        self.copy_button.setText(translate("DiagnosticsWindow", "&Copy report"))
        self.copy_button.setToolTip(translate("DiagnosticsWindow", "Copy the report as text"))
        self.save_button.setText(translate("DiagnosticsWindow", "&Save support bundle..."))
        self.save_button.setToolTip(
            translate("DiagnosticsWindow", "Save the report and the logs in one zip file")
        )
        self.contact_button.setText(translate("DiagnosticsWindow", "Contact Qargo S&upport"))
        self.contact_button.setToolTip(
            translate("DiagnosticsWindow", "Prepare a support bundle and see where to send it")
        )
        self.close_button.setText(translate("DiagnosticsWindow", "Close"))
        if self.report is not None:
            self._show_summary()
        elif not self.running:
            self.summary.setText(translate("DiagnosticsWindow", "Not checked yet."))

    def _retranslate_tabs(self) -> None:
        names = (
            translate("DiagnosticsWindow", "Services"),
            translate("DiagnosticsWindow", "Proxy and clock"),
            translate("DiagnosticsWindow", "Keyring and sign-ins"),
            translate("DiagnosticsWindow", "Versions"),
            translate("DiagnosticsWindow", "Recent problems"),
            translate("DiagnosticsWindow", "Full report"),
        )
        for index, name in enumerate(names):
            self.tabs.setTabText(index, name)
        report = self.report
        if report is not None and report.recent_problems:
            self.tabs.setTabText(4, f"{names[4]} ({len(report.recent_problems)})")

    # -- closing ------------------------------------------------------------------------------

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 (Qt name)
        """Closing stops the checks (their result would have nowhere to go)."""
        if self._run_handle is not None:
            self._run_handle.discard()
            self._run_handle = None
        self._update_buttons()
        super().closeEvent(event)


def _level_severity(level: MessageLevel) -> str:
    return {MessageLevel.ERROR: "problem", MessageLevel.WARNING: "warning"}.get(level, "ok")
