"""One window per person: a second start hands its request to the running app and exits.

Two windows of the same person would race each other for the token cache and show two
versions of the truth during an incident. The first start takes a lock file in the config
folder (:class:`QLockFile`: it notices a crashed holder by its process id) and listens on
a local socket (a named pipe on Windows) whose name is private to the person and the
config folder, so tests and second profiles with their own config folder never meet.

A later start finds the lock taken, connects, sends its request (one line of JSON: which
mailbox to select, if any), waits for ``ok`` and exits 0; the running app brings its
window forward. The headless commands (``selftest``, ``diagnose``, ...) do not take part:
they share the token cache safely through its own lock.
"""

from __future__ import annotations

import functools
import getpass
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QLockFile, QObject, Signal

if TYPE_CHECKING:
    # Imported where used: the lock is taken before the window's first paint, and
    # listening can wait until after it (later starts retry for a few seconds).
    from PySide6.QtNetwork import QLocalServer, QLocalSocket

from qargo_desktop import APP_NAME

log = logging.getLogger(__name__)

LOCK_FILE_NAME = "instance.lock"
_PROTOCOL = 1
_REPLY = b"ok\n"
_MAX_REQUEST = 64 * 1024


@dataclass(frozen=True, slots=True)
class InstanceRequest:
    """What a later start asks the running app to do (besides coming to the front).

    Attributes:
        select: The address of a mailbox to select (``--select ADDRESS``).
    """

    select: str | None = None

    def to_bytes(self) -> bytes:
        """One line of JSON."""
        return json.dumps({"protocol": _PROTOCOL, **asdict(self)}).encode("utf-8") + b"\n"

    @classmethod
    def from_bytes(cls, data: bytes) -> InstanceRequest:
        """Read a request; anything unreadable is an empty request (still: come forward)."""
        try:
            document = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return cls()
        if not isinstance(document, dict):
            return cls()
        select = document.get("select")
        return cls(select=select if isinstance(select, str) and select.strip() else None)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in the environment or the password database
        return str(Path.home())


def server_name(config_dir: Path, user: str | None = None) -> str:
    """The local socket name for a person and a config folder.

    Hashed, because user names and paths may hold characters that socket and pipe names
    do not allow, and because the name is visible to other users of the machine.
    """
    import hashlib

    folder = str(Path(config_dir).expanduser().resolve())
    digest = hashlib.sha256(f"{user or _user()}\n{folder}".encode()).hexdigest()[:20]
    return f"{APP_NAME}-{digest}"


class SingleInstance(QObject):
    """The running app's side: the lock, and the server later starts talk to.

    Signals:
        request_received(object): A later start sent an :class:`InstanceRequest`.

    Args:
        config_dir: The config folder (the lock file lives there).
        parent: The owning object.
    """

    request_received = Signal(object)

    def __init__(self, config_dir: Path, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.config_dir = Path(config_dir)
        self._lock: QLockFile | None = None
        self._server: QLocalServer | None = None
        self._buffers: dict[QLocalSocket, bytes] = {}

    @functools.cached_property
    def name(self) -> str:
        """The local socket's name (:func:`server_name`)."""
        return server_name(self.config_dir)

    @property
    def listening(self) -> bool:
        """Whether later starts can reach this app."""
        return self._server is not None and self._server.isListening()

    def acquire(self) -> bool:
        """Become the running app: True, or False when another one holds the lock."""
        self.config_dir.mkdir(parents=True, exist_ok=True)
        lock = QLockFile(str(self.config_dir / LOCK_FILE_NAME))
        # Only a dead holder makes the lock stale, never its age: the app runs for days.
        lock.setStaleLockTime(0)
        if not lock.tryLock(0) and not (_damaged(lock) and _take_damaged(lock)):
            return False
        self._lock = lock
        return True

    def listen(self) -> bool:
        """Accept requests from later starts (call with the lock held)."""
        from PySide6.QtNetwork import QLocalServer

        server = QLocalServer(self)
        server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
        # A socket file left by a crashed run would block listen(); the lock says it is ours.
        QLocalServer.removeServer(self.name)
        if not server.listen(self.name):
            log.warning("Later starts cannot reach this window: %s", server.errorString())
            return False
        server.newConnection.connect(self._on_new_connection)
        self._server = server
        log.debug("Listening for later starts on %s", server.fullServerName())
        return True

    def release(self) -> None:
        """Stop listening and give the lock back (the app is closing)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._lock is not None:
            self._lock.unlock()
            self._lock = None

    def _on_new_connection(self) -> None:
        server = self._server
        while server is not None and server.hasPendingConnections():
            socket = server.nextPendingConnection()
            self._buffers[socket] = b""
            socket.readyRead.connect(lambda s=socket: self._on_ready_read(s))
            socket.disconnected.connect(lambda s=socket: self._forget(s))

    def _on_ready_read(self, socket: QLocalSocket) -> None:
        data = self._buffers.get(socket, b"") + bytes(socket.readAll().data())
        if b"\n" not in data:
            if len(data) > _MAX_REQUEST:
                socket.abort()
                self._forget(socket)
            else:
                self._buffers[socket] = data
            return
        line = data.split(b"\n", 1)[0]
        self._buffers[socket] = b""
        socket.write(_REPLY)
        socket.flush()
        socket.disconnectFromServer()
        request = InstanceRequest.from_bytes(line)
        log.info("Another start of the app handed over%s", " a mailbox" if request.select else "")
        self.request_received.emit(request)

    def _forget(self, socket: QLocalSocket) -> None:
        if self._buffers.pop(socket, None) is not None:
            socket.deleteLater()


def _damaged(lock: QLockFile) -> bool:
    """Whether a lock held by nobody we can name is damaged (empty, cut short, garbage).

    Such a lock is never stale to QLockFile (it cannot tell whether its holder is alive),
    so it would keep every start out for good. Asked twice, apart, so that a lock being
    written by another start at this very moment is not mistaken for one.
    """
    if lock.error() != QLockFile.LockError.LockFailedError:
        return False
    for attempt in range(2):
        if attempt:
            time.sleep(0.2)
        readable, *_holder = lock.getLockInfo()
        if readable:
            return False
    return True


def _take_damaged(lock: QLockFile) -> bool:
    log.warning("The instance lock %s is damaged; taking it over", lock.fileName())
    lock.removeStaleLockFile()
    return lock.tryLock(0)


def send_request(name: str, request: InstanceRequest, *, timeout_s: float = 5.0) -> bool:
    """Hand ``request`` to the running app; True once it answered.

    Retries until ``timeout_s``: the running app may still be starting (it takes the lock
    before it listens). Needs no event loop.
    """
    if sys.platform == "win32":
        # Let the running app take the foreground: Windows gives it only to the process
        # the person just started, unless that process passes it on.
        import ctypes

        ctypes.windll.user32.AllowSetForegroundWindow(-1)  # ASFW_ANY
    deadline = time.monotonic() + timeout_s
    while True:
        if _send_once(name, request):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def _send_once(name: str, request: InstanceRequest) -> bool:
    from PySide6.QtNetwork import QLocalSocket

    socket = QLocalSocket()
    socket.connectToServer(name)
    if not socket.waitForConnected(1000):
        return False
    try:
        socket.write(request.to_bytes())
        if not socket.waitForBytesWritten(2000):
            return False
        reply = b""
        while _REPLY not in reply:
            ready = socket.waitForReadyRead(2000)
            # Read even when the wait failed: the answer may have come with the hang-up.
            reply += bytes(socket.readAll().data())
            if not ready:
                break
        return _REPLY in reply
    finally:
        socket.abort()
