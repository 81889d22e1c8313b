"""Fixtures every test shares: a clean environment, an in-memory keyring, the sandbox."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest

from tests.memory_keyring import MemoryKeyring

# Before any QApplication exists: every test runs Qt offscreen, display or not.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # This machine sets these, and requests lets them override a session's own trust.
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "BROWSER"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost,::1")
    monkeypatch.setenv("QARGO_CONFIG_DIR", str(tmp_path / "qargo-config"))
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(autouse=True)
def memory_keyring() -> Iterator[MemoryKeyring]:
    """A fresh in-memory keyring as the default backend."""
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


@pytest.fixture(scope="session")
def sandbox_certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data folder per test session, so the local CA is generated once."""
    return tmp_path_factory.mktemp("sandbox-data")


@pytest.fixture
def sandbox(sandbox_certs: Path) -> Iterator[object]:
    """A fresh sandbox (all three services) on loopback, stopped after the test."""
    from qargo_desktop.sandbox.server import Sandbox
    from qargo_desktop.sandbox.world import SandboxOptions

    box = Sandbox(SandboxOptions(data_dir=sandbox_certs, delivery_delay_s=0.5, sync_delay_s=0.5))
    box.start()
    yield box
    box.stop()


@pytest.fixture(autouse=True)
def _no_leftover_threads() -> Iterator[None]:
    """Fail a test that leaves a sign-in listener or worker thread running."""
    before = set(threading.enumerate())
    yield
    leftover = [
        t
        for t in threading.enumerate()
        if t not in before and t.is_alive() and t.name.startswith(("browser-opener", "loopback"))
    ]
    for thread in leftover:
        thread.join(2)
    assert not [t.name for t in leftover if t.is_alive()]


@pytest.fixture
def settings_for(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Build Settings that point at a running sandbox (with a private config folder)."""
    from qargo_desktop.core.bootstrap import sandbox_overrides
    from qargo_desktop.core.config import load_settings

    def build(box: object, **overrides: object) -> object:
        values = {**sandbox_overrides(box.info), "config_dir": tmp_path / "app"}  # type: ignore[attr-defined]
        values.update(overrides)
        return load_settings(None, {}, values)

    return build


@pytest.fixture
def services(sandbox: object, settings_for):  # type: ignore[no-untyped-def]
    """Services pointed at the sandbox, with in-memory token caches."""
    from qargo_desktop.core.bootstrap import endpoints_for
    from qargo_desktop.core.http import build_session
    from qargo_desktop.core.services import Services

    settings = settings_for(sandbox)
    endpoints = endpoints_for(settings)
    session = build_session(settings)
    built = Services(endpoints, session, sign_in_timeout_s=20, http_timeout_s=10)
    yield built
    session.close()


class Browser:
    """A person at the sandbox sign-in page: picks an account, accepts or declines."""

    def __init__(self) -> None:
        self.account: str | None = None
        self.action = "accept"
        self.threads: list[threading.Thread] = []
        self.results: list[object] = []
        self.urls: list[str] = []

    def __call__(self, url: str) -> bool:
        from qargo_desktop.sandbox.browser import run

        self.urls.append(url)

        def act() -> None:
            self.results.append(run(url, self.account, self.action, say=lambda _line: None))

        thread = threading.Thread(target=act, name="scripted-browser", daemon=True)
        thread.start()
        self.threads.append(thread)
        return True

    def join(self) -> None:
        for thread in self.threads:
            thread.join(30)


@pytest.fixture
def browser() -> Iterator[Browser]:
    """The scripted browser, to pass as an InteractiveControl's opener."""
    person = Browser()
    yield person
    person.join()


@pytest.fixture
def admin(services, browser):  # type: ignore[no-untyped-def]
    """Services with the super admin signed in through the real interactive flow."""
    control = services.new_control()
    control.opener = browser
    services.sign_in_interactive(control)
    browser.join()
    return services
