"""Translations and the person's locale: the window's language, numbers, dates and times.

The window's words are British English in the source and pass through Qt's translation
system (``QCoreApplication.translate(context, text)``); the catalogues are compiled ``.qm``
files in ``resources/translations``, built from the ``.ts`` sources there by
``scripts/update-translations``. English has a catalogue too: it holds only the plural
forms (``%n mailbox(es)`` -> ``1 mailbox`` / ``2 mailboxes``), as Qt intends.

The core imports no Qt, so its words (state labels, error advice, the self-test's step
titles and verdicts) stay English there. The window translates them when it shows them, by
looking their English text up in the catalogue under the contexts ``status``, ``advice``
and ``selftest`` (see :mod:`qargo_desktop.ui.texts` and
:mod:`qargo_desktop.ui.selftest_dialog`); ``resources/translations/core_words.py`` marks
them for the extraction tool. Sentences the core words at run time (a self-test step's
message, a verdict's summary and advice) stay English.

The language comes from the ``language`` setting, else from the system's preferred
languages, else British English. Numbers, dates and times follow the locale of that
language, keeping the system's region when the system speaks the same language (a Belgian
system shows Dutch with Belgian dates).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QCoreApplication, QLibraryInfo, QLocale, QTranslator

from qargo_desktop.core.resources import resource_path

log = logging.getLogger(__name__)

#: The language the source strings are written in.
SOURCE_LANGUAGE = "en-GB"

#: Catalogue files are ``<CATALOGUE>_<language>.qm``.
CATALOGUE = "qargo_desktop"

# The file suffix of the source language's catalogue, which holds only plural forms.
_SOURCE_SUFFIX = "en"


class _State:
    """The translators installed now and the language they speak."""

    installed: list[QTranslator] = []  # noqa: RUF012 (one list for the process)
    language = SOURCE_LANGUAGE


def translatable(context: str, text: str) -> str:
    """Mark ``text`` for translation where it is defined; translate it where it is shown.

    Returns ``text`` unchanged. ``scripts/update-translations`` tells the extraction tool
    that this is ``QT_TRANSLATE_NOOP``, which returns ``object`` to type checkers.
    """
    del context
    return text


@dataclass(frozen=True, slots=True)
class Language:
    """A language the window can speak.

    Attributes:
        tag: BCP 47 tag as the settings write it (``en-GB``, ``nl``, ``fr``).
        name: The language's name in itself (``Nederlands``), for the language choice.
    """

    tag: str
    name: str


def translations_dir() -> Path:
    """The folder of the compiled catalogues."""
    return resource_path("translations")


def _native_name(tag: str) -> str:
    name = QLocale(tag).nativeLanguageName()
    return name[:1].upper() + name[1:] if name else tag


def available_languages() -> tuple[Language, ...]:
    """British English and every language a catalogue was shipped for."""
    tags = [SOURCE_LANGUAGE]
    folder = translations_dir()
    if folder.is_dir():
        for path in sorted(folder.glob(f"{CATALOGUE}_*.qm")):
            suffix = path.stem.removeprefix(f"{CATALOGUE}_")
            if suffix != _SOURCE_SUFFIX:
                tags.append(suffix.replace("_", "-"))
    return tuple(Language(tag, _native_name(tag)) for tag in tags)


def _primary(tag: str) -> str:
    return re.split(r"[-_]", tag, maxsplit=1)[0].lower()


def _match(candidate: str, supported: Sequence[str]) -> str | None:
    """The supported tag for a wanted one: exact first, then by language (nl-BE -> nl)."""
    wanted = candidate.replace("_", "-").lower()
    for tag in supported:
        if tag.lower() == wanted:
            return tag
    for tag in supported:
        if _primary(tag) == _primary(wanted):
            return tag
    return None


def system_languages() -> list[str]:
    """The system's preferred languages, most preferred first."""
    return [tag for tag in QLocale.system().uiLanguages() if tag and tag != "C"]


def resolve_language(preference: str | None, system: Sequence[str] | None = None) -> str:
    """The language to use: the preference if there is a catalogue, else the system's.

    Args:
        preference: The ``language`` setting (``None``: follow the system).
        system: The system's preferred languages (default: asked from the system).
    """
    supported = [language.tag for language in available_languages()]
    candidates = [preference] if preference else []
    candidates += list(system_languages() if system is None else system)
    for candidate in candidates:
        match = _match(candidate, supported)
        if match is not None:
            return match
    return SOURCE_LANGUAGE


def formatting_locale(language: str, preference: str | None = None) -> QLocale:
    """The locale for numbers, dates and times in ``language``.

    A preference with a region (``en-GB``, ``nl-BE``) is taken as it is. Otherwise the
    system's locale is kept when it speaks the same language (its region decides the date
    order); else the language's own default region.
    """
    if preference and re.search(r"[-_][A-Za-z]{2}$", preference):
        chosen = QLocale(preference.replace("-", "_"))
        if _primary(chosen.name()) == _primary(language):
            return chosen
    system = QLocale.system()
    if system.language() != QLocale.Language.C and _primary(system.name()) == _primary(language):
        return system
    return QLocale(language.replace("-", "_"))


def _load(translator: QTranslator, name: str, folders: Sequence[str]) -> bool:
    return any(folder and translator.load(name, folder) for folder in folders)


def install_language(preference: str | None, *, system: Sequence[str] | None = None) -> str:
    """Speak the language chosen by ``preference`` (or the system's) from now on.

    Replaces the translators installed before; Qt then sends every widget a
    ``LanguageChange`` event, and the widgets put their words up again. Qt's own
    catalogue comes along, so standard buttons (OK, Cancel) and context menus match.

    Returns:
        The language tag now in use.
    """
    app = QCoreApplication.instance()
    if app is None:
        raise RuntimeError("install_language needs a QApplication")
    language = resolve_language(preference, system)

    for translator in _State.installed:
        app.removeTranslator(translator)
    _State.installed.clear()

    own = QTranslator(app)
    suffix = _SOURCE_SUFFIX if language == SOURCE_LANGUAGE else language.replace("-", "_")
    if own.load(f"{CATALOGUE}_{suffix}", str(translations_dir())):
        app.installTranslator(own)
        _State.installed.append(own)
    else:
        log.warning("The %s catalogue could not be loaded; the window speaks English", language)
    if language != SOURCE_LANGUAGE:
        qt = QTranslator(app)
        folders = [QLibraryInfo.path(QLibraryInfo.LibraryPath.TranslationsPath)]
        if _load(qt, f"qtbase_{_primary(language)}", folders):
            app.installTranslator(qt)
            _State.installed.append(qt)
        else:
            log.info("Qt's own %s catalogue is missing; standard buttons stay English", language)

    QLocale.setDefault(formatting_locale(language, preference))
    if language != _State.language:
        log.info("Language: %s", language)
    _State.language = language
    return language


def current_language() -> str:
    """The language tag in use (British English until :func:`install_language` ran)."""
    return _State.language


def app_locale() -> QLocale:
    """The locale the window formats numbers, dates and times in.

    The POSIX ``C`` locale (no preference at all, as on a bare build machine) reads as
    British English, the source language.
    """
    locale = QLocale()
    if locale.language() == QLocale.Language.C:
        return QLocale(QLocale.Language.English, QLocale.Country.UnitedKingdom)
    return locale
