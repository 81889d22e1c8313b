"""Run something once a widget has painted for the first time.

The app starts its services after the window's first paint, and the benchmarks' hook
marks that paint and the list's; both wait the same way: for the paint event, then for
the event loop to come back, so that the frame has reached the screen.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtWidgets import QWidget


class _FirstPaint(QObject):
    """Calls ``then`` once, after ``widget``'s first paint (or after ``fallback_ms``)."""

    def __init__(self, widget: QWidget, then: Callable[[], None], fallback_ms: int | None) -> None:
        super().__init__(widget)
        self._widget = widget
        self._then: Callable[[], None] | None = then
        widget.installEventFilter(self)
        if fallback_ms is not None:
            QTimer.singleShot(fallback_ms, self, self._call)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt name)
        """On the first paint, call back once the event loop comes back."""
        if watched is self._widget and event.type() == QEvent.Type.Paint:
            self._widget.removeEventFilter(self)
            QTimer.singleShot(0, self, self._call)
        return False

    def _call(self) -> None:
        then, self._then = self._then, None
        if then is not None:
            self._widget.removeEventFilter(self)
            then()


def when_first_painted(
    widget: QWidget, then: Callable[[], None], *, fallback_ms: int | None = 1000
) -> None:
    """Call ``then`` once ``widget`` has painted for the first time.

    Args:
        widget: The widget to watch (before it is shown).
        then: Called once, on the GUI thread, when the event loop comes back after the
            paint.
        fallback_ms: Call ``then`` after this long if no paint came (a window started
            minimised, or a platform that never exposes it); ``None`` waits for the paint.
    """
    _FirstPaint(widget, then, fallback_ms)
