"""Every dialog and message box of the app, in one module.

Modal dialogs are for destructive actions and crashes; routine errors go to the main
window's message bar. Confirmations return a bool and default to the safe answer
(Cancel). Tests replace the functions here (``monkeypatch.setattr(dialogs, "confirm",
...)``), and a guard fixture makes any other ``exec()`` fail instead of hanging.

:class:`SignInWaitDialog` is the exception to "modal and blocking": it waits for a
browser, so it opens window-modal without ``exec()`` and the task that waits reports to it.
"""

from __future__ import annotations

import logging
import time

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QCloseEvent, QFont, QGuiApplication
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from qargo_desktop import APP_DISPLAY_NAME, __version__
from qargo_desktop.core.models import Mailbox

log = logging.getLogger(__name__)


# -- confirmations ---------------------------------------------------------------------------


def confirm(
    parent: QWidget | None,
    *,
    title: str,
    text: str,
    informative: str = "",
    confirm_label: str,
    destructive: bool = True,
) -> bool:
    """Ask before doing something; returns True only if the person confirmed.

    Cancel is the default button and Escape answers Cancel, so a stray Enter never
    confirms a destructive action.
    """
    box, yes = build_confirmation(
        parent,
        title=title,
        text=text,
        informative=informative,
        confirm_label=confirm_label,
        destructive=destructive,
    )
    box.exec()
    return box.clickedButton() is yes


def build_confirmation(
    parent: QWidget | None,
    *,
    title: str,
    text: str,
    informative: str = "",
    confirm_label: str,
    destructive: bool = True,
) -> tuple[QMessageBox, QPushButton]:
    """Build (not show) a confirmation box and its confirm button."""
    box = QMessageBox(parent)
    box.setWindowTitle(title)
    box.setIcon(QMessageBox.Icon.Warning if destructive else QMessageBox.Icon.Question)
    box.setText(text)
    if informative:
        box.setInformativeText(informative)
    yes = box.addButton(confirm_label, QMessageBox.ButtonRole.AcceptRole)
    cancel = box.addButton(QMessageBox.StandardButton.Cancel)
    box.setDefaultButton(cancel)
    box.setEscapeButton(cancel)
    return box, yes


def reset_confirmation_text(mailbox: Mailbox) -> dict[str, str]:
    """The words of the reset confirmation (shared by the dialog and its screenshot)."""
    return {
        "title": "Reset API link status",
        "text": f"Reset the API link status of {mailbox.address}?",
        "informative": (
            "The mailbox becomes Unlinked. Qargo keeps not reading or sending its mail until "
            "someone authorises it again."
        ),
        "confirm_label": "Reset API link status",
    }


def confirm_reset(parent: QWidget | None, mailbox: Mailbox) -> bool:
    """Confirm "Reset API link status" for a mailbox whose link failed."""
    words = reset_confirmation_text(mailbox)
    return confirm(
        parent,
        title=words["title"],
        text=words["text"],
        informative=words["informative"],
        confirm_label=words["confirm_label"],
    )


def confirm_remove(parent: QWidget | None, mailbox: Mailbox) -> bool:
    """Confirm removing a mailbox from the organisation's list."""
    return confirm(
        parent,
        title="Remove mailbox",
        text=f"Remove {mailbox.address} from Qargo?",
        informative=(
            "Qargo stops reading and sending this mailbox's mail and forgets its link. You "
            "can add it again later, but it will need to be authorised again."
        ),
        confirm_label="Remove mailbox",
    )


# -- adding a mailbox ------------------------------------------------------------------------


class AddMailboxDialog(QDialog):
    """Asks for a mailbox address and an optional display name."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Add mailbox")
        layout = QVBoxLayout(self)
        intro = QLabel(
            "Add a Microsoft 365 mailbox that Qargo should read and send mail for. After "
            "adding it, authorise it by signing in as the mailbox.",
            self,
        )
        intro.setWordWrap(True)
        layout.addWidget(intro)
        form = QFormLayout()
        self.address = QLineEdit(self)
        self.address.setPlaceholderText("planning@example.com")
        self.display_name = QLineEdit(self)
        self.display_name.setPlaceholderText("Optional")
        form.addRow("&Email address:", self.address)
        form.addRow("&Display name:", self.display_name)
        layout.addLayout(form)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, self
        )
        ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        ok.setText("Add mailbox")
        ok.setEnabled(False)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)
        self.address.textChanged.connect(self._on_address_text_changed)

    def _on_address_text_changed(self, text: str) -> None:
        local, _, domain = text.strip().partition("@")
        looks_valid = bool(local) and "." in domain and " " not in text.strip()
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(looks_valid)


def ask_new_mailbox(parent: QWidget | None) -> tuple[str, str] | None:
    """Ask for a mailbox to add; returns ``(address, display name)`` or ``None``."""
    dialog = AddMailboxDialog(parent)
    if dialog.exec() != QDialog.DialogCode.Accepted:
        return None
    return dialog.address.text().strip(), dialog.display_name.text().strip()


# -- waiting for the browser -----------------------------------------------------------------


class SignInWaitDialog(QDialog):
    """Tells the person what to do in the browser while the app waits for it.

    It shows a countdown to the deadline, the sign-in link with a Copy button (made
    prominent when no browser could be opened) and a Cancel button. It never blocks:
    open it with :meth:`open`, and close it with :meth:`finish` when the wait ended.

    Signals:
        cancel_requested(): The person pressed Cancel, Escape or closed the window.

    Args:
        parent: The main window.
        title: The window title.
        heading: One line: what is happening.
        instructions: What to do in the browser.
        deadline_s: Seconds until the wait gives up.
    """

    cancel_requested = Signal()

    def __init__(
        self,
        parent: QWidget | None,
        *,
        title: str = "Sign in with Microsoft",
        heading: str = "Finish signing in in your browser",
        instructions: str = (
            "A Microsoft sign-in page is opening in your browser. Sign in with your Qargo "
            "super admin account and accept. Qargo Desktop continues by itself when you "
            "are done."
        ),
        deadline_s: float = 300.0,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.setWindowModality(Qt.WindowModality.WindowModal)
        self.setMinimumWidth(520)
        self._deadline = time.monotonic() + deadline_s
        self._cancelling = False
        self._finished = False

        layout = QVBoxLayout(self)
        self.heading = QLabel(heading, self)
        font = QFont(self.heading.font())
        font.setBold(True)
        font.setPointSizeF(font.pointSizeF() * 1.15)
        self.heading.setFont(font)
        self.heading.setWordWrap(True)
        self.instructions = QLabel(instructions, self)
        self.instructions.setWordWrap(True)
        self.countdown = QLabel(self)
        self.countdown.setAccessibleName("Time left")

        self.link_intro = QLabel(
            "If the page did not open, copy this link into a browser on this computer:", self
        )
        self.link_intro.setWordWrap(True)
        self.link = QLineEdit(self)
        self.link.setReadOnly(True)
        self.link.setAccessibleName("Sign-in link")
        self.copy_button = QPushButton("&Copy link", self)
        self.copy_button.clicked.connect(self._on_copy_clicked)
        link_row = QHBoxLayout()
        link_row.addWidget(self.link, 1)
        link_row.addWidget(self.copy_button)

        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel, self)
        self.cancel_button = self.buttons.button(QDialogButtonBox.StandardButton.Cancel)
        self.cancel_button.clicked.connect(self._on_cancel_clicked)

        for widget in (self.heading, self.instructions, self.countdown, self.link_intro):
            layout.addWidget(widget)
        layout.addLayout(link_row)
        layout.addWidget(self.buttons)
        self._set_link_visible(False)

        self._timer = QTimer(self)
        self._timer.setInterval(1000)
        self._timer.timeout.connect(self._on_tick)
        self._timer.start()
        self._on_tick()

    @property
    def seconds_left(self) -> int:
        """Whole seconds until the deadline."""
        return max(0, int(self._deadline - time.monotonic() + 0.999))

    def set_auth_uri(self, url: str) -> None:
        """Offer the sign-in link (it becomes known once the listener runs)."""
        self.link.setText(url)
        self.link.setCursorPosition(0)
        self._set_link_visible(True)

    def set_browser_failed(self, url: str) -> None:
        """No browser opened: the link becomes the way forward."""
        self.set_auth_uri(url)
        self.heading.setText("No browser could be opened")
        self.instructions.setText(
            "Copy the sign-in link below and open it in a browser on this computer. Sign in "
            "there; Qargo Desktop continues by itself when you are done."
        )
        self.link_intro.setText("Sign-in link:")
        self.copy_button.setDefault(True)
        self._fit()
        self.copy_button.setFocus()

    def finish(self) -> None:
        """The wait is over (signed in, failed or cancelled): close without asking."""
        self._finished = True
        self._timer.stop()
        self.done(QDialog.DialogCode.Accepted)

    def _set_link_visible(self, visible: bool) -> None:
        for widget in (self.link_intro, self.link, self.copy_button):
            widget.setVisible(visible)
        self._fit()

    def _fit(self) -> None:
        # Word-wrapped labels only report their height for a given width: grow the dialog
        # to show every line instead of clipping the instructions.
        layout = self.layout()
        if layout is None:
            return
        width = max(self.width(), self.minimumWidth())
        self.resize(width, max(self.height(), layout.heightForWidth(width)))

    def _on_tick(self) -> None:
        left = self.seconds_left
        self.countdown.setText(f"Time left: {left // 60}:{left % 60:02d}")
        if left == 0:
            self._timer.stop()

    def _on_copy_clicked(self) -> None:
        QGuiApplication.clipboard().setText(self.link.text())
        self.copy_button.setText("Copied")
        QTimer.singleShot(2000, self, lambda: self.copy_button.setText("&Copy link"))

    def _on_cancel_clicked(self) -> None:
        if self._cancelling:
            return
        self._cancelling = True
        self.cancel_button.setEnabled(False)
        self.cancel_button.setText("Cancelling...")
        self.heading.setText("Cancelling the sign-in...")
        self.cancel_requested.emit()

    def reject(self) -> None:
        """Escape and the window's close button cancel the wait; the task closes us."""
        if not self._finished:
            self._on_cancel_clicked()
            return
        super().reject()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 (Qt name)
        """Closing the window cancels the wait rather than hiding it."""
        if not self._finished:
            event.ignore()
            self._on_cancel_clicked()
            return
        super().closeEvent(event)


# -- crashes and information -----------------------------------------------------------------


class CrashDialog(QDialog):
    """Says the app met an unexpected problem, with a report to copy for support.

    Args:
        parent: The main window, if any.
        report: The report text (versions and the traceback).
    """

    def __init__(self, parent: QWidget | None, report: str) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"{APP_DISPLAY_NAME}: unexpected problem")
        self.setMinimumSize(640, 420)
        self.quit_requested = False
        layout = QVBoxLayout(self)
        heading = QLabel(f"{APP_DISPLAY_NAME} met a problem it did not expect.", self)
        font = QFont(heading.font())
        font.setBold(True)
        heading.setFont(font)
        explanation = QLabel(
            "The details were written to the log. If this keeps happening, copy the report "
            "below and send it to Qargo Support. You can keep working, but if the window "
            "behaves oddly, quit and start the app again.",
            self,
        )
        explanation.setWordWrap(True)
        warning = QLabel(
            "<b>Check the report before you share it:</b> it may contain personal data, such "
            "as email addresses and names of mailboxes.",
            self,
        )
        warning.setWordWrap(True)
        self.report = QPlainTextEdit(report, self)
        self.report.setReadOnly(True)
        self.report.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.report.setAccessibleName("Problem report")
        self.copy_button = QPushButton("&Copy report", self)
        self.copy_button.clicked.connect(self._on_copy_clicked)
        self.buttons = QDialogButtonBox(self)
        self.buttons.addButton(self.copy_button, QDialogButtonBox.ButtonRole.ActionRole)
        quit_button = self.buttons.addButton(
            f"&Quit {APP_DISPLAY_NAME}", QDialogButtonBox.ButtonRole.DestructiveRole
        )
        keep = self.buttons.addButton("&Keep working", QDialogButtonBox.ButtonRole.AcceptRole)
        keep.setDefault(True)
        quit_button.clicked.connect(self._on_quit_clicked)
        self.buttons.accepted.connect(self.accept)
        for widget in (heading, explanation, warning, self.report, self.buttons):
            layout.addWidget(widget)

    def _on_copy_clicked(self) -> None:
        QGuiApplication.clipboard().setText(self.report.toPlainText())
        self.copy_button.setText("Copied")

    def _on_quit_clicked(self) -> None:
        self.quit_requested = True
        self.accept()


def show_crash(parent: QWidget | None, report: str) -> bool:
    """Show the crash report; returns True when the person chose to quit."""
    dialog = CrashDialog(parent, report)
    dialog.exec()
    return dialog.quit_requested


def show_about(parent: QWidget | None, details: str = "") -> None:
    """Show the app's name, version and where it connects."""
    text = (
        f"<b>{APP_DISPLAY_NAME}</b> {__version__}<br>"
        "Keeps your organisation's linked Microsoft 365 mailboxes healthy."
    )
    box = QMessageBox(parent)
    box.setWindowTitle(f"About {APP_DISPLAY_NAME}")
    box.setIconPixmap(
        parent.windowIcon().pixmap(64, 64) if parent is not None else box.iconPixmap()
    )
    box.setText(text)
    if details:
        box.setInformativeText(details)
    box.exec()


def show_config_problem(parent: QWidget | None, problems: str) -> None:
    """The settings cannot be used: name every bad value and where it came from."""
    box = QMessageBox(parent)
    box.setWindowTitle(f"{APP_DISPLAY_NAME}: settings")
    box.setIcon(QMessageBox.Icon.Critical)
    box.setText("The app cannot start because some settings cannot be used.")
    box.setInformativeText("Correct them and start the app again.")
    box.setDetailedText(problems)
    box.exec()
