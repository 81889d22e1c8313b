"""The words the window shows: state labels and explanations, times, error advice.

The states' own words come from :mod:`qargo_desktop.core.presentation`, which the command
line shares; this module adds what only the window needs (tooltips, action labels,
relative times, error summaries), so the table, the detail pane and the status filter
say the same thing (en-GB).
"""

from __future__ import annotations

from datetime import UTC, datetime

from qargo_desktop.core.errors import ADVICE, Advice, aadsts_code
from qargo_desktop.core.models import LastError, LinkStatus, Mailbox, MailboxAction
from qargo_desktop.core.presentation import STATUS_TEXT

ACTION_LABELS: dict[MailboxAction, str] = {
    MailboxAction.AUTHORISE: "Authorise API",
    MailboxAction.REAUTHORISE: "Reauthorise API",
    MailboxAction.RESET: "Reset API link status",
    MailboxAction.SELFTEST: "Test mail flow",
    MailboxAction.CANCEL: "Cancel authorisation",
    MailboxAction.REMOVE: "Remove from list",
}

# The order the status filter lists the states in: those needing attention first.
STATUS_ORDER: tuple[LinkStatus, ...] = (
    LinkStatus.LINK_FAILED,
    LinkStatus.REAUTHORISATION_REQUIRED,
    LinkStatus.AUTHORISING,
    LinkStatus.UNKNOWN,
    LinkStatus.UNLINKED,
    LinkStatus.LINKED,
)


def status_label(status: LinkStatus, raw_status: str | None = None) -> str:
    """The label of a state; an unknown state shows the raw value the API sent."""
    if status is LinkStatus.UNKNOWN and raw_status:
        return f"Unknown ({raw_status})"
    return STATUS_TEXT[status].label


def mailbox_status_label(mailbox: Mailbox) -> str:
    """The label of a mailbox's state."""
    return status_label(mailbox.status, mailbox.raw_status)


def status_meaning(status: LinkStatus) -> str:
    """What a state means."""
    return STATUS_TEXT[status].meaning


def status_next_step(status: LinkStatus) -> str:
    """What to do about a state."""
    return STATUS_TEXT[status].what_to_do


def status_tooltip(mailbox: Mailbox) -> str:
    """The tooltip of a mailbox's state: its label, what it means and what to do."""
    lines = [mailbox_status_label(mailbox), status_meaning(mailbox.status)]
    if mailbox.status_reason:
        lines.append(f"Reason: {mailbox.status_reason}")
    if mailbox.status is LinkStatus.AUTHORISING and mailbox.attempt_expires_at is not None:
        lines.append(f"The attempt expires at {local_time(mailbox.attempt_expires_at)}.")
    lines.append(status_next_step(mailbox.status))
    return "\n".join(lines)


def status_accessible_text(mailbox: Mailbox) -> str:
    """The state in words for a screen reader."""
    return f"Status: {mailbox_status_label(mailbox)}. {status_next_step(mailbox.status)}"


# -- times ----------------------------------------------------------------------------------


def local_time(moment: datetime, *, seconds: bool = False) -> str:
    """A moment as local time, for example ``4 December 2025, 15:32`` (no platform %-d)."""
    local = moment.astimezone()
    clock = f"{local:%H:%M:%S}" if seconds else f"{local:%H:%M}"
    return f"{local.day} {local:%B %Y}, {clock}"


def local_clock(moment: datetime) -> str:
    """A moment as a local clock time (``15:32``), with the date when not today."""
    local = moment.astimezone()
    if local.date() == datetime.now().astimezone().date():
        return f"{local:%H:%M}"
    return f"{local.day} {local:%b}, {local:%H:%M}"


def relative_time(moment: datetime | None, now: datetime | None = None) -> str:
    """A moment relative to now, for example ``5 min ago``; ``Never`` for ``None``."""
    if moment is None:
        return "Never"
    now = now or datetime.now(UTC)
    seconds = (now - moment).total_seconds()
    if seconds < 45:
        # A slightly fast server clock must not read as "in the future".
        return "Just now"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min ago"
    hours = round(seconds / 3600)
    if hours < 24:
        return "1 hour ago" if hours == 1 else f"{hours} hours ago"
    days = round(seconds / 86400)
    if days == 1:
        return "Yesterday"
    if days < 31:
        return f"{days} days ago"
    local = moment.astimezone()
    return f"{local.day} {local:%b %Y}"


# -- errors ----------------------------------------------------------------------------------


def error_advice(error: LastError) -> Advice | None:
    """The advice for a mailbox's last error, or ``None`` when the code is not known.

    The API records its own problem codes (``attempt_expired``), identity platform codes
    (``AADSTS50173`` or ``invalid_grant``), Graph codes and the app's own reasons.
    """
    code = error.code.strip()
    keys = []
    number = aadsts_code(code) or aadsts_code(error.message)
    if number:
        keys.append(f"aadsts:{number}")
    if ":" in code:
        keys.append(code)
    keys += [f"api:{code}", f"oauth:{code}", f"graph:{code}", f"app:{code}", f"net:{code}"]
    for key in keys:
        if key in ADVICE:
            return ADVICE[key]
    return None


def error_summary(error: LastError | None) -> str:
    """The last error in a few plain words; the code itself when the app does not know it."""
    if error is None:
        return ""
    advice = error_advice(error)
    if advice is not None:
        return advice.summary
    if error.message:
        return f"{error.message} (code {error.code})"
    return f"Unrecognised error (code {error.code})"


def error_tooltip(error: LastError | None) -> str:
    """Everything about the last error: what happened, what to do, the code and when."""
    if error is None:
        return "No error recorded."
    advice = error_advice(error)
    lines = []
    if advice is not None:
        lines.append(advice.summary)
        if advice.detail:
            lines.append(advice.detail)
    else:
        lines.append("The app does not recognise this error.")
        lines.append("Contact Qargo Support with the code below.")
    if error.message and (advice is None or error.message != advice.summary):
        lines.append(f"Message from Qargo: {error.message}")
    lines.append(f"Code: {error.code}")
    if error.at is not None:
        lines.append(f"At: {local_time(error.at, seconds=True)}")
    return "\n".join(lines)


def count_text(count: int, singular: str, plural: str | None = None) -> str:
    """``1 mailbox`` / ``1,234 mailboxes``."""
    word = singular if count == 1 else (plural or singular + "s")
    return f"{count:,} {word}"
