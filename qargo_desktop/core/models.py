"""The domain: linked mailboxes, their link states, and what each state allows.

The organisation API owns the state; this module only parses what it says and
knows which actions each state offers. Parsing is tolerant where the contract
allows it (unknown status values, extra fields) and strict where a wrong value
would show a wrong state (missing id, address or status).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


class ContractError(ValueError):
    """A service answered with something its contract does not allow."""


class LinkStatus(enum.Enum):
    """The link states of DESIGN.md, plus ``UNKNOWN`` for values this version does not know."""

    LINKED = "linked"
    UNLINKED = "unlinked"
    REAUTHORISATION_REQUIRED = "reauthorisation_required"
    LINK_FAILED = "link_failed"
    AUTHORISING = "authorising"
    UNKNOWN = "unknown"

    @classmethod
    def parse(cls, raw: str) -> LinkStatus:
        """Map the API's ``status`` string to a state; anything unknown is ``UNKNOWN``."""
        for member in cls:
            if member.value == raw and member is not cls.UNKNOWN:
                return member
        return cls.UNKNOWN


class MailboxAction(enum.Enum):
    """What a person can do to a mailbox."""

    AUTHORISE = "authorise"
    REAUTHORISE = "reauthorise"
    RESET = "reset"
    SELFTEST = "selftest"
    CANCEL = "cancel"
    REMOVE = "remove"


_ACTIONS: dict[LinkStatus, tuple[MailboxAction, ...]] = {
    LinkStatus.LINKED: (MailboxAction.REAUTHORISE, MailboxAction.SELFTEST, MailboxAction.REMOVE),
    LinkStatus.UNLINKED: (MailboxAction.AUTHORISE, MailboxAction.REMOVE),
    LinkStatus.REAUTHORISATION_REQUIRED: (MailboxAction.REAUTHORISE, MailboxAction.REMOVE),
    LinkStatus.LINK_FAILED: (MailboxAction.RESET, MailboxAction.REMOVE),
    LinkStatus.AUTHORISING: (MailboxAction.CANCEL,),
    LinkStatus.UNKNOWN: (),
}


def allowed_actions(status: LinkStatus) -> tuple[MailboxAction, ...]:
    """Return the actions a mailbox in ``status`` offers, the main one first."""
    return _ACTIONS[status]


@dataclass(frozen=True, slots=True)
class LastError:
    """The last error the service recorded for a mailbox."""

    code: str
    message: str
    at: datetime | None


@dataclass(frozen=True, slots=True)
class Mailbox:
    """One linked mailbox as the organisation API describes it."""

    id: str
    address: str
    display_name: str
    status: LinkStatus
    raw_status: str
    etag: str
    status_reason: str | None = None
    status_changed_at: datetime | None = None
    linked_at: datetime | None = None
    linked_by: str | None = None
    granted_scopes: tuple[str, ...] = ()
    last_sync_at: datetime | None = None
    last_error: LastError | None = None
    attempt_id: str | None = None
    attempt_expires_at: datetime | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def actions(self) -> tuple[MailboxAction, ...]:
        """The actions this mailbox's state allows."""
        return allowed_actions(self.status)


def parse_time(value: object, *, field_name: str = "time") -> datetime | None:
    """Parse an RFC 3339 timestamp (or ``None``) into an aware UTC datetime."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ContractError(f"{field_name} is not a timestamp string")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ContractError(f"{field_name} is not an RFC 3339 timestamp") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _text(data: Mapping[str, Any], key: str, *, required: bool) -> str | None:
    value = data.get(key)
    if value is None:
        if required:
            raise ContractError(f"mailbox field {key!r} is missing")
        return None
    if not isinstance(value, str):
        raise ContractError(f"mailbox field {key!r} is not a string")
    if required and not value:
        raise ContractError(f"mailbox field {key!r} is empty")
    return value


def parse_mailbox(data: object, *, etag: str | None = None) -> Mailbox:
    """Build a :class:`Mailbox` from the API's JSON object.

    Args:
        data: The decoded JSON object.
        etag: The ``ETag`` response header, which wins over the body's ``etag``.

    Raises:
        ContractError: The object lacks a field the app cannot do without, or a
            field has the wrong type.
    """
    if not isinstance(data, Mapping):
        raise ContractError("mailbox is not a JSON object")
    mailbox_id = _text(data, "id", required=True)
    address = _text(data, "address", required=True)
    raw_status = _text(data, "status", required=True)
    assert mailbox_id is not None and address is not None and raw_status is not None
    body_etag = _text(data, "etag", required=False)
    display_name = _text(data, "display_name", required=False) or ""

    scopes_raw = data.get("granted_scopes") or []
    if not isinstance(scopes_raw, list) or not all(isinstance(s, str) for s in scopes_raw):
        raise ContractError("mailbox field 'granted_scopes' is not a list of strings")

    last_error = None
    error_raw = data.get("last_error")
    if error_raw is not None:
        if not isinstance(error_raw, Mapping):
            raise ContractError("mailbox field 'last_error' is not an object")
        last_error = LastError(
            code=str(error_raw.get("code") or "unknown"),
            message=str(error_raw.get("message") or ""),
            at=parse_time(error_raw.get("at"), field_name="last_error.at"),
        )

    attempt_id = None
    attempt_expires_at = None
    attempt_raw = data.get("authorisation")
    if isinstance(attempt_raw, Mapping):
        attempt_id = _text(attempt_raw, "id", required=False)
        attempt_expires_at = parse_time(
            attempt_raw.get("expires_at"), field_name="authorisation.expires_at"
        )

    known = {
        "id", "address", "display_name", "status", "status_reason", "status_changed_at",
        "linked_at", "linked_by", "granted_scopes", "last_sync_at", "last_error", "etag",
        "authorisation",
    }  # fmt: skip
    return Mailbox(
        id=mailbox_id,
        address=address,
        display_name=display_name,
        status=LinkStatus.parse(raw_status),
        raw_status=raw_status,
        etag=etag or body_etag or "",
        status_reason=_text(data, "status_reason", required=False),
        status_changed_at=parse_time(data.get("status_changed_at"), field_name="status_changed_at"),
        linked_at=parse_time(data.get("linked_at"), field_name="linked_at"),
        linked_by=_text(data, "linked_by", required=False),
        granted_scopes=tuple(scopes_raw),
        last_sync_at=parse_time(data.get("last_sync_at"), field_name="last_sync_at"),
        last_error=last_error,
        attempt_id=attempt_id,
        attempt_expires_at=attempt_expires_at,
        extra={k: v for k, v in data.items() if k not in known},
    )
