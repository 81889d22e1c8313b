"""Two admins, one mailbox: If-Match stops lost updates, and both end up seeing the truth.

Amira (admin@) and Ben (admin2@) each run the app: their own services, sessions and token
caches, each signed in through the browser. Each keeps a view of the list as the window
does (what it listed, updated by what each operation returned, and by the current state a
conflict hands back). Whatever order their changes arrive in, no change is silently
overwritten, and after the dust settles both views equal the server's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from qargo_desktop.core.errors import ApiError, QargoError
from qargo_desktop.core.linking import Conflict, MailboxLinker
from qargo_desktop.core.models import LinkStatus, Mailbox
from tests.reliability.conftest import ADMIN, DOMAIN, Person, build_services

ADMIN2 = f"admin2@{DOMAIN}"
CLAIMS = f"claims@{DOMAIN}"
TENDERS = f"tenders@{DOMAIN}"
SALES = f"sales@{DOMAIN}"
DISPATCH = f"dispatch@{DOMAIN}"


class Admin:
    """One admin's app: services, a linker and the list as its window shows it."""

    def __init__(self, services: Any) -> None:
        self.services = services
        self.linker = MailboxLinker(services)
        self.view: dict[str, Mailbox] = {}

    def refresh(self) -> None:
        listing = self.services.api.list_mailboxes()
        assert listing is not None
        self.view = {m.id: m for m in listing.items}

    def by_address(self, address: str) -> Mailbox:
        return next(m for m in self.view.values() if m.address == address)

    def act(self, operation: Callable[[], Any]) -> Any:
        """Run an operation as the window does: show what came back, or what a conflict says."""
        try:
            result = operation()
        except Conflict as conflict:
            if conflict.current is not None:
                self.view[conflict.current.id] = conflict.current
            return conflict
        if isinstance(result, Mailbox):
            self.view[result.id] = result
        return result


@pytest.fixture
def admins(sandbox: Any, settings_for: Any, tmp_path: Path) -> Any:
    people = []
    for username, folder in ((ADMIN, "amira"), (ADMIN2, "ben")):
        services = build_services(sandbox, settings_for, tmp_path / folder)
        person = Person()
        person.account = username
        control = services.new_control()
        control.opener = person
        services.sign_in_interactive(control)
        person.join()
        assert services.username == username
        people.append(Admin(services))
    for admin in people:
        admin.refresh()
    yield people
    for admin in people:
        admin.services.session.close()


def server_truth(sandbox: Any, mailbox_id: str) -> tuple[str, str, str]:
    store = sandbox.world.api_store
    record = store.get(mailbox_id)
    return record.status, store.etag(record), record.display_name


def shown(admin: Admin, mailbox_id: str) -> tuple[str, str, str]:
    mailbox = admin.view[mailbox_id]
    return mailbox.raw_status, mailbox.etag, mailbox.display_name


def test_the_second_reset_is_refused_and_shows_the_first(sandbox: Any, admins: Any) -> None:
    amira, ben = admins
    target = amira.by_address(CLAIMS)
    assert target.status is LinkStatus.LINK_FAILED

    ben.act(lambda: ben.linker.reset(ben.by_address(CLAIMS)))
    outcome = amira.act(lambda: amira.linker.reset(target))

    # Amira's reset did not run on top of Ben's: she is told, and sees what Ben did.
    assert isinstance(outcome, Conflict)
    assert outcome.key == "api:precondition_failed" and outcome.advice.summary
    assert outcome.current is not None and outcome.current.status is LinkStatus.UNLINKED
    assert shown(amira, target.id) == shown(ben, target.id) == server_truth(sandbox, target.id)
    events = [e.action for e in amira.services.api.events(target.id)]
    assert events.count("link_reset") == 1, events


def test_a_change_made_elsewhere_stops_a_removal(sandbox: Any, admins: Any) -> None:
    amira, ben = admins
    target = amira.by_address(TENDERS)
    # Qargo support (or a third admin) renames it and records an error meanwhile.
    sandbox.world.api_store.admin_update(
        target.id, display_name="Tenders (EU)", last_error={"code": "x", "message": "y"}
    )
    outcome = amira.act(lambda: amira.linker.remove(target))
    assert isinstance(outcome, Conflict)
    assert sandbox.world.api_store.get(target.id)  # still there
    assert shown(amira, target.id) == server_truth(sandbox, target.id)
    assert amira.view[target.id].display_name == "Tenders (EU)"

    ben.refresh()
    assert shown(ben, target.id) == server_truth(sandbox, target.id)


def test_an_authorisation_on_a_stale_copy_is_refused(sandbox: Any, admins: Any) -> None:
    amira, ben = admins
    target = ben.by_address(SALES)
    # Amira starts authorising it (her browser is still open on the sign-in page).
    attempt = amira.services.api.start_authorisation(amira.by_address(SALES), "authorise")

    outcome = ben.act(lambda: ben.linker.authorise(target, ben.services.new_control()))
    assert isinstance(outcome, Conflict)
    assert outcome.current is not None and outcome.current.status is LinkStatus.AUTHORISING
    # With the fresh copy, the API still says no: one attempt at a time.
    with pytest.raises(ApiError) as again:
        ben.linker.authorise(outcome.current, ben.services.new_control())
    assert again.value.code == "attempt_in_progress" and again.value.advice.summary

    # Amira gives up; both see the mailbox as the server has it.
    amira.act(lambda: amira.services.api.fail_authorisation(attempt, "cancelled"))
    ben.refresh()
    assert shown(amira, target.id) == shown(ben, target.id) == server_truth(sandbox, target.id)


def test_two_admins_resetting_at_the_same_moment(sandbox: Any, admins: Any) -> None:
    amira, ben = admins
    target_id = amira.by_address(TENDERS).id
    barrier = threading.Barrier(2)
    outcomes: dict[str, Any] = {}

    def reset(admin: Admin, name: str) -> None:
        mailbox = admin.view[target_id]
        barrier.wait()
        outcomes[name] = admin.act(lambda: admin.linker.reset(mailbox))

    threads = [
        threading.Thread(target=reset, args=(amira, "amira")),
        threading.Thread(target=reset, args=(ben, "ben")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    won = [n for n, o in outcomes.items() if isinstance(o, Mailbox)]
    lost = [n for n, o in outcomes.items() if isinstance(o, QargoError)]
    assert len(won) == 1 and len(lost) == 1, outcomes
    assert isinstance(outcomes[lost[0]], Conflict)
    assert shown(amira, target_id) == shown(ben, target_id) == server_truth(sandbox, target_id)
    events = [e.action for e in amira.services.api.events(target_id)]
    assert events.count("link_reset") == 1, events


def test_a_cached_list_never_hides_someone_elses_change(sandbox: Any, admins: Any) -> None:
    amira, ben = admins
    listing = amira.services.api.list_mailboxes()
    assert listing is not None and listing.etag
    # Nothing changed: the conditional list says so.
    assert amira.services.api.list_mailboxes(if_none_match=listing.etag) is None

    target = ben.by_address(DISPATCH)
    sandbox.revoke_grant(DISPATCH)  # the server changes it on its own
    ben.act(lambda: ben.services.api.get_mailbox(target.id))

    again = amira.services.api.list_mailboxes(if_none_match=listing.etag)
    assert again is not None, "a 304 would have hidden the change"
    amira.view = {m.id: m for m in again.items}
    assert amira.view[target.id].status is LinkStatus.REAUTHORISATION_REQUIRED
    assert shown(amira, target.id) == shown(ben, target.id) == server_truth(sandbox, target.id)
