"""The main window's whole-window pages: starting, first run, and sign-in."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QFont, QIcon
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from qargo_desktop import APP_DISPLAY_NAME
from qargo_desktop.core.config import ENV_PREFIX


def _card(parent: QWidget) -> tuple[QVBoxLayout, QVBoxLayout]:
    """A centred column of at most ~560 px; returns (outer layout, card layout)."""
    outer = QVBoxLayout(parent)
    outer.addStretch(2)
    row = QHBoxLayout()
    row.addStretch(1)
    card = QFrame(parent)
    card.setObjectName("pageCard")
    card.setMaximumWidth(580)
    card.setMinimumWidth(380)
    inner = QVBoxLayout(card)
    inner.setSpacing(12)
    row.addWidget(card, 3)
    row.addStretch(1)
    outer.addLayout(row)
    outer.addStretch(3)
    return outer, inner


def _logo(icon: QIcon, parent: QWidget) -> QLabel:
    label = QLabel(parent)
    label.setPixmap(icon.pixmap(QSize(64, 64)))
    label.setAccessibleName(APP_DISPLAY_NAME)
    return label


def _heading(text: str, parent: QWidget, scale: float = 1.5) -> QLabel:
    label = QLabel(text, parent)
    font = QFont(label.font())
    font.setBold(True)
    font.setPointSizeF(font.pointSizeF() * scale)
    label.setFont(font)
    label.setWordWrap(True)
    return label


def _text(text: str, parent: QWidget) -> QLabel:
    label = QLabel(text, parent)
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


class StartingPage(QWidget):
    """Shown while the app starts, builds its services or signs in silently."""

    def __init__(self, icon: QIcon, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        _outer, card = _card(self)
        card.addWidget(_logo(icon, self), 0, Qt.AlignmentFlag.AlignHCenter)
        card.addWidget(_heading(APP_DISPLAY_NAME, self), 0, Qt.AlignmentFlag.AlignHCenter)
        self.message = _text("Starting...", self)
        self.message.setAlignment(Qt.AlignmentFlag.AlignCenter)
        card.addWidget(self.message)
        self.busy = QProgressBar(self)
        self.busy.setRange(0, 0)
        self.busy.setTextVisible(False)
        card.addWidget(self.busy)

    def set_message(self, text: str) -> None:
        """Say what the app is doing."""
        self.message.setText(text)


class FirstRunPage(QWidget):
    """Shown when the settings lack what a run against the real services needs.

    Signals:
        sandbox_requested(): The person chose the built-in sandbox.
    """

    sandbox_requested = Signal()

    def __init__(self, icon: QIcon, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        _outer, card = _card(self)
        card.addWidget(_logo(icon, self))
        card.addWidget(_heading(f"{APP_DISPLAY_NAME} is not set up yet", self))
        self.intro = _text(
            "To work with your organisation, the app needs the settings of your Microsoft "
            "365 tenant and of Qargo. These are missing:",
            self,
        )
        card.addWidget(self.intro)
        self.missing = _text("", self)
        self.missing.setTextFormat(Qt.TextFormat.RichText)
        self.missing.setObjectName("missingSettings")
        card.addWidget(self.missing)
        self.where = _text("", self)
        card.addWidget(self.where)
        self.sandbox_intro = _text(
            "You can also try every feature now against the built-in sandbox: a simulated "
            "organisation on this computer. Nothing leaves this computer.",
            self,
        )
        card.addWidget(self.sandbox_intro)
        self.sandbox_button = QPushButton("Use the built-in &sandbox", self)
        self.sandbox_button.setDefault(True)
        self.sandbox_button.clicked.connect(self.sandbox_requested)
        card.addWidget(self.sandbox_button, 0, Qt.AlignmentFlag.AlignLeft)

    def set_missing(self, missing: Sequence[str], config_file: Path | None) -> None:
        """Name exactly which keys are missing and where to set them."""
        items = "".join(
            f"<li><code>{key}</code> (or the environment variable "
            f"<code>{ENV_PREFIX}{key.upper()}</code>)</li>"
            for key in missing
        )
        self.missing.setText(f"<ul>{items}</ul>")
        location = f"the settings file {config_file}" if config_file else "the settings file"
        self.where.setText(
            f"Add them to {location}, or ask Qargo Support for a ready-made settings file, "
            "then start the app again."
        )
        self.missing.setAccessibleDescription("Missing settings: " + ", ".join(missing))


class SignInPage(QWidget):
    """Asks the admin to sign in, and says why when signing in did not work.

    Signals:
        sign_in_requested(): Sign in with Microsoft (interactive).
        retry_requested(): Try the saved sign-in again (after a network problem).
        switch_account_requested(): Sign out, then sign in with another account.
        sign_out_requested(): Sign out.
    """

    sign_in_requested = Signal()
    retry_requested = Signal()
    switch_account_requested = Signal()
    sign_out_requested = Signal()

    def __init__(self, icon: QIcon, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        _outer, card = _card(self)
        card.addWidget(_logo(icon, self))
        self.heading = _heading("Sign in to manage your mailboxes", self)
        card.addWidget(self.heading)
        self.intro = _text(
            "Sign in with your Qargo super admin account. Microsoft's sign-in page opens in "
            "your browser; the app continues when you are done.",
            self,
        )
        card.addWidget(self.intro)
        self.note = _text("", self)
        self.note.setObjectName("signInNote")
        card.addWidget(self.note)
        self.problem = _text("", self)
        self.problem.setObjectName("signInProblem")
        self.problem.setStyleSheet("QLabel#signInProblem { font-weight: bold; }")
        card.addWidget(self.problem)
        self.busy = QProgressBar(self)
        self.busy.setRange(0, 0)
        self.busy.setTextVisible(False)
        card.addWidget(self.busy)

        buttons = QHBoxLayout()
        self.sign_in_button = QPushButton("Sign in with &Microsoft", self)
        self.sign_in_button.setDefault(True)
        self.sign_in_button.setMinimumHeight(34)
        bold = QFont(self.sign_in_button.font())
        bold.setBold(True)
        self.sign_in_button.setFont(bold)
        self.sign_in_button.clicked.connect(self.sign_in_requested)
        self.retry_button = QPushButton("&Try again", self)
        self.retry_button.clicked.connect(self.retry_requested)
        self.switch_button = QPushButton("Sign in with &another account", self)
        self.switch_button.clicked.connect(self.switch_account_requested)
        self.sign_out_button = QPushButton("Sign &out", self)
        self.sign_out_button.clicked.connect(self.sign_out_requested)
        for button in (
            self.sign_in_button,
            self.switch_button,
            self.retry_button,
            self.sign_out_button,
        ):
            buttons.addWidget(button)
        buttons.addStretch(1)
        card.addLayout(buttons)
        self.show_prompt()

    def set_note(self, text: str) -> None:
        """A hint under the introduction (which account to use in the sandbox)."""
        self.note.setText(text)
        self.note.setVisible(bool(text))

    def _show(
        self,
        *,
        heading: str,
        intro: str,
        problem: str = "",
        busy: bool = False,
        sign_in: bool = False,
        retry: bool = False,
        switch: bool = False,
        sign_out: bool = False,
    ) -> None:
        self.heading.setText(heading)
        self.intro.setText(intro)
        self.intro.setVisible(bool(intro))
        self.problem.setText(problem)
        self.problem.setVisible(bool(problem))
        self.busy.setVisible(busy)
        self.sign_in_button.setVisible(sign_in)
        self.retry_button.setVisible(retry)
        self.switch_button.setVisible(switch)
        self.sign_out_button.setVisible(sign_out)
        for button in (self.sign_in_button, self.switch_button, self.retry_button):
            if button.isVisibleTo(self):
                button.setDefault(True)
                break

    def show_prompt(self, problem: str = "") -> None:
        """Offer to sign in (with what went wrong last time, if anything)."""
        self._show(
            heading="Sign in to manage your mailboxes",
            intro=(
                "Sign in with your Qargo super admin account. Microsoft's sign-in page opens "
                "in your browser; the app continues when you are done."
            ),
            problem=problem,
            sign_in=True,
        )

    def show_busy(self, text: str) -> None:
        """The app is signing in or out."""
        self._show(heading=text, intro="", busy=True)

    def show_error(self, problem: str) -> None:
        """The saved sign-in could not be checked (network): retry, or sign in afresh."""
        self._show(
            heading="Could not sign in",
            intro="The app could not check your saved sign-in.",
            problem=problem,
            retry=True,
            sign_in=True,
        )

    def show_not_super_admin(self, username: str) -> None:
        """The account is not a super admin: say which one, and offer another."""
        self._show(
            heading="This account is not a Qargo super admin",
            intro=(
                f"You are signed in as {username}, which is not a super admin of its Qargo "
                "organisation. Only super admins can manage linked mailboxes."
            ),
            problem=(
                "Sign in with a super admin account instead, or ask a super admin of your "
                "organisation to give this account the role."
            ),
            switch=True,
            sign_out=True,
        )
