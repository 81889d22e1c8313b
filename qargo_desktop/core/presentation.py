"""Words for each link state, shared by the window and the command line (no Qt here)."""

from __future__ import annotations

from dataclasses import dataclass

from qargo_desktop.core.models import LinkStatus, Mailbox


@dataclass(frozen=True, slots=True)
class StatusText:
    """How a state is named and explained."""

    label: str
    meaning: str
    what_to_do: str
    main_action: str


STATUS_TEXT: dict[LinkStatus, StatusText] = {
    LinkStatus.LINKED: StatusText(
        "Linked",
        "Qargo reads and sends this mailbox's mail.",
        "Nothing to do. Run a test if mail seems slow; reauthorise if scopes changed.",
        "Reauthorise API, Test",
    ),
    LinkStatus.UNLINKED: StatusText(
        "Unlinked",
        "Qargo has no access to this mailbox.",
        "Choose Authorise API and sign in as the mailbox account.",
        "Authorise API",
    ),
    LinkStatus.REAUTHORISATION_REQUIRED: StatusText(
        "Pending authorisation: Reauthorise API",
        "The mailbox's grant is no longer valid (password change, revoked consent, long "
        "inactivity or new permissions). Mail in Qargo is not updating.",
        "Choose Reauthorise API and sign in as the mailbox account.",
        "Reauthorise API",
    ),
    LinkStatus.LINK_FAILED: StatusText(
        "Pending authorisation: Reset API link status",
        "The last authorisation failed or was abandoned. Mail in Qargo is not updating.",
        "Choose Reset API link status, then authorise the mailbox again.",
        "Reset API link status",
    ),
    LinkStatus.AUTHORISING: StatusText(
        "Authorising...",
        "An authorisation is in progress in someone's browser.",
        "Wait for it to finish, or cancel it if it is your own.",
        "Cancel (own attempt)",
    ),
    LinkStatus.UNKNOWN: StatusText(
        "Unknown",
        "Qargo reported a state this version of the app does not know.",
        "Refresh the list; update the app if this stays.",
        "Refresh only",
    ),
}


def status_label(mailbox: Mailbox) -> str:
    """The state's label; an unknown state shows its raw value."""
    if mailbox.status is LinkStatus.UNKNOWN:
        return f"Unknown ({mailbox.raw_status})"
    return STATUS_TEXT[mailbox.status].label


def status_tooltip(mailbox: Mailbox) -> str:
    """What the state means and what to do, in a sentence or two."""
    text = STATUS_TEXT[mailbox.status]
    return f"{status_label(mailbox)}. {text.meaning} {text.what_to_do}"
