"""Baseline: a bare PySide6 window, the same size as the app's, marked once painted.

Run by bench/startup.py exactly as the app is (same clock, same marks file, same rule for
"painted": the event loop came back after the paint event).
"""

import json
import os
import sys
import time

from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtWidgets import QApplication, QMainWindow


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


app = QApplication(sys.argv)
window = QMainWindow()
window.setWindowTitle("Bare window")
window.resize(1320, 820)
PaintWatcher(window, "first_paint")
window.show()
sys.exit(app.exec())
