"""Status colours and icons, named per light and dark theme.

Colour never stands alone: every state also has an icon (a distinct shape, not only a
distinct colour) and words (see :mod:`qargo_desktop.ui.texts`). Each foreground and
background pair meets WCAG's 4.5:1 contrast for normal text; a test computes it.

The theme follows the system's light or dark scheme unless Preferences chose one
(:func:`apply_colour_scheme`); where the platform cannot switch its own palette (Linux
without a desktop portal, the offscreen platform), the app draws with Fusion and its own
palette of the chosen scheme, so the window and the state colours always agree.

The icons are SVG files drawn in the light theme's colours. For the dark theme the same
vector source is recoloured (light foreground -> dark foreground, white -> dark
background) before it is rendered, so one file per state serves both themes.
"""

from __future__ import annotations

import enum
import functools
import logging
from dataclasses import dataclass

from PySide6.QtCore import QByteArray, QRect, QRectF, QSize, Qt
from PySide6.QtGui import (
    QColor,
    QGuiApplication,
    QIcon,
    QIconEngine,
    QPainter,
    QPalette,
    QPixmap,
)
from PySide6.QtSvg import QSvgRenderer
from PySide6.QtWidgets import QApplication, QStyleOption

from qargo_desktop.core.models import LinkStatus
from qargo_desktop.core.resources import resource_path

log = logging.getLogger(__name__)

# Pixmaps for every common size and scale (16 px at 100 % to 64 px at 400 %, 256 for the
# Windows taskbar), so high-DPI screens get crisp icons instead of scaled-up ones.
#: The sizes an icon offers (a window's icon, the taskbar's); any other is drawn as well.
_ICON_SIZES = (16, 20, 24, 28, 32, 40, 48, 64, 96, 128, 256)
_WHITE = "#ffffff"

#: The choices of the ``theme`` setting.
THEME_PREFERENCES = ("system", "light", "dark")


class MessageLevel(enum.Enum):
    """How serious a message in the message bar is."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class ColourPair:
    """A text colour and the background it sits on (hex strings)."""

    foreground: str
    background: str


@dataclass(frozen=True, slots=True)
class Palette:
    """The named colours of one theme."""

    name: str
    status: dict[LinkStatus, ColourPair]
    messages: dict[MessageLevel, ColourPair]
    online: str
    offline: str


# Light and dark pairs per state. The light foreground is also the icon's fill colour,
# which is how the SVG files are recoloured for the dark theme.
LIGHT = Palette(
    name="light",
    status={
        LinkStatus.LINKED: ColourPair("#0b4f99", "#dcebfb"),
        LinkStatus.UNLINKED: ColourPair("#4a5561", "#eceff2"),
        LinkStatus.REAUTHORISATION_REQUIRED: ColourPair("#146b38", "#dcf3e4"),
        LinkStatus.LINK_FAILED: ColourPair("#a51d1d", "#fce4e4"),
        LinkStatus.AUTHORISING: ColourPair("#8a5300", "#fff0c2"),
        LinkStatus.UNKNOWN: ColourPair("#4a5561", "#eceff2"),
    },
    messages={
        MessageLevel.INFO: ColourPair("#0b3d75", "#e4effc"),
        MessageLevel.WARNING: ColourPair("#6b4000", "#fff3cd"),
        MessageLevel.ERROR: ColourPair("#8c1717", "#fde6e6"),
    },
    online="#146b38",
    offline="#8a5300",
)

DARK = Palette(
    name="dark",
    status={
        LinkStatus.LINKED: ColourPair("#9ecbff", "#17375e"),
        LinkStatus.UNLINKED: ColourPair("#c9d1d9", "#343b44"),
        LinkStatus.REAUTHORISATION_REQUIRED: ColourPair("#8fe0a8", "#16432a"),
        LinkStatus.LINK_FAILED: ColourPair("#ffb0b0", "#5c1f1f"),
        LinkStatus.AUTHORISING: ColourPair("#ffd27a", "#4a3710"),
        LinkStatus.UNKNOWN: ColourPair("#c9d1d9", "#343b44"),
    },
    messages={
        MessageLevel.INFO: ColourPair("#cfe3ff", "#1b3556"),
        MessageLevel.WARNING: ColourPair("#ffe1a3", "#4a3710"),
        MessageLevel.ERROR: ColourPair("#ffc4c4", "#561d1d"),
    },
    online="#8fe0a8",
    offline="#ffd27a",
)

STATUS_ICON_FILES: dict[LinkStatus, str] = {
    LinkStatus.LINKED: "status-linked.svg",
    LinkStatus.UNLINKED: "status-unlinked.svg",
    LinkStatus.REAUTHORISATION_REQUIRED: "status-reauthorise.svg",
    LinkStatus.LINK_FAILED: "status-link-failed.svg",
    LinkStatus.AUTHORISING: "status-authorising.svg",
    LinkStatus.UNKNOWN: "status-unknown.svg",
}

APP_ICON_FILE = "app.svg"


def relative_luminance(colour: str) -> float:
    """WCAG 2.x relative luminance of a ``#rrggbb`` colour."""
    value = colour.lstrip("#")
    channels = [int(value[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast_ratio(first: str, second: str) -> float:
    """WCAG contrast ratio of two ``#rrggbb`` colours (1 to 21)."""
    lighter, darker = sorted((relative_luminance(first), relative_luminance(second)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def system_prefers_dark() -> bool:
    """Whether the platform asks for a dark colour scheme."""
    app = QGuiApplication.instance()
    if not isinstance(app, QGuiApplication):
        return False
    scheme = app.styleHints().colorScheme()
    if scheme == Qt.ColorScheme.Dark:
        return True
    if scheme == Qt.ColorScheme.Light:
        return False
    # Unknown scheme (offscreen, some Linux desktops): judge by the window colour.
    return app.palette().window().color().lightness() < 128


def _svg_bytes(file_name: str) -> bytes:
    return resource_path("icons", file_name).read_bytes()


#: Engines handed to Qt by :meth:`SvgIconEngine.clone`, kept alive (see there).
_CLONES: list[QIconEngine] = []


class SvgIconEngine(QIconEngine):
    """Draws an SVG icon at the size and scale it is asked for, when it is first asked.

    Rendering every size up front (16 to 256 px) cost several milliseconds per icon before
    the window's first paint; an icon is usually shown at one or two sizes. Each rendered
    pixmap is kept. A disabled icon is the style's greyed version of the normal one.

    Args:
        svg: The SVG source.
        renderer: A renderer already made from it (made at the first draw otherwise).
    """

    def __init__(self, svg: bytes, renderer: QSvgRenderer | None = None) -> None:
        super().__init__()
        self._svg = svg
        self._renderer = renderer
        self._pixmaps: dict[tuple[int, int, QIcon.Mode], QPixmap] = {}

    def _render(self, width: int, height: int) -> QPixmap:
        if self._renderer is None:
            self._renderer = QSvgRenderer(QByteArray(self._svg))
        pixmap = QPixmap(QSize(width, height))
        pixmap.fill(Qt.GlobalColor.transparent)
        painter = QPainter(pixmap)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        self._renderer.render(painter, QRectF(0, 0, width, height))
        painter.end()
        return pixmap

    def _device_pixmap(self, width: int, height: int, mode: QIcon.Mode) -> QPixmap:
        """The icon at ``width`` by ``height`` device pixels, rendered once."""
        if mode is not QIcon.Mode.Disabled:
            mode = QIcon.Mode.Normal  # active and selected icons look the same here
        key = (width, height, mode)
        pixmap = self._pixmaps.get(key)
        if pixmap is None:
            pixmap = self._render(width, height)
            if mode is QIcon.Mode.Disabled:
                app = QApplication.instance()
                if isinstance(app, QApplication):
                    option = QStyleOption()
                    option.palette = app.palette()
                    pixmap = app.style().generatedIconPixmap(mode, pixmap, option)
            self._pixmaps[key] = pixmap
        return pixmap

    def scaledPixmap(  # noqa: N802 (Qt name)
        self, size: QSize, mode: QIcon.Mode, state: QIcon.State, scale: float
    ) -> QPixmap:
        """The icon at ``size`` logical pixels on a screen of ``scale`` (device pixel ratio)."""
        width = max(1, round(size.width() * scale))
        height = max(1, round(size.height() * scale))
        result = QPixmap(self._device_pixmap(width, height, mode))
        result.setDevicePixelRatio(scale)
        return result

    def pixmap(self, size: QSize, mode: QIcon.Mode, state: QIcon.State) -> QPixmap:
        """The icon at ``size`` device pixels."""
        return self.scaledPixmap(size, mode, state, 1.0)

    def paint(self, painter: QPainter, rect: QRect, mode: QIcon.Mode, state: QIcon.State) -> None:
        """Draw the icon into ``rect``, crisp at the painter's scale."""
        # Painted often (a badge on every row shown): the kept pixmap is drawn as it is,
        # one device pixel per device pixel of ``rect``.
        device = painter.device()
        scale = device.devicePixelRatioF() if device is not None else 1.0
        width = max(1, round(rect.width() * scale))
        height = max(1, round(rect.height() * scale))
        painter.drawPixmap(rect, self._device_pixmap(width, height, mode))

    def availableSizes(  # noqa: N802 (Qt name)
        self, mode: QIcon.Mode = QIcon.Mode.Normal, state: QIcon.State = QIcon.State.Off
    ) -> list[QSize]:
        """Any size can be drawn; these are the ones worth offering (window icons)."""
        return [QSize(size, size) for size in _ICON_SIZES]

    def clone(self) -> QIconEngine:
        """A copy (Qt copies an icon's engine before changing a shared icon).

        Qt keeps the pointer but Python would free the copy once this returns (PySide6
        does not hand its ownership to the icon), so it is kept for the process's life.
        The app never changes an icon once made: this list stays empty in practice.
        """
        copy = SvgIconEngine(self._svg, self._renderer)
        _CLONES.append(copy)
        return copy

    def key(self) -> str:
        """What kind of engine this is."""
        return "qargo-svg"


def render_svg_icon(svg: bytes) -> QIcon:
    """An icon drawn from SVG source, at whatever size and scale it is shown."""
    renderer = QSvgRenderer(QByteArray(svg))
    if not renderer.isValid():
        log.warning("An SVG icon could not be read")
        return QIcon()
    return QIcon(SvgIconEngine(svg, renderer))


class Theme:
    """The colours and icons of the current theme.

    Args:
        dark: Whether to use the dark palette.
    """

    def __init__(self, *, dark: bool) -> None:
        self.dark = dark
        self.palette = DARK if dark else LIGHT
        self._icons: dict[LinkStatus, QIcon] = {}

    @classmethod
    def from_system(cls) -> Theme:
        """The theme that matches the platform's colour scheme."""
        return cls(dark=system_prefers_dark())

    @classmethod
    def for_preference(cls, preference: str) -> Theme:
        """The theme of a ``theme`` setting: ``light``, ``dark`` or ``system``."""
        if preference in ("light", "dark"):
            return cls(dark=preference == "dark")
        return cls.from_system()

    def colours(self, status: LinkStatus) -> ColourPair:
        """The foreground and background colours of a state (hex)."""
        return self.palette.status[status]

    def foreground(self, status: LinkStatus) -> QColor:
        """The text colour of a state."""
        return QColor(self.palette.status[status].foreground)

    def background(self, status: LinkStatus) -> QColor:
        """The background colour of a state."""
        return QColor(self.palette.status[status].background)

    def message_colours(self, level: MessageLevel) -> ColourPair:
        """The colours of a message bar entry."""
        return self.palette.messages[level]

    def connection_colour(self, online: bool) -> str:
        """The status bar's colour for the connection (online or not)."""
        return self.palette.online if online else self.palette.offline

    def status_svg(self, status: LinkStatus) -> bytes:
        """The SVG source of a state's icon, recoloured for this theme."""
        svg = _svg_bytes(STATUS_ICON_FILES[status])
        if not self.dark:
            return svg
        light = LIGHT.status[status]
        dark = DARK.status[status]
        text = svg.decode("utf-8")
        # Two passes through a placeholder so the swaps cannot undo each other.
        text = text.replace(light.foreground, "@FG@").replace(_WHITE, "@BG@")
        text = text.replace("@FG@", dark.foreground).replace("@BG@", dark.background)
        return text.encode("utf-8")

    def status_icon(self, status: LinkStatus) -> QIcon:
        """The icon of a state (vector source, rendered once per theme)."""
        icon = self._icons.get(status)
        if icon is None:
            icon = render_svg_icon(self.status_svg(status))
            self._icons[status] = icon
        return icon


# The window colours of the app's own light and dark palettes (Fusion), used only where the
# platform does not switch schemes itself. Text on every background meets 4.5:1.
WINDOW_COLOURS: dict[str, dict[QPalette.ColorRole, str]] = {
    "light": {
        QPalette.ColorRole.Window: "#efefef",
        QPalette.ColorRole.WindowText: "#1f1f1f",
        QPalette.ColorRole.Base: "#ffffff",
        QPalette.ColorRole.AlternateBase: "#f5f5f5",
        QPalette.ColorRole.Text: "#1f1f1f",
        QPalette.ColorRole.Button: "#efefef",
        QPalette.ColorRole.ButtonText: "#1f1f1f",
        QPalette.ColorRole.Highlight: "#2f65ca",
        QPalette.ColorRole.HighlightedText: "#ffffff",
        QPalette.ColorRole.PlaceholderText: "#5f6368",
        QPalette.ColorRole.ToolTipBase: "#ffffdc",
        QPalette.ColorRole.ToolTipText: "#1f1f1f",
        QPalette.ColorRole.Link: "#0b57d0",
    },
    "dark": {
        QPalette.ColorRole.Window: "#202124",
        QPalette.ColorRole.WindowText: "#e8eaed",
        QPalette.ColorRole.Base: "#1b1b1d",
        QPalette.ColorRole.AlternateBase: "#26272a",
        QPalette.ColorRole.Text: "#e8eaed",
        QPalette.ColorRole.Button: "#2d2e31",
        QPalette.ColorRole.ButtonText: "#e8eaed",
        QPalette.ColorRole.Highlight: "#3a6fb0",
        QPalette.ColorRole.HighlightedText: "#ffffff",
        QPalette.ColorRole.PlaceholderText: "#9aa0a6",
        QPalette.ColorRole.ToolTipBase: "#2d2e31",
        QPalette.ColorRole.ToolTipText: "#e8eaed",
        QPalette.ColorRole.Link: "#8ab4f8",
    },
}


def window_palette(*, dark: bool) -> QPalette:
    """The app's own palette of a scheme (disabled text dimmed, still readable)."""
    colours = WINDOW_COLOURS["dark" if dark else "light"]
    palette = QPalette()
    for role, colour in colours.items():
        palette.setColor(role, QColor(colour))
    dimmed = "#8a8d91" if dark else "#6e7276"
    for role in (
        QPalette.ColorRole.WindowText,
        QPalette.ColorRole.Text,
        QPalette.ColorRole.ButtonText,
    ):
        palette.setColor(QPalette.ColorGroup.Disabled, role, QColor(dimmed))
    return palette


class _Override:
    """The style and palette the app had before it drew a scheme itself."""

    saved: tuple[str, QPalette] | None = None


def apply_colour_scheme(preference: str) -> Theme:
    """Make the whole app light, dark, or follow the system; returns the matching theme.

    Asks the platform first (``QStyleHints.setColorScheme``: Windows 11 and macOS switch
    their own palette); where the platform does not follow, switches to Fusion with the
    app's own palette of that scheme. ``system`` undoes both.
    """
    app = QApplication.instance()
    if not isinstance(app, QApplication):
        return Theme.for_preference(preference)
    hints = app.styleHints()
    if _Override.saved is not None:
        style, palette = _Override.saved
        _Override.saved = None
        app.setStyle(style)
        app.setPalette(palette)
    if preference not in ("light", "dark"):
        hints.unsetColorScheme()
        return Theme.from_system()
    dark = preference == "dark"
    hints.setColorScheme(Qt.ColorScheme.Dark if dark else Qt.ColorScheme.Light)
    if system_prefers_dark() != dark:
        log.info("The platform did not switch to the %s scheme; drawing it with Fusion", preference)
        _Override.saved = (app.style().name(), app.palette())
        app.setStyle("Fusion")
        app.setPalette(window_palette(dark=dark))
    return Theme(dark=dark)


@functools.cache
def app_icon() -> QIcon:
    """The application's icon (one for the whole app; each size drawn once, when asked)."""
    return render_svg_icon(_svg_bytes(APP_ICON_FILE))
