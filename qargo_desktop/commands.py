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


def reset(args: argparse.Namespace) -> int:
    """Reset the link status of a mailbox whose link failed."""
    from qargo_desktop.core.linking import MailboxLinker

    with _context(args) as context:
        linker = MailboxLinker(context.services)
        try:
            context.services.sign_in_silently()
            mailbox = linker.find(args.mailbox)
            question = (
                f"Reset the API link status of {mailbox.address}? Qargo forgets the failed "
                "link and the mailbox becomes Unlinked, ready to authorise again."
            )
            if not _confirm(question, args.yes):
                return ExitCode.CANCELLED
            linker.reset(mailbox)
        except QargoError as exc:
            return _fail(exc)
        _say(f"{mailbox.address} is now Unlinked.")
        return ExitCode.OK


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
    from qargo_desktop.core.linking import MailboxLinker

    with _context(args) as context:
        linker = MailboxLinker(context.services)
        try:
            context.services.sign_in_silently()
            mailbox = linker.find(args.address)
            question = (
                f"Remove {mailbox.address} from the organisation? Qargo stops using this "
                "mailbox's mail."
            )
            if not _confirm(question, args.yes):
                return ExitCode.CANCELLED
            linker.remove(mailbox)
        except QargoError as exc:
            return _fail(exc)
        _say(f"Removed {mailbox.address}.")
        return ExitCode.OK


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
