"""Fixtures every test shares: a clean environment, an in-memory keyring, the sandbox."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest

from tests.memory_keyring import MemoryKeyring


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
