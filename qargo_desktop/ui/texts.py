"""The words the window shows: state labels and explanations, times, error advice.

The states' own words come from :mod:`qargo_desktop.core.presentation`, which the command
line shares; this module adds what only the window needs (tooltips, action labels,
relative times, error summaries), so the table, the detail pane and the status filter
say the same thing.

Everything here is translated when it is asked for, in the language
:mod:`qargo_desktop.ui.i18n` installed: the core's English words through the contexts
``status`` and ``advice``, this module's own through ``texts`` and ``action``. Dates,
times and numbers follow the person's locale.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from PySide6.QtCore import QCoreApplication, QDate, QLocale, QTime

from qargo_desktop.core.errors import ADVICE, Advice, NextStep, QargoError, aadsts_code
from qargo_desktop.core.models import LastError, LinkStatus, Mailbox, MailboxAction
from qargo_desktop.core.presentation import STATUS_TEXT
from qargo_desktop.ui.i18n import app_locale, translatable

translate = QCoreApplication.translate

#: The English action labels (logs use them as they are; the window translates them).
ACTION_LABELS: dict[MailboxAction, str] = {
    MailboxAction.AUTHORISE: translatable("action", "Authorise API"),
    MailboxAction.REAUTHORISE: translatable("action", "Reauthorise API"),
    MailboxAction.RESET: translatable("action", "Reset API link status"),
    MailboxAction.SELFTEST: translatable("action", "Test mail flow"),
    MailboxAction.CANCEL: translatable("action", "Cancel authorisation"),
    MailboxAction.REMOVE: translatable("action", "Remove from list"),
}

# The same actions as menu entries, with the letter that chooses them in the menu.
_ACTION_MENU_TEXTS: dict[MailboxAction, str] = {
    MailboxAction.AUTHORISE: translatable("action", "&Authorise API"),
    MailboxAction.REAUTHORISE: translatable("action", "&Reauthorise API"),
    MailboxAction.RESET: translatable("action", "R&eset API link status"),
    MailboxAction.SELFTEST: translatable("action", "&Test mail flow"),
    MailboxAction.CANCEL: translatable("action", "Ca&ncel authorisation"),
    MailboxAction.REMOVE: translatable("action", "Re&move from list"),
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


def action_label(action: MailboxAction) -> str:
    """The label of an action on a button (``Authorise API``)."""
    return translate("action", ACTION_LABELS[action])


def action_menu_text(action: MailboxAction) -> str:
    """The label of an action in a menu, with its access key (``&Authorise API``)."""
    return translate("action", _ACTION_MENU_TEXTS[action])


def with_shortcut(text: str, shortcut: str) -> str:
    """A tooltip that names its shortcut: ``Load the list again (F5)``."""
    if not shortcut:
        return text
    return translate("texts", "{text} ({shortcut})", "a tooltip and its keyboard shortcut").format(
        text=text, shortcut=shortcut
    )


def status_label(status: LinkStatus, raw_status: str | None = None) -> str:
    """The label of a state; an unknown state shows the raw value the API sent."""
    if status is LinkStatus.UNKNOWN and raw_status:
        return translate("status", "Unknown ({raw_status})").format(raw_status=raw_status)
    return translate("status", STATUS_TEXT[status].label)


def mailbox_status_label(mailbox: Mailbox) -> str:
    """The label of a mailbox's state."""
    return status_label(mailbox.status, mailbox.raw_status)


def status_meaning(status: LinkStatus) -> str:
    """What a state means."""
    return translate("status", STATUS_TEXT[status].meaning)


def status_next_step(status: LinkStatus) -> str:
    """What to do about a state."""
    return translate("status", STATUS_TEXT[status].what_to_do)


def status_tooltip(mailbox: Mailbox) -> str:
    """The tooltip of a mailbox's state: its label, what it means and what to do."""
    lines = [mailbox_status_label(mailbox), status_meaning(mailbox.status)]
    if mailbox.status_reason:
        lines.append(translate("texts", "Reason: {reason}").format(reason=mailbox.status_reason))
    if mailbox.status is LinkStatus.AUTHORISING and mailbox.attempt_expires_at is not None:
        lines.append(
            translate("texts", "The attempt expires at {time}.").format(
                time=local_time(mailbox.attempt_expires_at)
            )
        )
    lines.append(status_next_step(mailbox.status))
    return "\n".join(lines)


def status_accessible_text(mailbox: Mailbox) -> str:
    """The state in words for a screen reader."""
    return translate("texts", "Status: {status}. {next_step}").format(
        status=mailbox_status_label(mailbox), next_step=status_next_step(mailbox.status)
    )


# -- times ----------------------------------------------------------------------------------


def _without_weekday(pattern: str) -> str:
    """A long date pattern without its weekday: ``dddd, d MMMM yyyy`` -> ``d MMMM yyyy``."""
    pattern = re.sub(r"dddd[,.]?\s*", "", pattern)
    pattern = re.sub(r"[,\s]*dddd", "", pattern)
    return pattern.strip(" ,")


def _date_pattern(*, short_month: bool = False, year: bool = True) -> str:
    pattern = _without_weekday(app_locale().dateFormat(QLocale.FormatType.LongFormat))
    if short_month:
        pattern = pattern.replace("MMMM", "MMM")
    if not year:
        pattern = re.sub(r"[\s,./-]*y+\.?", "", pattern).strip(" ,")
    return pattern


def _time_pattern(*, seconds: bool = False) -> str:
    pattern = app_locale().timeFormat(QLocale.FormatType.ShortFormat)
    if seconds and "ss" not in pattern:
        pattern = pattern.replace("mm", "mm:ss", 1)
    return pattern


def _date_text(moment: datetime, **pattern: bool) -> str:
    local = moment.astimezone()
    return app_locale().toString(
        QDate(local.year, local.month, local.day), _date_pattern(**pattern)
    )


def _time_text(moment: datetime, *, seconds: bool = False) -> str:
    local = moment.astimezone()
    clock = QTime(local.hour, local.minute, local.second)
    return app_locale().toString(clock, _time_pattern(seconds=seconds))


def _date_and_time(date: str, time: str) -> str:
    return translate("texts", "{date}, {time}", "a date and a time of day").format(
        date=date, time=time
    )


def local_time(moment: datetime, *, seconds: bool = False) -> str:
    """A moment as local time in the person's locale (``4 December 2025, 15:32``)."""
    return _date_and_time(_date_text(moment), _time_text(moment, seconds=seconds))


def local_clock(moment: datetime) -> str:
    """A moment as a local clock time (``15:32``), with the date when not today."""
    local = moment.astimezone()
    if local.date() == datetime.now().astimezone().date():
        return _time_text(moment)
    return _date_and_time(_date_text(moment, short_month=True, year=False), _time_text(moment))


def relative_time(moment: datetime | None, now: datetime | None = None) -> str:
    """A moment relative to now, for example ``5 min ago``; ``Never`` for ``None``."""
    if moment is None:
        return translate("texts", "Never")
    now = now or datetime.now(UTC)
    seconds = (now - moment).total_seconds()
    if seconds < 45:
        # A slightly fast server clock must not read as "in the future".
        return translate("texts", "Just now")
    minutes = round(seconds / 60)
    if minutes < 60:
        return translate("texts", "%n min ago", None, minutes)
    hours = round(seconds / 3600)
    if hours < 24:
        return translate("texts", "%n hour(s) ago", None, hours)
    days = round(seconds / 86400)
    if days == 1:
        return translate("texts", "Yesterday")
    if days < 31:
        return translate("texts", "%n day(s) ago", None, days)
    return _date_text(moment, short_month=True)


# -- errors ----------------------------------------------------------------------------------


def advice_summary(advice: Advice) -> str:
    """What happened, in the window's language."""
    return translate("advice", advice.summary)


def advice_detail(advice: Advice) -> str:
    """What to do, in the window's language ('' when the advice has no detail)."""
    return translate("advice", advice.detail) if advice.detail else ""


def explain(error: BaseException) -> str:
    """One paragraph for a person about an error: what happened, what to do, and ids.

    The window's own version of :meth:`QargoError.explain`, in the window's language.
    """
    if not isinstance(error, QargoError):
        return translate(
            "texts", "Something went wrong that the app does not recognise ({kind})."
        ).format(kind=type(error).__name__)
    from qargo_desktop.core.linking import WrongAccount

    if isinstance(error, WrongAccount):
        return translate(
            "texts",
            "The browser signed in {signed_in_as}, but this mailbox is {needed}. Nothing was "
            "changed in Qargo. Sign out of the other account in the browser, or use a private "
            "window, then try again and sign in as {needed}.",
        ).format(signed_in_as=error.signed_in_as, needed=error.needed)
    if type(error).explain is not QargoError.explain:
        # An error that words its own explanation (in English): better than generic advice.
        return error.explain()
    parts = [advice_summary(error.advice)]
    detail = advice_detail(error.advice)
    if detail:
        parts.append(detail)
    ids = []
    if error.code and (not error.known or error.advice.next_step is NextStep.CONTACT_SUPPORT):
        ids.append(translate("texts", "Error code: {code}").format(code=error.code))
    elif error.code:
        ids.append(translate("texts", "Code: {code}").format(code=error.code))
    if error.correlation_id:
        ids.append(translate("texts", "Correlation id: {id}").format(id=error.correlation_id))
    if ids:
        parts.append("(" + "; ".join(ids) + ")")
    return " ".join(parts)


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
        return advice_summary(advice)
    if error.message:
        return translate("texts", "{message} (code {code})").format(
            message=error.message, code=error.code
        )
    return translate("texts", "Unrecognised error (code {code})").format(code=error.code)


def error_tooltip(error: LastError | None) -> str:
    """Everything about the last error: what happened, what to do, the code and when."""
    if error is None:
        return translate("texts", "No error recorded.")
    advice = error_advice(error)
    lines = []
    if advice is not None:
        lines.append(advice_summary(advice))
        if advice.detail:
            lines.append(advice_detail(advice))
    else:
        lines.append(translate("texts", "The app does not recognise this error."))
        lines.append(translate("texts", "Contact Qargo Support with the code below."))
    if error.message and (advice is None or error.message != advice.summary):
        lines.append(
            translate("texts", "Message from Qargo: {message}").format(message=error.message)
        )
    lines.append(translate("texts", "Code: {code}").format(code=error.code))
    if error.at is not None:
        lines.append(
            translate("texts", "At: {time}").format(time=local_time(error.at, seconds=True))
        )
    return "\n".join(lines)


def mailbox_count(count: int) -> str:
    """``1 mailbox`` / ``1,234 mailboxes``, with the locale's digit grouping."""
    return translate("texts", "%Ln mailbox(es)", None, count)


def number(value: int) -> str:
    """A whole number with the locale's digit grouping (``1,234``; ``1.234`` in Dutch)."""
    return app_locale().toString(value)
