"""Secrets: no token in what the command line prints, the cache encrypted, the key unlogged,
and a damaged, planted or tampered cache refused without harm.

The command line runs in this process (as ``qargo-desktop ... --config sandbox.toml``)
against an in-process sandbox; the person at the sign-in page is the scripted browser. The
sandbox remembers every token, code and refresh token it issued, so "no secret anywhere"
is checked against the real list, not against a guess of what tokens look like.

See docs/security.md for the threat model these tests hold the app to.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msal
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from qargo_desktop import cli
from qargo_desktop.core import loopback
from qargo_desktop.core.bootstrap import write_sandbox_config
from qargo_desktop.core.config import app_paths
from qargo_desktop.core.token_cache import KEY_USERNAME, KEYRING_SERVICE, EncryptedTokenCache
from tests.reliability.conftest import ADMIN, DOMAIN, Person, leaked

DISPATCH = f"dispatch@{DOMAIN}"
SALES = f"sales@{DOMAIN}"
CLAIMS = f"claims@{DOMAIN}"


@dataclass
class Cli:
    """The command line, run in this process against a sandbox."""

    sandbox: Any
    config: Path
    config_dir: Path
    person: Person
    capsys: pytest.CaptureFixture[str]
    outputs: list[str] = field(default_factory=list)

    def __call__(self, *args: str, account: str = ADMIN) -> tuple[int, str, str]:
        self.person.account = account
        code = cli.main([*args, "--config", str(self.config), "--config-dir", str(self.config_dir)])
        self.person.join()
        captured = self.capsys.readouterr()
        self.outputs += [captured.out, captured.err]
        return int(code), captured.out, captured.err

    @property
    def paths(self) -> Any:
        return app_paths(self.config_dir)

    def files_text(self) -> str:
        """Every file the app wrote that is meant to be readable: settings, logs, reports."""
        texts = []
        for path in sorted(self.config_dir.rglob("*")):
            if path.is_file() and "token_cache" not in path.name:
                texts.append(path.read_bytes().decode("utf-8", "replace"))
        return "\n".join(texts)


@pytest.fixture
def run_cli(
    sandbox: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Iterator[Cli]:
    config = tmp_path / "sandbox.toml"
    write_sandbox_config(config, sandbox.info)
    person = Person()
    # The system browser, as BROWSER would name it: the person at the sandbox's pages.
    monkeypatch.setattr(loopback, "open_system_browser", person)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    library_levels = {n: logging.getLogger(n).level for n in ("urllib3", "msal", "keyring")}
    sigint = signal.getsignal(signal.SIGINT)
    try:
        yield Cli(sandbox, config, tmp_path / "qargo", person, capsys)
    finally:
        person.join()
        signal.signal(signal.SIGINT, sigint)
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(level)
        for name, value in library_levels.items():
            logging.getLogger(name).setLevel(value)


def secrets_issued(sandbox: Any) -> set[str]:
    found = {s for s in sandbox.issued_secrets() if len(s) >= 8}
    assert found, "the sandbox issued nothing: the test would prove nothing"
    return found


def keyring_keys(memory_keyring: Any) -> list[str]:
    """Every form the cache keys could be written in: base64 (as stored), hex, urlsafe."""
    forms = []
    for (service, _user), value in memory_keyring.secrets.items():
        if service != KEYRING_SERVICE:
            continue
        raw = base64.b64decode(value)
        forms += [value, raw.hex(), base64.urlsafe_b64encode(raw).decode().rstrip("=")]
    assert forms, "no cache key in the keyring"
    return forms


def assert_nothing_secret(text: str, secrets: set[str], keys: list[str], where: str) -> None:
    found = leaked(text, secrets)
    assert not found, f"tokens or codes issued by the sandbox are in {where}: {found}"
    for key in keys:
        assert key not in text, f"the token cache key is in {where}"
    assert "Bearer " not in text, f"an Authorization header is in {where}"


def test_the_command_line_prints_no_token_and_the_cache_holds_none_in_the_clear(
    run_cli: Cli, memory_keyring: Any
) -> None:
    # A support session, start to end, in front of whoever is watching the screen.
    assert run_cli("signin")[0] == 0
    assert run_cli("whoami")[0] == 0
    code, _out, verbose = run_cli("whoami", "--json", "-v")
    assert code == 0 and "DEBUG" in verbose  # --verbose logs to the terminal too
    assert run_cli("mailboxes")[0] == 0
    assert run_cli("mailboxes", "--json")[0] == 0
    assert run_cli("authorise", "--mailbox", SALES, account=SALES)[0] == 0
    assert run_cli("reauthorise", "--mailbox", DISPATCH, "-v", account=DISPATCH)[0] == 0
    assert run_cli("reset", "--mailbox", CLAIMS, "--yes")[0] == 0
    code, report, _err = run_cli("selftest", "--mailbox", DISPATCH, "--json", "--timeout", "30")
    assert code in (0, 2), report
    assert json.loads(report)["verdict"] in ("pass", "warning")
    assert run_cli("diagnose", "--json")[0] in (0, 1)
    assert run_cli("diagnose")[0] in (0, 1)
    # A failure prints advice, not a token either.
    assert run_cli("authorise", "--mailbox", SALES, account=f"dispatcher@{DOMAIN}")[0] != 0

    secrets = secrets_issued(run_cli.sandbox)
    keys = keyring_keys(memory_keyring)
    assert_nothing_secret("\n".join(run_cli.outputs), secrets, keys, "the command's output")
    # Logs, settings, diagnostics: everything readable the app left in its folders.
    assert_nothing_secret(run_cli.files_text(), secrets, keys, "the app's readable files")
    assert run_cli.paths.log_file.is_file()

    # Both token caches: encrypted, their key only in the keyring.
    caches = [run_cli.paths.cache_file, run_cli.paths.data_dir / "mailbox_token_cache.bin"]
    for cache in caches:
        blob = cache.read_bytes()
        assert blob.startswith(b"QDTC")
        text = blob.decode("latin-1")
        assert_nothing_secret(text, secrets, keys, cache.name)
        for marker in ("refresh_token", "RefreshToken", "AccessToken", "secret", "@" + DOMAIN):
            assert marker not in text, f"{marker} readable in {cache.name}"
        assert os.name == "nt" or cache.stat().st_mode & 0o077 == 0, "the cache file is shared"
    assert os.name == "nt" or run_cli.paths.data_dir.stat().st_mode & 0o077 == 0

    # The key in the keyring is what opens them, and only that key.
    stored = memory_keyring.secrets[(KEYRING_SERVICE, KEY_USERNAME)]
    blob = caches[0].read_bytes()
    header, nonce, sealed = blob[:13], blob[13:25], blob[25:]
    client_id = run_cli.sandbox.info.client_id
    plain = AESGCM(base64.b64decode(stored)).decrypt(
        nonce, sealed, header + b"|" + client_id.encode()
    )
    assert ADMIN in plain.decode()
    with pytest.raises(Exception):  # noqa: B017 (any failure to decrypt will do)
        AESGCM(os.urandom(32)).decrypt(nonce, sealed, header + b"|" + client_id.encode())

    # Sign-out removes the admin's tokens from the file too.
    assert run_cli("signout")[0] == 0
    assert run_cli("whoami")[0] == 8


def _admin_cache(run_cli: Cli) -> Path:
    assert run_cli("signin")[0] == 0
    return run_cli.paths.cache_file


@pytest.mark.parametrize(
    "damage",
    ["flip a byte", "truncate", "empty", "another app's file", "plaintext cache planted",
     "another key's file", "older format"],
)  # fmt: skip
def test_a_damaged_or_planted_cache_is_refused_safely(
    run_cli: Cli, memory_keyring: Any, damage: str
) -> None:
    cache = _admin_cache(run_cli)
    good = cache.read_bytes()
    client_id = run_cli.sandbox.info.client_id
    planted_token = "RT-planted-by-someone-else-" + "x" * 40
    if damage == "flip a byte":
        blob = bytearray(good)
        blob[len(blob) // 2] ^= 0x01
        cache.write_bytes(bytes(blob))
    elif damage == "truncate":
        cache.write_bytes(good[: len(good) // 2])
    elif damage == "empty":
        cache.write_bytes(b"")
    elif damage == "another app's file":
        other = EncryptedTokenCache(cache.with_name("other.bin"), app_id="some-other-app")
        other.add(_event(planted_token, client_id))
        cache.write_bytes(cache.with_name("other.bin").read_bytes())
    elif damage == "plaintext cache planted":
        # Someone with access to the folder (not to the keyring) plants a cache of their
        # own in the clear, hoping the app signs in with their refresh token.
        planted = msal.SerializableTokenCache()
        planted.add(_event(planted_token, client_id))
        cache.write_text(planted.serialize())
    elif damage == "another key's file":
        sealed = AESGCM(os.urandom(32))
        nonce = os.urandom(12)
        header = good[:13]
        cache.write_bytes(
            header + nonce + sealed.encrypt(nonce, b"{}", header + b"|" + client_id.encode())
        )
    elif damage == "older format":
        cache.write_bytes(good[:4] + bytes([0]) + good[5:])

    # The next start refuses it, says so, and asks for a sign-in; nothing is trusted.
    code, out, err = run_cli("whoami")
    assert code == 8, (damage, out, err)
    assert "Traceback" not in err
    assert planted_token not in out + err
    aside = list(cache.parent.glob("token_cache.bin.corrupt-*"))
    assert len(aside) == 1, "the damaged file is set aside, not silently deleted"
    assert aside[0].read_bytes() != good  # the damaged file, kept as it was found

    # And the app recovers: a new sign-in writes a new, good cache.
    assert run_cli("signin")[0] == 0
    assert run_cli("whoami")[0] == 0
    assert planted_token.encode() not in cache.read_bytes()


def test_a_damaged_key_in_the_keyring_makes_a_new_key_and_never_a_plaintext_file(
    run_cli: Cli, memory_keyring: Any
) -> None:
    cache = _admin_cache(run_cli)
    memory_keyring.secrets[(KEYRING_SERVICE, KEY_USERNAME)] = "not base64 at all!"
    code, _out, err = run_cli("whoami")
    assert code == 8 and "Traceback" not in err
    stored = memory_keyring.secrets[(KEYRING_SERVICE, KEY_USERNAME)]
    assert len(base64.b64decode(stored)) == 32  # a fresh key
    assert run_cli("signin")[0] == 0
    assert cache.read_bytes().startswith(b"QDTC")


def test_without_a_keyring_nothing_is_written_to_disk(run_cli: Cli) -> None:
    import keyring
    from keyring.backends import fail

    keyring.set_keyring(fail.Keyring())
    code, _out, err = run_cli("signin")
    assert code == 0, err
    assert "kept only until the app closes" in err  # the person is told
    assert not run_cli.paths.cache_file.exists()
    assert not list(run_cli.paths.data_dir.glob("*token_cache*"))


def _event(refresh_token: str, client_id: str) -> dict[str, Any]:
    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return {
        "client_id": client_id,
        "scope": ["api://qargo-sandbox/Organisation.Manage"],
        "token_endpoint": "https://127.0.0.1:1/tenant/oauth2/v2.0/token",
        "grant_type": "authorization_code",
        "data": {},
        "response": {
            "access_token": "AT-planted",
            "refresh_token": refresh_token,
            "id_token": ".".join([b64({"alg": "none"}), b64({"preferred_username": ADMIN,
                                  "oid": "x", "tid": "t", "aud": client_id}), ""]),
            "client_info": b64({"uid": "x", "utid": "t"}),
            "expires_in": 3600,
        },
    }  # fmt: skip


# -- what the window and a crash show -------------------------------------------------------


def test_a_crash_report_shows_no_token(sandbox: Any, admin: Any) -> None:
    pytest.importorskip("PySide6")
    from qargo_desktop.ui.app import crash_report

    secrets = secrets_issued(sandbox)
    token = admin.admin_token()
    refresh = next(s for s in secrets if s.startswith("1.AAAA"))
    try:
        # The kind of crash that carries secrets: a request's headers and a token response.
        raise RuntimeError(
            f"request failed: headers={{'Authorization': 'Bearer {token}'}} "
            f"body={{'refresh_token': '{refresh}', 'access_token': '{token}'}} token={token}"
        )
    except RuntimeError as exc:
        report = crash_report(type(exc), exc, exc.__traceback__, "worker")
    assert token not in report and refresh not in report
    assert "request failed" in report  # the crash itself is still there to read
