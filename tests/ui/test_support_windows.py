"""The window half of support: the crash path, the Diagnostics window, the log view.

The crash tests install the app's real crash handler (with a temporary log folder) and
replace only ``dialogs.show_crash``. The Diagnostics window runs its real checks against a
real in-process sandbox, and its support bundle is opened and searched for every secret
the sandbox ever issued.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QGuiApplication
from PySide6.QtTest import QTest

from qargo_desktop.core.bootstrap import build_services, sandbox_overrides
from qargo_desktop.core.config import Settings, app_paths
from qargo_desktop.core.errors import NetworkError
from qargo_desktop.core.logs import LoggingSetup, setup_logging
from qargo_desktop.core.support import CrashReport, report_crash
from qargo_desktop.sandbox import browser
from qargo_desktop.sandbox.server import Sandbox
from qargo_desktop.sandbox.world import SandboxOptions
from qargo_desktop.ui import dialogs, tasks
from qargo_desktop.ui.app import CrashHandler
from qargo_desktop.ui.diagnostics_window import SUPPORT_BUNDLES_DIR, DiagnosticsWindow
from qargo_desktop.ui.log_view import LogView
from qargo_desktop.ui.main_window import MainWindow, Page
from qargo_desktop.ui.theme import Theme

DOMAIN = "northwind-haulage.example"
ADMIN = f"admin@{DOMAIN}"
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9.c2lnbmF0dXJlLWJ5dGVz"


@pytest.fixture
def crashes(monkeypatch: pytest.MonkeyPatch) -> list[CrashReport]:
    """Every crash report the dialog would have shown."""
    shown: list[CrashReport] = []

    def show_crash(parent: Any, report: CrashReport) -> bool:
        shown.append(report)
        return False  # "Keep working"

    monkeypatch.setattr(dialogs, "show_crash", show_crash)
    return shown


@pytest.fixture
def crash_handler(tmp_path: Path) -> Iterator[CrashHandler]:
    """The app's crash handler, installed, saving reports in a temporary log folder."""
    handler = CrashHandler(log_dir=tmp_path / "crash-logs").install()
    yield handler
    handler.uninstall()


@pytest.fixture
def app_logging(tmp_path: Path) -> Iterator[LoggingSetup]:
    """The app's logging (file and ring buffer) in a temporary folder, removed afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    setup = setup_logging(tmp_path / "config" / "logs")
    yield setup
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


@pytest.fixture
def window(qtbot, tmp_path: Path, window_state) -> MainWindow:
    """A main window without services (nothing to sign in to)."""
    window = MainWindow(
        Settings(config_dir=tmp_path / "config", refresh_interval_s=0),
        window_state=window_state,
        theme=Theme(dark=False),
    )
    qtbot.addWidget(window)
    window.show()
    return window


# -- the crash path -------------------------------------------------------------------------


def test_a_crash_on_the_gui_thread_shows_the_dialog_and_the_app_keeps_running(
    qtbot, window: MainWindow, crashes: list[CrashReport], crash_handler: CrashHandler
) -> None:
    crash_handler.attach_gui(window)

    def broken_slot() -> None:
        raise ValueError(f"could not read the list: access_token={JWT}")

    # A slot that raises, called by Qt's event loop: Qt hands it to sys.excepthook.
    QTimer.singleShot(0, broken_slot)
    qtbot.waitUntil(lambda: len(crashes) == 1, timeout=5000)
    report = crashes[0]
    assert report.exception_type == "ValueError"
    assert "could not read the list" in report.summary and JWT not in report.text
    assert report.where == "main thread"
    assert report.path is not None and report.path.is_file()
    assert JWT not in report.path.read_text(encoding="utf-8")

    # Still running: the window answers and background work still comes back.
    results: list[object] = []
    window.tasks.start(
        "after the crash", lambda _c, _p: 42, on_finished=lambda r, e: results.append(r)
    )
    qtbot.waitUntil(lambda: results == [42], timeout=5000)
    assert window.isVisible()


def test_an_unexpected_error_in_a_background_task_reaches_the_crash_dialog_once(
    qtbot, window: MainWindow, crashes: list[CrashReport], crash_handler: CrashHandler, caplog
) -> None:
    crash_handler.attach_gui(window)
    finished: list[tuple[object, BaseException | None]] = []

    def broken(_cancel: threading.Event, _progress: Any) -> None:
        raise KeyError("mailboxes")

    window.tasks.start("broken", broken, on_finished=lambda r, e: finished.append((r, e)))
    qtbot.waitUntil(lambda: bool(finished) and len(crashes) == 1, timeout=5000)

    # The caller still learns of it, and can tell it was reported already.
    result, error = finished[0]
    assert result is None and isinstance(error, KeyError)
    assert tasks.was_reported(error)
    assert crashes[0].where == "background task 'broken'"
    assert crashes[0].summary == "KeyError: 'mailboxes'"
    # Logged once, with its traceback, by the crash path; not again by the task runner.
    assert [r.levelname for r in caplog.records if "broken" in r.getMessage()] == ["CRITICAL"]

    # Errors the app expects stay routine: no crash dialog.
    def offline(_cancel: threading.Event, _progress: Any) -> None:
        raise NetworkError("the service could not be reached")

    def disk_full(_cancel: threading.Event, _progress: Any) -> None:
        raise OSError(28, "No space left on device")

    window.tasks.start("offline", offline, on_finished=lambda r, e: finished.append((r, e)))
    window.tasks.start(
        "save", disk_full, on_finished=lambda r, e: finished.append((r, e)), expected=(OSError,)
    )
    qtbot.waitUntil(lambda: len(finished) == 3, timeout=5000)
    QTest.qWait(50)
    assert len(crashes) == 1


def test_without_the_crash_handler_a_task_error_is_only_logged(qtbot, window, caplog) -> None:
    assert tasks.set_crash_reporter(None) is None  # nothing installed outside the app
    finished: list[BaseException | None] = []

    def broken(_cancel: threading.Event, _progress: Any) -> None:
        raise KeyError("bug")

    window.tasks.start("broken", broken, on_finished=lambda _r, e: finished.append(e))
    qtbot.waitUntil(lambda: bool(finished), timeout=5000)
    assert finished[0] is not None and not tasks.was_reported(finished[0])
    assert any(r.getMessage() == "Task broken failed unexpectedly" for r in caplog.records)


def test_the_crash_dialog_says_what_happened_with_versions_copy_and_a_warning(
    qtbot, tmp_path: Path
) -> None:
    try:
        raise RuntimeError("the list could not be drawn")
    except RuntimeError as exc:
        report = report_crash(
            type(exc), exc, exc.__traceback__, log_dir=tmp_path, where="main thread"
        )
    dialog = dialogs.CrashDialog(None, report)
    qtbot.addWidget(dialog)
    dialog.show()

    assert dialog.summary.text() == "What happened: RuntimeError: the list could not be drawn"
    assert str(report.path) in dialog.saved_as.text()
    text = dialog.report.toPlainText()
    for line in ("App:     qargo-desktop", "Python:", "Qt:", "OS:"):
        assert line in text
    warnings = [label.text() for label in dialog.findChildren(type(dialog.summary))]
    assert any("personal data" in words for words in warnings)
    assert dialog.keep_button.isDefault()

    qtbot.mouseClick(dialog.copy_button, Qt.MouseButton.LeftButton)
    assert QGuiApplication.clipboard().text() == report.text
    qtbot.mouseClick(dialog.quit_button, Qt.MouseButton.LeftButton)
    assert dialog.quit_requested


# -- the log view ---------------------------------------------------------------------------


def test_the_log_view_shows_new_records_live_and_redacted(
    qtbot, window: MainWindow, app_logging: LoggingSetup
) -> None:
    logger = logging.getLogger("qargo_desktop.test_support")
    logger.info("Before the view opened")
    opened: list[Path] = []
    window.folder_opener = lambda folder: opened.append(folder) or True

    window.log_action.trigger()  # Help > Show log
    view = window.support.log_view
    assert isinstance(view, LogView) and view.isVisible()
    assert "Before the view opened" in view.shown_text()

    # From a worker thread, with a secret in it: it arrives on the GUI thread, redacted.
    def worker() -> None:
        logger.warning("Refresh failed: refresh_token=%s Authorization: Bearer %s", "0.AXk-x", JWT)

    thread = threading.Thread(target=worker, name="log-writer")
    thread.start()
    thread.join()
    qtbot.waitUntil(lambda: "Refresh failed" in view.shown_text(), timeout=5000)
    assert JWT not in view.shown_text() and "0.AXk-x" not in view.shown_text()
    assert "[redacted]" in view.shown_text()
    assert "[log-writer]" in view.shown_text()

    # The level filter: warnings and errors only.
    view.set_minimum_level(logging.WARNING)
    assert "Before the view opened" not in view.shown_text()
    assert "Refresh failed" in view.shown_text()
    logger.info("An ordinary line")
    logger.error("A broken thing")
    qtbot.waitUntil(lambda: "A broken thing" in view.shown_text(), timeout=5000)
    assert "An ordinary line" not in view.shown_text()

    # Open log folder: the log directory, through the window's folder opener.
    qtbot.mouseClick(view.folder_button, Qt.MouseButton.LeftButton)
    assert opened == [app_paths(window.settings).log_dir]
    assert app_logging.log_file is not None and app_logging.log_file.parent == opened[0]

    # One view: Help > Show log again brings the same one forward.
    window.log_action.trigger()
    assert window.support.log_view is view

    # Closed, it stops following the log.
    view.close()
    logger.error("After the view closed")
    QTest.qWait(50)
    assert "After the view closed" not in view.shown_text()


def test_open_log_folder_says_where_it_is_when_it_cannot_open_it(
    qtbot, window: MainWindow, app_logging: LoggingSetup
) -> None:
    window.folder_opener = lambda _folder: False
    view = window.support.show_log()
    qtbot.mouseClick(view.folder_button, Qt.MouseButton.LeftButton)
    assert view.problem.isVisible()
    assert str(app_paths(window.settings).log_dir) in view.problem.text()


# -- the Diagnostics window against the sandbox ---------------------------------------------


@dataclasses.dataclass
class Desk:
    sandbox: Sandbox
    settings: Settings
    window: MainWindow
    opened: list[Path]


@pytest.fixture
def desk(qtbot, sandbox_certs: Path, tmp_path: Path, window_state, app_logging) -> Iterator[Desk]:
    """The window against a real sandbox, signed in through the scripted browser."""
    box = Sandbox(SandboxOptions(data_dir=sandbox_certs, device_code_interval_s=1))
    info = box.start()
    try:
        settings = dataclasses.replace(
            Settings(config_dir=tmp_path / "config", refresh_interval_s=0, sign_in_timeout_s=30),
            **sandbox_overrides(info),  # type: ignore[arg-type]
        )
        window = MainWindow(settings, window_state=window_state, theme=Theme(dark=False))
        qtbot.addWidget(window)
        window.show()
        opened: list[Path] = []
        window.folder_opener = lambda folder: opened.append(folder) or True
        ca = str(info.ca_certificate)
        window.browser_opener = lambda url: bool(
            browser.run(url, account=ADMIN, ca_certificate=ca, say=lambda _line: None)
        )
        window.attach_services(build_services(settings))
        yield Desk(box, settings, window, opened)
        window.close()
    finally:
        box.stop()


def sign_in(qtbot, window: MainWindow) -> None:
    qtbot.waitUntil(lambda: window.current_page is Page.SIGN_IN, timeout=10_000)
    with qtbot.waitSignal(window.refresh_finished, timeout=20_000) as blocker:
        window.start_interactive_sign_in()
    assert blocker.args == [None]


def run_checks(qtbot, diagnostics: DiagnosticsWindow) -> None:
    qtbot.waitUntil(lambda: diagnostics.report is not None and not diagnostics.running,
                    timeout=30_000)  # fmt: skip


def test_diagnostics_run_against_the_sandbox_and_show_their_findings(qtbot, desk: Desk) -> None:
    window = desk.window
    sign_in(qtbot, window)

    window.diagnostics_action.trigger()  # Help > Diagnostics
    diagnostics = window.support.diagnostics
    assert isinstance(diagnostics, DiagnosticsWindow) and diagnostics.isVisible()
    assert not diagnostics.isModal()
    assert diagnostics.running and diagnostics.busy.isVisible()
    run_checks(qtbot, diagnostics)
    assert not diagnostics.busy.isVisible()

    # Everything works: one OK, with a mark and words, not just a colour.
    assert diagnostics.findings.texts() == [
        "OK: Reachable: Qargo API, Microsoft sign-in, Microsoft Graph."
    ]
    assert diagnostics.summary.text().startswith("Nothing wrong found. Checked ")
    services = diagnostics.browsers["services"].toPlainText()
    for words in ("Qargo API: ✔ Reachable", "Name lookup (DNS)", "Connection (TCP)",
                  "Secure handshake (TLS)", "Request (HTTP)", " ms",
                  "The extra CA in the settings", "Direct connection"):  # fmt: skip
        assert words in services, words
    network = diagnostics.browsers["network"].toPlainText()
    assert "system (from the default)" in network and "in step with the servers" in network
    sign_ins = diagnostics.browsers["sign_ins"].toPlainText()
    assert ADMIN in sign_ins and "memory_keyring" in sign_ins.lower().replace(".", "_")
    assert "Python" in diagnostics.browsers["versions"].toPlainText()
    assert diagnostics.full_text.toPlainText() == diagnostics.report.to_text()

    # Copy: the text report.
    qtbot.mouseClick(diagnostics.copy_button, Qt.MouseButton.LeftButton)
    assert QGuiApplication.clipboard().text() == diagnostics.report.to_text()

    # Graph goes down: Run again shows the problem first.
    desk.sandbox.set_faults(unavailable_probability=1.0, services=("graph",))
    qtbot.mouseClick(diagnostics.run_button, Qt.MouseButton.LeftButton)
    assert not diagnostics.run_button.isEnabled()
    run_checks(qtbot, diagnostics)
    desk.sandbox.set_faults(unavailable_probability=0.0)
    texts = diagnostics.findings.texts()
    assert texts[0].startswith("Problem: Microsoft Graph cannot be reached")
    assert texts[-1] == "OK: Reachable: Qargo API, Microsoft sign-in."
    assert "Microsoft Graph: ✖ Not reachable" in diagnostics.browsers["services"].toPlainText()
    assert diagnostics.summary.text().startswith("1 problem found.")

    # One window: Help > Diagnostics again brings the same one forward, without a new run.
    report = diagnostics.report
    window.diagnostics_action.trigger()
    assert window.support.diagnostics is diagnostics and diagnostics.report is report


def test_a_support_bundle_holds_diagnostics_and_logs_but_no_secret(
    qtbot, desk: Desk, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    window = desk.window
    sign_in(qtbot, window)
    diagnostics = window.support.show_diagnostics()
    run_checks(qtbot, diagnostics)

    # Save support bundle...: the file dialog is replaced; the zip is written in the background.
    target = tmp_path / "chosen" / "support.zip"
    asked: list[Path] = []

    def ask(_parent: Any, suggested: Path) -> Path:
        asked.append(suggested)
        return target

    monkeypatch.setattr(dialogs, "ask_support_bundle_path", ask)
    qtbot.mouseClick(diagnostics.save_button, Qt.MouseButton.LeftButton)
    assert asked and asked[0].name.startswith("qargo-support-") and asked[0].suffix == ".zip"
    qtbot.waitUntil(lambda: diagnostics.bundle is not None, timeout=20_000)
    assert diagnostics.bundle.path == target and target.is_file()

    with zipfile.ZipFile(target) as bundle:
        names = bundle.namelist()
        contents = {name: bundle.read(name).decode("utf-8") for name in names}
    assert {"README.txt", "diagnostics.json", "diagnostics.txt"} <= set(names)
    assert "logs/qargo-desktop.log" in names
    assert "Signed in as " + ADMIN in contents["logs/qargo-desktop.log"]
    issued = {s for s in desk.sandbox.issued_secrets() if len(s) >= 8}
    assert issued, "the sandbox issued no token: the test proves nothing"
    for name, text in contents.items():
        leaked = [s[:12] for s in issued if s in text]
        assert not leaked, f"{name} holds issued secrets {leaked}"

    # Where to send it, with the path and Open folder.
    assert diagnostics.contact_panel.isVisible()
    assert desk.settings.support_contact in diagnostics.contact_text.text()
    assert diagnostics.bundle_path.text() == str(target)
    qtbot.mouseClick(diagnostics.open_folder_button, Qt.MouseButton.LeftButton)
    assert desk.opened == [target.parent]


def test_contact_qargo_support_prepares_a_bundle_and_says_where_to_send_it(
    qtbot, desk: Desk
) -> None:
    window = desk.window
    diagnostics = window.support.show_diagnostics()
    run_checks(qtbot, diagnostics)
    assert not diagnostics.contact_panel.isVisible()

    qtbot.mouseClick(diagnostics.contact_button, Qt.MouseButton.LeftButton)
    assert not diagnostics.contact_button.isEnabled()  # saving in the background
    qtbot.waitUntil(lambda: diagnostics.bundle is not None, timeout=20_000)
    folder = app_paths(desk.settings).data_dir / SUPPORT_BUNDLES_DIR
    assert diagnostics.bundle.path.parent == folder and diagnostics.bundle.path.is_file()
    assert diagnostics.contact_panel.isVisible()
    assert "send it to your Qargo support contact" in diagnostics.contact_text.text()
    qtbot.mouseClick(diagnostics.open_folder_button, Qt.MouseButton.LeftButton)
    assert desk.opened == [folder]


def test_a_bundle_that_cannot_be_saved_says_so(qtbot, desk: Desk, tmp_path: Path, crashes) -> None:
    diagnostics = desk.window.support.show_diagnostics()
    run_checks(qtbot, diagnostics)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    diagnostics.save_bundle(blocker / "support.zip")
    qtbot.waitUntil(lambda: not diagnostics.saving, timeout=20_000)
    assert diagnostics.bundle is None
    assert diagnostics.message.text().startswith("The support bundle could not be saved:")
    assert crashes == []  # a routine failure, not a crash


# -- sign-in on another device (device code) ------------------------------------------------


class OtherDevice:
    """Someone at a phone: enters each code the dialog shows, as ``account``."""

    def __init__(self, account: str, action: str = "accept") -> None:
        self.account = account
        self.action = action
        self.codes: list[str] = []
        self.threads: list[threading.Thread] = []

    def enter(self, address: str, code: str) -> None:
        if code in self.codes:
            return
        self.codes.append(code)

        def act() -> None:
            browser.run(address, self.account, self.action, user_code=code,
                        say=lambda _line: None)  # fmt: skip

        thread = threading.Thread(target=act, name="other-device", daemon=True)
        thread.start()
        self.threads.append(thread)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(10)


def test_the_admin_signs_in_on_another_device(qtbot, desk: Desk) -> None:
    window = desk.window
    window.browser_opener = lambda _url: pytest.fail("the browser must not be used")
    qtbot.waitUntil(lambda: window.current_page is Page.SIGN_IN, timeout=10_000)
    page = window.sign_in_page
    assert page.device_button.isVisible() and not page.device_button.isDefault()

    qtbot.mouseClick(page.device_button, Qt.MouseButton.LeftButton)
    dialog = window.device_dialog
    assert dialog is not None and dialog.isVisible()
    qtbot.waitUntil(lambda: dialog.flow is not None, timeout=10_000)
    flow = dialog.flow
    assert flow is not None
    # Large, with Copy buttons and a countdown to the code's expiry.
    assert dialog.code.text() == flow.user_code
    assert dialog.address.text() == flow.verification_uri == desk.sandbox.info.device_login_url
    assert dialog.code.font().pointSizeF() >= 2 * window.font().pointSizeF()
    assert dialog.countdown.text().startswith("The code expires in 1")  # 15 minutes
    qtbot.mouseClick(dialog.copy_code_button, Qt.MouseButton.LeftButton)
    assert QGuiApplication.clipboard().text() == flow.user_code
    qtbot.mouseClick(dialog.copy_address_button, Qt.MouseButton.LeftButton)
    assert QGuiApplication.clipboard().text() == flow.verification_uri

    # The person enters the code on their phone; the app carries on as after a browser.
    person = OtherDevice(ADMIN)
    with qtbot.waitSignal(window.refresh_finished, timeout=30_000) as blocker:
        person.enter(flow.verification_uri, flow.user_code)
    person.join()
    assert blocker.args == [None]
    assert window.device_dialog is None
    assert window.current_page is Page.MAILBOXES
    assert window.admin_label.text() == f"Signed in as {ADMIN}"
    assert window.model.rowCount() > 0


def test_cancel_stops_a_sign_in_on_another_device_at_once(qtbot, desk: Desk) -> None:
    import time

    window = desk.window
    qtbot.waitUntil(lambda: window.current_page is Page.SIGN_IN, timeout=10_000)
    qtbot.mouseClick(window.sign_in_page.device_button, Qt.MouseButton.LeftButton)
    dialog = window.device_dialog
    assert dialog is not None
    qtbot.waitUntil(lambda: dialog.flow is not None, timeout=10_000)

    started = time.monotonic()
    qtbot.mouseClick(dialog.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.device_dialog is None, timeout=5000)
    assert time.monotonic() - started < 2
    assert window.sign_in_page.problem.text() == "Sign-in cancelled."
    assert window.tasks.active == []
    assert window.services is not None and window.services.admin_identity.accounts() == []


def test_a_mailbox_is_authorised_on_another_device(qtbot, desk: Desk) -> None:
    window = desk.window
    sign_in(qtbot, window)
    address = f"sales@{DOMAIN}"  # unlinked in the seed data
    mailbox = next(m for m in window.model.mailboxes() if m.address == address)
    assert window.select_mailbox(mailbox.id)
    action = window.device_authorise_action
    assert action.isEnabled() and action.text() == "Authorise on another &device..."
    window.browser_opener = lambda _url: pytest.fail("the browser must not be used")

    action.trigger()
    dialog = window.link_actions.device_dialog(mailbox.id)
    assert dialog is not None and address in dialog.windowTitle()
    assert address in dialog.instructions.text()
    person = OtherDevice(address)
    purposes: list[str] = []

    def linked() -> bool:
        flow = dialog.flow if window.link_actions.device_dialog(mailbox.id) else None
        if flow is not None and flow.user_code not in person.codes:
            purposes.append(flow.purpose)
            person.enter(flow.verification_uri, flow.user_code)
        current = window.model.find(mailbox.id)
        return current is not None and current.status.value == "linked"

    qtbot.waitUntil(linked, timeout=60_000)
    person.join()
    qtbot.waitUntil(lambda: window.link_actions.device_dialog(mailbox.id) is None, timeout=5000)
    # One code for Qargo's API, then one for the mail permissions nobody had granted yet.
    assert purposes == ["sign_in", "consent"]
    assert window.message_bar.has(f"linked:{mailbox.id}")
