"""Figure 5, idle cost: the window left open with nothing changing on the server.

The app (``qargo-desktop``, a new process) signs in silently against a sandbox of 10,000
mailboxes (served by this process, another process than the app) and loads the list;
from the moment the list is shown, the
window is left alone for the chosen time (10 minutes by default, 90 seconds with
``--quick``) while it refreshes every ``refresh_interval_s`` (60 s, its default; 15 s with
``--quick``). Then:

- ``idle.requests_per_min``: requests to any of the three services per minute (the
  sandbox's request counters);
- ``idle.bytes_per_min``: bytes per minute both ways on the wire, TLS included, counted
  by a relay on loopback between the app and the organisation API and Graph (the
  sign-in authority is not relayed: it sees no request while idle, which the request
  counters show);
- ``idle.refreshes_not_304``: refreshes started in the window and not answered 304 Not
  Modified (the app's own log, at debug level).

Nothing may change on the server meanwhile. The sandbox's authorisation attempts expire
after 10 minutes by default (its ``authorising`` mailboxes then turn ``link_failed``, a real
change the app rightly reloads), so this sandbox keeps them for a day.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from common import APP, Figure, Relay, WorkDir, child_env, relayed_config, sign_in

MAILBOXES = 10_000
UNCHANGED = "Mailbox list unchanged (304)"
STARTED = "Task refresh mailboxes"
ATTEMPT_TTL_S = 86_400


class InProcessSandbox:
    """The sandbox served by this process, with a day-long attempt lifetime."""

    def __init__(self, data_dir: Path, config_file: Path) -> None:
        from qargo_desktop.core.bootstrap import write_sandbox_config
        from qargo_desktop.sandbox.server import Sandbox
        from qargo_desktop.sandbox.world import SandboxOptions

        self.sandbox = Sandbox(
            SandboxOptions(data_dir=data_dir, mailboxes=MAILBOXES, attempt_ttl_s=ATTEMPT_TTL_S)
        )
        info = self.sandbox.start()
        self.https_port = info.https_port
        write_sandbox_config(config_file, info)
        faults = self.sandbox.world.faults
        assert faults is not None
        self.faults = faults

    def counters(self) -> list[dict[str, Any]]:
        return list(self.faults.counters()["requests"])

    def reset_counters(self) -> None:
        self.faults.reset_counters()

    def __enter__(self) -> InProcessSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sandbox.stop()


def wait_for_mark(marks: Path, name: str, process: subprocess.Popen[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the app ended ({process.returncode}) before {name}")
        if marks.exists() and any(
            json.loads(line)["mark"] == name for line in marks.read_text().splitlines()
        ):
            return
        time.sleep(0.2)
    raise RuntimeError(f"the app did not reach {name} in {timeout_s:.0f} s")


def log_lines(log_dir: Path) -> list[str]:
    lines: list[str] = []
    for path in sorted(log_dir.glob("*.log*")):
        lines += path.read_text(errors="replace").splitlines()
    return lines


def run(work: WorkDir, *, quick: bool, log: Any, args: Any = None) -> list[Figure]:
    minutes = getattr(args, "idle_minutes", None) or (1.5 if quick else 10.0)
    interval_s = 15.0 if quick else 60.0
    folder = work.sub("idle")
    config_file = folder / "sandbox.toml"
    config_dir = folder / "app"
    marks = folder / "marks.jsonl"
    with InProcessSandbox(folder / "sandbox", config_file) as sandbox:
        sign_in(config_file, config_dir, folder / "signin.log")
        relay = Relay(sandbox.https_port)
        relayed = relayed_config(
            config_file, relay.port, sandbox.https_port, folder / "relayed.toml"
        )
        env = child_env(
            config_dir,
            QARGO_REFRESH_INTERVAL_S=f"{interval_s:g}",
            QARGO_LOG_LEVEL="DEBUG",
            QARGO_BENCH_MARKS=str(marks),
        )
        process = subprocess.Popen(
            [APP, "--config", str(relayed)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            wait_for_mark(marks, "list_shown", process, 300)
            before = len(log_lines(config_dir / "logs"))
            sandbox.reset_counters()
            relay.reset()
            started = time.monotonic()
            log(f"  list shown; idle for {minutes:g} min, refreshing every {interval_s:g} s")
            time.sleep(minutes * 60)
            elapsed_min = (time.monotonic() - started) / 60
            counters = sandbox.counters()
            sent, received, connections = relay.totals()
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            relay.stop()
    lines = log_lines(config_dir / "logs")[before:]
    unchanged = sum(UNCHANGED in line for line in lines)
    refreshes = sum(STARTED in line and line.endswith("started") for line in lines)
    requests = sum(row["count"] for row in counters)
    by_service = {
        service: sum(row["count"] for row in counters if row["service"] == service)
        for service in ("identity", "api", "graph")
    }
    detail = {
        "minutes": round(elapsed_min, 2),
        "refresh_interval_s": interval_s,
        "requests": requests,
        "requests_by_service": by_service,
        "request_paths": counters,
        "bytes_sent": sent,
        "bytes_received": received,
        "connections": connections,
        "refreshes": refreshes,
        "answered_304": unchanged,
    }
    log(f"  {refreshes} refreshes, {unchanged} answered 304; {connections} connections")
    return [
        Figure(
            "idle.requests_per_min",
            "req/min",
            requests / elapsed_min,
            None,
            60.0 / interval_s,
            kind="info",
            note=f"{requests} in {elapsed_min:.1f} min, refresh every {interval_s:g} s",
            detail=detail,
        ),
        Figure(
            "idle.bytes_per_min",
            "B/min",
            (sent + received) / elapsed_min,
            None,
            0,
            kind="info",
            note=f"{sent} B up, {received} B down, {connections} TLS connection(s)",
        ),
        Figure(
            "idle.refreshes_not_304",
            "",
            float(refreshes - unchanged) if refreshes else None,
            None,
            0,
            kind="equal",
            note=f"{unchanged} of {refreshes} refreshes answered 304",
        ),
    ]
