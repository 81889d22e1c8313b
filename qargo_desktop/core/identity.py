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
import math
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import msal
import msal.exceptions
import requests

from qargo_desktop.core.errors import (
    Cancelled,
    DeadlineExceeded,
    IdentityError,
    NetworkError,
    QargoError,
    SignInRequired,
    advice_for,
    network_error,
)
from qargo_desktop.core.logs import register_secret
from qargo_desktop.core.loopback import BrowserOpener, LoopbackReceiver

log = logging.getLogger(__name__)

# Only one interactive sign-in per process: two listeners and two browser tabs would
# confuse the person, and the second would race the first for the token cache.
_INTERACTIVE_LOCK = threading.Lock()


def interactive_sign_in_running() -> bool:
    """Whether an interactive (browser or device-code) sign-in is waiting in this process."""
    return _INTERACTIVE_LOCK.locked()


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
        device: Sign in on another device with a code instead of this computer's browser
            (device code flow). The code's own lifetime is then the deadline, not
            ``deadline_s``.
        on_device_code: Receives each code to show (see :class:`DeviceFlow`); called on the
            signing-in thread, so a GUI must hand it over to its own thread.
    """

    cancel: threading.Event = field(default_factory=threading.Event)
    deadline_s: float = 300.0
    on_auth_uri: Callable[[str], None] | None = None
    on_browser_failed: Callable[[str], None] | None = None
    opener: BrowserOpener | None = None
    device: bool = False
    on_device_code: Callable[[DeviceFlow], None] | None = None
    listener_address: tuple[str, int] | None = None
    started_at: float = 0.0


#: Added to the polling interval each time the identity platform answers ``slow_down``
#: (RFC 8628, section 3.5).
SLOW_DOWN_STEP_S = 5.0

# MSAL adds these itself and refuses them in a scope list.
_RESERVED_SCOPES = frozenset({"openid", "profile", "offline_access"})


@dataclass(frozen=True)
class DeviceFlow:
    """A sign-in waiting for the person to enter a code on another device.

    Show :attr:`verification_uri` and :attr:`user_code` large, with the time left; Microsoft's
    own sentence is in :attr:`message`. The code is short-lived and only works together
    with a secret this object keeps out of its ``repr``; it is shown, never logged.

    Attributes:
        user_code: The code the person types on the other device.
        verification_uri: The page where they type it.
        expires_at: When the code stops working (seconds since the epoch).
        message: The identity platform's instructions, in its words.
        interval_s: How often the app asks whether the person has finished.
        scopes: What the sign-in asks for.
        purpose: ``"sign_in"``, or ``"consent"`` for a second code that grants the
            permissions of another service (Microsoft issues a code per service).
        started_at: When the code was issued (seconds since the epoch).
    """

    user_code: str
    verification_uri: str
    expires_at: float
    message: str
    interval_s: float
    scopes: tuple[str, ...]
    purpose: str = "sign_in"
    started_at: float = field(default_factory=time.time)
    msal_flow: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def lifetime_s(self) -> float:
        """How long the code was valid for when it was issued."""
        return max(0.0, self.expires_at - self.started_at)

    def seconds_left(self, now: float | None = None) -> float:
        """How long the code still works (0 once expired)."""
        return max(0.0, self.expires_at - (time.time() if now is None else now))


class DeviceCodeExpired(DeadlineExceeded):
    """The device code expired before the sign-in was completed on the other device."""

    def __init__(self) -> None:
        super().__init__("the sign-in code expired before it was used")
        self.key = "oauth:expired_token"
        self.advice = advice_for(self.key)


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
                        http_cache=_NoReplayCache(),
                    )
                except requests.RequestException as exc:
                    raise network_error(exc, service="Microsoft sign-in") from exc
                except msal.exceptions.MsalServiceError as exc:
                    raise _server_error(exc) from exc
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
            except msal.exceptions.MsalServiceError as exc:
                raise _server_error(exc) from exc
            except ValueError as exc:
                # An answer that is not JSON (a proxy's error page, a cut-off body).
                raise network_error(exc, service="Microsoft sign-in") from exc
            except Exception as exc:
                # MSAL trips over answers it did not expect (a refresh token that is not a
                # string fails an assert on every later refresh): never let that escape raw.
                raise _unusable(exc) from exc
        if result is None:
            return None
        # A silent result carries no id token claims: the account says who it is.
        return self._result(
            result, started, "silent", username=str(candidates[0].get("username") or "")
        )

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
        if control.device:
            return self._acquire_device_with_consent(
                scopes, control, extra_scopes_to_consent or (), claims_challenge
            )
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
                except msal.exceptions.MsalServiceError as exc:
                    raise _server_error(exc) from exc
                except ValueError as exc:
                    # MSAL reports a state mismatch and similar protocol faults this way.
                    raise IdentityError("invalid_response", str(exc)) from exc
                except Exception as exc:
                    raise _unusable(exc) from exc
            # The token exchange wrote to the in-memory cache; persist it under the lock.
            with self._store.transaction():
                pass
            return self._result(result, started, "interactive")
        finally:
            _INTERACTIVE_LOCK.release()

    # -- sign-in on another device (device code flow) ------------------------------------

    def start_device_flow(
        self,
        scopes: Sequence[str],
        *,
        claims_challenge: str | None = None,
        purpose: str = "sign_in",
    ) -> DeviceFlow:
        """Ask the identity platform for a code the person enters on another device.

        Raises:
            IdentityError: The identity platform refused (unknown scope, app not allowed to
                use the device code flow...).
            NetworkError: It could not be reached.
        """
        requested = [s for s in scopes if s not in _RESERVED_SCOPES]
        try:
            raw = self._msal().initiate_device_flow(requested, claims_challenge=claims_challenge)
        except requests.RequestException as exc:
            raise network_error(exc, service="Microsoft sign-in") from exc
        if "user_code" not in raw or "device_code" not in raw:
            error = IdentityError(
                str(raw.get("error") or "unknown_error"),
                raw.get("error_description"),
                correlation_id=raw.get("correlation_id"),
            )
            log.warning("Device code sign-in could not start: %s", error.code)
            raise error
        register_secret(str(raw["device_code"]))
        now = time.time()
        expires_at = float(raw.get("expires_at") or now + float(raw.get("expires_in") or 900))
        flow = DeviceFlow(
            user_code=str(raw["user_code"]),
            verification_uri=str(raw.get("verification_uri") or raw.get("verification_url") or ""),
            expires_at=expires_at,
            message=str(raw.get("message") or ""),
            interval_s=float(raw.get("interval") or 5),
            scopes=tuple(requested),
            purpose=purpose,
            started_at=now,
            msal_flow=raw,
        )
        log.info(
            "Device code sign-in started (%s): code valid for %.0f s at %s, polling every %.0f s",
            purpose.replace("_", "-"),
            flow.lifetime_s,
            flow.verification_uri,
            flow.interval_s,
        )
        return flow

    def finish_device_flow(
        self,
        flow: DeviceFlow,
        cancel: threading.Event,
        *,
        clock: Callable[[], float] = time.time,
    ) -> TokenResult:
        """Wait for the person to finish the sign-in on the other device; return the token.

        Polls at the interval the identity platform asked for, and more slowly each time it
        answers ``slow_down``. Setting ``cancel`` ends the wait at once.

        Raises:
            Cancelled: ``cancel`` was set.
            DeviceCodeExpired: The code expired first (a :class:`DeadlineExceeded`).
            IdentityError: The sign-in was declined (``error`` is ``access_denied``, as
                RFC 8628 names it) or refused.
            NetworkError: The identity platform could not be reached.
        """
        started = time.monotonic()
        raw = flow.msal_flow
        interval = max(float(raw.get("interval") or flow.interval_s), 0.0)
        polls = 0
        while True:
            if cancel.is_set():
                log.info("Device code sign-in cancelled after %d polls", polls)
                raise Cancelled()
            if clock() >= flow.expires_at:
                log.info("Device code sign-in: the code expired after %d polls", polls)
                raise DeviceCodeExpired()
            with self._store.transaction():
                try:
                    # exit_condition True: one request per call; this loop does the waiting,
                    # so a cancel needs no second to take effect.
                    result = self._msal().acquire_token_by_device_flow(
                        raw, exit_condition=lambda _flow: True
                    )
                except requests.RequestException as exc:
                    raise network_error(exc, service="Microsoft sign-in") from exc
            polls += 1
            error = result.get("error")
            if error in ("authorization_pending", "slow_down"):
                if error == "slow_down":
                    # MSAL already adds 5 s to the flow's interval; never less than that.
                    interval = max(float(raw.get("interval") or 0), interval + SLOW_DOWN_STEP_S)
                    raw["interval"] = math.ceil(interval)
                    log.info("Device code sign-in: asked to slow down; polling every %.0f s",
                             interval)  # fmt: skip
                else:
                    log.debug("Device code sign-in: still waiting (poll %d)", polls)
                cancel.wait(max(0.0, min(interval, flow.expires_at - clock())))
                continue
            if error == "expired_token":
                log.info("Device code sign-in: the identity platform says the code expired")
                raise DeviceCodeExpired()
            if error == "authorization_declined":
                declined = IdentityError(
                    "authorization_declined",
                    result.get("error_description"),
                    correlation_id=result.get("correlation_id"),
                )
                # Microsoft's name for RFC 8628's access_denied: callers test the standard
                # name; the key keeps Microsoft's own advice.
                declined.error = "access_denied"
                log.warning("Device code sign-in declined on the other device (%s, correlation "
                            "id %s)", declined.code, declined.correlation_id or "-")  # fmt: skip
                raise declined
            return self._result(result, started, "device code")

    def acquire_device(
        self,
        scopes: Sequence[str],
        on_code: Callable[[DeviceFlow], None],
        cancel: threading.Event,
        *,
        claims_challenge: str | None = None,
        purpose: str = "sign_in",
    ) -> TokenResult:
        """Sign in on another device: get a code, hand it to ``on_code``, wait for the token.

        One interactive sign-in at a time, browser or device.

        Raises:
            Cancelled, DeviceCodeExpired, IdentityError, NetworkError, and QargoError
            (``app:busy``) when another interactive sign-in is running.
        """
        if not _INTERACTIVE_LOCK.acquire(blocking=False):
            raise QargoError("another interactive sign-in is running", key="app:busy")
        try:
            flow = self.start_device_flow(
                scopes, claims_challenge=claims_challenge, purpose=purpose
            )
            on_code(flow)
            return self.finish_device_flow(flow, cancel)
        finally:
            _INTERACTIVE_LOCK.release()

    def _acquire_device_with_consent(
        self,
        scopes: Sequence[str],
        control: InteractiveControl,
        extra_scopes_to_consent: Sequence[str],
        claims_challenge: str | None,
    ) -> TokenResult:
        """The device code version of an interactive sign-in with extra scopes to consent.

        Microsoft's token endpoint refuses a device code that asks for two services at once
        (AADSTS28000), so the extra scopes (another service, such as Graph's mail scopes)
        are checked silently with the new sign-in, and only if consent is missing does the
        person get a second code, for those scopes alone.
        """
        on_code = control.on_device_code or (lambda _flow: None)
        control.started_at = time.monotonic()
        token = self.acquire_device(
            scopes, on_code, control.cancel, claims_challenge=claims_challenge
        )
        extra = [s for s in extra_scopes_to_consent if s not in _RESERVED_SCOPES]
        if not extra:
            return token
        try:
            consented = self.acquire_silent(extra, username=token.username)
        except IdentityError as exc:
            log.info("Device code sign-in: %s has not consented to %d more scopes yet (%s)",
                     token.username, len(extra), exc.code)  # fmt: skip
            consented = None
        if consented is None:
            second = self.acquire_device(extra, on_code, control.cancel, purpose="consent")
            if second.username.casefold() != token.username.casefold():
                # Keep nothing of an account that was not asked for.
                self.sign_out(second.username)
                raise QargoError(
                    f"the second code was used by {second.username}, not {token.username}",
                    key="app:wrong_account",
                )
        return token

    def _result(
        self, result: dict[str, Any], started: float, how: str, *, username: str = ""
    ) -> TokenResult:
        elapsed_ms = (time.monotonic() - started) * 1000
        access_token = result.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            # No token, or not one (null, a number): never hand "None" on as a bearer token.
            error = IdentityError(
                str(result.get("error") or "invalid_response"),
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
        # Any later log line that quotes one of these verbatim is redacted too.
        for name in ("access_token", "refresh_token", "id_token"):
            if isinstance(result.get(name), str):
                register_secret(result[name])
        claims = result.get("id_token_claims") or {}
        username = str(claims.get("preferred_username") or username)
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


class _NoReplayCache(dict[str, Any]):
    """An HTTP cache for MSAL that keeps nothing.

    MSAL replays a token endpoint's 429 or 5xx to every later request with the same key
    for as long as ``Retry-After`` says (up to an hour), and its key for redeeming an
    authorization code leaves the code out: one transient error would fail every
    interactive sign-in after it without asking the server, each after a full round trip
    through the browser. The app's own retry policy already honours ``Retry-After``.
    """

    def __setitem__(self, key: str, value: Any) -> None:
        return


def _server_error(exc: Exception) -> NetworkError:
    """MSAL raises, instead of returning an error, when the token endpoint answers 5xx."""
    return NetworkError(f"Microsoft sign-in: {exc}", key="net:unavailable", code="unavailable")


def _unusable(exc: Exception) -> IdentityError:
    log.warning("MSAL could not use the sign-in service's answer: %s", type(exc).__name__)
    return IdentityError("invalid_response", f"The answer could not be used ({type(exc).__name__})")


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
    "DeviceCodeExpired",
    "DeviceFlow",
    "IdentityClient",
    "InteractiveControl",
    "MemoryCacheStore",
    "SignInRequired",
    "TokenResult",
]
