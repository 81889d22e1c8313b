"""Seed data: the Northwind Haulage organisation, with a mailbox in every link state.

:func:`prepare_world` is what the server calls before it starts: it creates the fault
settings, the mail simulation and the organisation store, connects them, and seeds them.
With ``SandboxOptions.mailboxes=N`` the organisation has N mailboxes: the hand-written ones
below plus generated ones spread over every state, the same on every start with the same
seed.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from qargo_desktop.sandbox.api import (
    STATUS_AUTHORISING,
    STATUS_LINK_FAILED,
    STATUS_LINKED,
    STATUS_REAUTHORISATION_REQUIRED,
    STATUS_UNLINKED,
    LastError,
    MailboxRecord,
    OrganisationStore,
    RequestContext,
)
from qargo_desktop.sandbox.api import attach as attach_api
from qargo_desktop.sandbox.faults import Faults
from qargo_desktop.sandbox.graph import attach_mail
from qargo_desktop.sandbox.mail import Envelope, MailSystem, Recipient

if TYPE_CHECKING:
    from qargo_desktop.sandbox.world import World

logger = logging.getLogger(__name__)

DOMAIN = "northwind-haulage.example"
UNKNOWN_STATUS = "suspended"
_DAY = 86400.0

_ADMIN = f"admin@{DOMAIN}"
_ADMIN2 = f"admin2@{DOMAIN}"


@dataclass(frozen=True)
class SeedMailbox:
    """One hand-written seed mailbox.

    Attributes:
        local_part: The address before ``@``.
        display_name: Its display name.
        status: Its link state (``authorising`` gets a pending attempt).
        last_sync_ago_s: How long ago Qargo last synced it (None: never).
        linked_ago_s: How long ago it was linked (None: never).
        error: ``(code, message)`` of its last error, if any.
        reason: Its status reason.
        granted_scopes: Scopes it holds, if not the organisation's current ones.
    """

    local_part: str
    display_name: str
    status: str
    last_sync_ago_s: float | None = None
    linked_ago_s: float | None = None
    error: tuple[str, str] | None = None
    reason: str | None = None
    granted_scopes: tuple[str, ...] | None = None

    @property
    def address(self) -> str:
        """The full address."""
        return f"{self.local_part}@{DOMAIN}"


_OLD_SCOPES = ("https://graph.microsoft.com/Mail.ReadWrite", "offline_access")

SEED_MAILBOXES: tuple[SeedMailbox, ...] = (
    SeedMailbox("dispatch", "Dispatch Desk", STATUS_LINKED, 95, 41 * _DAY),
    SeedMailbox("planning", "Planning Team", STATUS_LINKED, 310, 63 * _DAY),
    SeedMailbox("invoices", "Accounts Payable", STATUS_LINKED, 45, 12 * _DAY),
    SeedMailbox("customs", "Customs Clearance", STATUS_LINKED, 740, 88 * _DAY),
    SeedMailbox("driver.support", "Driver Support", STATUS_LINKED, 3 * _DAY, 150 * _DAY),
    SeedMailbox("sales", "Sales", STATUS_UNLINKED),
    SeedMailbox("warehouse.rotterdam", "Warehouse Rotterdam", STATUS_UNLINKED),
    SeedMailbox(
        "operations",
        "Operations",
        STATUS_REAUTHORISATION_REQUIRED,
        2 * _DAY,
        70 * _DAY,
        error=(
            "invalid_grant",
            "AADSTS50173: The provided grant has expired due to it being revoked, a fresh auth "
            "token is needed. The user might have changed or reset their password (grant "
            "revoked after a password change).",
        ),
        reason="The mailbox's grant was revoked after a password change; reauthorise it.",
    ),
    SeedMailbox(
        "fleet",
        "Fleet Maintenance",
        STATUS_REAUTHORISATION_REQUIRED,
        6 * _DAY,
        200 * _DAY,
        error=(
            "consent_required",
            "AADSTS65001: The user or administrator has not consented to use the application. "
            "The organisation now also requires Mail.Send.",
        ),
        reason="The organisation requires new permissions; reauthorise to grant them.",
        granted_scopes=_OLD_SCOPES,
    ),
    SeedMailbox(
        "claims",
        "Claims Handling",
        STATUS_LINK_FAILED,
        error=(
            "access_denied",
            "AADSTS65004: User declined to consent to access the app.",
        ),
        reason="The mailbox account declined the permissions Qargo asks for.",
    ),
    SeedMailbox(
        "tenders",
        "Tenders",
        STATUS_LINK_FAILED,
        error=(
            "account_mismatch",
            f"The token belongs to dispatcher@{DOMAIN}, not to the mailbox tenders@{DOMAIN}.",
        ),
        reason="Someone signed in with an account other than the mailbox.",
    ),
    SeedMailbox("bookings", "Bookings", STATUS_AUTHORISING),
    SeedMailbox(
        "archive",
        "Archive",
        UNKNOWN_STATUS,
        last_sync_ago_s=30 * _DAY,
        linked_ago_s=400 * _DAY,
        reason="Suspended by Qargo support while the archive migrates.",
    ),
)

_FIRST = (
    "Aisha", "Bram", "Chloe", "Dmitri", "Elif", "Femke", "Gareth", "Hana", "Ivo", "Jana",
    "Kofi", "Lena", "Marco", "Nadia", "Owen", "Priya", "Quentin", "Rosa", "Sami", "Tess",
    "Umar", "Vera", "Wim", "Xenia", "Yusuf", "Zofia",
)  # fmt: skip
_LAST = (
    "Andersen", "Bakker", "Costa", "Dubois", "Evans", "Fischer", "Garcia", "Haddad", "Ivanova",
    "Jansen", "Kowalski", "Laine", "Murphy", "Novak", "Okafor", "Peeters", "Quinn", "Rossi",
    "Schmidt", "Tanaka", "Usman", "Visser", "Walsh", "Yilmaz", "Zimmermann",
)  # fmt: skip
_DEPOTS = (
    "antwerp", "birmingham", "calais", "duisburg", "eindhoven", "felixstowe", "genk", "hamburg",
    "lyon", "milan", "poznan", "venlo", "zeebrugge",
)  # fmt: skip
_TEAMS = ("planning", "dispatch", "customs", "yard", "billing", "claims")

#: How generated mailboxes spread over the states (cumulative weights follow).
_STATE_WEIGHTS: tuple[tuple[str, int], ...] = (
    (STATUS_LINKED, 70),
    (STATUS_UNLINKED, 12),
    (STATUS_REAUTHORISATION_REQUIRED, 8),
    (STATUS_LINK_FAILED, 6),
    (STATUS_AUTHORISING, 2),
    (UNKNOWN_STATUS, 2),
)


def _history(
    store: OrganisationStore, record: MailboxRecord, entries: list[tuple[float, str, str, str]]
) -> None:
    """Give a seed mailbox a believable audit trail (oldest first)."""
    for at, actor, action, detail in entries:
        ctx = RequestContext(actor=actor, app_version="0.9.2", machine="NWH-ADMIN-01")
        store.record_event(record, action, detail, ctx=ctx, at=at)


def seed_organisation(world: World, store: OrganisationStore) -> list[MailboxRecord]:
    """Add the hand-written mailboxes and register each as a sign-in account."""
    from qargo_desktop.sandbox.world import ROLE_MAILBOX

    now = store.now()
    required = store.required_link_scopes
    records: list[MailboxRecord] = []
    for spec in SEED_MAILBOXES:
        world.add_account(spec.address, spec.display_name, role=ROLE_MAILBOX)
        added_at = now - 400 * _DAY
        record = MailboxRecord(
            id=store.new_mailbox_id(),
            address=spec.address,
            display_name=spec.display_name,
            status=STATUS_UNLINKED if spec.status == STATUS_AUTHORISING else spec.status,
            status_reason=spec.reason,
            status_changed_at=now - 3600,
            linked_at=now - spec.linked_ago_s if spec.linked_ago_s is not None else None,
            linked_by=_ADMIN if spec.linked_ago_s is not None else None,
            granted_scopes=(
                (spec.granted_scopes or required) if spec.linked_ago_s is not None else ()
            ),
            last_sync_at=now - spec.last_sync_ago_s if spec.last_sync_ago_s is not None else None,
            last_error=(
                LastError(code=spec.error[0], message=spec.error[1], at=now - 3600)
                if spec.error
                else None
            ),
        )
        entries = [(added_at, _ADMIN, "mailbox_added", f"Added {spec.address}.")]
        if record.linked_at is not None:
            entries.append((record.linked_at, _ADMIN, "mailbox_linked", "Authorise completed."))
        if spec.status == STATUS_REAUTHORISATION_REQUIRED:
            entries.append((now - 3600, "system", "grant_revoked", spec.reason or ""))
        if spec.status == STATUS_LINK_FAILED:
            entries.append((now - 3600, _ADMIN, "authorisation_failed", spec.reason or ""))
        if spec.status == UNKNOWN_STATUS:
            entries.append(
                (now - 3600, "support@qargo.example", "mailbox_changed", spec.reason or "")
            )
        store.insert(record, audit=False)
        _history(store, record, entries)
        if spec.status == STATUS_AUTHORISING:
            # Started by the other admin, so the desktop user sees an attempt that is not theirs.
            store.start_attempt(
                record.id,
                "authorise",
                if_match="*",
                ctx=RequestContext(actor=_ADMIN2, app_version="0.9.2", machine="NWH-ADMIN-02"),
            )
        records.append(record)
    return records


def generate_mailboxes(
    count: int, *, seed: int, now: float, required_scopes: tuple[str, ...]
) -> tuple[list[MailboxRecord], list[str]]:
    """Generate ``count`` mailboxes spread over every state, the same for the same seed.

    Returns:
        The mailboxes, and the ids of those that should be authorising: they come unlinked,
        and :func:`seed_large_organisation` starts their attempts through the store.
    """
    rng = random.Random(f"large-org:{seed}")
    states = [state for state, _ in _STATE_WEIGHTS]
    weights = [weight for _, weight in _STATE_WEIGHTS]
    chosen = rng.choices(states, weights=weights, k=count)
    records: list[MailboxRecord] = []
    authorising: list[str] = []
    for index in range(count):
        if index % 5 == 4:
            depot = _DEPOTS[rng.randrange(len(_DEPOTS))]
            team = _TEAMS[rng.randrange(len(_TEAMS))]
            local = f"{team}.{depot}.{index:05d}"
            name = f"{team.capitalize()} {depot.capitalize()} {index:05d}"
        else:
            first = _FIRST[rng.randrange(len(_FIRST))]
            last = _LAST[rng.randrange(len(_LAST))]
            local = f"{first}.{last}.{index:05d}".lower()
            name = f"{first} {last}"
        status = chosen[index]
        linked = status in (STATUS_LINKED, STATUS_REAUTHORISATION_REQUIRED, UNKNOWN_STATUS)
        error = None
        reason = None
        if status == STATUS_REAUTHORISATION_REQUIRED:
            error = LastError(
                "invalid_grant",
                "AADSTS50173: The provided grant has expired due to it being revoked.",
                now - rng.uniform(3600, 10 * _DAY),
            )
            reason = "The mailbox's grant was revoked; reauthorise it."
        elif status == STATUS_LINK_FAILED:
            error = LastError(
                "access_denied",
                "AADSTS65004: User declined to consent to access the app.",
                now - rng.uniform(3600, 10 * _DAY),
            )
            reason = "The mailbox account declined the permissions Qargo asks for."
        linked_at = now - rng.uniform(_DAY, 300 * _DAY) if linked else None
        records.append(
            MailboxRecord(
                id=f"mbx_{rng.getrandbits(64):016x}",
                address=f"{local}@{DOMAIN}",
                display_name=name,
                status=STATUS_UNLINKED if status == STATUS_AUTHORISING else status,
                status_reason=reason,
                status_changed_at=now - rng.uniform(0, 30 * _DAY),
                linked_at=linked_at,
                linked_by=_ADMIN if linked else None,
                granted_scopes=required_scopes if linked else (),
                last_sync_at=now - rng.uniform(10, 7200) if linked else None,
                last_error=error,
                events=[],
            )
        )
        if status == STATUS_AUTHORISING:
            authorising.append(records[-1].id)
    return records, authorising


def seed_large_organisation(world: World, store: OrganisationStore, count: int) -> None:
    """Fill the organisation up to ``count`` mailboxes with generated ones."""
    from qargo_desktop.sandbox.world import ROLE_MAILBOX

    records, authorising = generate_mailboxes(
        count, seed=world.options.seed, now=store.now(), required_scopes=store.required_link_scopes
    )
    store.insert_many(records)
    with world.lock:
        for record in records:
            world.add_account(record.address, record.display_name, role=ROLE_MAILBOX)
    ctx = RequestContext(actor=_ADMIN2, machine="NWH-ADMIN-02")
    for mailbox_id in authorising:
        store.start_attempt(mailbox_id, "authorise", if_match="*", ctx=ctx)


def prepare_world(world: World) -> None:
    """Create and connect the fault settings, mail simulation and organisation; seed them."""
    started = time.perf_counter()
    options = world.options
    with world.lock:
        if world.faults is None:
            world.faults = Faults(seed=options.seed)
        mail: MailSystem = attach_mail(world)
        store = attach_api(world)
        mail.sync_target = store
        store.before_read = mail.pump
        world.faults.attach_mail(mail.configure, mail.settings)
        if options.faults:
            world.faults.update(**dict(options.faults))
        if not store.all():
            seed_organisation(world, store)
            extra = (options.mailboxes or 0) - len(SEED_MAILBOXES)
            if extra > 0:
                seed_large_organisation(world, store, extra)
            _seed_mail(world, mail)
    logger.info(
        "Sandbox organisation seeded with %d mailboxes in %.0f ms",
        len(store),
        (time.perf_counter() - started) * 1000,
    )


def _seed_mail(world: World, mail: MailSystem) -> None:
    """A little mail in the linked seed mailboxes, so a listing is not empty on day one."""
    now = mail.now()
    sender = Recipient(f"bookings@{DOMAIN}", "Bookings")
    subjects = (
        "Collection confirmed: order NWH-48213, Rotterdam to Birmingham",
        "POD attached for consignment 7719-22",
        "Rate request: 2 FTL Venlo to Lyon, week 50",
    )
    for spec in SEED_MAILBOXES:
        if spec.status != STATUS_LINKED:
            continue
        for index, subject in enumerate(subjects):
            sent_at = now - (index + 1) * 3 * 3600
            envelope = Envelope(
                internet_message_id=mail.new_internet_message_id(),
                conversation_id=f"seed-{spec.local_part}-{index}",
                subject=subject,
                body_content_type="text",
                body_content=f"Hello {spec.display_name},\n\n{subject}.\n\nKind regards,\nBookings",
                sender=sender,
                to=(Recipient(spec.address, spec.display_name),),
                sent_at=sent_at,
            )
            mail.add_message(spec.address, envelope, received_at=sent_at + 2)


__all__: list[str] = [
    "SEED_MAILBOXES",
    "UNKNOWN_STATUS",
    "SeedMailbox",
    "generate_mailboxes",
    "prepare_world",
    "seed_large_organisation",
    "seed_organisation",
]
