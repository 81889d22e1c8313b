"""The sandbox Microsoft Graph v1.0: the mail subset the self-test and the Graph SDK use.

Mounted under ``/graph/v1.0``. It answers in Graph's shapes and with Graph's error codes:

- ``GET /me``; ``GET /me/mailFolders`` and ``/me/mailFolders/{id or well-known name}``;
- ``POST /me/sendMail`` (202, no body), validated like Graph (``ErrorInvalidRecipients``,
  ``RequestBodyRead`` for unknown properties, ``ErrorSendAsDenied``);
- ``GET /me/messages`` and ``/me/mailFolders/{id}/messages`` with ``$filter``, ``$select``,
  ``$orderby``, ``$top``, ``$skip`` and ``@odata.nextLink`` (``$skiptoken``);
- ``GET``/``DELETE /me/messages/{id}`` and ``POST .../permanentDelete``;
- ``Prefer: IdType="ImmutableId"`` and ``Prefer: outlook.body-content-type="text"``.

Where real Graph has a trap, the sandbox has it too: ``/me/messages`` lists every folder
(so a sent message's Sent Items copy shows up there with the same ``internetMessageId``),
``DELETE`` moves a message to Deleted Items (so its default id changes while its immutable
id stays), and ``$orderby`` combined with ``$filter`` must sort by the properties the filter
starts with, in that order, or the request fails with ``InefficientFilter``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import html
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from werkzeug.wrappers import Request, Response

from qargo_desktop.sandbox.mail import (
    WELL_KNOWN_FOLDERS,
    Envelope,
    MailSystem,
    Recipient,
    StoredMessage,
    iso_z,
    parse_iso,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from qargo_desktop.sandbox.world import World

logger = logging.getLogger(__name__)

GRAPH_AUDIENCES = ("https://graph.microsoft.com", "00000003-0000-0000-c000-000000000000")
DEFAULT_PAGE = 10
MAX_TOP = 1000
_JSON = (
    "application/json;odata.metadata=minimal;odata.streaming=true;"
    "IEEE754Compatible=false;charset=utf-8"
)
_ADDRESS = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")

_READ_SCOPES = {"mail.read", "mail.readwrite", "mail.readbasic"}
_WRITE_SCOPES = {"mail.readwrite"}
_SEND_SCOPES = {"mail.send"}

#: Message properties Graph knows (requests with others fail with RequestBodyRead).
MESSAGE_PROPERTIES = (
    "id",
    "createdDateTime",
    "lastModifiedDateTime",
    "changeKey",
    "categories",
    "receivedDateTime",
    "sentDateTime",
    "hasAttachments",
    "internetMessageId",
    "subject",
    "bodyPreview",
    "importance",
    "parentFolderId",
    "conversationId",
    "conversationIndex",
    "isDeliveryReceiptRequested",
    "isReadReceiptRequested",
    "isRead",
    "isDraft",
    "webLink",
    "inferenceClassification",
    "body",
    "uniqueBody",
    "sender",
    "from",
    "toRecipients",
    "ccRecipients",
    "bccRecipients",
    "replyTo",
    "flag",
    "internetMessageHeaders",
    "attachments",
    "singleValueExtendedProperties",
    "multiValueExtendedProperties",
    "extensions",
)
_DEFAULT_SELECT = tuple(
    p
    for p in MESSAGE_PROPERTIES
    if p
    not in (
        "uniqueBody",
        "internetMessageHeaders",
        "attachments",
        "singleValueExtendedProperties",
        "multiValueExtendedProperties",
        "extensions",
    )
)
_CANONICAL = {p.lower(): p for p in MESSAGE_PROPERTIES}


class GraphError(Exception):
    """An error Graph answers with ``{"error": {"code", "message", "innerError"}}``."""

    def __init__(
        self, status: int, code: str, message: str, *, headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = list(headers)


def _bad_query(message: str) -> GraphError:
    return GraphError(400, "BadRequest", message)


def _no_property(name: str) -> GraphError:
    return GraphError(
        400,
        "RequestBroker--ParseUri",
        f"Could not find a property named '{name}' on type 'microsoft.graph.message'.",
    )


# Message properties as typed values (for $filter and $orderby)

_DATETIME_PROPS = {
    "receiveddatetime": "receivedDateTime",
    "sentdatetime": "sentDateTime",
    "createddatetime": "createdDateTime",
    "lastmodifieddatetime": "lastModifiedDateTime",
}
_STRING_PROPS = {
    "subject": "subject",
    "internetmessageid": "internetMessageId",
    "conversationid": "conversationId",
    "parentfolderid": "parentFolderId",
    "bodypreview": "bodyPreview",
    "importance": "importance",
    "from/emailaddress/address": "from/emailAddress/address",
    "from/emailaddress/name": "from/emailAddress/name",
    "sender/emailaddress/address": "sender/emailAddress/address",
    "sender/emailaddress/name": "sender/emailAddress/name",
}
_BOOL_PROPS = {
    "isread": "isRead",
    "isdraft": "isDraft",
    "hasattachments": "hasAttachments",
}


@dataclass(frozen=True)
class _View:
    """What a filter or sort can read from one message."""

    message: StoredMessage
    folder_id: str

    def value(self, prop: str) -> Any:
        m = self.message
        env = m.envelope
        values: dict[str, Any] = {
            "receivedDateTime": int(m.received_at),
            "sentDateTime": int(env.sent_at),
            "createdDateTime": int(m.created_at),
            "lastModifiedDateTime": int(m.modified_at),
            "subject": env.subject,
            "internetMessageId": env.internet_message_id,
            "conversationId": env.conversation_id,
            "parentFolderId": self.folder_id,
            "bodyPreview": _preview(env),
            "importance": env.importance,
            "from/emailAddress/address": env.sender.address,
            "from/emailAddress/name": env.sender.name,
            "sender/emailAddress/address": env.sender.address,
            "sender/emailAddress/name": env.sender.name,
            "isRead": m.is_read,
            "isDraft": False,
            "hasAttachments": False,
        }
        return values[prop]


def _prop_type(name: str) -> tuple[str, str]:
    key = name.lower()
    if key in _DATETIME_PROPS:
        return _DATETIME_PROPS[key], "Edm.DateTimeOffset"
    if key in _STRING_PROPS:
        return _STRING_PROPS[key], "Edm.String"
    if key in _BOOL_PROPS:
        return _BOOL_PROPS[key], "Edm.Boolean"
    raise _no_property(name)


# $filter: a small OData parser for the subset mail clients use

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>'(?:[^']|'')*')
      | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)
      | (?P<number>-?\d+(?:\.\d+)?)
      | (?P<punct>[(),])
      | (?P<word>[A-Za-z_][A-Za-z0-9_/.]*)
    )""",
    re.VERBOSE,
)
_COMPARISONS = {
    "eq": "Equal",
    "ne": "NotEqual",
    "gt": "GreaterThan",
    "ge": "GreaterThanOrEqual",
    "lt": "LessThan",
    "le": "LessThanOrEqual",
}
_FUNCTIONS = ("contains", "startswith", "endswith")


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str


def _tokenise(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise _bad_query(f"Invalid filter clause: syntax error at position {position}.")
        kind = match.lastgroup or ""
        tokens.append(_Token(kind, match.group(kind)))
        position = match.end()
    return tokens


Predicate = Callable[[_View], bool]


def _either(first: Predicate, second: Predicate) -> Predicate:
    return lambda view: first(view) or second(view)


def _both(first: Predicate, second: Predicate) -> Predicate:
    return lambda view: first(view) and second(view)


class _FilterParser:
    """Recursive descent over: or / and / not / comparison / function / parentheses."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokenise(text)
        self.position = 0
        self.properties: list[str] = []

    def parse(self) -> Predicate:
        if not self.tokens:
            raise _bad_query("Invalid filter clause: the filter is empty.")
        predicate = self._or()
        if self.position != len(self.tokens):
            raise _bad_query(
                f"Invalid filter clause: unexpected '{self.tokens[self.position].text}'."
            )
        return predicate

    def _peek(self) -> _Token | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def _take(self) -> _Token:
        token = self._peek()
        if token is None:
            raise _bad_query("Invalid filter clause: the filter ends too early.")
        self.position += 1
        return token

    def _keyword(self, word: str) -> bool:
        token = self._peek()
        if token is not None and token.kind == "word" and token.text.lower() == word:
            self.position += 1
            return True
        return False

    def _expect(self, text: str) -> None:
        token = self._take()
        if token.text != text:
            raise _bad_query(f"Invalid filter clause: expected '{text}', found '{token.text}'.")

    def _or(self) -> Predicate:
        left = self._and()
        while self._keyword("or"):
            right = self._and()
            left = _either(left, right)
        return left

    def _and(self) -> Predicate:
        left = self._unary()
        while self._keyword("and"):
            right = self._unary()
            left = _both(left, right)
        return left

    def _unary(self) -> Predicate:
        if self._keyword("not"):
            inner = self._unary()
            return lambda v: not inner(v)
        token = self._peek()
        if token is not None and token.text == "(":
            self._take()
            predicate = self._or()
            self._expect(")")
            return predicate
        if (
            token is not None
            and token.kind == "word"
            and token.text.lower() in _FUNCTIONS
            and self.position + 1 < len(self.tokens)
            and self.tokens[self.position + 1].text == "("
        ):
            return self._function()
        return self._comparison()

    def _property(self) -> tuple[str, str]:
        token = self._take()
        if token.kind != "word":
            raise _bad_query(f"Invalid filter clause: expected a property, found '{token.text}'.")
        prop, edm = _prop_type(token.text)
        self.properties.append(prop)
        return prop, edm

    def _literal(self) -> tuple[Any, str]:
        token = self._take()
        if token.kind == "string":
            return token.text[1:-1].replace("''", "'"), "Edm.String"
        if token.kind == "datetime":
            try:
                # Messages carry whole seconds but a literal keeps its fraction, so a filter
                # "ge <send time with milliseconds>" misses a message that arrived in the same
                # second: a client has to allow a margin, as it must against real Graph.
                return parse_iso(token.text), "Edm.DateTimeOffset"
            except ValueError as exc:
                raise _bad_query(f"The DateTimeOffset text '{token.text}' is not valid.") from exc
        if token.kind == "number":
            return float(token.text), "Edm.Double"
        if token.kind == "word" and token.text.lower() in ("true", "false"):
            return token.text.lower() == "true", "Edm.Boolean"
        if token.kind == "word" and token.text.lower() == "null":
            return None, "null"
        raise _bad_query(f"Invalid filter clause: expected a value, found '{token.text}'.")

    def _comparison(self) -> Predicate:
        prop, edm = self._property()
        op_token = self._take()
        op = op_token.text.lower()
        if op not in _COMPARISONS:
            raise _bad_query(f"Invalid filter clause: unknown operator '{op_token.text}'.")
        value, value_edm = self._literal()
        if value_edm not in (edm, "null"):
            raise _bad_query(
                "A binary operator with incompatible types was detected. Found operand types "
                f"'{edm}' and '{value_edm}' for operator kind '{_COMPARISONS[op]}'."
            )

        def compare(view: _View) -> bool:
            actual = view.value(prop)
            if isinstance(actual, str) and isinstance(value, str):
                # Exchange compares strings without regard to case.
                left, right = actual.lower(), value.lower()
            else:
                left, right = actual, value
            if op == "eq":
                return bool(left == right)
            if op == "ne":
                return bool(left != right)
            if left is None or right is None:
                return False
            return bool(
                {"gt": left > right, "ge": left >= right, "lt": left < right, "le": left <= right}[
                    op
                ]
            )

        return compare

    def _function(self) -> Predicate:
        name = self._take().text.lower()
        self._expect("(")
        prop, edm = self._property()
        self._expect(",")
        value, value_edm = self._literal()
        self._expect(")")
        if edm != "Edm.String" or value_edm != "Edm.String":
            raise _bad_query(f"The function '{name}' takes a string property and a string.")
        needle = str(value).lower()

        def check(view: _View) -> bool:
            haystack = str(view.value(prop)).lower()
            if name == "contains":
                return needle in haystack
            if name == "startswith":
                return haystack.startswith(needle)
            return haystack.endswith(needle)

        return check


def parse_filter(text: str) -> tuple[Predicate, list[str]]:
    """Parse a ``$filter``; returns the predicate and the properties in order of appearance."""
    parser = _FilterParser(text)
    predicate = parser.parse()
    return predicate, parser.properties


def parse_orderby(text: str) -> list[tuple[str, bool]]:
    """Parse ``$orderby`` into ``(property, descending)`` pairs."""
    keys: list[tuple[str, bool]] = []
    for part in text.split(","):
        words = part.split()
        if not words or len(words) > 2:
            raise _bad_query(f"Invalid $orderby clause: '{part.strip()}'.")
        direction = words[1].lower() if len(words) == 2 else "asc"
        if direction not in ("asc", "desc"):
            raise _bad_query(f"Invalid $orderby direction: '{words[1]}'.")
        prop, _edm = _prop_type(words[0])
        keys.append((prop, direction == "desc"))
    return keys


def parse_select(text: str) -> list[str]:
    """Parse ``$select`` into Graph's property names."""
    names: list[str] = []
    for raw in text.split(","):
        name = raw.strip()
        if not name:
            continue
        canonical = _CANONICAL.get(name.lower())
        if canonical is None:
            raise _no_property(name)
        if canonical not in names:
            names.append(canonical)
    return names


def _preview(envelope: Envelope) -> str:
    text = envelope.body_content
    if envelope.body_content_type == "html":
        text = _html_to_text(text)
    return " ".join(text.split())[:255]


def _html_to_text(content: str) -> str:
    without_tags = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", content, flags=re.S | re.I)
    without_tags = re.sub(r"<br\s*/?>|</p>|</div>", "\n", without_tags, flags=re.I)
    without_tags = re.sub(r"<[^>]+>", "", without_tags)
    return html.unescape(without_tags).strip()


# sendMail validation


def _recipients(value: Any, field_name: str) -> tuple[Recipient, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise GraphError(
            400,
            "RequestBodyRead",
            f"An unexpected 'StartObject' node was found for property named '{field_name}' when "
            "reading from the JSON reader. A 'StartArray' node was expected.",
        )
    recipients: list[Recipient] = []
    for item in value:
        email = item.get("emailAddress") if isinstance(item, dict) else None
        address = email.get("address") if isinstance(email, dict) else None
        if not isinstance(address, str) or not _ADDRESS.match(address.strip()):
            shown = address if isinstance(address, str) else ""
            raise GraphError(
                400,
                "ErrorInvalidRecipients",
                f"At least one recipient is not valid., Recipient '{shown}' is not resolved. "
                "All recipients must be resolved before a message can be submitted.",
            )
        name = email.get("name") if isinstance(email, dict) else None
        recipients.append(
            Recipient(address=address.strip(), name=name if isinstance(name, str) else "")
        )
    return tuple(recipients)


def _unknown_property(name: str, type_name: str) -> GraphError:
    return GraphError(
        400,
        "RequestBodyRead",
        f"The property '{name}' does not exist on type '{type_name}'. Make sure to only use "
        "property names that are defined by the type or mark the type as open type.",
    )


def _check_properties(body: dict[str, Any], message: dict[str, Any]) -> None:
    for key in body:
        if key not in ("message", "saveToSentItems", "Message", "SaveToSentItems"):
            raise _unknown_property(key, "microsoft.graph.sendMail")
    for key in message:
        if not key.startswith("@odata.") and key not in MESSAGE_PROPERTIES:
            raise _unknown_property(key, "microsoft.graph.message")


def _save_to_sent_items(body: dict[str, Any]) -> bool:
    save = body.get("saveToSentItems", body.get("SaveToSentItems", True))
    if isinstance(save, str) and save.lower() in ("true", "false"):
        save = save.lower() == "true"
    if not isinstance(save, bool):
        raise GraphError(
            400, "RequestBodyRead", "Cannot convert the literal to the expected type 'Edm.Boolean'."
        )
    return save


def _item_body(message: dict[str, Any]) -> tuple[str, str]:
    raw_body = message.get("body")
    if raw_body is None:
        return "text", ""
    if not isinstance(raw_body, dict):
        raise GraphError(400, "RequestBodyRead", "The property 'body' must be an itemBody.")
    raw_type = raw_body.get("contentType", "text")
    if not isinstance(raw_type, str) or raw_type.lower() not in ("text", "html"):
        raise GraphError(
            400,
            "RequestBodyRead",
            f"Cannot convert the literal '{raw_type}' to the expected type "
            "'microsoft.graph.bodyType'.",
        )
    content = raw_body.get("content", "")
    if not isinstance(content, str):
        raise GraphError(400, "RequestBodyRead", "The property 'content' must be a string.")
    return raw_type.lower(), content


def _check_sender(message: dict[str, Any], sender: Recipient) -> None:
    for field_name in ("from", "sender"):
        if not message.get(field_name):
            continue
        claimed = _recipients([message[field_name]], field_name)
        if claimed[0].address.lower() != sender.address.lower():
            raise GraphError(
                403,
                "ErrorSendAsDenied",
                "The user account which was used to submit this request does not have the right "
                "to send mail on behalf of the specified sending account., Cannot submit message.",
            )


def _importance(message: dict[str, Any]) -> str:
    importance = message.get("importance", "normal")
    if not isinstance(importance, str) or importance.lower() not in ("low", "normal", "high"):
        raise GraphError(
            400,
            "RequestBodyRead",
            f"Cannot convert the literal '{importance}' to the expected type "
            "'microsoft.graph.importance'.",
        )
    return importance.lower()


def _custom_headers(message: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    headers: list[tuple[str, str]] = []
    for header in message.get("internetMessageHeaders") or []:
        name = header.get("name") if isinstance(header, dict) else None
        value = header.get("value") if isinstance(header, dict) else None
        if not isinstance(name, str) or not name.lower().startswith("x-"):
            raise GraphError(
                400,
                "InvalidInternetMessageHeader",
                f"The internet message header name '{name}' should start with 'x-' or 'X-'.",
            )
        headers.append((name, str(value or "")))
    return tuple(headers)


def parse_send_mail(
    body: Any, *, sender: Recipient, internet_message_id: str, conversation_id: str, now: float
) -> tuple[Envelope, bool]:
    """Validate a ``sendMail`` body as Graph does and build the envelope.

    Returns:
        The envelope and ``saveToSentItems``.

    Raises:
        GraphError: The body is not one Graph would accept.
    """
    if not isinstance(body, dict):
        raise GraphError(400, "BadRequest", "Empty Payload. JSON content expected.")
    message = body.get("message", body.get("Message"))
    if not isinstance(message, dict):
        raise GraphError(
            400, "ErrorInvalidParameter", "The value of the parameter 'Message' is empty."
        )
    _check_properties(body, message)
    save = _save_to_sent_items(body)
    content_type, content = _item_body(message)
    subject = message.get("subject", "")
    if subject is not None and not isinstance(subject, str):
        raise GraphError(400, "RequestBodyRead", "The property 'subject' must be a string.")

    to = _recipients(message.get("toRecipients"), "toRecipients")
    cc = _recipients(message.get("ccRecipients"), "ccRecipients")
    bcc = _recipients(message.get("bccRecipients"), "bccRecipients")
    if not (to or cc or bcc):
        raise GraphError(
            400,
            "ErrorInvalidRecipients",
            "At least one recipient is not valid., A message can't be sent because it contains "
            "no recipients.",
        )
    _check_sender(message, sender)

    envelope = Envelope(
        internet_message_id=internet_message_id,
        conversation_id=conversation_id,
        subject=subject or "",
        body_content_type=content_type,
        body_content=content,
        sender=sender,
        to=to,
        cc=cc,
        bcc=bcc,
        reply_to=_recipients(message.get("replyTo"), "replyTo"),
        importance=_importance(message),
        sent_at=now,
        headers=_custom_headers(message),
    )
    return envelope, save


# The WSGI app


@dataclass(frozen=True)
class _Caller:
    address: str
    oid: str
    display_name: str
    scopes: frozenset[str]


@dataclass(frozen=True)
class _Preferences:
    immutable_ids: bool
    text_body: bool

    def applied(self) -> str | None:
        applied = []
        if self.immutable_ids:
            applied.append('IdType="ImmutableId"')
        if self.text_body:
            applied.append('outlook.body-content-type="text"')
        return ", ".join(applied) or None


def _preferences(request: Request) -> _Preferences:
    raw = ",".join(request.headers.getlist("Prefer")).lower().replace(" ", "")
    return _Preferences(
        immutable_ids='idtype="immutableid"' in raw,
        text_body='outlook.body-content-type="text"' in raw,
    )


def _skiptoken(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode().rstrip("=")


def _offset_from(token: str) -> int:
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        prefix, _, number = text.partition(":")
        if prefix != "offset":
            raise ValueError(text)
        return max(0, int(number))
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise _bad_query("The $skiptoken is not valid.") from exc


_QUERY_OPTIONS = ("$filter", "$select", "$orderby", "$top", "$skip", "$skiptoken", "$count")


def _int_option(args: Mapping[str, str], name: str) -> int:
    try:
        return int(args[name])
    except ValueError as exc:
        raise _bad_query(f"Invalid {name} value '{args[name]}'.") from exc


@dataclass(frozen=True)
class ListQuery:
    """The query options of a message listing, checked as Graph checks them."""

    predicate: Predicate | None
    order: list[tuple[str, bool]]
    select: list[str]
    top: int
    offset: int

    @classmethod
    def parse(cls, args: Mapping[str, str]) -> ListQuery:
        """Read ``$filter``, ``$orderby``, ``$select``, ``$top``, ``$skip``, ``$skiptoken``.

        Raises:
            GraphError: An option Graph would refuse.
        """
        for name in args:
            if name.startswith("$") and name not in _QUERY_OPTIONS:
                raise _bad_query(f"Query option '{name}' is not allowed.")
        predicate: Predicate | None = None
        filter_props: list[str] = []
        if args.get("$filter"):
            predicate, filter_props = parse_filter(args["$filter"])
        order = parse_orderby(args["$orderby"]) if args.get("$orderby") else []
        ordered = [prop for prop, _descending in order]
        if predicate is not None and order and filter_props[: len(ordered)] != ordered:
            # Exchange only sorts a filtered listing by the properties the filter starts with.
            raise GraphError(
                400,
                "InefficientFilter",
                "The restriction or sort order is too complex for this operation.",
            )
        top = _int_option(args, "$top") if args.get("$top") else DEFAULT_PAGE
        if not 1 <= top <= MAX_TOP:
            raise _bad_query(f"The $top value must be between 1 and {MAX_TOP}.")
        if args.get("$skiptoken"):
            offset = _offset_from(args["$skiptoken"])
        else:
            offset = max(0, _int_option(args, "$skip")) if args.get("$skip") else 0
        return cls(
            predicate=predicate,
            order=order or [("receivedDateTime", True)],
            select=parse_select(args.get("$select", "")) or list(_DEFAULT_SELECT),
            top=top,
            offset=offset,
        )


def _sorter(prop: str) -> Callable[[_View], Any]:
    return lambda view: _sort_key(view.value(prop))


class GraphApi:
    """Graph's mail subset as a WSGI app (mount it under ``/graph/v1.0``).

    Args:
        mail: The mail simulation (mailboxes, delivery, sync).
        verify_token: ``(token, audience) -> claims``; raises for an invalid token.
        display_name: The display name of a sandbox address.
        user_exists: Whether a user (address or object id) exists in the tenant.
        tenant_id: The tenant, for ``/me``.
    """

    def __init__(
        self,
        mail: MailSystem,
        *,
        verify_token: Callable[[str, str], Mapping[str, Any]],
        display_name: Callable[[str], str] = lambda _address: "",
        user_exists: Callable[[str], bool] = lambda _user: True,
        tenant_id: str = "",
    ) -> None:
        self.mail = mail
        self.user_exists = user_exists
        self.verify_token = verify_token
        self.display_name = display_name
        self.tenant_id = tenant_id

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Serve one request."""
        request = Request(environ)
        request.max_content_length = 4 * 1024 * 1024
        client_request_id = request.headers.get("client-request-id", "")[:128] or str(uuid.uuid4())
        request_id = str(uuid.uuid4())
        try:
            response = self._dispatch(request)
        except GraphError as error:
            response = self._error(error, request_id, client_request_id)
        except Exception:
            logger.exception("sandbox Graph failed on %s %s", request.method, request.path)
            response = self._error(
                GraphError(500, "generalException", "General exception while processing."),
                request_id,
                client_request_id,
            )
        response.headers["request-id"] = request_id
        response.headers["client-request-id"] = client_request_id
        response.headers.setdefault(
            "x-ms-ags-diagnostic", '{"ServerInfo":{"DataCenter":"Sandbox","Slice":"E"}}'
        )
        return response(environ, start_response)

    @staticmethod
    def _error(error: GraphError, request_id: str, client_request_id: str) -> Response:
        body = {
            "error": {
                "code": error.code,
                "message": error.message,
                "innerError": {
                    "date": iso_z(time.time()),
                    "request-id": request_id,
                    "client-request-id": client_request_id,
                },
            }
        }
        response = Response(json.dumps(body), status=error.status, content_type="application/json")
        for name, value in error.headers:
            response.headers[name] = value
        return response

    @staticmethod
    def _json(body: Any, status: int = 200, prefs: _Preferences | None = None) -> Response:
        response = Response(json.dumps(body), status=status, content_type=_JSON)
        applied = prefs.applied() if prefs else None
        if applied:
            response.headers["Preference-Applied"] = applied
        response.headers["Cache-Control"] = "no-cache"
        return response

    def _authenticate(self, request: Request) -> _Caller:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        challenge = [
            (
                "WWW-Authenticate",
                'Bearer realm="", client_id="00000003-0000-0000-c000-000000000000"',
            )
        ]
        if scheme.lower() != "bearer" or not token.strip():
            raise GraphError(
                401, "InvalidAuthenticationToken", "Access token is empty.", headers=challenge
            )
        claims: Mapping[str, Any] | None = None
        error: Exception | None = None
        for audience in GRAPH_AUDIENCES:
            try:
                claims = self.verify_token(token.strip(), audience)
                break
            except Exception as exc:
                # Graph accepts both spellings of its audience; report the first refusal.
                error = error or exc
        if claims is None:
            code = getattr(error, "code", "")
            if code in ("token_expired", "not_yet_valid"):
                message = "Access token has expired or is not yet valid."
            elif code == "wrong_audience":
                message = "Access token validation failure. Invalid audience."
            else:
                message = "IDX14100: JWT is not well formed, there are no dots (.)."
                if token.count(".") == 2:
                    message = "Access token validation failure."
            raise GraphError(401, "InvalidAuthenticationToken", message, headers=challenge)
        address = str(claims.get("preferred_username") or claims.get("upn") or "").lower()
        if not address:
            raise GraphError(401, "InvalidAuthenticationToken", "Access token validation failure.")
        scopes = frozenset(
            s.rsplit("/", 1)[-1].lower() for s in str(claims.get("scp", "")).split() if s
        )
        return _Caller(
            address=address,
            oid=str(claims.get("oid") or ""),
            display_name=str(claims.get("name") or self.display_name(address) or address),
            scopes=scopes,
        )

    @staticmethod
    def _require(caller: _Caller, allowed: set[str]) -> None:
        if not caller.scopes & allowed:
            raise GraphError(
                403, "ErrorAccessDenied", "Access is denied. Check credentials and try again."
            )

    def _dispatch(self, request: Request) -> Response:
        segments = [s for s in request.path.split("/") if s]
        if not segments:
            raise GraphError(400, "BadRequest", "Invalid request.")
        caller = self._authenticate(request)
        # /users/{id or upn}/... is /me/... when it names the caller.
        if segments[0].lower() == "users" and len(segments) >= 2:
            who = segments[1].lower()
            if not self.user_exists(who):
                raise GraphError(
                    404,
                    "Request_ResourceNotFound",
                    f"Resource '{segments[1]}' does not exist or one of its queried "
                    "reference-property objects are not present.",
                )
            if who not in (caller.address, caller.oid.lower()):
                raise GraphError(
                    403, "ErrorAccessDenied", "Access is denied. Check credentials and try again."
                )
            segments = ["me", *segments[2:]]
        if segments[0] != "me":
            raise GraphError(
                400, "BadRequest", f"Resource not found for the segment '{segments[0]}'."
            )
        method = request.method
        rest = segments[1:]
        if not rest:
            self._allow(method, "GET")
            return self._on_me(request, caller)
        with self.mail.lock:
            if rest[0] == "sendMail" and len(rest) == 1:
                self._allow(method, "POST")
                return self._on_send(request, caller)
            if rest[0] == "messages":
                return self._messages(request, caller, rest[1:], folder=None)
            if rest[0] == "mailFolders":
                return self._folders(request, caller, rest[1:])
        raise GraphError(400, "BadRequest", f"Resource not found for the segment '{rest[0]}'.")

    @staticmethod
    def _allow(method: str, *allowed: str) -> None:
        if method not in allowed:
            raise GraphError(
                405, "Request_BadRequest", f"The HTTP method '{method}' is not allowed here."
            )

    def _base(self, request: Request) -> str:
        return request.host_url.rstrip("/") + request.script_root

    # /me

    def _on_me(self, request: Request, caller: _Caller) -> Response:
        name = caller.display_name
        given, _, surname = name.partition(" ")
        user: dict[str, Any] = {
            "@odata.context": f"{self._base(request)}/$metadata#users/$entity",
            "businessPhones": [],
            "displayName": name,
            "givenName": given or None,
            "jobTitle": None,
            "mail": caller.address,
            "mobilePhone": None,
            "officeLocation": None,
            "preferredLanguage": "en-GB",
            "surname": surname or None,
            "userPrincipalName": caller.address,
            "id": caller.oid,
        }
        select = request.args.get("$select")
        if select:
            wanted = {s.strip().lower() for s in select.split(",")}
            user = {k: v for k, v in user.items() if k.startswith("@") or k.lower() in wanted}
        return self._json(user)

    # sendMail

    def _on_send(self, request: Request, caller: _Caller) -> Response:
        self._require(caller, _SEND_SCOPES)
        raw = request.get_data()
        if not raw.strip():
            raise GraphError(400, "BadRequest", "Empty Payload. JSON content expected.")
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise GraphError(
                400,
                "BadRequest",
                "Unable to read JSON request payload. Please ensure Content-Type header is set "
                "and payload is of valid JSON format.",
            ) from exc
        now = self.mail.now()
        envelope, save = parse_send_mail(
            body,
            sender=Recipient(address=caller.address, name=caller.display_name),
            internet_message_id=self.mail.new_internet_message_id(),
            conversation_id="AAQkAD" + base64.b64encode(uuid.uuid4().bytes * 2).decode(),
            now=now,
        )
        self.mail.send(caller.address, envelope, save_to_sent_items=save)
        response = Response(status=202)
        response.headers["Content-Length"] = "0"
        return response

    # Messages

    def _folder_id(self, owner: str, folder: str) -> str:
        digest = hashlib.sha256(f"{owner}/{folder}".encode()).digest()
        return "AAMkAD" + base64.urlsafe_b64encode(b"\x00" + digest[:30] + b"\x00\x00\x01").decode()

    def _resolve_folder(self, owner: str, ref: str) -> str:
        if ref.lower() in WELL_KNOWN_FOLDERS:
            return ref.lower()
        for name in WELL_KNOWN_FOLDERS:
            if self._folder_id(owner, name) == ref:
                return name
        raise GraphError(
            404, "ErrorItemNotFound", "The specified object was not found in the store."
        )

    def _folder_json(self, request: Request, owner: str, name: str) -> dict[str, Any]:
        items = self.mail.messages(owner, name)
        return {
            "id": self._folder_id(owner, name),
            "displayName": WELL_KNOWN_FOLDERS[name],
            "parentFolderId": self._folder_id(owner, "msgfolderroot"),
            "childFolderCount": 0,
            "unreadItemCount": sum(1 for m in items if not m.is_read),
            "totalItemCount": len(items),
            "isHidden": False,
        }

    def _folders(self, request: Request, caller: _Caller, rest: list[str]) -> Response:
        self._require(caller, _READ_SCOPES)
        if not rest:
            self._allow(request.method, "GET")
            return self._json(
                {
                    "@odata.context": f"{self._base(request)}/$metadata#users('{caller.oid}')"
                    "/mailFolders",
                    "value": [
                        self._folder_json(request, caller.address, name)
                        for name in WELL_KNOWN_FOLDERS
                    ],
                }
            )
        folder = self._resolve_folder(caller.address, rest[0])
        if len(rest) == 1:
            self._allow(request.method, "GET")
            return self._json(self._folder_json(request, caller.address, folder))
        if rest[1] == "messages":
            return self._messages(request, caller, rest[2:], folder=folder)
        raise GraphError(400, "BadRequest", f"Resource not found for the segment '{rest[1]}'.")

    def _messages(
        self, request: Request, caller: _Caller, rest: list[str], *, folder: str | None
    ) -> Response:
        prefs = _preferences(request)
        if not rest:
            self._allow(request.method, "GET")
            self._require(caller, _READ_SCOPES)
            return self._list(request, caller, folder, prefs)
        message = self.mail.find(caller.address, rest[0])
        if message is None or (folder is not None and message.folder != folder):
            raise GraphError(
                404, "ErrorItemNotFound", "The specified object was not found in the store."
            )
        if len(rest) == 1:
            if request.method == "GET":
                self._require(caller, _READ_SCOPES)
                select = parse_select(request.args.get("$select", "")) or list(_DEFAULT_SELECT)
                body = self._message_json(message, select, prefs)
                body = {"@odata.context": self._context(request, caller, select, one=True), **body}
                return self._json(body, prefs=prefs)
            if request.method == "DELETE":
                self._require(caller, _WRITE_SCOPES)
                self.mail.delete(caller.address, rest[0])
                return Response(status=204)
            self._allow(request.method, "GET", "DELETE")
        if len(rest) == 2 and rest[1] == "permanentDelete":
            self._allow(request.method, "POST")
            self._require(caller, _WRITE_SCOPES)
            self.mail.purge(caller.address, rest[0])
            return Response(status=204)
        raise GraphError(400, "BadRequest", f"Resource not found for the segment '{rest[-1]}'.")

    def _context(self, request: Request, caller: _Caller, select: list[str], *, one: bool) -> str:
        selected = f"({','.join(select)})" if request.args.get("$select") else ""
        return f"{self._base(request)}/$metadata#users('{caller.oid}')/messages{selected}" + (
            "/$entity" if one else ""
        )

    def _list(
        self, request: Request, caller: _Caller, folder: str | None, prefs: _Preferences
    ) -> Response:
        args = request.args
        query = ListQuery.parse(args)
        owner = caller.address
        views = [
            _View(message, self._folder_id(owner, message.folder))
            for message in self.mail.messages(owner, folder)
        ]
        if query.predicate is not None:
            views = [v for v in views if query.predicate(v)]
        # Python's sort is stable: sort by the tie-breaker first, then by each key from last to
        # first, so pages never shuffle between requests.
        views.sort(key=lambda v: v.message.immutable_id)
        for prop, descending in reversed(query.order):
            views.sort(key=_sorter(prop), reverse=descending)
        page = views[query.offset : query.offset + query.top]

        body: dict[str, Any] = {
            "@odata.context": self._context(request, caller, query.select, one=False)
        }
        if args.get("$count", "").lower() == "true":
            body["@odata.count"] = len(views)
        body["value"] = [self._message_json(v.message, query.select, prefs) for v in page]
        if query.offset + query.top < len(views):
            params = [(k, v) for k, v in args.items(multi=True) if k not in ("$skiptoken", "$skip")]
            params.append(("$skiptoken", _skiptoken(query.offset + query.top)))
            body["@odata.nextLink"] = (
                f"{self._base(request)}{request.path}?{urlencode(params, safe='$,/:')}"
            )
        return self._json(body, prefs=prefs)

    def _message_json(
        self, message: StoredMessage, select: list[str], prefs: _Preferences
    ) -> dict[str, Any]:
        env = message.envelope
        owner = message.owner
        message_id = message.immutable_id if prefs.immutable_ids else message.rest_id
        content_type, content = env.body_content_type, env.body_content
        if prefs.text_body and content_type == "html":
            content_type, content = "text", _html_to_text(content)
        full: dict[str, Any] = {
            "id": message_id,
            "createdDateTime": iso_z(message.created_at),
            "lastModifiedDateTime": iso_z(message.modified_at),
            "changeKey": message.change_key,
            "categories": [],
            "receivedDateTime": iso_z(message.received_at),
            "sentDateTime": iso_z(env.sent_at),
            "hasAttachments": False,
            "internetMessageId": env.internet_message_id,
            "subject": env.subject,
            "bodyPreview": _preview(env),
            "importance": env.importance,
            "parentFolderId": self._folder_id(owner, message.folder),
            "conversationId": env.conversation_id,
            "conversationIndex": base64.b64encode(
                hashlib.sha256(env.conversation_id.encode()).digest()[:22]
            ).decode(),
            "isDeliveryReceiptRequested": False,
            "isReadReceiptRequested": False,
            "isRead": message.is_read,
            "isDraft": False,
            "webLink": "https://outlook.office365.com/owa/?ItemID="
            + message.rest_id.replace("=", "%3D")
            + "&exvsurl=1&viewmodel=ReadMessageItem",
            "inferenceClassification": "focused",
            "body": {"contentType": content_type, "content": content},
            "uniqueBody": {"contentType": content_type, "content": content},
            "sender": env.sender.to_json(),
            "from": env.sender.to_json(),
            "toRecipients": [r.to_json() for r in env.to],
            "ccRecipients": [r.to_json() for r in env.cc],
            "bccRecipients": [r.to_json() for r in env.bcc]
            if message.folder == "sentitems"
            else [],
            "replyTo": [r.to_json() for r in env.reply_to],
            "flag": {"flagStatus": "notFlagged"},
            "internetMessageHeaders": [
                {"name": "Message-ID", "value": env.internet_message_id},
                {"name": "Subject", "value": env.subject},
                *({"name": n, "value": v} for n, v in env.headers),
            ],
            "attachments": [],
            "singleValueExtendedProperties": [],
            "multiValueExtendedProperties": [],
            "extensions": [],
        }
        result: dict[str, Any] = {"@odata.etag": f'W/"{message.change_key}"', "id": message_id}
        for name in select:
            if name != "id":
                result[name] = full[name]
        return result


def _sort_key(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


# Wiring into a world


def attach_mail(world: World) -> MailSystem:
    """Create the world's mail simulation (once)."""
    with world.lock:
        if isinstance(world.mail_store, MailSystem):
            return world.mail_store

        def is_local(address: str) -> bool:
            account = world.get_account(address)
            return account is not None and account.in_tenant

        def display_name(address: str) -> str:
            account = world.get_account(address)
            return account.display_name if account is not None else ""

        mail = MailSystem(
            clock=world.clock.now,
            lock=world.lock,
            is_local=is_local,
            display_name=display_name,
            domain=world.tenant_domain,
            delivery_delay_s=world.options.delivery_delay_s,
            sync_delay_s=world.options.sync_delay_s,
            seed=world.options.seed,
        )
        world.mail_store = mail
        return mail


def make_app(world: World) -> GraphApi:
    """The Graph app of ``world`` (mount it under ``/graph/v1.0``)."""
    mail = attach_mail(world)

    def display_name(address: str) -> str:
        account = world.get_account(address)
        return account.display_name if account is not None else ""

    def user_exists(user: str) -> bool:
        account = world.get_account(user)
        if account is not None:
            return account.in_tenant
        return any(a.oid == user for a in world.account_list() if a.in_tenant)

    return GraphApi(
        mail,
        verify_token=world.identity.verify_access_token,
        display_name=display_name,
        user_exists=user_exists,
        tenant_id=world.tenant_id,
    )
