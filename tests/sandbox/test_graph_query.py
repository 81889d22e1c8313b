"""Graph's OData subset and sendMail validation, without HTTP."""

from __future__ import annotations

import pytest

from qargo_desktop.sandbox.graph import (
    GraphError,
    ListQuery,
    _View,
    parse_filter,
    parse_orderby,
    parse_select,
    parse_send_mail,
)
from qargo_desktop.sandbox.mail import Envelope, MailSystem, Recipient, StoredMessage

ME = Recipient("dispatch@northwind-haulage.example", "Dispatch Desk")
T0 = 1_800_000_000


def stored(subject: str, received: float, imid: str = "<a@x>") -> _View:
    mail = MailSystem(clock=lambda: T0)
    envelope = Envelope(
        internet_message_id=imid,
        conversation_id="c",
        subject=subject,
        body_content_type="text",
        body_content="body",
        sender=ME,
        to=(ME,),
        sent_at=received - 2,
    )
    message: StoredMessage = mail.add_message(ME.address, envelope, received_at=received)
    return _View(message, "folder-id")


def matches(text: str, view: _View) -> bool:
    predicate, _props = parse_filter(text)
    return predicate(view)


def test_filter_by_received_time() -> None:
    view = stored("Hello", T0 + 0.9)  # Graph shows whole seconds: 2027-01-15T08:00:00Z
    assert matches("receivedDateTime ge 2027-01-15T08:00:00Z", view)
    assert not matches("receivedDateTime gt 2027-01-15T08:00:00Z", view)
    assert matches("receivedDateTime ge 2027-01-15T09:00:00+01:00", view)
    assert not matches("receivedDateTime ge 2027-01-15T08:00:00.500Z", view)
    assert matches("receivedDateTime lt 2027-01-15T08:00:01Z and subject eq 'HELLO'", view)


def test_filter_by_message_id_and_functions() -> None:
    view = stored("It's here", T0, "<Self-Test-1@northwind-haulage.example>")
    assert matches("internetMessageId eq '<Self-Test-1@northwind-haulage.example>'", view)
    assert not matches("internetMessageId eq '<other@x>'", view)
    assert matches("contains(subject,'it''s')", view)
    assert matches("startswith(subject, 'It') or isRead eq true", view)
    assert matches("not (isRead eq true)", view)
    assert matches("from/emailAddress/address eq 'dispatch@northwind-haulage.example'", view)


@pytest.mark.parametrize(
    ("text", "code", "fragment"),
    [
        ("receivedDateTime ge '2027-01-15T08:00:00Z'", "BadRequest", "incompatible types"),
        ("colour eq 'red'", "RequestBroker--ParseUri", "Could not find a property named 'colour'"),
        ("subject eq", "BadRequest", "Invalid filter clause"),
        ("subject like 'x'", "BadRequest", "unknown operator"),
        ("(subject eq 'x'", "BadRequest", "Invalid filter clause"),
        ("subject eq 'x' garbage", "BadRequest", "unexpected"),
        ("", "BadRequest", "empty"),
    ],
)
def test_bad_filters(text: str, code: str, fragment: str) -> None:
    with pytest.raises(GraphError) as excinfo:
        parse_filter(text)
    assert excinfo.value.code == code
    assert fragment in excinfo.value.message


def test_orderby_and_select() -> None:
    assert parse_orderby("receivedDateTime desc, subject") == [
        ("receivedDateTime", True),
        ("subject", False),
    ]
    assert parse_select("Subject, receivedDateTime,subject") == ["subject", "receivedDateTime"]
    with pytest.raises(GraphError, match="sideways"):
        parse_orderby("subject sideways")
    with pytest.raises(GraphError) as excinfo:
        parse_select("subject,nope")
    assert excinfo.value.code == "RequestBroker--ParseUri"


def test_orderby_with_filter_must_follow_the_filter() -> None:
    ok = ListQuery.parse(
        {
            "$filter": "receivedDateTime ge 2027-01-15T08:00:00Z and subject eq 'x'",
            "$orderby": "receivedDateTime desc",
        }
    )
    assert ok.order == [("receivedDateTime", True)]
    with pytest.raises(GraphError) as excinfo:
        ListQuery.parse(
            {"$filter": "internetMessageId eq '<a@x>'", "$orderby": "receivedDateTime desc"}
        )
    assert excinfo.value.code == "InefficientFilter"


def test_list_query_defaults_and_limits() -> None:
    query = ListQuery.parse({})
    assert (query.top, query.offset, query.order) == (10, 0, [("receivedDateTime", True)])
    for args in ({"$top": "0"}, {"$top": "1001"}, {"$top": "x"}, {"$skiptoken": "!!"}):
        with pytest.raises(GraphError):
            ListQuery.parse(args)
    with pytest.raises(GraphError, match="not allowed"):
        ListQuery.parse({"$expand": "attachments"})


def send_body(**message: object) -> dict[str, object]:
    base: dict[str, object] = {
        "subject": "Test",
        "body": {"contentType": "Text", "content": "Hi"},
        "toRecipients": [{"emailAddress": {"address": "planning@northwind-haulage.example"}}],
    }
    base.update(message)
    return {"message": base}


def parse(body: object) -> tuple[Envelope, bool]:
    return parse_send_mail(
        body, sender=ME, internet_message_id="<m@x>", conversation_id="c", now=T0
    )


def test_send_mail_builds_the_envelope() -> None:
    envelope, save = parse(
        send_body(
            body={"contentType": "HTML", "content": "<p>Hi</p>"},
            ccRecipients=[{"emailAddress": {"address": "a@b.example", "name": "A"}}],
            internetMessageHeaders=[{"name": "x-qargo-selftest", "value": "42"}],
            importance="High",
        )
        | {"saveToSentItems": False}
    )
    assert save is False
    assert envelope.body_content_type == "html"
    assert envelope.cc == (Recipient("a@b.example", "A"),)
    assert envelope.headers == (("x-qargo-selftest", "42"),)
    assert envelope.importance == "high"
    assert envelope.sender == ME


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (None, 400, "BadRequest"),
        ({}, 400, "ErrorInvalidParameter"),
        (send_body(toRecipients=[]), 400, "ErrorInvalidRecipients"),
        (
            send_body(toRecipients=[{"emailAddress": {"address": "not-an-address"}}]),
            400,
            "ErrorInvalidRecipients",
        ),
        (send_body(toRecipients=[{"address": "a@b.example"}]), 400, "ErrorInvalidRecipients"),
        (send_body(colour="red"), 400, "RequestBodyRead"),
        ({**send_body(), "urgent": True}, 400, "RequestBodyRead"),
        (send_body(body={"contentType": "markdown", "content": "x"}), 400, "RequestBodyRead"),
        (
            send_body(**{"from": {"emailAddress": {"address": "ceo@northwind-haulage.example"}}}),
            403,
            "ErrorSendAsDenied",
        ),
        (
            send_body(internetMessageHeaders=[{"name": "Subject", "value": "x"}]),
            400,
            "InvalidInternetMessageHeader",
        ),
    ],
)
def test_send_mail_refuses_what_graph_refuses(body: object, status: int, code: str) -> None:
    with pytest.raises(GraphError) as excinfo:
        parse(body)
    assert (excinfo.value.status, excinfo.value.code) == (status, code)
