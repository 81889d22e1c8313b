"""The headless commands: ``signin``, ``mailboxes``, ``sandbox serve`` and the rest.

Progress and errors go to stderr, results to stdout, so scripts can pipe the output.
Each command returns an :class:`~qargo_desktop.cli.ExitCode`.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qargo_desktop.cli import ExitCode
from qargo_desktop.core.errors import (
    Cancelled,
    DeadlineExceeded,
    IdentityError,
    QargoError,
    SignInRequired,
)

log = logging.getLogger(__name__)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _fail(exc: QargoError) -> ExitCode:
    _say(f"Error: {exc.explain()}")
    from qargo_desktop.core.services import NotSuperAdmin

    if isinstance(exc, NotSuperAdmin):
        return ExitCode.NOT_SUPER_ADMIN
    if isinstance(exc, SignInRequired):
        _say("Run `qargo-desktop signin` first.")
        return ExitCode.SIGN_IN_REQUIRED
    if isinstance(exc, Cancelled | DeadlineExceeded):
        return ExitCode.CANCELLED
    if isinstance(exc, IdentityError) and exc.error == "access_denied":
        return ExitCode.DECLINED
    if exc.key in ("api:account_mismatch", "app:wrong_account"):
        return ExitCode.WRONG_ACCOUNT
    if exc.key in ("api:precondition_failed", "api:mailbox_exists", "api:attempt_in_progress"):
        return ExitCode.CONFLICT
    return ExitCode.FAILED


class Unusable(Exception):
    """The command cannot start; the message says why."""


def _context(args: argparse.Namespace) -> Any:
    from qargo_desktop.core.bootstrap import AppContext
    from qargo_desktop.core.config import ConfigError

    try:
        return AppContext.from_args(args)
    except (ConfigError, ValueError) as exc:
        raise Unusable(str(exc)) from exc


def _interrupt_cancels(cancel: threading.Event) -> None:
    """Let Ctrl+C cancel the interactive wait instead of killing the process mid-write."""

    def handler(_signum: int, _frame: object) -> None:
        _say("Cancelling...")
        cancel.set()

    signal.signal(signal.SIGINT, handler)


def signin(args: argparse.Namespace) -> int:
    """Sign in as a super admin in the system browser."""
    if getattr(args, "device_code", False):
        return _signin_device(args)
    with _context(args) as context:
        services = context.services
        control = services.new_control(
            on_auth_uri=lambda url: _say(
                f"Sign in with Microsoft in your browser. If it did not open, visit:\n  {url}"
            ),
        )
        _interrupt_cancels(control.cancel)
        _say(f"Waiting up to {control.deadline_s:.0f} s for the browser (Ctrl+C cancels)...")
        try:
            session = services.sign_in_interactive(control)
        except QargoError as exc:
            return _fail(exc)
        _say(f"Signed in as {session.username} ({session.organisation.name}).")
        context.report_cache_problem(_say)
        return ExitCode.OK


def signout(args: argparse.Namespace) -> int:
    """Remove the saved sign-in."""
    with _context(args) as context:
        try:
            removed = context.services.admin_identity.sign_out(None)
        except QargoError as exc:
            return _fail(exc)
        _say(f"Signed out {', '.join(removed)}." if removed else "Nobody was signed in.")
        return ExitCode.OK


def whoami(args: argparse.Namespace) -> int:
    """Show the signed-in admin and organisation."""
    with _context(args) as context:
        try:
            session = context.services.sign_in_silently()
        except QargoError as exc:
            return _fail(exc)
        if args.json:
            print(
                json.dumps(
                    {
                        "username": session.username,
                        "display_name": session.me.display_name,
                        "tenant_id": session.me.tenant_id,
                        "is_super_admin": session.me.is_super_admin,
                        "organisation": session.organisation.name,
                    },
                    indent=2,
                )
            )
        else:
            print(f"{session.me.display_name} <{session.username}>")
            print(f"Organisation: {session.organisation.name} (tenant {session.me.tenant_id})")
        return ExitCode.OK


def mailboxes(args: argparse.Namespace) -> int:
    """List the organisation's mailboxes."""
    from qargo_desktop.core.presentation import status_label

    with _context(args) as context:
        try:
            context.services.sign_in_silently()
            listing = context.services.api.list_mailboxes(status=args.status)
        except QargoError as exc:
            return _fail(exc)
        assert listing is not None  # no If-None-Match was sent
        if args.json:
            print(json.dumps([_mailbox_json(m) for m in listing.items], indent=2))
            return ExitCode.OK
        width = max((len(m.address) for m in listing.items), default=7)
        print(f"{'ADDRESS':<{width}}  STATUS")
        for mailbox in listing.items:
            print(f"{mailbox.address:<{width}}  {status_label(mailbox)}")
        _say(f"{len(listing.items)} mailboxes.")
        return ExitCode.OK


def _mailbox_json(mailbox: Any) -> dict[str, Any]:
    def when(value: Any) -> str | None:
        return value.isoformat().replace("+00:00", "Z") if value is not None else None

    return {
        "id": mailbox.id,
        "address": mailbox.address,
        "display_name": mailbox.display_name,
        "status": mailbox.raw_status,
        "status_reason": mailbox.status_reason,
        "status_changed_at": when(mailbox.status_changed_at),
        "linked_at": when(mailbox.linked_at),
        "linked_by": mailbox.linked_by,
        "granted_scopes": list(mailbox.granted_scopes),
        "last_sync_at": when(mailbox.last_sync_at),
        "last_error": (
            {
                "code": mailbox.last_error.code,
                "message": mailbox.last_error.message,
                "at": when(mailbox.last_error.at),
            }
            if mailbox.last_error
            else None
        ),
        "actions": [a.value for a in mailbox.actions],
    }


def _confirm(question: str, assume_yes: bool) -> bool:
    """Ask on the terminal; without one, only ``--yes`` confirms."""
    if assume_yes:
        return True
    if not sys.stdin.isatty():
        _say(f"{question} Not confirmed: add --yes to confirm without a terminal.")
        return False
    answer = input(f"{question} [y/N] ").strip().lower()
    return answer in ("y", "yes")


def _link(args: argparse.Namespace) -> int:
    from qargo_desktop.core.linking import LinkOutcome, MailboxLinker

    if getattr(args, "device_code", False):
        return _link_device(args)
    with _context(args) as context:
        services = context.services
        linker = MailboxLinker(services)
        try:
            services.sign_in_silently()
            mailbox = linker.find(args.mailbox)
        except QargoError as exc:
            return _fail(exc)
        control = services.new_control(
            on_auth_uri=lambda url: _say(
                f"Sign in as {mailbox.address} in your browser. If it did not open, or opened "
                f"signed in as someone else, open this link in a private window:\n  {url}"
            ),
        )
        _interrupt_cancels(control.cancel)
        _say(f"Waiting up to {control.deadline_s:.0f} s for the browser (Ctrl+C cancels)...")
        try:
            result = linker.authorise(mailbox, control)
        except QargoError as exc:
            return _fail(exc)
        if result.ok:
            _say(f"{mailbox.address} is linked.")
            return ExitCode.OK
        assert result.error is not None
        _say(f"Error: {result.error.explain()}")
        if result.mailbox is not None:
            from qargo_desktop.core.presentation import status_label

            _say(f"{mailbox.address} is now: {status_label(result.mailbox)}")
        return {
            LinkOutcome.DECLINED: ExitCode.DECLINED,
            LinkOutcome.WRONG_ACCOUNT: ExitCode.WRONG_ACCOUNT,
            LinkOutcome.CANCELLED: ExitCode.CANCELLED,
            LinkOutcome.DEADLINE: ExitCode.CANCELLED,
        }.get(result.outcome, ExitCode.FAILED)


def authorise(args: argparse.Namespace) -> int:
    """Authorise a mailbox through the browser."""
    return _link(args)


def reauthorise(args: argparse.Namespace) -> int:
    """Reauthorise a mailbox through the browser."""
    return _link(args)


def _confirmed_change(
    args: argparse.Namespace,
    address: str,
    question: Callable[[Any], str],
    change: Callable[[Any, Any], object],
    done: Callable[[Any], str],
) -> int:
    """Find a mailbox, ask before changing it (or take ``--yes``), then change it."""
    from qargo_desktop.core.linking import MailboxLinker

    with _context(args) as context:
        linker = MailboxLinker(context.services)
        try:
            context.services.sign_in_silently()
            mailbox = linker.find(address)
            if not _confirm(question(mailbox), args.yes):
                return ExitCode.CANCELLED
            change(linker, mailbox)
        except QargoError as exc:
            return _fail(exc)
        _say(done(mailbox))
        return ExitCode.OK


def reset(args: argparse.Namespace) -> int:
    """Reset the link status of a mailbox whose link failed."""
    return _confirmed_change(
        args,
        args.mailbox,
        lambda mailbox: (
            f"Reset the API link status of {mailbox.address}? Qargo forgets the failed "
            "link and the mailbox becomes Unlinked, ready to authorise again."
        ),
        lambda linker, mailbox: linker.reset(mailbox),
        lambda mailbox: f"{mailbox.address} is now Unlinked.",
    )


def add(args: argparse.Namespace) -> int:
    """Add a mailbox."""
    from qargo_desktop.core.linking import MailboxLinker

    with _context(args) as context:
        try:
            context.services.sign_in_silently()
            mailbox = MailboxLinker(context.services).add(args.address, args.display_name)
        except QargoError as exc:
            return _fail(exc)
        _say(f"Added {mailbox.address}; authorise it to link it.")
        return ExitCode.OK


def remove(args: argparse.Namespace) -> int:
    """Remove a mailbox."""
    return _confirmed_change(
        args,
        args.address,
        lambda mailbox: (
            f"Remove {mailbox.address} from the organisation? Qargo stops using this "
            "mailbox's mail."
        ),
        lambda linker, mailbox: linker.remove(mailbox),
        lambda mailbox: f"Removed {mailbox.address}.",
    )


def selftest(args: argparse.Namespace) -> int:
    """Send a test message from a mailbox to itself and report where the time went.

    Progress goes to stderr, the report (text or ``--json``) to stdout. Exit codes: 0
    pass, 1 fail, 2 warning, 3 could not run, 7 cancelled.
    """
    from qargo_desktop.core.selftest import (
        SelfTestOptions,
        StepReport,
        StepState,
        Verdict,
        run_selftest,
    )

    if not args.timeout > 0:
        _say("--timeout must be a positive number of seconds")
        return ExitCode.USAGE
    exit_codes = {
        Verdict.PASS: ExitCode.OK,
        Verdict.FAIL: ExitCode.FAILED,
        # The self-test's documented code for a warning; it shares its value with USAGE.
        Verdict.WARNING: 2,
        Verdict.COULD_NOT_RUN: ExitCode.COULD_NOT_RUN,
        Verdict.CANCELLED: ExitCode.CANCELLED,
    }
    with _context(args) as context:
        services = context.services
        cancel = threading.Event()
        control = services.new_control(
            on_auth_uri=lambda url: _say(
                f"Sign in as {args.mailbox} in your browser. If it did not open, or opened "
                f"signed in as someone else, open this link in a private window:\n  {url}"
            ),
        )
        control.cancel = cancel
        _interrupt_cancels(cancel)
        last: dict[str, str] = {}

        def progress(step: StepReport) -> None:
            # Each change once: polls repeat their message with a new count only.
            if last.get(step.id.value) == f"{step.state.value}:{step.message}":
                return
            last[step.id.value] = f"{step.state.value}:{step.message}"
            if step.state is StepState.RUNNING:
                _say(f"  {step.id.value:<9} ... {step.message}")
            else:
                _say(
                    f"  {step.id.value:<9} {step.state.value.upper():<7} "
                    f"({step.elapsed_s:.1f} s) {step.message}"
                )

        _say(f"Self-test of {args.mailbox} (Ctrl+C cancels)")
        report = run_selftest(
            services,
            args.mailbox,
            options=SelfTestOptions(keep=args.keep, timeout_s=args.timeout),
            on_step=progress,
            cancel=cancel,
            control=control,
        )
        print(report.to_json() if args.json else report.to_text(), end="\n" if args.json else "")
        _say(f"{report.verdict.label}: {report.summary}")
        try:
            from qargo_desktop.core.selftest import save_report

            save_report(report, context.paths.data_dir)
        except OSError as exc:
            log.warning("Could not keep the self-test report: %s", exc)
        context.report_cache_problem(_say)
        return int(exit_codes[report.verdict])


def sandbox_serve(args: argparse.Namespace) -> int:
    """Serve the sandbox on loopback, print one JSON line when ready, run until stopped."""
    from qargo_desktop.sandbox.server import Sandbox
    from qargo_desktop.sandbox.world import SandboxOptions

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    data_dir = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="qargo-sandbox-"))
    options: dict[str, Any] = {
        "data_dir": data_dir,
        "port": args.port,
        "http_port": args.http_port,
        "mailboxes": args.mailboxes,
    }
    if args.delivery_delay is not None:
        options["delivery_delay_s"] = args.delivery_delay
    if args.sync_delay is not None:
        options["sync_delay_s"] = args.sync_delay
    if args.faults:
        try:
            faults = json.loads(args.faults)
        except ValueError as exc:
            _say(f"--faults is not JSON: {exc}")
            return ExitCode.USAGE
        if not isinstance(faults, dict):
            _say("--faults must be a JSON object")
            return ExitCode.USAGE
        options["faults"] = faults
    sandbox = Sandbox(SandboxOptions(**options))
    try:
        info = sandbox.start()
    except OSError as exc:
        _say(f"The sandbox could not start: {exc}")
        return ExitCode.COULD_NOT_RUN

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        if args.write_config:
            from qargo_desktop.core.bootstrap import write_sandbox_config

            write_sandbox_config(Path(args.write_config), info)
        print(json.dumps(info.to_json()), flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        sandbox.stop()
    return ExitCode.OK


def sandbox_browser(argv: list[str]) -> int:
    """The sandbox's scripted browser: ``BROWSER="qargo-desktop sandbox browser %s"``.

    The same as ``python -m qargo_desktop.sandbox.browser`` (same options), for a frozen
    bundle, which has no Python to run that with. Like a real browser it returns at once
    and does its work in a detached process: here the same executable, in the foreground.
    """
    from qargo_desktop.sandbox import browser

    if not getattr(sys, "frozen", False) or {"--foreground", "-h", "--help"} & set(argv):
        return browser.main(argv)
    import subprocess

    options: dict[str, Any] = {"stdin": subprocess.DEVNULL, "close_fds": True}
    if sys.platform == "win32":
        options["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
    else:
        options["start_new_session"] = True
    subprocess.Popen([sys.executable, "sandbox", "browser", "--foreground", *argv], **options)
    return ExitCode.OK


def bundle_check(args: argparse.Namespace) -> int:
    """Report what this installation finds at run time (hidden; the bundle's smoke test).

    Every module of the package is imported, the shipped resources are listed, the keyring
    backend the token cache would use is named (or why none would be), and the Qt plugins
    and image formats are listed. Exit 0 when every module imports and the icons are
    there, 1 otherwise; whether the keyring is acceptable is for the caller to judge.
    """
    import importlib
    import os
    import pkgutil

    import keyring
    import keyring.backend

    import qargo_desktop
    from qargo_desktop import __version__
    from qargo_desktop.core.resources import resources_dir
    from qargo_desktop.core.token_cache import backend_name, choose_keyring_backend

    failed: dict[str, str] = {}
    imported = 0
    for module in pkgutil.walk_packages(qargo_desktop.__path__, "qargo_desktop."):
        if module.name.startswith("qargo_desktop.resources"):
            continue
        try:
            importlib.import_module(module.name)
            imported += 1
        except Exception as exc:  # report every failure, not only the first
            failed[module.name] = f"{type(exc).__name__}: {exc}"

    folder = resources_dir()
    resources = sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".py", ".pyc")
    )
    backend, refusal = choose_keyring_backend()
    # get_all_keyring() returns the backends that are viable here (their priority did not raise).
    available = sorted(backend_name(b) for b in keyring.backend.get_all_keyring())

    from PySide6.QtCore import QLibraryInfo
    from PySide6.QtGui import QImageReader

    plugins_dir = Path(QLibraryInfo.path(QLibraryInfo.LibraryPath.PluginsPath))
    translations_dir = Path(QLibraryInfo.path(QLibraryInfo.LibraryPath.TranslationsPath))
    plugins = {
        kind.name: sorted(p.name for p in kind.iterdir())
        for kind in sorted(plugins_dir.iterdir() if plugins_dir.is_dir() else [])
        if kind.is_dir()
    }
    report: dict[str, Any] = {
        "version": __version__,
        "frozen": bool(getattr(sys, "frozen", False)),
        "executable": sys.executable,
        "modules": {"imported": imported, "failed": failed},
        "resources": {"folder": str(folder), "files": resources},
        "keyring": {
            "default": backend_name(keyring.get_keyring()),
            "chosen": backend_name(backend) if backend is not None else None,
            "refusal": refusal,
            "available": available,
        },
        "qt": {
            "plugins": plugins,
            "image_formats": sorted(
                bytes(f.data()).decode() for f in QImageReader.supportedImageFormats()
            ),
            # Qt's own catalogues, which ui/i18n.py loads beside the app's.
            "translations": sorted(p.name for p in translations_dir.glob("*.qm")),
        },
        # What child processes (the system browser) inherit from this one.
        "environment": {
            name: os.environ.get(name)
            for name in ("LD_LIBRARY_PATH", "LD_LIBRARY_PATH_ORIG")
            if name in os.environ
        },
    }
    ok = not failed and "icons/app.svg" in resources
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"qargo-desktop {__version__} ({'frozen' if report['frozen'] else 'source'})")
        print(f"Modules: {imported} imported, {len(failed)} failed")
        for name, error in failed.items():
            print(f"  {name}: {error}")
        print(f"Resources: {len(resources)} files in {folder}")
        print(f"Keyring: {report['keyring']['chosen'] or 'none'} ({refusal or 'accepted'})")
    return ExitCode.OK if ok else ExitCode.FAILED


# -- sign-in on another device (device code flow) -------------------------------------------

# A 5x5 block font for device codes, so that a code read aloud or across a shared screen in
# a remote session is hard to get wrong. Microsoft's codes use letters and digits.
_BIG_FONT = {
    "A": (" ### ", "#   #", "#####", "#   #", "#   #"),
    "B": ("#### ", "#   #", "#### ", "#   #", "#### "),
    "C": (" ####", "#    ", "#    ", "#    ", " ####"),
    "D": ("#### ", "#   #", "#   #", "#   #", "#### "),
    "E": ("#####", "#    ", "#### ", "#    ", "#####"),
    "F": ("#####", "#    ", "#### ", "#    ", "#    "),
    "G": (" ####", "#    ", "#  ##", "#   #", " ####"),
    "H": ("#   #", "#   #", "#####", "#   #", "#   #"),
    "I": ("#####", "  #  ", "  #  ", "  #  ", "#####"),
    "J": ("#####", "   # ", "   # ", "#  # ", " ##  "),
    "K": ("#   #", "#  # ", "###  ", "#  # ", "#   #"),
    "L": ("#    ", "#    ", "#    ", "#    ", "#####"),
    "M": ("#   #", "## ##", "# # #", "#   #", "#   #"),
    "N": ("#   #", "##  #", "# # #", "#  ##", "#   #"),
    "O": (" ### ", "#   #", "#   #", "#   #", " ### "),
    "P": ("#### ", "#   #", "#### ", "#    ", "#    "),
    "Q": (" ### ", "#   #", "# # #", "#  # ", " ## #"),
    "R": ("#### ", "#   #", "#### ", "#  # ", "#   #"),
    "S": (" ####", "#    ", " ### ", "    #", "#### "),
    "T": ("#####", "  #  ", "  #  ", "  #  ", "  #  "),
    "U": ("#   #", "#   #", "#   #", "#   #", " ### "),
    "V": ("#   #", "#   #", "#   #", " # # ", "  #  "),
    "W": ("#   #", "#   #", "# # #", "## ##", "#   #"),
    "X": ("#   #", " # # ", "  #  ", " # # ", "#   #"),
    "Y": ("#   #", " # # ", "  #  ", "  #  ", "  #  "),
    "Z": ("#####", "   # ", "  #  ", " #   ", "#####"),
    "0": (" ### ", "#  ##", "# # #", "##  #", " ### "),
    "1": ("  #  ", " ##  ", "  #  ", "  #  ", " ### "),
    "2": (" ### ", "#   #", "  ## ", " #   ", "#####"),
    "3": ("#### ", "    #", " ### ", "    #", "#### "),
    "4": ("#   #", "#   #", "#####", "    #", "    #"),
    "5": ("#####", "#    ", "#### ", "    #", "#### "),
    "6": (" ### ", "#    ", "#### ", "#   #", " ### "),
    "7": ("#####", "    #", "   # ", "  #  ", "  #  "),
    "8": (" ### ", "#   #", " ### ", "#   #", " ### "),
    "9": (" ### ", "#   #", " ####", "    #", " ### "),
    "-": ("     ", "     ", " ### ", "     ", "     "),
}


def big_text(text: str, width: int = 80) -> list[str]:
    """``text`` in 5-line block letters, or ``[]`` if it has other characters or is too wide."""
    upper = text.upper()
    if not upper or any(ch not in _BIG_FONT for ch in upper) or len(upper) * 6 + 2 > width:
        return []
    return ["  " + " ".join(_BIG_FONT[ch][row] for ch in upper).rstrip() for row in range(5)]


def _show_device_code(flow: Any, account: str | None) -> None:
    """Print the address and code large on stderr, as a person across a remote session sees it."""
    import shutil

    width = shutil.get_terminal_size((80, 24)).columns
    who = f" as {account}" if account else ""
    if flow.purpose == "consent":
        heading = f"One more code: Microsoft asks separately for the mail permissions{who}."
    else:
        heading = f"Sign in{who} on another device (a phone or another computer):"
    rule = "  " + "=" * min(max(len(flow.verification_uri) + 14, 44), width - 4)
    lines = [
        "",
        rule,
        f"  {heading}",
        "",
        f"    1. Open   {flow.verification_uri}",
        f"    2. Enter  {flow.user_code}",
        "",
        *big_text(flow.user_code, width),
        rule,
        f"Address: {flow.verification_uri}",
        f"Code: {flow.user_code}",
        f"The code works for {_minutes_seconds(flow.seconds_left())}. Ctrl+C cancels.",
    ]
    _say("\n".join(lines))


def _minutes_seconds(seconds: float) -> str:
    whole = max(0, int(seconds + 0.5))
    return f"{whole // 60}:{whole % 60:02d}"


def _run_device(work: Any, cancel: threading.Event, *, account: str | None = None) -> Any:
    """Run ``work(on_code, cancel)`` on a worker thread while this one shows codes and time.

    The main thread stays free for Ctrl+C (which sets ``cancel``) and for the countdown:
    rewritten in place on a terminal, a line every half minute otherwise.
    """
    import queue

    codes: queue.Queue[Any] = queue.Queue()
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = work(codes.put, cancel)
        except BaseException as exc:  # handed to the main thread, which raises it
            outcome["error"] = exc

    worker = threading.Thread(target=target, name="device-sign-in", daemon=True)
    worker.start()
    on_terminal = sys.stderr.isatty()
    current: Any = None
    last_line = -1.0
    while worker.is_alive() or not codes.empty():
        try:
            flow = codes.get(timeout=1.0)
        except queue.Empty:
            flow = None
        if flow is not None:
            _show_device_code(flow, account)
            current, last_line = flow, time.monotonic()
        if current is None or not worker.is_alive():
            continue
        left = _minutes_seconds(current.seconds_left())
        if on_terminal:
            print(f"\r  Waiting for the other device: {left} left (Ctrl+C cancels) ", end="",
                  file=sys.stderr, flush=True)  # fmt: skip
        elif time.monotonic() - last_line >= 30:
            _say(f"  Still waiting for the other device: {left} left")
            last_line = time.monotonic()
    if on_terminal and current is not None:
        print("\r" + " " * 60 + "\r", end="", file=sys.stderr, flush=True)
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def _signin_device(args: argparse.Namespace) -> int:
    """``signin --device-code``: the admin signs in on another device with a code."""
    with _context(args) as context:
        services = context.services
        cancel = threading.Event()
        _interrupt_cancels(cancel)
        try:
            session = _run_device(services.sign_in_device, cancel)
        except QargoError as exc:
            return _fail(exc)
        _say(f"Signed in as {session.username} ({session.organisation.name}).")
        context.report_cache_problem(_say)
        return ExitCode.OK


def _link_device(args: argparse.Namespace) -> int:
    """``authorise``/``reauthorise --device-code``: sign in as the mailbox on another device."""
    from qargo_desktop.core.linking import LinkOutcome, MailboxLinker
    from qargo_desktop.core.presentation import status_label

    with _context(args) as context:
        linker = MailboxLinker(context.services)
        try:
            context.services.sign_in_silently()
            mailbox = linker.find(args.mailbox)
        except QargoError as exc:
            return _fail(exc)
        cancel = threading.Event()
        _interrupt_cancels(cancel)
        try:
            result = _run_device(
                lambda on_code, stop: linker.authorise_device(mailbox, on_code, stop),
                cancel,
                account=mailbox.address,
            )
        except QargoError as exc:
            return _fail(exc)
        if result.ok:
            _say(f"{mailbox.address} is linked.")
            return ExitCode.OK
        _say(f"Error: {result.error.explain() if result.error else 'the authorisation failed'}")
        if result.mailbox is not None:
            _say(f"{mailbox.address} is now: {status_label(result.mailbox)}")
        exit_codes = {
            LinkOutcome.DECLINED: ExitCode.DECLINED,
            LinkOutcome.WRONG_ACCOUNT: ExitCode.WRONG_ACCOUNT,
            LinkOutcome.CANCELLED: ExitCode.CANCELLED,
            LinkOutcome.DEADLINE: ExitCode.CANCELLED,
        }
        return exit_codes.get(result.outcome, ExitCode.FAILED)


# -- diagnostics and the support bundle -----------------------------------------------------


def diagnose(args: argparse.Namespace) -> int:
    """Check settings, keyring, saved sign-ins, proxy, services and clock; save a bundle.

    The report goes to stdout (text, or ``--json``), progress to stderr. Works with broken
    or incomplete settings too: that is when it is needed most. Exit codes: 0 nothing
    wrong (warnings allowed), 1 problems found, 3 the bundle could not be written.
    """
    import dataclasses
    import os

    from qargo_desktop.core.config import ConfigError, Settings, app_paths, load_settings
    from qargo_desktop.core.diagnostics import collect_diagnostics
    from qargo_desktop.core.logs import setup_logging
    from qargo_desktop.core.support import contact_text, save_support_bundle

    overrides: dict[str, Any] = {"config_dir": args.config_dir, "sandbox": args.sandbox}
    config_file = Path(args.config) if args.config else None
    problems: list[str] = []
    try:
        settings = load_settings(config_file, os.environ, overrides)
    except ConfigError as exc:
        problems = exc.problems
        # Still find the right folders (logs, token caches); nothing else is trusted.
        folder = args.config_dir or os.environ.get("QARGO_CONFIG_DIR") or None
        settings = Settings(config_dir=Path(folder).expanduser() if folder else None)
    if args.timeout is not None and not args.timeout > 0:
        _say("--timeout must be a positive number of seconds")
        return ExitCode.USAGE
    paths = app_paths(settings)
    setup_logging(
        paths.log_dir,
        "DEBUG" if args.verbose else settings.log_level,
        console=bool(args.verbose),
    )
    log.info("Diagnostics requested from the command line")
    # With settings that did not load, the addresses are unknown: check nothing rather
    # than the defaults.
    probe = not args.no_network and not problems
    if problems:
        settings = dataclasses.replace(settings, graph_base_url="")
    report = collect_diagnostics(
        settings,
        paths=paths,
        config_problems=problems,
        probe=probe,
        timeout_s=args.timeout,
        on_progress=lambda text: _say(f"  {text}..."),
    )
    if args.json:
        print(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        print(report.to_text(), end="")
    code = ExitCode.OK if report.ok else ExitCode.FAILED
    if args.bundle:
        try:
            bundle = save_support_bundle(Path(args.bundle), settings, paths=paths, report=report)
        except OSError as exc:
            _say(f"The support bundle could not be saved: {exc}")
            return ExitCode.COULD_NOT_RUN
        _say(f"Support bundle saved: {bundle.path} ({len(bundle.files)} files).")
        _say(contact_text(settings))
    _say(f"Diagnostics: {report.severity}.")
    return code
