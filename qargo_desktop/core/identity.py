"""Sign-in with the Microsoft identity platform through MSAL.

One :class:`IdentityClient` per app registration: the admin's own sign-in for the
organisation API, and (possibly another registration, as the organisation's mail
settings say) the mailbox accounts' sign-ins. MSAL does the protocol; this module adds
what a desktop app needs around it: the loopback listener bound to 127.0.0.1, a deadline
and a cancel on every interactive wait, one interactive sign-in at a time, the token
cache kept coherent across processes, and errors turned into advice.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import msal
import requests

from qargo_desktop.core.errors import (
    Cancelled,
    DeadlineExceeded,
    IdentityError,
    QargoError,
    SignInRequired,
    network_error,
)
from qargo_desktop.core.loopback import BrowserOpener, LoopbackReceiver

log = logging.getLogger(__name__)

# Only one interactive sign-in per process: two listeners and two browser tabs would
# confuse the person, and the second would race the first for the token cache.
_INTERACTIVE_LOCK = threading.Lock()


class CacheStore(Protocol):
    """A token cache that MSAL uses, kept on disk by someone else."""

    @property
    def cache(self) -> msal.SerializableTokenCache:
        """The cache MSAL reads and writes."""
        ...

    def transaction(self) -> AbstractContextManager[Any]:
        """Reload before and save after one MSAL operation, locked across processes."""
        ...


class MemoryCacheStore:
    """A cache that lives only as long as the process."""

    def __init__(self) -> None:
        self._cache = msal.SerializableTokenCache()
        self._lock = threading.RLock()

    @property
    def cache(self) -> msal.SerializableTokenCache:
        """The in-memory MSAL cache."""
        return self._cache

    def transaction(self) -> AbstractContextManager[Any]:
        """Serialise operations within this process."""
        return self._lock


@dataclass(frozen=True, slots=True)
class Account:
    """An account MSAL knows."""

    username: str
    home_account_id: str
    tenant_id: str = ""
    display_name: str = ""


@dataclass(frozen=True, slots=True)
class TokenResult:
    """A token and who it belongs to (never logged)."""

    access_token: str = field(repr=False)
    expires_at: float
    username: str
    home_account_id: str
    scopes: tuple[str, ...]
    id_claims: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass
class InteractiveControl:
    """The UI's handle on one interactive sign-in.

    Attributes:
        cancel: Set it to stop waiting at once.
        deadline_s: How long the browser may take.
        on_auth_uri: Receives the sign-in page address as soon as it is known.
        on_browser_failed: Called with the address when no browser opened.
        opener: Opens the browser (default: the system browser).
    """

    cancel: threading.Event = field(default_factory=threading.Event)
    deadline_s: float = 300.0
    on_auth_uri: Callable[[str], None] | None = None
    on_browser_failed: Callable[[str], None] | None = None
    opener: BrowserOpener | None = None
    listener_address: tuple[str, int] | None = None
    started_at: float = 0.0


class IdentityClient:
    """Signs people in against one app registration.

    Args:
        authority: The authority URL (``https://login.microsoftonline.com/<tenant>`` or
            the sandbox's).
        client_id: The public client's application id.
        session: The shared HTTP session (trust store, proxy, timeouts).
        store: Where the token cache lives.
        validate_authority: Whether MSAL checks the authority against Microsoft's list;
            off for the sandbox and other non-Microsoft hosts.
    """

    def __init__(
        self,
        authority: str,
        client_id: str,
        session: requests.Session,
        store: CacheStore | None = None,
        *,
        validate_authority: bool = True,
        timeout: float = 30.0,
    ) -> None:
        self.authority = authority.rstrip("/")
        self.client_id = client_id
        self._session = session
        self._store = store or MemoryCacheStore()
        self._validate_authority = validate_authority
        self._timeout = timeout
        self._app: msal.PublicClientApplication | None = None
        self._app_lock = threading.Lock()

    @property
    def store(self) -> CacheStore:
        """The token cache store."""
        return self._store

    def _msal(self) -> msal.PublicClientApplication:
        # Created on first use: it fetches the discovery document, which is network I/O.
        with self._app_lock:
            if self._app is None:
                try:
                    self._app = msal.PublicClientApplication(
                        self.client_id,
                        authority=self.authority,
                        token_cache=self._store.cache,
                        http_client=self._session,
                        instance_discovery=self._validate_authority,
                        validate_authority=self._validate_authority,
                        timeout=self._timeout,
                    )
                except requests.RequestException as exc:
                    raise network_error(exc, service="Microsoft sign-in") from exc
                except ValueError as exc:
                    # MSAL raises ValueError for an unreachable or invalid authority.
                    raise IdentityError(
                        "invalid_authority", f"The sign-in authority cannot be used: {exc}"
                    ) from exc
            return self._app

    # -- accounts -----------------------------------------------------------------------

    def accounts(self) -> list[Account]:
        """Return the accounts in the cache."""
        with self._store.transaction():
            raw = self._msal().get_accounts()
        return [_account(a) for a in raw]

    def find_account(self, username: str) -> Account | None:
        """Return the cached account with this username (case-insensitive)."""
        wanted = username.casefold()
        return next((a for a in self.accounts() if a.username.casefold() == wanted), None)

    def sign_out(self, username: str | None = None) -> list[str]:
        """Remove one account (or all) and their tokens from the cache."""
        removed = []
        with self._store.transaction():
            app = self._msal()
            for raw in app.get_accounts():
                if username is None or raw.get("username", "").casefold() == username.casefold():
                    app.remove_account(raw)
                    removed.append(str(raw.get("username", "")))
        log.info("Signed out %s", ", ".join(removed) or "nobody")
        return removed

    # -- tokens -------------------------------------------------------------------------

    def acquire_silent(
        self,
        scopes: Sequence[str],
        *,
        username: str | None = None,
        force_refresh: bool = False,
    ) -> TokenResult | None:
        """Return a token from the cache (refreshing it if needed), or ``None``.

        Raises:
            IdentityError: The refresh token was refused (revoked, expired); the person
                must sign in interactively.
        """
        started = time.monotonic()
        with self._store.transaction():
            app = self._msal()
            candidates = app.get_accounts(username=username) if username else app.get_accounts()
            if not candidates:
                return None
            try:
                result = app.acquire_token_silent_with_error(
                    list(scopes), account=candidates[0], force_refresh=force_refresh
                )
            except requests.RequestException as exc:
                raise network_error(exc, service="Microsoft sign-in") from exc
        if result is None:
            return None
        token = self._result(result, started, "silent")
        return token

    def acquire_interactive(
        self,
        scopes: Sequence[str],
        control: InteractiveControl,
        *,
        login_hint: str | None = None,
        prompt: str | None = None,
        extra_scopes_to_consent: Sequence[str] | None = None,
        claims_challenge: str | None = None,
    ) -> TokenResult:
        """Sign in through the system browser and return the token.

        Raises:
            Cancelled: ``control.cancel`` was set.
            DeadlineExceeded: The browser did not answer in time.
            IdentityError: The identity platform refused.
            QargoError: Another interactive sign-in is running (``app:busy``).
        """
        if not _INTERACTIVE_LOCK.acquire(blocking=False):
            raise QargoError("another interactive sign-in is running", key="app:busy")
        try:
            receiver = LoopbackReceiver(
                cancel=control.cancel,
                deadline_s=control.deadline_s,
                opener=control.opener,
                on_auth_uri=control.on_auth_uri,
                on_browser_failed=control.on_browser_failed,
            )
            control.listener_address = receiver.address
            control.started_at = time.monotonic()
            log.info(
                "Interactive sign-in started%s (listener on %s:%d, deadline %.0f s)",
                f" for {login_hint}" if login_hint else "",
                *receiver.address,
                control.deadline_s,
            )
            started = time.monotonic()
            with receiver:
                try:
                    result = self._msal().acquire_token_interactive(
                        list(scopes),
                        prompt=prompt,
                        login_hint=login_hint,
                        extra_scopes_to_consent=list(extra_scopes_to_consent or []) or None,
                        claims_challenge=claims_challenge,
                        port=receiver.get_port(),
                        auth_code_receiver=receiver,
                        timeout=control.deadline_s,
                    )
                except (Cancelled, DeadlineExceeded):
                    log.info("Interactive sign-in %s", "cancelled" if control.cancel.is_set()
                             else "passed its deadline")  # fmt: skip
                    raise
                except requests.RequestException as exc:
                    raise network_error(exc, service="Microsoft sign-in") from exc
                except ValueError as exc:
                    # MSAL reports a state mismatch and similar protocol faults this way.
                    raise IdentityError("invalid_response", str(exc)) from exc
            # The token exchange wrote to the in-memory cache; persist it under the lock.
            with self._store.transaction():
                pass
            return self._result(result, started, "interactive")
        finally:
            _INTERACTIVE_LOCK.release()

    def _result(self, result: dict[str, Any], started: float, how: str) -> TokenResult:
        elapsed_ms = (time.monotonic() - started) * 1000
        if "access_token" not in result:
            error = IdentityError(
                str(result.get("error") or "unknown_error"),
                result.get("error_description"),
                correlation_id=result.get("correlation_id"),
                claims=result.get("claims"),
            )
            log.warning(
                "Sign-in (%s) refused after %.0f ms: %s (correlation id %s)",
                how,
                elapsed_ms,
                error.code,
                error.correlation_id or "-",
            )
            raise error
        claims = result.get("id_token_claims") or {}
        username = str(claims.get("preferred_username") or "")
        home_account_id = _home_account_id(result)
        log.info(
            "Token obtained (%s) for %s in %.0f ms", how, username or "unknown account", elapsed_ms
        )
        return TokenResult(
            access_token=str(result["access_token"]),
            expires_at=time.time() + float(result.get("expires_in") or 0),
            username=username,
            home_account_id=home_account_id,
            scopes=tuple(str(result.get("scope") or "").split()),
            id_claims=dict(claims),
        )


def _account(raw: dict[str, Any]) -> Account:
    return Account(
        username=str(raw.get("username") or ""),
        home_account_id=str(raw.get("home_account_id") or ""),
        tenant_id=str(raw.get("realm") or ""),
        display_name=str((raw.get("id_token_claims") or {}).get("name") or ""),
    )


def _home_account_id(result: dict[str, Any]) -> str:
    client_info = result.get("client_info")
    if isinstance(client_info, str):
        padded = client_info + "=" * (-len(client_info) % 4)
        try:
            info = json.loads(base64.urlsafe_b64decode(padded))
            return f"{info['uid']}.{info['utid']}"
        except (ValueError, KeyError, TypeError):
            pass
    claims = result.get("id_token_claims") or {}
    return f"{claims.get('oid', '')}.{claims.get('tid', '')}"


__all__ = [
    "Account",
    "CacheStore",
    "IdentityClient",
    "InteractiveControl",
    "MemoryCacheStore",
    "SignInRequired",
    "TokenResult",
]
