"""Mail delivery and Qargo's sync on a fake clock: timing, knobs, folders and ids."""

from __future__ import annotations

import threading

import pytest

from qargo_desktop.sandbox.mail import Envelope, MailSystem, Recipient, iso_z, parse_iso

DOMAIN = "northwind-haulage.example"
ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"


class FakeClock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.25

    def now(self) -> float:
        return self.t


class FakeQargo:
    """Stands in for the organisation store: which mailboxes are linked, what synced."""

    def __init__(self) -> None:
        self.linked = {ALICE, BOB}
        self.synced: list[tuple[str, str, float, float]] = []

    def is_linked(self, address: str) -> bool:
        return address in self.linked

    def record_sync(self, address: str, imid: str, received_at: float, synced_at: float) -> None:
        self.synced.append((address, imid, received_at, synced_at))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def qargo() -> FakeQargo:
    return FakeQargo()


@pytest.fixture
def mail(clock: FakeClock, qargo: FakeQargo) -> MailSystem:
    system = MailSystem(
        clock=clock.now,
        lock=threading.RLock(),
        is_local=lambda address: address.endswith(DOMAIN),
        delivery_delay_s=2.0,
        sync_delay_s=3.0,
    )
    system.sync_target = qargo
    return system


def send(mail: MailSystem, clock: FakeClock, to: str = BOB, sender: str = ALICE) -> Envelope:
    envelope = Envelope(
        internet_message_id=mail.new_internet_message_id(),
        conversation_id="conv",
        subject="Test",
        body_content_type="text",
        body_content="Hello",
        sender=Recipient(sender),
        to=(Recipient(to),),
        sent_at=clock.t,
    )
    mail.send(sender, envelope)
    return envelope


def test_delivery_then_sync_on_schedule(
    mail: MailSystem, clock: FakeClock, qargo: FakeQargo
) -> None:
    sent_at = clock.t
    envelope = send(mail, clock)
    assert envelope.internet_message_id.startswith("<")
    assert envelope.internet_message_id.endswith(f"@{DOMAIN}>")
    assert mail.messages(BOB, "inbox") == []
    [copy] = mail.messages(ALICE, "sentitems")
    assert copy.received_at == sent_at

    clock.t += 1.99
    assert mail.messages(BOB, "inbox") == []
    clock.t += 0.01
    [arrived] = mail.messages(BOB, "inbox")
    assert arrived.received_at == sent_at + 2.0
    assert arrived.envelope.sent_at == sent_at
    assert qargo.synced == []

    # A read long after the due times still sees the scheduled times.
    clock.t += 100
    mail.pump()
    assert qargo.synced == [(BOB, envelope.internet_message_id, sent_at + 2.0, sent_at + 5.0)]
    assert mail.sent_count == 1
    assert mail.pending() == 0


def test_no_sync_when_unlinked_or_never_sync(
    mail: MailSystem, clock: FakeClock, qargo: FakeQargo
) -> None:
    qargo.linked.discard(BOB)
    send(mail, clock)
    clock.t += 10
    assert mail.messages(BOB, "inbox")
    assert qargo.synced == []

    qargo.linked.add(BOB)
    mail.configure(never_sync=True)
    send(mail, clock)
    clock.t += 10
    mail.pump()
    assert qargo.synced == []
    assert len(mail.messages(BOB, "inbox")) == 2


def test_knobs_change_while_running(mail: MailSystem, clock: FakeClock, qargo: FakeQargo) -> None:
    mail.configure(delivery_delay_s=30, sync_delay_s=0)
    start = clock.t
    send(mail, clock)
    assert mail.next_due() == start + 30
    clock.t += 30
    mail.pump()
    assert [s[3] for s in qargo.synced] == [start + 30]

    mail.configure(lose_mail=True)
    send(mail, clock)
    clock.t += 100
    assert len(mail.messages(BOB, "inbox")) == 1
    assert mail.sent[-1].lost is True
    assert mail.sent_count == 2

    with pytest.raises(ValueError, match="negative"):
        mail.configure(delivery_delay_s=-1)


def test_external_recipients_leave_the_sandbox(mail: MailSystem, clock: FakeClock) -> None:
    send(mail, clock, to="someone@elsewhere.example")
    clock.t += 10
    assert mail.outbound[0][0] == "someone@elsewhere.example"
    assert mail.messages("someone@elsewhere.example") == []


def test_delete_moves_to_deleted_items_and_keeps_the_immutable_id(
    mail: MailSystem, clock: FakeClock
) -> None:
    send(mail, clock)
    clock.t += 5
    [message] = mail.messages(BOB, "inbox")
    rest_id, immutable_id = message.rest_id, message.immutable_id
    assert rest_id != immutable_id
    assert mail.find(BOB, rest_id) is message
    assert mail.find(ALICE, rest_id) is None

    assert mail.delete(BOB, rest_id)
    assert mail.find(BOB, rest_id) is None
    moved = mail.find(BOB, immutable_id)
    assert moved is not None
    assert moved.folder == "deleteditems"
    assert moved.rest_id != rest_id

    assert mail.delete(BOB, immutable_id)
    assert mail.find(BOB, immutable_id) is None
    assert not mail.delete(BOB, immutable_id)


def test_ids_are_deterministic_for_a_seed(clock: FakeClock) -> None:
    def ids(seed: int) -> list[str]:
        system = MailSystem(clock=clock.now, seed=seed, delivery_delay_s=0)
        send(system, clock)
        clock.t += 1
        return [m.immutable_id for m in system.messages(BOB)]

    assert ids(1) == ids(1)
    assert ids(1) != ids(2)


def test_time_format_is_graphs() -> None:
    assert iso_z(1_800_000_000.9) == "2027-01-15T08:00:00Z"
    assert parse_iso("2027-01-15T08:00:00Z") == 1_800_000_000
    assert parse_iso("2027-01-15T09:00:00+01:00") == 1_800_000_000
