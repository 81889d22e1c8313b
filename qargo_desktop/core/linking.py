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
import threading
from collections.abc import Callable
from dataclasses import dataclass

from qargo_desktop.core.api import Attempt, OrganisationClient
from qargo_desktop.core.errors import (
    ApiError,
    Cancelled,
    DeadlineExceeded,
    IdentityError,
    QargoError,
)
from qargo_desktop.core.identity import (
    DeviceFlow,
    InteractiveControl,
    TokenResult,
    interactive_sign_in_running,
)
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


@dataclass(frozen=True, slots=True)
class _Ending:
    """How an attempt ended, kept until the API has been told."""

    attempt: Attempt
    reason: str
    error_code: str | None
    message: str


def _refuse_while_signing_in() -> None:
    # Refuse before the API starts an attempt: the identity layer would refuse the second
    # sign-in anyway (app:busy), and an attempt ended that way leaves the mailbox failed.
    if interactive_sign_in_running():
        raise QargoError("another interactive sign-in is running", key="app:busy")


def _transient(exc: ApiError) -> bool:
    return exc.status in (401, 408, 429) or exc.status >= 500


class MailboxLinker:
    """Runs the link lifecycle against the organisation API and Microsoft sign-in.

    Keep one per signed-in session: an attempt whose ending could not be recorded (the API
    was unreachable at that moment) is recorded by the next operation, or by
    :meth:`record_pending`, instead of staying ``authorising`` until the API expires it.
    """

    def __init__(self, services: Services) -> None:
        self._services = services
        self._unrecorded: list[_Ending] = []
        self._unrecorded_lock = threading.Lock()

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
        self.record_pending()
        _refuse_while_signing_in()
        kind = link_kind(mailbox)
        organisation = self._services.organisation()
        attempt = self._start(mailbox, kind)
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

        return self._complete(attempt, mailbox, token)

    def _start(self, mailbox: Mailbox, kind: str) -> Attempt:
        try:
            return self.api.start_authorisation(mailbox, kind)
        except ApiError as exc:
            if exc.status == 412:
                # Someone changed the mailbox since it was read: say so, and show it as it is.
                raise Conflict(self._fresh(mailbox), exc) from exc
            raise

    def _complete(self, attempt: Attempt, mailbox: Mailbox, token: TokenResult) -> LinkResult:
        """Hand the mailbox account's token to the API; record the ending if that fails."""
        try:
            linked = self.api.complete_authorisation(attempt, token.access_token)
        except ApiError as exc:
            log.warning("Completing the authorisation of %s failed: %s", mailbox.address,
                        exc.code)  # fmt: skip
            if exc.status != 422 and self._completed(attempt):
                return LinkResult(LinkOutcome.LINKED, self._fresh(mailbox), None, token.username)
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
            if self._completed(attempt):
                return LinkResult(LinkOutcome.LINKED, self._fresh(mailbox), None, token.username)
            result = self._record(attempt, LinkOutcome.FAILED, "error", exc)
            return LinkResult(LinkOutcome.FAILED, result.mailbox, exc, token.username)
        log.info("%s is linked", mailbox.address)
        return LinkResult(LinkOutcome.LINKED, linked, None, token.username)

    def authorise_device(
        self,
        mailbox: Mailbox,
        on_code: Callable[[DeviceFlow], None],
        cancel: threading.Event | None = None,
        *,
        claims_challenge: str | None = None,
    ) -> LinkResult:
        """Authorise ``mailbox`` with sign-in on another device (a code instead of a browser).

        The same lifecycle as :meth:`authorise`; ``on_code`` receives each code to show.
        Microsoft issues one code per service, so when the mailbox account has not yet
        consented to the mail permissions a second code follows (``purpose`` ``consent``).
        """
        control = InteractiveControl(
            cancel=cancel or threading.Event(), device=True, on_device_code=on_code
        )
        return self.authorise(mailbox, control, claims_challenge=claims_challenge)

    def _record(
        self, attempt: Attempt, outcome: LinkOutcome, reason: str, error: QargoError
    ) -> LinkResult:
        """Tell the API how the attempt ended; return the mailbox as it now stands."""
        mailbox: Mailbox | None
        ending = _Ending(attempt, reason, error.code, error.advice.summary)
        try:
            mailbox = self.api.fail_authorisation(
                attempt, reason, error_code=error.code, message=error.advice.summary
            )
        except ApiError as exc:
            if exc.status not in (409, 410):
                log.warning("Could not record the end of attempt %s: %s", attempt.id, exc.code)
            if _transient(exc):
                self._remember(ending)
            mailbox = self._fresh_by_id(attempt.mailbox_id)
        except QargoError as exc:
            # Told later (record_pending); the person still learns what happened now.
            log.warning("Could not record the end of attempt %s: %s", attempt.id, exc.code)
            self._remember(ending)
            mailbox = None
        log.info("Attempt %s ended: %s", attempt.id, outcome.value)
        return LinkResult(outcome, mailbox, error)

    def _remember(self, ending: _Ending) -> None:
        with self._unrecorded_lock:
            self._unrecorded.append(ending)

    def record_pending(self) -> int:
        """Tell the API how earlier attempts ended, where telling it failed at the time.

        Returns:
            How many endings are still not recorded (the API is still unreachable).
        """
        with self._unrecorded_lock:
            pending, self._unrecorded = self._unrecorded, []
        kept: list[_Ending] = []
        for ending in pending:
            if kept:
                # The API was unreachable a moment ago: keep the rest for the next time.
                kept.append(ending)
                continue
            try:
                self.api.fail_authorisation(
                    ending.attempt, ending.reason, error_code=ending.error_code,
                    message=ending.message,
                )  # fmt: skip
            except ApiError as exc:
                # 409 or 410: the attempt ended already; 404: the mailbox is gone.
                if _transient(exc):
                    kept.append(ending)
            except QargoError:
                kept.append(ending)
            else:
                log.info("Recorded the end of attempt %s late", ending.attempt.id)
        with self._unrecorded_lock:
            self._unrecorded[:0] = kept
            return len(self._unrecorded)

    def _completed(self, attempt: Attempt) -> bool:
        # A PUT whose answer was lost may have linked the mailbox already: the repeat then
        # meets a finished attempt. Ask the API rather than report a failure that was not.
        try:
            completed = self.api.attempt_status(attempt) == "completed"
        except QargoError:
            return False
        if completed:
            log.info("Attempt %s completed although its answer was lost", attempt.id)
        return completed

    def _fresh(self, mailbox: Mailbox) -> Mailbox | None:
        return self._fresh_by_id(mailbox.id)

    def _fresh_by_id(self, mailbox_id: str) -> Mailbox | None:
        try:
            return self.api.get_mailbox(mailbox_id)
        except QargoError:
            return None

    def reset(self, mailbox: Mailbox) -> Mailbox:
        """Reset a failed link (If-Match); raise :class:`Conflict` if someone was first."""
        self.record_pending()
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
        self.record_pending()
        mailbox = self.api.add_mailbox(normalised, display_name)
        log.info("Added %s", normalised)
        return mailbox

    def remove(self, mailbox: Mailbox) -> None:
        """Remove a mailbox (If-Match); raise :class:`Conflict` if someone was first."""
        self.record_pending()
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
