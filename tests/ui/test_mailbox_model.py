"""The mailbox table model and its filter proxy."""

from __future__ import annotations

import dataclasses
import time

import pytest

from PySide6.QtCore import QModelIndex, Qt
from PySide6.QtGui import QColor, QIcon

from qargo_desktop.core.models import LastError, LinkStatus
from qargo_desktop.ui.mailbox_model import (
    COLUMN_ADDRESS,
    COLUMN_COUNT,
    COLUMN_DISPLAY_NAME,
    COLUMN_LAST_ERROR,
    COLUMN_LAST_SYNC,
    COLUMN_STATUS,
    MailboxFilterProxyModel,
    MailboxRole,
    MailboxTableModel,
)
from qargo_desktop.ui.theme import LIGHT, Theme
from tests.ui.conftest import NOW, every_state, make_mailbox
from tests.ui.fakes import many_mailboxes

LABELS = {
    "linked": "Linked",
    "unlinked": "Unlinked",
    "reauthorisation_required": "Pending authorisation: Reauthorise API",
    "link_failed": "Pending authorisation: Reset API link status",
    "authorising": "Authorising...",
    "suspended": "Unknown (suspended)",
}


def model_with(mailboxes, qtbot=None) -> MailboxTableModel:
    model = MailboxTableModel(Theme(dark=False), clock=lambda: NOW)
    model.set_mailboxes(mailboxes)
    return model


def cell(model, row: int, column: int, role=Qt.ItemDataRole.DisplayRole):
    return model.data(model.index(row, column), role)


def test_model_passes_qt_model_tester(qtmodeltester) -> None:
    model = model_with(every_state())
    qtmodeltester.check(model, force_py=True)


def test_proxy_passes_qt_model_tester(qtmodeltester) -> None:
    model = model_with(every_state())
    proxy = MailboxFilterProxyModel()
    proxy.setSourceModel(model)
    proxy.sort(COLUMN_STATUS)
    proxy.set_search_text("a")
    qtmodeltester.check(proxy, force_py=True)


def test_model_tester_survives_updates(qtmodeltester) -> None:
    model = model_with(every_state())
    qtmodeltester.check(model, force_py=True)
    # The tester stays connected and checks every signal the updates emit.
    mailboxes = every_state()
    model.upsert([dataclasses.replace(mailboxes[0], status=LinkStatus.LINK_FAILED)])
    model.upsert([make_mailbox(99, "unlinked")])
    model.merge(mailboxes[2:])
    model.remove(mailboxes[3].id)
    model.set_mailboxes(mailboxes)
    model.clear()


@pytest.mark.parametrize("mailbox", every_state(), ids=lambda m: m.raw_status)
def test_every_state_has_label_colours_icon_tooltip_and_words(mailbox) -> None:
    model = model_with([mailbox])
    status = mailbox.status
    assert cell(model, 0, COLUMN_STATUS) == LABELS[mailbox.raw_status]
    foreground = cell(model, 0, COLUMN_STATUS, Qt.ItemDataRole.ForegroundRole)
    background = cell(model, 0, COLUMN_STATUS, Qt.ItemDataRole.BackgroundRole)
    assert isinstance(foreground, QColor) and isinstance(background, QColor)
    assert foreground.name() == LIGHT.status[status].foreground
    assert background.name() == LIGHT.status[status].background
    icon = cell(model, 0, COLUMN_STATUS, Qt.ItemDataRole.DecorationRole)
    assert isinstance(icon, QIcon) and not icon.isNull()
    tooltip = cell(model, 0, COLUMN_STATUS, Qt.ItemDataRole.ToolTipRole)
    assert tooltip.startswith(LABELS[mailbox.raw_status])
    assert len(tooltip.splitlines()) >= 3  # label, what it means, what to do
    accessible = cell(model, 0, COLUMN_STATUS, Qt.ItemDataRole.AccessibleTextRole)
    assert accessible.startswith(f"Status: {LABELS[mailbox.raw_status]}")
    assert cell(model, 0, COLUMN_ADDRESS, MailboxRole) is mailbox


def test_tooltips_say_what_to_do() -> None:
    model = model_with(every_state())
    tips = {m.raw_status: cell(model, r, COLUMN_STATUS, Qt.ItemDataRole.ToolTipRole)
            for r, m in enumerate(model.mailboxes())}  # fmt: skip
    assert "Authorise API" in tips["unlinked"]
    assert "Reauthorise API" in tips["reauthorisation_required"]
    assert "Reset API link status" in tips["link_failed"]
    assert "expires at" in tips["authorising"]
    assert "does not know" in tips["suspended"]


def test_colour_only_on_the_status_column() -> None:
    model = model_with(every_state())
    for column in (COLUMN_ADDRESS, COLUMN_DISPLAY_NAME, COLUMN_LAST_SYNC, COLUMN_LAST_ERROR):
        assert cell(model, 0, column, Qt.ItemDataRole.BackgroundRole) is None
        assert cell(model, 0, column, Qt.ItemDataRole.DecorationRole) is None


def test_last_sync_is_relative_with_exact_time_in_tooltip() -> None:
    model = model_with([make_mailbox(1), make_mailbox(2, last_sync_at=None)])
    assert cell(model, 0, COLUMN_LAST_SYNC) == "5 min ago"
    tooltip = cell(model, 0, COLUMN_LAST_SYNC, Qt.ItemDataRole.ToolTipRole)
    local = (NOW.replace(minute=25)).astimezone()
    assert f"{local:%H:%M:%S}" in tooltip and str(local.year) in tooltip
    assert cell(model, 1, COLUMN_LAST_SYNC) == "Never"


def test_last_error_is_plain_advice_or_the_unknown_code() -> None:
    revoked = make_mailbox(1, last_error=LastError("AADSTS50173", "revoked", NOW))
    expired = make_mailbox(2, last_error=LastError("attempt_expired", "", NOW))
    unknown = make_mailbox(3, last_error=LastError("quota_exceeded", "Mailbox is full", NOW))
    bare = make_mailbox(4, last_error=LastError("E42", "", None))
    model = model_with([revoked, expired, unknown, bare])
    assert (
        cell(model, 0, COLUMN_LAST_ERROR)
        == "The mailbox's grant was revoked (often after a password change)."
    )
    assert cell(model, 1, COLUMN_LAST_ERROR) == "The authorisation took too long and expired."
    assert cell(model, 2, COLUMN_LAST_ERROR) == "Mailbox is full (code quota_exceeded)"
    assert cell(model, 3, COLUMN_LAST_ERROR) == "Unrecognised error (code E42)"
    tooltip = cell(model, 0, COLUMN_LAST_ERROR, Qt.ItemDataRole.ToolTipRole)
    assert "Reauthorise the mailbox." in tooltip and "Code: AADSTS50173" in tooltip


def test_upsert_changes_only_changed_rows(qtbot) -> None:
    mailboxes = many_mailboxes(100)
    model = model_with(mailboxes)
    changed = dataclasses.replace(mailboxes[40], status=LinkStatus.LINK_FAILED, etag="x")
    seen: list[tuple[int, int]] = []
    model.dataChanged.connect(lambda a, b, _roles=(): seen.append((a.row(), b.row())))
    resets: list[bool] = []
    model.modelReset.connect(lambda: resets.append(True))
    inserted: list[tuple[int, int]] = []
    model.rowsInserted.connect(lambda _p, a, b: inserted.append((a, b)))

    model.upsert([*mailboxes[:50], changed, make_mailbox(1000)])

    assert seen == [(40, 40)]
    assert inserted == [(100, 100)]
    assert not resets
    assert model.counts()[LinkStatus.LINK_FAILED] == 1
    assert model.counts()[LinkStatus.LINKED] == 100


def test_merge_removes_vanished_rows_in_runs() -> None:
    mailboxes = many_mailboxes(20)
    model = model_with(mailboxes)
    removed: list[tuple[int, int]] = []
    model.rowsRemoved.connect(lambda _p, a, b: removed.append((a, b)))
    keep = [m for i, m in enumerate(mailboxes) if i not in (3, 4, 5, 10)]
    model.merge(keep)
    assert removed == [(10, 10), (3, 5)]
    assert [m.id for m in model.mailboxes()] == [m.id for m in keep]
    assert model.row_of(mailboxes[11].id) == 7
    assert sum(model.counts().values()) == 16


def test_ten_thousand_rows_load_and_filter_fast(qtbot) -> None:
    mailboxes = many_mailboxes(10_000, ("linked", "unlinked", "link_failed"))
    model = MailboxTableModel(Theme(dark=False), clock=lambda: NOW)
    proxy = MailboxFilterProxyModel()
    proxy.setSourceModel(model)
    proxy.sort(COLUMN_STATUS)

    started = time.perf_counter()
    for start in range(0, 10_000, 500):
        model.upsert(mailboxes[start : start + 500])
    load_s = time.perf_counter() - started
    assert proxy.rowCount() == 10_000

    started = time.perf_counter()
    proxy.set_search_text("user0999")
    filter_s = time.perf_counter() - started
    assert proxy.rowCount() == 10

    started = time.perf_counter()
    proxy.set_search_text("")
    unfilter_s = time.perf_counter() - started

    started = time.perf_counter()
    model.merge(mailboxes)  # a refresh that changed nothing
    merge_s = time.perf_counter() - started
    # Generous bounds for a slow CI machine; typical numbers are a fraction of these.
    assert load_s < 5.0, load_s
    assert filter_s < 1.0, filter_s
    assert unfilter_s < 5.0, unfilter_s
    assert merge_s < 1.0, merge_s


def test_filter_by_search_text_and_state() -> None:
    model = model_with(every_state())
    proxy = MailboxFilterProxyModel()
    proxy.setSourceModel(model)

    proxy.set_search_text("  SALES ")
    assert [proxy.mailbox(proxy.index(r, 0)).display_name for r in range(proxy.rowCount())] == [
        "Sales"
    ]
    proxy.set_search_text("planning")  # display name too
    assert proxy.rowCount() == 1
    proxy.set_search_text("northwind")
    assert proxy.rowCount() == 6
    proxy.set_statuses({LinkStatus.LINK_FAILED, LinkStatus.UNLINKED})
    assert {proxy.mailbox(proxy.index(r, 0)).raw_status for r in range(proxy.rowCount())} == {
        "link_failed", "unlinked"}  # fmt: skip
    proxy.set_statuses(())
    assert proxy.rowCount() == 6


def test_search_counts_follow_the_search_not_the_state_filter() -> None:
    model = model_with(every_state())
    proxy = MailboxFilterProxyModel()
    proxy.setSourceModel(model)
    proxy.set_statuses({LinkStatus.LINKED})
    counts = proxy.search_counts()
    assert sum(counts.values()) == 6 and counts[LinkStatus.UNKNOWN] == 1
    proxy.set_search_text("sales")
    counts = proxy.search_counts()
    assert counts[LinkStatus.REAUTHORISATION_REQUIRED] == 1 and sum(counts.values()) == 1


def test_sort_by_state_puts_what_needs_attention_first() -> None:
    model = model_with(every_state())
    proxy = MailboxFilterProxyModel()
    proxy.setSourceModel(model)
    proxy.sort(COLUMN_STATUS, Qt.SortOrder.AscendingOrder)
    order = [proxy.mailbox(proxy.index(r, 0)).raw_status for r in range(proxy.rowCount())]
    assert order == ["link_failed", "reauthorisation_required", "authorising", "suspended",
                     "unlinked", "linked"]  # fmt: skip


def test_sort_by_last_sync_uses_time_not_text() -> None:
    mailboxes = [
        make_mailbox(1, last_sync_at=NOW.replace(hour=1)),
        make_mailbox(2, last_sync_at=None),
        make_mailbox(3, last_sync_at=NOW.replace(hour=9)),
        make_mailbox(4, last_sync_at=NOW.replace(day=1)),
    ]
    model = model_with(mailboxes)
    proxy = MailboxFilterProxyModel()
    proxy.setSourceModel(model)
    proxy.sort(COLUMN_LAST_SYNC, Qt.SortOrder.DescendingOrder)
    assert [proxy.mailbox(proxy.index(r, 0)).id for r in range(4)] == [
        "mbx-00003", "mbx-00001", "mbx-00004", "mbx-00002"]  # fmt: skip


def test_sort_by_address_is_case_insensitive() -> None:
    mailboxes = [make_mailbox(1, address="b@x.example"), make_mailbox(2, address="A@x.example"),
                 make_mailbox(3, address="c@x.example")]  # fmt: skip
    proxy = MailboxFilterProxyModel()
    proxy.setSourceModel(model_with(mailboxes))
    proxy.sort(COLUMN_ADDRESS)
    assert [proxy.mailbox(proxy.index(r, 0)).address for r in range(3)] == [
        "A@x.example", "b@x.example", "c@x.example"]  # fmt: skip


def test_table_shape_and_headers() -> None:
    model = model_with(every_state())
    assert model.columnCount() == COLUMN_COUNT == 5
    assert model.rowCount(model.index(0, 0)) == 0
    assert [model.headerData(c, Qt.Orientation.Horizontal) for c in range(5)] == [
        "Mailbox", "Display name", "Status", "Last sync", "Last error"]  # fmt: skip
    assert model.data(QModelIndex()) is None
    assert not model.flags(model.index(0, 0)) & Qt.ItemFlag.ItemIsEditable


def test_sorted_model_stays_sorted_and_persistent_indexes_follow(qtmodeltester) -> None:
    from PySide6.QtCore import QPersistentModelIndex

    mailboxes = every_state()
    model = model_with(mailboxes)
    proxy = MailboxFilterProxyModel()
    proxy.setSourceModel(model)
    qtmodeltester.check(proxy, force_py=True)
    proxy.sort(COLUMN_STATUS)  # a header click reaches the model
    assert model.sort_column == COLUMN_STATUS
    planning = QPersistentModelIndex(proxy.index_of("mbx-00001"))
    assert proxy.mailbox(planning).display_name == "Planning"
    assert planning.row() == 5  # linked sorts last

    model.upsert([dataclasses.replace(mailboxes[0], status=LinkStatus.LINK_FAILED, etag="2")])

    assert planning.isValid() and proxy.mailbox(planning).display_name == "Planning"
    assert planning.row() == 1  # with the other failed link, after "customs@"
    model.upsert([make_mailbox(7, "linked", address="aaa@northwind-haulage.example")])
    order = [proxy.mailbox(proxy.index(r, 0)).address for r in range(proxy.rowCount())]
    assert order[-1] == "aaa@northwind-haulage.example"  # the only linked one left
    proxy.sort(COLUMN_ADDRESS, Qt.SortOrder.DescendingOrder)
    order = [proxy.mailbox(proxy.index(r, 0)).address for r in range(proxy.rowCount())]
    assert order == sorted(order, reverse=True)
