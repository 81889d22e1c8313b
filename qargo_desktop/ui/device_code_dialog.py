"""The dialog of a sign-in on another device: the address and the code, large, to copy.

For remote sessions and locked-down computers where this computer's browser cannot be
used: the person opens the address on any other device (a phone is fine), types the code
and signs in there. The dialog shows both large enough to read out over a call, with Copy
buttons, a countdown to the code's expiry and Cancel. Like the browser's waiting dialog it
never blocks: open it with :meth:`DeviceCodeDialog.open`, feed it each code with
:meth:`DeviceCodeDialog.set_flow` and close it with :meth:`DeviceCodeDialog.finish`.

The code is shown, never logged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QCoreApplication, QEvent, Qt, QTimer
from PySide6.QtGui import QFont, QFontDatabase, QGuiApplication
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from qargo_desktop.ui.dialogs import WaitingDialog

if TYPE_CHECKING:
    # Only its shape: the identity layer brings MSAL, which the first paint does not need.
    from qargo_desktop.core.identity import DeviceFlow

translate = QCoreApplication.translate

_COPIED_MS = 2000


def _scaled(font: QFont, factor: float, *, bold: bool = True) -> QFont:
    scaled = QFont(font)
    scaled.setPointSizeF(font.pointSizeF() * factor)
    scaled.setBold(bold)
    return scaled


class DeviceCodeDialog(WaitingDialog):
    """Shows the address and code of a device sign-in with a countdown and Cancel.

    Signals:
        cancel_requested(): The person pressed Cancel, Escape or closed the window.

    Args:
        parent: The main window.
        title: The window title.
        account: Who should sign in on the other device (a mailbox address), or ``""``
            for the admin's own account.
    """

    def __init__(self, parent: QWidget | None, *, title: str = "", account: str = "") -> None:
        super().__init__(parent)
        self._title = title
        self._account = account
        self._flow: DeviceFlow | None = None
        self.setMinimumWidth(560)
        self.setObjectName("deviceCodeDialog")

        layout = QVBoxLayout(self)
        layout.setSpacing(10)
        self.heading = QLabel(self)
        self.heading.setFont(_scaled(self.heading.font(), 1.15))
        self.heading.setWordWrap(True)
        self.instructions = QLabel(self)
        self.instructions.setWordWrap(True)
        self.busy = QProgressBar(self)
        self.busy.setRange(0, 0)
        self.busy.setTextVisible(False)

        self._build_code_frame()

        self.countdown = QLabel(self)
        self.countdown.setObjectName("deviceCodeCountdown")
        self.note = QLabel(self)
        self.note.setWordWrap(True)

        self._make_cancel_buttons()

        for widget in (
            self.heading,
            self.instructions,
            self.busy,
            self.code_frame,
            self.countdown,
            self.note,
        ):
            layout.addWidget(widget)
        layout.addWidget(self.buttons)

        self._retranslate()
        self._show_waiting()

    def _build_code_frame(self) -> None:
        """The address and the code, large, each with its Copy button."""
        self.code_frame = QFrame(self)
        self.code_frame.setObjectName("deviceCodeFrame")
        self.code_frame.setFrameShape(QFrame.Shape.StyledPanel)
        grid = QGridLayout(self.code_frame)
        grid.setHorizontalSpacing(12)
        grid.setVerticalSpacing(6)
        self.address_caption = QLabel(self.code_frame)
        self.address = QLabel(self.code_frame)
        self.address.setObjectName("deviceCodeAddress")
        self.address.setFont(_scaled(self.address.font(), 1.6))
        self.address.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.copy_address_button = QPushButton(self.code_frame)
        self.copy_address_button.setAutoDefault(False)
        self.copy_address_button.clicked.connect(self._on_copy_address_clicked)
        self.code_caption = QLabel(self.code_frame)
        self.code = QLabel(self.code_frame)
        self.code.setObjectName("deviceCode")
        code_font = _scaled(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont), 1.0)
        code_font.setPointSizeF(self.font().pointSizeF() * 2.6)
        code_font.setLetterSpacing(QFont.SpacingType.AbsoluteSpacing, 4.0)
        self.code.setFont(code_font)
        self.code.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.copy_code_button = QPushButton(self.code_frame)
        self.copy_code_button.clicked.connect(self._on_copy_code_clicked)
        self.address_caption.setBuddy(self.copy_address_button)
        self.code_caption.setBuddy(self.copy_code_button)
        grid.addWidget(self.address_caption, 0, 0, 1, 2)
        grid.addWidget(self.address, 1, 0)
        grid.addWidget(self.copy_address_button, 1, 1, Qt.AlignmentFlag.AlignVCenter)
        grid.addWidget(self.code_caption, 2, 0, 1, 2)
        grid.addWidget(self.code, 3, 0)
        grid.addWidget(self.copy_code_button, 3, 1, Qt.AlignmentFlag.AlignVCenter)
        grid.setColumnStretch(0, 1)

    # -- state ------------------------------------------------------------------------------

    @property
    def flow(self) -> DeviceFlow | None:
        """The code shown now, once there is one."""
        return self._flow

    @property
    def seconds_left(self) -> int:
        """Whole seconds until the code shown expires (0 before there is one)."""
        if self._flow is None:
            return 0
        return int(self._flow.seconds_left() + 0.999)

    def set_flow(self, flow: DeviceFlow) -> None:
        """Show a code (the first, or a second one that grants more permissions)."""
        self._flow = flow
        self.busy.setVisible(False)
        self.code_frame.setVisible(True)
        self.countdown.setVisible(True)
        self.address.setText(flow.verification_uri)
        self.address.setAccessibleDescription(flow.verification_uri)
        self.code.setText(flow.user_code)
        # Read out character by character: "A B C D 1 2 3 4" rather than a word.
        self.code.setAccessibleDescription(" ".join(flow.user_code))
        self._retranslate()
        self.copy_code_button.setDefault(True)
        self.copy_code_button.setFocus()
        self._timer.start()
        self._on_tick()
        self._fit()

    # -- words --------------------------------------------------------------------------------

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 (Qt name)
        """Put the words up again when the language changes."""
        if event.type() == QEvent.Type.LanguageChange:
            self._retranslate()
        super().changeEvent(event)

    def _retranslate(self) -> None:
        self.setWindowTitle(
            self._title or translate("DeviceCodeDialog", "Sign in on another device")
        )
        who = self._account or translate("DeviceCodeDialog", "your Qargo super admin account")
        consent = self._flow is not None and self._flow.purpose == "consent"
        if self._flow is None:
            self.heading.setText(translate("DeviceCodeDialog", "Asking Microsoft for a code..."))
        elif consent:
            self.heading.setText(
                translate("DeviceCodeDialog", "One more code: allow the mail permissions")
            )
        else:
            self.heading.setText(translate("DeviceCodeDialog", "Sign in on another device"))
        if consent:
            instructions = translate(
                "DeviceCodeDialog",
                "Microsoft gives one code per service. Open the address again on the other "
                "device, enter this second code, sign in as {account} and accept the "
                "permissions Qargo asks for.",
            )
        else:
            instructions = translate(
                "DeviceCodeDialog",
                "On any device with a browser (a phone is fine), open the address below, "
                "enter the code and sign in as {account}. This window continues by itself "
                "when you are done.",
            )
        self.instructions.setText(instructions.format(account=who))
        self.address_caption.setText(translate("DeviceCodeDialog", "1. Open this address:"))
        self.code_caption.setText(translate("DeviceCodeDialog", "2. Enter this code:"))
        self.copy_address_button.setText(translate("DeviceCodeDialog", "Copy &address"))
        self.copy_code_button.setText(translate("DeviceCodeDialog", "&Copy code"))
        self.address.setAccessibleName(translate("DeviceCodeDialog", "Sign-in address"))
        self.code.setAccessibleName(translate("DeviceCodeDialog", "Sign-in code"))
        self.busy.setAccessibleName(translate("DeviceCodeDialog", "Asking for a code"))
        self.countdown.setAccessibleName(translate("DeviceCodeDialog", "Time left"))
        self.note.setText(
            translate(
                "DeviceCodeDialog",
                "Only enter the code on Microsoft's page you opened yourself. Nobody from "
                "Qargo will ask you for it.",
            )
        )
        self.cancel_button.setToolTip(translate("DeviceCodeDialog", "Stop waiting (Esc)"))
        if self._cancelling:
            self.cancel_button.setText(translate("DeviceCodeDialog", "Cancelling..."))
        self._on_tick()

    def _show_waiting(self) -> None:
        self.busy.setVisible(True)
        self.code_frame.setVisible(False)
        self.countdown.setVisible(False)

    # -- slots --------------------------------------------------------------------------------

    def _on_tick(self) -> None:
        if self._flow is None:
            return
        left = self.seconds_left
        if left <= 0:
            self._timer.stop()
            self.countdown.setText(
                translate("DeviceCodeDialog", "The code has expired. Cancel and start again.")
            )
            return
        self.countdown.setText(
            translate("DeviceCodeDialog", "The code expires in {minutes}:{seconds}").format(
                minutes=left // 60, seconds=f"{left % 60:02d}"
            )
        )

    def _copy(self, text: str, button: QPushButton, label: str) -> None:
        QGuiApplication.clipboard().setText(text)
        button.setText(translate("DeviceCodeDialog", "Copied"))
        QTimer.singleShot(_COPIED_MS, self, lambda: button.setText(label))

    def _on_copy_address_clicked(self) -> None:
        self._copy(
            self.address.text(),
            self.copy_address_button,
            translate("DeviceCodeDialog", "Copy &address"),
        )

    def _on_copy_code_clicked(self) -> None:
        self._copy(
            self.code.text(), self.copy_code_button, translate("DeviceCodeDialog", "&Copy code")
        )

    def _show_cancelling(self) -> None:
        self.cancel_button.setText(translate("DeviceCodeDialog", "Cancelling..."))
        self.heading.setText(translate("DeviceCodeDialog", "Cancelling the sign-in..."))
