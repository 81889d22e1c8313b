"""The sandbox Graph over HTTPS: shapes, errors, queries, ids and mail round trips."""

from __future__ import annotations

import re
from typing import Any

import pytest
import requests

from qargo_desktop.sandbox.server import Sandbox

DOMAIN = "northwind-haulage.example"
DISPATCH = f"dispatch@{DOMAIN}"
GRAPH = "https://graph.microsoft.com"
MAIL_SCOPES = [f"{GRAPH}/Mail.ReadWrite", f"{GRAPH}/Mail.Send"]
GRAPH_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def graph_session(
    sandbox: Sandbox, username: str = DISPATCH, scopes: list[str] | None = None
) -> requests.Session:
    token = sandbox.world.identity.issue_tokens(username, scopes or MAIL_SCOPES)["access_token"]
    client = requests.Session()
    client.trust_env = False
    client.verify = str(sandbox.info.ca_certificate)
    client.headers["Authorization"] = f"Bearer {token}"
    return client


def url(sandbox: Sandbox, path: str) -> str:
    return sandbox.info.graph_base_url + path


def assert_graph_error(response: requests.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    inner = error["innerError"]
    assert GRAPH_TIME.match(inner["date"])
    assert inner["request-id"] == response.headers["request-id"]
    assert inner["client-request-id"] == response.headers["client-request-id"]
    return dict(error)


def send(
    client: requests.Session, sandbox: Sandbox, to: str, subject: str = "Self-test"
) -> requests.Response:
    return client.post(
        url(sandbox, "/me/sendMail"),
        json={
            "message": {
                "subject": subject,
                "body": {"contentType": "HTML", "content": "<p>Hello <b>there</b></p>"},
                "toRecipients": [{"emailAddress": {"address": to}}],
            }
        },
    )


@pytest.fixture
def graph(sandbox: Sandbox) -> requests.Session:
    return graph_session(sandbox)


def test_me(graph: requests.Session, sandbox: Sandbox) -> None:
    me = graph.get(url(sandbox, "/me")).json()
    assert me["userPrincipalName"] == DISPATCH
    assert me["mail"] == DISPATCH
    assert me["displayName"] == "Dispatch Desk"
    account = sandbox.world.get_account(DISPATCH)
    assert account is not None
    assert me["id"] == account.oid
    same = graph.get(url(sandbox, f"/users/{DISPATCH}")).json()
    assert same["id"] == me["id"]
    other = graph.get(url(sandbox, f"/users/planning@{DOMAIN}/messages"))
    assert_graph_error(other, 403, "ErrorAccessDenied")
    # What a Graph SDK client sends when its URL-replace option is missing.
    unknown = graph.get(url(sandbox, "/users/me-token-to-replace"))
    assert_graph_error(unknown, 404, "Request_ResourceNotFound")


def test_authentication_errors(graph: requests.Session, sandbox: Sandbox) -> None:
    anonymous = requests.get(
        url(sandbox, "/me"),
        verify=str(sandbox.info.ca_certificate),
        headers={"client-request-id": "c0ffee"},
    )
    error = assert_graph_error(anonymous, 401, "InvalidAuthenticationToken")
    assert error["innerError"]["client-request-id"] == "c0ffee"
    assert "WWW-Authenticate" in anonymous.headers

    api_token = sandbox.world.identity.issue_tokens(
        DISPATCH, ["api://qargo-sandbox/Organisation.Manage"]
    )["access_token"]
    wrong = graph.get(url(sandbox, "/me"), headers={"Authorization": f"Bearer {api_token}"})
    assert "audience" in assert_graph_error(wrong, 401, "InvalidAuthenticationToken")["message"]

    sandbox.world.clock.advance(sandbox.options.token_lifetime_s + 10)
    expired = graph.get(url(sandbox, "/me"))
    assert "expired" in assert_graph_error(expired, 401, "InvalidAuthenticationToken")["message"]


def test_scopes_are_enforced(sandbox: Sandbox) -> None:
    send_only = graph_session(sandbox, scopes=[f"{GRAPH}/Mail.Send"])
    assert_graph_error(send_only.get(url(sandbox, "/me/messages")), 403, "ErrorAccessDenied")
    assert send(send_only, sandbox, DISPATCH).status_code == 202

    # A token carries every scope the user consented to for Graph, so use another user.
    read_only = graph_session(sandbox, f"planning@{DOMAIN}", [f"{GRAPH}/Mail.ReadWrite"])
    assert_graph_error(send(read_only, sandbox, DISPATCH), 403, "ErrorAccessDenied")
    assert read_only.get(url(sandbox, "/me/messages")).status_code == 200


def test_send_and_receive_round_trip(graph: requests.Session, sandbox: Sandbox) -> None:
    sandbox.set_faults(delivery_delay_s=60)
    response = send(graph, sandbox, DISPATCH)
    assert response.status_code == 202
    assert response.content == b""
    [record] = sandbox.world.mail_store.sent
    imid = record.internet_message_id
    assert re.match(r"^<[0-9A-F]+@northwind-haulage\.example>$", imid)

    inbox = url(sandbox, "/me/mailFolders/inbox/messages")
    by_id = {"$filter": f"internetMessageId eq '{imid}'"}
    assert graph.get(inbox, params=by_id).json()["value"] == []
    # /me/messages lists every folder, as Graph does: the Sent Items copy is there at once.
    [sent_copy] = graph.get(url(sandbox, "/me/messages"), params=by_id).json()["value"]
    sent_folder = graph.get(url(sandbox, "/me/mailFolders/sentitems")).json()
    assert sent_copy["parentFolderId"] == sent_folder["id"]

    sandbox.world.clock.advance(60)
    [received] = graph.get(inbox, params=by_id).json()["value"]
    assert received["subject"] == "Self-test"
    assert received["body"] == {"contentType": "html", "content": "<p>Hello <b>there</b></p>"}
    assert received["bodyPreview"] == "Hello there"
    assert received["from"]["emailAddress"]["address"] == DISPATCH
    assert GRAPH_TIME.match(received["receivedDateTime"])
    assert received["sentDateTime"] <= received["receivedDateTime"]
    assert received["@odata.etag"].startswith('W/"')
    both = graph.get(url(sandbox, "/me/messages"), params=by_id).json()["value"]
    assert len(both) == 2


def test_send_validation(graph: requests.Session, sandbox: Sandbox) -> None:
    nobody = graph.post(url(sandbox, "/me/sendMail"), json={"message": {"subject": "x"}})
    assert_graph_error(nobody, 400, "ErrorInvalidRecipients")
    bad = send(graph, sandbox, "not-an-address")
    assert_graph_error(bad, 400, "ErrorInvalidRecipients")
    empty = graph.post(url(sandbox, "/me/sendMail"), data=b"")
    assert_graph_error(empty, 400, "BadRequest")
    junk = graph.post(
        url(sandbox, "/me/sendMail"), data=b"{", headers={"Content-Type": "application/json"}
    )
    assert_graph_error(junk, 400, "BadRequest")
    assert sandbox.world.mail_store.sent_count == 0


def test_listing_queries_and_paging(graph: requests.Session, sandbox: Sandbox) -> None:
    world = sandbox.world
    start = world.clock.now()
    for index in range(5):
        assert send(graph, sandbox, DISPATCH, f"Run {index}").status_code == 202
        world.clock.advance(10)
    world.clock.advance(5)
    since = f"receivedDateTime ge {_iso(start)}"
    inbox = url(sandbox, "/me/mailFolders/inbox/messages")

    page = graph.get(
        inbox,
        params={
            "$filter": since,
            "$orderby": "receivedDateTime asc",
            "$select": "subject,receivedDateTime",
            "$top": "2",
        },
    ).json()
    subjects = [m["subject"] for m in page["value"]]
    for message in page["value"]:
        assert set(message) == {"@odata.etag", "id", "subject", "receivedDateTime"}
    while "@odata.nextLink" in page:
        assert "$skiptoken=" in page["@odata.nextLink"]
        page = graph.get(page["@odata.nextLink"]).json()
        subjects.extend(m["subject"] for m in page["value"])
    assert subjects == [f"Run {i}" for i in range(5)]

    newest = graph.get(inbox, params={"$filter": since, "$top": "1"}).json()["value"]
    assert newest[0]["subject"] == "Run 4"

    too_complex = graph.get(
        inbox,
        params={"$filter": "subject eq 'Run 1'", "$orderby": "receivedDateTime desc"},
    )
    assert_graph_error(too_complex, 400, "InefficientFilter")
    bad_select = graph.get(inbox, params={"$select": "subject,colour"})
    assert_graph_error(bad_select, 400, "RequestBroker--ParseUri")
    quoted = graph.get(inbox, params={"$filter": f"receivedDateTime ge '{_iso(start)}'"})
    assert_graph_error(quoted, 400, "BadRequest")


def test_immutable_ids_and_delete(graph: requests.Session, sandbox: Sandbox) -> None:
    send(graph, sandbox, DISPATCH, "Delete me")
    sandbox.world.clock.advance(sandbox.options.delivery_delay_s)
    inbox = url(sandbox, "/me/mailFolders/inbox/messages")
    params = {"$filter": "subject eq 'Delete me'"}
    [default] = graph.get(inbox, params=params).json()["value"]
    immutable_response = graph.get(inbox, params=params, headers={"Prefer": 'IdType="ImmutableId"'})
    assert immutable_response.headers["Preference-Applied"] == 'IdType="ImmutableId"'
    [immutable] = immutable_response.json()["value"]
    assert default["id"] != immutable["id"]
    assert "Preference-Applied" not in graph.get(inbox, params=params).headers

    one = graph.get(url(sandbox, f"/me/messages/{default['id']}"))
    assert one.json()["internetMessageId"] == immutable["internetMessageId"]
    text = graph.get(
        url(sandbox, f"/me/messages/{default['id']}"),
        headers={"Prefer": 'outlook.body-content-type="text"'},
    ).json()
    assert text["body"] == {"contentType": "text", "content": "Hello there"}

    assert graph.delete(url(sandbox, f"/me/messages/{default['id']}")).status_code == 204
    gone = graph.get(url(sandbox, f"/me/messages/{default['id']}"))
    assert_graph_error(gone, 404, "ErrorItemNotFound")
    moved = graph.get(
        url(sandbox, f"/me/messages/{immutable['id']}"), headers={"Prefer": 'IdType="ImmutableId"'}
    ).json()
    assert moved["id"] == immutable["id"]
    deleted_items = graph.get(url(sandbox, "/me/mailFolders/deleteditems")).json()
    assert moved["parentFolderId"] == deleted_items["id"]
    purge = graph.post(url(sandbox, f"/me/messages/{immutable['id']}/permanentDelete"))
    assert purge.status_code == 204
    again = graph.delete(url(sandbox, f"/me/messages/{immutable['id']}"))
    assert_graph_error(again, 404, "ErrorItemNotFound")


def test_unknown_segments_answer_like_graph(graph: requests.Session, sandbox: Sandbox) -> None:
    assert_graph_error(graph.get(url(sandbox, "/me/calendar")), 400, "BadRequest")
    assert_graph_error(graph.get(url(sandbox, "/groups")), 400, "BadRequest")
    folders = graph.get(url(sandbox, "/me/mailFolders")).json()["value"]
    assert {f["displayName"] for f in folders} >= {"Inbox", "Sent Items", "Deleted Items"}


def _iso(timestamp: float) -> str:
    from qargo_desktop.sandbox.mail import iso_z

    return iso_z(timestamp)
