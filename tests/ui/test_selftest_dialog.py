"""The self-test dialog in the real window against the real sandbox."""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtGui import QGuiApplication

from qargo_desktop.core.config import app_paths
from qargo_desktop.core.selftest import SelfTestOptions, StepId, Verdict
from qargo_desktop.ui.selftest_dialog import SelfTestDialog
from tests.ui.test_link_actions import dialogs_action, select
from tests.ui.test_window_sandbox import DOMAIN, Live, live, sign_in

__all__ = ["live"]

LINKED = f"dispatch@{DOMAIN}"


def open_test(qtbot, live: Live, address: str) -> SelfTestDialog:  # type: ignore[no-untyped-def]
    window = live.window
    sign_in(qtbot, live)
    live.use_account(address)
    select(window, address)
    mailbox = window.selected_mailbox()
    assert mailbox is not None
    window.mailbox_actions[dialogs_action("SELFTEST")].trigger()
    dialog = window.link_actions.selftest_dialog(mailbox.id)
    assert dialog is not None
    return dialog


def test_a_passing_run_shows_steps_verdict_timeline_and_report(
    qtbot, live: Live, tmp_path: Path
) -> None:
    dialog = open_test(qtbot, live, LINKED)
    assert dialog.running and not dialog.close_button.isEnabled()
    qtbot.waitUntil(lambda: dialog.report is not None, timeout=60_000)
    report = dialog.report
    assert report is not None
    assert report.verdict is Verdict.PASS, report.to_text()
    assert dialog.verdict.text().startswith("Passed")
    for step in (StepId.PREFLIGHT, StepId.TOKEN, StepId.SEND, StepId.DELIVERY, StepId.SYNC):
        assert dialog._items[step].text(0) == "✔", step
    assert [leg.name for leg in report.legs] == ["submission", "delivery", "sync"]
    assert "Delivery" in dialog.chart.accessibleDescription()
    # Exactly one send, and the report was kept for the support bundle.
    assert live.sandbox.world.mail_store.sent_count == 1
    saved = list((app_paths(live.settings).data_dir / "selftest-reports").glob("*.json"))
    assert len(saved) == 1
    assert json.loads(saved[0].read_text())["address"] == LINKED

    dialog.copy_report()
    assert "self-test: PASS" in QGuiApplication.clipboard().text()
    dialog.write_report(tmp_path / "report.json", as_json=True)
    assert json.loads((tmp_path / "report.json").read_text())["verdict"] == "pass"
    dialog.write_report(tmp_path / "report.txt", as_json=False)
    assert "Delivery" in (tmp_path / "report.txt").read_text()

    # Run again from the same dialog.
    dialog.again_button.click()
    assert dialog.running
    qtbot.waitUntil(lambda: not dialog.running, timeout=60_000)
    assert live.sandbox.world.mail_store.sent_count == 2
    dialog.close_button.click()


def test_a_failing_run_names_the_leg(qtbot, live: Live) -> None:
    dialog = open_test(qtbot, live, LINKED)
    dialog.cancel()
    qtbot.waitUntil(lambda: not dialog.running, timeout=30_000)
    live.sandbox.set_faults(never_sync=True)
    dialog.options = SelfTestOptions(timeout_s=8)
    dialog.start()
    qtbot.waitUntil(lambda: dialog.report is not None and not dialog.running, timeout=60_000)
    report = dialog.report
    assert report is not None
    assert report.verdict is Verdict.FAIL
    assert dialog._items[StepId.SYNC].text(0) == "✖"
    assert "sync" in dialog.verdict.text().lower()
    assert any(leg.name == "sync" and leg.duration_s is None for leg in report.legs)


def test_escape_cancels_a_run_before_closing(qtbot, live: Live) -> None:
    live.sandbox.set_faults(delivery_delay_s=30)
    dialog = open_test(qtbot, live, LINKED)
    qtbot.waitUntil(lambda: dialog._items[StepId.SEND].text(0) == "✔", timeout=30_000)
    dialog.reject()
    assert dialog.isVisible()
    qtbot.waitUntil(lambda: not dialog.running, timeout=30_000)
    assert dialog.report is not None and dialog.report.verdict is Verdict.CANCELLED
    assert live.sandbox.world.mail_store.sent_count == 1
    dialog.reject()
    assert not dialog.isVisible()
