"""The link lifecycle end to end: the organisation API, MSAL's real interactive flow as the
mailbox account (a scripted browser submits the sandbox's forms), and the state rules."""

from __future__ import annotations

import threading
import time

import pytest

from qargo_desktop.core.errors import ApiError, QargoError
from qargo_desktop.core.linking import (
    Conflict,
    LinkOutcome,
    MailboxLinker,
    normalise_address,
)
from qargo_desktop.core.models import LinkStatus, Mailbox


def _first(admin, status: LinkStatus) -> Mailbox:  # type: ignore[no-untyped-def]
    listing = admin.api.list_mailboxes()
    return next(m for m in listing.items if m.status is status)


def _control(admin, browser, **kwargs):  # type: ignore[no-untyped-def]
    control = admin.new_control()
    control.opener = browser
    for key, value in kwargs.items():
        setattr(control, key, value)
    return control


def _events(admin, mailbox: Mailbox) -> list[str]:  # type: ignore[no-untyped-def]
    return [e.action for e in admin.api.events(mailbox.id)]


def test_authorise_an_unlinked_mailbox(admin, browser) -> None:  # type: ignore[no-untyped-def]
    mailbox = _first(admin, LinkStatus.UNLINKED)
    result = MailboxLinker(admin).authorise(mailbox, _control(admin, browser))
    assert result.outcome is LinkOutcome.LINKED, result.error
    assert result.mailbox is not None
    assert result.mailbox.status is LinkStatus.LINKED
    assert result.signed_in_as == mailbox.address
    # The browser was asked to sign in as the mailbox and to consent to the mail scopes.
    url = browser.urls[-1]
    assert "login_hint=" + mailbox.address.replace("@", "%40") in url
    assert "prompt=select_account" in url
    assert "Mail.Send" in url and "Mail.ReadWrite" in url
    assert set(result.mailbox.granted_scopes) >= {
        "https://graph.microsoft.com/Mail.ReadWrite",
        "https://graph.microsoft.com/Mail.Send",
    }
    trail = admin.api.events(mailbox.id)
    assert trail, "the audit trail records the authorisation"
    assert any(e.app_version and e.machine for e in trail)


def test_reauthorise_a_mailbox_that_needs_it(admin, browser) -> None:  # type: ignore[no-untyped-def]
    mailbox = _first(admin, LinkStatus.REAUTHORISATION_REQUIRED)
    result = MailboxLinker(admin).authorise(mailbox, _control(admin, browser))
    assert result.ok, result.error
    assert result.mailbox is not None and result.mailbox.status is LinkStatus.LINKED


def test_reauthorise_a_linked_mailbox(admin, browser) -> None:  # type: ignore[no-untyped-def]
    mailbox = _first(admin, LinkStatus.LINKED)
    result = MailboxLinker(admin).authorise(mailbox, _control(admin, browser))
    assert result.ok, result.error


def test_declined_consent_fails_the_link(admin, browser) -> None:  # type: ignore[no-untyped-def]
    mailbox = _first(admin, LinkStatus.UNLINKED)
    browser.action = "decline"
    result = MailboxLinker(admin).authorise(mailbox, _control(admin, browser))
    assert result.outcome is LinkOutcome.DECLINED
    assert result.mailbox is not None and result.mailbox.status is LinkStatus.LINK_FAILED
    assert result.error is not None
    assert "declined" in result.error.explain()
    assert result.mailbox.last_error is not None


def test_declined_voluntary_reauthorise_stays_linked(sandbox, admin, browser) -> None:  # type: ignore[no-untyped-def]
    mailbox = _first(admin, LinkStatus.LINKED)
    # Forget the account's consent at the identity platform only, so the consent page
    # shows again while Qargo still has the mailbox linked.
    sandbox.world.identity.revoke(mailbox.address)
    mailbox = admin.api.get_mailbox(mailbox.id)
    assert mailbox.status is LinkStatus.LINKED
    browser.action = "decline"
    result = MailboxLinker(admin).authorise(mailbox, _control(admin, browser))
    assert result.outcome is LinkOutcome.DECLINED
    assert result.mailbox is not None
    assert result.mailbox.status is LinkStatus.LINKED


def test_wrong_account_is_never_handed_to_the_api(admin, browser) -> None:  # type: ignore[no-untyped-def]
    mailbox = _first(admin, LinkStatus.UNLINKED)
    browser.account = "dispatcher@northwind-haulage.example"
    result = MailboxLinker(admin).authorise(mailbox, _control(admin, browser))
    assert result.outcome is LinkOutcome.WRONG_ACCOUNT
    assert result.signed_in_as == "dispatcher@northwind-haulage.example"
    assert result.error is not None
    text = result.error.explain()
    assert "dispatcher@northwind-haulage.example" in text and mailbox.address in text
    assert "private window" in text
    assert result.mailbox is not None and result.mailbox.status is LinkStatus.LINK_FAILED
    # No tokens of the wrong account are kept.
    assert admin.mailbox_identity().find_account("dispatcher@northwind-haulage.example") is None


def test_cancel_stops_the_listener_and_records_the_attempt(admin, browser) -> None:  # type: ignore[no-untyped-def]
    mailbox = _first(admin, LinkStatus.UNLINKED)
    browser.action = "ignore"
    control = _control(admin, browser)
    threading.Timer(0.5, control.cancel.set).start()
    started = time.monotonic()
    result = MailboxLinker(admin).authorise(mailbox, control)
    assert time.monotonic() - started < 5
    assert result.outcome is LinkOutcome.CANCELLED
    assert result.mailbox is not None and result.mailbox.status is LinkStatus.LINK_FAILED
    assert result.mailbox.last_error is not None
    assert result.mailbox.last_error.code in ("cancelled", "app:cancelled") or "ancel" in (
        result.mailbox.last_error.code + result.mailbox.last_error.message
    )
    host, port = control.listener_address
    assert host == "127.0.0.1"
    import socket

    with socket.socket() as probe:
        assert probe.connect_ex((host, port)) != 0


def test_deadline_passed(admin, browser) -> None:  # type: ignore[no-untyped-def]
    mailbox = _first(admin, LinkStatus.UNLINKED)
    browser.action = "ignore"
    result = MailboxLinker(admin).authorise(mailbox, _control(admin, browser, deadline_s=1.0))
    assert result.outcome is LinkOutcome.DEADLINE
    assert result.mailbox is not None and result.mailbox.status is LinkStatus.LINK_FAILED
    assert result.error is not None and "in time" in result.error.explain()


def test_reset_then_authorise_a_red_row(admin, browser) -> None:  # type: ignore[no-untyped-def]
    mailbox = _first(admin, LinkStatus.LINK_FAILED)
    linker = MailboxLinker(admin)
    reset = linker.reset(mailbox)
    assert reset.status is LinkStatus.UNLINKED
    result = linker.authorise(reset, _control(admin, browser))
    assert result.ok, result.error
    actions = _events(admin, mailbox)
    assert len(actions) >= 2


def test_authorise_a_failed_link_asks_for_a_reset(admin, browser) -> None:  # type: ignore[no-untyped-def]
    mailbox = _first(admin, LinkStatus.LINK_FAILED)
    with pytest.raises(ApiError) as caught:
        MailboxLinker(admin).authorise(mailbox, _control(admin, browser))
    assert caught.value.code == "not_authorisable"
    assert "Reset" in caught.value.explain()


def test_concurrent_change_is_refused_with_412(sandbox, admin) -> None:  # type: ignore[no-untyped-def]
    mailbox = _first(admin, LinkStatus.LINK_FAILED)
    # Another admin resets it first.
    sandbox.world.api_store.admin_update(mailbox.id, status="unlinked")
    with pytest.raises(Conflict) as caught:
        MailboxLinker(admin).reset(mailbox)
    assert caught.value.current is not None
    assert caught.value.current.status is LinkStatus.UNLINKED
    assert "Someone else changed" in caught.value.explain()


def test_add_duplicate_and_remove(admin) -> None:  # type: ignore[no-untyped-def]
    linker = MailboxLinker(admin)
    added = linker.add("  New.Planner@Northwind-Haulage.example ", "New planner")
    assert added.address == "new.planner@northwind-haulage.example"
    assert added.status is LinkStatus.UNLINKED
    with pytest.raises(ApiError) as duplicate:
        linker.add("new.planner@northwind-haulage.example")
    assert duplicate.value.code == "mailbox_exists"
    with pytest.raises(QargoError) as invalid:
        linker.add("not an address")
    assert invalid.value.key == "api:invalid_address"
    stale = added
    admin.api.list_mailboxes()
    linker.remove(linker.find("new.planner@northwind-haulage.example"))
    with pytest.raises(QargoError):
        linker.find("new.planner@northwind-haulage.example")
    # Removing what is already gone is reported, not ignored.
    with pytest.raises(QargoError):
        linker.remove(stale)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a@b.example", "a@b.example"),
        ("<Someone@Example.COM>", "someone@example.com"),
        (" x.y+tag@sub.example.org ", "x.y+tag@sub.example.org"),
    ],
)
def test_normalise_address(text: str, expected: str) -> None:
    assert normalise_address(text) == expected


@pytest.mark.parametrize("text", ["", "a", "a@", "@b.example", "a@b", "a b@c.example", "a..b@c.de"])
def test_invalid_addresses(text: str) -> None:
    with pytest.raises(QargoError):
        normalise_address(text)
