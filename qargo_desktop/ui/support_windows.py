"""Help > Diagnostics and Help > Show log: one window of each per main window.

Kept apart from the windows themselves so that the main window can set it up before its
first paint without loading them: they are imported when first opened.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QEvent, QObject

if TYPE_CHECKING:
    from qargo_desktop.core.config import Settings
    from qargo_desktop.core.logs import RingBufferHandler
    from qargo_desktop.ui.diagnostics_window import DiagnosticsWindow
    from qargo_desktop.ui.log_view import LogView
    from qargo_desktop.ui.main_window import MainWindow


class SupportWindows(QObject):
    """Opens the main window's Diagnostics window and log view: one of each, not modal.

    Help > Diagnostics and Help > Show log of the main window open them. They use the
    settings and services the running app uses (:attr:`settings_provider`; the app points
    it at the sandbox's settings when it runs one) and close with the main window.

    Args:
        window: The main window.
        ring_buffer: The log's ring buffer (default: the one installed on the root logger).
    """

    def __init__(self, window: MainWindow, *, ring_buffer: RingBufferHandler | None = None) -> None:
        super().__init__(window)
        self._window = window
        self._ring_buffer = ring_buffer
        self.diagnostics: DiagnosticsWindow | None = None
        self.log_view: LogView | None = None
        #: The settings the services use (the sandbox's, when the app runs one).
        self.settings_provider: Callable[[], Settings | None] = lambda: window.settings
        window.diagnostics_requested.connect(self.show_diagnostics)
        log_action = getattr(window, "log_action", None)
        if log_action is not None:
            log_action.triggered.connect(self.show_log)
        window.installEventFilter(self)

    def _settings(self) -> Settings:
        from qargo_desktop.core.config import Settings

        return self.settings_provider() or Settings()

    def _ring(self) -> RingBufferHandler | None:
        from qargo_desktop.ui.log_view import find_ring_buffer

        return self._ring_buffer or find_ring_buffer()

    def _open_folder(self, folder: Path) -> bool:
        # Through the window's opener, which tests replace.
        return self._window.folder_opener(folder)

    def show_diagnostics(self) -> DiagnosticsWindow:
        """Open (or bring forward) the Diagnostics window; the first opening runs the checks."""
        from qargo_desktop.ui.diagnostics_window import DiagnosticsWindow

        window = self.diagnostics
        if window is None:
            window = DiagnosticsWindow(
                self._window,
                settings=self._settings(),
                services=self._window.services,
                tasks=self._window.tasks,
                theme=self._window.theme,
                ring_buffer=self._ring(),
                opener=self._open_folder,
            )
            self.diagnostics = window
        elif not window.running:
            window.set_context(self._settings(), self._window.services)
        window.show()
        window.raise_()
        window.activateWindow()
        if window.report is None and not window.running:
            window.run()
        return window

    def show_log(self) -> LogView:
        """Open (or bring forward) the log view."""
        from qargo_desktop.core.config import app_paths
        from qargo_desktop.ui.log_view import LogView

        view = self.log_view
        if view is None:
            view = LogView(
                self._ring(),
                app_paths(self._settings()).log_dir,
                self._window,
                opener=self._open_folder,
            )
            self.log_view = view
        view.show()
        view.raise_()
        view.activateWindow()
        return view

    def close_all(self) -> None:
        """Close both windows (the main window is closing)."""
        for window in (self.diagnostics, self.log_view):
            if window is not None:
                window.close()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt name)
        """Close with the main window."""
        if watched is self._window and event.type() == QEvent.Type.Close:
            self.close_all()
        return False
