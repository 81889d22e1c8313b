"""One window per person: a second start hands its request to the first and exits 0."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from PySide6.QtNetwork import QLocalSocket

from qargo_desktop.ui import app as app_module
from qargo_desktop.ui.single_instance import (
    InstanceRequest,
    SingleInstance,
    send_request,
    server_name,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def first(tmp_path: Path):
    """The running app's lock and server, in a config folder of the test's own."""
    instance = SingleInstance(tmp_path / "config")
    assert instance.acquire()
    assert instance.listen()
    yield instance
    instance.release()


def test_the_name_is_private_to_the_person_and_the_config_folder(tmp_path: Path) -> None:
    name = server_name(tmp_path / "a", user="alex")
    assert name == server_name(tmp_path / "a", user="alex")
    assert name != server_name(tmp_path / "b", user="alex")
    assert name != server_name(tmp_path / "a", user="sam")
    assert "alex" not in name and str(tmp_path) not in name
    assert name.startswith("qargo-desktop-")


def test_a_second_start_cannot_take_the_lock_but_another_config_folder_can(
    first: SingleInstance, tmp_path: Path
) -> None:
    second = SingleInstance(first.config_dir)
    assert not second.acquire()
    elsewhere = SingleInstance(tmp_path / "other-config")
    assert elsewhere.acquire()
    elsewhere.release()


def test_the_lock_is_free_again_once_the_first_closes(tmp_path: Path) -> None:
    instance = SingleInstance(tmp_path / "config")
    assert instance.acquire()
    instance.release()
    again = SingleInstance(tmp_path / "config")
    assert again.acquire()
    again.release()


@pytest.mark.parametrize("content", [b"", b"garbage\n", b"\x00\x01"])
def test_a_damaged_lock_is_taken_over(tmp_path: Path, content: bytes, caplog) -> None:
    # An empty or unreadable lock names no holder QLockFile could check: left alone, it
    # would keep every start out for good.
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "instance.lock").write_bytes(content)
    instance = SingleInstance(folder)
    assert instance.acquire()
    assert "damaged" in caplog.text
    second = SingleInstance(folder)
    assert not second.acquire()  # now held, and readable: a live holder
    instance.release()


def test_a_lock_held_elsewhere_is_not_taken_over(tmp_path: Path) -> None:
    # Another computer's process (a shared profile folder): alive or not, nobody here
    # can tell, so the lock stands.
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "instance.lock").write_bytes(b"4242\nanother-host\nqargo-desktop\n")
    assert not SingleInstance(folder).acquire()


def test_a_request_reaches_the_running_app_which_answers(qtbot, first: SingleInstance) -> None:
    received: list[InstanceRequest] = []
    first.request_received.connect(received.append)
    # The sender blocks without an event loop, as a second start does: it runs in a process
    # of its own while this one's loop answers. It exits 0 only when the answer came.
    code = (
        "import sys; from qargo_desktop.ui.single_instance import InstanceRequest, send_request;"
        f"sys.exit(0 if send_request({first.name!r}, InstanceRequest(select='a@b.example')) "
        "else 1)"
    )
    process = run_python(code)
    qtbot.waitUntil(lambda: process.poll() is not None, timeout=30_000)
    assert process.returncode == 0, process.communicate()[1]
    assert received == [InstanceRequest(select="a@b.example")]


def run_python(code: str, *args: str) -> subprocess.Popen[bytes]:
    environment = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": str(ROOT)}
    environment.pop("QARGO_CONFIG_DIR", None)
    command = [sys.executable, "-c", code] if code else [sys.executable, *args]
    return subprocess.Popen(
        command, cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def test_nobody_listening_means_no_hand_over(tmp_path: Path) -> None:
    started = time.monotonic()
    assert not send_request(server_name(tmp_path / "nobody"), InstanceRequest(), timeout_s=0.3)
    assert time.monotonic() - started < 5


def test_garbage_on_the_socket_is_still_a_request_to_come_forward(
    qtbot, first: SingleInstance
) -> None:
    received: list[InstanceRequest] = []
    first.request_received.connect(received.append)
    socket = QLocalSocket()
    socket.connectToServer(first.name)
    assert socket.waitForConnected(2000)
    socket.write(b"\xff\xfe not json\n")
    socket.flush()
    qtbot.waitUntil(lambda: received == [InstanceRequest()], timeout=5000)
    socket.abort()


def test_a_second_start_of_the_app_hands_over_and_exits_0(
    qtbot, first: SingleInstance, signed_in_window
) -> None:
    window = signed_in_window
    first.request_received.connect(lambda request: app_module._on_instance_request(window, request))
    address = "customs@northwind-haulage.example"
    process = run_python(
        "", "-m", "qargo_desktop", "--config-dir", str(first.config_dir), "--select", address
    )
    try:
        qtbot.waitUntil(lambda: process.poll() is not None, timeout=30_000)
    finally:
        if process.poll() is None:
            process.kill()
    _out, err = process.communicate(timeout=5)
    assert process.returncode == 0, err.decode(errors="replace")
    qtbot.waitUntil(lambda: window.selected_mailbox() is not None, timeout=5000)
    assert window.selected_mailbox().address == address
    # The second start wrote nothing of its own: no log file in the shared config folder.
    assert not (first.config_dir / "logs").exists()


def test_a_selection_asked_before_the_list_loads_waits_for_it(qtbot, signed_in_window) -> None:
    window = signed_in_window
    window.model.clear()
    window._loaded_once = False
    window.select_address("dispatch@northwind-haulage.example")
    assert window.selected_mailbox() is None
    with qtbot.waitSignal(window.refresh_finished, timeout=5000):
        window.refresh()
    assert window.selected_mailbox().address == "dispatch@northwind-haulage.example"


def test_an_unknown_address_says_so(signed_in_window) -> None:
    window = signed_in_window
    window.select_address("nobody@northwind-haulage.example")
    texts = [text for _key, text, _count in window.message_bar.messages()]
    assert texts == ["nobody@northwind-haulage.example is not in the organisation's list."]
