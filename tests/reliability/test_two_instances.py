"""Two app instances on one token cache, and instances that die at the worst moment.

The sandbox's refresh tokens are single use, as strict as rotation gets: a process that
refreshes with a refresh token another process already redeemed is refused
(``invalid_grant``). So two processes refreshing in turn through the real sandbox, each
forcing a refresh, only keep working if every refresh sees the token the other one just
saved. Then: a process killed (SIGKILL) in the middle of writing leaves a cache the next
start reads without complaint, and a lock held by a process that died does not block.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from qargo_desktop.core.token_cache import KEYRING_SERVICE, EncryptedTokenCache, TokenCacheBusy
from tests.reliability.conftest import ADMIN, Person

SPAWN = multiprocessing.get_context("spawn")
ROUNDS = 6


def _keys(memory_keyring: Any) -> dict[tuple[str, str], str]:
    return {k: v for k, v in memory_keyring.secrets.items() if k[0] == KEYRING_SERVICE}


def _client(info: dict[str, Any], cache_path: str, keys: dict[tuple[str, str], str]) -> Any:
    """What a second app instance builds: its own session, the same cache file and key."""
    from qargo_desktop.core.config import Settings
    from qargo_desktop.core.http import build_session
    from qargo_desktop.core.identity import IdentityClient
    from tests.core.memory_keyring import preloaded

    settings = Settings(config_dir=Path(cache_path).parent, extra_ca_file=Path(info["ca"]))
    store = EncryptedTokenCache(
        Path(cache_path), app_id=info["client_id"], keyring_backend=preloaded(keys)
    )
    return IdentityClient(
        info["authority"], info["client_id"], build_session(settings), store,
        validate_authority=False,
    )  # fmt: skip


def _refresh_in_turn(
    info: dict[str, Any], cache_path: str, keys: Any, turn: Any, done: Any, results: Any
) -> None:
    client = _client(info, cache_path, keys)
    for _round in range(ROUNDS):
        if not turn.wait(60):
            results.put(("timeout", ""))
            return
        turn.clear()
        try:
            token = client.acquire_silent(info["scopes"], username=ADMIN, force_refresh=True)
            results.put(("ok" if token is not None else "none", ""))
        except Exception as exc:
            results.put((type(exc).__name__, str(getattr(exc, "key", "")) + " " + str(exc)))
        done.set()


def _refresh_together(
    info: dict[str, Any], cache_path: str, keys: Any, go: Any, seconds: float, results: Any
) -> None:
    client = _client(info, cache_path, keys)
    go.wait(60)
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        try:
            token = client.acquire_silent(info["scopes"], username=ADMIN, force_refresh=True)
            results.put(("ok" if token is not None else "none", ""))
        except Exception as exc:
            results.put((type(exc).__name__, str(getattr(exc, "key", "")) + " " + str(exc)))


@pytest.fixture
def signed_in(sandbox: Any, tmp_path: Path, person: Person, memory_keyring: Any) -> Any:
    """The admin signed in once, interactively, into an encrypted cache on disk."""
    from qargo_desktop.core.bootstrap import sandbox_overrides
    from qargo_desktop.core.config import load_settings
    from qargo_desktop.core.http import build_session
    from qargo_desktop.core.identity import IdentityClient, InteractiveControl

    info = sandbox.info
    settings = load_settings(None, {}, {**sandbox_overrides(info), "config_dir": tmp_path / "c"})
    cache_path = tmp_path / "data" / "token_cache.bin"
    client = IdentityClient(
        info.authority, info.client_id, build_session(settings),
        EncryptedTokenCache(cache_path, app_id=info.client_id), validate_authority=False,
    )  # fmt: skip
    person.account = ADMIN
    client.acquire_interactive(
        list(info.admin_scopes), InteractiveControl(opener=person, deadline_s=20)
    )
    person.join()
    details = {
        "authority": info.authority,
        "client_id": info.client_id,
        "ca": str(info.ca_certificate),
        "scopes": list(info.admin_scopes),
    }
    return client, details, cache_path, _keys(memory_keyring)


def _drain(results: Any, count: int) -> list[tuple[str, str]]:
    return [results.get(timeout=60) for _ in range(count)]


def test_two_processes_refreshing_in_turn_never_use_a_redeemed_refresh_token(
    signed_in: Any,
) -> None:
    parent, info, cache_path, keys = signed_in
    results = SPAWN.Queue()
    turns = [SPAWN.Event(), SPAWN.Event()]
    done = SPAWN.Event()
    children = [
        SPAWN.Process(
            target=_refresh_in_turn, args=(info, str(cache_path), keys, turns[i], done, results)
        )
        for i in range(2)
    ]
    for child in children:
        child.start()
    try:
        outcomes = []
        for round_number in range(2 * ROUNDS):
            done.clear()
            turns[round_number % 2].set()
            assert done.wait(60), f"round {round_number} did not finish"
            outcomes.append(results.get(timeout=10))
        assert outcomes == [("ok", "")] * (2 * ROUNDS), outcomes
    finally:
        for child in children:
            child.join(30)
            if child.is_alive():
                child.kill()
    assert [c.exitcode for c in children] == [0, 0]

    # The first instance, idle all along, also picks up the latest refresh token.
    assert parent.acquire_silent(info["scopes"], username=ADMIN, force_refresh=True) is not None


def test_two_processes_refreshing_at_once_both_keep_working(signed_in: Any) -> None:
    _parent, info, cache_path, keys = signed_in
    results = SPAWN.Queue()
    go = SPAWN.Event()
    children = [
        SPAWN.Process(target=_refresh_together, args=(info, str(cache_path), keys, go, 3.0,
                                                      results))
        for _ in range(2)
    ]  # fmt: skip
    for child in children:
        child.start()
    time.sleep(1.5)  # both have imported and opened the cache
    go.set()
    for child in children:
        child.join(60)
    assert [c.exitcode for c in children] == [0, 0]
    outcomes = []
    while not results.empty():
        outcomes.append(results.get(timeout=5))
    assert len(outcomes) >= 4
    failures = [o for o in outcomes if o[0] != "ok"]
    assert not failures, failures[:3]


# -- dying at the worst moment --------------------------------------------------------------


def _write_forever(cache_path: str, keys: Any, written: Any) -> None:
    from tests.core.memory_keyring import preloaded
    from tests.core.test_token_cache import CLIENT_ID, _event

    cache = EncryptedTokenCache(Path(cache_path), app_id=CLIENT_ID, keyring_backend=preloaded(keys))
    number = 0
    while True:
        # Bigger and bigger files, so that a kill lands in every part of a write.
        cache.add(_event(f"user{number}@northwind-haulage.example"))
        number += 1
        with written.get_lock():
            written.value = number


def _hold_lock_forever(cache_path: str, keys: Any, held: Any) -> None:
    from tests.core.memory_keyring import preloaded
    from tests.core.test_token_cache import CLIENT_ID

    cache = EncryptedTokenCache(Path(cache_path), app_id=CLIENT_ID, keyring_backend=preloaded(keys))
    with cache.transaction():
        held.set()
        time.sleep(600)


def _fresh_keys(tmp_path: Path) -> dict[tuple[str, str], str]:
    from tests.core.memory_keyring import MemoryKeyring
    from tests.core.test_token_cache import CLIENT_ID

    backend = MemoryKeyring()
    EncryptedTokenCache(tmp_path / "seed.bin", app_id=CLIENT_ID, keyring_backend=backend).open()
    return dict(backend.secrets)


def _open(cache_path: Path, keys: Any, **options: Any) -> EncryptedTokenCache:
    from tests.core.memory_keyring import preloaded
    from tests.core.test_token_cache import CLIENT_ID

    cache = EncryptedTokenCache(
        cache_path, app_id=CLIENT_ID, keyring_backend=preloaded(keys), **options
    )
    cache.open()
    return cache


def test_a_process_killed_mid_write_leaves_a_cache_the_next_start_reads(tmp_path: Path) -> None:
    keys = _fresh_keys(tmp_path)
    cache_path = tmp_path / "data" / "token_cache.bin"
    cache_path.parent.mkdir()
    rng = random.Random(7)
    for attempt in range(6):
        written = SPAWN.Value("i", 0)
        child = SPAWN.Process(target=_write_forever, args=(str(cache_path), keys, written))
        child.start()
        # Let it get going, then kill it at a random moment of its writing.
        deadline = time.monotonic() + 60
        while written.value < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
        confirmed = written.value

        survivor = _open(cache_path, keys, lock_timeout_s=5)
        assert survivor.problem is None, (attempt, survivor.problem)
        accounts = {a["username"] for a in survivor.search(survivor.CredentialType.ACCOUNT)}
        # Every write the dead process finished is there; nothing half-written is.
        assert len(accounts) >= confirmed, (attempt, len(accounts), confirmed)
        assert not list(cache_path.parent.glob("*.tmp")), "leftovers are cleaned up"
        assert not list(cache_path.parent.glob("*.corrupt-*")), "nothing was unreadable"


def test_a_lock_left_by_a_dead_process_is_broken(tmp_path: Path) -> None:
    keys = _fresh_keys(tmp_path)
    cache_path = tmp_path / "data" / "token_cache.bin"
    cache_path.parent.mkdir()
    held = SPAWN.Event()
    child = SPAWN.Process(target=_hold_lock_forever, args=(str(cache_path), keys, held))
    child.start()
    try:
        assert held.wait(60)
        # While it lives, its lock is real: another instance waits, then says who holds it.
        with pytest.raises(TokenCacheBusy, match=str(child.pid)):
            _open(cache_path, keys, lock_timeout_s=0.5)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)

    # Dead: the lock goes with it, though the lock file (naming the dead holder) stays.
    lock_file = cache_path.with_name(cache_path.name + ".lock")
    assert str(child.pid) in lock_file.read_text(errors="replace")
    started = time.monotonic()
    cache = _open(cache_path, keys, lock_timeout_s=5)
    with cache.transaction():
        pass
    assert time.monotonic() - started < 1.0
    assert cache.problem is None


def test_a_stale_lock_file_from_another_machine_or_boot_does_not_block(tmp_path: Path) -> None:
    keys = _fresh_keys(tmp_path)
    cache_path = tmp_path / "data" / "token_cache.bin"
    cache_path.parent.mkdir()
    lock_file = cache_path.with_name(cache_path.name + ".lock")
    lock_file.write_text("99999 some-other-host 2020-01-01T00:00:00+00:00".ljust(128))
    started = time.monotonic()
    cache = _open(cache_path, keys, lock_timeout_s=5)
    with cache.transaction():
        pass
    assert time.monotonic() - started < 1.0
