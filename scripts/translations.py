"""Keep the window's translations in step with the code, with Qt's own tools.

    .venv/bin/python scripts/translations.py update   # what scripts/update-translations runs
    .venv/bin/python scripts/translations.py check    # exit 1 if anything is out of date

``update``:

1. writes ``resources/translations/core_words.py`` from the core's tables (the state words
   of ``core/presentation.py``, the advice of ``core/errors.py``, and the step titles and
   verdict labels of ``core/selftest.py``), so the extraction tool sees the words the
   window translates at display time;
2. runs ``pyside6-lupdate`` over ``qargo_desktop/ui`` and that file into every
   ``resources/translations/qargo_desktop_<language>.ts`` (English gets only the plural
   forms), keeping every translation already made;
3. compiles each ``.ts`` into its ``.qm`` with ``pyside6-lrelease``.

The ``.qm`` files are committed, so the app runs without this step. New words show as
unfinished in the ``.ts`` files: translate them (Qt Linguist, or by hand), then run
``update`` again to compile. ``check`` is what the tests ask.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UI_DIR = ROOT / "qargo_desktop" / "ui"
TRANSLATIONS = ROOT / "resources" / "translations"
CORE_WORDS = TRANSLATIONS / "core_words.py"
CATALOGUE = "qargo_desktop"
SOURCE_LANGUAGE = "en_GB"

#: The catalogues: file suffix -> Qt language name. "en" holds only plural forms.
LANGUAGES = {"en": "en_GB", "nl": "nl_NL", "fr": "fr_FR"}

CORE_WORDS_HEADER = '''\
"""The core's English words, marked for Qt's extraction tool: generated, do not edit.

scripts/update-translations writes this file from core/presentation.py (context "status"),
core/errors.py (context "advice") and core/selftest.py (context "selftest"). The core imports
no Qt; the window translates these words when it shows them (qargo_desktop/ui/texts.py and
qargo_desktop/ui/selftest_dialog.py). Nothing imports this file.
"""

# ruff: noqa: E501

from PySide6.QtCore import QT_TRANSLATE_NOOP
'''


def _tool(name: str) -> str:
    """A Qt tool shipped with PySide6 (``pyside6-lupdate``), next to this Python first."""
    folder = Path(sys.executable).parent
    for candidate in (folder / f"pyside6-{name}", folder / f"pyside6-{name}.exe"):
        if candidate.exists():
            return str(candidate)
    found = shutil.which(f"pyside6-{name}")
    if found is None:
        raise SystemExit(f"pyside6-{name} not found: install PySide6-Essentials in this venv")
    return found


def core_words() -> dict[str, list[str]]:
    """The core's words the window shows, by context, in a stable order without repeats."""
    sys.path.insert(0, str(ROOT))
    from qargo_desktop.core.errors import ADVICE, advice_for
    from qargo_desktop.core.presentation import STATUS_TEXT
    from qargo_desktop.core.selftest import STEPS, Verdict

    status: list[str] = []
    for text in STATUS_TEXT.values():
        status += [text.label, text.meaning, text.what_to_do]
    advice: list[str] = []
    for entry in [*ADVICE.values(), advice_for(None)]:
        advice += [entry.summary, entry.detail]
    # The self-test's fixed words; its messages are worded at run time and stay English.
    selftest = [step.title for step in STEPS] + [verdict.label for verdict in Verdict]
    return {
        "status": list(dict.fromkeys(w for w in status if w)),
        "advice": list(dict.fromkeys(w for w in advice if w)),
        "selftest": list(dict.fromkeys(w for w in selftest if w)),
    }


def core_words_source() -> str:
    """The text of ``core_words.py`` (one call per line, as the formatter leaves it)."""
    blocks = [
        "\n".join(f"QT_TRANSLATE_NOOP({json.dumps(context)}, {json.dumps(w)})" for w in words)
        for context, words in core_words().items()
    ]
    return CORE_WORDS_HEADER + "\n# fmt: off\n" + "\n\n".join(blocks) + "\n# fmt: on\n"


def sources() -> list[Path]:
    """Every file the extraction tool reads."""
    return [*sorted(UI_DIR.glob("*.py")), CORE_WORDS]


def ts_file(suffix: str, folder: Path = TRANSLATIONS) -> Path:
    """The ``.ts`` source of a catalogue."""
    return folder / f"{CATALOGUE}_{suffix}.ts"


def run_lupdate(ts: Path, suffix: str, files: Iterable[Path]) -> None:
    """Merge the strings of ``files`` into ``ts`` (created when missing)."""
    command = [
        _tool("lupdate"),
        "-silent",
        "-no-obsolete",
        "-locations",
        "none",
        "-tr-function-alias",
        "QT_TRANSLATE_NOOP+=translatable",
        "-source-language",
        SOURCE_LANGUAGE,
        "-target-language",
        LANGUAGES[suffix],
    ]
    if suffix == "en":
        command.append("-pluralonly")
    subprocess.run([*command, *map(str, files), "-ts", str(ts)], check=True, cwd=ROOT)


def run_lrelease(ts: Path, qm: Path) -> None:
    """Compile ``ts`` into ``qm``."""
    subprocess.run(
        [_tool("lrelease"), "-silent", "-nounfinished", str(ts), "-qm", str(qm)],
        check=True,
        cwd=ROOT,
    )


def messages(ts: Path) -> dict[tuple[str, str, str], ET.Element]:
    """The messages of a ``.ts`` file by ``(context, source, comment)``."""
    found: dict[tuple[str, str, str], ET.Element] = {}
    for context in ET.parse(ts).getroot().iter("context"):
        name = context.findtext("name") or ""
        for message in context.iter("message"):
            key = (name, message.findtext("source") or "", message.findtext("comment") or "")
            found[key] = message
    return found


def unfinished(ts: Path) -> list[tuple[str, str, str]]:
    """Messages of a ``.ts`` file that have no finished translation."""
    missing = []
    for key, message in messages(ts).items():
        translation = message.find("translation")
        if translation is None or translation.get("type") in ("unfinished", "vanished"):
            missing.append(key)
            continue
        forms = [form.text or "" for form in translation.iter("numerusform")]
        if message.get("numerus") == "yes":
            if not forms or not all(form.strip() for form in forms):
                missing.append(key)
        elif not (translation.text or "").strip():
            missing.append(key)
    return missing


def update() -> None:
    """Regenerate the core words, merge new strings into every ``.ts``, compile the ``.qm``."""
    TRANSLATIONS.mkdir(parents=True, exist_ok=True)
    CORE_WORDS.write_text(core_words_source(), encoding="utf-8")
    for suffix in LANGUAGES:
        ts = ts_file(suffix)
        run_lupdate(ts, suffix, sources())
        run_lrelease(ts, ts.with_suffix(".qm"))
        left = unfinished(ts)
        status = f"{len(left)} unfinished" if left else "complete"
        print(f"{ts.relative_to(ROOT)}: {len(messages(ts))} messages, {status}")


def check() -> list[str]:
    """What is out of date: core words, strings the ``.ts`` lack, ``.qm`` not compiled."""
    problems = []
    if not CORE_WORDS.exists() or CORE_WORDS.read_text(encoding="utf-8") != core_words_source():
        problems.append(f"{CORE_WORDS.relative_to(ROOT)} does not match the core's tables")
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        (folder / CORE_WORDS.name).write_text(core_words_source(), encoding="utf-8")
        files = [*sorted(UI_DIR.glob("*.py")), folder / CORE_WORDS.name]
        for suffix in LANGUAGES:
            ts = ts_file(suffix)
            if not ts.exists():
                problems.append(f"{ts.relative_to(ROOT)} is missing")
                continue
            fresh = ts_file(suffix, folder)
            shutil.copy(ts, fresh)
            run_lupdate(fresh, suffix, files)
            added = sorted(set(messages(fresh)) - set(messages(ts)))
            for context, source, _comment in added[:10]:
                problems.append(f"{ts.name}: new string [{context}] {source!r}")
            # Strings the code no longer marks are not counted: they are harmless (lrelease
            # skips obsolete entries), and lupdate releases differ in which plural calls
            # they recognise (6.11 misses some that 6.12 finds), so counting them would
            # tie the check to one tool version.
            qm = ts.with_suffix(".qm")
            compiled = folder / qm.name
            run_lrelease(ts, compiled)
            if not qm.exists() or qm.read_bytes() != compiled.read_bytes():
                problems.append(f"{qm.relative_to(ROOT)} is not compiled from {ts.name}")
    return problems


def placeholders(text: str) -> list[str]:
    """The ``{name}`` and ``%n`` placeholders of a text, sorted."""
    return sorted(re.findall(r"\{[a-z_]+\}|%L?n", text))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["update", "check"])
    args = parser.parse_args()
    if args.command == "update":
        update()
        return 0
    problems = check()
    for problem in problems:
        print(problem)
    if problems:
        print("Run scripts/update-translations, translate what is unfinished, run it again.")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
