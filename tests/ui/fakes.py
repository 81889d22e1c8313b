"""A stand-in for core.services.Services, for window tests that need exact control.

The end-to-end tests use the real services against the sandbox; these fakes let a test
script answers (a 304, a network failure, an expired sign-in) without timing games.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from qargo_desktop.core.api import AuditEvent, MailboxList, Me, Organisation
from qargo_desktop.core.errors import SignInRequired
from qargo_desktop.core.identity import InteractiveControl
from qargo_desktop.core.models import Mailbox
from qargo_desktop.core.services import AdminSession, Endpoints


def session_for(username: str = "admin@northwind-haulage.example") -> AdminSession:
    me = Me("user-1", username, "Alex Admin", "tenant-1", True)
    organisation = Organisation(
        "org-1", "Northwind Haulage", "tenant-1", "client-1", "https://login.example/t", ()
    )
    return AdminSession(username=username, me=me, organisation=organisation)


@dataclass
class FakeApi:
    """Answers list_mailboxes and events from what the test put in."""

    mailboxes: list[Mailbox] = field(default_factory=list)
    etag: str = 'W/"1"'
    page_size: int = 500
    fail_with: BaseException | None = None
    events_by_id: dict[str, tuple[AuditEvent, ...]] = field(default_factory=dict)
    list_calls: list[str | None] = field(default_factory=list)
    gate: threading.Event | None = None
    page_delay_s: float = 0.0

    def list_mailboxes(
        self,
        *,
        if_none_match: str | None = None,
        on_page: Callable[[tuple[Mailbox, ...]], None] | None = None,
        cancel: threading.Event | None = None,
        **_: Any,
    ) -> MailboxList | None:
        self.list_calls.append(if_none_match)
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail_with is not None:
            raise self.fail_with
        if if_none_match is not None and if_none_match == self.etag:
            return None
        items = tuple(self.mailboxes)
        for start in range(0, len(items), self.page_size):
            time.sleep(self.page_delay_s)  # the network's share of each page
            if on_page is not None:
                on_page(items[start : start + self.page_size])
        return MailboxList(items=items, etag=self.etag, total=len(items))

    def events(self, mailbox_id: str) -> tuple[AuditEvent, ...]:
        return self.events_by_id.get(mailbox_id, ())


@dataclass
class FakeServices:
    """The parts of Services the window uses."""

    api: FakeApi = field(default_factory=FakeApi)
    silent: AdminSession | BaseException = field(default_factory=SignInRequired)
    interactive: AdminSession | BaseException | None = None
    sign_in_timeout_s: float = 300.0
    endpoints: Endpoints = field(
        default_factory=lambda: Endpoints(
            "https://127.0.0.1:1/t", "client", "https://127.0.0.1:1/api",
            "https://127.0.0.1:1/graph", ("api://x/.default",),
        )
    )  # fmt: skip
    signed_out: int = 0
    controls: list[InteractiveControl] = field(default_factory=list)

    def sign_in_silently(self) -> AdminSession:
        if isinstance(self.silent, BaseException):
            raise self.silent
        return self.silent

    def sign_in_interactive(self, control: InteractiveControl) -> AdminSession:
        self.controls.append(control)
        if self.interactive is None:
            # Wait like a browser nobody uses: only cancel ends it.
            if control.on_auth_uri is not None:
                control.on_auth_uri("http://127.0.0.1:9/authorize?state=x")
            control.cancel.wait(30)
            from qargo_desktop.core.errors import Cancelled

            raise Cancelled()
        if isinstance(self.interactive, BaseException):
            raise self.interactive
        return self.interactive

    def sign_out(self) -> list[str]:
        self.signed_out += 1
        return ["admin@northwind-haulage.example"]

    def new_control(self, **callbacks: Any) -> InteractiveControl:
        control = InteractiveControl(deadline_s=self.sign_in_timeout_s)
        for name, callback in callbacks.items():
            setattr(control, name, callback)
        return control


def many_mailboxes(count: int, statuses: Sequence[str] = ("linked",)) -> list[Mailbox]:
    from tests.ui.conftest import make_mailbox

    return [make_mailbox(i, statuses[i % len(statuses)]) for i in range(count)]
