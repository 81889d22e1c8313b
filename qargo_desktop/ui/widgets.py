"""Small widgets the main window is built from.

- :class:`MessageBar`: routine errors and notices, without stacking repeats;
- :class:`PlaceholderPanel`: the designed loading, empty and error states;
- :class:`StatusBadgeDelegate`: draws a state as an icon-and-words badge;
- :class:`StatusFilterCombo`: chooses which states the table shows, with counts;
- :class:`FlowLayout`: lays buttons out in rows that wrap, so long translations and large
  text never push a pane wider than the window.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from PySide6.QtCore import (
    QCoreApplication,
    QEvent,
    QMargins,
    QModelIndex,
    QPersistentModelIndex,
    QPoint,
    QRect,
    QRectF,
    QSize,
    Qt,
    Signal,
)
from PySide6.QtGui import QBrush, QColor, QFontMetrics, QIcon, QPainter
from PySide6.QtWidgets import (
    QApplication,
    QComboBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLayout,
    QLayoutItem,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from qargo_desktop.core.models import LinkStatus
from qargo_desktop.ui import texts
from qargo_desktop.ui.i18n import translatable
from qargo_desktop.ui.theme import MessageLevel, Theme

log = logging.getLogger(__name__)

translate = QCoreApplication.translate

_MAX_MESSAGES = 4

_LEVEL_ICONS = {
    MessageLevel.INFO: QStyle.StandardPixmap.SP_MessageBoxInformation,
    MessageLevel.WARNING: QStyle.StandardPixmap.SP_MessageBoxWarning,
    MessageLevel.ERROR: QStyle.StandardPixmap.SP_MessageBoxCritical,
}

# The level in words: a screen reader hears it, so colour and icon never stand alone.
_LEVEL_NAMES = {
    MessageLevel.INFO: translatable("MessageBar", "Information"),
    MessageLevel.WARNING: translatable("MessageBar", "Warning"),
    MessageLevel.ERROR: translatable("MessageBar", "Error"),
}


@dataclass
class _Message:
    key: str
    level: MessageLevel
    text: str
    count: int
    frame: QFrame
    label: QLabel
    count_label: QLabel
    button: QPushButton
    action: Callable[[], None] | None = None


class MessageBar(QWidget):
    """A strip of routine messages above the table.

    The same message (same key) shown again does not add a row: the existing one is
    updated and counts the repeats. At most a few messages show; the oldest goes first.

    Signals:
        message_dismissed(str): The person closed the message with this key.

    Args:
        theme: Colours per message level.
        parent: The owning widget.
    """

    message_dismissed = Signal(str)

    def __init__(self, theme: Theme, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._theme = theme
        self._messages: dict[str, _Message] = {}
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.setSpacing(4)
        self.setVisible(False)

    def set_theme(self, theme: Theme) -> None:
        """Recolour the messages."""
        self._theme = theme
        for message in self._messages.values():
            self._style(message)

    def show_message(
        self,
        text: str,
        *,
        level: MessageLevel = MessageLevel.ERROR,
        key: str | None = None,
        action_text: str | None = None,
        on_action: Callable[[], None] | None = None,
    ) -> None:
        """Show a message, or update and count the one with the same key.

        Args:
            text: What happened and what to do.
            level: How serious it is.
            key: Identifies the message; repeats with the same key are counted, not
                stacked. Defaults to the text.
            action_text: Label of an optional button (``Retry``).
            on_action: Called when the button is pressed.
        """
        key = key or text
        message = self._messages.get(key)
        if message is None:
            message = self._create(key, level, text)
            self._messages[key] = message
            self._layout.insertWidget(0, message.frame)
            while len(self._messages) > _MAX_MESSAGES:
                oldest = next(iter(self._messages))
                self._remove(oldest)
        else:
            if message.text == text:
                message.count += 1
            else:
                # Same subject, news: show it afresh.
                message.count = 1
            message.text = text
            message.level = level
            message.label.setText(text)
        message.count_label.setText(
            translate("MessageBar", "(%n times)", None, message.count) if message.count > 1 else ""
        )
        message.count_label.setVisible(message.count > 1)
        message.frame.setAccessibleName(translate("MessageBar", _LEVEL_NAMES[level]))
        message.frame.setAccessibleDescription(text)
        message.action = on_action if action_text else None
        message.button.setText(action_text or "")
        message.button.setVisible(message.action is not None)
        self._style(message)
        self.setVisible(True)
        log.debug("Message bar: %s (%s, %d times)", key, level.value, message.count)

    def dismiss(self, key: str) -> None:
        """Remove the message with this key, if shown."""
        if key in self._messages:
            self._remove(key)

    def clear(self) -> None:
        """Remove every message."""
        for key in list(self._messages):
            self._remove(key)

    def messages(self) -> list[tuple[str, str, int]]:
        """``(key, text, count)`` of every message, newest first."""
        return [(m.key, m.text, m.count) for m in reversed(self._messages.values())]

    def has(self, key: str) -> bool:
        """Whether a message with this key is shown."""
        return key in self._messages

    def _create(self, key: str, level: MessageLevel, text: str) -> _Message:
        frame = QFrame(self)
        frame.setObjectName("messageBarEntry")
        frame.setFrameShape(QFrame.Shape.StyledPanel)
        row = QHBoxLayout(frame)
        row.setContentsMargins(10, 6, 6, 6)
        icon = QLabel(frame)
        icon.setObjectName("messageIcon")
        label = QLabel(text, frame)
        label.setWordWrap(True)
        label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        label.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        count_label = QLabel(frame)
        count_label.setVisible(False)
        button = QPushButton(frame)
        button.setVisible(False)
        button.clicked.connect(lambda: self._on_action_clicked(key))
        close = QToolButton(frame)
        close.setText("\u2715")
        close.setToolTip(translate("MessageBar", "Dismiss this message"))
        close.setAccessibleName(translate("MessageBar", "Dismiss message"))
        close.setAutoRaise(True)
        close.clicked.connect(lambda: self._on_close_clicked(key))
        row.addWidget(icon)
        row.addWidget(label, 1)
        row.addWidget(count_label)
        row.addWidget(button)
        row.addWidget(close)
        return _Message(key, level, text, 1, frame, label, count_label, button)

    def _style(self, message: _Message) -> None:
        colours = self._theme.message_colours(message.level)
        message.frame.setStyleSheet(
            f"QFrame#messageBarEntry {{ background: {colours.background}; "
            f"border: 1px solid {colours.foreground}; border-radius: 4px; }}"
            f"QFrame#messageBarEntry QLabel {{ color: {colours.foreground}; }}"
        )
        icon_label = message.frame.findChild(QLabel, "messageIcon")
        if isinstance(icon_label, QLabel):
            icon = self.style().standardIcon(_LEVEL_ICONS[message.level])
            icon_label.setPixmap(icon.pixmap(QSize(20, 20)))

    def _on_action_clicked(self, key: str) -> None:
        message = self._messages.get(key)
        if message is not None and message.action is not None:
            message.action()

    def _on_close_clicked(self, key: str) -> None:
        self._remove(key)
        self.message_dismissed.emit(key)

    def _remove(self, key: str) -> None:
        message = self._messages.pop(key)
        self._layout.removeWidget(message.frame)
        message.frame.deleteLater()
        if not self._messages:
            self.setVisible(False)


class PlaceholderPanel(QWidget):
    """What the table area shows when there is no table to show.

    One panel, several designed states: loading (with progress), empty, nothing
    matches the filter, and could not load (with Retry).

    Signals:
        action_triggered(): The panel's button was pressed.
    """

    action_triggered = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("placeholderPanel")
        layout = QVBoxLayout(self)
        layout.addStretch(2)
        self._icon = QLabel(self)
        self._icon.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._title = QLabel(self)
        self._title.setObjectName("placeholderTitle")
        self._title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        font = self._title.font()
        font.setPointSizeF(font.pointSizeF() * 1.3)
        font.setBold(True)
        self._title.setFont(font)
        self._text = QLabel(self)
        self._text.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._text.setWordWrap(True)
        self._text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._progress = QProgressBar(self)
        self._progress.setRange(0, 0)
        self._progress.setTextVisible(False)
        self._progress.setMaximumWidth(280)
        self._button = QPushButton(self)
        self._button.clicked.connect(self.action_triggered)
        for widget in (self._icon, self._title, self._text):
            layout.addWidget(widget)
        layout.addWidget(self._progress, 0, Qt.AlignmentFlag.AlignHCenter)
        layout.addWidget(self._button, 0, Qt.AlignmentFlag.AlignHCenter)
        layout.addStretch(3)

    @property
    def title(self) -> str:
        """The title shown."""
        return self._title.text()

    @property
    def text(self) -> str:
        """The explanation shown."""
        return self._text.text()

    @property
    def button_text(self) -> str:
        """The button's label ('' when hidden)."""
        return self._button.text() if not self._button.isHidden() else ""

    @property
    def button(self) -> QPushButton:
        """The panel's button (for the window's Tab order)."""
        return self._button

    def show_state(
        self,
        title: str,
        text: str = "",
        *,
        icon: QIcon | None = None,
        busy: bool = False,
        button: str | None = None,
    ) -> None:
        """Show one state: a title, an explanation, a busy bar and/or a button."""
        self._title.setText(title)
        self._text.setText(text)
        self._text.setVisible(bool(text))
        if icon is not None and not icon.isNull():
            self._icon.setPixmap(icon.pixmap(QSize(48, 48)))
            self._icon.setVisible(True)
        else:
            self._icon.setVisible(False)
        self._progress.setVisible(busy)
        self._button.setVisible(button is not None)
        if button is not None:
            self._button.setText(button)
        self.setAccessibleName(title)
        self.setAccessibleDescription(text)

    def set_text(self, text: str) -> None:
        """Change only the explanation (loading progress)."""
        self._text.setText(text)
        self._text.setVisible(bool(text))


class StatusBadgeDelegate(QStyledItemDelegate):
    """Draws the status column as a rounded badge: the state's icon and words on its colour."""

    _PADDING = 7
    _ICON = 16
    _GAP = 6

    def paint(
        self,
        painter: QPainter,
        option: QStyleOptionViewItem,
        index: QModelIndex | QPersistentModelIndex,
    ) -> None:
        """Paint the cell (selection first, then the badge)."""
        opt = QStyleOptionViewItem(option)
        self.initStyleOption(opt, index)
        widget = opt.widget
        style = widget.style() if widget is not None else QApplication.style()
        text = str(index.data(Qt.ItemDataRole.DisplayRole) or "")
        icon = index.data(Qt.ItemDataRole.DecorationRole)
        background = index.data(Qt.ItemDataRole.BackgroundRole)
        foreground = index.data(Qt.ItemDataRole.ForegroundRole)

        # The cell itself: selection and focus only; the state colour goes on the badge.
        opt.text = ""
        opt.icon = QIcon()
        opt.features &= ~QStyleOptionViewItem.ViewItemFeature.HasDecoration
        opt.backgroundBrush = QBrush()
        style.drawControl(QStyle.ControlElement.CE_ItemViewItem, opt, painter, widget)

        rect = opt.rect.adjusted(4, 3, -4, -3)
        metrics = QFontMetrics(opt.font)
        room = max(0, rect.width() - self._ICON - self._GAP - 2 * self._PADDING)
        natural = metrics.horizontalAdvance(text)
        # elidedText() elides a text given exactly its own advance, so only ask when short.
        shown = (
            text if natural <= room else metrics.elidedText(text, Qt.TextElideMode.ElideRight, room)
        )
        text_width = min(natural, room)
        width = min(rect.width(), self._ICON + self._GAP + text_width + 2 * self._PADDING)
        badge = QRectF(rect.left(), rect.top(), width, rect.height())

        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        if isinstance(background, QColor):
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(background)
            radius = min(badge.height() / 2, 9.0)
            painter.drawRoundedRect(badge, radius, radius)
        icon_top = rect.top() + (rect.height() - self._ICON) // 2
        icon_rect = QRect(rect.left() + self._PADDING, icon_top, self._ICON, self._ICON)
        if isinstance(icon, QIcon) and not icon.isNull():
            icon.paint(painter, icon_rect)
        text_rect = QRect(
            icon_rect.right() + 1 + self._GAP, rect.top(), text_width + 4, rect.height()
        )
        painter.setPen(foreground if isinstance(foreground, QColor) else opt.palette.text().color())
        painter.setFont(opt.font)
        painter.drawText(
            text_rect, int(Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft), shown
        )
        painter.restore()

    def sizeHint(  # noqa: N802 (Qt name)
        self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex
    ) -> QSize:
        """Room for the badge."""
        opt = QStyleOptionViewItem(option)
        self.initStyleOption(opt, index)
        metrics = QFontMetrics(opt.font)
        text = str(index.data(Qt.ItemDataRole.DisplayRole) or "")
        height = max(metrics.height(), self._ICON) + 12
        return QSize(self.width_for(metrics, text), height)

    @classmethod
    def width_for(cls, metrics: QFontMetrics, text: str) -> int:
        """The cell width that shows a badge with ``text`` in full."""
        return metrics.horizontalAdvance(text) + cls._ICON + cls._GAP + 2 * cls._PADDING + 12


# The filter's choices: everything, what needs someone's attention, then each state.
NEEDS_ATTENTION = frozenset(
    {
        LinkStatus.LINK_FAILED,
        LinkStatus.REAUTHORISATION_REQUIRED,
        LinkStatus.UNLINKED,
        LinkStatus.UNKNOWN,
    }
)


class StatusFilterCombo(QComboBox):
    """Chooses the states the table shows, each with how many mailboxes are in it.

    Signals:
        statuses_changed(object): The chosen states, a ``frozenset`` (empty: all).

    Args:
        theme: Icons per state.
        parent: The owning widget.
    """

    statuses_changed = Signal(object)

    def __init__(self, theme: Theme, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("statusFilter")
        # Sized for the usual entries; the long state names still show in full in the list.
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(24)
        self._statuses: list[frozenset[LinkStatus]] = [
            frozenset(),
            NEEDS_ATTENTION,
            *(frozenset({s}) for s in texts.STATUS_ORDER),
        ]
        self._choices: list[tuple[str, frozenset[LinkStatus]]] = []
        for _statuses in self._statuses:
            self.addItem("")
        self._counts = dict.fromkeys(LinkStatus, 0)
        self._retranslate()
        self.set_theme(theme)
        self.currentIndexChanged.connect(self._on_current_index_changed)

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 (Qt name)
        """Put the choices up again when the language changes."""
        if event.type() == QEvent.Type.LanguageChange:
            self._retranslate()
        super().changeEvent(event)

    def _retranslate(self) -> None:
        self.setAccessibleName(translate("StatusFilterCombo", "Status filter"))
        self.setToolTip(translate("StatusFilterCombo", "Show only mailboxes in a state"))
        self.setAccessibleDescription(self.toolTip())
        self._choices = [
            (translate("StatusFilterCombo", "All states"), self._statuses[0]),
            (translate("StatusFilterCombo", "Needs attention"), self._statuses[1]),
            *((texts.status_label(next(iter(s))), s) for s in self._statuses[2:]),
        ]
        self.set_counts(self._counts)

    def set_theme(self, theme: Theme) -> None:
        """Use this theme's state icons."""
        for row, (_label, statuses) in enumerate(self._choices):
            if len(statuses) == 1:
                self.setItemIcon(row, theme.status_icon(next(iter(statuses))))

    def set_counts(self, counts: dict[LinkStatus, int]) -> None:
        """Show how many mailboxes are in each choice."""
        self._counts = dict(counts)
        for row, (label, statuses) in enumerate(self._choices):
            total = sum(counts.values()) if not statuses else sum(counts[s] for s in statuses)
            self.setItemText(
                row,
                translate("StatusFilterCombo", "{label} ({count})").format(
                    label=label, count=texts.number(total)
                ),
            )
            self.setItemData(
                row,
                translate("StatusFilterCombo", "{label}: {count}").format(
                    label=label, count=texts.mailbox_count(total)
                ),
                Qt.ItemDataRole.AccessibleTextRole,
            )

    def selected_statuses(self) -> frozenset[LinkStatus]:
        """The chosen states (empty: all)."""
        return self._choices[max(0, self.currentIndex())][1]

    def select(self, statuses: Iterable[LinkStatus]) -> None:
        """Choose the entry that shows exactly these states (all when none match)."""
        wanted = frozenset(statuses)
        row = next((i for i, (_l, s) in enumerate(self._choices) if s == wanted), 0)
        self.setCurrentIndex(row)

    def _on_current_index_changed(self, _row: int) -> None:
        self.statuses_changed.emit(self.selected_statuses())


class FlowLayout(QLayout):
    """Places widgets left to right and wraps them onto the next row when out of room.

    Args:
        parent: The widget it lays out, if any.
        spacing: Room between items, across and down.
    """

    def __init__(self, parent: QWidget | None = None, spacing: int = 6) -> None:
        super().__init__(parent)
        self._items: list[QLayoutItem] = []
        self._gap = spacing
        self.setContentsMargins(0, 0, 0, 0)

    def addItem(self, item: QLayoutItem) -> None:  # noqa: N802 (Qt name)
        """Take an item (addWidget() calls this)."""
        self._items.append(item)

    def count(self) -> int:
        """How many items."""
        return len(self._items)

    def itemAt(self, index: int) -> QLayoutItem | None:  # noqa: N802 (Qt name)
        """The item at ``index``, if any."""
        return self._items[index] if 0 <= index < len(self._items) else None

    def takeAt(self, index: int) -> QLayoutItem | None:  # noqa: N802 (Qt name)
        """Remove and return the item at ``index``."""
        return self._items.pop(index) if 0 <= index < len(self._items) else None

    def expandingDirections(self) -> Qt.Orientation:  # noqa: N802 (Qt name)
        """It grows in neither direction by itself."""
        return Qt.Orientation(0)

    def hasHeightForWidth(self) -> bool:  # noqa: N802 (Qt name)
        """The height depends on the width (rows wrap)."""
        return True

    def heightForWidth(self, width: int) -> int:  # noqa: N802 (Qt name)
        """The height needed at ``width``."""
        return self._arrange(QRect(0, 0, width, 0), move=False)

    def setGeometry(self, rect: QRect) -> None:  # noqa: N802 (Qt name)
        """Place the items inside ``rect``."""
        super().setGeometry(rect)
        self._arrange(rect, move=True)

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt name)
        """Everything on one row."""
        visible = [item for item in self._items if not item.isEmpty()]
        if not visible:
            return QSize(0, 0)
        width = sum(item.sizeHint().width() for item in visible)
        width += self._gap * (len(visible) - 1)
        height = max(item.sizeHint().height() for item in visible)
        return QSize(width, height) + _margin_size(self.contentsMargins())

    def minimumSize(self) -> QSize:  # noqa: N802 (Qt name)
        """As narrow as the widest single item."""
        size = QSize(0, 0)
        for item in self._items:
            if not item.isEmpty():
                size = size.expandedTo(item.minimumSize())
        return size + _margin_size(self.contentsMargins())

    def _arrange(self, rect: QRect, *, move: bool) -> int:
        margins = self.contentsMargins()
        area = rect.marginsRemoved(margins)
        x, y, row_height = area.x(), area.y(), 0
        for item in self._items:
            if item.isEmpty():
                continue
            hint = item.sizeHint()
            if x > area.x() and x + hint.width() > area.right() + 1:
                x = area.x()
                y += row_height + self._gap
                row_height = 0
            if move:
                item.setGeometry(QRect(QPoint(x, y), hint))
            x += hint.width() + self._gap
            row_height = max(row_height, hint.height())
        return y + row_height - rect.y() + margins.bottom()


def _margin_size(margins: QMargins) -> QSize:
    return QSize(margins.left() + margins.right(), margins.top() + margins.bottom())
