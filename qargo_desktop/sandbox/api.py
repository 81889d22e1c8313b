"""The sandbox Qargo organisation API: linked mailboxes, authorisation attempts, audit trail.

Two layers:

- :class:`OrganisationStore` holds the organisation's mailboxes and applies the link-state
  rules of DESIGN.md (attempts, failures, expiry, reset, revoked grants), ETags, pagination
  and the audit trail. It raises :class:`ApiError` with the contract's stable codes.
- :class:`OrganisationApi` is the WSGI app mounted under ``/api``: bearer-token checks,
  routing, problem details (RFC 9457), conditional requests and ``Idempotency-Key``.

Every change happens under one lock (the world's, in a running sandbox), so concurrent
requests see each change whole. Abandoned attempts expire lazily: whenever a mailbox is read
or the list is fetched, attempts past their ``expires_at`` are failed as timed out.

:class:`ControlApi` serves ``/_sandbox/mailboxes/{id}``, which changes a mailbox as if
another admin had, for conflict tests.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import random
import re
import threading
import uuid
from bisect import bisect_right, insort
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from qargo_desktop.sandbox.mail import iso_z, parse_iso

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from qargo_desktop.sandbox.world import World

logger = logging.getLogger(__name__)

API_AUDIENCE = "api://qargo-sandbox"
ADMIN_SCOPE_NAME = "Organisation.Manage"
PROBLEM_TYPE_BASE = "https://qargo.example/problems/"

STATUS_LINKED = "linked"
STATUS_UNLINKED = "unlinked"
STATUS_REAUTHORISATION_REQUIRED = "reauthorisation_required"
STATUS_LINK_FAILED = "link_failed"
STATUS_AUTHORISING = "authorising"
KNOWN_STATUSES = (
    STATUS_LINKED,
    STATUS_UNLINKED,
    STATUS_REAUTHORISATION_REQUIRED,
    STATUS_LINK_FAILED,
    STATUS_AUTHORISING,
)
#: States an attempt can start from.
AUTHORISABLE = (STATUS_UNLINKED, STATUS_REAUTHORISATION_REQUIRED, STATUS_LINKED)
ATTEMPT_KINDS = ("authorise", "reauthorise")
FAILURE_REASONS = ("cancelled", "declined", "wrong_account", "timeout", "error")

SYSTEM_ACTOR = "system"
IDEMPOTENCY_TTL_S = 24 * 3600.0
MAX_PAGE = 500
DEFAULT_PAGE = 100

_ADDRESS = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
_HEADER_VALUE = re.compile(r"^[\x21-\x7e][\x20-\x7e]{0,254}$")

_FAILURE_TEXT = {
    "cancelled": "The sign-in was cancelled before it finished.",
    "declined": "The mailbox account declined the permissions Qargo asks for.",
    "wrong_account": "Someone signed in with an account other than the mailbox.",
    "timeout": "The sign-in was not finished in time.",
    "error": "The sign-in failed.",
}

_TITLES = {
    "invalid_request": "The request is not valid",
    "invalid_cursor": "The cursor is not valid",
    "invalid_token": "The access token is not valid",
    "token_expired": "The access token has expired",
    "insufficient_scope": "The access token lacks a required scope",
    "not_super_admin": "Only super admins can do this",
    "not_found": "Not found",
    "mailbox_not_found": "Mailbox not found",
    "attempt_not_found": "Authorisation attempt not found",
    "method_not_allowed": "Method not allowed",
    "mailbox_exists": "The mailbox already exists",
    "attempt_in_progress": "Another authorisation is in progress",
    "not_authorisable": "The mailbox cannot be authorised in its current state",
    "attempt_not_pending": "The authorisation attempt has already finished",
    "not_resettable": "Only a failed link can be reset",
    "attempt_expired": "The authorisation attempt has expired",
    "precondition_failed": "The mailbox was changed by someone else",
    "precondition_required": "If-Match is required",
    "unsupported_media_type": "The body must be JSON",
    "invalid_address": "The address is not a valid email address",
    "idempotency_key_reused": "The idempotency key was used for a different request",
    "account_mismatch": "The signed-in account is not the mailbox",
    "validation_failed": "The request body is not valid",
    "internal_error": "Internal error",
}


class ApiError(Exception):
    """A problem the API reports as ``application/problem+json``.

    Attributes:
        status: HTTP status.
        code: The contract's stable code.
        detail: Human-readable explanation of this occurrence.
        headers: Extra response headers (``WWW-Authenticate``, ``Allow``...).
    """

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = list(headers)

    @property
    def title(self) -> str:
        """A short summary that does not change between occurrences."""
        return _TITLES.get(self.code, HTTPStatus(self.status).phrase)


def problem_body(error: ApiError, correlation_id: str) -> dict[str, Any]:
    """The RFC 9457 body of ``error``."""
    return {
        "type": PROBLEM_TYPE_BASE + error.code,
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        "code": error.code,
        "correlation_id": correlation_id,
    }


@dataclass(frozen=True)
class RequestContext:
    """Who made a change, from where (recorded in the audit trail)."""

    actor: str
    app_version: str | None = None
    machine: str | None = None
    user_agent: str | None = None
    claims: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


SYSTEM = RequestContext(actor=SYSTEM_ACTOR)


@dataclass
class LastError:
    """The last error recorded for a mailbox."""

    code: str
    message: str
    at: float

    def to_json(self) -> dict[str, Any]:
        """The contract's ``last_error`` object."""
        return {"code": self.code, "message": self.message, "at": iso_z(self.at)}


@dataclass
class Attempt:
    """One authorisation attempt.

    ``status`` is ``pending``, ``completed``, ``failed`` or ``expired``.
    """

    id: str
    mailbox_id: str
    kind: str
    started_at: float
    expires_at: float
    login_hint: str
    required_scopes: tuple[str, ...]
    previous_status: str
    started_by: str
    status: str = "pending"
    finished_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The contract's Attempt object."""
        return {
            "id": self.id,
            "mailbox_id": self.mailbox_id,
            "kind": self.kind,
            "status": self.status,
            "started_at": iso_z(self.started_at),
            "expires_at": iso_z(self.expires_at),
            "login_hint": self.login_hint,
            "required_scopes": list(self.required_scopes),
            "previous_status": self.previous_status,
            "started_by": self.started_by,
        }


@dataclass(frozen=True)
class Event:
    """One entry of a mailbox's audit trail."""

    seq: int
    at: float
    actor: str
    action: str
    detail: str
    app_version: str | None
    machine: str | None

    def to_json(self) -> dict[str, Any]:
        """The contract's event object."""
        return {
            "id": f"ev_{self.seq:08d}",
            "at": iso_z(self.at),
            "actor": self.actor,
            "action": self.action,
            "detail": self.detail,
            "app_version": self.app_version,
            "machine": self.machine,
        }


@dataclass(frozen=True)
class SyncedMessage:
    """A message Qargo's sync saw in a mailbox."""

    internet_message_id: str
    received_at: float
    synced_at: float

    def to_json(self) -> dict[str, Any]:
        """The contract's synced-message object."""
        return {
            "internet_message_id": self.internet_message_id,
            "synced_at": iso_z(self.synced_at),
            "received_at": iso_z(self.received_at),
        }


@dataclass
class MailboxRecord:
    """One linked mailbox as the store keeps it."""

    id: str
    address: str
    display_name: str
    status: str = STATUS_UNLINKED
    status_reason: str | None = None
    status_changed_at: float = 0.0
    linked_at: float | None = None
    linked_by: str | None = None
    granted_scopes: tuple[str, ...] = ()
    last_sync_at: float | None = None
    last_error: LastError | None = None
    revision: int = 1
    attempt_id: str | None = None
    events: list[Event] = field(default_factory=list)
    synced: dict[str, SyncedMessage] = field(default_factory=dict)


def _encode_cursor(data: Mapping[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> dict[str, Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, binascii.Error) as exc:
        raise ApiError(400, "invalid_cursor", "The cursor was not issued by this API.") from exc
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_cursor", "The cursor was not issued by this API.")
    return data


def if_match_satisfied(header: str, etag: str) -> bool:
    """Whether an ``If-Match`` header matches ``etag`` (strong comparison, RFC 9110)."""
    value = header.strip()
    if value == "*":
        return True
    return any(part.strip() == etag for part in value.split(","))


def if_none_match_satisfied(header: str, etag: str) -> bool:
    """Whether an ``If-None-Match`` header matches ``etag`` (weak comparison)."""
    value = header.strip()
    if value == "*":
        return True

    def opaque(tag: str) -> str:
        tag = tag.strip()
        return tag[2:] if tag.startswith("W/") else tag

    return any(opaque(part) == opaque(etag) for part in value.split(","))


class OrganisationStore:
    """The organisation, its linked mailboxes, their attempts and their audit trails.

    Args:
        clock: Sandbox time in epoch seconds.
        lock: Lock guarding the store (share the world's lock with the mail simulation).
        organisation_id: The organisation's id.
        name: The organisation's name.
        tenant_id: Its Microsoft tenant.
        client_id: The public client id mailbox links are made with.
        required_link_scopes: Scopes a mailbox link needs.
        attempt_ttl_s: How long an attempt stays pending.
        verify_token: ``(token, audience) -> claims``; raises for an invalid token.
        consented_scopes: ``(username, client_id) -> scopes`` the user consented to.
        authority: Returns the authority URL the organisation advertises.
        seed: Seed for generated ids.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        lock: threading.RLock | None = None,
        organisation_id: str = "org_northwind",
        name: str = "Northwind Haulage",
        tenant_id: str = "",
        client_id: str = "",
        required_link_scopes: Iterable[str] = (),
        attempt_ttl_s: float = 600.0,
        verify_token: Callable[[str, str], Mapping[str, Any]] | None = None,
        consented_scopes: Callable[[str, str], set[str]] | None = None,
        authority: Callable[[], str] = lambda: "",
        seed: int = 0,
    ) -> None:
        self._clock = clock
        self.lock = lock if lock is not None else threading.RLock()
        self.organisation_id = organisation_id
        self.name = name
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.required_link_scopes = tuple(required_link_scopes)
        self.attempt_ttl_s = float(attempt_ttl_s)
        self.verify_token = verify_token
        self.consented_scopes = consented_scopes
        self.authority = authority
        self.before_read: Callable[[], None] | None = None
        self.on_mailbox_created: Callable[[MailboxRecord], None] | None = None
        self._ids = _IdSource(seed)
        self._nonce = uuid.uuid4().hex[:8]
        self._version = 0
        self._event_seq = 0
        self._mailboxes: dict[str, MailboxRecord] = {}
        self._by_address: dict[str, str] = {}
        self._order: list[str] = []
        self._attempts: dict[str, Attempt] = {}
        self._pending: dict[str, Attempt] = {}

    # Time

    def now(self) -> float:
        """The sandbox time."""
        return self._clock()

    # Reading

    def _refresh(self) -> None:
        if self.before_read is not None:
            self.before_read()
        self.expire_attempts()

    def organisation_json(self) -> dict[str, Any]:
        """The ``/v1/organisation`` body."""
        return {
            "id": self.organisation_id,
            "name": self.name,
            "tenant_id": self.tenant_id,
            "mail": {
                "client_id": self.client_id,
                "authority": self.authority(),
                "required_link_scopes": list(self.required_link_scopes),
            },
        }

    def organisation_etag(self) -> str:
        """Strong ETag of the organisation body."""
        raw = json.dumps(self.organisation_json(), sort_keys=True).encode()
        return f'"{hashlib.sha256(raw).hexdigest()[:20]}"'

    def get(self, mailbox_id: str) -> MailboxRecord:
        """The mailbox with ``mailbox_id``.

        Raises:
            ApiError: 404 ``mailbox_not_found``.
        """
        with self.lock:
            self._refresh()
            return self._get(mailbox_id)

    def _get(self, mailbox_id: str) -> MailboxRecord:
        record = self._mailboxes.get(mailbox_id)
        if record is None:
            raise ApiError(404, "mailbox_not_found", f"There is no mailbox with id {mailbox_id}.")
        return record

    def find_by_address(self, address: str) -> MailboxRecord | None:
        """The mailbox with ``address`` (case-insensitive), or None."""
        with self.lock:
            mailbox_id = self._by_address.get(address.lower())
            return self._mailboxes.get(mailbox_id) if mailbox_id else None

    def all(self) -> list[MailboxRecord]:
        """Every mailbox in id order (for tests and the seed)."""
        with self.lock:
            return [self._mailboxes[i] for i in self._order]

    def __len__(self) -> int:
        with self.lock:
            return len(self._mailboxes)

    def etag(self, record: MailboxRecord) -> str:
        """The strong ETag of a mailbox's current revision."""
        raw = f"{self._nonce}:{record.id}:{record.revision}".encode()
        return f'"{hashlib.sha256(raw).hexdigest()[:20]}"'

    def mailbox_json(self, record: MailboxRecord) -> dict[str, Any]:
        """The contract's Mailbox object."""
        attempt = self._attempts.get(record.attempt_id) if record.attempt_id else None
        return {
            "id": record.id,
            "address": record.address,
            "display_name": record.display_name,
            "status": record.status,
            "status_reason": record.status_reason,
            "status_changed_at": iso_z(record.status_changed_at),
            "linked_at": iso_z(record.linked_at) if record.linked_at is not None else None,
            "linked_by": record.linked_by,
            "granted_scopes": list(record.granted_scopes),
            "last_sync_at": iso_z(record.last_sync_at) if record.last_sync_at else None,
            "last_error": record.last_error.to_json() if record.last_error else None,
            "etag": self.etag(record),
            "authorisation": (
                {
                    "id": attempt.id,
                    "kind": attempt.kind,
                    "expires_at": iso_z(attempt.expires_at),
                    "started_by": attempt.started_by,
                }
                if attempt is not None and attempt.status == "pending"
                else None
            ),
        }

    def collection_etag(self) -> str:
        """Weak ETag of the whole collection; changes whenever any mailbox changes."""
        with self.lock:
            self._refresh()
            return f'W/"{self._nonce}-{self._version}"'

    def list_page(
        self, *, limit: int = DEFAULT_PAGE, cursor: str | None = None, statuses: Iterable[str] = ()
    ) -> tuple[list[MailboxRecord], str | None, int]:
        """One page of mailboxes in id order.

        Args:
            limit: Page size, 1 to 500.
            cursor: ``next_cursor`` of the previous page, or None for the first.
            statuses: Only mailboxes in these states (empty: all).

        Returns:
            ``(items, next_cursor, total)``: ``total`` counts every match, not the page.

        Raises:
            ApiError: 400 ``invalid_request`` or ``invalid_cursor``.
        """
        if not 1 <= limit <= MAX_PAGE:
            raise ApiError(400, "invalid_request", f"limit must be between 1 and {MAX_PAGE}.")
        wanted = set(statuses)
        with self.lock:
            self._refresh()
            start = 0
            if cursor:
                after = _decode_cursor(cursor).get("after")
                if not isinstance(after, str):
                    raise ApiError(400, "invalid_cursor", "The cursor was not issued by this API.")
                start = bisect_right(self._order, after)
            items: list[MailboxRecord] = []
            next_cursor = None
            for mailbox_id in self._order[start:]:
                record = self._mailboxes[mailbox_id]
                if wanted and record.status not in wanted:
                    continue
                if len(items) == limit:
                    next_cursor = _encode_cursor({"after": items[-1].id})
                    break
                items.append(record)
            if wanted:
                total = sum(1 for r in self._mailboxes.values() if r.status in wanted)
            else:
                total = len(self._mailboxes)
            return items, next_cursor, total

    # Changing

    def _bump(self, record: MailboxRecord) -> None:
        record.revision += 1
        self._version += 1

    def _event(
        self,
        record: MailboxRecord,
        ctx: RequestContext,
        action: str,
        detail: str,
        *,
        at: float | None = None,
    ) -> None:
        self._event_seq += 1
        record.events.append(
            Event(
                seq=self._event_seq,
                at=self.now() if at is None else at,
                actor=ctx.actor,
                action=action,
                detail=detail,
                app_version=ctx.app_version,
                machine=ctx.machine,
            )
        )

    def _set_status(self, record: MailboxRecord, status: str, reason: str | None) -> None:
        if record.status != status:
            record.status_changed_at = self.now()
        record.status = status
        record.status_reason = reason

    def _check_if_match(self, record: MailboxRecord, if_match: str | None) -> None:
        if if_match is None or not if_match.strip():
            raise ApiError(
                428,
                "precondition_required",
                "Send the mailbox's ETag in If-Match so a change made by someone else "
                "is not overwritten.",
            )
        if not if_match_satisfied(if_match, self.etag(record)):
            raise ApiError(
                412,
                "precondition_failed",
                f"Mailbox {record.address} was changed since it was read; read it again.",
            )

    def record_event(
        self,
        record: MailboxRecord,
        action: str,
        detail: str,
        *,
        ctx: RequestContext = SYSTEM,
        at: float | None = None,
    ) -> None:
        """Append an entry to a mailbox's audit trail (``at`` defaults to now)."""
        with self.lock:
            self._event(record, ctx, action, detail, at=at)

    def insert(
        self, record: MailboxRecord, *, ctx: RequestContext = SYSTEM, audit: bool = True
    ) -> MailboxRecord:
        """Add a prepared mailbox as it is (seed data); no validation, no attempt.

        Raises:
            ApiError: 409 ``mailbox_exists``.
        """
        with self.lock:
            key = record.address.lower()
            if key in self._by_address or record.id in self._mailboxes:
                raise ApiError(409, "mailbox_exists", f"{record.address} is already listed.")
            if not record.status_changed_at:
                record.status_changed_at = self.now()
            self._mailboxes[record.id] = record
            self._by_address[key] = record.id
            insort(self._order, record.id)
            self._version += 1
            if audit:
                self._event(record, ctx, "mailbox_added", f"Added {record.address}.")
            return record

    def insert_many(self, records: Iterable[MailboxRecord]) -> None:
        """Add many prepared mailboxes at once (the large organisation); no events."""
        with self.lock:
            for record in records:
                key = record.address.lower()
                if key in self._by_address or record.id in self._mailboxes:
                    raise ApiError(409, "mailbox_exists", f"{record.address} is already listed.")
                self._mailboxes[record.id] = record
                self._by_address[key] = record.id
            self._order = sorted(self._mailboxes)
            self._version += 1

    def new_mailbox_id(self) -> str:
        """A fresh mailbox id."""
        with self.lock:
            return self._ids.next("mbx")

    def create(
        self, address: str, display_name: str | None, *, ctx: RequestContext
    ) -> MailboxRecord:
        """Add a mailbox to the organisation, unlinked.

        Raises:
            ApiError: 422 ``invalid_address``, 409 ``mailbox_exists``.
        """
        address = address.strip()
        if len(address) > 254 or not _ADDRESS.match(address):
            raise ApiError(422, "invalid_address", f"{address!r} is not an email address.")
        with self.lock:
            existing = self.find_by_address(address)
            if existing is not None:
                raise ApiError(
                    409, "mailbox_exists", f"{existing.address} is already listed as {existing.id}."
                )
            name = (display_name or "").strip() or address.split("@", 1)[0]
            record = MailboxRecord(
                id=self.new_mailbox_id(),
                address=address,
                display_name=name,
                status_changed_at=self.now(),
            )
            self.insert(record, ctx=ctx)
            if self.on_mailbox_created is not None:
                self.on_mailbox_created(record)
            return record

    def delete(self, mailbox_id: str, *, if_match: str | None, ctx: RequestContext) -> None:
        """Remove a mailbox (its pending attempt goes with it).

        Raises:
            ApiError: 404, 428, 412.
        """
        with self.lock:
            self._refresh()
            record = self._get(mailbox_id)
            self._check_if_match(record, if_match)
            if record.attempt_id:
                attempt = self._attempts[record.attempt_id]
                attempt.status = "failed"
                attempt.finished_at = self.now()
                self._pending.pop(attempt.id, None)
            del self._mailboxes[mailbox_id]
            del self._by_address[record.address.lower()]
            self._order.remove(mailbox_id)
            self._version += 1
            logger.info("sandbox mailbox %s removed by %s", record.address, ctx.actor)

    # Attempts

    def start_attempt(
        self, mailbox_id: str, kind: str, *, if_match: str | None, ctx: RequestContext
    ) -> Attempt:
        """Start authorising a mailbox; it becomes ``authorising``.

        Raises:
            ApiError: 422 ``validation_failed`` (kind), 404, 428, 412, 409
                ``attempt_in_progress`` or ``not_authorisable``.
        """
        if kind not in ATTEMPT_KINDS:
            raise ApiError(422, "validation_failed", 'kind must be "authorise" or "reauthorise".')
        with self.lock:
            self._refresh()
            record = self._get(mailbox_id)
            self._check_if_match(record, if_match)
            if record.status == STATUS_AUTHORISING and record.attempt_id:
                pending = self._attempts[record.attempt_id]
                raise ApiError(
                    409,
                    "attempt_in_progress",
                    f"{pending.started_by} started authorising {record.address} at "
                    f"{iso_z(pending.started_at)}; it expires at {iso_z(pending.expires_at)}.",
                )
            if record.status not in AUTHORISABLE:
                raise ApiError(
                    409,
                    "not_authorisable",
                    f"{record.address} is {record.status}; "
                    + (
                        "reset its link status first."
                        if record.status == STATUS_LINK_FAILED
                        else "it cannot be authorised in this state."
                    ),
                )
            now = self.now()
            attempt = Attempt(
                id=self._ids.next("att"),
                mailbox_id=record.id,
                kind=kind,
                started_at=now,
                expires_at=now + self.attempt_ttl_s,
                login_hint=record.address,
                required_scopes=self.required_link_scopes,
                previous_status=record.status,
                started_by=ctx.actor,
            )
            self._attempts[attempt.id] = attempt
            self._pending[attempt.id] = attempt
            record.attempt_id = attempt.id
            self._set_status(record, STATUS_AUTHORISING, f"{kind.capitalize()} started")
            self._bump(record)
            self._event(
                record, ctx, "authorisation_started", f"{kind.capitalize()} attempt {attempt.id}."
            )
            return attempt

    def get_attempt(self, mailbox_id: str, attempt_id: str) -> Attempt:
        """An attempt of a mailbox.

        Raises:
            ApiError: 404 ``mailbox_not_found`` or ``attempt_not_found``.
        """
        with self.lock:
            self._refresh()
            self._get(mailbox_id)
            attempt = self._attempts.get(attempt_id)
            if attempt is None or attempt.mailbox_id != mailbox_id:
                raise ApiError(
                    404, "attempt_not_found", f"Mailbox {mailbox_id} has no attempt {attempt_id}."
                )
            return attempt

    def _pending_attempt(self, mailbox_id: str, attempt_id: str) -> tuple[MailboxRecord, Attempt]:
        attempt = self.get_attempt(mailbox_id, attempt_id)
        record = self._get(mailbox_id)
        if attempt.status == "expired":
            raise ApiError(
                410,
                "attempt_expired",
                f"The attempt expired at {iso_z(attempt.expires_at)}; start a new one.",
            )
        if attempt.status != "pending":
            raise ApiError(
                409, "attempt_not_pending", f"Attempt {attempt.id} has already {attempt.status}."
            )
        return record, attempt

    def complete_attempt(
        self, mailbox_id: str, attempt_id: str, access_token: str, *, ctx: RequestContext
    ) -> MailboxRecord:
        """Finish an attempt with the mailbox account's access token for the API.

        Raises:
            ApiError: 404, 410 ``attempt_expired``, 409 ``attempt_not_pending``, 422
                ``invalid_token``, ``account_mismatch`` or ``insufficient_scope``.
        """
        with self.lock:
            record, attempt = self._pending_attempt(mailbox_id, attempt_id)
            if self.verify_token is None:
                raise ApiError(422, "invalid_token", "This sandbox cannot verify tokens.")
            try:
                claims = self.verify_token(access_token, API_AUDIENCE)
            except Exception as exc:
                raise ApiError(
                    422, "invalid_token", f"The mailbox's access token was refused: {exc}"
                ) from exc

            username = str(claims.get("preferred_username") or claims.get("upn") or "")
            if username.lower() != record.address.lower():
                raise ApiError(
                    422,
                    "account_mismatch",
                    f"The token belongs to {username or 'an unnamed account'}, "
                    f"not to the mailbox {record.address}.",
                )

            client_id = str(claims.get("azp") or claims.get("appid") or self.client_id)
            consented = (
                self.consented_scopes(username, client_id) if self.consented_scopes else set()
            )
            missing = [
                scope
                for scope in attempt.required_scopes
                if normalise_scope(scope) not in {normalise_scope(s) for s in consented}
            ]
            if missing:
                raise ApiError(
                    422,
                    "insufficient_scope",
                    f"{record.address} has not consented to: {', '.join(missing)}.",
                )

            now = self.now()
            attempt.status = "completed"
            attempt.finished_at = now
            self._pending.pop(attempt.id, None)
            record.attempt_id = None
            self._set_status(record, STATUS_LINKED, None)
            record.linked_at = now
            record.linked_by = ctx.actor
            record.granted_scopes = attempt.required_scopes
            record.last_error = None
            self._bump(record)
            self._event(
                record,
                ctx,
                "mailbox_linked",
                f"{attempt.kind.capitalize()} attempt {attempt.id} completed as {username}.",
            )
            return record

    def fail_attempt(
        self,
        mailbox_id: str,
        attempt_id: str,
        reason: str,
        *,
        error_code: str | None = None,
        message: str | None = None,
        ctx: RequestContext,
    ) -> MailboxRecord:
        """Record that an attempt failed or was cancelled.

        The mailbox becomes ``link_failed``, except a voluntary reauthorise of a linked
        mailbox, which stays linked.

        Raises:
            ApiError: 422 ``validation_failed`` (reason), 404, 410, 409.
        """
        if reason not in FAILURE_REASONS:
            raise ApiError(
                422, "validation_failed", f"reason must be one of: {', '.join(FAILURE_REASONS)}."
            )
        with self.lock:
            record, attempt = self._pending_attempt(mailbox_id, attempt_id)
            self._finish_failed(
                record,
                attempt,
                reason,
                error_code=error_code,
                message=message,
                ctx=ctx,
                outcome="failed",
            )
            return record

    def _finish_failed(
        self,
        record: MailboxRecord,
        attempt: Attempt,
        reason: str,
        *,
        error_code: str | None,
        message: str | None,
        ctx: RequestContext,
        outcome: str,
    ) -> None:
        now = self.now()
        attempt.status = outcome
        attempt.finished_at = now
        self._pending.pop(attempt.id, None)
        record.attempt_id = None
        text = message or _FAILURE_TEXT[reason]
        record.last_error = LastError(code=error_code or reason, message=text, at=now)
        if attempt.kind == "reauthorise" and attempt.previous_status == STATUS_LINKED:
            # A voluntary reauthorise that failed loses nothing: the old link still works.
            self._set_status(record, STATUS_LINKED, None)
        else:
            self._set_status(record, STATUS_LINK_FAILED, text)
        self._bump(record)
        action = "authorisation_expired" if outcome == "expired" else "authorisation_failed"
        self._event(
            record, ctx, action, f"{attempt.kind.capitalize()} attempt {attempt.id}: {reason}."
        )

    def expire_attempts(self) -> int:
        """Fail every pending attempt past its ``expires_at`` as timed out.

        Returns:
            How many attempts expired.
        """
        with self.lock:
            now = self.now()
            due = [a for a in self._pending.values() if a.expires_at <= now]
            for attempt in due:
                record = self._mailboxes.get(attempt.mailbox_id)
                if record is None:
                    self._pending.pop(attempt.id, None)
                    continue
                self._finish_failed(
                    record,
                    attempt,
                    "timeout",
                    error_code="timeout",
                    message="The authorisation was abandoned and expired at "
                    f"{iso_z(attempt.expires_at)}.",
                    ctx=SYSTEM,
                    outcome="expired",
                )
            return len(due)

    def reset(self, mailbox_id: str, *, if_match: str | None, ctx: RequestContext) -> MailboxRecord:
        """Reset a failed link to ``unlinked``.

        Raises:
            ApiError: 404, 428, 412, 409 ``not_resettable``.
        """
        with self.lock:
            self._refresh()
            record = self._get(mailbox_id)
            self._check_if_match(record, if_match)
            if record.status != STATUS_LINK_FAILED:
                raise ApiError(
                    409,
                    "not_resettable",
                    f"{record.address} is {record.status}; only a failed link can be reset.",
                )
            self._set_status(record, STATUS_UNLINKED, "Link status reset")
            record.linked_at = None
            record.linked_by = None
            record.granted_scopes = ()
            record.last_error = None
            self._bump(record)
            self._event(record, ctx, "link_reset", "Link status reset to unlinked.")
            return record

    # Sync and grants

    def is_linked(self, address: str) -> bool:
        """Whether Qargo holds a working link to ``address`` (for the mail simulation)."""
        with self.lock:
            record = self.find_by_address(address)
            return record is not None and (
                record.status == STATUS_LINKED
                or (
                    record.status == STATUS_AUTHORISING
                    and record.attempt_id is not None
                    and self._attempts[record.attempt_id].previous_status == STATUS_LINKED
                )
            )

    def record_sync(
        self, address: str, internet_message_id: str, received_at: float, synced_at: float
    ) -> None:
        """Record that Qargo's sync saw a message (called by the mail simulation)."""
        with self.lock:
            record = self.find_by_address(address)
            if record is None:
                return
            record.synced[internet_message_id] = SyncedMessage(
                internet_message_id=internet_message_id,
                received_at=received_at,
                synced_at=synced_at,
            )
            if record.last_sync_at is None or synced_at > record.last_sync_at:
                record.last_sync_at = synced_at
                self._bump(record)

    def synced_messages(
        self, mailbox_id: str, internet_message_id: str | None = None
    ) -> list[SyncedMessage]:
        """Messages Qargo's sync saw in a mailbox, newest first.

        Raises:
            ApiError: 404 ``mailbox_not_found``.
        """
        with self.lock:
            self._refresh()
            record = self._get(mailbox_id)
            if internet_message_id is not None:
                found = record.synced.get(internet_message_id.strip())
                return [found] if found else []
            return sorted(record.synced.values(), key=lambda m: m.synced_at, reverse=True)

    def on_grant_revoked(self, username: str) -> None:
        """The identity platform revoked ``username``'s grant: its linked mailbox needs work."""
        with self.lock:
            record = self.find_by_address(username)
            if record is None:
                return
            now = self.now()
            reason = "The mailbox's grant was revoked; reauthorise it."
            error = LastError(
                code="invalid_grant",
                message="AADSTS50173: The provided grant has expired due to it being revoked, "
                "a fresh auth token is needed. The user might have changed or reset their "
                "password.",
                at=now,
            )
            if record.status == STATUS_LINKED:
                self._set_status(record, STATUS_REAUTHORISATION_REQUIRED, reason)
            elif record.status == STATUS_AUTHORISING and record.attempt_id:
                attempt = self._attempts[record.attempt_id]
                if attempt.previous_status == STATUS_LINKED:
                    # If this attempt fails, the old link is no longer there to fall back to.
                    attempt.previous_status = STATUS_REAUTHORISATION_REQUIRED
            else:
                return
            record.last_error = error
            self._bump(record)
            self._event(record, SYSTEM, "grant_revoked", reason)

    def admin_update(
        self, mailbox_id: str, *, actor: str = "admin2@northwind-haulage.example", **fields: Any
    ) -> MailboxRecord:
        """Change a mailbox as another admin (or Qargo itself) would, for conflict tests.

        Args:
            mailbox_id: The mailbox.
            actor: Who the audit trail says made the change.
            **fields: Any of ``status``, ``status_reason``, ``display_name``,
                ``last_error`` (``{"code","message"}`` or None), ``last_sync_at`` (RFC 3339
                or epoch seconds), ``linked_by``. A status other than ``authorising`` ends
                a pending attempt.

        Raises:
            ApiError: 404; 422 ``validation_failed`` for an unknown field.
        """
        allowed = {
            "status",
            "status_reason",
            "display_name",
            "last_error",
            "last_sync_at",
            "linked_by",
        }
        unknown = set(fields) - allowed
        if unknown:
            raise ApiError(
                422, "validation_failed", f"Unknown field(s): {', '.join(sorted(unknown))}."
            )
        with self.lock:
            self._refresh()
            record = self._get(mailbox_id)
            ctx = RequestContext(actor=actor)
            changes: list[str] = []
            now = self.now()
            if "status" in fields:
                status = str(fields["status"])
                if record.attempt_id and status != STATUS_AUTHORISING:
                    attempt = self._attempts[record.attempt_id]
                    attempt.status = "failed"
                    attempt.finished_at = now
                    self._pending.pop(attempt.id, None)
                    record.attempt_id = None
                self._set_status(record, status, fields.get("status_reason"))
                if status == STATUS_LINKED and record.linked_at is None:
                    record.linked_at = now
                    record.linked_by = actor
                    record.granted_scopes = self.required_link_scopes
                changes.append(f"status {status}")
            elif "status_reason" in fields:
                record.status_reason = fields["status_reason"]
                changes.append("status reason")
            if "display_name" in fields:
                record.display_name = str(fields["display_name"])
                changes.append("display name")
            if "linked_by" in fields:
                record.linked_by = fields["linked_by"]
                changes.append("linked by")
            if "last_error" in fields:
                raw = fields["last_error"]
                record.last_error = (
                    LastError(
                        code=str(raw.get("code")), message=str(raw.get("message", "")), at=now
                    )
                    if isinstance(raw, Mapping)
                    else None
                )
                changes.append("last error")
            if "last_sync_at" in fields:
                raw_sync = fields["last_sync_at"]
                record.last_sync_at = parse_iso(raw_sync) if isinstance(raw_sync, str) else raw_sync
                changes.append("last sync")
            self._bump(record)
            self._event(record, ctx, "mailbox_changed", "Changed " + ", ".join(changes) + ".")
            return record

    # Audit trail

    def events_page(
        self, mailbox_id: str, *, cursor: str | None = None, limit: int = DEFAULT_PAGE
    ) -> tuple[list[Event], str | None]:
        """A page of a mailbox's audit trail, newest first.

        Raises:
            ApiError: 404, 400 ``invalid_cursor`` or ``invalid_request``.
        """
        if not 1 <= limit <= MAX_PAGE:
            raise ApiError(400, "invalid_request", f"limit must be between 1 and {MAX_PAGE}.")
        with self.lock:
            self._refresh()
            record = self._get(mailbox_id)
            events = list(reversed(record.events))
            if cursor:
                before = _decode_cursor(cursor).get("before")
                if not isinstance(before, int):
                    raise ApiError(400, "invalid_cursor", "The cursor was not issued by this API.")
                events = [e for e in events if e.seq < before]
            page = events[:limit]
            next_cursor = _encode_cursor({"before": page[-1].seq}) if len(events) > limit else None
            return page, next_cursor


def normalise_scope(scope: str) -> str:
    """Compare scopes the way the identity platform does (Graph's short names expanded)."""
    value = scope.strip().lower()
    if "/" not in value and value not in ("openid", "profile", "email", "offline_access"):
        value = "https://graph.microsoft.com/" + value
    return value


class _IdSource:
    """Deterministic, sortable-enough ids for one store."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(f"api:{seed}")

    def next(self, prefix: str) -> str:
        return f"{prefix}_{self._rng.getrandbits(64):016x}"


# Idempotency


@dataclass
class _StoredResponse:
    fingerprint: str
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    at: float


class IdempotencyCache:
    """Responses to POSTs by ``(user, Idempotency-Key)``, kept for a day."""

    def __init__(self, ttl_s: float = IDEMPOTENCY_TTL_S) -> None:
        self._ttl_s = ttl_s
        self._entries: dict[tuple[str, str], _StoredResponse] = {}

    def lookup(self, scope: str, key: str, fingerprint: str, now: float) -> _StoredResponse | None:
        """The stored response for a retry, None for a new key.

        Raises:
            ApiError: 422 ``idempotency_key_reused`` when the key came with another request.
        """
        self._entries = {k: v for k, v in self._entries.items() if now - v.at < self._ttl_s}
        stored = self._entries.get((scope, key))
        if stored is None:
            return None
        if stored.fingerprint != fingerprint:
            raise ApiError(
                422,
                "idempotency_key_reused",
                "This Idempotency-Key was already used with a different request; use a new key "
                "for a new request.",
            )
        return stored

    def remember(self, scope: str, key: str, stored: _StoredResponse) -> None:
        """Keep a response for retries."""
        self._entries[(scope, key)] = stored


def _fingerprint(method: str, path: str, body: bytes) -> str:
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        canonical = body
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + canonical).hexdigest()


# The WSGI app

_MAILBOX = "/v1/organisation/linked-mailboxes/<mailbox_id>"
_URLS = Map(
    [
        Rule("/v1/me", endpoint="me", methods=["GET"]),
        Rule("/v1/organisation", endpoint="organisation", methods=["GET"]),
        Rule("/v1/organisation/linked-mailboxes", endpoint="list", methods=["GET"]),
        Rule("/v1/organisation/linked-mailboxes", endpoint="create", methods=["POST"]),
        Rule(_MAILBOX, endpoint="get", methods=["GET"]),
        Rule(_MAILBOX, endpoint="delete", methods=["DELETE"]),
        Rule(f"{_MAILBOX}/authorisations", endpoint="start", methods=["POST"]),
        Rule(f"{_MAILBOX}/authorisations/<attempt_id>", endpoint="attempt", methods=["GET"]),
        Rule(f"{_MAILBOX}/authorisations/<attempt_id>", endpoint="complete", methods=["PUT"]),
        Rule(f"{_MAILBOX}/authorisations/<attempt_id>/failure", endpoint="fail", methods=["POST"]),
        Rule(f"{_MAILBOX}/reset", endpoint="reset", methods=["POST"]),
        Rule(f"{_MAILBOX}/synced-messages", endpoint="synced", methods=["GET"]),
        Rule(f"{_MAILBOX}/events", endpoint="events", methods=["GET"]),
    ],
    strict_slashes=False,
    merge_slashes=False,
)


def _header_value(request: Request, name: str) -> str | None:
    value = request.headers.get(name)
    if value is None:
        return None
    value = value.strip()
    return value[:200] if value else None


class OrganisationApi:
    """The organisation API as a WSGI app (mount it under ``/api``).

    Args:
        store: The organisation's store.
        verify_token: ``(token, audience) -> claims``; raises for an invalid token.
        is_super_admin: Whether the claims belong to a super admin.
    """

    def __init__(
        self,
        store: OrganisationStore,
        *,
        verify_token: Callable[[str, str], Mapping[str, Any]],
        is_super_admin: Callable[[Mapping[str, Any]], bool],
    ) -> None:
        self.store = store
        self.verify_token = verify_token
        self.is_super_admin = is_super_admin
        self.idempotency = IdempotencyCache()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Serve one request."""
        request = Request(environ)
        request.max_content_length = 1024 * 1024
        correlation_id = self._correlation_id(request)
        try:
            response = self._dispatch(request, correlation_id)
        except ApiError as error:
            response = self._problem(error, correlation_id)
        except Exception:
            logger.exception("sandbox API failed on %s %s", request.method, request.path)
            response = self._problem(
                ApiError(500, "internal_error", "The sandbox API failed; see its log."),
                correlation_id,
            )
        response.headers.setdefault("request-id", correlation_id)
        response.headers.setdefault("x-correlation-id", correlation_id)
        return response(environ, start_response)

    @staticmethod
    def _correlation_id(request: Request) -> str:
        for name in ("x-correlation-id", "client-request-id"):
            value = request.headers.get(name, "")
            if re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", value):
                return value
        return str(uuid.uuid4())

    @staticmethod
    def _problem(error: ApiError, correlation_id: str) -> Response:
        response = Response(
            json.dumps(problem_body(error, correlation_id)),
            status=error.status,
            content_type="application/problem+json",
        )
        for name, value in error.headers:
            response.headers[name] = value
        response.headers["Cache-Control"] = "no-store"
        return response

    @staticmethod
    def _json(
        body: Any,
        status: int = 200,
        *,
        etag: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> Response:
        response = Response(json.dumps(body), status=status, content_type="application/json")
        if etag is not None:
            response.headers["ETag"] = etag
        for name, value in headers:
            response.headers[name] = value
        response.headers["Cache-Control"] = "no-cache"
        return response

    def _dispatch(self, request: Request, correlation_id: str) -> Response:
        adapter = _URLS.bind_to_environ(request.environ)
        try:
            endpoint, args = adapter.match()
        except MethodNotAllowed as exc:
            allowed = ", ".join(exc.valid_methods or [])
            raise ApiError(
                405,
                "method_not_allowed",
                f"{request.method} is not allowed here.",
                headers=[("Allow", allowed)],
            ) from exc
        except NotFound as exc:
            raise ApiError(404, "not_found", f"No resource at {request.path}.") from exc
        except HTTPException as exc:
            raise ApiError(404, "not_found", f"No resource at {request.path}.") from exc

        claims = self._authenticate(request)
        ctx = RequestContext(
            actor=str(claims.get("preferred_username") or claims.get("oid") or "unknown"),
            app_version=_header_value(request, "Qargo-App-Version"),
            machine=_header_value(request, "Qargo-Machine"),
            user_agent=_header_value(request, "User-Agent"),
            claims=claims,
        )
        if endpoint != "me" and not self.is_super_admin(claims):
            raise ApiError(
                403,
                "not_super_admin",
                f"{ctx.actor} is not a super admin of this organisation.",
            )

        handler = getattr(self, f"_on_{endpoint}")
        with self.store.lock:
            if request.method == "POST" and "Idempotency-Key" in request.headers:
                return self._idempotent(request, ctx, handler, args, correlation_id)
            response: Response = handler(request, ctx, **args)
            return response

    def _authenticate(self, request: Request) -> Mapping[str, Any]:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(
                401,
                "invalid_token",
                "Send an access token for the Qargo API as 'Authorization: Bearer <token>'.",
                headers=[("WWW-Authenticate", 'Bearer realm="qargo"')],
            )
        try:
            claims = self.verify_token(token.strip(), API_AUDIENCE)
        except Exception as exc:
            expired = getattr(exc, "code", "") == "token_expired"
            code = "token_expired" if expired else "invalid_token"
            detail = "The access token has expired." if expired else f"Token refused: {exc}"
            raise ApiError(
                401,
                code,
                detail,
                headers=[
                    (
                        "WWW-Authenticate",
                        f'Bearer realm="qargo", error="invalid_token", error_description="{code}"',
                    )
                ],
            ) from exc
        scopes = str(claims.get("scp", "")).split()
        if ADMIN_SCOPE_NAME not in scopes and f"{API_AUDIENCE}/{ADMIN_SCOPE_NAME}" not in scopes:
            raise ApiError(
                403,
                "insufficient_scope",
                f"The access token lacks the {ADMIN_SCOPE_NAME} scope.",
                headers=[
                    (
                        "WWW-Authenticate",
                        f'Bearer realm="qargo", error="insufficient_scope", '
                        f'scope="{API_AUDIENCE}/{ADMIN_SCOPE_NAME}"',
                    )
                ],
            )
        return claims

    def _idempotent(
        self,
        request: Request,
        ctx: RequestContext,
        handler: Callable[..., Response],
        args: Mapping[str, Any],
        correlation_id: str,
    ) -> Response:
        key = request.headers.get("Idempotency-Key", "").strip()
        if not _HEADER_VALUE.match(key):
            raise ApiError(
                400, "invalid_request", "Idempotency-Key must be 1-255 visible characters."
            )
        body = request.get_data(cache=True)
        fingerprint = _fingerprint(request.method, request.path, body)
        now = self.store.now()
        stored = self.idempotency.lookup(ctx.actor, key, fingerprint, now)
        if stored is not None:
            response = Response(stored.body, status=stored.status, headers=stored.headers)
            response.headers["Idempotent-Replayed"] = "true"
            return response
        try:
            response = handler(request, ctx, **args)
        except ApiError as error:
            response = self._problem(error, correlation_id)
        # Stored with the first request's ids, so a replay is the first response, headers and
        # all, and a problem's correlation_id matches its header.
        response.headers.setdefault("request-id", correlation_id)
        response.headers.setdefault("x-correlation-id", correlation_id)
        if response.status_code < 500 and response.status_code != 429:
            self.idempotency.remember(
                ctx.actor,
                key,
                _StoredResponse(
                    fingerprint=fingerprint,
                    status=response.status_code,
                    headers=list(response.headers.items()),
                    body=response.get_data(),
                    at=now,
                ),
            )
        return response

    # Request helpers

    @staticmethod
    def _body(request: Request) -> dict[str, Any]:
        data = request.get_data(cache=True)
        if not data.strip():
            return {}
        mimetype = request.mimetype or ""
        if mimetype != "application/json" and not mimetype.endswith("+json"):
            raise ApiError(415, "unsupported_media_type", "Send the body as application/json.")
        try:
            body = json.loads(data)
        except ValueError as exc:
            raise ApiError(400, "invalid_request", f"The body is not valid JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise ApiError(400, "invalid_request", "The body must be a JSON object.")
        return body

    @staticmethod
    def _limit(request: Request) -> int:
        raw = request.args.get("limit")
        if raw is None:
            return DEFAULT_PAGE
        try:
            return int(raw)
        except ValueError as exc:
            raise ApiError(400, "invalid_request", "limit must be a whole number.") from exc

    def _mailbox_response(
        self, record: MailboxRecord, status: int = 200, *, request: Request | None = None
    ) -> Response:
        headers: list[tuple[str, str]] = []
        if status == 201 and request is not None:
            location = f"{request.script_root}/v1/organisation/linked-mailboxes/{record.id}"
            headers.append(("Location", location))
        return self._json(
            self.store.mailbox_json(record), status, etag=self.store.etag(record), headers=headers
        )

    # Endpoints

    def _on_me(self, request: Request, ctx: RequestContext) -> Response:
        claims = ctx.claims
        admin = self.is_super_admin(claims)
        return self._json(
            {
                "id": str(claims.get("oid", "")),
                "username": ctx.actor,
                "display_name": str(claims.get("name") or ctx.actor),
                "tenant_id": str(claims.get("tid") or self.store.tenant_id),
                "is_super_admin": admin,
                "roles": ["super_admin"] if admin else [],
            }
        )

    def _on_organisation(self, request: Request, ctx: RequestContext) -> Response:
        etag = self.store.organisation_etag()
        inm = request.headers.get("If-None-Match")
        if inm and if_none_match_satisfied(inm, etag):
            return self._not_modified(etag)
        return self._json(self.store.organisation_json(), etag=etag)

    @staticmethod
    def _not_modified(etag: str) -> Response:
        response = Response(status=304)
        response.headers["ETag"] = etag
        response.headers["Cache-Control"] = "no-cache"
        return response

    def _on_list(self, request: Request, ctx: RequestContext) -> Response:
        etag = self.store.collection_etag()
        inm = request.headers.get("If-None-Match")
        if inm and if_none_match_satisfied(inm, etag):
            return self._not_modified(etag)
        statuses = [
            s.strip() for value in request.args.getlist("status") for s in value.split(",") if s
        ]
        items, next_cursor, total = self.store.list_page(
            limit=self._limit(request), cursor=request.args.get("cursor") or None, statuses=statuses
        )
        body = {
            "items": [self.store.mailbox_json(r) for r in items],
            "next_cursor": next_cursor,
            "total": total,
        }
        return self._json(body, etag=etag)

    def _on_create(self, request: Request, ctx: RequestContext) -> Response:
        body = self._body(request)
        address = body.get("address")
        display_name = body.get("display_name")
        if not isinstance(address, str):
            raise ApiError(422, "invalid_address", "Give the mailbox's address as a string.")
        if display_name is not None and not isinstance(display_name, str):
            raise ApiError(422, "validation_failed", "display_name must be a string.")
        record = self.store.create(address, display_name, ctx=ctx)
        return self._mailbox_response(record, 201, request=request)

    def _on_get(self, request: Request, ctx: RequestContext, mailbox_id: str) -> Response:
        record = self.store.get(mailbox_id)
        etag = self.store.etag(record)
        inm = request.headers.get("If-None-Match")
        if inm and if_none_match_satisfied(inm, etag):
            return self._not_modified(etag)
        return self._mailbox_response(record)

    def _on_delete(self, request: Request, ctx: RequestContext, mailbox_id: str) -> Response:
        self.store.delete(mailbox_id, if_match=request.headers.get("If-Match"), ctx=ctx)
        return Response(status=204)

    def _on_start(self, request: Request, ctx: RequestContext, mailbox_id: str) -> Response:
        body = self._body(request)
        kind = body.get("kind", "authorise")
        if not isinstance(kind, str):
            raise ApiError(422, "validation_failed", 'kind must be "authorise" or "reauthorise".')
        attempt = self.store.start_attempt(
            mailbox_id, kind, if_match=request.headers.get("If-Match"), ctx=ctx
        )
        record = self.store.get(mailbox_id)
        location = f"{request.script_root}/v1/organisation/linked-mailboxes/{mailbox_id}"
        return self._json(
            attempt.to_json(),
            201,
            etag=self.store.etag(record),
            headers=[("Location", f"{location}/authorisations/{attempt.id}")],
        )

    def _on_attempt(
        self, request: Request, ctx: RequestContext, mailbox_id: str, attempt_id: str
    ) -> Response:
        return self._json(self.store.get_attempt(mailbox_id, attempt_id).to_json())

    def _on_complete(
        self, request: Request, ctx: RequestContext, mailbox_id: str, attempt_id: str
    ) -> Response:
        body = self._body(request)
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise ApiError(422, "invalid_token", "Give the mailbox account's access_token.")
        record = self.store.complete_attempt(mailbox_id, attempt_id, token, ctx=ctx)
        return self._mailbox_response(record)

    def _on_fail(
        self, request: Request, ctx: RequestContext, mailbox_id: str, attempt_id: str
    ) -> Response:
        body = self._body(request)
        reason = body.get("reason")
        error_code = body.get("error_code")
        message = body.get("message")
        if not isinstance(reason, str):
            raise ApiError(
                422, "validation_failed", f"reason must be one of: {', '.join(FAILURE_REASONS)}."
            )
        if error_code is not None and not isinstance(error_code, str):
            raise ApiError(422, "validation_failed", "error_code must be a string.")
        if message is not None and not isinstance(message, str):
            raise ApiError(422, "validation_failed", "message must be a string.")
        record = self.store.fail_attempt(
            mailbox_id,
            attempt_id,
            reason,
            error_code=error_code[:200] if error_code else None,
            message=message[:2000] if message else None,
            ctx=ctx,
        )
        return self._mailbox_response(record)

    def _on_reset(self, request: Request, ctx: RequestContext, mailbox_id: str) -> Response:
        self._body(request)
        record = self.store.reset(mailbox_id, if_match=request.headers.get("If-Match"), ctx=ctx)
        return self._mailbox_response(record)

    def _on_synced(self, request: Request, ctx: RequestContext, mailbox_id: str) -> Response:
        wanted = request.args.get("internet_message_id")
        items = self.store.synced_messages(mailbox_id, wanted)
        return self._json({"items": [m.to_json() for m in items]})

    def _on_events(self, request: Request, ctx: RequestContext, mailbox_id: str) -> Response:
        events, next_cursor = self.store.events_page(
            mailbox_id, cursor=request.args.get("cursor") or None, limit=self._limit(request)
        )
        return self._json({"items": [e.to_json() for e in events], "next_cursor": next_cursor})


class ControlApi:
    """``/_sandbox/mailboxes``: inspect and change mailboxes behind the API's back.

    ``GET /_sandbox/mailboxes/{id}`` returns the mailbox; ``POST /_sandbox/mailboxes/{id}``
    with a JSON object of :meth:`OrganisationStore.admin_update` fields (plus ``actor``)
    changes it as another admin would.
    """

    def __init__(self, store: OrganisationStore) -> None:
        self.store = store

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Serve one control request."""
        request = Request(environ)
        parts = [p for p in request.path.split("/") if p]
        # The mount strips /_sandbox/mailboxes; the rest is the mailbox id.
        mailbox_id = parts[-1] if parts else ""
        try:
            if not mailbox_id:
                raise ApiError(404, "not_found", "Give a mailbox id.")
            if request.method == "GET":
                record = self.store.get(mailbox_id)
            elif request.method == "POST":
                body = OrganisationApi._body(request)
                actor = str(body.pop("actor", "admin2@northwind-haulage.example"))
                record = self.store.admin_update(mailbox_id, actor=actor, **body)
            else:
                raise ApiError(405, "method_not_allowed", "Use GET or POST.")
            with self.store.lock:
                payload = self.store.mailbox_json(record)
                etag = self.store.etag(record)
            response = OrganisationApi._json(payload, etag=etag)
        except ApiError as error:
            response = OrganisationApi._problem(error, str(uuid.uuid4()))
        return response(environ, start_response)


# Wiring into a world


def _account_is_super_admin(world: World) -> Callable[[Mapping[str, Any]], bool]:
    def check(claims: Mapping[str, Any]) -> bool:
        roles = claims.get("roles") or []
        if isinstance(roles, list) and any(
            str(r).lower() in ("super_admin", "superadmin", "qargo.superadmin") for r in roles
        ):
            return True
        account = world.get_account(str(claims.get("preferred_username") or ""))
        return bool(account is not None and account.is_super_admin)

    return check


def attach(world: World) -> OrganisationStore:
    """Create the world's organisation store (once) and connect it to identity and mail."""
    from qargo_desktop.sandbox.world import REQUIRED_LINK_SCOPES, ROLE_MAILBOX

    with world.lock:
        if isinstance(world.api_store, OrganisationStore):
            return world.api_store
        store = OrganisationStore(
            clock=world.clock.now,
            lock=world.lock,
            name=world.tenant_name,
            tenant_id=world.tenant_id,
            client_id=world.client_id,
            required_link_scopes=REQUIRED_LINK_SCOPES,
            attempt_ttl_s=world.options.attempt_ttl_s,
            verify_token=world.identity.verify_access_token,
            consented_scopes=lambda user, client: set(
                world.identity.consented_scopes(user, client)
            ),
            authority=lambda: world.authority,
            seed=world.options.seed,
        )

        def register_account(record: MailboxRecord) -> None:
            # A mailbox added through the API can be signed in to, so it can be authorised.
            domain = record.address.rsplit("@", 1)[-1].lower()
            if domain == world.tenant_domain and world.get_account(record.address) is None:
                world.add_account(record.address, record.display_name, role=ROLE_MAILBOX)

        store.on_mailbox_created = register_account
        world.api_store = store
        return store


def make_app(world: World) -> OrganisationApi:
    """The organisation API of ``world`` (mount it under ``/api``)."""
    store = attach(world)
    return OrganisationApi(
        store,
        verify_token=world.identity.verify_access_token,
        is_super_admin=_account_is_super_admin(world),
    )


def make_control_app(world: World) -> ControlApi:
    """The ``/_sandbox/mailboxes`` control endpoint of ``world``."""
    return ControlApi(attach(world))


__all__ = [
    "API_AUDIENCE",
    "ApiError",
    "Attempt",
    "ControlApi",
    "Event",
    "IdempotencyCache",
    "LastError",
    "MailboxRecord",
    "OrganisationApi",
    "OrganisationStore",
    "RequestContext",
    "SyncedMessage",
    "attach",
    "make_app",
    "make_control_app",
]
