"""The ``qargo-desktop`` command: the window by default, headless commands for support.

Start-up matters (admins open this during incidents), so this module imports only the
standard library at the top; every command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import enum
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from qargo_desktop import __version__


class ExitCode(enum.IntEnum):
    """Exit codes of the command line; scripts can rely on them."""

    OK = 0
    FAILED = 1
    USAGE = 2
    COULD_NOT_RUN = 3
    DECLINED = 4
    WRONG_ACCOUNT = 5
    CONFLICT = 6
    CANCELLED = 7
    SIGN_IN_REQUIRED = 8
    NOT_SUPER_ADMIN = 9


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="read settings from this TOML file")
    parser.add_argument(
        "--config-dir",
        metavar="DIR",
        help="keep settings, token cache and logs in this folder instead of the usual ones",
    )
    parser.add_argument(
        "--sandbox",
        action="store_true",
        help="run against the built-in sandbox instead of Microsoft and Qargo",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail to stderr")


def _device_code_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device-code",
        action="store_true",
        help="sign in on another device with a code instead (when no browser is usable here)",
    )


def _diagnose_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--bundle",
        metavar="FILE.zip",
        help="also save a support bundle: the report, redacted logs, crash and self-test reports",
    )
    parser.add_argument("--no-network", action="store_true", help="do not contact the services")
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="S",
        help="time limit of each network step (default: http_connect_timeout_s)",
    )


#: The commands; any other first word is an error. ``main`` checks for them before it
#: builds the whole parser, so that opening the window does not pay for every command's.
COMMANDS = (
    "signin",
    "signout",
    "whoami",
    "mailboxes",
    "authorise",
    "reauthorise",
    "reset",
    "add",
    "remove",
    "selftest",
    "diagnose",
    "sandbox",
    "bundle-check",
)


class _NotTheWindow(Exception):
    """The window's parser met something it does not know: the whole parser decides."""


class _WindowParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _NotTheWindow(message)


def build_parser(*, window_only: bool = False) -> argparse.ArgumentParser:
    """Return the argument parser of every command (or only the window's options)."""
    parser = (_WindowParser if window_only else argparse.ArgumentParser)(
        prog="qargo-desktop",
        description="Keep your organisation's linked Microsoft 365 mailboxes healthy.",
        add_help=not window_only,
    )
    parser.add_argument("--version", action="version", version=f"qargo-desktop {__version__}")
    # Hidden: open the window, quit once it has painted (the bundle's smoke test, timings).
    parser.add_argument("--quit-after-start", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--select",
        metavar="ADDRESS",
        help="select this mailbox in the window (in the window already open, if there is one)",
    )
    _common(parser)
    if window_only:
        parser.set_defaults(command=None)
        return parser
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        _common(sub)
        return sub

    _device_code_option(command("signin", "sign in as a Qargo super admin in the system browser"))
    command("signout", "sign out and remove the saved sign-in")
    whoami = command("whoami", "show who is signed in and for which organisation")
    whoami.add_argument("--json", action="store_true", help="print JSON")
    mailboxes = command("mailboxes", "list the organisation's linked mailboxes")
    mailboxes.add_argument(
        "--status",
        choices=["linked", "unlinked", "reauthorisation_required", "link_failed", "authorising"],
        help="only mailboxes in this state",
    )
    mailboxes.add_argument("--json", action="store_true", help="print JSON")

    for name, text in (
        ("authorise", "authorise a mailbox: sign in as the mailbox account in the browser"),
        ("reauthorise", "reauthorise a mailbox whose grant is invalid, or refresh a linked one"),
    ):
        link = command(name, text)
        link.add_argument("--mailbox", required=True, metavar="ADDRESS", help="the mailbox")
        _device_code_option(link)
    reset = command("reset", "reset the API link status of a mailbox whose link failed")
    reset.add_argument("--mailbox", required=True, metavar="ADDRESS", help="the mailbox")
    reset.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    add = command("add", "add a mailbox to the organisation's list")
    add.add_argument("address", help="the mailbox's email address")
    add.add_argument("--display-name", metavar="NAME", help="the name shown in the list")
    remove = command("remove", "remove a mailbox from the organisation's list")
    remove.add_argument("address", help="the mailbox's email address")
    remove.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    selftest = command(
        "selftest",
        "prove a mailbox sends and receives: send it a test message, time every leg "
        "(exit 0 pass, 1 fail, 2 warning, 3 could not run, 7 cancelled)",
    )
    selftest.add_argument("--mailbox", required=True, metavar="ADDRESS", help="the mailbox")
    selftest.add_argument("--json", action="store_true", help="print the report as JSON")
    selftest.add_argument(
        "--keep", action="store_true", help="leave the test message in the mailbox"
    )
    selftest.add_argument(
        "--timeout",
        type=float,
        default=180.0,
        metavar="S",
        help="give up after S seconds (default 180; time in the browser does not count)",
    )

    _diagnose_options(
        command(
            "diagnose",
            "check versions, settings, keyring, saved sign-ins, proxy, the services and the "
            "clock (exit 0 fine, 1 problems found, 3 bundle not saved)",
        )
    )

    sandbox = command("sandbox", "the built-in sandbox of Microsoft sign-in, Qargo and Graph")
    sandbox_commands = sandbox.add_subparsers(dest="sandbox_command", metavar="SUBCOMMAND")
    serve = sandbox_commands.add_parser(
        "serve", help="serve the sandbox on loopback until interrupted"
    )
    serve.add_argument("--port", type=int, default=0, help="HTTPS port (default: any free)")
    serve.add_argument(
        "--http-port", type=int, default=0, help="plain-HTTP port of the sign-in pages"
    )
    serve.add_argument("--data", metavar="DIR", help="keep the sandbox's CA and data here")
    serve.add_argument(
        "--mailboxes", type=int, metavar="N", help="add N generated mailboxes (a large org)"
    )
    serve.add_argument(
        "--write-config", metavar="FILE", help="also write a settings file that uses it"
    )
    serve.add_argument(
        "--delivery-delay", type=float, metavar="S", help="seconds before sent mail arrives"
    )
    serve.add_argument(
        "--sync-delay", type=float, metavar="S", help="seconds before Qargo's sync sees mail"
    )
    serve.add_argument("--faults", metavar="JSON", help="fault settings as a JSON object")
    # Hidden (no help): what the frozen bundle finds (modules, resources, keyring, Qt plugins).
    bundle_check = commands.add_parser("bundle-check")
    bundle_check.add_argument("--json", action="store_true", help="print JSON")
    return parser


def _quit_after_first_paint(timeout_s: float = 60.0) -> None:
    """Make the window quit once it has painted (``--quit-after-start``).

    The app starts exactly as usual; the QApplication is only created a little earlier,
    so that an event filter sees the main window's first paint and then quits the event
    loop (exit code 0). A window that never paints exits with 3 after ``timeout_s``; a
    modal dialog shown instead (a settings problem, a crash) ends the run at once, with
    the exit code of what showed it (3 for a crash).
    """
    from PySide6.QtCore import QEvent, QObject, QTimer
    from PySide6.QtWidgets import QDialog, QMainWindow

    from qargo_desktop.ui.app import create_application

    app = create_application()

    class FirstPaintQuits(QObject):
        def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt name)
            if event.type() != QEvent.Type.Paint:
                return False
            if isinstance(watched, QMainWindow):
                app.removeEventFilter(self)
                QTimer.singleShot(0, app.quit)
            elif isinstance(watched, QDialog) and watched.isModal():
                # A problem shown instead of the window (bad settings, a crash, another
                # window not answering): no one will answer it, so end every event loop
                # now rather than at the time limit. The code it shows becomes the exit's.
                app.removeEventFilter(self)
                QTimer.singleShot(0, lambda: app.exit(ExitCode.COULD_NOT_RUN))
            return False

    app.installEventFilter(FirstPaintQuits(app))
    QTimer.singleShot(int(timeout_s * 1000), lambda: app.exit(ExitCode.COULD_NOT_RUN))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:2] == ["sandbox", "browser"]:
        # Hidden: the scripted browser, for a bundle that has no Python to run
        # `python -m qargo_desktop.sandbox.browser` with. Its own options follow, untouched:
        # BROWSER="qargo-desktop sandbox browser %s".
        from qargo_desktop.commands import sandbox_browser

        return sandbox_browser(arguments[2:])
    args = _window_arguments(arguments)
    if args is None:
        args = build_parser().parse_args(arguments)
    if args.command is None:
        if args.quit_after_start:
            _quit_after_first_paint()
        from qargo_desktop.ui.app import run_from_args

        return run_from_args(args)
    if args.command == "sandbox":
        if args.sandbox_command != "serve":
            print(
                "qargo-desktop sandbox: name a subcommand: serve "
                "(qargo-desktop sandbox --help says more)",
                file=sys.stderr,
            )
            return ExitCode.USAGE
        from qargo_desktop.commands import sandbox_serve

        return sandbox_serve(args)
    from qargo_desktop import commands

    handler = getattr(commands, args.command.replace("-", "_"))
    uninstall = _install_crash_handler(args)
    try:
        return int(handler(args))
    except commands.Unusable as exc:
        print(f"qargo-desktop: {exc}", file=sys.stderr)
        return ExitCode.COULD_NOT_RUN
    except Exception:
        # A bug: logged and saved as a crash report, like the window's; the exit code says
        # the command could not run rather than that it found problems.
        sys.excepthook(*sys.exc_info())
        return ExitCode.COULD_NOT_RUN
    finally:
        uninstall()


def _window_arguments(arguments: list[str]) -> argparse.Namespace | None:
    """The window's options, when ``arguments`` name no command; ``None`` otherwise.

    Opening the window is the common case and start-up time counts, so it is parsed by a
    parser of the top-level options alone. Whatever that parser cannot take (a command,
    ``--help``, a mistake) goes to the whole parser, which says what it always says.
    """
    if any(word in COMMANDS for word in arguments):
        return None
    try:
        return build_parser(window_only=True).parse_args(arguments)
    except _NotTheWindow:
        return None


def _install_crash_handler(args: argparse.Namespace) -> Callable[[], None]:
    """Route a headless command's unexpected errors (every thread) to a saved crash report."""
    import os

    from qargo_desktop.core.config import app_paths
    from qargo_desktop.core.support import CrashReport, install_crash_handler

    folder = getattr(args, "config_dir", None) or os.environ.get("QARGO_CONFIG_DIR") or None

    def say(report: CrashReport) -> None:
        if sys.stderr is None:
            return
        sys.stderr.write(report.text)
        if report.path is not None:
            sys.stderr.write(f"The crash report was saved as {report.path}\n")

    return install_crash_handler(app_paths(folder).log_dir, on_crash=say)
