"""The MSAL token cache at rest: AES-GCM encrypted in the data folder, its key in the keyring.

Why this shape: a token cache outgrows what OS keyrings hold per entry (the Windows
Credential Manager keeps about 1,280 characters), so the cache lives in a file and only a
random 256-bit key lives in the keyring. Without a keyring that can be trusted the cache
stays in memory for the life of the process; it is never written in plaintext.

File format (version 1)::

    b"QDTC" | version (1 byte) | app fingerprint (8 bytes) | nonce (12 bytes) | ciphertext+tag

The associated data binds the header and the app (client) id, so a file cannot be replayed
for another app registration or another format version. A fresh random nonce is used for
every write.

Concurrency: writes are atomic (temporary file in the same folder, fsync, ``os.replace``)
and every read-modify-write runs under an OS file lock (``fcntl.flock`` or
``msvcrt.locking``), which the OS releases if the holder dies. Wrap each MSAL call in
:meth:`EncryptedTokenCache.transaction` so that a second app instance sees a refresh token
the first one just rotated::

    with cache.transaction():
        result = app.acquire_token_silent_with_error(scopes, account)

MSAL's own writes (``add``/``modify``) and reads (``search``) also reload and save under the
lock when no transaction is open, so nothing is lost if a call is not wrapped.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import keyring
import keyring.core
import keyring.errors
import keyring.util.platform_
import msal
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from keyring.backend import KeyringBackend
from keyring.backends import chainer, fail, null

from qargo_desktop import APP_NAME
from qargo_desktop.core.logs import register_secret

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
KEYRING_SERVICE = APP_NAME
KEY_USERNAME = "token-cache-key"

_MAGIC = b"QDTC"
_FINGERPRINT_SIZE = 8
_NONCE_SIZE = 12
_TAG_SIZE = 16
_HEADER_SIZE = len(_MAGIC) + 1 + _FINGERPRINT_SIZE
_KEY_SIZE = 32


class TokenCacheError(Exception):
    """The token cache cannot do what was asked."""


class TokenCacheBusy(TokenCacheError):
    """Another process held the token cache lock for too long."""


class _Unreadable(Exception):
    """The cache file cannot be used; the message says why in plain words."""


# -- keyring backends ----------------------------------------------------------------------


def backend_name(backend: object) -> str:
    """``module.Class`` of a keyring backend, for messages and diagnostics."""
    kind = type(backend)
    return f"{kind.__module__}.{kind.__name__}"


def keyring_refusal(backend: KeyringBackend) -> str | None:
    """Say why a keyring backend must not hold the key, or ``None`` if it may."""
    name = backend_name(backend)
    if isinstance(backend, fail.Keyring):
        return "no system keyring is available"
    if isinstance(backend, null.Keyring):
        return "the keyring is turned off (null backend)"
    lowered = name.lower()
    if "plaintext" in lowered or lowered.startswith("keyrings.alt.file"):
        # keyrings.alt's file backends keep secrets in a plain (or password-prompting)
        # file in the home folder: no better than writing the tokens there ourselves.
        return f"{name} keeps secrets in a plain file"
    try:
        priority = float(backend.priority)
    except Exception as exc:  # a backend's priority may raise anything
        return f"{name} is not usable ({exc})"
    if priority < 1:
        return f"{name} is not a recommended keyring (priority {priority:g})"
    return None


# The backend keyring's detection settles on when the OS keyring is usable, by platform.
_PLATFORM_BACKENDS = {
    "win32": "keyring.backends.Windows.WinVaultKeyring",
    "darwin": "keyring.backends.macOS.Keyring",
}
_SECRET_SERVICE_BACKEND = "keyring.backends.SecretService.Keyring"
_UNKNOWN = object()


def default_keyring() -> KeyringBackend:
    """The default keyring backend, found without loading every backend when nobody chose one.

    keyring's own detection (the first ``keyring.get_keyring()``) imports every installed
    backend through entry points and asks each whether it is usable: about 70 ms of every
    start. When nobody chose a backend (no ``keyring.set_keyring()``, no
    ``PYTHON_KEYRING_BACKEND``, no keyring configuration file), the OS keyring (the Windows
    Credential Manager, the macOS Keychain, the Secret Service elsewhere) is taken directly
    if it is usable, and becomes keyring's default. keyring's detection leads to it too: it
    ranks the OS keyring above its other backends, and a chainer is looked through (see
    :func:`choose_keyring_backend`); a third-party backend is used when configured. When
    the OS keyring is not usable (a KDE without Secret Service, no D-Bus session), keyring
    detects as usual.
    """
    # keyring has no public way to ask whether a backend was set; in doubt, it decides.
    if getattr(keyring.core, "_keyring_backend", _UNKNOWN) is not None:
        return keyring.get_keyring()
    if os.environ.get("PYTHON_KEYRING_BACKEND") or _keyring_config_file().exists():
        return keyring.get_keyring()
    name = _PLATFORM_BACKENDS.get(sys.platform, _SECRET_SERVICE_BACKEND)
    try:
        # load_keyring() asks the backend's priority, which raises when it is not usable
        # (no D-Bus session, no Secret Service daemon, a missing dependency).
        backend = keyring.core.load_keyring(name)
    except Exception as exc:  # a backend's import or priority may raise anything
        log.debug("The OS keyring (%s) is not usable (%s); detecting", name, exc)
        return keyring.get_keyring()
    keyring.set_keyring(backend)
    log.debug("Keyring backend: %s", name)
    return backend


def _keyring_config_file() -> Path:
    # Where keyring reads its configuration (keyring.core reads the same file).
    return Path(keyring.util.platform_.config_root()) / "keyringrc.cfg"


def choose_keyring_backend(
    backend: KeyringBackend | None = None,
) -> tuple[KeyringBackend | None, str | None]:
    """Pick the backend that will hold the key.

    A chainer (several backends) is looked through: the best member we accept is used
    directly, so a plaintext backend installed beside the OS keyring is never written to.

    Args:
        backend: The backend to judge; by default keyring's (see :func:`default_keyring`).

    Returns:
        The backend and ``None``, or ``None`` and why no backend can be used.
    """
    chosen = backend if backend is not None else default_keyring()
    candidates: list[KeyringBackend] = [chosen]
    if isinstance(chosen, chainer.ChainerBackend):
        candidates = list(chosen.backends)
    reasons = []
    for candidate in candidates:
        reason = keyring_refusal(candidate)
        if reason is None:
            return candidate, None
        reasons.append(reason)
    return None, reasons[0] if reasons else "no system keyring is available"


# -- the inter-process lock ----------------------------------------------------------------


class FileLock:
    """An exclusive OS lock on a lock file, shared across processes.

    The OS drops the lock when its holder exits, even by a crash, so a lock is never stale.
    The holder's pid, host and start time are written into the file for diagnostics.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the lock; return whether it was taken."""
        if self._fd is not None:
            raise RuntimeError("lock already held by this object")
        # O_BINARY: on Windows a text-mode descriptor would rewrite what we write into it.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o600)
        deadline = time.monotonic() + timeout_s
        pause = 0.005
        try:
            while not _try_lock(fd):
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(pause)
                pause = min(pause * 2, 0.1)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        holder = f"{os.getpid()} {socket.gethostname()} {datetime.now(UTC).isoformat()}"
        with contextlib.suppress(OSError):
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, holder.encode("utf-8", "replace").ljust(128)[:128])
        return True

    def release(self) -> None:
        """Release the lock (no-op if not held)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            _unlock(fd)
        finally:
            os.close(fd)


if sys.platform == "win32":
    import msvcrt

    def _try_lock(fd: int) -> bool:
        os.lseek(fd, 0, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


# -- files ---------------------------------------------------------------------------------


def _replace(source: str, target: Path) -> None:
    # On Windows a reader holding the target open makes the replace fail for a moment.
    for pause in (0.01, 0.05, 0.1, 0.25, 0.5):
        try:
            os.replace(source, target)
        except PermissionError:
            time.sleep(pause)
        else:
            return
    os.replace(source, target)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never half.

    Raises:
        OSError: The file could not be written; the previous file is untouched.
    """
    descriptor, temporary = tempfile.mkstemp(prefix=f"{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        _replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    if sys.platform != "win32":
        # The rename itself must reach the disk too, or a power cut can undo it.
        with contextlib.suppress(OSError):
            folder = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)


_Stamp = tuple[int, int, int]


def _stamp(result: os.stat_result) -> _Stamp:
    return (result.st_ino, result.st_size, result.st_mtime_ns)


def _stamp_of(path: Path) -> _Stamp | None:
    try:
        return _stamp(path.stat())
    except FileNotFoundError:
        return None


def _iso(epoch: object) -> str | None:
    try:
        return datetime.fromtimestamp(int(str(epoch)), UTC).isoformat().replace("+00:00", "Z")
    except (TypeError, ValueError, OverflowError, OSError):
        return None


# -- the cache -----------------------------------------------------------------------------


class EncryptedTokenCache(msal.SerializableTokenCache):  # type: ignore[misc]
    """An MSAL token cache kept encrypted on disk, with its key in the OS keyring.

    Nothing touches the keyring or the disk until first use (or :meth:`open`), because
    the first keyring access can take a tenth of a second; do that off the GUI thread.

    Args:
        path: The cache file (``AppPaths.cache_file``). Its folder is created.
        app_id: The app registration's client id; bound into every encryption, so use one
            file per app registration.
        keyring_backend: The backend to use instead of ``keyring.get_keyring()``.
        key_username: The keyring entry's user name under service ``qargo-desktop``.
        lock_timeout_s: How long to wait for another process's lock.
    """

    _cache: dict[str, dict[str, Any]]  # MSAL's in-memory state, declared for the type checker

    def __init__(
        self,
        path: Path,
        *,
        app_id: str,
        keyring_backend: KeyringBackend | None = None,
        key_username: str = KEY_USERNAME,
        lock_timeout_s: float = 30.0,
    ) -> None:
        super().__init__()
        self.path = Path(path)
        self.app_id = app_id
        self.key_username = key_username
        self.lock_timeout_s = lock_timeout_s
        self._requested_backend = keyring_backend
        self._backend: KeyringBackend | None = None
        self._backend_label = "not opened yet"
        self._aead: AESGCM | None = None
        self._opened = False
        self._problem: str | None = None
        self._file_lock = FileLock(self.path.with_name(self.path.name + ".lock"))
        self._depth = 0
        self._disk_stamp: _Stamp | None = None
        fingerprint = hashlib.sha256(app_id.encode("utf-8")).digest()[:_FINGERPRINT_SIZE]
        self._header = _MAGIC + bytes([FORMAT_VERSION]) + fingerprint
        self._associated_data = self._header + b"|" + app_id.encode("utf-8")

    # -- public state ------------------------------------------------------------------

    @property
    def cache(self) -> EncryptedTokenCache:
        """The MSAL cache itself (what the identity layer hands to MSAL)."""
        return self

    @property
    def persistent(self) -> bool:
        """Whether sign-ins survive the process (a usable keyring was found)."""
        self.open()
        return self._aead is not None

    @property
    def problem(self) -> str | None:
        """A message for the person about the cache (no keyring, file set aside...)."""
        self.open()
        return self._problem

    def take_problem(self) -> str | None:
        """Return :attr:`problem` and forget it, so that it is shown once."""
        self.open()
        with self._lock:
            problem, self._problem = self._problem, None
        return problem

    @property
    def backend_name(self) -> str:
        """The keyring backend in use (or why none is)."""
        self.open()
        return self._backend_label

    # -- opening -----------------------------------------------------------------------

    def open(self) -> None:
        """Find the key and load the file; later calls do nothing.

        Raises:
            TokenCacheBusy: Another process held the lock past ``lock_timeout_s``.
        """
        with self._lock:
            if self._opened:
                return
            backend, refusal = choose_keyring_backend(self._requested_backend)
            if backend is None:
                self._in_memory_only(refusal or "no system keyring is available")
                return
            self._backend = backend
            self._backend_label = backend_name(backend)
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            except OSError as exc:
                self._in_memory_only(f"its folder {self.path.parent} cannot be created: {exc}")
                return
            if not self._file_lock.acquire(self.lock_timeout_s):
                raise TokenCacheBusy(self._busy_message())
            try:
                key = self._load_or_create_key(backend)
                if key is None:
                    return
                self._aead = AESGCM(key)
                self._remove_stale_temporaries()
                self._sync_from_disk()
            finally:
                self._file_lock.release()
                self._opened = True

    def _in_memory_only(self, reason: str) -> None:
        self._opened = True
        self._aead = None
        if self._backend is None:
            self._backend_label = f"none ({reason})"
        self._problem = (
            f"Sign-ins are kept only until the app closes: {reason}. Nothing was written to disk."
        )
        log.warning("Token cache is in memory only: %s", reason)

    def _load_or_create_key(self, backend: KeyringBackend) -> bytes | None:
        # Under the file lock: two first-ever starts must not each make a key.
        try:
            stored = backend.get_password(KEYRING_SERVICE, self.key_username)
        except Exception as exc:  # backends raise D-Bus, OS and keyring errors alike
            self._in_memory_only(f"the keyring ({self._backend_label}) cannot be read: {exc}")
            return None
        if stored is not None:
            key = _decode_key(stored)
            if key is not None:
                register_secret(key)
                return key
            log.warning("The token cache key in the keyring is damaged; making a new one")
        key = os.urandom(_KEY_SIZE)
        encoded = base64.b64encode(key).decode("ascii")
        try:
            backend.set_password(KEYRING_SERVICE, self.key_username, encoded)
            kept = backend.get_password(KEYRING_SERVICE, self.key_username)
        except Exception as exc:  # as above
            self._in_memory_only(f"the keyring ({self._backend_label}) refused the key: {exc}")
            return None
        if kept != encoded:
            self._in_memory_only(f"the keyring ({self._backend_label}) did not keep the key")
            return None
        register_secret(key)
        log.info("Created a new token cache key in %s", self._backend_label)
        return key

    def _remove_stale_temporaries(self) -> None:
        # Left by a process that died between writing and renaming; encrypted, but clutter.
        for leftover in self.path.parent.glob(f"{self.path.name}.*.tmp"):
            with contextlib.suppress(OSError):
                leftover.unlink()

    def _busy_message(self) -> str:
        try:
            holder = self._file_lock.path.read_bytes()[:128].decode("utf-8", "replace").strip()
        except OSError:
            holder = ""
        return (
            f"The sign-in cache is in use by another {APP_NAME} process"
            + (f" ({holder})" if holder else "")
            + f"; waited {self.lock_timeout_s:g} s."
        )

    # -- locking -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, timeout_s: float) -> Iterator[tuple[bool, bool]]:
        """Hold the thread lock and the file lock; yield (file lock held, outermost)."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield True, False
                finally:
                    self._depth -= 1
                return
            if not self._file_lock.acquire(timeout_s):
                yield False, True
                return
            self._depth = 1
            try:
                yield True, True
            finally:
                self._depth = 0
                self._file_lock.release()

    @contextlib.contextmanager
    def transaction(self, timeout_s: float | None = None) -> Iterator[EncryptedTokenCache]:
        """Hold the cache for one MSAL operation: reload before, save after, locked.

        Nested transactions (and MSAL's calls inside one) share the outer lock.

        Raises:
            TokenCacheBusy: Another process held the lock past the timeout.
        """
        self.open()
        with self._lock:
            if self._aead is None:
                yield self
                return
            with self._locked(self.lock_timeout_s if timeout_s is None else timeout_s) as (
                held,
                outermost,
            ):
                if not held:
                    raise TokenCacheBusy(self._busy_message())
                if outermost:
                    self._sync_from_disk()
                try:
                    yield self
                finally:
                    if outermost:
                        self._save_if_changed()

    # -- MSAL's entry points -----------------------------------------------------------

    def search(self, *args: Any, **kwargs: Any) -> Any:
        """MSAL's lookup; sees what other processes saved since the last look."""
        self.open()
        with self._lock:
            if self._aead is not None and not self._depth and self._disk_changed():
                with self._locked(self.lock_timeout_s) as (held, _outermost):
                    if held:
                        self._sync_from_disk()
                    else:
                        log.warning("Token cache lock busy; using the copy in memory")
        return super().search(*args, **kwargs)

    def add(self, event: Any, **kwargs: Any) -> Any:
        """MSAL stores tokens from a response; saved at once (or by the transaction)."""
        return self._write_through(super().add, event, **kwargs)

    def modify(self, credential_type: Any, old_entry: Any, new_key_value_pairs: Any = None) -> Any:
        """MSAL changes or removes one entry; saved at once (or by the transaction)."""
        return self._write_through(super().modify, credential_type, old_entry, new_key_value_pairs)

    def _write_through(self, change: Any, *args: Any, **kwargs: Any) -> Any:
        self.open()
        with self._lock:
            if self._aead is None:
                return change(*args, **kwargs)
            with self._locked(self.lock_timeout_s) as (held, outermost):
                if held and outermost:
                    self._sync_from_disk()
                result = change(*args, **kwargs)
                if held and outermost:
                    self._save_if_changed()
                elif not held:
                    # Kept in memory (has_state_changed stays set); the next locked
                    # operation merges it into the file.
                    log.warning("Token cache lock busy; the change is saved later")
                return result

    def clear(self) -> None:
        """Forget every account and token, on disk too."""
        with self.transaction():
            self.deserialize(None)
            self.has_state_changed = True

    # -- disk --------------------------------------------------------------------------

    def _disk_changed(self) -> bool:
        return _stamp_of(self.path) != self._disk_stamp

    def _sync_from_disk(self) -> None:
        """Load the file if it changed since we last read or wrote it (lock held)."""
        try:
            with self.path.open("rb") as stream:
                stamp = _stamp(os.fstat(stream.fileno()))
                if stamp == self._disk_stamp:
                    return
                blob = stream.read()
        except FileNotFoundError:
            self._disk_stamp = None
            return
        except OSError as exc:
            log.warning("Token cache file cannot be read: %s", exc)
            return
        try:
            state = self._decrypt(blob)
        except _Unreadable as exc:
            self._set_aside(str(exc))
            self._disk_stamp = None
            state = None
        else:
            self._disk_stamp = stamp
        if self.has_state_changed:
            self._merge(state)
        else:
            self.deserialize(state)

    def _merge(self, state: str | None) -> None:
        # Changes we could not save yet meet what another process saved: keep both, ours
        # winning per entry. A removal of ours may come back; it is removed again later.
        disk: dict[str, dict[str, Any]] = json.loads(state) if state else {}
        for credential_type, entries in self._cache.items():
            disk.setdefault(credential_type, {}).update(entries)
        self._cache = disk
        self.has_state_changed = True

    def _save_if_changed(self) -> None:
        if not self.has_state_changed or self._aead is None:
            return
        state = self.serialize()
        nonce = os.urandom(_NONCE_SIZE)
        blob = (
            self._header
            + nonce
            + self._aead.encrypt(nonce, state.encode("utf-8"), self._associated_data)
        )
        try:
            atomic_write(self.path, blob)
        except OSError as exc:
            self.has_state_changed = True
            self._problem = f"Sign-ins could not be saved ({exc.strerror or exc}); retrying later."
            log.warning("Token cache could not be saved: %s", exc)
            return
        self._disk_stamp = _stamp_of(self.path)

    def _decrypt(self, blob: bytes) -> str:
        if self._aead is None:
            raise _Unreadable("no key")
        if len(blob) < _HEADER_SIZE + _NONCE_SIZE + _TAG_SIZE:
            raise _Unreadable("the file is truncated")
        if blob[: len(_MAGIC)] != _MAGIC:
            raise _Unreadable("the file is not a token cache")
        version = blob[len(_MAGIC)]
        if version != FORMAT_VERSION:
            raise _Unreadable(f"the file has format version {version}, expected {FORMAT_VERSION}")
        if blob[:_HEADER_SIZE] != self._header:
            raise _Unreadable("the file belongs to another app registration")
        nonce = blob[_HEADER_SIZE : _HEADER_SIZE + _NONCE_SIZE]
        try:
            plain = self._aead.decrypt(
                nonce, blob[_HEADER_SIZE + _NONCE_SIZE :], self._associated_data
            )
        except InvalidTag:
            raise _Unreadable(
                "it cannot be decrypted: it is damaged or was encrypted with another key"
            ) from None
        try:
            state = plain.decode("utf-8")
            if not isinstance(json.loads(state), dict):
                raise ValueError("not an object")
        except ValueError:
            raise _Unreadable("its content is not a token cache") from None
        return state

    def _set_aside(self, reason: str) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        counter = 1
        while target.exists():
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{counter}")
            counter += 1
        try:
            os.replace(self.path, target)
        except OSError as exc:
            log.error("Unreadable token cache could not be set aside: %s", exc)
            where = "it could not be moved aside and will be overwritten"
        else:
            where = f"it was set aside as {target.name}"
        self._problem = (
            f"The saved sign-ins could not be read ({reason}); {where}. Please sign in again."
        )
        log.warning("Token cache file unreadable (%s); %s", reason, where)

    # -- diagnostics -------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """What support needs to know about the cache, without a single token."""
        self.open()
        with self._lock:
            stamp = _stamp_of(self.path)
            accounts = [
                {
                    "username": entry.get("username"),
                    "home_account_id": entry.get("home_account_id"),
                    "environment": entry.get("environment"),
                    "realm": entry.get("realm"),
                }
                for entry in self._cache.get(self.CredentialType.ACCOUNT, {}).values()
            ]
            now = time.time()
            access_tokens = []
            for entry in self._cache.get(self.CredentialType.ACCESS_TOKEN, {}).values():
                expires = entry.get("expires_on")
                try:
                    expired = int(str(expires)) < now
                except ValueError:
                    expired = True
                access_tokens.append(
                    {
                        "home_account_id": entry.get("home_account_id"),
                        "client_id": entry.get("client_id"),
                        "scopes": str(entry.get("target") or "").split(),
                        "expires_at": _iso(expires),
                        "expired": expired,
                    }
                )
            refresh_tokens = [
                {
                    "home_account_id": entry.get("home_account_id"),
                    "client_id": entry.get("client_id"),
                    "last_modified_at": _iso(entry.get("last_modification_time")),
                }
                for entry in self._cache.get(self.CredentialType.REFRESH_TOKEN, {}).values()
            ]
        return {
            "backend": self._backend_label,
            "file": str(self.path),
            "file_exists": stamp is not None,
            "file_size": stamp[1] if stamp else None,
            "format_version": FORMAT_VERSION,
            "persistent": self._aead is not None,
            "problem": self._problem,
            "accounts": accounts,
            "access_tokens": access_tokens,
            "refresh_tokens": refresh_tokens,
        }


def _decode_key(stored: str) -> bytes | None:
    try:
        key = base64.b64decode(stored.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        return None
    return key if len(key) == _KEY_SIZE else None
