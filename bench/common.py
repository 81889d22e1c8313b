"""What every benchmark shares: figures, the sandbox in its own process, launching with marks.

Everything here talks to loopback only: the sandbox binds 127.0.0.1, the relay binds
127.0.0.1 and forwards to the sandbox, and proxies are switched off for the app and for
these helpers alike.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PYTHON = sys.executable
APP = str(Path(sys.executable).with_name("qargo-desktop"))
ADMIN = "admin@northwind-haulage.example"
DOMAIN = "northwind-haulage.example"
LOOPBACK = "127.0.0.1"


# -- figures -------------------------------------------------------------------------------


@dataclass
class Figure:
    """One measured figure against its limit.

    ``kind`` is ``ratio`` (app / baseline must be at most ``target``), ``max`` (the app's
    own value must be at most ``target``), ``equal`` (it must equal ``target``) or
    ``info`` (reported, no limit).
    """

    name: str
    unit: str
    app: float | None
    baseline: float | None
    target: float
    kind: str = "ratio"
    note: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.app is None or not self.baseline:
            return None
        return self.app / self.baseline

    @property
    def met(self) -> bool | None:
        if self.app is None:
            return None
        if self.kind == "ratio":
            ratio = self.ratio
            return None if ratio is None else ratio <= self.target
        if self.kind == "equal":
            return self.app == self.target
        if self.kind == "info":
            return None
        return self.app <= self.target

    def line(self) -> str:
        def value(v: float | None) -> str:
            if v is None:
                return "-"
            if self.unit in ("", "requests", "sends"):
                return f"{v:g}"
            return f"{v:.3g} {self.unit}" if abs(v) < 100 else f"{v:.0f} {self.unit}"

        ratio = self.ratio
        relation = {"ratio": "ratio <=", "max": "<=", "equal": "==", "info": ""}[self.kind]
        target = (
            f"{relation} {self.target:g}"
            if self.kind == "ratio"
            else "none"
            if self.kind == "info"
            else f"{relation} {self.target:g} {self.unit}".rstrip()
        )
        met = (
            "(reported)"
            if self.kind == "info"
            else {True: "met", False: "NOT MET", None: "no result"}[self.met]
        )
        return (
            f"{self.name:<34} app {value(self.app):>12}  baseline {value(self.baseline):>12}  "
            f"ratio {'-' if ratio is None else f'{ratio:.2f}':>5}  target {target:<16} {met}"
            + (f"  ({self.note})" if self.note else "")
        )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratio"] = self.ratio
        data["met"] = self.met
        return data


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (no interpolation): a value that was measured."""
    ordered = sorted(values)
    rank = max(1, int(-(-fraction * len(ordered) // 1)))
    return ordered[rank - 1]


# -- crashes -----------------------------------------------------------------------------

#: Processes that died of a signal or a fatal Python error during the run (every one is
#: reported as a figure of its own; see run.py).
CRASHES: list[dict[str, Any]] = []


def note_crash(what: str, returncode: int, stderr: str) -> bool:
    """Remember a process that crashed; returns whether it did."""
    fatal = "Fatal Python error" in stderr
    if returncode >= 0 and not fatal:
        return False
    reason = next(
        (line for line in stderr.splitlines() if line.startswith("Fatal Python error")),
        f"killed by signal {-returncode}" if returncode < 0 else f"exit {returncode}",
    )
    CRASHES.append({"what": what, "returncode": returncode, "reason": reason})
    return True


def run_driver(
    command: list[str], env: dict[str, str], out: Path, what: str, timeout_s: float
) -> dict[str, Any]:
    """Run a benchmark driver; its results count if it wrote them before any crash at exit
    (which is then reported, not hidden)."""
    completed = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    crashed = note_crash(what, completed.returncode, completed.stderr)
    if completed.returncode != 0 and not (crashed and out.exists()):
        raise RuntimeError(f"{what} failed ({completed.returncode}): {completed.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.read_text())
    return result


# -- environment ------------------------------------------------------------------------


def child_env(config_dir: Path | None = None, **extra: str) -> dict[str, str]:
    """The environment of every process the benchmarks start: no proxies, offscreen Qt."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
        and not k.startswith("QARGO_BENCH")
    }
    env.setdefault("QT_QPA_PLATFORM", "offscreen")
    env["QARGO_PROXY"] = "none"
    env["BROWSER"] = f"{PYTHON} -m qargo_desktop.sandbox.browser %s"
    if config_dir is not None:
        env["QARGO_CONFIG_DIR"] = str(config_dir)
    env.update(extra)
    return env


def keyring_note() -> str:
    if os.environ.get("QARGO_KEYRING_SESSION") != "1":
        return (
            "not inside scripts/with-keyring: the token cache may not persist across "
            "processes, and silent sign-in at start-up may fail"
        )
    return ""


class WorkDir:
    """A temporary folder for one benchmark run, removed at the end unless kept."""

    def __init__(self, keep: bool = False) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="qargo-bench-"))
        self.keep = keep

    def sub(self, name: str) -> Path:
        path = self.path / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def close(self) -> None:
        if not self.keep:
            shutil.rmtree(self.path, ignore_errors=True)


# -- the sandbox, in its own process -------------------------------------------------------


class SandboxProcess:
    """``qargo-desktop sandbox serve`` in another process, with its control endpoints."""

    def __init__(
        self,
        data_dir: Path,
        config_file: Path,
        *,
        mailboxes: int | None = None,
        faults: dict[str, Any] | None = None,
        delivery_delay_s: float | None = None,
        log_file: Path | None = None,
    ) -> None:
        command = [
            APP, "sandbox", "serve", "--data", str(data_dir), "--write-config", str(config_file),
        ]  # fmt: skip
        if mailboxes:
            command += ["--mailboxes", str(mailboxes)]
        if faults:
            command += ["--faults", json.dumps(faults)]
        if delivery_delay_s is not None:
            command += ["--delivery-delay", str(delivery_delay_s)]
        self.config_file = config_file
        self._log = open(log_file or os.devnull, "w")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            command,
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError("the sandbox did not start (see its log)")
        self.info: dict[str, Any] = json.loads(line)
        self.control_url: str = self.info["control_url"]
        self.https_port: int = self.info["https_port"]
        self.ca_file: str = self.info["ca_certificate"]
        self._context = ssl.create_default_context(cafile=self.ca_file)
        # Never a proxy, whatever the environment says: the sandbox is on loopback.
        self._opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=self._context)
        )

    def control(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.control_url}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"} if data else {},
        )
        with self._opener.open(request, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def set_faults(self, **settings: Any) -> None:
        self.control("PUT", "/faults", settings)

    def counters(self) -> list[dict[str, Any]]:
        return list(self.control("GET", "/faults/counters")["requests"])

    def reset_counters(self) -> None:
        self.control("DELETE", "/faults/counters")

    def request_count(
        self,
        counters: list[dict[str, Any]] | None = None,
        *,
        service: str | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> int:
        rows = self.counters() if counters is None else counters
        return sum(
            row["count"]
            for row in rows
            if (service is None or row["service"] == service)
            and (method is None or row["method"] == method)
            and (path is None or row["path"] == path)
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def __enter__(self) -> SandboxProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def sign_in(config_file: Path, config_dir: Path, log: Path | None = None) -> None:
    """Sign the sandbox's super admin in once, through the scripted browser: later starts
    of the app sign in silently from the saved (encrypted) token cache."""
    result = subprocess.run(
        [APP, "signin", "--config", str(config_file)],
        check=False,
        env=child_env(config_dir),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if log is not None:
        log.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise RuntimeError(f"signing in failed ({result.returncode}): {result.stderr[-2000:]}")


# -- launching with marks -------------------------------------------------------------------


def launch_with_marks(
    command: list[str],
    env: dict[str, str],
    marks_file: Path,
    quit_mark: str,
    *,
    timeout_s: float = 120.0,
) -> dict[str, float]:
    """Run a program that writes milestone marks; return each mark's seconds after launch.

    The launch moment is taken just before the process is created, on the same
    system-wide monotonic clock the marks use, so interpreter start-up, imports and
    everything up to the paint count.
    """
    marks_file.unlink(missing_ok=True)
    env = dict(env, QARGO_BENCH_MARKS=str(marks_file), QARGO_BENCH_QUIT=quit_mark)
    started = time.monotonic()
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        _out, err = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        _out, err = process.communicate()
        raise RuntimeError(
            f"{command[:3]} did not reach {quit_mark} in {timeout_s:.0f} s"
        ) from None
    note_crash(" ".join(Path(c).name for c in command[:2]), process.returncode, err)
    marks: dict[str, float] = {}
    if marks_file.exists():
        for line in marks_file.read_text().splitlines():
            entry = json.loads(line)
            marks.setdefault(entry["mark"], entry["t"] - started)
    if quit_mark not in marks:
        raise RuntimeError(
            f"{command[:3]} ended ({process.returncode}) without the mark {quit_mark}: "
            f"{err[-1500:]}"
        )
    return marks


# -- process memory ---------------------------------------------------------------------------


def rss_bytes(pid: int | None = None) -> int:
    """Resident memory of a process (Linux: /proc; elsewhere psutil if installed)."""
    statm = Path(f"/proc/{pid or 'self'}/statm")
    if statm.exists():
        return int(statm.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    import psutil  # type: ignore[import-not-found]

    return int(psutil.Process(pid).memory_info().rss)


# -- a byte-counting relay ---------------------------------------------------------------------


class Relay:
    """A TCP relay on loopback that counts the bytes each way (TLS passes through untouched)."""

    def __init__(self, target_port: int) -> None:
        self._target = (LOOPBACK, target_port)
        self._server = socket.create_server((LOOPBACK, 0))
        self.port: int = self._server.getsockname()[1]
        self._lock = threading.Lock()
        self.sent = 0  # client to server
        self.received = 0  # server to client
        self.connections = 0
        self._stopped = False
        threading.Thread(target=self._accept, name="relay", daemon=True).start()

    def reset(self) -> None:
        with self._lock:
            self.sent = self.received = self.connections = 0

    def totals(self) -> tuple[int, int, int]:
        with self._lock:
            return self.sent, self.received, self.connections

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _address = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, upstream: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
                with self._lock:
                    if upstream:
                        self.sent += len(data)
                    else:
                        self.received += len(data)
        except OSError:
            pass
        finally:
            for s in (sink, source):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self._stopped = True
        self._server.close()


def relayed_config(config_file: Path, relay_port: int, https_port: int, out: Path) -> Path:
    """A copy of a sandbox settings file whose API and Graph addresses go through the relay.

    The sign-in authority stays direct: MSAL takes the token endpoint from the discovery
    document anyway, so relaying it would count only part of the sign-in traffic.
    """
    text = config_file.read_text()
    for key in ("api_base_url", "graph_base_url"):
        text = (
            "\n".join(
                line.replace(f":{https_port}/", f":{relay_port}/")
                if line.startswith(f"{key} =")
                else line
                for line in text.splitlines()
            )
            + "\n"
        )
    out.write_text(text)
    return out


def machine() -> dict[str, Any]:
    """What the figures ran on."""
    import platform

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "qt_platform": os.environ.get("QT_QPA_PLATFORM", "offscreen"),
    }
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        first = meminfo.read_text().splitlines()[0]
        info["memory_gb"] = round(int(first.split()[1]) / 1e6, 1)
    try:
        import PySide6

        info["pyside6"] = PySide6.__version__
    except ImportError:
        pass
    return info
