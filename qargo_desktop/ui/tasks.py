"""The one way the window runs slow work: a thread-pool task with cancellation.

A task runs a plain function on a worker thread. The function gets a cancel event and
a progress callback; whatever it returns or raises comes back to the GUI thread as
``(result, error)``, and every progress value arrives there too, in order, through a
queued connection. Workers never touch widgets: they only hand values back.

An exception that is not a :class:`QargoError` (nor one the caller said it expects) is a
bug: besides going to ``on_finished``, it goes to the crash reporter set with
:func:`set_crash_reporter` (the app's crash handler: log, report, dialog), once; callers
check :func:`was_reported` before logging it again.

Example::

    def load(cancel: threading.Event, progress: Progress) -> MailboxList | None:
        return api.list_mailboxes(on_page=progress, cancel=cancel)

    handle = runner.start("refresh", load, on_finished=self._on_refresh_finished,
                          on_progress=self._on_page_loaded)
    handle.cancel()
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QObject, Qt, QThreadPool, Signal, Slot

from qargo_desktop.core.errors import QargoError

log = logging.getLogger(__name__)

Progress = Callable[[Any], None]
TaskFunction = Callable[[threading.Event, Progress], Any]
Finished = Callable[[Any, BaseException | None], None]
#: Receives an unexpected exception of a task and where it happened, on the worker thread.
CrashReporter = Callable[[BaseException, str], None]

_REPORTED_MARK = "_qargo_crash_reported"


class _Reporter:
    """Where unexpected task errors go (one for the process: the app's crash handler)."""

    current: CrashReporter | None = None


def set_crash_reporter(reporter: CrashReporter | None) -> CrashReporter | None:
    """Send unexpected task errors to ``reporter`` from now on; returns the previous one."""
    previous, _Reporter.current = _Reporter.current, reporter
    return previous


def was_reported(error: BaseException) -> bool:
    """Whether the crash reporter already took this error (so nobody logs it again)."""
    return bool(getattr(error, _REPORTED_MARK, False))


def _report_unexpected(name: str, error: BaseException) -> None:
    """Hand a task's unexpected error to the crash reporter, or log it when there is none."""
    reporter = _Reporter.current
    if reporter is None:
        log.error("Task %s failed unexpectedly", name, exc_info=error)
        return
    try:
        reporter(error, f"background task {name!r}")
    except Exception:  # the reporter failing must not lose the error
        log.exception("The crash reporter failed on task %s", name)
        log.error("Task %s failed unexpectedly", name, exc_info=error)
        return
    with contextlib.suppress(AttributeError, TypeError):
        setattr(error, _REPORTED_MARK, True)


@dataclass(eq=False)
class TaskHandle:
    """The GUI thread's handle on one running task.

    Attributes:
        id: Unique within the process.
        name: What the task does, for the log.
        cancel_event: Set by :meth:`cancel`; the task's function watches it.
    """

    id: int
    name: str
    cancel_event: threading.Event = field(default_factory=threading.Event)
    done: bool = False
    discarded: bool = False
    started_at: float = field(default_factory=time.monotonic)

    def cancel(self) -> None:
        """Ask the task to stop; its result still arrives (usually ``Cancelled``)."""
        self.cancel_event.set()

    def discard(self) -> None:
        """Ask the task to stop and drop whatever it returns or reports."""
        self.discarded = True
        self.cancel_event.set()

    @property
    def running(self) -> bool:
        """Whether the task has not finished yet (as far as the GUI thread knows)."""
        return not self.done


@dataclass
class _Callbacks:
    handle: TaskHandle
    on_finished: Finished | None
    on_progress: Progress | None


class _Relay(QObject):
    """Carries values from worker threads to the GUI thread (it lives there)."""

    finished = Signal(int, object, object)
    progressed = Signal(int, object)


class TaskRunner(QObject):
    """Runs background tasks and delivers their results on the GUI thread.

    Create it on the GUI thread. It owns its thread pool, so :meth:`shutdown` can cancel
    and wait for exactly its own tasks.

    Signals:
        busy_changed(bool): Whether any task is running; changes on the GUI thread.

    Args:
        parent: The owning object (usually the main window).
        max_threads: Upper bound of worker threads.
    """

    busy_changed = Signal(bool)

    _ids = itertools.count(1)

    def __init__(self, parent: QObject | None = None, *, max_threads: int = 4) -> None:
        super().__init__(parent)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(max_threads)
        self._relay = _Relay(self)
        # Queued on purpose: even a task that finishes on the GUI thread's own turn must
        # deliver after start() returned, never inside it.
        self._relay.finished.connect(self._on_finished, Qt.ConnectionType.QueuedConnection)
        self._relay.progressed.connect(self._on_progressed, Qt.ConnectionType.QueuedConnection)
        self._active: dict[int, _Callbacks] = {}

    @property
    def active(self) -> list[TaskHandle]:
        """The tasks that have not finished."""
        return [c.handle for c in self._active.values()]

    def start(
        self,
        name: str,
        function: TaskFunction,
        *,
        on_finished: Finished | None = None,
        on_progress: Progress | None = None,
        expected: tuple[type[BaseException], ...] = (),
    ) -> TaskHandle:
        """Run ``function(cancel_event, progress)`` on a worker thread.

        Args:
            name: What the task does, for the log.
            function: The work. It must not touch widgets.
            on_finished: Called on the GUI thread with ``(result, None)`` or
                ``(None, exception)``.
            on_progress: Called on the GUI thread with each value the function passes
                to ``progress``.
            expected: Exceptions besides :class:`QargoError` that are routine for this
                task (``OSError`` when saving a file): they only go to ``on_finished``.
                Any other exception is a bug and also goes to the crash reporter.

        Returns:
            The handle to cancel it with.
        """
        handle = TaskHandle(next(self._ids), name)
        was_busy = bool(self._active)
        self._active[handle.id] = _Callbacks(handle, on_finished, on_progress)
        relay = self._relay

        def report(value: Any) -> None:
            if handle.discarded:
                return
            try:
                relay.progressed.emit(handle.id, value)
            except RuntimeError:
                # The window is gone; nobody is left to tell.
                handle.discard()

        def work() -> None:
            result: Any = None
            error: BaseException | None = None
            try:
                result = function(handle.cancel_event, report)
            except BaseException as exc:
                error = exc
                if isinstance(exc, Exception) and not isinstance(exc, (QargoError, *expected)):
                    _report_unexpected(name, exc)
                elif not isinstance(exc, (QargoError, *expected)):
                    log.error("Task %s was interrupted: %r", name, exc)
            try:
                relay.finished.emit(handle.id, result, error)
            except RuntimeError:
                log.debug("Task %s finished after its window closed", name)

        log.debug("Task %s (#%d) started", name, handle.id)
        self._pool.start(work)
        if not was_busy:
            self.busy_changed.emit(True)
        return handle

    @Slot(int, object)
    def _on_progressed(self, task_id: int, value: object) -> None:
        callbacks = self._active.get(task_id)
        if callbacks is None or callbacks.handle.discarded or callbacks.on_progress is None:
            return
        callbacks.on_progress(value)

    @Slot(int, object, object)
    def _on_finished(self, task_id: int, result: object, error: object) -> None:
        callbacks = self._active.pop(task_id, None)
        if callbacks is None:
            return
        handle = callbacks.handle
        handle.done = True
        elapsed_ms = (time.monotonic() - handle.started_at) * 1000
        log.debug(
            "Task %s (#%d) finished in %.0f ms%s",
            handle.name,
            handle.id,
            elapsed_ms,
            f" with {type(error).__name__}" if error is not None else "",
        )
        if not self._active:
            self.busy_changed.emit(False)
        if handle.discarded or callbacks.on_finished is None:
            return
        assert error is None or isinstance(error, BaseException)
        callbacks.on_finished(result, error)

    def cancel_all(self) -> None:
        """Ask every running task to stop and drop their results."""
        for callbacks in list(self._active.values()):
            callbacks.handle.discard()

    def wait(self, timeout_ms: int = -1) -> bool:
        """Block until every task's function returned (tests and shutdown only)."""
        return self._pool.waitForDone(timeout_ms)

    def shutdown(self, timeout_ms: int = 5000) -> bool:
        """Cancel every task and wait for the workers; returns whether all stopped."""
        self.cancel_all()
        stopped = self._pool.waitForDone(timeout_ms)
        if not stopped:
            log.warning("Some background tasks were still running at shutdown")
        return stopped
