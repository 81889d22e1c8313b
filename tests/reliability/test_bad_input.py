"""Bad input: every parser of a service's answer, fed what proxies, bugs and attackers send.

The organisation API and Graph clients are driven through a small HTTP server on loopback
that answers with whatever Hypothesis generated (wrong types, unknown enum values, missing
and extra fields, huge and odd Unicode, HTML error pages, empty and truncated bodies), so
the whole path is exercised: requests, the shared session, the parser, the error. The
token endpoint is exercised twice: our mapping of MSAL's result dictionaries, and MSAL
itself redeeming a refresh token against a fake authority (HTTPS on loopback, signed by the
sandbox's local CA) whose token endpoint answers garbage.

Every answer must end in a result or a :class:`QargoError` that carries advice: never
another exception, and never a wrong state (an unknown status parses as ``UNKNOWN`` with
its raw value; a mailbox without an id, address or status is refused, not shown).
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import ssl
import string
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from qargo_desktop.core.api import Attempt, OrganisationClient
from qargo_desktop.core.config import Settings
from qargo_desktop.core.errors import ADVICE, IdentityError, QargoError
from qargo_desktop.core.graph import GraphClient, OutgoingMessage
from qargo_desktop.core.http import RetryPolicy, build_session
from qargo_desktop.core.identity import IdentityClient, MemoryCacheStore
from qargo_desktop.core.models import ContractError, LinkStatus, Mailbox, parse_mailbox

KNOWN_STATUSES = ("linked", "unlinked", "reauthorisation_required", "link_failed", "authorising")
REQUIRED = ("id", "address", "status")

SETTINGS = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)

# -- strategies -----------------------------------------------------------------------------

# Unicode that breaks naive code: right-to-left marks, zero-width joiners, combining marks,
# surrogate-free astral characters, NUL and other controls, and a lone BOM.
ODD_CHARACTERS = "\u202e\u200d\u0301\U0001f4e7\x00\x07\ufeff\u2028\U00010348\u00df\u0130"
odd_text = st.text(
    alphabet=st.one_of(st.characters(codec="utf-8"), st.sampled_from(ODD_CHARACTERS)),
    max_size=40,
)
huge_text = st.builds(lambda piece, n: piece * n, odd_text.filter(bool), st.integers(1000, 40000))
any_text = st.one_of(odd_text, huge_text, st.sampled_from(["", " ", "null", "0"]))

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False), any_text,
)  # fmt: skip
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(odd_text, children, max_size=4)
    ),
    max_leaves=12,
)
timestamps = st.one_of(
    st.just("2026-12-04T15:27:54Z"),
    st.just("2026-12-04T15:27:54.123456+01:00"),
    st.none(),
    json_values,
)


def valid_mailbox(number: int = 1) -> dict[str, Any]:
    return {
        "id": f"mbx_{number}",
        "address": f"box{number}@northwind-haulage.example",
        "display_name": "Box",
        "status": "linked",
        "status_reason": None,
        "status_changed_at": "2026-12-04T15:27:54Z",
        "linked_at": "2026-12-04T15:27:54Z",
        "linked_by": "admin@northwind-haulage.example",
        "granted_scopes": ["https://graph.microsoft.com/Mail.Send"],
        "last_sync_at": None,
        "last_error": None,
        "etag": 'W/"1"',
        "authorisation": None,
    }


@st.composite
def mailbox_objects(draw: st.DrawFn, number: int = 1) -> Any:
    """A mailbox object, usually close to the contract, with some fields broken."""
    if draw(st.integers(0, 19)) == 0:
        return draw(json_values)  # not even an object
    data: dict[str, Any] = valid_mailbox(number)
    for key in draw(st.lists(st.sampled_from(sorted(data)), unique=True, max_size=4)):
        del data[key]
    broken = draw(st.lists(st.sampled_from(sorted(valid_mailbox())), unique=True, max_size=3))
    for key in broken:
        if key.endswith("_at"):
            data[key] = draw(timestamps)
        elif key == "status":
            data[key] = draw(st.one_of(st.sampled_from(KNOWN_STATUSES), any_text, json_values))
        else:
            data[key] = draw(st.one_of(any_text, json_values))
    extra = draw(st.dictionaries(odd_text, json_values, max_size=3))
    for key, value in extra.items():
        data.setdefault(key, value)
    return data


@dataclass
class Reply:
    """What the loopback server answers next."""

    status: int = 200
    body: bytes = b"{}"
    content_type: str | None = "application/json"
    # "whole", "truncated" (half the announced body, then hang up) or "dropped" (no answer).
    delivery: str = "whole"
    headers: dict[str, str] = field(default_factory=dict)


PROXY_PAGES = [
    b"<html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1></body></html>",
    b"<!DOCTYPE html><html><body>Access denied by corporate policy (blocked category)</body>",
    b"<HTML><HEAD><TITLE>Error</TITLE></HEAD><BODY>The requested URL could not be retrieved",
]


@st.composite
def replies(draw: st.DrawFn, payload: st.SearchStrategy[Any]) -> Reply:
    """An answer a service, a proxy or a broken network might give."""
    status = draw(st.sampled_from([200, 200, 200, 201, 400, 404, 409, 412, 422, 429, 500, 502,
                                   503]))  # fmt: skip
    kind = draw(st.sampled_from(["json", "json", "json", "proxy", "empty", "cut", "bytes"]))
    content_type = draw(
        st.sampled_from(
            ["application/json", "application/problem+json", "text/html", "text/plain", None]
        )
    )
    if kind == "json":
        text = json.dumps(draw(payload), ensure_ascii=draw(st.booleans()))
        body = text.encode("utf-8", "surrogatepass")
    elif kind == "proxy":
        body = draw(st.sampled_from(PROXY_PAGES))
        content_type = "text/html"
    elif kind == "empty":
        body = b""
    elif kind == "cut":
        whole = json.dumps(draw(payload)).encode()
        body = whole[: draw(st.integers(0, max(0, len(whole) - 1)))]
    else:
        body = draw(st.binary(max_size=300))
    delivery = draw(st.sampled_from(["whole"] * 8 + ["truncated", "dropped"]))
    return Reply(status, body, content_type, delivery)


# -- the loopback server -------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: _ReplyServer
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        reply = self.server.reply
        self.server.requests += 1
        if reply.delivery == "dropped":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_response(reply.status)
        if reply.content_type:
            self.send_header("Content-Type", reply.content_type)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        if reply.delivery == "truncated":
            self.send_header("Connection", "close")
        self.end_headers()
        if reply.delivery == "truncated":
            self.wfile.write(reply.body[: len(reply.body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(reply.body)

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def do_PUT(self) -> None:
        self._answer()

    def do_DELETE(self) -> None:
        self._answer()

    def log_message(self, format: str, *args: Any) -> None:
        return


class _ReplyServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.reply = Reply()
        self.requests = 0
        self.tls = tls
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)

    @property
    def base(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.server_address[1]}"


@pytest.fixture(scope="module")
def server() -> Iterator[_ReplyServer]:
    running = _ReplyServer()
    thread = threading.Thread(target=running.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield running
    running.shutdown()
    running.server_close()
    thread.join(5)


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    # One attempt per request: each example is one answer, not a retry storm.
    built = build_session(
        Settings(config_dir=tmp_path_factory.mktemp("config"), http_timeout_s=5),
        retry_policy=RetryPolicy(max_attempts=1),
    )
    yield built
    built.close()


def token(*, force_refresh: bool = False) -> str:
    return "not-a-real-token"


def assert_advised(exc: BaseException) -> None:
    """The person gets a sentence and a next step, never a traceback."""
    assert isinstance(exc, QargoError), f"raw {type(exc).__name__}: {exc!r}"
    assert exc.advice.summary
    assert exc.explain().strip()


# -- the model ------------------------------------------------------------------------------


@SETTINGS
@given(mailbox_objects())
def test_parse_mailbox_accepts_or_refuses_never_crashes(data: Any) -> None:
    try:
        mailbox = parse_mailbox(data)
    except ContractError:
        # Refused: a required field is missing, empty or of the wrong type, or a known
        # field has the wrong type.
        return
    assert isinstance(data, dict)
    for key in REQUIRED:
        assert isinstance(data[key], str) and data[key]
    assert mailbox.id == data["id"] and mailbox.address == data["address"]
    assert mailbox.raw_status == data["status"]
    expected = data["status"] if data["status"] in KNOWN_STATUSES else "unknown"
    assert mailbox.status is LinkStatus(expected)


@SETTINGS
@given(st.sampled_from(REQUIRED), st.sampled_from([None, "", 0, [], {}, False, "MISSING"]))
def test_a_mailbox_without_id_address_or_status_is_refused(key: str, value: Any) -> None:
    data = valid_mailbox()
    if value == "MISSING":
        del data[key]
    else:
        data[key] = value
    with pytest.raises(ContractError):
        parse_mailbox(data)


@SETTINGS
@given(any_text.filter(lambda s: s and s not in KNOWN_STATUSES and s != "unknown"))
@example("Linked")  # case matters: the API's values are lower case
@example("unknown")
def test_an_unknown_status_is_shown_as_unknown_with_its_raw_value(raw: str) -> None:
    mailbox = parse_mailbox({**valid_mailbox(), "status": raw})
    assert mailbox.status is LinkStatus.UNKNOWN
    assert mailbox.raw_status == raw
    assert mailbox.actions == ()  # refresh only: nothing is offered for a state we do not know


# -- the organisation API client ------------------------------------------------------------


def list_payloads() -> st.SearchStrategy[Any]:
    page = st.fixed_dictionaries(
        {"items": st.lists(mailbox_objects(), max_size=4)},
        optional={
            "next_cursor": st.one_of(st.none(), st.just(""), json_values),
            "total": json_values,
            "extra": json_values,
        },
    )
    return st.one_of(page, page, json_values)


@SETTINGS
@given(replies(list_payloads()))
def test_listing_mailboxes_never_shows_a_wrong_list(
    server: _ReplyServer, session: Any, reply: Reply
) -> None:
    server.reply = reply
    client = OrganisationClient(f"{server.base}/api", session, token, timeout=5)
    try:
        listing = client.list_mailboxes()
    except Exception as exc:
        assert_advised(exc)
        return
    # Accepted: exactly what the server sent, every item valid, nothing dropped silently.
    assert listing is not None
    assert reply.status < 300 and reply.delivery == "whole"
    sent = json.loads(reply.body)
    assert [m.id for m in listing.items] == [item["id"] for item in sent["items"]]


@SETTINGS
@given(replies(mailbox_objects()))
def test_reading_one_mailbox(server: _ReplyServer, session: Any, reply: Reply) -> None:
    server.reply = reply
    client = OrganisationClient(f"{server.base}/api", session, token, timeout=5)
    try:
        mailbox = client.get_mailbox("mbx_1")
    except Exception as exc:
        assert_advised(exc)
        return
    assert isinstance(mailbox, Mailbox)
    sent = json.loads(reply.body)
    assert mailbox.raw_status == sent["status"]


def _items(item: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.fixed_dictionaries(
            {"items": st.one_of(st.lists(item, max_size=3), json_values)},
            optional={"next_cursor": json_values},
        ),
        json_values,
    )


# What each call is fed: its own answer's shape, broken in every way, or anything at all.
OTHER_CALLS: dict[str, st.SearchStrategy[Any]] = {
    "me": st.fixed_dictionaries(
        {"id": any_text, "username": any_text},
        optional={
            "is_super_admin": json_values,
            "display_name": json_values,
            "tenant_id": json_values,
        },
    ),
    "organisation": st.fixed_dictionaries(
        {"id": any_text, "name": any_text},
        optional={
            "mail": st.one_of(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "client_id": json_values,
                        "authority": json_values,
                        "required_link_scopes": json_values,
                    },
                ),
                json_values,
            ),
            "tenant_id": json_values,
        },
    ),
    "events": _items(st.dictionaries(st.sampled_from(["id", "at", "actor", "action"]),
                                     json_values)),
    "synced": _items(st.dictionaries(st.sampled_from(["internet_message_id", "synced_at",
                                                      "received_at"]), json_values)),
    "start": st.dictionaries(
        st.sampled_from(["id", "mailbox_id", "kind", "expires_at", "required_scopes",
                         "login_hint", "previous_status", "status"]),
        json_values,
    ),
    "reset": mailbox_objects(),
    "attempt": st.dictionaries(st.sampled_from(["id", "status"]), json_values),
}  # fmt: skip


@pytest.mark.parametrize("call", sorted(OTHER_CALLS))
@settings(SETTINGS, max_examples=60)
@given(data=st.data())
def test_every_other_api_answer(server: _ReplyServer, session: Any, call: str, data: Any) -> None:
    reply = data.draw(replies(OTHER_CALLS[call]))
    server.reply = reply
    client = OrganisationClient(f"{server.base}/api", session, token, timeout=5)
    mailbox = parse_mailbox(valid_mailbox())
    attempt = Attempt("att_1", mailbox.id, "authorise", None, mailbox.address, (), "linked")
    calls = {
        "me": client.me,
        "organisation": client.organisation,
        "events": lambda: client.events(mailbox.id),
        "synced": lambda: client.synced_messages(mailbox.id, "<m@x>"),
        "start": lambda: client.start_authorisation(mailbox, "authorise"),
        "reset": lambda: client.reset(mailbox),
        "attempt": lambda: client.attempt_status(attempt),
    }
    try:
        calls[call]()
    except Exception as exc:
        assert_advised(exc)


@SETTINGS
@given(st.sampled_from(PROXY_PAGES), st.sampled_from([200, 403, 407, 502, 503, 504]))
def test_a_proxy_error_page_is_named_as_such(
    server: _ReplyServer, session: Any, page: bytes, status: int
) -> None:
    server.reply = Reply(status, page, "text/html")
    client = OrganisationClient(f"{server.base}/api", session, token, timeout=5)
    with pytest.raises(QargoError) as caught:
        client.list_mailboxes()
    error = caught.value
    # Known advice: the person is told the answer was not understood, or the service is
    # unavailable, or the proxy wants a password; never "contact support" for a proxy page.
    assert error.known, (error.key, error.code)
    if status == 200:
        assert error.key == "net:bad_response"


# -- the Graph client -----------------------------------------------------------------------


def graph_payloads() -> st.SearchStrategy[Any]:
    message = st.fixed_dictionaries(
        {"id": st.one_of(any_text, json_values)},
        optional={
            "subject": json_values,
            "internetMessageId": json_values,
            "receivedDateTime": timestamps,
            "sentDateTime": timestamps,
            "internetMessageHeaders": json_values,
            "isDraft": json_values,
        },
    )
    listing = st.fixed_dictionaries(
        {"value": st.one_of(st.lists(message, max_size=3), json_values)},
        optional={"@odata.nextLink": json_values},
    )
    error = st.fixed_dictionaries(
        {"error": st.one_of(
            st.fixed_dictionaries({"code": json_values, "message": json_values},
                                  optional={"innerError": json_values}),
            json_values,
        )}
    )  # fmt: skip
    me = st.fixed_dictionaries({"id": json_values}, optional={"displayName": json_values})
    return st.one_of(listing, error, me, json_values)


@SETTINGS
@given(replies(graph_payloads()), st.sampled_from(["me", "page", "delete", "send"]))
def test_every_graph_answer(server: _ReplyServer, session: Any, reply: Reply, call: str) -> None:
    server.reply = reply
    client = GraphClient(f"{server.base}/graph/v1.0", session, token, timeout=5)
    calls = {
        "me": client.me,
        "page": client.message_page,
        "delete": lambda: client.delete_message("AAMk=="),
        "send": lambda: client.send_mail(
            OutgoingMessage(subject="s", body="b", to=("a@northwind-haulage.example",))
        ),
    }
    before = server.requests
    try:
        calls[call]()
    except Exception as exc:
        assert_advised(exc)
    if call == "send":
        assert server.requests - before == 1  # sendMail goes out once, whatever came back


# -- the token endpoint: our mapping of MSAL's result ---------------------------------------


def _b64(data: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


aadsts_descriptions = st.one_of(
    st.builds(
        lambda number, text: f"AADSTS{number}: {text}",
        st.sampled_from(["50173", "65001", "65004", "700082", "50076", "90033", "9999999"]),
        odd_text,
    ),
    any_text,
    st.none(),
)
msal_errors = st.fixed_dictionaries(
    {"error": st.one_of(st.sampled_from(["invalid_grant", "interaction_required",
                                         "temporarily_unavailable", "server_error"]), any_text)},
    optional={
        "error_description": aadsts_descriptions,
        "error_codes": st.lists(st.integers(0, 10**7), max_size=3),
        "correlation_id": st.one_of(st.uuids().map(str), any_text),
        "claims": st.one_of(st.none(), any_text),
        "suberror": any_text,
    },
)  # fmt: skip
msal_successes = st.fixed_dictionaries(
    {"access_token": st.text(string.ascii_letters + string.digits, min_size=16).map(
        lambda s: f"eyJ0eXAi.{s}.sig"
    )},
    optional={
        "expires_in": st.one_of(st.integers(0, 10**6), st.sampled_from(["3599", "0"])),
        "scope": st.one_of(st.just("api://qargo-sandbox/Organisation.Manage"), odd_text),
        "id_token_claims": st.fixed_dictionaries(
            {}, optional={"preferred_username": any_text, "oid": any_text, "tid": any_text,
                          "name": any_text}),
        "client_info": st.one_of(
            st.builds(_b64, st.fixed_dictionaries({"uid": st.text(max_size=8),
                                                   "utid": st.text(max_size=8)})),
            st.builds(_b64, json_values), any_text),
        "token_type": st.sampled_from(["Bearer", "pop", ""]),
        "refresh_token": st.text(min_size=1, max_size=30),
        "token_source": st.sampled_from(["cache", "identity_provider"]),
    },
)  # fmt: skip


# What MSAL passes through from a token answer whose access_token is not a token at all.
msal_not_tokens = st.fixed_dictionaries(
    {"access_token": st.one_of(st.none(), st.just(""), st.integers(), st.lists(st.integers()))},
    optional={"token_type": st.just("Bearer"), "expires_in": st.just(3599)},
)


@SETTINGS
@given(result=st.one_of(msal_errors, msal_successes, msal_not_tokens))
def test_token_results_map_to_a_token_or_advice(
    result: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.clear()
    client = IdentityClient("https://127.0.0.1:9/tenant", "client", session=None)  # type: ignore[arg-type]
    try:
        obtained = client._result(dict(result), time.monotonic(), "silent")
    except Exception as exc:
        assert not isinstance(result.get("access_token"), str) or not result["access_token"]
        assert isinstance(exc, IdentityError), f"raw {type(exc).__name__}: {exc!r}"
        assert_advised(exc)
        number = (exc.code or "").removeprefix("AADSTS")
        if f"aadsts:{number}" in ADVICE:
            assert exc.key == f"aadsts:{number}"
        return
    assert obtained.access_token == result["access_token"]
    claims = result.get("id_token_claims") or {}
    assert obtained.username == str(claims.get("preferred_username") or "")
    # The token itself never reaches the log.
    assert result["access_token"] not in caplog.text


# -- the token endpoint: MSAL itself against a fake authority -------------------------------

TENANT = "7d1c2b3a-0000-4000-8000-00000000abcd"
CLIENT = "0b6f8a2e-3c51-4d7e-9a6b-2f1c8e4d5a70"
SCOPE = "api://qargo-test/Organisation.Manage"


class _AuthorityHandler(_Handler):
    """Discovery as a real authority serves it; the token endpoint as Hypothesis wishes."""

    def do_GET(self) -> None:
        if not self.path.endswith("/.well-known/openid-configuration"):
            self._answer()
            return
        base = self.server.base
        body = json.dumps({
            "issuer": f"{base}/{TENANT}/v2.0",
            "authorization_endpoint": f"{base}/{TENANT}/oauth2/v2.0/authorize",
            "token_endpoint": f"{base}/{TENANT}/oauth2/v2.0/token",
            "device_authorization_endpoint": f"{base}/{TENANT}/oauth2/v2.0/devicecode",
            "jwks_uri": f"{base}/{TENANT}/discovery/v2.0/keys",
        }).encode()  # fmt: skip
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def token_response(username: str = "admin@northwind-haulage.example") -> dict[str, Any]:
    """A well-formed token response (unsigned id token: MSAL 1.38+ does not check it)."""
    uid = "00000000-0000-0000-0000-000000000001"
    id_token = ".".join([
        _b64({"alg": "none", "typ": "JWT"}),
        _b64({"iss": f"https://127.0.0.1/{TENANT}/v2.0", "aud": CLIENT, "sub": uid, "oid": uid,
              "tid": TENANT, "preferred_username": username, "exp": int(time.time()) + 3600,
              "iat": int(time.time())}),
        "",
    ])  # fmt: skip
    return {
        "token_type": "Bearer",
        "scope": SCOPE,
        "expires_in": 3599,
        "access_token": "AT-good",
        "refresh_token": "RT-good",
        "id_token": id_token,
        "client_info": _b64({"uid": uid, "utid": TENANT}),
    }


def token_payloads() -> st.SearchStrategy[Any]:
    broken_success = st.builds(
        lambda good, drop, extra: {
            **{k: v for k, v in good.items() if k not in drop}, **extra
        },
        st.just(token_response()),
        st.lists(st.sampled_from(sorted(token_response())), unique=True, max_size=3),
        st.dictionaries(st.sampled_from([*sorted(token_response()), "claims", "error"]),
                        json_values, max_size=2),
    )  # fmt: skip
    return st.one_of(msal_errors, broken_success, json_values)


@pytest.fixture(scope="module")
def authority(sandbox_certs: Path) -> Iterator[_ReplyServer]:
    from qargo_desktop.sandbox import ca

    paths = ca.ensure_certificates(sandbox_certs / "certificates")
    running = _ReplyServer(ca.server_context(paths))
    running.RequestHandlerClass = _AuthorityHandler
    running.ca_certificate = paths.ca_certificate  # type: ignore[attr-defined]
    thread = threading.Thread(target=running.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield running
    running.shutdown()
    running.server_close()
    thread.join(5)


@pytest.fixture(scope="module")
def authority_session(
    authority: _ReplyServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    settings_ = Settings(
        config_dir=tmp_path_factory.mktemp("config"),
        extra_ca_file=authority.ca_certificate,  # type: ignore[attr-defined]
        http_timeout_s=5,
    )
    built = build_session(settings_, retry_policy=RetryPolicy(max_attempts=1))
    yield built
    built.close()


def signed_in(authority: _ReplyServer, session_: Any) -> IdentityClient:
    """An identity client against the fake authority, with an account and refresh token."""
    client = IdentityClient(
        f"{authority.base}/{TENANT}", CLIENT, session_, MemoryCacheStore(),
        validate_authority=False, timeout=5,
    )  # fmt: skip
    authority.reply = Reply(200, json.dumps(token_response()).encode())
    seeded = client._msal().acquire_token_by_refresh_token("RT-seed", [SCOPE])
    assert "access_token" in seeded, seeded
    assert [a.username for a in client.accounts()] == ["admin@northwind-haulage.example"]
    return client


@SETTINGS
@given(replies(token_payloads()))
def test_msal_redeeming_a_refresh_token_against_garbage(
    authority: _ReplyServer, authority_session: Any, reply: Reply
) -> None:
    client = signed_in(authority, authority_session)
    authority.reply = reply
    try:
        first = client.acquire_silent([SCOPE], force_refresh=True)
    except Exception as exc:
        assert_advised(exc)
        first = None
    if first is not None:
        # Accepted: only a whole JSON answer that carried a token, and that token.
        assert reply.delivery == "whole"
        assert first.access_token == json.loads(reply.body)["access_token"]

    # Whatever it stored, the next sign-in attempt also ends in a token or advice.
    authority.reply = Reply(200, json.dumps(token_response()).encode())
    try:
        client.acquire_silent([SCOPE], force_refresh=True)
    except Exception as exc:
        assert_advised(exc)


SECRET_ACCESS = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJzZWNyZXQiOiJ5ZXMifQ.c2lnbmF0dXJlLXNpZw"
SECRET_REFRESH = "1.AAAA" + "Rk9PQkFSQkFaUVVYMTIzNDU2Nzg5MGFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6" * 2


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(cut=st.integers(1, 2000))
def test_a_cut_token_answer_leaves_no_whole_token_in_the_log(
    authority: _ReplyServer,
    authority_session: Any,
    tmp_path_factory: pytest.TempPathFactory,
    cut: int,
) -> None:
    # MSAL logs the text of a token answer it cannot parse, at ERROR level: a proxy that
    # cut the body short would put it in the app's log.
    import logging

    from qargo_desktop.core.logs import setup_logging

    answer = {**token_response(), "access_token": SECRET_ACCESS, "refresh_token": SECRET_REFRESH}
    body = json.dumps(answer).encode()
    cut = min(cut, len(body) - 1)
    log_dir = tmp_path_factory.mktemp("logs")
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    client = signed_in(authority, authority_session)
    try:
        setup = setup_logging(log_dir, "INFO")
        authority.reply = Reply(200, body[:cut])
        # What it raises is the other tests' business; here only the log matters.
        with contextlib.suppress(Exception):
            client.acquire_silent([SCOPE], force_refresh=True)
        for handler in setup.handlers:
            handler.flush()
        text = (log_dir / "qargo-desktop.log").read_text()
    finally:
        for handler in list(root.handlers):
            if handler not in before:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(level)
    assert "not in json format" in text  # the path that logs the body was taken
    for secret in (SECRET_ACCESS, SECRET_REFRESH, answer["id_token"]):
        assert secret not in text
