"""Figure 3, scale: 10,000 mailboxes in the real window (bench/gui_driver.py --phase scale).

- ``scale.rows_shown``: from the last page's arrival to the table painted with every row,
  against parsing the same page bodies with ``json.loads`` alone, in the same process;
- ``scale.search_p95``: a search keystroke to the filtered view painted, 95th percentile;
- ``scale.memory``: resident memory with the list shown over the same window signed in
  with the list not loaded yet.

Each run is a new process that signs in silently and loads the list once; the medians
over the runs are reported (the keystrokes of every run are pooled).
"""

from __future__ import annotations

from typing import Any

from common import (
    BENCH,
    PYTHON,
    Figure,
    SandboxProcess,
    WorkDir,
    child_env,
    median,
    percentile,
    run_driver,
    sign_in,
)

ROWS_SHOWN_TARGET = 2.0
SEARCH_P95_TARGET_MS = 16.0
MEMORY_TARGET_MB = 30.0
MAILBOXES = 10_000


def run(work: WorkDir, *, quick: bool, log: Any, args: Any = None) -> list[Figure]:
    runs = 2 if quick else 5
    folder = work.sub("scale")
    config_file = folder / "sandbox.toml"
    config_dir = folder / "app"
    results: list[dict[str, Any]] = []
    with SandboxProcess(
        folder / "sandbox", config_file, mailboxes=MAILBOXES, log_file=folder / "sandbox.log"
    ):
        sign_in(config_file, config_dir, folder / "signin.log")
        for index in range(runs):
            out = folder / f"run-{index}.json"
            result = run_driver(
                [PYTHON, str(BENCH / "gui_driver.py"), "--config", str(config_file),
                 "--phase", "scale", "--out", str(out), "--rounds", "1" if quick else "2"],
                child_env(config_dir),
                out,
                "scale driver",
                600,
            )  # fmt: skip
            results.append(result)
            log(
                f"  run {index + 1}: {result['rows']} rows, shown {result['rows_shown_ms']:.0f} ms "
                f"after the last page; parse {median(result['parse_ms']):.0f} ms; "
                f"search p95 {result['keystroke_p95_ms']:.1f} ms"
            )

    shown = [r["rows_shown_ms"] for r in results]
    parse = [median(r["parse_ms"]) for r in results]
    keystrokes = [k["ms"] for r in results for k in r["keystrokes"]]
    growth = [(r["memory_loaded"][0] - r["memory_empty"][0]) / 1e6 for r in results]
    growth_trimmed = [(r["memory_loaded"][1] - r["memory_empty"][1]) / 1e6 for r in results]
    slowest = sorted(
        ({"text": k["text"], "ms": k["ms"], "shown": k["shown"]} for r in results
         for k in r["keystrokes"]),
        key=lambda k: -k["ms"],
    )[:10]  # fmt: skip
    return [
        Figure(
            "scale.rows_shown",
            "ms",
            median(shown),
            median(parse),
            ROWS_SHOWN_TARGET,
            note=f"{results[0]['rows']} rows, {results[0]['pages']} pages",
            detail={"app_ms": shown, "baseline_ms": parse, "page_bytes": results[0]["page_bytes"]},
        ),
        Figure(
            "scale.search_p95",
            "ms",
            percentile(keystrokes, 0.95),
            None,
            SEARCH_P95_TARGET_MS,
            kind="max",
            note=f"{len(keystrokes)} keystrokes",
            detail={
                "max_ms": max(keystrokes),
                "median_ms": median(keystrokes),
                "slowest": slowest,
            },
        ),
        Figure(
            "scale.memory",
            "MB",
            median(growth),
            None,
            MEMORY_TARGET_MB,
            kind="max",
            note="RSS growth, list loaded over signed-in empty window",
            detail={
                "growth_mb": growth,
                "growth_after_malloc_trim_mb": growth_trimmed,
                "empty_rss_mb": [r["memory_empty"][0] / 1e6 for r in results],
                "loaded_rss_mb": [r["memory_loaded"][0] / 1e6 for r in results],
            },
        ),
    ]
