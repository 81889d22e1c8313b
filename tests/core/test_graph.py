"""The Graph mail client against the sandbox's Graph, and its edge cases on canned answers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from qargo_desktop.core.errors import Cancelled, GraphError
from qargo_desktop.core.graph import (
    MAIL_SCOPES,
    GraphClient,
    OutgoingMessage,
    SendUnconfirmed,
    format_time,
    graph_error,
    parse_http_date,
    retry_after_s,
)

DOMAIN = "northwind-haulage.example"
DISPATCH = f"dispatch@{DOMAIN}"
SEND_PATH = "/graph/v1.0/me/sendMail"


def _client(sandbox: Any, services: Any, username: str = DISPATCH) -> GraphClient:
    token = sandbox.world.identity.issue_tokens(username, list(MAIL_SCOPES))["access_token"]
    return GraphClient(
        sandbox.info.graph_base_url,
        services.session,
        lambda *, force_refresh=False: token,
        timeout=10,
    )


def _message(subject: str, to: str = DISPATCH) -> OutgoingMessage:
    return OutgoingMessage(
        subject=subject, body=f"Body of {subject}", to=(to,), headers=(("X-Test", subject),)
    )


def _posts(sandbox: Any) -> int:
    return int(sandbox.world.faults.request_count("graph", "POST", SEND_PATH))


# -- against the sandbox ------------------------------------------------------------------


def test_me_is_the_mailbox_account(sandbox: Any, services: Any) -> None:
    user = _client(sandbox, services).me()

    assert user.user_principal_name == DISPATCH
    assert user.id


def test_send_list_every_page_and_delete(sandbox: Any, services: Any) -> None:
    client = _client(sandbox, services)
    since = datetime.now(UTC) - timedelta(seconds=5)
    subjects = [f"graph client page test {n}" for n in range(3)]

    for subject in subjects:
        info = client.send_mail(_message(subject), save_to_sent_items=False)
        assert info.status == 202
        assert info.server_date is not None
        assert abs(info.server_date.timestamp() - time.time()) < 5
        assert info.client_request_id and info.request_id
    assert _posts(sandbox) == 3
    # Delivery is scheduled on the sandbox clock: move it instead of sleeping.
    sandbox.world.clock.advance(2)

    pages = list(client.iter_messages(received_since=since, top=1))
    found = [m for page in pages for m in page.items]

    # One message a page: every nextLink was followed, and nothing older than the filter.
    assert len(pages) == 3
    assert sorted(m.subject for m in found) == subjects
    for message in found:
        assert message.internet_message_id.startswith("<")
        assert message.received_at is not None and message.sent_at is not None
        assert message.received_at >= message.sent_at
        assert message.body_preview.startswith("Body of")

    # Immutable ids survive the move to Deleted Items: the second delete finds it there.
    target = found[0]
    assert client.delete_message(target.id) is True
    assert client.delete_message(target.id) is True
    # Gone for good: not a failure.
    assert client.delete_message(target.id) is False


def test_folder_id_of_sent_items(sandbox: Any, services: Any) -> None:
    client = _client(sandbox, services)
    sent_items = client.folder_id("sentitems")

    client.send_mail(_message("kept copy"), save_to_sent_items=True)
    sandbox.world.clock.advance(2)
    copies = [
        m
        for page in client.iter_messages(received_since=datetime.now(UTC) - timedelta(minutes=1))
        for m in page.items
        if m.subject == "kept copy"
    ]

    # /me/messages lists every folder: the Sent Items copy is there beside the inbox's.
    assert sorted(m.parent_folder_id == sent_items for m in copies) == [False, True]


def test_a_refused_send_is_not_repeated(sandbox: Any, services: Any) -> None:
    client = _client(sandbox, services)
    sandbox.set_faults(unavailable_probability=1.0, retry_after=1, paths=[SEND_PATH], max_faults=1)

    with pytest.raises(GraphError) as caught:
        client.send_mail(_message("refused"))

    # The session retries 503s of idempotent requests, never a POST without a key.
    assert caught.value.status == 503
    assert caught.value.retry_after == 1
    assert _posts(sandbox) == 1
    assert sandbox.world.mail_store.sent_count == 0


def test_a_lost_answer_is_not_repeated(sandbox: Any, services: Any) -> None:
    client = _client(sandbox, services)
    sandbox.set_faults(drop_probability=1.0, drop_phase="after", paths=[SEND_PATH], max_faults=1)

    with pytest.raises(SendUnconfirmed) as caught:
        client.send_mail(_message("answer lost"))

    # The message went out; only the answer was lost. Sending again would send twice.
    assert caught.value.maybe_sent is True
    assert caught.value.client_request_id
    assert _posts(sandbox) == 1
    assert sandbox.world.mail_store.sent_count == 1


def test_graph_errors_keep_code_request_id_and_advice(sandbox: Any, services: Any) -> None:
    client = _client(sandbox, services)

    with pytest.raises(GraphError) as caught:
        client.send_mail(_message("nowhere", to="not an address"))

    assert caught.value.status == 400
    assert caught.value.code == "ErrorInvalidRecipients"
    assert caught.value.correlation_id
    assert caught.value.known


def test_cancel_stops_before_the_request(sandbox: Any, services: Any) -> None:
    client = _client(sandbox, services)
    cancel = threading.Event()
    cancel.set()
    before = sandbox.world.faults.request_count("graph")

    with pytest.raises(Cancelled):
        client.send_mail(_message("never"), cancel=cancel)
    with pytest.raises(Cancelled):
        client.message_page(received_since=datetime.now(UTC), cancel=cancel)

    assert sandbox.world.faults.request_count("graph") == before


# -- canned answers -----------------------------------------------------------------------


class _Canned(HTTPAdapter):
    """Answers from a function; records every request. No network."""

    def __init__(
        self, answer: Callable[[requests.PreparedRequest], tuple[int, Any, dict[str, str]]]
    ):
        super().__init__()
        self.answer = answer
        self.requests: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.requests.append(request)
        status, body, headers = self.answer(request)
        response = requests.Response()
        response.status_code = status
        response._content = json.dumps(body).encode() if body is not None else b""
        response.headers.update({"Content-Type": "application/json", **headers})
        response.url = request.url or ""
        response.request = request
        return response


def _canned_client(adapter: HTTPAdapter, token: Callable[..., str] | None = None) -> GraphClient:
    session = requests.Session()
    session.trust_env = False
    session.mount("https://", adapter)
    return GraphClient(
        "https://graph.test/v1.0", session, token or (lambda *, force_refresh=False: "t")
    )


def test_listing_asks_for_the_right_query_and_headers() -> None:
    adapter = _Canned(
        lambda request: (200, {"value": []}, {"Date": "Fri, 04 Dec 2026 10:00:00 GMT"})
    )
    client = _canned_client(adapter)
    since = datetime(2026, 12, 4, 9, 58, 30, 750000, tzinfo=UTC)

    page = client.message_page(received_since=since, top=25)

    query = parse_qs(urlsplit(adapter.requests[0].url or "").query)
    assert query["$filter"] == ["receivedDateTime ge 2026-12-04T09:58:30Z"]
    assert query["$top"] == ["25"]
    assert "internetMessageId" in query["$select"][0].split(",")
    headers = adapter.requests[0].headers
    assert headers["Prefer"] == 'IdType="ImmutableId"'
    assert headers["client-request-id"] == page.info.client_request_id
    assert page.info.server_date == datetime(2026, 12, 4, 10, 0, tzinfo=UTC)


def test_a_next_link_to_another_server_is_not_followed() -> None:
    adapter = _Canned(
        lambda request: (200, {"value": [], "@odata.nextLink": "https://elsewhere.test/x"}, {})
    )
    client = _canned_client(adapter)

    with pytest.raises(GraphError):
        list(client.iter_messages(received_since=datetime.now(UTC)))

    # The bearer token never went to the other host.
    assert [urlsplit(r.url or "").hostname for r in adapter.requests] == ["graph.test"]


def test_a_401_on_a_read_refreshes_the_token_once() -> None:
    calls: list[bool] = []

    def token(*, force_refresh: bool = False) -> str:
        calls.append(force_refresh)
        return "fresh" if force_refresh else "stale"

    def answer(request: requests.PreparedRequest) -> tuple[int, Any, dict[str, str]]:
        if request.headers["Authorization"] == "Bearer stale":
            return 401, {"error": {"code": "InvalidAuthenticationToken", "message": "expired"}}, {}
        return 200, {"id": "1", "userPrincipalName": DISPATCH}, {}

    adapter = _Canned(answer)
    user = _canned_client(adapter, token).me()

    assert user.user_principal_name == DISPATCH
    assert calls == [False, True]


def test_a_send_is_never_retried_even_on_401() -> None:
    adapter = _Canned(
        lambda request: (
            401,
            {"error": {"code": "InvalidAuthenticationToken", "message": "no"}},
            {},
        )
    )

    with pytest.raises(GraphError) as caught:
        _canned_client(adapter).send_mail(_message("x"))

    assert caught.value.code == "InvalidAuthenticationToken"
    assert len(adapter.requests) == 1


def test_a_session_that_would_repeat_a_post_is_refused() -> None:
    adapter = _Canned(lambda request: (202, None, {}))
    adapter.max_retries = Retry(total=3, allowed_methods=None, status_forcelist=[503])

    with pytest.raises(RuntimeError):
        _canned_client(adapter).send_mail(_message("x"))

    assert adapter.requests == []


def test_error_shapes_and_retry_after_forms() -> None:
    response = requests.Response()
    response.status_code = 429
    response._content = json.dumps(
        {"error": {"code": "ApplicationThrottled", "message": "slow down",
                   "innerError": {"request-id": "abc"}}}
    ).encode()  # fmt: skip
    response.headers["Retry-After"] = "7"
    error = graph_error(response, "client-id")
    assert (error.code, error.retry_after, error.correlation_id) == (
        "ApplicationThrottled",
        7,
        "abc",
    )
    assert error.advice.summary.startswith("Microsoft Graph is throttling")

    html = requests.Response()
    html.status_code = 502
    html._content = b"<html>proxy error</html>"
    html.headers["Content-Type"] = "text/html"
    assert graph_error(html).key == "net:unavailable"

    now = 1_000_000.0
    assert retry_after_s(formatdate(now + 10, usegmt=True), now=now) == pytest.approx(10)
    assert retry_after_s("soon") is None
    assert parse_http_date("not a date") is None
    assert format_time(datetime(2026, 1, 2, 3, 4, 5, 999, tzinfo=UTC)) == "2026-01-02T03:04:05Z"
