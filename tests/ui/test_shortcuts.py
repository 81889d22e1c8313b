"""The keyboard: shortcuts in menus and tooltips, the Tab order, Enter and Escape in dialogs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication, QKeySequence
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QDialog, QLabel, QMenu, QMessageBox

from qargo_desktop.core.config import Settings
from qargo_desktop.core.models import MailboxAction
from qargo_desktop.ui import dialogs, i18n
from qargo_desktop.ui.main_window import MainWindow, Page
from qargo_desktop.ui.preferences import PreferencesDialog
from tests.ui.conftest import make_mailbox

SHORTCUTS = {
    "refresh_action": "F5",
    "find_action": "Ctrl+F",
    "add_action": "Ctrl+N",
    "preferences_action": "Ctrl+,",
    "copy_address_action": "Ctrl+C",
}

MAILBOX_SHORTCUTS = {
    MailboxAction.AUTHORISE: "Ctrl+L",
    MailboxAction.REAUTHORISE: "Ctrl+Shift+L",
    MailboxAction.RESET: "Ctrl+Shift+R",
    MailboxAction.SELFTEST: "Ctrl+T",
    MailboxAction.REMOVE: "Del",
}


def native(text: str) -> str:
    return QKeySequence(text).toString(QKeySequence.SequenceFormat.NativeText)


def select(window: MainWindow, status: str) -> None:
    mailbox = next(m for m in window.model.mailboxes() if m.raw_status == status)
    assert window.select_mailbox(mailbox.id)


def activate(qtbot, window: MainWindow) -> None:
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=3000)


# -- menus and tooltips ---------------------------------------------------------------------


def test_every_action_has_its_shortcut_shown_in_its_tooltip(signed_in_window) -> None:
    window = signed_in_window
    for name, keys in SHORTCUTS.items():
        action = getattr(window, name)
        assert action.shortcut() == QKeySequence(keys), name
        assert action.toolTip().endswith(f"({native(keys)})"), (name, action.toolTip())
    for kind, keys in MAILBOX_SHORTCUTS.items():
        action = window.mailbox_actions[kind]
        assert action.shortcut() == QKeySequence(keys), kind
        assert action.toolTip().endswith(f"({native(keys)})"), action.toolTip()
        # Menus show the shortcut beside the entry: Qt draws it from the action's shortcut.
        assert action in window.mailbox_menu.actions()


def test_buttons_name_their_shortcut_in_their_tooltips(signed_in_window) -> None:
    window = signed_in_window
    assert window.refresh_button.toolTip().endswith("(F5)")
    assert window.add_button.toolTip().endswith(f"({native('Ctrl+N')})")
    assert native("Ctrl+F") in window.search_box.placeholderText()
    assert window.search_box.toolTip().endswith(f"({native('Ctrl+F')})")
    for kind, keys in MAILBOX_SHORTCUTS.items():
        button = window.detail_pane.action_buttons[kind]
        assert button.toolTip().endswith(f"({native(keys)})"), (kind, button.toolTip())


# -- the shortcuts do what they say ----------------------------------------------------------


def test_f5_refreshes_and_ctrl_f_finds(qtbot, signed_in_window) -> None:
    window = signed_in_window
    activate(qtbot, window)
    calls = len(window.services.api.list_calls)
    with qtbot.waitSignal(window.refresh_finished, timeout=5000):
        QTest.keyClick(window, Qt.Key.Key_F5)
    assert len(window.services.api.list_calls) == calls + 1

    window.table.setFocus()
    QTest.keySequence(window, "Ctrl+F")
    assert QApplication.focusWidget() is window.search_box


@pytest.mark.parametrize(
    ("status", "keys", "signal"),
    [
        ("unlinked", "Ctrl+L", "authorise_requested"),
        ("linked", "Ctrl+Shift+L", "reauthorise_requested"),
        ("reauthorisation_required", "Ctrl+Shift+L", "reauthorise_requested"),
        ("link_failed", "Ctrl+Shift+R", "reset_requested"),
        ("linked", "Ctrl+T", "selftest_requested"),
        ("unlinked", "Del", "remove_requested"),
    ],
)
def test_mailbox_shortcuts_ask_for_their_action(
    qtbot, signed_in_window, status: str, keys: str, signal: str
) -> None:
    window = signed_in_window
    activate(qtbot, window)
    select(window, status)
    window.table.setFocus()
    QTest.keySequence(window, keys)
    assert window.requested == [(signal, window.selected_mailbox().address)]


def test_a_shortcut_for_an_action_the_state_does_not_allow_does_nothing(
    qtbot, signed_in_window
) -> None:
    window = signed_in_window
    activate(qtbot, window)
    select(window, "linked")
    QTest.keySequence(window, "Ctrl+Shift+R")  # reset: only for a failed link
    QTest.keySequence(window, "Ctrl+L")  # authorise: only when unlinked
    assert window.requested == []


def test_ctrl_c_in_the_table_copies_the_address(qtbot, signed_in_window) -> None:
    window = signed_in_window
    activate(qtbot, window)
    select(window, "linked")
    window.table.setFocus()
    QGuiApplication.clipboard().clear()
    QTest.keySequence(window.table, "Ctrl+C")
    assert QGuiApplication.clipboard().text() == window.selected_mailbox().address


def test_ctrl_n_asks_to_add_a_mailbox(qtbot, signed_in_window) -> None:
    window = signed_in_window
    activate(qtbot, window)
    QTest.keySequence(window, "Ctrl+N")
    assert window.requested == [("add_requested", "")]


@pytest.mark.qt_log_ignore(r"This plugin does not support (propagateSizeHints|raise|grabbing)")
def test_the_menu_key_opens_the_row_menu_with_the_allowed_actions(qtbot, signed_in_window) -> None:
    window = signed_in_window
    activate(qtbot, window)
    select(window, "link_failed")
    window.table.setFocus()
    # From the keyboard the position may be nowhere near a row: the current row counts.
    window.table.customContextMenuRequested.emit(window.table.viewport().rect().bottomRight())
    menu = next(m for m in window.table.findChildren(QMenu) if m.isVisible())
    texts = [a.text() for a in menu.actions() if not a.isSeparator()]
    assert texts == ["R&eset API link status", "Re&move from list", "&Copy address"]
    menu.close()


# -- the Tab order ---------------------------------------------------------------------------


def test_tab_goes_search_filter_table_then_the_detail_pane_actions(qtbot, signed_in_window) -> None:
    window = signed_in_window
    activate(qtbot, window)
    select(window, "link_failed")
    window.search_box.setFocus()
    order = [window.search_box]
    for _ in range(4):
        QTest.keyClick(QApplication.focusWidget(), Qt.Key.Key_Tab)
        order.append(QApplication.focusWidget())
    buttons = window.detail_pane.action_buttons
    assert order == [
        window.search_box,
        window.status_filter,
        window.table,
        buttons[MailboxAction.RESET],
        buttons[MailboxAction.REMOVE],
    ]
    # Enter on the focused detail pane button does what it says.
    QTest.keyClick(buttons[MailboxAction.RESET], Qt.Key.Key_Space)
    assert window.requested == [("reset_requested", window.selected_mailbox().address)]


def test_status_caption_takes_alt_s_to_the_filter(qtbot, signed_in_window) -> None:
    window = signed_in_window
    assert window.status_caption.buddy() is window.status_filter
    assert "&" in window.status_caption.text()


# -- access keys are unique where they compete ----------------------------------------------


def _access_key(text: str) -> str | None:
    match = re.search(r"&([^&])", text.replace("&&", ""))
    return match.group(1).casefold() if match else None


def _clashes(texts: list[str]) -> list[str]:
    keys = [k for k in map(_access_key, texts) if k]
    return sorted({k for k in keys if keys.count(k) > 1})


@pytest.mark.parametrize("language", ["en-GB", "nl", "fr"])
def test_access_keys_never_clash_in_any_language(qtbot, signed_in_window, language) -> None:
    window = signed_in_window
    i18n.install_language(language)
    try:
        qtbot.waitUntil(lambda: window.file_menu.title() != "" and _settled(window, language))
        bar = [menu.title() for menu in window.menuBar().findChildren(QMenu)
               if menu.parent() is window.menuBar()]  # fmt: skip
        for menu in window.menuBar().findChildren(QMenu):
            entries = [a.text() for a in menu.actions() if not a.isSeparator()]
            assert not _clashes(entries), (language, menu.title(), entries)
        # The menu bar and whatever page shows compete for Alt+letter.
        page = [window.status_caption.text(), window.add_button.text(),
                window.refresh_button.text(), window.detail_pane.audit_retry.text()]  # fmt: skip
        assert not _clashes(bar + page), (language, bar + page)
        sign_in = window.sign_in_page
        buttons = [sign_in.sign_in_button.text(), sign_in.retry_button.text(),
                   sign_in.switch_button.text(), sign_in.sign_out_button.text()]  # fmt: skip
        assert not _clashes(bar + buttons), (language, bar + buttons)
        preferences = PreferencesDialog(window, Settings())
        captions = [label.text() for label in preferences.findChildren(QLabel) if label.buddy()]
        captions.append(preferences.browse_button.text())
        assert not _clashes(captions), (language, captions)
        preferences.deleteLater()
    finally:
        i18n.install_language("en-GB")


def _settled(window: MainWindow, language: str) -> bool:
    english = window.file_menu.title() == "&File"
    return english == (language == "en-GB")


# -- Enter and Escape in every dialog --------------------------------------------------------


def test_confirmations_answer_cancel_to_enter_and_escape(qtbot) -> None:
    mailbox = make_mailbox(4, "link_failed")
    for key in (Qt.Key.Key_Return, Qt.Key.Key_Escape):
        box, yes = dialogs.build_confirmation(
            None, **dialogs.reset_confirmation_text(mailbox), destructive=True
        )
        qtbot.addWidget(box)
        box.show()
        QTest.keyClick(box, key)
        assert box.clickedButton() is not yes
        assert box.clickedButton() is box.escapeButton()


def test_add_mailbox_enter_adds_once_the_address_looks_right_escape_cancels(qtbot) -> None:
    dialog = dialogs.AddMailboxDialog()
    qtbot.addWidget(dialog)
    dialog.show()
    QTest.keyClick(dialog.address, Qt.Key.Key_Return)
    assert dialog.isVisible()  # nothing to add yet: Enter does nothing
    QTest.keyClicks(dialog.address, "planning@northwind-haulage.example")
    QTest.keyClick(dialog.address, Qt.Key.Key_Return)
    assert dialog.result() == QDialog.DialogCode.Accepted

    dialog = dialogs.AddMailboxDialog()
    qtbot.addWidget(dialog)
    dialog.show()
    QTest.keyClicks(dialog.address, "planning@northwind-haulage.example")
    QTest.keyClick(dialog.address, Qt.Key.Key_Escape)
    assert dialog.result() == QDialog.DialogCode.Rejected


def test_sign_in_wait_escape_cancels_and_enter_only_copies_the_link(qtbot) -> None:
    dialog = dialogs.SignInWaitDialog(None, deadline_s=60)
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.set_auth_uri("http://127.0.0.1:9/authorize?state=x")
    cancelled: list[bool] = []
    dialog.cancel_requested.connect(lambda: cancelled.append(True))
    dialog.cancel_button.setFocus()
    QTest.keyClick(dialog.cancel_button, Qt.Key.Key_Return)
    assert cancelled == []
    assert QGuiApplication.clipboard().text() == "http://127.0.0.1:9/authorize?state=x"
    QTest.keyClick(dialog, Qt.Key.Key_Escape)
    assert cancelled == [True]
    dialog.finish()


def test_crash_report_keeps_working_on_enter_and_escape(qtbot) -> None:
    for key in (Qt.Key.Key_Return, Qt.Key.Key_Escape):
        dialog = dialogs.CrashDialog(None, "Traceback ...")
        qtbot.addWidget(dialog)
        dialog.show()
        QTest.keyClick(dialog, key)
        assert not dialog.isVisible()
        assert dialog.quit_requested is False


def test_about_closes_on_enter_and_escape(qtbot) -> None:
    for key in (Qt.Key.Key_Return, Qt.Key.Key_Escape):
        box = dialogs.build_about(None, "Organisation API: https://127.0.0.1:1/api")
        qtbot.addWidget(box)
        box.show()
        QTest.keyClick(box, key)
        assert not box.isVisible()
        assert box.clickedButton() is box.button(QMessageBox.StandardButton.Close)


def test_preferences_enter_saves_and_escape_leaves_the_file_alone(qtbot, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    dialog = PreferencesDialog(None, Settings(config_dir=tmp_path))
    qtbot.addWidget(dialog)
    dialog.show()
    QTest.keyClick(dialog, Qt.Key.Key_Escape)
    assert dialog.result() == QDialog.DialogCode.Rejected
    assert not config.exists()

    dialog = PreferencesDialog(None, Settings(config_dir=tmp_path))
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.sign_in_timeout.setFocus()
    QTest.keyClick(dialog.sign_in_timeout, Qt.Key.Key_Return)
    assert dialog.result() == QDialog.DialogCode.Accepted
    assert config.exists()


def test_the_sign_in_page_signs_in_on_enter(qtbot, make_signed_out_window) -> None:
    window = make_signed_out_window
    assert window.current_page is Page.SIGN_IN
    assert window.sign_in_page.sign_in_button.isDefault()


@pytest.fixture
def make_signed_out_window(qtbot, window_state):
    from qargo_desktop.ui.theme import Theme
    from tests.ui.fakes import FakeApi, FakeServices

    window = MainWindow(Settings(refresh_interval_s=0), window_state=window_state,
                        theme=Theme(dark=False))  # fmt: skip
    qtbot.addWidget(window)
    window.show()
    window.attach_services(FakeServices(api=FakeApi()))
    qtbot.waitUntil(lambda: window.current_page is Page.SIGN_IN)
    yield window
    window.tasks.shutdown(5000)
