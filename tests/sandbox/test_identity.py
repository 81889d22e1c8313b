"""The sandbox identity platform, driven by MSAL's real flows and at the HTTP level."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
import shlex
import socket
import sys
import threading
import time
import webbrowser
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import msal
import pytest
import requests
from cryptography import x509
from msal.oauth2cli import authcode

from qargo_desktop.sandbox import browser, jwt
from qargo_desktop.sandbox.server import Sandbox, SandboxInfo
from qargo_desktop.sandbox.world import (
    ADMIN_SCOPE,
    API_RESOURCE,
    GRAPH_RESOURCE,
    MAIL_READWRITE_SCOPE,
    MAIL_SEND_SCOPE,
    OFFLINE_ACCESS,
    SandboxOptions,
)

ADMIN = "admin@northwind-haulage.example"
ADMIN2 = "admin2@northwind-haulage.example"
DISPATCHER = "dispatcher@northwind-haulage.example"
GUEST = "guest@other-tenant.example"
MAIL_SCOPES = [MAIL_READWRITE_SCOPE, MAIL_SEND_SCOPE, OFFLINE_ACCESS]


# Fixtures


@pytest.fixture(autouse=True)
def _msal_listens_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    # MSAL binds 0.0.0.0 when it sees /.dockerenv; tests bind loopback only.
    monkeypatch.setattr(authcode, "_is_inside_docker", lambda: False)
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "BROWSER"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("identity-sandbox")


@pytest.fixture
def box(data_dir: Path) -> Iterator[Sandbox]:
    sandbox = Sandbox(SandboxOptions(data_dir=data_dir, device_code_interval_s=1))
    sandbox.start()
    yield sandbox
    sandbox.stop()


@pytest.fixture
def info(box: Sandbox) -> SandboxInfo:
    return box.info


@pytest.fixture
def http(info: SandboxInfo) -> Iterator[requests.Session]:
    session = requests.Session()
    session.trust_env = False
    session.verify = str(info.ca_certificate)
    yield session
    session.close()


@pytest.fixture
def use_browser(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Register an in-process scripted browser as webbrowser's first choice."""
    registered: list[browser.ScriptedBrowser] = []

    def register(**kwargs: Any) -> browser.ScriptedBrowser:
        scripted = browser.ScriptedBrowser(**kwargs)
        monkeypatch.setattr(webbrowser, "_tryorder", ["qargo-sandbox-test"])
        monkeypatch.setattr(webbrowser, "_browsers", {"qargo-sandbox-test": [None, scripted]})
        registered.append(scripted)
        return scripted

    yield register
    for scripted in registered:
        scripted.join(10)


def msal_app(info: SandboxInfo, http: requests.Session) -> msal.PublicClientApplication:
    return msal.PublicClientApplication(
        info.client_id, authority=info.authority, instance_discovery=False, http_client=http
    )


def refresh_tokens(app: msal.PublicClientApplication) -> set[str]:
    return {
        rt["secret"] for rt in app.token_cache.search(msal.TokenCache.CredentialType.REFRESH_TOKEN)
    }


def token_post(http: requests.Session, info: SandboxInfo, **form: str) -> requests.Response:
    form.setdefault("client_id", info.client_id)
    return http.post(f"{info.authority}/oauth2/v2.0/token", data=form, timeout=10)


def assert_aad_error(
    response: requests.Response, status: int, error: str, code: int
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error
    assert body["error_codes"] == [code]
    assert body["error_description"].startswith(f"AADSTS{code}: ")
    for key in ("timestamp", "trace_id", "correlation_id", "error_uri"):
        assert body[key]
    return dict(body)


class Receiver:
    """A stand-in for an app's loopback redirect URI that records what the browser posts."""

    def __init__(self) -> None:
        received: list[dict[str, str]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                fields = parse_qs(self.rfile.read(length).decode())
                received.append({k: v[0] for k, v in fields.items()})
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"received")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.received = received
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()
        self.redirect_uri = f"http://localhost:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    return verifier, challenge.decode()


def authorize_url(info: SandboxInfo, redirect_uri: str, challenge: str, **extra: str) -> str:
    params = {
        "client_id": info.client_id,
        "response_type": "code",
        "redirect_uri": redirect_uri,
        "scope": f"{ADMIN_SCOPE} openid profile offline_access",
        "state": "state-123",
        "nonce": "nonce-456",
        "response_mode": "form_post",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }
    discovery_authorize = f"{info.http_base_url}/{info.tenant_id}/oauth2/v2.0/authorize"
    return f"{discovery_authorize}?{urlencode(params)}"


def get_code(info: SandboxInfo, receiver: Receiver, account: str = ADMIN) -> tuple[str, str]:
    verifier, challenge = pkce()
    result = browser.run(
        authorize_url(info, receiver.redirect_uri, challenge), account, say=lambda _: None
    )
    assert result.outcome == "returned"
    posted = receiver.received[-1]
    assert posted["state"] == "state-123"
    return posted["code"], verifier


# Discovery and keys


def test_discovery_document_and_jwks(info: SandboxInfo, http: requests.Session) -> None:
    doc = http.get(f"{info.authority}/v2.0/.well-known/openid-configuration", timeout=10).json()

    assert doc["issuer"] == f"{info.authority}/v2.0"
    assert doc["authorization_endpoint"] == (
        f"http://127.0.0.1:{info.http_port}/{info.tenant_id}/oauth2/v2.0/authorize"
    )
    assert doc["token_endpoint"] == f"{info.authority}/oauth2/v2.0/token"
    assert doc["device_authorization_endpoint"] == f"{info.authority}/oauth2/v2.0/devicecode"
    assert doc["end_session_endpoint"].startswith(f"http://127.0.0.1:{info.http_port}/")
    keys = http.get(doc["jwks_uri"], timeout=10).json()["keys"]
    assert keys and keys[0]["kty"] == "RSA" and keys[0]["kid"]

    # Tokens and keys are not served over plain HTTP.
    plain = requests.get(f"{info.http_base_url}/{info.tenant_id}/discovery/v2.0/keys", timeout=10)
    assert plain.status_code == 404


# MSAL end to end


def test_msal_interactive_through_browser_variable_then_refresh_rotates(
    info: SandboxInfo,
    http: requests.Session,
    box: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG, logger="qargo_desktop")
    # The scripted browser as a person's system browser: BROWSER, as webbrowser reads it.
    command = f"{shlex.quote(sys.executable)} -m qargo_desktop.sandbox.browser %s"
    monkeypatch.setenv("BROWSER", command)
    monkeypatch.setenv(browser.ENV_ACCOUNT, ADMIN)
    monkeypatch.setattr(webbrowser, "_tryorder", None)
    monkeypatch.setattr(webbrowser, "_browsers", {})
    app = msal_app(info, http)

    result = app.acquire_token_interactive(
        info.admin_scopes, login_hint=ADMIN, prompt="select_account", timeout=30
    )

    assert "access_token" in result, result
    claims = jwt.verify(
        result["access_token"],
        http.get(f"{info.authority}/discovery/v2.0/keys", timeout=10).json(),
        audience=API_RESOURCE,
        issuer=f"{info.authority}/v2.0",
    )
    assert claims["preferred_username"] == ADMIN
    assert claims["scp"] == "Organisation.Manage"
    assert claims["azp"] == info.client_id
    assert claims["tid"] == info.tenant_id
    assert claims["ver"] == "2.0"
    for name in ("oid", "sub", "name", "iat", "nbf", "exp"):
        assert claims[name]
    assert (
        box.world.identity.verify_access_token(result["access_token"], API_RESOURCE)["oid"]
        == (claims["oid"])
    )
    id_claims = result["id_token_claims"]
    assert id_claims["aud"] == info.client_id and id_claims["nonce"]
    client_info = json.loads(base64.urlsafe_b64decode(result["client_info"] + "=="))
    assert client_info == {"uid": claims["oid"], "utid": info.tenant_id}
    account = app.get_accounts(username=ADMIN)[0]
    assert account["home_account_id"] == f"{claims['oid']}.{info.tenant_id}"

    old_refresh_tokens = refresh_tokens(app)
    refreshed = app.acquire_token_silent(info.admin_scopes, account=account, force_refresh=True)
    assert refreshed and "access_token" in refreshed, refreshed
    new_refresh_tokens = refresh_tokens(app)
    assert len(old_refresh_tokens) == 1 and new_refresh_tokens != old_refresh_tokens

    reused = token_post(
        http,
        info,
        grant_type="refresh_token",
        refresh_token=old_refresh_tokens.pop(),
        scope=ADMIN_SCOPE,
    )
    assert_aad_error(reused, 400, "invalid_grant", 70000)
    secrets_issued = box.issued_secrets()
    assert result["access_token"] in secrets_issued
    assert new_refresh_tokens <= secrets_issued

    # Neither the sandbox's logs nor the scripted browser's output carry a code or token.
    printed = ""
    deadline = time.monotonic() + 10
    # The detached browser prints its last line just after the app received its code.
    while "sandbox browser: done: returned" not in printed and time.monotonic() < deadline:
        captured = capfd.readouterr()
        printed += captured.out + captured.err
        time.sleep(0.05)
    assert "sandbox browser: done: returned" in printed
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("qargo_desktop"))
    assert len(secrets_issued) >= 5
    for secret in secrets_issued:
        assert secret not in printed and secret not in ours


def test_extra_scopes_are_consented_and_refresh_mints_graph_tokens(
    info: SandboxInfo, http: requests.Session, box: Sandbox, use_browser: Any
) -> None:
    use_browser(account=DISPATCHER)
    app = msal_app(info, http)

    result = app.acquire_token_interactive(
        info.admin_scopes,
        login_hint=DISPATCHER,
        prompt="select_account",
        extra_scopes_to_consent=MAIL_SCOPES,
        max_age=3600,
        timeout=30,
    )

    assert "access_token" in result, result
    assert result["id_token_claims"]["auth_time"]
    # The token is for the first resource; the mail scopes are only consented.
    api_claims = box.world.identity.verify_access_token(result["access_token"], API_RESOURCE)
    assert api_claims["scp"] == "Organisation.Manage"
    consented = box.world.identity.consented_scopes(DISPATCHER, info.client_id)
    assert set(MAIL_SCOPES) | {ADMIN_SCOPE} <= consented

    account = app.get_accounts(username=DISPATCHER)[0]
    graph = app.acquire_token_silent([MAIL_SEND_SCOPE], account=account)
    assert graph and "access_token" in graph, graph
    graph_claims = box.world.identity.verify_access_token(graph["access_token"], GRAPH_RESOURCE)
    assert set(graph_claims["scp"].split()) == {"Mail.ReadWrite", "Mail.Send"}
    with pytest.raises(jwt.WrongAudienceError):
        box.world.identity.verify_access_token(graph["access_token"], API_RESOURCE)

    # acquire_token_silent hides refresh errors; the _with_error variant shows the revocation.
    box.revoke_grant(DISPATCHER)
    revoked = app.acquire_token_silent_with_error([MAIL_SEND_SCOPE], account, force_refresh=True)
    assert revoked["error"] == "invalid_grant" and revoked["error_codes"] == [50173]
    assert app.acquire_token_silent([MAIL_SEND_SCOPE], account, force_refresh=True) is None

    # Already consented: the next sign-in goes straight back to the app after the picker.
    box.world.identity.grant_consent(DISPATCHER, [ADMIN_SCOPE, OFFLINE_ACCESS, "openid", "profile"])
    again = use_browser(account=DISPATCHER)
    second = app.acquire_token_interactive(
        info.admin_scopes, login_hint=DISPATCHER, prompt="select_account", timeout=30
    )
    assert "access_token" in second, second
    again.join()
    assert not any("Accept" in step for step in again.results[0].steps)


def test_declined_consent_returns_access_denied(
    info: SandboxInfo, http: requests.Session, use_browser: Any
) -> None:
    scripted = use_browser(action="decline")
    app = msal_app(info, http)

    result = app.acquire_token_interactive(info.admin_scopes, login_hint=ADMIN, timeout=30)

    assert result["error"] == "access_denied"
    assert result["error_description"].startswith("AADSTS65004: ")
    scripted.join()
    assert scripted.results[0].returned_error == "access_denied"


def test_guest_from_another_tenant_is_refused(
    info: SandboxInfo, http: requests.Session, use_browser: Any
) -> None:
    scripted = use_browser(account=GUEST)
    app = msal_app(info, http)

    result = app.acquire_token_interactive(info.admin_scopes, prompt="select_account", timeout=30)

    assert result["error"] == "access_denied"
    assert result["error_description"].startswith("AADSTS50020: ")
    scripted.join()
    assert any("Return to the application" in step for step in scripted.results[0].steps)


def test_mfa_challenge_then_interactive_with_claims_succeeds(
    info: SandboxInfo, http: requests.Session, box: Sandbox, use_browser: Any
) -> None:
    box.world.add_account(ADMIN2, "Ben Okafor", is_super_admin=True, requires_mfa=True)
    use_browser(account=ADMIN2)
    app = msal_app(info, http)

    first = app.acquire_token_interactive(info.admin_scopes, login_hint=ADMIN2, timeout=30)

    assert first["error"] == "interaction_required"
    assert first["error_codes"] == [50076]
    assert "capolids" in first["claims"]

    use_browser(account=ADMIN2)
    second = app.acquire_token_interactive(
        info.admin_scopes, login_hint=ADMIN2, claims_challenge=first["claims"], timeout=30
    )

    assert "access_token" in second, second
    claims = box.world.identity.verify_access_token(second["access_token"], API_RESOURCE)
    assert "mfa" in claims["amr"]
    account = app.get_accounts(username=ADMIN2)[0]
    refreshed = app.acquire_token_silent(info.admin_scopes, account=account, force_refresh=True)
    assert refreshed and "access_token" in refreshed


def test_admin_consent_required(
    info: SandboxInfo, http: requests.Session, box: Sandbox, use_browser: Any
) -> None:
    mailbox = "planning@northwind-haulage.example"
    box.world.add_account(mailbox, "Planning", role="mailbox", needs_admin_consent=True)
    use_browser(account=mailbox)
    app = msal_app(info, http)

    refused = app.acquire_token_interactive(
        info.admin_scopes, login_hint=mailbox, extra_scopes_to_consent=MAIL_SCOPES, timeout=30
    )

    assert refused["error"] == "access_denied"
    assert refused["error_description"].startswith("AADSTS90094: ")

    # An administrator consents for the API only; mail still needs consent on refresh.
    box.world.identity.grant_consent(mailbox, [ADMIN_SCOPE, OFFLINE_ACCESS, "openid", "profile"])
    use_browser(account=mailbox)
    signed_in = app.acquire_token_interactive(info.admin_scopes, login_hint=mailbox, timeout=30)
    assert "access_token" in signed_in, signed_in
    account = app.get_accounts(username=mailbox)[0]
    rt = refresh_tokens(app).pop()
    graph = token_post(
        http, info, grant_type="refresh_token", refresh_token=rt, scope=MAIL_SEND_SCOPE
    )
    body = assert_aad_error(graph, 400, "invalid_grant", 65001)
    assert body["suberror"] == "consent_required"
    assert app.acquire_token_silent([ADMIN_SCOPE], account=account, force_refresh=True)


def test_device_code_flow_end_to_end(
    info: SandboxInfo, http: requests.Session, box: Sandbox
) -> None:
    app = msal_app(info, http)
    flow = app.initiate_device_flow(scopes=info.admin_scopes)
    assert flow["verification_uri"] == f"{info.http_base_url}/devicelogin"
    assert flow["user_code"] in flow["message"]
    outcome: list[browser.BrowserResult] = []

    def person() -> None:
        time.sleep(0.3)
        outcome.append(
            browser.run(
                flow["verification_uri"], ADMIN, user_code=flow["user_code"], say=lambda _: None
            )
        )

    thread = threading.Thread(target=person)
    thread.start()
    result = app.acquire_token_by_device_flow(flow)
    thread.join(10)

    assert "access_token" in result, result
    assert result["id_token_claims"]["preferred_username"] == ADMIN
    assert outcome[0].outcome == "finished" and outcome[0].title == "You're signed in"


def test_device_code_polling_answers(
    info: SandboxInfo, http: requests.Session, box: Sandbox
) -> None:
    start = http.post(
        f"{info.authority}/oauth2/v2.0/devicecode",
        data={"client_id": info.client_id, "scope": f"{ADMIN_SCOPE} offline_access"},
        timeout=10,
    ).json()
    for key in (
        "device_code",
        "user_code",
        "verification_uri",
        "expires_in",
        "interval",
        "message",
    ):
        assert start[key]

    def poll() -> requests.Response:
        return token_post(
            http, info, grant_type="urn:ietf:params:oauth:grant-type:device_code",
            device_code=start["device_code"],
        )  # fmt: skip

    assert_aad_error(poll(), 400, "authorization_pending", 70016)
    assert poll().json()["error"] == "slow_down"

    declined = browser.run(
        start["verification_uri"], DISPATCHER, "decline", user_code=start["user_code"],
        say=lambda _: None,
    )  # fmt: skip
    assert declined.title == "Sign-in cancelled"
    assert poll().json()["error"] == "authorization_declined"

    expiring = http.post(
        f"{info.authority}/oauth2/v2.0/devicecode",
        data={"client_id": info.client_id, "scope": ADMIN_SCOPE},
        timeout=10,
    ).json()
    box.world.clock.advance(box.options.device_code_lifetime_s + 1)
    expired = token_post(
        http, info, grant_type="urn:ietf:params:oauth:grant-type:device_code",
        device_code=expiring["device_code"],
    )  # fmt: skip
    assert_aad_error(expired, 400, "expired_token", 70020)


# Authorization code at the HTTP level


def test_wrong_or_missing_pkce_verifier_is_refused(
    info: SandboxInfo, http: requests.Session, receiver: Receiver
) -> None:
    code, _verifier = get_code(info, receiver)
    wrong = token_post(
        http, info, grant_type="authorization_code", code=code,
        redirect_uri=receiver.redirect_uri, code_verifier=secrets.token_urlsafe(48),
    )  # fmt: skip
    assert_aad_error(wrong, 400, "invalid_grant", 501481)

    code, _verifier = get_code(info, receiver)
    missing = token_post(
        http, info, grant_type="authorization_code", code=code, redirect_uri=receiver.redirect_uri
    )
    assert_aad_error(missing, 400, "invalid_grant", 50148)


def test_code_is_one_time(info: SandboxInfo, http: requests.Session, receiver: Receiver) -> None:
    code, verifier = get_code(info, receiver)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": receiver.redirect_uri,
        "code_verifier": verifier,
        "scope": f"{ADMIN_SCOPE} openid offline_access",
    }

    first = token_post(http, info, **form)
    assert first.status_code == 200, first.text
    body = first.json()
    id_claims = jwt.decode_unverified(body["id_token"])[1]
    assert id_claims["nonce"] == "nonce-456"
    assert body["refresh_token"] and body["token_type"] == "Bearer"

    replay = token_post(http, info, **form)
    assert_aad_error(replay, 400, "invalid_grant", 54005)


def test_non_loopback_redirect_is_refused_on_the_page(info: SandboxInfo) -> None:
    _verifier, challenge = pkce()
    for redirect_uri in ("http://app.invalid/callback", "https://localhost:8400", "myapp://auth"):
        page = requests.get(
            authorize_url(info, redirect_uri, challenge), allow_redirects=False, timeout=10
        )
        assert page.status_code == 400
        assert "Location" not in page.headers
        assert "AADSTS50011" in page.text


def test_authorize_request_errors_go_back_to_the_app(info: SandboxInfo, receiver: Receiver) -> None:
    _verifier, challenge = pkce()
    no_pkce = authorize_url(info, receiver.redirect_uri, challenge, code_challenge_method="plain")
    result = browser.run(no_pkce, say=lambda _: None)
    assert result.returned_error == "invalid_request"
    assert receiver.received[-1]["error_description"].startswith("AADSTS9002325: ")
    assert receiver.received[-1]["state"] == "state-123"

    silent = authorize_url(info, receiver.redirect_uri, challenge, prompt="none")
    assert browser.run(silent, say=lambda _: None).returned_error == "login_required"

    unknown = authorize_url(
        info, receiver.redirect_uri, challenge, scope="api://qargo-sandbox/Nope"
    )
    assert browser.run(unknown, say=lambda _: None).returned_error == "invalid_scope"


def test_query_response_mode_redirects(info: SandboxInfo) -> None:
    _verifier, challenge = pkce()
    session = requests.Session()
    page = session.get(
        authorize_url(info, "http://127.0.0.1:9/cb", challenge, response_mode="query",
                      login_hint=ADMIN),
        timeout=10,
    )  # fmt: skip
    parsed = browser.parse_page(page.text)
    form = parsed.forms[0]
    fields = {f.name: f.value for f in form.fields if f.kind == "hidden"}
    done = session.post(
        f"{info.http_base_url}{form.action}",
        data={**fields, "decision": "accept"},
        allow_redirects=False,
        timeout=10,
    )
    assert done.status_code == 302
    location = urlsplit(done.headers["Location"])
    assert location.netloc == "127.0.0.1:9"
    assert parse_qs(location.query)["state"] == ["state-123"]
    assert parse_qs(location.query)["code"]


def submit(
    session: requests.Session,
    info: SandboxInfo,
    page: requests.Response,
    button: tuple[str, str],
    **values: str,
) -> requests.Response:
    """Press ``button`` on the page's form that has it, as a person would."""
    for form in browser.parse_page(page.text).forms:
        if form.button(*button) is None:
            continue
        data = {f.name: f.value for f in form.fields if f.kind == "hidden"}
        data.update(values)
        data[button[0]] = button[1]
        return session.post(f"{info.http_base_url}{form.action}", data=data, timeout=10)
    raise AssertionError(f"no button {button} on the page")


def test_switching_account_from_the_consent_page(info: SandboxInfo, receiver: Receiver) -> None:
    _verifier, challenge = pkce()
    session = requests.Session()
    consent = session.get(
        authorize_url(info, receiver.redirect_uri, challenge, login_hint=ADMIN), timeout=10
    )
    assert "Permissions requested" in consent.text and ADMIN in consent.text

    picker = submit(session, info, consent, ("step", "pick_again"))
    assert "Pick an account" in picker.text
    consent = submit(session, info, picker, ("step", "account"), account=DISPATCHER)
    assert DISPATCHER in consent.text
    back = submit(session, info, consent, ("decision", "accept"))

    form_post = browser.parse_page(back.text).forms[0]
    assert form_post.id == "form_post" and form_post.action == receiver.redirect_uri
    # A finished sign-in cannot be submitted twice.
    again = submit(session, info, consent, ("decision", "accept"))
    assert "AADSTS90016" in again.text


def test_prompt_consent_shows_consent_again(info: SandboxInfo, box: Sandbox) -> None:
    box.world.identity.grant_consent(ADMIN, [ADMIN_SCOPE, "openid", "profile", OFFLINE_ACCESS])
    _verifier, challenge = pkce()
    quiet = requests.get(
        authorize_url(info, "http://localhost:1", challenge, login_hint=ADMIN), timeout=10
    )
    assert browser.parse_page(quiet.text).forms[0].id == "form_post"
    asked = requests.get(
        authorize_url(info, "http://localhost:1", challenge, login_hint=ADMIN, prompt="consent"),
        timeout=10,
    )
    assert "Permissions requested" in asked.text


def test_revoke_control_endpoint_needs_a_known_user(
    info: SandboxInfo, http: requests.Session
) -> None:
    unknown = http.post(f"{info.control_url}/revoke", json={"username": "nobody@x"}, timeout=10)
    assert unknown.status_code == 400
    plain = requests.post(
        f"{info.http_base_url}/_sandbox/revoke", json={"username": ADMIN}, timeout=10
    )
    assert plain.status_code == 404
    assert requests.get(f"{info.http_base_url}/_sandbox/ca.pem", timeout=10).text.startswith(
        "-----BEGIN CERTIFICATE-----"
    )


# Refresh token lifetime, revocation and verification


def test_refresh_token_expiry_and_revocation(
    info: SandboxInfo, http: requests.Session, box: Sandbox, receiver: Receiver
) -> None:
    identity = box.world.identity
    tokens = identity.issue_tokens(ADMIN, [ADMIN_SCOPE, OFFLINE_ACCESS, "openid"])
    box.world.clock.advance(box.options.refresh_token_lifetime_s + 1)
    expired = token_post(
        http, info, grant_type="refresh_token", refresh_token=tokens["refresh_token"],
        scope=ADMIN_SCOPE,
    )  # fmt: skip
    assert_aad_error(expired, 400, "invalid_grant", 700082)

    notified: list[str] = []

    class FakeApiStore:
        def on_grant_revoked(self, username: str) -> None:
            notified.append(username)

    box.world.api_store = FakeApiStore()
    fresh = identity.issue_tokens(ADMIN, [ADMIN_SCOPE, OFFLINE_ACCESS])
    revoke = http.post(f"{info.control_url}/revoke", json={"username": ADMIN}, timeout=10)
    assert revoke.status_code == 200
    assert notified == [ADMIN]
    revoked = token_post(
        http, info, grant_type="refresh_token", refresh_token=fresh["refresh_token"],
        scope=ADMIN_SCOPE,
    )  # fmt: skip
    assert_aad_error(revoked, 400, "invalid_grant", 50173)
    assert identity.consented_scopes(ADMIN, info.client_id) == set()


def test_verify_access_token_refuses_bad_tokens(box: Sandbox) -> None:
    identity = box.world.identity
    token = identity.issue_tokens(ADMIN, [ADMIN_SCOPE], lifetime_s=60)["access_token"]
    assert identity.verify_access_token(token, API_RESOURCE)["preferred_username"] == ADMIN

    header, payload, signature = token.split(".")
    forged = json.loads(jwt.b64url_decode(payload))
    forged["preferred_username"] = DISPATCHER
    tampered = f"{header}.{jwt.b64url_encode(json.dumps(forged).encode())}.{signature}"
    with pytest.raises(jwt.InvalidSignatureError):
        identity.verify_access_token(tampered, API_RESOURCE)
    with pytest.raises(jwt.WrongAudienceError):
        identity.verify_access_token(token, GRAPH_RESOURCE)
    with pytest.raises(jwt.TokenError):
        identity.verify_access_token("not-a-token", API_RESOURCE)
    box.world.clock.advance(61)
    with pytest.raises(jwt.TokenExpiredError) as raised:
        identity.verify_access_token(token, API_RESOURCE)
    assert raised.value.code == "token_expired"


def test_token_endpoint_error_shapes(info: SandboxInfo, http: requests.Session) -> None:
    assert_aad_error(token_post(http, info, grant_type="password"), 400,
                     "unsupported_grant_type", 70003)  # fmt: skip
    secret = token_post(
        http, info, grant_type="refresh_token", refresh_token="x", client_secret="s"
    )
    assert_aad_error(secret, 401, "invalid_client", 700025)
    unknown = token_post(
        http, info, grant_type="refresh_token", refresh_token="x", client_id="nope"
    )
    assert_aad_error(unknown, 400, "unauthorized_client", 700016)
    assert_aad_error(token_post(http, info), 400, "invalid_request", 900144)
    wrong_tenant = http.get(
        f"{info.https_base_url}/contoso.example/v2.0/.well-known/openid-configuration", timeout=10
    )
    assert_aad_error(wrong_tenant, 400, "invalid_tenant", 90002)
    correlation = "0b5c3e1a-7d4f-4a2b-9c8d-1e2f3a4b5c6d"
    echoed = http.post(
        f"{info.authority}/oauth2/v2.0/token",
        data={"client_id": info.client_id, "grant_type": "password"},
        headers={"client-request-id": correlation},
        timeout=10,
    )
    assert echoed.json()["correlation_id"] == correlation


# Pages and the scripted browser


def test_logout_page_says_signed_out(info: SandboxInfo) -> None:
    page = requests.get(
        f"{info.http_base_url}/{info.tenant_id}/oauth2/v2.0/logout",
        params={"post_logout_redirect_uri": "http://localhost:1234"},
        timeout=10,
    )
    assert page.status_code == 200
    assert "signed out" in page.text


def test_browser_ignore_opens_and_does_nothing(info: SandboxInfo, receiver: Receiver) -> None:
    _verifier, challenge = pkce()
    result = browser.run(authorize_url(info, receiver.redirect_uri, challenge), action="ignore",
                         say=lambda _: None)  # fmt: skip
    assert result.outcome == "ignored" and result.title == "Pick an account"
    assert receiver.received == []


def test_browser_refuses_non_loopback_addresses() -> None:
    with pytest.raises(browser.BrowserError):
        browser.run("http://app.invalid/", say=lambda _: None)
    assert browser.main(["http://app.invalid/"]) == 2


def test_pages_show_app_name_and_sandbox(info: SandboxInfo) -> None:
    _verifier, challenge = pkce()
    page = requests.get(
        authorize_url(info, "http://localhost:1", challenge, login_hint=DISPATCHER,
                      prompt="select_account"),
        timeout=10,
    )  # fmt: skip
    assert "Qargo Desktop" in page.text and "Sandbox" in page.text
    parsed = browser.parse_page(page.text)
    radios = [f for f in parsed.forms[0].fields if f.name == "account"]
    assert [r.value for r in radios if r.checked] == [DISPATCHER]


# Server shell


def test_certificates_reused_and_cover_loopback_names(data_dir: Path) -> None:
    with Sandbox(SandboxOptions(data_dir=data_dir)) as first:
        ca_pem = first.info.ca_certificate.read_bytes()
    with Sandbox(SandboxOptions(data_dir=data_dir)) as second:
        assert second.info.ca_certificate.read_bytes() == ca_pem
        session = requests.Session()
        session.trust_env = False
        session.verify = str(second.info.ca_certificate)
        info = session.get(f"https://localhost:{second.info.https_port}/_sandbox/info", timeout=10)
        assert info.json()["authority"] == second.info.authority
    leaf = x509.load_pem_x509_certificates(
        (data_dir / "certificates" / "sandbox-server.pem").read_bytes()
    )[0]
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]


def test_stop_leaves_no_threads_or_listening_sockets(data_dir: Path) -> None:
    before = set(threading.enumerate())
    sandbox = Sandbox(SandboxOptions(data_dir=data_dir))
    started = sandbox.start()
    session = requests.Session()
    session.trust_env = False
    session.verify = str(started.ca_certificate)
    # A keep-alive connection stays open across stop().
    assert session.get(f"{started.control_url}/info", timeout=10).status_code == 200
    idle = socket.create_connection(("127.0.0.1", started.https_port))

    sandbox.stop()

    assert [t for t in threading.enumerate() if t not in before] == []
    for port in (started.https_port, started.http_port):
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    idle.close()
    session.close()


def test_info_to_json_has_the_contract_keys(info: SandboxInfo) -> None:
    data = info.to_json()
    for key in ("authority", "client_id", "tenant_id", "admin_scopes", "api_base_url",
                "graph_base_url", "ca_certificate", "accounts", "https_port", "http_port",
                "control_url"):  # fmt: skip
        assert key in data
    assert {a["username"] for a in data["accounts"]} >= {ADMIN, ADMIN2, DISPATCHER, GUEST}
    json.dumps(data)
