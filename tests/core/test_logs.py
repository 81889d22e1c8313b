"""Logging: redaction of every secret form, the ring buffer, and the rotating file."""

from __future__ import annotations

import base64
import logging
import logging.handlers
from pathlib import Path

import pytest

from qargo_desktop.core.logs import (
    REDACTED,
    RedactingFilter,
    RingBufferHandler,
    forget_secret,
    redact,
    register_secret,
    setup_logging,
)

JWT = (
    "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJwcmVmZXJyZWRfdXNlcm5hbWUiOiJhZG1pbkBub3J0aHdpbmQuZXhhbXBsZSJ9."
    "c2lnbmF0dXJlLWJ5dGVzLWhlcmU"
)
OPAQUE_RT = "0.AXkAZm9vYmFy-baz_QUX1234567890abcdefghijklmnop"
AUTH_CODE = "0.AVYAqR2lf1Q-code-value_77"


pytestmark = pytest.mark.usefixtures("restore_logging")


SECRET_FORMS = [
    # (text, secret that must vanish)
    (f"token is {JWT} for admin", JWT),
    (f"Authorization: Bearer {JWT}", JWT),
    ("Authorization: Bearer abc.def-ghi_opaque+token/==", "abc.def-ghi_opaque+token"),
    ("authorization:Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA"),
    ("Proxy-Authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA"),
    (f"headers={{'Authorization': 'Bearer {OPAQUE_RT}', 'Accept': 'json'}}", OPAQUE_RT),
    (f'{{"Authorization": "Bearer {OPAQUE_RT}"}}', OPAQUE_RT),
    (f"sent Bearer {OPAQUE_RT} to the API", OPAQUE_RT),
    (f'{{"refresh_token": "{OPAQUE_RT}", "expires_in": 3599}}', OPAQUE_RT),
    (f"{{'refresh_token': '{OPAQUE_RT}'}}", OPAQUE_RT),
    (f"Result(refresh_token='{OPAQUE_RT}', scope='x')", OPAQUE_RT),
    (f"grant_type=refresh_token&refresh_token={OPAQUE_RT}&client_id=x", OPAQUE_RT),
    (f'{{"access_token": "{JWT}", "token_type": "Bearer"}}', JWT),
    (f"access_token={OPAQUE_RT}", OPAQUE_RT),
    (f'{{"id_token": "{JWT}"}}', JWT),
    (f"GET /cb?code={AUTH_CODE}&state=abc", AUTH_CODE),
    (f"POST grant_type=authorization_code&code={AUTH_CODE}&redirect_uri=x", AUTH_CODE),
    (f"{{'code': '{AUTH_CODE}', 'grant_type': 'authorization_code'}}", AUTH_CODE),
    ("code=mailbox_exists&code=Zz9-redirected.code", "Zz9-redirected.code"),
    (f"client_assertion={JWT}&client_assertion_type=jwt-bearer", JWT),
    ("client_assertion=opaque-assertion-value-123", "opaque-assertion-value-123"),
    ('{"device_code": "GAQABAAEAAAAm-06blBE1TpVMil8KPQ41"}', "GAQABAAEAAAAm-06blBE1TpVMil8KPQ41"),
    ("device_code=GAQABAAEAAAAm-06blBE1TpVMil8KPQ41", "GAQABAAEAAAAm-06blBE1TpVMil8KPQ41"),
    ('{"password": "correct horse battery"}', "correct horse battery"),
    ("username=admin&password=hunter2hunter2", "hunter2hunter2"),
    ("{'client_secret': 's3cr3t~value'}", "s3cr3t~value"),
    ("Cookie: session=abc123def; csrftoken=zzz999", "abc123def"),
    ("Set-Cookie: fpc=AqXk12-34; path=/; secure; HttpOnly", "AqXk12-34"),
    ("{'Set-Cookie': 'fpc=AqXk12-34; path=/'}", "AqXk12-34"),
    ('{"code_verifier": "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"}', "dBjftJeZ4CVP"),
    ('{"refresh_token": "with \\"escaped\\" quotes"}', "escaped"),
]


@pytest.mark.parametrize(("text", "secret"), SECRET_FORMS)
def test_each_secret_form_is_redacted(text: str, secret: str) -> None:
    cleaned = redact(text)
    assert secret not in cleaned
    assert REDACTED in cleaned or "[redacted JWT]" in cleaned


@pytest.mark.parametrize(
    "text",
    [
        "Mailbox dispatch@northwind-haulage.example linked in 812 ms (HTTP 201)",
        'API refused: {"code": "mailbox_exists", "status": 409, "title": "Conflict"}',
        'Graph said {"error": {"code": "ErrorItemNotFound", "message": "Not found"}}',
        "Sign-in refused: AADSTS50173 (invalid_grant), error_code=AADSTS50173",
        "code=attempt_expired for mailbox 42",
        "status_code=503, retrying in 2.0 s (attempt 2 of 4); postcode=SW1A 1AA",
        '{"token_type": "Bearer", "expires_in": 3599, "scope": "api://qargo/x"}',
        "Basic configuration loaded; Bearer tokens expire hourly",
        "Authorisation of shipping@example.com started (kind reauthorise)",
        "GET https://127.0.0.1:4443/api/v1/organisation/linked-mailboxes?limit=100",
        "Refresh token rotated for admin@northwind-haulage.example",
    ],
)
def test_ordinary_text_is_left_intact(text: str) -> None:
    assert redact(text) == text


def test_registered_secrets_are_redacted_verbatim() -> None:
    key = b"\x01\x02" * 16
    register_secret(key)
    register_secret("plain-runtime-secret-1")
    register_secret("short")  # too short to redact without mangling text

    text = (
        f"key {base64.b64encode(key).decode()} hex {key.hex()} "
        "value plain-runtime-secret-1 and a short word"
    )
    cleaned = redact(text)

    assert base64.b64encode(key).decode() not in cleaned
    assert key.hex() not in cleaned
    assert "plain-runtime-secret-1" not in cleaned
    assert "short word" in cleaned

    forget_secret("plain-runtime-secret-1")
    assert "plain-runtime-secret-1" in redact("plain-runtime-secret-1")


def _logger_with(handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(f"test.logs.{id(handler)}")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler.addFilter(RedactingFilter())
    return logger


def test_filter_redacts_arguments_and_mapping_arguments() -> None:
    ring = RingBufferHandler()
    logger = _logger_with(ring)

    logger.info("token response %s", {"access_token": JWT, "refresh_token": OPAQUE_RT})
    logger.info("%(who)s got %(token)s", {"who": "admin", "token": JWT})
    logger.info("header %s", f"Bearer {OPAQUE_RT}")

    text = "\n".join(ring.lines())
    assert JWT not in text
    assert OPAQUE_RT not in text
    assert "admin got" in text
    for record in ring.records():
        assert record.args is None


def test_filter_redacts_exception_text() -> None:
    ring = RingBufferHandler()
    logger = _logger_with(ring)

    try:
        raise ValueError(f"token endpoint said refresh_token={OPAQUE_RT} and {JWT}")
    except ValueError:
        logger.exception("Sign-in failed for %s", "admin@northwind-haulage.example")

    (record,) = ring.records()
    assert record.exc_info is None
    assert record.exc_text is not None
    assert "ValueError" in record.exc_text
    assert OPAQUE_RT not in record.exc_text
    assert JWT not in record.exc_text
    line = ring.lines()[0]
    assert "Traceback" in line
    assert OPAQUE_RT not in line


def test_filter_redacts_stack_info() -> None:
    ring = RingBufferHandler()
    logger = _logger_with(ring)
    register_secret("stack-visible-secret-value")
    stack_marker = "stack-visible-secret-value"  # appears in the source line below
    logger.info("where am I", stack_info=True)
    assert stack_marker not in (ring.records()[0].stack_info or "")


def test_a_bad_format_string_still_logs() -> None:
    ring = RingBufferHandler()
    logger = _logger_with(ring)
    logger.info("%s %s", JWT)  # noqa: PLE1206 (the mistake is the point)
    (line,) = ring.lines()
    assert "could not be formatted" in line
    assert JWT not in line


def test_ring_buffer_keeps_the_last_records_and_tells_the_listener() -> None:
    heard: list[logging.LogRecord] = []
    ring = RingBufferHandler(capacity=5, listener=heard.append)
    logger = _logger_with(ring)

    for index in range(8):
        logger.warning("message %d", index)

    assert ring.capacity == 5
    assert [r.getMessage() for r in ring.records()] == [f"message {i}" for i in range(3, 8)]
    assert len(heard) == 8
    ring.set_listener(None)
    logger.warning("unheard")
    assert len(heard) == 8
    ring.clear()
    assert ring.records() == []


def test_a_failing_listener_does_not_break_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(record: logging.LogRecord) -> None:
        raise RuntimeError("listener broke")

    monkeypatch.setattr(logging, "raiseExceptions", False)
    ring = RingBufferHandler(listener=explode)
    logger = _logger_with(ring)
    logger.error("still recorded")
    assert ring.lines()[0].endswith("still recorded")


def test_setup_logging_writes_a_redacted_rotating_file(tmp_path: Path) -> None:
    result = setup_logging(tmp_path / "logs", "DEBUG", max_bytes=2_000, backup_count=2)
    logger = logging.getLogger("qargo_desktop.test")

    logger.info("refresh with %s", f"refresh_token={OPAQUE_RT}")
    logger.debug("Authorization: Bearer %s", JWT)
    for index in range(100):
        logger.info("line %03d padding padding padding padding padding", index)
    for handler in result.handlers:
        handler.flush()

    assert result.log_file == tmp_path / "logs" / "qargo-desktop.log"
    assert result.problem is None
    files = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert files == ["qargo-desktop.log", "qargo-desktop.log.1", "qargo-desktop.log.2"]
    everything = "".join(p.read_text(encoding="utf-8") for p in (tmp_path / "logs").iterdir())
    assert OPAQUE_RT not in everything
    assert JWT not in everything
    ring_text = "\n".join(result.ring_buffer.lines())
    assert "refresh_token=[redacted]" in ring_text
    assert "Authorization: [redacted]" in ring_text
    assert logging.getLogger().level == logging.DEBUG


def test_setup_logging_defaults_and_replacement(tmp_path: Path) -> None:
    first = setup_logging(tmp_path / "logs")
    second = setup_logging(tmp_path / "logs", logging.WARNING)

    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, "_qargo_installed", False)]
    assert len(ours) == 2  # the first set was removed, not doubled
    assert first.ring_buffer not in root.handlers
    assert second.file_handler is not None
    assert second.file_handler.maxBytes == 1_000_000
    assert second.file_handler.backupCount == 5
    assert second.ring_buffer.capacity == 2000
    for handler in ours:
        assert any(isinstance(f, RedactingFilter) for f in handler.filters)
    assert logging.getLogger("urllib3").level == logging.WARNING


def test_unusable_log_folder_falls_back_to_memory(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    result = setup_logging(blocker / "logs")
    assert result.file_handler is None
    assert result.log_file is None
    assert "cannot be used" in (result.problem or "")
    logging.getLogger("qargo_desktop.test").warning("kept in memory")
    assert any("kept in memory" in line for line in result.ring_buffer.lines())


def test_a_record_is_redacted_once_for_many_handlers() -> None:
    first, second = RingBufferHandler(), RingBufferHandler()
    logger = _logger_with(first)
    second.addFilter(RedactingFilter())
    logger.addHandler(second)
    logger.info("value %s", JWT)
    assert first.lines()[0].endswith("value [redacted JWT]")
    assert second.lines()[0].endswith("value [redacted JWT]")


@pytest.mark.parametrize(
    "text",
    [
        "refresh_token=0.AXkAbc-def_ghi.jkl",
        "POST /token?code=abc123def456&state=x",
        "refreshToken=abcdefgh12345",
        "refresh_token%3Dabcdef123",
        '{"refresh_token": "0.AXkAbc"}',
    ],
)
def test_redaction_is_idempotent(text: str) -> None:
    once = redact(text)
    assert "[redacted" in once
    # Logs, bundles and the Recent problems list redact again: the marker must not grow.
    assert redact(once) == once
    assert redact(redact(once)) == once
    assert "]]" not in once
