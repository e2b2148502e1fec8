"""Bursts of connections against ``wstrace serve``: is every connection in the trace file?

    python -m bench.burst [--waves 2 --connections 1000 --messages 4]

Starts ``wstrace serve`` on a FastAPI echo app (:data:`app`), with
``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing at a loopback port nothing listens on (a collector
that is down).  Each wave opens ``--connections`` WebSocket connections at once; each sends
``--messages`` text messages, waits for each echo, and closes with 1000.  After each wave the
server's memory (RSS; its export processes' apart) is read.  Then the server is stopped with
SIGINT, as Ctrl-C would, and the trace file is read back.

It prints, per wave: connections served, connections whole in the file (one ``ws.connection``,
every message and frame, one ``ws.close`` with 1000, nothing missing), and RSS; and the
server's exit summary: spans written and dropped, per output.  The figures go to
``--report`` (``bench/burst-report.json`` by default).  No figure is asserted here: the
suite's exact-count version is ``tests/test_lossless_load.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from tracer import vocab
from tracer.export.traceset import Connection, TraceSet

app = FastAPI()


@app.websocket("/echo")
async def echo(websocket: WebSocket) -> None:
    """Every text message back to its sender."""
    await websocket.accept()
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            await websocket.send_text(await websocket.receive_text())


# --- What "whole" means for one echo connection ----------------------------------------------


def whole(traces: TraceSet, conn: Connection, messages: int) -> bool:
    """One connection of this scenario, all there: every message received, every frame both
    ways (``messages`` data frames and the close), one ``ws.close`` with 1000, no lost or
    orphan span in its trace."""
    if conn.incomplete:
        return False
    names: dict[str, int] = {}
    closes = []
    for span in conn.spans:
        names[span.name] = names.get(span.name, 0) + 1
        if span.name == vocab.WS_CLOSE:
            closes.append(span)
    return (
        names.get(vocab.CONNECTION) == 1
        and names.get(vocab.WS_MESSAGE_RECEIVE) == messages
        and names.get(vocab.WS_FRAME_RECEIVE) == messages + 1
        and names.get(vocab.WS_FRAME_SEND) == messages + 1
        and len(closes) == 1
        and closes[0].attributes.get(vocab.WS_CLOSE_CODE) == 1000
    )


# --- The load -------------------------------------------------------------------------------


def raise_file_limit(needed: int) -> int:
    """Raise this process's soft limit on open files towards ``needed`` (children inherit it);
    returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return int(soft)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def one_connection(url: str, messages: int, timeout: float) -> bool:
    """Connect, send ``messages`` texts one at a time awaiting each echo, close with 1000."""
    from websockets.asyncio.client import connect

    async with asyncio.timeout(timeout):
        async with connect(url, open_timeout=timeout, close_timeout=timeout) as ws:
            for n in range(messages):
                text = f"message {n}"
                await ws.send(text)
                if await ws.recv() != text:
                    return False
            await ws.close(1000)
    return True


async def wave(url: str, connections: int, messages: int, timeout: float) -> int:
    """``connections`` clients at once; returns how many did everything."""
    results = await asyncio.gather(
        *(one_connection(url, messages, timeout) for _ in range(connections)),
        return_exceptions=True,
    )
    return sum(1 for r in results if r is True)


@dataclass
class Wave:
    connections: int
    served: int
    whole: int = 0
    rss_mib: float = 0.0
    """The server process."""
    export_rss_mib: float = 0.0
    """Its export processes (file, collector)."""


@dataclass
class Report:
    waves: list[Wave] = field(default_factory=list)
    file_limit: int = 0
    exit_summary: list[str] = field(default_factory=list)
    spans_in_file: int = 0
    trace_file: str = ""
    exit_status: int | None = None

    def figures(self) -> dict[str, Any]:
        return asdict(self)


def server_rss(pid: int) -> tuple[int, int]:
    """The server's RSS, and its export processes' together."""
    import psutil

    process = psutil.Process(pid)
    children = 0
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            children += child.memory_info().rss
    return int(process.memory_info().rss), children


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"wstrace serve exited with {process.returncode}")
        with socket.socket() as sock, contextlib.suppress(OSError):
            sock.settimeout(0.5)
            sock.connect(("127.0.0.1", port))
            return
        time.sleep(0.05)
    raise RuntimeError("wstrace serve did not start listening")


@contextlib.contextmanager
def wstrace_serve(
    out: Path, port: int, extra_env: dict[str, str], stop: int = signal.SIGINT
) -> Iterator[Any]:
    """``wstrace serve bench.burst:app`` in a process of its own; stopped with ``stop``
    (SIGINT, as Ctrl-C; or SIGTERM)."""
    env = {**os.environ, **extra_env}
    command = [sys.executable, "-m", "tracer.cli", "serve", "bench.burst:app"]
    command += ["--port", str(port), "--out", str(out)]
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(command, env=env, stderr=stderr, stdout=subprocess.DEVNULL)
        holder: dict[str, Any] = {"process": process, "stderr": ""}
        try:
            wait_for_port(port, process, 30)
            yield holder
        finally:
            if process.poll() is None:
                process.send_signal(stop)
            try:
                process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            stderr.seek(0)
            holder["stderr"] = stderr.read().decode("utf-8", "replace")


SUMMARY_LINE = re.compile(r"^(file|collector) .*spans written.*$", re.MULTILINE)


def run(
    connections: int,
    waves: int,
    messages: int,
    timeout: float = 120.0,
    stop: int = signal.SIGINT,
) -> Report:
    report = Report(file_limit=raise_file_limit(2 * connections + 256))
    closed = free_port()  # nothing listens here: the collector is down
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{closed}"}
        boundaries = []
        with wstrace_serve(out, port, env, stop) as server:
            url = f"ws://127.0.0.1:{port}/echo"
            for _ in range(waves):
                boundaries.append(time.time_ns())
                served = asyncio.run(wave(url, connections, messages, timeout))
                item = Wave(connections, served)
                own, children = server_rss(server["process"].pid)
                item.rss_mib = round(own / 2**20, 1)
                item.export_rss_mib = round(children / 2**20, 1)
                report.waves.append(item)
        report.exit_status = server["process"].returncode
        report.exit_summary = [m.group(0) for m in SUMMARY_LINE.finditer(server["stderr"])]
        from tracer.export.reader import load

        files = sorted(out.glob("*.otlp.jsonl"))
        traces = load(files) if files else TraceSet([])
        report.trace_file = ", ".join(f.name for f in files)
        report.spans_in_file = len(traces.spans)
        for conn in traces.connections:
            index = sum(1 for b in boundaries if conn.root.start_ns >= b) - 1
            if index >= 0 and whole(traces, conn, messages):
                report.waves[index].whole += 1
    return report


def print_report(report: Report) -> None:
    for n, item in enumerate(report.waves, start=1):
        print(
            f"wave {n}: {item.served}/{item.connections} connections served, "
            f"{item.whole} whole in the trace file, server RSS {item.rss_mib} MiB "
            f"(export processes {item.export_rss_mib} MiB)"
        )
    for line in report.exit_summary:
        print(f"exit summary: {line}")
    print(f"spans in the trace file: {report.spans_in_file}; open-files limit {report.file_limit}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--waves", type=int, default=2)
    parser.add_argument("--messages", type=int, default=4)
    parser.add_argument("--report", type=Path, default=Path("bench/burst-report.json"))
    args = parser.parse_args(argv)
    report = run(args.connections, args.waves, args.messages)
    print_report(report)
    args.report.write_text(json.dumps(report.figures(), indent=2) + "\n")
    print(f"figures written to {args.report}")


if __name__ == "__main__":
    main()
