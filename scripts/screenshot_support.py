"""Take the documentation screenshots of the support windows against the built-in sandbox.

Run it under a virtual display::

    xvfb-run -a .venv/bin/python scripts/screenshot_support.py [--out docs/screenshots]

It starts an in-process sandbox on loopback and takes:

- ``diagnostics.png``: the Diagnostics window after a real run against the sandbox, whose
  Microsoft Graph answers 503 (a fault the sandbox injects) so that a problem shows
  beside what works, with the layer-by-layer timings and the certificate's issuer;
- ``crash-dialog.png``: the crash dialog with a real report (a bug raised and reported
  through the app's crash path, saved in a temporary log folder).

Nothing is stored outside a temporary folder (the keyring is in memory).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import keyring
from screenshot import MemoryKeyring  # the sibling script's: nothing left behind

from PySide6.QtWidgets import QApplication, QWidget

from qargo_desktop.core.bootstrap import build_services, sandbox_overrides
from qargo_desktop.core.config import Settings, app_paths
from qargo_desktop.core.logs import setup_logging
from qargo_desktop.core.support import report_crash
from qargo_desktop.sandbox.server import Sandbox
from qargo_desktop.sandbox.world import SandboxOptions
from qargo_desktop.ui import dialogs, i18n
from qargo_desktop.ui.app import create_application
from qargo_desktop.ui.diagnostics_window import DiagnosticsWindow
from qargo_desktop.ui.tasks import TaskRunner
from qargo_desktop.ui.theme import Theme, apply_colour_scheme

ROOT = Path(__file__).resolve().parents[1]


def wait_for(app: QApplication, done: Callable[[], bool], timeout_s: float = 60.0) -> bool:
    """Run the event loop until ``done()`` or the timeout."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            return False
        app.processEvents()
        time.sleep(0.02)
    return True


def grab(app: QApplication, widget: QWidget, path: Path) -> None:
    for _ in range(5):
        app.processEvents()
    widget.grab().save(str(path))
    print(f"wrote {path}")


def diagnostics(app: QApplication, sandbox: Sandbox, folder: Path, out: Path) -> bool:
    settings = dataclasses.replace(
        Settings(config_dir=folder, refresh_interval_s=0),
        **sandbox_overrides(sandbox.info),  # type: ignore[arg-type]
    )
    logging_setup = setup_logging(app_paths(settings).log_dir)
    # What a session that met trouble leaves in its log: the window shows it.
    logging.getLogger("qargo_desktop.core.api").warning(
        "GET /v1/organisation/linked-mailboxes answered 503 after 2 attempts (correlation id "
        "7f1c2a9e-5b1d-4c3e-9a0f-2d6b8e4c1a77)"
    )
    sandbox.set_faults(unavailable_probability=1.0, services=("graph",))
    tasks = TaskRunner()
    window = DiagnosticsWindow(
        None,
        settings=settings,
        services=build_services(settings),
        tasks=tasks,
        theme=Theme(dark=False),
        ring_buffer=logging_setup.ring_buffer,
    )
    window.resize(1000, 860)
    window.show()
    window.run()
    ok = wait_for(app, lambda: window.report is not None and not window.running)
    sandbox.set_faults(unavailable_probability=0.0)
    if ok:
        grab(app, window, out / "diagnostics.png")
    window.close()
    tasks.shutdown(5000)
    return ok


def crash_dialog(app: QApplication, folder: Path, out: Path) -> None:
    def count_mailboxes(page: dict[str, list[str]]) -> int:
        return len(page["mailboxes"])

    try:
        count_mailboxes({"items": []})
    except KeyError as exc:
        report = report_crash(
            type(exc), exc, exc.__traceback__, log_dir=folder / "logs", where="main thread"
        )
    dialog = dialogs.CrashDialog(None, report)
    dialog.resize(860, 600)
    dialog.show()
    grab(app, dialog, out / "crash-dialog.png")
    dialog.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    # They would replace the sandbox's CA as the trust of every request (see FACTS.md).
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        os.environ.pop(name, None)
    os.environ["NO_PROXY"] = "127.0.0.1,localhost,::1"
    keyring.set_keyring(MemoryKeyring())
    app = create_application([sys.argv[0]])
    app.setQuitOnLastWindowClosed(False)
    i18n.install_language("en-GB")
    apply_colour_scheme("light")
    with tempfile.TemporaryDirectory(prefix="qargo-screenshot-") as temp:
        folder = Path(temp)
        with Sandbox(SandboxOptions(data_dir=folder / "sandbox")) as sandbox:
            if not diagnostics(app, sandbox, folder / "app", args.out):
                print("the diagnostics did not finish", file=sys.stderr)
                return 1
        crash_dialog(app, folder / "app", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
