"""A small Microsoft Graph mail client: what the self-test needs, on the shared session.

It speaks Graph v1.0 with a mailbox account's delegated token: who am I, send a message,
list messages received since a time (every page), and delete a message. Every request
carries a fresh ``client-request-id`` and asks for immutable ids, so a message keeps its
id when an inbox rule moves it. Errors come back in Graph's shape and become
:class:`~qargo_desktop.core.errors.GraphError` with the ``Retry-After`` delay.

``sendMail`` is not idempotent: a repeated POST sends a second message. :meth:`send_mail`
therefore makes exactly one POST per call, bypassing any retry policy mounted on the
shared session, and when no answer comes back it raises :class:`SendUnconfirmed` instead
of guessing: the caller looks for the message rather than sending it again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import requests
from urllib3.util.retry import Retry

from qargo_desktop.core.errors import Cancelled, GraphError, NetworkError, network_error
from qargo_desktop.core.models import ContractError, parse_time

log = logging.getLogger(__name__)

GRAPH_RESOURCE = "https://graph.microsoft.com"
#: The delegated scopes the self-test needs from the mailbox account.
MAIL_SCOPES: tuple[str, ...] = (f"{GRAPH_RESOURCE}/Mail.ReadWrite", f"{GRAPH_RESOURCE}/Mail.Send")

#: Message properties the self-test reads when it lists messages.
DEFAULT_SELECT: tuple[str, ...] = (
    "id",
    "subject",
    "internetMessageId",
    "receivedDateTime",
    "sentDateTime",
    "bodyPreview",
    "parentFolderId",
    "isDraft",
    "isRead",
)

# Graph caps $top at 1000 for messages; 50 keeps each page quick to fetch and parse.
_DEFAULT_TOP = 50
# Safety stop for a misbehaving server that hands out nextLinks for ever.
_MAX_PAGES = 200

JsonObject = dict[str, Any]


class TokenProvider(Protocol):
    """Gives the mailbox account's access token for Microsoft Graph."""

    def __call__(self, *, force_refresh: bool = False) -> str:
        """Return an access token, refreshing it first when asked."""
        ...


class SendUnconfirmed(NetworkError):
    """``sendMail`` got no answer: the message may or may not have been accepted.

    Attributes:
        maybe_sent: False only when the connection failed before the request left this
            computer (then the message was certainly not sent).
        client_request_id: The id the request carried, for Microsoft support.
    """

    def __init__(self, message: str, *, key: str, maybe_sent: bool, client_request_id: str) -> None:
        super().__init__(message, key=key, code=key.split(":", 1)[1])
        self.maybe_sent = maybe_sent
        self.client_request_id = client_request_id


@dataclass(frozen=True, slots=True)
class ResponseInfo:
    """What every Graph answer says besides its data.

    Attributes:
        status: The HTTP status.
        server_date: The ``Date`` header (one-second resolution), for clock skew.
        request_id: Graph's ``request-id``, for Microsoft support.
        client_request_id: The ``client-request-id`` this app sent.
        elapsed_s: Time from sending the request to reading the whole answer.
    """

    status: int
    server_date: datetime | None
    request_id: str | None
    client_request_id: str
    elapsed_s: float


@dataclass(frozen=True, slots=True)
class GraphUser:
    """The signed-in mailbox account as Graph sees it."""

    id: str
    display_name: str
    mail: str
    user_principal_name: str


@dataclass(frozen=True, slots=True)
class GraphMessage:
    """One message from a listing (only the selected properties are filled).

    ``is_read`` is ``None`` when the listing did not say.
    """

    id: str
    internet_message_id: str
    subject: str
    received_at: datetime | None
    sent_at: datetime | None
    body_preview: str = ""
    parent_folder_id: str = ""
    is_draft: bool = False
    is_read: bool | None = None
    headers: tuple[tuple[str, str], ...] = ()

    def header(self, name: str) -> str | None:
        """The value of an internet message header (case-insensitive), if selected."""
        wanted = name.casefold()
        return next((v for n, v in self.headers if n.casefold() == wanted), None)


@dataclass(frozen=True, slots=True)
class MessagePage:
    """One page of a message listing."""

    items: tuple[GraphMessage, ...]
    next_link: str | None
    info: ResponseInfo


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """A plain-text message for :meth:`GraphClient.send_mail`."""

    subject: str
    body: str
    to: tuple[str, ...]
    headers: tuple[tuple[str, str], ...] = ()
    content_type: str = "Text"

    def to_json(self) -> JsonObject:
        """Graph's ``message`` resource for sendMail."""
        message: JsonObject = {
            "subject": self.subject,
            "body": {"contentType": self.content_type, "content": self.body},
            "toRecipients": [{"emailAddress": {"address": a}} for a in self.to],
        }
        if self.headers:
            # Graph only accepts custom headers whose names start with "X-".
            message["internetMessageHeaders"] = [
                {"name": name, "value": value} for name, value in self.headers
            ]
        return message


class GraphClient:
    """Microsoft Graph v1.0 mail calls for one mailbox account.

    Args:
        base_url: ``https://graph.microsoft.com/v1.0`` (or the sandbox's).
        session: The shared HTTP session (trust store, proxy, User-Agent).
        token: Gives the mailbox account's Graph access token.
        timeout: Seconds to wait for each answer (also the connect timeout).
    """

    def __init__(
        self,
        base_url: str,
        session: requests.Session,
        token: TokenProvider,
        *,
        timeout: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._origin = _origin(self.base_url)
        self._session = session
        self._token = token
        self._timeout = timeout

    # -- plumbing -----------------------------------------------------------------------

    def _headers(self, client_request_id: str, token: str) -> dict[str, str]:
        return {
            "Accept": "application/json",
            "Authorization": f"Bearer {token}",
            "client-request-id": client_request_id,
            "return-client-request-id": "true",
            # Immutable ids survive moves between folders (inbox rules, a person's tidy-up),
            # so the id a listing returned still deletes the message a minute later.
            "Prefer": 'IdType="ImmutableId"',
        }

    def _get_or_delete(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        cancel: threading.Event | None = None,
        timeout: float | None = None,
        ok_statuses: tuple[int, ...] = (),
    ) -> tuple[requests.Response, ResponseInfo]:
        """Send an idempotent request; a 401 is retried once with a refreshed token."""
        for attempt in (1, 2):
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            client_request_id = str(uuid.uuid4())
            headers = self._headers(client_request_id, self._token(force_refresh=attempt == 2))
            started = time.monotonic()
            try:
                response = self._session.request(
                    method,
                    url,
                    params=params,
                    headers=headers,
                    timeout=timeout or self._timeout,
                )
            except requests.RequestException as exc:
                log.warning("Graph %s %s failed: %s", method, _path(url), type(exc).__name__)
                raise network_error(exc, service="Microsoft Graph") from exc
            info = _info(response, client_request_id, time.monotonic() - started)
            _log_response(method, url, info)
            if response.status_code == 401 and attempt == 1:
                continue
            if response.status_code >= 400 and response.status_code not in ok_statuses:
                raise graph_error(response, client_request_id)
            return response, info
        raise AssertionError("unreachable")

    def _json(self, response: requests.Response, info: ResponseInfo) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise GraphError(
                response.status_code,
                None,
                f"Microsoft Graph answered with {response.headers.get('Content-Type', '?')}, "
                "not JSON",
                correlation_id=info.request_id,
            ) from exc

    # -- calls --------------------------------------------------------------------------

    def me(
        self, *, cancel: threading.Event | None = None, timeout: float | None = None
    ) -> GraphUser:
        """Return the signed-in mailbox account."""
        return self.me_with_info(cancel=cancel, timeout=timeout)[0]

    def me_with_info(
        self, *, cancel: threading.Event | None = None, timeout: float | None = None
    ) -> tuple[GraphUser, ResponseInfo]:
        """Return the signed-in mailbox account, and what the answer said besides."""
        response, info = self._get_or_delete(
            "GET", f"{self.base_url}/me", cancel=cancel, timeout=timeout
        )
        data = self._json(response, info)
        if not isinstance(data, Mapping) or not isinstance(data.get("id"), str):
            raise _contract(response, info, "the /me answer has no id")
        user = GraphUser(
            id=str(data["id"]),
            display_name=str(data.get("displayName") or ""),
            mail=str(data.get("mail") or ""),
            user_principal_name=str(data.get("userPrincipalName") or ""),
        )
        return user, info

    def folder_id(
        self,
        well_known_name: str,
        *,
        cancel: threading.Event | None = None,
        timeout: float | None = None,
    ) -> str:
        """Return the id of a well-known mail folder (``inbox``, ``sentitems``...)."""
        url = f"{self.base_url}/me/mailFolders/{quote(well_known_name, safe='')}"
        response, info = self._get_or_delete(
            "GET", url, params={"$select": "id"}, cancel=cancel, timeout=timeout
        )
        data = self._json(response, info)
        if not isinstance(data, Mapping) or not isinstance(data.get("id"), str):
            raise _contract(response, info, "the folder has no id")
        return str(data["id"])

    def send_mail(
        self,
        message: OutgoingMessage,
        *,
        save_to_sent_items: bool = True,
        cancel: threading.Event | None = None,
        timeout: float | None = None,
    ) -> ResponseInfo:
        """Send ``message`` from the signed-in mailbox: exactly one POST, never repeated.

        Returns:
            The answer's details (202 Accepted and the server's ``Date``).

        Raises:
            Cancelled: ``cancel`` was set before the request went out.
            GraphError: Graph refused the message (nothing was sent).
            SendUnconfirmed: No answer came back; the message may have been sent.
        """
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        url = f"{self.base_url}/me/sendMail"
        client_request_id = str(uuid.uuid4())
        headers = self._headers(client_request_id, self._token())
        headers["Content-Type"] = "application/json"
        body = {"message": message.to_json(), "saveToSentItems": save_to_sent_items}
        started = time.monotonic()
        try:
            response = _post_once(
                self._session, url, headers, json.dumps(body).encode(), timeout or self._timeout
            )
        except requests.RequestException as exc:
            maybe_sent = not isinstance(exc, requests.ConnectTimeout) and not _never_connected(exc)
            reference = network_error(exc, service="Microsoft Graph")
            log.warning(
                "Graph sendMail got no answer after %.0f ms (%s; %s); it is not retried",
                (time.monotonic() - started) * 1000,
                type(exc).__name__,
                "it may have been sent" if maybe_sent else "it was not sent",
            )
            raise SendUnconfirmed(
                str(reference),
                key=reference.key or "net:connection",
                maybe_sent=maybe_sent,
                client_request_id=client_request_id,
            ) from exc
        info = _info(response, client_request_id, time.monotonic() - started)
        _log_response("POST", url, info)
        if response.status_code >= 400:
            raise graph_error(response, client_request_id)
        return info

    def message_page(
        self,
        *,
        received_since: datetime | None = None,
        select: Sequence[str] = DEFAULT_SELECT,
        top: int = _DEFAULT_TOP,
        orderby: str | None = None,
        next_link: str | None = None,
        cancel: threading.Event | None = None,
        timeout: float | None = None,
    ) -> MessagePage:
        """Fetch one page of ``/me/messages``: the first, or the one ``next_link`` names.

        Args:
            received_since: Only messages received at or after this time.
            select: The properties to return.
            top: Page size.
            orderby: A ``$orderby`` clause (Graph wants its property in the filter too).
            next_link: The ``@odata.nextLink`` of the previous page; the other query
                arguments are then ignored (the link carries them).
            cancel: Stops before the request when set.
            timeout: Seconds to wait for this page.
        """
        if next_link is not None:
            if _origin(next_link) != self._origin:
                # The link carries our bearer token's destination: never follow it elsewhere.
                raise GraphError(
                    200, None, "Microsoft Graph returned a next page on another server"
                )
            url, params = next_link, None
        else:
            url = f"{self.base_url}/me/messages"
            params = {"$select": ",".join(select), "$top": str(top)}
            if received_since is not None:
                params["$filter"] = f"receivedDateTime ge {format_time(received_since)}"
            if orderby:
                params["$orderby"] = orderby
        response, info = self._get_or_delete(
            "GET", url, params=params, cancel=cancel, timeout=timeout
        )
        data = self._json(response, info)
        try:
            if not isinstance(data, Mapping) or not isinstance(data.get("value"), list):
                raise ContractError("the listing has no value list")
            items = tuple(_message(item) for item in data["value"])
            link = data.get("@odata.nextLink")
            if link is not None and not isinstance(link, str):
                raise ContractError("@odata.nextLink is not a string")
        except ContractError as exc:
            raise _contract(response, info, str(exc)) from exc
        return MessagePage(items=items, next_link=link or None, info=info)

    def iter_messages(
        self,
        *,
        received_since: datetime | None = None,
        select: Sequence[str] = DEFAULT_SELECT,
        top: int = _DEFAULT_TOP,
        cancel: threading.Event | None = None,
        timeout: float | None = None,
    ) -> Iterator[MessagePage]:
        """Yield every page of ``/me/messages`` received since a time, following nextLinks."""
        page = self.message_page(
            received_since=received_since, select=select, top=top, cancel=cancel,
            timeout=timeout,
        )  # fmt: skip
        yield page
        pages = 1
        while page.next_link and pages < _MAX_PAGES:
            page = self.message_page(next_link=page.next_link, cancel=cancel, timeout=timeout)
            pages += 1
            yield page

    def delete_message(
        self,
        message_id: str,
        *,
        cancel: threading.Event | None = None,
        timeout: float | None = None,
    ) -> bool:
        """Delete a message (Graph moves it to Deleted Items).

        Returns:
            False when the message was already gone (``ErrorItemNotFound``), which is not
            a failure: a person or a rule got there first.
        """
        url = f"{self.base_url}/me/messages/{quote(message_id, safe='')}"
        response, info = self._get_or_delete(
            "DELETE", url, cancel=cancel, timeout=timeout, ok_statuses=(404,)
        )
        if response.status_code == 404:
            error = graph_error(response, info.client_request_id)
            if error.code not in ("ErrorItemNotFound", "HTTP 404"):
                raise error
            log.info("The message to delete was already gone")
            return False
        return True


# -- helpers ------------------------------------------------------------------------------


def format_time(value: datetime) -> str:
    """Format a time as Graph's filters want it: UTC, whole seconds, ``Z``."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_http_date(value: str | None) -> datetime | None:
    """Parse an HTTP ``Date`` header into an aware UTC datetime (None when unusable)."""
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def retry_after_s(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        when = parse_http_date(value)
        if when is None:
            return None
        return max(0.0, when.timestamp() - (time.time() if now is None else now))


def graph_error(response: requests.Response, client_request_id: str | None = None) -> GraphError:
    """Read Graph's error shape, or describe whatever else came back."""
    code: str | None = None
    message = response.reason or f"HTTP {response.status_code}"
    request_id = response.headers.get("request-id")
    try:
        data = json.loads(response.content or b"null")
    except ValueError:
        data = None
    error = data.get("error") if isinstance(data, Mapping) else None
    if isinstance(error, Mapping):
        code = error.get("code") if isinstance(error.get("code"), str) else None
        message = str(error.get("message") or message)
        inner = error.get("innerError") or error.get("innererror")
        if isinstance(inner, Mapping) and isinstance(inner.get("request-id"), str):
            request_id = request_id or inner["request-id"]
    elif response.status_code not in (407, 429, 502, 503, 504):
        content_type = response.headers.get("Content-Type", "unknown")
        message = f"Microsoft Graph answered {response.status_code} with {content_type}."
    result = GraphError(
        response.status_code,
        code,
        message,
        correlation_id=request_id or client_request_id,
        retry_after=retry_after_s(response.headers.get("Retry-After")),
    )
    return result


def _post_once(
    session: requests.Session, url: str, headers: dict[str, str], body: bytes, timeout: float
) -> requests.Response:
    """POST once, after checking that the session's adapter will not repeat it.

    The app's session (core/http.py) never repeats a POST without an ``Idempotency-Key``,
    and none is sent here. A session from elsewhere with a retry policy that would repeat
    it is refused rather than trusted: a second sendMail is a second message.
    """
    adapter = session.get_adapter(url)
    if _would_repeat_post(adapter, url, headers):
        raise RuntimeError("this HTTP session retries POST requests; sendMail must go out once")
    response = session.request("POST", url, headers=headers, data=body, timeout=timeout)
    response.content  # noqa: B018 (read the body now, within the timeout)
    return response


def _would_repeat_post(adapter: Any, url: str, headers: Mapping[str, str]) -> bool:
    policy = getattr(adapter, "retry_policy", None)
    may_retry = getattr(policy, "may_retry", None)
    if callable(may_retry):
        prepared = requests.Request("POST", url, headers=dict(headers), data=b"{}").prepare()
        if may_retry(prepared):
            return True
    retries = getattr(adapter, "max_retries", None)
    if isinstance(retries, Retry) and retries.total != 0:
        allowed = retries.allowed_methods
        # None (or False) means urllib3 retries every method, POST included.
        if allowed is None or "POST" in allowed:
            return retries.read is not False or bool(retries.status_forcelist)
    return False


def _never_connected(exc: requests.RequestException) -> bool:
    """Whether the request certainly never reached the server (refused, no route, DNS)."""
    text = repr(exc)
    return isinstance(exc, requests.ConnectionError) and (
        "NewConnectionError" in text or "NameResolutionError" in text
    )


def _info(response: requests.Response, client_request_id: str, elapsed_s: float) -> ResponseInfo:
    return ResponseInfo(
        status=response.status_code,
        server_date=parse_http_date(response.headers.get("Date")),
        request_id=response.headers.get("request-id"),
        client_request_id=client_request_id,
        elapsed_s=elapsed_s,
    )


def _log_response(method: str, url: str, info: ResponseInfo) -> None:
    log.info(
        "Graph %s %s -> %s in %.0f ms (request id %s)",
        method,
        _path(url),
        info.status,
        info.elapsed_s * 1000,
        info.request_id or "-",
    )


def _path(url: str) -> str:
    # Query strings hold filters with times and addresses; the path says enough in a log.
    return urlsplit(url).path


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port


def _contract(response: requests.Response, info: ResponseInfo, why: str) -> GraphError:
    return GraphError(
        response.status_code,
        None,
        f"Unexpected answer from Microsoft Graph: {why}",
        correlation_id=info.request_id,
    )


def _message(item: Any) -> GraphMessage:
    if not isinstance(item, Mapping):
        raise ContractError("a message is not an object")
    message_id = item.get("id")
    if not isinstance(message_id, str) or not message_id:
        raise ContractError("a message has no id")
    raw_headers = item.get("internetMessageHeaders") or []
    headers: list[tuple[str, str]] = []
    if isinstance(raw_headers, list):
        for header in raw_headers:
            if isinstance(header, Mapping):
                headers.append((str(header.get("name") or ""), str(header.get("value") or "")))
    is_read = item.get("isRead")
    return GraphMessage(
        id=message_id,
        internet_message_id=str(item.get("internetMessageId") or ""),
        subject=str(item.get("subject") or ""),
        received_at=parse_time(item.get("receivedDateTime"), field_name="receivedDateTime"),
        sent_at=parse_time(item.get("sentDateTime"), field_name="sentDateTime"),
        body_preview=str(item.get("bodyPreview") or ""),
        parent_folder_id=str(item.get("parentFolderId") or ""),
        is_draft=bool(item.get("isDraft", False)),
        is_read=is_read if isinstance(is_read, bool) else None,
        headers=tuple(headers),
    )


__all__ = [
    "DEFAULT_SELECT",
    "MAIL_SCOPES",
    "GraphClient",
    "GraphMessage",
    "GraphUser",
    "MessagePage",
    "OutgoingMessage",
    "ResponseInfo",
    "SendUnconfirmed",
    "TokenProvider",
    "format_time",
    "graph_error",
    "parse_http_date",
    "retry_after_s",
]
