"""The app's services, built once from the settings and shared by the window and the CLI.

:class:`Services` owns the one HTTP session, the admin's identity client and token cache,
and the organisation API client. Everything here is synchronous and blocking: the window
calls it from its background tasks, the command line calls it directly.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qargo_desktop.core.api import Me, Organisation, OrganisationClient
from qargo_desktop.core.errors import IdentityError, NextStep, QargoError, SignInRequired
from qargo_desktop.core.identity import (
    CacheStore,
    DeviceFlow,
    IdentityClient,
    InteractiveControl,
    MemoryCacheStore,
    TokenResult,
)

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where the services are, and what the admin asks for."""

    authority: str
    client_id: str
    api_base_url: str
    graph_base_url: str
    admin_scopes: tuple[str, ...]
    validate_authority: bool = True


@dataclass(frozen=True, slots=True)
class AdminSession:
    """Who is signed in, as the identity platform and the API see them."""

    username: str
    me: Me
    organisation: Organisation


class NotSuperAdmin(QargoError):
    """The signed-in account is not a Qargo super admin."""

    def __init__(self, username: str) -> None:
        super().__init__(f"{username} is not a Qargo super admin", key="api:not_super_admin")
        self.username = username


class Services:
    """The admin's connection to Microsoft sign-in and the organisation API.

    Args:
        endpoints: Where the services are.
        session: The shared HTTP session.
        admin_store: The admin's token cache.
        mailbox_store: The mailbox accounts' token cache.
        sign_in_timeout_s: Deadline of every interactive sign-in.
    """

    def __init__(
        self,
        endpoints: Endpoints,
        session: requests.Session,
        *,
        admin_store: CacheStore | None = None,
        mailbox_store: CacheStore | None = None,
        sign_in_timeout_s: float = 300.0,
        http_timeout_s: float = 30.0,
    ) -> None:
        self.endpoints = endpoints
        self.session = session
        self.sign_in_timeout_s = sign_in_timeout_s
        self._http_timeout_s = http_timeout_s
        self.admin_identity = IdentityClient(
            endpoints.authority,
            endpoints.client_id,
            session,
            admin_store or MemoryCacheStore(),
            validate_authority=endpoints.validate_authority,
            timeout=http_timeout_s,
        )
        self._mailbox_store = mailbox_store or MemoryCacheStore()
        self._mailbox_identity: IdentityClient | None = None
        self._username: str | None = None
        self._organisation: Organisation | None = None
        self._lock = threading.Lock()
        self.api = OrganisationClient(
            endpoints.api_base_url, session, self.admin_token, timeout=http_timeout_s
        )

    # -- the admin ----------------------------------------------------------------------

    @property
    def username(self) -> str | None:
        """The signed-in admin's username, once known."""
        return self._username

    def admin_token(self, *, force_refresh: bool = False) -> str:
        """Return the admin's access token for the organisation API, silently.

        Raises:
            SignInRequired: Nobody is signed in, or the sign-in expired or was revoked.
        """
        try:
            result = self.admin_identity.acquire_silent(
                self.endpoints.admin_scopes, username=self._username, force_refresh=force_refresh
            )
        except IdentityError as exc:
            if exc.advice.next_step is NextStep.RETRY_LATER:
                # A busy or briefly unavailable sign-in service: the saved sign-in is still
                # good, and signing in again would not help.
                raise
            raise SignInRequired(
                "the saved sign-in was refused", key=exc.key, code=exc.code,
                correlation_id=exc.correlation_id,
            ) from exc  # fmt: skip
        if result is None:
            raise SignInRequired()
        self._username = result.username or self._username
        return result.access_token

    def sign_in_silently(self) -> AdminSession:
        """Sign in from the cache and check the account is a super admin.

        Raises:
            SignInRequired: No cached sign-in works.
            NotSuperAdmin: The account is not a super admin.
        """
        self.admin_token()
        return self._load_session()

    def sign_in_interactive(self, control: InteractiveControl) -> AdminSession:
        """Sign the admin in through the system browser.

        Raises:
            Cancelled, DeadlineExceeded, IdentityError, NotSuperAdmin, QargoError.
        """
        result: TokenResult = self.admin_identity.acquire_interactive(
            self.endpoints.admin_scopes, control, prompt="select_account"
        )
        self._username = result.username
        return self._load_session()

    def sign_in_device(
        self,
        on_code: Callable[[DeviceFlow], None],
        cancel: threading.Event | None = None,
    ) -> AdminSession:
        """Sign the admin in on another device with a code (where no browser is usable here).

        ``on_code`` receives the code and address to show, on this (worker) thread; the
        wait ends when the code expires or ``cancel`` is set.

        Raises:
            Cancelled, DeviceCodeExpired (a DeadlineExceeded), IdentityError, NotSuperAdmin,
            QargoError.
        """
        result = self.admin_identity.acquire_device(
            self.endpoints.admin_scopes, on_code, cancel or threading.Event()
        )
        self._username = result.username
        return self._load_session()

    def _load_session(self) -> AdminSession:
        # Neither answer depends on the other: asked together, over two connections, the
        # sign-in waits for one round trip instead of two. A refusal of either still stops
        # it, and the other request is waited for, so nothing runs on behind the caller.
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sign-in") as pool:
            # In a copy of this context, so that the caller's cancel scope applies there too.
            asked = pool.submit(contextvars.copy_context().run, self.api.organisation)
            me = self.api.me()
            if not me.is_super_admin:
                raise NotSuperAdmin(me.username)
            organisation = asked.result()
        with self._lock:
            self._username = me.username
            self._organisation = organisation
        log.info("Signed in as %s (organisation %s)", me.username, organisation.name)
        return AdminSession(username=me.username, me=me, organisation=organisation)

    def sign_out(self) -> list[str]:
        """Remove the admin's account and tokens from the cache."""
        removed = self.admin_identity.sign_out(self._username)
        with self._lock:
            self._username = None
            self._organisation = None
        return removed

    # -- mailbox accounts ---------------------------------------------------------------

    def organisation(self) -> Organisation:
        """The organisation (read once per sign-in)."""
        with self._lock:
            cached = self._organisation
        if cached is not None:
            return cached
        organisation = self.api.organisation()
        with self._lock:
            self._organisation = organisation
        return organisation

    def mailbox_identity(self) -> IdentityClient:
        """The identity client for mailbox accounts, per the organisation's mail settings."""
        organisation = self.organisation()
        with self._lock:
            if self._mailbox_identity is None:
                self._mailbox_identity = IdentityClient(
                    organisation.mail_authority or self.endpoints.authority,
                    organisation.mail_client_id or self.endpoints.client_id,
                    self.session,
                    self._mailbox_store,
                    validate_authority=self.endpoints.validate_authority,
                    timeout=self._http_timeout_s,
                )
            return self._mailbox_identity

    def token_stores(self) -> dict[str, CacheStore]:
        """The token caches by role (``admin``, ``mailboxes``), for diagnostics."""
        return {"admin": self.admin_identity.store, "mailboxes": self._mailbox_store}

    def new_control(self, **callbacks: Callable[[str], Any]) -> InteractiveControl:
        """Return a control for one interactive sign-in with the configured deadline."""
        control = InteractiveControl(deadline_s=self.sign_in_timeout_s)
        for name, callback in callbacks.items():
            setattr(control, name, callback)
        return control
