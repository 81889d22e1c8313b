"""The error taxonomy: every failure the app can meet, turned into plain advice.

Services speak in codes (AADSTS numbers from the identity platform, Graph error codes,
the organisation API's problem ``code``s, network failures). People need a sentence that
says what happened and what to do next. :data:`ADVICE` is the one table that maps
codes to advice; ``docs/errors.md`` is written from it for support staff, and a test
keeps the two in step.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass


class NextStep(enum.Enum):
    """The single most useful thing to do after an error."""

    RETRY = "retry"
    RETRY_LATER = "retry_later"
    SIGN_IN = "sign_in"
    REAUTHORISE = "reauthorise"
    RESET = "reset"
    SWITCH_ACCOUNT = "switch_account"
    ASK_TENANT_ADMIN = "ask_tenant_admin"
    CHECK_NETWORK = "check_network"
    CHECK_SETTINGS = "check_settings"
    REFRESH = "refresh"
    CONTACT_SUPPORT = "contact_support"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Advice:
    """What to tell a person about an error."""

    summary: str
    next_step: NextStep
    detail: str = ""


# One table for every code the app knows. Keys are namespaced: "aadsts:<number>",
# "oauth:<error>", "api:<code>", "graph:<code>", "net:<kind>", "app:<kind>".
ADVICE: dict[str, Advice] = {
    # Identity platform: AADSTS numbers.
    "aadsts:65004": Advice(
        "The person declined to give Qargo access to the mailbox.",
        NextStep.RETRY,
        "Try again and choose Accept on the Microsoft consent page.",
    ),
    "aadsts:65001": Advice(
        "Your organisation requires an administrator to approve Qargo first.",
        NextStep.ASK_TENANT_ADMIN,
        "Ask a Microsoft 365 administrator of the tenant to grant admin consent to the "
        "Qargo app, then try again.",
    ),
    "aadsts:90094": Advice(
        "Your organisation requires an administrator to approve Qargo first.",
        NextStep.ASK_TENANT_ADMIN,
        "Ask a Microsoft 365 administrator of the tenant to grant admin consent to the "
        "Qargo app, then try again.",
    ),
    "aadsts:50011": Advice(
        "The app registration does not allow this app's sign-in address (redirect URI).",
        NextStep.CHECK_SETTINGS,
        "The app registration must list http://localhost as a redirect URI for "
        "mobile and desktop applications. Contact Qargo Support.",
    ),
    "aadsts:50020": Advice(
        "The account that signed in does not belong to your organisation's tenant.",
        NextStep.SWITCH_ACCOUNT,
        "Sign in with an account of your organisation (sign out in the browser, or use a "
        "private window).",
    ),
    "aadsts:50076": Advice(
        "Microsoft requires multi-factor authentication for this account.",
        NextStep.RETRY,
        "Try again and complete the extra verification in the browser.",
    ),
    "aadsts:50079": Advice(
        "Microsoft requires this account to register for multi-factor authentication.",
        NextStep.RETRY,
        "Try again and complete the registration in the browser.",
    ),
    "aadsts:53003": Advice(
        "A conditional access policy of your organisation blocked the sign-in.",
        NextStep.ASK_TENANT_ADMIN,
        "Ask your Microsoft 365 administrator which policy applies to this device or location.",
    ),
    "aadsts:50173": Advice(
        "The mailbox's grant was revoked (often after a password change).",
        NextStep.REAUTHORISE,
        "Reauthorise the mailbox.",
    ),
    "aadsts:700082": Advice(
        "The sign-in expired after a long time without use.",
        NextStep.SIGN_IN,
        "Sign in again.",
    ),
    "aadsts:700084": Advice(
        "The sign-in expired.",
        NextStep.SIGN_IN,
        "Sign in again.",
    ),
    "aadsts:54005": Advice(
        "The sign-in code was already used.",
        NextStep.RETRY,
        "Start the sign-in again.",
    ),
    "aadsts:50148": Advice(
        "The sign-in could not be verified (PKCE check failed).",
        NextStep.RETRY,
        "Start the sign-in again. If it happens again, contact Qargo Support.",
    ),
    "aadsts:501481": Advice(
        "The sign-in could not be verified (PKCE check failed).",
        NextStep.RETRY,
        "Start the sign-in again. If it happens again, contact Qargo Support.",
    ),
    "aadsts:700016": Advice(
        "The Qargo app is not known in this tenant.",
        NextStep.CHECK_SETTINGS,
        "Check the client id and authority in the settings, or contact Qargo Support.",
    ),
    # Identity platform: OAuth error names when no AADSTS code came with them.
    "oauth:access_denied": Advice(
        "Access was not granted in the browser.",
        NextStep.RETRY,
        "Try again and choose Accept on the Microsoft consent page.",
    ),
    "oauth:interaction_required": Advice(
        "Microsoft needs you to sign in again in the browser.",
        NextStep.SIGN_IN,
    ),
    "oauth:consent_required": Advice(
        "Consent is needed before Qargo can use this account.",
        NextStep.RETRY,
        "Try again and accept the consent page.",
    ),
    "oauth:invalid_grant": Advice(
        "The saved sign-in is no longer valid.",
        NextStep.SIGN_IN,
        "Sign in again.",
    ),
    "oauth:authorization_pending": Advice(
        "Waiting for the sign-in to be completed on the other device.",
        NextStep.NONE,
    ),
    "oauth:expired_token": Advice(
        "The sign-in code expired before it was used.",
        NextStep.RETRY,
        "Start the sign-in again and enter the code sooner.",
    ),
    # Organisation API problem codes.
    "api:not_super_admin": Advice(
        "This account is not a Qargo super admin.",
        NextStep.SWITCH_ACCOUNT,
        "Sign out and sign in with a super admin account of your organisation.",
    ),
    "api:invalid_token": Advice(
        "Qargo did not accept the sign-in.",
        NextStep.SIGN_IN,
        "Sign in again.",
    ),
    "api:token_expired": Advice("The sign-in has expired.", NextStep.SIGN_IN, "Sign in again."),
    "api:account_mismatch": Advice(
        "The browser signed in a different account than the mailbox.",
        NextStep.SWITCH_ACCOUNT,
        "Sign out of the other account in the browser, or use a private window, and try again.",
    ),
    "api:insufficient_scope": Advice(
        "Not every permission Qargo needs was granted for the mailbox.",
        NextStep.REAUTHORISE,
        "Reauthorise and accept every permission on the consent page.",
    ),
    "api:attempt_expired": Advice(
        "The authorisation took too long and expired.",
        NextStep.RETRY,
        "Start the authorisation again and finish it in the browser within the time shown.",
    ),
    "api:attempt_in_progress": Advice(
        "Another authorisation of this mailbox is already running.",
        NextStep.RETRY_LATER,
        "Wait for it to finish or expire, then try again.",
    ),
    "api:attempt_not_pending": Advice(
        "This authorisation has already finished.",
        NextStep.REFRESH,
    ),
    "api:not_authorisable": Advice(
        "This mailbox cannot be authorised in its current state.",
        NextStep.RESET,
        "Reset the API link status first, then authorise.",
    ),
    "api:not_resettable": Advice(
        "Only a mailbox whose link failed can be reset.",
        NextStep.REFRESH,
        "Refresh the list to see its current state.",
    ),
    "api:precondition_failed": Advice(
        "Someone else changed this mailbox first.",
        NextStep.REFRESH,
        "The row has been refreshed: check its state and try again if still needed.",
    ),
    "api:precondition_required": Advice(
        "The change was refused because the app did not say which version it changed.",
        NextStep.CONTACT_SUPPORT,
    ),
    "api:mailbox_exists": Advice(
        "This mailbox is already in the list.",
        NextStep.NONE,
    ),
    "api:invalid_address": Advice(
        "That is not a valid email address.",
        NextStep.NONE,
    ),
    "api:mailbox_not_found": Advice(
        "This mailbox no longer exists in Qargo.",
        NextStep.REFRESH,
    ),
    "api:mailbox_unusable": Advice(
        "This mailbox cannot be used through the Microsoft Graph API (for example a "
        "shared mailbox without a licence, or an on-premises mailbox).",
        NextStep.ASK_TENANT_ADMIN,
        "Ask your Microsoft 365 administrator to check the mailbox's licence and type.",
    ),
    "api:rate_limited": Advice(
        "Qargo is busy and asked the app to slow down.",
        NextStep.RETRY_LATER,
    ),
    # Microsoft Graph error codes.
    "graph:InvalidAuthenticationToken": Advice(
        "Microsoft Graph did not accept the mailbox's sign-in.",
        NextStep.REAUTHORISE,
    ),
    "graph:ErrorAccessDenied": Advice(
        "Microsoft Graph refused access to the mailbox.",
        NextStep.REAUTHORISE,
        "Reauthorise and accept every permission.",
    ),
    "graph:MailboxNotEnabledForRESTAPI": Advice(
        "This mailbox cannot be used through the Microsoft Graph API.",
        NextStep.ASK_TENANT_ADMIN,
        "Ask your Microsoft 365 administrator to check the mailbox's licence and type.",
    ),
    "graph:ErrorItemNotFound": Advice("The message is no longer there.", NextStep.NONE),
    "graph:TooManyRequests": Advice(
        "Microsoft Graph is throttling requests for this mailbox.",
        NextStep.RETRY_LATER,
    ),
    "graph:ApplicationThrottled": Advice(
        "Microsoft Graph is throttling requests for this app.",
        NextStep.RETRY_LATER,
    ),
    # Network and HTTP.
    "net:throttled": Advice(
        "The service is busy and asked the app to slow down.",
        NextStep.RETRY_LATER,
    ),
    "net:unavailable": Advice(
        "The service is temporarily unavailable.",
        NextStep.RETRY_LATER,
    ),
    "net:connection": Advice(
        "The app could not reach the service.",
        NextStep.CHECK_NETWORK,
        "Check the network connection and proxy settings, then retry.",
    ),
    "net:dns": Advice(
        "The service's name could not be found (DNS).",
        NextStep.CHECK_NETWORK,
        "Check the network connection, the DNS settings and the configured addresses.",
    ),
    "net:timeout": Advice(
        "The service did not answer in time.",
        NextStep.CHECK_NETWORK,
        "Check the network connection, then retry.",
    ),
    "net:tls": Advice(
        "The service's certificate could not be verified.",
        NextStep.CHECK_NETWORK,
        "A TLS-inspecting proxy may be in the way: ask IT to add its certificate to "
        "Windows' trusted roots, or set extra_ca_file in the settings.",
    ),
    "net:proxy_auth": Advice(
        "The proxy requires authentication.",
        NextStep.CHECK_NETWORK,
        "Set the proxy address with its user name in the settings, or ask IT.",
    ),
    "net:bad_response": Advice(
        "The service sent an answer the app could not understand.",
        NextStep.RETRY,
        "A proxy may have replaced the answer. Retry; if it persists, contact Qargo Support.",
    ),
    # The app's own conditions.
    "app:cancelled": Advice("Cancelled.", NextStep.NONE),
    "app:deadline": Advice(
        "The sign-in was not completed in time.",
        NextStep.RETRY,
        "Try again and finish the sign-in in the browser within the time shown.",
    ),
    "app:wrong_account": Advice(
        "The browser signed in a different account than the mailbox.",
        NextStep.SWITCH_ACCOUNT,
        "Sign out of the other account in the browser, or use a private window, and try again.",
    ),
    "app:sign_in_required": Advice("You need to sign in.", NextStep.SIGN_IN),
    "app:no_browser": Advice(
        "No browser could be opened on this computer.",
        NextStep.NONE,
        "Copy the sign-in link and open it in a browser, or use sign-in on another device.",
    ),
    "app:busy": Advice(
        "Another sign-in is already waiting in the browser.",
        NextStep.RETRY_LATER,
        "Finish or cancel it first.",
    ),
}

_UNKNOWN = Advice(
    "Something went wrong that the app does not recognise.",
    NextStep.CONTACT_SUPPORT,
    "Contact Qargo Support with the error code and correlation id shown.",
)

_AADSTS = re.compile(r"AADSTS(\d+)")


def aadsts_code(text: str | None) -> str | None:
    """Return the first AADSTS number in an error description, if any."""
    if not text:
        return None
    match = _AADSTS.search(text)
    return match.group(1) if match else None


def advice_for(*keys: str | None) -> Advice:
    """Return the advice for the first key the table knows, or generic advice."""
    for key in keys:
        if key and key in ADVICE:
            return ADVICE[key]
    return _UNKNOWN


class QargoError(Exception):
    """Base of every error the app reports to a person.

    Attributes:
        key: The table key (``"api:account_mismatch"``) or ``None`` when unknown.
        code: The raw code the service gave (shown for unknown errors).
        correlation_id: The service's request or correlation id, for support.
        advice: What to tell the person.
    """

    def __init__(
        self,
        message: str,
        *,
        key: str | None = None,
        code: str | None = None,
        correlation_id: str | None = None,
        advice: Advice | None = None,
    ) -> None:
        super().__init__(message)
        self.key = key
        self.code = code
        self.correlation_id = correlation_id
        self.advice = advice or advice_for(key)

    @property
    def known(self) -> bool:
        """Whether the table knows this error."""
        return self.key is not None and self.key in ADVICE

    def explain(self) -> str:
        """One paragraph for a person: what happened, what to do, and ids for support."""
        parts = [self.advice.summary]
        if self.advice.detail:
            parts.append(self.advice.detail)
        ids = []
        if self.code and (not self.known or self.advice.next_step is NextStep.CONTACT_SUPPORT):
            ids.append(f"Error code: {self.code}")
        elif self.code:
            ids.append(f"Code: {self.code}")
        if self.correlation_id:
            ids.append(f"Correlation id: {self.correlation_id}")
        if ids:
            parts.append("(" + "; ".join(ids) + ")")
        return " ".join(parts)


class Cancelled(QargoError):
    """The person cancelled the operation."""

    def __init__(self, message: str = "cancelled") -> None:
        super().__init__(message, key="app:cancelled")


class DeadlineExceeded(QargoError):
    """An interactive wait passed its deadline."""

    def __init__(self, message: str = "deadline passed") -> None:
        super().__init__(message, key="app:deadline")


class NetworkError(QargoError):
    """The service could not be reached or answered something unreadable."""


class SignInRequired(QargoError):
    """There is no usable admin sign-in; the person must sign in interactively."""

    def __init__(self, message: str = "sign-in required", **kwargs: object) -> None:
        key = kwargs.pop("key", None) or "app:sign_in_required"
        super().__init__(message, key=str(key), **kwargs)  # type: ignore[arg-type]


class IdentityError(QargoError):
    """The identity platform refused a sign-in or token request."""

    def __init__(
        self,
        error: str,
        description: str | None = None,
        *,
        correlation_id: str | None = None,
        claims: str | None = None,
    ) -> None:
        number = aadsts_code(description)
        keys = [f"aadsts:{number}" if number else None, f"oauth:{error}"]
        key = next((k for k in keys if k and k in ADVICE), keys[0] or keys[1])
        code = f"AADSTS{number}" if number else error
        super().__init__(
            description or error,
            key=key,
            code=code,
            correlation_id=correlation_id,
        )
        self.error = error
        self.description = description or ""
        #: A claims challenge to pass into the next interactive attempt (MFA, CA).
        self.claims = claims


class ApiError(QargoError):
    """The organisation API answered with a problem."""

    def __init__(
        self,
        status: int,
        code: str | None,
        title: str,
        *,
        detail: str | None = None,
        correlation_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            detail or title,
            key=f"api:{code}" if code else _status_key(status),
            code=code or f"HTTP {status}",
            correlation_id=correlation_id,
        )
        self.status = status
        self.title = title
        self.detail = detail or ""
        self.retry_after = retry_after


class GraphError(QargoError):
    """Microsoft Graph answered with an error."""

    def __init__(
        self,
        status: int,
        code: str | None,
        message: str,
        *,
        correlation_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            message,
            key=f"graph:{code}" if code else _status_key(status),
            code=code or f"HTTP {status}",
            correlation_id=correlation_id,
        )
        self.status = status
        self.retry_after = retry_after


def _status_key(status: int) -> str | None:
    if status == 429:
        return "net:throttled"
    if status in (502, 503, 504):
        return "net:unavailable"
    if status == 407:
        return "net:proxy_auth"
    return None


def network_error(exc: BaseException, *, service: str) -> NetworkError:
    """Turn a transport exception (requests, urllib3, ssl, socket) into plain advice."""
    import ssl

    import requests

    text = f"{type(exc).__name__}: {exc}"
    lowered = text.lower()
    if isinstance(exc, requests.exceptions.ProxyError) and "407" in text:
        key = "net:proxy_auth"
    elif isinstance(exc, requests.exceptions.SSLError | ssl.SSLError) or ("certificate" in lowered):
        key = "net:tls"
    elif isinstance(exc, requests.exceptions.Timeout) or "timed out" in lowered:
        key = "net:timeout"
    elif (
        "name or service not known" in lowered
        or "nodename nor servname" in lowered
        or "getaddrinfo failed" in lowered
        or "temporary failure in name resolution" in lowered
        or "nameresolutionerror" in lowered
    ):
        key = "net:dns"
    elif isinstance(exc, requests.exceptions.ChunkedEncodingError | ValueError):
        key = "net:bad_response"
    else:
        key = "net:connection"
    return NetworkError(f"{service}: {text}", key=key, code=key.split(":", 1)[1])
