"""The detail pane: everything about the selected mailbox, its actions and its audit trail."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QFont
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

from qargo_desktop.core.api import AuditEvent
from qargo_desktop.core.models import LinkStatus, Mailbox, MailboxAction
from qargo_desktop.ui import texts
from qargo_desktop.ui.theme import Theme

log = logging.getLogger(__name__)


# The action a state is mainly about is the default button.
_MAIN_ACTION: dict[LinkStatus, MailboxAction] = {
    LinkStatus.LINKED: MailboxAction.REAUTHORISE,
    LinkStatus.UNLINKED: MailboxAction.AUTHORISE,
    LinkStatus.REAUTHORISATION_REQUIRED: MailboxAction.REAUTHORISE,
    LinkStatus.LINK_FAILED: MailboxAction.RESET,
    LinkStatus.AUTHORISING: MailboxAction.CANCEL,
}


_SEPARATOR = "  \u00b7  "


def audit_action_text(action: str) -> str:
    """An audit action code in words: ``mailbox_linked`` -> ``Mailbox linked``."""
    words = action.replace("_", " ").replace(".", " ").strip()
    return words[:1].upper() + words[1:] if words else "Event"


def audit_entry_text(event: AuditEvent) -> str:
    """Two lines: what happened, then when, who, and from which app and machine."""
    what = audit_action_text(event.action)
    if event.detail:
        what = f"{what}: {event.detail}"
    facts = [texts.local_time(event.at) if event.at else "Unknown time"]
    if event.actor:
        facts.append(event.actor)
    if event.app_version and event.machine:
        facts.append(f"app {event.app_version} on {event.machine}")
    elif event.app_version or event.machine:
        facts.append(f"app {event.app_version}" if event.app_version else event.machine)
    return what + "\n" + _SEPARATOR.join(facts)


def audit_entry_tooltip(event: AuditEvent) -> str:
    """Every field of an audit event."""
    when = texts.local_time(event.at, seconds=True) if event.at else "unknown"
    return "\n".join(
        [
            f"What: {audit_action_text(event.action)} ({event.action})",
            f"Details: {event.detail or '-'}",
            f"When: {when}",
            f"Who: {event.actor or '-'}",
            f"App version: {event.app_version or '-'}",
            f"Machine: {event.machine or '-'}",
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
        self.setAccessibleName("Mailbox details")
        self._theme = theme
        self._mailbox: Mailbox | None = None

        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        self._stack = QStackedWidget(self)
        outer.addWidget(self._stack)

        self._nothing = QLabel(
            "Select a mailbox to see its details, what you can do about it and its history.",
            self,
        )
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
        self._actions_row = QHBoxLayout()
        self.action_buttons: dict[MailboxAction, QPushButton] = {}
        for action in MailboxAction:
            button = QPushButton(texts.ACTION_LABELS[action], content)
            button.setObjectName(f"action_{action.value}")
            button.clicked.connect(lambda _=False, a=action: self._on_action_clicked(a))
            self.action_buttons[action] = button
            self._actions_row.addWidget(button)
        self._actions_row.addStretch(1)
        layout.addLayout(self._actions_row)
        self.no_actions_label = QLabel(
            "Nothing can be done in this state except refreshing the list.", content
        )
        self.no_actions_label.setWordWrap(True)
        layout.addWidget(self.no_actions_label)

    def _build_fields(self, content: QWidget, layout: QVBoxLayout) -> None:
        self._form = QFormLayout()
        self._form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self._form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        self.fields: dict[str, QLabel] = {}
        for key, title in (
            ("status_reason", "Reason"),
            ("status_changed_at", "State changed"),
            ("linked_at", "Linked"),
            ("linked_by", "Linked by"),
            ("granted_scopes", "Permissions"),
            ("last_sync_at", "Last sync"),
            ("last_error", "Last error"),
            ("authorisation", "Authorisation"),
            ("id", "Mailbox id"),
            ("etag", "Version"),
        ):
            label = _value_label(content)
            label.setAccessibleName(title)
            self.fields[key] = label
            self._form.addRow(f"{title}:", label)
        layout.addLayout(self._form)

    def _build_audit_trail(self, content: QWidget, layout: QVBoxLayout) -> None:
        audit_title = QLabel("History", content)
        bold = QFont(audit_title.font())
        bold.setBold(True)
        audit_title.setFont(bold)
        layout.addSpacing(8)
        layout.addWidget(audit_title)
        self.audit_status = QLabel(content)
        self.audit_status.setWordWrap(True)
        self.audit_retry = QPushButton("&Retry", content)
        self.audit_retry.clicked.connect(self.audit_retry_requested)
        audit_status_row = QHBoxLayout()
        audit_status_row.addWidget(self.audit_status, 1)
        audit_status_row.addWidget(self.audit_retry)
        layout.addLayout(audit_status_row)
        # One two-line entry per event reads well in a narrow pane; a six-column table
        # did not (most columns ended up scrolled out of sight).
        self.audit_list = QListWidget(content)
        self.audit_list.setAccessibleName("Audit trail")
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
        self.name_label.setText(mailbox.display_name or "No display name")

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
            self._set_field("last_sync_at", "Never")
        else:
            self._set_field(
                "last_sync_at",
                f"{texts.relative_time(mailbox.last_sync_at, self._clock())} "
                f"({texts.local_time(mailbox.last_sync_at, seconds=True)})",
            )
        self._set_field(
            "last_error", texts.error_tooltip(mailbox.last_error) if mailbox.last_error else ""
        )
        if mailbox.attempt_id:
            expires = (
                f", expires at {texts.local_time(mailbox.attempt_expires_at)}"
                if mailbox.attempt_expires_at
                else ""
            )
            self._set_field("authorisation", f"In progress{expires}")
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
                key, f"{texts.local_time(moment)} ({texts.relative_time(moment, self._clock())})"
            )
        else:
            self._set_field(key, "")

    # -- audit trail -----------------------------------------------------------------------

    def set_audit_loading(self) -> None:
        """The audit trail is being loaded."""
        self.audit_list.clear()
        self.audit_status.setText("Loading the history...")
        self.audit_status.setVisible(True)
        self.audit_retry.setVisible(False)

    def set_audit_events(self, events: Sequence[AuditEvent]) -> None:
        """Show the audit trail, newest first."""
        self.audit_list.clear()
        for event in events:
            item = QListWidgetItem(audit_entry_text(event), self.audit_list)
            item.setToolTip(audit_entry_tooltip(event))
        self.audit_status.setText("" if events else "Nothing has been recorded yet.")
        self.audit_status.setVisible(not events)
        self.audit_retry.setVisible(False)

    def set_audit_error(self, text: str) -> None:
        """The audit trail could not be loaded."""
        self.audit_list.clear()
        self.audit_status.setText(f"The history could not be loaded. {text}")
        self.audit_status.setVisible(True)
        self.audit_retry.setVisible(True)

    def _on_action_clicked(self, action: MailboxAction) -> None:
        if self._mailbox is not None:
            self.action_requested.emit(action, self._mailbox)
