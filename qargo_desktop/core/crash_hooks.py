"""The hooks that catch unhandled exceptions of every thread, installed first and cheaply.

The window and the commands install them before anything else, so that a failure at
start-up is reported too. Installing them must not cost start-up time, so this module
needs only the standard library: the report itself (versions, the last log lines,
redaction, the file in the log folder) is built by
:func:`qargo_desktop.core.support.report_crash`, imported when something has crashed.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qargo_desktop.core.logs import RingBufferHandler
    from qargo_desktop.core.support import CrashReport

log = logging.getLogger(__name__)

CrashListener = Callable[["CrashReport"], None]


def install_crash_handler(
    log_dir: Path | None,
    *,
    on_crash: CrashListener | None = None,
    ring_buffer: RingBufferHandler | None = None,
) -> Callable[[], None]:
    """Send unhandled exceptions of every thread through ``report_crash``.

    ``on_crash`` (the window's crash dialog, handed over to the GUI thread) gets each
    report. ``KeyboardInterrupt`` keeps Python's own handling. Returns a function that
    puts the previous hooks back.
    """
    previous_hook = sys.excepthook
    previous_thread_hook = threading.excepthook

    def handle(
        exc_type: type[BaseException],
        exc: BaseException | None,
        tb: TracebackType | None,
        where: str,
    ) -> None:
        from qargo_desktop.core.support import report_crash

        report = report_crash(
            exc_type, exc, tb, log_dir=log_dir, where=where, ring_buffer=ring_buffer
        )
        if on_crash is not None:
            try:
                on_crash(report)
            except Exception:  # the listener failing must not hide the crash
                with contextlib.suppress(Exception):
                    log.exception("The crash listener failed")
        else:
            sys.stderr.write(report.text)

    def excepthook(
        exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
    ) -> None:
        if issubclass(exc_type, KeyboardInterrupt):
            previous_hook(exc_type, exc, tb)
            return
        handle(exc_type, exc, tb, "main thread")

    def thread_excepthook(args: threading.ExceptHookArgs) -> None:
        if issubclass(args.exc_type, SystemExit):
            return
        name = args.thread.name if args.thread is not None else "a thread"
        handle(args.exc_type, args.exc_value, args.exc_traceback, f"thread {name}")

    sys.excepthook = excepthook
    threading.excepthook = thread_excepthook

    def uninstall() -> None:
        sys.excepthook = previous_hook
        threading.excepthook = previous_thread_hook

    return uninstall
