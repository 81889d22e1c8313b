"""The link lifecycle: authorise, reauthorise, reset, add and remove mailboxes.

Each operation is one blocking call for a worker thread (or the command line) and
returns or raises something a person can act on. The rules of DESIGN.md live in the
API; this module drives it in the right order and never hands the API a token that
belongs to someone other than the mailbox.
"""

from __future__ import annotations

import enum
import logging
import re
from dataclasses import dataclass

from qargo_desktop.core.api import Attempt, OrganisationClient
from qargo_desktop.core.errors import (
    ApiError,
    Cancelled,
    DeadlineExceeded,
    IdentityError,
    QargoError,
)
from qargo_desktop.core.identity import InteractiveControl
from qargo_desktop.core.models import LinkStatus, Mailbox
from qargo_desktop.core.services import Services

log = logging.getLogger(__name__)

# MSAL adds these itself and refuses them in a scope list.
_RESERVED_SCOPES = frozenset({"openid", "profile", "offline_access"})

_ADDRESS = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"[A-Za-z]{2,63}$"
)


class LinkOutcome(enum.Enum):
    """How an authorisation ended."""

    LINKED = "linked"
    DECLINED = "declined"
    WRONG_ACCOUNT = "wrong_account"
    CANCELLED = "cancelled"
    DEADLINE = "deadline"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class LinkResult:
    """The end of one authorisation.

    Attributes:
        outcome: How it ended.
        mailbox: The mailbox as the API now has it (``None`` if it could not be read).
        error: What went wrong, with advice; ``None`` when linked.
        signed_in_as: The account the browser signed in, when one did.
        claims_challenge: A challenge to pass into the next attempt (MFA, conditional
            access), when the identity platform asked for one.
    """

    outcome: LinkOutcome
    mailbox: Mailbox | None
    error: QargoError | None = None
    signed_in_as: str | None = None
    claims_challenge: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the mailbox is now linked."""
        return self.outcome is LinkOutcome.LINKED


class WrongAccount(QargoError):
    """The browser signed in someone other than the mailbox."""

    def __init__(self, signed_in_as: str, needed: str) -> None:
        super().__init__(
            f"the browser signed in {signed_in_as}, but the mailbox is {needed}",
            key="app:wrong_account",
        )
        self.signed_in_as = signed_in_as
        self.needed = needed

    def explain(self) -> str:
        """Name both accounts and say how to switch."""
        return (
            f"The browser signed in {self.signed_in_as}, but this mailbox is {self.needed}. "
            "Nothing was changed in Qargo. Sign out of the other account in the browser, or "
            f"use a private window, then try again and sign in as {self.needed}."
        )


class Conflict(QargoError):
    """Someone else changed the mailbox first (HTTP 412)."""

    def __init__(self, current: Mailbox | None, cause: ApiError) -> None:
        super().__init__(
            "someone else changed this mailbox first",
            key="api:precondition_failed",
            code=cause.code,
            correlation_id=cause.correlation_id,
        )
        self.current = current


def normalise_address(text: str) -> str:
    """Return the address trimmed and lower-cased, or raise :class:`QargoError`."""
    address = text.strip().strip("<>").strip()
    if not _ADDRESS.match(address) or ".." in address:
        raise QargoError(f"not a valid email address: {text!r}", key="api:invalid_address")
    return address.lower()


def link_kind(mailbox: Mailbox) -> str:
    """``"reauthorise"`` for a mailbox that was linked before, else ``"authorise"``."""
    if mailbox.status in (LinkStatus.LINKED, LinkStatus.REAUTHORISATION_REQUIRED):
        return "reauthorise"
    return "authorise"


class MailboxLinker:
    """Runs the link lifecycle against the organisation API and Microsoft sign-in."""

    def __init__(self, services: Services) -> None:
        self._services = services

    @property
    def api(self) -> OrganisationClient:
        """The organisation API client."""
        return self._services.api

    def authorise(
        self,
        mailbox: Mailbox,
        control: InteractiveControl,
        *,
        claims_challenge: str | None = None,
    ) -> LinkResult:
        """Authorise (or reauthorise) ``mailbox`` through an interactive sign-in as it.

        The API records every ending: success, a declined consent, a wrong account, a
        cancel, a deadline or an error. Errors before the attempt started (the API
        refused to start one) are raised; everything after is returned.
        """
        kind = link_kind(mailbox)
        organisation = self._services.organisation()
        attempt = self.api.start_authorisation(mailbox, kind)
        log.info("%s of %s started (attempt %s)", kind.capitalize(), mailbox.address, attempt.id)
        scopes = attempt.required_scopes or organisation.required_link_scopes
        extra = [s for s in scopes if s not in _RESERVED_SCOPES]
        identity = self._services.mailbox_identity()
        try:
            token = identity.acquire_interactive(
                self._services.endpoints.admin_scopes,
                control,
                login_hint=mailbox.address,
                prompt="select_account",
                extra_scopes_to_consent=extra,
                claims_challenge=claims_challenge,
            )
        except Cancelled as exc:
            return self._record(attempt, LinkOutcome.CANCELLED, "cancelled", exc)
        except DeadlineExceeded as exc:
            return self._record(attempt, LinkOutcome.DEADLINE, "timeout", exc)
        except IdentityError as exc:
            outcome, reason = (
                (LinkOutcome.DECLINED, "declined")
                if exc.error in ("access_denied", "consent_required")
                else (LinkOutcome.FAILED, "error")
            )
            result = self._record(attempt, outcome, reason, exc)
            return LinkResult(
                result.outcome, result.mailbox, exc, claims_challenge=exc.claims or None
            )
        except QargoError as exc:
            return self._record(attempt, LinkOutcome.FAILED, "error", exc)

        if token.username.casefold() != mailbox.address.casefold():
            wrong = WrongAccount(token.username or "an unknown account", mailbox.address)
            log.warning("Authorisation of %s: the browser signed in %s", mailbox.address,
                        token.username)  # fmt: skip
            # Keep no tokens of an account that was not asked for.
            identity.sign_out(token.username)
            result = self._record(attempt, LinkOutcome.WRONG_ACCOUNT, "wrong_account", wrong)
            return LinkResult(result.outcome, result.mailbox, wrong, signed_in_as=token.username)

        try:
            linked = self.api.complete_authorisation(attempt, token.access_token)
        except ApiError as exc:
            log.warning("Completing the authorisation of %s failed: %s", mailbox.address,
                        exc.code)  # fmt: skip
            if exc.code == "account_mismatch":
                outcome = LinkOutcome.WRONG_ACCOUNT
            else:
                outcome = LinkOutcome.FAILED
            if exc.status in (410, 409):
                # The API already ended the attempt (expired or finished).
                return LinkResult(outcome, self._fresh(mailbox), exc, token.username)
            result = self._record(attempt, outcome, "error", exc)
            return LinkResult(outcome, result.mailbox, exc, token.username)
        except QargoError as exc:
            result = self._record(attempt, LinkOutcome.FAILED, "error", exc)
            return LinkResult(LinkOutcome.FAILED, result.mailbox, exc, token.username)
        log.info("%s is linked", mailbox.address)
        return LinkResult(LinkOutcome.LINKED, linked, None, token.username)

    def _record(
        self, attempt: Attempt, outcome: LinkOutcome, reason: str, error: QargoError
    ) -> LinkResult:
        """Tell the API how the attempt ended; return the mailbox as it now stands."""
        mailbox: Mailbox | None
        try:
            mailbox = self.api.fail_authorisation(
                attempt, reason, error_code=error.code, message=error.advice.summary
            )
        except ApiError as exc:
            if exc.status not in (409, 410):
                log.warning("Could not record the end of attempt %s: %s", attempt.id, exc.code)
            mailbox = self._fresh_by_id(attempt.mailbox_id)
        except QargoError as exc:
            # The API will expire the attempt itself; the person still learns what happened.
            log.warning("Could not record the end of attempt %s: %s", attempt.id, exc.code)
            mailbox = None
        log.info("Attempt %s ended: %s", attempt.id, outcome.value)
        return LinkResult(outcome, mailbox, error)

    def _fresh(self, mailbox: Mailbox) -> Mailbox | None:
        return self._fresh_by_id(mailbox.id)

    def _fresh_by_id(self, mailbox_id: str) -> Mailbox | None:
        try:
            return self.api.get_mailbox(mailbox_id)
        except QargoError:
            return None

    def reset(self, mailbox: Mailbox) -> Mailbox:
        """Reset a failed link (If-Match); raise :class:`Conflict` if someone was first."""
        try:
            result = self.api.reset(mailbox)
        except ApiError as exc:
            if exc.status == 412:
                raise Conflict(self._fresh(mailbox), exc) from exc
            raise
        log.info("Reset the link status of %s", mailbox.address)
        return result

    def add(self, address: str, display_name: str | None = None) -> Mailbox:
        """Add a mailbox after validating and normalising its address."""
        normalised = normalise_address(address)
        mailbox = self.api.add_mailbox(normalised, display_name)
        log.info("Added %s", normalised)
        return mailbox

    def remove(self, mailbox: Mailbox) -> None:
        """Remove a mailbox (If-Match); raise :class:`Conflict` if someone was first."""
        try:
            self.api.remove_mailbox(mailbox)
        except ApiError as exc:
            if exc.status == 412:
                raise Conflict(self._fresh(mailbox), exc) from exc
            raise
        log.info("Removed %s", mailbox.address)

    def find(self, address: str) -> Mailbox:
        """Return the mailbox with this address, or raise ``api:mailbox_not_found``."""
        wanted = normalise_address(address)
        listing = self.api.list_mailboxes()
        assert listing is not None
        for mailbox in listing.items:
            if mailbox.address.casefold() == wanted:
                return mailbox
        raise QargoError(f"no mailbox {wanted} in this organisation", key="api:mailbox_not_found")
