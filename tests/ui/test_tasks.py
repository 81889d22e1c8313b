"""The background-task primitive: results, errors and progress come back on the GUI thread."""

from __future__ import annotations

import threading
import time

import pytest

from qargo_desktop.core.errors import Cancelled
from qargo_desktop.ui.tasks import TaskRunner


@pytest.fixture
def runner(qtbot):
    runner = TaskRunner()
    yield runner
    runner.shutdown(5000)


def test_result_and_progress_arrive_in_order_on_the_gui_thread(qtbot, runner) -> None:
    gui = threading.current_thread()
    seen: list[tuple[str, object, threading.Thread]] = []
    worker: list[threading.Thread] = []

    def work(cancel, progress):
        worker.append(threading.current_thread())
        for value in range(5):
            progress(value)
        return "done"

    done = threading.Event()

    def finished(result, error):
        seen.append(("finished", (result, error), threading.current_thread()))
        done.set()

    def progressed(value):
        seen.append(("progress", value, threading.current_thread()))

    runner.start("count", work, on_finished=finished, on_progress=progressed)
    qtbot.waitUntil(done.is_set, timeout=5000)
    assert worker[0] is not gui
    assert [s[1] for s in seen] == [0, 1, 2, 3, 4, ("done", None)]
    assert all(s[2] is gui for s in seen)


def test_every_exception_is_caught_and_handed_back(qtbot, runner) -> None:
    results: list[tuple[object, object]] = []

    def broken(cancel, progress):
        raise KeyError("bug")

    runner.start("broken", broken, on_finished=lambda r, e: results.append((r, e)))
    qtbot.waitUntil(lambda: bool(results), timeout=5000)
    result, error = results[0]
    assert result is None and isinstance(error, KeyError)


def test_cancel_reaches_the_function_and_its_answer_still_arrives(qtbot, runner) -> None:
    results: list[object] = []
    started = threading.Event()

    def wait(cancel, progress):
        started.set()
        if not cancel.wait(10):
            return "not cancelled"
        raise Cancelled()

    handle = runner.start("wait", wait, on_finished=lambda r, e: results.append(e))
    assert started.wait(5)
    began = time.monotonic()
    handle.cancel()
    qtbot.waitUntil(lambda: bool(results), timeout=5000)
    assert isinstance(results[0], Cancelled)
    assert time.monotonic() - began < 2
    assert handle.done and not handle.running


def test_discarded_task_reports_nothing(qtbot, runner) -> None:
    results: list[object] = []
    gate = threading.Event()

    def work(cancel, progress):
        gate.wait(5)
        progress("late")
        return "late"

    handle = runner.start("discard", work, on_finished=lambda r, e: results.append(r),
                          on_progress=results.append)  # fmt: skip
    handle.discard()
    gate.set()
    assert runner.wait(5000)
    qtbot.wait(50)
    assert results == []


def test_busy_changes_with_the_first_and_last_task(qtbot, runner) -> None:
    states: list[bool] = []
    runner.busy_changed.connect(states.append)
    gate = threading.Event()
    runner.start("a", lambda c, p: gate.wait(5))
    runner.start("b", lambda c, p: gate.wait(5))
    gate.set()
    qtbot.waitUntil(lambda: states == [True, False], timeout=5000)
    assert runner.active == []


def test_shutdown_cancels_and_waits(qtbot) -> None:
    runner = TaskRunner()
    runner.start("forever", lambda cancel, p: cancel.wait(30))
    began = time.monotonic()
    assert runner.shutdown(5000)
    assert time.monotonic() - began < 2
