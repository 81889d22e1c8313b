"""The in-app log view: the app's recent log lines, live, with a level filter.

It shows what the ring buffer of :mod:`qargo_desktop.core.logs` keeps (the last records,
already redacted by the logging filter) and every new record as it is logged. Records are
logged on any thread; the buffer's listener hands each one to the GUI thread through a
queued signal, so the view never touches a widget from a worker. The listener is set only
while the view is shown.

The whole log (with the rotated files before it) is in the log folder, one button away.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QCoreApplication, QEvent, QObject, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import (
    QCloseEvent,
    QDesktopServices,
    QFontDatabase,
    QGuiApplication,
    QHideEvent,
    QKeySequence,
    QShortcut,
    QShowEvent,
)
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from qargo_desktop import APP_DISPLAY_NAME
from qargo_desktop.core.logs import RingBufferHandler
from qargo_desktop.ui.i18n import translatable

log = logging.getLogger(__name__)

translate = QCoreApplication.translate

FolderOpener = Callable[[Path], bool]

#: The level filter's choices: the lowest level shown, and its words.
LEVELS: tuple[tuple[int, str], ...] = (
    (logging.DEBUG, translatable("LogView", "Everything (debug detail too)")),
    (logging.INFO, translatable("LogView", "Information, warnings and errors")),
    (logging.WARNING, translatable("LogView", "Warnings and errors")),
    (logging.ERROR, translatable("LogView", "Errors only")),
)

# Lines of text kept in the view: a record with a traceback takes several.
_MAX_BLOCKS = 20_000


def open_folder(folder: Path) -> bool:
    """Open a folder in the platform's file manager; returns whether that worked."""
    return QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))


def find_ring_buffer(logger: logging.Logger | None = None) -> RingBufferHandler | None:
    """The ring buffer installed on the root logger by ``setup_logging``, if there is one."""
    for handler in (logger or logging.getLogger()).handlers:
        if isinstance(handler, RingBufferHandler):
            return handler
    return None


def record_text(record: logging.LogRecord) -> str:
    """A record as the log file shows it (formatted and redacted by the handler)."""
    formatted = getattr(record, "formatted", None)
    return str(formatted) if formatted is not None else record.getMessage()


class _RecordRelay(QObject):
    """Carries records from the logging thread to the GUI thread (it lives there)."""

    record_logged = Signal(object)


class LogView(QWidget):
    """A read-only window of the recent log, fed live from the ring buffer.

    Signals:
        folder_open_failed(str): Open log folder did not work; carries the folder.

    Args:
        ring_buffer: The buffer the logging set-up installed (``None``: an empty view).
        log_dir: The log folder, for Open log folder.
        parent: The main window (the view is a window of its own).
        opener: Opens a folder in the file manager (tests replace it).
    """

    folder_open_failed = Signal(str)

    def __init__(
        self,
        ring_buffer: RingBufferHandler | None,
        log_dir: Path | None,
        parent: QWidget | None = None,
        *,
        opener: FolderOpener | None = None,
    ) -> None:
        super().__init__(parent, Qt.WindowType.Window)
        self.setObjectName("logView")
        self.resize(980, 560)
        self._ring = ring_buffer
        self._log_dir = log_dir
        self.opener: FolderOpener = opener or open_folder
        capacity = ring_buffer.capacity if ring_buffer is not None else 0
        self._records: collections.deque[logging.LogRecord] = collections.deque(
            maxlen=max(capacity, 1)
        )
        self._listening = False
        # Records read from the buffer when the view started following it: the same record
        # may also arrive through the listener, once.
        self._read_at_attach: set[int] = set()
        self._relay = _RecordRelay(self)
        self._relay.record_logged.connect(
            self._on_record_logged, Qt.ConnectionType.QueuedConnection
        )

        layout = QVBoxLayout(self)
        top = QHBoxLayout()
        self.level_caption = QLabel(self)
        self.level_filter = QComboBox(self)
        self.level_caption.setBuddy(self.level_filter)
        for level, _words in LEVELS:
            self.level_filter.addItem("", level)
        self.level_filter.setCurrentIndex(1)
        self.level_filter.currentIndexChanged.connect(self._on_level_changed)
        self.count_label = QLabel(self)
        top.addWidget(self.level_caption)
        top.addWidget(self.level_filter)
        top.addStretch(1)
        top.addWidget(self.count_label)
        layout.addLayout(top)

        self.text = QPlainTextEdit(self)
        self.text.setReadOnly(True)
        self.text.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.text.setMaximumBlockCount(_MAX_BLOCKS)
        self.text.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.text.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByMouse
            | Qt.TextInteractionFlag.TextSelectableByKeyboard
        )
        layout.addWidget(self.text, 1)

        self.problem = QLabel(self)
        self.problem.setWordWrap(True)
        self.problem.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.problem.setVisible(False)
        layout.addWidget(self.problem)

        layout.addLayout(self._build_buttons(log_dir is not None))
        QShortcut(QKeySequence(QKeySequence.StandardKey.Close), self, self.close)
        QShortcut(QKeySequence(Qt.Key.Key_Escape), self, self.close)
        self._retranslate()

    def _build_buttons(self, has_folder: bool) -> QHBoxLayout:
        buttons = QHBoxLayout()
        self.copy_button = QPushButton(self)
        self.copy_button.clicked.connect(self.copy_shown)
        self.folder_button = QPushButton(self)
        self.folder_button.clicked.connect(self.open_log_folder)
        self.folder_button.setEnabled(has_folder)
        self.close_button = QPushButton(self)
        self.close_button.clicked.connect(self.close)
        buttons.addWidget(self.copy_button)
        buttons.addWidget(self.folder_button)
        buttons.addStretch(1)
        buttons.addWidget(self.close_button)
        return buttons

    # -- public -------------------------------------------------------------------------------

    @property
    def minimum_level(self) -> int:
        """The lowest level shown."""
        return int(self.level_filter.currentData())

    def set_minimum_level(self, level: int) -> None:
        """Show records of this level and above (one of :data:`LEVELS`)."""
        index = self.level_filter.findData(level)
        if index >= 0:
            self.level_filter.setCurrentIndex(index)

    def shown_text(self) -> str:
        """The text shown now."""
        return self.text.toPlainText()

    def copy_shown(self) -> None:
        """Put the lines shown on the clipboard (already without secrets)."""
        QGuiApplication.clipboard().setText(self.shown_text())

    def open_log_folder(self) -> None:
        """Show the log folder in the file manager."""
        folder = self._log_dir
        if folder is None:
            return
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("The log folder %s could not be created: %s", folder, exc)
        if self.opener(folder):
            self.problem.setVisible(False)
            return
        self.problem.setText(
            translate("LogView", "The log folder could not be opened. It is {folder}").format(
                folder=folder
            )
        )
        self.problem.setVisible(True)
        self.folder_open_failed.emit(str(folder))

    # -- live records ---------------------------------------------------------------------

    def _attach(self) -> None:
        """Follow the buffer: its records now, then each new one as it comes."""
        ring = self._ring
        if ring is None or self._listening:
            return
        relay = self._relay

        def listener(record: logging.LogRecord) -> None:
            # On the thread that logged. A view being torn down must not turn one log
            # call into a logging error.
            try:
                relay.record_logged.emit(record)
            except RuntimeError:
                ring.set_listener(None)

        # Listen first, then read what is kept: a record logged in between arrives twice
        # at worst, and the second copy is recognised and dropped.
        ring.set_listener(listener)
        self._listening = True
        self._records.clear()
        self._records.extend(ring.records())
        self._read_at_attach = {id(r) for r in self._records}
        self._render()

    def _detach(self) -> None:
        if self._ring is not None and self._listening:
            self._ring.set_listener(None)
        self._listening = False

    def _on_record_logged(self, record: object) -> None:
        if not isinstance(record, logging.LogRecord) or not self._listening:
            return
        if id(record) in self._read_at_attach:
            self._read_at_attach.discard(id(record))
            return
        self._read_at_attach.clear()
        self._records.append(record)
        if record.levelno >= self.minimum_level:
            self._append(record_text(record))
        self._update_count()

    # -- drawing ------------------------------------------------------------------------------

    def _render(self) -> None:
        minimum = self.minimum_level
        lines = [record_text(r) for r in self._records if r.levelno >= minimum]
        self.text.setPlainText("\n".join(lines))
        self._scroll_to_end()
        self._update_count()

    def _append(self, line: str) -> None:
        bar = self.text.verticalScrollBar()
        following = bar.value() >= bar.maximum() - 2
        self.text.appendPlainText(line)
        if following:
            # Only follow new lines when the person was at the end: reading further up
            # must not be interrupted.
            bar.setValue(bar.maximum())

    def _update_count(self) -> None:
        minimum = self.minimum_level
        shown = sum(1 for r in self._records if r.levelno >= minimum)
        capacity = self._ring.capacity if self._ring is not None else 0
        self.count_label.setText(
            translate(
                "LogView", "{shown} of the last {kept} entries (the app keeps {capacity})"
            ).format(shown=shown, kept=len(self._records), capacity=capacity)
        )

    # -- Qt -----------------------------------------------------------------------------------

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 (Qt name)
        """Put the words up again when the language changes."""
        if event.type() == QEvent.Type.LanguageChange:
            self._retranslate()
        super().changeEvent(event)

    def _retranslate(self) -> None:
        self.setWindowTitle(translate("LogView", "{app}: log").format(app=APP_DISPLAY_NAME))
        self.level_caption.setText(translate("LogView", "&Show:"))
        for index, (_level, words) in enumerate(LEVELS):
            self.level_filter.setItemText(index, translate("LogView", words))
        self.level_filter.setAccessibleName(translate("LogView", "Which entries to show"))
        self.text.setAccessibleName(translate("LogView", "Log entries"))
        self.text.setAccessibleDescription(
            translate(
                "LogView",
                "The app's recent log, newest last. Passwords, tokens and codes are removed.",
            )
        )
        self.copy_button.setText(translate("LogView", "&Copy"))
        self.copy_button.setToolTip(translate("LogView", "Copy the entries shown"))
        self.folder_button.setText(translate("LogView", "Open log &folder"))
        self.folder_button.setToolTip(
            translate("LogView", "Show the log files, with older entries, in the file manager")
        )
        self.close_button.setText(translate("LogView", "Close"))
        self._update_count()

    def _on_level_changed(self, _index: int) -> None:
        self._render()

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 (Qt name)
        """Follow the log while shown."""
        super().showEvent(event)
        self._attach()
        QTimer.singleShot(0, self, self._scroll_to_end)

    def _scroll_to_end(self) -> None:
        # The newest line, read from its start (not scrolled to the end of a long line).
        self.text.verticalScrollBar().setValue(self.text.verticalScrollBar().maximum())
        self.text.horizontalScrollBar().setValue(0)

    def hideEvent(self, event: QHideEvent) -> None:  # noqa: N802 (Qt name)
        """Stop following the log while hidden."""
        self._detach()
        super().hideEvent(event)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 (Qt name)
        """Stop following the log."""
        self._detach()
        super().closeEvent(event)
