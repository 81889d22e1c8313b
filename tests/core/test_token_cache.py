"""The encrypted token cache: round trips, keyring refusals, tampering, locking, crashes."""

from __future__ import annotations

import base64
import json
import multiprocessing
import os
import secrets
import sys
import threading
import time
from pathlib import Path
from typing import Any

import keyring
import keyring.backend
import keyring.core
import msal
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from keyring.backends import chainer, fail, null

from qargo_desktop.core import token_cache as token_cache_module
from qargo_desktop.core.logs import redact
from qargo_desktop.core.token_cache import (
    FORMAT_VERSION,
    KEY_USERNAME,
    KEYRING_SERVICE,
    EncryptedTokenCache,
    TokenCacheBusy,
    choose_keyring_backend,
    keyring_refusal,
)
from tests.core.memory_keyring import (
    BrokenKeyring,
    ForgetfulKeyring,
    LowPriorityKeyring,
    MemoryKeyring,
    PlaintextKeyring,
    preloaded,
)

CLIENT_ID = "0b6f8a2e-3c51-4d7e-9a6b-2f1c8e4d5a70"
TENANT = "7d1c2b3a-0000-4000-8000-00000000abcd"
API_SCOPE = "api://qargo-sandbox/Organisation.Manage"
RT = msal.TokenCache.CredentialType.REFRESH_TOKEN
AT = msal.TokenCache.CredentialType.ACCESS_TOKEN
ACCOUNT = msal.TokenCache.CredentialType.ACCOUNT

SPAWN = multiprocessing.get_context("spawn")


# -- building MSAL events -------------------------------------------------------------------


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def _event(
    username: str,
    *,
    access_token: str | None = None,
    refresh_token: str | None = None,
    scopes: tuple[str, ...] = (API_SCOPE,),
    expires_in: int = 3600,
    uid: str | None = None,
) -> dict[str, Any]:
    uid = uid or username.split("@", maxsplit=1)[0]
    id_token = ".".join(
        [
            _b64({"alg": "none", "typ": "JWT"}),
            _b64(
                {
                    "preferred_username": username,
                    "oid": uid,
                    "sub": uid,
                    "tid": TENANT,
                    "aud": CLIENT_ID,
                    "iss": f"https://login.sandbox.invalid/{TENANT}/v2.0",
                }
            ),
            "signature",
        ]
    )
    return {
        "client_id": CLIENT_ID,
        "scope": list(scopes),
        "token_endpoint": f"https://login.sandbox.invalid/{TENANT}/oauth2/v2.0/token",
        "grant_type": "authorization_code",
        "data": {},
        "response": {
            "access_token": access_token or "AT-" + secrets.token_urlsafe(24),
            "refresh_token": refresh_token or "RT-" + secrets.token_urlsafe(24),
            "id_token": id_token,
            "client_info": _b64({"uid": uid, "utid": TENANT}),
            "expires_in": expires_in,
            "token_type": "Bearer",
        },
    }


def _open(path: Path, **options: Any) -> EncryptedTokenCache:
    cache = EncryptedTokenCache(path, app_id=options.pop("app_id", CLIENT_ID), **options)
    cache.open()
    return cache


def _usernames(cache: EncryptedTokenCache) -> set[str]:
    return {a["username"] for a in cache.search(ACCOUNT)}


def _refresh_tokens(cache: EncryptedTokenCache) -> set[str]:
    return {rt["secret"] for rt in cache.search(RT)}


@pytest.fixture
def cache_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "token_cache.bin"


# -- round trips ----------------------------------------------------------------------------


def test_round_trip_between_instances(cache_path: Path, memory_keyring: MemoryKeyring) -> None:
    first = _open(cache_path)
    assert first.persistent
    assert first.problem is None
    first.add(_event("admin@northwind-haulage.example", refresh_token="RT-one"))

    second = _open(cache_path)

    assert _usernames(second) == {"admin@northwind-haulage.example"}
    assert _refresh_tokens(second) == {"RT-one"}
    assert second.serialize() == first.serialize()
    assert cache_path.parent.is_dir()


@pytest.mark.parametrize("minimum_size", [7_000, 100_000])
def test_large_caches_round_trip_byte_for_byte(
    cache_path: Path, minimum_size: int, memory_keyring: MemoryKeyring
) -> None:
    cache = _open(cache_path)
    index = 0
    while len(cache.serialize()) < minimum_size:
        cache.add(
            _event(
                f"mailbox{index}@northwind-haulage.example",
                access_token="AT-" + secrets.token_urlsafe(900),
                scopes=(API_SCOPE, f"https://graph.microsoft.com/Scope{index}"),
            )
        )
        index += 1
    expected = cache.serialize()
    assert len(expected) >= minimum_size

    reopened = _open(cache_path)

    assert reopened.serialize() == expected
    # Only the key is in the keyring, whatever the cache's size.
    assert list(memory_keyring.secrets) == [(KEYRING_SERVICE, KEY_USERNAME)]
    stored = memory_keyring.secrets[(KEYRING_SERVICE, KEY_USERNAME)]
    assert len(stored) == 44
    assert len(base64.b64decode(stored)) == 32


def test_the_file_holds_no_readable_secret(cache_path: Path, memory_keyring: MemoryKeyring) -> None:
    cache = _open(cache_path)
    event = _event("admin@northwind-haulage.example")
    cache.add(event)
    blob = cache_path.read_bytes()
    key = memory_keyring.secrets[(KEYRING_SERVICE, KEY_USERNAME)]

    response = event["response"]
    for secret in (response["access_token"], response["refresh_token"], response["id_token"], key):
        for form in (
            secret.encode(),
            base64.b64encode(secret.encode()),
            base64.urlsafe_b64encode(secret.encode()).rstrip(b"="),
        ):
            assert form not in blob
    for readable in (
        b"admin@",
        b"secret",
        b"RefreshToken",
        b"home_account_id",
        b'"credential_type"',
    ):
        assert readable not in blob
    assert blob[:4] == b"QDTC"
    assert blob[4] == FORMAT_VERSION
    if os.name == "posix":
        assert cache_path.stat().st_mode & 0o077 == 0


def test_the_key_is_redacted_from_logs(cache_path: Path, memory_keyring: MemoryKeyring) -> None:
    _open(cache_path)
    stored = memory_keyring.secrets[(KEYRING_SERVICE, KEY_USERNAME)]
    assert stored not in redact(f"keyring said {stored}")


def test_each_write_uses_a_fresh_nonce(cache_path: Path) -> None:
    cache = _open(cache_path)
    cache.add(_event("a@x.example"))
    first = cache_path.read_bytes()
    cache.has_state_changed = True
    with cache.transaction():
        pass
    second = cache_path.read_bytes()
    assert first[13:25] != second[13:25]
    assert first != second


# -- keyring refusals -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backend", "reason"),
    [
        (fail.Keyring(), "no system keyring"),  # type: ignore[no-untyped-call]
        (null.Keyring(), "turned off"),  # type: ignore[no-untyped-call]
        (PlaintextKeyring(), "plain file"),
        (LowPriorityKeyring(), "not a recommended keyring"),
    ],
)
def test_unacceptable_keyrings_keep_tokens_in_memory(
    cache_path: Path, backend: Any, reason: str
) -> None:
    keyring.set_keyring(backend)
    cache = _open(cache_path)

    cache.add(_event("admin@northwind-haulage.example", refresh_token="RT-memory"))

    assert not cache.persistent
    assert cache.problem is not None
    assert reason in cache.problem
    assert "until the app closes" in cache.problem
    assert _refresh_tokens(cache) == {"RT-memory"}  # still works in memory
    with cache.transaction():
        pass
    assert list(cache_path.parent.iterdir()) == [] if cache_path.parent.exists() else True
    assert getattr(backend, "secrets", {}) == {}
    assert cache.describe()["persistent"] is False


@pytest.mark.parametrize("backend", [BrokenKeyring(), ForgetfulKeyring()])  # type: ignore[no-untyped-call]
def test_keyrings_that_fail_keep_tokens_in_memory(cache_path: Path, backend: Any) -> None:
    cache = _open(cache_path, keyring_backend=backend)
    cache.add(_event("admin@northwind-haulage.example"))
    assert not cache.persistent
    assert "keyring" in (cache.problem or "")
    assert not cache_path.exists()


def test_problem_is_shown_once(cache_path: Path) -> None:
    cache = _open(cache_path, keyring_backend=fail.Keyring())  # type: ignore[no-untyped-call]
    assert cache.take_problem() is not None
    assert cache.take_problem() is None
    assert cache.problem is None


def test_a_chainer_is_looked_through(monkeypatch: pytest.MonkeyPatch) -> None:
    memory = MemoryKeyring()
    monkeypatch.setattr(chainer.ChainerBackend, "backends", [PlaintextKeyring(), memory])
    chosen, refusal = choose_keyring_backend(chainer.ChainerBackend())  # type: ignore[no-untyped-call]
    assert chosen is memory
    assert refusal is None

    monkeypatch.setattr(chainer.ChainerBackend, "backends", [PlaintextKeyring()])
    chosen, refusal = choose_keyring_backend(chainer.ChainerBackend())  # type: ignore[no-untyped-call]
    assert chosen is None
    assert "plain file" in (refusal or "")


def test_memory_keyring_is_accepted() -> None:
    assert keyring_refusal(MemoryKeyring()) is None


def test_nothing_happens_before_first_use(cache_path: Path, memory_keyring: MemoryKeyring) -> None:
    EncryptedTokenCache(cache_path, app_id=CLIENT_ID)
    assert memory_keyring.secrets == {}
    assert not cache_path.parent.exists()


# -- which keyring: the OS's, without loading every backend ------------------------------


def _secret_service_runs() -> bool:
    try:
        from keyring.backends import SecretService

        return bool(SecretService.Keyring.priority)
    except Exception:
        return False


@pytest.fixture
def nobody_chose(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """keyring as a new process finds it: no backend set, nothing configured.

    Returns the list in which each run of keyring's full detection is recorded.
    """
    monkeypatch.setattr(keyring.core, "_keyring_backend", None)
    monkeypatch.delenv("PYTHON_KEYRING_BACKEND", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "config"))
    detections: list[str] = []
    everything = keyring.backend.get_all_keyring

    def recorded() -> list[Any]:
        detections.append("every backend loaded")
        return list(everything())

    monkeypatch.setattr(keyring.backend, "get_all_keyring", recorded)
    return detections


def _os_keyring_is(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setattr(token_cache_module, "_PLATFORM_BACKENDS", {})
    monkeypatch.setattr(token_cache_module, "_SECRET_SERVICE_BACKEND", name)


@pytest.mark.skipif(not _secret_service_runs(), reason="needs a Secret Service (scripts/test)")
def test_the_secret_service_is_taken_directly(nobody_chose: list[str]) -> None:
    chosen, refusal = choose_keyring_backend()

    assert token_cache_module.backend_name(chosen) == "keyring.backends.SecretService.Keyring"
    assert refusal is None
    assert keyring.get_keyring() is chosen
    assert nobody_chose == []

    # keyring's own detection leads to the same backend.
    keyring.core.init_backend()
    detected, _refusal = choose_keyring_backend(keyring.get_keyring())
    assert nobody_chose  # keyring loaded every backend
    assert type(detected) is type(chosen)


def test_the_os_keyring_becomes_the_default(
    nobody_chose: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _os_keyring_is(monkeypatch, "tests.core.memory_keyring.MemoryKeyring")

    chosen, refusal = choose_keyring_backend()

    assert isinstance(chosen, MemoryKeyring) and refusal is None
    assert keyring.get_keyring() is chosen
    assert nobody_chose == []


def test_an_unusable_os_keyring_is_left_to_keyring_detection(
    nobody_chose: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not on macOS: its backend says it is not usable here.
    _os_keyring_is(monkeypatch, "keyring.backends.macOS.Keyring")
    if sys.platform == "darwin":
        pytest.skip("the macOS keyring is usable here")

    chosen, _refusal = choose_keyring_backend()

    assert nobody_chose  # keyring loaded every backend
    assert token_cache_module.backend_name(chosen) != "keyring.backends.macOS.Keyring"


def test_a_backend_named_in_the_environment_is_kept(
    nobody_chose: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "tests.core.memory_keyring.LowPriorityKeyring")
    _os_keyring_is(monkeypatch, "tests.core.memory_keyring.MemoryKeyring")

    chosen, refusal = choose_keyring_backend()

    # The person's choice stands, and is still judged: it is not a recommended keyring.
    assert chosen is None
    assert "not a recommended keyring" in (refusal or "")
    assert isinstance(keyring.get_keyring(), LowPriorityKeyring)


def test_a_backend_named_in_keyrings_configuration_is_kept(
    nobody_chose: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = token_cache_module._keyring_config_file()
    config.parent.mkdir(parents=True)
    config.write_text("[backend]\ndefault-keyring=tests.core.memory_keyring.PlaintextKeyring\n")
    _os_keyring_is(monkeypatch, "tests.core.memory_keyring.MemoryKeyring")

    chosen, refusal = choose_keyring_backend()

    assert chosen is None
    assert "plain file" in (refusal or "")
    assert isinstance(keyring.get_keyring(), PlaintextKeyring)


def test_a_backend_set_by_the_program_is_kept(
    memory_keyring: MemoryKeyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    _os_keyring_is(monkeypatch, "tests.core.memory_keyring.PlaintextKeyring")

    assert choose_keyring_backend() == (memory_keyring, None)


# -- damaged files --------------------------------------------------------------------------


def _tamper_flip(blob: bytes) -> bytes:
    return blob[:-5] + bytes([blob[-5] ^ 0x01]) + blob[-4:]


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (_tamper_flip, "cannot be decrypted"),
        (lambda blob: blob[:20], "truncated"),
        (lambda blob: blob[: len(blob) // 2], "cannot be decrypted"),
        (lambda blob: b"", "truncated"),
        (lambda blob: os.urandom(300), "not a token cache"),
        (lambda blob: b'{"AccessToken": {}}' * 3, "not a token cache"),
        (lambda blob: blob[:4] + b"\x02" + blob[5:], "format version 2"),
        (lambda blob: blob[:5] + b"\x00" * 8 + blob[13:], "another app registration"),
    ],
)
def test_damaged_file_is_set_aside(
    cache_path: Path, tamper: Any, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    _open(cache_path).add(_event("admin@northwind-haulage.example"))
    damaged = tamper(cache_path.read_bytes())
    cache_path.write_bytes(damaged)

    cache = _open(cache_path)

    assert cache.persistent
    assert reason in (cache.problem or "")
    assert "sign in again" in (cache.problem or "")
    assert _usernames(cache) == set()
    aside = list(cache_path.parent.glob("token_cache.bin.corrupt-*"))
    assert len(aside) == 1
    assert aside[0].read_bytes() == damaged  # kept for support
    assert not cache_path.exists()
    # The cache works again from empty and is saved normally.
    cache.add(_event("admin2@northwind-haulage.example"))
    assert _usernames(_open(cache_path)) == {"admin2@northwind-haulage.example"}


def test_wrong_key_sets_the_file_aside(cache_path: Path, memory_keyring: MemoryKeyring) -> None:
    _open(cache_path).add(_event("admin@northwind-haulage.example"))
    memory_keyring.secrets[(KEYRING_SERVICE, KEY_USERNAME)] = base64.b64encode(
        os.urandom(32)
    ).decode()

    cache = _open(cache_path)

    assert "encrypted with another key" in (cache.problem or "")
    assert _usernames(cache) == set()


def test_lost_key_makes_a_new_one_and_sets_the_file_aside(
    cache_path: Path, memory_keyring: MemoryKeyring
) -> None:
    _open(cache_path).add(_event("admin@northwind-haulage.example"))
    old_key = memory_keyring.secrets.pop((KEYRING_SERVICE, KEY_USERNAME))

    cache = _open(cache_path)

    assert cache.persistent
    assert memory_keyring.secrets[(KEYRING_SERVICE, KEY_USERNAME)] != old_key
    assert len(list(cache_path.parent.glob("*.corrupt-*"))) == 1


def test_damaged_key_is_replaced(cache_path: Path, memory_keyring: MemoryKeyring) -> None:
    memory_keyring.secrets[(KEYRING_SERVICE, KEY_USERNAME)] = "not base64!"
    cache = _open(cache_path)
    assert cache.persistent
    stored = memory_keyring.secrets[(KEYRING_SERVICE, KEY_USERNAME)]
    assert len(base64.b64decode(stored)) == 32


def test_valid_encryption_of_garbage_is_set_aside(
    cache_path: Path, memory_keyring: MemoryKeyring
) -> None:
    cache = _open(cache_path)
    cache.add(_event("a@x.example"))
    key = base64.b64decode(memory_keyring.secrets[(KEYRING_SERVICE, KEY_USERNAME)])
    header = cache_path.read_bytes()[:13]
    nonce = os.urandom(12)
    associated = header + b"|" + CLIENT_ID.encode()
    cache_path.write_bytes(header + nonce + AESGCM(key).encrypt(nonce, b"[1, 2]", associated))

    reopened = _open(cache_path)
    assert "not a token cache" in (reopened.problem or "")


def test_save_failure_is_reported_and_retried(
    cache_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = _open(cache_path)

    def refuse(path: Path, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(token_cache_module, "atomic_write", refuse)
        cache.add(_event("admin@northwind-haulage.example"))
    assert "could not be saved" in (cache.problem or "")
    assert cache.has_state_changed
    assert not cache_path.exists()

    with cache.transaction():
        pass
    assert _usernames(_open(cache_path)) == {"admin@northwind-haulage.example"}


# -- two instances --------------------------------------------------------------------------


def test_a_second_instance_sees_a_rotated_refresh_token(cache_path: Path) -> None:
    first = _open(cache_path)
    second = _open(cache_path)
    first.add(_event("admin@northwind-haulage.example", refresh_token="RT-1"))
    assert _refresh_tokens(second) == {"RT-1"}

    with first.transaction():
        (rt_item,) = first.search(RT)
        first.update_rt(rt_item, "RT-2")

    with second.transaction():
        assert _refresh_tokens(second) == {"RT-2"}


def test_unsaved_changes_merge_with_what_another_instance_saved(
    cache_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _open(cache_path)
    second = _open(cache_path)
    with monkeypatch.context() as patch:
        patch.setattr(token_cache_module, "atomic_write", _raise_oserror)
        first.add(_event("one@x.example"))
    second.add(_event("two@x.example"))

    with first.transaction():
        pass

    assert _usernames(_open(cache_path)) == {"one@x.example", "two@x.example"}


def _raise_oserror(path: Path, data: bytes) -> None:
    raise OSError(5, "I/O error")


def test_expired_tokens_are_removed_without_deadlock(cache_path: Path) -> None:
    cache = _open(cache_path)
    cache.add(_event("admin@x.example", expires_in=-10))
    assert list(cache.search(AT)) == []  # MSAL removes it during the search
    assert list(_open(cache_path).search(AT)) == []


def test_threads_share_one_instance(cache_path: Path) -> None:
    cache = _open(cache_path)
    errors: list[BaseException] = []

    def work(prefix: str) -> None:
        try:
            for index in range(10):
                with cache.transaction():
                    cache.add(_event(f"{prefix}{index}@x.example"))
                    list(cache.search(RT))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(p,)) for p in ("a", "b", "c")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert len(_usernames(_open(cache_path))) == 30


def test_clear_forgets_everything(cache_path: Path) -> None:
    cache = _open(cache_path)
    cache.add(_event("admin@x.example"))
    cache.clear()
    assert _usernames(_open(cache_path)) == set()


def test_describe_lists_accounts_and_expiry_but_no_token(cache_path: Path) -> None:
    cache = _open(cache_path)
    event = _event("admin@northwind-haulage.example", uid="oid-1")
    cache.add(event)

    described = cache.describe()

    assert described["persistent"] is True
    assert described["backend"].endswith("MemoryKeyring")
    assert described["file"] == str(cache_path)
    assert described["file_exists"] is True
    assert described["accounts"] == [
        {
            "username": "admin@northwind-haulage.example",
            "home_account_id": f"oid-1.{TENANT}",
            "environment": "login.sandbox.invalid",
            "realm": TENANT,
        }
    ]
    (token,) = described["access_tokens"]
    assert token["scopes"] == [API_SCOPE]
    assert token["expires_at"].endswith("Z")
    assert token["expired"] is False
    assert len(described["refresh_tokens"]) == 1
    text = json.dumps(described)
    for secret in (
        event["response"]["access_token"],
        event["response"]["refresh_token"],
        event["response"]["id_token"],
    ):
        assert secret not in text


# -- several processes ----------------------------------------------------------------------


def _key_secrets() -> dict[tuple[str, str], str]:
    return {(KEYRING_SERVICE, KEY_USERNAME): base64.b64encode(os.urandom(32)).decode()}


def _child_cache(path: str, keys: dict[tuple[str, str], str]) -> EncryptedTokenCache:
    return _open(Path(path), keyring_backend=preloaded(keys))


def _hold_lock(path: str, keys: dict[tuple[str, str], str], held: Any, hold_s: float) -> None:
    cache = _child_cache(path, keys)
    with cache.transaction():
        held.set()
        time.sleep(hold_s)
        cache.add(_event("child@x.example", refresh_token="RT-child"))


def _add_many(path: str, keys: dict[tuple[str, str], str], prefix: str, go: Any) -> None:
    cache = _child_cache(path, keys)
    go.wait(30)
    for index in range(15):
        if index % 2:
            cache.add(_event(f"{prefix}{index}@x.example"))
        else:
            with cache.transaction():
                cache.add(_event(f"{prefix}{index}@x.example"))


def _stuck_before_replace(path: str, keys: dict[tuple[str, str], str], reached: Any) -> None:
    cache = _child_cache(path, keys)
    real_replace = os.replace

    def stuck(source: Any, target: Any) -> None:
        if str(target) == path:
            reached.set()
            time.sleep(120)
        real_replace(source, target)

    os.replace = stuck  # type: ignore[assignment]  # this child only
    cache.add(_event("second@x.example"))


def test_lock_excludes_another_process(cache_path: Path) -> None:
    keys = _key_secrets()
    cache_path.parent.mkdir(parents=True)
    held = SPAWN.Event()
    child = SPAWN.Process(target=_hold_lock, args=(str(cache_path), keys, held, 1.0))
    child.start()
    try:
        assert held.wait(30)
        cache = EncryptedTokenCache(cache_path, app_id=CLIENT_ID, keyring_backend=preloaded(keys))
        started = time.monotonic()
        with cache.transaction():  # opens the cache too, which also needs the lock
            waited = time.monotonic() - started
            # The child's write, made while it held the lock, is visible once we hold it.
            assert _refresh_tokens(cache) == {"RT-child"}
        assert waited > 0.5
    finally:
        child.join(30)
    assert child.exitcode == 0


def test_lock_timeout_raises_busy(cache_path: Path) -> None:
    keys = _key_secrets()
    cache_path.parent.mkdir(parents=True)
    held = SPAWN.Event()
    child = SPAWN.Process(target=_hold_lock, args=(str(cache_path), keys, held, 3.0))
    child.start()
    try:
        assert held.wait(30)
        cache = EncryptedTokenCache(
            cache_path, app_id=CLIENT_ID, keyring_backend=preloaded(keys), lock_timeout_s=0.3
        )
        with pytest.raises(TokenCacheBusy, match=str(child.pid)):
            cache.open()
    finally:
        child.join(30)


def test_concurrent_processes_lose_no_update(cache_path: Path) -> None:
    keys = _key_secrets()
    cache_path.parent.mkdir(parents=True)
    go = SPAWN.Event()
    children = [
        SPAWN.Process(target=_add_many, args=(str(cache_path), keys, prefix, go))
        for prefix in ("left", "right")
    ]
    for child in children:
        child.start()
    time.sleep(0.5)
    go.set()
    for child in children:
        child.join(60)
        assert child.exitcode == 0

    names = _usernames(_open(cache_path, keyring_backend=preloaded(keys)))
    assert len(names) == 30


def test_crash_between_write_and_rename_keeps_the_previous_file(cache_path: Path) -> None:
    keys = _key_secrets()
    _open(cache_path, keyring_backend=preloaded(keys)).add(_event("first@x.example"))
    before = cache_path.read_bytes()
    reached = SPAWN.Event()
    child = SPAWN.Process(target=_stuck_before_replace, args=(str(cache_path), keys, reached))
    child.start()
    try:
        assert reached.wait(30)
        assert list(cache_path.parent.glob("token_cache.bin.*.tmp"))  # written, not renamed
    finally:
        child.kill()
        child.join(30)

    assert cache_path.read_bytes() == before
    survivor = _open(cache_path, keyring_backend=preloaded(keys), lock_timeout_s=2)
    assert _usernames(survivor) == {"first@x.example"}
    assert survivor.problem is None
    assert not list(cache_path.parent.glob("token_cache.bin.*.tmp"))  # cleaned up
