"""Status colours, contrast and icons per theme."""

from __future__ import annotations

import pytest

from PySide6.QtCore import QByteArray
from PySide6.QtSvg import QSvgRenderer

from qargo_desktop.core.models import LinkStatus
from qargo_desktop.core.resources import resource_path
from qargo_desktop.ui.theme import (
    DARK,
    LIGHT,
    STATUS_ICON_FILES,
    MessageLevel,
    Theme,
    app_icon,
    contrast_ratio,
    relative_luminance,
)


def test_contrast_formula_matches_wcag_reference_values() -> None:
    assert contrast_ratio("#000000", "#ffffff") == pytest.approx(21.0)
    assert contrast_ratio("#ffffff", "#ffffff") == pytest.approx(1.0)
    # WCAG's own example: #777777 on white is just under 4.5:1.
    assert contrast_ratio("#777777", "#ffffff") == pytest.approx(4.48, abs=0.01)
    assert relative_luminance("#ffffff") == pytest.approx(1.0)


@pytest.mark.parametrize("palette", [LIGHT, DARK], ids=lambda p: p.name)
@pytest.mark.parametrize("status", list(LinkStatus), ids=lambda s: s.value)
def test_every_state_pair_meets_aa_contrast(palette, status) -> None:
    pair = palette.status[status]
    assert contrast_ratio(pair.foreground, pair.background) >= 4.5


@pytest.mark.parametrize("palette", [LIGHT, DARK], ids=lambda p: p.name)
@pytest.mark.parametrize("level", list(MessageLevel), ids=lambda level: level.value)
def test_message_colours_meet_aa_contrast(palette, level) -> None:
    pair = palette.messages[level]
    assert contrast_ratio(pair.foreground, pair.background) >= 4.5


def test_the_states_are_the_colours_the_design_names() -> None:
    def hue(colour: str) -> str:
        from PySide6.QtGui import QColor

        value = QColor(colour)
        channels = (value.red(), value.green(), value.blue())
        if max(channels) - min(channels) < 40:  # little chroma: a grey, even if tinted
            return "grey"
        degrees = value.hsvHue()
        for name, low, high in (("red", 345, 360), ("red", 0, 15), ("amber", 25, 55),
                                ("green", 90, 170), ("blue", 190, 250)):  # fmt: skip
            if low <= degrees <= high:
                return name
        return f"hue {degrees}"

    expected = {
        LinkStatus.LINKED: "blue",
        LinkStatus.UNLINKED: "grey",
        LinkStatus.REAUTHORISATION_REQUIRED: "green",
        LinkStatus.LINK_FAILED: "red",
        LinkStatus.AUTHORISING: "amber",
        LinkStatus.UNKNOWN: "grey",
    }
    for palette in (LIGHT, DARK):
        for status, name in expected.items():
            assert hue(palette.status[status].foreground) == name, (palette.name, status)


@pytest.mark.parametrize("status", list(LinkStatus), ids=lambda s: s.value)
def test_icons_are_valid_vector_files_for_both_themes(status) -> None:
    path = resource_path("icons", STATUS_ICON_FILES[status])
    assert path.read_text(encoding="utf-8").lstrip().startswith("<svg")
    for theme in (Theme(dark=False), Theme(dark=True)):
        svg = theme.status_svg(status)
        assert QSvgRenderer(QByteArray(svg)).isValid()
        icon = theme.status_icon(status)
        assert not icon.isNull()
        assert not icon.pixmap(16, 16).toImage().isNull()


def test_dark_icons_are_recoloured_to_the_dark_palette() -> None:
    svg = Theme(dark=True).status_svg(LinkStatus.LINKED).decode()
    assert DARK.status[LinkStatus.LINKED].foreground in svg
    assert LIGHT.status[LinkStatus.LINKED].foreground not in svg


def test_each_state_has_its_own_icon_shape() -> None:
    contents = {resource_path("icons", name).read_text() for name in STATUS_ICON_FILES.values()}
    assert len(contents) == len(STATUS_ICON_FILES)


def test_app_icon_renders() -> None:
    assert not app_icon().isNull()


def test_dark_detection_follows_the_palette_when_the_scheme_is_unknown(qapp) -> None:
    from qargo_desktop.ui.theme import system_prefers_dark

    # Offscreen reports no colour scheme; the default palette is light.
    assert system_prefers_dark() is False


@pytest.mark.parametrize("scale", [1.0, 1.25, 1.5, 2.0])
def test_icons_are_drawn_crisp_at_the_scale_asked(scale: float) -> None:
    # Drawn from the vector source at the device pixels asked, not scaled from another size.
    from PySide6.QtCore import QSize
    from PySide6.QtGui import QIcon, QImage, QPainter, QPixmap

    icon = Theme(dark=False).status_icon(LinkStatus.LINK_FAILED)
    pixmap = icon.pixmap(QSize(20, 20), scale)
    assert pixmap.size() == QSize(round(20 * scale), round(20 * scale))
    assert pixmap.devicePixelRatio() == scale
    colours = {pixmap.toImage().pixel(x, y) for x in range(pixmap.width()) for y in range(6)}
    assert len(colours) > 2  # drawn, not blank
    # Painting into a high-DPI surface draws at its scale too.
    target = QPixmap(QSize(round(40 * scale), round(40 * scale)))
    target.setDevicePixelRatio(scale)
    target.fill()
    painter = QPainter(target)
    icon.paint(painter, 0, 0, 20, 20)
    painter.end()
    image = target.toImage().convertToFormat(QImage.Format.Format_RGB32)
    drawn = image.copy(0, 0, round(20 * scale), round(20 * scale))
    drawn.setDevicePixelRatio(1.0)
    source = icon.pixmap(QSize(20, 20), scale).toImage()
    source.setDevicePixelRatio(1.0)  # compare device pixel for device pixel
    expected = QImage(drawn.size(), QImage.Format.Format_RGB32)
    expected.fill(0xFFFFFFFF)
    painter = QPainter(expected)
    painter.drawImage(0, 0, source)
    painter.end()
    assert drawn == expected
    # A disabled icon is greyed by the style.
    disabled = icon.pixmap(QSize(20, 20), scale, QIcon.Mode.Disabled)
    assert disabled.toImage() != pixmap.toImage()


def test_the_app_icon_offers_the_window_sizes() -> None:
    from PySide6.QtCore import QSize

    sizes = app_icon().availableSizes()
    assert QSize(16, 16) in sizes and QSize(256, 256) in sizes
    assert app_icon().pixmap(QSize(256, 256)).size() == QSize(256, 256)


def test_a_copied_icon_that_is_changed_keeps_drawing() -> None:
    # Changing a shared icon makes Qt clone its engine; the clone must outlive the call
    # that made it (PySide6 does not hand the copy's ownership to Qt).
    import gc

    from PySide6.QtCore import QSize
    from PySide6.QtGui import QIcon, QPixmap

    copies = []
    for _ in range(50):
        icon = Theme(dark=True).status_icon(LinkStatus.LINKED)
        copy = QIcon(icon)
        copy.addPixmap(QPixmap(8, 8))  # detaches: the engine is cloned
        copies.append(copy)
        gc.collect()
    for copy in copies:
        assert not copy.pixmap(QSize(24, 24)).toImage().isNull()
