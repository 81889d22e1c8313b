"""Figure 2, responsiveness: the longest stall of the GUI event loop, 1 s of latency injected.

The sandbox (another process) answers every request one second late, its organisation
has 10,000 mailboxes, and the real window (bench/gui_driver.py --phase responsiveness)
signs in through the scripted browser, loads the list, authorises a mailbox (again through
the scripted browser) and runs its self-test. A 2 ms precise timer on the GUI thread
measures every gap between its ticks; the longest gap of each activity is reported.
"""

from __future__ import annotations

from typing import Any

from common import BENCH, PYTHON, Figure, SandboxProcess, WorkDir, child_env, run_driver

STALL_TARGET_MS = 50.0
MAILBOXES = 10_000
PHASES = ("sign_in", "refresh", "authorise", "selftest")


def run(work: WorkDir, *, quick: bool, log: Any, args: Any = None) -> list[Figure]:
    folder = work.sub("responsiveness")
    config_file = folder / "sandbox.toml"
    out = folder / "result.json"
    diagnose = bool(getattr(args, "diagnose", False))
    with SandboxProcess(
        folder / "sandbox",
        config_file,
        mailboxes=MAILBOXES,
        faults={"latency_s": 1.0},
        log_file=folder / "sandbox.log",
    ):
        command = [PYTHON, str(BENCH / "gui_driver.py"), "--config", str(config_file),
                   "--phase", "responsiveness", "--out", str(out)]  # fmt: skip
        if diagnose:
            command.append("--diagnose")
        result = run_driver(command, child_env(folder / "app"), out, "responsiveness driver", 1800)
    worst = result["worst_ms"]
    log(
        f"  {result['rows']} rows; phases took "
        + ", ".join(f"{k} {v:.0f} s" for k, v in result["phase_s"].items())
        + f"; self-test verdict {result['selftest_verdict']}"
    )
    seconds, over = result["phase_s"], result["stalls_over_50ms"]
    figures = [
        Figure(
            f"responsiveness.stall.{phase}",
            "ms",
            worst[phase],
            None,
            STALL_TARGET_MS,
            kind="max",
            note=f"{seconds[phase]:.0f} s, {over[phase]} over 50 ms",
        )
        for phase in PHASES
    ]
    figures.append(
        Figure(
            "responsiveness.max_stall",
            "ms",
            max(worst[phase] for phase in PHASES),
            None,
            STALL_TARGET_MS,
            kind="max",
            note="1 s latency on every response",
            detail=result,
        )
    )
    return figures
