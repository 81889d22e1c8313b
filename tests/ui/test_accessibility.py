"""Screen readers and colour: every control has a name, every state is told in words, and
every colour pair is readable in both themes.

Names and descriptions are read the way a screen reader reads them: through Qt's
accessibility interfaces (``QAccessible.queryAccessibleInterface``), not widget properties.
"""

from __future__ import annotations

import sys

import pytest

from PySide6.QtCore import Qt
from PySide6.QtGui import QAccessible, QAccessibleInterface, QColor
from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractItemView,
    QAbstractSpinBox,
    QComboBox,
    QLineEdit,
    QPlainTextEdit,
    QWidget,
)

from qargo_desktop.core.config import Settings
from qargo_desktop.core.models import LinkStatus
from qargo_desktop.ui import dialogs, texts
from qargo_desktop.ui.mailbox_model import COLUMN_COUNT, COLUMN_STATUS, MailboxTableModel
from qargo_desktop.ui.main_window import MainWindow
from qargo_desktop.ui.preferences import PreferencesDialog
from qargo_desktop.ui.theme import (
    DARK,
    LIGHT,
    STATUS_ICON_FILES,
    WINDOW_COLOURS,
    MessageLevel,
    Theme,
    contrast_ratio,
)
from tests.ui.conftest import every_state

CONTROLS = (QAbstractButton, QLineEdit, QComboBox, QAbstractItemView, QAbstractSpinBox,
            QPlainTextEdit)  # fmt: skip


def name_of(widget: QWidget) -> str:
    return accessible(widget).text(QAccessible.Text.Name)


def description_of(widget: QWidget) -> str:
    return accessible(widget).text(QAccessible.Text.Description)


def accessible(widget: QWidget) -> QAccessibleInterface:
    interface = QAccessible.queryAccessibleInterface(widget)
    assert interface is not None, widget
    return interface


def controls(root: QWidget) -> list[QWidget]:
    """Every control a person can reach in ``root`` right now."""
    found = [w for w in root.findChildren(QWidget) if isinstance(w, CONTROLS) and w.isVisible()]
    # Qt's own parts of a control (a spin box's text field) are read as that control.
    return [w for w in found if not w.objectName().startswith("qt_")]


def unnamed(root: QWidget) -> list[str]:
    missing = []
    for widget in controls(root):
        if widget.parent() is not None and type(widget.parent()).__name__ == "QScrollBar":
            continue
        if not name_of(widget).strip():
            missing.append(f"{type(widget).__name__} {widget.objectName()!r}")
    return missing


def combo_named(combo: QComboBox, name: str) -> bool:
    """A combo box's name; on Linux Qt reads its value as the name and the label as a relation."""
    spoken = name_of(combo)
    expected = name if sys.platform in ("win32", "darwin") else combo.currentText()
    return combo.accessibleName() == name and spoken == expected


def select(window: MainWindow, status: str) -> None:
    mailbox = next(m for m in window.model.mailboxes() if m.raw_status == status)
    assert window.select_mailbox(mailbox.id)


# -- names and descriptions ------------------------------------------------------------------


@pytest.mark.parametrize("status", ["linked", "unlinked", "link_failed", "authorising"])
def test_every_control_of_the_mailbox_page_has_a_name(signed_in_window, status) -> None:
    window = signed_in_window
    select(window, status)
    assert not unnamed(window), unnamed(window)
    assert name_of(window.search_box) == "Search mailboxes"
    assert combo_named(window.status_filter, "Status filter")
    assert name_of(window.table) == "Mailboxes"
    assert "Arrow keys" in description_of(window.table)
    assert name_of(window.detail_pane) == "Mailbox details"
    assert name_of(window.detail_pane.audit_list) == "Audit trail"


def test_actions_say_what_they_do_and_their_shortcut(signed_in_window) -> None:
    window = signed_in_window
    select(window, "link_failed")
    reset = window.detail_pane.action_buttons[texts.MailboxAction.RESET]
    assert name_of(reset) == "Reset API link status"
    assert "failed link" in description_of(reset)
    assert description_of(reset).endswith("(Ctrl+Shift+R)")
    assert description_of(window.refresh_button) == "Load the list again (F5)"


def test_the_detail_pane_tells_the_state_in_words(signed_in_window) -> None:
    window = signed_in_window
    select(window, "reauthorisation_required")
    frame = window.detail_pane.status_frame
    assert name_of(frame) == (
        "Status: Pending authorisation: Reauthorise API. "
        "Choose Reauthorise API and sign in as the mailbox account."
    )
    for key, label in window.detail_pane.fields.items():
        if label.isVisible():
            assert name_of(label), key


def test_status_bar_labels_are_named(signed_in_window) -> None:
    window = signed_in_window
    assert name_of(window.connection_label) == "Connection: Online"
    assert name_of(window.refreshed_label).startswith("Refreshed ")


def test_message_bar_entries_say_their_level_in_words(signed_in_window) -> None:
    window = signed_in_window
    window.show_message("Something failed.", level=MessageLevel.ERROR, key="x")
    window.show_message("Heads up.", level=MessageLevel.WARNING, key="y")
    frames = [f for f in window.message_bar.findChildren(QWidget, "messageBarEntry")]
    assert sorted(name_of(f) for f in frames) == ["Error", "Warning"]
    assert {description_of(f) for f in frames} == {"Something failed.", "Heads up."}
    assert not unnamed(window.message_bar)


def test_every_control_of_the_sign_in_and_first_run_pages_has_a_name(qtbot, window_state):
    window = MainWindow(Settings(refresh_interval_s=0), window_state=window_state,
                        theme=Theme(dark=False))  # fmt: skip
    qtbot.addWidget(window)
    window.show()
    window.show_first_run(["client_id", "authority"], None)
    assert not unnamed(window.first_run_page)
    window.pages.setCurrentWidget(window.sign_in_page)
    window.sign_in_page.show_error("The network is down.")
    assert not unnamed(window.sign_in_page)
    assert name_of(window.sign_in_page.sign_in_button) == "Sign in with Microsoft"
    assert "browser" in description_of(window.sign_in_page.sign_in_button)


def test_every_control_of_every_dialog_has_a_name(qtbot, tmp_path) -> None:
    built: list[QWidget] = [
        PreferencesDialog(None, Settings(config_dir=tmp_path)),
        dialogs.AddMailboxDialog(),
        dialogs.CrashDialog(None, "Traceback ..."),
        dialogs.build_about(None, "details"),
    ]
    wait = dialogs.SignInWaitDialog(None, deadline_s=30)
    wait.set_auth_uri("http://127.0.0.1:9/authorize")
    built.append(wait)
    box, _yes = dialogs.build_confirmation(None, title="t", text="x", confirm_label="Do it")
    built.append(box)
    for dialog in built:
        qtbot.addWidget(dialog)
        dialog.show()
        assert not unnamed(dialog), (dialog.windowTitle(), unnamed(dialog))
    preferences = built[0]
    assert isinstance(preferences, PreferencesDialog)
    assert combo_named(preferences.language, "Language")
    assert name_of(preferences.refresh_interval) == "Refresh interval in seconds"
    assert "0 turns automatic refresh off" in description_of(preferences.refresh_interval)
    wait.finish()


# -- the table's state cells -----------------------------------------------------------------


def _cell(window: MainWindow, row: int, column: int) -> QAccessibleInterface:
    table = accessible(window.table)
    for index in range(table.childCount()):
        child = table.child(index)
        if child.role() != QAccessible.Role.Cell:
            continue
        # Cells come row by row after the column headers (the row header is hidden).
        cells = [table.child(i) for i in range(table.childCount())
                 if table.child(i).role() == QAccessible.Role.Cell]  # fmt: skip
        return cells[row * COLUMN_COUNT + column]
    raise AssertionError("the table has no cells")


@pytest.mark.parametrize("mailbox", every_state(), ids=lambda m: m.raw_status)
def test_each_state_cell_is_told_in_words_never_colour_alone(signed_in_window, mailbox) -> None:
    window = signed_in_window
    index = window.proxy.index_of(mailbox.id, COLUMN_STATUS)
    cell = _cell(window, index.row(), COLUMN_STATUS)
    label = texts.mailbox_status_label(mailbox)
    assert cell.text(QAccessible.Text.Name) == (
        f"Status: {label}. {texts.status_next_step(mailbox.status)}"
    )
    assert texts.status_meaning(mailbox.status) in cell.text(QAccessible.Text.Description)
    if mailbox.status is LinkStatus.UNKNOWN:
        assert "suspended" in cell.text(QAccessible.Text.Name)


def test_the_other_cells_read_their_text_or_say_empty(signed_in_window) -> None:
    window = signed_in_window
    mailbox = next(m for m in window.model.mailboxes() if m.raw_status == "unlinked")
    row = window.proxy.index_of(mailbox.id).row()
    names = [_cell(window, row, column).text(QAccessible.Text.Name)
             for column in range(COLUMN_COUNT)]  # fmt: skip
    assert names[0] == mailbox.address
    assert names[3] == "Never"
    assert names[4] == "empty"


def test_the_column_headers_are_named_and_described(signed_in_window) -> None:
    table = accessible(signed_in_window.table)
    headers = [table.child(i) for i in range(table.childCount())
               if table.child(i).role() == QAccessible.Role.ColumnHeader]  # fmt: skip
    assert [h.text(QAccessible.Text.Name) for h in headers] == [
        "Mailbox", "Display name", "Status", "Last sync", "Last error",
    ]  # fmt: skip


# -- colour: readable in both themes, never alone --------------------------------------------


@pytest.mark.parametrize("dark", [False, True], ids=["light", "dark"])
@pytest.mark.parametrize("mailbox", every_state(), ids=lambda m: m.raw_status)
def test_every_state_colour_pair_the_table_draws_has_aa_contrast(dark, mailbox) -> None:
    model = MailboxTableModel(Theme(dark=dark))
    model.set_mailboxes([mailbox])
    index = model.index(0, COLUMN_STATUS)
    foreground = index.data(Qt.ItemDataRole.ForegroundRole)
    background = index.data(Qt.ItemDataRole.BackgroundRole)
    assert isinstance(foreground, QColor) and isinstance(background, QColor)
    ratio = contrast_ratio(foreground.name(), background.name())
    assert ratio >= 4.5, f"{mailbox.raw_status} {'dark' if dark else 'light'}: {ratio:.2f}"


@pytest.mark.parametrize("palette", [LIGHT, DARK], ids=lambda p: p.name)
def test_message_and_connection_colours_have_aa_contrast_on_the_window(palette) -> None:
    window = WINDOW_COLOURS[palette.name]
    from PySide6.QtGui import QPalette

    background = window[QPalette.ColorRole.Window]
    for level, pair in palette.messages.items():
        assert contrast_ratio(pair.foreground, pair.background) >= 4.5, level
    for colour in (palette.online, palette.offline):
        assert contrast_ratio(colour, background) >= 4.5, colour


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_apps_own_window_palettes_have_aa_contrast(scheme) -> None:
    from PySide6.QtGui import QPalette

    colours = WINDOW_COLOURS[scheme]
    role = QPalette.ColorRole
    for text, background in (
        (role.WindowText, role.Window),
        (role.Text, role.Base),
        (role.Text, role.AlternateBase),
        (role.ButtonText, role.Button),
        (role.HighlightedText, role.Highlight),
        (role.ToolTipText, role.ToolTipBase),
        (role.PlaceholderText, role.Base),
    ):
        ratio = contrast_ratio(colours[text], colours[background])
        assert ratio >= 4.5, (scheme, text, background, round(ratio, 2))


def test_each_state_has_its_own_icon_and_words() -> None:
    # Colour never stands alone: a distinct shape and distinct words per state.
    known = [s for s in LinkStatus if s is not LinkStatus.UNKNOWN]
    assert len({STATUS_ICON_FILES[s] for s in known}) == len(known)
    assert len({texts.status_label(s) for s in LinkStatus}) == len(LinkStatus)
