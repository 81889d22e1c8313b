"""Fixtures of the window tests: no stray modal dialog, a window state file, mailboxes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QDialog, QFileDialog, QInputDialog, QMessageBox

from qargo_desktop.core.models import LastError, LinkStatus, Mailbox

NOW = datetime(2025, 3, 14, 9, 30, tzinfo=UTC)

# The offscreen platform says these when a top-level window is shown or raised: platform noise,
# not a problem of the app, so it alone does not fail a test.
_PLATFORM_NOISE = r"This plugin does not support (propagateSizeHints|raise)\(\)"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/ui/" in item.nodeid.replace("\\", "/"):
            item.add_marker(pytest.mark.qt_log_ignore(_PLATFORM_NOISE))


@pytest.fixture(autouse=True)
def _application(qapp: Any) -> Any:
    """Every UI test needs the QApplication (icons and pixmaps abort without one).

    The window speaks British English in tests, with the English catalogue's plural forms
    (``1 hour ago``), whatever the machine's locale; a test that switches language gets
    English back afterwards.
    """
    from qargo_desktop.ui import i18n

    if i18n.current_language() != i18n.SOURCE_LANGUAGE or not _english_installed:
        i18n.install_language("en-GB")
        _english_installed.append(True)
    return qapp


_english_installed: list[bool] = []


@pytest.fixture(autouse=True)
def no_modal_dialogs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Make any modal exec() that a test did not replace fail the test instead of hanging.

    Tests replace the functions of ``qargo_desktop.ui.dialogs``; anything that still
    reaches a real modal loop is a bug in the code or the test.
    """
    stray: list[str] = []

    def refuse(name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            target = args[0] if args else None
            title = target.windowTitle() if hasattr(target, "windowTitle") else ""
            stray.append(f"{name} ({title})" if title else name)
            raise AssertionError(f"a modal dialog was opened: {name} {title!r}")

        return call

    for cls in (QDialog, QMessageBox, QInputDialog, QFileDialog):
        monkeypatch.setattr(cls, "exec", refuse(f"{cls.__name__}.exec"))
    for name in ("information", "warning", "critical", "question", "about", "aboutQt"):
        monkeypatch.setattr(QMessageBox, name, refuse(f"QMessageBox.{name}"))
    for name in ("getText", "getItem", "getInt", "getDouble", "getMultiLineText"):
        monkeypatch.setattr(QInputDialog, name, refuse(f"QInputDialog.{name}"))
    for name in ("getOpenFileName", "getSaveFileName", "getExistingDirectory"):
        monkeypatch.setattr(QFileDialog, name, refuse(f"QFileDialog.{name}"))
    yield stray
    assert not stray, f"modal dialogs were opened: {stray}"


@pytest.fixture
def window_state(tmp_path: Path) -> QSettings:
    """A window state file of the test's own."""
    return QSettings(str(tmp_path / "window-state.ini"), QSettings.Format.IniFormat)


def make_mailbox(number: int = 1, status: str = "linked", **changes: Any) -> Mailbox:
    """A mailbox as the API would describe it."""
    values: dict[str, Any] = {
        "id": f"mbx-{number:05d}",
        "address": f"user{number:05d}@northwind-haulage.example",
        "display_name": f"User {number:05d}",
        "status": LinkStatus.parse(status),
        "raw_status": status,
        "etag": f'W/"{number}-1"',
        "last_sync_at": NOW - timedelta(minutes=5),
    }
    values.update(changes)
    return Mailbox(**values)


def every_state() -> list[Mailbox]:
    """One mailbox per state, including one the app does not know."""
    return [
        make_mailbox(1, "linked", address="planning@northwind-haulage.example",
                     display_name="Planning"),
        make_mailbox(2, "unlinked", address="invoices@northwind-haulage.example",
                     display_name="Invoices", last_sync_at=None),
        make_mailbox(3, "reauthorisation_required", address="sales@northwind-haulage.example",
                     display_name="Sales",
                     last_error=LastError("AADSTS50173", "grant revoked", NOW)),
        make_mailbox(4, "link_failed", address="customs@northwind-haulage.example",
                     display_name="Customs",
                     last_error=LastError("attempt_expired", "expired", NOW)),
        make_mailbox(5, "authorising", address="dispatch@northwind-haulage.example",
                     display_name="Dispatch", attempt_id="att-1",
                     attempt_expires_at=NOW + timedelta(minutes=10)),
        make_mailbox(6, "suspended", address="archive@northwind-haulage.example",
                     display_name="Archive",
                     last_error=LastError("quota_exceeded", "Mailbox is full", NOW)),
    ]  # fmt: skip


@pytest.fixture
def signed_in_window(
    qtbot: Any, window_state: QSettings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Any:
    """A shown main window, signed in, listing one mailbox per state; nothing selected.

    The link actions are replaced by recorders (``window.requested``), so shortcuts and
    buttons can be pressed without dialogs or a network.
    """
    from qargo_desktop.core.config import Settings
    from qargo_desktop.ui.link_actions import LinkActions
    from qargo_desktop.ui.main_window import MainWindow
    from qargo_desktop.ui.theme import Theme
    from tests.ui.fakes import FakeApi, FakeServices, session_for

    requested: list[tuple[str, str]] = []
    for name in ("authorise", "reset", "remove", "cancel", "selftest", "add"):
        monkeypatch.setattr(LinkActions, name, lambda *_args: None)
    window = MainWindow(
        Settings(refresh_interval_s=0, config_dir=tmp_path / "config"),
        window_state=window_state,
        theme=Theme(dark=False),
        clock=lambda: NOW,
    )
    window.requested = requested  # type: ignore[attr-defined]
    for signal_name in (
        "authorise_requested",
        "reauthorise_requested",
        "reset_requested",
        "selftest_requested",
        "remove_requested",
        "cancel_authorisation_requested",
    ):
        getattr(window, signal_name).connect(
            lambda mailbox, name=signal_name: requested.append((name, mailbox.address))
        )
    window.add_requested.connect(lambda: requested.append(("add_requested", "")))
    window.folder_opener = lambda folder: True
    qtbot.addWidget(window)
    window.show()
    services = FakeServices(api=FakeApi(mailboxes=every_state()), silent=session_for())
    with qtbot.waitSignal(window.refresh_finished, timeout=5000):
        window.attach_services(services)
    yield window
    window.tasks.shutdown(5000)
