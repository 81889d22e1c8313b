"""Dialogs: safe defaults, the waiting dialogs, the crash report."""

from __future__ import annotations

import time

import pytest

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QMessageBox

from qargo_desktop.ui import dialogs
from qargo_desktop.ui.device_code_dialog import DeviceCodeDialog
from tests.ui.conftest import make_mailbox


def test_the_guard_fails_a_stray_modal_dialog(no_modal_dialogs) -> None:
    with pytest.raises(AssertionError, match="modal dialog"):
        QMessageBox(QMessageBox.Icon.Information, "Stray", "hello").exec()
    no_modal_dialogs.clear()  # seen and expected here


def test_confirmations_default_to_cancel(monkeypatch) -> None:
    seen: list[QMessageBox] = []

    def fake_exec(box: QMessageBox) -> int:
        seen.append(box)
        # The person presses Enter: the default button answers.
        box.defaultButton().click()
        return 0

    monkeypatch.setattr(QMessageBox, "exec", fake_exec)
    mailbox = make_mailbox(4, "link_failed")
    assert dialogs.confirm_reset(None, mailbox) is False
    assert dialogs.confirm_remove(None, mailbox) is False
    box = seen[0]
    assert box.defaultButton() is box.escapeButton()
    assert box.defaultButton().text() == "Cancel"
    assert mailbox.address in box.text()
    assert "Unlinked" in box.informativeText()


def test_confirmation_is_true_only_for_the_confirm_button(monkeypatch) -> None:
    def fake_exec(box: QMessageBox) -> int:
        next(b for b in box.buttons() if b.text() == "Reset API link status").click()
        return 0

    monkeypatch.setattr(QMessageBox, "exec", fake_exec)
    assert dialogs.confirm_reset(None, make_mailbox(4, "link_failed")) is True


def test_add_mailbox_accepts_only_an_address(qtbot) -> None:
    dialog = dialogs.AddMailboxDialog()
    qtbot.addWidget(dialog)
    ok = dialog.buttons.button(QDialogButtonBox.StandardButton.Ok)
    assert not ok.isEnabled()
    QTest.keyClicks(dialog.address, "planning")
    assert not ok.isEnabled()
    QTest.keyClicks(dialog.address, "@northwind-haulage.example")
    assert ok.isEnabled()


def test_sign_in_wait_dialog_counts_down_and_cancels_once(qtbot) -> None:
    dialog = dialogs.SignInWaitDialog(None, deadline_s=125)
    qtbot.addWidget(dialog)
    dialog.open()
    assert dialog.countdown.text() == "Time left: 2:05"
    assert not dialog.link.isVisibleTo(dialog)  # no link known yet
    dialog.set_auth_uri("http://127.0.0.1:5/authorize")
    assert dialog.link.isVisibleTo(dialog)
    cancels: list[bool] = []
    dialog.cancel_requested.connect(lambda: cancels.append(True))
    dialog.close()  # the window's close button cancels instead of hiding the wait
    assert dialog.isVisible()
    QTest.keyClick(dialog, Qt.Key.Key_Escape)
    qtbot.mouseClick(dialog.cancel_button, Qt.MouseButton.LeftButton)
    assert cancels == [True]
    assert dialog.cancel_button.text() == "Cancelling..."
    dialog.finish()
    assert not dialog.isVisible()
    assert dialog.result() == QDialog.DialogCode.Accepted


def test_sign_in_wait_dialog_countdown_moves(qtbot) -> None:
    dialog = dialogs.SignInWaitDialog(None, deadline_s=3)
    qtbot.addWidget(dialog)
    dialog.open()
    began = time.monotonic()
    qtbot.waitUntil(lambda: dialog.countdown.text() == "Time left: 0:02", timeout=3000)
    assert time.monotonic() - began < 2.5
    dialog.finish()


@pytest.fixture(params=["browser", "device code"])
def waiting_dialog(request, qtbot) -> dialogs.WaitingDialog:
    """Each dialog that waits for a sign-in, open and not yet finished."""
    dialog: dialogs.WaitingDialog
    if request.param == "browser":
        dialog = dialogs.SignInWaitDialog(None, deadline_s=60)
    else:
        dialog = DeviceCodeDialog(None)
    qtbot.addWidget(dialog)
    dialog.open()
    return dialog


@pytest.mark.parametrize("how", ["Cancel", "Escape", "close button"])
def test_waiting_dialogs_ask_to_cancel_once_and_stay_open(waiting_dialog, qtbot, how) -> None:
    cancels: list[bool] = []
    waiting_dialog.cancel_requested.connect(lambda: cancels.append(True))
    for _ in range(2):
        if how == "Cancel":
            qtbot.mouseClick(waiting_dialog.cancel_button, Qt.MouseButton.LeftButton)
        elif how == "Escape":
            QTest.keyClick(waiting_dialog, Qt.Key.Key_Escape)
        else:
            waiting_dialog.close()
    assert cancels == [True]
    assert waiting_dialog.isVisible()  # the task closes it once it stopped
    assert not waiting_dialog.cancel_button.isEnabled()
    assert waiting_dialog.cancel_button.text() == "Cancelling..."
    assert waiting_dialog.heading.text() == "Cancelling the sign-in..."

    waiting_dialog.finish()
    assert not waiting_dialog.isVisible()
    assert waiting_dialog.result() == QDialog.DialogCode.Accepted
    assert cancels == [True]


def test_finishing_a_waiting_dialog_closes_it_without_cancelling(waiting_dialog) -> None:
    cancels: list[bool] = []
    waiting_dialog.cancel_requested.connect(lambda: cancels.append(True))
    waiting_dialog.finish()
    assert not waiting_dialog.isVisible()
    assert waiting_dialog.result() == QDialog.DialogCode.Accepted

    # Nothing that happens to it afterwards cancels the finished wait.
    waiting_dialog.close()
    waiting_dialog.reject()
    waiting_dialog.cancel_button.click()
    assert cancels == []


def test_crash_dialog_shows_the_report_copies_it_and_warns(qtbot) -> None:
    dialog = dialogs.CrashDialog(None, "Qargo Desktop problem report\nTraceback: boom")
    qtbot.addWidget(dialog)
    assert "Traceback: boom" in dialog.report.toPlainText()
    texts = [label.text() for label in dialog.findChildren(QLabel)]
    assert any("personal data" in text for text in texts)
    qtbot.mouseClick(dialog.copy_button, Qt.MouseButton.LeftButton)
    assert QGuiApplication.clipboard().text().endswith("Traceback: boom")
