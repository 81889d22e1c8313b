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
# "oauth:<error>", "api:<code>", "graph:<code>", "net:<kind>", "app:<kind>",
# "selftest:<finding>".
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
    "aadsts:7000218": Advice(
        "The app registration does not allow sign-in on another device.",
        NextStep.CHECK_SETTINGS,
        "A Microsoft 365 administrator must turn on 'Allow public client flows' in the Qargo "
        "app registration, or sign in with the browser on this computer instead.",
    ),
    "aadsts:700016": Advice(
        "The Qargo app is not known in this tenant.",
        NextStep.CHECK_SETTINGS,
        "Check the client id and authority in the settings, or contact Qargo Support.",
    ),
    "aadsts:90033": Advice(
        "Microsoft sign-in had a temporary problem.",
        NextStep.RETRY_LATER,
        "Try again in a minute.",
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
    "oauth:invalid_response": Advice(
        "Microsoft sign-in sent an answer the app could not use.",
        NextStep.RETRY,
        "Try again. If it keeps happening, sign out and sign in again; if that fails too, "
        "contact Qargo Support.",
    ),
    "oauth:temporarily_unavailable": Advice(
        "Microsoft sign-in is busy or temporarily unavailable.",
        NextStep.RETRY_LATER,
        "Try again in a minute.",
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
    "oauth:authorization_declined": Advice(
        "The sign-in was declined on the other device.",
        NextStep.RETRY,
        "Start the sign-in again and choose Accept on the other device.",
    ),
    "oauth:bad_verification_code": Advice(
        "The sign-in code was not recognised.",
        NextStep.RETRY,
        "Start the sign-in again and enter the new code exactly as shown.",
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
    "graph:ServiceNotAvailable": Advice(
        "Microsoft Graph is temporarily unavailable.",
        NextStep.RETRY_LATER,
    ),
    "graph:generalException": Advice(
        "Microsoft Graph had an internal error.",
        NextStep.RETRY_LATER,
        "Try again in a few minutes.",
    ),
    "graph:ErrorSendAsDenied": Advice(
        "Microsoft 365 refused to send as this mailbox.",
        NextStep.REAUTHORISE,
        "Reauthorise the mailbox, signing in as the mailbox account itself.",
    ),
    "graph:ErrorInvalidRecipients": Advice(
        "Microsoft 365 did not accept the mailbox's own address as a recipient.",
        NextStep.ASK_TENANT_ADMIN,
        "Ask your Microsoft 365 administrator to check that the address is the mailbox's "
        "primary address.",
    ),
    "graph:ErrorMessageSubmissionBlocked": Advice(
        "Microsoft 365 has blocked this mailbox from sending mail.",
        NextStep.ASK_TENANT_ADMIN,
        "This often follows suspected spam. A Microsoft 365 administrator can release it "
        "under Restricted entities in the Microsoft Defender portal.",
    ),
    "graph:ErrorQuotaExceeded": Advice(
        "The mailbox is full.",
        NextStep.ASK_TENANT_ADMIN,
        "Free some space in the mailbox, or ask your Microsoft 365 administrator to raise its "
        "quota.",
    ),
    # The send/receive self-test.
    "selftest:send_unconfirmed": Advice(
        "The send request got no answer, so the app could not tell whether the test message "
        "went out.",
        NextStep.RETRY,
        "The app looked for the message instead of sending it again. Check the network and "
        "proxy, then run the test again.",
    ),
    "selftest:submission_slow": Advice(
        "Microsoft Graph took a long time to accept the test message.",
        NextStep.CHECK_NETWORK,
        "A slow network or proxy between this computer and Microsoft 365 can cause this. Run "
        "the test again; if it stays slow, check the proxy.",
    ),
    "selftest:delivery_failed": Advice(
        "The test message did not arrive in the mailbox in time.",
        NextStep.ASK_TENANT_ADMIN,
        "Check the tenant's mail flow in the Exchange admin centre (message trace, quarantine, "
        "transport rules) and the mailbox's inbox rules. If mail flow looks fine, contact Qargo "
        "Support with this report.",
    ),
    "selftest:delivery_slow": Advice(
        "Microsoft 365 delivered the test message, but slowly.",
        NextStep.ASK_TENANT_ADMIN,
        "The delay is in Microsoft 365's delivery, not in Qargo. If it keeps happening, check "
        "the tenant's mail flow with a message trace in the Exchange admin centre.",
    ),
    "selftest:sync_failed": Advice(
        "Qargo's sync did not see the test message in time.",
        NextStep.REAUTHORISE,
        "Reauthorise the mailbox and run the test again. If it still fails, reset the link, "
        "authorise it again, and contact Qargo Support with this report.",
    ),
    "selftest:sync_slow": Advice(
        "Qargo's sync saw the test message, but slowly.",
        NextStep.CONTACT_SUPPORT,
        "The delay is on Qargo's side. If it keeps happening, contact Qargo Support with this "
        "report.",
    ),
    "selftest:not_linked": Advice(
        "Qargo does not read this mailbox: it is not linked.",
        NextStep.REAUTHORISE,
        "Authorise the mailbox, then run the test again.",
    ),
    "selftest:reauthorisation_required": Advice(
        "Qargo cannot read this mailbox until it is reauthorised.",
        NextStep.REAUTHORISE,
        "Reauthorise the mailbox, then run the test again.",
    ),
    "selftest:link_failed": Advice(
        "Qargo cannot read this mailbox: its last authorisation failed.",
        NextStep.RESET,
        "Reset the API link status, authorise the mailbox again, then run the test again.",
    ),
    "selftest:grant_refused": Advice(
        "Microsoft refused the mailbox's saved sign-in (the grant was revoked or has expired).",
        NextStep.REAUTHORISE,
        "Reauthorise the mailbox, then run the test again.",
    ),
    "selftest:no_saved_sign_in": Advice(
        "This computer has no saved sign-in for the mailbox.",
        NextStep.SIGN_IN,
        "Run the test again and sign in as the mailbox in the browser when asked.",
    ),
    "selftest:clock_skew": Advice(
        "This computer's clock is far from the servers' clocks.",
        NextStep.CHECK_SETTINGS,
        "Set the clock to synchronise automatically. Sign-ins can fail when the clock is more "
        "than five minutes off.",
    ),
    "selftest:cleanup_failed": Advice(
        "The test message could not be deleted.",
        NextStep.NONE,
        "Delete it by hand: its subject starts with [Qargo self-test].",
    ),
    "selftest:deadline": Advice(
        "The test ran out of time.",
        NextStep.RETRY,
        "Run it again, with a longer time limit if the services are slow today.",
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
        "Check the network connection and the configured addresses. On a network that only "
        "reaches the internet through a proxy, set the proxy in the settings.",
    ),
    "net:timeout": Advice(
        "The service did not answer in time.",
        NextStep.CHECK_NETWORK,
        "A slow network, a VPN, or a firewall that silently drops the connection can cause "
        "this. Check the network connection, then retry.",
    ),
    "net:tls": Advice(
        "The service's certificate was issued by an authority this computer does not trust.",
        NextStep.CHECK_NETWORK,
        "Usually a TLS-inspecting proxy (a corporate firewall or antivirus that opens secure "
        "connections) is in the way. Ask IT to install the proxy's root certificate in the "
        "computer's trusted roots, or save it as a PEM file and set extra_ca_file in the "
        "settings. Diagnostics names who issued the certificate.",
    ),
    "net:tls_expired": Advice(
        "The service's certificate has expired or is not valid yet.",
        NextStep.CHECK_SETTINGS,
        "Check that this computer's date and time are right (Diagnostics shows how far the "
        "clock is from the servers'). If they are, a proxy may be presenting an old "
        "certificate: tell IT.",
    ),
    "net:tls_hostname": Advice(
        "The certificate that answered belongs to a different address.",
        NextStep.CHECK_NETWORK,
        "A proxy or a network sign-in page (hotel or guest Wi-Fi) may be answering instead of "
        "the service. Sign in to the network in a browser, or ask IT.",
    ),
    "net:tls_handshake": Advice(
        "The secure connection (TLS) to the service failed.",
        NextStep.CHECK_NETWORK,
        "A proxy or firewall may be blocking or altering the connection. Run Diagnostics and "
        "send the support bundle to your support contact.",
    ),
    "net:proxy_auth": Advice(
        "The proxy asked for a user name and password.",
        NextStep.CHECK_NETWORK,
        'Put them in the proxy setting (proxy = "http://user:password@proxy.example:8080"), '
        "or ask IT to let the app through. Proxies that sign in with the Windows account "
        "(NTLM or Kerberos) are not supported: ask IT for an exception for the Microsoft and "
        "Qargo addresses.",
    ),
    "net:proxy_refused": Advice(
        "The proxy refused to connect the app to the service.",
        NextStep.CHECK_NETWORK,
        "The proxy may block this address or could not reach it. Ask IT to allow the Microsoft "
        "sign-in, Microsoft Graph and Qargo addresses (Diagnostics lists them).",
    ),
    "net:proxy_unreachable": Advice(
        "The proxy could not be reached.",
        NextStep.CHECK_NETWORK,
        "Check the proxy in the settings (or the system's proxy settings) and the network "
        "connection.",
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
        key: str | None = None,
    ) -> None:
        super().__init__(
            detail or title,
            key=key or _service_key("api", code, status),
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
            key=_service_key("graph", code, status),
            code=code or f"HTTP {status}",
            correlation_id=correlation_id,
        )
        self.status = status
        self.retry_after = retry_after


def _service_key(namespace: str, code: str | None, status: int) -> str | None:
    # A code the table does not know on a 429 or 503 still means "busy, try later": the
    # status says more than an unknown code (the code itself is still shown).
    key = f"{namespace}:{code}" if code else None
    if key in ADVICE:
        return key
    return _status_key(status) or key


def _status_key(status: int) -> str | None:
    if status == 429:
        return "net:throttled"
    if status in (502, 503, 504):
        return "net:unavailable"
    if status == 407:
        return "net:proxy_auth"
    return None


def network_error(exc: BaseException, *, service: str) -> NetworkError:
    """Turn a transport exception (requests, urllib3, ssl, socket) into plain advice.

    Recognised: a proxy that wants a password (407), refuses a tunnel or cannot be reached;
    a certificate from an unknown authority (a TLS-inspecting proxy), expired or for
    another name; other TLS failures; timeouts; name lookups that fail; unreadable answers.
    Anything else is ``net:connection``.
    """
    text = f"{type(exc).__name__}: {exc}"
    key = _network_key(exc, text.lower())
    return NetworkError(f"{service}: {text}", key=key, code=key.split(":", 1)[1])


# Fragments of the messages that OpenSSL, urllib3 and the OS resolvers put in exceptions
# (requests nests them, so the text is searched rather than the exception types).
_EXPIRED = ("certificate has expired", "certificate is not yet valid", "certificate_expired")
_HOSTNAME = ("hostname mismatch", "doesn't match", "does not match", "not valid for")
_UNTRUSTED = (
    "certificate verify failed",
    "unable to get local issuer",
    "self signed certificate",
    "self-signed certificate",
    "unknown ca",
    "untrusted root",
)
_NAME_LOOKUP = (
    "name or service not known",
    "nodename nor servname",
    "getaddrinfo failed",
    "temporary failure in name resolution",
    "nameresolutionerror",
    "no address associated with hostname",
    "failed to resolve",
)


def _network_key(exc: BaseException, lowered: str) -> str:
    import socket
    import ssl

    import requests

    is_proxy_error = isinstance(exc, requests.exceptions.ProxyError) or (
        "unable to connect to proxy" in lowered
    )
    if is_proxy_error and "407" in lowered:
        return "net:proxy_auth"
    if any(marker in lowered for marker in _EXPIRED):
        return "net:tls_expired"
    if "certificate" in lowered and any(marker in lowered for marker in _HOSTNAME):
        return "net:tls_hostname"
    if any(marker in lowered for marker in _UNTRUSTED):
        return "net:tls"
    if is_proxy_error:
        # "Tunnel connection failed: 403 Forbidden" is the proxy's answer; anything else
        # means the proxy itself was not reached.
        if "tunnel connection failed" in lowered:
            return "net:proxy_refused"
        return "net:proxy_unreachable"
    if isinstance(exc, requests.exceptions.Timeout | TimeoutError) or "timed out" in lowered:
        return "net:timeout"
    if isinstance(exc, requests.exceptions.SSLError | ssl.SSLError) or "certificate" in lowered:
        return "net:tls_handshake"
    if isinstance(exc, socket.gaierror) or any(marker in lowered for marker in _NAME_LOOKUP):
        return "net:dns"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError | ValueError):
        return "net:bad_response"
    return "net:connection"
