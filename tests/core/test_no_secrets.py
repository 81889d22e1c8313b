"""No secret anywhere it could be read: a whole session against the sandbox (sign-in in the
browser, a mailbox authorised in the browser and another on a second device, a self-test,
a crash, diagnostics and a support bundle), logged at DEBUG, then every file the app wrote,
the bundle, the crash report and the diagnostics output are searched for every token, code
and secret the sandbox issued in that run."""

from __future__ import annotations

import base64
import importlib.util
import json
import logging
import sys
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qargo_desktop.core.config import app_paths, load_settings, write_config
from qargo_desktop.core.linking import LinkOutcome, MailboxLinker
from qargo_desktop.core.logs import setup_logging
from qargo_desktop.core.models import LinkStatus

ADMIN = "admin@northwind-haulage.example"


@pytest.fixture
def sandbox(sandbox_certs: Path) -> Iterator[Any]:
    """The sandbox with a 1 s device code interval (overrides the shared fixture)."""
    from qargo_desktop.sandbox.server import Sandbox
    from qargo_desktop.sandbox.world import SandboxOptions

    box = Sandbox(
        SandboxOptions(
            data_dir=sandbox_certs, delivery_delay_s=0.5, sync_delay_s=0.5, device_code_interval_s=1
        )
    )
    box.start()
    yield box
    box.stop()


pytestmark = pytest.mark.usefixtures("restore_logging")


def _leaks(text: str, secrets: set[str]) -> list[str]:
    """The secrets found in ``text``, whole or by a telling part."""
    found = []
    for secret in secrets:
        parts = [secret]
        if secret.count(".") == 2 and secret.startswith("eyJ"):
            parts.append(secret.rsplit(".", 1)[1])  # a JWT's signature alone
        elif len(secret) > 40:
            parts.append(secret[-32:])  # the tail of an opaque token
        if any(part and part in text for part in parts):
            found.append(secret[:12] + "...")
    return found


def _person_for_codes(account: str) -> tuple[Any, list[threading.Thread], list[str]]:
    from qargo_desktop.sandbox.browser import run

    threads: list[threading.Thread] = []
    codes: list[str] = []

    def answer(flow: Any) -> None:
        codes.append(flow.user_code)
        thread = threading.Thread(
            target=lambda: run(flow.verification_uri, account, "accept",
                               user_code=flow.user_code, say=lambda _line: None),
            name="other-device",
            daemon=True,
        )  # fmt: skip
        thread.start()
        threads.append(thread)

    return answer, threads, codes


def test_a_whole_session_leaves_no_secret_anywhere(
    sandbox: Any, tmp_path: Path, browser: Any, memory_keyring: Any
) -> None:
    from qargo_desktop.core.bootstrap import build_services, write_sandbox_config
    from qargo_desktop.core.diagnostics import collect_diagnostics
    from qargo_desktop.core.support import report_crash, save_support_bundle

    config_dir = tmp_path / "app"
    config_file = config_dir / "config.toml"
    config_dir.mkdir()
    write_sandbox_config(config_file, sandbox.info)
    settings = load_settings(config_file, {}, {"config_dir": config_dir})
    paths = app_paths(settings)
    # DEBUG: the libraries' own chatter (MSAL, urllib3) goes to the file too.
    logs = setup_logging(paths.log_dir, "DEBUG")
    services = build_services(settings, paths)

    # The admin signs in through the browser.
    control = services.new_control()
    control.opener = browser
    services.sign_in_interactive(control)
    browser.join()
    linker = MailboxLinker(services)
    listing = services.api.list_mailboxes()
    assert listing is not None
    unlinked = [m for m in listing.items if m.status is LinkStatus.UNLINKED]
    assert len(unlinked) >= 2

    # One mailbox authorised in the browser...
    browser.account = unlinked[0].address
    control = services.new_control()
    control.opener = browser
    first = linker.authorise(unlinked[0], control)
    browser.join()
    assert first.outcome is LinkOutcome.LINKED, first.error

    # ...and one on another device, with codes.
    answer, threads, user_codes = _person_for_codes(unlinked[1].address)
    second = linker.authorise_device(unlinked[1], answer)
    for thread in threads:
        thread.join(30)
    assert second.outcome is LinkOutcome.LINKED, second.error

    # The self-test of the first mailbox, its report kept where the self-test keeps them.
    if importlib.util.find_spec("qargo_desktop.core.selftest") is not None:
        from qargo_desktop.core.selftest import SelfTestOptions, run_selftest

        report = run_selftest(services, unlinked[0].address, options=SelfTestOptions(timeout_s=60))
        assert report.verdict.value in ("pass", "warning"), report.to_text()
        from qargo_desktop.core import selftest

        if hasattr(selftest, "save_report"):
            selftest.save_report(report, paths.data_dir)
        else:  # where the self-test keeps its reports
            reports = paths.data_dir / "selftest-reports"
            reports.mkdir(parents=True, exist_ok=True)
            (reports / "selftest-1.json").write_text(report.to_json(), encoding="utf-8")

    # A refresh, then careless logging of what a token response looks like.
    services.admin_token(force_refresh=True)
    secrets = sandbox.issued_secrets()
    access_token = next(s for s in secrets if s.startswith("eyJ"))
    refresh_token = next(s for s in secrets if s.startswith("1.A"))
    careless = logging.getLogger("qargo_desktop.careless")
    careless.debug("token response %s", {"access_token": access_token, "refresh_token":
                                         refresh_token})  # fmt: skip
    careless.info("headers %s", [("Authorization", f"Bearer {access_token}")])
    careless.warning("raw body %s", json.dumps(json.dumps({"refresh_token": refresh_token})))

    # A crash with a token in its message and in a local variable.
    try:
        token = refresh_token
        raise RuntimeError(f"the answer was {token!r}")
    except RuntimeError:
        exc_type, exc, tb = sys.exc_info()
    assert exc_type is not None
    crash = report_crash(exc_type, exc, tb, log_dir=paths.log_dir, ring_buffer=logs.ring_buffer)
    assert crash.path is not None

    # Diagnostics, as the window would run them, and the support bundle.
    diagnostics = collect_diagnostics(
        settings, paths=paths, token_caches=services.token_stores(), ring_buffer=logs.ring_buffer
    )
    assert diagnostics.token_caches["admin"]["accounts"]
    bundle = save_support_bundle(tmp_path / "bundle.zip", settings, paths=paths,
                                 report=diagnostics)  # fmt: skip
    write_config(config_dir / "written-by-the-app.toml", {"support_contact": "IT"})
    for handler in logs.handlers:
        handler.flush()
    services.session.close()

    # Everything the sandbox handed out in this run, plus the app's own keys.
    secrets = sandbox.issued_secrets()
    assert len(secrets) >= 10
    kinds = {s[:3] for s in secrets}
    assert {"eyJ", "0.A", "1.A", "DAQ"} <= kinds  # tokens, codes, refresh tokens, device codes
    keyring_values = set(memory_keyring.secrets.values())
    assert len(keyring_values) == 2  # the two token cache keys
    # The codes shown to the person are for the screen, not for the log.
    assert user_codes
    secrets.update(user_codes)
    # The search itself finds what it looks for.
    assert _leaks(f"x {access_token} y", secrets) and _leaks(refresh_token[5:], secrets)
    for value in keyring_values:
        secrets.add(value)
        secrets.add(base64.b64decode(value).hex())

    searched: dict[str, str] = {}
    for path in sorted(config_dir.rglob("*")):
        if path.is_file() and not path.name.endswith(".bin") and not path.name.endswith(".lock"):
            searched[str(path.relative_to(tmp_path))] = path.read_text("utf-8", errors="replace")
    with zipfile.ZipFile(bundle.path) as archive:
        for name in archive.namelist():
            searched[f"bundle:{name}"] = archive.read(name).decode("utf-8")
    searched["diagnostics.txt"] = diagnostics.to_text()
    searched["diagnostics.json"] = json.dumps(diagnostics.to_json())
    searched["crash report"] = crash.to_text()
    searched["ring buffer"] = "\n".join(logs.ring_buffer.lines())

    assert any(name.endswith("qargo-desktop.log") for name in searched)
    assert any("crash-" in name for name in searched)
    assert any(name.startswith("bundle:selftest-reports/") for name in searched)
    assert "bundle:diagnostics.json" in searched and "config.toml" in "".join(searched)
    leaks = {name: found for name, text in searched.items() if (found := _leaks(text, secrets))}
    assert not leaks, leaks
    # The careless lines were logged, with the secrets taken out.
    log_text = searched[str((paths.log_dir / "qargo-desktop.log").relative_to(tmp_path))]
    assert "token response" in log_text and "raw body" in log_text
    assert "Token obtained (interactive)" in log_text  # the story is still there

    # The token caches are encrypted: no secret, not even an account name, in readable form.
    caches = [paths.data_dir / "token_cache.bin", paths.data_dir / "mailbox_token_cache.bin"]
    for cache in caches:
        blob = cache.read_bytes()
        assert blob.startswith(b"QDTC")
        text = blob.decode("latin-1")
        assert not _leaks(text, secrets), cache.name
        assert ADMIN not in text and "northwind" not in text, cache.name


# -- the forms a secret arrives in ----------------------------------------------------------

OPAQUE = "0.AXkAZm9vYmFy-baz_QUX1234567890abcdefghijklmnop"
DEVICE_CODE = "DAQABIQEAAAxyzABCDEFGHIJKLMNOPQRSTU123"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f'"{{\\"refresh_token\\": \\"{OPAQUE}\\"}}"', OPAQUE),  # JSON inside JSON
        (f"('Cookie', 'session={OPAQUE}')", OPAQUE),  # a header tuple
        (f"[('Authorization', 'Bearer {OPAQUE}')]", OPAQUE),
        (f"refresh_token%3D{OPAQUE}%26client_id%3Dx", OPAQUE),  # percent-encoded
        (f"%22refresh_token%22%3A%22{OPAQUE}%22", OPAQUE),
        (f"refresh_token: {OPAQUE}", OPAQUE),  # "key: value"
        (f"Refresh-Token: {OPAQUE}", OPAQUE),
        (f'"refreshToken": "{OPAQUE}"', OPAQUE),  # other spellings
        (f"RefreshToken={OPAQUE}", OPAQUE),
        (f"X-Api-Key: {OPAQUE}", OPAQUE),
        (f"api_key={OPAQUE}", OPAQUE),
        (f"the token was\n{OPAQUE}", OPAQUE),  # bare, Microsoft-shaped
        (f"device {DEVICE_CODE} pending", DEVICE_CODE),
        (f"code: {OPAQUE}", OPAQUE),
        ("proxy http://ann:s3cret-proxy-pw@127.0.0.1:3128 used", "s3cret-proxy-pw"),
        ('{"body": {"contentType": "text", "content": "Dear customer, invoice 7"}}', "Dear"),
        ("{'body': {'contentType': 'Text', 'content': 'Dear customer'}}", "Dear"),
        ('{"bodyPreview": "Dear customer, your invoice"}', "Dear"),
        ('{"subject": "x", "content": "Private words"}', "Private words"),
    ],
)
def test_more_secret_forms_are_redacted(text: str, secret: str) -> None:
    from qargo_desktop.core.logs import redact

    assert secret not in redact(text)


@pytest.mark.parametrize(
    "text",
    [
        "code: mailbox_exists",
        "error code: 404",
        "content-type: application/json",
        "Content: none",
        "correlation id 5a1e330a-2698-4cce-8db1-da7108d1f61b",
        "Graph DELETE /graph/v1.0/me/messages/AAkALgAAAAC36kxqOnfJcFYJECmiyykvbZe%3D -> 204",
        "Device code sign-in started (sign-in): code valid for 900 s, polling every 1 s",
        "Probe of api (127.0.0.1): DNS 0 ms, TCP 1 ms, TLS 5 ms, HTTP 10 ms",
        '{"credential_type": "RefreshToken", "home_account_id": "a.b"}',
        "proxy http://proxy.corp.example:3128 (set in the settings)",
    ],
)
def test_the_story_is_left_alone(text: str) -> None:
    from qargo_desktop.core.logs import redact

    assert redact(text) == text
