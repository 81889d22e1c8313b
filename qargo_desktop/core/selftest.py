"""The send/receive self-test: prove a mailbox works from this desk, and show where time goes.

One run, on the caller's thread, in six steps:

1. **preflight**: the API, sign-in and Graph addresses are reachable (DNS, TCP, TLS, HTTP,
   each timed), which proxy is in use, how far the local clock is from the servers', and
   which mailbox the address is in Qargo. Graph's HTTP layer is timed by the token step's
   request instead of one of its own: Graph sees as few requests as the test can make;
2. **token**: a Graph token for the mailbox account, silently from the mailbox cache, or
   through an interactive sign-in as that account, then checked with Graph;
3. **send**: one test message from the mailbox to itself through ``sendMail``, marked so
   it can be found and recognised. Exactly one send per run: when the send gets no answer
   the run looks for the message instead of sending it again;
4. **delivery**: the message's arrival, polled through Graph politely (the first look when a
   delivery becomes likely, then backing off, at most about one request a second,
   honouring ``Retry-After``), matched by its marker on every page whatever order Graph
   lists messages in, never mistaking a Sent Items copy for the delivered one;
5. **sync**: the moment Qargo's own sync saw it, from the organisation API;
6. **cleanup**: the test message deleted (a message already gone is fine), unless kept.

Every step is reported as it starts, progresses and ends through ``on_step``. The run
stops at once when ``cancel`` is set (the cleanup still deletes a message it found), and
at its deadline. The :class:`SelfTestReport` gives a verdict, the time of every leg from
the servers' own timestamps (the local clock corrected for the measured skew where local
and server times meet), and advice in plain words; it serialises to JSON and to text.
"""

from __future__ import annotations

import enum
import json
import logging
import platform
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from qargo_desktop import __version__
from qargo_desktop.core.api import SyncedMessage
from qargo_desktop.core.errors import (
    Advice,
    Cancelled,
    DeadlineExceeded,
    GraphError,
    IdentityError,
    NetworkError,
    NextStep,
    QargoError,
    advice_for,
)
from qargo_desktop.core.graph import (
    MAIL_SCOPES,
    GraphClient,
    GraphMessage,
    OutgoingMessage,
    ResponseInfo,
    SendUnconfirmed,
)
from qargo_desktop.core.http import cancel_scope
from qargo_desktop.core.identity import IdentityClient, InteractiveControl, TokenResult
from qargo_desktop.core.models import LinkStatus, Mailbox
from qargo_desktop.core.probe import (
    HTTP,
    ClockSkew,
    EndpointProbe,
    ProbeStep,
    http_answer_step,
    probe_all,
)
from qargo_desktop.core.services import Services

log = logging.getLogger(__name__)

#: The subject of every test message starts with this; the marker follows it.
SUBJECT_PREFIX = "[Qargo self-test]"
#: The internet message header that carries the marker.
MARKER_HEADER = "X-Qargo-Selftest"
REPORT_SCHEMA = "qargo-selftest-report/1"

# Graph's and the API's timestamps are whole seconds.
_RESOLUTION_S = 1.0
# How far before the send the arrival filter starts, beyond the clock's uncertainty. Wide
# on purpose: a wider window costs a few more listed messages, a narrower one can miss.
_FILTER_MARGIN_S = 120.0
# Without any Date header the local clock cannot be trusted at all.
_FILTER_MARGIN_UNKNOWN_CLOCK_S = 900.0
_MIN_REQUEST_TIMEOUT_S = 2.0

_T = TypeVar("_T")


class StepId(enum.Enum):
    """The steps of a run, in order."""

    PREFLIGHT = "preflight"
    TOKEN = "token"
    SEND = "send"
    DELIVERY = "delivery"
    SYNC = "sync"
    CLEANUP = "cleanup"

    @property
    def title(self) -> str:
        """What the step does, for a list of steps."""
        return _TITLES[self]


_TITLES = {
    StepId.PREFLIGHT: "Reach Qargo, Microsoft sign-in and Microsoft Graph",
    StepId.TOKEN: "Sign in as the mailbox",
    StepId.SEND: "Send a test message to the mailbox itself",
    StepId.DELIVERY: "Wait for it to arrive",
    StepId.SYNC: "Wait for Qargo's sync to see it",
    StepId.CLEANUP: "Delete the test message",
}

#: Every step, in the order they run.
STEPS: tuple[StepId, ...] = tuple(StepId)


class StepState(enum.Enum):
    """Where a step is."""

    PENDING = "pending"
    RUNNING = "running"
    PASSED = "passed"
    WARNING = "warning"
    FAILED = "failed"
    SKIPPED = "skipped"

    @property
    def finished(self) -> bool:
        """Whether the step has ended."""
        return self not in (StepState.PENDING, StepState.RUNNING)


class Verdict(enum.Enum):
    """The outcome of a run."""

    PASS = "pass"
    WARNING = "warning"
    FAIL = "fail"
    COULD_NOT_RUN = "could_not_run"
    CANCELLED = "cancelled"

    @property
    def label(self) -> str:
        """The verdict in words."""
        return {
            Verdict.PASS: "Passed",
            Verdict.WARNING: "Passed with warnings",
            Verdict.FAIL: "Failed",
            Verdict.COULD_NOT_RUN: "Could not run",
            Verdict.CANCELLED: "Cancelled",
        }[self]


@dataclass(frozen=True, slots=True)
class StepReport:
    """One step's state, as ``on_step`` sees it and as the report keeps it.

    Attributes:
        id: Which step.
        state: Where it is.
        elapsed_s: Time since the step started.
        message: What is happening or what happened, in words.
        advice_key: The :data:`~qargo_desktop.core.errors.ADVICE` key of a finding.
        error_code: The service's code when a service refused (``ErrorAccessDenied``).
        correlation_id: The service's request id, for support.
        detail: Extra facts for the report (JSON-ready).
    """

    id: StepId
    state: StepState
    elapsed_s: float
    message: str
    advice_key: str | None = None
    error_code: str | None = None
    correlation_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def title(self) -> str:
        """What the step does."""
        return self.id.title

    @property
    def advice(self) -> Advice | None:
        """The advice for this step's finding, if it has one."""
        return advice_for(self.advice_key) if self.advice_key else None

    def to_json(self) -> dict[str, Any]:
        """The step as JSON-ready values."""
        return {
            "id": self.id.value,
            "title": self.title,
            "state": self.state.value,
            "elapsed_s": round(self.elapsed_s, 3),
            "message": self.message,
            "advice_key": self.advice_key,
            "error_code": self.error_code,
            "correlation_id": self.correlation_id,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When a leg counts as slow (a warning) or failed.

    Attributes:
        submission_warn_s: ``sendMail`` itself took longer than this.
        delivery_warn_s: The message took longer than this to arrive.
        delivery_fail_s: Stop waiting for it after this long (``None``: the deadline).
        sync_warn_s: Qargo's sync saw it more than this long after it arrived.
        sync_fail_s: Stop waiting for the sync after this long (``None``: the deadline).
        skew_warn_s: The local clock is further than this from the servers'.
    """

    submission_warn_s: float = 10.0
    delivery_warn_s: float = 30.0
    delivery_fail_s: float | None = None
    sync_warn_s: float = 60.0
    sync_fail_s: float | None = None
    skew_warn_s: float = 120.0

    def to_json(self) -> dict[str, Any]:
        """The thresholds as JSON-ready values."""
        return {
            "submission_warn_s": self.submission_warn_s,
            "delivery_warn_s": self.delivery_warn_s,
            "delivery_fail_s": self.delivery_fail_s,
            "sync_warn_s": self.sync_warn_s,
            "sync_fail_s": self.sync_fail_s,
            "skew_warn_s": self.skew_warn_s,
        }


@dataclass(frozen=True, slots=True)
class PollPolicy:
    """How politely to poll.

    Attributes:
        first_delay_s: Wait before the first look for the message after sending it.
            Exchange Online takes a second or more to deliver a message, even to the
            mailbox that sent it: an earlier look would be a request spent for nothing.
        interval_s: Wait between the first and second looks (never shorter than the first
            wait: waits only grow).
        backoff: Each later wait is this much longer than the one before...
        max_interval_s: ...up to this.
        max_rate_per_s: At most this many requests a second on average (every page and
            every retry counts)...
        burst: ...with at most this many in a quick burst.
    """

    first_delay_s: float = 1.5
    interval_s: float = 1.0
    backoff: float = 1.5
    max_interval_s: float = 10.0
    max_rate_per_s: float = 1.0
    burst: int = 2

    def intervals(self) -> Iterator[float]:
        """The waits between looks: the first delay, then growing ones."""
        yield self.first_delay_s
        interval = min(self.max_interval_s, max(self.interval_s, self.first_delay_s))
        while True:
            yield interval
            interval = min(self.max_interval_s, interval * self.backoff)


@dataclass(frozen=True)
class SelfTestOptions:
    """How to run the test.

    Attributes:
        keep: Leave the test message in the mailbox.
        timeout_s: The deadline of the whole run. Time a person spends in an interactive
            sign-in does not count against it (the sign-in has its own deadline).
        thresholds: When a leg is slow or failed.
        poll: How politely to poll.
        interactive: Whether an interactive sign-in may be started when the cache has no
            token for the mailbox.
        http_timeout_s: Timeout of each request (shortened near the deadline).
        probe_timeout_s: Timeout of each preflight layer.
        cleanup_timeout_s: Timeout of the delete, which runs even after a cancel.
        clock: The local wall clock (tests replace it to simulate a skewed clock).
    """

    keep: bool = False
    timeout_s: float = 180.0
    thresholds: Thresholds = field(default_factory=Thresholds)
    poll: PollPolicy = field(default_factory=PollPolicy)
    interactive: bool = True
    http_timeout_s: float = 30.0
    probe_timeout_s: float = 10.0
    cleanup_timeout_s: float = 10.0
    clock: Callable[[], float] = time.time


@dataclass(frozen=True, slots=True)
class Leg:
    """One leg of the message's journey, for the timeline chart.

    Attributes:
        name: ``submission``, ``delivery`` or ``sync``.
        start_s: When it started, in seconds after the send request went out (server time).
        duration_s: How long it took (``None`` when it never ended).
        state: How the leg went.
    """

    name: str
    start_s: float | None
    duration_s: float | None
    state: StepState

    def to_json(self) -> dict[str, Any]:
        """The leg as JSON-ready values."""
        return {
            "name": self.name,
            "start_s": _round(self.start_s),
            "duration_s": _round(self.duration_s),
            "state": self.state.value,
        }


@dataclass(frozen=True, slots=True)
class Timings:
    """Where the time went.

    The servers stamp times to the whole second. Each instant is therefore known as an
    interval: the server's stamp, narrowed by what this app saw (the send request's own
    duration, the listing that first showed the message), converted to the servers' clock
    with the measured skew. Each leg is the best estimate with how far off it may be.
    Where the app's observations disagree with the servers' stamps (a clock that jumped),
    the servers' stamps alone are used.

    Attributes:
        submission_s: How long ``sendMail`` took to accept the message (measured here).
        delivery_s: Sent to received in the mailbox.
        delivery_uncertainty_s: Plus or minus this.
        sync_s: Received to seen by Qargo's sync.
        sync_uncertainty_s: Plus or minus this.
        end_to_end_s: Sent to seen by Qargo's sync.
        end_to_end_uncertainty_s: Plus or minus this.
        observed_delivery_s: Send request to the listing that first showed the message,
            by this app's clock (includes the polling interval).
        observed_sync_s: That listing to the answer that first showed the sync (includes
            polling).
        submitted_at: When the send request went out (local clock corrected to server time).
        sent_at: ``sentDateTime``.
        received_at: ``receivedDateTime``.
        synced_at: When Qargo's sync saw it.
    """

    submission_s: float | None = None
    delivery_s: float | None = None
    delivery_uncertainty_s: float | None = None
    sync_s: float | None = None
    sync_uncertainty_s: float | None = None
    end_to_end_s: float | None = None
    end_to_end_uncertainty_s: float | None = None
    observed_delivery_s: float | None = None
    observed_sync_s: float | None = None
    submitted_at: datetime | None = None
    sent_at: datetime | None = None
    received_at: datetime | None = None
    synced_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        """The timings as JSON-ready values."""
        return {
            "submission_s": _round(self.submission_s),
            "delivery_s": _round(self.delivery_s),
            "delivery_uncertainty_s": _round(self.delivery_uncertainty_s),
            "sync_s": _round(self.sync_s),
            "sync_uncertainty_s": _round(self.sync_uncertainty_s),
            "end_to_end_s": _round(self.end_to_end_s),
            "end_to_end_uncertainty_s": _round(self.end_to_end_uncertainty_s),
            "observed_delivery_s": _round(self.observed_delivery_s),
            "observed_sync_s": _round(self.observed_sync_s),
            "submitted_at": _iso(self.submitted_at),
            "sent_at": _iso(self.sent_at),
            "received_at": _iso(self.received_at),
            "synced_at": _iso(self.synced_at),
        }


@dataclass(frozen=True, slots=True)
class _When:
    """An instant on the servers' clock, known to lie between ``lo`` and ``hi``."""

    lo: float
    hi: float

    @classmethod
    def stamped(cls, value: datetime) -> _When:
        """A server's whole-second stamp: the instant is within the second after it."""
        start = value.timestamp()
        return cls(start, start + _RESOLUTION_S)

    @property
    def mid(self) -> float:
        return (self.lo + self.hi) / 2

    def narrowed(self, lo: float | None = None, hi: float | None = None) -> _When:
        """Narrowed by an observation; unchanged if the observation disagrees."""
        new_lo = self.lo if lo is None else max(self.lo, lo)
        new_hi = self.hi if hi is None else min(self.hi, hi)
        return _When(new_lo, new_hi) if new_lo <= new_hi else self


def _between(start: _When | None, end: _When | None) -> tuple[float | None, float | None]:
    """The time from ``start`` to ``end``: best estimate and plus-or-minus."""
    if start is None or end is None:
        return None, None
    low = max(0.0, end.lo - start.hi)
    high = max(0.0, end.hi - start.lo)
    return (low + high) / 2, (high - low) / 2


@dataclass(frozen=True)
class SelfTestReport:
    """Everything a run found, for a person, a script and Qargo Support.

    Attributes:
        address: The mailbox tested.
        verdict: The outcome.
        summary: One sentence that says it.
        next_step: The single most useful thing to do next.
        advice: What to do, in plain sentences, most important first.
        steps: The last state of every step, in order.
        timings: Where the time went.
        legs: The legs for a timeline chart.
        clock_skew_s: Server clocks minus the local clock (``None`` if not measured).
        clock_skew_uncertainty_s: How far off that may be.
        probes: The preflight probes.
        proxy: The proxy in use (password masked), or ``None``.
        mailbox_id: The mailbox's id in Qargo.
        mailbox_status: Its link status when the test ran.
        marker: The unique marker of the test message.
        subject: Its subject.
        internet_message_id: Its ``internetMessageId``, once known.
        signed_in_how: ``silent`` or ``interactive``.
        kept: Whether the test message was left in the mailbox.
        correlation_ids: Request ids of the key requests, for support.
        thresholds: The thresholds applied.
        started_at: When the run started (local clock).
        duration_s: How long it took.
        app_version: This app's version.
        machine: This computer's name.
    """

    address: str
    verdict: Verdict
    summary: str
    next_step: NextStep
    advice: tuple[str, ...]
    steps: tuple[StepReport, ...]
    timings: Timings
    legs: tuple[Leg, ...]
    clock_skew_s: float | None
    clock_skew_uncertainty_s: float | None
    probes: tuple[EndpointProbe, ...]
    proxy: str | None
    mailbox_id: str | None
    mailbox_status: str | None
    marker: str
    subject: str
    internet_message_id: str | None
    signed_in_how: str | None
    kept: bool
    correlation_ids: dict[str, str]
    thresholds: Thresholds
    started_at: datetime
    duration_s: float
    app_version: str = __version__
    machine: str = field(default_factory=platform.node)

    def step(self, step_id: StepId) -> StepReport:
        """The final state of one step."""
        return next(s for s in self.steps if s.id is step_id)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values."""
        return {
            "schema": REPORT_SCHEMA,
            "address": self.address,
            "verdict": self.verdict.value,
            "summary": self.summary,
            "next_step": self.next_step.value,
            "advice": list(self.advice),
            "steps": [s.to_json() for s in self.steps],
            "timings": self.timings.to_json(),
            "legs": [leg.to_json() for leg in self.legs],
            "clock": {
                "skew_s": _round(self.clock_skew_s),
                "uncertainty_s": _round(self.clock_skew_uncertainty_s),
            },
            "proxy": self.proxy,
            "probes": [p.to_json() for p in self.probes],
            "mailbox": {"id": self.mailbox_id, "status": self.mailbox_status},
            "message": {
                "marker": self.marker,
                "subject": self.subject,
                "internet_message_id": self.internet_message_id,
                "kept": self.kept,
            },
            "signed_in": self.signed_in_how,
            "correlation_ids": dict(self.correlation_ids),
            "thresholds": self.thresholds.to_json(),
            "started_at": _iso(self.started_at),
            "duration_s": round(self.duration_s, 3),
            "app_version": self.app_version,
            "machine": self.machine,
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        """The report as JSON text."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    def to_text(self) -> str:
        """The report as readable text, for a support ticket or the clipboard."""
        lines = [
            f"Qargo mailbox self-test: {self.verdict.label.upper()}",
            f"Mailbox:   {self.address}"
            + (f" (status {self.mailbox_status})" if self.mailbox_status else ""),
            f"Started:   {_iso(self.started_at)}, took {self.duration_s:.1f} s",
            f"Summary:   {self.summary}",
            "",
            "Steps",
        ]
        for step in self.steps:
            lines.append(
                f"  [{step.state.value:^7}] {step.id.value:<9} {_seconds(step.elapsed_s):>7}  "
                f"{step.message}"
            )
            if step.error_code or step.correlation_id:
                ids = [f"code {step.error_code}"] if step.error_code else []
                if step.correlation_id:
                    ids.append(f"request id {step.correlation_id}")
                lines.append(f"{'':22}({'; '.join(ids)})")

        t = self.timings
        lines += ["", "Timings"]
        lines.append(f"  Submission  {_seconds(t.submission_s):>16}  sendMail accepted the message")
        lines.append(
            f"  Delivery    {_plus_minus(t.delivery_s, t.delivery_uncertainty_s):>16}  "
            "sent to received in the mailbox"
        )
        lines.append(
            f"  Sync        {_plus_minus(t.sync_s, t.sync_uncertainty_s):>16}  "
            "received to seen by Qargo's sync"
        )
        lines.append(
            f"  End to end  {_plus_minus(t.end_to_end_s, t.end_to_end_uncertainty_s):>16}  "
            "sent to seen by Qargo's sync"
        )
        if t.observed_delivery_s is not None:
            seen = f"  Seen here: the message {_seconds(t.observed_delivery_s)} after sending"
            if t.observed_sync_s is not None:
                seen += f", the sync {_seconds(t.observed_sync_s)} after that"
            lines.append(seen + " (polling included)")
        lines.append(
            "  (from the servers' whole-second timestamps, narrowed by what this computer "
            "saw, on the servers' clock)"
        )

        lines += ["", "Clock and network"]
        if self.clock_skew_s is None:
            lines.append("  Clock: not measured (no server answered with a Date header)")
        else:
            lines.append(
                f"  Clock: {_skew_words(self.clock_skew_s, self.clock_skew_uncertainty_s)}"
            )
        lines.append(f"  Proxy: {self.proxy or 'none (direct connection)'}")
        for probe in self.probes:
            lines.append(f"  {probe.name:<9} {probe.url}")
            lines.append(f"            {probe.summary()}")
            if probe.tls is not None:
                lines.append(
                    f"            {probe.tls.version}, certificate issued by {probe.tls.issuer}"
                )

        lines += ["", "Test message"]
        lines.append(f"  Subject: {self.subject}")
        if self.internet_message_id:
            lines.append(f"  Internet message id: {self.internet_message_id}")
        lines.append(f"  {'Kept in the mailbox' if self.kept else 'Deleted after the test'}")
        if self.correlation_ids:
            lines += ["", "Request ids (for support)"]
            for name, value in self.correlation_ids.items():
                lines.append(f"  {name}: {value}")

        lines += ["", "What to do"]
        lines += [f"  - {line}" for line in self.advice] or ["  Nothing: all is well."]
        lines += ["", f"qargo-desktop {self.app_version} on {self.machine}"]
        return "\n".join(lines) + "\n"


StepCallback = Callable[[StepReport], None]


class _Stop(Exception):
    """Ends the run early (the step that raised it has reported why)."""


class _CancelledRun(Exception):
    """The person cancelled."""


class _Pacer:
    """Spaces requests out: a token bucket, plus holds the servers ask for (Retry-After)."""

    def __init__(self, policy: PollPolicy, cancel: threading.Event) -> None:
        self._rate = max(policy.max_rate_per_s, 0.01)
        self._capacity = max(1.0, float(policy.burst))
        self._tokens = self._capacity
        self._updated = time.monotonic()
        self._hold_until = 0.0
        self._cancel = cancel
        #: How many requests it let through.
        self.granted = 0

    def hold(self, seconds: float) -> None:
        """Send nothing for ``seconds`` (a server's Retry-After)."""
        self._hold_until = max(self._hold_until, time.monotonic() + seconds)

    def wait_turn(self, deadline: float) -> bool:
        """Wait until a request may go out; False if that would be past ``deadline``."""
        while True:
            now = time.monotonic()
            self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self._rate)
            self._updated = now
            wait = max(self._hold_until - now, (1.0 - self._tokens) / self._rate, 0.0)
            if wait <= 0:
                self._tokens -= 1.0
                self.granted += 1
                return True
            if now + wait > deadline:
                return False
            if self._cancel.wait(wait):
                raise _CancelledRun()


@dataclass
class _Found:
    message: GraphMessage
    seen_mono: float
    seen_local: float  # local wall clock when the listing that showed it was answered


class SelfTest:
    """One run of the self-test against one mailbox.

    Args:
        services: The signed-in admin's services (API, identity, session, endpoints).
        address: The mailbox to test.
        options: How to run it.
        on_step: Called (on the running thread) whenever a step starts, progresses or ends.
        cancel: Set it from any thread to stop the run; also cancels an interactive sign-in.
        control: The handle of an interactive sign-in as the mailbox, if one is needed
            (its ``cancel`` is replaced by ``cancel``). ``None`` makes one with the
            services' sign-in deadline.
    """

    def __init__(
        self,
        services: Services,
        address: str,
        *,
        options: SelfTestOptions | None = None,
        on_step: StepCallback | None = None,
        cancel: threading.Event | None = None,
        control: InteractiveControl | None = None,
    ) -> None:
        self._services = services
        self.address = address.strip()
        self.options = options or SelfTestOptions()
        self._on_step = on_step
        self.cancel = cancel or (control.cancel if control is not None else threading.Event())
        self._control = control
        if control is not None:
            control.cancel = self.cancel
        self._clock = self.options.clock
        self._skew = ClockSkew()
        self._steps: dict[StepId, StepReport] = {
            step: StepReport(step, StepState.PENDING, 0.0, "Not started") for step in STEPS
        }
        self._probes: tuple[EndpointProbe, ...] = ()
        self._proxy: str | None = None
        self._mailbox: Mailbox | None = None
        self._graph: GraphClient | None = None
        self._identity: IdentityClient | None = None
        self._signed_in_how: str | None = None
        self._sent_items_id: str | None = None
        self._sent_items_asked = False
        self._send_info: ResponseInfo | None = None
        self._send_unconfirmed = False
        self._send_local: tuple[float, float] | None = None  # wall clock around sendMail
        self._send_mono: float | None = None
        self._found: _Found | None = None
        self._synced: SyncedMessage | None = None
        self._synced_seen_mono: float | None = None
        self._synced_seen_local: float | None = None
        self._last_answer_local = 0.0
        self._correlation: dict[str, str] = {}
        self.marker = str(uuid.uuid4())
        self.subject = f"{SUBJECT_PREFIX} {self.marker}"
        self._started_mono = 0.0
        self._deadline = 0.0

    # -- running ----------------------------------------------------------------------------

    def run(self) -> SelfTestReport:
        """Run every step and return the report. Never raises for a service's failure."""
        self._started_mono = time.monotonic()
        self._deadline = self._started_mono + self.options.timeout_s
        started_at = datetime.fromtimestamp(self._clock(), tz=UTC)
        log.info("Self-test of %s started (marker %s)", self.address, self.marker)
        cancelled = False
        try:
            with cancel_scope(self.cancel):
                self._preflight()
                self._token()
                self._send()
                self._delivery()
                self._sync()
        except _Stop:
            pass
        except _CancelledRun:
            cancelled = True
        finally:
            # A fresh scope: the cleanup runs even after a cancel, within its own timeout.
            with cancel_scope(threading.Event()):
                self._cleanup()
        report = self._report(started_at, cancelled)
        log.info(
            "Self-test of %s ended: %s in %.1f s",
            self.address,
            report.verdict.value,
            report.duration_s,
        )
        return report

    # -- step bookkeeping --------------------------------------------------------------------

    @contextmanager
    def _step(self, step_id: StepId, message: str) -> Iterator[_StepHandle]:
        handle = _StepHandle(self, step_id)
        handle.update(StepState.RUNNING, message)
        try:
            yield handle
        except (Cancelled, _CancelledRun):
            handle.update(StepState.SKIPPED, "Cancelled")
            self._skip_rest(step_id, "Not run: cancelled")
            raise _CancelledRun() from None
        except _Stop:
            self._skip_rest(step_id, "Not run")
            raise
        except QargoError as exc:
            if self.cancel.is_set():
                handle.update(StepState.SKIPPED, "Cancelled")
                self._skip_rest(step_id, "Not run: cancelled")
                raise _CancelledRun() from None
            # Anything a step did not expect still ends the run with a report, not a crash.
            handle.fail(exc, exc.explain())
            self._skip_rest(step_id, "Not run")
            raise _Stop() from None
        if not self._steps[step_id].state.finished:
            handle.update(StepState.PASSED, self._steps[step_id].message)

    def _emit(self, report: StepReport) -> None:
        self._steps[report.id] = report
        if self._on_step is not None:
            try:
                self._on_step(report)
            except Exception:
                # A broken progress display must not end a test that sent mail.
                log.exception("The self-test progress callback failed")

    def _skip_rest(self, after: StepId, message: str) -> None:
        index = STEPS.index(after)
        for step in STEPS[index + 1 :]:
            if step is StepId.CLEANUP:
                continue  # the cleanup always runs and reports for itself
            if not self._steps[step].state.finished:
                self._emit(StepReport(step, StepState.SKIPPED, 0.0, message))

    def _remaining(self) -> float:
        return self._deadline - time.monotonic()

    def _timeout(self) -> float:
        return max(_MIN_REQUEST_TIMEOUT_S, min(self.options.http_timeout_s, self._remaining()))

    def _check_cancel(self) -> None:
        if self.cancel.is_set():
            raise _CancelledRun()

    def _sample(self, info: ResponseInfo | None, before: float, after: float) -> None:
        if info is not None:
            self._skew.add(info.server_date, before, after)

    # -- 1. preflight ----------------------------------------------------------------------

    def _preflight(self) -> None:
        endpoints = self._services.endpoints
        with self._step(StepId.PREFLIGHT, "Checking the services can be reached") as step:
            targets = [
                ("api", endpoints.api_base_url, f"{endpoints.api_base_url.rstrip('/')}/v1/me"),
                (
                    "identity",
                    endpoints.authority,
                    f"{endpoints.authority.rstrip('/')}/v2.0/.well-known/openid-configuration",
                ),
                ("graph", endpoints.graph_base_url, f"{endpoints.graph_base_url.rstrip('/')}/me"),
            ]

            def on_probe(probe: EndpointProbe) -> None:
                state = "reachable" if probe.ok else "NOT reachable"
                step.update(StepState.RUNNING, f"{_SERVICE_NAMES[probe.name]} {state}")

            probes = probe_all(
                targets,
                self._services.session,
                timeout_s=min(self.options.probe_timeout_s, max(1.0, self._remaining())),
                cancel=self.cancel,
                clock=self._clock,
                on_probe=on_probe,
                # The token step's own request to Graph shows its HTTP layer (and its clock).
                skip_http=("graph",),
            )
            self._check_cancel()
            self._probes = tuple(probes)
            self._proxy = next((p.proxy for p in probes if p.proxy), None)
            for probe in probes:
                if probe.local_before is not None and probe.local_after is not None:
                    self._skew.add(probe.server_date, probe.local_before, probe.local_after)
            detail: dict[str, Any] = {"probes": [p.to_json() for p in probes]}
            failed = [p for p in probes if not p.ok]
            if failed:
                probe = failed[0]
                broken = probe.failed_step
                step.update(
                    StepState.FAILED,
                    _unreachable(probe.name, broken),
                    advice_key=broken.error_key if broken else "net:connection",
                    detail=detail,
                )
                raise _Stop()

            step.update(StepState.RUNNING, "Finding the mailbox in Qargo")
            try:
                self._mailbox = self._find_mailbox()
            except QargoError as exc:
                if self.cancel.is_set():
                    raise
                step.fail(exc, f"The mailbox could not be looked up in Qargo: {exc.explain()}")
                raise _Stop() from None

            words = [
                "Qargo, Microsoft sign-in and Graph reachable",
                f"proxy: {self._proxy or 'none'}",
            ]
            estimate = self._skew.estimate()
            state = StepState.PASSED
            advice_key = None
            if estimate is not None:
                words.append("clock " + _skew_words(*estimate))
                if abs(estimate[0]) > self.options.thresholds.skew_warn_s:
                    state, advice_key = StepState.WARNING, "selftest:clock_skew"
            words.append(f"mailbox status: {self._mailbox.raw_status}")
            detail["mailbox_status"] = self._mailbox.raw_status
            step.update(state, "; ".join(words), advice_key=advice_key, detail=detail)

    def _find_mailbox(self) -> Mailbox:
        from qargo_desktop.core.linking import MailboxLinker

        return MailboxLinker(self._services).find(self.address)

    # -- 2. token -------------------------------------------------------------------------

    def _token(self) -> None:
        with self._step(StepId.TOKEN, "Looking for a saved sign-in of the mailbox") as step:
            try:
                identity = self._services.mailbox_identity()
            except QargoError as exc:
                if self.cancel.is_set():
                    raise
                step.fail(exc, f"The mailbox sign-in could not be prepared: {exc.explain()}")
                raise _Stop() from None
            self._identity = identity

            token = self._silent_token(identity, step)
            self._check_cancel()

            if token is not None:
                self._signed_in_how = "silent"
            elif not self.options.interactive:
                step.update(
                    StepState.FAILED,
                    "No saved sign-in for the mailbox on this computer",
                    advice_key="selftest:no_saved_sign_in",
                )
                raise _Stop()
            else:
                token = self._interactive(identity, step)
                self._signed_in_how = "interactive"

            # A silent token comes from the cached account chosen by its username; an
            # interactive one from whoever signed in, which must be the mailbox.
            signed_in = token.username or self.address
            if signed_in.casefold() != self.address.casefold():
                step.update(
                    StepState.FAILED,
                    f"The browser signed in {token.username or 'another account'}, not "
                    f"{self.address}",
                    advice_key="app:wrong_account",
                )
                identity.sign_out(token.username)
                raise _Stop()

            self._graph = GraphClient(
                self._services.endpoints.graph_base_url,
                self._services.session,
                self._graph_token,
                timeout=self.options.http_timeout_s,
            )
            self._check_graph_access(step, self._graph, signed_in)

    def _check_graph_access(self, step: _StepHandle, graph: GraphClient, signed_in: str) -> None:
        """Ask Graph who the token belongs to: proves the token works before any send.

        The run's first request to Graph: it also stands for the HTTP layer of Graph's probe,
        which the preflight left out.
        """
        step.update(StepState.RUNNING, "Checking the mailbox's access to Microsoft Graph")
        before = self._clock()
        started = time.monotonic()
        try:
            user, info = graph.me_with_info(cancel=self.cancel, timeout=self._timeout())
        except IdentityError as exc:
            # Graph refused the cached token and the refresh was refused too.
            if _grant_refused(exc):
                self._refused(step, exc)
            step.fail(exc, f"The mailbox's sign-in could not be renewed: {exc.explain()}")
            raise _Stop() from None
        except QargoError as exc:
            if self.cancel.is_set():
                raise
            # An answer, or none at all, is what the probe's own HTTP request would have seen.
            http: ProbeStep | None = None
            if isinstance(exc, GraphError):
                http = http_answer_step(exc.status, time.monotonic() - started)
                self._graph_http(http, status=exc.status)
            elif isinstance(exc, NetworkError):
                http = ProbeStep(
                    HTTP, False, time.monotonic() - started, str(exc), exc.key or "net:connection"
                )
                self._graph_http(http, status=None)
            if http is not None and not http.ok:
                step.update(
                    StepState.FAILED,
                    _unreachable("graph", http),
                    advice_key=http.error_key,
                    error_code=exc.code,
                    correlation_id=exc.correlation_id,
                )
            else:
                step.fail(exc, f"Microsoft Graph refused the mailbox's sign-in: {exc.explain()}")
            raise _Stop() from None
        after = self._clock()
        self._sample(info, before, after)
        self._graph_http(
            http_answer_step(info.status, info.elapsed_s),
            status=info.status,
            server_date=info.server_date,
            local_before=before,
            local_after=after,
        )
        self._check_cancel()
        how = "from the saved sign-in" if self._signed_in_how == "silent" else "in the browser"
        # An alias of the account is fine (mail to it lands in the same mailbox), so a
        # different name here is reported, not refused.
        graph_name = user.user_principal_name or user.mail or user.display_name
        step.update(
            StepState.PASSED,
            f"Signed in as {signed_in} {how}; Graph knows it as {graph_name}",
            detail={"signed_in": self._signed_in_how, "graph_user": graph_name},
        )

    def _graph_http(
        self,
        http: ProbeStep,
        *,
        status: int | None,
        server_date: datetime | None = None,
        local_before: float | None = None,
        local_after: float | None = None,
    ) -> None:
        """Complete Graph's preflight probe with the HTTP layer the token check showed."""
        self._probes = tuple(
            probe.with_http(
                http,
                status=status,
                server_date=server_date,
                local_before=local_before,
                local_after=local_after,
            )
            if probe.name == "graph"
            else probe
            for probe in self._probes
        )

    def _silent_token(self, identity: IdentityClient, step: _StepHandle) -> TokenResult | None:
        """The mailbox's token from the cache; None when a person must sign in."""
        try:
            return identity.acquire_silent(MAIL_SCOPES, username=self.address)
        except IdentityError as exc:
            if _grant_refused(exc):
                self._refused(step, exc)
            if not self.options.interactive:
                step.fail(exc, f"The saved sign-in needs a person: {exc.explain()}")
                raise _Stop() from None
            log.info("Silent sign-in of %s needs interaction (%s)", self.address, exc.code)
            return None
        except QargoError as exc:
            if self.cancel.is_set():
                raise
            step.fail(exc, f"The saved sign-in could not be used: {exc.explain()}")
            raise _Stop() from None

    @staticmethod
    def _refused(step: _StepHandle, exc: IdentityError) -> NoReturn:
        # Revoked or expired: the person must reauthorise the mailbox, which also repairs
        # Qargo's own link (signing in again here alone would not).
        step.update(
            StepState.FAILED,
            f"Microsoft refused the mailbox's saved sign-in ({exc.code})",
            advice_key="selftest:grant_refused",
            error_code=exc.code,
            correlation_id=exc.correlation_id,
        )
        raise _Stop()

    def _interactive(self, identity: IdentityClient, step: _StepHandle) -> TokenResult:
        control = self._control or self._services.new_control()
        control.cancel = self.cancel
        step.update(
            StepState.RUNNING,
            f"Waiting for a sign-in as {self.address} in the browser "
            f"(up to {control.deadline_s:.0f} s)",
        )
        started = time.monotonic()
        try:
            token = identity.acquire_interactive(
                MAIL_SCOPES, control, login_hint=self.address, prompt="select_account"
            )
        except (Cancelled, _CancelledRun):
            raise
        except DeadlineExceeded as exc:
            step.fail(exc, "The sign-in in the browser was not completed in time")
            raise _Stop() from None
        except QargoError as exc:
            if self.cancel.is_set():
                raise Cancelled() from None
            step.fail(exc, f"The sign-in as the mailbox failed: {exc.explain()}")
            raise _Stop() from None
        finally:
            # A person's time in the browser is not the services' time.
            self._deadline += time.monotonic() - started
        return token

    def _graph_token(self, *, force_refresh: bool = False) -> str:
        assert self._identity is not None
        result = self._identity.acquire_silent(
            MAIL_SCOPES, username=self.address, force_refresh=force_refresh
        )
        if result is None:
            raise QargoError("the mailbox's sign-in is gone", key="selftest:no_saved_sign_in")
        return result.access_token

    # -- 3. send --------------------------------------------------------------------------

    def _send(self) -> None:
        graph = self._graph
        assert graph is not None
        with self._step(StepId.SEND, "Sending the test message") as step:
            fate = "It is kept, as asked." if self.options.keep else "It is deleted automatically."
            message = OutgoingMessage(
                subject=self.subject,
                body=(
                    "This message was sent by the Qargo Desktop self-test to check that this "
                    f"mailbox sends and receives mail, and that Qargo sees it. {fate}\n\n"
                    f"Test marker: {self.marker}\n"
                ),
                to=(self.address,),
                headers=((MARKER_HEADER, self.marker),),
            )
            before = self._clock()
            self._send_mono = time.monotonic()
            try:
                info = graph.send_mail(
                    message, save_to_sent_items=False, cancel=self.cancel, timeout=self._timeout()
                )
            except SendUnconfirmed as exc:
                after = self._clock()
                self._send_local = (before, after)
                self._correlation["sendMail client-request-id"] = exc.client_request_id
                if not exc.maybe_sent:
                    step.fail(exc, f"The test message could not be sent: {exc.explain()}")
                    raise _Stop() from None
                self._send_unconfirmed = True
                step.update(
                    StepState.WARNING,
                    "The send request got no answer; looking for the message instead of "
                    "sending it again",
                    advice_key="selftest:send_unconfirmed",
                    error_code=exc.code,
                )
                return
            except GraphError as exc:
                step.fail(
                    exc,
                    f"Microsoft Graph refused to send the test message ({exc.code}): "
                    f"{exc.advice.summary}",
                )
                raise _Stop() from None
            after = self._clock()
            self._send_local = (before, after)
            self._send_info = info
            self._sample(info, before, after)
            if info.request_id:
                self._correlation["sendMail request-id"] = info.request_id
            self._correlation["sendMail client-request-id"] = info.client_request_id
            slow = info.elapsed_s > self.options.thresholds.submission_warn_s
            step.update(
                StepState.WARNING if slow else StepState.PASSED,
                f"Microsoft Graph accepted the test message in {_seconds(info.elapsed_s)} "
                f"({info.status})"
                + (
                    f", slower than {_seconds(self.options.thresholds.submission_warn_s)}"
                    if slow
                    else ""
                ),
                advice_key="selftest:submission_slow" if slow else None,
                correlation_id=info.request_id,
                detail={"status": info.status},
            )

    # -- polling ----------------------------------------------------------------------------

    def _poll(
        self,
        step: _StepHandle,
        look: Callable[[_Pacer, float], _T | None],
        *,
        first_delay_s: float,
        deadline: float,
        waiting: str,
    ) -> tuple[_T | None, _PollStats]:
        """Call ``look`` politely until it finds something or ``deadline`` passes.

        Waits grow from ``first_delay_s`` as the poll policy says; ``look`` asks the pacer
        before each request. Throttling, outages and network errors are waited out
        (``Retry-After`` first); a refusal (any other 4xx) raises :class:`_PollRefused`.
        """
        stats = _PollStats()
        pacer = _Pacer(self.options.poll, self.cancel)
        policy = replace(self.options.poll, first_delay_s=first_delay_s)
        try:
            for interval in policy.intervals():
                wake = time.monotonic() + interval
                if wake > deadline:
                    break
                if self.cancel.wait(max(0.0, wake - time.monotonic())):
                    raise _CancelledRun()
                stats.looks += 1
                try:
                    found = look(pacer, deadline)
                except _OutOfTime:
                    break
                except QargoError as exc:
                    if self.cancel.is_set():
                        raise _CancelledRun() from None
                    self._polling_error(exc, stats, pacer)
                    continue
                if found is not None:
                    return found, stats
                times = "time" if stats.looks == 1 else "times"
                step.update(StepState.RUNNING, f"{waiting} (looked {stats.looks} {times})")
            return None, stats
        finally:
            stats.requests = pacer.granted

    @staticmethod
    def _polling_error(exc: QargoError, stats: _PollStats, pacer: _Pacer) -> None:
        stats.last_error = exc
        status = getattr(exc, "status", None)
        if isinstance(status, int) and 400 <= status < 500 and status not in (408, 429):
            raise _PollRefused(exc)
        if status in (429, 503):
            stats.throttled += 1
        else:
            # A network hiccup or a server error while polling is worth another look.
            stats.errors += 1
        retry_after = getattr(exc, "retry_after", None)
        if isinstance(retry_after, int | float):
            log.info("The self-test was asked to wait %.1f s (%s)", retry_after, exc.code)
            pacer.hold(float(retry_after))

    # -- 4. delivery ----------------------------------------------------------------------

    def _delivery(self) -> None:
        graph = self._graph
        assert graph is not None and self._send_local is not None and self._send_mono is not None
        send_mono = self._send_mono
        thresholds = self.options.thresholds
        with self._step(StepId.DELIVERY, "Waiting for the test message to arrive") as step:
            deadline = self._deadline
            if thresholds.delivery_fail_s is not None:
                deadline = min(deadline, send_mono + thresholds.delivery_fail_s)
            since = self._arrival_filter_start()
            try:
                found, stats = self._poll(
                    step,
                    lambda pacer, until: self._look_for_message(graph, since, pacer, until),
                    first_delay_s=self.options.poll.first_delay_s,
                    deadline=deadline,
                    waiting="Waiting for the test message to arrive",
                )
            except _PollRefused as refused:
                step.fail(
                    refused.error,
                    f"Microsoft Graph refused to list the mailbox: {refused.error.explain()}",
                )
                raise _Stop() from None
            detail = stats.to_json() | {"filter_since": _iso(since)}

            if found is None:
                message = (
                    f"The test message had not arrived after "
                    f"{_seconds(time.monotonic() - send_mono)}"
                )
                if self._send_unconfirmed:
                    message += " (the send got no answer, so it may never have gone out)"
                if stats.last_error is not None and stats.errors + stats.throttled >= max(
                    1, stats.looks // 2
                ):
                    message += f"; the last look failed: {stats.last_error.advice.summary}"
                step.update(
                    StepState.FAILED, message, advice_key="selftest:delivery_failed", detail=detail
                )
                raise _Stop()

            self._found = _Found(found, time.monotonic(), self._last_answer_local)
            delivery, _uncertainty = _between(self._sent_when(), self._received_when())
            slow = delivery is not None and delivery > thresholds.delivery_warn_s
            detail["parent_folder_id"] = found.parent_folder_id
            words = (
                f"Arrived {_seconds(delivery)} after it was sent"
                if delivery is not None
                else "Arrived"
            )
            if slow:
                words += f", slower than {_seconds(thresholds.delivery_warn_s)}"
            if stats.throttled:
                words += f" (Graph asked to slow down {stats.throttled}x; honoured)"
            step.update(
                StepState.WARNING if slow else StepState.PASSED,
                words,
                advice_key="selftest:delivery_slow" if slow else None,
                detail=detail,
            )

    def _arrival_filter_start(self) -> datetime:
        """The start of the arrival filter: the send, on the servers' clock, minus a margin."""
        assert self._send_local is not None
        estimate = self._skew.estimate()
        margin = _FILTER_MARGIN_S + estimate[1] if estimate else _FILTER_MARGIN_UNKNOWN_CLOCK_S
        return datetime.fromtimestamp(self._send_local[0] + self._skew.offset_s - margin, tz=UTC)

    def _look_for_message(
        self, graph: GraphClient, since: datetime, pacer: _Pacer, deadline: float
    ) -> GraphMessage | None:
        """List every page received since ``since``; return the test message, if there."""
        matches: list[GraphMessage] = []
        next_link: str | None = None
        while True:
            if not pacer.wait_turn(deadline):
                raise _OutOfTime()
            before = self._clock()
            page = graph.message_page(
                received_since=None if next_link else since,
                next_link=next_link,
                cancel=self.cancel,
                timeout=self._timeout(),
            )
            self._last_answer_local = self._clock()
            self._sample(page.info, before, self._last_answer_local)
            # Graph's order is not relied on: every item on every page is checked.
            matches.extend(m for m in page.items if self._is_test_message(m))
            next_link = page.next_link
            if not next_link:
                break
        if any(m.is_read is not False for m in matches):
            # Exchange files a sender's own copy as read, so only a read copy (or one whose
            # state Graph did not give) may be a Sent Items copy, kept should a tenant policy
            # override saveToSentItems. Only then is Sent Items' id worth a request.
            sent_items = self._sent_items_folder(graph, pacer, deadline)
            if sent_items:
                matches = [m for m in matches if m.parent_folder_id != sent_items]
        if not matches:
            return None
        # Latest arrival first: a copy in another folder never beats the inbox's.
        matches.sort(key=lambda m: m.received_at or datetime.min.replace(tzinfo=UTC))
        return matches[-1]

    def _sent_items_folder(self, graph: GraphClient, pacer: _Pacer, deadline: float) -> str | None:
        """The id of the Sent Items folder: asked of Graph once a run, when first needed."""
        if self._sent_items_asked:
            return self._sent_items_id
        if not pacer.wait_turn(deadline):
            raise _OutOfTime()
        self._sent_items_asked = True
        try:
            self._sent_items_id = graph.folder_id(
                "sentitems", cancel=self.cancel, timeout=self._timeout()
            )
        except QargoError as exc:
            if self.cancel.is_set():
                raise
            retry_after = getattr(exc, "retry_after", None)
            if isinstance(retry_after, int | float):
                pacer.hold(float(retry_after))
            log.info("Sent Items folder id unknown (%s); carrying on", exc.code)
        return self._sent_items_id

    def _is_test_message(self, message: GraphMessage) -> bool:
        if message.is_draft:
            return False
        return (
            self.marker in message.subject
            or self.marker in message.body_preview
            or message.header(MARKER_HEADER) == self.marker
        )

    def _local_to_server(self, local: float) -> tuple[float, float] | None:
        """A local wall-clock reading as an interval on the servers' clock."""
        estimate = self._skew.estimate()
        if estimate is None:
            return None
        offset, uncertainty = estimate
        return local + offset - uncertainty, local + offset + uncertainty

    def _submitted_server(self) -> datetime | None:
        """When the send request went out, on the servers' clock."""
        if self._send_local is None:
            return None
        return datetime.fromtimestamp(self._send_local[0] + self._skew.offset_s, tz=UTC)

    def _sent_when(self) -> _When | None:
        """When the message was sent: Graph's stamp, within the send request's duration."""
        if self._send_local is None:
            return None
        before = self._local_to_server(self._send_local[0])
        after = self._local_to_server(self._send_local[1])
        request = _When(before[0], after[1]) if before and after else None
        stamp = self._found.message.sent_at if self._found is not None else None
        if stamp is None:
            return request
        when = _When.stamped(stamp)
        return when.narrowed(request.lo, request.hi) if request else when

    def _received_when(self) -> _When | None:
        """When it arrived: Graph's (and Qargo's) stamp, before the listing that showed it."""
        found = self._found
        if found is None or found.message.received_at is None:
            return None
        when = _When.stamped(found.message.received_at)
        if self._synced is not None and self._synced.received_at is not None:
            qargo = _When.stamped(self._synced.received_at)
            when = when.narrowed(qargo.lo, qargo.hi)
        seen = self._local_to_server(found.seen_local)
        return when.narrowed(hi=seen[1]) if seen else when

    def _synced_when(self) -> _When | None:
        """When Qargo's sync saw it: the API's stamp, before the answer that showed it."""
        synced = self._synced
        if synced is None or synced.synced_at is None:
            return None
        when = _When.stamped(synced.synced_at)
        seen = (
            self._local_to_server(self._synced_seen_local)
            if self._synced_seen_local is not None
            else None
        )
        return when.narrowed(hi=seen[1]) if seen else when

    # -- 5. sync --------------------------------------------------------------------------

    def _sync(self) -> None:
        mailbox = self._mailbox
        found = self._found
        assert mailbox is not None and found is not None
        thresholds = self.options.thresholds
        with self._step(StepId.SYNC, "Waiting for Qargo's sync to see the test message") as step:
            self._check_sync_possible(step, mailbox, found.message)
            internet_message_id = found.message.internet_message_id
            deadline = self._deadline
            if thresholds.sync_fail_s is not None:
                deadline = min(deadline, found.seen_mono + thresholds.sync_fail_s)

            def look(pacer: _Pacer, until: float) -> SyncedMessage | None:
                if not pacer.wait_turn(until):
                    raise _OutOfTime()
                items = self._services.api.synced_messages(
                    mailbox.id, internet_message_id, cancel=self.cancel
                )
                self._last_answer_local = self._clock()
                return next(
                    (i for i in items if i.internet_message_id == internet_message_id), None
                )

            try:
                synced, stats = self._poll(
                    step,
                    look,
                    first_delay_s=0.0,
                    deadline=deadline,
                    waiting="Waiting for Qargo's sync to see the test message",
                )
            except _PollRefused as refused:
                step.fail(
                    refused.error,
                    f"Qargo refused to say what its sync saw: {refused.error.explain()}",
                )
                raise _Stop() from None
            detail = stats.to_json()

            if synced is None:
                self._sync_failed(step, mailbox, found, detail)
            self._synced = synced
            self._synced_seen_mono = time.monotonic()
            self._synced_seen_local = self._last_answer_local
            sync, _uncertainty = _between(self._received_when(), self._synced_when())
            slow = sync is not None and sync > thresholds.sync_warn_s
            words = f"Qargo's sync saw it {_seconds(sync)} after it arrived"
            if slow:
                words += f", slower than {_seconds(thresholds.sync_warn_s)}"
            step.update(
                StepState.WARNING if slow else StepState.PASSED,
                words,
                advice_key="selftest:sync_slow" if slow else None,
                detail=detail,
            )

    @staticmethod
    def _check_sync_possible(step: _StepHandle, mailbox: Mailbox, message: GraphMessage) -> None:
        """Fail at once when Qargo's sync cannot see the message, whatever the wait."""
        if mailbox.status not in (LinkStatus.LINKED, LinkStatus.AUTHORISING):
            key = {
                LinkStatus.REAUTHORISATION_REQUIRED: "selftest:reauthorisation_required",
                LinkStatus.LINK_FAILED: "selftest:link_failed",
            }.get(mailbox.status, "selftest:not_linked")
            step.update(
                StepState.FAILED,
                f"Qargo's sync does not read this mailbox: its link status is {mailbox.raw_status}",
                advice_key=key,
            )
            raise _Stop()
        if not message.internet_message_id:
            step.update(
                StepState.FAILED,
                "Graph gave the test message no internetMessageId, so Qargo's sync cannot "
                "be checked",
                advice_key="selftest:sync_failed",
            )
            raise _Stop()

    def _sync_failed(
        self, step: _StepHandle, mailbox: Mailbox, found: _Found, detail: dict[str, Any]
    ) -> NoReturn:
        message = (
            f"Qargo's sync had not seen the test message "
            f"{_seconds(time.monotonic() - found.seen_mono)} after it arrived"
        )
        # The mailbox's state now often says why (a grant revoked meanwhile, a sync error).
        current = self._current_mailbox()
        if current is not None:
            detail["mailbox_status"] = current.raw_status
            if current.raw_status != mailbox.raw_status:
                message += f"; the mailbox is now {current.raw_status}"
            if current.last_error is not None:
                message += f"; Qargo's last error: {current.last_error.code}"
                detail["last_error"] = current.last_error.code
        step.update(StepState.FAILED, message, advice_key="selftest:sync_failed", detail=detail)
        raise _Stop()

    def _current_mailbox(self) -> Mailbox | None:
        if self._mailbox is None:
            return None
        try:
            return self._services.api.get_mailbox(self._mailbox.id)
        except QargoError:
            return None

    # -- 6. cleanup -----------------------------------------------------------------------

    def _cleanup(self) -> None:
        """Delete the message, even after a cancel: a person's inbox is not a test bench."""
        started = time.monotonic()

        def done(state: StepState, message: str, advice_key: str | None = None) -> None:
            self._emit(
                StepReport(StepId.CLEANUP, state, time.monotonic() - started, message, advice_key)
            )

        if self._send_local is None:
            done(StepState.SKIPPED, "Nothing was sent")
            return
        if self.options.keep:
            done(StepState.SKIPPED, f"Kept in the mailbox as asked: {self.subject}")
            return
        if self._found is None or self._graph is None:
            done(
                StepState.SKIPPED,
                "Not found, so not deleted; if it arrives later, delete it by hand: "
                f"{self.subject}",
            )
            return
        self._emit(StepReport(StepId.CLEANUP, StepState.RUNNING, 0.0, "Deleting the test message"))
        try:
            existed = self._graph.delete_message(
                self._found.message.id, timeout=self.options.cleanup_timeout_s
            )
        except QargoError as exc:
            done(
                StepState.WARNING,
                f"The test message could not be deleted ({exc.code}); delete it by hand: "
                f"{self.subject}",
                "selftest:cleanup_failed",
            )
            return
        if existed:
            done(StepState.PASSED, "Deleted the test message (moved to Deleted Items)")
        else:
            done(StepState.PASSED, "The test message was already gone")

    # -- the report -----------------------------------------------------------------------

    def _report(self, started_at: datetime, cancelled: bool) -> SelfTestReport:
        steps = tuple(self._steps[s] for s in STEPS)
        by_id = {s.id: s for s in steps}
        verdict = _verdict(by_id, cancelled)
        timings = self._timings()
        estimate = self._skew.estimate()
        summary, next_step, advice = self._advice(verdict, by_id, timings)
        return SelfTestReport(
            address=self.address,
            verdict=verdict,
            summary=summary,
            next_step=next_step,
            advice=advice,
            steps=steps,
            timings=timings,
            legs=self._legs(by_id, timings),
            clock_skew_s=estimate[0] if estimate else None,
            clock_skew_uncertainty_s=estimate[1] if estimate else None,
            probes=self._probes,
            proxy=self._proxy,
            mailbox_id=self._mailbox.id if self._mailbox else None,
            mailbox_status=self._mailbox.raw_status if self._mailbox else None,
            marker=self.marker,
            subject=self.subject,
            internet_message_id=(
                self._found.message.internet_message_id if self._found is not None else None
            ),
            signed_in_how=self._signed_in_how,
            kept=self.options.keep and self._send_local is not None,
            correlation_ids=dict(self._correlation),
            thresholds=self.options.thresholds,
            started_at=started_at,
            duration_s=time.monotonic() - self._started_mono,
        )

    def _timings(self) -> Timings:
        found = self._found
        synced = self._synced
        sent = self._sent_when()
        received = self._received_when()
        synced_when = self._synced_when()
        delivery = _between(sent, received)
        sync = _between(received, synced_when)
        end_to_end = _between(sent, synced_when)
        return Timings(
            submission_s=self._send_info.elapsed_s if self._send_info is not None else None,
            delivery_s=delivery[0],
            delivery_uncertainty_s=delivery[1],
            sync_s=sync[0],
            sync_uncertainty_s=sync[1],
            end_to_end_s=end_to_end[0],
            end_to_end_uncertainty_s=end_to_end[1],
            observed_delivery_s=(
                found.seen_mono - self._send_mono
                if found is not None and self._send_mono is not None
                else None
            ),
            observed_sync_s=(
                self._synced_seen_mono - found.seen_mono
                if found is not None and self._synced_seen_mono is not None
                else None
            ),
            submitted_at=self._submitted_server(),
            sent_at=found.message.sent_at if found is not None else None,
            received_at=found.message.received_at if found is not None else None,
            synced_at=synced.synced_at if synced is not None else None,
        )

    def _legs(self, by_id: dict[StepId, StepReport], timings: Timings) -> tuple[Leg, ...]:
        """The legs on one time axis: seconds after the send request went out."""
        origin = self._send_local[0] + self._skew.offset_s if self._send_local else None

        def offset(when: _When | None) -> float | None:
            if when is None or origin is None:
                return None
            return max(0.0, when.mid - origin)

        legs = []
        send_state = by_id[StepId.SEND].state
        if send_state.finished and send_state is not StepState.SKIPPED:
            legs.append(
                Leg("submission", 0.0 if origin is not None else None, timings.submission_s,
                    send_state)
            )  # fmt: skip
        delivery_state = by_id[StepId.DELIVERY].state
        if delivery_state.finished and delivery_state is not StepState.SKIPPED:
            # A message that never arrived has no duration: the chart shows it open-ended.
            legs.append(
                Leg("delivery", offset(self._sent_when()), timings.delivery_s, delivery_state)
            )
        sync_state = by_id[StepId.SYNC].state
        if sync_state.finished and sync_state is not StepState.SKIPPED:
            legs.append(Leg("sync", offset(self._received_when()), timings.sync_s, sync_state))
        return tuple(legs)

    def _advice(
        self, verdict: Verdict, by_id: dict[StepId, StepReport], timings: Timings
    ) -> tuple[str, NextStep, tuple[str, ...]]:
        findings = [
            s for s in (by_id[i] for i in STEPS) if s.state in (StepState.FAILED, StepState.WARNING)
        ]
        lines: list[str] = []
        next_step = NextStep.NONE
        for finding in findings:
            advice = finding.advice or advice_for(None)
            text = f"{finding.id.title}: {finding.message}. {advice.summary}"
            if advice.detail:
                text += f" {advice.detail}"
            lines.append(text)
            if next_step is NextStep.NONE and finding.state is StepState.FAILED:
                next_step = advice.next_step
        if next_step is NextStep.NONE and findings:
            next_step = (findings[0].advice or advice_for(None)).next_step

        if verdict is Verdict.PASS:
            summary = (
                f"{self.address} sends and receives mail, and Qargo's sync saw the test message"
                + (
                    f" {_seconds(timings.end_to_end_s)} after it was sent."
                    if timings.end_to_end_s is not None
                    else "."
                )
            )
        elif verdict is Verdict.WARNING:
            slow = [f.id.value for f in findings if f.state is StepState.WARNING]
            summary = f"{self.address} works, with warnings: {', '.join(slow)}."
        elif verdict is Verdict.FAIL:
            leg = next(f for f in findings if f.state is StepState.FAILED)
            summary = f"{self.address} failed the {_LEG_NAMES[leg.id]}: {leg.message}."
        elif verdict is Verdict.COULD_NOT_RUN:
            failed = next((f for f in findings if f.state is StepState.FAILED), None)
            summary = "The test could not run" + (f": {failed.message}." if failed else ".")
        else:
            summary = "The test was cancelled."
            if self._found is None and self._send_local is not None and not self.options.keep:
                lines.append(
                    f"The test message may still arrive; delete it by hand: {self.subject}"
                )

        if verdict in (Verdict.FAIL, Verdict.WARNING) and next_step is not NextStep.NONE:
            lines.append(
                "If this keeps happening, contact Qargo Support and attach this report "
                "(Save report)."
            )
        return summary, next_step, tuple(dict.fromkeys(lines))


class _OutOfTime(Exception):
    """The deadline passed while waiting for a turn to send a request."""


class _PollRefused(Exception):
    """A service refused a poll outright (a 4xx other than throttling)."""

    def __init__(self, error: QargoError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass
class _PollStats:
    looks: int = 0
    requests: int = 0
    throttled: int = 0
    errors: int = 0
    last_error: QargoError | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "looks": self.looks,
            "requests": self.requests,
            "throttled": self.throttled,
            "errors": self.errors,
        }


class _StepHandle:
    """Reports one step's progress and ending."""

    def __init__(self, test: SelfTest, step_id: StepId) -> None:
        self._test = test
        self._id = step_id
        self._started = time.monotonic()

    def update(
        self,
        state: StepState,
        message: str,
        *,
        advice_key: str | None = None,
        error_code: str | None = None,
        correlation_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Report the step's state."""
        if state.finished:
            level = logging.WARNING if state is StepState.FAILED else logging.INFO
            log.log(level, "Self-test step %s %s: %s", self._id.value, state.value, message)
        self._test._emit(
            StepReport(
                self._id,
                state,
                time.monotonic() - self._started,
                message,
                advice_key,
                error_code,
                correlation_id,
                dict(detail or {}),
            )
        )

    def fail(self, exc: QargoError, message: str) -> None:
        """End the step as failed because of ``exc``."""
        self.update(
            StepState.FAILED,
            message,
            advice_key=exc.key,
            error_code=exc.code,
            correlation_id=exc.correlation_id,
        )


_SERVICE_NAMES = {"api": "Qargo", "identity": "Microsoft sign-in", "graph": "Microsoft Graph"}


def _unreachable(service: str, broken: ProbeStep | None) -> str:
    """Which service cannot be reached, and at which layer."""
    layer = f"{broken.name.upper()} {broken.detail}" if broken else "? failed"
    return f"{_SERVICE_NAMES[service]} cannot be reached: {layer}"


_LEG_NAMES = {
    StepId.PREFLIGHT: "preflight",
    StepId.TOKEN: "sign-in",
    StepId.SEND: "send (submission)",
    StepId.DELIVERY: "delivery",
    StepId.SYNC: "sync",
    StepId.CLEANUP: "cleanup",
}


def _grant_refused(exc: IdentityError) -> bool:
    """Whether the identity platform refused the refresh token itself (revoked, expired)."""
    return exc.error == "invalid_grant" or exc.key in ("aadsts:50173", "aadsts:700082")


def _verdict(by_id: dict[StepId, StepReport], cancelled: bool) -> Verdict:
    if cancelled:
        return Verdict.CANCELLED
    if any(by_id[s].state is StepState.FAILED for s in (StepId.PREFLIGHT, StepId.TOKEN)):
        return Verdict.COULD_NOT_RUN
    if any(by_id[s].state is StepState.FAILED for s in STEPS):
        return Verdict.FAIL
    if any(by_id[s].state is StepState.WARNING for s in STEPS):
        return Verdict.WARNING
    return Verdict.PASS


def run_selftest(
    services: Services,
    address: str,
    *,
    options: SelfTestOptions | None = None,
    on_step: StepCallback | None = None,
    cancel: threading.Event | None = None,
    control: InteractiveControl | None = None,
) -> SelfTestReport:
    """Run the self-test of one mailbox and return its report (see :class:`SelfTest`)."""
    return SelfTest(
        services, address, options=options, on_step=on_step, cancel=cancel, control=control
    ).run()


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 10:
        return f"{value:.1f} s"
    return f"{value:.0f} s"


def _plus_minus(value: float | None, uncertainty: float | None) -> str:
    if value is None:
        return "-"
    if uncertainty is None or uncertainty < 0.0005:
        return _seconds(value)
    return f"{_seconds(value)} \u00b1 {_seconds(uncertainty)}"


def _skew_words(offset: float, uncertainty: float | None) -> str:
    plus_minus = f" (\u00b1{_seconds(uncertainty)})" if uncertainty is not None else ""
    if abs(offset) < max(1.0, uncertainty or 0.0):
        return f"in step with the servers{plus_minus}"
    side = "behind" if offset > 0 else "ahead of"
    return f"{_seconds(abs(offset))} {side} the servers{plus_minus}"


__all__ = [
    "MARKER_HEADER",
    "REPORT_SCHEMA",
    "STEPS",
    "SUBJECT_PREFIX",
    "Leg",
    "PollPolicy",
    "SelfTest",
    "SelfTestOptions",
    "SelfTestReport",
    "StepCallback",
    "StepId",
    "StepReport",
    "StepState",
    "Thresholds",
    "Timings",
    "Verdict",
    "run_selftest",
]


#: How many saved reports are kept; older ones are deleted.
SAVED_REPORTS_KEPT = 50


def save_report(report: SelfTestReport, data_dir: Path) -> Path:
    """Keep ``report`` as JSON in the data folder, for the support bundle.

    The folder holds at most :data:`SAVED_REPORTS_KEPT` reports; the oldest go first.
    """
    from qargo_desktop.core.support import SELFTEST_REPORTS_DIR

    folder = data_dir / SELFTEST_REPORTS_DIR
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = report.started_at.strftime("%Y%m%dT%H%M%SZ")
    safe_address = "".join(c if c.isalnum() or c in "@.-_" else "_" for c in report.address)
    path = folder / f"{stamp}-{safe_address}.json"
    path.write_text(report.to_json(), encoding="utf-8")
    for old in sorted(folder.glob("*.json"))[:-SAVED_REPORTS_KEPT]:
        old.unlink(missing_ok=True)
    log.info("Saved the self-test report of %s (%s)", report.address, report.verdict.value)
    return path
