"""The loopback listener: bound to 127.0.0.1, state checked, cancel and deadline honoured."""

from __future__ import annotations

import socket
import threading
import time
import urllib.parse
import urllib.request

import pytest

from qargo_desktop.core.errors import Cancelled, DeadlineExceeded
from qargo_desktop.core.loopback import LoopbackReceiver


def _post(port: int, form: dict[str, str]) -> int:
    data = urllib.parse.urlencode(form).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", data=data, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_binds_loopback_only_even_inside_a_container() -> None:
    # MSAL's own listener binds 0.0.0.0 when /.dockerenv exists (it does on CI); ours
    # never does.
    with LoopbackReceiver() as receiver:
        host, port = receiver.address
        assert host == "127.0.0.1"
        assert port > 0
        other = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            # The port is held on loopback; nothing listens on the other interfaces.
            addresses = {
                info[4][0]
                for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
            } - {"127.0.0.1", "127.0.1.1"}
            for address in addresses:
                assert other.connect_ex((address, port)) != 0
        finally:
            other.close()


def test_returns_the_answer_with_the_expected_state() -> None:
    receiver = LoopbackReceiver(opener=lambda url: True)
    port = receiver.get_port()
    statuses: list[int] = []

    def browser() -> None:
        time.sleep(0.1)
        statuses.append(_post(port, {"code": "abc", "state": "wrong"}))
        statuses.append(_post(port, {"code": "abc", "state": "expected"}))

    thread = threading.Thread(target=browser)
    thread.start()
    answer = receiver.get_auth_response(auth_uri="http://127.0.0.1:9/authorize", state="expected")
    thread.join()
    assert answer == {"code": "abc", "state": "expected"}
    assert statuses == [400, 200]
    assert receiver.closed


def test_query_string_answers_are_refused() -> None:
    receiver = LoopbackReceiver(deadline_s=3, opener=lambda url: True)
    port = receiver.get_port()
    result: list[int] = []

    def browser() -> None:
        time.sleep(0.1)
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/?code=abc&state=s", timeout=5)
        except urllib.error.HTTPError as exc:
            result.append(exc.code)
        statuses = _post(port, {"error": "access_denied", "state": "s"})
        result.append(statuses)

    thread = threading.Thread(target=browser)
    thread.start()
    answer = receiver.get_auth_response(auth_uri="http://127.0.0.1:9/a", state="s")
    thread.join()
    assert result == [400, 200]
    assert answer["error"] == "access_denied"


def test_cancel_stops_waiting_at_once_and_closes_the_socket() -> None:
    cancel = threading.Event()
    receiver = LoopbackReceiver(cancel=cancel, deadline_s=60, opener=lambda url: True)
    port = receiver.get_port()
    threading.Timer(0.2, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(Cancelled):
        receiver.get_auth_response(auth_uri="http://127.0.0.1:9/a", state="s")
    assert time.monotonic() - started < 2
    assert receiver.closed
    probe = socket.socket()
    try:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    finally:
        probe.close()


def test_deadline_raises_and_closes() -> None:
    receiver = LoopbackReceiver(deadline_s=0.3, opener=lambda url: True)
    with pytest.raises(DeadlineExceeded):
        receiver.get_auth_response(auth_uri="http://127.0.0.1:9/a", state="s")
    assert receiver.closed


def test_no_browser_offers_the_link() -> None:
    offered: list[str] = []
    failed = threading.Event()
    receiver = LoopbackReceiver(
        deadline_s=5,
        opener=lambda url: False,
        on_auth_uri=offered.append,
        on_browser_failed=lambda url: failed.set(),
    )
    cancel_after_failure = threading.Thread(target=lambda: failed.wait(5))
    cancel_after_failure.start()
    with pytest.raises(DeadlineExceeded):
        receiver.get_auth_response(auth_uri="http://127.0.0.1:9/a", state="s", timeout=0.5)
    cancel_after_failure.join()
    assert offered == ["http://127.0.0.1:9/a"]
    assert failed.is_set()


def test_a_silent_client_does_not_block_cancel() -> None:
    cancel = threading.Event()
    receiver = LoopbackReceiver(cancel=cancel, deadline_s=60, opener=lambda url: True)
    idle = socket.create_connection(receiver.address)
    threading.Timer(0.3, cancel.set).start()
    started = time.monotonic()
    try:
        with pytest.raises(Cancelled):
            receiver.get_auth_response(auth_uri="http://127.0.0.1:9/a", state="s")
    finally:
        idle.close()
    # The handler gives a silent client 2 s at most.
    assert time.monotonic() - started < 4
