"""The send/receive self-test against the sandbox: every verdict, cancel, throttling and skew."""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msal
import pytest

from qargo_desktop.core.errors import NextStep
from qargo_desktop.core.graph import MAIL_SCOPES
from qargo_desktop.core.http import RetryPolicy
from qargo_desktop.core.selftest import (
    MARKER_HEADER,
    STEPS,
    SUBJECT_PREFIX,
    PollPolicy,
    SelfTestOptions,
    SelfTestReport,
    StepId,
    StepReport,
    StepState,
    Thresholds,
    Verdict,
    run_selftest,
)

DOMAIN = "northwind-haulage.example"
DISPATCH = f"dispatch@{DOMAIN}"
SEND_PATH = "/graph/v1.0/me/sendMail"
MESSAGES_PATH = "/graph/v1.0/me/messages"
ME_PATH = "/graph/v1.0/me"
SENT_ITEMS_PATH = "/graph/v1.0/me/mailFolders/sentitems"


def sign_in_mailbox(services: Any, browser: Any, address: str = DISPATCH) -> None:
    """Sign the mailbox account in through the browser, as a person would once."""
    control = services.new_control()
    browser.account = address
    control.opener = browser
    token = services.mailbox_identity().acquire_interactive(
        MAIL_SCOPES, control, login_hint=address, prompt="select_account"
    )
    browser.join()
    assert token.username == address


@pytest.fixture
def mailbox(admin: Any, browser: Any) -> Any:
    """The admin's services, with the dispatch mailbox's sign-in in the mailbox cache."""
    sign_in_mailbox(admin, browser)
    return admin


# Quicker looks than the shipped policy, to keep the suite fast; the shipped policy is
# exercised by the healthy run, the politeness test and the command line.
FAST = PollPolicy(first_delay_s=0.3, interval_s=0.3, max_interval_s=1.0, max_rate_per_s=5, burst=3)


def run(
    services: Any, address: str = DISPATCH, **options: Any
) -> tuple[SelfTestReport, list[StepReport]]:
    """Run the self-test with the shipped poll policy; return the report and every event."""
    events: list[StepReport] = []
    options.setdefault("timeout_s", 20)
    options.setdefault("poll", FAST)
    report = run_selftest(
        services, address, options=SelfTestOptions(**options), on_step=events.append
    )
    return report, events


def sends(sandbox: Any) -> int:
    return int(sandbox.world.faults.request_count("graph", "POST", SEND_PATH))


def graph_requests(sandbox: Any) -> dict[str, int]:
    """Every request Graph saw, as ``{"METHOD path": count}`` (message ids left out)."""
    counts: dict[str, int] = {}
    for row in sandbox.world.faults.counters()["requests"]:
        if row["service"] == "graph":
            path = row["path"].split("/messages/")[0] + (
                "/messages/{id}" if "/messages/" in row["path"] else ""
            )
            key = f"{row['method']} {path}"
            counts[key] = counts.get(key, 0) + row["count"]
    return counts


def close_to(measured: float | None, told: float, uncertainty: float | None) -> bool:
    assert measured is not None and uncertainty is not None
    # Within what the report itself says it is sure of, plus scheduling slack.
    return abs(measured - told) <= uncertainty + 0.25


# -- verdicts -----------------------------------------------------------------------------


def test_a_healthy_mailbox_passes(sandbox: Any, mailbox: Any) -> None:
    report, events = run(mailbox, poll=PollPolicy())

    assert report.verdict is Verdict.PASS, report.to_text()
    assert [s.state for s in report.steps] == [StepState.PASSED] * len(STEPS)
    assert report.next_step is NextStep.NONE
    assert report.signed_in_how == "silent"
    assert report.mailbox_status == "linked"

    # Each leg close to what the sandbox was told (0.5 s delivery, 0.5 s sync).
    t = report.timings
    assert close_to(t.delivery_s, 0.5, t.delivery_uncertainty_s)
    assert close_to(t.sync_s, 0.5, t.sync_uncertainty_s)
    assert close_to(t.end_to_end_s, 1.0, t.end_to_end_uncertainty_s)
    assert t.submission_s is not None and 0 < t.submission_s < 2
    assert t.observed_delivery_s is not None and t.observed_delivery_s >= 0.4
    assert [leg.name for leg in report.legs] == ["submission", "delivery", "sync"]
    assert report.clock_skew_s is not None and abs(report.clock_skew_s) < 1.5

    # Exactly one message, marked, from the mailbox to itself, and cleaned up.
    assert sends(sandbox) == 1
    sent = sandbox.world.mail_store.sent[0]
    assert sent.subject == f"{SUBJECT_PREFIX} {report.marker}" == report.subject
    assert sent.recipients == (DISPATCH,)
    leftovers = [
        m.folder
        for m in sandbox.world.mail_store.messages(DISPATCH)
        if report.marker in m.envelope.subject
    ]
    assert leftovers == ["deleteditems"]

    # Every step reported as it started and as it ended, in order.
    first: dict[StepId, StepReport] = {}
    for event in events:
        first.setdefault(event.id, event)
    assert list(first) == list(STEPS)
    assert all(e.state is StepState.RUNNING for e in first.values())
    assert [e.id for e in events if e.state.finished] == list(STEPS)

    data = json.loads(report.to_json())
    assert data["verdict"] == "pass"
    assert data["timings"]["delivery_s"] == pytest.approx(t.delivery_s, abs=0.001)
    assert {s["id"] for s in data["steps"]} == {s.value for s in STEPS}
    text = report.to_text()
    assert "PASSED" in text and "Delivery" in text and report.subject in text


def test_a_healthy_run_asks_graph_only_what_it_needs(sandbox: Any, mailbox: Any) -> None:
    sandbox.world.faults.reset_counters()

    report, _events = run(mailbox, poll=PollPolicy())

    assert report.verdict is Verdict.PASS, report.to_text()
    # Who the token belongs to (also the HTTP layer of Graph's probe), the send, one look
    # (the first comes when a delivery is likely: the sandbox's has happened by then), and
    # the clean-up. No second /me, and no Sent Items lookup: the delivered copy is unread,
    # so it cannot be a Sent Items copy.
    assert graph_requests(sandbox) == {
        f"GET {ME_PATH}": 1,
        f"POST {SEND_PATH}": 1,
        f"GET {MESSAGES_PATH}": 1,
        f"DELETE {MESSAGES_PATH}/{{id}}": 1,
    }
    # Graph's probe still shows every layer, the HTTP one from the token check's answer.
    (graph,) = [p for p in report.probes if p.name == "graph"]
    assert graph.ok, graph.summary()
    assert [s.name for s in graph.steps] == ["dns", "tcp", "tls", "http"]
    assert graph.http_status == 200 and graph.server_date is not None
    assert graph.skew_s is not None and abs(graph.skew_s) < 1.5
    assert "HTTP" in graph.summary() and "HTTP" in report.to_text()
    assert [p.name for p in report.probes] == ["api", "identity", "graph"]
    assert report.step(StepId.TOKEN).detail["graph_user"] == DISPATCH


def test_a_sent_items_copy_is_not_taken_for_the_delivered_message(
    sandbox: Any, mailbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A tenant whose policy keeps the sender's copy whatever saveToSentItems says: that copy
    # is in /me/messages at once, with the marker, long before the delivered one.
    store = sandbox.world.mail_store
    send = store.send

    def send_keeping_a_copy(sender: str, envelope: Any, **_ignored: Any) -> None:
        send(sender, envelope, save_to_sent_items=True)

    monkeypatch.setattr(store, "send", send_keeping_a_copy)
    sandbox.set_faults(delivery_delay_s=1.5)
    sandbox.world.faults.reset_counters()

    report, _events = run(mailbox)

    assert report.verdict is Verdict.PASS, report.to_text()
    t = report.timings
    assert close_to(t.delivery_s, 1.5, t.delivery_uncertainty_s)
    # Sent Items' id was asked once, when the first read copy showed up.
    assert graph_requests(sandbox)[f"GET {SENT_ITEMS_PATH}"] == 1
    assert graph_requests(sandbox)[f"GET {MESSAGES_PATH}"] >= 2
    folders = sorted(
        m.folder for m in store.messages(DISPATCH) if report.marker in m.envelope.subject
    )
    # The delivered copy was deleted; the sender's copy stays where the tenant keeps it.
    assert folders == ["deleteditems", "sentitems"]


def test_interactive_sign_in_as_the_mailbox(sandbox: Any, admin: Any, browser: Any) -> None:
    control = admin.new_control()
    browser.account = DISPATCH
    control.opener = browser

    report = run_selftest(admin, DISPATCH, options=SelfTestOptions(timeout_s=20), control=control)
    browser.join()

    assert report.verdict is Verdict.PASS, report.to_text()
    assert report.signed_in_how == "interactive"
    assert "login_hint=dispatch%40" in browser.urls[-1]


def test_the_wrong_account_in_the_browser(sandbox: Any, admin: Any, browser: Any) -> None:
    control = admin.new_control()
    browser.account = f"planning@{DOMAIN}"
    control.opener = browser

    report = run_selftest(admin, DISPATCH, options=SelfTestOptions(timeout_s=20), control=control)
    browser.join()

    assert report.verdict is Verdict.COULD_NOT_RUN
    assert report.step(StepId.TOKEN).advice_key == "app:wrong_account"
    assert sends(sandbox) == 0
    # No tokens of an account nobody asked for are kept.
    assert admin.mailbox_identity().find_account(f"planning@{DOMAIN}") is None


def test_slow_delivery_is_a_warning_naming_delivery(sandbox: Any, mailbox: Any) -> None:
    sandbox.set_faults(delivery_delay_s=1.5)

    report, _events = run(mailbox, thresholds=Thresholds(delivery_warn_s=0.75))

    assert report.verdict is Verdict.WARNING, report.to_text()
    assert report.step(StepId.DELIVERY).state is StepState.WARNING
    assert report.step(StepId.SYNC).state is StepState.PASSED
    assert report.step(StepId.DELIVERY).advice_key == "selftest:delivery_slow"
    assert "delivery" in report.summary
    t = report.timings
    assert close_to(t.delivery_s, 1.5, t.delivery_uncertainty_s)
    assert any("Microsoft 365" in line for line in report.advice)
    assert report.next_step is NextStep.ASK_TENANT_ADMIN


def test_slow_sync_is_a_warning_naming_sync(sandbox: Any, mailbox: Any) -> None:
    sandbox.set_faults(sync_delay_s=1.5)

    report, _events = run(mailbox, thresholds=Thresholds(sync_warn_s=0.75))

    assert report.verdict is Verdict.WARNING, report.to_text()
    assert report.step(StepId.SYNC).state is StepState.WARNING
    assert report.step(StepId.DELIVERY).state is StepState.PASSED
    assert "sync" in report.summary
    t = report.timings
    assert close_to(t.sync_s, 1.5, t.sync_uncertainty_s)
    assert report.next_step is NextStep.CONTACT_SUPPORT


def test_mail_that_never_arrives_fails_naming_delivery(sandbox: Any, mailbox: Any) -> None:
    sandbox.set_faults(lose_mail=True)

    report, _events = run(mailbox, thresholds=Thresholds(delivery_fail_s=1.5))

    assert report.verdict is Verdict.FAIL, report.to_text()
    assert report.step(StepId.DELIVERY).state is StepState.FAILED
    assert report.step(StepId.DELIVERY).advice_key == "selftest:delivery_failed"
    assert report.step(StepId.SYNC).state is StepState.SKIPPED
    assert report.step(StepId.CLEANUP).state is StepState.SKIPPED
    assert "delivery" in report.summary
    assert report.next_step is NextStep.ASK_TENANT_ADMIN
    assert any("Qargo Support" in line for line in report.advice)
    assert sends(sandbox) == 1
    assert report.duration_s < 8


def test_mail_never_synced_fails_naming_sync(sandbox: Any, mailbox: Any) -> None:
    sandbox.set_faults(never_sync=True)

    report, _events = run(mailbox, thresholds=Thresholds(sync_fail_s=1.5))

    assert report.verdict is Verdict.FAIL, report.to_text()
    assert report.step(StepId.DELIVERY).state is StepState.PASSED
    assert report.step(StepId.SYNC).state is StepState.FAILED
    assert "sync" in report.summary
    assert report.next_step is NextStep.REAUTHORISE
    # The message did arrive, so it is cleaned up.
    assert report.step(StepId.CLEANUP).state is StepState.PASSED
    assert [leg.name for leg in report.legs] == ["submission", "delivery", "sync"]
    assert report.legs[-1].duration_s is None


def test_a_refused_send_is_not_retried(sandbox: Any, mailbox: Any) -> None:
    sandbox.set_faults(unavailable_probability=1.0, paths=[SEND_PATH], max_faults=5)

    report, _events = run(mailbox)

    assert report.verdict is Verdict.FAIL
    assert report.step(StepId.SEND).state is StepState.FAILED
    assert report.step(StepId.DELIVERY).state is StepState.SKIPPED
    assert sends(sandbox) == 1
    assert sandbox.world.mail_store.sent_count == 0


def test_a_send_without_an_answer_is_looked_for_not_resent(sandbox: Any, mailbox: Any) -> None:
    sandbox.set_faults(drop_probability=1.0, drop_phase="after", paths=[SEND_PATH], max_faults=1)

    report, _events = run(mailbox)

    assert sends(sandbox) == 1
    assert sandbox.world.mail_store.sent_count == 1
    assert report.step(StepId.SEND).state is StepState.WARNING
    assert report.step(StepId.SEND).advice_key == "selftest:send_unconfirmed"
    assert report.step(StepId.DELIVERY).state is StepState.PASSED
    assert report.step(StepId.CLEANUP).state is StepState.PASSED
    assert report.verdict is Verdict.WARNING


# -- throttling ---------------------------------------------------------------------------


@pytest.fixture
def request_log(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, str, str, str]]:
    """Every request the sandbox saw: (time, method, path, fault injected or '')."""
    faults = sandbox.world.faults
    original = faults.decide
    seen: list[tuple[float, str, str, str]] = []

    def decide(service: str, method: str, path: str) -> Any:
        decision = original(service, method, path)
        seen.append((time.monotonic(), method, path, decision.action or ""))
        return decision

    monkeypatch.setattr(faults, "decide", decide)
    return seen


@pytest.mark.parametrize("session_retries", [True, False], ids=["session-waits", "test-waits"])
def test_throttling_while_polling_is_honoured(
    sandbox: Any,
    mailbox: Any,
    request_log: list[tuple[float, str, str, str]],
    session_retries: bool,
) -> None:
    if not session_retries:
        # Without the session's own retries the 429 reaches the self-test, which waits.
        mailbox.session.get_adapter("https://").retry_policy = RetryPolicy(max_attempts=1)
    sandbox.set_faults(
        rate_limit_probability=1.0,
        retry_after=1,
        paths=[MESSAGES_PATH],
        methods=["GET"],
        max_faults=2,
    )

    report, _events = run(mailbox)

    assert report.verdict is Verdict.PASS, report.to_text()
    assert sends(sandbox) == 1
    listings = [(at, fault) for at, method, path, fault in request_log if path == MESSAGES_PATH]
    throttled = [i for i, (_at, fault) in enumerate(listings) if fault == "rate_limit"]
    assert len(throttled) == 2
    for index in throttled:
        # Retry-After: 1 was honoured before the next listing.
        assert listings[index + 1][0] - listings[index][0] >= 0.95
    if not session_retries:
        assert report.step(StepId.DELIVERY).detail["throttled"] == 2


def test_polling_stays_polite(
    sandbox: Any, mailbox: Any, request_log: list[tuple[float, str, str, str]]
) -> None:
    sandbox.set_faults(lose_mail=True)

    report, _events = run(mailbox, poll=PollPolicy(), thresholds=Thresholds(delivery_fail_s=6))

    listings = [at for at, _m, path, _f in request_log if path == MESSAGES_PATH]
    span = listings[-1] - listings[0]
    # Quick at first, then backing off: well under one request a second on average.
    assert 3 <= len(listings) <= span + 2
    gaps = [b - a for a, b in itertools.pairwise(listings)]
    assert gaps[-1] > gaps[0]
    assert report.step(StepId.DELIVERY).state is StepState.FAILED


# -- grants -------------------------------------------------------------------------------


def _drop_access_tokens(services: Any) -> None:
    """Forget the mailbox's access tokens, as if they had expired: the next use refreshes."""
    cache = services.mailbox_identity().store.cache
    for token in list(cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN)):
        cache.remove_at(token)


def test_a_revoked_grant_asks_to_reauthorise(sandbox: Any, mailbox: Any) -> None:
    sandbox.revoke_grant(DISPATCH)
    _drop_access_tokens(mailbox)

    report, _events = run(mailbox)

    assert report.verdict is Verdict.COULD_NOT_RUN, report.to_text()
    token = report.step(StepId.TOKEN)
    assert token.state is StepState.FAILED
    assert token.advice_key == "selftest:grant_refused"
    assert token.error_code == "AADSTS50173"
    assert report.next_step is NextStep.REAUTHORISE
    assert any("Reauthorise" in line for line in report.advice)
    assert sends(sandbox) == 0


def test_a_revoked_grant_with_a_live_token_fails_the_sync(sandbox: Any, mailbox: Any) -> None:
    # The access token still works for its last minutes, but Qargo's link is gone.
    sandbox.revoke_grant(DISPATCH)

    report, _events = run(mailbox)

    assert report.verdict is Verdict.FAIL, report.to_text()
    assert report.mailbox_status == "reauthorisation_required"
    assert report.step(StepId.SYNC).advice_key == "selftest:reauthorisation_required"
    assert report.next_step is NextStep.REAUTHORISE
    # Failing at once: no waiting for a sync that cannot come.
    assert report.step(StepId.SYNC).elapsed_s < 0.5


def test_an_expired_grant_asks_to_reauthorise(
    sandbox_certs: Any, settings_for: Any, browser: Any
) -> None:
    from qargo_desktop.core.http import build_session
    from qargo_desktop.core.services import Endpoints, Services
    from qargo_desktop.sandbox.server import Sandbox
    from qargo_desktop.sandbox.world import SandboxOptions

    options = SandboxOptions(
        data_dir=sandbox_certs, delivery_delay_s=0.5, sync_delay_s=0.5, refresh_token_lifetime_s=1
    )
    with Sandbox(options) as box:
        settings = settings_for(box)
        endpoints = Endpoints(
            settings.authority, settings.client_id, settings.api_base_url,
            settings.graph_base_url, settings.admin_scopes, validate_authority=False,
        )  # fmt: skip
        services = Services(endpoints, build_session(settings), sign_in_timeout_s=20)
        control = services.new_control()
        browser.account = f"admin@{DOMAIN}"
        control.opener = browser
        services.sign_in_interactive(control)
        browser.join()
        sign_in_mailbox(services, browser)
        time.sleep(1.1)
        _drop_access_tokens(services)

        report, _events = run(services)

        assert report.verdict is Verdict.COULD_NOT_RUN, report.to_text()
        assert report.step(StepId.TOKEN).advice_key == "selftest:grant_refused"
        assert report.step(StepId.TOKEN).error_code == "AADSTS700082"
        assert report.next_step is NextStep.REAUTHORISE
        services.session.close()


def test_no_admin_sign_in_cannot_run(sandbox: Any, services: Any) -> None:
    report, _events = run(services)

    assert report.verdict is Verdict.COULD_NOT_RUN
    assert report.step(StepId.PREFLIGHT).state is StepState.FAILED
    assert report.step(StepId.PREFLIGHT).advice_key == "app:sign_in_required"
    assert [report.step(s).state for s in STEPS[1:]] == [StepState.SKIPPED] * (len(STEPS) - 1)


def test_a_mailbox_that_is_not_in_qargo(sandbox: Any, admin: Any) -> None:
    report, _events = run(admin, address=f"nobody@{DOMAIN}")

    assert report.verdict is Verdict.COULD_NOT_RUN
    assert report.step(StepId.PREFLIGHT).advice_key == "api:mailbox_not_found"


def test_graph_failing_at_the_token_check_cannot_run(sandbox: Any, mailbox: Any) -> None:
    # The token check is the preflight's HTTP request to Graph: a Graph that answers 503
    # is unreachable, as the preflight would have said, and nothing is sent.
    mailbox.session.get_adapter("https://").retry_policy = RetryPolicy(max_attempts=1)
    sandbox.set_faults(unavailable_probability=1.0, paths=[ME_PATH], methods=["GET"])

    report, _events = run(mailbox)

    assert report.verdict is Verdict.COULD_NOT_RUN, report.to_text()
    assert report.step(StepId.PREFLIGHT).state is StepState.PASSED
    token = report.step(StepId.TOKEN)
    assert token.state is StepState.FAILED
    assert token.advice_key == "net:unavailable"
    assert token.message.startswith("Microsoft Graph cannot be reached: HTTP")
    assert report.next_step is NextStep.RETRY_LATER
    (graph,) = [p for p in report.probes if p.name == "graph"]
    assert graph.http_status == 503 and not graph.ok
    assert sends(sandbox) == 0


def test_an_unreachable_service_cannot_run(sandbox: Any, admin: Any) -> None:
    import dataclasses

    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    admin.endpoints = dataclasses.replace(
        admin.endpoints, graph_base_url=f"https://127.0.0.1:{port}/graph/v1.0"
    )

    report, _events = run(admin)

    assert report.verdict is Verdict.COULD_NOT_RUN
    preflight = report.step(StepId.PREFLIGHT)
    assert preflight.advice_key == "net:connection"
    assert "Microsoft Graph" in preflight.message
    assert report.next_step is NextStep.CHECK_NETWORK


# -- clock skew ---------------------------------------------------------------------------


@pytest.mark.parametrize("local_offset", [600.0, -600.0], ids=["local-ahead", "local-behind"])
def test_a_skewed_local_clock_is_reported_and_corrected(
    sandbox: Any, mailbox: Any, local_offset: float
) -> None:
    report, _events = run(mailbox, clock=lambda: time.time() + local_offset)

    # The servers are the other way round from this computer.
    assert report.clock_skew_s == pytest.approx(-local_offset, abs=1.5)
    assert report.step(StepId.PREFLIGHT).state is StepState.WARNING
    assert report.step(StepId.PREFLIGHT).advice_key == "selftest:clock_skew"
    # Found anyway (the arrival filter is on the servers' clock), and the delays are right.
    assert report.step(StepId.DELIVERY).state is StepState.PASSED
    assert report.step(StepId.SYNC).state is StepState.PASSED
    t = report.timings
    assert close_to(t.delivery_s, 0.5, t.delivery_uncertainty_s)
    assert close_to(t.sync_s, 0.5, t.sync_uncertainty_s)
    assert t.submitted_at is not None and t.sent_at is not None
    assert abs((t.sent_at - t.submitted_at).total_seconds()) < 2
    assert report.verdict is Verdict.WARNING


def test_a_shifted_server_clock_keeps_the_delays_right(sandbox: Any, mailbox: Any) -> None:
    import requests

    from qargo_desktop.core.graph import parse_http_date

    sandbox.world.clock.advance(300)
    # Whether the sandbox's Date header follows its clock decides the skew to expect.
    answer = requests.head(
        sandbox.info.api_base_url, verify=str(sandbox.info.ca_certificate), timeout=5
    )
    date = parse_http_date(answer.headers["Date"])
    assert date is not None
    header_skew = date.timestamp() - time.time()

    report, _events = run(mailbox)

    assert report.clock_skew_s == pytest.approx(header_skew, abs=1.5)
    assert report.step(StepId.DELIVERY).state is StepState.PASSED
    t = report.timings
    assert close_to(t.delivery_s, 0.5, t.delivery_uncertainty_s)
    assert close_to(t.sync_s, 0.5, t.sync_uncertainty_s)


# -- cancel -------------------------------------------------------------------------------


CANCEL_CASES = {
    # step: (faults, seconds after the step starts, signed in beforehand)
    StepId.PREFLIGHT: ({}, 0.0, True),
    StepId.TOKEN: ({}, 0.3, False),
    StepId.SEND: ({}, 0.0, True),
    StepId.DELIVERY: ({"lose_mail": True}, 0.3, True),
    StepId.SYNC: ({"never_sync": True}, 0.3, True),
}


@pytest.mark.parametrize("step", list(CANCEL_CASES), ids=[s.value for s in CANCEL_CASES])
def test_cancel_at_each_step(
    sandbox: Any,
    admin: Any,
    browser: Any,
    step: StepId,
    request_log: list[tuple[float, str, str, str]],
) -> None:
    faults, after, signed_in = CANCEL_CASES[step]
    if signed_in:
        sign_in_mailbox(admin, browser)
    else:
        # A person who opened the sign-in page and left it.
        browser.account = DISPATCH
        browser.action = "ignore"
    if faults:
        sandbox.set_faults(**faults)
    cancel = threading.Event()
    control = admin.new_control()
    control.opener = browser
    timers: list[threading.Timer] = []

    def on_step(report: StepReport) -> None:
        if report.id is not step or report.state is not StepState.RUNNING or cancel.is_set():
            return
        if not after:
            cancel.set()
        elif not timers:
            # From another thread, mid-wait, as a Cancel button would.
            timer = threading.Timer(after, cancel.set)
            timers.append(timer)
            timer.start()

    started = time.monotonic()
    report = run_selftest(
        admin, DISPATCH, options=SelfTestOptions(timeout_s=20), on_step=on_step,
        cancel=cancel, control=control,
    )  # fmt: skip
    took = time.monotonic() - started
    for timer in timers:
        timer.join()
    browser.join()

    assert report.verdict is Verdict.CANCELLED, report.to_text()
    assert report.step(step).state is StepState.SKIPPED
    assert report.step(step).message == "Cancelled"
    later = STEPS[STEPS.index(step) + 1 : -1]
    assert all(report.step(s).state is StepState.SKIPPED for s in later)
    assert took < after + 2.5

    # Nothing left running: the sign-in listener is closed, and no request follows.
    if control.listener_address is not None:
        with socket.socket() as probe:
            assert probe.connect_ex(control.listener_address) != 0
    count = len(request_log)
    time.sleep(0.5)
    assert len(request_log) == count
    assert sends(sandbox) == (1 if step in (StepId.DELIVERY, StepId.SYNC) else 0)
    if step is StepId.SYNC:
        # The message had arrived: the cleanup still deletes it.
        assert report.step(StepId.CLEANUP).state is StepState.PASSED


# -- the command line ---------------------------------------------------------------------


class _Context:
    def __init__(self, services: Any, data_dir: Path) -> None:
        self.services = services
        self.paths = SimpleNamespace(data_dir=data_dir)

    def __enter__(self) -> _Context:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None

    def report_cache_problem(self, say: Callable[[str], None]) -> None:
        return None


@pytest.mark.parametrize(
    ("address", "faults", "extra", "code", "verdict"),
    [
        (DISPATCH, {}, [], 0, "pass"),
        (DISPATCH, {"lose_mail": True}, ["--timeout", "3"], 1, "fail"),
        (DISPATCH, {"delivery_delay_s": 31.0}, ["--timeout", "2.5"], 1, "fail"),
        (
            DISPATCH,
            {"drop_probability": 1.0, "drop_phase": "after", "paths": [SEND_PATH], "max_faults": 1},
            [],
            2,
            "warning",
        ),
        (f"nobody@{DOMAIN}", {}, [], 3, "could_not_run"),
    ],
    ids=["pass", "fail", "deadline", "warning", "could-not-run"],
)
def test_command_line_exit_codes(
    sandbox: Any,
    mailbox: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    address: str,
    faults: dict[str, Any],
    extra: list[str],
    code: int,
    verdict: str,
    tmp_path: Path,
) -> None:
    from qargo_desktop import cli, commands

    monkeypatch.setattr(commands, "_context", lambda _args: _Context(mailbox, tmp_path))
    monkeypatch.setattr(commands, "_interrupt_cancels", lambda _event: None)
    if faults:
        sandbox.set_faults(**faults)

    exit_code = cli.main(["selftest", "--mailbox", address, "--json", *extra])

    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert exit_code == code
    assert data["verdict"] == verdict
    assert set(data["timings"]) >= {"submission_s", "delivery_s", "sync_s", "end_to_end_s"}
    # Progress went to stderr, step by step; stdout holds the report alone.
    assert "preflight" in captured.err and "cleanup" in captured.err
    # The report is kept for the support bundle.
    (saved,) = (tmp_path / "selftest-reports").glob("*.json")
    assert json.loads(saved.read_text())["verdict"] == verdict


def test_command_line_text_report(
    sandbox: Any,
    mailbox: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    from qargo_desktop import cli, commands

    monkeypatch.setattr(commands, "_context", lambda _args: _Context(mailbox, tmp_path))
    monkeypatch.setattr(commands, "_interrupt_cancels", lambda _event: None)

    assert cli.main(["selftest", "--mailbox", DISPATCH, "--keep"]) == 0

    out = capsys.readouterr().out
    assert out.startswith("Qargo mailbox self-test: PASSED")
    assert "Kept in the mailbox" in out
    kept = [
        m
        for m in sandbox.world.mail_store.messages(DISPATCH, "inbox")
        if SUBJECT_PREFIX in m.envelope.subject
    ]
    assert len(kept) == 1
    assert (MARKER_HEADER, kept[0].envelope.subject.split()[-1]) in kept[0].envelope.headers
