"""Fault injection: settings, determinism, and what a client really sees on the wire."""

from __future__ import annotations

import email.utils
import time
from typing import Any

import pytest
import requests

from qargo_desktop.sandbox.faults import FaultMiddleware, Faults
from qargo_desktop.sandbox.server import Sandbox
from qargo_desktop.sandbox.world import ADMIN_SCOPE
from tests.sandbox.openapi_check import ContractSession

DOMAIN = "northwind-haulage.example"
MAILBOXES = "/v1/organisation/linked-mailboxes"
SEND_PATH = "/graph/v1.0/me/sendMail"


def api_session(sandbox: Sandbox) -> ContractSession:
    token = sandbox.world.identity.issue_tokens(f"admin@{DOMAIN}", [ADMIN_SCOPE])["access_token"]
    info = sandbox.info
    return ContractSession(str(info.ca_certificate), info.api_base_url, token)


def plain_session(sandbox: Sandbox) -> requests.Session:
    client = requests.Session()
    client.trust_env = False
    client.verify = str(sandbox.info.ca_certificate)
    return client


# Settings and decisions, without a server


def test_settings_are_validated_and_partial() -> None:
    faults = Faults()
    faults.update(rate_limit_probability=0.5, services=["api"])
    faults.update(latency_s=0.1)
    assert faults.settings.rate_limit_probability == 0.5
    assert faults.settings.services == ("api",)
    assert faults.settings.latency_s == 0.1
    for bad in (
        {"rate_limit_probability": 2},
        {"rate_limit_probability": True},
        {"latency_s": -1},
        {"retry_after": "tomorrow"},
        {"services": ["smtp"]},
        {"drop_phase": "during"},
        {"lose_mail": "yes"},
        {"colour": "red"},
    ):
        with pytest.raises(ValueError):
            faults.update(**bad)
    assert faults.settings.rate_limit_probability == 0.5
    faults.reset()
    assert faults.settings.rate_limit_probability == 0.0


def test_decisions_are_seeded_and_scoped() -> None:
    def run(seed: int) -> list[str | None]:
        faults = Faults(seed=seed, settings={"unavailable_probability": 0.5})
        return [faults.decide("api", "GET", "/api/v1/me").action for _ in range(50)]

    assert run(1) == run(1)
    assert run(1) != run(2)
    assert {"unavailable", None} == set(run(1))

    faults = Faults(settings={"drop_probability": 1.0, "services": ["graph"], "paths": [SEND_PATH]})
    assert faults.decide("api", "POST", SEND_PATH).action is None
    assert faults.decide("graph", "GET", "/graph/v1.0/me").action is None
    assert faults.decide("graph", "POST", SEND_PATH).action == "drop"
    faults.update(methods=["get"])
    assert faults.decide("graph", "POST", SEND_PATH).action is None
    assert faults.request_count() == 4
    assert faults.request_count(service="graph", method="post", path=SEND_PATH) == 2
    assert faults.injected_count(action="drop") == 1


def test_max_faults_makes_the_next_n_requests_fail() -> None:
    faults = Faults(settings={"rate_limit_probability": 1.0, "max_faults": 2})
    actions = [faults.decide("api", "GET", "/x").action for _ in range(4)]
    assert actions == ["rate_limit", "rate_limit", None, None]
    faults.update(max_faults=1)
    assert faults.decide("api", "GET", "/x").action == "rate_limit"


def test_retry_after_formats() -> None:
    faults = Faults(settings={"retry_after": 7})
    assert faults.retry_after_header() == "7"
    faults.update(retry_after="http-date", retry_after_s=30)
    when = email.utils.parsedate_to_datetime(faults.retry_after_header()).timestamp()
    assert 29 <= when - time.time() <= 32


def test_mail_knobs_wait_for_the_mail_system() -> None:
    faults = Faults(settings={"never_sync": True, "delivery_delay_s": 9})
    assert faults.snapshot()["never_sync"] is True
    received: dict[str, Any] = {}
    faults.attach_mail(lambda **kw: received.update(kw), lambda: dict(received))
    assert received == {"never_sync": True, "delivery_delay_s": 9.0}
    faults.update(lose_mail=True)
    assert faults.snapshot()["lose_mail"] is True


def test_latency_uses_the_sleep_given() -> None:
    slept: list[float] = []
    faults = Faults(settings={"latency_s": 0.5, "latency_jitter_s": 0.25})

    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        return None

    middleware = FaultMiddleware(app, "api", faults, sleep=slept.append)
    body = middleware({"REQUEST_METHOD": "GET", "PATH_INFO": "/api/v1/me"}, start_response)
    assert list(body) == [b"ok"]
    assert 0.5 <= slept[0] <= 0.75


# On the wire


def test_rate_limit_on_the_api_is_a_contract_problem(sandbox: Sandbox) -> None:
    api = api_session(sandbox)
    sandbox.set_faults(rate_limit_probability=1.0, retry_after=3, services=["api"])
    limited = api.get(MAILBOXES)
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "3"
    assert limited.json()["code"] == "rate_limited"

    sandbox.set_faults(retry_after="http-date", retry_after_s=5)
    dated = api.get(MAILBOXES)
    assert email.utils.parsedate_to_datetime(dated.headers["Retry-After"]).timestamp() > time.time()

    sandbox.set_faults(rate_limit_probability=0.0, unavailable_probability=1.0, retry_after=2)
    down = api.get(MAILBOXES)
    assert (down.status_code, down.headers["Retry-After"]) == (503, "2")
    assert down.json()["code"] == "service_unavailable"


def test_graph_and_identity_faults_use_their_own_shapes(sandbox: Sandbox) -> None:
    client = plain_session(sandbox)
    sandbox.set_faults(rate_limit_probability=1.0, retry_after=1, services=["graph", "identity"])
    throttled = client.get(f"{sandbox.info.graph_base_url}/me/messages")
    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "1"
    assert throttled.json()["error"]["code"] == "ApplicationThrottled"
    assert throttled.json()["error"]["innerError"]["request-id"]

    discovery = f"{sandbox.info.authority}/v2.0/.well-known/openid-configuration"
    refused = client.get(discovery)
    assert refused.status_code == 429
    assert refused.json()["error"] == "temporarily_unavailable"
    sandbox.set_faults(services=["graph"])
    assert client.get(discovery).status_code == 200


def test_dropped_connection_before_the_service_sees_it(sandbox: Sandbox) -> None:
    api = api_session(sandbox)
    target = api.get(MAILBOXES).json()["items"][0]
    sandbox.set_faults(drop_probability=1.0, services=["api"], max_faults=1)
    with pytest.raises(requests.ConnectionError):
        api.post(f"{MAILBOXES}/{target['id']}/reset", headers={"If-Match": target["etag"]})
    after = api.get(f"{MAILBOXES}/{target['id']}").json()
    assert after["etag"] == target["etag"]
    assert sandbox.world.faults.injected_count(service="api", action="drop") == 1


def test_dropped_connection_after_the_change_loses_only_the_response(sandbox: Sandbox) -> None:
    api = api_session(sandbox)
    sandbox.set_faults(drop_probability=1.0, drop_phase="after", services=["api"], methods=["POST"])
    with pytest.raises(requests.ConnectionError):
        api.post(MAILBOXES, json={"address": f"lost.reply@{DOMAIN}"})
    sandbox.set_faults(drop_probability=0.0)
    listed = api.get(MAILBOXES, params={"limit": 500}).json()["items"]
    assert f"lost.reply@{DOMAIN}" in {m["address"] for m in listed}


def test_truncated_body(sandbox: Sandbox) -> None:
    api = api_session(sandbox)
    api.check = False
    sandbox.set_faults(truncate_probability=1.0, services=["api"])
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.ConnectionError)):
        api.get(MAILBOXES)
    streamed = api.get(MAILBOXES, stream=True)
    announced = int(streamed.headers["Content-Length"])
    received = b""
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.ConnectionError)):
        for chunk in streamed.iter_content(1024):
            received += chunk
    assert 0 < len(received) < announced


def test_latency_on_the_wire(sandbox: Sandbox) -> None:
    api = api_session(sandbox)
    sandbox.set_faults(latency_s=0.3, services=["api"])
    started = time.perf_counter()
    assert api.get("/v1/me").status_code == 200
    assert time.perf_counter() - started >= 0.3


def test_control_endpoint_and_counters(sandbox: Sandbox) -> None:
    control = plain_session(sandbox)
    faults_url = f"{sandbox.info.control_url}/faults"
    body = control.put(faults_url, json={"unavailable_probability": 1.0, "services": ["api"]})
    assert body.status_code == 200
    assert body.json()["settings"]["unavailable_probability"] == 1.0
    assert body.json()["settings"]["delivery_delay_s"] == sandbox.options.delivery_delay_s
    assert api_session(sandbox).get("/v1/me").status_code == 503

    bad = control.put(faults_url, json={"unavailable_probability": 3})
    assert bad.status_code == 400
    assert control.delete(faults_url).json()["settings"]["unavailable_probability"] == 0.0
    assert api_session(sandbox).get("/v1/me").status_code == 200

    counters = control.get(f"{faults_url}/counters").json()
    me_counts = [r for r in counters["requests"] if r["path"] == "/api/v1/me"]
    assert sum(r["count"] for r in me_counts) == 2
    control.delete(f"{faults_url}/counters")
    assert sandbox.world.faults.request_count(service="api") == 0
    assert control.get(faults_url, headers={}).status_code == 200


def test_exactly_one_send_is_countable_and_mail_knobs_apply(sandbox: Sandbox) -> None:
    token = sandbox.world.identity.issue_tokens(
        f"dispatch@{DOMAIN}", ["https://graph.microsoft.com/Mail.Send"]
    )["access_token"]
    graph = plain_session(sandbox)
    graph.headers["Authorization"] = f"Bearer {token}"
    sandbox.set_faults(lose_mail=True, delivery_delay_s=0.0)
    response = graph.post(
        f"{sandbox.info.graph_base_url}/me/sendMail",
        json={
            "message": {
                "subject": "Lost on purpose",
                "toRecipients": [{"emailAddress": {"address": f"planning@{DOMAIN}"}}],
            }
        },
    )
    assert response.status_code == 202
    faults = sandbox.world.faults
    assert faults.request_count(service="graph", method="POST", path=SEND_PATH) == 1
    mail = sandbox.world.mail_store
    assert mail.sent_count == 1
    assert mail.sent[0].lost
    sandbox.world.clock.advance(5)
    assert not [
        m for m in mail.messages(f"planning@{DOMAIN}") if m.envelope.subject == "Lost on purpose"
    ]
