"""The main window's whole-window pages: starting, first run, and sign-in."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from PySide6.QtCore import QCoreApplication, QEvent, QSize, Qt, Signal
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

translate = QCoreApplication.translate


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


class _Page(QWidget):
    """A page that puts its words up again when the language changes."""

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 (Qt name)
        """Retranslate on a language change."""
        if event.type() == QEvent.Type.LanguageChange:
            self._retranslate()
        super().changeEvent(event)

    def _retranslate(self) -> None:
        """Set the page's words in the language installed now."""


class StartingPage(_Page):
    """Shown while the app starts, builds its services or signs in silently."""

    def __init__(self, icon: QIcon, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        _outer, card = _card(self)
        card.addWidget(_logo(icon, self), 0, Qt.AlignmentFlag.AlignHCenter)
        card.addWidget(_heading(APP_DISPLAY_NAME, self), 0, Qt.AlignmentFlag.AlignHCenter)
        self.message = _text(translate("StartingPage", "Starting..."), self)
        self.message.setAlignment(Qt.AlignmentFlag.AlignCenter)
        card.addWidget(self.message)
        self.busy = QProgressBar(self)
        self.busy.setRange(0, 0)
        self.busy.setTextVisible(False)
        card.addWidget(self.busy)
        self._retranslate()

    def _retranslate(self) -> None:
        self.busy.setAccessibleName(translate("StartingPage", "Working"))

    def set_message(self, text: str) -> None:
        """Say what the app is doing."""
        self.message.setText(text)
        self.busy.setAccessibleDescription(text)


class FirstRunPage(_Page):
    """Shown when the settings lack what a run against the real services needs.

    Signals:
        sandbox_requested(): The person chose the built-in sandbox.
    """

    sandbox_requested = Signal()

    def __init__(self, icon: QIcon, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._missing: tuple[Sequence[str], Path | None] = ((), None)
        _outer, card = _card(self)
        card.addWidget(_logo(icon, self))
        self.heading = _heading("", self)
        card.addWidget(self.heading)
        self.intro = _text("", self)
        card.addWidget(self.intro)
        self.missing = _text("", self)
        self.missing.setTextFormat(Qt.TextFormat.RichText)
        self.missing.setObjectName("missingSettings")
        card.addWidget(self.missing)
        self.where = _text("", self)
        card.addWidget(self.where)
        self.sandbox_intro = _text("", self)
        card.addWidget(self.sandbox_intro)
        self.sandbox_button = QPushButton(self)
        self.sandbox_button.setDefault(True)
        self.sandbox_button.clicked.connect(self.sandbox_requested)
        card.addWidget(self.sandbox_button, 0, Qt.AlignmentFlag.AlignLeft)
        self._retranslate()

    def _retranslate(self) -> None:
        self.heading.setText(
            translate("FirstRunPage", "{app} is not set up yet").format(app=APP_DISPLAY_NAME)
        )
        self.intro.setText(
            translate(
                "FirstRunPage",
                "To work with your organisation, the app needs the settings of your Microsoft "
                "365 tenant and of Qargo. These are missing:",
            )
        )
        self.sandbox_intro.setText(
            translate(
                "FirstRunPage",
                "You can also try every feature now against the built-in sandbox: a simulated "
                "organisation on this computer. Nothing leaves this computer.",
            )
        )
        self.sandbox_button.setText(translate("FirstRunPage", "Use the built-in &sandbox"))
        self.sandbox_button.setAccessibleDescription(self.sandbox_intro.text())
        self.set_missing(*self._missing)

    def set_missing(self, missing: Sequence[str], config_file: Path | None) -> None:
        """Name exactly which keys are missing and where to set them."""
        self._missing = (tuple(missing), config_file)
        items = "".join(
            "<li>"
            + translate("FirstRunPage", "{key} (or the environment variable {variable})").format(
                key=f"<code>{key}</code>", variable=f"<code>{ENV_PREFIX}{key.upper()}</code>"
            )
            + "</li>"
            for key in missing
        )
        self.missing.setText(f"<ul>{items}</ul>" if items else "")
        if config_file:
            where = translate(
                "FirstRunPage",
                "Add them to the settings file {file}, or ask Qargo Support for a ready-made "
                "settings file, then start the app again.",
            ).format(file=config_file)
        else:
            where = translate(
                "FirstRunPage",
                "Add them to the settings file, or ask Qargo Support for a ready-made settings "
                "file, then start the app again.",
            )
        self.where.setText(where)
        self.missing.setAccessibleName(translate("FirstRunPage", "Missing settings"))
        self.missing.setAccessibleDescription(", ".join(missing))


class SignInPage(_Page):
    """Asks the admin to sign in, and says why when signing in did not work.

    Signals:
        sign_in_requested(): Sign in with Microsoft (interactive).
        retry_requested(): Try the saved sign-in again (after a network problem).
        switch_account_requested(): Sign out, then sign in with another account.
        sign_out_requested(): Sign out.
        device_sign_in_requested(): Sign in with a code on another device (where this
            computer's browser cannot be used).
    """

    sign_in_requested = Signal()
    device_sign_in_requested = Signal()
    retry_requested = Signal()
    switch_account_requested = Signal()
    sign_out_requested = Signal()

    def __init__(self, icon: QIcon, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._shown: Callable[[], None] = self.show_prompt
        _outer, card = _card(self)
        card.addWidget(_logo(icon, self))
        self.heading = _heading("", self)
        card.addWidget(self.heading)
        self.intro = _text("", self)
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
        self.sign_in_button = QPushButton(self)
        self.sign_in_button.setDefault(True)
        self.sign_in_button.setMinimumHeight(34)
        bold = QFont(self.sign_in_button.font())
        bold.setBold(True)
        self.sign_in_button.setFont(bold)
        self.sign_in_button.clicked.connect(self.sign_in_requested)
        self.retry_button = QPushButton(self)
        self.retry_button.clicked.connect(self.retry_requested)
        self.switch_button = QPushButton(self)
        self.switch_button.clicked.connect(self.switch_account_requested)
        self.sign_out_button = QPushButton(self)
        self.sign_out_button.clicked.connect(self.sign_out_requested)
        # Secondary: for remote sessions and computers whose browser cannot be used.
        self.device_button = QPushButton(self)
        self.device_button.setObjectName("deviceSignInButton")
        self.device_button.clicked.connect(self.device_sign_in_requested)
        for button in (
            self.sign_in_button,
            self.device_button,
            self.switch_button,
            self.retry_button,
            self.sign_out_button,
        ):
            buttons.addWidget(button)
        buttons.addStretch(1)
        card.addLayout(buttons)
        self._retranslate()

    def _retranslate(self) -> None:
        self.sign_in_button.setText(translate("SignInPage", "&Sign in with Microsoft"))
        self.sign_in_button.setAccessibleDescription(
            translate("SignInPage", "Opens Microsoft's sign-in page in your browser")
        )
        self.device_button.setText(translate("SignInPage", "Sign in on another &device"))
        self.device_button.setToolTip(
            translate(
                "SignInPage",
                "Shows a code to enter on a phone or another computer: for remote sessions "
                "where the browser here cannot be used",
            )
        )
        self.device_button.setAccessibleDescription(self.device_button.toolTip())
        self.retry_button.setText(translate("SignInPage", "&Try again"))
        self.switch_button.setText(translate("SignInPage", "Sign in with &another account"))
        self.sign_out_button.setText(translate("SignInPage", "Sign &out"))
        self.busy.setAccessibleName(translate("SignInPage", "Working"))
        self._shown()

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
        self.busy.setAccessibleDescription(heading if busy else "")
        self.sign_in_button.setVisible(sign_in)
        self.device_button.setVisible(sign_in)
        self.retry_button.setVisible(retry)
        self.switch_button.setVisible(switch)
        self.sign_out_button.setVisible(sign_out)
        for button in (self.sign_in_button, self.switch_button, self.retry_button):
            if button.isVisibleTo(self):
                button.setDefault(True)
                break

    def show_prompt(self, problem: str = "") -> None:
        """Offer to sign in (with what went wrong last time, if anything)."""
        self._shown = lambda: self.show_prompt(problem)
        self._show(
            heading=translate("SignInPage", "Sign in to manage your mailboxes"),
            intro=translate(
                "SignInPage",
                "Sign in with your Qargo super admin account. Microsoft's sign-in page opens "
                "in your browser; the app continues when you are done.",
            ),
            problem=problem,
            sign_in=True,
        )

    def show_busy(self, text: str) -> None:
        """The app is signing in or out."""
        self._shown = lambda: self.show_busy(text)
        self._show(heading=text, intro="", busy=True)

    def show_error(self, problem: str) -> None:
        """The saved sign-in could not be checked (network): retry, or sign in afresh."""
        self._shown = lambda: self.show_error(problem)
        self._show(
            heading=translate("SignInPage", "Could not sign in"),
            intro=translate("SignInPage", "The app could not check your saved sign-in."),
            problem=problem,
            retry=True,
            sign_in=True,
        )

    def show_not_super_admin(self, username: str) -> None:
        """The account is not a super admin: say which one, and offer another."""
        self._shown = lambda: self.show_not_super_admin(username)
        self._show(
            heading=translate("SignInPage", "This account is not a Qargo super admin"),
            intro=translate(
                "SignInPage",
                "You are signed in as {user}, which is not a super admin of its Qargo "
                "organisation. Only super admins can manage linked mailboxes.",
            ).format(user=username),
            problem=translate(
                "SignInPage",
                "Sign in with a super admin account instead, or ask a super admin of your "
                "organisation to give this account the role.",
            ),
            switch=True,
            sign_out=True,
        )
