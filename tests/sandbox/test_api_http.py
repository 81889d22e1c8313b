"""The organisation API over HTTPS: every response is checked against the OpenAPI contract."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import requests

from qargo_desktop.sandbox.server import Sandbox
from qargo_desktop.sandbox.world import ADMIN_SCOPE, REQUIRED_LINK_SCOPES
from tests.sandbox.openapi_check import ContractSession

DOMAIN = "northwind-haulage.example"
ADMIN = f"admin@{DOMAIN}"
MAILBOXES = "/v1/organisation/linked-mailboxes"


def token_for(sandbox: Sandbox, username: str, scopes: list[str], **kwargs: Any) -> str:
    response = sandbox.world.identity.issue_tokens(username, scopes, **kwargs)
    return str(response["access_token"])


def session(
    sandbox: Sandbox, username: str = ADMIN, *, token: str | None = None
) -> ContractSession:
    info = sandbox.info
    bearer = token or token_for(sandbox, username, [ADMIN_SCOPE])
    client = ContractSession(str(info.ca_certificate), info.api_base_url, bearer)
    client.headers["Qargo-App-Version"] = "2.3.4"
    client.headers["Qargo-Machine"] = "DESK-042"
    return client


def mailbox(client: ContractSession, local: str) -> dict[str, Any]:
    body = client.get(MAILBOXES, params={"limit": 500}).json()
    return next(m for m in body["items"] if m["address"] == f"{local}@{DOMAIN}")


@pytest.fixture
def api(sandbox: Sandbox) -> ContractSession:
    return session(sandbox)


# Identity and bearer tokens


def test_me_works_for_anyone_the_rest_for_super_admins(sandbox: Sandbox) -> None:
    dispatcher = session(sandbox, f"dispatcher@{DOMAIN}")
    me = dispatcher.get("/v1/me")
    assert me.status_code == 200
    assert me.json()["is_super_admin"] is False
    assert me.json()["username"] == f"dispatcher@{DOMAIN}"

    refused = dispatcher.get(MAILBOXES)
    assert refused.status_code == 403
    assert refused.json()["code"] == "not_super_admin"

    admin = session(sandbox).get("/v1/me").json()
    assert admin["is_super_admin"] is True
    assert admin["tenant_id"] == sandbox.info.tenant_id


def test_bearer_token_problems(sandbox: Sandbox) -> None:
    client = session(sandbox)
    del client.headers["Authorization"]
    missing = client.get("/v1/me", headers={"x-correlation-id": "support-case-17"})
    assert missing.status_code == 401
    assert missing.json()["code"] == "invalid_token"
    assert missing.json()["correlation_id"] == "support-case-17"
    assert missing.headers["x-correlation-id"] == "support-case-17"
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")

    garbage = client.get("/v1/me", headers={"Authorization": "Bearer not.a.token"})
    assert (garbage.status_code, garbage.json()["code"]) == (401, "invalid_token")

    graph_token = token_for(sandbox, ADMIN, ["https://graph.microsoft.com/Mail.ReadWrite"])
    wrong_audience = client.get("/v1/me", headers={"Authorization": f"Bearer {graph_token}"})
    assert (wrong_audience.status_code, wrong_audience.json()["code"]) == (401, "invalid_token")

    short = token_for(sandbox, ADMIN, [ADMIN_SCOPE], lifetime_s=60)
    sandbox.world.clock.advance(120)
    expired = client.get("/v1/me", headers={"Authorization": f"Bearer {short}"})
    assert (expired.status_code, expired.json()["code"]) == (401, "token_expired")


def test_token_without_the_admin_scope_is_refused(sandbox: Sandbox) -> None:
    world = sandbox.world
    account = world.get_account(ADMIN)
    assert account is not None
    now = int(world.clock.now())
    claims = {
        "aud": "api://qargo-sandbox",
        "iss": world.issuer,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "preferred_username": ADMIN,
        "oid": account.oid,
        "tid": world.tenant_id,
        "scp": "Something.Else",
        "ver": "2.0",
    }
    token = world.identity.signing_key.sign(claims)
    response = session(sandbox, token=token).get(MAILBOXES)
    assert (response.status_code, response.json()["code"]) == (403, "insufficient_scope")


# Reading, pages and conditional requests


def test_organisation_and_its_etag(api: ContractSession, sandbox: Sandbox) -> None:
    response = api.get("/v1/organisation")
    body = response.json()
    assert body["name"] == "Northwind Haulage"
    assert body["mail"]["authority"] == sandbox.info.authority
    assert body["mail"]["client_id"] == sandbox.info.client_id
    assert body["mail"]["required_link_scopes"] == list(REQUIRED_LINK_SCOPES)
    again = api.get("/v1/organisation", headers={"If-None-Match": response.headers["ETag"]})
    assert again.status_code == 304


def test_pages_share_the_collection_etag_and_304(api: ContractSession, sandbox: Sandbox) -> None:
    first = api.get(MAILBOXES, params={"limit": 5})
    etag = first.headers["ETag"]
    assert etag.startswith('W/"')
    seen = [m["id"] for m in first.json()["items"]]
    cursor = first.json()["next_cursor"]
    while cursor:
        page = api.get(MAILBOXES, params={"limit": 5, "cursor": cursor})
        assert page.headers["ETag"] == etag
        seen.extend(m["id"] for m in page.json()["items"])
        cursor = page.json()["next_cursor"]
    assert len(seen) == first.json()["total"] == len(set(seen))

    second_page = {"limit": 5, "cursor": first.json()["next_cursor"]}
    cached = api.get(MAILBOXES, params=second_page, headers={"If-None-Match": etag})
    assert cached.status_code == 304
    assert cached.headers["ETag"] == etag

    target = first.json()["items"][0]["id"]
    sandbox.world.api_store.admin_update(target, display_name="Renamed elsewhere")
    changed = api.get(MAILBOXES, params=second_page, headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["ETag"] != etag

    filtered = api.get(MAILBOXES, params={"status": "linked,link_failed"}).json()
    assert {m["status"] for m in filtered["items"]} == {"linked", "link_failed"}
    bad = api.get(MAILBOXES, params={"cursor": "garbage!"})
    assert (bad.status_code, bad.json()["code"]) == (400, "invalid_cursor")
    too_big = api.get(MAILBOXES, params={"limit": 501})
    assert (too_big.status_code, too_big.json()["code"]) == (400, "invalid_request")


def test_every_state_is_listed(api: ContractSession) -> None:
    items = api.get(MAILBOXES).json()["items"]
    statuses = {m["status"] for m in items}
    assert statuses >= {
        "linked", "unlinked", "reauthorisation_required", "link_failed", "authorising", "suspended"
    }  # fmt: skip
    pending = next(m for m in items if m["status"] == "authorising")
    assert pending["authorisation"]["started_by"] == f"admin2@{DOMAIN}"


def test_single_mailbox_get_and_304(api: ContractSession) -> None:
    target = mailbox(api, "sales")
    response = api.get(f"{MAILBOXES}/{target['id']}")
    assert response.headers["ETag"] == target["etag"] == response.json()["etag"]
    cached = api.get(f"{MAILBOXES}/{target['id']}", headers={"If-None-Match": target["etag"]})
    assert cached.status_code == 304
    missing = api.get(f"{MAILBOXES}/mbx_nope")
    assert (missing.status_code, missing.json()["code"]) == (404, "mailbox_not_found")


# Creating, idempotency, removing


def test_create_with_idempotency_key(api: ContractSession, sandbox: Sandbox) -> None:
    body = {"address": f"new.depot@{DOMAIN}", "display_name": "New Depot"}
    key = {"Idempotency-Key": "create-new-depot-1"}
    created = api.post(MAILBOXES, json=body, headers=key)
    assert created.status_code == 201
    assert created.headers["Location"] == f"/api{MAILBOXES}/{created.json()['id']}"
    assert created.json()["status"] == "unlinked"
    assert sandbox.world.get_account(body["address"]) is not None

    replay = api.post(MAILBOXES, json=dict(reversed(body.items())), headers=key)
    assert replay.status_code == 201
    assert replay.content == created.content
    assert replay.headers["ETag"] == created.headers["ETag"]
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.headers["request-id"] == created.headers["request-id"]

    reused = api.post(MAILBOXES, json={**body, "display_name": "Other"}, headers=key)
    assert (reused.status_code, reused.json()["code"]) == (422, "idempotency_key_reused")

    duplicate = api.post(MAILBOXES, json=body)
    assert (duplicate.status_code, duplicate.json()["code"]) == (409, "mailbox_exists")
    invalid = api.post(MAILBOXES, json={"address": "not an address"})
    assert (invalid.status_code, invalid.json()["code"]) == (422, "invalid_address")
    not_json = api.post(
        MAILBOXES, data="address=x", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert (not_json.status_code, not_json.json()["code"]) == (415, "unsupported_media_type")
    broken = api.post(MAILBOXES, data="{", headers={"Content-Type": "application/json"})
    assert (broken.status_code, broken.json()["code"]) == (400, "invalid_request")


def test_concurrent_retries_with_one_key_create_one_mailbox(
    api: ContractSession, sandbox: Sandbox
) -> None:
    body = {"address": f"race@{DOMAIN}"}
    results: list[requests.Response] = []

    def post() -> None:
        client = session(sandbox)
        results.append(client.post(MAILBOXES, json=body, headers={"Idempotency-Key": "race-1"}))

    threads = [threading.Thread(target=post) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert [r.status_code for r in results] == [201] * 8
    assert len({r.json()["id"] for r in results}) == 1
    assert sum(1 for r in sandbox.world.api_store.all() if r.address == body["address"]) == 1


def test_delete_needs_the_current_etag(api: ContractSession) -> None:
    target = mailbox(api, "warehouse.rotterdam")
    url = f"{MAILBOXES}/{target['id']}"
    missing = api.delete(url)
    assert (missing.status_code, missing.json()["code"]) == (428, "precondition_required")
    stale = api.delete(url, headers={"If-Match": '"stale"'})
    assert (stale.status_code, stale.json()["code"]) == (412, "precondition_failed")
    assert api.delete(url, headers={"If-Match": target["etag"]}).status_code == 204
    assert api.get(url).status_code == 404


# Authorisation attempts


def test_authorise_end_to_end(api: ContractSession, sandbox: Sandbox) -> None:
    target = mailbox(api, "sales")
    url = f"{MAILBOXES}/{target['id']}"

    no_etag = api.post(f"{url}/authorisations", json={"kind": "authorise"})
    assert (no_etag.status_code, no_etag.json()["code"]) == (428, "precondition_required")
    started = api.post(
        f"{url}/authorisations", json={"kind": "authorise"}, headers={"If-Match": target["etag"]}
    )
    assert started.status_code == 201
    attempt = started.json()
    assert attempt["status"] == "pending"
    assert attempt["login_hint"] == target["address"]
    assert attempt["previous_status"] == "unlinked"
    assert attempt["required_scopes"] == list(REQUIRED_LINK_SCOPES)
    now_authorising = api.get(url).json()
    assert now_authorising["status"] == "authorising"
    assert now_authorising["etag"] == started.headers["ETag"]
    assert now_authorising["authorisation"]["id"] == attempt["id"]

    second = api.post(
        f"{url}/authorisations", json={"kind": "authorise"}, headers={"If-Match": "*"}
    )
    assert (second.status_code, second.json()["code"]) == (409, "attempt_in_progress")

    complete = f"{url}/authorisations/{attempt['id']}"
    wrong_account = token_for(sandbox, f"dispatcher@{DOMAIN}", [ADMIN_SCOPE])
    mismatch = api.put(complete, json={"access_token": wrong_account})
    assert (mismatch.status_code, mismatch.json()["code"]) == (422, "account_mismatch")
    assert f"dispatcher@{DOMAIN}" in mismatch.json()["detail"]

    no_mail_consent = token_for(sandbox, target["address"], [ADMIN_SCOPE])
    scope = api.put(complete, json={"access_token": no_mail_consent})
    assert (scope.status_code, scope.json()["code"]) == (422, "insufficient_scope")

    junk = api.put(complete, json={"access_token": "junk"})
    assert (junk.status_code, junk.json()["code"]) == (422, "invalid_token")

    good = token_for(sandbox, target["address"], [ADMIN_SCOPE, *REQUIRED_LINK_SCOPES])
    linked = api.put(complete, json={"access_token": good})
    assert linked.status_code == 200
    assert linked.json()["status"] == "linked"
    assert linked.json()["linked_by"] == ADMIN
    assert linked.json()["granted_scopes"] == list(REQUIRED_LINK_SCOPES)
    assert linked.json()["authorisation"] is None
    assert linked.headers["ETag"] == linked.json()["etag"]

    again = api.put(complete, json={"access_token": good})
    assert (again.status_code, again.json()["code"]) == (409, "attempt_not_pending")

    events = api.get(f"{url}/events").json()["items"]
    assert events[0]["action"] == "mailbox_linked"
    assert events[0]["app_version"] == "2.3.4"
    assert events[0]["machine"] == "DESK-042"
    assert events[0]["actor"] == ADMIN


def test_abandoned_attempt_expires(api: ContractSession, sandbox: Sandbox) -> None:
    target = mailbox(api, "sales")
    url = f"{MAILBOXES}/{target['id']}"
    attempt = api.post(
        f"{url}/authorisations", json={"kind": "authorise"}, headers={"If-Match": target["etag"]}
    ).json()
    sandbox.world.clock.advance(sandbox.options.attempt_ttl_s + 1)

    listed = mailbox(api, "sales")
    assert listed["status"] == "link_failed"
    assert listed["last_error"]["code"] == "timeout"
    good = token_for(sandbox, target["address"], [ADMIN_SCOPE, *REQUIRED_LINK_SCOPES])
    late = api.put(f"{url}/authorisations/{attempt['id']}", json={"access_token": good})
    assert (late.status_code, late.json()["code"]) == (410, "attempt_expired")
    assert api.get(f"{url}/authorisations/{attempt['id']}").json()["status"] == "expired"


def test_failure_then_reset(api: ContractSession) -> None:
    target = mailbox(api, "sales")
    url = f"{MAILBOXES}/{target['id']}"
    attempt = api.post(f"{url}/authorisations", json={}, headers={"If-Match": "*"}).json()
    failure = f"{url}/authorisations/{attempt['id']}/failure"
    failed = api.post(
        failure,
        json={"reason": "declined", "error_code": "access_denied", "message": "AADSTS65004"},
    )
    assert failed.status_code == 200
    assert failed.json()["status"] == "link_failed"
    assert failed.json()["last_error"]["code"] == "access_denied"
    again = api.post(failure, json={"reason": "cancelled"})
    assert (again.status_code, again.json()["code"]) == (409, "attempt_not_pending")

    locked = api.post(f"{url}/authorisations", json={}, headers={"If-Match": "*"})
    assert (locked.status_code, locked.json()["code"]) == (409, "not_authorisable")

    no_etag = api.post(f"{url}/reset")
    assert (no_etag.status_code, no_etag.json()["code"]) == (428, "precondition_required")
    reset = api.post(f"{url}/reset", headers={"If-Match": failed.headers["ETag"]})
    assert reset.status_code == 200
    assert reset.json()["status"] == "unlinked"
    assert reset.json()["last_error"] is None
    twice = api.post(f"{url}/reset", headers={"If-Match": reset.headers["ETag"]})
    assert (twice.status_code, twice.json()["code"]) == (409, "not_resettable")


def test_voluntary_reauthorise_that_fails_stays_linked(api: ContractSession) -> None:
    target = mailbox(api, "dispatch")
    assert target["status"] == "linked"
    url = f"{MAILBOXES}/{target['id']}"
    attempt = api.post(
        f"{url}/authorisations",
        json={"kind": "reauthorise"},
        headers={"If-Match": target["etag"], "Idempotency-Key": "reauth-dispatch"},
    ).json()
    assert attempt["previous_status"] == "linked"
    result = api.post(
        f"{url}/authorisations/{attempt['id']}/failure", json={"reason": "cancelled"}
    ).json()
    assert result["status"] == "linked"
    assert result["linked_at"] == target["linked_at"]
    assert result["last_error"]["code"] == "cancelled"


# Changes from elsewhere


def test_change_by_another_admin_makes_a_stale_etag_fail(
    api: ContractSession, sandbox: Sandbox
) -> None:
    target = mailbox(api, "claims")
    info = sandbox.info
    control = requests.Session()
    control.trust_env = False
    control.verify = str(info.ca_certificate)
    changed = control.post(
        f"{info.control_url}/mailboxes/{target['id']}",
        json={"status_reason": "Looked at by Ben", "actor": f"admin2@{DOMAIN}"},
    )
    assert changed.status_code == 200
    assert changed.json()["etag"] != target["etag"]

    stale = api.post(f"{MAILBOXES}/{target['id']}/reset", headers={"If-Match": target["etag"]})
    assert (stale.status_code, stale.json()["code"]) == (412, "precondition_failed")
    events = api.get(f"{MAILBOXES}/{target['id']}/events").json()["items"]
    assert events[0]["actor"] == f"admin2@{DOMAIN}"

    suspended = control.post(
        f"{info.control_url}/mailboxes/{target['id']}", json={"status": "suspended"}
    )
    assert suspended.json()["status"] == "suspended"
    unknown = control.post(f"{info.control_url}/mailboxes/{target['id']}", json={"colour": "x"})
    assert unknown.status_code == 422


def test_revoked_grant_needs_reauthorisation(api: ContractSession, sandbox: Sandbox) -> None:
    target = mailbox(api, "dispatch")
    info = sandbox.info
    control = requests.Session()
    control.trust_env = False
    control.verify = str(info.ca_certificate)
    assert control.post(f"{info.control_url}/revoke", json={"username": target["address"]}).ok
    after = mailbox(api, "dispatch")
    assert after["status"] == "reauthorisation_required"
    assert after["last_error"]["code"] == "invalid_grant"
    assert "AADSTS50173" in after["last_error"]["message"]


def test_synced_messages_follow_delivery_and_sync(api: ContractSession, sandbox: Sandbox) -> None:
    target = mailbox(api, "dispatch")
    url = f"{MAILBOXES}/{target['id']}/synced-messages"
    # Long delays and a moved clock: real time passing during the test cannot blur the steps.
    sandbox.set_faults(delivery_delay_s=30, sync_delay_s=30)
    graph = requests.Session()
    graph.trust_env = False
    graph.verify = str(sandbox.info.ca_certificate)
    mail_token = token_for(
        sandbox, target["address"], [f"https://graph.microsoft.com/{s}" for s in ("Mail.Send",)]
    )
    sent = graph.post(
        f"{sandbox.info.graph_base_url}/me/sendMail",
        headers={"Authorization": f"Bearer {mail_token}"},
        json={
            "message": {
                "subject": "Qargo self-test",
                "toRecipients": [{"emailAddress": {"address": target["address"]}}],
            }
        },
    )
    assert sent.status_code == 202
    [record] = sandbox.world.mail_store.sent
    imid = record.internet_message_id

    assert api.get(url, params={"internet_message_id": imid}).json() == {"items": []}
    sandbox.world.clock.advance(31)
    assert api.get(url, params={"internet_message_id": imid}).json() == {"items": []}
    assert sandbox.world.mail_store.messages(target["address"], "inbox")
    sandbox.world.clock.advance(30)
    [synced] = api.get(url, params={"internet_message_id": imid}).json()["items"]
    assert synced["internet_message_id"] == imid
    assert mailbox(api, "dispatch")["last_sync_at"] == synced["synced_at"]


# Routing errors


def test_unknown_routes_and_methods_are_problems(api: ContractSession) -> None:
    api.check = False
    target = mailbox(api, "sales")
    nowhere = api.get("/v1/nowhere")
    assert (nowhere.status_code, nowhere.json()["code"]) == (404, "not_found")
    assert nowhere.headers["Content-Type"] == "application/problem+json"
    patch = api.patch(f"{MAILBOXES}/{target['id']}", json={})
    assert (patch.status_code, patch.json()["code"]) == (405, "method_not_allowed")
    assert "GET" in patch.headers["Allow"]
