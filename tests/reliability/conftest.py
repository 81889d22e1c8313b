"""What the reliability tests share: a person at the sandbox sign-in page who reloads a page
that failed, services on the encrypted token cache, and a watch on stray threads."""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from qargo_desktop.core.http import RetryPolicy

DOMAIN = "northwind-haulage.example"
ADMIN = f"admin@{DOMAIN}"


class Person:
    """A person at the sandbox sign-in page, acting from another thread as a browser would.

    Unlike the shared scripted browser, a page that fails to load (a proxy's 503, a cut
    connection) is loaded again, as a person would press reload.

    Attributes:
        account: The account to pick (None: the preselected one).
        action: ``accept``, ``decline`` or ``ignore``.
        reloads: Pages that had to be loaded again.
        gave_up: Sign-ins the person abandoned after repeated failures.
    """

    def __init__(self, *, attempts: int = 4) -> None:
        self.account: str | None = None
        self.action = "accept"
        self.attempts = attempts
        self.urls: list[str] = []
        self.threads: list[threading.Thread] = []
        self.reloads = 0
        self.gave_up = 0
        self._lock = threading.Lock()

    def __call__(self, url: str) -> bool:
        from qargo_desktop.sandbox.browser import BrowserError, run

        account, action = self.account, self.action
        self.urls.append(url)

        def act() -> None:
            for _attempt in range(self.attempts):
                try:
                    result = run(url, account, action, timeout_s=10, say=lambda _line: None)
                except (BrowserError, requests.RequestException):
                    with self._lock:
                        self.reloads += 1
                    continue
                if result.outcome in ("returned", "ignored"):
                    return
                with self._lock:
                    self.reloads += 1
            with self._lock:
                self.gave_up += 1

        thread = threading.Thread(target=act, name="scripted-person", daemon=True)
        thread.start()
        self.threads.append(thread)
        return True

    def join(self, timeout_s: float = 30.0) -> None:
        """Wait for every page the person is still on."""
        for thread in self.threads:
            thread.join(timeout_s)
        self.threads = [t for t in self.threads if t.is_alive()]


@pytest.fixture
def person() -> Iterator[Person]:
    """A person at the sign-in page; joined at the end of the test."""
    someone = Person()
    yield someone
    someone.join()


def fast_retry_policy() -> RetryPolicy:
    """The shipped retry rules with short waits, so a soak of hundreds of calls stays quick.

    ``Retry-After`` is still honoured as the server sends it; only the backoff without one
    and the total budget are shorter.
    """
    return RetryPolicy(backoff_base_s=0.02, backoff_max_s=0.2, total_wait_budget_s=4.0)


def build_services(
    sandbox: Any,
    settings_for: Any,
    data_dir: Path,
    *,
    retry_policy: RetryPolicy | None = None,
    sign_in_timeout_s: float = 20.0,
    http_timeout_s: float = 10.0,
) -> Any:
    """Services on the sandbox with both token caches encrypted on disk under ``data_dir``.

    The same wiring as ``core.bootstrap.build_services``, minus the production checks.
    """
    from qargo_desktop.core.bootstrap import endpoints_for
    from qargo_desktop.core.http import build_session
    from qargo_desktop.core.services import Services
    from qargo_desktop.core.token_cache import EncryptedTokenCache

    settings = settings_for(sandbox)
    endpoints = endpoints_for(settings)
    session = build_session(settings, retry_policy=retry_policy)
    admin_store = EncryptedTokenCache(data_dir / "token_cache.bin", app_id=settings.client_id)
    mailbox_store = EncryptedTokenCache(
        data_dir / "mailbox_token_cache.bin",
        app_id=f"{settings.client_id}/mailboxes",
        key_username="mailbox-token-cache-key",
    )
    return Services(
        endpoints,
        session,
        admin_store=admin_store,
        mailbox_store=mailbox_store,
        sign_in_timeout_s=sign_in_timeout_s,
        http_timeout_s=http_timeout_s,
    )


def listening(address: tuple[str, int] | None) -> bool:
    """Whether something still accepts connections at ``address``."""
    if address is None:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1)
        return probe.connect_ex(address) == 0


def fragments(secret: str, size: int = 24) -> set[str]:
    """Pieces of a secret that must not show anywhere: any run of ``size`` characters.

    A JWT's header and payload are claims (type, key id, names, ids) that are shown in
    other forms on purpose and whose base64 repeats in other public values (MSAL's
    ``client_info``); its signature is what makes it a credential, so that is what counts.
    """
    if secret.startswith("eyJ") and secret.count(".") >= 2:
        secret = secret.rsplit(".", 1)[1]
    if len(secret) <= size:
        return {secret}
    return {secret[i : i + size] for i in range(0, len(secret) - size + 1, size // 2)} | {
        secret[-size:]
    }


def leaked(text: str, secrets: set[str]) -> list[str]:
    """The secrets (shortened) of which a piece appears in ``text``."""
    return [s[:10] + "..." for s in secrets if any(f in text for f in fragments(s))]


APP_THREAD_PREFIXES = ("browser-opener", "loopback")


def app_threads() -> list[str]:
    """Names of live threads the app's sign-in machinery started."""
    return [t.name for t in threading.enumerate() if t.name.startswith(APP_THREAD_PREFIXES)]


@pytest.fixture
def unhandled() -> Iterator[list[str]]:
    """Collect exceptions that escaped any thread, and objects that failed to close."""
    seen: list[str] = []
    previous_thread_hook = threading.excepthook
    previous_unraisable = sys.unraisablehook

    def thread_hook(args: Any) -> None:
        name = args.thread.name if args.thread is not None else "?"
        seen.append(f"thread {name}: {args.exc_type.__name__}: {args.exc_value}")

    def unraisable_hook(args: Any) -> None:
        seen.append(f"unraisable: {args.exc_type.__name__}: {args.exc_value}")

    threading.excepthook = thread_hook
    sys.unraisablehook = unraisable_hook
    try:
        yield seen
    finally:
        threading.excepthook = previous_thread_hook
        sys.unraisablehook = previous_unraisable
