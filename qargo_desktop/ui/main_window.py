"""The main window: sign-in, the mailbox list, its detail pane and the status bar.

The window never waits on the network, the keyring or the token cache: every such call
runs in a :class:`~qargo_desktop.ui.tasks.TaskRunner` task and reports back. The link
actions themselves (authorise, reset, self-test, ...) are carried out elsewhere; the
window only asks for them through its ``*_requested`` signals and takes back the
changed mailbox through :meth:`MainWindow.upsert_mailbox`.
"""

from __future__ import annotations

import enum
import itertools
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import (
    QByteArray,
    QCoreApplication,
    QEvent,
    QItemSelectionModel,
    QModelIndex,
    QPoint,
    QSettings,
    Qt,
    QTimer,
    QUrl,
    Signal,
)
from PySide6.QtGui import QAction, QCloseEvent, QDesktopServices, QGuiApplication, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMenu,
    QProgressBar,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from qargo_desktop import APP_DISPLAY_NAME
from qargo_desktop.core.config import app_paths
from qargo_desktop.core.errors import (
    ApiError,
    Cancelled,
    NetworkError,
    QargoError,
    SignInRequired,
)
from qargo_desktop.core.models import Mailbox, MailboxAction
from qargo_desktop.ui import i18n, texts
from qargo_desktop.ui.i18n import translatable
from qargo_desktop.ui.mailbox_model import (
    COLUMN_ADDRESS,
    COLUMN_DISPLAY_NAME,
    COLUMN_LAST_SYNC,
    COLUMN_STATUS,
    MailboxFilterProxyModel,
    MailboxTableModel,
)
from qargo_desktop.ui.pages import FirstRunPage, SignInPage, StartingPage
from qargo_desktop.ui.tasks import Progress, TaskHandle, TaskRunner
from qargo_desktop.ui.theme import MessageLevel, Theme, app_icon, apply_colour_scheme

if TYPE_CHECKING:
    # Imported where used: the first paint does not need them (the services bring requests
    # and msal).
    from qargo_desktop.core.api import MailboxList
    from qargo_desktop.core.config import Settings
    from qargo_desktop.core.services import AdminSession, Services
    from qargo_desktop.ui import dialogs
    from qargo_desktop.ui.device_code_dialog import DeviceCodeDialog
    from qargo_desktop.ui.widgets import StatusBadgeDelegate

log = logging.getLogger(__name__)

translate = QCoreApplication.translate

BrowserOpener = Callable[[str], bool]
FolderOpener = Callable[[Path], bool]

_DEFAULT_WIDTHS = {
    COLUMN_ADDRESS: 250,
    COLUMN_DISPLAY_NAME: 120,
    COLUMN_STATUS: 325,
    COLUMN_LAST_SYNC: 95,
}
_AUDIT_DELAY_MS = 250
_CLOCK_TICK_MS = 30_000
_STATE_VERSION = 1

MESSAGE_REFRESH = "refresh"
MESSAGE_SIGN_IN = "sign-in"


class ConnectionState(enum.Enum):
    """What the status bar says about the connection to Qargo (English; see :attr:`text`)."""

    STARTING = translatable("ConnectionState", "Starting...")
    SIGNING_IN = translatable("ConnectionState", "Signing in...")
    SIGNED_OUT = translatable("ConnectionState", "Signed out")
    ONLINE = translatable("ConnectionState", "Online")
    OFFLINE = translatable("ConnectionState", "Offline")
    SIGN_IN_EXPIRED = translatable("ConnectionState", "Sign-in expired")

    @property
    def text(self) -> str:
        """The state in the window's language."""
        return translate("ConnectionState", self.value)


class Page(enum.IntEnum):
    """The window's whole-window pages."""

    STARTING = 0
    FIRST_RUN = 1
    SIGN_IN = 2
    MAILBOXES = 3


def _utc_now() -> datetime:
    return datetime.now(UTC)


class MainWindow(QMainWindow):
    """The app's window.

    Signals:
        authorise_requested(object): Authorise API for a :class:`Mailbox`.
        reauthorise_requested(object): Reauthorise API for a mailbox.
        reset_requested(object): Reset API link status of a mailbox.
        selftest_requested(object): Test the mail flow of a mailbox.
        remove_requested(object): Remove a mailbox from the organisation's list.
        cancel_authorisation_requested(object): Cancel the running attempt of a mailbox.
        add_requested(): Add a mailbox.
        sandbox_requested(): The person chose the built-in sandbox on the first-run page.
        signed_in(object): An :class:`AdminSession` started (silently or interactively).
        signed_out(): The admin signed out.
        refresh_finished(object): A refresh ended; ``None`` or the error.
        diagnostics_requested(): The person chose Help > Diagnostics.
        device_authorise_requested(object): Authorise (or reauthorise) a mailbox with a
            code on another device instead of this computer's browser.
        settings_changed(object): Preferences saved new :class:`Settings` (already applied).

    Args:
        settings: The app's settings (refresh interval); ``None`` for defaults.
        window_state: Where geometry, splitter and columns are remembered.
        theme: Colours and icons; the platform's light or dark theme by default.
        clock: Returns "now" (tests pass a fixed one).
        build_now: Build every part now. ``False`` builds only what the first paint shows
            (the frame, the starting page, the menu bar's titles and the status bar), so
            that the window appears sooner; :meth:`finish_building` builds the rest, and
            must be called before anything else is asked of the window.
    """

    authorise_requested = Signal(object)
    reauthorise_requested = Signal(object)
    reset_requested = Signal(object)
    selftest_requested = Signal(object)
    remove_requested = Signal(object)
    cancel_authorisation_requested = Signal(object)
    add_requested = Signal()
    sandbox_requested = Signal()
    signed_in = Signal(object)
    signed_out = Signal()
    refresh_finished = Signal(object)
    diagnostics_requested = Signal()
    device_authorise_requested = Signal(object)
    settings_changed = Signal(object)

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        window_state: QSettings | None = None,
        theme: Theme | None = None,
        clock: Callable[[], datetime] = _utc_now,
        build_now: bool = True,
    ) -> None:
        super().__init__()
        self.setWindowTitle(APP_DISPLAY_NAME)
        self._icon = app_icon()
        self.setWindowIcon(self._icon)
        self.setObjectName("mainWindow")
        self._settings = settings
        self._state = window_state if window_state is not None else QSettings()
        self._theme_preference = settings.theme if settings is not None else "system"
        self._theme = theme or Theme.for_preference(self._theme_preference)
        self._clock = clock

        self.tasks = TaskRunner(self)
        #: Opens the sign-in page; ``None`` means the system browser. Tests set a script.
        self.browser_opener: BrowserOpener | None = None
        #: Opens a folder in the file manager (Help > Open log folder). Tests replace it.
        self.folder_opener: FolderOpener = _open_folder

        self._services: Services | None = None
        self._session: AdminSession | None = None
        self._environment = ""
        self._etag: str | None = None
        self._refreshed_at: datetime | None = None
        self._checked_at: datetime | None = None
        self._stale = False
        self._loading = False
        self._loaded_once = False
        self._load_error: QargoError | None = None
        self._loaded_count = 0
        # Pages of a refresh not yet in the model, and whether the model was empty when the
        # refresh began (see _on_page_loaded and _on_refresh_finished).
        self._pending_pages: list[Mailbox] = []
        self._refresh_started_empty = False
        self._connection = ConnectionState.STARTING
        self._refresh_handle: TaskHandle | None = None
        self._sign_in_handle: TaskHandle | None = None
        self._audit_handle: TaskHandle | None = None
        self._sign_in_dialog: dialogs.SignInWaitDialog | None = None
        self._device_dialog: DeviceCodeDialog | None = None
        self._selected_id: str | None = None
        self._selected_etag: str | None = None
        self._placeholder_action: Callable[[], None] | None = None
        # A mailbox to select once the list has it (--select, or a second start's request).
        self._pending_select: str | None = None
        self._not_super_admin: str | None = None  # who signed in without the role

        self._built = False
        self._build_frame()
        self._retranslate()
        self.show_starting(translate("MainWindow", "Starting..."))
        if build_now:
            self.finish_building()

    # -- construction ---------------------------------------------------------------------

    def _build_frame(self) -> None:
        """What the first paint shows: the starting page, the menu bar, the status bar."""
        self.pages = QStackedWidget(self)
        self.setCentralWidget(self.pages)
        self.starting_page = StartingPage(self._icon, self)
        self.pages.addWidget(self.starting_page)
        self.pages.currentChanged.connect(self._on_page_changed)
        # The menus' titles now, their actions later: a menu bar added after the first paint
        # would push the window's contents down.
        menu = self.menuBar()
        self.file_menu = menu.addMenu("")
        self.view_menu = menu.addMenu("")
        self.mailbox_menu = menu.addMenu("")
        self.help_menu = menu.addMenu("")
        self._build_status_bar()
        self._restore_geometry()

    @property
    def built(self) -> bool:
        """Whether every part of the window is built (see :meth:`finish_building`)."""
        return self._built

    def finish_building(self) -> None:
        """Build what the first paint does not show (once; a window built now has it all)."""
        if self._built:
            return
        self.model = MailboxTableModel(self._theme, clock=self._clock, parent=self)
        self.proxy = MailboxFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self._build_pages()
        self._build_mailbox_page()
        self._build_actions()
        self._build_timers()
        self._connect_model()
        self._restore_layout()

        from qargo_desktop.ui.link_actions import LinkActions

        self.link_actions = LinkActions(self)
        from qargo_desktop.ui.support_windows import SupportWindows

        #: Help > Diagnostics and Help > Show log: one window of each.
        self.support = SupportWindows(self)

        hints = QGuiApplication.styleHints()
        hints.colorSchemeChanged.connect(self._on_color_scheme_changed)
        self._set_tab_order()
        self._built = True
        self._retranslate()
        self._update_actions()

    def _build_pages(self) -> None:
        self.first_run_page = FirstRunPage(self._icon, self)
        self.sign_in_page = SignInPage(self._icon, self)
        self.mailbox_page = QWidget(self)
        for page in (self.first_run_page, self.sign_in_page, self.mailbox_page):
            self.pages.addWidget(page)
        self.first_run_page.sandbox_requested.connect(self.sandbox_requested)
        self.sign_in_page.sign_in_requested.connect(self.start_interactive_sign_in)
        self.sign_in_page.retry_requested.connect(self.start_silent_sign_in)
        self.sign_in_page.switch_account_requested.connect(self._on_switch_account_requested)
        self.sign_in_page.sign_out_requested.connect(self.sign_out)
        self.sign_in_page.device_sign_in_requested.connect(self.start_device_sign_in)

    def _build_mailbox_page(self) -> None:
        # Imported here: the first paint does not show the mailbox page.
        from qargo_desktop.ui.detail_pane import DetailPane
        from qargo_desktop.ui.widgets import MessageBar, PlaceholderPanel

        layout = QVBoxLayout(self.mailbox_page)
        layout.setContentsMargins(8, 8, 8, 0)

        self.message_bar = MessageBar(self._theme, self.mailbox_page)
        layout.addWidget(self.message_bar)
        layout.addLayout(self._build_toolbar())

        self.splitter = QSplitter(Qt.Orientation.Horizontal, self.mailbox_page)
        self.splitter.setObjectName("mainSplitter")
        self.splitter.setChildrenCollapsible(False)
        self.table_stack = QStackedWidget(self.splitter)
        self._build_table()
        self.placeholder = PlaceholderPanel(self.table_stack)
        self.placeholder.action_triggered.connect(self._on_placeholder_action_triggered)
        self.table_stack.addWidget(self.table)
        self.table_stack.addWidget(self.placeholder)
        self.detail_pane = DetailPane(self._theme, self.splitter, clock=self._clock)
        self.detail_pane.action_requested.connect(self._on_action_requested)
        self.detail_pane.audit_retry_requested.connect(self._load_audit_trail)
        self.splitter.addWidget(self.table_stack)
        self.splitter.addWidget(self.detail_pane)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)
        self.splitter.setSizes([930, 390])
        layout.addWidget(self.splitter, 1)

    def _build_toolbar(self) -> QHBoxLayout:
        toolbar = QHBoxLayout()
        self.search_box = QLineEdit(self.mailbox_page)
        self.search_box.setObjectName("searchBox")
        self.search_box.setClearButtonEnabled(True)
        self.search_box.setMinimumWidth(180)
        self.search_box.textChanged.connect(self._on_search_text_changed)
        from qargo_desktop.ui.widgets import StatusFilterCombo

        self.status_filter = StatusFilterCombo(self._theme, self.mailbox_page)
        self.status_filter.statuses_changed.connect(self._on_statuses_changed)
        self.status_caption = QLabel(self.mailbox_page)
        self.status_caption.setBuddy(self.status_filter)
        self.add_button = QPushButton(self.mailbox_page)
        self.add_button.setObjectName("addButton")
        self.add_button.clicked.connect(self.add_requested)
        self.refresh_button = QPushButton(self.mailbox_page)
        self.refresh_button.setObjectName("refreshButton")
        self.refresh_button.clicked.connect(self.refresh)
        toolbar.addWidget(self.search_box, 2)
        toolbar.addSpacing(12)
        toolbar.addWidget(self.status_caption)
        toolbar.addWidget(self.status_filter)
        toolbar.addStretch(1)
        toolbar.addWidget(self.add_button)
        toolbar.addWidget(self.refresh_button)
        return toolbar

    def _build_table(self) -> None:
        self.table = QTableView(self.table_stack)
        self.table.setObjectName("mailboxTable")
        self.table.setModel(self.proxy)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSortingEnabled(True)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.table.setShowGrid(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideRight)
        # Tab leaves the table for the detail pane; the arrow keys move between rows.
        self.table.setTabKeyNavigation(False)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.table.verticalHeader().setDefaultSectionSize(30)
        header = self.table.horizontalHeader()
        header.setStretchLastSection(True)
        header.setSectionsMovable(True)
        header.setHighlightSections(False)
        for column, width in _DEFAULT_WIDTHS.items():
            header.resizeSection(column, width)
        self.table.sortByColumn(COLUMN_STATUS, Qt.SortOrder.AscendingOrder)
        from qargo_desktop.ui.widgets import StatusBadgeDelegate

        self._badge_delegate: StatusBadgeDelegate = StatusBadgeDelegate(self.table)
        self.table.setItemDelegateForColumn(COLUMN_STATUS, self._badge_delegate)
        selection = self.table.selectionModel()
        selection.currentRowChanged.connect(self._on_current_row_changed)

    def _build_actions(self) -> None:
        self.refresh_action = QAction(self)
        self.refresh_action.setShortcut(QKeySequence(Qt.Key.Key_F5))
        self.refresh_action.triggered.connect(self.refresh)
        self.add_action = QAction(self)
        self.add_action.setShortcut(QKeySequence(QKeySequence.StandardKey.New))
        self.add_action.triggered.connect(self.add_requested)
        self.preferences_action = QAction(self)
        self.preferences_action.setShortcut(QKeySequence("Ctrl+,"))
        self.preferences_action.setMenuRole(QAction.MenuRole.PreferencesRole)
        self.preferences_action.triggered.connect(self.edit_preferences)
        self.sign_out_action = QAction(self)
        self.sign_out_action.triggered.connect(self.sign_out)
        self.quit_action = QAction(self)
        self.quit_action.setShortcut(QKeySequence(QKeySequence.StandardKey.Quit))
        self.quit_action.setMenuRole(QAction.MenuRole.QuitRole)
        self.quit_action.triggered.connect(self.close)
        for action in (
            self.refresh_action,
            self.add_action,
            None,
            self.preferences_action,
            None,
            self.sign_out_action,
            None,
            self.quit_action,
        ):
            if action is None:
                self.file_menu.addSeparator()
            else:
                self.file_menu.addAction(action)

        self.find_action = QAction(self)
        self.find_action.setShortcut(QKeySequence(QKeySequence.StandardKey.Find))
        self.find_action.triggered.connect(self.focus_search)
        self.clear_action = QAction(self)
        self.clear_action.triggered.connect(self.clear_filters)
        self.view_menu.addAction(self.find_action)
        self.view_menu.addAction(self.clear_action)

        self._build_mailbox_menu(self.mailbox_menu)

        self.diagnostics_action = QAction(self)
        self.diagnostics_action.triggered.connect(self.diagnostics_requested)
        self.log_action = QAction(self)
        self.log_action.setObjectName("showLogAction")
        self.log_folder_action = QAction(self)
        self.log_folder_action.triggered.connect(self.open_log_folder)
        self.about_action = QAction(self)
        self.about_action.setMenuRole(QAction.MenuRole.AboutRole)
        self.about_action.triggered.connect(self._on_about_triggered)
        self.help_menu.addAction(self.diagnostics_action)
        self.help_menu.addAction(self.log_action)
        self.help_menu.addAction(self.log_folder_action)
        self.help_menu.addSeparator()
        self.help_menu.addAction(self.about_action)
        self._update_actions()

    def _build_mailbox_menu(self, mailbox_menu: QMenu) -> None:
        """Every action on the selected mailbox, with its shortcut, in a menu and a context menu."""
        shortcuts = {
            MailboxAction.AUTHORISE: QKeySequence("Ctrl+L"),
            MailboxAction.REAUTHORISE: QKeySequence("Ctrl+Shift+L"),
            MailboxAction.RESET: QKeySequence("Ctrl+Shift+R"),
            MailboxAction.SELFTEST: QKeySequence("Ctrl+T"),
            MailboxAction.CANCEL: QKeySequence(),
            MailboxAction.REMOVE: QKeySequence(QKeySequence.StandardKey.Delete),
        }
        self.mailbox_actions: dict[MailboxAction, QAction] = {}
        for action_kind, shortcut in shortcuts.items():
            action = QAction(self)
            action.setObjectName(f"mailboxAction_{action_kind.value}")
            action.setShortcut(shortcut)
            action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            action.triggered.connect(
                lambda _checked=False, kind=action_kind: self._on_menu_action(kind)
            )
            self.mailbox_actions[action_kind] = action
            mailbox_menu.addAction(action)
        # For remote sessions where this computer's browser cannot be used.
        self.device_authorise_action = QAction(self)
        self.device_authorise_action.setObjectName("mailboxAction_authorise_device")
        self.device_authorise_action.triggered.connect(self._on_device_authorise_triggered)
        mailbox_menu.insertAction(
            self.mailbox_actions[MailboxAction.RESET], self.device_authorise_action
        )
        mailbox_menu.addSeparator()
        self.copy_address_action = QAction(self)
        self.copy_address_action.setShortcut(QKeySequence(QKeySequence.StandardKey.Copy))
        self.copy_address_action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self.copy_address_action.triggered.connect(self.copy_selected_address)
        self.table.addAction(self.copy_address_action)
        mailbox_menu.addAction(self.copy_address_action)
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.customContextMenuRequested.connect(self._on_table_context_menu_requested)
        self.detail_pane.set_shortcuts(
            {kind: action.shortcut() for kind, action in self.mailbox_actions.items()}
        )
        self._update_mailbox_actions()

    def _set_tab_order(self) -> None:
        """Search, state filter, the table, the detail pane's actions, then the buttons."""
        chain: list[QWidget] = [
            self.search_box,
            self.status_filter,
            self.table,
            self.placeholder.button,
            *self.detail_pane.focus_chain(),
            self.add_button,
            self.refresh_button,
        ]
        for first, second in itertools.pairwise(chain):
            QWidget.setTabOrder(first, second)

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 (Qt name)
        """Put every word up again when the language changes."""
        if event.type() == QEvent.Type.LanguageChange:
            self._retranslate()
        super().changeEvent(event)

    def _retranslate(self) -> None:
        """Set every word the window shows, in the language installed now."""
        if not hasattr(self, "connection_label"):
            return  # Qt can send LanguageChange while the window is still being built
        self.file_menu.setTitle(translate("MainWindow", "&File"))
        self.view_menu.setTitle(translate("MainWindow", "&View"))
        self.mailbox_menu.setTitle(translate("MainWindow", "&Mailbox"))
        self.help_menu.setTitle(translate("MainWindow", "&Help"))
        self.environment_label.setToolTip(
            translate(
                "MainWindow",
                "Running against the built-in sandbox: a simulated organisation on this computer.",
            )
        )
        self._update_environment_texts()
        self._update_identity_labels()
        self._set_connection(self._connection)
        self._update_refreshed_label()
        if not self._built:
            return  # the rest is said once it is built
        for action, text, tip in (
            (self.refresh_action, translate("MainWindow", "&Refresh"),
             translate("MainWindow", "Load the list again")),
            (self.add_action, translate("MainWindow", "&Add mailbox..."),
             translate("MainWindow", "Add a Microsoft 365 mailbox for Qargo to read and send")),
            (self.preferences_action, translate("MainWindow", "&Preferences..."),
             translate("MainWindow", "Language, theme, refresh, sign-in time and network")),
            (self.sign_out_action, translate("MainWindow", "Sign &out"),
             translate("MainWindow", "Forget your sign-in on this computer")),
            (self.quit_action, translate("MainWindow", "&Quit"),
             translate("MainWindow", "Close the window and stop the app")),
            (self.find_action, translate("MainWindow", "&Find"),
             translate("MainWindow", "Search by address or name")),
            (self.clear_action, translate("MainWindow", "&Clear search and filter"),
             translate("MainWindow", "Show every mailbox again")),
            (self.copy_address_action, translate("MainWindow", "&Copy address"),
             translate("MainWindow", "Copy the selected mailbox's address")),
            (self.diagnostics_action, translate("MainWindow", "&Diagnostics..."),
             translate("MainWindow", "Check settings, network, sign-ins and the services")),
            (self.log_action, translate("MainWindow", "Show &log"),
             translate("MainWindow", "The app's recent log, live, in a window of its own")),
            (self.device_authorise_action,
             translate("MainWindow", "Authorise on another &device..."),
             translate("MainWindow", "Sign in as the mailbox with a code, on a phone or "
                       "another computer, when this computer's browser cannot be used")),
            (self.log_folder_action, translate("MainWindow", "Open log &folder"),
             translate("MainWindow", "Show the app's log files in the file manager")),
            (self.about_action,
             translate("MainWindow", "&About {app}").format(app=APP_DISPLAY_NAME),
             translate("MainWindow", "Version, licences and where the app connects")),
        ):  # fmt: skip
            _set_action_text(action, text, tip)
        for kind, action in self.mailbox_actions.items():
            _set_action_text(action, texts.action_menu_text(kind), texts.action_label(kind))

        self.search_box.setPlaceholderText(
            translate("MainWindow", "Search by address or name ({shortcut})").format(
                shortcut=_native(self.find_action.shortcut())
            )
        )
        self.search_box.setToolTip(self.find_action.toolTip())
        self.search_box.setAccessibleName(translate("MainWindow", "Search mailboxes"))
        self.search_box.setAccessibleDescription(
            translate("MainWindow", "Shows only mailboxes whose address or name contains the text")
        )
        self.status_caption.setText(translate("MainWindow", "&Status:"))
        self.add_button.setText(translate("MainWindow", "&Add mailbox..."))
        self.add_button.setToolTip(self.add_action.toolTip())
        self.add_button.setAccessibleDescription(self.add_action.toolTip())
        self.refresh_button.setText(translate("MainWindow", "&Refresh"))
        self.refresh_button.setToolTip(self.refresh_action.toolTip())
        self.refresh_button.setAccessibleDescription(self.refresh_action.toolTip())
        self.table.setAccessibleName(translate("MainWindow", "Mailboxes"))
        self.table.setAccessibleDescription(
            translate(
                "MainWindow",
                "The organisation's linked mailboxes. Arrow keys choose one; its details and "
                "actions are in the pane beside the list. The context menu key lists its actions.",
            )
        )
        header = self.table.horizontalHeader()
        header.setAccessibleName(translate("MainWindow", "Columns"))
        header.setAccessibleDescription(
            translate("MainWindow", "Choose a column to sort the list by it")
        )
        self.load_progress.setAccessibleName(translate("MainWindow", "Loading the list"))
        self.model.retranslate()
        self._fit_columns()
        self._update_placeholder()

    def _fit_columns(self) -> None:
        """Widen columns whose title or state words no longer fit (another language)."""
        header = self.table.horizontalHeader()
        for column in range(self.model.columnCount()):
            if header.sectionSize(column) < header.sectionSizeHint(column):
                header.resizeSection(column, header.sectionSizeHint(column))
        from qargo_desktop.ui.widgets import StatusBadgeDelegate

        metrics = self.table.fontMetrics()
        longest = max(
            StatusBadgeDelegate.width_for(metrics, texts.status_label(status))
            for status in texts.STATUS_ORDER
        )
        if header.sectionSize(COLUMN_STATUS) < longest:
            header.resizeSection(COLUMN_STATUS, longest)

    def _on_device_authorise_triggered(self) -> None:
        mailbox = self.selected_mailbox()
        if mailbox is not None and self.device_authorise_action.isEnabled():
            self.device_authorise_requested.emit(mailbox)

    def _on_menu_action(self, kind: MailboxAction) -> None:
        mailbox = self.selected_mailbox()
        if mailbox is not None and kind in mailbox.actions:
            self._on_action_requested(kind, mailbox)

    def _on_table_context_menu_requested(self, position: QPoint) -> None:
        index = self.table.indexAt(position)
        if not index.isValid():
            # The menu key on the keyboard: the current row.
            index = self.table.currentIndex()
            if not index.isValid():
                return
            position = self.table.visualRect(index).center()
        self.table.selectRow(index.row())
        menu = QMenu(self.table)
        for kind, action in self.mailbox_actions.items():
            if action.isEnabled():
                menu.addAction(action)
            if kind is MailboxAction.REAUTHORISE and self.device_authorise_action.isEnabled():
                menu.addAction(self.device_authorise_action)
        menu.addSeparator()
        menu.addAction(self.copy_address_action)
        menu.popup(self.table.viewport().mapToGlobal(position))

    def copy_selected_address(self) -> None:
        """Put the selected mailbox's address on the clipboard."""
        mailbox = self.selected_mailbox()
        if mailbox is not None:
            QGuiApplication.clipboard().setText(mailbox.address)
            self.statusBar().showMessage(
                translate("MainWindow", "Copied {address}").format(address=mailbox.address), 3000
            )

    def _update_mailbox_actions(self) -> None:
        self._update_mailbox_actions_for(self.selected_mailbox())

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.environment_label = QLabel(self)
        self.environment_label.setObjectName("environmentLabel")
        self.admin_label = QLabel(self)
        self.admin_label.setObjectName("adminLabel")
        self.organisation_label = QLabel(self)
        self.organisation_label.setObjectName("organisationLabel")
        self.refreshed_label = QLabel(self)
        self.refreshed_label.setObjectName("refreshedLabel")
        self.connection_label = QLabel(self)
        self.connection_label.setObjectName("connectionLabel")
        self.load_progress = QProgressBar(self)
        self.load_progress.setRange(0, 0)
        self.load_progress.setMaximumWidth(120)
        self.load_progress.setTextVisible(False)
        self.load_progress.setVisible(False)
        for label in (self.environment_label, self.admin_label, self.organisation_label):
            bar.addWidget(label)
        bar.addPermanentWidget(self.load_progress)
        bar.addPermanentWidget(self.refreshed_label)
        bar.addPermanentWidget(self.connection_label)
        self.environment_label.setVisible(False)
        self.organisation_label.setVisible(False)
        self._set_connection(ConnectionState.STARTING)

    def _update_identity_labels(self) -> None:
        """Who is signed in, and to which organisation, in the status bar."""
        session = self._session
        if session is not None:
            self.admin_label.setText(
                translate("MainWindow", "Signed in as {user}").format(user=session.username)
            )
            self.admin_label.setToolTip(session.me.display_name or session.username)
            organisation = translate("MainWindow", "Organisation: {name}").format(
                name=session.organisation.name
            )
            self.organisation_label.setText(organisation)
            self.organisation_label.setToolTip(organisation)
        elif self._not_super_admin is not None:
            self.admin_label.setText(
                translate("MainWindow", "Signed in as {user} (not a super admin)").format(
                    user=self._not_super_admin
                )
            )
            self.admin_label.setToolTip("")
        else:
            self.admin_label.setText(translate("MainWindow", "Not signed in"))
            self.admin_label.setToolTip("")
        self.organisation_label.setVisible(session is not None)

    def _build_timers(self) -> None:
        self.refresh_timer = QTimer(self)
        self.refresh_timer.timeout.connect(self._on_refresh_timer_timeout)
        interval = self._settings.refresh_interval_s if self._settings is not None else 60.0
        if interval > 0:
            self.refresh_timer.setInterval(int(interval * 1000))
        self._clock_timer = QTimer(self)
        self._clock_timer.setInterval(_CLOCK_TICK_MS)
        self._clock_timer.timeout.connect(self._on_clock_tick)
        self._clock_timer.start()
        self._audit_timer = QTimer(self)
        self._audit_timer.setSingleShot(True)
        self._audit_timer.setInterval(_AUDIT_DELAY_MS)
        self._audit_timer.timeout.connect(self._load_audit_trail)
        # Many model signals arrive in a burst (a page of 500 rows); the counts, the
        # placeholder and the detail pane are brought up to date once per burst.
        self._sync_timer = QTimer(self)
        self._sync_timer.setSingleShot(True)
        self._sync_timer.setInterval(0)
        self._sync_timer.timeout.connect(self._sync_views)

    def _connect_model(self) -> None:
        for signal in (
            self.proxy.rowsInserted,
            self.proxy.rowsRemoved,
            self.proxy.modelReset,
            self.proxy.layoutChanged,
            self.model.dataChanged,
            self.model.counts_changed,
        ):
            signal.connect(self._schedule_sync)

    # -- window state ---------------------------------------------------------------------

    def _state_is_ours(self) -> bool:
        # Compared as text: some QSettings backends give numbers back as strings.
        return str(self._state.value("window/version")) == str(_STATE_VERSION)

    def _restore_geometry(self) -> None:
        self.resize(1320, 820)
        self._pending_splitter_state: QByteArray | None = None
        if not self._state_is_ours():
            return
        for key, restore in (
            ("window/geometry", self.restoreGeometry),
            ("window/state", self.restoreState),
        ):
            value = self._state.value(key)
            if isinstance(value, QByteArray | bytes):
                restore(QByteArray(value))

    def _restore_layout(self) -> None:
        state = self._state
        if not self._state_is_ours():
            return
        columns = state.value("window/columns")
        if isinstance(columns, QByteArray | bytes):
            self.table.horizontalHeader().restoreState(QByteArray(columns))
        # The splitter is restored when the mailbox page first shows: before that it has
        # no size and would squeeze the remembered sizes.
        splitter = state.value("window/splitter")
        self._pending_splitter_state = (
            QByteArray(splitter) if isinstance(splitter, QByteArray | bytes) else None
        )

    def _on_page_changed(self, index: int) -> None:
        if index == Page.MAILBOXES and self._pending_splitter_state is not None:
            self.splitter.restoreState(self._pending_splitter_state)
            self._pending_splitter_state = None

    def save_state(self) -> None:
        """Remember geometry, splitter and columns (called on close)."""
        state = self._state
        if not self._built:
            # Closed while starting: the splitter and the columns stay as they were.
            if self._state_is_ours():
                state.setValue("window/geometry", self.saveGeometry())
                state.setValue("window/state", self.saveState())
                state.sync()
            return
        state.setValue("window/version", _STATE_VERSION)
        state.setValue("window/geometry", self.saveGeometry())
        state.setValue("window/state", self.saveState())
        state.setValue(
            "window/splitter",
            self._pending_splitter_state
            if self._pending_splitter_state is not None
            else self.splitter.saveState(),
        )
        state.setValue("window/columns", self.table.horizontalHeader().saveState())
        state.sync()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 (Qt name)
        """Remember the window's state and stop background work."""
        self.save_state()
        if self._built:
            self.refresh_timer.stop()
        if self._sign_in_dialog is not None:
            self._sign_in_dialog.finish()
        if self._device_dialog is not None:
            self._device_dialog.finish()
        self.tasks.shutdown(3000)
        super().closeEvent(event)

    # -- public: what the app and the link actions drive -----------------------------------

    @property
    def services(self) -> Services | None:
        """The services in use, once attached."""
        return self._services

    @property
    def settings(self) -> Settings | None:
        """The settings the window was opened with."""
        return self._settings

    @property
    def theme(self) -> Theme:
        """The colours in use."""
        return self._theme

    @property
    def environment(self) -> str:
        """What the services point at, when not production (``Sandbox``)."""
        return self._environment

    @property
    def session(self) -> AdminSession | None:
        """The signed-in admin, if any."""
        return self._session

    @property
    def connection_state(self) -> ConnectionState:
        """What the status bar says about the connection."""
        return self._connection

    @property
    def stale(self) -> bool:
        """Whether the list shown may be out of date."""
        return self._stale

    @property
    def current_page(self) -> Page:
        """The page shown."""
        return Page(self.pages.currentIndex())

    def show_starting(self, text: str) -> None:
        """Say what the app is doing while it starts."""
        self.starting_page.set_message(text)
        self.pages.setCurrentIndex(Page.STARTING)

    def show_first_run(self, missing: list[str], config_file: Path | None = None) -> None:
        """Explain which settings are missing and offer the sandbox."""
        self.first_run_page.set_missing(missing, config_file)
        self.pages.setCurrentIndex(Page.FIRST_RUN)
        self._set_connection(ConnectionState.SIGNED_OUT)

    def show_startup_error(self, text: str) -> None:
        """The app could not start its services: say why on the starting page."""
        self.starting_page.set_message(text)
        self.starting_page.busy.setVisible(False)
        self.pages.setCurrentIndex(Page.STARTING)
        self._set_connection(ConnectionState.OFFLINE)

    def attach_services(
        self, services: Services, *, environment: str = "", sign_in_note: str = ""
    ) -> None:
        """Use these services and sign in silently.

        Args:
            services: Built off the GUI thread by the app.
            environment: Shown in the title and status bar (``Sandbox``), if not empty.
            sign_in_note: A hint on the sign-in page (which account the sandbox knows).
        """
        self._services = services
        self._environment = environment
        self.environment_label.setVisible(bool(environment))
        self._style_environment_label()
        self._update_environment_texts()
        self.sign_in_page.set_note(sign_in_note)
        self.start_silent_sign_in()

    def _environment_text(self) -> str:
        if self._environment == "Sandbox":
            return translate("MainWindow", "Sandbox")
        return self._environment

    def _update_environment_texts(self) -> None:
        environment = self._environment_text()
        self.environment_label.setText(environment)
        self.environment_label.setAccessibleName(
            translate("MainWindow", "Environment: {name}").format(name=environment)
        )
        self.setWindowTitle(
            translate("MainWindow", "{app} ({environment})").format(
                app=APP_DISPLAY_NAME, environment=environment
            )
            if environment
            else APP_DISPLAY_NAME
        )

    def _style_environment_label(self) -> None:
        colours = self._theme.message_colours(MessageLevel.WARNING)
        self.environment_label.setStyleSheet(
            f"QLabel#environmentLabel {{ background: {colours.background}; "
            f"color: {colours.foreground}; border-radius: 3px; padding: 1px 6px; "
            "font-weight: bold; }"
        )

    def selected_mailbox(self) -> Mailbox | None:
        """The mailbox the detail pane shows."""
        return self.detail_pane.mailbox

    def select_mailbox(self, mailbox_id: str) -> bool:
        """Select a mailbox's row (clearing filters that hide it); returns whether found."""
        index = self.proxy.index_of(mailbox_id)
        if not index.isValid() and self.model.row_of(mailbox_id) is not None:
            self.clear_filters()
            index = self.proxy.index_of(mailbox_id)
        if not index.isValid():
            return False
        self.table.selectionModel().setCurrentIndex(
            index,
            QItemSelectionModel.SelectionFlag.ClearAndSelect
            | QItemSelectionModel.SelectionFlag.Rows,
        )
        self.table.scrollTo(index)
        return True

    def upsert_mailbox(self, mailbox: Mailbox) -> None:
        """Show a mailbox as an action left it (new or changed)."""
        self.model.upsert([mailbox])

    def remove_mailbox(self, mailbox_id: str) -> None:
        """Take a removed mailbox off the list."""
        self.model.remove(mailbox_id)

    def show_message(
        self,
        text: str,
        *,
        level: MessageLevel = MessageLevel.ERROR,
        key: str | None = None,
        action_text: str | None = None,
        on_action: Callable[[], None] | None = None,
    ) -> None:
        """Show a routine message in the message bar (repeats are counted, not stacked)."""
        self.message_bar.show_message(
            text, level=level, key=key, action_text=action_text, on_action=on_action
        )

    def focus_search(self) -> None:
        """Put the cursor in the search box (Ctrl+F)."""
        if self.current_page is Page.MAILBOXES:
            self.search_box.setFocus(Qt.FocusReason.ShortcutFocusReason)
            self.search_box.selectAll()

    def clear_filters(self) -> None:
        """Show every mailbox again."""
        self.search_box.clear()
        self.status_filter.select(())

    # -- sign-in -----------------------------------------------------------------------------

    def start_silent_sign_in(self) -> None:
        """Sign in from the saved sign-in, in the background."""
        services = self._services
        if services is None or self._sign_in_running():
            return
        self.show_starting(translate("MainWindow", "Signing in..."))
        self._set_connection(ConnectionState.SIGNING_IN)

        def work(_cancel: threading.Event, _progress: Progress) -> AdminSession:
            return services.sign_in_silently()

        self._sign_in_handle = self.tasks.start(
            "silent sign-in", work, on_finished=self._on_silent_sign_in_finished
        )

    def _on_silent_sign_in_finished(self, result: Any, error: BaseException | None) -> None:
        self._sign_in_handle = None
        if error is None:
            self._on_signed_in(result)
            return
        from qargo_desktop.core.services import NotSuperAdmin

        if isinstance(error, NotSuperAdmin):
            self._show_not_super_admin(error.username)
        elif isinstance(error, SignInRequired):
            log.info("No saved sign-in can be used; asking the admin to sign in")
            self._show_sign_in_prompt()
        else:
            self._set_connection(ConnectionState.OFFLINE)
            self.pages.setCurrentIndex(Page.SIGN_IN)
            self.sign_in_page.show_error(_explain(error))

    def start_interactive_sign_in(self) -> None:
        """Sign in through the system browser, with a waiting dialog that can cancel."""
        services = self._services
        if services is None:
            return
        if self._sign_in_running():
            if self._sign_in_dialog is not None:
                self._sign_in_dialog.raise_()
            return
        opener = self.browser_opener
        if self.current_page is not Page.MAILBOXES:
            self.pages.setCurrentIndex(Page.SIGN_IN)
            self.sign_in_page.show_busy(translate("MainWindow", "Waiting for the browser..."))
        self._set_connection(ConnectionState.SIGNING_IN)

        def work(cancel: threading.Event, progress: Progress) -> AdminSession:
            control = services.new_control()
            # The task's cancel is the sign-in's cancel: Cancel in the dialog stops the
            # loopback listener at once.
            control.cancel = cancel
            control.on_auth_uri = lambda url: progress(("auth_uri", url))
            control.on_browser_failed = lambda url: progress(("browser_failed", url))
            if opener is not None:
                control.opener = opener
            return services.sign_in_interactive(control)

        from qargo_desktop.ui import dialogs

        dialog = dialogs.SignInWaitDialog(self, deadline_s=services.sign_in_timeout_s)
        handle = self.tasks.start(
            "interactive sign-in",
            work,
            on_finished=self._on_interactive_sign_in_finished,
            on_progress=self._on_interactive_sign_in_progressed,
        )
        dialog.cancel_requested.connect(handle.cancel)
        self._sign_in_handle = handle
        self._sign_in_dialog = dialog
        dialog.open()

    def cancel_sign_in(self) -> None:
        """Stop a running interactive sign-in (the same as its dialog's Cancel)."""
        if self._sign_in_handle is not None:
            self._sign_in_handle.cancel()

    def start_device_sign_in(self) -> None:
        """Sign in with a code on another device (a phone is fine).

        For when this computer's browser cannot be used: a remote session, a locked-down
        computer. The dialog's Cancel stops the wait at once.
        """
        services = self._services
        if services is None or self._sign_in_running():
            return
        if self.current_page is not Page.MAILBOXES:
            self.pages.setCurrentIndex(Page.SIGN_IN)
            self.sign_in_page.show_busy(translate("MainWindow", "Waiting for the other device..."))
        self._set_connection(ConnectionState.SIGNING_IN)

        def work(cancel: threading.Event, progress: Progress) -> AdminSession:
            # The code reaches the dialog through the task's progress: on the GUI thread.
            return services.sign_in_device(progress, cancel)

        from qargo_desktop.ui.device_code_dialog import DeviceCodeDialog

        dialog = DeviceCodeDialog(self)
        handle = self.tasks.start(
            "device code sign-in",
            work,
            on_finished=self._on_device_sign_in_finished,
            on_progress=self._on_device_sign_in_progressed,
        )
        dialog.cancel_requested.connect(handle.cancel)
        self._sign_in_handle = handle
        self._device_dialog = dialog
        dialog.open()
        log.info("Device code sign-in started from the window")

    @property
    def device_dialog(self) -> DeviceCodeDialog | None:
        """The open dialog of a sign-in on another device, if any."""
        return self._device_dialog

    def _on_device_sign_in_progressed(self, value: object) -> None:
        from qargo_desktop.core.identity import DeviceFlow

        if self._device_dialog is not None and isinstance(value, DeviceFlow):
            self._device_dialog.set_flow(value)

    def _on_device_sign_in_finished(self, result: Any, error: BaseException | None) -> None:
        if self._device_dialog is not None:
            self._device_dialog.finish()
            self._device_dialog.deleteLater()
            self._device_dialog = None
        # From here on, the same as a sign-in in the browser.
        self._on_interactive_sign_in_finished(result, error)

    @property
    def sign_in_dialog(self) -> dialogs.SignInWaitDialog | None:
        """The open waiting dialog of an interactive sign-in, if any."""
        return self._sign_in_dialog

    def _on_interactive_sign_in_progressed(self, value: object) -> None:
        dialog = self._sign_in_dialog
        if dialog is None or not isinstance(value, tuple):
            return
        kind, url = value
        if kind == "auth_uri":
            dialog.set_auth_uri(url)
        elif kind == "browser_failed":
            dialog.set_browser_failed(url)

    def _on_interactive_sign_in_finished(self, result: Any, error: BaseException | None) -> None:
        self._sign_in_handle = None
        if self._sign_in_dialog is not None:
            self._sign_in_dialog.finish()
            self._sign_in_dialog.deleteLater()
            self._sign_in_dialog = None
        # The browser had the person's attention; bring them back (Windows may only
        # flash the taskbar button, which is the polite version of the same).
        self.raise_()
        self.activateWindow()
        if error is None:
            self._on_signed_in(result)
            return
        from qargo_desktop.core.services import NotSuperAdmin

        if isinstance(error, NotSuperAdmin):
            self._show_not_super_admin(error.username)
            return
        problem = (
            translate("MainWindow", "Sign-in cancelled.")
            if isinstance(error, Cancelled)
            else _explain(error)
        )
        if self._session is not None and self.current_page is Page.MAILBOXES:
            # Signing in again over a list that is still shown: keep the list, say so.
            self._set_connection(ConnectionState.SIGN_IN_EXPIRED)
            self._show_sign_in_expired(problem)
        else:
            self._show_sign_in_prompt(problem)

    def _on_signed_in(self, session: AdminSession) -> None:
        previous = self._session
        if previous is not None and previous.username.casefold() != session.username.casefold():
            # Another admin, possibly another organisation: the old list is not theirs.
            self._forget_list()
        elif previous is None and self.model.rowCount():
            self._forget_list()
        self._session = session
        self._not_super_admin = None
        self._update_identity_labels()
        self.message_bar.dismiss(MESSAGE_SIGN_IN)
        self.pages.setCurrentIndex(Page.MAILBOXES)
        # Signing in just talked to the API; the list stays marked stale until it reloads.
        self._set_connection(ConnectionState.ONLINE)
        self._update_actions()
        self._sync_views()
        if self.refresh_timer.interval() > 0 and self._settings_refresh_enabled():
            self.refresh_timer.start()
        self.signed_in.emit(session)
        self.refresh()

    def _show_sign_in_prompt(self, problem: str = "") -> None:
        self._set_connection(ConnectionState.SIGNED_OUT)
        self.pages.setCurrentIndex(Page.SIGN_IN)
        self.sign_in_page.show_prompt(problem)
        self._update_actions()

    def _show_not_super_admin(self, username: str) -> None:
        self._session = None
        self._forget_list()
        self._set_connection(ConnectionState.SIGNED_OUT)
        self._not_super_admin = username
        self._update_identity_labels()
        self.pages.setCurrentIndex(Page.SIGN_IN)
        self.sign_in_page.show_not_super_admin(username)
        self._update_actions()

    def _show_sign_in_expired(self, problem: str = "") -> None:
        text = translate(
            "MainWindow",
            "Your sign-in has expired or was revoked, so the list below may be out of date. "
            "Sign in again to continue.",
        )
        if problem:
            text = f"{text} {problem}"
        self.message_bar.show_message(
            text,
            level=MessageLevel.WARNING,
            key=MESSAGE_SIGN_IN,
            action_text=translate("MainWindow", "Sign in again"),
            on_action=self.start_interactive_sign_in,
        )

    def _on_switch_account_requested(self) -> None:
        self.sign_out(then_sign_in=True)

    def sign_out(self, then_sign_in: bool = False) -> None:
        """Forget the admin's sign-in and the list, then offer to sign in."""
        services = self._services
        if services is None:
            return
        self._session = None
        self.refresh_timer.stop()
        for handle in (self._refresh_handle, self._audit_handle):
            if handle is not None:
                handle.discard()
        self._refresh_handle = None
        self._loading = False
        self._forget_list()
        self.message_bar.clear()
        self._not_super_admin = None
        self._update_identity_labels()
        self.pages.setCurrentIndex(Page.SIGN_IN)
        self.sign_in_page.show_busy(translate("MainWindow", "Signing out..."))
        self._update_actions()

        def work(_cancel: threading.Event, _progress: Progress) -> list[str]:
            return services.sign_out()

        def finished(_result: Any, error: BaseException | None) -> None:
            self._set_connection(ConnectionState.SIGNED_OUT)
            self.signed_out.emit()
            if error is not None:
                self._show_sign_in_prompt(
                    translate("MainWindow", "Signing out did not complete: {problem}").format(
                        problem=_explain(error)
                    )
                )
                return
            self._show_sign_in_prompt()
            if then_sign_in:
                self.start_interactive_sign_in()

        self.tasks.start("sign out", work, on_finished=finished)

    def _sign_in_running(self) -> bool:
        return self._sign_in_handle is not None and self._sign_in_handle.running

    def _forget_list(self) -> None:
        self._pending_pages = []
        self.model.clear()
        self._etag = None
        self._refreshed_at = None
        self._checked_at = None
        self._stale = False
        self._loaded_once = False
        self._load_error = None
        self._selected_id = None
        self._selected_etag = None
        self.detail_pane.set_mailbox(None)
        self._update_refreshed_label()

    # -- refreshing --------------------------------------------------------------------------

    def refresh(self) -> None:
        """Load the list again (conditional: an unchanged list costs one 304)."""
        services = self._services
        if services is None or self._session is None:
            return
        if self._refresh_handle is not None and self._refresh_handle.running:
            return
        etag = self._etag if self._loaded_once else None
        self._loading = True
        self._loaded_count = 0
        self._pending_pages = []
        self._refresh_started_empty = self.model.rowCount() == 0
        self._load_error = None
        self.load_progress.setVisible(True)
        self.refresh_button.setEnabled(False)
        self._schedule_sync()

        def work(cancel: threading.Event, progress: Progress) -> MailboxList | None:
            return services.api.list_mailboxes(if_none_match=etag, on_page=progress, cancel=cancel)

        self._refresh_handle = self.tasks.start(
            "refresh mailboxes",
            work,
            on_finished=self._on_refresh_finished,
            on_progress=self._on_page_loaded,
        )

    def _on_page_loaded(self, page: object) -> None:
        if not isinstance(page, tuple):
            return
        # Pages that arrive while the window is busy with an earlier one are taken into the
        # model together: one merge and one re-sort of the list instead of one per page.
        if not self._pending_pages:
            QTimer.singleShot(0, self, self._apply_pages)
        self._pending_pages.extend(page)
        self._loaded_count += len(page)

    def _apply_pages(self) -> None:
        pages, self._pending_pages = self._pending_pages, []
        if not pages:
            return
        self.model.upsert(pages)
        if not self._loaded_once:
            self.placeholder.set_text(self._loaded_so_far())

    def _loaded_so_far(self) -> str:
        if not self._loaded_count:
            return ""
        return translate("MainWindow", "%Ln loaded so far", None, self._loaded_count)

    def _on_refresh_finished(self, result: Any, error: BaseException | None) -> None:
        self._refresh_handle = None
        self._loading = False
        self.load_progress.setVisible(False)
        self.refresh_button.setEnabled(True)
        now = self._clock()
        if error is None:
            from qargo_desktop.core.api import MailboxList

            self._apply_pages()
            if isinstance(result, MailboxList):
                items = result.items
                if not (
                    self._refresh_started_empty
                    and self.model.rowCount() == len(items) == self._loaded_count
                ):
                    self.model.merge(items)
                # else: the pages brought exactly this list into an empty model already.
                self._etag = result.etag
                self._refreshed_at = now
                log.info("Mailbox list loaded: %d mailboxes", len(result.items))
            else:
                log.debug("Mailbox list unchanged (304)")
            self._checked_at = now
            self._loaded_once = True
            self._stale = False
            self.message_bar.dismiss(MESSAGE_REFRESH)
            self._set_connection(ConnectionState.ONLINE)
        else:
            if isinstance(error, Cancelled):
                self._pending_pages = []  # signed out, or closing: nothing more to show
            else:
                self._apply_pages()  # what did arrive is shown (a partial list, marked stale)
            self._on_refresh_failed(error)
        self._update_refreshed_label()
        self._sync_views()
        if self._pending_select is not None and self._loaded_once:
            self.select_address(self._pending_select)
        self.refresh_finished.emit(error)

    def _on_refresh_failed(self, error: BaseException) -> None:
        if isinstance(error, Cancelled):
            return
        if isinstance(error, SignInRequired):
            log.info("The admin's sign-in is no longer accepted; asking to sign in again")
            self._stale = self._loaded_once
            self._set_connection(ConnectionState.SIGN_IN_EXPIRED)
            self.refresh_timer.stop()
            self._show_sign_in_expired()
            return
        if isinstance(error, ApiError) and error.code == "not_super_admin":
            username = self._session.username if self._session is not None else ""
            self.refresh_timer.stop()
            self._show_not_super_admin(username)
            return
        self._load_error = error if isinstance(error, QargoError) else None
        self._stale = self._loaded_once
        offline = isinstance(error, NetworkError) or (
            isinstance(error, ApiError) and error.status in (429, 502, 503, 504)
        )
        if offline:
            self._set_connection(ConnectionState.OFFLINE)
        when = texts.local_clock(self._refreshed_at) if self._refreshed_at else None
        prefix = (
            translate("MainWindow", "The list may be out of date (last refreshed {time}).").format(
                time=when
            )
            if self._loaded_once and when
            else translate("MainWindow", "The mailboxes could not be loaded.")
        )
        self.message_bar.show_message(
            f"{prefix} {_explain(error)}",
            level=MessageLevel.WARNING if self._loaded_once else MessageLevel.ERROR,
            key=MESSAGE_REFRESH,
            action_text=translate("MainWindow", "Retry"),
            on_action=self.refresh,
        )

    def _on_refresh_timer_timeout(self) -> None:
        # Only while someone can see the list: a minimised or hidden window costs nothing.
        if not self.isVisible() or self.isMinimized():
            return
        if self.current_page is not Page.MAILBOXES or self._session is None:
            return
        if self._connection is ConnectionState.SIGN_IN_EXPIRED:
            return
        self.refresh()

    def _settings_refresh_enabled(self) -> bool:
        return self._settings is None or self._settings.refresh_interval_s > 0

    # -- status bar ----------------------------------------------------------------------------

    def _set_connection(self, state: ConnectionState) -> None:
        self._connection = state
        text = state.text
        tooltip = ""
        if state is ConnectionState.OFFLINE and self._stale and self._refreshed_at:
            text = translate("MainWindow", "Offline: list from {time}").format(
                time=texts.local_clock(self._refreshed_at)
            )
            tooltip = translate(
                "MainWindow", "The Qargo API cannot be reached; the list shown may be out of date."
            )
        elif state is ConnectionState.SIGN_IN_EXPIRED:
            tooltip = translate("MainWindow", "Sign in again to see the current list.")
        colour = {
            ConnectionState.ONLINE: self._theme.connection_colour(True),
            ConnectionState.OFFLINE: self._theme.connection_colour(False),
            ConnectionState.SIGN_IN_EXPIRED: self._theme.connection_colour(False),
        }.get(state)
        self.connection_label.setText(f"\u25cf {text}")
        self.connection_label.setToolTip(tooltip)
        self.connection_label.setAccessibleName(
            translate("MainWindow", "Connection: {state}").format(state=text)
        )
        self.connection_label.setAccessibleDescription(tooltip)
        self.connection_label.setStyleSheet(f"color: {colour};" if colour else "")

    def _update_refreshed_label(self) -> None:
        if self._refreshed_at is None:
            self.refreshed_label.setText(
                translate("MainWindow", "Not refreshed yet") if self._session else ""
            )
            self.refreshed_label.setToolTip("")
            return
        refreshed = texts.local_clock(self._refreshed_at)
        if self._checked_at is not None and self._checked_at != self._refreshed_at:
            text = translate("MainWindow", "Refreshed {refreshed}, checked {checked}").format(
                refreshed=refreshed, checked=texts.local_clock(self._checked_at)
            )
        else:
            text = translate("MainWindow", "Refreshed {refreshed}").format(refreshed=refreshed)
        if self._stale:
            text = translate("MainWindow", "{text} (may be out of date)").format(text=text)
        self.refreshed_label.setText(text)
        tooltip = translate("MainWindow", "List last loaded at {time}").format(
            time=texts.local_time(self._refreshed_at, seconds=True)
        )
        if self._checked_at is not None:
            tooltip += "\n" + translate("MainWindow", "Last checked for changes at {time}").format(
                time=texts.local_time(self._checked_at, seconds=True)
            )
        self.refreshed_label.setToolTip(tooltip)
        self.refreshed_label.setAccessibleName(text)
        self.refreshed_label.setAccessibleDescription(tooltip)

    def _update_actions(self) -> None:
        signed_in = self._session is not None
        for action in (self.refresh_action, self.add_action):
            action.setEnabled(signed_in)
        # Also offered when signed in as someone who is not a super admin.
        self.sign_out_action.setEnabled(self._services is not None)
        self.add_button.setEnabled(signed_in)
        self._update_mailbox_actions()

    # -- filtering, selection and the detail pane ----------------------------------------------

    def _on_search_text_changed(self, text: str) -> None:
        self.proxy.set_search_text(text)
        self._sync_views()

    def _on_statuses_changed(self, statuses: object) -> None:
        if isinstance(statuses, frozenset):
            self.proxy.set_statuses(statuses)
        self._sync_views()

    def _schedule_sync(self) -> None:
        if not self._sync_timer.isActive():
            self._sync_timer.start()

    def _sync_views(self) -> None:
        self._sync_timer.stop()
        self.status_filter.set_counts(self.proxy.search_counts())
        self._update_placeholder()
        self._sync_detail_pane()

    def _update_placeholder(self) -> None:
        shown = self.proxy.rowCount()
        total = self.model.rowCount()
        action: Callable[[], None] | None = None
        if shown:
            self.table_stack.setCurrentWidget(self.table)
            self._placeholder_action = None
            return
        if total:
            self.placeholder.show_state(
                translate("MainWindow", "No mailboxes match"),
                translate("MainWindow", "Nothing matches the search text and state chosen."),
                button=translate("MainWindow", "Clear search and filter"),
            )
            action = self.clear_filters
        elif self._loading and not self._loaded_once:
            self.placeholder.show_state(
                translate("MainWindow", "Loading the organisation's mailboxes..."),
                self._loaded_so_far(),
                busy=True,
            )
        elif self._load_error is not None and not self._loaded_once:
            self.placeholder.show_state(
                translate("MainWindow", "The mailboxes could not be loaded"),
                _explain(self._load_error),
                button=translate("MainWindow", "Retry"),
            )
            action = self.refresh
        elif self._loaded_once:
            self.placeholder.show_state(
                translate("MainWindow", "No mailboxes yet"),
                translate(
                    "MainWindow",
                    "Add the first Microsoft 365 mailbox that Qargo should read and send mail for.",
                ),
                button=translate("MainWindow", "Add mailbox..."),
            )
            action = self.add_requested.emit
        else:
            self.placeholder.show_state(
                translate("MainWindow", "Not loaded yet"),
                translate("MainWindow", "Refresh to load the list."),
                button=translate("MainWindow", "Refresh"),
            )
            action = self.refresh
        self._placeholder_action = action
        self.table_stack.setCurrentWidget(self.placeholder)

    def _on_placeholder_action_triggered(self) -> None:
        if self._placeholder_action is not None:
            self._placeholder_action()

    def _on_current_row_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        mailbox = self.proxy.mailbox(current) if current.isValid() else None
        self._show_in_detail_pane(mailbox)

    def _show_in_detail_pane(self, mailbox: Mailbox | None) -> None:
        self._update_mailbox_actions_for(mailbox)
        new_id = mailbox.id if mailbox else None
        new_etag = mailbox.etag if mailbox else None
        if new_id == self._selected_id and new_etag == self._selected_etag:
            if mailbox != self.detail_pane.mailbox:
                self.detail_pane.set_mailbox(mailbox)
            return
        same_mailbox = new_id == self._selected_id
        self._selected_id = new_id
        self._selected_etag = new_etag
        self.detail_pane.set_mailbox(mailbox)
        if mailbox is None:
            if self._audit_handle is not None:
                self._audit_handle.discard()
            return
        # A new selection waits a moment (arrowing through the list loads nothing); a
        # changed mailbox reloads its history at once, quietly.
        if not same_mailbox:
            self.detail_pane.set_audit_loading()
        self._audit_timer.start(_AUDIT_DELAY_MS if not same_mailbox else 0)

    def _update_mailbox_actions_for(self, mailbox: Mailbox | None) -> None:
        if not hasattr(self, "mailbox_actions"):
            return
        allowed = set(mailbox.actions) if mailbox is not None and self._session else set()
        busy = (
            mailbox is not None
            and hasattr(self, "link_actions")
            and self.link_actions.busy(mailbox.id)
        )
        for kind, action in self.mailbox_actions.items():
            action.setEnabled(kind in allowed and not busy)
        self.device_authorise_action.setEnabled(
            bool(allowed & {MailboxAction.AUTHORISE, MailboxAction.REAUTHORISE}) and not busy
        )
        self.copy_address_action.setEnabled(mailbox is not None)

    def _sync_detail_pane(self) -> None:
        if self._selected_id is None:
            return
        mailbox = self.model.find(self._selected_id)
        self._show_in_detail_pane(mailbox)

    def _load_audit_trail(self) -> None:
        services = self._services
        mailbox = self.detail_pane.mailbox
        if services is None or mailbox is None or self._session is None:
            return
        if self._audit_handle is not None:
            self._audit_handle.discard()
        mailbox_id = mailbox.id

        def work(_cancel: threading.Event, _progress: Progress) -> object:
            return services.api.events(mailbox_id)

        def finished(result: Any, error: BaseException | None) -> None:
            self._audit_handle = None
            if self._selected_id != mailbox_id:
                return
            if error is None:
                self.detail_pane.set_audit_events(result)
            elif not isinstance(error, Cancelled):
                self.detail_pane.set_audit_error(_explain(error))

        self._audit_handle = self.tasks.start(
            f"audit trail of {mailbox.address}", work, on_finished=finished
        )

    def _on_action_requested(self, action: object, mailbox: object) -> None:
        if not isinstance(mailbox, Mailbox) or not isinstance(action, MailboxAction):
            return
        signals = {
            MailboxAction.AUTHORISE: self.authorise_requested,
            MailboxAction.REAUTHORISE: self.reauthorise_requested,
            MailboxAction.RESET: self.reset_requested,
            MailboxAction.SELFTEST: self.selftest_requested,
            MailboxAction.REMOVE: self.remove_requested,
            MailboxAction.CANCEL: self.cancel_authorisation_requested,
        }
        log.info("%s requested for %s", texts.ACTION_LABELS[action], mailbox.address)
        signals[action].emit(mailbox)

    # -- housekeeping ----------------------------------------------------------------------------

    def _on_clock_tick(self) -> None:
        self.model.refresh_times()
        self._update_refreshed_label()

    def _on_color_scheme_changed(self, _scheme: Qt.ColorScheme) -> None:
        if self._theme_preference != "system":
            return  # the person chose a theme in Preferences: it stays
        self._set_theme(Theme.from_system())

    def _set_theme(self, theme: Theme) -> None:
        if theme.dark == self._theme.dark:
            return
        self._theme = theme
        self.model.set_theme(theme)
        self.message_bar.set_theme(theme)
        self.status_filter.set_theme(theme)
        self.detail_pane.set_theme(theme)
        self._style_environment_label()
        self._set_connection(self._connection)

    def set_theme_preference(self, preference: str) -> None:
        """Follow the system's light or dark scheme (``system``), or force ``light``/``dark``."""
        self._theme_preference = preference
        self._set_theme(apply_colour_scheme(preference))

    def _on_about_triggered(self) -> None:
        details = ""
        if self._services is not None:
            details = translate("MainWindow", "Organisation API: {url}").format(
                url=self._services.endpoints.api_base_url
            )
        from qargo_desktop.ui import dialogs

        dialogs.show_about(self, details)

    def open_log_folder(self) -> None:
        """Show the folder of the log files in the file manager."""
        folder = app_paths(self._settings).log_dir if self._settings else app_paths().log_dir
        folder.mkdir(parents=True, exist_ok=True)
        if not self.folder_opener(folder):
            self.show_message(
                translate(
                    "MainWindow", "The log folder could not be opened. It is {folder}"
                ).format(folder=folder),
                level=MessageLevel.WARNING,
                key="log-folder",
            )

    # -- preferences -----------------------------------------------------------------------

    def edit_preferences(self) -> None:
        """Open Preferences; apply and announce what was saved."""
        from qargo_desktop.core.config import Settings

        current = self._settings if self._settings is not None else Settings()
        from qargo_desktop.ui import dialogs

        saved = dialogs.edit_preferences(self, current)
        if saved is not None:
            self.apply_settings(saved)

    def apply_settings(self, settings: Settings) -> None:
        """Use changed settings at once where the window can (language, theme, intervals)."""
        previous = self._settings
        self._settings = settings
        if previous is None or previous.language != settings.language:
            i18n.install_language(settings.language)
        if settings.theme != self._theme_preference:
            self.set_theme_preference(settings.theme)
        interval = settings.refresh_interval_s
        if interval > 0:
            self.refresh_timer.setInterval(int(interval * 1000))
            if self._session is not None and not self.refresh_timer.isActive():
                self.refresh_timer.start()
        else:
            self.refresh_timer.stop()
        if self._services is not None:
            self._services.sign_in_timeout_s = settings.sign_in_timeout_s
        network_changed = previous is not None and (
            previous.proxy != settings.proxy or previous.extra_ca_file != settings.extra_ca_file
        )
        if network_changed and self._services is not None:
            self.show_message(
                translate(
                    "MainWindow",
                    "The new proxy and certificate settings are used from the next start of "
                    "the app.",
                ),
                level=MessageLevel.INFO,
                key="network-settings",
            )
        self.settings_changed.emit(settings)

    # -- requests from a second start of the app -------------------------------------------

    def bring_to_front(self) -> None:
        """Show the window above the others and give it the keyboard."""
        if self.isMinimized():
            self.showNormal()
        self.show()
        self.raise_()
        self.activateWindow()
        # Where the platform refuses to move focus (Windows, from the background), at
        # least flash the taskbar button.
        QApplication.alert(self, 3000)

    def select_address(self, address: str) -> None:
        """Select the mailbox with this address now, or once the list has it."""
        wanted = address.strip().casefold()
        for mailbox in self.model.mailboxes():
            if mailbox.address.casefold() == wanted:
                self._pending_select = None
                self.select_mailbox(mailbox.id)
                self.table.setFocus(Qt.FocusReason.OtherFocusReason)
                return
        if self._loaded_once:
            self._pending_select = None
            self.show_message(
                translate("MainWindow", "{address} is not in the organisation's list.").format(
                    address=address
                ),
                level=MessageLevel.WARNING,
                key=f"select:{wanted}",
            )
            return
        self._pending_select = address


def _explain(error: BaseException) -> str:
    return texts.explain(error)


def _native(shortcut: QKeySequence) -> str:
    return shortcut.toString(QKeySequence.SequenceFormat.NativeText)


def _set_action_text(action: QAction, text: str, tip: str) -> None:
    """A menu entry's words; its tooltip says what it does and names its shortcut."""
    action.setText(text)
    action.setToolTip(texts.with_shortcut(tip, _native(action.shortcut())))
    action.setStatusTip(tip)


def _open_folder(folder: Path) -> bool:
    return QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))
