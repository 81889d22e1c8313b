"""Baseline: a bare PySide6 program that shows a table of mailboxes read from a local file.

    python bench/bare_table.py ROWS.json

ROWS.json is the organisation API's list (a JSON array of mailbox objects), saved by the
benchmark from the same sandbox the app reads. The table has the app's five columns and is
marked ``list_shown`` once painted with its rows, the same way the app is.

A table model over a list of tuples, not QTableWidget: with PySide6 6.12.0 on CPython
3.11 every QTableWidget.setItem call drops a reference to None, and 50,000 of them crash
the interpreter (see docs/performance.md).
"""

import json
import os
import sys
import time

from PySide6.QtCore import QAbstractTableModel, QEvent, QObject, Qt, QTimer
from PySide6.QtWidgets import QApplication, QMainWindow, QTableView


def mark(name: str) -> None:
    with open(os.environ["QARGO_BENCH_MARKS"], "a", encoding="utf-8") as marks:
        marks.write(json.dumps({"mark": name, "t": time.monotonic()}) + "\n")
    if os.environ.get("QARGO_BENCH_QUIT") == name:
        QApplication.instance().quit()


class PaintWatcher(QObject):
    def __init__(self, widget, name):
        super().__init__(widget)
        self.widget, self.name = widget, name
        widget.installEventFilter(self)

    def eventFilter(self, watched, event):  # noqa: N802 (Qt name)
        if watched is self.widget and event.type() == QEvent.Type.Paint:
            self.widget.removeEventFilter(self)
            QTimer.singleShot(0, lambda: mark(self.name))
        return False


class RowsModel(QAbstractTableModel):
    def __init__(self, rows):
        super().__init__()
        self.rows = rows

    def rowCount(self, parent=None):  # noqa: N802 (Qt name)
        return len(self.rows)

    def columnCount(self, parent=None):  # noqa: N802 (Qt name)
        return len(HEADERS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return HEADERS[section]
        return None

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if role == Qt.ItemDataRole.DisplayRole:
            return self.rows[index.row()][index.column()]
        return None


HEADERS = ["Mailbox", "Display name", "Status", "Last sync", "Last error"]
app = QApplication(sys.argv)
with open(sys.argv[1], encoding="utf-8") as source:
    mailboxes = json.load(source)
rows = []
for mailbox in mailboxes:
    error = mailbox.get("last_error") or {}
    rows.append(
        (
            mailbox.get("address", ""),
            mailbox.get("display_name") or "",
            mailbox.get("status", ""),
            mailbox.get("last_sync_at") or "",
            error.get("code", "") if isinstance(error, dict) else "",
        )
    )
window = QMainWindow()
window.setWindowTitle("Bare table")
window.resize(1320, 820)
table = QTableView(window)
table.setModel(RowsModel(rows))
window.setCentralWidget(table)
PaintWatcher(window, "first_paint")
PaintWatcher(table.viewport(), "list_shown")
window.show()
sys.exit(app.exec())
