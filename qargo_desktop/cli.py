"""The ``qargo-desktop`` command: the window by default, headless commands for support.

Start-up matters (admins open this during incidents), so this module imports only the
standard library at the top; every command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import enum
import sys
from collections.abc import Sequence

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


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of every command."""
    parser = argparse.ArgumentParser(
        prog="qargo-desktop",
        description="Keep your organisation's linked Microsoft 365 mailboxes healthy.",
    )
    parser.add_argument("--version", action="version", version=f"qargo-desktop {__version__}")
    _common(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        _common(sub)
        return sub

    command("signin", "sign in as a Qargo super admin in the system browser")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        from qargo_desktop.ui.app import run_from_args

        return run_from_args(args)
    if args.command == "sandbox":
        if args.sandbox_command != "serve":
            parser.parse_args([*(argv or sys.argv[1:]), "--help"])
        from qargo_desktop.commands import sandbox_serve

        return sandbox_serve(args)
    from qargo_desktop import commands

    handler = getattr(commands, args.command.replace("-", "_"))
    try:
        return int(handler(args))
    except commands.Unusable as exc:
        print(f"qargo-desktop: {exc}", file=sys.stderr)
        return ExitCode.COULD_NOT_RUN
