"""Settings: precedence, validation messages, paths, and the TOML writer."""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qargo_desktop.core.config import (
    DEFAULT_GRAPH_BASE_URL,
    FIELDS,
    SETTINGS_VERSION,
    AppPaths,
    ConfigError,
    Settings,
    app_paths,
    format_config,
    load_settings,
    mask_url_credentials,
    write_config,
)

CLIENT_ID = "0b6f8a2e-3c51-4d7e-9a6b-2f1c8e4d5a70"
OTHER_CLIENT_ID = "11111111-2222-3333-4444-555555555555"
PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_any_source(tmp_path: Path) -> None:
    result = load_settings(None, {"QARGO_CONFIG_DIR": str(tmp_path)}, {})

    assert result.authority is None
    assert result.graph_base_url == DEFAULT_GRAPH_BASE_URL
    assert result.proxy == "system"
    assert result.http_timeout_s == 30
    assert result.sign_in_timeout_s == 300
    assert result.refresh_interval_s == 60
    assert result.sandbox is False
    assert result.admin_scopes == ()
    assert result.version == SETTINGS_VERSION
    assert result.config_file is None  # the default file does not exist
    assert result.missing_for_production() == [
        "authority",
        "client_id",
        "api_base_url",
        "admin_scopes",
    ]


def test_precedence_defaults_file_environment_flags(tmp_path: Path) -> None:
    config = _write(
        tmp_path / "config.toml",
        f"""
        version = 1
        authority = "https://login.example.com/tenant-from-file"
        client_id = "{CLIENT_ID}"
        api_base_url = "https://file.example.com/api"
        http_timeout_s = 12
        language = "nl"
        """.replace("        ", ""),
    )
    environ = {
        "QARGO_API_BASE_URL": "https://env.example.com/api/",
        "QARGO_HTTP_TIMEOUT_S": "20",
        "QARGO_ADMIN_SCOPES": "api://qargo/Organisation.Manage, offline_access",
    }
    flags = {"http_timeout_s": 25.0, "authority": None, "command": "diagnose"}

    result = load_settings(config, environ, flags)

    assert result.authority == "https://login.example.com/tenant-from-file"
    assert result.api_base_url == "https://env.example.com/api"  # trailing slash dropped
    assert result.http_timeout_s == 25.0
    assert result.language == "nl"
    assert result.admin_scopes == ("api://qargo/Organisation.Manage", "offline_access")
    assert result.config_file == config.absolute()
    assert result.source_of("authority") == "file"
    assert result.source_of("api_base_url") == "environment"
    assert result.source_of("http_timeout_s") == "flag"
    assert result.source_of("proxy") == "default"
    assert result.missing_for_production() == []


def test_scopes_split_on_spaces_and_commas_and_lists(tmp_path: Path) -> None:
    result = load_settings(
        None,
        {"QARGO_CONFIG_DIR": str(tmp_path), "QARGO_ADMIN_SCOPES": "a b,c  d,, a"},
        {},
    )
    assert result.admin_scopes == ("a", "b", "c", "d")
    result = load_settings(None, {}, {"config_dir": tmp_path, "admin_scopes": ["x", "y"]})
    assert result.admin_scopes == ("x", "y")


def test_config_dir_flag_moves_every_folder(tmp_path: Path) -> None:
    _write(tmp_path / "profile" / "config.toml", 'language = "en-GB"\n')

    result = load_settings(None, {}, {"config_dir": str(tmp_path / "profile")})
    paths = app_paths(result)

    assert result.language == "en-GB"
    assert paths.config_dir == tmp_path / "profile"
    assert paths.data_dir == tmp_path / "profile" / "data"
    assert paths.log_dir == tmp_path / "profile" / "logs"
    assert paths.cache_dir == tmp_path / "profile" / "cache"
    assert paths.cache_file.parent == paths.data_dir
    assert paths.config_file == tmp_path / "profile" / "config.toml"


def test_flag_config_dir_beats_environment(tmp_path: Path) -> None:
    _write(tmp_path / "env" / "config.toml", 'language = "nl"\n')
    _write(tmp_path / "flag" / "config.toml", 'language = "de"\n')
    result = load_settings(
        None, {"QARGO_CONFIG_DIR": str(tmp_path / "env")}, {"config_dir": tmp_path / "flag"}
    )
    assert result.language == "de"


def test_data_and_log_dir_overrides(tmp_path: Path) -> None:
    _write(tmp_path / "c" / "config.toml", 'data_dir = "elsewhere/data"\n')
    result = load_settings(
        None, {"QARGO_CONFIG_DIR": str(tmp_path / "c"), "QARGO_LOG_DIR": str(tmp_path / "L")}, {}
    )
    paths = app_paths(result)
    # A relative path in the file is relative to the file's folder.
    assert paths.data_dir == tmp_path / "c" / "elsewhere" / "data"
    assert paths.log_dir == tmp_path / "L"


def test_platform_paths_by_default() -> None:
    paths = app_paths(None)
    assert "qargo-desktop" in str(paths.config_dir)
    assert paths.cache_file.name == "token_cache.bin"
    assert isinstance(app_paths(Settings()), AppPaths)


def test_app_paths_ensure_creates_private_folders(tmp_path: Path) -> None:
    paths = app_paths(tmp_path / "p")
    paths.ensure()
    for folder in (paths.config_dir, paths.data_dir, paths.log_dir, paths.cache_dir):
        assert folder.is_dir()


def test_qargo_config_file_environment(tmp_path: Path) -> None:
    config = _write(tmp_path / "x.toml", "sandbox = true\n")
    result = load_settings(None, {"QARGO_CONFIG_FILE": str(config)}, {})
    assert result.sandbox is True
    assert result.source_of("sandbox") == "file"


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"QARGO_API_BASE_URL": "http://api.example.com"}, "QARGO_API_BASE_URL: not an https URL"),
        ({"QARGO_AUTHORITY": "https://login.example.com"}, "QARGO_AUTHORITY: needs a tenant"),
        ({"QARGO_CLIENT_ID": "my-app"}, "QARGO_CLIENT_ID: not an application id"),
        ({"QARGO_HTTP_TIMEOUT_S": "soon"}, "QARGO_HTTP_TIMEOUT_S: expected a number"),
        ({"QARGO_HTTP_TIMEOUT_S": "0"}, "QARGO_HTTP_TIMEOUT_S: must be between"),
        ({"QARGO_HTTP_TIMEOUT_S": "nan"}, "QARGO_HTTP_TIMEOUT_S: expected a finite number"),
        ({"QARGO_SANDBOX": "maybe"}, "QARGO_SANDBOX: expected true or false"),
        ({"QARGO_PROXY": "ftp://proxy:21"}, "QARGO_PROXY: expected"),
        ({"QARGO_LANGUAGE": "english please"}, "QARGO_LANGUAGE: expected a language tag"),
        ({"QARGO_LOG_LEVEL": "LOUD"}, "QARGO_LOG_LEVEL: expected one of"),
        ({"QARGO_EXTRA_CA_FILE": "/nonexistent/ca.pem"}, "QARGO_EXTRA_CA_FILE: file not found"),
        ({"QARGO_GRAPH_BASE_URL": "https://g.example.com/v1?x=1"}, "must not carry a query"),
    ],
)
def test_environment_errors_name_the_variable(
    tmp_path: Path, environ: dict[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {"QARGO_CONFIG_DIR": str(tmp_path), **environ}, {})
    assert expected in str(caught.value)


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    config = _write(tmp_path / "config.toml", 'api_base_url = "ftp://x"\nhttp_timeout_s = true\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(config, {"QARGO_CLIENT_ID": "nope"}, {"refresh_interval_s": -3})
    problems = caught.value.problems
    assert len(problems) == 4
    assert any(
        p.startswith(f"{config.absolute()}: api_base_url: not an https URL") for p in problems
    )
    assert any(
        "http_timeout_s: expected a number of seconds, got true/false" in p for p in problems
    )
    assert any(p.startswith("QARGO_CLIENT_ID:") for p in problems)
    assert any(p.startswith("--refresh-interval-s:") for p in problems)


def test_explicit_config_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--config: file not found"):
        load_settings(tmp_path / "missing.toml", {}, {})


def test_invalid_toml_is_reported(tmp_path: Path) -> None:
    config = _write(tmp_path / "config.toml", "authority = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(config, {}, {})


def test_unknown_keys_warn_and_do_not_fail(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = _write(
        tmp_path / "config.toml",
        'colour = "blue"\nconfig_dir = "/elsewhere"\nsandbox = true\n[network]\nproxy = "none"\n',
    )
    with caplog.at_level(logging.WARNING, logger="qargo_desktop.core.config"):
        result = load_settings(config, {}, {})
    assert result.sandbox is True
    assert result.config_dir is None
    assert len(result.warnings) == 3
    assert any("'colour'" in w for w in result.warnings)
    assert any("'config_dir'" in w and "--config-dir" in w for w in result.warnings)
    assert "unknown key 'network'" in caplog.text


def test_newer_version_warns(tmp_path: Path) -> None:
    config = _write(tmp_path / "config.toml", "version = 7\nsandbox = true\n")
    result = load_settings(config, {}, {})
    assert result.version == 7
    assert any("settings version 7" in w for w in result.warnings)


def test_bad_version_fails(tmp_path: Path) -> None:
    config = _write(tmp_path / "config.toml", 'version = "one"\n')
    with pytest.raises(ConfigError, match="version: expected a whole number"):
        load_settings(config, {}, {})


def test_empty_environment_values_count_as_unset(tmp_path: Path) -> None:
    result = load_settings(
        None, {"QARGO_CONFIG_DIR": str(tmp_path), "QARGO_AUTHORITY": "  ", "QARGO_SANDBOX": ""}, {}
    )
    assert result.authority is None
    assert result.sandbox is False


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("SYSTEM", "system"),
        ("none", "none"),
        ("http://proxy.example.com:3128", "http://proxy.example.com:3128"),
        ("https://user:pw@proxy.example.com", "https://user:pw@proxy.example.com"),
    ],
)
def test_proxy_values(tmp_path: Path, raw: str, expected: str) -> None:
    result = load_settings(None, {"QARGO_CONFIG_DIR": str(tmp_path), "QARGO_PROXY": raw}, {})
    assert result.proxy == expected


def test_describe_masks_proxy_password(tmp_path: Path) -> None:
    result = load_settings(
        None,
        {"QARGO_CONFIG_DIR": str(tmp_path), "QARGO_PROXY": "http://me:s3cret@proxy:8080"},
        {},
    )
    described = result.describe()
    assert described["proxy"] == {"value": "http://me:***@proxy:8080", "source": "environment"}
    assert "s3cret" not in repr(described)
    assert mask_url_credentials("http://proxy:8080") == "http://proxy:8080"


def test_extra_ca_file_checked_and_resolved(tmp_path: Path) -> None:
    _write(tmp_path / "c" / "corp-ca.pem", PEM)
    _write(tmp_path / "c" / "config.toml", 'extra_ca_file = "corp-ca.pem"\n')
    result = load_settings(None, {"QARGO_CONFIG_DIR": str(tmp_path / "c")}, {})
    assert result.extra_ca_file == tmp_path / "c" / "corp-ca.pem"

    _write(tmp_path / "not-a-cert.pem", "hello\n")
    with pytest.raises(ConfigError, match="no PEM certificate"):
        load_settings(None, {"QARGO_EXTRA_CA_FILE": str(tmp_path / "not-a-cert.pem")}, {})


def test_refresh_interval_zero_turns_refresh_off(tmp_path: Path) -> None:
    result = load_settings(None, {"QARGO_CONFIG_DIR": str(tmp_path)}, {"refresh_interval_s": 0})
    assert result.refresh_interval_s == 0


def test_settings_are_frozen_and_hashable() -> None:
    result = Settings(admin_scopes=("a",))
    with pytest.raises(AttributeError):
        result.proxy = "none"  # type: ignore[misc]
    assert hash(result) == hash(Settings(admin_scopes=("a",)))


def test_write_config_round_trips_through_load(tmp_path: Path) -> None:
    ca = _write(tmp_path / "sandbox" / "ca.pem", PEM)
    target = tmp_path / "out" / "config.toml"
    write_config(
        target,
        {
            "authority": "https://127.0.0.1:4443/tenant",
            "client_id": CLIENT_ID,
            "api_base_url": "https://127.0.0.1:4443/api",
            "graph_base_url": "https://127.0.0.1:4443/graph/v1.0",
            "admin_scopes": ["api://qargo-sandbox/Organisation.Manage"],
            "extra_ca_file": ca,
            "sandbox": False,
            "http_timeout_s": 15.5,
            "language": None,
        },
    )

    text = target.read_text(encoding="utf-8")
    assert text.splitlines()[1] == "version = 1"
    assert "language" not in text
    result = load_settings(target, {}, {})
    assert result.client_id == CLIENT_ID
    assert result.extra_ca_file == ca
    assert result.admin_scopes == ("api://qargo-sandbox/Organisation.Manage",)
    assert result.http_timeout_s == 15.5
    assert list(target.parent.iterdir()) == [target]  # no temporary file left behind


def test_write_config_refuses_what_it_cannot_write(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        write_config(tmp_path / "c.toml", {"x": {"nested": 1}})
    with pytest.raises(TypeError):
        write_config(tmp_path / "c.toml", {"x": [1, 2]})
    with pytest.raises(ValueError, match="plain TOML key"):
        write_config(tmp_path / "c.toml", {"two words": "x"})
    assert not (tmp_path / "c.toml").exists()


_plain_keys = st.from_regex(r"[A-Za-z0-9_-]{1,20}", fullmatch=True).filter(lambda k: k != "version")
_values = st.one_of(
    st.text(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.booleans(),
    st.lists(st.text(), max_size=5),
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_plain_keys, _values, max_size=8))
def test_format_config_is_valid_toml_for_any_value(mapping: dict[str, object]) -> None:
    parsed = tomllib.loads(format_config(mapping))
    assert parsed.pop("version") == SETTINGS_VERSION
    assert parsed == mapping


def test_windows_paths_and_quotes_survive(tmp_path: Path) -> None:
    mapping = {"data_dir": 'C:\\Users\\Zoë "Z"\\AppData', "x": "tab\tnew\nline\x7f\x01"}
    assert tomllib.loads(format_config(mapping))["data_dir"] == mapping["data_dir"]
    assert tomllib.loads(format_config(mapping))["x"] == mapping["x"]


def test_docs_cover_every_key() -> None:
    docs = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
    text = docs.read_text(encoding="utf-8")
    for spec in FIELDS:
        assert f"`{spec.name}`" in text, spec.name
        assert f"`{spec.env_var}`" in text, spec.env_var
    for flag in ("`--config FILE`", "`--config-dir DIR`", "`--sandbox`", "`QARGO_CONFIG_FILE`"):
        assert flag in text, flag


def test_store_true_flag_left_off_does_not_override(tmp_path: Path) -> None:
    config = _write(tmp_path / "config.toml", "sandbox = true\n")
    assert load_settings(config, {}, {"sandbox": False}).sandbox is True
    assert load_settings(None, {"QARGO_SANDBOX": "yes"}, {"sandbox": False}).sandbox is True
    assert load_settings(None, {}, {"sandbox": True}).source_of("sandbox") == "flag"


def test_unused_client_id_constant() -> None:
    # A second valid GUID parses too (guards the GUID check against over-strictness).
    assert (
        load_settings(None, {"QARGO_CLIENT_ID": OTHER_CLIENT_ID}, {}).client_id == OTHER_CLIENT_ID
    )


@pytest.mark.parametrize(
    "text",
    [
        "04b07795-8ddb-461a-bbee-02f9e1bf7b46",
        "04B07795-8DDB-461A-BBEE-02F9E1BF7B46",
        "04b077958ddb461abbee02f9e1bf7b46",
        "{04b07795-8ddb-461a-bbee-02f9e1bf7b46}",
    ],
)
def test_client_id_takes_a_guid_as_entra_shows_it(text: str) -> None:
    assert load_settings(None, {"QARGO_CLIENT_ID": text}, {}).client_id == text


@pytest.mark.parametrize(
    "text",
    [
        "04b07795-8ddb-461a-bbee-02f9e1bf7b4",
        "04b07795-8ddb-461a-bbee-02f9e1bf7b46a",
        "g4b07795-8ddb-461a-bbee-02f9e1bf7b46",
        "Qargo Desktop",
    ],
)
def test_client_id_refuses_what_is_not_a_guid(text: str) -> None:
    with pytest.raises(ConfigError, match="not an application id"):
        load_settings(None, {"QARGO_CLIENT_ID": text}, {})
