"""Seed data: every state in the small organisation; a large one, fast and deterministic."""

from __future__ import annotations

import time
from pathlib import Path

from qargo_desktop.sandbox.api import KNOWN_STATUSES, OrganisationStore
from qargo_desktop.sandbox.mail import MailSystem
from qargo_desktop.sandbox.seed import SEED_MAILBOXES, generate_mailboxes, prepare_world
from qargo_desktop.sandbox.world import SandboxOptions, World


def seeded_world(tmp_path: Path, **options: object) -> World:
    world = World(SandboxOptions(data_dir=tmp_path, **options))  # type: ignore[arg-type]
    prepare_world(world)
    return world


def test_seed_covers_every_state_with_accounts(tmp_path: Path) -> None:
    world = seeded_world(tmp_path)
    store = world.api_store
    assert isinstance(store, OrganisationStore)
    records = store.all()
    assert 10 <= len(records) <= 15
    statuses = {r.status for r in records}
    assert set(KNOWN_STATUSES) <= statuses
    assert "suspended" in statuses

    now = store.now()
    for record in records:
        assert record.address.endswith("@northwind-haulage.example")
        assert world.get_account(record.address) is not None
        assert record.events, record.address
    linked = [r for r in records if r.status == "linked"]
    assert len(linked) >= 3
    assert sum(1 for r in linked if r.last_sync_at and now - r.last_sync_at < 3600) >= 3

    by_status = {r.status: r for r in records}
    revoked = by_status["reauthorisation_required"]
    failed = by_status["link_failed"]
    assert revoked.last_error is not None and "AADSTS50173" in revoked.last_error.message
    assert failed.last_error is not None
    authorising = store.mailbox_json(by_status["authorising"])
    assert authorising["authorisation"]["started_by"] == "admin2@northwind-haulage.example"


def test_seed_wires_mail_and_faults(tmp_path: Path) -> None:
    world = seeded_world(
        tmp_path, faults={"latency_s": 0.25, "never_sync": True}, delivery_delay_s=7.0
    )
    mail = world.mail_store
    assert isinstance(mail, MailSystem)
    assert mail.sync_target is world.api_store
    assert mail.settings()["never_sync"] is True
    assert mail.settings()["delivery_delay_s"] == 7.0
    assert world.faults.settings.latency_s == 0.25
    assert world.faults.snapshot()["never_sync"] is True
    linked = next(s for s in SEED_MAILBOXES if s.status == "linked")
    assert mail.messages(linked.address, "inbox")


def test_large_organisation_is_fast_and_deterministic(tmp_path: Path) -> None:
    started = time.perf_counter()
    world = seeded_world(tmp_path, mailboxes=10_000, seed=7)
    elapsed = time.perf_counter() - started
    store = world.api_store
    assert len(store) == 10_000
    # World() generates an RSA key too; the seeding itself must stay well under a second.
    assert elapsed < 2.0, elapsed

    records = store.all()
    counts: dict[str, int] = {}
    for record in records:
        counts[record.status] = counts.get(record.status, 0) + 1
    assert set(KNOWN_STATUSES) | {"suspended"} == set(counts)
    assert counts["linked"] > 5000
    assert len({r.address for r in records}) == 10_000
    assert world.get_account(records[-1].address) is not None

    items, cursor, total = store.list_page(limit=500, statuses=["linked"])
    assert len(items) == 500 and cursor and total == counts["linked"]


def test_generation_is_deterministic_and_quick() -> None:
    scopes = ("a", "b")
    started = time.perf_counter()
    first, authorising = generate_mailboxes(10_000, seed=3, now=1e9, required_scopes=scopes)
    assert time.perf_counter() - started < 1.0
    second, _ = generate_mailboxes(10_000, seed=3, now=1e9, required_scopes=scopes)
    other, _ = generate_mailboxes(10_000, seed=4, now=1e9, required_scopes=scopes)
    assert [(r.id, r.address, r.status) for r in first] == [
        (r.id, r.address, r.status) for r in second
    ]
    assert [r.id for r in first] != [r.id for r in other]
    assert authorising and all(r.status == "unlinked" for r in first if r.id in set(authorising))
