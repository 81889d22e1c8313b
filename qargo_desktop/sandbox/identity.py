"""The sandbox Microsoft identity platform (v2.0 endpoints) as a WSGI app.

Faithful enough that MSAL's ``PublicClientApplication`` works against it unchanged, given
``authority="https://127.0.0.1:P/<tenant id>"`` and ``instance_discovery=False``:

- discovery (``/<tenant>/v2.0/.well-known/openid-configuration``) and JWKS;
- ``authorize``: an account picker and a consent page in plain HTML forms (no JavaScript
  needed), answering with ``response_mode=form_post`` (or ``query``) to a loopback redirect URI;
- ``token``: authorization code with PKCE S256 enforced and one-time codes, rotating refresh
  tokens, and the device code grant;
- ``devicecode`` and the ``/devicelogin`` page; ``logout``;
- errors in the platform's shape, with AADSTS codes and the usual HTTP statuses.

State lives in :class:`IdentityPlatform` (``world.identity``); the WSGI app in :func:`make_app`
only parses requests and renders pages.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import secrets
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Request, Response

from qargo_desktop.sandbox import jwt
from qargo_desktop.sandbox.jwt import (
    InvalidSignatureError,
    TokenError,
    TokenExpiredError,
    WrongAudienceError,
)
from qargo_desktop.sandbox.world import (
    GRAPH_RESOURCE,
    KNOWN_SCOPES,
    OFFLINE_ACCESS,
    Account,
)

if TYPE_CHECKING:
    from qargo_desktop.sandbox.world import World

__all__ = [
    "RESERVED_SCOPES",
    "AadError",
    "IdentityPlatform",
    "InvalidSignatureError",
    "TokenError",
    "TokenExpiredError",
    "WrongAudienceError",
    "make_app",
    "normalise_scopes",
    "resource_of",
]

logger = logging.getLogger(__name__)

RESERVED_SCOPES = frozenset({"openid", "profile", "email", OFFLINE_ACCESS})
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"

# Sign-in requests (the page flow between authorize and the redirect) are kept this long.
_SIGN_IN_TTL_S = 3600.0
_USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ23456789"
_USER_CODE_LENGTH = 9

_SCOPE_INDEX: dict[str, str] = {scope.lower(): scope for scope in KNOWN_SCOPES}
#: Permissions the app registration lists per resource (what ``/.default`` expands to).
_STATIC_PERMISSIONS: dict[str, tuple[str, ...]] = {}
for _scope in KNOWN_SCOPES:
    if "/" in _scope:
        _STATIC_PERMISSIONS.setdefault(_scope.rsplit("/", 1)[0], ())
        _STATIC_PERMISSIONS[_scope.rsplit("/", 1)[0]] += (_scope,)


# Scopes


def resource_of(scope: str) -> str | None:
    """The resource a canonical scope belongs to (None for the OpenID Connect scopes)."""
    if scope in RESERVED_SCOPES or "/" not in scope:
        return None
    return scope.rsplit("/", 1)[0]


def short_scope(scope: str) -> str:
    """The scope's name inside its resource, as the ``scp`` claim lists it."""
    return scope.rsplit("/", 1)[-1]


def normalise_scopes(raw: str | Iterable[str]) -> list[str]:
    """Canonical scope names, in request order, without duplicates.

    Bare names (``Mail.Send``) belong to Microsoft Graph, as on the real platform;
    ``<resource>/.default`` expands to what the app registration lists for that resource.

    Raises:
        AadError: A scope or resource the tenant does not know.
    """
    items = raw.split() if isinstance(raw, str) else list(raw)
    result: list[str] = []
    for item in items:
        lowered = item.lower()
        if lowered in RESERVED_SCOPES:
            expanded = [lowered]
        elif "/" not in item:
            expanded = [_known(f"{GRAPH_RESOURCE}/{item}", item)]
        else:
            resource, name = item.rsplit("/", 1)
            known_resource = next(
                (r for r in _STATIC_PERMISSIONS if r.lower() == resource.lower()), None
            )
            if known_resource is None:
                raise AadError(
                    "invalid_resource",
                    500011,
                    f"The resource principal named {resource} was not found in the tenant. "
                    "This can happen if the application has not been installed by the "
                    "administrator of the tenant or consented to by any user in the tenant. "
                    "You might have sent your authentication request to the wrong tenant.",
                )
            if name == ".default":
                expanded = list(_STATIC_PERMISSIONS[known_resource])
            else:
                expanded = [_known(f"{known_resource}/{name}", item)]
        for scope in expanded:
            if scope not in result:
                result.append(scope)
    return result


def _known(candidate: str, raw: str) -> str:
    canonical = _SCOPE_INDEX.get(candidate.lower())
    if canonical is None:
        raise AadError(
            "invalid_scope",
            70011,
            "The provided request must include a 'scope' input parameter. The provided value "
            f"for the input parameter 'scope' is not valid. The scope '{raw}' does not exist.",
        )
    return canonical


def _first_resource(scopes: Sequence[str]) -> str | None:
    return next((r for r in (resource_of(s) for s in scopes) if r is not None), None)


# Errors


class AadError(Exception):
    """An error the platform answers with, in its JSON (or redirect) shape.

    Attributes:
        error: The OAuth error (``invalid_grant``, ``interaction_required``, ...).
        code: The AADSTS number.
        message: The description after ``AADSTSnnnnn:``.
        status: HTTP status for JSON answers.
        extra: Extra members (``suberror``, ``claims``, ``error_subcode``).
    """

    def __init__(
        self,
        error: str,
        code: int,
        message: str,
        *,
        status: int = 400,
        extra: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"AADSTS{code}: {message}")
        self.error = error
        self.code = code
        self.message = message
        self.status = status
        self.extra = dict(extra or {})

    def body(self, *, correlation_id: str, error_uri_base: str) -> dict[str, Any]:
        """The JSON body the token endpoint answers with."""
        trace_id = str(uuid.uuid4())
        timestamp = _timestamp()
        description = (
            f"AADSTS{self.code}: {self.message} Trace ID: {trace_id} "
            f"Correlation ID: {correlation_id} Timestamp: {timestamp}"
        )
        return {
            "error": self.error,
            "error_description": description,
            "error_codes": [self.code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": f"{error_uri_base}/error?code={self.code}",
            **self.extra,
        }


class _PageError(Exception):
    """An error shown on the sign-in page itself, never redirected (e.g. a bad redirect URI)."""

    def __init__(self, code: int, title: str, message: str, status: int = 400) -> None:
        super().__init__(f"AADSTS{code}: {message}")
        self.code = code
        self.title = title
        self.message = message
        self.status = status


def _is_loopback_redirect(uri: str) -> bool:
    # The public client's registered redirect URIs are http://localhost and http://127.0.0.1;
    # as on the real platform, any port is accepted for a loopback address.
    try:
        parts = urlsplit(uri)
        _ = parts.port
    except ValueError:
        return False
    return (
        parts.scheme == "http"
        and parts.hostname in ("localhost", "127.0.0.1")
        and not parts.fragment
        and not parts.username
        and not parts.password
    )


# State


@dataclass
class _SignIn:
    """One sign-in in progress on the pages (an authorize request or a device login)."""

    id: str
    kind: str  # "authorize" or "device"
    client_id: str
    scopes: list[str]
    created_at: float
    redirect_uri: str = ""
    response_mode: str = "form_post"
    state: str | None = None
    nonce: str | None = None
    code_challenge: str = ""
    prompt: str | None = None
    login_hint: str | None = None
    claims: str | None = None
    device_code: str | None = None
    username: str | None = None


@dataclass
class _CodeGrant:
    client_id: str
    redirect_uri: str
    username: str
    scopes: list[str]
    code_challenge: str
    nonce: str | None
    issued_at: float
    expires_at: float
    mfa: bool
    redeemed: bool = False


@dataclass
class _RefreshGrant:
    client_id: str
    username: str
    scopes: list[str]
    issued_at: float
    expires_at: float
    mfa: bool
    auth_time: float
    used: bool = False


@dataclass
class _DeviceGrant:
    client_id: str
    scopes: list[str]
    user_code: str
    issued_at: float
    expires_at: float
    interval: int
    mfa: bool
    status: str = "pending"  # pending, approved, declined, redeemed
    username: str | None = None
    decline_code: int = 65004
    decline_message: str = "User declined to consent to access the app."
    last_poll: float | None = None


@dataclass
class _Consent:
    scopes: set[str] = field(default_factory=set)


class IdentityPlatform:
    """Accounts' consents, codes and tokens of the sandbox tenant, and the signing key.

    Every method is safe to call from any thread (state is guarded by the world's lock).
    """

    def __init__(self, world: World) -> None:
        self.world = world
        self.signing_key = jwt.SigningKey()
        self.mfa_policy_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"mfa:{world.tenant_id}"))
        self._consents: dict[tuple[str, str], _Consent] = {}
        self._sign_ins: dict[str, _SignIn] = {}
        self._codes: dict[str, _CodeGrant] = {}
        self._refresh: dict[str, _RefreshGrant] = {}
        self._devices: dict[str, _DeviceGrant] = {}
        self._user_codes: dict[str, str] = {}
        self._valid_from: dict[str, float] = {}

    # Public API used by the other sandbox services and by tests

    def jwks(self) -> dict[str, Any]:
        """The JSON Web Key Set that verifies every token the sandbox signs."""
        return jwt.jwks([self.signing_key])

    def consented_scopes(self, username: str, client_id: str | None = None) -> set[str]:
        """The canonical scopes ``username`` consented to for ``client_id`` (the app's default).

        Includes ``offline_access``, ``openid`` and ``profile`` when consented.
        """
        key = (username.lower(), client_id or self.world.client_id)
        with self.world.lock:
            consent = self._consents.get(key)
            return set(consent.scopes) if consent else set()

    def grant_consent(
        self, username: str, scopes: Iterable[str], client_id: str | None = None
    ) -> None:
        """Record consent as if the user (or an administrator) had accepted ``scopes``."""
        canonical = normalise_scopes(list(scopes))
        key = (username.lower(), client_id or self.world.client_id)
        with self.world.lock:
            self._consents.setdefault(key, _Consent()).scopes.update(canonical)

    def verify_access_token(self, token: str, audience: str) -> dict[str, Any]:
        """Verify a bearer token for ``audience`` and return its claims.

        Checks the RS256 signature against the sandbox's key, the issuer, the audience, and
        ``exp``/``nbf`` on the world clock.

        Raises:
            TokenExpiredError: The token has expired.
            WrongAudienceError: The token is for another resource.
            InvalidSignatureError: Not signed by this sandbox (or tampered with).
            TokenError: Any other problem (malformed, wrong issuer, not yet valid).
        """
        return jwt.verify(
            token,
            self.jwks(),
            audience=audience,
            issuer=self.world.issuer,
            now=self.world.clock.now(),
        )

    def revoke(self, username: str) -> None:
        """Revoke every refresh token, pending code and consent of ``username``.

        Later refreshes answer AADSTS50173 (the grant was revoked); the user has to sign in
        and consent again.
        """
        lowered = username.lower()
        with self.world.lock:
            now = self.world.clock.now()
            self._valid_from[lowered] = now
            for key in [k for k in self._consents if k[0] == lowered]:
                del self._consents[key]
        logger.info("Sandbox: revoked the grants of %s", username)

    def issue_tokens(
        self,
        username: str,
        scopes: Iterable[str],
        *,
        client_id: str | None = None,
        consent: bool = True,
        lifetime_s: int | None = None,
    ) -> dict[str, Any]:
        """Mint a token response for ``username`` without any browser (for tests and seeding).

        Args:
            username: An account of the world.
            scopes: Requested scopes; the token is for the first resource among them.
            client_id: The client (default: the desktop app).
            consent: Record consent for ``scopes`` first.
            lifetime_s: Access token lifetime (default: the sandbox's token lifetime).

        Returns:
            The same JSON the token endpoint answers with.
        """
        account = self.world.get_account(username)
        if account is None:
            raise KeyError(username)
        client = client_id or self.world.client_id
        canonical = normalise_scopes(list(scopes))
        if consent:
            self.grant_consent(username, canonical, client)
        with self.world.lock:
            return self._token_response(
                account,
                client,
                canonical,
                nonce=None,
                mfa=True,
                want_client_info=True,
                lifetime_s=lifetime_s,
            )

    # Sign-in pages (called by the WSGI app)

    def begin_authorize(self, params: Mapping[str, str]) -> _SignIn:
        """Validate an authorize request and remember it for the pages.

        Raises:
            _PageError: The client or redirect URI is wrong (shown on the page).
            _RedirectError: Anything else wrong (sent back to the redirect URI).
        """
        client_id = params.get("client_id", "")
        if not client_id:
            raise _PageError(
                900144,
                "Sign-in request is incomplete",
                "The request body must contain the following parameter: 'client_id'.",
            )
        if client_id != self.world.client_id:
            raise _PageError(
                700016,
                "Application not found",
                f"Application with identifier '{client_id}' was not found in the directory "
                f"'{self.world.tenant_name}'. This can happen if the application has not been "
                "installed by the administrator of the tenant or consented to by any user in "
                "the tenant. You may have sent your authentication request to the wrong tenant.",
            )
        redirect_uri = params.get("redirect_uri", "")
        if not _is_loopback_redirect(redirect_uri):
            raise _PageError(
                50011,
                "Sorry, but we're having trouble signing you in",
                f"The redirect URI '{redirect_uri}' specified in the request does not match "
                f"the redirect URIs configured for the application '{client_id}'. Make sure "
                "the redirect URI sent in the request matches one added to your application "
                "in the Azure portal. Navigate to https://aka.ms/redirectUriMismatchError to "
                "learn more about how to fix this.",
            )

        response_mode = params.get("response_mode") or "query"
        state = params.get("state")
        target = _RedirectTarget(redirect_uri, response_mode, state)
        if response_mode not in ("query", "form_post", "fragment"):
            raise _RedirectError(
                target,
                AadError(
                    "invalid_request",
                    900002,
                    f"The value '{response_mode}' for 'response_mode' is not supported.",
                ),
            )
        response_type = params.get("response_type", "")
        if response_type != "code":
            raise _RedirectError(
                target,
                AadError(
                    "unsupported_response_type",
                    70005,
                    f"response_type '{response_type}' is not enabled for the application.",
                ),
            )
        raw_scope = params.get("scope", "")
        if not raw_scope.strip():
            raise _RedirectError(
                target,
                AadError(
                    "invalid_request",
                    900144,
                    "The request body must contain the following parameter: 'scope'.",
                ),
            )
        try:
            scopes = normalise_scopes(raw_scope)
        except AadError as error:
            raise _RedirectError(target, error) from None
        challenge = params.get("code_challenge", "")
        method = params.get("code_challenge_method") or "plain"
        if not challenge or method != "S256":
            # The sandbox enforces PKCE with S256 for its public client, stricter than the
            # real platform, so a client that forgets it fails here and not in production.
            raise _RedirectError(
                target,
                AadError(
                    "invalid_request",
                    9002325,
                    "Proof Key for Code Exchange is required for this application, with "
                    "code_challenge_method 'S256'.",
                ),
            )
        if not (43 <= len(challenge) <= 128):
            raise _RedirectError(
                target,
                AadError("invalid_request", 501491, "Invalid size of Code_Challenge parameter."),
            )
        claims = params.get("claims") or None
        if claims is not None:
            try:
                json.loads(claims)
            except ValueError:
                raise _RedirectError(
                    target,
                    AadError(
                        "invalid_request",
                        90010,
                        "The claims parameter is not valid JSON.",
                    ),
                ) from None
        prompt = params.get("prompt") or None
        if prompt == "none":
            # The sandbox keeps no browser session, so a silent browser sign-in always needs
            # the user, as it would with no cookie on the real platform.
            raise _RedirectError(
                target,
                AadError(
                    "login_required",
                    50058,
                    "A silent sign-in request was sent but no user is signed in.",
                ),
            )

        sign_in = _SignIn(
            id=secrets.token_urlsafe(24),
            kind="authorize",
            client_id=client_id,
            scopes=scopes,
            created_at=self.world.clock.now(),
            redirect_uri=redirect_uri,
            response_mode=response_mode,
            state=state,
            nonce=params.get("nonce") or None,
            code_challenge=challenge,
            prompt=prompt,
            login_hint=params.get("login_hint") or None,
            claims=claims,
        )
        self._store_sign_in(sign_in)
        return sign_in

    def begin_device_login(self, user_code: str) -> _SignIn | None:
        """Start the pages for a device login; None when the code is unknown or expired."""
        normalised = "".join(ch for ch in user_code.upper() if ch.isalnum())
        with self.world.lock:
            device_code = self._user_codes.get(normalised)
            grant = self._devices.get(device_code) if device_code else None
            if grant is None or grant.status != "pending":
                return None
            if grant.expires_at < self.world.clock.now():
                return None
            sign_in = _SignIn(
                id=secrets.token_urlsafe(24),
                kind="device",
                client_id=grant.client_id,
                scopes=list(grant.scopes),
                created_at=self.world.clock.now(),
                device_code=device_code,
            )
            self._store_sign_in(sign_in)
            return sign_in

    def sign_in(self, sign_in_id: str) -> _SignIn | None:
        """The sign-in in progress with that id, or None when unknown or too old."""
        with self.world.lock:
            sign_in = self._sign_ins.get(sign_in_id)
            if sign_in is None or sign_in.created_at + _SIGN_IN_TTL_S < self.world.clock.now():
                return None
            return sign_in

    def end_sign_in(self, sign_in: _SignIn) -> None:
        """Forget a finished sign-in (its pages can no longer be submitted)."""
        with self.world.lock:
            self._sign_ins.pop(sign_in.id, None)

    def missing_consent(self, sign_in: _SignIn, username: str) -> list[str]:
        """Requested scopes the user has not consented to yet."""
        consented = self.consented_scopes(username, sign_in.client_id)
        return [scope for scope in sign_in.scopes if scope not in consented]

    def record_consent(self, sign_in: _SignIn, username: str) -> None:
        """Record the user's consent for every scope of the sign-in (all resources)."""
        self.grant_consent(username, sign_in.scopes, sign_in.client_id)
        logger.info(
            "Sandbox: %s consented to %d scopes for %s",
            username,
            len(sign_in.scopes),
            self.world.client_name,
        )

    def issue_code(self, sign_in: _SignIn, username: str) -> str:
        """A one-time authorization code for a completed authorize sign-in."""
        now = self.world.clock.now()
        code = "0.AAAA" + secrets.token_urlsafe(64)
        with self.world.lock:
            self._codes[code] = _CodeGrant(
                client_id=sign_in.client_id,
                redirect_uri=sign_in.redirect_uri,
                username=username,
                scopes=list(sign_in.scopes),
                code_challenge=sign_in.code_challenge,
                nonce=sign_in.nonce,
                issued_at=now,
                expires_at=now + self.world.options.auth_code_lifetime_s,
                mfa=self._claims_satisfy_mfa(sign_in.claims),
            )
            self.world.remember_secret(code)
        return code

    def finish_device_login(
        self,
        sign_in: _SignIn,
        username: str | None,
        *,
        approved: bool,
        code: int = 65004,
        message: str = "User declined to consent to access the app.",
    ) -> None:
        """Approve or decline the device code behind a device login."""
        with self.world.lock:
            grant = self._devices.get(sign_in.device_code or "")
            if grant is None or grant.status != "pending":
                return
            grant.username = username
            if approved:
                grant.status = "approved"
            else:
                grant.status = "declined"
                grant.decline_code = code
                grant.decline_message = message

    # Token endpoint

    def token(self, form: Mapping[str, str]) -> dict[str, Any]:
        """Answer a token request; raises AadError on refusal."""
        grant_type = form.get("grant_type", "")
        if not grant_type:
            raise AadError(
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
            )
        client_id = self._check_client(form)
        if grant_type == "authorization_code":
            return self._redeem_code(form, client_id)
        if grant_type == "refresh_token":
            return self._redeem_refresh_token(form, client_id)
        if grant_type == DEVICE_CODE_GRANT:
            return self._redeem_device_code(form, client_id)
        raise AadError(
            "unsupported_grant_type",
            70003,
            f"The app requested an unsupported grant type '{grant_type}'.",
        )

    def device_authorization(self, form: Mapping[str, str]) -> dict[str, Any]:
        """Answer a device authorization request; raises AadError on refusal."""
        client_id = self._check_client(form)
        raw_scope = form.get("scope", "")
        if not raw_scope.strip():
            raise AadError(
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'scope'.",
            )
        scopes = normalise_scopes(raw_scope)
        options = self.world.options
        now = self.world.clock.now()
        device_code = "DAQABIQEAAA" + secrets.token_urlsafe(96)
        with self.world.lock:
            while True:
                user_code = "".join(
                    secrets.choice(_USER_CODE_ALPHABET) for _ in range(_USER_CODE_LENGTH)
                )
                if user_code not in self._user_codes:
                    break
            self._devices[device_code] = _DeviceGrant(
                client_id=client_id,
                scopes=scopes,
                user_code=user_code,
                issued_at=now,
                expires_at=now + options.device_code_lifetime_s,
                interval=options.device_code_interval_s,
                mfa=self._claims_satisfy_mfa(form.get("claims")),
            )
            self._user_codes[user_code] = device_code
            self.world.remember_secret(device_code)
        verification_uri = f"{self.world.http_base}/devicelogin"
        return {
            "user_code": user_code,
            "device_code": device_code,
            "verification_uri": verification_uri,
            "expires_in": options.device_code_lifetime_s,
            "interval": options.device_code_interval_s,
            "message": (
                f"To sign in, use a web browser to open the page {verification_uri} and enter "
                f"the code {user_code} to authenticate."
            ),
        }

    # Internals

    def _store_sign_in(self, sign_in: _SignIn) -> None:
        with self.world.lock:
            now = self.world.clock.now()
            for key in [
                k for k, v in self._sign_ins.items() if v.created_at + _SIGN_IN_TTL_S < now
            ]:
                del self._sign_ins[key]
            self._sign_ins[sign_in.id] = sign_in

    def _check_client(self, form: Mapping[str, str]) -> str:
        client_id = form.get("client_id", "")
        if not client_id:
            raise AadError(
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'client_id'.",
            )
        if client_id != self.world.client_id:
            raise AadError(
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory "
                f"'{self.world.tenant_name}'.",
            )
        if form.get("client_secret") or form.get("client_assertion"):
            raise AadError(
                "invalid_client",
                700025,
                "Client is public so neither 'client_assertion' nor 'client_secret' should be "
                "presented.",
                status=401,
            )
        return client_id

    def _claims_satisfy_mfa(self, claims: str | None) -> bool:
        # A client satisfies the conditional access challenge by sending back the claims the
        # platform asked for (the policy id under access_token.capolids).
        if not claims:
            return False
        try:
            parsed = json.loads(claims)
            values = parsed["access_token"]["capolids"]["values"]
        except (ValueError, KeyError, TypeError):
            return False
        return isinstance(values, list) and self.mfa_policy_id in values

    def _mfa_challenge(self, account: Account) -> AadError:
        claims = {"access_token": {"capolids": {"essential": True, "values": [self.mfa_policy_id]}}}
        return AadError(
            "interaction_required",
            50076,
            "Due to a configuration change made by your administrator, or because you moved "
            "to a new location, you must use multi-factor authentication to access "
            f"'{self.world.client_name}'. User: {account.username}.",
            extra={"suberror": "basic_action", "claims": json.dumps(claims)},
        )

    def _account_for_grant(self, username: str, issued_at: float) -> Account:
        account = self.world.get_account(username)
        if account is None:
            raise AadError(
                "invalid_grant",
                50034,
                f"The user account {username} does not exist in the "
                f"{self.world.tenant_domain} directory.",
            )
        valid_from = self._valid_from.get(username.lower())
        if valid_from is not None and issued_at < valid_from:
            raise AadError(
                "invalid_grant",
                50173,
                "The provided grant has expired due to it being revoked, a fresh auth token is "
                "needed. The user might have changed or reset their password. The grant was "
                f"issued on '{_iso(issued_at)}' and the TokensValidFrom date (before which "
                f"tokens are not valid) for this user is '{_iso(valid_from)}'.",
            )
        return account

    def _token_scopes(self, form: Mapping[str, str], fallback: Sequence[str]) -> list[str]:
        raw = form.get("scope", "")
        requested = normalise_scopes(raw) if raw.strip() else list(fallback)
        if _first_resource(requested) is None:
            # Only OpenID Connect scopes asked for: the token is for the grant's first resource.
            resource = _first_resource(fallback)
            requested = [s for s in fallback if resource_of(s) == resource] + requested
        return requested

    def _redeem_code(self, form: Mapping[str, str], client_id: str) -> dict[str, Any]:
        code = form.get("code", "")
        if not code:
            raise AadError(
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'code'.",
            )
        with self.world.lock:
            grant = self._codes.get(code)
            if grant is None:
                raise AadError(
                    "invalid_grant",
                    9002313,
                    "Invalid request. Request is malformed or invalid. The provided value for "
                    "the 'code' parameter is not valid.",
                )
            if grant.redeemed:
                raise AadError(
                    "invalid_grant",
                    54005,
                    "OAuth2 Authorization code was already redeemed, please retry with a new "
                    "valid code or use an existing refresh token.",
                )
            if grant.client_id != client_id:
                raise AadError(
                    "invalid_grant",
                    70000,
                    "The provided authorization code was issued to another application.",
                )
            if form.get("redirect_uri", "") != grant.redirect_uri:
                raise AadError(
                    "invalid_grant",
                    70000,
                    "The provided value for the input parameter 'redirect_uri' is not valid. "
                    "It must exactly match the redirect URI used to obtain the authorization "
                    "code.",
                )
            if grant.expires_at < self.world.clock.now():
                raise AadError(
                    "invalid_grant",
                    70008,
                    "The provided authorization code or refresh token has expired due to "
                    "inactivity. Send a new interactive authorization request for this user "
                    "and resource.",
                )
            verifier = form.get("code_verifier", "")
            if not verifier:
                raise AadError(
                    "invalid_grant",
                    50148,
                    "The code_verifier does not match the code_challenge supplied in the "
                    "authorization request for PKCE: the request has no code_verifier.",
                )
            expected = jwt.b64url_encode(
                hashlib.sha256(verifier.encode("ascii", "replace")).digest()
            )
            if not secrets.compare_digest(expected, grant.code_challenge):
                raise AadError(
                    "invalid_grant",
                    501481,
                    "The Code_Verifier does not match the code_challenge supplied in the "
                    "authorization request.",
                )
            # A code is spent by any attempt that got this far, as on the real platform.
            grant.redeemed = True
            account = self._account_for_grant(grant.username, grant.issued_at)
            if account.requires_mfa and not grant.mfa:
                raise self._mfa_challenge(account)
            scopes = self._token_scopes(form, grant.scopes)
            self._check_consented(account, client_id, scopes)
            response = self._token_response(
                account,
                client_id,
                scopes,
                nonce=grant.nonce,
                mfa=grant.mfa,
                want_client_info=form.get("client_info") == "1",
                auth_time=grant.issued_at,
            )
        logger.info(
            "Sandbox: issued tokens for %s (%s) from an authorization code",
            account.username,
            _first_resource(scopes),
        )
        return response

    def _redeem_refresh_token(self, form: Mapping[str, str], client_id: str) -> dict[str, Any]:
        token = form.get("refresh_token", "")
        if not token:
            raise AadError(
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'refresh_token'.",
            )
        with self.world.lock:
            grant = self._refresh.get(token)
            if grant is None or grant.client_id != client_id:
                raise AadError(
                    "invalid_grant",
                    9002313,
                    "Invalid request. Request is malformed or invalid. The provided value for "
                    "'refresh_token' is not valid.",
                )
            account = self._account_for_grant(grant.username, grant.issued_at)
            if grant.used:
                raise AadError(
                    "invalid_grant",
                    70000,
                    "The provided value for 'refresh_token' is not valid: it has already been "
                    "redeemed. Use the refresh token returned with it.",
                )
            now = self.world.clock.now()
            if grant.expires_at < now:
                raise AadError(
                    "invalid_grant",
                    700082,
                    "The refresh token has expired due to inactivity. The token was issued on "
                    f"{_iso(grant.issued_at)} and was inactive for "
                    f"{int(self.world.options.refresh_token_lifetime_s)} seconds.",
                )
            if account.requires_mfa and not grant.mfa:
                raise self._mfa_challenge(account)
            scopes = self._token_scopes(form, grant.scopes)
            self._check_consented(account, client_id, scopes)
            grant.used = True
            response = self._token_response(
                account,
                client_id,
                scopes,
                nonce=None,
                mfa=grant.mfa,
                want_client_info=form.get("client_info") == "1",
                auth_time=grant.auth_time,
            )
        logger.info(
            "Sandbox: refreshed tokens for %s (%s)", account.username, _first_resource(scopes)
        )
        return response

    def _redeem_device_code(self, form: Mapping[str, str], client_id: str) -> dict[str, Any]:
        device_code = form.get("device_code", "")
        with self.world.lock:
            grant = self._devices.get(device_code)
            if grant is None or grant.client_id != client_id:
                raise AadError(
                    "bad_verification_code",
                    70019,
                    "The device_code sent to the token endpoint was not recognised.",
                )
            now = self.world.clock.now()
            if grant.status == "redeemed":
                raise AadError(
                    "invalid_grant",
                    54005,
                    "The device code was already redeemed, please start a new device code flow "
                    "or use an existing refresh token.",
                )
            if grant.expires_at < now:
                raise AadError(
                    "expired_token",
                    70020,
                    "The provided value for the input parameter 'device_code' is not valid. "
                    "This device code has expired.",
                )
            if grant.status == "declined":
                raise AadError("authorization_declined", grant.decline_code, grant.decline_message)
            if grant.status == "pending":
                last, grant.last_poll = grant.last_poll, now
                minimum_gap = max(grant.interval - 1, grant.interval * 0.5)
                if last is not None and now - last < minimum_gap:
                    grant.interval += 5
                    raise AadError(
                        "slow_down",
                        70016,
                        "OAuth 2.0 device flow error. The client is polling too fast; wait "
                        f"{grant.interval} seconds between requests.",
                    )
                raise AadError(
                    "authorization_pending",
                    70016,
                    "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
                )
            grant.status = "redeemed"
            account = self._account_for_grant(grant.username or "", grant.issued_at)
            if account.requires_mfa and not grant.mfa:
                raise self._mfa_challenge(account)
            self._check_consented(account, client_id, grant.scopes)
            response = self._token_response(
                account,
                client_id,
                grant.scopes,
                nonce=None,
                mfa=grant.mfa,
                want_client_info=form.get("client_info") == "1",
            )
        logger.info("Sandbox: issued tokens for %s from a device code", account.username)
        return response

    def _check_consented(self, account: Account, client_id: str, scopes: Sequence[str]) -> None:
        resource = _first_resource(scopes)
        if resource is None:
            return
        consented = self.consented_scopes(account.username, client_id)
        missing = [s for s in scopes if resource_of(s) == resource and s not in consented]
        if missing:
            raise AadError(
                "invalid_grant",
                65001,
                f"The user or administrator has not consented to use the application with ID "
                f"'{client_id}' named '{self.world.client_name}'. Send an interactive "
                "authorization request for this user and resource.",
                extra={"suberror": "consent_required"},
            )

    def _token_response(
        self,
        account: Account,
        client_id: str,
        scopes: Sequence[str],
        *,
        nonce: str | None,
        mfa: bool,
        want_client_info: bool,
        auth_time: float | None = None,
        lifetime_s: int | None = None,
    ) -> dict[str, Any]:
        """Mint the tokens of one successful grant (caller holds the lock).

        ``auth_time`` is when the user last signed in interactively (None: now).
        """
        world = self.world
        options = world.options
        now = int(world.clock.now())
        signed_in_at = now if auth_time is None else int(auth_time)
        lifetime = options.token_lifetime_s if lifetime_s is None else lifetime_s
        resource = _first_resource(scopes) or GRAPH_RESOURCE
        consented = self.consented_scopes(account.username, client_id)
        granted = sorted({s for s in consented | set(scopes) if resource_of(s) == resource})
        # Echo requested scopes as sent so MSAL's cache finds them again on a silent call.
        response_scope = [s for s in scopes if resource_of(s) == resource]
        response_scope += [s for s in granted if s not in response_scope]
        sub = jwt.b64url_encode(hashlib.sha256(f"{account.oid}:{client_id}".encode()).digest())
        common = {
            "iss": world.issuer,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "name": account.display_name,
            "oid": account.oid,
            "preferred_username": account.username,
            "sub": sub,
            "tid": world.tenant_id,
            "ver": "2.0",
        }
        access_claims = {
            "aud": resource,
            **common,
            "azp": client_id,
            "azpacr": "0",
            "scp": " ".join(short_scope(s) for s in granted),
            "amr": ["pwd", "mfa"] if mfa else ["pwd"],
            "uti": secrets.token_urlsafe(16),
            "idtyp": "user",
        }
        access_token = self.signing_key.sign(access_claims)
        response: dict[str, Any] = {
            "token_type": "Bearer",
            "scope": " ".join(response_scope),
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": access_token,
        }
        world.remember_secret(access_token)
        if "openid" in scopes or "profile" in scopes:
            id_claims: dict[str, Any] = {"aud": client_id, **common}
            id_claims["exp"] = now + options.token_lifetime_s
            id_claims["auth_time"] = signed_in_at
            id_claims["uti"] = secrets.token_urlsafe(16)
            if "email" in scopes:
                id_claims["email"] = account.username
            if nonce is not None:
                id_claims["nonce"] = nonce
            id_token = self.signing_key.sign(id_claims)
            response["id_token"] = id_token
            world.remember_secret(id_token)
        if OFFLINE_ACCESS in scopes:
            refresh_token = "1.AAAA" + secrets.token_urlsafe(96)
            self._refresh[refresh_token] = _RefreshGrant(
                client_id=client_id,
                username=account.username,
                scopes=list(scopes),
                issued_at=world.clock.now(),
                expires_at=world.clock.now() + options.refresh_token_lifetime_s,
                mfa=mfa,
                auth_time=signed_in_at,
            )
            response["refresh_token"] = refresh_token
            response["refresh_token_expires_in"] = options.refresh_token_lifetime_s
            world.remember_secret(refresh_token)
        if want_client_info:
            info = {"uid": account.oid, "utid": world.tenant_id}
            response["client_info"] = jwt.b64url_encode(json.dumps(info).encode())
        return response


def _timestamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


# Redirects back to the application


@dataclass(frozen=True)
class _RedirectTarget:
    redirect_uri: str
    response_mode: str
    state: str | None


class _RedirectError(Exception):
    def __init__(self, target: _RedirectTarget, error: AadError) -> None:
        super().__init__(str(error))
        self.target = target
        self.error = error


def _error_fields(error: AadError, correlation_id: str) -> dict[str, str]:
    trace_id = str(uuid.uuid4())
    timestamp = _timestamp()
    fields = {
        "error": error.error,
        "error_description": (
            f"AADSTS{error.code}: {error.message} Trace ID: {trace_id} "
            f"Correlation ID: {correlation_id} Timestamp: {timestamp}"
        ),
    }
    fields.update(error.extra)
    return fields


def _redirect_response(target: _RedirectTarget, fields: Mapping[str, str]) -> Response:
    values = dict(fields)
    if target.state is not None:
        values["state"] = target.state
    if target.response_mode == "form_post":
        return _form_post_page(target.redirect_uri, values)
    separator = (
        "#" if target.response_mode == "fragment" else ("&" if "?" in target.redirect_uri else "?")
    )
    response = Response(status=302)
    response.headers["Location"] = target.redirect_uri + separator + urlencode(values)
    response.headers["Cache-Control"] = "no-store"
    return response


# Pages

_CSS = """
:root { color-scheme: light dark; --bg: #f3f4f6; --card: #ffffff; --text: #1b1b1b;
  --muted: #5f6368; --line: #d9dce1; --accent: #0f6cbd; --accent-text: #ffffff;
  --badge: #fde7b0; --badge-text: #5c3b00; --danger: #b3261e; }
@media (prefers-color-scheme: dark) {
  :root { --bg: #1f1f1f; --card: #2b2b2b; --text: #f0f0f0; --muted: #b4b4b4;
    --line: #444; --accent: #4aa3ff; --accent-text: #0b1a2a; --badge: #5c4300;
    --badge-text: #ffe7a8; --danger: #ff8a80; } }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--text);
  font: 15px/1.5 "Segoe UI", system-ui, -apple-system, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 460px; margin: 48px auto; padding: 0 16px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  padding: 28px 32px; box-shadow: 0 2px 8px rgba(0,0,0,.08); }
.brand { display: flex; align-items: center; gap: 8px; font-weight: 600; color: var(--muted);
  margin-bottom: 16px; }
.badge { background: var(--badge); color: var(--badge-text); border-radius: 4px;
  padding: 1px 8px; font-size: 12px; font-weight: 700; letter-spacing: .04em;
  text-transform: uppercase; }
h1 { font-size: 22px; font-weight: 600; margin: 0 0 8px; }
p { margin: 8px 0; }
.muted { color: var(--muted); font-size: 13px; }
.accounts { list-style: none; margin: 16px 0; padding: 0; }
.accounts li { border: 1px solid var(--line); border-radius: 6px; margin: 8px 0; }
.accounts label { display: flex; gap: 12px; align-items: center; padding: 10px 12px;
  cursor: pointer; }
.accounts .name { font-weight: 600; display: block; }
.accounts .user { color: var(--muted); font-size: 13px; }
ul.scopes { margin: 12px 0 16px; padding-left: 20px; }
ul.scopes li { margin: 4px 0; }
.actions { display: flex; gap: 12px; justify-content: flex-end; margin-top: 20px;
  flex-wrap: wrap; }
button, .button { font: inherit; border-radius: 4px; padding: 7px 20px; cursor: pointer;
  border: 1px solid var(--line); background: transparent; color: var(--text);
  text-decoration: none; }
button.primary { background: var(--accent); color: var(--accent-text);
  border-color: var(--accent); }
button:focus-visible, input:focus-visible, .button:focus-visible { outline: 3px solid var(--accent);
  outline-offset: 2px; }
input[type=text] { font: inherit; width: 100%; padding: 8px 10px; border-radius: 4px;
  border: 1px solid var(--line); background: var(--card); color: var(--text);
  letter-spacing: .15em; text-transform: uppercase; }
.error { border-left: 4px solid var(--danger); padding-left: 12px; }
code { font-family: Consolas, "Cascadia Mono", monospace; font-size: 13px; }
footer { text-align: center; margin-top: 16px; }
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _page(title: str, body: str, *, status: int = 200, script: str = "") -> Response:
    document = f"""<!DOCTYPE html>
<html lang="en-GB">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{_e(title)} - Sandbox sign-in</title>
<style>{_CSS}</style>
</head>
<body>
<main>
<div class="card">
<div class="brand"><span>Microsoft identity platform</span><span class="badge">Sandbox</span></div>
{body}
</div>
<footer class="muted">Qargo Desktop sandbox &middot; no real account is used or needed</footer>
</main>
{script}
</body>
</html>
"""
    response = Response(document, status=status, mimetype="text/html")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    return response


def _hidden(name: str, value: str) -> str:
    return f'<input type="hidden" name="{_e(name)}" value="{_e(value)}">'


def _form_post_page(action: str, fields: Mapping[str, str]) -> Response:
    inputs = "\n".join(_hidden(name, value) for name, value in fields.items())
    is_error = "error" in fields
    heading = "Returning to the application" if not is_error else "Sign-in did not complete"
    body = f"""
<h1>{_e(heading)}</h1>
<p>Your browser is taking you back to the application. If nothing happens, press Continue.</p>
<form method="post" action="{_e(action)}" id="form_post">
{inputs}
<div class="actions"><button class="primary" type="submit">Continue</button></div>
</form>
"""
    # The script only saves a click; the visible button does the same without JavaScript.
    script = '<script>document.getElementById("form_post").submit();</script>'
    return _page(heading, body, script=script)


def _error_page(
    code: int, title: str, message: str, *, status: int = 400, extra: str = ""
) -> Response:
    body = f"""
<h1>{_e(title)}</h1>
<div class="error"><p><strong>AADSTS{code}:</strong> {_e(message)}</p></div>
{extra}
<p class="muted">Error code AADSTS{code} &middot; {_e(_timestamp())}</p>
"""
    return _page(title, body, status=status)


def _scope_words(scopes: Sequence[str]) -> list[str]:
    words: list[str] = []
    for scope in scopes:
        text = KNOWN_SCOPES.get(scope, scope)
        if text not in words:
            words.append(text)
    return words


class _App:
    """The WSGI app: routing, request parsing and pages."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.platform = world.identity

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        request = Request(environ)
        request.max_content_length = 1_000_000
        try:
            response = self._route(request)
        except _PageError as error:
            response = _error_page(error.code, error.title, error.message, status=error.status)
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response(environ, start_response)

    # Routing

    def _tenant_ok(self, segment: str) -> bool:
        return segment.lower() in (
            self.world.tenant_id,
            self.world.tenant_domain,
            "organizations",
            "common",
        )

    def _route(self, request: Request) -> Response:
        path = request.path
        parts = [p for p in path.split("/") if p]

        if not parts:
            return self._home()
        if parts == ["devicelogin"]:
            return self._device_login(request)
        if parts == ["error"]:
            return self._error_lookup(request)
        if len(parts) >= 2 and self._tenant_ok(parts[0]):
            return self._tenant_route(request, parts[0], parts[1:])
        if len(parts) >= 2 and parts[1] in ("oauth2", "v2.0", "discovery"):
            error = AadError(
                "invalid_tenant",
                90002,
                f"Tenant '{parts[0]}' not found. Check to make sure you have the correct "
                "tenant ID and are signing into the correct cloud.",
            )
            if parts[-1] in ("authorize", "logout"):
                return _error_page(error.code, "Tenant not found", error.message)
            return self._json_error(request, error)
        return _json(404, {"error": "not_found", "path": path})

    def _tenant_route(self, request: Request, tenant: str, rest: list[str]) -> Response:
        if rest == ["oauth2", "v2.0", "authorize"]:
            return self._authorize(request, tenant)
        if rest == ["oauth2", "v2.0", "logout"]:
            return self._logout(request)
        if request.scheme != "https":
            # Tokens and keys are only served over TLS, as on the real platform.
            return _json(404, {"error": "not_found", "detail": "Use the HTTPS port."})
        if rest == ["v2.0", ".well-known", "openid-configuration"]:
            return _json(200, self._discovery(tenant))
        if rest == ["discovery", "v2.0", "keys"]:
            return _json(200, self.platform.jwks())
        if rest == ["oauth2", "v2.0", "token"]:
            return self._token(request)
        if rest == ["oauth2", "v2.0", "devicecode"]:
            return self._devicecode(request)
        return _json(404, {"error": "not_found", "path": request.path})

    def _discovery(self, tenant: str) -> dict[str, Any]:
        world = self.world
        https = f"{world.https_base}/{tenant}"
        http = f"{world.http_base}/{tenant}"
        return {
            "token_endpoint": f"{https}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic",
            ],
            "jwks_uri": f"{https}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": world.issuer,
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": f"{world.https_base}/graph/oidc/userinfo",
            "authorization_endpoint": f"{http}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{https}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{http}/oauth2/v2.0/logout",
            "claims_supported": [
                "sub",
                "iss",
                "cloud_instance_name",
                "cloud_instance_host_name",
                "cloud_graph_host_name",
                "msgraph_host",
                "aud",
                "exp",
                "iat",
                "auth_time",
                "acr",
                "nonce",
                "preferred_username",
                "name",
                "tid",
                "ver",
                "at_hash",
                "c_hash",
                "email",
            ],
            "code_challenge_methods_supported": ["S256"],
            "grant_types_supported": [
                "authorization_code",
                "refresh_token",
                DEVICE_CODE_GRANT,
            ],
            "kerberos_endpoint": f"{https}/kerberos",
            "tenant_region_scope": "EU",
            "cloud_instance_name": "sandbox.qargo.example",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": urlsplit(world.https_base).netloc,
            "rbac_url": "https://pas.windows.net",
        }

    # Token and device code endpoints (JSON)

    def _correlation_id(self, request: Request) -> str:
        supplied = request.headers.get("client-request-id", "")
        try:
            return str(uuid.UUID(supplied))
        except ValueError:
            return str(uuid.uuid4())

    def _json_error(self, request: Request, error: AadError) -> Response:
        correlation_id = self._correlation_id(request)
        body = error.body(correlation_id=correlation_id, error_uri_base=self.world.https_base)
        response = _json(error.status, body)
        response.headers["client-request-id"] = correlation_id
        response.headers["x-ms-request-id"] = body["trace_id"]
        if error.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer error="invalid_client"'
        return response

    def _form(self, request: Request) -> dict[str, str]:
        if request.method != "POST":
            raise AadError(
                "invalid_request",
                900561,
                f"The endpoint only accepts POST, OPTIONS requests. Received a {request.method} "
                "request.",
            )
        form: MultiDict[str, str] = request.form
        return {key: form.get(key, "") for key in form}

    def _token(self, request: Request) -> Response:
        try:
            answer = self.platform.token(self._form(request))
        except AadError as error:
            if error.error not in ("authorization_pending", "slow_down"):
                logger.info("Sandbox: token request refused with AADSTS%s", error.code)
            return self._json_error(request, error)
        response = _json(200, answer)
        response.headers["client-request-id"] = self._correlation_id(request)
        return response

    def _devicecode(self, request: Request) -> Response:
        try:
            answer = self.platform.device_authorization(self._form(request))
        except AadError as error:
            return self._json_error(request, error)
        return _json(200, answer)

    # Pages

    def _home(self) -> Response:
        world = self.world
        rows = "".join(
            f"<li><strong>{_e(a.display_name)}</strong> <code>{_e(a.username)}</code> "
            f"<span class='muted'>{_e(a.role)}</span></li>"
            for a in world.account_list()
        )
        body = f"""
<h1>{_e(world.tenant_name)} sandbox</h1>
<p>This is the local sandbox of Qargo Desktop: a stand-in for Microsoft sign-in, the Qargo
organisation API and Microsoft Graph mail. Nothing here reaches the internet.</p>
<p class="muted">Authority: <code>{_e(world.authority)}</code></p>
<p>Accounts you can sign in as:</p>
<ul class="scopes">{rows}</ul>
<p><a class="button" href="/_sandbox/ca.pem">Download the sandbox CA certificate</a></p>
"""
        return _page("Sandbox", body)

    def _error_lookup(self, request: Request) -> Response:
        code = request.args.get("code", "")
        body = f"""
<h1>Error AADSTS{_e(code)}</h1>
<p>This sandbox error code follows the Microsoft identity platform's numbering. The full
message was returned with the error.</p>
"""
        return _page(f"AADSTS{code}", body)

    def _logout(self, request: Request) -> Response:
        target = request.args.get("post_logout_redirect_uri", "")
        back = ""
        if target and _is_loopback_redirect(target):
            back = (
                f'<div class="actions"><a class="button" href="{_e(target)}">'
                "Return to the application</a></div>"
            )
        body = f"""
<h1>You signed out of your account</h1>
<p>It's a good idea to close all browser windows.</p>
{back}
"""
        return _page("Signed out", body)

    def _authorize(self, request: Request, tenant: str) -> Response:
        action = f"/{tenant}/oauth2/v2.0/authorize"
        if request.method == "GET":
            params = {key: request.args.get(key, "") for key in request.args}
            try:
                sign_in = self.platform.begin_authorize(params)
            except _RedirectError as error:
                fields = _error_fields(error.error, self._correlation_id(request))
                return _redirect_response(error.target, fields)
            return self._start_pages(sign_in, action)
        if request.method == "POST":
            return self._continue(request, action)
        return _json(405, {"error": "method_not_allowed"})

    def _device_login(self, request: Request) -> Response:
        action = "/devicelogin"
        if request.method == "GET":
            return self._device_code_page(request.args.get("otc", ""))
        if request.method != "POST":
            return _json(405, {"error": "method_not_allowed"})
        if request.form.get("step") != "code":
            return self._continue(request, action)
        user_code = request.form.get("user_code", "")
        sign_in = self.platform.begin_device_login(user_code)
        if sign_in is None:
            return self._device_code_page(
                user_code,
                error="That code wasn't recognised or has expired. Check the code on your "
                "device and try again.",
            )
        return self._start_pages(sign_in, action)

    def _device_code_page(self, prefill: str, *, error: str = "") -> Response:
        message = f'<div class="error"><p>{_e(error)}</p></div>' if error else ""
        body = f"""
<h1>Enter code</h1>
<p>Enter the code displayed on your app or device.</p>
{message}
<form method="post" action="/devicelogin">
{_hidden("step", "code")}
<p><label for="user_code" class="muted">Code</label>
<input type="text" id="user_code" name="user_code" value="{_e(prefill)}" autocomplete="off"
 autofocus required></p>
<div class="actions"><button class="primary" type="submit">Next</button></div>
</form>
"""
        return _page("Enter code", body, status=400 if error else 200)

    def _start_pages(self, sign_in: _SignIn, action: str) -> Response:
        hint = self.world.get_account(sign_in.login_hint) if sign_in.login_hint else None
        if hint is not None and sign_in.kind == "authorize" and sign_in.prompt != "select_account":
            # As on the real platform, a known login_hint skips the account picker unless the
            # client asked for it with prompt=select_account.
            sign_in.username = hint.username
            return self._after_account(sign_in, action, hint)
        return self._picker_page(sign_in, action, hint)

    def _continue(self, request: Request, action: str) -> Response:
        form = request.form
        sign_in = self.platform.sign_in(form.get("sign_in", ""))
        if sign_in is None:
            return _error_page(
                90016,
                "This sign-in has expired",
                "This sign-in request is no longer valid. Go back to the application and "
                "start again.",
            )
        step = form.get("step", "")
        correlation_id = self._correlation_id(request)

        if step == "account":
            account = self.world.get_account(form.get("account", ""))
            if account is None:
                return self._picker_page(sign_in, action, None, error="Pick one of the accounts.")
            sign_in.username = account.username
            return self._after_account(sign_in, action, account)

        if step == "pick_again":
            sign_in.username = None
            return self._picker_page(sign_in, action, None)

        account = self.world.get_account(sign_in.username or "")
        if account is None:
            return self._picker_page(sign_in, action, None)

        if not account.in_tenant and step != "return":
            # Only the error page's own buttons lead anywhere for an account from elsewhere.
            return self._after_account(sign_in, action, account)

        if step == "consent":
            if form.get("decision") == "accept":
                if account.needs_admin_consent and self._unconsented_resource_scopes(
                    sign_in, account
                ):
                    return self._admin_approval_page(sign_in, action, account)
                self.platform.record_consent(sign_in, account.username)
                return self._complete(sign_in, account)
            return self._fail(
                sign_in,
                account,
                AadError(
                    "access_denied",
                    65004,
                    "User declined to consent to access the app.",
                    extra={"error_subcode": "cancel"},
                ),
                correlation_id,
            )

        if step == "return":
            if not account.in_tenant:
                error = self._not_in_tenant_error(account)
            else:
                error = self._admin_consent_error()
            return self._fail(sign_in, account, error, correlation_id)

        return self._picker_page(sign_in, action, account)

    def _unconsented_resource_scopes(self, sign_in: _SignIn, account: Account) -> list[str]:
        missing = self.platform.missing_consent(sign_in, account.username)
        return [s for s in missing if resource_of(s) is not None]

    def _after_account(self, sign_in: _SignIn, action: str, account: Account) -> Response:
        if not account.in_tenant:
            error = self._not_in_tenant_error(account)
            buttons = f"""
<form method="post" action="{_e(action)}">
{_hidden("sign_in", sign_in.id)}
<div class="actions">
<button type="submit" name="step" value="pick_again">Use another account</button>
<button class="primary" type="submit" name="step" value="return">Return to the application</button>
</div>
</form>
"""
            return _error_page(
                error.code, "Sorry, but we're having trouble signing you in", error.message,
                extra=buttons,
            )  # fmt: skip
        missing = self.platform.missing_consent(sign_in, account.username)
        if account.needs_admin_consent and [s for s in missing if resource_of(s) is not None]:
            return self._admin_approval_page(sign_in, action, account)
        if sign_in.kind == "device" or missing or sign_in.prompt == "consent":
            return self._consent_page(sign_in, action, account)
        return self._complete(sign_in, account)

    def _not_in_tenant_error(self, account: Account) -> AadError:
        domain = account.username.rsplit("@", 1)[-1]
        return AadError(
            "access_denied",
            50020,
            f"User account '{account.username}' from identity provider "
            f"'https://sts.{domain}/' does not exist in tenant '{self.world.tenant_name}' and "
            f"cannot access the application '{self.world.client_id}'"
            f"({self.world.client_name}) in that tenant. The account needs to be added as an "
            "external user in the tenant first. Sign out and sign in again with a different "
            "account.",
        )

    def _admin_consent_error(self) -> AadError:
        return AadError(
            "access_denied",
            90094,
            "The grant requires admin permission. An administrator of "
            f"{self.world.tenant_name} must consent to '{self.world.client_name}' first.",
            extra={"suberror": "consent_required"},
        )

    def _complete(self, sign_in: _SignIn, account: Account) -> Response:
        self.platform.end_sign_in(sign_in)
        if sign_in.kind == "device":
            self.platform.finish_device_login(sign_in, account.username, approved=True)
            body = f"""
<h1>You're signed in</h1>
<p>You have signed in to <strong>{_e(self.world.client_name)}</strong> on your device as
<strong>{_e(account.username)}</strong>. You may now close this window.</p>
"""
            return _page("Signed in", body)
        code = self.platform.issue_code(sign_in, account.username)
        logger.info("Sandbox: %s signed in to %s", account.username, self.world.client_name)
        target = _RedirectTarget(sign_in.redirect_uri, sign_in.response_mode, sign_in.state)
        return _redirect_response(target, {"code": code, "session_state": str(uuid.uuid4())})

    def _fail(
        self, sign_in: _SignIn, account: Account, error: AadError, correlation_id: str
    ) -> Response:
        self.platform.end_sign_in(sign_in)
        logger.info("Sandbox: sign-in of %s ended with AADSTS%s", account.username, error.code)
        if sign_in.kind == "device":
            self.platform.finish_device_login(
                sign_in, account.username, approved=False, code=error.code, message=error.message
            )
            body = f"""
<h1>Sign-in cancelled</h1>
<p>You did not sign in to <strong>{_e(self.world.client_name)}</strong> on your device.
You may now close this window.</p>
<p class="muted">AADSTS{error.code}: {_e(error.message)}</p>
"""
            return _page("Sign-in cancelled", body)
        target = _RedirectTarget(sign_in.redirect_uri, sign_in.response_mode, sign_in.state)
        return _redirect_response(target, _error_fields(error, correlation_id))

    def _picker_page(
        self, sign_in: _SignIn, action: str, preselected: Account | None, *, error: str = ""
    ) -> Response:
        world = self.world
        hint = sign_in.login_hint
        chosen = preselected.username.lower() if preselected else (hint or "").lower()
        items = []
        for index, account in enumerate(world.account_list()):
            checked = " checked" if account.username.lower() == chosen else ""
            items.append(
                f'<li><label for="account-{index}">'
                f'<input type="radio" id="account-{index}" name="account" '
                f'value="{_e(account.username)}"{checked} required>'
                f'<span><span class="name">{_e(account.display_name)}</span>'
                f'<span class="user">{_e(account.username)}</span></span></label></li>'
            )
        notes = ""
        if hint and preselected is None and world.get_account(hint) is None:
            notes = (
                f'<div class="error"><p>There is no sandbox account {_e(hint)}. Pick one of '
                "these.</p></div>"
            )
        if error:
            notes += f'<div class="error"><p>{_e(error)}</p></div>'
        body = f"""
<h1>Pick an account</h1>
<p>to continue to <strong>{_e(world.client_name)}</strong></p>
{notes}
<form method="post" action="{_e(action)}">
{_hidden("sign_in", sign_in.id)}
<ul class="accounts">{"".join(items)}</ul>
<div class="actions">
<button class="primary" type="submit" name="step" value="account">Next</button>
</div>
</form>
<p class="muted">Sandbox accounts need no password.</p>
"""
        return _page("Pick an account", body)

    def _consent_page(self, sign_in: _SignIn, action: str, account: Account) -> Response:
        world = self.world
        words = "".join(f"<li>{_e(text)}</li>" for text in _scope_words(sign_in.scopes))
        heading = (
            "Are you trying to sign in to " + world.client_name + "?"
            if sign_in.kind == "device"
            else "Permissions requested"
        )
        body = f"""
<h1>{_e(heading)}</h1>
<p class="muted">Signed in as <strong>{_e(account.display_name)}</strong>
({_e(account.username)})</p>
<p><strong>{_e(world.client_name)}</strong> <span class="badge">Sandbox</span> would like to:</p>
<ul class="scopes">{words}</ul>
<p class="muted">Accepting lets this app use your data as described. You can change these
permissions later. The app's publisher has not been verified: this is the local sandbox.</p>
<form method="post" action="{_e(action)}">
{_hidden("sign_in", sign_in.id)}
{_hidden("step", "consent")}
<div class="actions">
<button type="submit" name="decision" value="decline">Decline</button>
<button class="primary" type="submit" name="decision" value="accept">Accept</button>
</div>
</form>
<form method="post" action="{_e(action)}">
{_hidden("sign_in", sign_in.id)}
<p class="muted">Not you?
<button type="submit" name="step" value="pick_again">Use another account</button></p>
</form>
"""
        return _page(heading, body)

    def _admin_approval_page(self, sign_in: _SignIn, action: str, account: Account) -> Response:
        world = self.world
        error = self._admin_consent_error()
        body = f"""
<h1>Need admin approval</h1>
<p><strong>{_e(world.client_name)}</strong> needs permission to access resources in your
organisation that only an admin can grant. Ask an admin of {_e(world.tenant_name)} to grant
permission to this app before you can use it.</p>
<p class="muted">Signed in as {_e(account.username)} &middot; AADSTS{error.code}</p>
<form method="post" action="{_e(action)}">
{_hidden("sign_in", sign_in.id)}
<div class="actions">
<button type="submit" name="step" value="pick_again">Use another account</button>
<button class="primary" type="submit" name="step" value="return">
Return to the application without granting consent</button>
</div>
</form>
"""
        return _page("Need admin approval", body)


def _json(status: int, body: Any) -> Response:
    response = Response(json.dumps(body), status=status, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


def make_app(world: World) -> Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]:
    """The identity platform's WSGI app for ``world`` (mounted at the root by the server)."""
    return _App(world)
