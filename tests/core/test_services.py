"""The admin's services against the sandbox: silent sign-in, who and which organisation."""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import requests.adapters

from qargo_desktop.core.errors import ApiError, NetworkError, SignInRequired
from qargo_desktop.core.http import cancel_scope
from qargo_desktop.core.services import NotSuperAdmin

ADMIN = "admin@northwind-haulage.example"
DISPATCHER = "dispatcher@northwind-haulage.example"
ME = "/api/v1/me"
ORGANISATION = "/api/v1/organisation"


class MeetingAdapter(requests.adapters.HTTPAdapter):
    """Holds each request to ``me`` and ``organisation`` until the other one has come too.

    Sent one after the other, the first would wait for nothing; the barrier breaks after
    its (generous) timeout and the request fails.
    """

    def __init__(self, inner: requests.adapters.BaseAdapter) -> None:
        super().__init__()
        self.inner = inner
        self.barrier = threading.Barrier(2, timeout=10)
        self.met: list[str] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        path = urlsplit(request.url or "").path
        if path in (ME, ORGANISATION):
            self.barrier.wait()
            self.met.append(path)
        return self.inner.send(request, **kwargs)


class AnsweredAdapter(requests.adapters.HTTPAdapter):
    """Calls ``then`` once ``me`` has been answered."""

    def __init__(self, inner: requests.adapters.BaseAdapter, then: Any) -> None:
        super().__init__()
        self.inner = inner
        self.then = then

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        response = self.inner.send(request, **kwargs)
        if urlsplit(request.url or "").path == ME:
            self.then()
        return response


def _signed_in_as(services: Any, browser: Any, account: str) -> Any:
    browser.account = account
    control = services.new_control()
    control.opener = browser
    try:
        services.sign_in_interactive(control)
    finally:
        browser.join()
    return services


def test_silent_sign_in_loads_who_and_which_organisation(admin: Any, sandbox: Any) -> None:
    session = admin.sign_in_silently()

    assert session.username == ADMIN
    assert session.me.is_super_admin
    assert session.organisation.name == sandbox.world.api_store.organisation_json()["name"]
    assert admin.organisation() is session.organisation


def test_me_and_organisation_are_asked_at_the_same_time(admin: Any) -> None:
    meeting = MeetingAdapter(admin.session.get_adapter("https://"))
    admin.session.mount("https://", meeting)

    session = admin.sign_in_silently()

    assert session.username == ADMIN
    assert sorted(meeting.met) == [ME, ORGANISATION]


def test_cancelling_the_sign_in_reaches_the_organisation_too(admin: Any, sandbox: Any) -> None:
    # Throttled for long, the organisation waits to be asked again; the sign-in's cancel
    # must end that wait, on the other thread too.
    sandbox.set_faults(
        rate_limit_probability=1.0, retry_after=30, services=("api",), paths=(ORGANISATION,)
    )
    cancel = threading.Event()
    answered = AnsweredAdapter(admin.session.get_adapter("https://"), cancel.set)
    admin.session.mount("https://", answered)

    with cancel_scope(cancel), pytest.raises(NetworkError):
        admin.sign_in_silently()

    assert not [t for t in threading.enumerate() if t.name.startswith("sign-in")]


def test_a_refused_organisation_fails_the_sign_in(admin: Any, sandbox: Any) -> None:
    sandbox.set_faults(
        unavailable_probability=1.0, retry_after=3600, services=("api",), paths=(ORGANISATION,)
    )

    with pytest.raises(ApiError) as caught:
        admin.sign_in_silently()

    assert caught.value.status == 503
    assert not [t for t in threading.enumerate() if t.name.startswith("sign-in")]


def test_someone_who_is_not_a_super_admin_is_refused(services: Any, browser: Any) -> None:
    with pytest.raises(NotSuperAdmin) as caught:
        _signed_in_as(services, browser, DISPATCHER)

    assert caught.value.username == DISPATCHER
    # The organisation, asked beside, was waited for: nothing runs on behind the refusal.
    assert not [t for t in threading.enumerate() if t.name.startswith("sign-in")]


def test_without_a_saved_sign_in_the_api_is_not_asked(services: Any, sandbox: Any) -> None:
    sandbox.world.faults.reset_counters()

    with pytest.raises(SignInRequired):
        services.sign_in_silently()

    asked = sandbox.world.faults.counters()["requests"]
    assert [r for r in asked if r["service"] == "api"] == []
