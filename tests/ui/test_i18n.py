"""Translations: complete Dutch and French catalogues, kept in step with the code by Qt's own
tools, switched live, and dates and numbers in the person's locale."""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

import pytest

from PySide6.QtCore import QCoreApplication, QLocale, Qt
from PySide6.QtWidgets import QDialogButtonBox

from qargo_desktop.core.errors import ADVICE, ApiError
from qargo_desktop.core.models import LinkStatus, MailboxAction
from qargo_desktop.core.presentation import STATUS_TEXT
from qargo_desktop.core.selftest import STEPS, Leg, StepId, StepReport, StepState, Verdict
from qargo_desktop.ui import dialogs, i18n, texts
from qargo_desktop.ui.mailbox_model import COLUMN_DISPLAY_NAME, COLUMN_STATUS
from qargo_desktop.ui.main_window import MainWindow
from qargo_desktop.ui.selftest_dialog import SelfTestDialog, step_title, verdict_label
from qargo_desktop.ui.theme import Theme
from tests.ui.conftest import NOW, make_mailbox

ROOT = Path(__file__).resolve().parents[2]
LANGUAGES = ("nl", "fr")


def _tool() -> ModuleType:
    path = ROOT / "scripts" / "translations.py"
    spec = importlib.util.spec_from_file_location("translations", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("translations", module)
    spec.loader.exec_module(module)
    return module


translations = _tool()


@pytest.fixture
def speak() -> Iterator[object]:
    """Switch the language for one test; British English afterwards."""

    def install(language: str | None, **kwargs: object) -> str:
        return i18n.install_language(language, **kwargs)  # type: ignore[arg-type]

    yield install
    i18n.install_language("en-GB")


# -- the catalogues --------------------------------------------------------------------------


def test_catalogues_are_in_step_with_the_code_and_compiled() -> None:
    # The core's words, every marked string of the window, and the .qm from the .ts.
    assert translations.check() == []


@pytest.mark.parametrize("language", ["en", *LANGUAGES])
def test_every_catalogue_is_complete(language: str) -> None:
    ts = translations.ts_file(language)
    assert translations.unfinished(ts) == []


@pytest.mark.parametrize("language", LANGUAGES)
def test_translations_keep_placeholders_access_keys_and_markup(language: str) -> None:
    for (context, source, _comment), message in translations.messages(
        translations.ts_file(language)
    ).items():
        translation = message.find("translation")
        assert translation is not None
        if translation.get("type") == "unfinished":
            continue  # the completeness test names it
        forms = [f.text or "" for f in translation.iter("numerusform")] or [translation.text or ""]
        for text in forms:
            where = f"[{context}] {source!r} -> {text!r}"
            assert translations.placeholders(text) == translations.placeholders(source), where
            assert ("&" in source.replace("&&", "")) == ("&" in text.replace("&&", "")), where
            assert re.findall(r"</?\w+>", text) == re.findall(r"</?\w+>", source), where
            assert text.strip() == text or source.strip() != source, where


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_cores_words_are_translated(speak, language: str) -> None:
    speak(language)
    for text in STATUS_TEXT.values():
        for word in (text.label, text.meaning, text.what_to_do):
            assert QCoreApplication.translate("status", word) != word, word
    for advice in ADVICE.values():
        # "Cancelled." and the like may read the same in French; none may stay English.
        assert QCoreApplication.translate("advice", advice.summary) != advice.summary, advice
    for step in STEPS:
        assert step_title(step) != step.title, step
    for verdict in Verdict:
        assert verdict_label(verdict) != verdict.label, verdict


# -- choosing the language -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("preference", "system", "expected"),
    [
        ("nl", ["fr-FR"], "nl"),
        ("nl-BE", [], "nl"),
        ("fr_CA", [], "fr"),
        ("en-US", ["nl-NL"], "en-GB"),
        (None, ["fr-BE", "en-GB"], "fr"),
        (None, ["de-DE", "nl-NL"], "nl"),
        ("de", ["nl-NL"], "nl"),
        (None, ["de-DE", "ja-JP"], "en-GB"),
        (None, [], "en-GB"),
    ],
)
def test_the_language_follows_the_setting_then_the_system(preference, system, expected) -> None:
    assert i18n.resolve_language(preference, system) == expected


def test_the_languages_on_offer_name_themselves() -> None:
    names = {language.tag: language.name for language in i18n.available_languages()}
    assert names == {"en-GB": "British English", "nl": "Nederlands", "fr": "Français"}


def test_the_system_locale_picks_the_language(speak) -> None:
    assert speak(None, system=["fr-CH", "en-GB"]) == "fr"
    assert QCoreApplication.translate("status", "Linked") == "Lié"
    assert speak(None, system=["nl-BE"]) == "nl"
    assert QCoreApplication.translate("status", "Linked") == "Gekoppeld"


def test_a_region_in_the_setting_decides_the_date_order() -> None:
    assert i18n.formatting_locale("nl", "nl-BE").name() == "nl_BE"
    assert i18n.formatting_locale("en-GB", "en-GB").name() == "en_GB"
    assert i18n.formatting_locale("fr", "fr").language() == QLocale.Language.French


# -- the window switches live ----------------------------------------------------------------


def test_switching_language_rewords_the_whole_window(qtbot, speak, signed_in_window) -> None:
    window: MainWindow = signed_in_window
    mailbox = next(m for m in window.model.mailboxes() if m.status is LinkStatus.LINKED)
    window.select_mailbox(mailbox.id)
    status_row = window.proxy.index_of(mailbox.id, COLUMN_STATUS)

    speak("nl")
    qtbot.waitUntil(lambda: window.file_menu.title() == "&Bestand")
    assert window.mailbox_menu.title() == "&Mailbox"
    assert window.refresh_button.text() == "&Vernieuwen"
    assert window.status_caption.text() == "&Status:"
    assert window.search_box.placeholderText().startswith("Zoeken op adres of naam")
    assert window.model.headerData(COLUMN_DISPLAY_NAME, _horizontal()) == "Weergavenaam"
    assert status_row.data() == "Gekoppeld"
    assert window.status_filter.itemText(0) == "Alle statussen (6)"
    assert window.detail_pane.status_label.text() == "Gekoppeld"
    buttons = window.detail_pane.action_buttons
    assert buttons[MailboxAction.REAUTHORISE].text() == "API opnieuw autoriseren"
    assert window.admin_label.text() == "Aangemeld als admin@northwind-haulage.example"
    assert "Online" in window.connection_label.text()
    assert window.mailbox_actions[MailboxAction.SELFTEST].text() == "Mailverkeer &testen"

    speak("fr")
    qtbot.waitUntil(lambda: window.file_menu.title() == "&Fichier")
    assert status_row.data() == "Lié"
    assert buttons[MailboxAction.REAUTHORISE].text() == "Réautoriser l'API"
    assert window.connection_label.text().endswith("En ligne")
    unlinked = texts.status_label(LinkStatus.UNLINKED)
    assert unlinked == "Non lié"
    assert texts.status_label(LinkStatus.REAUTHORISATION_REQUIRED) == (
        "Autorisation en attente\u00a0: réautoriser l'API"
    )

    speak("en-GB")
    qtbot.waitUntil(lambda: window.file_menu.title() == "&File")
    assert status_row.data() == "Linked"
    assert window.detail_pane.status_label.text() == "Linked"


def test_the_states_in_dutch_and_french(speak) -> None:
    expected = {
        "nl": {
            LinkStatus.LINKED: "Gekoppeld",
            LinkStatus.UNLINKED: "Niet gekoppeld",
            LinkStatus.REAUTHORISATION_REQUIRED: (
                "Autorisatie in behandeling: API opnieuw autoriseren"
            ),
            LinkStatus.LINK_FAILED: "Autorisatie in behandeling: API-koppelingsstatus resetten",
            LinkStatus.AUTHORISING: "Bezig met autoriseren...",
        },
        "fr": {
            LinkStatus.LINKED: "Lié",
            LinkStatus.UNLINKED: "Non lié",
            LinkStatus.REAUTHORISATION_REQUIRED: "Autorisation en attente\u00a0: réautoriser l'API",
            LinkStatus.LINK_FAILED: (
                "Autorisation en attente\u00a0: réinitialiser l'état du lien API"
            ),
            LinkStatus.AUTHORISING: "Autorisation en cours...",
        },
    }
    for language, labels in expected.items():
        speak(language)
        for status, label in labels.items():
            assert texts.status_label(status) == label
        assert texts.status_label(LinkStatus.UNKNOWN, "suspended").endswith("(suspended)")


def test_the_selftest_dialog_speaks_the_language_and_switches_live(qtbot, speak) -> None:
    speak("nl")
    dialog = SelfTestDialog(
        None,
        mailbox=make_mailbox(),
        services=None,  # type: ignore[arg-type]  # never started here
        tasks=None,  # type: ignore[arg-type]
        theme=Theme(dark=False),
    )
    qtbot.addWidget(dialog)
    send = dialog._items[StepId.SEND]
    assert dialog.again_button.text() == "&Opnieuw uitvoeren"
    assert send.text(1) == "Een testbericht naar de mailbox zelf versturen"
    dialog._show_step(StepReport(StepId.SEND, StepState.PASSED, 2.5, "Sent."), send)
    dialog.chart.set_legs((Leg("delivery", 0.0, None, StepState.FAILED),))
    assert (send.text(0), send.toolTip(0), send.text(2)) == ("✔", "Geslaagd", "2,5 s")
    assert send.text(3) == "Sent."  # worded at run time, in English
    assert dialog.chart.accessibleDescription() == "Aflevering: niet voltooid"
    assert _access_keys_unique(dialog.buttons)

    speak("fr")
    qtbot.waitUntil(lambda: dialog.again_button.text() == "&Relancer")
    assert send.text(1) == "Envoyer un message de test à la boîte aux lettres elle-même"
    assert (send.toolTip(0), send.text(2)) == ("Réussi", "2,5\u00a0s")
    assert dialog.chart.accessibleDescription() == "Remise\u00a0: non terminé"
    assert verdict_label(Verdict.WARNING) == "Réussi avec des avertissements"
    assert _access_keys_unique(dialog.buttons)

    speak("en-GB")
    qtbot.waitUntil(lambda: dialog.again_button.text() == "&Run again")
    assert (send.toolTip(0), send.text(2)) == ("Passed", "2.5 s")
    assert dialog.windowTitle() == f"Test {dialog.mailbox.address}"


def _access_keys_unique(buttons: QDialogButtonBox) -> bool:
    found = [re.search(r"&([^&])", b.text().replace("&&", "")) for b in buttons.buttons()]
    keys = [match.group(1).casefold() for match in found if match]
    return len(keys) == len(set(keys)) == 3


def test_error_advice_is_explained_in_the_language(speak) -> None:
    error = ApiError(422, "account_mismatch", "Account mismatch", correlation_id="c-1")
    speak("nl")
    explained = texts.explain(error)
    assert explained.startswith("De browser heeft een ander account aangemeld dan de mailbox.")
    assert "(Code: account_mismatch; Correlatie-id: c-1)" in explained
    speak("fr")
    assert texts.explain(error).startswith(
        "Le navigateur a connecté un autre compte que celui de la boîte aux lettres."
    )


# -- dates, times and numbers in the person's locale ------------------------------------------


def test_dates_times_and_numbers_follow_the_locale(speak) -> None:
    moment = datetime(2025, 12, 4, 15, 32, 7, tzinfo=UTC)
    local = moment.astimezone()
    clock = f"{local:%H:%M}"

    speak("en-GB")
    assert texts.local_time(moment) == f"{local.day} {local:%B} {local.year}, {clock}"
    assert texts.number(10000) == "10,000"
    assert texts.mailbox_count(1) == "1 mailbox"
    assert texts.relative_time(NOW - timedelta(hours=1), NOW) == "1 hour ago"

    speak("nl")
    assert texts.local_time(moment) == f"{local.day} december {local.year} om {clock}"
    assert texts.number(10000) == "10.000"
    assert texts.mailbox_count(10000) == "10.000 mailboxen"
    assert texts.relative_time(NOW - timedelta(days=5), NOW) == "5 dagen geleden"
    assert texts.relative_time(NOW - timedelta(hours=1), NOW) == "1 uur geleden"

    speak("fr")
    assert texts.local_time(moment) == f"{local.day} décembre {local.year} à {clock}"
    assert texts.mailbox_count(1) == "1 boîte aux lettres"
    assert texts.relative_time(NOW - timedelta(days=5), NOW) == "il y a 5 jours"
    assert texts.local_time(moment, seconds=True).endswith(f"{local:%H:%M:%S}")


def test_qt_standard_buttons_follow_the_language(qtbot, speak) -> None:
    speak("nl")
    dialog = dialogs.AddMailboxDialog()
    qtbot.addWidget(dialog)
    cancel = dialog.buttons.button(QDialogButtonBox.StandardButton.Cancel)
    assert cancel.text().replace("&", "") == "Annuleren"


def _horizontal() -> Qt.Orientation:
    return Qt.Orientation.Horizontal
