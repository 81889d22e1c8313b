"""Sign-in on another device (device code flow): the admin, a mailbox, and the command line,
against the sandbox; a scripted person enters each code on the sandbox's device login page."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from qargo_desktop.core import identity as identity_module
from qargo_desktop.core.errors import Cancelled, DeadlineExceeded, IdentityError
from qargo_desktop.core.identity import DeviceCodeExpired, DeviceFlow, IdentityClient
from qargo_desktop.core.linking import LinkOutcome, MailboxLinker
from qargo_desktop.core.models import LinkStatus, Mailbox

ADMIN = "admin@northwind-haulage.example"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def sandbox(sandbox_certs: Path) -> Iterator[Any]:
    """The sandbox, asking for a 1 s polling interval (Microsoft asks for 5) to keep tests fast.

    Overrides the shared fixture, so ``services`` and ``admin`` use it too.
    """
    from qargo_desktop.sandbox.server import Sandbox
    from qargo_desktop.sandbox.world import SandboxOptions

    box = Sandbox(
        SandboxOptions(
            data_dir=sandbox_certs,
            delivery_delay_s=0.5,
            sync_delay_s=0.5,
            device_code_interval_s=1,
        )
    )
    box.start()
    yield box
    box.stop()


class Person:
    """Someone at another device: enters each code shown, picks an account, answers."""

    def __init__(self, account: str | None, action: str = "accept") -> None:
        self.account = account
        self.action = action
        self.flows: list[DeviceFlow] = []
        self.results: list[Any] = []
        self.threads: list[threading.Thread] = []
        self.accounts: list[str | None] = []

    def __call__(self, flow: DeviceFlow) -> None:
        from qargo_desktop.sandbox.browser import run

        self.flows.append(flow)
        account = self.accounts.pop(0) if self.accounts else self.account

        def act() -> None:
            self.results.append(
                run(flow.verification_uri, account, self.action, user_code=flow.user_code,
                    say=lambda _line: None)
            )  # fmt: skip

        thread = threading.Thread(target=act, name="other-device", daemon=True)
        thread.start()
        self.threads.append(thread)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(30)


def _first(admin: Any, status: LinkStatus) -> Mailbox:
    listing = admin.api.list_mailboxes()
    found: Mailbox = next(m for m in listing.items if m.status is status)
    return found


# -- the admin ------------------------------------------------------------------------------


def test_admin_signs_in_on_another_device(services: Any) -> None:
    person = Person(ADMIN)
    before = time.time()

    session = services.sign_in_device(person)
    person.join()

    assert session.username == ADMIN
    assert session.me.is_super_admin
    (flow,) = person.flows
    assert re.fullmatch(r"[A-Z0-9]{6,12}", flow.user_code)
    assert flow.verification_uri.startswith("http://127.0.0.1:")
    assert flow.verification_uri.endswith("/devicelogin")
    assert flow.user_code in flow.message
    assert before + 800 < flow.expires_at < time.time() + 901
    assert flow.interval_s == 1
    assert flow.purpose == "sign_in"
    # The secret half of the flow stays out of reprs (and so out of logs).
    assert "device_code" not in repr(flow) and "DAQAB" not in repr(flow)
    # Signed in for good: the next call is silent.
    assert services.sign_in_silently().username == ADMIN


def test_declined_on_the_other_device(services: Any) -> None:
    person = Person(ADMIN, action="decline")

    with pytest.raises(IdentityError) as caught:
        services.sign_in_device(person)
    person.join()

    # Microsoft says authorization_declined; callers see RFC 8628's name.
    assert caught.value.error == "access_denied"
    assert "declined" in caught.value.explain().lower()


def test_cancel_ends_the_wait_at_once(services: Any) -> None:
    cancel = threading.Event()
    shown = threading.Event()

    def show(flow: DeviceFlow) -> None:
        shown.set()

    def cancel_soon() -> None:
        shown.wait(10)
        time.sleep(0.3)
        cancel.set()

    threading.Thread(target=cancel_soon, daemon=True).start()
    started = time.monotonic()
    with pytest.raises(Cancelled):
        services.sign_in_device(show, cancel)
    assert time.monotonic() - started < 3


def test_an_expired_code_is_a_deadline(services: Any) -> None:
    identity: IdentityClient = services.admin_identity
    flow = identity.start_device_flow(services.endpoints.admin_scopes)

    # The client's own clock says the code has expired: no request at all.
    with pytest.raises(DeviceCodeExpired) as caught:
        identity.finish_device_flow(flow, threading.Event(), clock=lambda: flow.expires_at + 1)
    assert isinstance(caught.value, DeadlineExceeded)
    assert "expired" in caught.value.explain()


def test_the_server_saying_expired_is_a_deadline(sandbox: Any, services: Any) -> None:
    identity: IdentityClient = services.admin_identity
    flow = identity.start_device_flow(services.endpoints.admin_scopes)
    sandbox.world.clock.advance(2000)

    with pytest.raises(DeviceCodeExpired):
        identity.finish_device_flow(flow, threading.Event())


class _SlowingPlatform:
    """Stands in for MSAL: asks to slow down once, then pending, then a token."""

    def __init__(self) -> None:
        self.answers = [
            {"error": "slow_down"},
            {"error": "authorization_pending"},
            {
                "access_token": "header.payload.signature",
                "expires_in": 3600,
                "scope": "api://x/y",
                "id_token_claims": {"preferred_username": ADMIN, "oid": "o", "tid": "t"},
            },
        ]
        self.calls: list[float] = []

    def acquire_token_by_device_flow(self, flow: dict[str, Any], **_kwargs: Any) -> Any:
        self.calls.append(time.monotonic())
        return self.answers.pop(0)


def test_slow_down_makes_the_polls_slower(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(identity_module, "SLOW_DOWN_STEP_S", 0.3)
    client = IdentityClient("https://127.0.0.1:9/tenant", "client", requests.Session())
    platform = _SlowingPlatform()
    client._app = platform
    raw = {"interval": 0.1, "device_code": "device-code-for-the-test"}
    flow = DeviceFlow("ABC", "http://127.0.0.1:9/devicelogin", time.time() + 60, "", 0.1, (),
                      msal_flow=raw)  # fmt: skip

    token = client.finish_device_flow(flow, threading.Event())

    assert token.username == ADMIN
    gaps = [b - a for a, b in zip(platform.calls, platform.calls[1:], strict=False)]
    # Polls were 0.1 s apart; after slow_down, at least 0.1 + 0.3 s.
    assert len(gaps) == 2
    assert all(gap >= 0.38 for gap in gaps), gaps
    assert raw["interval"] == math.ceil(0.4)


# -- a mailbox ------------------------------------------------------------------------------


def test_mailbox_authorised_on_another_device(admin: Any) -> None:
    mailbox = _first(admin, LinkStatus.UNLINKED)
    person = Person(mailbox.address)

    result = MailboxLinker(admin).authorise_device(mailbox, person)
    person.join()

    assert result.outcome is LinkOutcome.LINKED, result.error
    assert result.mailbox is not None and result.mailbox.status is LinkStatus.LINKED
    assert result.signed_in_as == mailbox.address
    assert set(result.mailbox.granted_scopes) >= {
        "https://graph.microsoft.com/Mail.ReadWrite",
        "https://graph.microsoft.com/Mail.Send",
    }
    # Microsoft's token endpoint takes one service per device code: the sign-in for the
    # Qargo API, then a second code for the mail permissions nobody had granted yet.
    assert [f.purpose for f in person.flows] == ["sign_in", "consent"]
    assert all("offline_access" not in f.scopes for f in person.flows)
    assert any("Mail.Send" in scope for scope in person.flows[1].scopes)


def test_reauthorise_needs_one_code_when_consent_exists(admin: Any) -> None:
    mailbox = _first(admin, LinkStatus.REAUTHORISATION_REQUIRED)
    person = Person(mailbox.address)

    result = MailboxLinker(admin).authorise_device(mailbox, person)
    person.join()

    assert result.outcome is LinkOutcome.LINKED, result.error
    assert [f.purpose for f in person.flows] in (["sign_in"], ["sign_in", "consent"])


def test_the_wrong_account_on_the_other_device(admin: Any) -> None:
    mailbox = _first(admin, LinkStatus.UNLINKED)
    person = Person("dispatcher@northwind-haulage.example")

    result = MailboxLinker(admin).authorise_device(mailbox, person)
    person.join()

    assert result.outcome is LinkOutcome.WRONG_ACCOUNT
    assert result.mailbox is not None and result.mailbox.status is LinkStatus.LINK_FAILED
    assert result.signed_in_as == "dispatcher@northwind-haulage.example"


def test_a_declined_mailbox_authorisation(admin: Any) -> None:
    mailbox = _first(admin, LinkStatus.UNLINKED)
    person = Person(mailbox.address, action="decline")

    result = MailboxLinker(admin).authorise_device(mailbox, person)
    person.join()

    assert result.outcome is LinkOutcome.DECLINED
    assert result.mailbox is not None and result.mailbox.status is LinkStatus.LINK_FAILED


# -- the command line -----------------------------------------------------------------------


def test_big_letters_for_a_code() -> None:
    from qargo_desktop.commands import big_text

    lines = big_text("BCD-42")
    assert len(lines) == 5
    assert all(len(line) <= 80 for line in lines)
    assert big_text("ab\u00e9") == []  # no glyph: the plain code alone is shown
    assert big_text("X" * 20, width=80) == []


@pytest.fixture
def sandbox_config(sandbox: Any, tmp_path: Path) -> Path:
    from qargo_desktop.core.bootstrap import write_sandbox_config

    config = tmp_path / "sandbox.toml"
    write_sandbox_config(config, sandbox.info)
    return config


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "qargo_desktop", *args],
        cwd=REPO,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _read_code(process: subprocess.Popen[str]) -> tuple[str, str, list[str]]:
    """Read stderr until the address and code have been shown."""
    assert process.stderr is not None
    seen: list[str] = []
    address = code = None
    deadline = time.monotonic() + 30
    while (address is None or code is None) and time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        seen.append(line)
        if line.startswith("Address: "):
            address = line.split(": ", 1)[1].strip()
        if line.startswith("Code: "):
            code = line.split(": ", 1)[1].strip()
    assert address and code, "".join(seen)
    return address, code, seen


def test_signin_device_code_from_the_command_line(sandbox_config: Path) -> None:
    from qargo_desktop.sandbox.browser import run

    process = _spawn("signin", "--device-code", "--config", str(sandbox_config))
    try:
        address, code, seen = _read_code(process)
        shown = "".join(seen)
        assert "Sign in on another device" in shown
        assert f"2. Enter  {code}" in shown
        assert shown.count("#") > 50  # the code in block letters
        result = run(address, ADMIN, "accept", user_code=code, say=lambda _line: None)
        assert result.outcome == "finished"
        _out, rest = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, rest
    assert f"Signed in as {ADMIN}" in rest


def test_ctrl_c_cancels_a_device_sign_in(sandbox_config: Path) -> None:
    process = _spawn("signin", "--device-code", "--config", str(sandbox_config))
    try:
        _read_code(process)
        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        _out, rest = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 7, rest
    assert "Cancelling" in rest
    assert time.monotonic() - started < 10


@pytest.fixture
def in_process_cli(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Person]]:
    """Run commands in this process; a person answers every code the command shows."""
    import qargo_desktop.commands as commands

    people: list[Person] = []
    show = commands._show_device_code

    def show_and_answer(flow: DeviceFlow, account: str | None) -> None:
        show(flow, account)
        people[0](flow)

    monkeypatch.setattr(commands, "_show_device_code", show_and_answer)
    handler = signal.getsignal(signal.SIGINT)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield people
    signal.signal(signal.SIGINT, handler)
    for installed in list(root.handlers):
        if installed not in handlers:
            root.removeHandler(installed)
            installed.close()
    root.setLevel(level)
    for person in people:
        person.join()


def test_signin_then_authorise_with_device_codes(
    sandbox: Any, sandbox_config: Path, in_process_cli: list[Person], capsys: Any
) -> None:
    from qargo_desktop.cli import main

    in_process_cli.append(Person(ADMIN))
    assert main(["signin", "--device-code", "--config", str(sandbox_config)]) == 0
    assert f"Signed in as {ADMIN}" in capsys.readouterr().err

    # Find an unlinked mailbox through the command line itself.
    assert main(["mailboxes", "--status", "unlinked", "--json", "--config",
                 str(sandbox_config)]) == 0  # fmt: skip
    unlinked = json.loads(capsys.readouterr().out)[0]["address"]
    in_process_cli[0] = Person(unlinked)

    code = main(
        ["authorise", "--mailbox", unlinked, "--device-code", "--config", str(sandbox_config)]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"{unlinked} is linked." in err
    assert "One more code" in err  # the second code, for the mail permissions
