"""Application bootstrap: crash handler first, then QApplication, the window and the services.

The services (HTTP session, identity, token cache) and the built-in sandbox are built on
a worker thread: the first keyring access alone takes a tenth of a second, and the
sandbox generates certificates. The window shows its starting page meanwhile.
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import threading
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, QSettings, Qt, Signal, Slot
from PySide6.QtWidgets import QApplication, QWidget

from qargo_desktop import APP_DISPLAY_NAME, APP_NAME, ORGANISATION_NAME, __version__

if TYPE_CHECKING:
    from qargo_desktop.core.config import Settings
    from qargo_desktop.core.services import Services
    from qargo_desktop.ui.main_window import MainWindow

log = logging.getLogger(__name__)

SANDBOX_SIGN_IN_NOTE = (
    "Sandbox: sign in as {account} (a super admin). The sandbox's sign-in page lets you "
    "pick the account; no password is needed."
)


def sandbox_sign_in_note(sandbox: Any) -> str:
    """The sign-in page's hint naming a super admin account the sandbox knows."""
    accounts = getattr(getattr(sandbox, "info", None), "accounts", None) or []
    admins = [a.get("username") for a in accounts if a.get("role") == "super_admin"]
    return SANDBOX_SIGN_IN_NOTE.format(account=admins[0]) if admins else ""


ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


# -- the crash handler ------------------------------------------------------------------------


def versions() -> dict[str, str]:
    """The versions a crash report names."""
    found = {
        APP_DISPLAY_NAME: __version__,
        "Python": platform.python_version(),
        "Operating system": platform.platform(),
    }
    try:
        import PySide6
        from PySide6.QtCore import qVersion

        found["Qt"] = qVersion()
        found["PySide6"] = PySide6.__version__
    except ImportError:  # the report must work even when Qt is what broke
        pass
    return found


def crash_report(exc_type: type[BaseException], exc: BaseException, tb: Any, thread: str) -> str:
    """The text of a crash report: when, versions, where, and the traceback (redacted)."""
    lines = [
        f"{APP_DISPLAY_NAME} problem report",
        f"When: {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC",
        *(f"{name}: {version}" for name, version in versions().items()),
        f"Thread: {thread}",
        "",
        "".join(traceback.format_exception(exc_type, exc, tb)).rstrip(),
    ]
    text = "\n".join(lines)
    try:
        from qargo_desktop.core.logs import redact

        return redact(text)
    except Exception:  # redaction must never hide the crash itself
        return text


class _CrashRelay(QObject):
    """Carries a crash from any thread to the GUI thread (it lives there)."""

    crashed = Signal(str)


class CrashHandler:
    """Logs every uncaught exception, then shows a report dialog on the GUI thread.

    Install it before anything else so even start-up failures are caught; the dialog
    becomes possible once :meth:`attach_gui` has been called with the QApplication up.
    """

    def __init__(self) -> None:
        self._previous_hook = sys.excepthook
        self._previous_thread_hook = threading.excepthook
        self._relay: _CrashRelay | None = None
        self._parent: QWidget | None = None
        self._showing = False
        self.reports: list[str] = []

    def install(self) -> CrashHandler:
        """Become the process's exception hooks."""
        sys.excepthook = self._on_exception
        threading.excepthook = self._on_thread_exception
        return self

    def uninstall(self) -> None:
        """Give the hooks back."""
        sys.excepthook = self._previous_hook
        threading.excepthook = self._previous_thread_hook

    def attach_gui(self, parent: QWidget | None = None) -> None:
        """Show crash dialogs from now on (call on the GUI thread)."""
        if self._relay is None:
            self._relay = _CrashRelay()
            self._relay.crashed.connect(self._show, Qt.ConnectionType.QueuedConnection)
        self._parent = parent

    def _on_exception(
        self, exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
    ) -> None:
        self._handle(exc_type, exc, tb, threading.current_thread().name)

    def _on_thread_exception(self, args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit or args.exc_value is None:
            return
        thread = args.thread.name if args.thread is not None else "unknown thread"
        self._handle(args.exc_type, args.exc_value, args.exc_traceback, thread)

    def _handle(
        self,
        exc_type: type[BaseException],
        exc: BaseException,
        tb: TracebackType | None,
        thread: str,
    ) -> None:
        if issubclass(exc_type, KeyboardInterrupt):
            self._previous_hook(exc_type, exc, tb)
            return
        log.critical("Unexpected error on %s", thread, exc_info=(exc_type, exc, tb))
        report = crash_report(exc_type, exc, tb, thread)
        self.reports.append(report)
        if self._relay is not None:
            try:
                self._relay.crashed.emit(report)
                return
            except RuntimeError:
                pass  # the GUI is gone
        if sys.stderr is not None:  # None under pythonw.exe
            print(report, file=sys.stderr)

    @Slot(str)
    def _show(self, report: str) -> None:
        if self._showing:
            # A crash while the report is open: it is logged; one dialog is enough.
            return
        from qargo_desktop.ui import dialogs

        self._showing = True
        try:
            quit_requested = dialogs.show_crash(self._parent, report)
        finally:
            self._showing = False
        if quit_requested:
            app = QApplication.instance()
            if app is not None:
                app.exit(1)


# -- the controller ----------------------------------------------------------------------------


class AppController(QObject):
    """Builds the services (or the sandbox) in the background and hands them to the window.

    Args:
        window: The main window.
        settings: The app's settings.
    """

    def __init__(self, window: MainWindow, settings: Settings) -> None:
        super().__init__(window)
        self.window = window
        self.settings = settings
        self.sandbox: Any = None
        self.services: Services | None = None
        self._sandbox_lock = threading.Lock()
        window.sandbox_requested.connect(self.start_sandbox)

    def start(self, *, sandbox: bool) -> None:
        """Choose sandbox, first run or the configured services."""
        if sandbox or self.settings.sandbox:
            self.start_sandbox()
            return
        missing = self.settings.missing_for_production()
        if missing:
            self.window.show_first_run(missing, self.settings.config_file)
            return
        self.window.show_starting("Connecting...")
        settings = self.settings

        def work(_cancel: threading.Event, _progress: Any) -> tuple[Services, str | None]:
            from qargo_desktop.core.bootstrap import build_services

            services = build_services(settings)
            return services, _cache_problem(services)

        self.window.tasks.start("build services", work, on_finished=self._on_services_built)

    def start_sandbox(self) -> None:
        """Start the built-in sandbox and use it."""
        self.window.show_starting("Starting the built-in sandbox...")
        from qargo_desktop.core.config import app_paths

        settings = self.settings
        data_dir = app_paths(settings).data_dir / "sandbox"

        def work(_cancel: threading.Event, _progress: Any) -> tuple[Services, str | None]:
            from qargo_desktop.core.bootstrap import build_services, start_sandbox_for_app

            with self._sandbox_lock:
                if self.sandbox is not None:
                    raise RuntimeError("the sandbox is already running")
                sandbox, sandbox_settings = start_sandbox_for_app(data_dir, settings)
                self.sandbox = sandbox
            services = build_services(sandbox_settings)
            return services, _cache_problem(services)

        self.window.tasks.start(
            "start sandbox",
            work,
            on_finished=lambda result, error: self._on_services_built(
                result, error, environment="Sandbox"
            ),
        )

    def _on_services_built(
        self, result: Any, error: BaseException | None, *, environment: str = ""
    ) -> None:
        if error is not None:
            log.error("The app could not start its services: %s", error, exc_info=error)
            detail = error.explain() if hasattr(error, "explain") else str(error)
            self.window.show_startup_error(f"The app could not start: {detail}")
            return
        services, cache_problem = result
        self.services = services
        with self._sandbox_lock:
            note = sandbox_sign_in_note(self.sandbox) if environment == "Sandbox" else ""
        self.window.attach_services(services, environment=environment, sign_in_note=note)
        if cache_problem:
            from qargo_desktop.ui.theme import MessageLevel

            self.window.show_message(
                f"{cache_problem} You will need to sign in again next time.",
                level=MessageLevel.WARNING,
                key="token-cache",
            )

    def stop(self) -> None:
        """Stop the sandbox, if one runs (after the window closed)."""
        with self._sandbox_lock:
            sandbox, self.sandbox = self.sandbox, None
        if sandbox is not None:
            sandbox.stop()


def _cache_problem(services: Services) -> str | None:
    """Why sign-ins cannot be kept between runs, if they cannot (no usable keyring)."""
    take = getattr(services.admin_identity.store, "take_problem", None)
    problem = take() if callable(take) else None
    return str(problem) if problem else None


# -- entry points ----------------------------------------------------------------------------


def window_state_for(settings: Settings) -> QSettings:
    """The QSettings file for window state, in the (possibly overridden) config folder."""
    from qargo_desktop.core.config import app_paths

    path = app_paths(settings).window_state_file
    return QSettings(str(path), QSettings.Format.IniFormat)


def create_application(argv: Sequence[str] | None = None) -> QApplication:
    """The QApplication with the app's names and icon (the existing one, if any)."""
    existing = QApplication.instance()
    app = existing if isinstance(existing, QApplication) else QApplication(list(argv or sys.argv))
    app.setOrganizationName(ORGANISATION_NAME)
    app.setApplicationName(APP_NAME)
    app.setApplicationDisplayName(APP_DISPLAY_NAME)
    app.setApplicationVersion(__version__)
    app.setDesktopFileName(APP_NAME)
    from qargo_desktop.ui.theme import app_icon

    app.setWindowIcon(app_icon())
    return app


def run(
    settings: Settings,
    sandbox: bool = False,
    *,
    argv: Sequence[str] | None = None,
    crash_handler: CrashHandler | None = None,
) -> int:
    """Open the window and run until it closes; returns the process exit code.

    Args:
        settings: The app's settings.
        sandbox: Run against the built-in sandbox.
        argv: Arguments for Qt (default ``sys.argv``).
        crash_handler: An already installed handler (:func:`run_from_args` installs one
            before it loads anything); installed here otherwise.
    """
    handler = crash_handler or CrashHandler().install()
    app = create_application(argv)
    from qargo_desktop.ui.main_window import MainWindow

    window = MainWindow(settings, window_state=window_state_for(settings))
    handler.attach_gui(window)
    controller = AppController(window, settings)
    window.show()
    controller.start(sandbox=sandbox)
    try:
        return int(app.exec())
    finally:
        window.tasks.shutdown(3000)
        controller.stop()
        handler.attach_gui(None)


def run_from_args(args: argparse.Namespace) -> int:
    """The window, from the command line's arguments (``qargo-desktop [--sandbox]``)."""
    handler = CrashHandler().install()
    from qargo_desktop.core.config import ConfigError, app_paths, load_settings
    from qargo_desktop.core.logs import setup_logging

    config_file = Path(args.config) if getattr(args, "config", None) else None
    # Only flags actually given override: a False --sandbox must not beat the config file.
    overrides = {
        "config_dir": getattr(args, "config_dir", None),
        "sandbox": True if getattr(args, "sandbox", False) else None,
    }
    try:
        settings = load_settings(config_file, overrides=overrides)
    except ConfigError as exc:
        return _show_config_problem(exc, handler)
    paths = app_paths(settings)
    setup_logging(
        paths.log_dir,
        "DEBUG" if getattr(args, "verbose", False) else settings.log_level,
        console=bool(getattr(args, "verbose", False)),
    )
    log.info("%s %s starting", APP_DISPLAY_NAME, __version__)
    return run(settings, sandbox=settings.sandbox, crash_handler=handler)


def _show_config_problem(exc: Exception, handler: CrashHandler) -> int:
    """The settings cannot be used: say so in a window (a GUI app may have no console)."""
    print(f"The settings cannot be used:\n{exc}", file=sys.stderr)
    _app = create_application()  # kept alive for the dialog
    from qargo_desktop.ui import dialogs

    handler.attach_gui(None)
    dialogs.show_config_problem(None, str(exc))
    return 2
