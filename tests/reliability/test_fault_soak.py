"""A fault soak: hundreds of mixed operations through the app's core while the sandbox misbehaves.

The operations are the ones a person does all day: list and refresh the mailboxes,
authorise, reauthorise (also cancelled, declined, with the wrong account, past the
deadline), reset a failed link, add a mailbox, run the self-test, sign out and back in.
Meanwhile the sandbox adds latency, answers 429 and 503 with every form of ``Retry-After``
servers send, drops connections (before and after acting on the request), truncates
bodies, expires access tokens every few seconds so refresh tokens rotate all the time, and
revokes grants behind the app's back.

Afterwards: no operation ended in anything but a result or a :class:`QargoError` with known
advice; the list the app shows equals the server's; no message was sent twice, no mailbox
added twice, no authorisation attempt left pending, no listener or sign-in thread left
running, and the encrypted token caches still open cleanly.

Seeded: ``QARGO_SOAK_SEED`` picks the seed (printed on failure), ``QARGO_SOAK_OPERATIONS``
the number of operations, ``QARGO_SOAK_VERBOSE=1`` prints each operation (with ``-s``). The
same seed gives the same mix of operations and the same fault rates; the exact interleaving
of faults with requests still depends on timing.
"""

from __future__ import annotations

import collections
import email.utils
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from qargo_desktop.core.errors import NextStep, QargoError, SignInRequired
from qargo_desktop.core.linking import LinkOutcome, MailboxLinker
from qargo_desktop.core.models import LinkStatus, Mailbox
from qargo_desktop.core.selftest import PollPolicy, SelfTestOptions, Verdict, run_selftest
from tests.reliability.conftest import (
    ADMIN,
    DOMAIN,
    Person,
    app_threads,
    build_services,
    fast_retry_policy,
    listening,
)

SEED = int(os.environ.get("QARGO_SOAK_SEED", "20240611"))
OPERATIONS = int(os.environ.get("QARGO_SOAK_OPERATIONS", "250"))
# A soak that runs away (a retry loop, a wait without deadline) fails here, not in CI's limit.
WALL_CLOCK_LIMIT_S = 150.0
PHASE_LENGTH = 20
VERBOSE = bool(os.environ.get("QARGO_SOAK_VERBOSE"))

FAST_POLL = PollPolicy(
    first_delay_s=0.1, interval_s=0.15, max_interval_s=0.5, max_rate_per_s=10, burst=4
)


def retry_after_forms(rng: random.Random) -> dict[str, Callable[[], str]]:
    """Every form of ``Retry-After`` servers send, each as a header value factory."""

    def date_in(seconds: float, style: str) -> str:
        when = time.time() + seconds
        if style == "imf":
            return email.utils.formatdate(when, usegmt=True)
        stamp = time.gmtime(when)
        if style == "rfc850":
            return time.strftime("%A, %d-%b-%y %H:%M:%S GMT", stamp)
        return time.strftime("%a %b %d %H:%M:%S %Y", stamp)  # asctime

    return {
        "zero": lambda: "0",
        "one": lambda: "1",
        "padded": lambda: " 1 ",
        "fraction": lambda: "0.5",
        "imf-date": lambda: date_in(1, "imf"),
        "rfc850-date": lambda: date_in(1, "rfc850"),
        "asctime-date": lambda: date_in(1, "asctime"),
        "past-date": lambda: date_in(-3600, "imf"),
        "garbage": lambda: "soon",
        "empty": lambda: "",
        "negative": lambda: "-5",
        # Beyond any retry budget: the app must give up at once and say so, not sleep.
        "huge": lambda: str(rng.choice([3600, 86400])),
    }


@dataclass
class Tally:
    """What happened, operation by operation."""

    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    seconds: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    problems: list[str] = field(default_factory=list)
    send_posts: list[int] = field(default_factory=list)
    markers: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        self.problems.append(text)


class Soak:
    """Drives the core as the window would, one operation at a time, and checks each end."""

    def __init__(self, sandbox: Any, services: Any, person: Person, seed: int) -> None:
        self.sandbox = sandbox
        self.services = services
        self.person = person
        self.linker = MailboxLinker(services)
        self.rng = random.Random(seed)
        self.fault_rng = random.Random(seed + 1)
        self.forms = retry_after_forms(self.fault_rng)
        # Every form in every run, in a seeded order: one per phase, round and round.
        self.form_order = self.fault_rng.sample(sorted(self.forms), len(self.forms))
        self.phase = 0
        self.form_name = "one"
        self.tally = Tally()
        self.shown: dict[str, Mailbox] = {}
        self.collection_etag: str | None = None
        self.signed_in = False
        self.number = 0
        self.operation = ""

    # -- the sandbox's behaviour ------------------------------------------------------------

    def retry_after_header(self) -> str:
        return self.forms[self.form_name]()

    def new_phase(self) -> None:
        rng = self.fault_rng
        tenant = self.sandbox.world.tenant_id
        self.form_name = self.form_order[self.phase % len(self.form_order)]
        self.phase += 1
        services = ["identity", "api", "graph"]
        busy = [0.02, 0.05, 0.08]
        if self.form_name == "huge":
            # A wait beyond any budget is not waited for: the person is told at once. It
            # goes to the services the app's own clients talk to (MSAL would keep a token
            # request blocked as long as it says, up to an hour, and the soak would then
            # only measure that), often enough that the person is told several times.
            services = ["api", "graph"]
            busy = [0.1]
        self.sandbox.set_faults(
            latency_s=0.0,
            latency_jitter_s=rng.choice([0.0, 0.01, 0.03]),
            rate_limit_probability=rng.choice(busy),
            unavailable_probability=rng.choice(busy),
            drop_probability=rng.choice([0.0, 0.03, 0.05]),
            drop_phase=rng.choice(["before", "after"]),
            truncate_probability=rng.choice([0.0, 0.03, 0.05]),
            services=services,
            # Not the sign-in pages the person's browser shows: the faults sit between the
            # app and the services, as a flaky proxy or a busy service would.
            paths=[
                "/api",
                "/graph/v1.0",
                f"/{tenant}/oauth2/v2.0/token",
                f"/{tenant}/v2.0/.well-known",
                f"/{tenant}/discovery",
            ],
        )

    def faults_off(self) -> None:
        self.sandbox.world.faults.reset()

    # -- checking each end ------------------------------------------------------------------

    def failed(self, exc: BaseException) -> None:
        """An operation raised: it must be a QargoError with advice the app knows."""
        if not isinstance(exc, QargoError):
            self.tally.problem(
                f"#{self.number} {self.operation}: raw {type(exc).__name__}: {exc!r}"
            )
            return
        self.error(exc)
        if isinstance(exc, SignInRequired):
            self.signed_in = False

    def error(self, exc: QargoError) -> None:
        self.tally.errors[f"{type(exc).__name__}:{exc.key}"] += 1
        if not exc.known or not exc.advice.summary:
            self.tally.problem(
                f"#{self.number} {self.operation}: {type(exc).__name__} without known advice "
                f"(key {exc.key!r}, code {exc.code!r}): {exc}"
            )
        if not exc.explain().strip():
            self.tally.problem(f"#{self.number} {self.operation}: nothing to tell the person")

    def check_sign_in_cleaned_up(self, control: Any) -> None:
        self.person.join(15)
        if listening(control.listener_address):
            self.tally.problem(f"#{self.number} {self.operation}: listener still open")
        deadline = time.monotonic() + 2
        while app_threads() and time.monotonic() < deadline:
            time.sleep(0.02)
        if app_threads():
            self.tally.problem(f"#{self.number} {self.operation}: threads left {app_threads()}")

    def check_shown_state(self, mailbox: Mailbox | None) -> None:
        """A mailbox an operation hands back must show the state the server has."""
        if mailbox is None:
            return
        record = self.sandbox.world.api_store.get(mailbox.id)
        if record.status != mailbox.raw_status:
            self.tally.problem(
                f"#{self.number} {self.operation} shows {mailbox.address} as "
                f"{mailbox.raw_status}, the server has {record.status}"
            )

    def show(self, mailbox: Mailbox | None) -> None:
        if mailbox is not None:
            self.shown[mailbox.id] = mailbox

    # -- operations -------------------------------------------------------------------------

    def pick(self, *statuses: LinkStatus) -> Mailbox | None:
        candidates = sorted(
            (m for m in self.shown.values() if m.status in statuses), key=lambda m: m.id
        )
        return self.rng.choice(candidates) if candidates else None

    def control(self, account: str | None, action: str = "accept", deadline_s: float = 10.0):  # type: ignore[no-untyped-def]
        self.person.account = account
        self.person.action = action
        control = self.services.new_control()
        control.opener = self.person
        control.deadline_s = deadline_s
        return control

    def op_list(self) -> None:
        listing = self.services.api.list_mailboxes(page_size=self.rng.choice([5, 100]))
        assert listing is not None
        self.shown = {m.id: m for m in listing.items}
        self.collection_etag = listing.etag

    def op_refresh(self) -> None:
        if self.shown and self.rng.random() < 0.5:
            mailbox = self.rng.choice(sorted(self.shown))
            self.show(self.services.api.get_mailbox(mailbox))
            return
        listing = self.services.api.list_mailboxes(
            page_size=self.rng.choice([4, 100]), if_none_match=self.collection_etag
        )
        if listing is not None:
            self.shown = {m.id: m for m in listing.items}
            self.collection_etag = listing.etag

    def op_authorise(self) -> None:
        statuses = (
            LinkStatus.UNLINKED,
            LinkStatus.LINKED,
            LinkStatus.REAUTHORISATION_REQUIRED,
        )
        mailbox = self.pick(*statuses)
        if mailbox is None:
            self.op_list()
            return
        roll = self.rng.random()
        account, action, deadline, cancel_after = mailbox.address, "accept", 10.0, None
        if roll < 0.08:
            action = "decline"
        elif roll < 0.14:
            account = f"dispatcher@{DOMAIN}"
        elif roll < 0.20:
            action, cancel_after = "ignore", 0.3
        elif roll < 0.23:
            action, deadline = "ignore", 0.6
        store = self.sandbox.world.api_store
        attempts_before = set(store._attempts)
        control = self.control(account, action, deadline)
        timer = None
        if cancel_after is not None:
            timer = threading.Timer(cancel_after, control.cancel.set)
            timer.start()
        try:
            result = self.linker.authorise(mailbox, control)
        finally:
            if timer is not None:
                timer.cancel()
                timer.join()
            self.check_sign_in_cleaned_up(control)
        self.show(result.mailbox)
        self.check_shown_state(result.mailbox)
        ours = [
            a for key, a in store._attempts.items()
            if key not in attempts_before and a.mailbox_id == mailbox.id
        ]  # fmt: skip
        if len(ours) != 1:
            self.tally.problem(f"#{self.number} {len(ours)} attempts started for one authorise")
        elif ours[0].status != "pending" and result.ok != (ours[0].status == "completed"):
            self.tally.problem(
                f"#{self.number} the app says {result.outcome.value} ({result.error!r}), the "
                f"server says the attempt {ours[0].status}"
            )
        if result.ok:
            # None: linked, but the mailbox could not be read back (the list shows it later).
            if result.mailbox is not None and result.mailbox.status is not LinkStatus.LINKED:
                self.tally.problem(f"#{self.number} linked, but shows {result.mailbox}")
            if result.error is not None:
                self.tally.problem(f"#{self.number} linked with an error {result.error!r}")
            return
        if result.error is None:
            self.tally.problem(f"#{self.number} {result.outcome} without an error")
            return
        self.error(result.error)
        self.tally.outcomes[f"authorise:{result.outcome.value}"] += 1
        if result.outcome is LinkOutcome.LINKED:
            self.tally.problem(f"#{self.number} not ok but LINKED")

    def op_reset(self) -> None:
        mailbox = self.pick(LinkStatus.LINK_FAILED)
        if mailbox is None:
            self.op_refresh()
            return
        reset = self.linker.reset(mailbox)
        self.check_shown_state(reset)
        self.show(reset)

    def op_add(self) -> None:
        address = f"soak-{self.rng.randrange(10**6)}@{DOMAIN}"
        self.tally.added.append(address)
        self.show(self.linker.add(address, "Soak mailbox"))

    def op_selftest(self) -> None:
        mailbox = self.pick(LinkStatus.LINKED)
        if mailbox is None:
            self.op_refresh()
            return
        control = self.control(mailbox.address)
        before = self.sends()
        report = run_selftest(
            self.services,
            mailbox.address,
            options=SelfTestOptions(
                timeout_s=12,
                poll=FAST_POLL,
                http_timeout_s=5,
                probe_timeout_s=3,
                cleanup_timeout_s=5,
            ),
            control=control,
        )
        self.check_sign_in_cleaned_up(control)
        self.tally.send_posts.append(self.sends() - before)
        self.tally.markers.append(report.marker)
        self.tally.outcomes[f"selftest:{report.verdict.value}"] += 1
        if report.verdict not in (Verdict.PASS, Verdict.WARNING):
            if not report.summary or not report.advice:
                self.tally.problem(f"#{self.number} self-test {report.verdict} without advice")
            for step in report.steps:
                if step.state.value == "failed" and not (step.advice_key or step.error_code):
                    self.tally.problem(f"#{self.number} step {step.id} failed without a code")

    def op_sign_out_and_back(self) -> None:
        self.services.sign_out()
        self.signed_in = False
        self.op_sign_in()

    def op_sign_in(self) -> None:
        control = self.control(ADMIN)
        try:
            self.services.sign_in_interactive(control)
        finally:
            self.check_sign_in_cleaned_up(control)
        self.signed_in = True

    def op_revoke(self) -> None:
        # An admin or a password change revokes a grant behind the app's back.
        store = self.sandbox.world.api_store
        linked = sorted(r.address for r in store.all() if r.status == "linked")
        if self.rng.random() < 0.15 or not linked:
            self.sandbox.revoke_grant(ADMIN)
        else:
            self.sandbox.revoke_grant(self.rng.choice(linked))

    def sends(self) -> int:
        return int(
            self.sandbox.world.faults.request_count("graph", "POST", "/graph/v1.0/me/sendMail")
        )

    OPERATIONS: tuple[tuple[str, int], ...] = (
        ("list", 14),
        ("refresh", 16),
        ("authorise", 26),
        ("reset", 10),
        ("add", 3),
        ("selftest", 6),
        ("sign_out_and_back", 3),
        ("revoke", 4),
    )

    def run_one(self) -> None:
        if not self.signed_in:
            name = "sign_in"
        else:
            names = [n for n, _w in self.OPERATIONS]
            weights = [w for _n, w in self.OPERATIONS]
            name = self.rng.choices(names, weights)[0]
        self.operation = name
        started = time.monotonic()
        try:
            getattr(self, f"op_{name}")()
        except Exception as exc:
            self.failed(exc)
            self.tally.outcomes[f"{name}:error"] += 1
        else:
            self.tally.outcomes[f"{name}:ok"] += 1
        finally:
            elapsed = time.monotonic() - started
            self.tally.seconds[name] += elapsed
            if VERBOSE:
                print(f"#{self.number} {name} {elapsed:.2f} s, problems {len(self.tally.problems)}")


@pytest.mark.timeout(WALL_CLOCK_LIMIT_S + 60)
def test_fault_soak(
    sandbox_certs: Path, settings_for: Any, tmp_path: Path, unhandled: list[str]
) -> None:
    from qargo_desktop.sandbox.server import Sandbox
    from qargo_desktop.sandbox.world import SandboxOptions

    random.seed(SEED)  # the retry policy's jitter
    started = time.monotonic()
    threads_before = {t.ident for t in threading.enumerate()}
    box = Sandbox(
        SandboxOptions(
            data_dir=sandbox_certs,
            delivery_delay_s=0.2,
            sync_delay_s=0.2,
            seed=SEED,
            # MSAL refreshes an access token 5 minutes before it expires: 305 s tokens make
            # it refresh (and rotate the refresh token) every few seconds.
            token_lifetime_s=305,
        )
    )
    box.start()
    person = Person()
    services = build_services(
        box, settings_for, tmp_path / "data", retry_policy=fast_retry_policy(),
        sign_in_timeout_s=10, http_timeout_s=5,
    )  # fmt: skip
    soak = Soak(box, services, person, SEED)
    box.world.faults.retry_after_header = soak.retry_after_header  # type: ignore[method-assign]
    try:
        for number in range(OPERATIONS):
            soak.number = number
            if number % PHASE_LENGTH == 0:
                soak.new_phase()
            soak.run_one()
            assert time.monotonic() - started < WALL_CLOCK_LIMIT_S, (
                f"seed {SEED}: the soak ran out of time at operation {number}"
            )
        injected = box.world.faults.counters()["faults"]

        # The storm is over: the app must now show exactly what the server has.
        soak.faults_off()
        try:
            services.sign_in_silently()
        except QargoError:
            soak.op_sign_in()
        soak.op_list()
        store = box.world.api_store
        server = {r.id: (r.address, r.status, store.etag(r)) for r in store.all()}
        shown = {m.id: (m.address, m.raw_status, m.etag) for m in soak.shown.values()}
        report = (
            f"seed {SEED}; outcomes {dict(soak.tally.outcomes)}; errors "
            f"{dict(soak.tally.errors)}; faults {injected}; person reloads {person.reloads}, "
            f"gave up {person.gave_up}; seconds {dict(soak.tally.seconds)}"
        )
        print(report)

        assert not soak.tally.problems, "\n".join([report, *soak.tally.problems])
        assert not unhandled, unhandled
        assert shown == server, report

        # Nothing done twice.
        assert all(n <= 1 for n in soak.tally.send_posts), soak.tally.send_posts
        sent_subjects = collections.Counter(m.subject for m in box.world.mail_store.sent)
        for marker in soak.tally.markers:
            assert sum(n for s, n in sent_subjects.items() if marker in s) <= 1, marker
        addresses = [r.address for r in store.all()]
        assert len(addresses) == len(set(addresses))

        # No attempt the app started is left pending for the server to expire: what could
        # not be recorded during the storm is recorded by the app's next operation.
        assert soak.linker.record_pending() == 0
        orphans = [
            (a.id, a.mailbox_id, a.kind)
            for a in store._attempts.values()
            if a.started_by == ADMIN and a.status == "pending"
        ]
        assert not orphans, report

        # The soak really was stormy, and the app still got work done.
        assert sum(f["count"] for f in injected) >= OPERATIONS // 5, report
        ok = sum(n for k, n in soak.tally.outcomes.items() if k.endswith(":ok"))
        assert ok >= OPERATIONS // 2, report
        assert soak.tally.outcomes["authorise:ok"] >= 10, report

        # The token caches survived: they reopen from disk without complaint.
        for store_name in ("token_cache.bin", "mailbox_token_cache.bin"):
            assert (tmp_path / "data" / store_name).is_file()
        assert services.admin_identity.store.problem is None
    finally:
        person.join()
        services.session.close()
        box.stop()

    assert not app_threads()
    leftover = [
        t.name
        for t in threading.enumerate()
        if t.ident not in threads_before and t.is_alive() and not t.daemon
    ]
    assert not leftover, leftover


# -- the two losses the soak meets by chance, made to happen every time ---------------------


def _authorise(admin: Any, linker: MailboxLinker, mailbox: Mailbox, person: Person) -> Any:
    person.account = mailbox.address
    control = admin.new_control()
    control.opener = person
    result = linker.authorise(mailbox, control)
    person.join()
    return result


def _mailbox(admin: Any, status: LinkStatus) -> Mailbox:
    listing = admin.api.list_mailboxes()
    return next(m for m in listing.items if m.status is status)


def test_an_ending_the_api_did_not_hear_is_told_by_the_next_operation(
    sandbox: Any, admin: Any, person: Person
) -> None:
    mailbox = _mailbox(admin, LinkStatus.UNLINKED)
    linker = MailboxLinker(admin)
    # The person declines; recording that fails (503, come back in an hour).
    sandbox.set_faults(
        unavailable_probability=1.0, retry_after=3600, methods=["POST"],
        paths=[f"/api/v1/organisation/linked-mailboxes/{mailbox.id}/authorisations/"],
    )  # fmt: skip
    person.action = "decline"
    result = _authorise(admin, linker, mailbox, person)
    assert result.outcome is LinkOutcome.DECLINED and result.error is not None
    assert sandbox.world.api_store.get(mailbox.id).status == "authorising"

    # The service is back; the app's next operation, whatever it is, tells the API first.
    sandbox.world.faults.reset()
    other = _mailbox(admin, LinkStatus.LINK_FAILED)
    linker.reset(other)
    record = sandbox.world.api_store.get(mailbox.id)
    assert record.status == "link_failed", record.status
    assert record.last_error is not None
    assert linker.record_pending() == 0


def test_a_link_whose_answer_was_lost_is_not_reported_as_failed(
    sandbox: Any, admin: Any, person: Person
) -> None:
    mailbox = _mailbox(admin, LinkStatus.UNLINKED)
    # The API links the mailbox, and the answer is lost on the way back.
    sandbox.set_faults(
        drop_probability=1.0, drop_phase="after", max_faults=1, methods=["PUT"],
        paths=[f"/api/v1/organisation/linked-mailboxes/{mailbox.id}/authorisations/"],
    )  # fmt: skip
    result = _authorise(admin, MailboxLinker(admin), mailbox, person)
    assert sandbox.world.faults.injected_count("api", "drop") == 1
    assert result.ok, result.error
    assert sandbox.world.api_store.get(mailbox.id).status == "linked"
    assert result.mailbox is None or result.mailbox.status is LinkStatus.LINKED


@pytest.mark.parametrize("fault", ["rate_limit_probability", "unavailable_probability"])
def test_a_busy_sign_in_service_does_not_sign_the_admin_out(
    sandbox: Any, admin: Any, fault: str
) -> None:
    tenant = sandbox.world.tenant_id
    sandbox.set_faults(
        **{fault: 1.0}, retry_after=0, services=["identity"],
        paths=[f"/{tenant}/oauth2/v2.0/token"],
    )  # fmt: skip
    with pytest.raises(QargoError) as caught:
        admin.admin_token(force_refresh=True)
    # "Try again in a minute", not "sign in again": the saved sign-in is still good.
    assert not isinstance(caught.value, SignInRequired), caught.value.key
    assert caught.value.known and caught.value.advice.next_step is NextStep.RETRY_LATER

    sandbox.world.faults.reset()
    assert admin.admin_token(force_refresh=True)
    assert admin.sign_in_silently().username == ADMIN
