"""Preferences: edited in a dialog, written to the TOML file, validated, applied at once."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from PySide6.QtGui import QGuiApplication

from qargo_desktop.core.config import ConfigError, Settings, load_settings
from qargo_desktop.ui import dialogs, i18n
from qargo_desktop.ui.preferences import PreferencesDialog
from qargo_desktop.ui.theme import apply_colour_scheme, system_prefers_dark

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def settings_in(folder: Path, text: str = "") -> Settings:
    config = folder / "config.toml"
    if text:
        config.write_text(text, encoding="utf-8")
    return load_settings(None, {}, {"config_dir": folder})


@pytest.fixture
def dialog_for(qtbot):
    def make(settings: Settings) -> PreferencesDialog:
        dialog = PreferencesDialog(None, settings)
        qtbot.addWidget(dialog)
        return dialog

    return make


def test_the_dialog_shows_the_settings_in_use(dialog_for, tmp_path: Path) -> None:
    settings = settings_in(
        tmp_path,
        'language = "fr"\ntheme = "dark"\nrefresh_interval_s = 120\nsign_in_timeout_s = 600\n'
        'proxy = "http://proxy.corp.example:3128"\n',
    )
    dialog = dialog_for(settings)
    assert dialog.language.currentData() == "fr"
    assert dialog.theme.currentData() == "dark"
    assert dialog.refresh_interval.value() == 120
    assert dialog.sign_in_timeout.value() == 600
    assert dialog.proxy_mode.currentData() == "custom"
    assert dialog.proxy_url.text() == "http://proxy.corp.example:3128"
    assert dialog.proxy_url.isEnabled()
    assert dialog.config_file == tmp_path / "config.toml"


def test_saving_writes_the_file_keeps_other_keys_and_validates(dialog_for, tmp_path) -> None:
    settings = settings_in(
        tmp_path,
        'client_id = "0b6f8a2e-3c51-4d7e-9a6b-2f1c8e4d5a70"\nlog_level = "DEBUG"\n',
    )
    ca = tmp_path / "corp-root.pem"
    ca.write_text(PEM, encoding="ascii")
    dialog = dialog_for(settings)
    dialog.language.setCurrentIndex(dialog.language.findData("nl"))
    dialog.theme.setCurrentIndex(dialog.theme.findData("light"))
    dialog.refresh_interval.setValue(0)
    dialog.sign_in_timeout.setValue(900)
    dialog.proxy_mode.setCurrentIndex(dialog.proxy_mode.findData("none"))
    dialog.ask_ca_file = lambda: str(ca)
    dialog.browse_button.click()
    dialog.accept()

    assert dialog.result() == dialog.DialogCode.Accepted
    written = tomllib.loads((tmp_path / "config.toml").read_text(encoding="utf-8"))
    assert written["client_id"] == "0b6f8a2e-3c51-4d7e-9a6b-2f1c8e4d5a70"
    assert written["log_level"] == "DEBUG"
    assert written["language"] == "nl" and written["theme"] == "light"
    assert written["refresh_interval_s"] == 0 and written["sign_in_timeout_s"] == 900
    assert written["proxy"] == "none" and written["extra_ca_file"] == str(ca)
    # What the next start reads is what the dialog hands back.
    reread = load_settings(None, {}, {"config_dir": tmp_path})
    saved = dialog.saved
    assert saved is not None
    for key in ("language", "theme", "refresh_interval_s", "sign_in_timeout_s", "proxy"):
        assert getattr(saved, key) == getattr(reread, key), key
    assert saved.extra_ca_file == ca
    assert saved.source_of("language") == "file"


def test_system_language_removes_the_key(dialog_for, tmp_path: Path) -> None:
    dialog = dialog_for(settings_in(tmp_path, 'language = "nl"\n'))
    dialog.language.setCurrentIndex(0)
    dialog.accept()
    written = tomllib.loads((tmp_path / "config.toml").read_text(encoding="utf-8"))
    assert "language" not in written
    assert dialog.saved is not None and dialog.saved.language is None


def test_a_value_the_next_start_would_refuse_is_not_saved(dialog_for, tmp_path: Path) -> None:
    before = 'theme = "dark"\n'
    dialog = dialog_for(settings_in(tmp_path, before))
    dialog.show()
    dialog.proxy_mode.setCurrentIndex(dialog.proxy_mode.findData("custom"))
    dialog.proxy_url.setText("ftp://proxy.example")
    dialog.accept()
    assert dialog.isVisible() and dialog.saved is None
    assert dialog.problem.isVisible()
    assert "proxy" in dialog.problem.text()
    assert str(tmp_path / "config.toml") in dialog.problem.text()
    assert ".preferences." not in dialog.problem.text()
    assert (tmp_path / "config.toml").read_text(encoding="utf-8") == before
    assert not list(tmp_path.glob(".preferences.*"))

    dialog.ca_file.setText(str(tmp_path / "missing.pem"))
    dialog.proxy_mode.setCurrentIndex(dialog.proxy_mode.findData("system"))
    dialog.accept()
    assert "file not found" in dialog.problem.text()


def test_a_key_set_by_the_environment_is_locked_and_left_alone(dialog_for, tmp_path) -> None:
    settings = load_settings(None, {"QARGO_PROXY": "none"}, {"config_dir": tmp_path})
    dialog = dialog_for(settings)
    assert not dialog.proxy_mode.isEnabled() and not dialog.proxy_url.isEnabled()
    assert "QARGO_PROXY" in dialog.proxy_mode.toolTip()
    dialog.accept()
    written = tomllib.loads((tmp_path / "config.toml").read_text(encoding="utf-8"))
    assert "proxy" not in written
    assert dialog.saved is not None and dialog.saved.source_of("proxy") == "environment"


def test_the_theme_setting_is_validated() -> None:
    assert load_settings(None, {"QARGO_THEME": "Dark"}, {}).theme == "dark"
    with pytest.raises(ConfigError, match="QARGO_THEME: expected one of system, light, dark"):
        load_settings(None, {"QARGO_THEME": "purple"}, {})


# -- applied at once --------------------------------------------------------------------------


def test_saved_preferences_apply_to_the_running_window(
    qtbot, signed_in_window, monkeypatch, tmp_path: Path
) -> None:
    window = signed_in_window
    base = window.settings
    chosen = dataclasses.replace(
        base, language="nl", theme="dark", refresh_interval_s=30.0, sign_in_timeout_s=120.0
    )
    monkeypatch.setattr(dialogs, "edit_preferences", lambda parent, settings: chosen)
    changed: list[object] = []
    window.settings_changed.connect(changed.append)
    try:
        window.preferences_action.trigger()
        qtbot.waitUntil(lambda: window.file_menu.title() == "&Bestand")
        assert i18n.current_language() == "nl"
        assert window.theme.dark
        assert window.model.theme.dark and window.detail_pane._theme.dark
        assert system_prefers_dark()  # the whole app is dark, not only the state colours
        assert window.refresh_timer.interval() == 30_000 and window.refresh_timer.isActive()
        assert window.services.sign_in_timeout_s == 120.0
        assert changed == [chosen] and window.settings is chosen
    finally:
        i18n.install_language("en-GB")
        apply_colour_scheme("system")
    assert not system_prefers_dark()
    assert QGuiApplication.styleHints() is not None


def test_a_new_proxy_is_promised_for_the_next_start(signed_in_window) -> None:
    window = signed_in_window
    window.apply_settings(dataclasses.replace(window.settings, proxy="none"))
    texts = [text for _key, text, _count in window.message_bar.messages()]
    assert any("next start" in text for text in texts)


def test_a_forced_theme_ignores_the_system_until_set_back(signed_in_window) -> None:
    window = signed_in_window
    try:
        window.set_theme_preference("dark")
        window._on_color_scheme_changed(None)  # the system says something: ignored
        assert window.theme.dark
    finally:
        window.set_theme_preference("system")
    assert not window.theme.dark


def test_help_menu_diagnostics_log_folder_and_about(signed_in_window, monkeypatch) -> None:
    window = signed_in_window
    assert window.diagnostics_action in window.help_menu.actions()
    asked: list[bool] = []
    window.diagnostics_requested.disconnect()  # the Diagnostics window is tested elsewhere
    window.diagnostics_requested.connect(lambda: asked.append(True))
    window.diagnostics_action.trigger()
    assert asked == [True]

    opened: list[Path] = []
    window.folder_opener = lambda folder: opened.append(folder) or True
    window.log_folder_action.trigger()
    assert opened and opened[0].name == "logs"

    shown: list[str] = []
    monkeypatch.setattr(dialogs, "show_about", lambda parent, details: shown.append(details))
    window.about_action.trigger()
    assert shown == ["Organisation API: https://127.0.0.1:1/api"]
    words = dialogs.about_texts()
    for name in ("Qt", "PySide6", "Python", "MSAL for Python", "keyring"):
        assert f"{name} " in words["licences"]
    assert "LGPL-3.0-only" in words["licences"] and "MIT" in words["licences"]
    assert "Qt " in words["informative"] and "PySide6 " in words["informative"]
