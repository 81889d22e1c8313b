"""Application bootstrap: crash handler first, then QApplication, the window and the services.

The services (HTTP session, identity, token cache) and the built-in sandbox are built on
a worker thread: the first keyring access alone takes a tenth of a second, and the
sandbox generates certificates. The window shows its starting page meanwhile.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QCoreApplication, QObject, QSettings, Qt, QTimer, Signal, Slot
from PySide6.QtWidgets import QApplication, QWidget

from qargo_desktop import APP_DISPLAY_NAME, APP_NAME, ORGANISATION_NAME, __version__
from qargo_desktop.core.crash_hooks import install_crash_handler
from qargo_desktop.ui.first_paint import when_first_painted
from qargo_desktop.ui.tasks import CrashReporter, set_crash_reporter, was_reported

if TYPE_CHECKING:
    from qargo_desktop.core.config import Settings
    from qargo_desktop.core.logs import RingBufferHandler
    from qargo_desktop.core.services import Services
    from qargo_desktop.core.support import CrashReport
    from qargo_desktop.ui.main_window import MainWindow
    from qargo_desktop.ui.single_instance import InstanceRequest, SingleInstance

log = logging.getLogger(__name__)

translate = QCoreApplication.translate


def sandbox_sign_in_note(sandbox: Any) -> str:
    """The sign-in page's hint naming a super admin account the sandbox knows."""
    accounts = getattr(getattr(sandbox, "info", None), "accounts", None) or []
    admins = [a.get("username") for a in accounts if a.get("role") == "super_admin"]
    if not admins:
        return ""
    return translate(
        "app",
        "Sandbox: sign in as {account} (a super admin). The sandbox's sign-in page lets you "
        "pick the account; no password is needed.",
    ).format(account=admins[0])


ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


# -- the crash handler ------------------------------------------------------------------------


def crash_report(exc_type: type[BaseException], exc: BaseException, tb: Any, thread: str) -> str:
    """The text of a crash report: when, where, versions and the traceback (redacted)."""
    from qargo_desktop.core.support import format_crash_report

    return format_crash_report(exc_type, exc, tb, where=thread).text


class _CrashRelay(QObject):
    """Carries a crash report from any thread to the GUI thread (it lives there)."""

    crashed = Signal(object)


class CrashHandler:
    """Every unexpected error on one path: logged, reported, saved, then shown.

    Unhandled exceptions of the main thread and of every other thread
    (:func:`~qargo_desktop.core.crash_hooks.install_crash_handler`) and unexpected errors of
    background tasks (:func:`~qargo_desktop.ui.tasks.set_crash_reporter`) all go through
    :func:`~qargo_desktop.core.support.report_crash`: logged, formatted with the versions
    and the last log lines, redacted, and saved as ``crash-<time>.txt`` in the log folder.
    The report then reaches the crash dialog on the GUI thread once :meth:`attach_gui` was
    called, or standard error before that. The app keeps running where it can.

    Install it before anything else, so that start-up failures are caught too; give it the
    log folder and the ring buffer with :meth:`configure` once the settings are loaded.

    Args:
        log_dir: Where reports are saved (``None``: nowhere until configured).
        ring_buffer: The log's ring buffer, whose last lines a report quotes.
    """

    def __init__(
        self, log_dir: Path | None = None, ring_buffer: RingBufferHandler | None = None
    ) -> None:
        self._log_dir = log_dir
        self._ring_buffer = ring_buffer
        self._uninstall: Callable[[], None] | None = None
        self._previous_reporter: CrashReporter | None = None
        self._relay: _CrashRelay | None = None
        self._parent: QWidget | None = None
        self._showing = False
        self.reports: list[CrashReport] = []

    @property
    def log_dir(self) -> Path | None:
        """Where reports are saved."""
        return self._log_dir

    @property
    def installed(self) -> bool:
        """Whether this handler is the process's exception hook now."""
        return self._uninstall is not None

    def install(self) -> CrashHandler:
        """Become the process's exception hooks and the background tasks' crash reporter."""
        if self._uninstall is not None:
            self._uninstall()
        else:
            self._previous_reporter = set_crash_reporter(self.report_exception)
        self._uninstall = install_crash_handler(
            self._log_dir, on_crash=self._on_crash, ring_buffer=self._ring_buffer
        )
        return self

    def configure(
        self, *, log_dir: Path | None, ring_buffer: RingBufferHandler | None = None
    ) -> None:
        """Save reports in ``log_dir`` and quote ``ring_buffer`` from now on."""
        self._log_dir = log_dir
        self._ring_buffer = ring_buffer
        if self._uninstall is not None:
            self.install()

    def uninstall(self) -> None:
        """Give the hooks back."""
        if self._uninstall is None:
            return
        self._uninstall()
        self._uninstall = None
        set_crash_reporter(self._previous_reporter)
        self._previous_reporter = None

    def attach_gui(self, parent: QWidget | None = None) -> None:
        """Show crash dialogs from now on (call on the GUI thread)."""
        if self._relay is None:
            self._relay = _CrashRelay()
            self._relay.crashed.connect(self._show, Qt.ConnectionType.QueuedConnection)
        self._parent = parent

    def report_exception(self, error: BaseException, where: str) -> None:
        """Report an exception that something caught but did not expect (a task's bug)."""
        from qargo_desktop.core.support import report_crash

        report = report_crash(
            type(error),
            error,
            error.__traceback__,
            log_dir=self._log_dir,
            where=where,
            ring_buffer=self._ring_buffer,
        )
        self._on_crash(report)

    def _on_crash(self, report: CrashReport) -> None:
        # Any thread. The report is logged and saved already; what is left is to show it.
        self.reports.append(report)
        if self._relay is not None:
            try:
                self._relay.crashed.emit(report)
                return
            except RuntimeError:
                pass  # the GUI is gone
        if sys.stderr is not None:  # None under pythonw.exe
            sys.stderr.write(report.text)

    @Slot(object)
    def _show(self, report: CrashReport) -> None:
        if self._showing:
            # A crash while the report is open: logged and saved; one dialog is enough.
            return
        from qargo_desktop.ui import dialogs

        self._showing = True
        try:
            quit_requested = dialogs.show_crash(self._parent, report)
        except Exception:
            # Never through the hook again: a dialog that cannot open would loop.
            log.exception("The crash dialog could not be shown")
            return
        finally:
            self._showing = False
        if quit_requested:
            log.info("Quitting after an unexpected problem, as the person chose")
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
        self._sandbox_settings: Settings | None = None
        window.sandbox_requested.connect(self.start_sandbox)
        window.settings_changed.connect(self._on_settings_changed)
        # Help > Diagnostics checks what the services really use (the sandbox's addresses).
        window.support.settings_provider = self.service_settings

    def start(self, *, sandbox: bool) -> None:
        """Choose sandbox, first run or the configured services."""
        if sandbox or self.settings.sandbox:
            self.start_sandbox()
            return
        missing = self.settings.missing_for_production()
        if missing:
            self.window.show_first_run(missing, self.settings.config_file)
            return
        self.window.show_starting(translate("app", "Connecting..."))
        settings = self.settings

        def work(_cancel: threading.Event, _progress: Any) -> tuple[Services, str | None]:
            from qargo_desktop.core.bootstrap import build_services

            services = build_services(settings)
            return services, _cache_problem(services)

        self.window.tasks.start(
            "build services",
            work,
            on_finished=self._on_services_built,
            expected=(OSError, ValueError),
        )

    def start_sandbox(self) -> None:
        """Start the built-in sandbox and use it."""
        self.window.show_starting(translate("app", "Starting the built-in sandbox..."))
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
                self._sandbox_settings = sandbox_settings
            services = build_services(sandbox_settings)
            return services, _cache_problem(services)

        self.window.tasks.start(
            "start sandbox",
            work,
            on_finished=lambda result, error: self._on_services_built(
                result, error, environment="Sandbox"
            ),
            expected=(OSError, ValueError),
        )

    def _on_services_built(
        self, result: Any, error: BaseException | None, *, environment: str = ""
    ) -> None:
        if error is not None:
            if not was_reported(error):
                log.error("The app could not start its services: %s", error, exc_info=error)
            from qargo_desktop.core.errors import QargoError
            from qargo_desktop.ui.texts import explain

            detail = explain(error) if isinstance(error, QargoError) else str(error)
            self.window.show_startup_error(
                translate("app", "The app could not start: {problem}").format(problem=detail)
            )
            return
        services, cache_problem = result
        self.services = services
        # Everything imported and built so far (Qt, the HTTP and sign-in libraries) lives as
        # long as the app: kept out of the cyclic garbage collector's full passes, which
        # otherwise walk all of it (20 to 35 ms, holding the GIL) while the list loads.
        gc.freeze()
        with self._sandbox_lock:
            note = sandbox_sign_in_note(self.sandbox) if environment == "Sandbox" else ""
        self.window.attach_services(services, environment=environment, sign_in_note=note)
        # What the first authorise and self-test need is kept out of the first paint. It is
        # imported off the GUI thread once the first refresh has ended (no mailbox can be
        # clicked before), so that it does not stall the window at the first click, nor
        # compete with signing in and loading the list.
        self.window.refresh_finished.connect(self._warm_up, Qt.ConnectionType.SingleShotConnection)
        if cache_problem:
            from qargo_desktop.ui.theme import MessageLevel

            self.window.show_message(
                translate("app", "{problem} You will need to sign in again next time.").format(
                    problem=cache_problem
                ),
                level=MessageLevel.WARNING,
                key="token-cache",
            )

    def _warm_up(self, _error: object = None) -> None:
        # A moment after the refresh ended, once the list is painted: importing holds the
        # GIL in long stretches, and the table's layout and paint come first.
        QTimer.singleShot(
            _WARM_UP_DELAY_MS, self, lambda: self.window.tasks.start("warm up", _warm_up)
        )

    def service_settings(self) -> Settings:
        """The settings the services were built from (the sandbox's, when one runs)."""
        with self._sandbox_lock:
            return self._sandbox_settings or self.settings

    def _on_settings_changed(self, settings: object) -> None:
        from qargo_desktop.core.config import Settings

        if isinstance(settings, Settings):
            self.settings = settings

    def stop(self) -> None:
        """Stop the sandbox, if one runs (after the window closed)."""
        with self._sandbox_lock:
            sandbox, self.sandbox = self.sandbox, None
        if sandbox is not None:
            sandbox.stop()


#: How long after the first refresh the link actions' modules are imported (see above).
_WARM_UP_DELAY_MS = 500


def _warm_up(_cancel: threading.Event, _progress: Any) -> None:
    """Import the link actions', the dialogs' and the self-test's modules (a background task)."""
    import qargo_desktop.core.linking
    import qargo_desktop.ui.device_code_dialog
    import qargo_desktop.ui.dialogs
    import qargo_desktop.ui.selftest_dialog  # noqa: F401


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
    instance: SingleInstance | None = None,
    select: str | None = None,
    after_first_paint: Callable[[], None] | None = None,
) -> int:
    """Open the window and run until it closes; returns the process exit code.

    The window paints first, showing that the app is starting; everything else (the
    services, listening for later starts, ``after_first_paint``) starts right after.

    Args:
        settings: The app's settings.
        sandbox: Run against the built-in sandbox.
        argv: Arguments for Qt (default ``sys.argv``).
        crash_handler: An already installed handler (:func:`run_from_args` installs one
            before it loads anything); installed here otherwise.
        instance: This app's single-instance lock; later starts reach the window through it.
        select: The address of a mailbox to select once the list is loaded.
        after_first_paint: Called first once the window has painted (the log's set-up).
    """
    handler = crash_handler or CrashHandler().install()
    if handler.log_dir is None:
        from qargo_desktop.core.config import app_paths
        from qargo_desktop.ui.log_view import find_ring_buffer

        handler.configure(log_dir=app_paths(settings).log_dir, ring_buffer=find_ring_buffer())
    app = create_application(argv)
    from qargo_desktop.ui import i18n
    from qargo_desktop.ui.main_window import MainWindow
    from qargo_desktop.ui.theme import apply_colour_scheme

    i18n.install_language(settings.language)
    apply_colour_scheme(settings.theme)
    # Only what the first paint shows; the rest is built right after it.
    window = MainWindow(settings, window_state=window_state_for(settings), build_now=False)
    handler.attach_gui(window)
    start_up = _StartUp(
        window,
        handler,
        settings,
        sandbox=sandbox,
        instance=instance,
        select=select,
        after_first_paint=after_first_paint,
    )
    when_first_painted(window, start_up.run)
    # The benchmarks' measurement hook (QARGO_BENCH_MARKS); does nothing unless set.
    # Installed last, its event filter sees the first paint first.
    from qargo_desktop.ui import bench_marks

    bench_marks.install(window)
    window.show()
    try:
        return int(app.exec())
    finally:
        window.tasks.shutdown(3000)
        start_up.stop()
        handler.attach_gui(None)
        if instance is not None:
            instance.release()


class _StartUp:
    """What starts once the window has painted, each step on its own.

    The window shows "Starting..." meanwhile, and the services' worker thread does not
    compete with the first paint for the GIL. One step failing is reported as a crash and
    does not stop the others, except the window's own parts: without them it cannot be
    used, and says so.
    """

    def __init__(
        self,
        window: MainWindow,
        handler: CrashHandler,
        settings: Settings,
        *,
        sandbox: bool,
        instance: SingleInstance | None,
        select: str | None,
        after_first_paint: Callable[[], None] | None,
    ) -> None:
        self.window = window
        self.handler = handler
        self.settings = settings
        self.sandbox = sandbox
        self.instance = instance
        self.select = select
        self.after_first_paint = after_first_paint
        self.controller: AppController | None = None
        self._restore_signals: Callable[[], None] | None = None

    def run(self) -> None:
        """Finish the window, then start the log, the hand-over listener and the services."""
        try:
            # SIGTERM and SIGINT close the window from now on (before, there is nothing to
            # save, and the default ending is as good).
            self._restore_signals = close_on_termination_signals(self.window)
        except (OSError, ValueError) as exc:
            log.warning("Termination signals will end the app abruptly: %s", exc)
        try:
            self.window.finish_building()
        except Exception as exc:
            self.handler.report_exception(exc, "start-up")
            self._say_cannot_start(exc)
            return
        for step in (self.after_first_paint, self._listen, self._start_services):
            if step is None:
                continue
            try:
                step()
            except Exception as exc:
                self.handler.report_exception(exc, "start-up")

    def stop(self) -> None:
        """Undo what :meth:`run` set up beyond the window (the app is ending)."""
        if self._restore_signals is not None:
            self._restore_signals()
            self._restore_signals = None
        if self.controller is not None:
            self.controller.stop()

    def _say_cannot_start(self, problem: Exception) -> None:
        self.window.show_startup_error(
            translate("app", "The app could not start: {problem}").format(problem=problem)
        )

    def _listen(self) -> None:
        window, instance = self.window, self.instance
        if instance is not None:
            instance.setParent(window)
            instance.request_received.connect(lambda request: _on_instance_request(window, request))
            instance.listen()

    def _start_services(self) -> None:
        try:
            self.controller = AppController(self.window, self.settings)
            self.controller.start(sandbox=self.sandbox)
        except Exception as exc:
            self._say_cannot_start(exc)
            raise
        if self.select:
            self.window.select_address(self.select)


def close_on_termination_signals(window: QWidget) -> Callable[[], None]:
    """Close ``window`` as if the person did on SIGTERM and SIGINT (not on Windows).

    Closing saves the window's state and stops background work, and the app then gives
    its lock back; killed outright by the signal it would do none of that. Python runs
    signal handlers only when it runs, so the signal also wakes Qt's event loop, through
    a socket Python writes the signal's number to (``signal.set_wakeup_fd``). Returns a
    function that puts the previous handlers back.
    """
    if sys.platform == "win32" or threading.current_thread() is not threading.main_thread():
        return lambda: None
    import signal
    import socket

    from PySide6.QtCore import QSocketNotifier

    reader, writer = socket.socketpair()
    reader.setblocking(False)
    writer.setblocking(False)
    notifier = QSocketNotifier(reader.fileno(), QSocketNotifier.Type.Read, window)

    def drain() -> None:
        # The handler below has run by now (or runs next): only the wake-up is left.
        with contextlib.suppress(OSError):
            reader.recv(256)

    def on_signal(number: int, _frame: object) -> None:
        log.info("Closing: signal %s received", signal.Signals(number).name)
        QTimer.singleShot(0, window.close)

    notifier.activated.connect(drain)
    previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    previous = {
        number: signal.signal(number, on_signal) for number in (signal.SIGTERM, signal.SIGINT)
    }

    def restore() -> None:
        for number, handler in previous.items():
            signal.signal(number, handler)
        signal.set_wakeup_fd(previous_fd)
        notifier.setEnabled(False)
        reader.close()
        writer.close()

    return restore


def _on_instance_request(window: MainWindow, request: InstanceRequest) -> None:
    """A later start of the app: come forward, and do what it asked."""
    window.bring_to_front()
    if request.select:
        window.select_address(request.select)


class _EarlyLog(logging.Handler):
    """Keeps what is logged before the log starts (after the first paint), and hands it on.

    The settings' warnings, for one, are logged while they are read. Meanwhile warnings
    also go to standard error, as Python would say them with no log set up at all.
    """

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    @classmethod
    def install(cls) -> _EarlyLog:
        """A new one, on the root logger."""
        early = cls()
        logging.getLogger().addHandler(early)
        return early

    def emit(self, record: logging.LogRecord) -> None:
        """Keep ``record``; say it on standard error if it is a warning or worse."""
        self.records.append(record)
        if record.levelno >= logging.WARNING and sys.stderr is not None:
            sys.stderr.write(f"{record.getMessage()}\n")

    def hand_over(self) -> None:
        """Leave the root logger, and pass what was kept to the log set up since."""
        root = logging.getLogger()
        root.removeHandler(self)
        records, self.records = self.records, []
        for record in records:
            root.handle(record)


def run_from_args(args: argparse.Namespace) -> int:
    """The window, from the command line's arguments (``qargo-desktop [--sandbox]``)."""
    handler = CrashHandler().install()
    early_log = _EarlyLog.install()
    from qargo_desktop.core.config import ConfigError, app_paths, load_settings

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

    # One window per person and config folder. Before logging starts, so that a second
    # start never touches the running app's log file.
    from qargo_desktop.ui.single_instance import InstanceRequest, SingleInstance, send_request

    select = getattr(args, "select", None)
    instance = SingleInstance(paths.config_dir)
    if not instance.acquire():
        if send_request(instance.name, InstanceRequest(select=select)):
            if getattr(args, "sandbox", False):
                print(
                    f"{APP_DISPLAY_NAME} is already running and was brought forward; "
                    "--sandbox applies only when it starts: close it first.",
                    file=sys.stderr,
                )
            return 0
        return _show_not_answering(handler, settings)
    # From here on a crash report is saved in the log folder.
    handler.configure(log_dir=paths.log_dir)

    def start_logging() -> None:
        from qargo_desktop.core.logs import setup_logging

        logging_setup = setup_logging(
            paths.log_dir,
            "DEBUG" if getattr(args, "verbose", False) else settings.log_level,
            console=bool(getattr(args, "verbose", False)),
        )
        # A crash report quotes the log's last lines from now on.
        handler.configure(log_dir=paths.log_dir, ring_buffer=logging_setup.ring_buffer)
        log.info("%s %s starting", APP_DISPLAY_NAME, __version__)
        early_log.hand_over()

    return run(
        settings,
        sandbox=settings.sandbox,
        crash_handler=handler,
        instance=instance,
        select=select,
        after_first_paint=start_logging,
    )


def _show_not_answering(handler: CrashHandler, settings: Settings) -> int:
    """The app runs already but does not answer: say so rather than open a second window."""
    print(f"{APP_DISPLAY_NAME} is already running but does not answer.", file=sys.stderr)
    _app = create_application()  # kept alive for the dialog
    from qargo_desktop.ui import dialogs, i18n

    i18n.install_language(settings.language)
    handler.attach_gui(None)
    dialogs.show_not_answering(None)
    return 1


def _show_config_problem(exc: Exception, handler: CrashHandler) -> int:
    """The settings cannot be used: say so in a window (a GUI app may have no console)."""
    print(f"The settings cannot be used:\n{exc}", file=sys.stderr)
    _app = create_application()  # kept alive for the dialog
    from qargo_desktop.ui import dialogs, i18n

    i18n.install_language(None)
    handler.attach_gui(None)
    dialogs.show_config_problem(None, str(exc))
    return 2
