"""Every dialog and message box of the app, in one module.

Modal dialogs are for destructive actions and crashes; routine errors go to the main
window's message bar. Confirmations return a bool and default to the safe answer
(Cancel). Tests replace the functions here (``monkeypatch.setattr(dialogs, "confirm",
...)``), and a guard fixture makes any other ``exec()`` fail instead of hanging.

:class:`SignInWaitDialog` is the exception to "modal and blocking": it waits for a
browser, so it opens window-modal without ``exec()`` and the task that waits reports to it.
:class:`WaitingDialog` holds what it shares with the device sign-in's dialog: Cancel,
Escape and the close button ask once to cancel, and :meth:`WaitingDialog.finish` closes.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QCoreApplication, Qt, QTimer, Signal
from PySide6.QtGui import QCloseEvent, QFont, QFontDatabase, QGuiApplication
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
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

if TYPE_CHECKING:
    from qargo_desktop.core.config import Settings
    from qargo_desktop.core.support import CrashReport

log = logging.getLogger(__name__)

translate = QCoreApplication.translate


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
        "title": translate("dialogs", "Reset API link status"),
        "text": translate("dialogs", "Reset the API link status of {address}?").format(
            address=mailbox.address
        ),
        "informative": translate(
            "dialogs",
            "The mailbox becomes Unlinked. Qargo keeps not reading or sending its mail until "
            "someone authorises it again.",
        ),
        "confirm_label": translate("dialogs", "Reset API link status"),
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
        title=translate("dialogs", "Remove mailbox"),
        text=translate("dialogs", "Remove {address} from Qargo?").format(address=mailbox.address),
        informative=translate(
            "dialogs",
            "Qargo stops reading and sending this mailbox's mail and forgets its link. You "
            "can add it again later, but it will need to be authorised again.",
        ),
        confirm_label=translate("dialogs", "Remove mailbox"),
    )


# -- adding a mailbox ------------------------------------------------------------------------


class AddMailboxDialog(QDialog):
    """Asks for a mailbox address and an optional display name."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(translate("dialogs", "Add mailbox"))
        layout = QVBoxLayout(self)
        intro = QLabel(
            translate(
                "dialogs",
                "Add a Microsoft 365 mailbox that Qargo should read and send mail for. After "
                "adding it, authorise it by signing in as the mailbox.",
            ),
            self,
        )
        intro.setWordWrap(True)
        layout.addWidget(intro)
        form = QFormLayout()
        self.address = QLineEdit(self)
        self.address.setPlaceholderText("planning@example.com")
        self.address.setAccessibleName(translate("dialogs", "Email address"))
        self.address.setAccessibleDescription(
            translate("dialogs", "The mailbox's Microsoft 365 address")
        )
        self.display_name = QLineEdit(self)
        self.display_name.setPlaceholderText(translate("dialogs", "Optional"))
        self.display_name.setAccessibleName(translate("dialogs", "Display name"))
        self.display_name.setAccessibleDescription(
            translate("dialogs", "The name shown for the mailbox in the list (optional)")
        )
        form.addRow(translate("dialogs", "&Email address:"), self.address)
        form.addRow(translate("dialogs", "&Display name:"), self.display_name)
        layout.addLayout(form)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, self
        )
        # Enter adds (once the address looks right); Escape cancels.
        ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        ok.setText(translate("dialogs", "Add mailbox"))
        ok.setDefault(True)
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


# -- waiting for a sign-in -------------------------------------------------------------------


class WaitingDialog(QDialog):
    """A window-modal dialog that waits for a task, with a countdown and Cancel.

    It never blocks: open it with :meth:`open`, and close it with :meth:`finish` when the
    wait ended. Cancel, Escape and the window's close button ask to cancel once; the task
    then ends and closes the dialog. A subclass builds its widgets, calls
    :meth:`_make_cancel_buttons` after the last one (so Cancel stays last in the tab
    order), says how cancelling looks in :meth:`_show_cancelling` and updates its countdown
    in :meth:`_on_tick`, which the timer calls every second while it runs.

    Signals:
        cancel_requested(): The person pressed Cancel, Escape or closed the window.

    Args:
        parent: The main window.
    """

    cancel_requested = Signal()

    buttons: QDialogButtonBox
    cancel_button: QPushButton

    def __init__(self, parent: QWidget | None) -> None:
        super().__init__(parent)
        self.setWindowModality(Qt.WindowModality.WindowModal)
        self._cancelling = False
        self._finished = False

        self._timer = QTimer(self)
        self._timer.setInterval(1000)
        self._timer.timeout.connect(self._on_tick)

    def finish(self) -> None:
        """The wait is over (signed in, failed or cancelled): close without asking."""
        self._finished = True
        self._timer.stop()
        self.done(QDialog.DialogCode.Accepted)

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

    def _make_cancel_buttons(self) -> QDialogButtonBox:
        """Create :attr:`buttons` with :attr:`cancel_button`, for the subclass to lay out."""
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel, self)
        self.cancel_button = self.buttons.button(QDialogButtonBox.StandardButton.Cancel)
        # Escape cancels; Enter must not (it presses the dialog's Copy button instead).
        self.cancel_button.setAutoDefault(False)
        self.cancel_button.clicked.connect(self._on_cancel_clicked)
        return self.buttons

    def _show_cancelling(self) -> None:
        """Say that the wait is being cancelled (each subclass in its own words)."""
        raise NotImplementedError

    def _fit(self) -> None:
        # Word-wrapped labels only report their height for a given width: grow the dialog
        # to show every line instead of clipping the instructions.
        layout = self.layout()
        if layout is None:
            return
        width = max(self.width(), self.minimumWidth())
        self.resize(width, max(self.height(), layout.heightForWidth(width)))

    def _on_tick(self) -> None:
        raise NotImplementedError

    def _on_cancel_clicked(self) -> None:
        if self._cancelling or self._finished:
            return
        self._cancelling = True
        self.cancel_button.setEnabled(False)
        self._show_cancelling()
        self.cancel_requested.emit()


class SignInWaitDialog(WaitingDialog):
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

    def __init__(
        self,
        parent: QWidget | None,
        *,
        title: str | None = None,
        heading: str | None = None,
        instructions: str | None = None,
        deadline_s: float = 300.0,
    ) -> None:
        super().__init__(parent)
        title = title or translate("dialogs", "Sign in with Microsoft")
        heading = heading or translate("dialogs", "Finish signing in in your browser")
        instructions = instructions or translate(
            "dialogs",
            "A Microsoft sign-in page is opening in your browser. Sign in with your Qargo "
            "super admin account and accept. Qargo Desktop continues by itself when you "
            "are done.",
        )
        self.setWindowTitle(title)
        self.setMinimumWidth(520)
        self._deadline = time.monotonic() + deadline_s

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
        self.countdown.setAccessibleName(translate("dialogs", "Time left"))

        self.link_intro = QLabel(
            translate(
                "dialogs",
                "If the page did not open, copy this link into a browser on this computer:",
            ),
            self,
        )
        self.link_intro.setWordWrap(True)
        self.link = QLineEdit(self)
        self.link.setReadOnly(True)
        self.link.setAccessibleName(translate("dialogs", "Sign-in link"))
        self.link_intro.setBuddy(self.link)
        self.copy_button = QPushButton(translate("dialogs", "&Copy link"), self)
        self.copy_button.setToolTip(translate("dialogs", "Copy the sign-in link"))
        self.copy_button.clicked.connect(self._on_copy_clicked)
        link_row = QHBoxLayout()
        link_row.addWidget(self.link, 1)
        link_row.addWidget(self.copy_button)

        self._make_cancel_buttons()
        self.cancel_button.setToolTip(translate("dialogs", "Stop waiting for the browser (Esc)"))

        for widget in (self.heading, self.instructions, self.countdown, self.link_intro):
            layout.addWidget(widget)
        layout.addLayout(link_row)
        layout.addWidget(self.buttons)
        self._set_link_visible(False)

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
        self.copy_button.setDefault(True)
        self._set_link_visible(True)

    def set_browser_failed(self, url: str) -> None:
        """No browser opened: the link becomes the way forward."""
        self.set_auth_uri(url)
        self.heading.setText(translate("dialogs", "No browser could be opened"))
        self.instructions.setText(
            translate(
                "dialogs",
                "Copy the sign-in link below and open it in a browser on this computer. Sign in "
                "there; Qargo Desktop continues by itself when you are done.",
            )
        )
        self.link_intro.setText(translate("dialogs", "Sign-in link:"))
        self.copy_button.setDefault(True)
        self._fit()
        self.copy_button.setFocus()

    def _set_link_visible(self, visible: bool) -> None:
        for widget in (self.link_intro, self.link, self.copy_button):
            widget.setVisible(visible)
        self._fit()

    def _on_tick(self) -> None:
        left = self.seconds_left
        self.countdown.setText(
            translate("dialogs", "Time left: {minutes}:{seconds}").format(
                minutes=left // 60, seconds=f"{left % 60:02d}"
            )
        )
        if left == 0:
            self._timer.stop()

    def _on_copy_clicked(self) -> None:
        QGuiApplication.clipboard().setText(self.link.text())
        self.copy_button.setText(translate("dialogs", "Copied"))
        QTimer.singleShot(
            2000, self, lambda: self.copy_button.setText(translate("dialogs", "&Copy link"))
        )

    def _show_cancelling(self) -> None:
        self.cancel_button.setText(translate("dialogs", "Cancelling..."))
        self.heading.setText(translate("dialogs", "Cancelling the sign-in..."))


# -- crashes and information -----------------------------------------------------------------


class CrashDialog(QDialog):
    """Says the app met an unexpected problem, with a report to copy for support.

    It names what happened, where the report was saved, and shows the report itself
    (versions first, then the traceback and the last log lines), with a warning that it
    may hold personal data. Enter and Escape both keep working; quitting takes a
    deliberate choice.

    Args:
        parent: The main window, if any.
        report: The crash report (:class:`~qargo_desktop.core.support.CrashReport`), or
            its text.
    """

    def __init__(self, parent: QWidget | None, report: CrashReport | str) -> None:
        super().__init__(parent)
        text = report if isinstance(report, str) else report.text
        self.setWindowTitle(
            translate("dialogs", "{app}: unexpected problem").format(app=APP_DISPLAY_NAME)
        )
        self.setMinimumSize(680, 460)
        self.quit_requested = False
        layout = QVBoxLayout(self)
        heading = QLabel(
            translate("dialogs", "{app} met a problem it did not expect.").format(
                app=APP_DISPLAY_NAME
            ),
            self,
        )
        font = QFont(heading.font())
        font.setBold(True)
        font.setPointSizeF(font.pointSizeF() * 1.15)
        heading.setFont(font)
        self.summary = _plain_label(
            self,
            ""
            if isinstance(report, str)
            else translate("dialogs", "What happened: {summary}").format(summary=report.summary),
        )
        self.summary.setObjectName("crashSummary")
        explanation = QLabel(
            translate(
                "dialogs",
                "The details were written to the log. If this keeps happening, copy the report "
                "below and send it to Qargo Support. You can keep working, but if the window "
                "behaves oddly, quit and start the app again.",
            ),
            self,
        )
        explanation.setWordWrap(True)
        self.saved_as = _plain_label(
            self,
            translate("dialogs", "The report was also saved as {path}").format(path=report.path)
            if not isinstance(report, str) and report.path is not None
            else "",
        )
        warning = QLabel(
            translate(
                "dialogs",
                "<b>Check the report before you share it:</b> it may contain personal data, "
                "such as email addresses and names of mailboxes.",
            ),
            self,
        )
        warning.setObjectName("crashPrivacyWarning")
        warning.setWordWrap(True)
        self.report = QPlainTextEdit(text, self)
        self.report.setReadOnly(True)
        self.report.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.report.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.report.setAccessibleName(translate("dialogs", "Problem report"))
        self.report.setAccessibleDescription(warning.text().replace("<b>", "").replace("</b>", ""))
        self.copy_button = QPushButton(translate("dialogs", "&Copy report"), self)
        self.copy_button.setAutoDefault(False)
        self.copy_button.clicked.connect(self._on_copy_clicked)
        self.buttons = QDialogButtonBox(self)
        self.buttons.addButton(self.copy_button, QDialogButtonBox.ButtonRole.ActionRole)
        self.quit_button = self.buttons.addButton(
            translate("dialogs", "&Quit {app}").format(app=APP_DISPLAY_NAME),
            QDialogButtonBox.ButtonRole.DestructiveRole,
        )
        self.quit_button.setAutoDefault(False)
        self.keep_button = self.buttons.addButton(
            translate("dialogs", "&Keep working"), QDialogButtonBox.ButtonRole.AcceptRole
        )
        self.keep_button.setDefault(True)
        self.quit_button.clicked.connect(self._on_quit_clicked)
        self.buttons.accepted.connect(self.accept)
        for widget in (heading, self.summary, explanation, warning, self.report, self.saved_as):
            layout.addWidget(widget)
        layout.addWidget(self.buttons)
        self.keep_button.setFocus()

    def _on_copy_clicked(self) -> None:
        QGuiApplication.clipboard().setText(self.report.toPlainText())
        self.copy_button.setText(translate("dialogs", "Copied"))

    def _on_quit_clicked(self) -> None:
        self.quit_requested = True
        self.accept()


def _plain_label(parent: QWidget, text: str) -> QLabel:
    """A wrapped, selectable label of plain text, hidden while it has none."""
    label = QLabel(text, parent)
    label.setWordWrap(True)
    label.setTextFormat(Qt.TextFormat.PlainText)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    label.setVisible(bool(text))
    return label


def show_crash(parent: QWidget | None, report: CrashReport | str) -> bool:
    """Show the crash report; returns True when the person chose to quit."""
    dialog = CrashDialog(parent, report)
    dialog.exec()
    return dialog.quit_requested


def ask_support_bundle_path(parent: QWidget | None, suggested: Path) -> Path | None:
    """Ask where to save a support bundle; returns the zip file chosen, or None."""
    path, _chosen = QFileDialog.getSaveFileName(
        parent,
        translate("dialogs", "Save support bundle"),
        str(suggested),
        translate("dialogs", "Zip archives (*.zip)"),
    )
    if not path:
        return None
    chosen = Path(path)
    return chosen if chosen.suffix.lower() == ".zip" else chosen.with_name(chosen.name + ".zip")


# The parts the app is built from, with their licences (the installed metadata names the
# version; a bundle may lack some metadata, so the licences are listed here too).
COMPONENTS: tuple[tuple[str, str, str], ...] = (
    ("Qt", "", "LGPL-3.0-only"),
    ("PySide6", "PySide6-Essentials", "LGPL-3.0-only"),
    ("Python", "", "PSF-2.0"),
    ("MSAL for Python", "msal", "MIT"),
    ("Requests", "requests", "Apache-2.0"),
    ("urllib3", "urllib3", "MIT"),
    ("keyring", "keyring", "MIT"),
    ("truststore", "truststore", "MIT"),
    ("platformdirs", "platformdirs", "MIT"),
    ("cryptography", "cryptography", "Apache-2.0 OR BSD-3-Clause"),
    ("PyJWT", "PyJWT", "MIT"),
    ("Werkzeug", "werkzeug", "BSD-3-Clause"),
)


def component_versions() -> list[tuple[str, str, str]]:
    """``(name, version, licence)`` of every component, version '' when unknown."""
    import importlib.metadata
    import platform

    from PySide6.QtCore import qVersion

    found = []
    for name, distribution, licence in COMPONENTS:
        if name == "Qt":
            version = qVersion()
        elif name == "Python":
            version = platform.python_version()
        else:
            try:
                version = importlib.metadata.version(distribution)
            except importlib.metadata.PackageNotFoundError:
                version = ""
        found.append((name, version, licence))
    return found


def about_texts(details: str = "") -> dict[str, str]:
    """The words of the About box: name and purpose, versions, and the licences."""
    versions = component_versions()
    main = [f"{name} {version}" for name, version, _ in versions[:3] if version]
    informative = translate("dialogs", "Built with {components}.").format(
        components=", ".join(main)
    )
    if details:
        informative = f"{details}<br><br>{informative}"
    licences = [
        translate(
            "dialogs",
            "{app} {version} is proprietary software. It uses the components below under "
            "their own licences.",
        ).format(app=APP_DISPLAY_NAME, version=__version__),
        "",
    ]
    licences += [
        f"{name} {version}: {licence}".replace("  ", " ") for name, version, licence in versions
    ]
    licences += [
        "",
        translate(
            "dialogs",
            "Qt and PySide6 are used under the GNU Lesser General Public License version 3; "
            "their source code is available from qt.io.",
        ),
    ]
    return {
        "title": translate("dialogs", "About {app}").format(app=APP_DISPLAY_NAME),
        "text": translate(
            "dialogs",
            "<b>{app}</b> {version}<br>Keeps your organisation's linked Microsoft 365 "
            "mailboxes healthy.",
        ).format(app=APP_DISPLAY_NAME, version=__version__),
        "informative": informative,
        "licences": "\n".join(licences),
    }


def show_about(parent: QWidget | None, details: str = "") -> None:
    """Show the app's name, version, where it connects, versions and licences."""
    build_about(parent, details).exec()


def build_about(parent: QWidget | None, details: str = "") -> QMessageBox:
    """Build (not show) the About box; the licences are behind Show Details.

    Enter and Escape close it.
    """
    words = about_texts(details)
    box = QMessageBox(parent)
    box.setWindowTitle(words["title"])
    box.setIconPixmap(
        parent.windowIcon().pixmap(64, 64) if parent is not None else box.iconPixmap()
    )
    box.setText(words["text"])
    box.setInformativeText(words["informative"])
    box.setDetailedText(words["licences"])
    box.setStandardButtons(QMessageBox.StandardButton.Close)
    box.setEscapeButton(QMessageBox.StandardButton.Close)
    box.setDefaultButton(QMessageBox.StandardButton.Close)
    return box


def show_config_problem(parent: QWidget | None, problems: str) -> None:
    """The settings cannot be used: name every bad value and where it came from."""
    box = QMessageBox(parent)
    box.setWindowTitle(translate("dialogs", "{app}: settings").format(app=APP_DISPLAY_NAME))
    box.setIcon(QMessageBox.Icon.Critical)
    box.setText(translate("dialogs", "The app cannot start because some settings cannot be used."))
    box.setInformativeText(translate("dialogs", "Correct them and start the app again."))
    box.setDetailedText(problems)
    box.exec()


def show_not_answering(parent: QWidget | None) -> None:
    """The app is already running but did not answer a second start."""
    box = QMessageBox(parent)
    box.setWindowTitle(APP_DISPLAY_NAME)
    box.setIcon(QMessageBox.Icon.Warning)
    box.setText(
        translate("dialogs", "{app} is already running but does not answer.").format(
            app=APP_DISPLAY_NAME
        )
    )
    box.setInformativeText(
        translate(
            "dialogs",
            "Close the other window, or end it in the Task Manager, then start the app again.",
        )
    )
    box.exec()


def edit_preferences(parent: QWidget | None, settings: Settings) -> Settings | None:
    """Let the person change the settings; returns what was saved (and validated), or None."""
    from qargo_desktop.ui.preferences import PreferencesDialog

    dialog = PreferencesDialog(parent, settings)
    if dialog.exec() != QDialog.DialogCode.Accepted:
        return None
    return dialog.saved
