"""Logging: a rotating file, a ring buffer for the in-app log view, and redaction on both.

Every handler set up here carries a :class:`RedactingFilter`, which removes secrets from
the message, its arguments and any exception text before a record is written anywhere:
JWTs, bearer and basic credentials, ``Authorization``/``Cookie`` headers, OAuth fields
(``access_token``, ``refresh_token``, ``id_token``, ``code``, ``device_code``,
``client_assertion``, ``password``...) in query strings, JSON, dict reprs and keyword
reprs, and any value registered at run time with :func:`register_secret`. Also: other
spellings of those keys (``refreshToken``, ``Refresh-Token``), JSON inside JSON strings,
header tuples, percent-encoded forms, ``key: value`` lines, passwords in URLs
(``http://user:password@proxy``), bare Microsoft-shaped refresh tokens, codes and device
codes, and mail message bodies (``body``, ``bodyPreview``, ``content``).

The filter works on text, so it also catches secrets that arrive inside a ``repr`` of
some object or inside a third-party library's debug message.
"""

from __future__ import annotations

import base64
import collections
import logging
import logging.handlers
import re
import threading
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from qargo_desktop import APP_NAME

log = logging.getLogger(__name__)

REDACTED = "[redacted]"
LOG_FORMAT = "%(asctime)s %(levelname)-8s %(name)s [%(threadName)s] %(message)s"
LOG_FILE_MAX_BYTES = 1_000_000
LOG_FILE_BACKUPS = 5
RING_CAPACITY = 2000

# Keys whose values are secrets wherever they appear.
_SECRET_KEYS = (
    "access_token",
    "refresh_token",
    "id_token",
    "device_code",
    "user_code",
    "client_secret",
    "client_assertion",
    "assertion",
    "code_verifier",
    "password",
    "passwd",
    "secret",
    "token",
    "session_key",
    "private_key",
)
# Header-like keys whose whole value is a secret.
_HEADER_KEYS = ("authorization", "proxy-authorization", "cookie", "set-cookie")

_KEYS = "|".join(re.escape(k) for k in sorted(_SECRET_KEYS, key=len, reverse=True))
_HEADERS = "|".join(re.escape(k) for k in sorted(_HEADER_KEYS, key=len, reverse=True))
# A key must start a word: "error_code" or "postcode" must not look like "code".
_KEY_START = r"(?<![A-Za-z0-9_-])"

# API problem codes and Graph error codes are what logs should say; they look like words.
_HARMLESS_CODE = re.compile(r"^(?:[a-z]+(?:_[a-z0-9]+)*|[A-Z][A-Za-z]+|AADSTS\d+|\d{1,4})$")


def _quoted_replacement(match: re.Match[str]) -> str:
    key = match.group("key")
    value = match.group("value")
    if key.lower() == "code" and _HARMLESS_CODE.match(value):
        return match.group(0)
    quote = match.group("q")
    value_quote = match.group("vq")
    return f"{quote}{key}{quote}{match.group('sep')}{value_quote}{REDACTED}{value_quote}"


def _unquoted_replacement(match: re.Match[str]) -> str:
    key = match.group("key")
    before = match.string[match.start() - 1 : match.start()] if match.start() else ""
    # In a URL or form body ("?code=", "&code=") a code is always an authorisation code;
    # in prose ("code=mailbox_exists") it is usually an error code worth keeping.
    if (
        key.lower() == "code"
        and before not in ("?", "&", "#")
        and _HARMLESS_CODE.match(match["value"])
    ):
        return match.group(0)
    return f"{key}={REDACTED}"


def _credential_replacement(match: re.Match[str]) -> str:
    credential = match.group(3)
    # "Basic configuration loaded" is prose: credentials carry digits or symbols, or are long.
    if credential.isalpha() and len(credential) < 20:
        return match.group(0)
    return f"{match.group(1)}{match.group(2)}{REDACTED}"


_PATTERNS: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    # "Authorization: Bearer x", "Cookie: a=b; c=d" as header lines: to the end of the line.
    (
        re.compile(rf"{_KEY_START}({_HEADERS})(\s*:\s*)(?!\s*['\"])[^\r\n]+", re.IGNORECASE),
        lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}",
    ),
    # JSON, dict reprs and keyword reprs: "key": "value", 'key': 'value', key='value'.
    (
        re.compile(
            rf"""(?P<q>["']?){_KEY_START}(?P<key>{_KEYS}|{_HEADERS}|code)(?P=q)"""
            rf"""(?P<sep>\s*[:=]\s*)(?P<vq>["'])(?P<value>(?:\\.|(?!(?P=vq)).)*)(?P=vq)""",
            re.IGNORECASE,
        ),
        _quoted_replacement,
    ),
    # Query strings, form bodies and unquoted key=value: up to the next separator.
    (
        re.compile(
            rf"{_KEY_START}(?P<key>{_KEYS}|code)=(?P<value>(?!\[redacted)[^&\s'\",;)}}\]]+)",
            re.IGNORECASE,
        ),
        _unquoted_replacement,
    ),
    # Credentials after an auth scheme, wherever they appear.
    (
        re.compile(r"\b(Bearer|Basic|Negotiate|NTLM|PoP)(\s+)([A-Za-z0-9\-._~+/]{8,}=*)"),
        _credential_replacement,
    ),
    # JWTs (JWS and JWE), even bare.
    (
        re.compile(r"\beyJ[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]*){1,4}"),
        "[redacted JWT]",
    ),
]

# More forms, found by feeding the filter what libraries and people actually log: other
# spellings of the keys (camelCase, hyphens), JSON inside a JSON string, header tuples,
# percent-encoded forms, "key: value" lines, passwords in URLs, bare Microsoft token
# shapes, and mail message bodies (personal data, never needed in a log).
_FLEX_KEYS = (
    r"(?:access|refresh|id)[-_]?token|device[-_]?code|user[-_]?code|client[-_]?secret"
    r"|client[-_]?assertion|code[-_]?verifier|api[-_]?key|x-api-key|session[-_]?key"
    r"|private[-_]?key|password|passwd|secret|assertion|token"
)
_BODY_KEYS = r"body|bodyPreview|uniqueBody|content"
_TOKENISH = r"[A-Za-z0-9._~+/=-]"


def _value_redacted(match: re.Match[str]) -> str:
    start, end = match.start("value") - match.start(), match.end("value") - match.start()
    whole = match.group(0)
    return whole[:start] + REDACTED + whole[end:]


def _keep_harmless_code(match: re.Match[str]) -> str:
    if match.group("key").lower() == "code" and _HARMLESS_CODE.match(match.group("value")):
        return match.group(0)
    return _value_redacted(match)


_PATTERNS += [
    # "https://user:password@proxy:8080": the user name stays, the password goes.
    (
        re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^\s/:@'\"]+):[^\s/@'\"]+@"),
        lambda m: f"{m.group('scheme')}{m.group('user')}:{REDACTED}@",
    ),
    # JSON inside a JSON string: {\"refresh_token\": \"...\"}.
    (
        re.compile(
            rf"""\\(?P<q>["']){_KEY_START}(?P<key>{_FLEX_KEYS}|{_HEADERS}|code)\\(?P=q)"""
            rf"""\s*:\s*\\(?P<vq>["'])(?P<value>(?:(?!\\["']).)*)\\(?P=vq)""",
            re.IGNORECASE,
        ),
        _keep_harmless_code,
    ),
    # Other spellings in JSON, dict and keyword reprs: "refreshToken": "...".
    (
        re.compile(
            rf"""(?P<q>["']?){_KEY_START}(?P<key>{_FLEX_KEYS})(?P=q)"""
            rf"""\s*[:=]\s*(?P<vq>["'])(?P<value>(?:\\.|(?!(?P=vq)).)+)(?P=vq)""",
            re.IGNORECASE,
        ),
        _keep_harmless_code,
    ),
    # Tuples and lists of pairs: ('Cookie', 'session=...'), ("refresh_token", "...").
    (
        re.compile(
            rf"""(?<=[(\[])\s*(?P<q>["'])(?P<key>{_FLEX_KEYS}|{_HEADERS}|code)(?P=q)\s*,\s*"""
            rf"""(?P<vq>["'])(?P<value>(?:\\.|(?!(?P=vq)).)+)(?P=vq)""",
            re.IGNORECASE,
        ),
        _keep_harmless_code,
    ),
    # Percent-encoded: refresh_token%3D..., %22refresh_token%22%3A%22...%22.
    (
        re.compile(
            rf"{_KEY_START}(?P<key>{_FLEX_KEYS}|code)%3D"
            rf"(?P<value>(?!\[redacted)(?:(?!%26)[^&\s'\",;)}}\]])+)",
            re.IGNORECASE,
        ),
        lambda m: f"{m.group('key')}%3D{REDACTED}",
    ),
    (
        re.compile(
            rf"%22(?P<key>{_FLEX_KEYS}|code)%22%3A(?:%20)*%22(?P<value>(?:(?!%22).)*)%22",
            re.IGNORECASE,
        ),
        lambda m: f"%22{m.group('key')}%22%3A%22{REDACTED}%22",
    ),
    # Unquoted with other spellings: refreshToken=..., api_key=...
    (
        re.compile(
            rf"{_KEY_START}(?P<key>{_FLEX_KEYS})=(?P<value>(?!\[redacted)[^&\s'\",;)}}\]]+)",
            re.IGNORECASE,
        ),
        lambda m: f"{m.group('key')}={REDACTED}",
    ),
    # "refresh_token: 0.AXk...", "Refresh-Token: ...", "code: 0.AVY..." as lines or prose.
    (
        re.compile(
            rf"{_KEY_START}(?P<key>{_FLEX_KEYS}|code)(?P<sep>\s*:\s*)(?P<value>{_TOKENISH}{{8,}})",
            re.IGNORECASE,
        ),
        _keep_harmless_code,
    ),
    # Mail message bodies: a Graph "body" object, and body text in any quoted form.
    (
        re.compile(
            r"""(?P<q>["'])(?P<key>body|uniqueBody)(?P=q)(?P<sep>\s*:\s*)\{[^{}]*\}""",
            re.IGNORECASE,
        ),
        lambda m: (
            f"{m.group('q')}{m.group('key')}{m.group('q')}{m.group('sep')}"
            f"{m.group('q')}{REDACTED}{m.group('q')}"
        ),
    ),
    (
        re.compile(
            rf"""(?P<q>["']?){_KEY_START}(?P<key>{_BODY_KEYS})(?P=q)(?P<sep>\s*[:=]\s*)"""
            rf"""(?P<vq>["'])(?P<value>(?:\\.|(?!(?P=vq)).)+)(?P=vq)""",
        ),
        _value_redacted,
    ),
    # Bare Microsoft-shaped refresh tokens and codes ("0.AXkA...", "1.AR8A...") and
    # device codes ("DAQABAAEAAA..."), wherever they appear.
    (
        re.compile(r"\b\d\.A[A-Za-z0-9_-]{20,}(?:\.[A-Za-z0-9_-]+)*"),
        "[redacted token]",
    ),
    (
        re.compile(r"\b[A-Z]AQAB[A-Za-z0-9_-]{20,}"),
        "[redacted token]",
    ),
]

# -- secrets registered at run time --------------------------------------------------------


class _SecretRegistry:
    """Values to redact verbatim: the token cache key, a token the app is holding...

    Python strings cannot be weakly referenced, so this keeps the most recent
    ``capacity`` values instead of a weak set; callers can forget a value when done.
    """

    min_length = 8

    def __init__(self, capacity: int = 512) -> None:
        self._values: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()
        self._pattern: re.Pattern[str] | None = None

    def add(self, value: str | bytes) -> None:
        forms = _forms(value)
        with self._lock:
            for form in forms:
                if len(form) < self.min_length:
                    continue
                self._values[form] = None
                self._values.move_to_end(form)
            while len(self._values) > self._capacity:
                self._values.popitem(last=False)
            self._pattern = None

    def discard(self, value: str | bytes) -> None:
        with self._lock:
            for form in _forms(value):
                self._values.pop(form, None)
            self._pattern = None

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._pattern = None

    def redact(self, text: str) -> str:
        with self._lock:
            if not self._values:
                return text
            if self._pattern is None:
                # Longest first, so that a value containing another is replaced whole.
                ordered = sorted(self._values, key=len, reverse=True)
                self._pattern = re.compile("|".join(re.escape(v) for v in ordered))
            pattern = self._pattern
        return pattern.sub(REDACTED, text)


def _forms(value: str | bytes) -> list[str]:
    if isinstance(value, bytes):
        # Raw bytes reach logs only encoded; register the encodings a log could show.
        return [
            base64.b64encode(value).decode("ascii"),
            base64.urlsafe_b64encode(value).decode("ascii").rstrip("="),
            value.hex(),
        ]
    return [value] if value else []


_registry = _SecretRegistry()


def register_secret(value: str | bytes) -> None:
    """Redact this exact value (and, for bytes, its base64 and hex forms) from every log.

    Values shorter than 8 characters are ignored: redacting them would mangle ordinary
    text.
    """
    _registry.add(value)


def forget_secret(value: str | bytes) -> None:
    """Stop redacting a value registered earlier."""
    _registry.discard(value)


def forget_all_secrets() -> None:
    """Stop redacting every registered value (tests use it)."""
    _registry.clear()


def redact(text: str) -> str:
    """Return ``text`` with every secret this module recognises replaced."""
    if not text:
        return text
    text = _registry.redact(text)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


# -- the filter ----------------------------------------------------------------------------


class RedactingFilter(logging.Filter):
    """Rewrite a record so that no handler sees a secret.

    The message is merged with its arguments first (a secret often arrives as an argument),
    and exception and stack text are formatted and redacted in place.
    """

    _MARK = "_qargo_redacted"

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the record in place; never drops it."""
        if getattr(record, self._MARK, False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the record
            message = f"{record.msg!r} (arguments could not be formatted)"
        record.msg = redact(message)
        record.args = None
        if record.exc_info and record.exc_info[0] is not None:
            text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            record.exc_text = redact(text)
            # The formatted text is kept; the live exception (and its secrets) is dropped.
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        setattr(record, self._MARK, True)
        return True


# -- the ring buffer -----------------------------------------------------------------------

RecordListener = Callable[[logging.LogRecord], None]


class RingBufferHandler(logging.Handler):
    """Keeps the last records in memory for the in-app log view.

    The listener, if set, is called on the thread that logged; a GUI must hand the record
    over to its own thread.
    """

    def __init__(self, capacity: int = RING_CAPACITY, listener: RecordListener | None = None):
        super().__init__()
        self._records: collections.deque[logging.LogRecord] = collections.deque(maxlen=capacity)
        self._listener = listener
        self._buffer_lock = threading.Lock()

    @property
    def capacity(self) -> int:
        """How many records are kept."""
        return self._records.maxlen or 0

    def set_listener(self, listener: RecordListener | None) -> None:
        """Call ``listener`` with every new record (``None`` stops it)."""
        self._listener = listener

    def emit(self, record: logging.LogRecord) -> None:
        """Store the record, formatted, and tell the listener."""
        try:
            # Formatting fills record.message and record.asctime for the view.
            setattr(record, "formatted", self.format(record))  # noqa: B010
            with self._buffer_lock:
                self._records.append(record)
            listener = self._listener
            if listener is not None:
                listener(record)
        except Exception:
            self.handleError(record)

    def records(self) -> list[logging.LogRecord]:
        """The kept records, oldest first."""
        with self._buffer_lock:
            return list(self._records)

    def lines(self) -> list[str]:
        """The kept records as formatted lines, oldest first."""
        return [str(getattr(r, "formatted", r.getMessage())) for r in self.records()]

    def clear(self) -> None:
        """Forget the kept records."""
        with self._buffer_lock:
            self._records.clear()


# -- set-up --------------------------------------------------------------------------------


@dataclass
class LoggingSetup:
    """What :func:`setup_logging` installed.

    Attributes:
        ring_buffer: Feeds the in-app log view.
        file_handler: The rotating file, or ``None`` if the folder could not be used.
        log_file: The current log file, or ``None``.
        problem: Why there is no log file, if there is none.
    """

    ring_buffer: RingBufferHandler
    file_handler: logging.handlers.RotatingFileHandler | None
    log_file: Path | None
    problem: str | None = None

    @property
    def handlers(self) -> list[logging.Handler]:
        """Every handler installed on the root logger."""
        found: list[logging.Handler] = [self.ring_buffer]
        if self.file_handler is not None:
            found.append(self.file_handler)
        return found


_INSTALLED_MARK = "_qargo_installed"


def setup_logging(
    log_dir: Path | None,
    level: int | str = logging.INFO,
    *,
    ring_capacity: int = RING_CAPACITY,
    console: bool = False,
    max_bytes: int = LOG_FILE_MAX_BYTES,
    backup_count: int = LOG_FILE_BACKUPS,
) -> LoggingSetup:
    """Install the app's handlers on the root logger (again: replaces the earlier ones).

    Args:
        log_dir: Folder of the rotating file (``None``: no file).
        level: Root level (``"DEBUG"``, ``logging.INFO``...).
        ring_capacity: Records kept for the in-app view.
        console: Also write to standard error (headless commands with ``--verbose``).
        max_bytes: Size at which the file rotates.
        backup_count: Rotated files kept.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _INSTALLED_MARK, False):
            root.removeHandler(handler)
            handler.close()

    formatter = logging.Formatter(LOG_FORMAT)
    redactor = RedactingFilter()
    installed: list[logging.Handler] = []

    ring = RingBufferHandler(ring_capacity)
    installed.append(ring)

    file_handler = None
    log_file = None
    problem = None
    if log_dir is not None:
        try:
            log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            log_file = log_dir / f"{APP_NAME}.log"
            file_handler = logging.handlers.RotatingFileHandler(
                log_file, maxBytes=max_bytes, backupCount=backup_count, encoding="utf-8"
            )
            installed.append(file_handler)
        except OSError as exc:
            problem = f"the log folder {log_dir} cannot be used: {exc.strerror or exc}"
            log_file = None

    if console:
        installed.append(logging.StreamHandler())

    for handler in installed:
        handler.setFormatter(formatter)
        handler.addFilter(redactor)
        setattr(handler, _INSTALLED_MARK, True)
        root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else level.upper())
    _quiet_libraries(_level_number(level))

    if problem:
        log.warning("Logging to memory only: %s", problem)
    return LoggingSetup(ring, file_handler, log_file, problem)


def _level_number(level: int | str) -> int:
    if isinstance(level, int):
        return level
    number = logging.getLevelName(level.upper())
    return number if isinstance(number, int) else logging.INFO


def _quiet_libraries(level: int, names: Iterable[str] = ("urllib3", "msal", "keyring")) -> None:
    # Their INFO and DEBUG chatter drowns ours; at DEBUG they speak (redacted) too.
    for name in names:
        logging.getLogger(name).setLevel(
            logging.DEBUG if level <= logging.DEBUG else logging.WARNING
        )
