"""The sandbox's shared in-memory world.

One :class:`World` belongs to one running sandbox. It holds the tenant, the public client, the
accounts that can sign in, the clock every service reads, one lock that guards all state, and
references to the per-service stores. The identity platform lives in ``world.identity``; the
organisation API, Graph mail and fault settings hang off ``api_store``, ``mail_store``,
``graph_store`` and ``faults`` once their modules attach them.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qargo_desktop.sandbox.identity import IdentityPlatform

TENANT_ID = "3c6f2a91-5b7d-4e08-9a1c-7d2e4f6b8a05"
TENANT_DOMAIN = "northwind-haulage.example"
TENANT_NAME = "Northwind Haulage"
CLIENT_ID = "8e4b1d27-9c3a-4f6e-b2d5-1a7c0e9f3b64"
CLIENT_NAME = "Qargo Desktop"

API_RESOURCE = "api://qargo-sandbox"
ADMIN_SCOPE = f"{API_RESOURCE}/Organisation.Manage"
GRAPH_RESOURCE = "https://graph.microsoft.com"
MAIL_READWRITE_SCOPE = f"{GRAPH_RESOURCE}/Mail.ReadWrite"
MAIL_SEND_SCOPE = f"{GRAPH_RESOURCE}/Mail.Send"
OFFLINE_ACCESS = "offline_access"

#: Scopes the organisation requires for a mailbox link, in the order the API lists them.
REQUIRED_LINK_SCOPES: tuple[str, ...] = (MAIL_READWRITE_SCOPE, MAIL_SEND_SCOPE, OFFLINE_ACCESS)
ADMIN_SCOPES: tuple[str, ...] = (ADMIN_SCOPE,)

#: Scopes the sandbox knows, with the words the consent page shows for each.
KNOWN_SCOPES: dict[str, str] = {
    ADMIN_SCOPE: "Manage your Qargo organisation's settings and linked mailboxes",
    MAIL_READWRITE_SCOPE: "Read and write access to your mail",
    MAIL_SEND_SCOPE: "Send mail as you",
    f"{GRAPH_RESOURCE}/User.Read": "Sign you in and read your profile",
    OFFLINE_ACCESS: "Maintain access to data you have given it access to",
    "openid": "Sign you in",
    "profile": "View your basic profile",
    "email": "View your email address",
}

#: The namespace the sandbox derives stable object ids from (so an account keeps its oid).
_OID_NAMESPACE = uuid.UUID("6f1d8c3e-2a4b-4c5d-8e7f-9a0b1c2d3e4f")

ROLE_SUPER_ADMIN = "super_admin"
ROLE_USER = "user"
ROLE_MAILBOX = "mailbox"
ROLE_GUEST = "guest"


@dataclass(frozen=True)
class SandboxOptions:
    """Everything a sandbox can be started with.

    Attributes:
        data_dir: Folder that keeps the local CA (reused across starts) and other files.
        port: HTTPS port (0 picks a free one).
        http_port: Plain-HTTP port for the browser pages (0 picks a free one).
        mailboxes: Number of mailboxes in all for a large organisation (None: seed only).
        token_lifetime_s: Lifetime of access and id tokens.
        refresh_token_lifetime_s: Lifetime of refresh tokens (from issue, not last use).
        attempt_ttl_s: How long an authorisation attempt stays pending.
        delivery_delay_s: Time between sendMail and arrival in the recipient's inbox.
        sync_delay_s: Time between arrival and Qargo's sync recording the message.
        faults: Fault settings applied at start (see faults.py).
        seed: Seed for every random choice the sandbox makes (faults, ids in seed data).
        host: Address both servers bind; loopback only.
        device_code_lifetime_s: How long a device code can be redeemed.
        device_code_interval_s: Polling interval the device code flow asks for.
        auth_code_lifetime_s: How long an authorization code can be redeemed.
    """

    data_dir: Path
    port: int = 0
    http_port: int = 0
    mailboxes: int | None = None
    token_lifetime_s: int = 3600
    refresh_token_lifetime_s: int = 86400
    attempt_ttl_s: int = 600
    delivery_delay_s: float = 2.0
    sync_delay_s: float = 3.0
    faults: dict[str, Any] | None = None
    seed: int = 0
    host: str = "127.0.0.1"
    device_code_lifetime_s: int = 900
    device_code_interval_s: int = 5
    auth_code_lifetime_s: int = 300


class Clock:
    """Wall-clock time with an offset tests can move forward.

    Every service reads time through the world's clock, so a test can expire tokens or
    attempts by calling :meth:`advance` instead of sleeping.
    """

    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        """Seconds since the epoch, including any offset."""
        with self._lock:
            return time.time() + self._offset

    def utcnow(self) -> datetime:
        """The current time as an aware UTC datetime."""
        return datetime.fromtimestamp(self.now(), tz=UTC)

    def advance(self, seconds: float) -> None:
        """Move the clock forward (never backward) by ``seconds``."""
        if seconds < 0:
            raise ValueError("the sandbox clock only moves forward")
        with self._lock:
            self._offset += seconds


@dataclass
class Account:
    """A person (or shared mailbox) that can sign in to the sandbox identity platform.

    Attributes:
        username: The sign-in name (user principal name), e.g. ``admin@northwind-haulage.example``.
        display_name: The name shown on the sign-in page and in the ``name`` claim.
        oid: The object id (stable per username).
        role: ``super_admin``, ``user``, ``mailbox`` or ``guest``; informational.
        is_super_admin: Whether the organisation API treats this account as a super admin.
        needs_admin_consent: Consent for mail scopes needs an administrator (AADSTS65001).
        requires_mfa: Silent and refresh sign-ins need a fresh MFA claim (AADSTS50076).
        in_tenant: False for accounts from another tenant (AADSTS50020 at sign-in).
    """

    username: str
    display_name: str
    oid: str
    role: str = ROLE_USER
    is_super_admin: bool = False
    needs_admin_consent: bool = False
    requires_mfa: bool = False
    in_tenant: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The public description used by ``/_sandbox/info`` and SandboxInfo."""
        return {"username": self.username, "display_name": self.display_name, "role": self.role}


def oid_for(username: str) -> str:
    """The stable object id of ``username`` (the same on every start)."""
    return str(uuid.uuid5(_OID_NAMESPACE, username.lower()))


class World:
    """Shared state of one sandbox instance.

    Attributes:
        options: The options the sandbox was started with.
        tenant_id: The tenant's GUID.
        tenant_domain: The tenant's verified domain.
        client_id: The desktop app's public client id.
        lock: Re-entrant lock guarding every store's state.
        clock: The time every service reads.
        accounts: Accounts by lower-case username.
        identity: The identity platform (grants, codes, tokens, signing key).
        api_store: The organisation API's store, set by api.py (None until then).
        graph_store: Graph's store, if Graph keeps one apart from mail (None until set).
        mail_store: The mail delivery and sync simulation, set by mail.py (None until then).
        faults: Fault settings, set by faults.py (None until then).
        stop_callbacks: Called when the sandbox stops (stores cancel their timers here).
        https_base: ``https://127.0.0.1:P`` once the server runs ('' before).
        http_base: ``http://127.0.0.1:Q`` once the server runs ('' before).
        ca_certificate: Path of the CA certificate once the server runs (None before).
    """

    def __init__(self, options: SandboxOptions) -> None:
        from qargo_desktop.sandbox.identity import IdentityPlatform

        self.options = options
        self.tenant_id = TENANT_ID
        self.tenant_domain = TENANT_DOMAIN
        self.tenant_name = TENANT_NAME
        self.client_id = CLIENT_ID
        self.client_name = CLIENT_NAME
        self.lock = threading.RLock()
        self.clock = Clock()
        self.accounts: dict[str, Account] = {}
        self.api_store: Any = None
        self.graph_store: Any = None
        self.mail_store: Any = None
        self.faults: Any = None
        # Called (in order) when the sandbox stops: timers and workers end here.
        self.stop_callbacks: list[Callable[[], None]] = []
        self.https_base = ""
        self.http_base = ""
        self.ca_certificate: Path | None = None
        self._secrets: set[str] = set()
        self._seed_accounts()
        self.identity: IdentityPlatform = IdentityPlatform(self)

    def _seed_accounts(self) -> None:
        domain = self.tenant_domain
        self.add_account(
            f"admin@{domain}", "Amira Haddad", role=ROLE_SUPER_ADMIN, is_super_admin=True
        )
        self.add_account(
            f"admin2@{domain}", "Ben Okafor", role=ROLE_SUPER_ADMIN, is_super_admin=True
        )
        self.add_account(f"dispatcher@{domain}", "Dana Kowalski", role=ROLE_USER)
        self.add_account(
            "guest@other-tenant.example", "Gustavo Reyes", role=ROLE_GUEST, in_tenant=False
        )

    # Accounts

    def add_account(
        self,
        username: str,
        display_name: str,
        *,
        role: str = ROLE_USER,
        is_super_admin: bool = False,
        needs_admin_consent: bool = False,
        requires_mfa: bool = False,
        in_tenant: bool = True,
    ) -> Account:
        """Add an account that can sign in, or update the one with that username.

        Args:
            username: Sign-in name; matched case-insensitively.
            display_name: Name shown on the sign-in page and in tokens.
            role: Informational role (``super_admin``, ``user``, ``mailbox``, ``guest``).
            is_super_admin: Whether the organisation API treats it as a super admin.
            needs_admin_consent: Whether its consent for mail scopes needs an administrator.
            requires_mfa: Whether silent and refresh sign-ins demand a fresh MFA claim.
            in_tenant: False for a guest from another tenant.

        Returns:
            The stored account.
        """
        with self.lock:
            account = Account(
                username=username,
                display_name=display_name,
                oid=oid_for(username),
                role=role,
                is_super_admin=is_super_admin,
                needs_admin_consent=needs_admin_consent,
                requires_mfa=requires_mfa,
                in_tenant=in_tenant,
            )
            self.accounts[username.lower()] = account
            return account

    def get_account(self, username: str) -> Account | None:
        """The account with ``username`` (case-insensitive), or None."""
        with self.lock:
            return self.accounts.get(username.lower())

    def account_list(self) -> list[Account]:
        """Every account, in the order they were added."""
        with self.lock:
            return list(self.accounts.values())

    # Grants

    def revoke_grant(self, username: str) -> None:
        """Revoke every refresh token and consent of ``username``, as an admin would.

        The identity platform refuses the user's refresh tokens from now on (AADSTS50173) and
        the organisation API store, when present, learns of it (its linked mailbox for that
        address needs reauthorising).
        """
        with self.lock:
            self.identity.revoke(username)
            hook = getattr(self.api_store, "on_grant_revoked", None)
            if callable(hook):
                hook(username)

    # Secrets (for leak tests)

    def remember_secret(self, secret: str) -> None:
        """Record a token, code or other secret the sandbox handed out."""
        with self.lock:
            self._secrets.add(secret)

    def issued_secrets(self) -> set[str]:
        """Every token, authorization code, device code and refresh token issued so far."""
        with self.lock:
            return set(self._secrets)

    # Addresses

    def set_addresses(self, https_base: str, http_base: str, ca_certificate: Path) -> None:
        """Record where the servers listen (called by the server once the ports are bound)."""
        with self.lock:
            self.https_base = https_base
            self.http_base = http_base
            self.ca_certificate = ca_certificate

    @property
    def authority(self) -> str:
        """The authority URL MSAL is given: ``https://127.0.0.1:P/<tenant id>``."""
        return f"{self.https_base}/{self.tenant_id}"

    @property
    def issuer(self) -> str:
        """The ``iss`` of every token: ``https://127.0.0.1:P/<tenant id>/v2.0``."""
        return f"{self.authority}/v2.0"
