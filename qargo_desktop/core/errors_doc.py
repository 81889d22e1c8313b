"""Write ``docs/errors.md``, the support staff's view of the advice table, from the table.

Run ``python -m qargo_desktop.core.errors_doc > docs/errors.md``; a test keeps the file in
step with :data:`qargo_desktop.core.errors.ADVICE`.
"""

from __future__ import annotations

from qargo_desktop.core.errors import ADVICE

_SECTIONS = {
    "aadsts": "Microsoft identity platform (AADSTS codes)",
    "oauth": "Microsoft identity platform (OAuth errors without an AADSTS code)",
    "api": "Qargo organisation API (problem `code`)",
    "graph": "Microsoft Graph (error `code`)",
    "net": "Network and HTTP",
    "selftest": "The send/receive self-test",
    "app": "The app itself",
}


def render() -> str:
    """Return the Markdown page."""
    lines = [
        "# Errors and what to do about them",
        "",
        "Every failure the app meets is mapped to a plain sentence and a next step by one "
        "table in the code (`qargo_desktop/core/errors.py`, `ADVICE`). This page is "
        "generated from that table: `python -m qargo_desktop.core.errors_doc > docs/errors.md`.",
        "",
        "An error the table does not know still shows its raw code and the service's "
        "correlation id; send both to Qargo Support.",
        "",
    ]
    for prefix, title in _SECTIONS.items():
        lines += [f"## {title}", "", "| code | what the person sees | next step |", "|---|---|---|"]
        for key, advice in ADVICE.items():
            namespace, _, code = key.partition(":")
            if namespace != prefix:
                continue
            shown = f"AADSTS{code}" if prefix == "aadsts" else code
            text = advice.summary + (f" {advice.detail}" if advice.detail else "")
            step = advice.next_step.value.replace("_", " ")
            lines.append(f"| `{shown}` | {text.replace('|', '/')} | {step} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")
