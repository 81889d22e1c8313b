"""Secrets in the window: in a shared remote session every pixel is public.

The real window signs in through the sandbox, lists the mailboxes, shows a mailbox's
details and its audit trail; then every title, text, tooltip, status tip, accessible name
and every item of every model in the window is read back and checked against every token
and code the sandbox issued.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import QAbstractItemModel, QModelIndex, QSettings, Qt
from PySide6.QtWidgets import QApplication, QDialog, QMessageBox, QWidget

from qargo_desktop.core.bootstrap import build_services, sandbox_overrides
from qargo_desktop.core.config import Settings
from qargo_desktop.sandbox import browser
from qargo_desktop.sandbox.server import Sandbox
from qargo_desktop.sandbox.world import SandboxOptions
from qargo_desktop.ui.main_window import MainWindow, Page
from qargo_desktop.ui.theme import Theme
from tests.reliability.conftest import ADMIN, leaked

pytestmark = pytest.mark.qt_log_ignore(r"This plugin does not support (propagateSizeHints|raise)")

ROLES = (
    Qt.ItemDataRole.DisplayRole,
    Qt.ItemDataRole.ToolTipRole,
    Qt.ItemDataRole.StatusTipRole,
    Qt.ItemDataRole.WhatsThisRole,
    Qt.ItemDataRole.AccessibleTextRole,
    Qt.ItemDataRole.AccessibleDescriptionRole,
)


@pytest.fixture
def window(
    qtbot: Any, sandbox_certs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[MainWindow, Sandbox]]:
    for cls in (QDialog, QMessageBox):
        monkeypatch.setattr(cls, "exec", lambda *_a: pytest.fail("a modal dialog opened"))
    box = Sandbox(SandboxOptions(data_dir=sandbox_certs, delivery_delay_s=0.5, sync_delay_s=0.5))
    info = box.start()
    try:
        settings = dataclasses.replace(
            Settings(config_dir=tmp_path / "config", refresh_interval_s=0, sign_in_timeout_s=30),
            **sandbox_overrides(info),  # type: ignore[arg-type]
        )
        state = QSettings(str(tmp_path / "window-state.ini"), QSettings.Format.IniFormat)
        main = MainWindow(settings, window_state=state, theme=Theme(dark=False))
        qtbot.addWidget(main)
        main.show()

        def opener(url: str) -> bool:
            browser.run(url, account=ADMIN, ca_certificate=str(info.ca_certificate),
                        say=lambda _line: None)  # fmt: skip
            return True

        main.browser_opener = opener
        main.attach_services(build_services(settings))
        yield main, box
        main.close()
    finally:
        box.stop()


def _model_texts(model: QAbstractItemModel, parent: QModelIndex | None = None) -> list[str]:
    parent = parent or QModelIndex()
    texts = []
    try:
        columns = model.columnCount(parent)
    except TypeError:  # list models keep it private: one column
        columns = 1
    for row in range(model.rowCount(parent)):
        for column in range(columns):
            index = model.index(row, column, parent)
            texts += [str(index.data(role)) for role in ROLES if index.data(role) is not None]
            try:
                nested = model.hasChildren(index)
            except TypeError:  # private in list and table models: no tree there
                nested = False
            if nested:
                texts += _model_texts(model, index)
    for column in range(columns):
        for role in ROLES:
            value = model.headerData(column, Qt.Orientation.Horizontal, role)
            if value is not None:
                texts.append(str(value))
    return texts


def everything_shown() -> str:
    """Every text a person (or a screen share) can see or a screen reader can read."""
    texts: list[str] = []
    for widget in QApplication.allWidgets():
        texts += [widget.windowTitle(), widget.toolTip(), widget.statusTip(),
                  widget.whatsThis(), widget.accessibleName(),
                  widget.accessibleDescription()]  # fmt: skip
        for getter in ("text", "toPlainText", "placeholderText", "currentText"):
            method = getattr(widget, getter, None)
            if callable(method):
                with contextlib.suppress(TypeError):  # a getter that needs arguments
                    texts.append(str(method()))
        model = getattr(widget, "model", None)
        if callable(model) and isinstance(model(), QAbstractItemModel):
            texts += _model_texts(model())
        for action in widget.actions():
            texts += [action.text(), action.toolTip(), action.statusTip()]
    clipboard = QApplication.clipboard()
    texts.append(clipboard.text() if clipboard is not None else "")
    return "\n".join(texts)


def test_no_title_tooltip_or_text_in_the_window_shows_a_token(qtbot: Any, window: Any) -> None:
    main, box = window
    qtbot.waitUntil(lambda: main.current_page is Page.SIGN_IN, timeout=10_000)
    with qtbot.waitSignal(main.refresh_finished, timeout=30_000):
        main.sign_in_page.sign_in_button.click()
    assert main.current_page is Page.MAILBOXES
    mailbox = main.model.mailboxes()[0]
    assert main.select_mailbox(mailbox.id)
    qtbot.waitUntil(lambda: main.detail_pane.audit_list.count() > 0, timeout=10_000)
    for widget in QApplication.topLevelWidgets():
        if isinstance(widget, QWidget) and widget.isVisible():
            widget.repaint()

    shown = everything_shown()
    assert ADMIN in shown  # the scan does see what the window shows
    secrets = {s for s in box.issued_secrets() if len(s) >= 8}
    assert secrets
    found = leaked(shown, secrets)
    assert not found, f"tokens or codes visible in the window: {found}"
    assert "Bearer " not in shown and "eyJ" not in shown

    # What the window remembers between runs holds none either.
    main.save_state()
    remembered = Path(main._state.fileName()).read_bytes().decode("latin-1")
    assert "geometry=" in remembered
    assert not leaked(remembered, secrets)
