"""Runs the rounds: one fresh server process per variant per round, one load process against it.

Order: the variants are interleaved, round ``r`` running them rotated by ``r`` places (round 1
``A B C D E F``, round 2 ``B C D E F A`` …), so slow drift of the machine (frequency, heat,
caches, other tenants) spreads over every variant instead of landing on one.  Each variant's
server is started fresh for each round (its own SQLite file and trace directory), warmed by the
load generator's unmeasured messages, measured, then stopped; nothing else of the benchmark
runs meanwhile, except with ``parallel_start`` (the smoke test's ``--quick``), where a round's
servers are all started together to save time and then measured one at a time.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.interleave import INTERLEAVED
from bench.load import PHASES
from bench.variants import VARIANTS

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Sizes:
    """How much each round measures.  ``handshakes`` and ``idle`` are totals per variant, split
    evenly over the rounds and pooled again by the report."""

    rounds: int = 4
    clients: int = 4
    messages: int = 4000
    echo_seconds: float = 0.0
    """A window of so many messages, not seconds: the auction app's work per bid grows with the
    bids already in its room (it counts them), so a window as long in time would give a faster
    server bigger rooms, and a dearer bid."""
    warmup: int = 100
    fanout: int = 300
    fanout_seconds: float = 0.0
    """(As for ``echo_seconds``.)"""
    fanout_size: int = 50
    handshakes: int = 500
    idle: int = 500
    settle: float = 0.3
    timeout: float = 20.0

    def per_round(self, total: int) -> int:
        return -(-total // self.rounds)


QUICK = Sizes(
    rounds=1, clients=2, messages=40, echo_seconds=0.0, warmup=5, fanout=3, fanout_seconds=0.0,
    fanout_size=5, handshakes=10, idle=10, settle=0.05, timeout=10.0,
)


@dataclass
class Options:
    variants: list[str]
    sizes: Sizes = field(default_factory=Sizes)
    http: str = "httptools"
    ws: str = "websockets-sansio"
    loop: str = "auto"
    compression: bool = False
    parallel_start: bool = False
    phases: tuple[str, ...] = PHASES
    profile_dir: str | None = None
    """Attach ``py-spy record`` to each server while it is loaded; collapsed stacks go here."""
    profile_rate: int = 400
    profile_gil: bool = False
    """Profile only the GIL holder (``py-spy --gil``)."""
    keep: str | None = None
    """Keep the servers' databases, traces and logs under this directory."""
    snapshot: bool = True
    """Run the servers and load generators from a copy of the code taken at the start."""
    source: Path = ROOT
    """Where the servers and load generators import the code from (set by :func:`run`)."""
    start_timeout: float = 60.0


RESULTS_FILE = "bench/RESULTS.md"
"""What a full run writes (:mod:`bench.__main__`), relative to the repository."""
SNAPSHOT = ("tracer", "demo_app", "bench")
"""What a run copies before it starts, so that every round measures the same code even while
the working tree is being edited."""


def snapshot(into: Path) -> Path:
    """Copy the packages the servers import into ``into``; returns the directory to run in."""
    into.mkdir(parents=True, exist_ok=True)
    for name in SNAPSHOT:
        shutil.copytree(ROOT / name, into / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return into


def _env(source: Path = ROOT) -> dict[str, str]:
    env = dict(os.environ)
    # Ahead of the editable install's finder, so a snapshot's packages are the ones imported.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(source), env.get("PYTHONPATH")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    # Nothing from the surroundings may turn telemetry on behind a variant's back.
    env["FASTAPI_OTEL_AUTO_CONFIGURE"] = "false"
    for key in [k for k in env if k.startswith("OTEL_")]:
        del env[key]
    return env


class ServerProcess:
    """``python -m bench.server`` for one variant; a context manager that always stops it."""

    def __init__(self, variant: str, workdir: Path, options: Options) -> None:
        self.variant = variant
        self.workdir = workdir
        self.options = options
        self.proc: subprocess.Popen[bytes] | None = None
        self.info: dict[str, Any] = {}
        self.profile_path: Path | None = None
        self._profiler: subprocess.Popen[bytes] | None = None
        self._buffer = b""

    def command(self) -> list[str]:
        o = self.options
        cmd = [
            sys.executable, "-m", "bench.server",
            "--variant", self.variant,
            "--db", str(self.workdir / "auction.db"),
            "--trace-dir", str(self.workdir / "traces"),
            "--http", o.http, "--ws", o.ws, "--loop", o.loop,
            "--watch-stdin",
        ]
        return cmd

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._stderr = open(self.workdir / "server.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            cwd=self.options.source,
            env=_env(self.options.source),
        )

    def wait_ready(self) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + self.options.start_timeout
        fd = self.proc.stdout.fileno()
        while time.monotonic() < deadline:
            while b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                with contextlib.suppress(ValueError):
                    info = json.loads(line)
                    if isinstance(info, dict) and info.get("event") == "ready":
                        self.info = info
                        return info
            if self.proc.poll() is not None:
                break
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                self._buffer += chunk
        raise RuntimeError(f"server {self.variant} did not start:\n{self.log_tail()}")

    def start_profiler(self, tag: str) -> Path:
        """Attach ``py-spy record`` to the serving process (startup and imports are not seen).

        ``--nonblocking``: py-spy then reads the process without stopping it, which is less
        intrusive and, in containers, the way its idle detection works (a stopped process's
        blocked threads look busy); ``--full-filenames`` for :mod:`bench.profile`."""
        o = self.options
        assert o.profile_dir is not None
        py_spy = py_spy_path()
        assert py_spy is not None, "main() checks for py-spy before any server starts"
        self.profile_path = Path(o.profile_dir) / f"{self.variant}.{tag}.collapsed.txt"
        with open(self.workdir / "py-spy.log", "wb") as log:
            self._profiler = subprocess.Popen(
                [py_spy, "record", "--pid", str(self.info["pid"]), "--format", "raw",
                 "--full-filenames", "--nonblocking", *(["--gil"] if o.profile_gil else []),
                 "--rate", str(o.profile_rate), "--output", str(self.profile_path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        time.sleep(0.5)  # let it attach before the load starts
        if self._profiler.poll() is not None:
            raise RuntimeError(
                "py-spy could not attach: "
                + (self.workdir / "py-spy.log").read_text(errors="replace")[-2000:]
            )
        return self.profile_path

    def stop_profiler(self) -> None:
        """Stop py-spy with SIGINT, which makes it write its output."""
        profiler, self._profiler = self._profiler, None
        if profiler is None:
            return
        profiler.send_signal(signal.SIGINT)
        try:
            profiler.wait(timeout=30)
        except subprocess.TimeoutExpired:
            profiler.kill()
            profiler.wait(timeout=5)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = (self.workdir / "server.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def request_stop(self) -> None:
        """Ask the server to shut down by itself (closing its stdin), without waiting."""
        self.stop_profiler()
        if self.proc is not None and self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()

    def stop(self) -> None:
        """Shut the server down: ask, wait a little, then terminate, then kill."""
        self.request_stop()
        proc = self.proc
        if proc is None:
            return
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        with contextlib.suppress(OSError):
            if proc.stdout is not None:
                proc.stdout.close()
        self._stderr.close()
        self.proc = None

    def trace_bytes(self) -> int:
        directory = self.workdir / "traces"
        if not directory.is_dir():
            return 0
        return sum(p.stat().st_size for p in directory.iterdir() if p.is_file())


def run_load(
    server: ServerProcess,
    options: Options,
    phases: tuple[str, ...] | None = None,
    tracemalloc: bool = False,
) -> dict[str, Any]:
    """Run ``python -m bench.load`` against ``server``; its JSON result."""
    s = options.sizes
    cmd = [
        sys.executable, "-m", "bench.load",
        "--port", str(server.info["port"]),
        "--control-port", str(server.info["control_port"]),
        "--clients", str(s.clients), "--messages", str(s.messages), "--warmup", str(s.warmup),
        "--echo-seconds", str(s.echo_seconds),
        "--fanout", str(s.fanout), "--fanout-size", str(s.fanout_size),
        "--fanout-seconds", str(s.fanout_seconds),
        "--handshakes", str(s.per_round(s.handshakes)), "--idle", str(s.per_round(s.idle)),
        "--settle", str(s.settle), "--timeout", str(s.timeout),
        "--phases", ",".join(phases or options.phases),
    ]
    if options.compression:
        cmd.append("--compression")
    if tracemalloc:
        cmd.append("--tracemalloc")
    return _json_of(
        cmd, options, s.timeout * 15, f"load generator against {server.variant}",
        lambda: "\nserver log:\n" + server.log_tail(),
    )


def _json_of(
    cmd: list[str], options: Options, budget: float, what: str, more: Callable[[], str]
) -> dict[str, Any]:
    """Run one of the benchmark's drivers from the code the run copied, within ``budget``
    seconds: the JSON object it printed last.  A failure says ``what`` failed, with the end
    of its stderr and ``more()`` (a server's log)."""
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        cwd=options.source, env=_env(options.source),
    )
    try:
        out, err = proc.communicate(timeout=budget)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
        raise RuntimeError(f"{what} timed out after {budget:.0f} s") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{what} failed ({proc.returncode}):\n" + err.decode(errors="replace")[-3000:] + more()
        )
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


def interleave(
    options: Options, work: Path, phases: tuple[str, ...]
) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
    """One round of ``phases`` with every variant's server at once, fresh, driven in turn by
    ``python -m bench.interleave``: ``{variant: figures}``, and the bytes of trace each server
    wrote."""
    s = options.sizes
    servers = [ServerProcess(v, work / v, options) for v in options.variants]
    try:
        for server in servers:
            server.start()
        cmd = [sys.executable, "-m", "bench.interleave", "--phases", ",".join(phases),
               "--messages", str(s.messages), "--clients", str(s.clients),
               "--warmup", str(s.warmup), "--handshakes", str(s.per_round(s.handshakes)),
               "--timeout", str(s.timeout)]  # fmt: skip
        if options.compression:
            cmd.append("--compression")
        for server in servers:
            info = server.wait_ready()
            cmd += ["--target", f"{server.variant}={info['port']}:{info['control_port']}"]
        budget = s.timeout * 15 + (s.per_round(s.handshakes) + s.messages / 100) * len(servers)
        figures = _json_of(cmd, options, budget, "interleaved phases", lambda: "")
    finally:
        for server in servers:
            server.stop()
    return figures, {server.variant: server.trace_bytes() for server in servers}


def merge_round(
    rounds: dict[str, list[dict[str, Any]]],
    index: int,
    figures: dict[str, dict[str, Any]],
    load: list[float],
    trace_bytes: dict[str, int],
) -> None:
    """A round's interleaved ``figures`` join the figures of round ``index`` (0-based; a round
    of its own, with the machine's ``load`` around it, when no other phase was run): errors
    are added to the round's, and so is the trace its servers wrote."""
    for variant, found in figures.items():
        kept = rounds.setdefault(variant, [])
        if index >= len(kept):
            kept.append({"round": index + 1, "errors": [], "loadavg": load})
        round_ = kept[index]
        errors = round_.get("errors", []) + found.get("errors", [])
        round_.update(found)
        round_["errors"] = errors
        round_["trace_bytes"] = round_.get("trace_bytes", 0) + trace_bytes.get(variant, 0)


def profile_load(server: ServerProcess, options: Options) -> tuple[dict[str, Any], dict[str, str]]:
    """The phases one at a time: ``idle`` under tracemalloc, each other under py-spy.

    Each CPU profile then covers one figure of the bar (CPU per message, handshakes …), and
    the allocation tracing, which slows the server down a lot, is in none of them.
    """
    result: dict[str, Any] = {"errors": []}
    paths: dict[str, str] = {}
    for phase in options.phases:
        if phase == "idle":
            part = run_load(server, options, ("idle",), tracemalloc=True)
        else:
            paths[phase] = str(server.start_profiler(phase))
            try:
                part = run_load(server, options, (phase,))
            finally:
                server.stop_profiler()
        errors = result["errors"] + part.pop("errors", [])
        result.update(part)
        result["errors"] = errors
    result["phases"] = list(options.phases)
    return result, paths


def py_spy_path() -> str | None:
    """The py-spy command ``--profile`` samples the servers with, if installed."""
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return found if Path(found).exists() else None


def round_order(variants: list[str], round_index: int) -> list[str]:
    shift = round_index % len(variants)
    return variants[shift:] + variants[:shift]


@contextlib.contextmanager
def _workspace(keep: str | None) -> Iterator[Path]:
    if keep:
        path = Path(keep)
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    path = Path(tempfile.mkdtemp(prefix="wstrace-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run(options: Options, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every round of every variant; the raw per-round results, the order and the notes."""
    say = progress or (lambda _msg: None)
    unknown = [v for v in options.variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}")
    started = time.monotonic()
    measured = machine()  # the code as it is now: the snapshot is taken from it just below
    rounds: dict[str, list[dict[str, Any]]] = {v: [] for v in options.variants}
    notes: dict[str, dict[str, Any]] = {}
    orders: list[list[str]] = []
    profiles: dict[str, dict[str, str]] = {}
    if options.profile_dir:
        Path(options.profile_dir).mkdir(parents=True, exist_ok=True)
    # Echo and handshakes are measured at the end, every variant's interleaved with the
    # others' (bench/interleave.py), in rounds of fresh servers, except under the profiler,
    # which wants one server at a time.
    interleaved = () if options.profile_dir else tuple(
        p for p in options.phases if p in INTERLEAVED
    )  # fmt: skip
    phases = tuple(p for p in options.phases if p not in interleaved)
    with _workspace(options.keep) as work:
        options.source = snapshot(work / "src") if options.snapshot else ROOT
        for r in range(options.sizes.rounds if phases else 0):
            order = round_order(options.variants, r)
            orders.append(order)
            servers = [ServerProcess(v, work / f"r{r + 1}-{v}", options) for v in order]
            try:
                if options.parallel_start:
                    for server in servers:
                        server.start()
                for server in servers:
                    if not options.parallel_start:
                        server.start()
                    info = server.wait_ready()
                    say(f"round {r + 1}/{options.sizes.rounds}: {server.variant}")
                    load_before = os.getloadavg()[0]
                    if options.profile_dir:
                        result, paths = profile_load(server, options)
                        profiles[server.variant] = paths
                    else:
                        result = run_load(server, options, phases)
                    if options.parallel_start:
                        server.request_stop()  # reaped at the end of the round
                        result["trace_bytes"] = server.trace_bytes()
                    else:
                        server.stop()  # nothing else runs while the next one is measured
                        result["trace_bytes"] = server.trace_bytes()
                        if not options.keep:
                            shutil.rmtree(server.workdir, ignore_errors=True)
                    result["round"] = r + 1
                    result["loadavg"] = [load_before, os.getloadavg()[0]]
                    rounds[server.variant].append(result)
                    notes.setdefault(server.variant, {
                        k: v for k, v in info.items()
                        if k not in ("event", "pid", "port", "control_port", "trace_dir")
                    })
            finally:
                for server in servers:
                    server.stop()
        for r in range(options.sizes.rounds if interleaved else 0):
            say(f"round {r + 1}/{options.sizes.rounds}: {' and '.join(interleaved)}, "
                "every variant in turn")  # fmt: skip
            load_before = os.getloadavg()[0]
            workdir = work / f"r{r + 1}-interleaved"
            figures, written = interleave(options, workdir, interleaved)
            merge_round(rounds, r, figures, [load_before, os.getloadavg()[0]], written)
            if not options.keep:
                shutil.rmtree(workdir, ignore_errors=True)
    return {
        "machine": {**measured, "snapshot": options.snapshot},
        "options": {**asdict(options), "sizes": asdict(options.sizes),
                    "source": str(options.source)},
        "order": orders,
        "rounds": rounds,
        "notes": notes,
        "profiles": profiles,
        "elapsed_s": time.monotonic() - started,
    }


def machine() -> dict[str, Any]:
    from importlib import metadata

    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for dist in ("uvicorn", "fastapi", "starlette", "websockets", "opentelemetry-sdk",
                 "opentelemetry-instrumentation-asgi", "uvloop", "httptools"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count() or 0
    return {
        "source": _source(),
        "cpus": usable,
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def _source() -> str:
    """The commit measured, and which of the folders a run copies (:data:`SNAPSHOT`) differ
    from it (the results file a run writes is not code)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
            timeout=10, check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", *SNAPSHOT, f":!{RESULTS_FILE}"], cwd=ROOT,
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    folders = sorted({line[3:].split("/", 1)[0] for line in changed if len(line) > 3})
    if not folders:
        return head
    return head + " + uncommitted changes in " + ", ".join(f"{folder}/" for folder in folders)
