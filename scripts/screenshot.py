"""Take the documentation screenshots of the main window against the built-in sandbox.

Run it under a virtual display::

    xvfb-run -a .venv/bin/python scripts/screenshot.py [--out docs/screenshots]

It starts an in-process sandbox on loopback, signs in as the sandbox's super admin with
the scripted browser (the real MSAL flow), waits for the list and a mailbox's history,
and grabs the window:

- ``main-window.png``: every link state in the list, a failed link selected;
- ``main-window-dark.png``: the same in the dark theme;
- ``sign-in.png``: the sign-in page;
- ``preferences.png``: the Preferences dialog (and the dialogs of the link actions).

``--language nl`` takes only the main window, in that language (``main-window-nl.png``);
``--scale 1.5`` takes it at 150 % (``QT_SCALE_FACTOR``; ``main-window-150.png``)::

    xvfb-run -a .venv/bin/python scripts/screenshot.py --language nl
    xvfb-run -a .venv/bin/python scripts/screenshot.py --scale 1.5

Nothing is stored outside a temporary folder (tokens go to an in-memory keyring).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import keyring
from keyring.backend import KeyringBackend

from PySide6.QtCore import QSettings, Qt, QTimer
from PySide6.QtWidgets import QApplication, QWidget

from qargo_desktop.core.bootstrap import build_services, sandbox_overrides
from qargo_desktop.core.config import Settings
from qargo_desktop.core.selftest import SelfTestOptions
from qargo_desktop.sandbox import browser
from qargo_desktop.sandbox.server import Sandbox
from qargo_desktop.sandbox.world import SandboxOptions
from qargo_desktop.ui import dialogs, i18n
from qargo_desktop.ui.app import create_application, sandbox_sign_in_note
from qargo_desktop.ui.main_window import MainWindow, Page
from qargo_desktop.ui.preferences import PreferencesDialog
from qargo_desktop.ui.theme import Theme, apply_colour_scheme

ROOT = Path(__file__).resolve().parents[1]

ADMIN = "admin@northwind-haulage.example"
SELECTED = "claims@northwind-haulage.example"
AUTHORISED = "sales@northwind-haulage.example"
TESTED = "dispatch@northwind-haulage.example"
SIZE = (1440, 880)


class MemoryKeyring(KeyringBackend):
    """Keeps the token cache key in memory: a screenshot run leaves nothing behind."""

    priority = 1

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.secrets: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.secrets.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.secrets[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.secrets.pop((service, username), None)


class Shooter:
    """Drives one window through sign-in and takes its pictures."""

    def __init__(self, app: QApplication, window: MainWindow, out: Path, prefix: str) -> None:
        self.app = app
        self.window = window
        self.out = out
        self.prefix = prefix
        self.done = False
        self.failed: str | None = None
        self._steps: list[Callable[[], bool]] = [
            self._sign_in_page_shown,
            self._list_loaded,
            self._history_loaded,
        ]
        if prefix == "main-window":
            self._steps += [
                self._start_authorising,
                self._authorising_shown,
                self._reset_shown,
                self._start_selftest,
                self._selftest_passed,
                self._selftest_failed,
                self._preferences_shown,
            ]
        self.sandbox: Sandbox | None = None
        self._timer = QTimer()
        self._timer.timeout.connect(self._poll)
        self._timer.start(100)
        window.refresh_finished.connect(self._on_refresh_finished)
        self._refreshed = False

    def _on_refresh_finished(self, error: object) -> None:
        if error is not None:
            self.failed = f"refresh failed: {error}"
        self._refreshed = True

    def _grab(self, name: str) -> None:
        path = self.out / name
        self.window.grab().save(str(path))
        print(f"wrote {path}")

    def _sign_in_page_shown(self) -> bool:
        if self.window.current_page is not Page.SIGN_IN:
            return False
        if self.prefix == "main-window":
            self._grab("sign-in.png")
        self.window.sign_in_page.sign_in_button.click()
        return True

    def _list_loaded(self) -> bool:
        if not self._refreshed or self.window.current_page is not Page.MAILBOXES:
            return False
        self.window.select_mailbox(self._id_of(SELECTED))
        return True

    def _history_loaded(self) -> bool:
        if self.window.detail_pane.audit_list.count() == 0:
            return False
        self.window.table.setFocus(Qt.FocusReason.OtherFocusReason)
        self._grab(f"{self.prefix}.png")
        return True

    def _start_authorising(self) -> bool:
        # The browser opens the page and waits, as a person reading it would.
        info_ca = self.window.property("sandbox_ca")
        self.window.browser_opener = lambda url: bool(
            browser.run(url, account=AUTHORISED, action="ignore", ca_certificate=info_ca, say=print)
        )
        mailbox = self.window.model.find(self._id_of(AUTHORISED))
        assert mailbox is not None
        self.window.authorise_requested.emit(mailbox)
        return True

    def _authorising_shown(self) -> bool:
        dialog = self.window.link_actions.authorisation_dialog(self._id_of(AUTHORISED))
        if dialog is None or not dialog.link.text():
            return False
        dialog.grab().save(str(self.out / "authorising-dialog.png"))
        print(f"wrote {self.out / 'authorising-dialog.png'}")
        dialog.cancel_button.click()
        return True

    def _reset_shown(self) -> bool:
        if self.window.link_actions.busy(self._id_of(AUTHORISED)):
            return False
        mailbox = self.window.model.find(self._id_of(SELECTED))
        assert mailbox is not None
        words = dialogs.reset_confirmation_text(mailbox)
        box, _yes = dialogs.build_confirmation(
            self.window,
            title=words["title"],
            text=words["text"],
            informative=words["informative"],
            confirm_label=words["confirm_label"],
        )
        box.show()
        self.app.processEvents()
        box.grab().save(str(self.out / "reset-confirmation.png"))
        print(f"wrote {self.out / 'reset-confirmation.png'}")
        box.close()
        return True

    def _start_selftest(self) -> bool:
        ca = self.window.property("sandbox_ca")
        self.window.browser_opener = lambda url: bool(
            browser.run(url, account=TESTED, ca_certificate=ca, say=print)
        )
        mailbox = self.window.model.find(self._id_of(TESTED))
        assert mailbox is not None
        self.window.selftest_requested.emit(mailbox)
        return True

    def _selftest_passed(self) -> bool:
        dialog = self.window.link_actions.selftest_dialog(self._id_of(TESTED))
        if dialog is None or dialog.running or dialog.report is None:
            return False
        self._grab_widget(dialog, "selftest-pass.png")
        # Qargo's sync never sees the next message: the run fails on the last leg.
        assert self.sandbox is not None
        self.sandbox.set_faults(never_sync=True)
        dialog.options = SelfTestOptions(timeout_s=6)
        dialog.start()
        return True

    def _selftest_failed(self) -> bool:
        dialog = self.window.link_actions.selftest_dialog(self._id_of(TESTED))
        if dialog is None or dialog.running or dialog.report is None:
            return False
        self._grab_widget(dialog, "selftest-fail.png")
        dialog.close_button.click()
        return True

    def _preferences_shown(self) -> bool:
        dialog = PreferencesDialog(self.window, self.window.settings or Settings())
        dialog.show()
        self._grab_widget(dialog, "preferences.png")
        dialog.close()
        return True

    def _grab_widget(self, widget: QWidget, name: str) -> None:
        self.app.processEvents()
        widget.grab().save(str(self.out / name))
        print(f"wrote {self.out / name}")

    def _id_of(self, address: str) -> str:
        for mailbox in self.window.model.mailboxes():
            if mailbox.address == address:
                return mailbox.id
        raise SystemExit(f"{address} is not in the sandbox's list")

    def _poll(self) -> None:
        if self.failed:
            self._timer.stop()
            self.app.exit(1)
            return
        if self._steps and self._steps[0]():
            self._steps.pop(0)
        if not self._steps:
            self._timer.stop()
            self.done = True
            self.app.exit(0)


def shoot(
    app: QApplication,
    sandbox: Sandbox,
    folder: Path,
    out: Path,
    *,
    dark: bool,
    prefix: str | None = None,
) -> bool:
    """Sign in a fresh window and take its pictures; returns whether it worked."""
    info = sandbox.info
    settings = dataclasses.replace(
        Settings(config_dir=folder, refresh_interval_s=0),
        **sandbox_overrides(info),  # type: ignore[arg-type]
    )
    window = MainWindow(
        settings,
        window_state=QSettings(str(folder / "window-state.ini"), QSettings.Format.IniFormat),
        theme=Theme(dark=dark),
    )

    def opener(url: str) -> bool:
        browser.run(url, account=ADMIN, ca_certificate=str(info.ca_certificate), say=print)
        return True

    window.browser_opener = opener
    window.setProperty("sandbox_ca", str(info.ca_certificate))
    window.resize(*SIZE)
    window.show()
    window.attach_services(
        build_services(settings), environment="Sandbox", sign_in_note=sandbox_sign_in_note(sandbox)
    )
    prefix = prefix or ("main-window-dark" if dark else "main-window")
    shooter = Shooter(app, window, out, prefix)
    shooter.sandbox = sandbox
    QTimer.singleShot(120_000, lambda: app.exit(2))
    app.exec()
    window.close()
    window.tasks.shutdown(5000)
    if not shooter.done:
        print(f"screenshot failed: {shooter.failed or 'timed out'}", file=sys.stderr)
    return shooter.done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--language", help="only the main window, in this language (nl, fr)")
    parser.add_argument("--scale", type=float, help="only the main window, at this scale (1.5)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.scale:
        # Read once, when the application starts: what 150 % display scaling does.
        os.environ["QT_SCALE_FACTOR"] = f"{args.scale:g}"
    # They would replace the sandbox's CA as the trust of every request (see FACTS.md).
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        os.environ.pop(name, None)
    keyring.set_keyring(MemoryKeyring())
    app = create_application([sys.argv[0]])
    app.setQuitOnLastWindowClosed(False)
    i18n.install_language(args.language or "en-GB")
    with tempfile.TemporaryDirectory(prefix="qargo-screenshot-") as temp:
        folder = Path(temp)
        with Sandbox(SandboxOptions(data_dir=folder / "sandbox")) as sandbox:
            if args.language or args.scale:
                suffix = f"-{args.language}" if args.language else ""
                suffix += f"-{round(args.scale * 100)}" if args.scale else ""
                prefix = f"main-window{suffix}"
                return 0 if shoot(app, sandbox, folder / "one", args.out, dark=False,
                                  prefix=prefix) else 1  # fmt: skip
            if not shoot(app, sandbox, folder / "light", args.out, dark=False):
                return 1
            # The platform here cannot switch to dark, so this draws it with the app's own
            # dark palette: the same path a Linux desktop without a portal takes.
            apply_colour_scheme("dark")
            if not shoot(app, sandbox, folder / "dark", args.out, dark=True):
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
