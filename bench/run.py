"""Run the benchmarks: every figure against its limit, one line each, and the same as JSON.

    scripts/bench [--quick] [--only startup,responsiveness,scale,selftest,idle]
                  [--idle-minutes M] [--json FILE] [--keep]

scripts/bench sets up the environment (as scripts/test does) and runs this inside a
private Secret Service keyring (scripts/with-keyring), which the saved sign-in needs to
survive from one process to the next. See docs/performance.md for what each figure means.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from common import CRASHES, ROOT, Figure, WorkDir, keyring_note, machine

GROUPS = ("startup", "responsiveness", "scale", "selftest", "idle")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run of every figure in a few minutes"
    )
    parser.add_argument(
        "--only", metavar="GROUPS", help=f"comma-separated subset of {', '.join(GROUPS)}"
    )
    parser.add_argument(
        "--idle-minutes",
        type=float,
        metavar="M",
        help="how long the idle window stays open (default 10, or 1 with --quick)",
    )
    parser.add_argument(
        "--json",
        metavar="FILE",
        default=str(ROOT / "build" / "bench" / "results.json"),
        help="where to write the results (default build/bench/results.json)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument(
        "--diagnose", action="store_true", help="sample the GUI thread's stack at each stall"
    )
    args = parser.parse_args(argv)
    groups = GROUPS if not args.only else tuple(g.strip() for g in args.only.split(","))
    unknown = set(groups) - set(GROUPS)
    if unknown:
        parser.error(f"unknown group(s): {', '.join(sorted(unknown))}")

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    note = keyring_note()
    if note:
        log(f"warning: {note}")
    # Every start of the app is timed as an installed app starts: with its modules compiled.
    # (Where PYTHONDONTWRITEBYTECODE is set, as on these machines, a source checkout would
    # otherwise compile all of them again at every start.)
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(ROOT / "qargo_desktop")], check=False
    )
    work = WorkDir(keep=args.keep)
    log(f"Working in {work.path}{' (kept)' if args.keep else ''}")
    figures: list[Figure] = []
    failures: dict[str, str] = {}
    started = time.monotonic()
    try:
        for group in groups:
            log(f"== {group}")
            group_started = time.monotonic()
            try:
                module = __import__(group if group != "selftest" else "selftest_precision")
                new = module.run(work, quick=args.quick, log=log, args=args)
            except Exception as exc:
                failures[group] = "".join(traceback.format_exception(exc))
                log(f"  {group} failed: {exc!r}")
                continue
            for figure in new:
                log("  " + figure.line())
            figures.extend(new)
            log(f"  ({time.monotonic() - group_started:.0f} s)")
    finally:
        work.close()
    figures.append(
        Figure(
            "stability.crashes",
            "",
            float(len(CRASHES)),
            None,
            0,
            kind="equal",
            note="; ".join(sorted({f"{c['what']}: {c['reason']}" for c in CRASHES}))[:300],
            detail={"crashes": CRASHES},
        )
    )

    print()
    print("Each figure: the app, its baseline, the ratio, the limit, and whether it is met.")
    for figure in figures:
        print(figure.line())
    for group in failures:
        print(f"{group:<34} FAILED: see {args.json}")
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "duration_s": round(time.monotonic() - started, 1),
        "machine": machine(),
        "figures": [figure.to_json() for figure in figures],
        "failures": failures,
    }
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nWritten to {out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
