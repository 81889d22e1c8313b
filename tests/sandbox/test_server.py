"""The sandbox's servers on the wire: connections kept alive, responses framed, clean stops."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
import requests

from qargo_desktop.sandbox import server as server_module
from qargo_desktop.sandbox.server import Sandbox

WsgiApp = server_module.WsgiApp


def _tls(sandbox: Sandbox) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(sandbox.info.ca_certificate))


def _connection(sandbox: Sandbox) -> http.client.HTTPSConnection:
    return http.client.HTTPSConnection(
        "127.0.0.1", sandbox.info.https_port, context=_tls(sandbox), timeout=10
    )


def _raw(sandbox: Sandbox, request: bytes) -> bytes:
    """Send ``request`` on a new TLS connection; everything the server sends until it closes."""
    plain = socket.create_connection(("127.0.0.1", sandbox.info.https_port), timeout=10)
    with _tls(sandbox).wrap_socket(plain, server_hostname="127.0.0.1") as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def test_a_client_keeps_one_connection(sandbox: Sandbox) -> None:
    client = requests.Session()
    client.trust_env = False
    client.verify = str(sandbox.info.ca_certificate)
    url = f"{sandbox.info.control_url}/info"

    answers = [client.get(url, timeout=10) for _ in range(3)]

    assert [a.status_code for a in answers] == [200, 200, 200]
    assert all("close" not in a.headers.get("Connection", "").lower() for a in answers)
    pools = client.get_adapter(url).poolmanager.pools  # type: ignore[attr-defined]
    # urllib3's pool container refuses plain iteration.
    assert [pools[key].num_connections for key in pools.keys()] == [1]  # noqa: SIM118
    client.close()


def test_a_body_left_unread_does_not_become_the_next_request(sandbox: Sandbox) -> None:
    connection = _connection(sandbox)
    # Nothing answers here, so nothing reads the body; the next request must still parse.
    connection.request("POST", "/_sandbox/nowhere", body=b'{"a": "' + b"x" * 5000 + b'"}')
    sock = connection.sock
    first = connection.getresponse()
    first.read()

    connection.request("GET", "/_sandbox/info")
    second = connection.getresponse()

    assert (first.status, first.will_close) == (404, False)
    assert connection.sock is sock
    assert second.status == 200
    assert json.loads(second.read())["https_port"] == sandbox.info.https_port
    connection.close()


def test_a_body_too_large_to_skip_ends_the_connection(sandbox: Sandbox) -> None:
    # Four megabytes announced, ten bytes sent: the server answers and hangs up rather than
    # wait for the rest to throw it away.
    received = _raw(
        sandbox,
        b"POST /_sandbox/nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Length: 4194304\r\n\r\n0123456789",
    )

    assert received.startswith(b"HTTP/1.1 404 ")


@pytest.mark.parametrize(
    "request_line",
    [
        b"GET /_sandbox/info HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET /_sandbox/info HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    ],
    ids=["http-1.0", "asked-to-close"],
)
def test_the_connection_closes_when_the_client_says_so(
    sandbox: Sandbox, request_line: bytes
) -> None:
    received = _raw(sandbox, request_line)

    head, _blank, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nConnection: close" in head
    assert b'"https_port"' in body


# -- framing, with small WSGI apps on the same server ---------------------------------------


class Serving:
    """One of the sandbox's servers, plain HTTP, with one app."""

    def __init__(self, app: WsgiApp) -> None:
        self.server = server_module._Server(server_module._listen("127.0.0.1", 0), app, None)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def raw(self, request: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(request)
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
        return received

    def stop(self) -> None:
        self.server.shutdown()
        self.server.close_everything()
        self.thread.join(5)


@pytest.fixture
def serve() -> Iterator[Any]:
    running: list[Serving] = []

    def start(app: WsgiApp) -> Serving:
        running.append(Serving(app))
        return running[-1]

    yield start
    for serving in running:
        serving.stop()


def _pieces(*parts: bytes, headers: Iterable[tuple[str, str]] = ()) -> WsgiApp:
    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain"), *headers])
        return list(parts)

    return app


def test_a_body_of_unknown_length_is_sent_in_chunks(serve: Any) -> None:
    serving = serve(_pieces(b"hello, ", b"world"))
    connection = serving.connection()

    connection.request("GET", "/")
    sock = connection.sock
    first = connection.getresponse()
    assert first.getheader("Transfer-Encoding") == "chunked"
    assert (first.read(), first.will_close) == (b"hello, world", False)
    connection.request("GET", "/again")
    assert connection.sock is sock
    assert connection.getresponse().read() == b"hello, world"
    connection.close()


def test_head_and_304_answers_carry_no_body(serve: Any) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        status = "304 Not Modified" if environ["PATH_INFO"] == "/same" else "200 OK"
        start_response(status, [("Content-Length", "4")])
        return [b"body"]

    serving = serve(app)
    connection = serving.connection()

    connection.request("HEAD", "/")
    sock = connection.sock
    assert connection.getresponse().read() == b""
    connection.request("GET", "/same")
    unchanged = connection.getresponse()
    assert (unchanged.status, unchanged.read()) == (304, b"")
    connection.request("GET", "/")
    assert connection.getresponse().read() == b"body"
    assert connection.sock is sock
    connection.close()


def test_a_body_shorter_than_announced_ends_the_connection(serve: Any) -> None:
    serving = serve(_pieces(b"four", headers=[("Content-Length", "10")]))

    received = serving.raw(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")

    assert received.startswith(b"HTTP/1.1 200 ")
    assert received.endswith(b"\r\n\r\nfour")


def test_a_failing_app_answers_500_and_closes(serve: Any) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        raise RuntimeError("the app broke")

    serving = serve(app)

    received = serving.raw(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")

    head, _blank, _body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 500 ")
    assert b"\r\nConnection: close" in head


def test_stopping_ends_kept_connections(serve: Any) -> None:
    serving = serve(_pieces(b"ok", headers=[("Content-Length", "2")]))
    before = set(threading.enumerate())
    connection = serving.connection()
    connection.request("GET", "/")
    assert connection.getresponse().read() == b"ok"

    serving.stop()

    assert [t for t in threading.enumerate() if t not in before and t.is_alive()] == []
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        connection.request("GET", "/")
        connection.getresponse()
    connection.close()
