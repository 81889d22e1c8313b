"""Measurement hook for the benchmarks (``bench/``, see docs/performance.md).

Inactive unless ``QARGO_BENCH_MARKS`` names a file: then the window appends one JSON line
per milestone to it, ``{"mark": NAME, "t": SECONDS}``, where ``t`` is ``time.monotonic()``
(a system-wide clock on Linux and Windows, so the benchmark compares it with the moment it
launched the process). The milestones:

- ``first_paint``: the main window has painted for the first time, whatever page it shows;
- ``signed_in``: the admin's session started (silently or interactively);
- ``list_shown``: the mailbox table has painted after the first complete load of the list.

``QARGO_BENCH_QUIT`` set to a milestone's name quits the app once it is written.

A "painted" mark is taken when the event loop comes back after the paint event, so it
includes the painting and the flush to the screen. The benchmark's bare PySide6 programs
take their marks the same way.
"""

from __future__ import annotations

import json
import os
import time

from PySide6.QtWidgets import QApplication, QWidget

from qargo_desktop.ui.first_paint import when_first_painted

ENV_FILE = "QARGO_BENCH_MARKS"
ENV_QUIT = "QARGO_BENCH_QUIT"


def enabled() -> bool:
    """Whether the hook is on (``QARGO_BENCH_MARKS`` is set)."""
    return bool(os.environ.get(ENV_FILE))


def mark(name: str) -> None:
    """Append a milestone to the marks file now; quit if it is the one asked for."""
    path = os.environ.get(ENV_FILE)
    if not path:
        return
    with open(path, "a", encoding="utf-8") as marks:
        marks.write(json.dumps({"mark": name, "t": time.monotonic()}) + "\n")
    if os.environ.get(ENV_QUIT) == name:
        app = QApplication.instance()
        if app is not None:
            app.quit()


def install(window: QWidget) -> None:
    """Watch the main window's milestones (a no-op unless the hook is on).

    Args:
        window: The :class:`~qargo_desktop.ui.main_window.MainWindow`, before it is shown.
    """
    if not enabled():
        return
    from qargo_desktop.ui.main_window import MainWindow

    assert isinstance(window, MainWindow)
    when_first_painted(window, lambda: mark("first_paint"), fallback_ms=None)
    state = {"done": False}

    def on_signed_in(_session: object) -> None:
        mark("signed_in")

    def on_refresh_finished(error: object) -> None:
        if error is not None or state["done"]:
            return
        state["done"] = True
        shown = window.table_stack.currentWidget()
        target = window.table.viewport() if shown is window.table else shown
        if target is not None:
            when_first_painted(target, lambda: mark("list_shown"), fallback_ms=None)
            target.update()

    window.signed_in.connect(on_signed_in)
    window.refresh_finished.connect(on_refresh_finished)
