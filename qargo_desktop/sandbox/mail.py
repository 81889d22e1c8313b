"""Mail delivery and Qargo sync, simulated on the sandbox clock.

A message sent through the sandbox's Graph arrives in each sandbox recipient's inbox
``delivery_delay_s`` after it was sent, and Qargo's own sync records it for that mailbox
``sync_delay_s`` after it arrived, but only while the mailbox is linked.

Nothing here runs on a timer thread. Every send schedules its arrival and sync by timestamp,
and :meth:`MailSystem.pump` materialises whatever is due whenever someone reads (Graph lists
messages, the organisation API lists mailboxes or synced messages). That keeps the simulation
deterministic, lets tests move the clock instead of sleeping, and leaves no thread behind
when the sandbox stops. Arrival and sync times are the scheduled times, not the time of the
read, so a late read sees the same ``receivedDateTime`` an early one would.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import logging
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

logger = logging.getLogger(__name__)

#: Folders every sandbox mailbox has, by Graph's well-known name, with their display names.
WELL_KNOWN_FOLDERS: dict[str, str] = {
    "inbox": "Inbox",
    "sentitems": "Sent Items",
    "deleteditems": "Deleted Items",
    "drafts": "Drafts",
}

#: The mail knobs :meth:`MailSystem.configure` accepts (also accepted by the fault settings).
MAIL_SETTING_NAMES = ("delivery_delay_s", "sync_delay_s", "lose_mail", "never_sync")


def iso_z(timestamp: float) -> str:
    """Format epoch seconds as Graph and the API do: whole seconds, UTC, ``Z`` suffix."""
    return datetime.fromtimestamp(int(timestamp), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> float:
    """Parse an RFC 3339 / ISO 8601 timestamp into epoch seconds (naive means UTC).

    Raises:
        ValueError: ``text`` is not a timestamp.
    """
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


class SyncTarget(Protocol):
    """What the mail simulation needs from the organisation API's store."""

    def is_linked(self, address: str) -> bool:
        """Whether Qargo currently holds a working link to ``address``."""
        ...

    def record_sync(
        self, address: str, internet_message_id: str, received_at: float, synced_at: float
    ) -> None:
        """Record that Qargo's sync saw a message in ``address``'s inbox."""
        ...


@dataclass(frozen=True)
class Recipient:
    """An email address with an optional display name, as Graph's ``emailAddress``."""

    address: str
    name: str = ""

    def to_json(self) -> dict[str, Any]:
        """Graph's ``recipient`` shape."""
        return {"emailAddress": {"name": self.name or self.address, "address": self.address}}


@dataclass(frozen=True)
class Envelope:
    """One message as it was sent (shared by every copy of it)."""

    internet_message_id: str
    conversation_id: str
    subject: str
    body_content_type: str
    body_content: str
    sender: Recipient
    to: tuple[Recipient, ...]
    cc: tuple[Recipient, ...] = ()
    bcc: tuple[Recipient, ...] = ()
    reply_to: tuple[Recipient, ...] = ()
    importance: str = "normal"
    sent_at: float = 0.0
    headers: tuple[tuple[str, str], ...] = ()

    def all_recipients(self) -> tuple[Recipient, ...]:
        """To, Cc and Bcc, in that order."""
        return self.to + self.cc + self.bcc


@dataclass
class StoredMessage:
    """One copy of a message in one folder of one mailbox.

    Attributes:
        owner: The mailbox's address, lower case.
        folder: The well-known name of the folder that holds it.
        key: The random part shared by both of its ids.
        rest_id: Graph's default id; changes when the message moves to another folder.
        immutable_id: The id returned under ``Prefer: IdType="ImmutableId"``; never changes.
        envelope: The message itself.
        received_at: Arrival time in this mailbox (the send time for a Sent Items copy).
        created_at: When this copy was created.
        modified_at: Last change to this copy.
        change_key: Graph's change key (changes when the copy changes).
        is_read: Whether the copy was read.
    """

    owner: str
    folder: str
    key: bytes
    rest_id: str
    immutable_id: str
    envelope: Envelope
    received_at: float
    created_at: float
    modified_at: float
    change_key: str
    is_read: bool = False


@dataclass(order=True)
class _Scheduled:
    due: float
    seq: int
    kind: str = field(compare=False)  # "deliver" or "sync"
    recipient: str = field(compare=False)
    envelope: Envelope = field(compare=False)
    received_at: float = field(compare=False, default=0.0)


@dataclass(frozen=True)
class SentRecord:
    """What a test can check about one accepted send."""

    sender: str
    internet_message_id: str
    subject: str
    recipients: tuple[str, ...]
    sent_at: float
    arrives_at: float | None
    lost: bool


@dataclass(frozen=True)
class SyncRecord:
    """One message Qargo's sync recorded (kept here for tests as well as in the API store)."""

    address: str
    internet_message_id: str
    received_at: float
    synced_at: float


class MailSystem:
    """Mailboxes, delivery and Qargo's sync for every sandbox account.

    All state is guarded by ``lock`` (the world's lock in a running sandbox).

    Args:
        clock: Returns the sandbox time in epoch seconds.
        lock: The lock that guards this store (a new one if omitted).
        is_local: Whether an address has a sandbox mailbox.
        display_name: The display name of a sandbox address (or '' if unknown).
        domain: Domain used for generated ``internetMessageId`` values.
        delivery_delay_s: Initial delivery delay.
        sync_delay_s: Initial delay between arrival and Qargo's sync.
        seed: Seed for message ids.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        lock: threading.RLock | None = None,
        is_local: Callable[[str], bool] = lambda _address: True,
        display_name: Callable[[str], str] = lambda _address: "",
        domain: str = "northwind-haulage.example",
        delivery_delay_s: float = 2.0,
        sync_delay_s: float = 3.0,
        seed: int = 0,
    ) -> None:
        self._clock = clock
        self.lock = lock if lock is not None else threading.RLock()
        self._is_local = is_local
        self._display_name = display_name
        self.domain = domain
        self.delivery_delay_s = float(delivery_delay_s)
        self.sync_delay_s = float(sync_delay_s)
        self.lose_mail = False
        self.never_sync = False
        self.sync_target: SyncTarget | None = None
        self._rng = random.Random(f"mail:{seed}")
        self._seq = 0
        self._queue: list[_Scheduled] = []
        self._by_owner: dict[str, dict[bytes, StoredMessage]] = {}
        self._rest_index: dict[str, tuple[str, bytes]] = {}
        self._immutable_index: dict[str, tuple[str, bytes]] = {}
        self.sent: list[SentRecord] = []
        self.synced: list[SyncRecord] = []
        self.outbound: list[tuple[str, Envelope]] = []

    def now(self) -> float:
        """The sandbox time."""
        return self._clock()

    # Settings

    def configure(
        self,
        *,
        delivery_delay_s: float | None = None,
        sync_delay_s: float | None = None,
        lose_mail: bool | None = None,
        never_sync: bool | None = None,
    ) -> None:
        """Change the delivery knobs; None leaves a knob as it is.

        Delays are read when a message is sent; ``never_sync`` and whether the mailbox is
        linked are read when its sync falls due.
        """
        with self.lock:
            if delivery_delay_s is not None:
                if delivery_delay_s < 0:
                    raise ValueError("delivery_delay_s must not be negative")
                self.delivery_delay_s = float(delivery_delay_s)
            if sync_delay_s is not None:
                if sync_delay_s < 0:
                    raise ValueError("sync_delay_s must not be negative")
                self.sync_delay_s = float(sync_delay_s)
            if lose_mail is not None:
                self.lose_mail = bool(lose_mail)
            if never_sync is not None:
                self.never_sync = bool(never_sync)

    def settings(self) -> dict[str, Any]:
        """The current delivery knobs."""
        with self.lock:
            return {
                "delivery_delay_s": self.delivery_delay_s,
                "sync_delay_s": self.sync_delay_s,
                "lose_mail": self.lose_mail,
                "never_sync": self.never_sync,
            }

    # Ids

    def _random_bytes(self, count: int) -> bytes:
        return bytes(self._rng.getrandbits(8) for _ in range(count))

    def new_internet_message_id(self) -> str:
        """A fresh ``<...@domain>`` message id, as the sending server assigns it."""
        with self.lock:
            token = self._random_bytes(12).hex().upper()
            return f"<{token}@{self.domain}>"

    def _ids(self, owner: str, folder: str, key: bytes) -> tuple[str, str]:
        # Graph's default ids encode the folder, so they change when a message moves; the
        # immutable ids encode only the mailbox and the item.
        mailbox_part = hashlib.sha256(owner.encode()).digest()
        folder_part = hashlib.sha256(f"{owner}/{folder}".encode()).digest()[:22]
        rest = base64.urlsafe_b64encode(b"\x00" + mailbox_part[:24] + folder_part + key)
        immutable = base64.urlsafe_b64encode(b"\x00\x00" + mailbox_part[:16] + key + b"\x00")
        return "AAMkAD" + rest.decode(), "AAkALgAA" + immutable.decode()

    def _change_key(self) -> str:
        return "CQAAABYAAA" + base64.b64encode(self._random_bytes(12)).decode()

    # Sending and delivery

    def send(self, sender: str, envelope: Envelope, *, save_to_sent_items: bool = True) -> None:
        """Accept a message from ``sender`` and schedule its delivery.

        Args:
            sender: The sending mailbox's address.
            envelope: The message, with its ``internet_message_id`` and ``sent_at`` set.
            save_to_sent_items: Keep a copy in the sender's Sent Items (Graph's default).
        """
        with self.lock:
            self.pump()
            owner = sender.lower()
            now = envelope.sent_at
            if save_to_sent_items:
                self._store(owner, "sentitems", envelope, received_at=now, is_read=True)

            lost = self.lose_mail
            arrives_at = None if lost else now + self.delivery_delay_s
            seen: set[str] = set()
            for recipient in envelope.all_recipients():
                address = recipient.address.lower()
                if address in seen:
                    continue
                seen.add(address)
                if not self._is_local(address):
                    self.outbound.append((address, envelope))
                    continue
                if lost or arrives_at is None:
                    continue
                self._schedule(arrives_at, "deliver", address, envelope)

            self.sent.append(
                SentRecord(
                    sender=owner,
                    internet_message_id=envelope.internet_message_id,
                    subject=envelope.subject,
                    recipients=tuple(sorted(seen)),
                    sent_at=now,
                    arrives_at=arrives_at,
                    lost=lost,
                )
            )
            logger.info(
                "sandbox mail from %s to %d recipient(s) accepted%s",
                owner,
                len(seen),
                " and lost on purpose" if lost else "",
            )

    def _schedule(
        self, due: float, kind: str, recipient: str, envelope: Envelope, received_at: float = 0.0
    ) -> None:
        self._seq += 1
        heapq.heappush(
            self._queue, _Scheduled(due, self._seq, kind, recipient, envelope, received_at)
        )

    def pump(self) -> None:
        """Materialise every delivery and sync that is due by now."""
        with self.lock:
            now = self._clock()
            while self._queue and self._queue[0].due <= now:
                item = heapq.heappop(self._queue)
                if item.kind == "deliver":
                    self._store(item.recipient, "inbox", item.envelope, received_at=item.due)
                    self._schedule(
                        item.due + self.sync_delay_s,
                        "sync",
                        item.recipient,
                        item.envelope,
                        received_at=item.due,
                    )
                else:
                    self._sync(item)

    def _sync(self, item: _Scheduled) -> None:
        target = self.sync_target
        if self.never_sync or target is None or not target.is_linked(item.recipient):
            return
        record = SyncRecord(
            address=item.recipient,
            internet_message_id=item.envelope.internet_message_id,
            received_at=item.received_at,
            synced_at=item.due,
        )
        self.synced.append(record)
        target.record_sync(
            record.address, record.internet_message_id, record.received_at, record.synced_at
        )

    def pending(self) -> int:
        """How many deliveries and syncs are scheduled but not yet due."""
        with self.lock:
            return len(self._queue)

    def next_due(self) -> float | None:
        """When the next delivery or sync falls due (None if nothing is scheduled)."""
        with self.lock:
            return self._queue[0].due if self._queue else None

    # Mailbox contents

    def _store(
        self,
        owner: str,
        folder: str,
        envelope: Envelope,
        *,
        received_at: float,
        is_read: bool = False,
        key: bytes | None = None,
    ) -> StoredMessage:
        item_key = key if key is not None else self._random_bytes(16)
        rest_id, immutable_id = self._ids(owner, folder, item_key)
        now = max(received_at, self._clock()) if key is not None else received_at
        message = StoredMessage(
            owner=owner,
            folder=folder,
            key=item_key,
            rest_id=rest_id,
            immutable_id=immutable_id,
            envelope=envelope,
            received_at=received_at,
            created_at=received_at,
            modified_at=now,
            change_key=self._change_key(),
            is_read=is_read,
        )
        self._by_owner.setdefault(owner, {})[item_key] = message
        self._rest_index[rest_id] = (owner, item_key)
        self._immutable_index[immutable_id] = (owner, item_key)
        return message

    def messages(self, owner: str, folder: str | None = None) -> list[StoredMessage]:
        """Every message of ``owner`` (in ``folder`` if given), in no particular order."""
        with self.lock:
            self.pump()
            items = self._by_owner.get(owner.lower(), {}).values()
            return [m for m in items if folder is None or m.folder == folder]

    def iter_all(self) -> Iterator[StoredMessage]:
        """Every stored message of every mailbox (for tests)."""
        with self.lock:
            self.pump()
            for box in list(self._by_owner.values()):
                yield from list(box.values())

    def find(self, owner: str, message_id: str) -> StoredMessage | None:
        """The message of ``owner`` with either of its ids, or None."""
        with self.lock:
            self.pump()
            ref = self._rest_index.get(message_id) or self._immutable_index.get(message_id)
            if ref is None or ref[0] != owner.lower():
                return None
            return self._by_owner.get(ref[0], {}).get(ref[1])

    def delete(self, owner: str, message_id: str) -> bool:
        """Delete a message as Graph does: move it to Deleted Items, or purge it from there.

        Returns:
            False when ``owner`` has no message with that id.
        """
        with self.lock:
            message = self.find(owner, message_id)
            if message is None:
                return False
            self._forget(message)
            if message.folder != "deleteditems":
                self._store(
                    message.owner,
                    "deleteditems",
                    message.envelope,
                    received_at=message.received_at,
                    is_read=message.is_read,
                    key=message.key,
                )
            return True

    def purge(self, owner: str, message_id: str) -> bool:
        """Delete a message permanently (Graph's ``permanentDelete``)."""
        with self.lock:
            message = self.find(owner, message_id)
            if message is None:
                return False
            self._forget(message)
            return True

    def _forget(self, message: StoredMessage) -> None:
        del self._by_owner[message.owner][message.key]
        self._rest_index.pop(message.rest_id, None)
        self._immutable_index.pop(message.immutable_id, None)

    def add_message(
        self, owner: str, envelope: Envelope, *, folder: str = "inbox", received_at: float
    ) -> StoredMessage:
        """Put a message straight into a mailbox (seed data and tests)."""
        with self.lock:
            return self._store(owner.lower(), folder, envelope, received_at=received_at)

    @property
    def sent_count(self) -> int:
        """How many sendMail calls were accepted."""
        with self.lock:
            return len(self.sent)
