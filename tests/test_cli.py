"""The command line as a support engineer uses it: a sandbox served in another process,
the admin's sign-in through the browser named by BROWSER, then commands that reuse the
encrypted token cache across processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from qargo_desktop import __version__

PYTHON = sys.executable


def _has_real_keyring(env: dict[str, str]) -> bool:
    probe = subprocess.run(
        [PYTHON, "-c", "import keyring; print(type(keyring.get_keyring()).__module__)"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return "fail" not in probe.stdout and probe.returncode == 0


def _cli(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "qargo_desktop", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_version_from_one_source() -> None:
    for command in ([PYTHON, "-m", "qargo_desktop", "--version"],):
        result = subprocess.run(command, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0
        assert result.stdout.strip() == f"qargo-desktop {__version__}"


@pytest.fixture
def served_sandbox(tmp_path: Path) -> Iterator[tuple[dict[str, object], Path, dict[str, str]]]:
    env = dict(os.environ)
    env["QARGO_CONFIG_DIR"] = str(tmp_path / "config")
    config = tmp_path / "sandbox.toml"
    process = subprocess.Popen(
        [PYTHON, "-m", "qargo_desktop", "sandbox", "serve", "--data", str(tmp_path / "sb"),
         "--write-config", str(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())
        yield ready, config, env
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert process.returncode == 0


def test_sandbox_serve_prints_one_ready_line(
    served_sandbox: tuple[dict[str, object], Path, dict[str, str]],
) -> None:
    ready, config, _env = served_sandbox
    for key in ("authority", "client_id", "admin_scopes", "api_base_url", "graph_base_url",
                "ca_certificate", "accounts"):  # fmt: skip
        assert ready[key], key
    assert str(ready["authority"]).startswith("https://127.0.0.1:")
    assert Path(str(ready["ca_certificate"])).is_file()
    text = config.read_text()
    assert str(ready["api_base_url"]) in text


def test_headless_sandbox_flag_explains_serve(tmp_path: Path) -> None:
    env = dict(os.environ, QARGO_CONFIG_DIR=str(tmp_path))
    result = _cli("mailboxes", "--sandbox", env=env)
    assert result.returncode == 3
    assert "sandbox serve" in result.stderr


def test_signin_then_list_across_processes(
    served_sandbox: tuple[dict[str, object], Path, dict[str, str]],
) -> None:
    _ready, config, env = served_sandbox
    if not _has_real_keyring(env):
        pytest.skip("no Secret Service keyring here: run the suite through scripts/test")
    env["BROWSER"] = f"{PYTHON} -m qargo_desktop.sandbox.browser %s"

    before = _cli("mailboxes", "--config", str(config), env=env)
    assert before.returncode == 8, before.stderr
    assert "signin" in before.stderr

    signin = _cli("signin", "--config", str(config), env=env)
    assert signin.returncode == 0, signin.stderr
    assert "Signed in as admin@northwind-haulage.example" in signin.stderr

    whoami = _cli("whoami", "--json", "--config", str(config), env=env)
    assert whoami.returncode == 0, whoami.stderr
    assert json.loads(whoami.stdout)["username"] == "admin@northwind-haulage.example"

    listing = _cli("mailboxes", "--json", "--config", str(config), env=env)
    assert listing.returncode == 0, listing.stderr
    mailboxes = json.loads(listing.stdout)
    statuses = {m["status"] for m in mailboxes}
    assert {"linked", "unlinked", "reauthorisation_required", "link_failed", "authorising"} <= (
        statuses
    )
    # No token reaches the output.
    assert "eyJ" not in listing.stdout + listing.stderr + signin.stdout + signin.stderr

    only_failed = _cli(
        "mailboxes", "--status", "link_failed", "--json", "--config", str(config), env=env
    )
    assert {m["status"] for m in json.loads(only_failed.stdout)} == {"link_failed"}

    signout = _cli("signout", "--config", str(config), env=env)
    assert signout.returncode == 0
    after = _cli("whoami", "--config", str(config), env=env)
    assert after.returncode == 8


def test_non_admin_gets_a_clear_message(
    served_sandbox: tuple[dict[str, object], Path, dict[str, str]],
) -> None:
    _ready, config, env = served_sandbox
    env["BROWSER"] = f"{PYTHON} -m qargo_desktop.sandbox.browser %s"
    env["QARGO_SANDBOX_BROWSER_ACCOUNT"] = "dispatcher@northwind-haulage.example"
    signin = _cli("signin", "--config", str(config), env=env)
    assert signin.returncode == 9, signin.stderr
    assert "not a Qargo super admin" in signin.stderr


def test_an_unexpected_error_in_a_command_is_saved_as_a_crash_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from qargo_desktop import cli, commands

    def broken(_args: object) -> int:
        raise RuntimeError(
            "a bug in the command: access_token=eyJhbGciOiJSUzI1NiJ9.eyJ4IjoxfQ.c2ln"
        )

    monkeypatch.setattr(commands, "diagnose", broken)
    hooks = (sys.excepthook, threading.excepthook)

    code = cli.main(["diagnose", "--config-dir", str(tmp_path)])

    assert code == cli.ExitCode.COULD_NOT_RUN
    reports = list((tmp_path / "logs").glob("crash-*.txt"))
    assert len(reports) == 1
    text = reports[0].read_text(encoding="utf-8")
    assert "RuntimeError: a bug in the command" in text and "eyJhbGciOiJSUzI1NiJ9" not in text
    err = capsys.readouterr().err
    assert "The crash report was saved as" in err and "eyJhbGciOiJSUzI1NiJ9" not in err
    # The hooks are given back when the command ends.
    assert (sys.excepthook, threading.excepthook) == hooks


def test_link_lifecycle_from_the_command_line(
    served_sandbox: tuple[dict[str, object], Path, dict[str, str]],
) -> None:
    _ready, config, env = served_sandbox
    if not _has_real_keyring(env):
        pytest.skip("no Secret Service keyring here: run the suite through scripts/test")
    env["BROWSER"] = f"{PYTHON} -m qargo_desktop.sandbox.browser %s"
    conf = ["--config", str(config)]
    assert _cli("signin", *conf, env=env).returncode == 0
    red = json.loads(_cli("mailboxes", "--status", "link_failed", "--json", *conf, env=env).stdout)
    address = red[0]["address"]

    # Without a terminal, only --yes confirms a reset.
    refused = _cli("reset", "--mailbox", address, *conf, env=env)
    assert refused.returncode == 7 and "--yes" in refused.stderr
    assert _cli("reset", "--mailbox", address, "--yes", *conf, env=env).returncode == 0

    # Authorise as the mailbox (the browser picks the preselected login_hint account).
    linked = _cli("authorise", "--mailbox", address, *conf, env=env)
    assert linked.returncode == 0, linked.stderr
    assert f"{address} is linked" in linked.stderr

    # The browser signs in someone else: refused, named, and the exit code says so.
    wrong_env = dict(env, QARGO_SANDBOX_BROWSER_ACCOUNT="dispatcher@northwind-haulage.example")
    wrong = _cli("reauthorise", "--mailbox", address, *conf, env=wrong_env)
    assert wrong.returncode == 5
    assert "dispatcher@northwind-haulage.example" in wrong.stderr and address in wrong.stderr

    # A fresh mailbox declined in the browser.
    assert _cli("add", "New.Desk@Northwind-Haulage.example", *conf, env=env).returncode == 0
    duplicate = _cli("add", "new.desk@northwind-haulage.example", *conf, env=env)
    assert duplicate.returncode == 6
    declined_env = dict(env, QARGO_SANDBOX_BROWSER_ACTION="decline")
    declined = _cli("authorise", "--mailbox", "new.desk@northwind-haulage.example", *conf,
                    env=declined_env)  # fmt: skip
    assert declined.returncode == 4, declined.stderr
    assert _cli("remove", "new.desk@northwind-haulage.example", "--yes", *conf,
                env=env).returncode == 0  # fmt: skip
    gone = json.loads(_cli("mailboxes", "--json", *conf, env=env).stdout)
    assert "new.desk@northwind-haulage.example" not in {m["address"] for m in gone}
    assert "eyJ" not in linked.stdout + linked.stderr + wrong.stderr


def test_the_window_path_reads_its_options_without_the_commands(monkeypatch, capsys) -> None:
    from qargo_desktop import cli
    from qargo_desktop.ui import app

    opened: list[dict[str, object]] = []
    monkeypatch.setattr(app, "run_from_args", lambda args: opened.append(vars(args)) or 0)

    assert cli.main(["--select", "sales@example.test", "--sandbox", "-v"]) == 0
    assert opened == [
        {
            "quit_after_start": False,
            "select": "sales@example.test",
            "config": None,
            "config_dir": None,
            "sandbox": True,
            "verbose": True,
            "command": None,
        }
    ]
    # What the window's parser cannot take, the whole parser answers as it always did.
    with pytest.raises(SystemExit) as mistake:
        cli.main(["--bogus"])
    assert mistake.value.code == 2
    assert "COMMAND" in capsys.readouterr().err
    with pytest.raises(SystemExit) as asked:
        cli.main(["-h"])
    assert asked.value.code == 0
    assert "selftest" in capsys.readouterr().out
    # A value that happens to be a command's name is still the option's value.
    assert cli.main(["--select", "signin"]) == 0
    assert opened[-1]["select"] == "signin"
    assert len(opened) == 2


def test_opening_the_window_loads_neither_the_commands_nor_the_support_modules(
    tmp_path: Path,
) -> None:
    # Start-up time: what the first paint does not need is imported after it.
    code = (
        "import sys\n"
        "from qargo_desktop import cli\n"
        "from qargo_desktop.ui import app\n"
        "seen = {}\n"
        "def run_from_args(args):\n"
        "    handler = app.CrashHandler().install()\n"
        "    seen.update(dict.fromkeys(sys.modules))\n"
        "    handler.uninstall()\n"
        "    return 0\n"
        "app.run_from_args = run_from_args\n"
        "assert cli.main([]) == 0\n"
        "heavy = ['qargo_desktop.commands', 'qargo_desktop.core.support',\n"
        "         'qargo_desktop.core.logs', 'PySide6.QtNetwork', 'requests', 'msal', 'keyring']\n"
        "print([name for name in heavy if name in seen])\n"
    )
    result = subprocess.run(
        [PYTHON, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_sandbox_without_a_subcommand_is_a_usage_error(capsys) -> None:
    from qargo_desktop import cli

    assert cli.main(["sandbox"]) == cli.ExitCode.USAGE
    assert "serve" in capsys.readouterr().err


def test_quit_after_start_ends_at_once_when_a_problem_is_shown_instead(tmp_path: Path) -> None:
    # The smoke tests' start: bad settings show a dialog no one will answer; the run ends
    # with the settings' exit code rather than waiting out its minute.
    config = tmp_path / "bad.toml"
    config.write_text('version = 1\nrefresh_interval_s = "soon"\n', encoding="utf-8")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    result = _cli(
        "--config", str(config), "--config-dir", str(tmp_path / "cfg"), "--quit-after-start",
        env=env, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert "refresh_interval_s" in result.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="no SIGTERM on Windows")
@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_a_termination_signal_closes_the_window_as_the_person_would(
    tmp_path: Path, signal_name: str
) -> None:
    import signal
    import time

    folder = tmp_path / "cfg"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    app = subprocess.Popen(
        [PYTHON, "-m", "qargo_desktop", "--config-dir", str(folder)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        log_file = folder / "logs" / "qargo-desktop.log"
        deadline = time.monotonic() + 60
        # The log starts after the first paint, when the handlers are in place.
        while not (log_file.exists() and "starting" in log_file.read_text(encoding="utf-8")):
            assert app.poll() is None, app.stderr.read() if app.stderr else ""
            assert time.monotonic() < deadline, "the app did not start"
            time.sleep(0.1)
        app.send_signal(getattr(signal, signal_name))
        assert app.wait(timeout=30) == 0
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()
    assert (folder / "window-state.ini").exists()  # the window's state was saved
    assert not (folder / "instance.lock").exists()  # and the lock given back
    assert f"signal {signal_name} received" in log_file.read_text(encoding="utf-8")


def test_the_command_names_the_window_path_looks_for_are_the_parsers() -> None:
    # main() checks for a command's name before building the whole parser: the two lists
    # must not drift apart, or a new command would open the window instead.
    import argparse

    from qargo_desktop import cli

    parser = cli.build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(commands.choices) == set(cli.COMMANDS)


@pytest.mark.skipif(sys.platform == "win32", reason="ends the app with SIGTERM")
def test_what_is_logged_before_the_log_starts_reaches_the_log_file(tmp_path: Path) -> None:
    # The settings are read before the window paints and the log starts after it: their
    # warnings are said on standard error at once and written to the log once it starts.
    import signal
    import time

    folder = tmp_path / "cfg"
    config = tmp_path / "config.toml"
    config.write_text("version = 1\nfuture_option = 1\n", encoding="utf-8")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    app = subprocess.Popen(
        [PYTHON, "-m", "qargo_desktop", "--config", str(config), "--config-dir", str(folder)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    log_file = folder / "logs" / "qargo-desktop.log"
    try:
        deadline = time.monotonic() + 60
        while not (log_file.exists() and "future_option" in log_file.read_text(encoding="utf-8")):
            assert app.poll() is None, app.stderr.read() if app.stderr else ""
            assert time.monotonic() < deadline, "the warning did not reach the log"
            time.sleep(0.1)
        app.send_signal(signal.SIGTERM)
        _out, err = app.communicate(timeout=30)
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()
    logged = log_file.read_text(encoding="utf-8")
    assert "WARNING" in logged and "unknown key 'future_option' ignored" in logged
    assert logged.index("starting") < logged.index("future_option")
    assert err.count("future_option") == 1  # said once on standard error too
