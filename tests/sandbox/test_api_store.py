"""The organisation store's rules, without HTTP: states, attempts, ETags, pages, audit trail."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import pytest

from qargo_desktop.sandbox.api import (
    ApiError,
    MailboxRecord,
    OrganisationStore,
    RequestContext,
    if_match_satisfied,
    if_none_match_satisfied,
)

DOMAIN = "northwind-haulage.example"
SCOPES = (
    "https://graph.microsoft.com/Mail.ReadWrite",
    "https://graph.microsoft.com/Mail.Send",
    "offline_access",
)
ADMIN = RequestContext(actor=f"admin@{DOMAIN}", app_version="1.0.0", machine="PC-1")
ADMIN2 = RequestContext(actor=f"admin2@{DOMAIN}")


class FakeClock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class FakeIdentity:
    """Tokens are 'user|audience'; consent is a dict."""

    def __init__(self) -> None:
        self.consent: dict[str, set[str]] = {}

    def verify(self, token: str, audience: str) -> Mapping[str, Any]:
        user, _, aud = token.partition("|")
        if aud != audience:
            raise ValueError(f"wrong audience {aud}")
        return {"preferred_username": user, "aud": aud, "azp": "client"}

    def consented(self, username: str, client_id: str) -> set[str]:
        return self.consent.get(username.lower(), set())


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def identity() -> FakeIdentity:
    return FakeIdentity()


@pytest.fixture
def store(clock: FakeClock, identity: FakeIdentity) -> OrganisationStore:
    return OrganisationStore(
        clock=clock.now,
        lock=threading.RLock(),
        tenant_id="tenant",
        client_id="client",
        required_link_scopes=SCOPES,
        attempt_ttl_s=600,
        verify_token=identity.verify,
        consented_scopes=identity.consented,
        authority=lambda: "https://127.0.0.1:1/tenant",
    )


def add(store: OrganisationStore, local: str, status: str = "unlinked") -> MailboxRecord:
    record = store.create(f"{local}@{DOMAIN}", local.title(), ctx=ADMIN)
    if status != "unlinked":
        store.admin_update(record.id, status=status)
    return record


def api_token(user: str) -> str:
    return f"{user}|api://qargo-sandbox"


def error_of(excinfo: pytest.ExceptionInfo[ApiError]) -> tuple[int, str]:
    return excinfo.value.status, excinfo.value.code


# Creating and reading


def test_create_validates_and_refuses_duplicates(store: OrganisationStore) -> None:
    record = store.create(f"Sales@{DOMAIN}", None, ctx=ADMIN)
    assert record.status == "unlinked"
    assert record.display_name == "Sales"

    with pytest.raises(ApiError) as excinfo:
        store.create(f"sales@{DOMAIN}", "Again", ctx=ADMIN)
    assert error_of(excinfo) == (409, "mailbox_exists")

    for bad in ("no-at-sign", "two@@x.example", "a@b", " @x.example", "a" * 250 + "@x.example"):
        with pytest.raises(ApiError) as excinfo:
            store.create(bad, None, ctx=ADMIN)
        assert error_of(excinfo) == (422, "invalid_address")


def test_mailbox_json_has_every_contract_field(store: OrganisationStore) -> None:
    record = add(store, "dispatch")
    body = store.mailbox_json(record)
    assert set(body) == {
        "id", "address", "display_name", "status", "status_reason", "status_changed_at",
        "linked_at", "linked_by", "granted_scopes", "last_sync_at", "last_error", "etag",
        "authorisation",
    }  # fmt: skip
    assert body["etag"] == store.etag(record)
    assert body["status_changed_at"].endswith("Z")


def test_get_unknown_mailbox_is_404(store: OrganisationStore) -> None:
    with pytest.raises(ApiError) as excinfo:
        store.get("mbx_missing")
    assert error_of(excinfo) == (404, "mailbox_not_found")


# ETags and conditional requests


def test_etag_changes_with_every_change_and_if_match_guards(store: OrganisationStore) -> None:
    record = add(store, "dispatch")
    first = store.etag(record)
    assert first.startswith('"') and first.endswith('"')

    with pytest.raises(ApiError) as excinfo:
        store.start_attempt(record.id, "authorise", if_match=None, ctx=ADMIN)
    assert error_of(excinfo) == (428, "precondition_required")

    with pytest.raises(ApiError) as excinfo:
        store.start_attempt(record.id, "authorise", if_match='"stale"', ctx=ADMIN)
    assert error_of(excinfo) == (412, "precondition_failed")

    with pytest.raises(ApiError) as excinfo:
        store.start_attempt(record.id, "authorise", if_match=f"W/{first}", ctx=ADMIN)
    assert error_of(excinfo) == (412, "precondition_failed")

    store.start_attempt(record.id, "authorise", if_match=first, ctx=ADMIN)
    assert store.etag(record) != first


def test_conditional_header_matching() -> None:
    assert if_match_satisfied('"a", "b"', '"b"')
    assert if_match_satisfied("*", '"b"')
    assert not if_match_satisfied('W/"b"', '"b"')
    assert if_none_match_satisfied('W/"x-1"', 'W/"x-1"')
    assert if_none_match_satisfied('"x-1"', 'W/"x-1"')
    assert not if_none_match_satisfied('W/"x-2"', 'W/"x-1"')


def test_collection_etag_changes_when_any_mailbox_changes(store: OrganisationStore) -> None:
    record = add(store, "dispatch")
    before = store.collection_etag()
    assert before.startswith('W/"')
    assert store.collection_etag() == before
    store.admin_update(record.id, display_name="Dispatch Desk")
    assert store.collection_etag() != before


# Pagination


def test_pages_are_keyset_by_id_and_stable(store: OrganisationStore) -> None:
    for index in range(25):
        add(store, f"user{index:02d}")
    seen: list[str] = []
    cursor = None
    while True:
        items, cursor, total = store.list_page(limit=7, cursor=cursor)
        assert total == 25
        seen.extend(r.id for r in items)
        if cursor is None:
            break
    assert seen == sorted(seen)
    assert len(set(seen)) == 25

    # A mailbox added behind the cursor does not shift the pages that follow.
    items, cursor, _ = store.list_page(limit=10)
    add(store, "zz-late")
    rest, _, total = store.list_page(limit=500, cursor=cursor)
    assert total == 26
    assert [r.id for r in items + rest if r.address.startswith("user")] == seen


def test_page_filters_by_status_and_validates(store: OrganisationStore) -> None:
    add(store, "a", "linked")
    add(store, "b", "link_failed")
    add(store, "c")
    items, cursor, total = store.list_page(statuses=["linked", "link_failed"])
    assert {r.address.split("@")[0] for r in items} == {"a", "b"}
    assert (cursor, total) == (None, 2)

    for limit in (0, 501):
        with pytest.raises(ApiError) as excinfo:
            store.list_page(limit=limit)
        assert error_of(excinfo) == (400, "invalid_request")
    for cursor_text in ("not-base64!", "eyJ4IjoxfQ"):
        with pytest.raises(ApiError) as excinfo:
            store.list_page(cursor=cursor_text)
        assert error_of(excinfo) == (400, "invalid_cursor")


# Authorisation attempts


def test_attempt_lifecycle_links_the_mailbox(
    store: OrganisationStore, identity: FakeIdentity, clock: FakeClock
) -> None:
    record = add(store, "dispatch")
    attempt = store.start_attempt(record.id, "authorise", if_match="*", ctx=ADMIN)
    assert record.status == "authorising"
    assert attempt.to_json()["status"] == "pending"
    assert attempt.login_hint == record.address
    assert attempt.required_scopes == SCOPES
    assert attempt.expires_at == clock.t + 600
    assert store.mailbox_json(record)["authorisation"]["id"] == attempt.id

    with pytest.raises(ApiError) as excinfo:
        store.start_attempt(record.id, "authorise", if_match="*", ctx=ADMIN2)
    assert error_of(excinfo) == (409, "attempt_in_progress")
    assert "admin@" in excinfo.value.detail

    identity.consent[record.address] = set(SCOPES)
    store.complete_attempt(record.id, attempt.id, api_token(record.address.upper()), ctx=ADMIN)
    assert record.status == "linked"
    assert record.linked_by == ADMIN.actor
    assert record.granted_scopes == SCOPES
    assert record.last_error is None
    assert store.mailbox_json(record)["authorisation"] is None

    with pytest.raises(ApiError) as excinfo:
        store.complete_attempt(record.id, attempt.id, api_token(record.address), ctx=ADMIN)
    assert error_of(excinfo) == (409, "attempt_not_pending")


def test_completion_checks_token_account_and_consent(
    store: OrganisationStore, identity: FakeIdentity
) -> None:
    record = add(store, "dispatch")
    attempt = store.start_attempt(record.id, "authorise", if_match="*", ctx=ADMIN)

    with pytest.raises(ApiError) as excinfo:
        store.complete_attempt(record.id, attempt.id, "x|https://graph.microsoft.com", ctx=ADMIN)
    assert error_of(excinfo) == (422, "invalid_token")

    with pytest.raises(ApiError) as excinfo:
        store.complete_attempt(record.id, attempt.id, api_token(f"sales@{DOMAIN}"), ctx=ADMIN)
    assert error_of(excinfo) == (422, "account_mismatch")
    assert f"sales@{DOMAIN}" in excinfo.value.detail
    assert record.address in excinfo.value.detail

    identity.consent[record.address] = {SCOPES[0], "offline_access"}
    with pytest.raises(ApiError) as excinfo:
        store.complete_attempt(record.id, attempt.id, api_token(record.address), ctx=ADMIN)
    assert error_of(excinfo) == (422, "insufficient_scope")
    assert "Mail.Send" in excinfo.value.detail

    # Failed checks leave the attempt pending, so the right account can still finish it.
    assert record.status == "authorising"
    identity.consent[record.address] = {s.upper() for s in SCOPES}
    store.complete_attempt(record.id, attempt.id, api_token(record.address), ctx=ADMIN)
    assert record.status == "linked"


@pytest.mark.parametrize(
    ("start", "kind", "end"),
    [
        ("unlinked", "authorise", "link_failed"),
        ("reauthorisation_required", "reauthorise", "link_failed"),
        ("linked", "reauthorise", "linked"),
        ("linked", "authorise", "link_failed"),
    ],
)
def test_failure_rules(store: OrganisationStore, start: str, kind: str, end: str) -> None:
    record = add(store, "dispatch", start)
    attempt = store.start_attempt(record.id, kind, if_match="*", ctx=ADMIN)
    store.fail_attempt(
        record.id, attempt.id, "declined", error_code="AADSTS65004", message="No.", ctx=ADMIN
    )
    assert record.status == end
    assert record.last_error is not None
    assert (record.last_error.code, record.last_error.message) == ("AADSTS65004", "No.")

    with pytest.raises(ApiError) as excinfo:
        store.fail_attempt(record.id, attempt.id, "cancelled", ctx=ADMIN)
    assert error_of(excinfo) == (409, "attempt_not_pending")


def test_failure_reason_is_validated(store: OrganisationStore) -> None:
    record = add(store, "dispatch")
    attempt = store.start_attempt(record.id, "authorise", if_match="*", ctx=ADMIN)
    with pytest.raises(ApiError) as excinfo:
        store.fail_attempt(record.id, attempt.id, "bored", ctx=ADMIN)
    assert error_of(excinfo) == (422, "validation_failed")
    with pytest.raises(ApiError) as excinfo:
        store.fail_attempt(record.id, "att_missing", "cancelled", ctx=ADMIN)
    assert error_of(excinfo) == (404, "attempt_not_found")


@pytest.mark.parametrize(("start", "end"), [("unlinked", "link_failed"), ("linked", "linked")])
def test_abandoned_attempts_expire(
    store: OrganisationStore, clock: FakeClock, start: str, end: str
) -> None:
    record = add(store, "dispatch", start)
    kind = "reauthorise" if start == "linked" else "authorise"
    attempt = store.start_attempt(record.id, kind, if_match="*", ctx=ADMIN)
    clock.advance(599)
    assert store.get(record.id).status == "authorising"
    clock.advance(1)

    # A list is enough to notice it, as a GET of the mailbox would be.
    items, _, _ = store.list_page()
    assert items[0].status == end
    assert record.last_error is not None and record.last_error.code == "timeout"
    assert attempt.status == "expired"
    assert [e.action for e in record.events][-1] == "authorisation_expired"
    assert record.events[-1].actor == "system"

    with pytest.raises(ApiError) as excinfo:
        store.complete_attempt(record.id, attempt.id, api_token(record.address), ctx=ADMIN)
    assert error_of(excinfo) == (410, "attempt_expired")

    # The mailbox can be authorised again (after a reset when the link failed).
    if end == "link_failed":
        store.reset(record.id, if_match="*", ctx=ADMIN)
    store.start_attempt(record.id, kind, if_match="*", ctx=ADMIN)


def test_not_authorisable_states(store: OrganisationStore) -> None:
    for status in ("link_failed", "suspended"):
        record = add(store, status.replace("_", ""), status)
        with pytest.raises(ApiError) as excinfo:
            store.start_attempt(record.id, "authorise", if_match="*", ctx=ADMIN)
        assert error_of(excinfo) == (409, "not_authorisable")
    record = add(store, "kindless")
    with pytest.raises(ApiError) as excinfo:
        store.start_attempt(record.id, "relink", if_match="*", ctx=ADMIN)
    assert error_of(excinfo) == (422, "validation_failed")


# Reset, delete, revoked grants, other admins


def test_reset_only_from_link_failed(store: OrganisationStore) -> None:
    record = add(store, "dispatch", "linked")
    with pytest.raises(ApiError) as excinfo:
        store.reset(record.id, if_match="*", ctx=ADMIN)
    assert error_of(excinfo) == (409, "not_resettable")

    store.admin_update(record.id, status="link_failed", last_error={"code": "x", "message": "y"})
    with pytest.raises(ApiError) as excinfo:
        store.reset(record.id, if_match=None, ctx=ADMIN)
    assert error_of(excinfo) == (428, "precondition_required")
    store.reset(record.id, if_match=store.etag(record), ctx=ADMIN)
    assert record.status == "unlinked"
    assert record.last_error is None
    assert record.granted_scopes == ()


def test_delete_needs_if_match(store: OrganisationStore) -> None:
    record = add(store, "dispatch")
    store.start_attempt(record.id, "authorise", if_match="*", ctx=ADMIN)
    with pytest.raises(ApiError) as excinfo:
        store.delete(record.id, if_match='"old"', ctx=ADMIN)
    assert error_of(excinfo) == (412, "precondition_failed")
    store.delete(record.id, if_match=store.etag(record), ctx=ADMIN)
    assert store.find_by_address(record.address) is None
    assert store.list_page()[2] == 0
    store.expire_attempts()  # the removed mailbox's attempt does not linger


def test_grant_revoked_needs_reauthorisation(store: OrganisationStore) -> None:
    linked = add(store, "dispatch", "linked")
    unlinked = add(store, "sales")
    store.on_grant_revoked(linked.address.upper())
    store.on_grant_revoked(unlinked.address)
    store.on_grant_revoked(f"nobody@{DOMAIN}")
    assert linked.status == "reauthorisation_required"
    assert linked.last_error is not None and "AADSTS50173" in linked.last_error.message
    assert linked.status_reason
    assert unlinked.status == "unlinked"


def test_grant_revoked_during_reauthorise_removes_the_safety_net(
    store: OrganisationStore,
) -> None:
    record = add(store, "dispatch", "linked")
    attempt = store.start_attempt(record.id, "reauthorise", if_match="*", ctx=ADMIN)
    store.on_grant_revoked(record.address)
    store.fail_attempt(record.id, attempt.id, "cancelled", ctx=ADMIN)
    assert record.status == "link_failed"


def test_admin_update_acts_as_another_admin(store: OrganisationStore) -> None:
    record = add(store, "dispatch")
    etag = store.etag(record)
    store.start_attempt(record.id, "authorise", if_match=etag, ctx=ADMIN)
    store.admin_update(record.id, status="linked", actor=ADMIN2.actor)
    assert record.status == "linked"
    assert record.attempt_id is None
    assert record.events[-1].actor == ADMIN2.actor
    with pytest.raises(ApiError) as excinfo:
        store.admin_update(record.id, colour="red")
    assert error_of(excinfo) == (422, "validation_failed")


# Audit trail and sync


def test_events_record_actor_app_and_machine_newest_first(store: OrganisationStore) -> None:
    record = add(store, "dispatch")
    for _ in range(3):
        attempt = store.start_attempt(record.id, "authorise", if_match="*", ctx=ADMIN)
        store.fail_attempt(record.id, attempt.id, "cancelled", ctx=ADMIN)
        store.reset(record.id, if_match="*", ctx=ADMIN)
    events, cursor = store.events_page(record.id, limit=4)
    assert [e.action for e in events] == [
        "link_reset",
        "authorisation_failed",
        "authorisation_started",
        "link_reset",
    ]
    assert events[0].to_json()["app_version"] == "1.0.0"
    assert events[0].to_json()["machine"] == "PC-1"
    assert events[0].actor == ADMIN.actor
    rest, end = store.events_page(record.id, cursor=cursor, limit=100)
    assert end is None
    assert [e.action for e in rest][-1] == "mailbox_added"
    assert len(events) + len(rest) == 10


def test_sync_records_and_is_linked(store: OrganisationStore, clock: FakeClock) -> None:
    record = add(store, "dispatch", "linked")
    assert store.is_linked(record.address.upper())
    assert not store.is_linked(f"sales@{DOMAIN}")
    store.record_sync(record.address, "<a@x>", clock.t - 5, clock.t)
    assert record.last_sync_at == clock.t
    [synced] = store.synced_messages(record.id, "<a@x>")
    assert synced.to_json()["received_at"].endswith("Z")
    assert store.synced_messages(record.id, "<b@x>") == []

    # A reauthorise in progress still syncs on the old link.
    store.start_attempt(record.id, "reauthorise", if_match="*", ctx=ADMIN)
    assert store.is_linked(record.address)
