"""Typed settings: defaults < TOML config file < ``QARGO_*`` environment < command-line flags.

Every key, its environment variable, default and an example are documented in
``docs/configuration.md``; keep that page in step with :data:`FIELDS` below.

Loading never guesses: a value that does not parse stops the app with a message that names
the key and where the value came from (``QARGO_API_BASE_URL: not an https URL``). Keys this
version does not know are reported as warnings, not errors, so a file written by a newer
version still opens.
"""

from __future__ import annotations

import logging
import math
import os
import re
import tempfile
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import platformdirs

from qargo_desktop import APP_NAME, ORGANISATION_NAME

log = logging.getLogger(__name__)

#: The settings format this version writes and understands (the ``version`` key).
SETTINGS_VERSION = 1

#: Default Microsoft Graph endpoint.
DEFAULT_GRAPH_BASE_URL = "https://graph.microsoft.com/v1.0"

#: Who support bundles go to, when the settings do not say (``support_contact``).
DEFAULT_SUPPORT_CONTACT = "your Qargo support contact"

CONFIG_FILE_NAME = "config.toml"
ENV_PREFIX = "QARGO_"

#: Where a value came from, for diagnostics.
Source = Literal["default", "file", "environment", "flag"]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class ConfigError(ValueError):
    """The settings cannot be used; ``problems`` holds one message per bad value."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class Settings:
    """The app's settings after every source has been applied.

    Attributes:
        authority: Identity authority, ``https://login.microsoftonline.com/<tenant>``.
        client_id: Application (client) id of the desktop app registration.
        api_base_url: Base of the Qargo organisation API (``.../api``; paths add ``/v1/...``).
        graph_base_url: Base of Microsoft Graph.
        admin_scopes: Scopes the admin sign-in asks for (the Qargo API's admin scope).
        proxy: ``"system"`` (OS or environment proxy), ``"none"`` (direct) or a proxy URL.
        extra_ca_file: A PEM file of extra CA certificates trusted besides the OS store.
        http_timeout_s: Read timeout of every HTTP request.
        http_connect_timeout_s: Connect timeout of every HTTP request.
        sign_in_timeout_s: How long an interactive sign-in may wait for the browser.
        refresh_interval_s: How often the mailbox list refreshes; 0 turns it off.
        language: UI language (BCP 47, e.g. ``en-GB``); ``None`` follows the system.
        theme: ``"system"`` (follow the system's light or dark scheme), ``"light"`` or
            ``"dark"``.
        sandbox: Run against the built-in sandbox instead of the configured services.
        log_level: Level of the log file and the in-app log view.
        config_dir: Override of the config folder (moves data, logs and cache with it).
        data_dir: Override of the data folder (token cache).
        log_dir: Override of the log folder.
        support_contact: Where people send support bundles, in the words shown to them
            (an email address, a portal, a name).
        version: The settings format version read from the file.
        config_file: The file the settings were read from, if any.
        sources: Where each key's value came from (``default``/``file``/...).
        warnings: Non-fatal problems found while loading (unknown keys and the like).
    """

    authority: str | None = None
    client_id: str | None = None
    api_base_url: str | None = None
    graph_base_url: str = DEFAULT_GRAPH_BASE_URL
    admin_scopes: tuple[str, ...] = ()
    proxy: str = "system"
    extra_ca_file: Path | None = None
    http_timeout_s: float = 30.0
    http_connect_timeout_s: float = 10.0
    sign_in_timeout_s: float = 300.0
    refresh_interval_s: float = 60.0
    language: str | None = None
    theme: str = "system"
    sandbox: bool = False
    log_level: str = "INFO"
    config_dir: Path | None = None
    data_dir: Path | None = None
    log_dir: Path | None = None
    support_contact: str = DEFAULT_SUPPORT_CONTACT
    version: int = SETTINGS_VERSION
    config_file: Path | None = field(default=None, compare=False)
    sources: Mapping[str, Source] = field(default_factory=dict, compare=False, hash=False)
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def missing_for_production(self) -> list[str]:
        """Name the settings a run against real services needs but does not have."""
        missing = []
        for name in ("authority", "client_id", "api_base_url"):
            if not getattr(self, name):
                missing.append(name)
        if not self.admin_scopes:
            missing.append("admin_scopes")
        return missing

    def source_of(self, name: str) -> Source:
        """Return where a key's value came from."""
        return self.sources.get(name, "default")

    def describe(self) -> dict[str, object]:
        """Return the settings for a diagnostics report (proxy credentials masked)."""
        report: dict[str, object] = {}
        for spec in FIELDS:
            value: object = getattr(self, spec.name)
            if spec.name == "proxy" and isinstance(value, str):
                value = mask_url_credentials(value)
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            report[spec.name] = {"value": value, "source": self.source_of(spec.name)}
        report["version"] = self.version
        report["config_file"] = str(self.config_file) if self.config_file else None
        return report


@dataclass(frozen=True)
class AppPaths:
    """The folders and files the app uses.

    Attributes:
        config_dir: Holds ``config.toml`` and the window state.
        data_dir: Holds the encrypted token cache.
        log_dir: Holds the rotating log files.
        cache_dir: Holds disposable caches (nothing secret).
    """

    config_dir: Path
    data_dir: Path
    log_dir: Path
    cache_dir: Path

    @property
    def config_file(self) -> Path:
        """The default config file."""
        return self.config_dir / CONFIG_FILE_NAME

    @property
    def cache_file(self) -> Path:
        """The encrypted MSAL token cache."""
        return self.data_dir / "token_cache.bin"

    @property
    def log_file(self) -> Path:
        """The current log file (older ones are ``.1`` to ``.5`` beside it)."""
        return self.log_dir / f"{APP_NAME}.log"

    @property
    def window_state_file(self) -> Path:
        """The QSettings INI file for window geometry and similar UI state."""
        return self.config_dir / "window-state.ini"

    def ensure(self) -> None:
        """Create the folders, private to the user where the platform allows it."""
        for folder in (self.config_dir, self.data_dir, self.log_dir, self.cache_dir):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)


def default_config_dir() -> Path:
    """The platform's config folder for the app."""
    return Path(platformdirs.user_config_dir(APP_NAME, ORGANISATION_NAME))


def app_paths(source: Settings | Path | str | None = None) -> AppPaths:
    """Return the app's folders.

    Args:
        source: ``Settings`` (honours its ``config_dir``/``data_dir``/``log_dir``
            overrides), a config folder override (everything moves under it), or ``None``
            for the platform's folders.
    """
    config_dir: Path | None
    data_dir: Path | None = None
    log_dir: Path | None = None
    if isinstance(source, Settings):
        config_dir, data_dir, log_dir = source.config_dir, source.data_dir, source.log_dir
    elif source is None:
        config_dir = None
    else:
        config_dir = Path(source).expanduser()

    if config_dir is not None:
        # One override moves everything so that a test or a second profile touches nothing
        # of the person's real folders.
        return AppPaths(
            config_dir=config_dir,
            data_dir=data_dir or config_dir / "data",
            log_dir=log_dir or config_dir / "logs",
            cache_dir=config_dir / "cache",
        )
    return AppPaths(
        config_dir=default_config_dir(),
        data_dir=data_dir or Path(platformdirs.user_data_dir(APP_NAME, ORGANISATION_NAME)),
        log_dir=log_dir or Path(platformdirs.user_log_dir(APP_NAME, ORGANISATION_NAME)),
        cache_dir=Path(platformdirs.user_cache_dir(APP_NAME, ORGANISATION_NAME)),
    )


# -- parsing -------------------------------------------------------------------------------

_Parser = Callable[[object, "_Origin"], object]


@dataclass(frozen=True)
class _Origin:
    """Where a raw value came from: the label for messages and the folder for paths."""

    label: str
    source: Source
    base_dir: Path | None = None


class _Invalid(ValueError):
    """A single value is wrong; the message says why (without the key)."""


def mask_url_credentials(url: str) -> str:
    """Replace the password in ``scheme://user:password@host`` with ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def _text(value: object, origin: _Origin) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"expected text, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise _Invalid("is empty")
    return text


def _https_url(value: object, origin: _Origin) -> str:
    text = _text(value, origin)
    try:
        parts = urlsplit(text)
    except ValueError as exc:
        raise _Invalid(f"not a URL ({exc})") from None
    if parts.scheme.lower() != "https" or not parts.hostname:
        raise _Invalid(f"not an https URL: {text!r}")
    if parts.query or parts.fragment:
        raise _Invalid(f"must not carry a query or fragment: {text!r}")
    return text.rstrip("/")


def _authority(value: object, origin: _Origin) -> str:
    url = _https_url(value, origin)
    # MSAL rejects an authority without a tenant segment, with a less helpful message.
    if not urlsplit(url).path.strip("/"):
        raise _Invalid(
            f"needs a tenant in the path, e.g. https://login.microsoftonline.com/<tenant>: {url!r}"
        )
    return url


# A GUID, with or without its hyphens and braces: checked without loading uuid (and, with
# it, platform) at start-up.
_GUID = re.compile(
    r"(?:urn:)?(?:uuid:)?\{?[0-9A-Fa-f]{8}(?:-?[0-9A-Fa-f]{4}){3}-?[0-9A-Fa-f]{12}\}?"
)


def _client_id(value: object, origin: _Origin) -> str:
    text = _text(value, origin)
    if not _GUID.fullmatch(text):
        raise _Invalid(f"not an application id (a GUID): {text!r}")
    return text


def _scopes(value: object, origin: _Origin) -> tuple[str, ...]:
    items: list[object]
    if isinstance(value, str):
        items = list(re.split(r"[\s,]+", value.strip()))
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise _Invalid(f"expected a list of scopes, got {type(value).__name__}")
    scopes: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise _Invalid(f"expected scope names as text, got {type(item).__name__}")
        scope = item.strip()
        if not scope:
            continue
        if any(ch.isspace() for ch in scope):
            raise _Invalid(f"a scope cannot contain spaces: {scope!r}")
        if scope not in scopes:
            scopes.append(scope)
    return tuple(scopes)


def _proxy(value: object, origin: _Origin) -> str:
    text = _text(value, origin)
    if text.lower() in ("system", "none"):
        return text.lower()
    try:
        parts = urlsplit(text)
    except ValueError as exc:
        raise _Invalid(f"not a URL ({exc})") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise _Invalid(
            f'expected "system", "none" or an http:// or https:// proxy URL, got '
            f"{mask_url_credentials(text)!r}"
        )
    return text


def _path(value: object, origin: _Origin) -> Path:
    path = (value if isinstance(value, Path) else Path(_text(value, origin))).expanduser()
    if not path.is_absolute():
        # A relative path in the file is relative to the file, so the file can travel
        # with what it points at; anywhere else it is relative to the working folder.
        path = (origin.base_dir or Path.cwd()) / path
    return path


def _ca_file(value: object, origin: _Origin) -> Path:
    path = _path(value, origin)
    if not path.is_file():
        raise _Invalid(f"file not found: {path}")
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise _Invalid(f"cannot be read: {path} ({exc.strerror})") from None
    if b"-----BEGIN CERTIFICATE-----" not in content:
        raise _Invalid(f"no PEM certificate in {path}")
    return path


def _number(low: float, high: float, *, allow_zero: bool = False) -> _Parser:
    def parse(value: object, origin: _Origin) -> float:
        if isinstance(value, bool):
            raise _Invalid("expected a number of seconds, got true/false")
        if isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                raise _Invalid(f"expected a number of seconds, got {value!r}") from None
        elif isinstance(value, int | float):
            number = float(value)
        else:
            raise _Invalid(f"expected a number of seconds, got {type(value).__name__}")
        if not math.isfinite(number):
            raise _Invalid(f"expected a finite number, got {value!r}")
        if allow_zero and number == 0:
            return 0.0
        if not low <= number <= high:
            zero = " (or 0 to turn it off)" if allow_zero else ""
            raise _Invalid(f"must be between {low:g} and {high:g}{zero}, got {number:g}")
        return number

    return parse


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _bool(value: object, origin: _Origin) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise _Invalid(f"expected true or false, got {value!r}")


_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")


def _language(value: object, origin: _Origin) -> str:
    text = _text(value, origin)
    if not _LANGUAGE.match(text):
        raise _Invalid(f"expected a language tag such as en-GB or nl, got {text!r}")
    return text.replace("_", "-")


THEMES = ("system", "light", "dark")


def _theme(value: object, origin: _Origin) -> str:
    text = _text(value, origin).lower()
    if text not in THEMES:
        raise _Invalid(f"expected one of {', '.join(THEMES)}, got {value!r}")
    return text


def _log_level(value: object, origin: _Origin) -> str:
    text = _text(value, origin).upper()
    if text not in LOG_LEVELS:
        raise _Invalid(f"expected one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return text


@dataclass(frozen=True)
class FieldSpec:
    """One setting: how it parses and where it may be set."""

    name: str
    parse: _Parser
    in_file: bool = True

    @property
    def env_var(self) -> str:
        """The environment variable that sets it."""
        return ENV_PREFIX + self.name.upper()

    @property
    def flag(self) -> str:
        """The command-line flag that sets it."""
        return "--" + self.name.replace("_", "-")


#: Every setting, in the order the documentation lists them.
FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("authority", _authority),
    FieldSpec("client_id", _client_id),
    FieldSpec("api_base_url", _https_url),
    FieldSpec("graph_base_url", _https_url),
    FieldSpec("admin_scopes", _scopes),
    FieldSpec("proxy", _proxy),
    FieldSpec("extra_ca_file", _ca_file),
    FieldSpec("http_timeout_s", _number(1, 600)),
    FieldSpec("http_connect_timeout_s", _number(1, 120)),
    FieldSpec("sign_in_timeout_s", _number(30, 3600)),
    FieldSpec("refresh_interval_s", _number(5, 86400, allow_zero=True)),
    FieldSpec("language", _language),
    FieldSpec("theme", _theme),
    FieldSpec("sandbox", _bool),
    FieldSpec("log_level", _log_level),
    # The config folder holds the file, so the file cannot move it.
    FieldSpec("config_dir", _path, in_file=False),
    FieldSpec("data_dir", _path),
    FieldSpec("log_dir", _path),
    FieldSpec("support_contact", _text),
)
_BY_NAME = {spec.name: spec for spec in FIELDS}

#: Keys the file may hold besides the settings themselves.
_FILE_META_KEYS = frozenset({"version"})
#: Environment variables that are not settings but are read here.
_ENV_META = frozenset({ENV_PREFIX + "CONFIG_FILE"})


def load_settings(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Settings:
    """Build the settings from defaults, the config file, the environment and flags.

    Args:
        config_file: The file named by ``--config``; it must exist. ``None`` reads
            ``QARGO_CONFIG_FILE`` or else ``config.toml`` in the config folder, which may be
            missing.
        environ: The environment (``os.environ`` in the app; a dict in tests).
        overrides: Flag values by setting name (``vars(args)`` works: ``None`` values,
            ``False`` for on/off settings (a ``store_true`` flag left off) and names that
            are not settings are ignored).

    Raises:
        ConfigError: Some value is unusable; every problem is listed, each naming the key
            and its source.
    """
    environ = os.environ if environ is None else environ
    overrides = overrides or {}
    problems: list[str] = []
    warnings: list[str] = []
    values: dict[str, object] = {}
    sources: dict[str, Source] = {}

    env_values = _read_environment(environ, problems, warnings)
    flag_values = _read_flags(overrides, problems)

    # The config folder decides where the default file is, so it is settled first.
    config_dir = flag_values.get("config_dir", env_values.get("config_dir"))
    if not isinstance(config_dir, Path):
        config_dir = None

    required = True
    file_origin_label = "--config"
    if config_file is None and environ.get(ENV_PREFIX + "CONFIG_FILE", "").strip():
        config_file = Path(environ[ENV_PREFIX + "CONFIG_FILE"].strip())
        file_origin_label = ENV_PREFIX + "CONFIG_FILE"
    if config_file is None:
        config_file = app_paths(config_dir).config_file
        required = False
    config_file = config_file.expanduser().absolute()

    file_values, version, loaded = _read_file(
        config_file, required, file_origin_label, problems, warnings
    )

    layers: list[tuple[dict[str, object], Source]] = [
        (file_values, "file"),
        (env_values, "environment"),
        (flag_values, "flag"),
    ]
    for layer, source in layers:
        for name, value in layer.items():
            values[name] = value
            sources[name] = source

    if problems:
        raise ConfigError(problems)

    for message in warnings:
        log.warning("%s", message)
    return Settings(
        **values,  # type: ignore[arg-type]
        version=version,
        config_file=config_file if loaded else None,
        sources=sources,
        warnings=tuple(warnings),
    )


def _parse(spec: FieldSpec, raw: object, origin: _Origin, problems: list[str]) -> object:
    try:
        return spec.parse(raw, origin)
    except _Invalid as exc:
        problems.append(f"{origin.label}: {exc}")
        return None


def _read_environment(
    environ: Mapping[str, str], problems: list[str], warnings: list[str]
) -> dict[str, object]:
    values: dict[str, object] = {}
    for spec in FIELDS:
        raw = environ.get(spec.env_var)
        # An empty variable counts as unset: shells and CI templates leave them behind.
        if raw is None or not raw.strip():
            continue
        value = _parse(spec, raw, _Origin(spec.env_var, "environment"), problems)
        if value is not None:
            values[spec.name] = value
    known = {spec.env_var for spec in FIELDS} | _ENV_META
    for name in environ:
        if name.startswith(ENV_PREFIX) and name not in known:
            # Other tools of ours may use the prefix too, so this is only a hint.
            log.debug("Ignoring environment variable %s: not a setting", name)
    return values


def _read_flags(overrides: Mapping[str, object], problems: list[str]) -> dict[str, object]:
    values: dict[str, object] = {}
    for name, raw in overrides.items():
        spec = _BY_NAME.get(name)
        if spec is None or raw is None:
            continue
        if raw is False and spec.parse is _bool:
            # A store_true flag left off reads False; it must not hide the file's true.
            continue
        value = _parse(spec, raw, _Origin(spec.flag, "flag"), problems)
        if value is not None:
            values[name] = value
    return values


def _read_file(
    path: Path, required: bool, label: str, problems: list[str], warnings: list[str]
) -> tuple[dict[str, object], int, bool]:
    try:
        with path.open("rb") as stream:
            document = tomllib.load(stream)
    except FileNotFoundError:
        if required:
            problems.append(f"{label}: file not found: {path}")
        return {}, SETTINGS_VERSION, False
    except OSError as exc:
        problems.append(f"{path}: cannot be read ({exc.strerror})")
        return {}, SETTINGS_VERSION, False
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        problems.append(f"{path}: not valid TOML: {exc}")
        return {}, SETTINGS_VERSION, False

    version = SETTINGS_VERSION
    raw_version = document.get("version", SETTINGS_VERSION)
    if isinstance(raw_version, bool) or not isinstance(raw_version, int) or raw_version < 1:
        problems.append(f"{path}: version: expected a whole number, got {raw_version!r}")
    else:
        version = raw_version
        if version > SETTINGS_VERSION:
            warnings.append(
                f"{path}: written for settings version {version}; this app knows version "
                f"{SETTINGS_VERSION} and reads only the keys it understands"
            )

    values: dict[str, object] = {}
    for key, raw in document.items():
        if key in _FILE_META_KEYS:
            continue
        spec = _BY_NAME.get(key)
        if spec is None or not spec.in_file:
            why = "set it with --config-dir or QARGO_CONFIG_DIR" if spec else "not a setting"
            warnings.append(f"{path}: unknown key {key!r} ignored ({why})")
            continue
        origin = _Origin(f"{path}: {key}", "file", base_dir=path.parent)
        value = _parse(spec, raw, origin, problems)
        if value is not None:
            values[key] = value
    return values, version, True


# -- writing -------------------------------------------------------------------------------

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_ESCAPES = {
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
    '"': '\\"',
    "\\": "\\\\",
}


def _toml_string(text: str) -> str:
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_value(value: object, key: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, Path):
        return _toml_string(str(value))
    if isinstance(value, list | tuple):
        items = []
        for item in value:
            if not isinstance(item, str):
                raise TypeError(f"{key}: only lists of text can be written, got {item!r}")
            items.append(_toml_string(item))
        return "[" + ", ".join(items) + "]"
    raise TypeError(f"{key}: cannot write a {type(value).__name__} to TOML")


def format_config(mapping: Mapping[str, Any]) -> str:
    """Render settings as TOML text (``version`` first, ``None`` values left out)."""
    lines = [
        f"# {APP_NAME} settings. Every key is described in docs/configuration.md.",
    ]
    items = dict(mapping)
    items.setdefault("version", SETTINGS_VERSION)
    ordered = [("version", items.pop("version")), *items.items()]
    for key, value in ordered:
        if not _BARE_KEY.match(key):
            raise ValueError(f"not a plain TOML key: {key!r}")
        if value is None:
            continue
        lines.append(f"{key} = {_toml_value(value, key)}")
    return "\n".join(lines) + "\n"


def write_config(path: Path, mapping: Mapping[str, Any]) -> None:
    """Write a TOML config file atomically.

    Values may be text, whole numbers, numbers, true/false, paths or lists of text;
    ``None`` leaves the key out. A ``version`` key is added when missing.

    Raises:
        TypeError: A value has a type this writer does not handle.
        ValueError: A key is not a plain TOML key.
        OSError: The file cannot be written.
    """
    text = format_config(mapping)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
    )
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="\n") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
