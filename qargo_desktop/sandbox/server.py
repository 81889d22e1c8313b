"""The sandbox server shell: HTTPS and HTTP servers, routing, and control endpoints.

One :class:`Sandbox` runs every sandbox service in the current process, on loopback:

- an HTTPS port P (certificate from the local CA) serving the identity platform under
  ``/<tenant id>``, the organisation API under ``/api``, Graph under ``/graph`` and the control
  endpoints under ``/_sandbox``;
- a plain-HTTP port Q serving only the pages a person's browser opens (sign-in, sign-out,
  device login), which a browser trusts without a certificate warning.

Both keep HTTP/1.1 connections open between requests, as real servers do (werkzeug's
development server closes every connection after one response, so each request would pay
a new TLS handshake that no real service makes a client pay).

Services are mounted in :func:`service_mounts`, one line each; :func:`wrap_service` is the hook
fault injection wraps each service with; :func:`prepare_world` seeds the world before the
servers start.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import socket
import ssl
import threading
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from werkzeug.exceptions import InternalServerError
from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

from qargo_desktop.sandbox import ca
from qargo_desktop.sandbox.world import (
    ADMIN_SCOPES,
    REQUIRED_LINK_SCOPES,
    SandboxOptions,
    World,
)

__all__ = [
    "Mount",
    "Sandbox",
    "SandboxInfo",
    "SandboxOptions",
    "StartResponse",
    "WsgiApp",
    "json_response",
    "prepare_world",
    "read_json",
    "serve_forever",
    "service_mounts",
    "wrap_service",
]

logger = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

SERVICE_IDENTITY = "identity"
SERVICE_API = "api"
SERVICE_GRAPH = "graph"
SERVICE_CONTROL = "control"

_CERT_FOLDER = "certificates"
_JOIN_TIMEOUT_S = 5.0
# Idle keep-alive connections are closed after this long so worker threads do not pile up.
_CONNECTION_TIMEOUT_S = 30.0
# A request body the service left unread is read and dropped up to this size to keep the
# connection for the next request; a larger one closes the connection instead.
_DRAIN_LIMIT = 1 << 20


@dataclass(frozen=True)
class Mount:
    """One service mounted on the sandbox's servers.

    Attributes:
        prefix: Path prefix the service answers under (``""`` for the root). The longest
            matching prefix wins.
        service: ``identity``, ``api``, ``graph`` or ``control`` (fault settings pick by this).
        app: The WSGI application.
        strip_prefix: Whether the app sees paths without the prefix (moved to SCRIPT_NAME).
        http: Whether the plain-HTTP port serves it too (browser pages only).
    """

    prefix: str
    service: str
    app: WsgiApp
    strip_prefix: bool = True
    http: bool = False


def service_mounts(world: World) -> list[Mount]:
    """Every service the sandbox serves, one line each.

    Args:
        world: The world the services share.

    Returns:
        The mounts; order does not matter (the longest prefix wins).
    """
    from qargo_desktop.sandbox import api, faults, graph, identity

    mounts = [
        Mount("/_sandbox", SERVICE_CONTROL, control_app(world), http=True),
        Mount("", SERVICE_IDENTITY, identity.make_app(world), strip_prefix=False, http=True),
    ]
    mounts.append(Mount("/api", SERVICE_API, api.make_app(world)))
    mounts.append(Mount("/graph/v1.0", SERVICE_GRAPH, graph.make_app(world)))
    mounts.append(Mount("/_sandbox/faults", SERVICE_CONTROL, faults.make_control_app(world)))
    mounts.append(Mount("/_sandbox/mailboxes", SERVICE_CONTROL, api.make_control_app(world)))
    return mounts


def wrap_service(world: World, service: str, app: WsgiApp) -> WsgiApp:
    """Hook that wraps each mounted service (fault injection plugs in here).

    Args:
        world: The world (its ``faults`` holds the current fault settings).
        service: The mount's service name.
        app: The service's WSGI app.

    Returns:
        The app to serve.
    """
    from qargo_desktop.sandbox.faults import SERVICES, FaultMiddleware

    if service in SERVICES and world.faults is not None:
        return FaultMiddleware(app, service, world.faults)
    return app


def prepare_world(world: World) -> None:
    """Hook that fills the world before the servers start (seed data plugs in here)."""
    from qargo_desktop.sandbox import seed

    seed.prepare_world(world)


@dataclass(frozen=True)
class SandboxInfo:
    """Where a running sandbox listens and what a client needs to use it.

    Attributes:
        authority: MSAL authority, ``https://127.0.0.1:P/<tenant id>``.
        client_id: The desktop app's public client id.
        tenant_id: The tenant GUID.
        admin_scopes: Scopes the app asks for to call the organisation API.
        required_link_scopes: Scopes the organisation requires for a mailbox link.
        api_base_url: ``https://127.0.0.1:P/api``.
        graph_base_url: ``https://127.0.0.1:P/graph/v1.0``.
        ca_certificate: Path of the CA certificate clients must trust.
        accounts: ``{"username", "display_name", "role"}`` of every account.
        https_port: Port P.
        http_port: Port Q.
        control_url: ``https://127.0.0.1:P/_sandbox``.
        https_base_url: ``https://127.0.0.1:P``.
        http_base_url: ``http://127.0.0.1:Q``.
        device_login_url: ``http://127.0.0.1:Q/devicelogin``.
    """

    authority: str
    client_id: str
    tenant_id: str
    admin_scopes: list[str]
    required_link_scopes: list[str]
    api_base_url: str
    graph_base_url: str
    ca_certificate: Path
    accounts: list[dict[str, Any]]
    https_port: int
    http_port: int
    control_url: str
    https_base_url: str
    http_base_url: str
    device_login_url: str

    def to_json(self) -> dict[str, Any]:
        """The info as JSON-ready values (paths as strings)."""
        return {
            "authority": self.authority,
            "client_id": self.client_id,
            "tenant_id": self.tenant_id,
            "admin_scopes": list(self.admin_scopes),
            "required_link_scopes": list(self.required_link_scopes),
            "api_base_url": self.api_base_url,
            "graph_base_url": self.graph_base_url,
            "ca_certificate": str(self.ca_certificate),
            "accounts": [dict(account) for account in self.accounts],
            "https_port": self.https_port,
            "http_port": self.http_port,
            "control_url": self.control_url,
            "https_base_url": self.https_base_url,
            "http_base_url": self.http_base_url,
            "device_login_url": self.device_login_url,
        }


def sandbox_info(world: World) -> SandboxInfo:
    """The info of the world's running servers."""
    if world.ca_certificate is None:
        raise RuntimeError("the sandbox is not running")
    https_port = int(world.https_base.rsplit(":", 1)[1])
    http_port = int(world.http_base.rsplit(":", 1)[1])
    return SandboxInfo(
        authority=world.authority,
        client_id=world.client_id,
        tenant_id=world.tenant_id,
        admin_scopes=list(ADMIN_SCOPES),
        required_link_scopes=list(REQUIRED_LINK_SCOPES),
        api_base_url=f"{world.https_base}/api",
        graph_base_url=f"{world.https_base}/graph/v1.0",
        ca_certificate=world.ca_certificate,
        accounts=[account.to_json() for account in world.account_list()],
        https_port=https_port,
        http_port=http_port,
        control_url=f"{world.https_base}/_sandbox",
        https_base_url=world.https_base,
        http_base_url=world.http_base,
        device_login_url=f"{world.http_base}/devicelogin",
    )


# Small WSGI helpers shared by the sandbox's apps


def json_response(
    start_response: StartResponse,
    status: int,
    body: Any,
    *,
    headers: Iterable[tuple[str, str]] = (),
    content_type: str = "application/json; charset=utf-8",
) -> list[bytes]:
    """Send ``body`` as JSON with ``status``; returns the WSGI body."""
    from http import HTTPStatus

    data = json.dumps(body).encode()
    reason = HTTPStatus(status).phrase
    start_response(
        f"{status} {reason}",
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(data))),
            ("Cache-Control", "no-store"),
            *headers,
        ],
    )
    return [data]


def read_json(environ: dict[str, Any]) -> Any:
    """The request body parsed as JSON (None when empty); raises ValueError when malformed."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    raw = environ["wsgi.input"].read(length) if length > 0 else b""
    if not raw:
        return None
    return json.loads(raw)


def control_app(world: World) -> WsgiApp:
    """The control endpoints under ``/_sandbox`` (info, revoke, the CA certificate)."""

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        https = environ.get("wsgi.url_scheme") == "https"

        if path == "/ca.pem" and method == "GET":
            if world.ca_certificate is None:
                return json_response(start_response, 503, {"error": "not_running"})
            data = world.ca_certificate.read_bytes()
            start_response(
                "200 OK",
                [
                    ("Content-Type", "application/x-pem-file"),
                    ("Content-Length", str(len(data))),
                    ("Content-Disposition", 'attachment; filename="qargo-sandbox-ca.pem"'),
                ],
            )
            return [data]

        if not https:
            # Only the CA certificate is offered over plain HTTP; everything else needs TLS.
            return json_response(start_response, 404, {"error": "not_found"})

        if path == "/info" and method == "GET":
            return json_response(start_response, 200, sandbox_info(world).to_json())

        if path == "/revoke" and method == "POST":
            try:
                body = read_json(environ)
            except ValueError:
                body = None
            username = body.get("username") if isinstance(body, dict) else None
            if not isinstance(username, str) or world.get_account(username) is None:
                return json_response(
                    start_response,
                    400,
                    {"error": "unknown_user", "detail": "Give the username of a sandbox account."},
                )
            world.revoke_grant(username)
            return json_response(start_response, 200, {"revoked": username})

        return json_response(start_response, 404, {"error": "not_found", "path": path})

    return app


class _Dispatcher:
    """Routes each request to the mount with the longest matching prefix."""

    def __init__(self, mounts: list[Mount], *, http_only: bool) -> None:
        usable = [mount for mount in mounts if mount.http or not http_only]
        self._mounts = sorted(usable, key=lambda mount: len(mount.prefix), reverse=True)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "") or "/"
        for mount in self._mounts:
            prefix = mount.prefix
            if prefix and not (path == prefix or path.startswith(prefix + "/")):
                continue
            environ["qargo.sandbox.service"] = mount.service
            if mount.strip_prefix and prefix:
                environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix
                environ["PATH_INFO"] = path[len(prefix) :] or "/"
            return mount.app(environ, start_response)
        return json_response(start_response, 404, {"error": "not_found"})


class _RequestBody(io.RawIOBase):
    """``wsgi.input`` that ends where the request's body ends.

    On a kept-alive connection the bytes after the body are the client's next request; a
    service reading "everything" must not get them, and what it leaves unread must be
    skipped before the next request is parsed.
    """

    def __init__(self, stream: io.BufferedIOBase, length: int) -> None:
        super().__init__()
        self._stream = stream
        self._left = length

    def readable(self) -> bool:
        """Always readable."""
        return True

    def read(self, size: int | None = -1) -> bytes:
        """Read up to ``size`` bytes of the body (all that is left when negative)."""
        wanted = self._left if size is None or size < 0 else min(size, self._left)
        if wanted <= 0:
            return b""
        data = self._stream.read(wanted)
        self._left -= len(data)
        if not data:
            self._left = 0
            raise ConnectionResetError("the client closed the connection inside its request")
        return data

    def readinto(self, buffer: Any) -> int:
        """Read into ``buffer``; the number of bytes read."""
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readline(self, size: int | None = -1) -> bytes:
        """Read one line of the body, at most ``size`` bytes."""
        wanted = self._left if size is None or size < 0 else min(size, self._left)
        if wanted <= 0:
            return b""
        data = self._stream.readline(wanted)
        self._left -= len(data)
        return data

    def skip_rest(self) -> bool:
        """Read and drop what is left of the body; ``False`` when too much is left."""
        if self._left > _DRAIN_LIMIT:
            return False
        while self._left > 0:
            self.read(min(self._left, 65536))
        return True


class _Response:
    """One WSGI response written to a kept-alive connection, framed so the next can follow.

    The body goes out with the length the service announced or, when it announced none,
    in chunks; a response that cannot be framed (an HTTP/1.0 client, a body shorter or
    longer than announced) ends with the connection.
    """

    def __init__(self, handler: _RequestHandler, keep_alive: bool) -> None:
        self.handler = handler
        self.keep_alive = keep_alive
        self.status: str | None = None
        self.headers: list[tuple[str, str]] = []
        self.headers_sent = False
        self.chunked = False
        self.no_body = False
        self.announced: int | None = None
        self.written = 0

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        """WSGI's ``start_response``."""
        if exc_info is not None:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("the response was already started")
        self.status = status
        self.headers = list(headers)
        return self.write

    def write(self, data: bytes) -> None:
        """Send ``data`` (the status and headers first, once)."""
        if not self.headers_sent:
            self._send_headers()
        if not data or self.no_body:
            return
        out = self.handler.wfile
        if self.chunked:
            out.write(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            out.write(data)
        self.written += len(data)

    def finish(self) -> None:
        """End the body; decide whether the connection can carry another request."""
        if not self.headers_sent:
            self.write(b"")
        if self.chunked:
            self.handler.wfile.write(b"0\r\n\r\n")
        elif self.announced is not None and self.written != self.announced and not self.no_body:
            self.keep_alive = False
        self.handler.wfile.flush()

    def _send_headers(self) -> None:
        if self.status is None:
            raise AssertionError("write() before start_response()")
        self.headers_sent = True
        code_text, _space, reason = self.status.partition(" ")
        code = int(code_text)
        method = self.handler.command
        self.no_body = method == "HEAD" or 100 <= code < 200 or code in {204, 304}
        handler = self.handler
        handler.send_response(code, reason)
        for name, value in self.headers:
            if name.lower() == "connection":
                continue  # the server decides whether the connection stays open
            if name.lower() == "content-length":
                with contextlib.suppress(ValueError):
                    self.announced = int(value)
            handler.send_header(name, value)
        if self.announced is None and not self.no_body:
            if self.keep_alive:
                self.chunked = True
                handler.send_header("Transfer-Encoding", "chunked")
            # Otherwise the body ends with the connection.
            self.keep_alive = self.chunked
        if not self.keep_alive:
            handler.send_header("Connection", "close")
        handler.end_headers()


class _RequestHandler(WSGIRequestHandler):
    """Werkzeug's handler with keep-alive, logging through this module's logger.

    Query strings are left out of the log.
    """

    protocol_version = "HTTP/1.1"
    timeout = _CONNECTION_TIMEOUT_S

    def run_wsgi(self) -> None:
        """Serve one request and keep the connection for the next one when HTTP allows.

        werkzeug's own version always answers ``Connection: close`` and, to leave nothing
        unread, reads whatever the client sends in the next few milliseconds: on a kept
        connection that would swallow the client's next request.
        """
        if self.headers.get("Expect", "").lower().strip(" \t") == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.environ = environ = self.make_environ()
        keep_alive = not self.close_connection and self.request_version == "HTTP/1.1"
        body: _RequestBody | None = None
        if not environ.get("wsgi.input_terminated"):  # a chunked body ends the connection
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = -1
            if length >= 0:
                body = _RequestBody(self.rfile, length)
                environ["wsgi.input"] = body
        if body is None:
            keep_alive = False

        response = _Response(self, keep_alive)
        try:
            self._execute(self.server.app, environ, response)
        except (ConnectionError, TimeoutError, ssl.SSLError):
            # The client left, or a fault injected a dropped connection.
            self.close_connection = True
            return
        except Exception:
            self.close_connection = True
            self.server.log("error", "Error on request:\n%s", traceback.format_exc())
            if response.headers_sent:
                return  # the client sees a cut response, as from a crashed server
            with contextlib.suppress(Exception):
                self._execute(InternalServerError(), environ, _Response(self, False))
            return
        try:
            kept = response.keep_alive and body is not None and body.skip_rest()
        except (ConnectionError, TimeoutError, ssl.SSLError):
            kept = False
        if not kept:
            self.close_connection = True

    @staticmethod
    def _execute(app: Any, environ: dict[str, Any], response: _Response) -> None:
        result = app(environ, response.start_response)
        try:
            for data in result:
                response.write(data)
            response.finish()
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # Query strings can hold codes or hints; the path alone says what happened.
        path = self.path.split("?", 1)[0]
        logger.debug("%s %s %s -> %s", self.server.port, self.command, path, code)

    def log_error(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.server.port, *args)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.server.port, *args)


class _Server(ThreadedWSGIServer):
    """A threaded WSGI server that can be stopped without leaving threads or sockets behind.

    TLS handshakes run on the connection's own thread (not the accept loop), so a client
    that connects and stays silent cannot stall other clients.
    """

    daemon_threads = True
    block_on_close = False

    def __init__(self, sock: socket.socket, app: WsgiApp, tls: ssl.SSLContext | None) -> None:
        host, port = sock.getsockname()[:2]
        super().__init__(host, port, app, handler=_RequestHandler, fd=sock.fileno())
        # fromfd() duplicated the descriptor: the original is no longer needed.
        sock.close()
        self._tls = tls
        if tls is not None:
            self.socket = tls.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False
            )
            self.ssl_context = tls
        self._open: set[socket.socket] = set()
        self._workers: set[threading.Thread] = set()
        self._track = threading.Lock()

    def log(self, type: str, message: str, *args: Any) -> None:
        # Werkzeug's own logger would add a console handler to the app's process.
        level = logging.ERROR if type == "error" else logging.DEBUG
        logger.log(level, "port %s: " + message, self.port, *args)

    def process_request(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        assert isinstance(request, socket.socket)  # a stream server's request is its socket
        worker = threading.Thread(
            target=self._serve_connection,
            args=(request, client_address),
            name=f"sandbox-{self.port}-conn",
            daemon=True,
        )
        with self._track:
            self._open.add(request)
            self._workers.add(worker)
        worker.start()

    def _serve_connection(self, request: socket.socket, client_address: Any) -> None:
        try:
            request.settimeout(_CONNECTION_TIMEOUT_S)
            # Headers and body leave in separate writes; on a kept connection Nagle's
            # algorithm would hold the body back until the client's delayed ACK.
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if isinstance(request, ssl.SSLSocket):
                request.do_handshake()
            self.finish_request(request, client_address)
        except (OSError, ValueError) as error:
            # Clients that drop, time out or distrust the certificate are routine here.
            logger.debug("Connection on port %s ended: %s", self.port, error)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            with self._track:
                self._open.discard(request)
                self._workers.discard(threading.current_thread())

    def close_everything(self) -> None:
        """Stop accepting, drop open connections, and wait for their threads."""
        with self._track:
            sockets = list(self._open)
        for sock in sockets:
            # socket.socket.shutdown, not SSLSocket's: it wakes a reader blocked in recv
            # without touching the TLS object that thread is using.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
        with self._track:
            workers = list(self._workers)
        for worker in workers:
            worker.join(_JOIN_TIMEOUT_S)
            if worker.is_alive():
                logger.warning("A sandbox connection thread did not stop in time")
        with contextlib.suppress(OSError):
            self.server_close()


def _listen(host: str, port: int) -> socket.socket:
    # Bound here rather than by werkzeug, which calls sys.exit() when the port is taken.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=128)


@dataclass
class _Running:
    servers: list[_Server] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)


class Sandbox:
    """The sandbox services, run in this process.

    Usage::

        with Sandbox(SandboxOptions(data_dir=tmp)) as sandbox:
            info = sandbox.info

    Attributes:
        options: The options given.
        world: The shared state (tests inspect it, revoke grants, move the clock).
    """

    def __init__(self, options: SandboxOptions) -> None:
        if options.host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError("the sandbox only listens on loopback")
        self.options = options
        self.world = World(options)
        self._running: _Running | None = None
        self._info: SandboxInfo | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def info(self) -> SandboxInfo:
        """The running sandbox's info (raises RuntimeError before start)."""
        if self._info is None:
            raise RuntimeError("the sandbox is not running")
        return self._info

    @property
    def running(self) -> bool:
        """Whether the servers run."""
        return self._running is not None

    def start(self) -> SandboxInfo:
        """Create certificates, bind both ports, and start serving.

        Returns:
            Where the sandbox listens.

        Raises:
            OSError: A port could not be bound.
        """
        with self._lock:
            if self._running is not None:
                return self.info

            options = self.options
            paths = ca.ensure_certificates(Path(options.data_dir) / _CERT_FOLDER)
            tls = ca.server_context(paths)
            host = "127.0.0.1" if options.host == "localhost" else options.host
            https_sock = _listen(host, options.port)
            try:
                http_sock = _listen(host, options.http_port)
            except OSError:
                https_sock.close()
                raise
            netloc_host = f"[{host}]" if ":" in host else host
            https_port = https_sock.getsockname()[1]
            http_port = http_sock.getsockname()[1]
            self.world.set_addresses(
                f"https://{netloc_host}:{https_port}",
                f"http://{netloc_host}:{http_port}",
                paths.ca_certificate,
            )
            prepare_world(self.world)

            mounts = [
                Mount(m.prefix, m.service, wrap_service(self.world, m.service, m.app),
                      m.strip_prefix, m.http)
                for m in service_mounts(self.world)
            ]  # fmt: skip
            running = _Running()
            running.servers.append(_Server(https_sock, _Dispatcher(mounts, http_only=False), tls))
            running.servers.append(_Server(http_sock, _Dispatcher(mounts, http_only=True), None))
            for server in running.servers:
                thread = threading.Thread(
                    target=server.serve_forever,
                    kwargs={"poll_interval": 0.05},
                    name=f"sandbox-{server.port}",
                    daemon=True,
                )
                thread.start()
                running.threads.append(thread)
            self._running = running
            self._info = sandbox_info(self.world)
            logger.info(
                "Sandbox listening on %s (pages on %s)", self.world.https_base, self.world.http_base
            )
            return self._info

    def stop(self) -> None:
        """Stop both servers, close every connection, and wait for every thread."""
        with self._lock:
            running, self._running = self._running, None
            if running is None:
                return
            for callback in list(self.world.stop_callbacks):
                try:
                    callback()
                except Exception:
                    logger.exception("A sandbox stop callback failed")
            # Both accept loops are told to stop at once; each notices within one poll.
            stoppers = [
                threading.Thread(target=server.shutdown, name="sandbox-stop", daemon=True)
                for server in running.servers
            ]
            for stopper in stoppers:
                stopper.start()
            for stopper in stoppers:
                stopper.join(_JOIN_TIMEOUT_S)
            for server in running.servers:
                server.close_everything()
            for thread in running.threads:
                thread.join(_JOIN_TIMEOUT_S)
            logger.info("Sandbox on %s stopped", self.world.https_base)

    # Conveniences for tests and the control endpoints

    def set_faults(self, **settings: Any) -> None:
        """Change fault settings while running (see faults.py for the names)."""
        faults = self.world.faults
        if faults is None:
            raise RuntimeError("fault injection is not available in this sandbox")
        faults.update(**settings)

    def revoke_grant(self, username: str) -> None:
        """Revoke ``username``'s refresh tokens and consent (AADSTS50173 on the next refresh)."""
        self.world.revoke_grant(username)

    def issued_secrets(self) -> set[str]:
        """Every token and code the sandbox issued (for leak tests)."""
        return self.world.issued_secrets()


def serve_forever(
    options: SandboxOptions,
    ready_callback: Callable[[SandboxInfo], None] | None = None,
    stop_event: threading.Event | None = None,
) -> None:
    """Run a sandbox until ``stop_event`` is set or the process is interrupted.

    Args:
        options: Sandbox options.
        ready_callback: Called with the info once both ports serve.
        stop_event: Set it (from another thread) to stop; None waits for Ctrl+C.
    """
    event = stop_event or threading.Event()
    with Sandbox(options) as sandbox:
        if ready_callback is not None:
            ready_callback(sandbox.info)
        try:
            # A timed wait keeps Ctrl+C responsive on Windows.
            while not event.wait(0.5):
                pass
        except KeyboardInterrupt:
            logger.info("Sandbox interrupted")
