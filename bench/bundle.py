"""Size and start-up of the frozen bundle against the source tree (figures in docs/packaging.md).

    .venv/bin/python bench/bundle.py                 # sizes and start-up times
    .venv/bin/python bench/bundle.py --exclusions    # also rebuild once per exclusion group

Build the bundle first (scripts/build-bundle). Sizes are the bytes of the files (symbolic
links not counted twice) and of the archive. Start-up is the wall time of whole processes,
run ``--runs`` times after one warm-up run, median reported, each way:

- ``--version``: the interpreter (or the bootloader) and the command line, nothing else;
- ``window``: the window opened offscreen on a fresh configuration (its first-run page),
  closed right after its first paint (``--quit-after-start``), process exit included.

``--exclusions`` rebuilds the bundle with each exclusion group of build.spec kept in
(QARGO_BUNDLE_KEEP), into build/bench/, and reports what each group saves against the
normal build: about a minute per group.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GROUPS = [
    "qt-translations",
    "qt-unused-modules",
    "qt-gtk-theme",
    "qt-wayland",
    "qt-embedded-platforms",
    "qt-image-formats",
    "qt-network-plugins",
    "python-unused",
    "strip",
]


def tree_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def megabytes(value: float) -> str:
    return f"{value / 1e6:.1f} MB"


def time_runs(command: list[str], env: dict[str, str], runs: int) -> dict[str, float]:
    times = []
    for index in range(runs + 1):
        started = time.perf_counter()
        result = subprocess.run(
            command, check=False, env=env, capture_output=True, text=True, timeout=120
        )
        if result.returncode != 0:
            raise SystemExit(f"{command} failed ({result.returncode}):\n{result.stderr[-3000:]}")
        if index:  # the first run warms the disk cache
            times.append(time.perf_counter() - started)
    return {
        "median_ms": round(statistics.median(times) * 1000),
        "min_ms": round(min(times) * 1000),
        "max_ms": round(max(times) * 1000),
        "runs": runs,
    }


def startup(bundle: Path, source: list[str], runs: int) -> dict[str, dict[str, dict[str, float]]]:
    frozen = [str(bundle / "qargo-desktop")]
    results: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="qargo-bench-") as work:
        env = dict(os.environ, QT_QPA_PLATFORM="offscreen", QARGO_CONFIG_DIR=work)
        for name, extra in (("--version", ["--version"]), ("window", ["--quit-after-start"])):
            results[name] = {
                "source": time_runs([*source, *extra], env, runs),
                "frozen": time_runs([*frozen, *extra], env, runs),
            }
    return results


def build(pyinstaller: Path, keep: str, dist: Path, work: Path) -> dict[str, object]:
    env = dict(os.environ, QARGO_BUNDLE_KEEP=keep)
    started = time.perf_counter()
    subprocess.run(
        [str(pyinstaller), "--noconfirm", "--log-level", "ERROR", "--distpath", str(dist),
         "--workpath", str(work), str(ROOT / "build.spec")],
        env=env,
        check=True,
        cwd=ROOT,
        capture_output=True,
    )  # fmt: skip
    # PyInstaller works in <workpath>/<spec name>.
    report = json.loads((work / "build" / "bundle-report.json").read_text())
    report["build_seconds"] = round(time.perf_counter() - started)
    return report


def exclusions(pyinstaller: Path) -> list[dict[str, object]]:
    bench = ROOT / "build" / "bench"
    rows = []
    baseline = build(pyinstaller, "", bench / "dist-none", bench / "work-none")
    for group in [*GROUPS, "all"]:
        print(f"building with {group} kept...", file=sys.stderr, flush=True)
        report = build(pyinstaller, group, bench / f"dist-{group}", bench / f"work-{group}")
        rows.append(
            {
                "kept": group,
                "bundle_bytes": report["bundle_bytes"],
                "archive_bytes": report["archive_bytes"],
                "saves_bundle_bytes": int(report["bundle_bytes"]) - int(baseline["bundle_bytes"]),
                "saves_archive_bytes": int(report["archive_bytes"])
                - int(baseline["archive_bytes"]),
            }
        )
        shutil.rmtree(bench / f"dist-{group}", ignore_errors=True)
    rows.insert(
        0,
        {
            "kept": "(none: the normal build)",
            "bundle_bytes": baseline["bundle_bytes"],
            "archive_bytes": baseline["archive_bytes"],
            "saves_bundle_bytes": 0,
            "saves_archive_bytes": 0,
            "build_seconds": baseline["build_seconds"],
        },
    )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=ROOT / "dist" / "qargo-desktop")
    parser.add_argument("--runs", type=int, default=15, help="timed runs of each (median)")
    parser.add_argument("--exclusions", action="store_true", help="measure each exclusion")
    parser.add_argument(
        "--pyinstaller", type=Path, default=ROOT / "build" / "venv" / "bin" / "pyinstaller"
    )
    parser.add_argument(
        "--source",
        default=str(ROOT / ".venv" / "bin" / "qargo-desktop"),
        help="the source tree's command (default: the .venv's qargo-desktop)",
    )
    args = parser.parse_args()

    bundle = args.bundle.resolve()
    archives = sorted(bundle.parent.glob(f"{bundle.name}-*.tar.gz")) + sorted(
        bundle.parent.glob(f"{bundle.name}-*.zip")
    )
    machine = f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    results: dict[str, object] = {
        "machine": machine,
        "bundle_bytes": tree_bytes(bundle),
        "archive": archives[-1].name if archives else None,
        "archive_bytes": archives[-1].stat().st_size if archives else None,
        "startup": startup(bundle, [args.source], args.runs),
    }
    if args.exclusions:
        results["exclusions"] = exclusions(args.pyinstaller)
    print(json.dumps(results, indent=2))

    print(f"\nbundle {megabytes(int(results['bundle_bytes']))}", file=sys.stderr)
    if archives:
        print(f"archive {megabytes(int(results['archive_bytes'] or 0))}", file=sys.stderr)
    for name, pair in results["startup"].items():  # type: ignore[attr-defined]
        source, frozen = pair["source"]["median_ms"], pair["frozen"]["median_ms"]
        print(f"{name}: source {source} ms, frozen {frozen} ms (median)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
