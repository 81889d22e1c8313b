"""The link lifecycle in the real window against the real sandbox: a red row to Unlinked
and then to Linked, confirmations, conflicts, the wrong account, cancel and add/remove."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

from qargo_desktop.core.models import LinkStatus
from qargo_desktop.ui import dialogs
from qargo_desktop.ui.main_window import MainWindow
from tests.ui.test_window_sandbox import DOMAIN, Live, live, row_of, sign_in, status_cell

__all__ = ["live"]  # the fixture, imported for this module's tests

RED = f"claims@{DOMAIN}"
UNLINKED = f"sales@{DOMAIN}"


def select(window: MainWindow, address: str) -> None:
    index = window.proxy.index(row_of(window, address), 0)
    assert window.select_mailbox(window.proxy.mailbox(index).id)


def status_of(window: MainWindow, address: str) -> str:
    return str(status_cell(window, address))


def messages(window: MainWindow) -> str:
    """Every message in the bar, newest first, as one text."""
    return "\n".join(text for _key, text, _count in window.message_bar.messages())


def test_red_row_to_unlinked_to_linked_from_the_keyboard(qtbot, live: Live, monkeypatch) -> None:
    window = live.window
    sign_in(qtbot, live)
    asked: list[str] = []

    def confirm(parent: object, mailbox: object) -> bool:
        asked.append(mailbox.address)  # type: ignore[attr-defined]
        return True

    monkeypatch.setattr(dialogs, "confirm_reset", confirm)
    select(window, RED)
    assert window.mailbox_actions[dialogs_action("RESET")].isEnabled()
    assert not window.mailbox_actions[dialogs_action("AUTHORISE")].isEnabled()
    QTest.keySequence(window, "Ctrl+Shift+R")
    assert asked == [RED]
    qtbot.waitUntil(lambda: status_of(window, RED) == "Unlinked", timeout=10_000)

    live.use_account(RED)
    select(window, RED)
    qtbot.waitUntil(window.mailbox_actions[dialogs_action("AUTHORISE")].isEnabled)
    QTest.keySequence(window, "Ctrl+L")
    qtbot.waitUntil(lambda: status_of(window, RED) == "Linked", timeout=20_000)
    assert "login_hint=claims%40" in live.opened[-1]
    # The audit trail names this admin and this app for both steps.
    trail = live.sandbox.world.api_store.find_by_address(RED).events
    mine = [e for e in trail if e.actor == f"admin@{DOMAIN}" and e.app_version]
    assert {"link_reset", "authorisation_started", "mailbox_linked"} <= {e.action for e in mine}


def test_reset_refused_changes_nothing(qtbot, live: Live, monkeypatch) -> None:
    window = live.window
    sign_in(qtbot, live)
    monkeypatch.setattr(dialogs, "confirm_reset", lambda parent, mailbox: False)
    select(window, RED)
    window.mailbox_actions[dialogs_action("RESET")].trigger()
    qtbot.wait(300)
    assert status_of(window, RED) == "Pending authorisation: Reset API link status"
    record = live.sandbox.world.api_store.find_by_address(RED)
    assert record.status == "link_failed"


def test_concurrent_change_refreshes_the_row_and_says_so(qtbot, live: Live, monkeypatch) -> None:
    window = live.window
    sign_in(qtbot, live)
    monkeypatch.setattr(dialogs, "confirm_reset", lambda parent, mailbox: True)
    record = live.sandbox.world.api_store.find_by_address(RED)
    # Another admin resets it first; this window still shows it red.
    live.sandbox.world.api_store.admin_update(record.id, status="unlinked")
    select(window, RED)
    window.mailbox_actions[dialogs_action("RESET")].trigger()
    qtbot.waitUntil(lambda: status_of(window, RED) == "Unlinked", timeout=10_000)
    qtbot.waitUntil(lambda: "someone else changed" in messages(window).lower())


def test_wrong_account_names_both_and_offers_try_again(qtbot, live: Live) -> None:
    window = live.window
    sign_in(qtbot, live)
    live.use_account(f"dispatcher@{DOMAIN}")
    select(window, UNLINKED)
    window.mailbox_actions[dialogs_action("AUTHORISE")].trigger()
    qtbot.waitUntil(lambda: "dispatcher@" in messages(window), timeout=20_000)
    text = messages(window)
    assert UNLINKED in text and "private window" in text
    assert status_of(window, UNLINKED) == "Pending authorisation: Reset API link status"


def test_cancel_in_the_dialog_stops_the_attempt(qtbot, live: Live) -> None:
    window = live.window
    sign_in(qtbot, live)
    live.use_account(UNLINKED, action="ignore")
    select(window, UNLINKED)
    record = live.sandbox.world.api_store.find_by_address(UNLINKED)
    window.mailbox_actions[dialogs_action("AUTHORISE")].trigger()
    qtbot.waitUntil(lambda: window.link_actions.authorisation_dialog(record.id) is not None)
    dialog = window.link_actions.authorisation_dialog(record.id)
    assert dialog is not None
    qtbot.waitUntil(lambda: dialog.link.text().startswith("http://127.0.0.1:"), timeout=10_000)
    qtbot.mouseClick(dialog.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not window.link_actions.busy(record.id), timeout=5_000)
    qtbot.waitUntil(
        lambda: status_of(window, UNLINKED) == "Pending authorisation: Reset API link status"
    )
    assert live.sandbox.world.api_store.find_by_address(UNLINKED).status == "link_failed"


def test_closing_the_window_cancels_a_running_attempt(qtbot, live: Live) -> None:
    window = live.window
    sign_in(qtbot, live)
    live.use_account(UNLINKED, action="ignore")
    select(window, UNLINKED)
    record = live.sandbox.world.api_store.find_by_address(UNLINKED)
    window.mailbox_actions[dialogs_action("AUTHORISE")].trigger()
    qtbot.waitUntil(lambda: live.sandbox.world.api_store.get(record.id).status == "authorising")
    window.close()
    # The attempt is recorded as ended, not left to expire.
    assert live.sandbox.world.api_store.get(record.id).status == "link_failed"


def test_add_and_remove(qtbot, live: Live, monkeypatch) -> None:
    window = live.window
    sign_in(qtbot, live)
    monkeypatch.setattr(
        dialogs, "ask_new_mailbox", lambda parent: ("New.Desk@Northwind-Haulage.example", "")
    )
    window.add_action.trigger()
    address = f"new.desk@{DOMAIN}"
    qtbot.waitUntil(lambda: status_of_or_none(window, address) == "Unlinked", timeout=10_000)
    window.add_action.trigger()
    qtbot.waitUntil(lambda: "already" in messages(window), timeout=10_000)

    monkeypatch.setattr(dialogs, "confirm_remove", lambda parent, mailbox: True)
    select(window, address)
    window.mailbox_actions[dialogs_action("REMOVE")].trigger()
    qtbot.waitUntil(lambda: status_of_or_none(window, address) is None, timeout=10_000)
    assert live.sandbox.world.api_store.find_by_address(address) is None


def status_of_or_none(window: MainWindow, address: str) -> str | None:
    try:
        return status_of(window, address)
    except AssertionError:
        return None


def dialogs_action(name: str):  # type: ignore[no-untyped-def]
    from qargo_desktop.core.models import MailboxAction

    return MailboxAction[name]


def test_states_offer_their_actions(qtbot, live: Live) -> None:
    window = live.window
    sign_in(qtbot, live)
    select(window, f"dispatch@{DOMAIN}")
    enabled = {k.name for k, a in window.mailbox_actions.items() if a.isEnabled()}
    assert enabled == {"REAUTHORISE", "SELFTEST", "REMOVE"}
    select(window, f"archive@{DOMAIN}")
    assert not any(a.isEnabled() for a in window.mailbox_actions.values())
    assert window.model.find(window.selected_mailbox().id).status is LinkStatus.UNKNOWN
