"""The mailbox table: a model of the organisation's mailboxes and a filter proxy.

:class:`MailboxTableModel` updates rows by mailbox id, so a refresh of 10,000 mailboxes
touches only what changed: changed rows emit ``dataChanged``, new ones are inserted and
vanished ones removed; only a whole new list (another admin, another organisation)
resets the model.

The model sorts itself: one Python ``sorted()`` with a key per row, announced as a layout
change. A QSortFilterProxyModel that sorts compares rows through ``data()``, one Python
call per comparison, which took over half a second for 10,000 rows and again every time
a cleared search put rows back. :class:`MailboxFilterProxyModel` therefore only filters,
keeps the model's order, and passes ``sort()`` on to the model.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    Signal,
)

from qargo_desktop.core.models import LinkStatus, Mailbox
from qargo_desktop.ui import texts
from qargo_desktop.ui.theme import Theme

log = logging.getLogger(__name__)

ModelIndex = QModelIndex | QPersistentModelIndex

COLUMN_ADDRESS = 0
COLUMN_DISPLAY_NAME = 1
COLUMN_STATUS = 2
COLUMN_LAST_SYNC = 3
COLUMN_LAST_ERROR = 4
COLUMN_COUNT = 5

HEADERS = {
    COLUMN_ADDRESS: "Mailbox",
    COLUMN_DISPLAY_NAME: "Display name",
    COLUMN_STATUS: "Status",
    COLUMN_LAST_SYNC: "Last sync",
    COLUMN_LAST_ERROR: "Last error",
}

HEADER_TOOLTIPS = {
    COLUMN_ADDRESS: "The mailbox's email address",
    COLUMN_DISPLAY_NAME: "The name shown for the mailbox",
    COLUMN_STATUS: "Whether Qargo can read and send this mailbox's mail",
    COLUMN_LAST_SYNC: "When Qargo last synchronised mail from this mailbox",
    COLUMN_LAST_ERROR: "The last problem Qargo recorded for this mailbox",
}

#: Returns the :class:`Mailbox` of a row.
MailboxRole = int(Qt.ItemDataRole.UserRole) + 1

_STATUS_RANK = {status: rank for rank, status in enumerate(texts.STATUS_ORDER)}

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class MailboxTableModel(QAbstractTableModel):
    """The organisation's mailboxes, one per row.

    Signals:
        counts_changed(): The number of mailboxes per state may have changed.

    Args:
        theme: Colours and icons for the status column.
        clock: Returns "now" for relative times (tests pass a fixed one).
        parent: The owning object.
    """

    counts_changed = Signal()

    def __init__(
        self,
        theme: Theme | None = None,
        *,
        clock: Clock = _utc_now,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._theme = theme or Theme(dark=False)
        self._clock = clock
        self._rows: list[Mailbox] = []
        self._row_of: dict[str, int] = {}
        # Lower-cased "address\ndisplay name", so filtering 10,000 rows per keystroke
        # does no string work beyond one substring test per row.
        self._search_keys: list[str] = []
        self._counts: Counter[LinkStatus] = Counter()
        self._sort_column = -1
        self._sort_order = Qt.SortOrder.AscendingOrder

    # -- reading ------------------------------------------------------------------------

    @property
    def theme(self) -> Theme:
        """The theme the status column is drawn with."""
        return self._theme

    def set_theme(self, theme: Theme) -> None:
        """Switch colours and icons (the platform changed light/dark)."""
        self._theme = theme
        if self._rows:
            self.dataChanged.emit(
                self.index(0, COLUMN_STATUS),
                self.index(len(self._rows) - 1, COLUMN_STATUS),
                [
                    Qt.ItemDataRole.DecorationRole,
                    Qt.ItemDataRole.ForegroundRole,
                    Qt.ItemDataRole.BackgroundRole,
                ],
            )

    def mailboxes(self) -> list[Mailbox]:
        """Every mailbox, in model order."""
        return list(self._rows)

    def mailbox_at(self, row: int) -> Mailbox:
        """The mailbox in a model row."""
        return self._rows[row]

    def search_key(self, row: int) -> str:
        """The lower-cased text the search box matches for a row."""
        return self._search_keys[row]

    def row_of(self, mailbox_id: str) -> int | None:
        """The model row of a mailbox, or ``None``."""
        return self._row_of.get(mailbox_id)

    def find(self, mailbox_id: str) -> Mailbox | None:
        """The mailbox with this id, if listed."""
        row = self._row_of.get(mailbox_id)
        return None if row is None else self._rows[row]

    def counts(self) -> dict[LinkStatus, int]:
        """How many mailboxes are in each state."""
        return {status: self._counts.get(status, 0) for status in LinkStatus}

    # -- Qt model interface ---------------------------------------------------------------

    def rowCount(self, parent: ModelIndex | None = None) -> int:  # noqa: N802 (Qt name)
        """Number of mailboxes (a table has no children)."""
        if parent is not None and parent.isValid():
            return 0
        return len(self._rows)

    def columnCount(self, parent: ModelIndex | None = None) -> int:  # noqa: N802 (Qt name)
        """Number of columns."""
        if parent is not None and parent.isValid():
            return 0
        return COLUMN_COUNT

    def headerData(  # noqa: N802 (Qt name)
        self,
        section: int,
        orientation: Qt.Orientation,
        role: int = Qt.ItemDataRole.DisplayRole,
    ) -> Any:
        """Column titles and their tooltips."""
        if orientation != Qt.Orientation.Horizontal or not 0 <= section < COLUMN_COUNT:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return HEADERS[section]
        if role == Qt.ItemDataRole.ToolTipRole:
            return HEADER_TOOLTIPS[section]
        return None

    def flags(self, index: ModelIndex) -> Qt.ItemFlag:
        """Rows are selectable, never editable."""
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        return (
            Qt.ItemFlag.ItemIsEnabled
            | Qt.ItemFlag.ItemIsSelectable
            | Qt.ItemFlag.ItemNeverHasChildren
        )

    def data(self, index: ModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        """Everything the view asks about a cell."""
        if not index.isValid() or index.row() >= len(self._rows):
            return None
        mailbox = self._rows[index.row()]
        column = index.column()
        if role == MailboxRole:
            return mailbox
        if role == Qt.ItemDataRole.DisplayRole:
            return self._display(mailbox, column)
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(mailbox, column)
        if role == Qt.ItemDataRole.AccessibleTextRole:
            if column == COLUMN_STATUS:
                return texts.status_accessible_text(mailbox)
            return self._display(mailbox, column) or "empty"
        if column == COLUMN_STATUS:
            if role == Qt.ItemDataRole.DecorationRole:
                return self._theme.status_icon(mailbox.status)
            if role == Qt.ItemDataRole.ForegroundRole:
                return self._theme.foreground(mailbox.status)
            if role == Qt.ItemDataRole.BackgroundRole:
                return self._theme.background(mailbox.status)
        return None

    def _display(self, mailbox: Mailbox, column: int) -> str:
        if column == COLUMN_ADDRESS:
            return mailbox.address
        if column == COLUMN_DISPLAY_NAME:
            return mailbox.display_name
        if column == COLUMN_STATUS:
            return texts.mailbox_status_label(mailbox)
        if column == COLUMN_LAST_SYNC:
            return texts.relative_time(mailbox.last_sync_at, self._clock())
        if column == COLUMN_LAST_ERROR:
            return texts.error_summary(mailbox.last_error)
        return ""

    def _tooltip(self, mailbox: Mailbox, column: int) -> str:
        if column == COLUMN_STATUS:
            return texts.status_tooltip(mailbox)
        if column == COLUMN_LAST_SYNC:
            if mailbox.last_sync_at is None:
                return "Qargo has not synchronised mail from this mailbox yet."
            return f"Last sync: {texts.local_time(mailbox.last_sync_at, seconds=True)} (local time)"
        if column == COLUMN_LAST_ERROR:
            return texts.error_tooltip(mailbox.last_error)
        return self._display(mailbox, column)

    # -- sorting ------------------------------------------------------------------------

    @property
    def sort_column(self) -> int:
        """The column the rows are sorted by (-1: arrival order)."""
        return self._sort_column

    @property
    def sort_order(self) -> Qt.SortOrder:
        """The direction of the sort."""
        return self._sort_order

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        """Sort the rows by a column and keep them sorted through later updates."""
        self._sort_column = column if 0 <= column < COLUMN_COUNT else -1
        self._sort_order = order
        self._resort()

    def _resort(self) -> None:
        if self._sort_column < 0 or len(self._rows) < 2:
            return
        key = _SORT_KEYS[self._sort_column]
        descending = self._sort_order == Qt.SortOrder.DescendingOrder
        order = sorted(
            range(len(self._rows)), key=lambda row: key(self._rows[row]), reverse=descending
        )
        if order == list(range(len(order))):
            return
        self.layoutAboutToBeChanged.emit()
        persistent = self.persistentIndexList()
        remembered = [(self._rows[index.row()].id, index.column()) for index in persistent]
        self._rows = [self._rows[row] for row in order]
        self._search_keys = [self._search_keys[row] for row in order]
        self._row_of = {mailbox.id: row for row, mailbox in enumerate(self._rows)}
        self.changePersistentIndexList(
            persistent,
            [self.index(self._row_of[mailbox_id], column) for mailbox_id, column in remembered],
        )
        self.layoutChanged.emit()

    # -- updating -----------------------------------------------------------------------

    def set_mailboxes(self, mailboxes: Iterable[Mailbox]) -> None:
        """Replace the whole list (another organisation, or a first load)."""
        rows = _unique(mailboxes)
        if self._sort_column >= 0:
            rows.sort(
                key=_SORT_KEYS[self._sort_column],
                reverse=self._sort_order == Qt.SortOrder.DescendingOrder,
            )
        self.beginResetModel()
        self._rows = rows
        self._reindex()
        self.endResetModel()
        self.counts_changed.emit()

    def clear(self) -> None:
        """Forget every mailbox (signed out)."""
        self.set_mailboxes(())

    def upsert(self, mailboxes: Sequence[Mailbox]) -> None:
        """Update mailboxes by id and append the ones not listed yet.

        Used for each page of a refresh and for a single mailbox an action changed.
        """
        changed: list[int] = []
        added: list[Mailbox] = []
        pending: dict[str, int] = {}
        for mailbox in mailboxes:
            row = self._row_of.get(mailbox.id)
            if row is not None:
                if self._rows[row] != mailbox:
                    self._counts[self._rows[row].status] -= 1
                    self._counts[mailbox.status] += 1
                    self._rows[row] = mailbox
                    self._search_keys[row] = _search_key(mailbox)
                    changed.append(row)
            elif mailbox.id in pending:
                # The same id twice in one page: the later one wins.
                added[pending[mailbox.id]] = mailbox
            else:
                pending[mailbox.id] = len(added)
                added.append(mailbox)

        for first, last in _runs(sorted(set(changed))):
            self.dataChanged.emit(self.index(first, 0), self.index(last, COLUMN_COUNT - 1))

        if added:
            start = len(self._rows)
            self.beginInsertRows(QModelIndex(), start, start + len(added) - 1)
            for offset, mailbox in enumerate(added):
                self._rows.append(mailbox)
                self._row_of[mailbox.id] = start + offset
                self._search_keys.append(_search_key(mailbox))
                self._counts[mailbox.status] += 1
            self.endInsertRows()

        if changed or added:
            self._resort()
            self.counts_changed.emit()

    def retain(self, mailbox_ids: Iterable[str]) -> int:
        """Remove every mailbox whose id is not in ``mailbox_ids``; returns how many."""
        keep = set(mailbox_ids)
        doomed = [row for row, mailbox in enumerate(self._rows) if mailbox.id not in keep]
        self._remove_rows(doomed)
        return len(doomed)

    def remove(self, mailbox_id: str) -> bool:
        """Remove one mailbox; returns whether it was listed."""
        row = self._row_of.get(mailbox_id)
        if row is None:
            return False
        self._remove_rows([row])
        return True

    def merge(self, mailboxes: Sequence[Mailbox]) -> None:
        """Make the model equal to a complete list, touching only what differs."""
        self.upsert(mailboxes)
        self.retain(m.id for m in mailboxes)

    def refresh_times(self) -> None:
        """Tell views the relative times moved on (called by a timer)."""
        if self._rows:
            self.dataChanged.emit(
                self.index(0, COLUMN_LAST_SYNC),
                self.index(len(self._rows) - 1, COLUMN_LAST_SYNC),
                [Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole],
            )

    def _remove_rows(self, rows: list[int]) -> None:
        if not rows:
            return
        # From the bottom up, so earlier row numbers stay valid.
        for first, last in reversed(_runs(rows)):
            self.beginRemoveRows(QModelIndex(), first, last)
            for mailbox in self._rows[first : last + 1]:
                self._counts[mailbox.status] -= 1
            del self._rows[first : last + 1]
            del self._search_keys[first : last + 1]
            self._row_of = {}  # rebuilt below; nothing reads it between the two calls
            self.endRemoveRows()
        self._row_of = {mailbox.id: row for row, mailbox in enumerate(self._rows)}
        self.counts_changed.emit()

    def _reindex(self) -> None:
        self._row_of = {mailbox.id: row for row, mailbox in enumerate(self._rows)}
        self._search_keys = [_search_key(mailbox) for mailbox in self._rows]
        self._counts = Counter(mailbox.status for mailbox in self._rows)


def _search_key(mailbox: Mailbox) -> str:
    return f"{mailbox.address}\n{mailbox.display_name}".casefold()


# Each column sorts by what it means (times as times, states by urgency), then by address
# so that equal values keep a predictable order.
_SORT_KEYS: dict[int, Callable[[Mailbox], Any]] = {
    COLUMN_ADDRESS: lambda m: m.address.casefold(),
    COLUMN_DISPLAY_NAME: lambda m: (m.display_name.casefold(), m.address.casefold()),
    COLUMN_STATUS: lambda m: (_STATUS_RANK[m.status], m.address.casefold()),
    COLUMN_LAST_SYNC: lambda m: (
        m.last_sync_at.timestamp() if m.last_sync_at else float("-inf"),
        m.address.casefold(),
    ),
    COLUMN_LAST_ERROR: lambda m: (
        texts.error_summary(m.last_error).casefold(),
        m.address.casefold(),
    ),
}


def _unique(mailboxes: Iterable[Mailbox]) -> list[Mailbox]:
    by_id: dict[str, Mailbox] = {}
    for mailbox in mailboxes:
        by_id[mailbox.id] = mailbox
    return list(by_id.values())


def _runs(rows: Sequence[int]) -> list[tuple[int, int]]:
    """Group sorted row numbers into ``(first, last)`` runs of consecutive rows."""
    runs: list[tuple[int, int]] = []
    for row in rows:
        if runs and row == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], row)
        else:
            runs.append((row, row))
    return runs


class MailboxFilterProxyModel(QSortFilterProxyModel):
    """Filters the mailbox table by search text and by state; sorting is the model's.

    The search matches the address or the display name, case-insensitively, anywhere
    in the text. The state filter shows only the chosen states (all when empty). The
    proxy keeps the source model's order and hands ``sort()`` (a header click) to it.

    Args:
        parent: The owning object.
    """

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._search = ""
        self._statuses: frozenset[LinkStatus] = frozenset()
        self.setDynamicSortFilter(True)

    def _mailbox_model(self) -> MailboxTableModel | None:
        source = self.sourceModel()
        return source if isinstance(source, MailboxTableModel) else None

    @property
    def search_text(self) -> str:
        """The current search text."""
        return self._search

    @property
    def statuses(self) -> frozenset[LinkStatus]:
        """The states shown (empty: all)."""
        return self._statuses

    @property
    def filtering(self) -> bool:
        """Whether any filter hides rows."""
        return bool(self._search or self._statuses)

    def set_search_text(self, text: str) -> None:
        """Show only mailboxes whose address or display name contains ``text``."""
        wanted = text.strip().casefold()
        if wanted == self._search:
            return
        self.beginFilterChange()
        self._search = wanted
        self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    def set_statuses(self, statuses: Iterable[LinkStatus]) -> None:
        """Show only mailboxes in these states (none given: every state)."""
        wanted = frozenset(statuses)
        if wanted == self._statuses:
            return
        self.beginFilterChange()
        self._statuses = wanted
        self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        """Ask the source model to sort (the proxy itself keeps its order)."""
        model = self._mailbox_model()
        if model is not None:
            model.sort(column, order)

    def filterAcceptsRow(self, source_row: int, source_parent: ModelIndex) -> bool:  # noqa: N802
        """Whether a row passes the search text and the state filter."""
        model = self._mailbox_model()
        if model is None:
            return True
        if self._statuses and model.mailbox_at(source_row).status not in self._statuses:
            return False
        return not self._search or self._search in model.search_key(source_row)

    def search_counts(self) -> dict[LinkStatus, int]:
        """How many mailboxes in each state match the search text (ignoring the state filter)."""
        model = self._mailbox_model()
        if model is None:
            return dict.fromkeys(LinkStatus, 0)
        if not self._search:
            return model.counts()
        counts: Counter[LinkStatus] = Counter()
        for row in range(model.rowCount()):
            if self._search in model.search_key(row):
                counts[model.mailbox_at(row).status] += 1
        return {status: counts.get(status, 0) for status in LinkStatus}

    def mailbox(self, index: ModelIndex) -> Mailbox | None:
        """The mailbox of a proxy index."""
        if not index.isValid():
            return None
        value = self.data(index, MailboxRole)
        return value if isinstance(value, Mailbox) else None

    def index_of(self, mailbox_id: str, column: int = 0) -> QModelIndex:
        """The proxy index of a mailbox (invalid when hidden or unknown)."""
        model = self._mailbox_model()
        row = model.row_of(mailbox_id) if model is not None else None
        if model is None or row is None:
            return QModelIndex()
        return self.mapFromSource(model.index(row, column))
