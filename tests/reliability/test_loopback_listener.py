"""The sign-in listener, checked from outside: the kernel's own list of listening sockets.

During every interactive sign-in (the admin's, a mailbox authorisation, the self-test's)
the port in the redirect URI must be bound to 127.0.0.1 only, even on this machine where
MSAL's own listener would bind every interface (``/.dockerenv`` exists). It must accept
only the answer that carries the expected ``state``, and be gone after success, refusal,
cancel, deadline and a failed token exchange. A second interactive sign-in while one runs
is refused at once (``app:busy``), never a second listener and a second browser tab.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from qargo_desktop.core.errors import Cancelled, DeadlineExceeded, IdentityError, QargoError
from qargo_desktop.core.linking import MailboxLinker
from qargo_desktop.core.models import LinkStatus
from qargo_desktop.core.selftest import SelfTestOptions, StepId, run_selftest
from tests.reliability.conftest import ADMIN, DOMAIN, Person, app_threads

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads the kernel's socket tables"
)

SALES = f"sales@{DOMAIN}"
DISPATCH = f"dispatch@{DOMAIN}"


def listening_on(port: int) -> set[str]:
    """Addresses with a socket in LISTEN state on ``port``, from /proc/net/tcp{,6}."""
    found = set()
    for table, size in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if int(port_hex, 16) != port or fields[3] != "0A":
                continue
            raw = bytes.fromhex(address)
            if size == 8:
                found.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
            else:
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                found.add(socket.inet_ntop(socket.AF_INET6, words))
    return found


def redirect_port(url: str) -> int:
    redirect = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["redirect_uri"][0]
    port = urllib.parse.urlsplit(redirect).port
    assert port is not None
    return port


def redirect_state(url: str) -> str:
    return urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["state"][0]


class Watcher:
    """Opens the browser as ``person`` would, after noting what listens on the redirect port."""

    def __init__(self, person: Person | None = None, *, opened: bool = True) -> None:
        self.person = person
        self.opened = opened
        self.seen: list[tuple[int, set[str]]] = []
        self.urls: list[str] = []

    def __call__(self, url: str) -> bool:
        port = redirect_port(url)
        self.urls.append(url)
        self.seen.append((port, listening_on(port)))
        if self.person is not None:
            return self.person(url)
        return self.opened

    @property
    def ports(self) -> list[int]:
        return [port for port, _addresses in self.seen]


def assert_closed(port: int) -> None:
    assert not listening_on(port), f"something still listens on {port}"
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    deadline = time.monotonic() + 2
    while app_threads() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not app_threads()


def post(port: int, body: bytes, content_type: str = "application/x-www-form-urlencoded") -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/", data=body, method="POST",
        headers={"Content-Type": content_type},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def get(port: int, query: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/?{query}", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


# -- where it listens -----------------------------------------------------------------------


def test_msal_alone_would_listen_on_every_interface_here() -> None:
    # Why the app brings its own listener: the threat is real on this kind of machine.
    if not os.path.exists("/.dockerenv"):
        pytest.skip("MSAL binds every interface only when it thinks it runs in a container")
    from msal.oauth2cli.authcode import AuthCodeReceiver

    receiver = AuthCodeReceiver(port=0)
    try:
        port = receiver.get_port()
        assert listening_on(port) - {"127.0.0.1", "::1"}, listening_on(port)
    finally:
        receiver.close()


def _sign_in_admin(services: Any, watcher: Watcher, person: Person) -> Any:
    person.account = ADMIN
    control = services.new_control()
    control.opener = watcher
    return services.sign_in_interactive(control)


def test_the_admin_sign_in_listens_on_127_0_0_1_only(services: Any, person: Person) -> None:
    watcher = Watcher(person)
    session = _sign_in_admin(services, watcher, person)
    assert session.username == ADMIN
    [(port, addresses)] = watcher.seen
    assert addresses == {"127.0.0.1"}
    person.join()
    assert_closed(port)


def test_a_mailbox_authorisation_listens_on_127_0_0_1_only(admin: Any, person: Person) -> None:
    mailbox = next(m for m in admin.api.list_mailboxes().items if m.status is LinkStatus.UNLINKED)
    watcher = Watcher(person)
    person.account = mailbox.address
    control = admin.new_control()
    control.opener = watcher
    result = MailboxLinker(admin).authorise(mailbox, control)
    assert result.ok, result.error
    [(port, addresses)] = watcher.seen
    assert addresses == {"127.0.0.1"}
    person.join()
    assert_closed(port)


def test_the_self_test_sign_in_listens_on_127_0_0_1_only(admin: Any, person: Person) -> None:
    # No saved sign-in for the mailbox: the self-test signs in as it interactively.
    watcher = Watcher(person)
    person.account = DISPATCH
    control = admin.new_control()
    control.opener = watcher
    report = run_selftest(admin, DISPATCH, options=SelfTestOptions(timeout_s=30), control=control)
    assert report.step(StepId.TOKEN).state.value == "passed", report.to_text()
    [(port, addresses)] = watcher.seen
    assert addresses == {"127.0.0.1"}
    person.join()
    assert_closed(port)


# -- what it accepts ------------------------------------------------------------------------


def test_only_the_answer_with_the_expected_state_is_accepted(services: Any, person: Person) -> None:
    refused: list[int] = []

    def attacker_first(url: str) -> bool:
        # Another program on this computer (or a page in the browser) races the real answer.
        port, state = redirect_port(url), redirect_state(url)
        refused.append(
            post(
                port, urllib.parse.urlencode({"code": "attacker-code", "state": "guessed"}).encode()
            )
        )
        refused.append(
            post(
                port,
                urllib.parse.urlencode({"error": "access_denied", "state": state[::-1]}).encode(),
            )
        )
        refused.append(post(port, b"code=attacker-code"))  # no state at all
        refused.append(get(port, urllib.parse.urlencode({"code": "attacker-code", "state": state})))
        refused.append(post(port, b"state=" + state.encode() + b"&code=" + b"x" * 70_000))
        return person(url)

    person.account = ADMIN
    control = services.new_control()
    control.opener = attacker_first
    session = services.sign_in_interactive(control)
    assert refused == [400] * 5
    # The real answer still got through, and it is the person's sign-in.
    assert session.username == ADMIN
    assert services.admin_identity.find_account(ADMIN) is not None


# -- when it closes -------------------------------------------------------------------------


@pytest.mark.parametrize("ending", ["declined", "cancelled", "deadline", "no browser",
                                    "token exchange failed"])  # fmt: skip
def test_the_listener_is_closed_however_the_sign_in_ends(
    sandbox: Any, services: Any, person: Person, ending: str
) -> None:
    watcher = Watcher(person)
    control = services.new_control()
    control.opener = watcher
    person.account = ADMIN
    expected: type[QargoError] = IdentityError
    if ending == "declined":
        person.action = "decline"
    elif ending == "cancelled":
        person.action = "ignore"
        threading.Timer(0.3, control.cancel.set).start()
        expected = Cancelled
    elif ending == "deadline":
        person.action = "ignore"
        control.deadline_s = 0.5
        expected = DeadlineExceeded
    elif ending == "no browser":
        watcher.person = None
        watcher.opened = False
        failed: list[str] = []
        control.on_browser_failed = failed.append
        threading.Timer(0.5, control.cancel.set).start()
        expected = Cancelled
    else:
        tenant = sandbox.world.tenant_id
        sandbox.set_faults(unavailable_probability=1.0, services=["identity"],
                           paths=[f"/{tenant}/oauth2/v2.0/token"], retry_after=0)  # fmt: skip
        expected = QargoError
    with pytest.raises(expected) as caught:
        services.sign_in_interactive(control)
    assert caught.value.advice.summary
    if ending == "no browser":
        assert failed and failed[0].startswith("http://127.0.0.1:")  # a link to copy
    person.join()
    [(port, addresses)] = watcher.seen
    assert addresses == {"127.0.0.1"}
    assert_closed(port)


# -- one at a time --------------------------------------------------------------------------


def test_a_second_sign_in_while_one_runs_is_refused_not_doubled(admin: Any, person: Person) -> None:
    first_watcher = Watcher(person)
    person.account = ADMIN
    person.action = "ignore"
    first = admin.new_control()
    first.opener = first_watcher
    outcome: list[BaseException] = []

    def run_first() -> None:
        try:
            admin.sign_in_interactive(first)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run_first, name="first-sign-in")
    thread.start()
    deadline = time.monotonic() + 10
    while not first_watcher.seen and time.monotonic() < deadline:
        time.sleep(0.02)
    [(port, _addresses)] = first_watcher.seen

    # The admin again, a mailbox authorisation, a self-test: all refused while it waits.
    second_watcher = Watcher(Person())
    second = admin.new_control()
    second.opener = second_watcher
    started = time.monotonic()
    with pytest.raises(QargoError) as admin_again:
        admin.sign_in_interactive(second)
    assert admin_again.value.key == "app:busy"
    mailbox = next(m for m in admin.api.list_mailboxes().items if m.address == SALES)
    with pytest.raises(QargoError) as authorise:
        MailboxLinker(admin).authorise(mailbox, second)
    assert authorise.value.key == "app:busy"
    # Refused before an attempt started: the mailbox is not left failed for nothing.
    assert admin.api.get_mailbox(mailbox.id).status is LinkStatus.UNLINKED
    assert time.monotonic() - started < 5
    assert second_watcher.seen == []  # no second listener, no second browser tab
    assert listening_on(port) == {"127.0.0.1"}  # the first still waits, undisturbed

    first.cancel.set()
    thread.join(10)
    assert len(outcome) == 1 and isinstance(outcome[0], Cancelled)
    assert_closed(port)

    # Once it has ended, the next sign-in runs.
    person.action = "accept"
    assert _sign_in_admin(admin, Watcher(person), person).username == ADMIN


def test_two_sign_ins_started_together_run_one_at_a_time(services: Any) -> None:
    barrier = threading.Barrier(2)
    people = [Person(), Person()]
    results: list[object] = [None, None]
    watchers = [Watcher(p) for p in people]

    def sign_in(index: int) -> None:
        people[index].account = ADMIN
        control = services.new_control()
        control.opener = watchers[index]
        barrier.wait()
        try:
            results[index] = services.sign_in_interactive(control)
        except QargoError as exc:
            results[index] = exc

    threads = [threading.Thread(target=sign_in, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for person in people:
        person.join()
    busy = [r for r in results if isinstance(r, QargoError)]
    assert len(busy) == 1 and busy[0].key == "app:busy", results
    assert sum(len(w.seen) for w in watchers) == 1
