"""Drives the real window in this process, for the scale and responsiveness figures.

    python bench/gui_driver.py --config SANDBOX.toml --phase scale|responsiveness --out OUT.json

It builds the window exactly as ``qargo-desktop`` does (ui/app.py: the same MainWindow,
AppController, services and task runner) against a sandbox served by another process,
then drives it through its public signals and slots and measures:

- ``scale``: the time from the last page of the list arriving (a response hook on the
  app's own HTTP session, after the page's body was read) to the table painted with every
  row; parsing the same page bodies with ``json.loads`` alone; the resident memory of the
  process when signed in with the list not loaded yet, and with the list shown; every
  search keystroke to the filtered view painted.
- ``responsiveness``: the longest stall of the GUI event loop while signing in, loading the
  list, authorising a mailbox and running a self-test: a 2 ms precise timer on the GUI
  thread, and each gap between two of its ticks counts as a stall (the gap itself, not
  the gap less 2 ms).

The environment gives it the config folder (``QARGO_CONFIG_DIR``) and the scripted
browser (``BROWSER``).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DOMAIN, percentile, rss_bytes

from PySide6.QtCore import QEvent, QEventLoop, QObject, Qt, QTimer
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QWidget

from qargo_desktop.core.config import load_settings
from qargo_desktop.core.models import LinkStatus
from qargo_desktop.ui.app import AppController, create_application, window_state_for
from qargo_desktop.ui.main_window import MainWindow, Page

SEARCHES = ("a", "jan", "antwerp", "dispatch", "zz", "northwind", "rosa.q", "e")
#: Diagnosis: a cProfile file for the keystrokes (QARGO_BENCH_PROFILE).
PROFILE = os.environ.get("QARGO_BENCH_PROFILE")
#: Diagnosis: which responsiveness phase to profile (QARGO_BENCH_PROFILE_PHASE).
PROFILE_PHASE = os.environ.get("QARGO_BENCH_PROFILE_PHASE")


# -- event-loop helpers ------------------------------------------------------------------


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Run the event loop until ``predicate()`` holds."""
    if predicate():
        return
    deadline = time.monotonic() + timeout_s
    loop = QEventLoop()
    timer = QTimer()
    timer.setInterval(10)

    def check() -> None:
        if predicate() or time.monotonic() > deadline:
            loop.quit()

    timer.timeout.connect(check)
    timer.start()
    loop.exec()
    timer.stop()
    if not predicate():
        raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")


class PaintWatch(QObject):
    """Records when the event loop comes back after the next paint of any watched widget."""

    def __init__(self, *widgets: QWidget, armed: bool = True) -> None:
        super().__init__()
        self._widgets = widgets
        self.painted_at: float | None = None
        self._seen = not armed
        for widget in widgets:
            widget.installEventFilter(self)

    def arm(self) -> None:
        """Watch from now on (for a watch made beforehand: making one takes a few ms)."""
        self._seen = False
        for widget in self._widgets:
            widget.update()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt name)
        if not self._seen and event.type() == QEvent.Type.Paint and watched in self._widgets:
            self._seen = True
            QTimer.singleShot(0, self._done)
        return False

    def _done(self) -> None:
        self.painted_at = time.perf_counter()
        for widget in self._widgets:
            widget.removeEventFilter(self)

    def wait(self, timeout_s: float = 10.0) -> float:
        wait_for(lambda: self.painted_at is not None, timeout_s, "a paint")
        assert self.painted_at is not None
        return self.painted_at


class StallMonitor(QObject):
    """A 2 ms precise timer on the GUI thread; every gap between ticks is a stall."""

    def __init__(self, interval_ms: int = 2, diagnose: bool = False) -> None:
        super().__init__()
        self.interval_ms = interval_ms
        self.phase: str | None = None
        self.worst: dict[str, float] = {}
        self.count_over: dict[str, int] = {}
        self.ticks: dict[str, int] = {}
        self.longest: list[tuple[float, str, float, float, float]] = []
        self.phase_started: dict[str, float] = {}
        self.phase_ended: dict[str, float] = {}
        self._last = time.perf_counter()
        self._last_cpu = time.thread_time()
        self._last_process_cpu = time.process_time()
        self._timer = QTimer(self)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)
        self._origin = time.perf_counter()
        self.stacks: list[dict[str, Any]] = []
        self._diagnose = diagnose
        self._gui_thread = threading.get_ident()
        if diagnose:
            threading.Thread(target=self._watch, name="stall-watchdog", daemon=True).start()

    def _profile(self, name: str) -> None:
        # Diagnosis only: a cProfile of the GUI thread during one phase.
        if not (PROFILE and PROFILE_PHASE):
            return
        import cProfile

        if name == PROFILE_PHASE:
            self._profiler = cProfile.Profile()
            self._profiler.enable()
        elif getattr(self, "_profiler", None) is not None:
            self._profiler.disable()
            self._profiler.dump_stats(PROFILE)
            self._profiler = None

    def start_phase(self, name: str) -> None:
        self._profile(name)
        now = time.perf_counter()
        if self.phase is not None:
            self.phase_ended[self.phase] = now
        self.phase = name
        self.phase_started[name] = now
        self.worst.setdefault(name, 0.0)
        self.count_over.setdefault(name, 0)
        self.ticks.setdefault(name, 0)
        self._last = now
        self._last_cpu = time.thread_time()
        self._last_process_cpu = time.process_time()
        if not self._timer.isActive():
            self._timer.start()

    def stop(self) -> None:
        self._profile("")
        if self.phase is not None:
            self.phase_ended[self.phase] = time.perf_counter()
        self.phase = None
        self._timer.stop()

    def _tick(self) -> None:
        now = time.perf_counter()
        cpu = time.thread_time()
        process_cpu = time.process_time()
        gap = now - self._last
        busy = cpu - self._last_cpu
        others = process_cpu - self._last_process_cpu - busy
        self._last = now
        self._last_cpu = cpu
        self._last_process_cpu = process_cpu
        phase = self.phase
        if phase is None:
            return
        self.ticks[phase] += 1
        if gap > self.worst[phase]:
            self.worst[phase] = gap
        if gap > 0.050:
            self.count_over[phase] += 1
        if gap > 0.016:
            # How much of the gap the GUI thread itself spent on the CPU, and the app's
            # other threads: the GUI thread waited the rest, for the GIL (when the other
            # threads ran) or for a CPU (when nothing in this process ran).
            self.longest.append((gap, phase, now - self._origin, busy, others))
            self.longest.sort(reverse=True)
            del self.longest[20:]

    def _watch(self) -> None:
        # Diagnosis only: where the GUI thread is when it has not ticked for 25 ms.
        captured_for = 0.0
        while True:
            time.sleep(0.005)
            last = self._last
            if self.phase is None or time.perf_counter() - last < 0.025 or last == captured_for:
                continue
            captured_for = last
            frame = sys._current_frames().get(self._gui_thread)
            if frame is not None:
                self.stacks.append(
                    {
                        "phase": self.phase,
                        "at_s": round(time.perf_counter() - self._origin, 3),
                        "stack": traceback.format_stack(frame)[-12:],
                    }
                )

    def report(self) -> dict[str, Any]:
        return {
            "interval_ms": self.interval_ms,
            "worst_ms": {k: round(v * 1000, 1) for k, v in self.worst.items()},
            "stalls_over_50ms": self.count_over,
            "ticks": self.ticks,
            "phase_s": {
                k: round(self.phase_ended.get(k, time.perf_counter()) - v, 1)
                for k, v in self.phase_started.items()
            },
            "longest": [
                {
                    "ms": round(gap * 1000, 1),
                    "gui_thread_cpu_ms": round(busy * 1000, 1),
                    "other_threads_cpu_ms": round(others * 1000, 1),
                    "phase": phase,
                    "at_s": round(at, 3),
                }
                for gap, phase, at, busy, others in self.longest
            ],
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "stacks": self.stacks[:40],
        }


# -- the window --------------------------------------------------------------------------


def open_window(config: Path) -> tuple[Any, MainWindow, AppController]:
    settings = load_settings(config)
    app = create_application(["qargo-desktop-bench"])
    window = MainWindow(settings, window_state=window_state_for(settings))
    controller = AppController(window, settings)
    window.show()
    controller.start(sandbox=False)
    return app, window, controller


def rows_painted(window: MainWindow) -> PaintWatch:
    """Watch for the table (or the placeholder that replaces it) to paint next."""
    watch = PaintWatch(window.table.viewport(), window.placeholder)
    window.table.viewport().update()
    window.placeholder.update()
    return watch


def trimmed_rss() -> tuple[int, int]:
    """Resident memory as the OS sees it, and after glibc gave freed memory back."""
    gc.collect()
    plain = rss_bytes()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return plain, plain
    return plain, rss_bytes()


def close(window: MainWindow, controller: AppController) -> None:
    window.close()
    window.tasks.shutdown(5000)
    controller.stop()


# -- scale -------------------------------------------------------------------------------


def scale(config: Path, rounds: int) -> dict[str, Any]:
    none_refs = {"start": sys.getrefcount(None)}
    app, window, controller = open_window(config)
    pages: list[tuple[float, bytes]] = []
    memory: dict[str, Any] = {}
    finished: list[object] = []

    def response_hook(response: Any, *_args: Any, **_kwargs: Any) -> Any:
        if response.request.method == "GET" and urlsplit(response.url).path.endswith(
            "/linked-mailboxes"
        ):
            body = response.content  # read here: "arrived" means the whole page is here
            pages.append((time.perf_counter(), body))
        return response

    def on_signed_in(_session: object) -> None:
        # Signed in, window shown, list not loaded yet: the empty window's memory.
        memory["empty"] = trimmed_rss()
        services = window.services
        assert services is not None
        services.session.hooks["response"].append(response_hook)

    finished_at: list[float] = []
    # Made now, armed when the refresh ends: from that moment the table's next paint is
    # the one that shows the rows (watching only once the wait below noticed the end
    # would miss it, and making the watch then would count its own cost).
    watch = PaintWatch(window.table.viewport(), window.placeholder, armed=False)

    def on_refresh_finished(error: object) -> None:
        finished_at.append(time.perf_counter())
        if not finished:
            watch.arm()
        finished.append(error)

    window.signed_in.connect(on_signed_in)
    window.refresh_finished.connect(on_refresh_finished)
    wait_for(lambda: bool(finished), 300, "the list to load")
    if finished[0] is not None:
        raise RuntimeError(f"the list did not load: {finished[0]!r}")
    shown = watch.wait()
    rows = window.model.rowCount()
    last_page = pages[-1][0]
    memory["loaded"] = trimmed_rss()
    none_refs["list_shown"] = sys.getrefcount(None)

    # Parsing the same page bodies alone, in the same process, GUI idle.
    bodies = [body for _t, body in pages]
    parse_times = []
    for _ in range(7):
        started = time.perf_counter()
        for body in bodies:
            json.loads(body)
        parse_times.append(time.perf_counter() - started)

    # Search: each keystroke to the filtered view painted.
    window.activateWindow()
    window.focus_search()
    keystrokes: list[dict[str, Any]] = []
    box = window.search_box

    def filtered() -> bool:
        return window.proxy.search_text == box.text().strip().casefold()

    def press(key: Any, text: str) -> None:
        started = time.perf_counter()
        if text:
            QTest.keyClick(box, text)
        else:
            QTest.keyClick(box, key)
        # The filter may apply at once or a little later (a debounce): wait for it, then
        # for the view to paint. A keystroke that hides none of the rows on screen would
        # not repaint them by itself, so the view is asked to paint either way.
        wait_for(filtered, 5, "the filter")
        watch = rows_painted(window)
        painted = watch.wait(5)
        keystrokes.append(
            {
                "text": box.text(),
                "ms": round((painted - started) * 1000, 2),
                "shown": window.proxy.rowCount(),
            }
        )

    profiler = None
    if PROFILE:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    for _ in range(rounds):
        for word in SEARCHES:
            for char in word:
                press(None, char)
            for _char in word:
                press(Qt.Key.Key_Backspace, "")
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(PROFILE)
    times = [k["ms"] for k in keystrokes]
    none_refs["after_search"] = sys.getrefcount(None)
    close(window, controller)
    app.processEvents()
    return {
        "rows": rows,
        "pages": len(pages),
        "page_bytes": sum(len(b) for b in bodies),
        "rows_shown_ms": round((shown - last_page) * 1000, 2),
        # For diagnosis: when each page arrived and the refresh ended, from the first page.
        "pages_arrived_ms": [round((t - pages[0][0]) * 1000, 1) for t, _body in pages],
        "refresh_finished_ms": round((finished_at[0] - pages[0][0]) * 1000, 1),
        "shown_ms": round((shown - pages[0][0]) * 1000, 1),
        "parse_ms": [round(t * 1000, 2) for t in parse_times],
        "memory_empty": memory["empty"],
        "memory_loaded": memory["loaded"],
        "keystrokes": keystrokes,
        "keystroke_p95_ms": percentile(times, 0.95),
        "keystroke_max_ms": max(times),
        # Watched because PySide6 6.12.0 on CPython 3.11 drops a reference to None on
        # every call of a void method (see docs/performance.md).
        "none_refcount": none_refs,
    }


# -- responsiveness ------------------------------------------------------------------------


def responsiveness(config: Path, diagnose: bool, authorise: str) -> dict[str, Any]:
    monitor = StallMonitor(diagnose=diagnose)
    app, window, controller = open_window(config)
    monitor.start_phase("start")
    # No saved sign-in in this config folder: the silent attempt ends on the sign-in page.
    wait_for(lambda: window.current_page is Page.SIGN_IN, 120, "the sign-in page")

    monitor.start_phase("sign_in")
    finished: list[object] = []
    window.refresh_finished.connect(finished.append)
    window.start_interactive_sign_in()
    wait_for(lambda: window.session is not None, 180, "the interactive sign-in")

    monitor.start_phase("refresh")
    wait_for(lambda: bool(finished), 600, "the list to load")
    if finished[0] is not None:
        raise RuntimeError(f"the list did not load: {finished[0]!r}")
    rows_painted(window).wait()
    rows = window.model.rowCount()

    monitor.start_phase("authorise")
    address = f"{authorise}@{DOMAIN}"
    mailbox = next(m for m in window.model.mailboxes() if m.address == address)
    window.select_mailbox(mailbox.id)
    window.authorise_requested.emit(mailbox)
    actions = window.link_actions
    wait_for(lambda: not actions.busy(mailbox.id), 300, "the authorisation")
    linked = window.model.find(mailbox.id)
    authorised = linked.raw_status if linked is not None else None
    if linked is None or linked.status is not LinkStatus.LINKED:
        raise RuntimeError(f"the authorisation of {address} ended {authorised}")

    monitor.start_phase("selftest")
    window.selftest_requested.emit(linked)
    dialog = actions.selftest_dialog(mailbox.id)
    assert dialog is not None
    reports: list[Any] = []
    dialog.finished_with.connect(reports.append)
    wait_for(lambda: bool(reports), 600, "the self-test")
    verdict = getattr(reports[0], "verdict", None)
    monitor.stop()
    dialog.accept()
    close(window, controller)
    app.processEvents()
    return {
        "rows": rows,
        "authorised": authorised,
        "selftest_verdict": getattr(verdict, "value", str(verdict)),
        **monitor.report(),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--phase", required=True, choices=["scale", "responsiveness"])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--rounds", type=int, default=1, help="search rounds (scale)")
    parser.add_argument("--diagnose", action="store_true", help="sample stacks of stalls")
    parser.add_argument("--authorise", default="sales", help="local part of the mailbox")
    args = parser.parse_args()
    if args.phase == "scale":
        result = scale(args.config, args.rounds)
    else:
        result = responsiveness(args.config, args.diagnose, args.authorise)
    args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
