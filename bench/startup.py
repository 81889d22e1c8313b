"""Figure 1, start-up: whole processes, the app against bare PySide6 programs, interleaved.

- ``startup.first_paint``: launch to the main window's first paint, against a bare PySide6
  window of the same size (bench/bare_window.py).
- ``startup.list_shown``: launch to the window painted with the organisation's list,
  signing in silently from the saved sign-in, the sandbox already running in another
  process; against a bare PySide6 program that shows a table of the same rows read from
  a local file (bench/bare_table.py).
- ``startup.list_shown_10k`` (extra): the same with 10,000 mailboxes.

Each run launches a new process. After one warm-up run of each program (disk cache),
app and baseline alternate, so drift on a noisy machine hits both alike; medians are
reported.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from common import (
    APP,
    BENCH,
    PYTHON,
    Figure,
    SandboxProcess,
    WorkDir,
    child_env,
    launch_with_marks,
    median,
    sign_in,
)

FIRST_PAINT_TARGET = 1.15
LIST_SHOWN_TARGET = 1.5


def save_rows(config_file: Path, config_dir: Path, out: Path) -> int:
    """The list the app will show, as the API returns it, in a local file for the baseline."""
    result = subprocess.run(
        [APP, "mailboxes", "--json", "--config", str(config_file)],
        env=child_env(config_dir),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    out.write_text(result.stdout)
    return len(json.loads(result.stdout))


def measure_org(
    work: WorkDir, name: str, mailboxes: int | None, runs: int, log: Any
) -> dict[str, list[dict[str, float]]]:
    """Start a sandbox, sign in once, then time app and baselines ``runs`` times each."""
    folder = work.sub(f"startup-{name}")
    config_file = folder / "sandbox.toml"
    config_dir = folder / "app"
    marks = folder / "marks.jsonl"
    with SandboxProcess(
        folder / "sandbox", config_file, mailboxes=mailboxes, log_file=folder / "sandbox.log"
    ):
        sign_in(config_file, config_dir, folder / "signin.log")
        rows_file = folder / "rows.json"
        count = save_rows(config_file, config_dir, rows_file)
        log(f"  {name}: {count} mailboxes; {runs} runs each after a warm-up")
        env = child_env(config_dir)
        programs = {
            "app": ([APP, "--config", str(config_file)], "list_shown"),
            "bare_table": ([PYTHON, str(BENCH / "bare_table.py"), str(rows_file)], "list_shown"),
            "bare_window": ([PYTHON, str(BENCH / "bare_window.py")], "first_paint"),
        }
        results: dict[str, list[dict[str, float]]] = {key: [] for key in programs}
        for index in range(runs + 1):
            # Alternate the order, so neither program always runs right after the other.
            order = list(programs) if index % 2 == 0 else list(reversed(programs))
            for key in order:
                command, quit_mark = programs[key]
                timings = launch_with_marks(command, env, marks, quit_mark)
                if index:  # the first round warms the disk cache
                    results[key].append(timings)
        results["count"] = [{"mailboxes": float(count)}]
        return results


def run(work: WorkDir, *, quick: bool, log: Any, args: Any = None) -> list[Figure]:
    runs = 5 if quick else 15
    figures: list[Figure] = []
    seed = measure_org(work, "seed", None, runs, log)

    def ms(results: list[dict[str, float]], key: str) -> list[float]:
        return [r[key] * 1000 for r in results]

    app_first = ms(seed["app"], "first_paint")
    bare_first = ms(seed["bare_window"], "first_paint")
    figures.append(
        Figure(
            "startup.first_paint",
            "ms",
            median(app_first),
            median(bare_first),
            FIRST_PAINT_TARGET,
            detail={"app_ms": app_first, "baseline_ms": bare_first},
        )
    )
    app_list = ms(seed["app"], "list_shown")
    bare_list = ms(seed["bare_table"], "list_shown")
    signed_in = [r["signed_in"] * 1000 for r in seed["app"] if "signed_in" in r]
    count = int(seed["count"][0]["mailboxes"])
    figures.append(
        Figure(
            "startup.list_shown",
            "ms",
            median(app_list),
            median(bare_list),
            LIST_SHOWN_TARGET,
            note=f"{count} mailboxes",
            detail={
                "app_ms": app_list,
                "baseline_ms": bare_list,
                "app_signed_in_ms": signed_in,
                "mailboxes": count,
            },
        )
    )

    large = measure_org(work, "10k", 10_000, max(3, runs // 3), log)
    app_list = ms(large["app"], "list_shown")
    bare_list = ms(large["bare_table"], "list_shown")
    figures.append(
        Figure(
            "startup.list_shown_10k",
            "ms",
            median(app_list),
            median(bare_list),
            LIST_SHOWN_TARGET,
            note="extra: 10,000 mailboxes",
            detail={"app_ms": app_list, "baseline_ms": bare_list},
        )
    )
    return figures
