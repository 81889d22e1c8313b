"""Preferences: the settings a person changes from the window, written to the config file.

The dialog edits language, theme, refresh interval, sign-in time limit, proxy and the
extra CA file. Saving writes them into the TOML config file (every other key in it is
kept; comments are not, since the file is rewritten), then reads the file back with the
same validation as at start-up: a value that would stop the next start is refused here,
with the reason, and the dialog stays open. A key that the environment or a command-line
flag sets is shown but locked, because it would override the file anyway.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from PySide6.QtCore import QCoreApplication, Qt
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from qargo_desktop.core.config import (
    FIELDS,
    ConfigError,
    Settings,
    app_paths,
    load_settings,
    write_config,
)
from qargo_desktop.ui import i18n

log = logging.getLogger(__name__)

translate = QCoreApplication.translate

#: The keys this dialog edits.
EDITED_KEYS = (
    "language",
    "theme",
    "refresh_interval_s",
    "sign_in_timeout_s",
    "proxy",
    "extra_ca_file",
)

_ENV_VARS = {spec.name: spec.env_var for spec in FIELDS}

_PROXY_SYSTEM = "system"
_PROXY_NONE = "none"
_PROXY_CUSTOM = "custom"


def config_file_for(settings: Settings) -> Path:
    """The file Preferences writes: the one the settings came from, else the default one."""
    return settings.config_file or app_paths(settings).config_file


def _read_document(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as stream:
            return tomllib.load(stream)
    except FileNotFoundError:
        return {}


class PreferencesDialog(QDialog):
    """Edits the settings a person may change from the window.

    Enter saves (OK is the default button); Escape cancels.

    Attributes:
        saved: The settings after a successful save (``None`` until then).

    Args:
        parent: The main window.
        settings: The settings in use.
    """

    def __init__(self, parent: QWidget | None, settings: Settings) -> None:
        super().__init__(parent)
        self.setObjectName("preferencesDialog")
        self.setWindowTitle(translate("PreferencesDialog", "Preferences"))
        self.setMinimumWidth(520)
        self._settings = settings
        self.config_file = config_file_for(settings)
        self.saved: Settings | None = None
        #: Asks for a PEM file; tests replace it (no native file dialog in tests).
        self.ask_ca_file = self._ask_ca_file

        layout = QVBoxLayout(self)
        layout.addWidget(self._build_appearance())
        layout.addWidget(self._build_behaviour())
        layout.addWidget(self._build_network())

        self.problem = QLabel(self)
        self.problem.setObjectName("preferencesProblem")
        self.problem.setWordWrap(True)
        self.problem.setTextFormat(Qt.TextFormat.PlainText)
        self.problem.setStyleSheet("QLabel#preferencesProblem { font-weight: bold; }")
        self.problem.setAccessibleName(translate("PreferencesDialog", "Problem"))
        self.problem.setVisible(False)
        layout.addWidget(self.problem)

        where = QLabel(
            translate("PreferencesDialog", "Saved in {file}").format(file=self.config_file),
            self,
        )
        where.setWordWrap(True)
        where.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(where)

        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, self
        )
        self.ok_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.ok_button.setText(translate("PreferencesDialog", "Save"))
        self.ok_button.setDefault(True)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)

        self._load(settings)
        self._lock_overridden()

    # -- building --------------------------------------------------------------------------

    def _build_appearance(self) -> QGroupBox:
        group = QGroupBox(translate("PreferencesDialog", "Appearance"), self)
        form = QFormLayout(group)
        self.language = QComboBox(group)
        self.language.setObjectName("languageChoice")
        system = i18n.resolve_language(None)
        system_name = next(
            (lang.name for lang in i18n.available_languages() if lang.tag == system), system
        )
        self.language.addItem(
            translate("PreferencesDialog", "System language ({language})").format(
                language=system_name
            ),
            "",
        )
        for language in i18n.available_languages():
            self.language.addItem(language.name, language.tag)
        self.language.setAccessibleName(translate("PreferencesDialog", "Language"))
        self.language.setAccessibleDescription(
            translate("PreferencesDialog", "The language of the window's words, dates and numbers")
        )
        form.addRow(*self._caption(translate("PreferencesDialog", "&Language:"), self.language))

        self.theme = QComboBox(group)
        self.theme.setObjectName("themeChoice")
        for label, value in (
            (translate("PreferencesDialog", "Follow the system"), "system"),
            (translate("PreferencesDialog", "Light"), "light"),
            (translate("PreferencesDialog", "Dark"), "dark"),
        ):
            self.theme.addItem(label, value)
        self.theme.setAccessibleName(translate("PreferencesDialog", "Theme"))
        self.theme.setAccessibleDescription(
            translate("PreferencesDialog", "Light or dark colours, or the system's choice")
        )
        form.addRow(*self._caption(translate("PreferencesDialog", "&Theme:"), self.theme))
        return group

    def _build_behaviour(self) -> QGroupBox:
        group = QGroupBox(translate("PreferencesDialog", "Mailbox list and sign-in"), self)
        form = QFormLayout(group)
        self.refresh_interval = QSpinBox(group)
        self.refresh_interval.setObjectName("refreshInterval")
        # 0 turns automatic refresh off; 1 to 4 are not allowed, so they step to 5.
        self.refresh_interval.setRange(0, 86400)
        self.refresh_interval.setSingleStep(15)
        self.refresh_interval.setSuffix(translate("PreferencesDialog", " s"))
        self.refresh_interval.setSpecialValueText(translate("PreferencesDialog", "Off"))
        self.refresh_interval.setAccessibleName(
            translate("PreferencesDialog", "Refresh interval in seconds")
        )
        self.refresh_interval.setAccessibleDescription(
            translate("PreferencesDialog", "0 turns automatic refresh off; otherwise 5 or more")
        )
        self.refresh_interval.setToolTip(self.refresh_interval.accessibleDescription())
        form.addRow(
            *self._caption(
                translate("PreferencesDialog", "&Refresh the list every:"), self.refresh_interval
            )
        )
        self.sign_in_timeout = QSpinBox(group)
        self.sign_in_timeout.setObjectName("signInTimeout")
        self.sign_in_timeout.setRange(30, 3600)
        self.sign_in_timeout.setSingleStep(30)
        self.sign_in_timeout.setSuffix(translate("PreferencesDialog", " s"))
        self.sign_in_timeout.setAccessibleName(
            translate("PreferencesDialog", "Sign-in time limit in seconds")
        )
        self.sign_in_timeout.setAccessibleDescription(
            translate(
                "PreferencesDialog", "How long a sign-in waits for the browser (30 to 3600 s)"
            )
        )
        self.sign_in_timeout.setToolTip(self.sign_in_timeout.accessibleDescription())
        form.addRow(
            *self._caption(
                translate("PreferencesDialog", "&Sign-in time limit:"), self.sign_in_timeout
            )
        )
        return group

    def _build_network(self) -> QGroupBox:
        group = QGroupBox(translate("PreferencesDialog", "Network"), self)
        form = QFormLayout(group)
        self.proxy_mode = QComboBox(group)
        self.proxy_mode.setObjectName("proxyMode")
        for label, value in (
            (translate("PreferencesDialog", "The system's proxy settings"), _PROXY_SYSTEM),
            (translate("PreferencesDialog", "No proxy (connect directly)"), _PROXY_NONE),
            (translate("PreferencesDialog", "This proxy:"), _PROXY_CUSTOM),
        ):
            self.proxy_mode.addItem(label, value)
        self.proxy_mode.setAccessibleName(translate("PreferencesDialog", "Proxy"))
        self.proxy_mode.currentIndexChanged.connect(self._on_proxy_mode_changed)
        form.addRow(*self._caption(translate("PreferencesDialog", "&Proxy:"), self.proxy_mode))
        self.proxy_url = QLineEdit(group)
        self.proxy_url.setObjectName("proxyUrl")
        self.proxy_url.setPlaceholderText("http://proxy.example:8080")
        self.proxy_url.setAccessibleName(translate("PreferencesDialog", "Proxy address"))
        self.proxy_url.setAccessibleDescription(
            translate(
                "PreferencesDialog", "An http:// or https:// URL, with user:password@ if needed"
            )
        )
        form.addRow(
            *self._caption(translate("PreferencesDialog", "Proxy &address:"), self.proxy_url)
        )
        row = QHBoxLayout()
        self.ca_file = QLineEdit(group)
        self.ca_file.setObjectName("extraCaFile")
        self.ca_file.setPlaceholderText(translate("PreferencesDialog", "None"))
        self.ca_file.setAccessibleName(translate("PreferencesDialog", "Extra CA certificates file"))
        self.ca_file.setAccessibleDescription(
            translate(
                "PreferencesDialog",
                "A PEM file of certificates to trust besides the system's, for a proxy that "
                "inspects secure connections",
            )
        )
        self.ca_file.setToolTip(self.ca_file.accessibleDescription())
        self.browse_button = QPushButton(translate("PreferencesDialog", "&Browse..."), group)
        self.browse_button.setAutoDefault(False)
        self.browse_button.setAccessibleDescription(
            translate("PreferencesDialog", "Choose the certificates file")
        )
        self.browse_button.clicked.connect(self._on_browse_clicked)
        row.addWidget(self.ca_file, 1)
        row.addWidget(self.browse_button)
        caption = self._caption(
            translate("PreferencesDialog", "Extra &certificates:"), self.ca_file
        )
        form.addRow(caption[0], row)
        note = QLabel(
            translate(
                "PreferencesDialog",
                "Proxy and certificate changes apply the next time the app starts.",
            ),
            group,
        )
        note.setWordWrap(True)
        form.addRow(note)
        return group

    def _caption(self, text: str, field: QWidget) -> tuple[QLabel, QWidget]:
        label = QLabel(text, self)
        label.setBuddy(field)
        return label, field

    # -- values ----------------------------------------------------------------------------

    def _load(self, settings: Settings) -> None:
        index = self.language.findData(settings.language or "")
        if index < 0 and settings.language:
            index = self.language.findData(i18n.resolve_language(settings.language, []))
        self.language.setCurrentIndex(max(0, index))
        self.theme.setCurrentIndex(max(0, self.theme.findData(settings.theme)))
        self.refresh_interval.setValue(int(settings.refresh_interval_s))
        self.sign_in_timeout.setValue(int(settings.sign_in_timeout_s))
        if settings.proxy in (_PROXY_SYSTEM, _PROXY_NONE):
            self.proxy_mode.setCurrentIndex(self.proxy_mode.findData(settings.proxy))
        else:
            self.proxy_mode.setCurrentIndex(self.proxy_mode.findData(_PROXY_CUSTOM))
            self.proxy_url.setText(settings.proxy)
        self.ca_file.setText(str(settings.extra_ca_file) if settings.extra_ca_file else "")
        self._on_proxy_mode_changed()

    def values(self) -> dict[str, Any]:
        """The edited keys as they would be written (``None``: leave the key out)."""
        refresh = self.refresh_interval.value()
        if 0 < refresh < 5:
            refresh = 5
        mode = self.proxy_mode.currentData()
        proxy = self.proxy_url.text().strip() if mode == _PROXY_CUSTOM else mode
        ca_file = self.ca_file.text().strip()
        return {
            "language": self.language.currentData() or None,
            "theme": self.theme.currentData(),
            "refresh_interval_s": refresh,
            "sign_in_timeout_s": self.sign_in_timeout.value(),
            "proxy": proxy or _PROXY_SYSTEM,
            "extra_ca_file": ca_file or None,
        }

    def _overridden(self) -> dict[str, str]:
        """Edited keys that the environment or a flag sets, with where."""
        found = {}
        for key in EDITED_KEYS:
            source = self._settings.source_of(key)
            if source == "environment":
                found[key] = _ENV_VARS[key]
            elif source == "flag":
                found[key] = "--" + key.replace("_", "-")
        return found

    def _lock_overridden(self) -> None:
        widgets: dict[str, list[QWidget]] = {
            "language": [self.language],
            "theme": [self.theme],
            "refresh_interval_s": [self.refresh_interval],
            "sign_in_timeout_s": [self.sign_in_timeout],
            "proxy": [self.proxy_mode, self.proxy_url],
            "extra_ca_file": [self.ca_file, self.browse_button],
        }
        for key, where in self._overridden().items():
            why = translate(
                "PreferencesDialog", "Set by {where}, which overrides the settings file."
            ).format(where=where)
            for widget in widgets[key]:
                widget.setEnabled(False)
                widget.setToolTip(why)
                widget.setAccessibleDescription(why)

    def _on_proxy_mode_changed(self, _index: int = 0) -> None:
        custom = self.proxy_mode.currentData() == _PROXY_CUSTOM
        self.proxy_url.setEnabled(custom and "proxy" not in self._overridden())

    def _ask_ca_file(self) -> str:
        path, _chosen = QFileDialog.getOpenFileName(
            self,
            translate("PreferencesDialog", "Extra CA certificates"),
            self.ca_file.text(),
            translate("PreferencesDialog", "PEM certificates (*.pem *.crt *.cer);;All files (*)"),
        )
        return path

    def _on_browse_clicked(self) -> None:
        path = self.ask_ca_file()
        if path:
            self.ca_file.setText(path)

    # -- saving ----------------------------------------------------------------------------

    def accept(self) -> None:
        """Validate and write the file; stay open and say why when a value is refused."""
        try:
            self.saved = self.save()
        except (ConfigError, OSError) as exc:
            self._show_problem(str(exc))
            return
        super().accept()

    def save(self) -> Settings:
        """Write the edited keys into the config file and return the settings to use.

        Raises:
            ConfigError: A value is not usable (nothing is written).
            OSError: The file cannot be read or written.
        """
        document = _read_document(self.config_file)
        overridden = self._overridden()
        for key, value in self.values().items():
            if key in overridden:
                continue
            if value is None:
                document.pop(key, None)
            else:
                document[key] = value

        # Validate a copy first: a refused value must not reach the real file.
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(
            prefix=".preferences.", suffix=".toml", dir=self.config_file.parent
        )
        os.close(descriptor)
        try:
            write_config(Path(temporary), document)
            checked = load_settings(Path(temporary), environ={})
        except ConfigError as exc:
            # The copy's name means nothing to the person: name the real file.
            raise ConfigError(
                [problem.replace(temporary, str(self.config_file)) for problem in exc.problems]
            ) from None
        finally:
            Path(temporary).unlink(missing_ok=True)
        write_config(self.config_file, document)
        log.info("Preferences saved to %s", self.config_file)

        changes = {key: getattr(checked, key) for key in EDITED_KEYS if key not in overridden}
        sources = dict(self._settings.sources)
        for key in changes:
            if key in document:
                sources[key] = "file"
            else:
                sources.pop(key, None)
        return dataclasses.replace(
            self._settings, **changes, sources=sources, config_file=self.config_file
        )

    def _show_problem(self, text: str) -> None:
        self.problem.setText(
            translate("PreferencesDialog", "Not saved: {problem}").format(problem=text)
        )
        self.problem.setVisible(True)
        self.problem.setFocus()
