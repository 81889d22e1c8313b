"""Diagnostics, the support bundle and crash reports: what support sees, from the core
API and from ``qargo-desktop diagnose``."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from qargo_desktop.core.config import Settings, load_settings
from qargo_desktop.core.diagnostics import (
    ClockReport,
    DiagnosticsReport,
    clock_report,
    collect_diagnostics,
    collect_versions,
    derive_findings,
    explain_probe,
    recent_problems,
)
from qargo_desktop.core.logs import RingBufferHandler, setup_logging
from qargo_desktop.core.probe import EndpointProbe, ProbeStep
from qargo_desktop.core.support import (
    PRIVACY_NOTE,
    format_crash_report,
    install_crash_handler,
    report_crash,
    save_support_bundle,
)

REPO = Path(__file__).resolve().parents[2]
ADMIN = "admin@northwind-haulage.example"
JWT = (
    "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJwcmVmZXJyZWRfdXNlcm5hbWUiOiJhZG1pbkBub3J0aHdpbmQuZXhhbXBsZSJ9."
    "c2lnbmF0dXJlLWJ5dGVzLWhlcmU"
)
REFRESH = "1.AAAAbm90LWEtcmVhbC10b2tlbi1idXQtc2hhcGVkLWxpa2Utb25l"


pytestmark = pytest.mark.usefixtures("restore_logging")


def _settings(sandbox: Any, tmp_path: Path, **overrides: object) -> Settings:
    from qargo_desktop.core.bootstrap import sandbox_overrides

    values = {**sandbox_overrides(sandbox.info), "config_dir": tmp_path / "app", **overrides}
    return load_settings(None, {}, values)


# -- the report -----------------------------------------------------------------------------


def test_diagnostics_of_a_signed_in_app(admin: Any, sandbox: Any, tmp_path: Path) -> None:
    settings = _settings(sandbox, tmp_path)

    report = collect_diagnostics(settings, token_caches=admin.token_stores(), timeout_s=5)

    assert report.ok and report.severity == "ok", report.to_text()
    assert [e.name for e in report.endpoints] == ["api", "identity", "graph"]
    for endpoint in report.endpoints:
        assert endpoint.ok
        assert [s.name for s in endpoint.probe.steps] == ["dns", "tcp", "tls", "http"]
        assert all(s.elapsed_s is not None for s in endpoint.probe.steps)
        assert endpoint.tls is not None and endpoint.tls.kind == "extra_ca"
        assert "Qargo Desktop Sandbox local CA" in endpoint.tls.text
    assert report.endpoint("identity").probe.http_status == 200  # type: ignore[union-attr]
    assert report.clock.offset_s is not None and abs(report.clock.offset_s) < 2
    assert report.clock.samples == 3
    assert report.keyring["usable"] is True
    assert "MemoryKeyring" in report.keyring["used_backend"]
    admin_cache = report.token_caches["admin"]
    assert [a["username"] for a in admin_cache["accounts"]] == [ADMIN]
    assert all(route.source == "bypassed" for route in report.proxy.routes)

    text = report.to_text()
    for heading in ("Findings", "Versions", "Services", "Proxy", "Clock", "Keyring",
                    "Saved sign-ins", "Settings", "Folders", "Recent warnings"):  # fmt: skip
        assert heading in text
    assert "Qargo API: reachable" in text
    assert "your Qargo support contact" in text
    document = report.to_json()
    assert json.loads(json.dumps(document)) == document
    assert document["severity"] == "ok"
    assert document["endpoints"][0]["probe"]["steps"][2]["name"] == "tls"
    assert "eyJ" not in text + json.dumps(document)


def test_token_caches_on_disk_show_accounts_and_expiry(
    sandbox: Any, tmp_path: Path, browser: Any
) -> None:
    from qargo_desktop.core.bootstrap import build_services

    settings = _settings(sandbox, tmp_path)
    services = build_services(settings)
    control = services.new_control()
    control.opener = browser
    services.sign_in_interactive(control)
    browser.join()
    services.session.close()

    # As the command line reads them: from the files, not from a running app.
    report = collect_diagnostics(settings, probe=False)

    admin_cache = report.token_caches["admin"]
    assert admin_cache["persistent"] is True
    assert admin_cache["file_exists"] is True
    assert [a["username"] for a in admin_cache["accounts"]] == [ADMIN]
    (token,) = admin_cache["access_tokens"]
    assert token["expired"] is False and token["expires_at"].endswith("Z")
    assert report.token_caches["mailboxes"]["file_exists"] is False
    assert "account admin@northwind-haulage.example" in report.to_text()
    assert "The services were not checked." in report.to_text()


def test_incomplete_settings_are_a_problem(tmp_path: Path) -> None:
    # Nothing configured, and no Graph address either: nothing to contact.
    settings = Settings(config_dir=tmp_path, graph_base_url="")

    report = collect_diagnostics(settings, probe=False, include_qt=False)

    assert not report.ok
    assert "incomplete" in report.findings[0].text
    assert "authority" in report.findings[0].text
    assert report.endpoints == ()


def test_the_clock_off_by_ten_minutes(tmp_path: Path) -> None:
    server = datetime.now(UTC) + timedelta(minutes=10)
    now = datetime.now(UTC).timestamp()
    probe = EndpointProbe(
        name="api",
        url="https://127.0.0.1:1/api",
        host="127.0.0.1",
        port=1,
        proxy=None,
        proxy_source="bypassed",
        steps=(ProbeStep("http", True, 0.01, "answered 401"),),
        server_date=server.replace(microsecond=0),
        local_before=now,
        local_after=now + 0.01,
    )
    endpoint = explain_probe(probe, Settings())
    clock = clock_report([endpoint])
    assert clock.offset_s is not None and 590 < clock.offset_s < 610
    assert "behind the servers'" in clock.text

    report = collect_diagnostics(Settings(config_dir=tmp_path, graph_base_url=""), probe=False)
    report = _with(report, endpoints=(endpoint,), clock=clock)
    findings = derive_findings(report, Settings(config_dir=tmp_path), probed=True)
    clock_finding = next(f for f in findings if f.topic == "clock")
    assert clock_finding.severity == "problem"
    assert "10 minutes behind" in clock_finding.text


def _with(report: DiagnosticsReport, **changes: Any) -> DiagnosticsReport:
    import dataclasses

    return dataclasses.replace(report, **changes)


def test_qt_version_is_read_only_when_asked() -> None:
    versions = collect_versions(include_qt=True)
    assert versions.qt and versions.pyside
    # The core never imports Qt by itself: importing these modules leaves PySide6 alone.
    code = (
        "import sys, qargo_desktop.core.diagnostics, qargo_desktop.core.support; "
        "qargo_desktop.core.diagnostics.collect_versions(include_qt=False); "
        "print('PySide6' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "False", result.stderr


# -- recent problems from the log -----------------------------------------------------------


def test_recent_problems_come_from_the_log_file(tmp_path: Path) -> None:
    logs = setup_logging(tmp_path / "logs", "INFO")
    logger = logging.getLogger("qargo_desktop.test")
    logger.info("ordinary story line")
    logger.warning("Sign-in refused: AADSTS50173 with refresh_token=%s", REFRESH)
    try:
        raise ValueError(f"the API said {JWT}")
    except ValueError:
        logger.exception("Refresh failed")
    for handler in logs.handlers:
        handler.flush()

    entries = recent_problems(logs.log_file)

    assert [e.level for e in entries] == ["WARNING", "ERROR"]
    assert "AADSTS50173" in entries[0].message
    assert REFRESH not in entries[0].message
    assert entries[1].message.startswith("Refresh failed [ValueError: the API said")
    assert JWT not in entries[1].message
    assert entries[1].logger == "qargo_desktop.test"


def test_recent_problems_from_memory_when_there_is_no_file() -> None:
    ring = RingBufferHandler()
    logger = logging.getLogger("qargo_desktop.test.ring")
    logger.addHandler(ring)
    logger.propagate = False
    try:
        logger.error("kept in memory")
        logger.info("not a problem")
    finally:
        logger.removeHandler(ring)
        logger.propagate = True

    entries = recent_problems(None, ring)

    assert [(e.level, e.message) for e in entries] == [("ERROR", "kept in memory")]


# -- crash reports --------------------------------------------------------------------------


def _raise_with_secrets() -> None:
    token = JWT
    raise RuntimeError(f"unexpected answer: refresh_token={REFRESH} and Bearer {token}")


def test_a_crash_report_is_redacted_and_saved(tmp_path: Path) -> None:
    try:
        _raise_with_secrets()
    except RuntimeError:
        exc_type, exc, tb = sys.exc_info()
    assert exc_type is not None

    report = report_crash(
        exc_type, exc, tb, log_dir=tmp_path / "logs", where="the mailbox table",
        ring_buffer=None,
    )  # fmt: skip

    assert report.path is not None and report.path.parent == tmp_path / "logs"
    assert report.path.name.startswith("crash-") and report.path.suffix == ".txt"
    saved = report.path.read_text(encoding="utf-8")
    assert saved == report.to_text()
    assert report.exception_type == "RuntimeError"
    assert "Where:   the mailbox table" in saved
    assert "_raise_with_secrets" in saved  # the traceback
    assert "Python:" in saved and "OS:" in saved and "qargo-desktop 0.1.0" in saved
    assert PRIVACY_NOTE in saved
    assert JWT not in saved and REFRESH not in saved
    assert report.to_json()["path"] == str(report.path)

    again = report_crash(exc_type, exc, tb, log_dir=tmp_path / "logs")
    assert again.path != report.path  # two crashes in one second keep both


def test_a_crash_report_that_cannot_be_saved_is_still_shown(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    try:
        _raise_with_secrets()
    except RuntimeError:
        exc_type, exc, tb = sys.exc_info()
    assert exc_type is not None

    report = report_crash(exc_type, exc, tb, log_dir=blocker / "logs")

    assert report.path is None
    assert "RuntimeError" in report.summary


def test_the_crash_handler_catches_threads(tmp_path: Path) -> None:
    reports: list[Any] = []
    ring = RingBufferHandler()
    hooks = (sys.excepthook, threading.excepthook)
    uninstall = install_crash_handler(tmp_path, on_crash=reports.append, ring_buffer=ring)
    try:
        thread = threading.Thread(target=_raise_with_secrets, name="worker-7")
        thread.start()
        thread.join()
    finally:
        uninstall()

    (report,) = reports
    assert report.where == "thread worker-7"
    assert report.path is not None and report.path.exists()
    assert (sys.excepthook, threading.excepthook) == hooks


def test_format_includes_the_last_log_lines() -> None:
    try:
        _raise_with_secrets()
    except RuntimeError:
        exc_type, exc, tb = sys.exc_info()
    assert exc_type is not None
    report = format_crash_report(
        exc_type, exc, tb, recent_log=["line one", f"line with access_token={REFRESH}"]
    )
    assert "The last lines of the log" in report.text
    assert "line one" in report.text and REFRESH not in report.text


# -- the support bundle ---------------------------------------------------------------------


def test_the_support_bundle(sandbox: Any, tmp_path: Path) -> None:
    settings = _settings(sandbox, tmp_path, support_contact="Northwind IT, ext. 4410")
    from qargo_desktop.core.config import app_paths

    paths = app_paths(settings)
    paths.ensure()
    setup_logging(paths.log_dir)
    logging.getLogger("qargo_desktop.test").warning("something to find in the bundle")
    # A line written before redaction existed (an old version): redacted on the way in.
    with (paths.log_dir / "qargo-desktop.log.1").open("w", encoding="utf-8") as old:
        old.write(f"2020-01-01 00:00:00,000 INFO     old [MainThread] token {JWT}\n")
    (paths.log_dir / "crash-20200101T000000Z.txt").write_text(f"crash {REFRESH}\n")
    reports = paths.data_dir / "selftest-reports"
    reports.mkdir(parents=True)
    (reports / "2020-01-01-dispatch.json").write_text(json.dumps({"verdict": "pass"}))
    (paths.data_dir / "token_cache.bin").write_bytes(b"QDTC not to be shipped")

    report = collect_diagnostics(settings, paths=paths, timeout_s=5)
    bundle = save_support_bundle(tmp_path / "support.zip", settings, paths=paths, report=report)

    assert bundle.path == tmp_path / "support.zip"
    assert "Northwind IT, ext. 4410" in bundle.contact
    with zipfile.ZipFile(bundle.path) as archive:
        names = archive.namelist()
        texts = {name: archive.read(name).decode("utf-8") for name in names}
    assert set(bundle.files) == set(names)
    assert {"README.txt", "diagnostics.json", "diagnostics.txt"} <= set(names)
    assert {"logs/qargo-desktop.log", "logs/qargo-desktop.log.1"} <= set(names)
    assert "crash-reports/crash-20200101T000000Z.txt" in names
    assert "selftest-reports/2020-01-01-dispatch.json" in names
    assert not any("token_cache" in name for name in names)
    assert "Northwind IT, ext. 4410" in texts["README.txt"]
    assert PRIVACY_NOTE in texts["README.txt"]
    assert json.loads(texts["diagnostics.json"])["support_contact"] == "Northwind IT, ext. 4410"
    assert "something to find in the bundle" in texts["logs/qargo-desktop.log"]
    everything = "".join(texts.values())
    assert JWT not in everything and REFRESH not in everything
    assert not list(tmp_path.glob(".support.zip.*"))  # no temporary file left behind


# -- the command line -----------------------------------------------------------------------


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qargo_desktop", *args],
        cwd=REPO,
        env=env or dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def sandbox_config(sandbox: Any, tmp_path: Path) -> Path:
    from qargo_desktop.core.bootstrap import write_sandbox_config

    config = tmp_path / "sandbox.toml"
    write_sandbox_config(config, sandbox.info)
    with config.open("a", encoding="utf-8") as stream:
        stream.write('support_contact = "the Northwind service desk"\n')
    return config


def test_diagnose_json_from_the_command_line(sandbox_config: Path) -> None:
    result = _cli("diagnose", "--json", "--config", str(sandbox_config))

    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    # No keyring in a bare subprocess here: that is a warning, not a problem.
    assert document["severity"] in ("ok", "warning")
    assert all(f["topic"] == "keyring" for f in document["findings"] if f["severity"] != "ok")
    assert [e["ok"] for e in document["endpoints"]] == [True, True, True]
    assert document["versions"]["qt"]
    assert document["settings"]["support_contact"]["source"] == "file"
    assert "Checking Qargo API" in result.stderr
    assert "Diagnostics: " in result.stderr


def test_diagnose_text_and_bundle_from_the_command_line(
    sandbox_config: Path, tmp_path: Path
) -> None:
    bundle = tmp_path / "out" / "bundle.zip"
    bundle.parent.mkdir()

    result = _cli("diagnose", "--bundle", str(bundle), "--config", str(sandbox_config))

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("qargo-desktop diagnostics")
    assert "Microsoft Graph: reachable" in result.stdout
    assert f"Support bundle saved: {bundle}" in result.stderr
    assert "send it to the Northwind service desk" in result.stderr
    with zipfile.ZipFile(bundle) as archive:
        assert "diagnostics.json" in archive.namelist()
        assert any(name.startswith("logs/") for name in archive.namelist())


def test_diagnose_with_unusable_settings(tmp_path: Path) -> None:
    config = tmp_path / "broken.toml"
    config.write_text('api_base_url = "http://not-https.invalid"\nproxy = "socks://x"\n')

    result = _cli("diagnose", "--config", str(config))

    assert result.returncode == 1, result.stderr
    assert "PROBLEM Setting unusable" in result.stdout
    assert "api_base_url: not an https URL" in result.stdout
    # Unknown addresses: nothing was contacted.
    assert "Services\n  not checked" in result.stdout


def test_diagnose_without_network(sandbox_config: Path) -> None:
    result = _cli("diagnose", "--no-network", "--json", "--config", str(sandbox_config))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["endpoints"] == []


def test_diagnose_reports_a_bundle_it_cannot_write(sandbox_config: Path, tmp_path: Path) -> None:
    result = _cli(
        "diagnose", "--no-network", "--bundle", str(tmp_path / "missing" / "b.zip"),
        "--config", str(sandbox_config),
    )  # fmt: skip
    assert result.returncode == 3
    assert "could not be saved" in result.stderr


def test_clock_report_without_answers() -> None:
    assert clock_report([]) == ClockReport(
        None, None, 0, "not measured (no service answered with its time)"
    )


def test_an_inspecting_proxy_this_computer_trusts_is_a_warning(tmp_path: Path) -> None:
    from qargo_desktop.core.probe import TlsDetails

    probe = EndpointProbe(
        name="graph",
        url="https://graph.microsoft.com/v1.0",  # only a name here: nothing is contacted
        host="graph.microsoft.com",
        port=443,
        proxy="http://proxy.corp.example:8080",
        proxy_source="system",
        steps=(
            ProbeStep("dns", True, 0.001, "the proxy proxy.corp.example is 10.0.0.8"),
            ProbeStep("tls", True, 0.05, "TLSv1.3"),
            ProbeStep("http", True, 0.1, "answered 401"),
        ),
        tls=TlsDetails("TLSv1.3", "TLS_AES_256_GCM_SHA384", "CN=Zscaler Root CA,O=Zscaler Inc.",
                       "CN=graph.microsoft.com", None, verified=True),
    )  # fmt: skip
    endpoint = explain_probe(probe, Settings())
    assert endpoint.ok and endpoint.tls is not None and endpoint.tls.in_the_way

    report = collect_diagnostics(Settings(config_dir=tmp_path, graph_base_url=""), probe=False)
    report = _with(report, endpoints=(endpoint,))
    findings = derive_findings(report, Settings(config_dir=tmp_path), probed=True)

    warning = next(f for f in findings if f.topic == "tls")
    assert warning.severity == "warning"
    assert "TLS-inspecting proxy (Zscaler)" in warning.text
    assert "This computer trusts it." in warning.text
