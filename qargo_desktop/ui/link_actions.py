"""The link actions in the window: authorise, reauthorise, reset, add, remove, cancel.

:class:`LinkActions` listens to the main window's ``*_requested`` signals and runs each
action through the window's one task runner, with the dialogs of ``dialogs.py``. One
operation per mailbox at a time; other mailboxes stay usable. Routine outcomes go to the
message bar; only destructive actions ask for a modal confirmation.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QCoreApplication, QObject

from qargo_desktop.core.errors import QargoError
from qargo_desktop.core.models import LinkStatus, Mailbox, MailboxAction
from qargo_desktop.ui import texts
from qargo_desktop.ui.tasks import Progress, TaskHandle, was_reported
from qargo_desktop.ui.theme import MessageLevel

if TYPE_CHECKING:
    # Imported where used: they bring requests and msal, which the first paint does not need.
    from qargo_desktop.core.linking import LinkResult, MailboxLinker
    from qargo_desktop.ui import dialogs
    from qargo_desktop.ui.device_code_dialog import DeviceCodeDialog
    from qargo_desktop.ui.main_window import MainWindow
    from qargo_desktop.ui.selftest_dialog import SelfTestDialog

log = logging.getLogger(__name__)

translate = QCoreApplication.translate


class LinkActions(QObject):
    """Runs the link lifecycle for the main window.

    Args:
        window: The main window whose signals start the actions.
    """

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self._window = window
        self._running: dict[str, TaskHandle] = {}
        self._linker_for: object | None = None
        self._cached_linker: MailboxLinker | None = None
        self._dialogs: dict[str, dialogs.SignInWaitDialog] = {}
        self._device_dialogs: dict[str, DeviceCodeDialog] = {}
        self._claims: dict[str, str] = {}
        window.authorise_requested.connect(self.authorise)
        window.reauthorise_requested.connect(self.authorise)
        window.device_authorise_requested.connect(self.authorise_on_device)
        window.reset_requested.connect(self.reset)
        window.add_requested.connect(self.add)
        window.remove_requested.connect(self.remove)
        window.cancel_authorisation_requested.connect(self.cancel)
        window.selftest_requested.connect(self.selftest)
        self._selftests: dict[str, SelfTestDialog] = {}

    # -- helpers -----------------------------------------------------------------------

    def busy(self, mailbox_id: str) -> bool:
        """Whether an operation on this mailbox is running."""
        return mailbox_id in self._running

    def _linker(self) -> MailboxLinker | None:
        from qargo_desktop.core.linking import MailboxLinker

        services = self._window.services
        if services is None:
            return None
        # One linker per session: it remembers attempt endings the API did not hear yet
        # and records them with the next operation.
        if self._linker_for is not services:
            self._linker_for = services
            self._cached_linker = MailboxLinker(services)
        return self._cached_linker

    def _start(
        self,
        mailbox: Mailbox | None,
        name: str,
        work: Any,
        on_finished: Any,
        on_progress: Any = None,
    ) -> TaskHandle | None:
        key = mailbox.id if mailbox is not None else f"new:{name}"
        if key in self._running:
            self._window.show_message(
                translate("LinkActions", "{address}: another action is still running.").format(
                    address=mailbox.address
                )
                if mailbox
                else translate("LinkActions", "Another action is still running."),
                level=MessageLevel.INFO,
                key=f"busy:{key}",
            )
            return None

        def finished(result: Any, error: BaseException | None) -> None:
            self._running.pop(key, None)
            on_finished(result, error)

        handle = self._window.tasks.start(name, work, on_finished=finished, on_progress=on_progress)
        self._running[key] = handle
        return handle

    def _show_error(self, mailbox: Mailbox | None, error: BaseException) -> None:
        prefix = f"{mailbox.address}: " if mailbox is not None else ""
        text = texts.explain(error) if isinstance(error, QargoError) else str(error)
        if not isinstance(error, QargoError) and not was_reported(error):
            log.error("Unexpected error in a link action", exc_info=error)
        self._window.show_message(prefix + text, level=MessageLevel.ERROR)

    def _refresh_row(self, mailbox: Mailbox | None) -> None:
        if mailbox is not None:
            self._window.upsert_mailbox(mailbox)

    # -- authorise and reauthorise -------------------------------------------------------

    def authorise(self, mailbox: Mailbox) -> None:
        """Authorise or reauthorise ``mailbox`` through a browser sign-in as it."""
        linker = self._linker()
        services = self._window.services
        if linker is None or services is None:
            return
        opener = self._window.browser_opener
        claims = self._claims.pop(mailbox.id, None)
        reauthorise = mailbox.status is not LinkStatus.UNLINKED
        verb = "Reauthorise" if reauthorise else "Authorise"  # for the log

        def work(cancel: threading.Event, progress: Progress) -> LinkResult:
            from qargo_desktop.core.identity import InteractiveControl

            control = InteractiveControl(
                cancel=cancel,
                deadline_s=services.sign_in_timeout_s,
                on_auth_uri=lambda url: progress(("auth_uri", url)),
                on_browser_failed=lambda url: progress(("browser_failed", url)),
            )
            if opener is not None:
                control.opener = opener
            return linker.authorise(mailbox, control, claims_challenge=claims)

        from qargo_desktop.ui import dialogs

        dialog = dialogs.SignInWaitDialog(
            self._window,
            title=(
                translate("LinkActions", "Reauthorise {address}")
                if reauthorise
                else translate("LinkActions", "Authorise {address}")
            ).format(address=mailbox.address),
            heading=translate("LinkActions", "Sign in as {address} in your browser").format(
                address=mailbox.address
            ),
            instructions=translate(
                "LinkActions",
                "A Microsoft sign-in page is opening in your browser. Choose or sign in as "
                "{address} (not your own admin account) and accept the permissions Qargo asks "
                "for. If the browser is signed in as someone else, copy the link below into a "
                "private window.",
            ).format(address=mailbox.address),
            deadline_s=services.sign_in_timeout_s,
        )

        def progressed(value: object) -> None:
            if isinstance(value, tuple):
                kind, url = value
                if kind == "auth_uri":
                    dialog.set_auth_uri(url)
                elif kind == "browser_failed":
                    dialog.set_browser_failed(url)

        handle = self._start(
            mailbox,
            f"{verb.lower()} {mailbox.address}",
            work,
            lambda result, error: self._on_authorise_finished(mailbox, result, error),
            progressed,
        )
        if handle is None:
            dialog.deleteLater()
            return
        dialog.cancel_requested.connect(handle.cancel)
        self._dialogs[mailbox.id] = dialog
        dialog.open()
        log.info("%s of %s started from the window", verb, mailbox.address)

    def authorisation_dialog(self, mailbox_id: str) -> dialogs.SignInWaitDialog | None:
        """The waiting dialog of a running authorisation (for tests and Cancel)."""
        return self._dialogs.get(mailbox_id)

    def authorise_on_device(self, mailbox: Mailbox) -> None:
        """Authorise or reauthorise ``mailbox`` with a code entered on another device.

        For remote sessions where this computer's browser cannot be used. The same
        lifecycle as :meth:`authorise`; Microsoft may ask for a second code that grants
        the mail permissions, and the dialog shows it when it comes.
        """
        linker = self._linker()
        if linker is None:
            return
        claims = self._claims.pop(mailbox.id, None)
        reauthorise = mailbox.status is not LinkStatus.UNLINKED
        verb = "Reauthorise" if reauthorise else "Authorise"  # for the log

        def work(cancel: threading.Event, progress: Progress) -> LinkResult:
            # Each code reaches the dialog through the task's progress: on the GUI thread.
            return linker.authorise_device(mailbox, progress, cancel, claims_challenge=claims)

        from qargo_desktop.ui.device_code_dialog import DeviceCodeDialog

        dialog = DeviceCodeDialog(
            self._window,
            title=(
                translate("LinkActions", "Reauthorise {address} on another device")
                if reauthorise
                else translate("LinkActions", "Authorise {address} on another device")
            ).format(address=mailbox.address),
            account=mailbox.address,
        )

        def progressed(value: object) -> None:
            from qargo_desktop.core.identity import DeviceFlow

            if isinstance(value, DeviceFlow):
                dialog.set_flow(value)

        handle = self._start(
            mailbox,
            f"{verb.lower()} {mailbox.address} on another device",
            work,
            lambda result, error: self._on_authorise_finished(
                mailbox, result, error, retry_with=self.authorise_on_device
            ),
            progressed,
        )
        if handle is None:
            dialog.deleteLater()
            return
        dialog.cancel_requested.connect(handle.cancel)
        self._device_dialogs[mailbox.id] = dialog
        dialog.open()
        log.info("%s of %s on another device started from the window", verb, mailbox.address)

    def device_dialog(self, mailbox_id: str) -> DeviceCodeDialog | None:
        """The code dialog of a running authorisation on another device (for tests)."""
        return self._device_dialogs.get(mailbox_id)

    def _on_authorise_finished(
        self,
        mailbox: Mailbox,
        result: Any,
        error: BaseException | None,
        *,
        retry_with: Callable[[Mailbox], None] | None = None,
    ) -> None:
        dialog = self._dialogs.pop(mailbox.id, None)
        if dialog is not None:
            dialog.finish()
            dialog.deleteLater()
        device_dialog = self._device_dialogs.pop(mailbox.id, None)
        if device_dialog is not None:
            device_dialog.finish()
            device_dialog.deleteLater()
        self._window.raise_()
        self._window.activateWindow()
        if error is not None:
            # The API refused to start the attempt (or the network failed before it).
            self._show_error(mailbox, error)
            self._reload(mailbox)
            return
        from qargo_desktop.core.linking import LinkOutcome, LinkResult

        assert isinstance(result, LinkResult)
        self._refresh_row(result.mailbox)
        if result.ok:
            self._window.show_message(
                translate("LinkActions", "{address} is linked.").format(address=mailbox.address),
                level=MessageLevel.INFO, key=f"linked:{mailbox.id}",
            )  # fmt: skip
            return
        if result.claims_challenge:
            self._claims[mailbox.id] = result.claims_challenge
        current = result.mailbox or mailbox
        again = retry_with or self.authorise
        retry = (lambda: again(current)) if result.outcome in (
            LinkOutcome.WRONG_ACCOUNT, LinkOutcome.DEADLINE, LinkOutcome.DECLINED
        ) and current.status is not LinkStatus.LINK_FAILED else None  # fmt: skip
        if result.outcome is LinkOutcome.CANCELLED:
            self._window.show_message(
                translate("LinkActions", "{address}: authorisation cancelled.").format(
                    address=mailbox.address
                ),
                level=MessageLevel.INFO,
            )
            return
        text = (
            texts.explain(result.error)
            if result.error is not None
            else translate("LinkActions", "The authorisation failed.")
        )
        if current.status is LinkStatus.LINK_FAILED:
            text += " " + translate(
                "LinkActions", "Reset the API link status, then authorise again."
            )
        self._window.show_message(
            f"{mailbox.address}: {text}",
            level=MessageLevel.ERROR,
            action_text=translate("LinkActions", "Try again") if retry else None,
            on_action=retry,
        )

    def cancel(self, mailbox: Mailbox) -> None:
        """Cancel this app's running authorisation of ``mailbox``."""
        handle = self._running.get(mailbox.id)
        if handle is not None:
            handle.cancel()
            return
        self._window.show_message(
            translate(
                "LinkActions",
                "{address}: the authorisation in progress was started elsewhere; it ends by "
                "itself when it expires.",
            ).format(address=mailbox.address),
            level=MessageLevel.INFO,
        )

    def cancel_all(self) -> None:
        """Cancel every running action (the window is closing)."""
        for handle in list(self._running.values()):
            handle.cancel()

    # -- self-test ----------------------------------------------------------------------

    def selftest(self, mailbox: Mailbox) -> None:
        """Open the self-test dialog of ``mailbox`` and start a run."""
        services = self._window.services
        if services is None:
            return
        existing = self._selftests.get(mailbox.id)
        if existing is not None:
            existing.raise_()
            existing.activateWindow()
            return
        from qargo_desktop.core.config import app_paths
        from qargo_desktop.ui.selftest_dialog import SelfTestDialog

        settings = self._window.settings
        dialog = SelfTestDialog(
            self._window,
            mailbox=mailbox,
            services=services,
            tasks=self._window.tasks,
            theme=self._window.theme,
            data_dir=app_paths(settings).data_dir if settings is not None else None,
            opener=self._window.browser_opener,
        )
        self._selftests[mailbox.id] = dialog

        def closed() -> None:
            self._selftests.pop(mailbox.id, None)
            dialog.deleteLater()

        dialog.finished.connect(closed)
        dialog.show()
        dialog.start()

    def selftest_dialog(self, mailbox_id: str) -> SelfTestDialog | None:
        """The open self-test dialog of a mailbox, if any."""
        return self._selftests.get(mailbox_id)

    # -- reset, add, remove -------------------------------------------------------------

    def reset(self, mailbox: Mailbox) -> None:
        """Reset a failed link, after a confirmation whose default is Cancel."""
        linker = self._linker()
        from qargo_desktop.ui import dialogs

        if linker is None or not dialogs.confirm_reset(self._window, mailbox):
            return

        def work(_cancel: threading.Event, _progress: Progress) -> Mailbox:
            return linker.reset(mailbox)

        def finished(result: Any, error: BaseException | None) -> None:
            self._on_changed(mailbox, result, error, "reset")

        self._start(mailbox, f"reset {mailbox.address}", work, finished)

    def remove(self, mailbox: Mailbox) -> None:
        """Remove a mailbox, after a confirmation whose default is Cancel."""
        linker = self._linker()
        from qargo_desktop.ui import dialogs

        if linker is None or not dialogs.confirm_remove(self._window, mailbox):
            return

        def work(_cancel: threading.Event, _progress: Progress) -> None:
            linker.remove(mailbox)

        def finished(result: Any, error: BaseException | None) -> None:
            if error is None:
                self._window.remove_mailbox(mailbox.id)
                self._window.show_message(
                    translate("LinkActions", "Removed {address}.").format(address=mailbox.address),
                    level=MessageLevel.INFO,
                )
                return
            self._on_changed(mailbox, None, error, "remove")

        self._start(mailbox, f"remove {mailbox.address}", work, finished)

    def add(self) -> None:
        """Ask for an address and add the mailbox."""
        linker = self._linker()
        if linker is None:
            return
        from qargo_desktop.ui import dialogs

        answer = dialogs.ask_new_mailbox(self._window)
        if answer is None:
            return
        address, display_name = answer

        def work(_cancel: threading.Event, _progress: Progress) -> Mailbox:
            return linker.add(address, display_name or None)

        def finished(result: Any, error: BaseException | None) -> None:
            if error is not None:
                self._show_error(None, error)
                return
            self._window.upsert_mailbox(result)
            self._window.select_mailbox(result.id)
            self._window.show_message(
                translate("LinkActions", "Added {address}. Authorise it to link it.").format(
                    address=result.address
                ),
                level=MessageLevel.INFO,
                action_text=texts.action_label(MailboxAction.AUTHORISE),
                on_action=lambda: self.authorise(result),
            )

        self._start(None, f"add {address}", work, finished)

    def _on_changed(
        self, mailbox: Mailbox, result: Any, error: BaseException | None, what: str
    ) -> None:
        if error is None:
            self._refresh_row(result)
            text = (
                translate("LinkActions", "{address} is now Unlinked.")
                if what == "reset"
                else translate("LinkActions", "{address} is now changed.")
            )
            self._window.show_message(text.format(address=mailbox.address), level=MessageLevel.INFO)
            return
        from qargo_desktop.core.linking import Conflict

        if isinstance(error, Conflict):
            if error.current is not None:
                self._refresh_row(error.current)
            self._window.show_message(
                translate(
                    "LinkActions",
                    "{address}: someone else changed this mailbox first. The row now shows its "
                    "current state; check it and try again if still needed.",
                ).format(address=mailbox.address),
                level=MessageLevel.WARNING,
            )
            return
        self._show_error(mailbox, error)
        self._reload(mailbox)

    def _reload(self, mailbox: Mailbox) -> None:
        """Fetch the mailbox again so the row shows the server's truth."""
        services = self._window.services
        if services is None:
            return

        def work(_cancel: threading.Event, _progress: Progress) -> Mailbox:
            return services.api.get_mailbox(mailbox.id)

        def finished(result: Any, error: BaseException | None) -> None:
            if error is None:
                self._refresh_row(result)

        self._window.tasks.start(f"reload {mailbox.address}", work, on_finished=finished)
