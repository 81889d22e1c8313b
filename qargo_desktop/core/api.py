"""Client of the Qargo organisation API (contract: resources/openapi/)."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import requests

from qargo_desktop import __version__
from qargo_desktop.core.errors import ApiError, Cancelled, SignInRequired, network_error
from qargo_desktop.core.models import ContractError, Mailbox, parse_mailbox, parse_time

log = logging.getLogger(__name__)

JsonObject = dict[str, Any]


class TokenProvider(Protocol):
    """Gives the admin's access token for the organisation API."""

    def __call__(self, *, force_refresh: bool = False) -> str:
        """Return an access token, refreshing it first when asked."""
        ...


@dataclass(frozen=True, slots=True)
class Me:
    """The signed-in person as the API sees them."""

    id: str
    username: str
    display_name: str
    tenant_id: str
    is_super_admin: bool


@dataclass(frozen=True, slots=True)
class Organisation:
    """The admin's organisation and its mail settings."""

    id: str
    name: str
    tenant_id: str
    mail_client_id: str
    mail_authority: str
    required_link_scopes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Attempt:
    """An authorisation attempt started on the API."""

    id: str
    mailbox_id: str
    kind: str
    expires_at: datetime | None
    login_hint: str
    required_scopes: tuple[str, ...]
    previous_status: str


@dataclass(frozen=True, slots=True)
class MailboxList:
    """A complete list of mailboxes and the collection's version."""

    items: tuple[Mailbox, ...]
    etag: str | None
    total: int


@dataclass(frozen=True, slots=True)
class SyncedMessage:
    """When Qargo's own sync saw a message."""

    internet_message_id: str
    synced_at: datetime | None
    received_at: datetime | None


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One entry of a mailbox's audit trail."""

    id: str
    at: datetime | None
    actor: str
    action: str
    detail: str
    app_version: str
    machine: str


class OrganisationClient:
    """Talks to the organisation API on behalf of the signed-in admin.

    Every call is synchronous and meant for a worker thread. A ``401`` is met in two
    steps: the token is refreshed and the call repeated once, and only then is the
    person asked to sign in again (:class:`SignInRequired`).
    """

    def __init__(
        self,
        base_url: str,
        session: requests.Session,
        token_provider: TokenProvider,
        *,
        machine: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._session = session
        self._token = token_provider
        self._machine = machine or socket.gethostname()
        self._timeout = timeout

    # -- plumbing -----------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: JsonObject | None = None,
        headers: Mapping[str, str] | None = None,
        cancel: threading.Event | None = None,
    ) -> requests.Response:
        url = f"{self._base}{path}"
        for attempt in (1, 2):
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            all_headers = {
                "Accept": "application/json",
                "Authorization": f"Bearer {self._token(force_refresh=attempt == 2)}",
                "Qargo-App-Version": __version__,
                "Qargo-Machine": self._machine,
                **(headers or {}),
            }
            started = time.monotonic()
            try:
                response = self._session.request(
                    method,
                    url,
                    params=params,
                    json=body,
                    headers=all_headers,
                    timeout=self._timeout,
                )
            except requests.RequestException as exc:
                log.warning("%s %s failed: %s", method, path, type(exc).__name__)
                raise network_error(exc, service="Qargo API") from exc
            elapsed_ms = (time.monotonic() - started) * 1000
            log.info(
                "%s %s -> %s in %.0f ms (correlation id %s)",
                method,
                path,
                response.status_code,
                elapsed_ms,
                _correlation_id(response) or "-",
            )
            if response.status_code == 401 and attempt == 1:
                continue
            if response.status_code == 401:
                error = _problem(response)
                raise SignInRequired(
                    "the organisation API refused the admin sign-in",
                    key=error.key,
                    code=error.code,
                    correlation_id=error.correlation_id,
                )
            if response.status_code >= 400:
                raise _problem(response)
            return response
        raise AssertionError("unreachable")

    def _json(self, response: requests.Response) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise network_error(
                ValueError(f"not JSON ({response.headers.get('Content-Type', '?')})"),
                service="Qargo API",
            ) from exc

    def _mailbox(self, response: requests.Response) -> Mailbox:
        try:
            return parse_mailbox(self._json(response), etag=response.headers.get("ETag"))
        except ContractError as exc:
            raise _contract_error(exc, response) from exc

    # -- people and organisation ----------------------------------------------------------

    def me(self) -> Me:
        """Return the signed-in person."""
        response = self._request("GET", "/v1/me")
        data = self._json(response)
        try:
            return Me(
                id=_str(data, "id"),
                username=_str(data, "username"),
                display_name=str(data.get("display_name") or ""),
                tenant_id=str(data.get("tenant_id") or ""),
                is_super_admin=bool(data.get("is_super_admin", False)),
            )
        except (ContractError, AttributeError) as exc:
            raise _contract_error(exc, response) from exc

    def organisation(self) -> Organisation:
        """Return the organisation and its mail settings."""
        response = self._request("GET", "/v1/organisation")
        data = self._json(response)
        try:
            mail = data.get("mail") or {}
            scopes = mail.get("required_link_scopes") or []
            if not isinstance(scopes, list):
                raise ContractError("required_link_scopes is not a list")
            return Organisation(
                id=_str(data, "id"),
                name=_str(data, "name"),
                tenant_id=str(data.get("tenant_id") or ""),
                mail_client_id=str(mail.get("client_id") or ""),
                mail_authority=str(mail.get("authority") or ""),
                required_link_scopes=tuple(str(s) for s in scopes),
            )
        except (ContractError, AttributeError) as exc:
            raise _contract_error(exc, response) from exc

    # -- mailboxes ----------------------------------------------------------------------

    def list_mailboxes(
        self,
        *,
        status: str | None = None,
        page_size: int = 500,
        if_none_match: str | None = None,
        on_page: Callable[[tuple[Mailbox, ...]], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> MailboxList | None:
        """Return every mailbox, following the cursor to the end.

        Returns ``None`` when ``if_none_match`` still names the current collection (304).
        ``on_page`` is called with each page's mailboxes as it arrives.
        """
        items: list[Mailbox] = []
        etag: str | None = None
        total = 0
        for page, page_etag, page_total in self._pages(status, page_size, if_none_match, cancel):
            if page is None:
                return None
            etag = etag or page_etag
            total = page_total
            items.extend(page)
            if on_page is not None:
                on_page(page)
        return MailboxList(items=tuple(items), etag=etag, total=total or len(items))

    def _pages(
        self,
        status: str | None,
        page_size: int,
        if_none_match: str | None,
        cancel: threading.Event | None,
    ) -> Iterator[tuple[tuple[Mailbox, ...] | None, str | None, int]]:
        cursor: str | None = None
        while True:
            params = {"limit": str(page_size)}
            if status:
                params["status"] = status
            if cursor:
                params["cursor"] = cursor
            headers = {"If-None-Match": if_none_match} if if_none_match and not cursor else {}
            response = self._request(
                "GET", "/v1/organisation/linked-mailboxes", params=params, headers=headers,
                cancel=cancel,
            )  # fmt: skip
            if response.status_code == 304:
                yield None, if_none_match, 0
                return
            data = self._json(response)
            try:
                raw_items = data["items"]
                if not isinstance(raw_items, list):
                    raise ContractError("items is not a list")
                page = tuple(parse_mailbox(item) for item in raw_items)
                next_cursor = data.get("next_cursor")
                if next_cursor is not None and not isinstance(next_cursor, str):
                    raise ContractError("next_cursor is not a string")
                total = int(data.get("total") or 0)
            except (ContractError, KeyError, TypeError, ValueError) as exc:
                raise _contract_error(exc, response) from exc
            yield page, response.headers.get("ETag"), total
            if not next_cursor:
                return
            cursor = next_cursor

    def get_mailbox(self, mailbox_id: str) -> Mailbox:
        """Return one mailbox with its current ETag."""
        return self._mailbox(
            self._request("GET", f"/v1/organisation/linked-mailboxes/{mailbox_id}")
        )

    def add_mailbox(self, address: str, display_name: str | None = None) -> Mailbox:
        """Add a mailbox to the organisation's list."""
        body: JsonObject = {"address": address}
        if display_name:
            body["display_name"] = display_name
        response = self._request(
            "POST", "/v1/organisation/linked-mailboxes", body=body,
            headers={"Idempotency-Key": str(uuid.uuid4())},
        )  # fmt: skip
        return self._mailbox(response)

    def remove_mailbox(self, mailbox: Mailbox) -> None:
        """Remove a mailbox, provided nobody changed it since ``mailbox`` was read."""
        self._request(
            "DELETE", f"/v1/organisation/linked-mailboxes/{mailbox.id}",
            headers={"If-Match": mailbox.etag},
        )  # fmt: skip

    def start_authorisation(self, mailbox: Mailbox, kind: str) -> Attempt:
        """Start an authorisation attempt; the mailbox becomes ``authorising``."""
        response = self._request(
            "POST",
            f"/v1/organisation/linked-mailboxes/{mailbox.id}/authorisations",
            body={"kind": kind},
            headers={"If-Match": mailbox.etag, "Idempotency-Key": str(uuid.uuid4())},
        )
        data = self._json(response)
        try:
            scopes = data.get("required_scopes") or []
            return Attempt(
                id=_str(data, "id"),
                mailbox_id=str(data.get("mailbox_id") or mailbox.id),
                kind=str(data.get("kind") or kind),
                expires_at=parse_time(data.get("expires_at"), field_name="expires_at"),
                login_hint=str(data.get("login_hint") or mailbox.address),
                required_scopes=tuple(str(s) for s in scopes),
                previous_status=str(data.get("previous_status") or mailbox.raw_status),
            )
        except (ContractError, AttributeError) as exc:
            raise _contract_error(exc, response) from exc

    def complete_authorisation(self, attempt: Attempt, access_token: str) -> Mailbox:
        """Hand the mailbox account's token to Qargo; the mailbox becomes ``linked``."""
        response = self._request(
            "PUT",
            f"/v1/organisation/linked-mailboxes/{attempt.mailbox_id}/authorisations/{attempt.id}",
            body={"access_token": access_token},
        )
        return self._mailbox(response)

    def attempt_status(self, attempt: Attempt) -> str:
        """Return how the API sees an attempt now: pending, completed, failed or expired."""
        response = self._request(
            "GET",
            f"/v1/organisation/linked-mailboxes/{attempt.mailbox_id}/authorisations/{attempt.id}",
        )
        data = self._json(response)
        try:
            return _str(data, "status")
        except ContractError as exc:
            raise _contract_error(exc, response) from exc

    def fail_authorisation(
        self,
        attempt: Attempt,
        reason: str,
        *,
        error_code: str | None = None,
        message: str | None = None,
    ) -> Mailbox:
        """Record that an attempt failed or was cancelled."""
        body: JsonObject = {"reason": reason}
        if error_code:
            body["error_code"] = error_code
        if message:
            body["message"] = message[:500]
        response = self._request(
            "POST",
            f"/v1/organisation/linked-mailboxes/{attempt.mailbox_id}/authorisations/"
            f"{attempt.id}/failure",
            body=body,
            headers={"Idempotency-Key": str(uuid.uuid4())},
        )
        return self._mailbox(response)

    def reset(self, mailbox: Mailbox) -> Mailbox:
        """Reset a failed link; the mailbox becomes ``unlinked``."""
        response = self._request(
            "POST", f"/v1/organisation/linked-mailboxes/{mailbox.id}/reset",
            headers={"If-Match": mailbox.etag, "Idempotency-Key": str(uuid.uuid4())},
        )  # fmt: skip
        return self._mailbox(response)

    def synced_messages(
        self, mailbox_id: str, internet_message_id: str, *, cancel: threading.Event | None = None
    ) -> tuple[SyncedMessage, ...]:
        """Return when Qargo's sync saw the message, if it has."""
        response = self._request(
            "GET",
            f"/v1/organisation/linked-mailboxes/{mailbox_id}/synced-messages",
            params={"internet_message_id": internet_message_id},
            cancel=cancel,
        )
        data = self._json(response)
        try:
            return tuple(
                SyncedMessage(
                    internet_message_id=_str(item, "internet_message_id"),
                    synced_at=parse_time(item.get("synced_at"), field_name="synced_at"),
                    received_at=parse_time(item.get("received_at"), field_name="received_at"),
                )
                for item in data.get("items") or []
            )
        except (ContractError, AttributeError) as exc:
            raise _contract_error(exc, response) from exc

    def events(self, mailbox_id: str) -> tuple[AuditEvent, ...]:
        """Return the mailbox's audit trail, newest first as the API orders it."""
        response = self._request("GET", f"/v1/organisation/linked-mailboxes/{mailbox_id}/events")
        data = self._json(response)
        try:
            return tuple(
                AuditEvent(
                    id=str(item.get("id") or ""),
                    at=parse_time(item.get("at"), field_name="at"),
                    actor=str(item.get("actor") or ""),
                    action=str(item.get("action") or ""),
                    detail=str(item.get("detail") or ""),
                    app_version=str(item.get("app_version") or ""),
                    machine=str(item.get("machine") or ""),
                )
                for item in data.get("items") or []
            )
        except (ContractError, AttributeError) as exc:
            raise _contract_error(exc, response) from exc


def _str(data: Any, key: str) -> str:
    value = data.get(key) if isinstance(data, Mapping) else None
    if not isinstance(value, str) or not value:
        raise ContractError(f"field {key!r} is missing or not a string")
    return value


def _correlation_id(response: requests.Response) -> str | None:
    for header in ("x-correlation-id", "request-id", "x-ms-request-id"):
        if header in response.headers:
            return response.headers[header]
    return None


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _problem(response: requests.Response) -> ApiError:
    """Read an RFC 9457 problem, or describe whatever else came back."""
    code: str | None = None
    title = response.reason or f"HTTP {response.status_code}"
    detail: str | None = None
    key: str | None = None
    correlation_id = _correlation_id(response)
    try:
        data = json.loads(response.content or b"null")
    except ValueError:
        data = None
    if isinstance(data, Mapping):
        code = data.get("code") if isinstance(data.get("code"), str) else None
        title = str(data.get("title") or title)
        detail = str(data["detail"]) if data.get("detail") else None
        if isinstance(data.get("correlation_id"), str):
            correlation_id = data["correlation_id"]
    elif response.status_code not in (429, 502, 503, 504, 407):
        # Not a problem document: an HTML page from a proxy, or a truncated body.
        content_type = response.headers.get("Content-Type", "unknown")
        detail = f"The service answered {response.status_code} with {content_type}, not JSON."
        key = "net:bad_response"
    return ApiError(
        response.status_code,
        code,
        title,
        detail=detail,
        correlation_id=correlation_id,
        retry_after=_retry_after(response),
        key=key,
    )


def _contract_error(exc: Exception, response: requests.Response) -> ApiError:
    return ApiError(
        response.status_code,
        None,
        "Unexpected answer from the organisation API",
        detail=f"The answer did not match the contract: {exc}",
        correlation_id=_correlation_id(response),
        key="net:bad_response",
    )
