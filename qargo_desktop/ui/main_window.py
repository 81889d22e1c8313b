"""The main window: sign-in, the mailbox list, its detail pane and the status bar.

The window never waits on the network, the keyring or the token cache: every such call
runs in a :class:`~qargo_desktop.ui.tasks.TaskRunner` task and reports back. The link
actions themselves (authorise, reset, self-test, ...) are carried out elsewhere; the
window only asks for them through its ``*_requested`` signals and takes back the
changed mailbox through :meth:`MainWindow.upsert_mailbox`.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import (
    QByteArray,
    QItemSelectionModel,
    QModelIndex,
    QPoint,
    QSettings,
    Qt,
    QTimer,
    Signal,
)
from PySide6.QtGui import QAction, QCloseEvent, QGuiApplication, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
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
from qargo_desktop.core.api import MailboxList
from qargo_desktop.core.errors import (
    ApiError,
    Cancelled,
    NetworkError,
    QargoError,
    SignInRequired,
)
from qargo_desktop.core.models import Mailbox, MailboxAction
from qargo_desktop.core.services import AdminSession, NotSuperAdmin
from qargo_desktop.ui import dialogs, texts
from qargo_desktop.ui.detail_pane import DetailPane
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
from qargo_desktop.ui.theme import MessageLevel, Theme, app_icon
from qargo_desktop.ui.widgets import (
    MessageBar,
    PlaceholderPanel,
    StatusBadgeDelegate,
    StatusFilterCombo,
)

if TYPE_CHECKING:
    from qargo_desktop.core.config import Settings
    from qargo_desktop.core.services import Services

log = logging.getLogger(__name__)

BrowserOpener = Callable[[str], bool]

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
    """What the status bar says about the connection to Qargo."""

    STARTING = "Starting..."
    SIGNING_IN = "Signing in..."
    SIGNED_OUT = "Signed out"
    ONLINE = "Online"
    OFFLINE = "Offline"
    SIGN_IN_EXPIRED = "Sign-in expired"


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

    Args:
        settings: The app's settings (refresh interval); ``None`` for defaults.
        window_state: Where geometry, splitter and columns are remembered.
        theme: Colours and icons; the platform's light or dark theme by default.
        clock: Returns "now" (tests pass a fixed one).
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

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        window_state: QSettings | None = None,
        theme: Theme | None = None,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        super().__init__()
        self.setWindowTitle(APP_DISPLAY_NAME)
        self._icon = app_icon()
        self.setWindowIcon(self._icon)
        self.setObjectName("mainWindow")
        self._settings = settings
        self._state = window_state if window_state is not None else QSettings()
        self._theme = theme or Theme.from_system()
        self._clock = clock

        self.tasks = TaskRunner(self)
        #: Opens the sign-in page; ``None`` means the system browser. Tests set a script.
        self.browser_opener: BrowserOpener | None = None

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
        self._connection = ConnectionState.STARTING
        self._refresh_handle: TaskHandle | None = None
        self._sign_in_handle: TaskHandle | None = None
        self._audit_handle: TaskHandle | None = None
        self._sign_in_dialog: dialogs.SignInWaitDialog | None = None
        self._selected_id: str | None = None
        self._selected_etag: str | None = None
        self._placeholder_action: Callable[[], None] | None = None

        self.model = MailboxTableModel(self._theme, clock=clock, parent=self)
        self.proxy = MailboxFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)

        self._build_pages()
        self._build_mailbox_page()
        self._build_actions()
        self._build_status_bar()
        self._build_timers()
        self._connect_model()
        self._restore_state()

        from qargo_desktop.ui.link_actions import LinkActions

        self.link_actions = LinkActions(self)

        hints = QGuiApplication.styleHints()
        hints.colorSchemeChanged.connect(self._on_color_scheme_changed)
        self.show_starting("Starting...")

    # -- construction ---------------------------------------------------------------------

    def _build_pages(self) -> None:
        self.pages = QStackedWidget(self)
        self.setCentralWidget(self.pages)
        self.starting_page = StartingPage(self._icon, self)
        self.first_run_page = FirstRunPage(self._icon, self)
        self.sign_in_page = SignInPage(self._icon, self)
        self.mailbox_page = QWidget(self)
        for page in (self.starting_page, self.first_run_page, self.sign_in_page):
            self.pages.addWidget(page)
        self.pages.addWidget(self.mailbox_page)
        self.pages.currentChanged.connect(self._on_page_changed)
        self.first_run_page.sandbox_requested.connect(self.sandbox_requested)
        self.sign_in_page.sign_in_requested.connect(self.start_interactive_sign_in)
        self.sign_in_page.retry_requested.connect(self.start_silent_sign_in)
        self.sign_in_page.switch_account_requested.connect(self._on_switch_account_requested)
        self.sign_in_page.sign_out_requested.connect(self.sign_out)

    def _build_mailbox_page(self) -> None:
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
        self.search_box.setPlaceholderText("Search by address or name (Ctrl+F)")
        self.search_box.setClearButtonEnabled(True)
        self.search_box.setAccessibleName("Search mailboxes")
        self.search_box.setMinimumWidth(180)
        self.search_box.textChanged.connect(self._on_search_text_changed)
        self.status_filter = StatusFilterCombo(self._theme, self.mailbox_page)
        self.status_filter.statuses_changed.connect(self._on_statuses_changed)
        status_caption = QLabel("&Status:", self.mailbox_page)
        status_caption.setBuddy(self.status_filter)
        self.add_button = QPushButton("&Add mailbox...", self.mailbox_page)
        self.add_button.clicked.connect(self.add_requested)
        self.refresh_button = QPushButton("&Refresh", self.mailbox_page)
        self.refresh_button.setToolTip("Load the list again (F5)")
        self.refresh_button.clicked.connect(self.refresh)
        toolbar.addWidget(self.search_box, 2)
        toolbar.addSpacing(12)
        toolbar.addWidget(status_caption)
        toolbar.addWidget(self.status_filter)
        toolbar.addStretch(1)
        toolbar.addWidget(self.add_button)
        toolbar.addWidget(self.refresh_button)
        return toolbar

    def _build_table(self) -> None:
        self.table = QTableView(self.table_stack)
        self.table.setObjectName("mailboxTable")
        self.table.setAccessibleName("Mailboxes")
        self.table.setModel(self.proxy)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSortingEnabled(True)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.table.setShowGrid(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideRight)
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
        self._badge_delegate = StatusBadgeDelegate(self.table)
        self.table.setItemDelegateForColumn(COLUMN_STATUS, self._badge_delegate)
        selection = self.table.selectionModel()
        selection.currentRowChanged.connect(self._on_current_row_changed)

    def _build_actions(self) -> None:
        menu = self.menuBar()
        file_menu = menu.addMenu("&File")
        self.refresh_action = QAction("&Refresh", self)
        self.refresh_action.setShortcut(QKeySequence(Qt.Key.Key_F5))
        self.refresh_action.triggered.connect(self.refresh)
        self.add_action = QAction("&Add mailbox...", self)
        self.add_action.setShortcut(QKeySequence(QKeySequence.StandardKey.New))
        self.add_action.triggered.connect(self.add_requested)
        self.sign_out_action = QAction("Sign &out", self)
        self.sign_out_action.triggered.connect(self.sign_out)
        quit_action = QAction("&Quit", self)
        quit_action.setShortcut(QKeySequence(QKeySequence.StandardKey.Quit))
        quit_action.setMenuRole(QAction.MenuRole.QuitRole)
        quit_action.triggered.connect(self.close)
        file_menu.addAction(self.refresh_action)
        file_menu.addAction(self.add_action)
        file_menu.addSeparator()
        file_menu.addAction(self.sign_out_action)
        file_menu.addSeparator()
        file_menu.addAction(quit_action)

        view_menu = menu.addMenu("&View")
        self.find_action = QAction("&Find", self)
        self.find_action.setShortcut(QKeySequence(QKeySequence.StandardKey.Find))
        self.find_action.triggered.connect(self.focus_search)
        clear_action = QAction("&Clear search and filter", self)
        clear_action.triggered.connect(self.clear_filters)
        view_menu.addAction(self.find_action)
        view_menu.addAction(clear_action)

        self._build_mailbox_menu(menu.addMenu("&Mailbox"))

        help_menu = menu.addMenu("&Help")
        about_action = QAction(f"&About {APP_DISPLAY_NAME}", self)
        about_action.setMenuRole(QAction.MenuRole.AboutRole)
        about_action.triggered.connect(self._on_about_triggered)
        help_menu.addAction(about_action)
        self._update_actions()

    def _build_mailbox_menu(self, mailbox_menu: QMenu) -> None:
        """Every action on the selected mailbox, with its shortcut, in a menu and a context menu."""
        shortcuts = {
            MailboxAction.AUTHORISE: QKeySequence("Ctrl+L"),
            MailboxAction.REAUTHORISE: QKeySequence("Ctrl+Shift+L"),
            MailboxAction.RESET: QKeySequence("Ctrl+Shift+R"),
            MailboxAction.SELFTEST: QKeySequence("Ctrl+T"),
            MailboxAction.REMOVE: QKeySequence(QKeySequence.StandardKey.Delete),
        }
        self.mailbox_actions: dict[MailboxAction, QAction] = {}
        for action_kind, shortcut in shortcuts.items():
            action = QAction(texts.ACTION_LABELS[action_kind], self)
            action.setShortcut(shortcut)
            action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            label = texts.ACTION_LABELS[action_kind].replace("&", "").rstrip(".")
            action.setToolTip(
                f"{label} ({shortcut.toString(QKeySequence.SequenceFormat.NativeText)})"
            )
            action.triggered.connect(
                lambda _checked=False, kind=action_kind: self._on_menu_action(kind)
            )
            self.mailbox_actions[action_kind] = action
            mailbox_menu.addAction(action)
        mailbox_menu.addSeparator()
        self.copy_address_action = QAction("&Copy address", self)
        self.copy_address_action.setShortcut(QKeySequence(QKeySequence.StandardKey.Copy))
        self.copy_address_action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self.copy_address_action.triggered.connect(self.copy_selected_address)
        self.table.addAction(self.copy_address_action)
        mailbox_menu.addAction(self.copy_address_action)
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.customContextMenuRequested.connect(self._on_table_context_menu_requested)
        self._update_mailbox_actions()

    def _on_menu_action(self, kind: MailboxAction) -> None:
        mailbox = self.selected_mailbox()
        if mailbox is not None and kind in mailbox.actions:
            self._on_action_requested(kind, mailbox)

    def _on_table_context_menu_requested(self, position: QPoint) -> None:
        index = self.table.indexAt(position)
        if not index.isValid():
            return
        self.table.selectRow(index.row())
        menu = QMenu(self.table)
        for action in self.mailbox_actions.values():
            if action.isEnabled():
                menu.addAction(action)
        menu.addSeparator()
        menu.addAction(self.copy_address_action)
        menu.popup(self.table.viewport().mapToGlobal(position))

    def copy_selected_address(self) -> None:
        """Put the selected mailbox's address on the clipboard."""
        mailbox = self.selected_mailbox()
        if mailbox is not None:
            QGuiApplication.clipboard().setText(mailbox.address)
            self.statusBar().showMessage(f"Copied {mailbox.address}", 3000)

    def _update_mailbox_actions(self) -> None:
        self._update_mailbox_actions_for(self.selected_mailbox())

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.environment_label = QLabel(self)
        self.environment_label.setObjectName("environmentLabel")
        self.admin_label = QLabel("Not signed in", self)
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

    def _restore_state(self) -> None:
        self.resize(1320, 820)
        self._pending_splitter_state: QByteArray | None = None
        state = self._state
        # Compared as text: some QSettings backends give numbers back as strings.
        if str(state.value("window/version")) != str(_STATE_VERSION):
            return
        for key, restore in (
            ("window/geometry", self.restoreGeometry),
            ("window/state", self.restoreState),
            ("window/columns", self.table.horizontalHeader().restoreState),
        ):
            value = state.value(key)
            if isinstance(value, QByteArray | bytes):
                restore(QByteArray(value))
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
        self.refresh_timer.stop()
        if self._sign_in_dialog is not None:
            self._sign_in_dialog.finish()
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
        self.environment_label.setText(environment)
        self.environment_label.setVisible(bool(environment))
        colours = self._theme.message_colours(MessageLevel.WARNING)
        self.environment_label.setStyleSheet(
            f"QLabel#environmentLabel {{ background: {colours.background}; "
            f"color: {colours.foreground}; border-radius: 3px; padding: 1px 6px; "
            "font-weight: bold; }"
        )
        self.environment_label.setToolTip(
            "Running against the built-in sandbox: a simulated organisation on this computer."
        )
        self.setWindowTitle(
            f"{APP_DISPLAY_NAME} ({environment})" if environment else APP_DISPLAY_NAME
        )
        self.sign_in_page.set_note(sign_in_note)
        self.start_silent_sign_in()

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
        self.show_starting("Signing in...")
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
            self.sign_in_page.show_busy("Waiting for the browser...")
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
        if isinstance(error, NotSuperAdmin):
            self._show_not_super_admin(error.username)
            return
        problem = "Sign-in cancelled." if isinstance(error, Cancelled) else _explain(error)
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
        self.admin_label.setText(f"Signed in as {session.username}")
        self.admin_label.setToolTip(session.me.display_name or session.username)
        self.organisation_label.setText(f"Organisation: {session.organisation.name}")
        self.organisation_label.setToolTip(f"Organisation: {session.organisation.name}")
        self.organisation_label.setVisible(True)
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
        self.admin_label.setText(f"Signed in as {username} (not a super admin)")
        self.pages.setCurrentIndex(Page.SIGN_IN)
        self.sign_in_page.show_not_super_admin(username)
        self._update_actions()

    def _show_sign_in_expired(self, problem: str = "") -> None:
        text = (
            "Your sign-in has expired or was revoked, so the list below may be out of date."
            " Sign in again to continue."
        )
        if problem:
            text = f"{text} {problem}"
        self.message_bar.show_message(
            text,
            level=MessageLevel.WARNING,
            key=MESSAGE_SIGN_IN,
            action_text="Sign in again",
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
        self.admin_label.setText("Not signed in")
        self.organisation_label.setVisible(False)
        self.pages.setCurrentIndex(Page.SIGN_IN)
        self.sign_in_page.show_busy("Signing out...")
        self._update_actions()

        def work(_cancel: threading.Event, _progress: Progress) -> list[str]:
            return services.sign_out()

        def finished(_result: Any, error: BaseException | None) -> None:
            self._set_connection(ConnectionState.SIGNED_OUT)
            self.signed_out.emit()
            if error is not None:
                self._show_sign_in_prompt(f"Signing out did not complete: {_explain(error)}")
                return
            self._show_sign_in_prompt()
            if then_sign_in:
                self.start_interactive_sign_in()

        self.tasks.start("sign out", work, on_finished=finished)

    def _sign_in_running(self) -> bool:
        return self._sign_in_handle is not None and self._sign_in_handle.running

    def _forget_list(self) -> None:
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
        self.model.upsert(page)
        self._loaded_count += len(page)
        if not self._loaded_once:
            self.placeholder.set_text(f"{self._loaded_count:,} loaded so far")

    def _on_refresh_finished(self, result: Any, error: BaseException | None) -> None:
        self._refresh_handle = None
        self._loading = False
        self.load_progress.setVisible(False)
        self.refresh_button.setEnabled(True)
        now = self._clock()
        if error is None:
            if isinstance(result, MailboxList):
                self.model.merge(result.items)
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
            self._on_refresh_failed(error)
        self._update_refreshed_label()
        self._sync_views()
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
            f"The list may be out of date (last refreshed {when})."
            if self._loaded_once and when
            else "The mailboxes could not be loaded."
        )
        self.message_bar.show_message(
            f"{prefix} {_explain(error)}",
            level=MessageLevel.WARNING if self._loaded_once else MessageLevel.ERROR,
            key=MESSAGE_REFRESH,
            action_text="Retry",
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
        text = state.value
        tooltip = ""
        if state is ConnectionState.OFFLINE and self._stale and self._refreshed_at:
            text = f"Offline: list from {texts.local_clock(self._refreshed_at)}"
            tooltip = "The Qargo API cannot be reached; the list shown may be out of date."
        elif state is ConnectionState.SIGN_IN_EXPIRED:
            tooltip = "Sign in again to see the current list."
        colour = {
            ConnectionState.ONLINE: self._theme.connection_colour(True),
            ConnectionState.OFFLINE: self._theme.connection_colour(False),
            ConnectionState.SIGN_IN_EXPIRED: self._theme.connection_colour(False),
        }.get(state)
        self.connection_label.setText(f"\u25cf {text}")
        self.connection_label.setToolTip(tooltip)
        self.connection_label.setAccessibleName(f"Connection: {text}")
        self.connection_label.setStyleSheet(f"color: {colour};" if colour else "")

    def _update_refreshed_label(self) -> None:
        if self._refreshed_at is None:
            self.refreshed_label.setText("Not refreshed yet" if self._session else "")
            self.refreshed_label.setToolTip("")
            return
        text = f"Refreshed {texts.local_clock(self._refreshed_at)}"
        if self._checked_at is not None and self._checked_at != self._refreshed_at:
            text += f", checked {texts.local_clock(self._checked_at)}"
        if self._stale:
            text += " (may be out of date)"
        self.refreshed_label.setText(text)
        tooltip = f"List last loaded at {texts.local_time(self._refreshed_at, seconds=True)}"
        if self._checked_at is not None:
            tooltip += (
                f"\nLast checked for changes at {texts.local_time(self._checked_at, seconds=True)}"
            )
        self.refreshed_label.setToolTip(tooltip)

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
                "No mailboxes match",
                "Nothing matches the search text and state chosen.",
                button="Clear search and filter",
            )
            action = self.clear_filters
        elif self._loading and not self._loaded_once:
            self.placeholder.show_state(
                "Loading the organisation's mailboxes...",
                f"{self._loaded_count:,} loaded so far" if self._loaded_count else "",
                busy=True,
            )
        elif self._load_error is not None and not self._loaded_once:
            self.placeholder.show_state(
                "The mailboxes could not be loaded",
                _explain(self._load_error),
                button="Retry",
            )
            action = self.refresh
        elif self._loaded_once:
            self.placeholder.show_state(
                "No mailboxes yet",
                "Add the first Microsoft 365 mailbox that Qargo should read and send mail for.",
                button="Add mailbox...",
            )
            action = self.add_requested.emit
        else:
            self.placeholder.show_state(
                "Not loaded yet", "Refresh to load the list.", button="Refresh"
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
        theme = Theme.from_system()
        if theme.dark == self._theme.dark:
            return
        self._theme = theme
        self.model.set_theme(theme)
        self.message_bar.set_theme(theme)
        self.status_filter.set_theme(theme)
        self.detail_pane.set_theme(theme)
        self._set_connection(self._connection)

    def _on_about_triggered(self) -> None:
        details = ""
        if self._services is not None:
            details = f"Organisation API: {self._services.endpoints.api_base_url}"
        dialogs.show_about(self, details)


def _explain(error: BaseException) -> str:
    if isinstance(error, QargoError):
        return error.explain()
    return f"Something went wrong that the app does not recognise ({type(error).__name__})."
