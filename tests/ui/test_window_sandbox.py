"""The real window against a real in-process sandbox: MSAL, the scripted browser, the API.

Nothing here is faked: the admin signs in through MSAL's interactive flow (the loopback
listener, PKCE, form_post) with the sandbox's scripted browser acting as the person, the
list comes from the sandbox's organisation API, and server-side changes come through the
sandbox's own control hooks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtTest import QTest

from qargo_desktop.core.bootstrap import build_services, sandbox_overrides
from qargo_desktop.core.config import Settings
from qargo_desktop.core.models import LinkStatus
from qargo_desktop.sandbox import browser
from qargo_desktop.sandbox.server import Sandbox
from qargo_desktop.sandbox.world import SandboxOptions
from qargo_desktop.ui.mailbox_model import COLUMN_ADDRESS, COLUMN_STATUS
from qargo_desktop.ui.main_window import ConnectionState, MainWindow, Page
from qargo_desktop.ui.theme import LIGHT, Theme

DOMAIN = "northwind-haulage.example"
ADMIN = f"admin@{DOMAIN}"

# One seed mailbox per state, and what the window must say about it.
EXPECTED = {
    f"dispatch@{DOMAIN}": (LinkStatus.LINKED, "Linked"),
    f"sales@{DOMAIN}": (LinkStatus.UNLINKED, "Unlinked"),
    f"operations@{DOMAIN}": (
        LinkStatus.REAUTHORISATION_REQUIRED, "Pending authorisation: Reauthorise API"),
    f"claims@{DOMAIN}": (LinkStatus.LINK_FAILED, "Pending authorisation: Reset API link status"),
    f"bookings@{DOMAIN}": (LinkStatus.AUTHORISING, "Authorising..."),
    f"archive@{DOMAIN}": (LinkStatus.UNKNOWN, "Unknown (suspended)"),
}  # fmt: skip


@dataclasses.dataclass
class Live:
    sandbox: Sandbox
    settings: Settings
    window: MainWindow
    opened: list[str]

    def use_account(self, username: str, action: str = "accept") -> None:
        ca = str(self.sandbox.info.ca_certificate)

        def opener(url: str) -> bool:
            # Runs on the sign-in listener's opener thread, as a browser process would.
            self.opened.append(url)
            browser.run(url, account=username, action=action, ca_certificate=ca,
                        say=lambda _line: None)  # fmt: skip
            return True

        self.window.browser_opener = opener


@pytest.fixture
def live(qtbot, sandbox_certs: Path, tmp_path: Path, window_state) -> Iterator[Live]:
    box = Sandbox(SandboxOptions(data_dir=sandbox_certs, delivery_delay_s=0.5, sync_delay_s=0.5))
    info = box.start()
    try:
        settings = dataclasses.replace(
            Settings(config_dir=tmp_path / "config", refresh_interval_s=0, sign_in_timeout_s=30),
            **sandbox_overrides(info),  # type: ignore[arg-type]
        )
        window = MainWindow(settings, window_state=window_state, theme=Theme(dark=False))
        qtbot.addWidget(window)
        window.show()
        state = Live(box, settings, window, [])
        state.use_account(ADMIN)
        # Built here, as the app builds it on a worker thread: keyring and disk I/O.
        window.attach_services(build_services(settings))
        yield state
        window.close()
    finally:
        box.stop()


def row_of(window: MainWindow, address: str) -> int:
    for row in range(window.proxy.rowCount()):
        if window.proxy.index(row, COLUMN_ADDRESS).data() == address:
            return row
    raise AssertionError(f"{address} is not in the table")


def status_cell(window: MainWindow, address: str, role: Any = Qt.ItemDataRole.DisplayRole) -> Any:
    return window.proxy.index(row_of(window, address), COLUMN_STATUS).data(role)


def sign_in(qtbot, live: Live) -> None:
    qtbot.waitUntil(lambda: live.window.current_page is Page.SIGN_IN, timeout=10_000)
    with qtbot.waitSignal(live.window.refresh_finished, timeout=20_000) as blocker:
        qtbot.mouseClick(live.window.sign_in_page.sign_in_button, Qt.MouseButton.LeftButton)
    assert blocker.args == [None]


def wait_refreshed(qtbot, window: MainWindow, trigger: Callable[[], None]) -> Any:
    with qtbot.waitSignal(window.refresh_finished, timeout=20_000) as blocker:
        trigger()
    return blocker.args[0]


def test_sign_in_see_every_state_refresh_after_a_change_and_sign_out(qtbot, live: Live) -> None:
    window = live.window
    sign_in(qtbot, live)

    # Signed in through the browser, as the admin.
    assert live.opened and live.opened[0].startswith("http://127.0.0.1:")
    assert window.current_page is Page.MAILBOXES
    assert window.admin_label.text() == f"Signed in as {ADMIN}"
    assert "Northwind Haulage" in window.organisation_label.text()
    assert window.connection_state is ConnectionState.ONLINE

    # Every state, with its label, colours, icon and tooltip.
    for address, (status, label) in EXPECTED.items():
        assert status_cell(window, address) == label
        foreground = status_cell(window, address, Qt.ItemDataRole.ForegroundRole)
        background = status_cell(window, address, Qt.ItemDataRole.BackgroundRole)
        assert isinstance(foreground, QColor) and isinstance(background, QColor)
        assert foreground.name() == LIGHT.status[status].foreground
        assert background.name() == LIGHT.status[status].background
        tooltip = status_cell(window, address, Qt.ItemDataRole.ToolTipRole)
        assert tooltip.startswith(label) and len(tooltip.splitlines()) >= 3
        assert not status_cell(window, address, Qt.ItemDataRole.DecorationRole).isNull()

    # The selected mailbox's audit trail comes from the API.
    assert window.select_mailbox(window.model.mailboxes()[0].id)
    pane = window.detail_pane
    qtbot.waitUntil(lambda: pane.audit_list.count() > 0, timeout=10_000)

    # Nothing changed: the conditional GET answers 304 and the model is left alone.
    resets: list[bool] = []
    window.model.modelReset.connect(lambda: resets.append(True))
    etag = window._etag
    assert wait_refreshed(qtbot, window, lambda: QTest.keyClick(window, Qt.Key.Key_F5)) is None
    assert window._etag == etag and not resets

    # The server revokes the dispatch mailbox's grant; a refresh shows it needs reauthorising.
    window.select_mailbox(
        window.proxy.mailbox(window.proxy.index(row_of(window, f"dispatch@{DOMAIN}"), 0)).id
    )
    live.sandbox.revoke_grant(f"dispatch@{DOMAIN}")
    assert wait_refreshed(qtbot, window, window.refresh) is None
    assert window._etag != etag and not resets
    assert status_cell(window, f"dispatch@{DOMAIN}") == "Pending authorisation: Reauthorise API"
    qtbot.waitUntil(lambda: pane.status_label.text() == "Pending authorisation: Reauthorise API")

    # Sign out: the list goes, the saved sign-in goes.
    with qtbot.waitSignal(window.signed_out, timeout=10_000):
        window.sign_out_action.trigger()
    assert window.model.rowCount() == 0
    assert window.current_page is Page.SIGN_IN
    assert window.services is not None
    assert window.services.admin_identity.accounts() == []


def test_a_revoked_admin_sign_in_keeps_the_list_and_signs_in_again(qtbot, live: Live) -> None:
    window = live.window
    sign_in(qtbot, live)
    rows = window.model.rowCount()
    window.search_box.setText("northwind")

    # The admin's grant is revoked and the access token runs out on the server's clock.
    live.sandbox.revoke_grant(ADMIN)
    live.sandbox.world.clock.advance(2 * 3600)
    error = wait_refreshed(qtbot, window, window.refresh)
    assert error is not None
    assert window.current_page is Page.MAILBOXES
    assert window.model.rowCount() == rows and window.stale
    assert window.connection_state is ConnectionState.SIGN_IN_EXPIRED
    assert window.message_bar.has("sign-in")

    entry = window.message_bar._messages["sign-in"]
    assert (
        wait_refreshed(
            qtbot, window, lambda: qtbot.mouseClick(entry.button, Qt.MouseButton.LeftButton)
        )
        is None
    )
    assert not window.stale and window.connection_state is ConnectionState.ONLINE
    assert window.search_box.text() == "northwind"
    assert window.model.rowCount() == rows


def test_an_ordinary_user_is_told_they_are_not_a_super_admin(qtbot, live: Live) -> None:
    window = live.window
    live.use_account(f"dispatcher@{DOMAIN}")
    qtbot.waitUntil(lambda: window.current_page is Page.SIGN_IN, timeout=10_000)
    qtbot.mouseClick(window.sign_in_page.sign_in_button, Qt.MouseButton.LeftButton)
    page = window.sign_in_page
    qtbot.waitUntil(page.switch_button.isVisible, timeout=20_000)
    assert f"dispatcher@{DOMAIN}" in page.intro.text()
    assert window.model.rowCount() == 0

    # Use another account: sign out, then the browser signs in the real admin.
    live.use_account(ADMIN)
    with qtbot.waitSignal(window.refresh_finished, timeout=20_000):
        qtbot.mouseClick(page.switch_button, Qt.MouseButton.LeftButton)
    assert window.admin_label.text() == f"Signed in as {ADMIN}"
    assert window.model.rowCount() > 0


def test_declining_in_the_browser_says_what_to_do(qtbot, live: Live) -> None:
    window = live.window
    live.use_account(ADMIN, action="decline")
    qtbot.waitUntil(lambda: window.current_page is Page.SIGN_IN, timeout=10_000)
    qtbot.mouseClick(window.sign_in_page.sign_in_button, Qt.MouseButton.LeftButton)
    page = window.sign_in_page
    qtbot.waitUntil(lambda: window.sign_in_dialog is None and page.problem.text() != "",
                    timeout=20_000)  # fmt: skip
    assert "Accept" in page.problem.text()
    assert page.sign_in_button.isVisible()


def test_cancel_stops_a_real_sign_in_that_waits_for_the_browser(qtbot, live: Live) -> None:
    import time

    window = live.window
    live.use_account(ADMIN, action="ignore")  # the page opens; nobody signs in
    qtbot.waitUntil(lambda: window.current_page is Page.SIGN_IN, timeout=10_000)
    qtbot.mouseClick(window.sign_in_page.sign_in_button, Qt.MouseButton.LeftButton)
    dialog = window.sign_in_dialog
    assert dialog is not None
    qtbot.waitUntil(lambda: dialog.link.text().startswith("http://127.0.0.1:"), timeout=10_000)
    assert "/oauth2/v2.0/authorize" in dialog.link.text()

    started = time.monotonic()
    qtbot.mouseClick(dialog.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.sign_in_dialog is None, timeout=5000)
    assert time.monotonic() - started < 2
    assert window.sign_in_page.problem.text() == "Sign-in cancelled."
    # The listener is closed: the browser's late answer finds nobody.
    assert window.tasks.active == []


def test_a_large_organisation_pages_in(qtbot, sandbox_certs: Path, tmp_path: Path, window_state):
    import time

    box = Sandbox(SandboxOptions(data_dir=sandbox_certs, mailboxes=10_000))
    info = box.start()
    try:
        settings = dataclasses.replace(
            Settings(config_dir=tmp_path / "config", refresh_interval_s=0),
            **sandbox_overrides(info),  # type: ignore[arg-type]
        )
        window = MainWindow(settings, window_state=window_state, theme=Theme(dark=False))
        qtbot.addWidget(window)
        window.show()
        ca = str(info.ca_certificate)
        window.browser_opener = lambda url: bool(
            browser.run(url, account=ADMIN, ca_certificate=ca, say=lambda _line: None)
        )
        window.attach_services(build_services(settings))
        qtbot.waitUntil(lambda: window.current_page is Page.SIGN_IN, timeout=10_000)
        pages: list[int] = []
        window.model.rowsInserted.connect(lambda _p, first, last: pages.append(last - first + 1))
        started = time.monotonic()
        with qtbot.waitSignal(window.refresh_finished, timeout=60_000) as blocker:
            window.start_interactive_sign_in()
        assert blocker.args == [None]
        elapsed = time.monotonic() - started
        assert window.model.rowCount() >= 10_000
        # Rows arrived as the pages came (pages that arrive together are shown together),
        # not all at the end.
        assert len(pages) >= 3 and max(pages) <= 5_000, pages
        QTest.keyClicks(window.search_box, "claims@")
        assert window.proxy.rowCount() == 1
        print(f"{window.model.rowCount():,} mailboxes signed in and loaded in {elapsed:.1f} s")
        window.close()
    finally:
        box.stop()
