"""The detail pane: everything about the selected mailbox, its actions and its audit trail."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from PySide6.QtCore import QCoreApplication, QEvent, QSize, Qt, Signal
from PySide6.QtGui import QFont, QKeySequence
from PySide6.QtWidgets import (
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from qargo_desktop.core.models import LinkStatus, Mailbox, MailboxAction
from qargo_desktop.ui import texts
from qargo_desktop.ui.i18n import translatable
from qargo_desktop.ui.theme import Theme

if TYPE_CHECKING:
    from qargo_desktop.core.api import AuditEvent
from qargo_desktop.ui.widgets import FlowLayout

log = logging.getLogger(__name__)

translate = QCoreApplication.translate


# The action a state is mainly about is the default button.
_MAIN_ACTION: dict[LinkStatus, MailboxAction] = {
    LinkStatus.LINKED: MailboxAction.REAUTHORISE,
    LinkStatus.UNLINKED: MailboxAction.AUTHORISE,
    LinkStatus.REAUTHORISATION_REQUIRED: MailboxAction.REAUTHORISE,
    LinkStatus.LINK_FAILED: MailboxAction.RESET,
    LinkStatus.AUTHORISING: MailboxAction.CANCEL,
}

# What each action does, for its button's tooltip and screen readers.
_ACTION_DESCRIPTIONS: dict[MailboxAction, str] = {
    MailboxAction.AUTHORISE: translatable(
        "DetailPane", "Sign in as the mailbox in the browser so that Qargo can use it"
    ),
    MailboxAction.REAUTHORISE: translatable(
        "DetailPane", "Sign in as the mailbox again to renew Qargo's access"
    ),
    MailboxAction.RESET: translatable(
        "DetailPane", "Clear the failed link so that the mailbox can be authorised again"
    ),
    MailboxAction.SELFTEST: translatable(
        "DetailPane", "Send a test message and time its way into Qargo"
    ),
    MailboxAction.CANCEL: translatable("DetailPane", "Stop your authorisation in progress"),
    MailboxAction.REMOVE: translatable("DetailPane", "Remove the mailbox from Qargo's list"),
}

# The field rows: key and title.
_FIELDS: tuple[tuple[str, str], ...] = (
    ("status_reason", translatable("DetailPane", "Reason")),
    ("status_changed_at", translatable("DetailPane", "State changed")),
    ("linked_at", translatable("DetailPane", "Linked")),
    ("linked_by", translatable("DetailPane", "Linked by")),
    ("granted_scopes", translatable("DetailPane", "Permissions")),
    ("last_sync_at", translatable("DetailPane", "Last sync")),
    ("last_error", translatable("DetailPane", "Last error")),
    ("authorisation", translatable("DetailPane", "Authorisation")),
    ("id", translatable("DetailPane", "Mailbox id")),
    ("etag", translatable("DetailPane", "Version")),
)

# The audit actions the API documents, in words; others are spelled out from the code.
_AUDIT_ACTIONS: dict[str, str] = {
    "mailbox_added": translatable("audit", "Mailbox added"),
    "authorisation_started": translatable("audit", "Authorisation started"),
    "mailbox_linked": translatable("audit", "Mailbox linked"),
    "authorisation_failed": translatable("audit", "Authorisation failed"),
    "authorisation_expired": translatable("audit", "Authorisation expired"),
    "authorisation_cancelled": translatable("audit", "Authorisation cancelled"),
    "link_reset": translatable("audit", "Link reset"),
    "grant_revoked": translatable("audit", "Grant revoked"),
    "mailbox_changed": translatable("audit", "Mailbox changed"),
    "mailbox_removed": translatable("audit", "Mailbox removed"),
}


_SEPARATOR = "  \u00b7  "


def audit_action_text(action: str) -> str:
    """An audit action code in words: ``mailbox_linked`` -> ``Mailbox linked``."""
    if action in _AUDIT_ACTIONS:
        return translate("audit", _AUDIT_ACTIONS[action])
    words = action.replace("_", " ").replace(".", " ").strip()
    return words[:1].upper() + words[1:] if words else translate("audit", "Event")


def audit_entry_text(event: AuditEvent) -> str:
    """Two lines: what happened, then when, who, and from which app and machine."""
    what = audit_action_text(event.action)
    if event.detail:
        what = f"{what}: {event.detail}"
    facts = [texts.local_time(event.at) if event.at else translate("audit", "Unknown time")]
    if event.actor:
        facts.append(event.actor)
    if event.app_version and event.machine:
        facts.append(
            translate("audit", "app {version} on {machine}").format(
                version=event.app_version, machine=event.machine
            )
        )
    elif event.app_version:
        facts.append(translate("audit", "app {version}").format(version=event.app_version))
    elif event.machine:
        facts.append(event.machine)
    return what + "\n" + _SEPARATOR.join(facts)


def audit_entry_tooltip(event: AuditEvent) -> str:
    """Every field of an audit event."""
    when = texts.local_time(event.at, seconds=True) if event.at else translate("audit", "unknown")
    return "\n".join(
        [
            translate("audit", "What: {what} ({code})").format(
                what=audit_action_text(event.action), code=event.action
            ),
            translate("audit", "Details: {detail}").format(detail=event.detail or "-"),
            translate("audit", "When: {when}").format(when=when),
            translate("audit", "Who: {actor}").format(actor=event.actor or "-"),
            translate("audit", "App version: {version}").format(version=event.app_version or "-"),
            translate("audit", "Machine: {machine}").format(machine=event.machine or "-"),
        ]
    )


def _value_label(parent: QWidget) -> QLabel:
    label = QLabel(parent)
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    label.setTextFormat(Qt.TextFormat.PlainText)
    label.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
    return label


class DetailPane(QWidget):
    """Shows one mailbox: every field, the actions its state allows, its audit trail.

    The pane asks for nothing itself: the window loads the audit trail and carries out
    the actions.

    Signals:
        action_requested(object, object): ``(MailboxAction, Mailbox)`` when an action
            button is pressed.
        audit_retry_requested(): The person asked to load the audit trail again.

    Args:
        theme: Colours and icons.
        parent: The owning widget.
        clock: Returns "now" for relative times.
    """

    action_requested = Signal(object, object)
    audit_retry_requested = Signal()

    def __init__(
        self,
        theme: Theme,
        parent: QWidget | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("detailPane")
        self._clock = clock or (lambda: datetime.now(UTC))
        self._theme = theme
        self._mailbox: Mailbox | None = None
        self._shortcuts: dict[MailboxAction, QKeySequence] = {}
        self._audit_state: tuple[str, str] = ("loading", "")
        self._events: tuple[AuditEvent, ...] = ()

        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        self._stack = QStackedWidget(self)
        outer.addWidget(self._stack)

        self._nothing = QLabel(self)
        self._nothing.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._nothing.setWordWrap(True)
        self._nothing.setMargin(24)
        self._stack.addWidget(self._nothing)

        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        content = QWidget(scroll)
        scroll.setWidget(content)
        self._stack.addWidget(scroll)
        layout = QVBoxLayout(content)
        layout.setContentsMargins(12, 8, 12, 8)
        self._build_heading(content, layout)
        self._build_actions(content, layout)
        self._build_fields(content, layout)
        self._build_audit_trail(content, layout)
        self.set_audit_loading()
        self._retranslate()
        self.set_mailbox(None)

    def _build_heading(self, content: QWidget, layout: QVBoxLayout) -> None:
        self.address_label = QLabel(content)
        font = QFont(self.address_label.font())
        font.setBold(True)
        font.setPointSizeF(font.pointSizeF() * 1.25)
        self.address_label.setFont(font)
        self.address_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.address_label.setWordWrap(True)
        self.name_label = _value_label(content)
        layout.addWidget(self.address_label)
        layout.addWidget(self.name_label)

        self.status_frame = QFrame(content)
        self.status_frame.setObjectName("statusFrame")
        status_row = QHBoxLayout(self.status_frame)
        status_row.setContentsMargins(10, 8, 10, 8)
        self.status_icon = QLabel(self.status_frame)
        self.status_icon.setAlignment(Qt.AlignmentFlag.AlignTop)
        status_text = QVBoxLayout()
        self.status_label = QLabel(self.status_frame)
        self.status_label.setWordWrap(True)
        bold = QFont(self.status_label.font())
        bold.setBold(True)
        self.status_label.setFont(bold)
        self.status_explanation = _value_label(self.status_frame)
        status_text.addWidget(self.status_label)
        status_text.addWidget(self.status_explanation)
        status_row.addWidget(self.status_icon)
        status_row.addLayout(status_text, 1)
        layout.addWidget(self.status_frame)

    def _build_actions(self, content: QWidget, layout: QVBoxLayout) -> None:
        # Buttons wrap onto a second row rather than widen the pane (long translations,
        # large text).
        self._actions_row = FlowLayout()
        self.action_buttons: dict[MailboxAction, QPushButton] = {}
        for action in MailboxAction:
            button = QPushButton(content)
            button.setObjectName(f"action_{action.value}")
            button.clicked.connect(lambda _=False, a=action: self._on_action_clicked(a))
            self.action_buttons[action] = button
            self._actions_row.addWidget(button)
        layout.addLayout(self._actions_row)
        self.no_actions_label = QLabel(content)
        self.no_actions_label.setWordWrap(True)
        layout.addWidget(self.no_actions_label)

    def _build_fields(self, content: QWidget, layout: QVBoxLayout) -> None:
        self._form = QFormLayout()
        self._form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self._form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        self.fields: dict[str, QLabel] = {}
        self._field_titles: dict[str, QLabel] = {}
        for key, _title in _FIELDS:
            label = _value_label(content)
            title = QLabel(content)
            title.setBuddy(label)
            self.fields[key] = label
            self._field_titles[key] = title
            self._form.addRow(title, label)
        layout.addLayout(self._form)

    def _build_audit_trail(self, content: QWidget, layout: QVBoxLayout) -> None:
        self._audit_title = QLabel(content)
        bold = QFont(self._audit_title.font())
        bold.setBold(True)
        self._audit_title.setFont(bold)
        layout.addSpacing(8)
        layout.addWidget(self._audit_title)
        self.audit_status = QLabel(content)
        self.audit_status.setWordWrap(True)
        self.audit_retry = QPushButton(content)
        self.audit_retry.setObjectName("auditRetry")
        self.audit_retry.clicked.connect(self.audit_retry_requested)
        audit_status_row = QHBoxLayout()
        audit_status_row.addWidget(self.audit_status, 1)
        audit_status_row.addWidget(self.audit_retry)
        layout.addLayout(audit_status_row)
        # One two-line entry per event reads well in a narrow pane; a six-column table
        # did not (most columns ended up scrolled out of sight).
        self.audit_list = QListWidget(content)
        self.audit_list.setAlternatingRowColors(True)
        self.audit_list.setWordWrap(True)
        self.audit_list.setUniformItemSizes(False)
        self.audit_list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.audit_list.setSelectionMode(QListWidget.SelectionMode.NoSelection)
        self.audit_list.setMinimumHeight(160)
        self.audit_list.setSpacing(3)
        layout.addWidget(self.audit_list, 1)

    @property
    def mailbox(self) -> Mailbox | None:
        """The mailbox shown."""
        return self._mailbox

    def focus_chain(self) -> list[QWidget]:
        """The pane's controls in Tab order: the actions, then the history."""
        return [*self.action_buttons.values(), self.audit_retry, self.audit_list]

    def set_shortcuts(self, shortcuts: Mapping[MailboxAction, QKeySequence]) -> None:
        """Name the window's shortcut of each action in its button's tooltip."""
        self._shortcuts = dict(shortcuts)
        self._retranslate()

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 (Qt name)
        """Put every word up again when the language changes."""
        if event.type() == QEvent.Type.LanguageChange:
            self._retranslate()
        super().changeEvent(event)

    def _retranslate(self) -> None:
        self.setAccessibleName(translate("DetailPane", "Mailbox details"))
        self._nothing.setText(
            translate(
                "DetailPane",
                "Select a mailbox to see its details, what you can do about it and its history.",
            )
        )
        for action, button in self.action_buttons.items():
            label = texts.action_label(action)
            description = translate("DetailPane", _ACTION_DESCRIPTIONS[action])
            shortcut = self._shortcuts.get(action)
            native = shortcut.toString(QKeySequence.SequenceFormat.NativeText) if shortcut else ""
            button.setText(label)
            button.setToolTip(texts.with_shortcut(description, native))
            button.setAccessibleName(label)
            button.setAccessibleDescription(texts.with_shortcut(description, native))
        self.no_actions_label.setText(
            translate("DetailPane", "Nothing can be done in this state except refreshing the list.")
        )
        for key, title in _FIELDS:
            words = translate("DetailPane", title)
            self._field_titles[key].setText(translate("DetailPane", "{title}:").format(title=words))
            self.fields[key].setAccessibleName(words)
        self._audit_title.setText(translate("DetailPane", "History"))
        self.audit_retry.setText(translate("DetailPane", "Re&try"))
        self.audit_retry.setToolTip(translate("DetailPane", "Load the history again"))
        self.audit_list.setAccessibleName(translate("DetailPane", "Audit trail"))
        self.audit_list.setAccessibleDescription(
            translate("DetailPane", "Who did what to this mailbox and when, newest first")
        )
        self.status_frame.setAccessibleDescription(
            translate("DetailPane", "The mailbox's link state")
        )
        self.set_mailbox(self._mailbox)
        kind, text = self._audit_state
        if kind == "loading":
            self.audit_status.setText(translate("DetailPane", "Loading the history..."))
        elif kind == "empty":
            self.audit_status.setText(translate("DetailPane", "Nothing has been recorded yet."))
        elif kind == "error":
            self._show_audit_error(text)
        elif kind == "events":
            self.set_audit_events(self._events)

    def set_theme(self, theme: Theme) -> None:
        """Recolour for a new theme."""
        self._theme = theme
        self.set_mailbox(self._mailbox)

    def set_mailbox(self, mailbox: Mailbox | None) -> None:
        """Show a mailbox (or the hint to select one)."""
        self._mailbox = mailbox
        if mailbox is None:
            self._stack.setCurrentIndex(0)
            return
        self._stack.setCurrentIndex(1)
        self.address_label.setText(mailbox.address)
        self.name_label.setText(mailbox.display_name or translate("DetailPane", "No display name"))

        colours = self._theme.colours(mailbox.status)
        self.status_frame.setStyleSheet(
            f"QFrame#statusFrame {{ background: {colours.background}; border-radius: 6px; }}"
            f"QFrame#statusFrame QLabel {{ color: {colours.foreground}; }}"
        )
        self.status_icon.setPixmap(self._theme.status_icon(mailbox.status).pixmap(QSize(24, 24)))
        self.status_label.setText(texts.mailbox_status_label(mailbox))
        self.status_explanation.setText(
            f"{texts.status_meaning(mailbox.status)} {texts.status_next_step(mailbox.status)}"
        )
        self.status_frame.setAccessibleName(texts.status_accessible_text(mailbox))
        self.status_frame.setToolTip(texts.status_tooltip(mailbox))

        allowed = mailbox.actions
        main = _MAIN_ACTION.get(mailbox.status)
        for action, button in self.action_buttons.items():
            button.setVisible(action in allowed)
            button.setDefault(action is main)
            font = button.font()
            font.setBold(action is main)
            button.setFont(font)
        self.no_actions_label.setVisible(not allowed)

        self._set_field("status_reason", mailbox.status_reason or "")
        self._set_time_field("status_changed_at", mailbox.status_changed_at)
        self._set_time_field("linked_at", mailbox.linked_at)
        self._set_field("linked_by", mailbox.linked_by or "")
        self._set_field("granted_scopes", "\n".join(mailbox.granted_scopes))
        if mailbox.last_sync_at is None:
            self._set_field("last_sync_at", translate("DetailPane", "Never"))
        else:
            self._set_field(
                "last_sync_at",
                translate("DetailPane", "{relative} ({time})").format(
                    relative=texts.relative_time(mailbox.last_sync_at, self._clock()),
                    time=texts.local_time(mailbox.last_sync_at, seconds=True),
                ),
            )
        self._set_field(
            "last_error", texts.error_tooltip(mailbox.last_error) if mailbox.last_error else ""
        )
        if mailbox.attempt_id:
            self._set_field(
                "authorisation",
                translate("DetailPane", "In progress, expires at {time}").format(
                    time=texts.local_time(mailbox.attempt_expires_at)
                )
                if mailbox.attempt_expires_at
                else translate("DetailPane", "In progress"),
            )
        else:
            self._set_field("authorisation", "")
        self._set_field("id", mailbox.id)
        self._set_field("etag", mailbox.etag)

    def _set_field(self, key: str, text: str) -> None:
        label = self.fields[key]
        label.setText(text)
        label.setVisible(bool(text))
        field_label = self._form.labelForField(label)
        if field_label is not None:
            field_label.setVisible(bool(text))

    def _set_time_field(self, key: str, moment: datetime | None) -> None:
        if moment is not None:
            self._set_field(
                key,
                translate("DetailPane", "{time} ({relative})").format(
                    time=texts.local_time(moment),
                    relative=texts.relative_time(moment, self._clock()),
                ),
            )
        else:
            self._set_field(key, "")

    # -- audit trail -----------------------------------------------------------------------

    def set_audit_loading(self) -> None:
        """The audit trail is being loaded."""
        self._audit_state = ("loading", "")
        self.audit_list.clear()
        self.audit_status.setText(translate("DetailPane", "Loading the history..."))
        self.audit_status.setVisible(True)
        self.audit_retry.setVisible(False)

    def set_audit_events(self, events: Sequence[AuditEvent]) -> None:
        """Show the audit trail, newest first."""
        self._events = tuple(events)
        self.audit_list.clear()
        for event in events:
            item = QListWidgetItem(audit_entry_text(event), self.audit_list)
            item.setToolTip(audit_entry_tooltip(event))
        self._audit_state = ("events" if events else "empty", "")
        self.audit_status.setText(
            "" if events else translate("DetailPane", "Nothing has been recorded yet.")
        )
        self.audit_status.setVisible(not events)
        self.audit_retry.setVisible(False)

    def set_audit_error(self, text: str) -> None:
        """The audit trail could not be loaded."""
        self._audit_state = ("error", text)
        self.audit_list.clear()
        self._show_audit_error(text)

    def _show_audit_error(self, text: str) -> None:
        self.audit_status.setText(
            translate("DetailPane", "The history could not be loaded. {problem}").format(
                problem=text
            )
        )
        self.audit_status.setVisible(True)
        self.audit_retry.setVisible(True)

    def _on_action_clicked(self, action: MailboxAction) -> None:
        if self._mailbox is not None:
            self.action_requested.emit(action, self._mailbox)
