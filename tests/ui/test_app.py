"""Application bootstrap: the crash handler and run() with the built-in sandbox."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from qargo_desktop import __version__
from qargo_desktop.core.config import Settings
from qargo_desktop.core.support import CrashReport
from qargo_desktop.ui import app as app_module
from qargo_desktop.ui import dialogs
from qargo_desktop.ui.app import CrashHandler, crash_report, run
from qargo_desktop.ui.main_window import MainWindow, Page


@pytest.fixture
def crashes(monkeypatch) -> list[CrashReport]:
    shown: list[CrashReport] = []

    def show_crash(parent, report: CrashReport) -> bool:
        shown.append(report)
        return False

    monkeypatch.setattr(dialogs, "show_crash", show_crash)
    return shown


def test_crash_report_names_versions_and_hides_secrets() -> None:
    try:
        raise RuntimeError("request failed: access_token=eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln")
    except RuntimeError:
        report = crash_report(*sys.exc_info(), thread="MainThread")
    assert f"App:     qargo-desktop {__version__}" in report
    assert "Python: " in report and "Qt: " in report and "PySide6 " in report
    assert "RuntimeError" in report and "Where:   MainThread" in report
    assert "eyJhbGciOiJSUzI1NiJ9" not in report


def test_uncaught_exception_is_logged_saved_then_shown_on_the_gui_thread(
    qtbot, crashes, caplog, tmp_path: Path
) -> None:
    handler = CrashHandler(log_dir=tmp_path / "logs").install()
    try:
        handler.attach_gui(None)
        assert handler.installed
        try:
            raise ValueError("boom")
        except ValueError:
            sys.excepthook(*sys.exc_info())
        qtbot.waitUntil(lambda: len(crashes) == 1, timeout=3000)
        assert crashes[0].summary == "ValueError: boom"
        assert crashes[0].path is not None and crashes[0].path.parent == tmp_path / "logs"
        assert "ValueError: boom" in crashes[0].path.read_text(encoding="utf-8")
        assert any(r.levelname == "CRITICAL" for r in caplog.records)

        def worker() -> None:
            raise KeyError("from a worker")

        thread = threading.Thread(target=worker, name="some-worker")
        thread.start()
        thread.join()
        qtbot.waitUntil(lambda: len(crashes) == 2, timeout=3000)
        assert crashes[1].where == "thread some-worker"
    finally:
        handler.uninstall()
    assert not handler.installed


def test_run_first_run_page_then_the_built_in_sandbox(qtbot, tmp_path: Path, monkeypatch) -> None:
    settings = Settings(config_dir=tmp_path / "config", refresh_interval_s=0)
    assert settings.missing_for_production()
    seen: dict[str, object] = {}

    def check() -> None:
        windows = [w for w in QApplication.topLevelWidgets()
                   if isinstance(w, MainWindow) and w.isVisible()]  # fmt: skip
        if not windows:
            return
        window = windows[0]
        if window.current_page is Page.FIRST_RUN and "first_run" not in seen:
            seen["first_run"] = window.first_run_page.missing.text()
            window.first_run_page.sandbox_button.click()
        elif window.current_page is Page.SIGN_IN and "sign_in" not in seen:
            seen["sign_in"] = window.sign_in_page.note.text()
            seen["title"] = window.windowTitle()
            seen["environment"] = window.environment_label.text()
            # Help > Diagnostics checks what the services use: the sandbox's addresses.
            diagnosed = window.support.settings_provider()
            seen["diagnosed_api"] = diagnosed.api_base_url if diagnosed else None
            window.close()

    poll = QTimer()
    poll.timeout.connect(check)
    poll.start(20)
    safety = QTimer()
    safety.setSingleShot(True)
    safety.timeout.connect(lambda: QApplication.instance().exit(99))
    safety.start(60_000)

    code = run(settings, sandbox=False, argv=[], crash_handler=CrashHandler())
    poll.stop()
    safety.stop()

    assert code == 0
    assert "<code>client_id</code>" in str(seen["first_run"])
    assert "admin@northwind-haulage.example" in str(seen["sign_in"])
    assert seen["environment"] == "Sandbox" and "Sandbox" in str(seen["title"])
    assert str(seen["diagnosed_api"]).startswith("https://127.0.0.1:")
    assert (tmp_path / "config" / "window-state.ini").exists()
    assert QApplication.applicationName() == "qargo-desktop"


def test_window_state_lives_in_the_config_folder(tmp_path: Path) -> None:
    state = app_module.window_state_for(Settings(config_dir=tmp_path / "elsewhere"))
    assert Path(state.fileName()) == tmp_path / "elsewhere" / "window-state.ini"


def test_when_first_painted_calls_back_once_after_the_paint(qtbot) -> None:
    from PySide6.QtCore import QEvent, QObject
    from PySide6.QtWidgets import QWidget

    events: list[str] = []

    class Paints(QObject):
        def eventFilter(self, watched, event) -> bool:  # noqa: N802 (Qt name)
            if event.type() == QEvent.Type.Paint:
                events.append("paint")
            return False

    widget = QWidget()
    qtbot.addWidget(widget)
    watcher = Paints(widget)
    widget.installEventFilter(watcher)
    app_module.when_first_painted(widget, lambda: events.append("then"), fallback_ms=60_000)
    widget.show()
    qtbot.waitUntil(lambda: "then" in events, timeout=5000)
    widget.update()
    qtbot.wait(100)
    assert events.index("then") > events.index("paint")
    assert events.count("then") == 1


def test_when_first_painted_falls_back_for_a_window_that_never_paints(qtbot) -> None:
    from PySide6.QtWidgets import QWidget

    called: list[str] = []
    widget = QWidget()  # never shown, so never painted
    qtbot.addWidget(widget)
    app_module.when_first_painted(widget, lambda: called.append("then"), fallback_ms=50)
    qtbot.waitUntil(lambda: called == ["then"], timeout=5000)
    qtbot.wait(100)
    assert called == ["then"]


def test_the_window_paints_before_the_services_start(qtbot, tmp_path: Path, monkeypatch) -> None:
    from PySide6.QtCore import QEvent, QObject

    order: list[str] = []

    class Paints(QObject):
        def eventFilter(self, watched, event) -> bool:  # noqa: N802 (Qt name)
            if isinstance(watched, MainWindow) and event.type() == QEvent.Type.Paint:
                order.append("paint")
            return False

    paints = Paints()
    QApplication.instance().installEventFilter(paints)

    def start(self, *, sandbox: bool) -> None:
        order.append("services")
        QTimer.singleShot(0, self.window.close)

    monkeypatch.setattr(app_module.AppController, "start", start)
    settings = Settings(config_dir=tmp_path / "config", refresh_interval_s=0)
    try:
        code = run(
            settings,
            argv=[],
            crash_handler=CrashHandler(),
            after_first_paint=lambda: order.append("log"),
        )
    finally:
        QApplication.instance().removeEventFilter(paints)
    assert code == 0
    assert order[0] == "paint"
    assert order.index("log") < order.index("services")


def test_a_failing_step_after_the_first_paint_does_not_stop_the_others(
    qtbot, tmp_path: Path, monkeypatch, crashes
) -> None:
    started: list[str] = []

    def start(self, *, sandbox: bool) -> None:
        started.append("services")
        QTimer.singleShot(0, self.window.close)

    def broken_log() -> None:
        raise OSError("the log folder is a file")

    monkeypatch.setattr(app_module.AppController, "start", start)
    settings = Settings(config_dir=tmp_path / "config", refresh_interval_s=0)
    handler = CrashHandler(log_dir=tmp_path / "logs")
    code = run(settings, argv=[], crash_handler=handler, after_first_paint=broken_log)
    assert code == 0
    assert started == ["services"]
    assert [(r.exception_type, r.where) for r in handler.reports] == [("OSError", "start-up")]
    assert len(crashes) == 1  # shown in the crash dialog
