"""One benchmark server process: the auction app under one variant's tracing, on uvicorn.

    python -m bench.server --variant conn-spans --db /tmp/x/auction.db [--port 0]
        [--http httptools] [--ws websockets-sansio] [--loop auto] [--trace-dir DIR]

When it is serving it prints one JSON line on stdout::

    {"event": "ready", "pid": ..., "port": ..., "control_port": ..., "exporter": ..., ...}

The **control port** is a plain TCP line protocol served by a thread of this process, outside
the app (so it adds no spans and no ASGI work).  One command per line, one JSON reply per line:

- ``cpu``   → ``{"cpu": s, "export_cpu": s, "writer_cpu": s, "gc": s}``: this process's
  user+system CPU time (``time.process_time()``, every thread: the event loop, the span
  processor's thread, …), its export child's (the child process encoding and writing spans,
  if the variant has one), its span-export threads' alone, and the time this process spent
  in the cyclic garbage collector (:class:`GcClock`).
- ``flush`` → the same after ``force_flush()`` on the tracer provider and the exporter, so
  the export of the spans a measured window produced is charged to that window.
- ``rss``   → ``{"rss": bytes}`` after a flush and ``gc.collect()``.
- ``answers`` → ``{"answer_us": [...]}``: per WebSocket connection made since the last
  ``answers``, the µs from its arrival to the write of its 101 (:class:`AnswerClock`).
- ``info``  → the ready line again.
- ``tracemalloc-start`` / ``tracemalloc-report`` → start tracing allocations, then report the
  memory still held since, charged to the ``tracer/`` lines that asked for it (profiling only).

With ``--watch-stdin`` the server exits when its standard input closes, so a benchmark parent
that dies never leaves a server behind.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gc
import inspect
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from typing import Any

from bench.variants import VARIANTS, Variant

NATIVE_OFF = {"tracing": False, "metrics": False, "logs": False, "auto_configure": False}


class _Discard:
    """A span exporter that takes facts as the export process does, and drops everything:
    what is left of a variant's cost is recording the spans, not handing them on."""

    rebuilds_spans = True

    def export(self, spans: Any) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    def shutdown(self) -> None:
        pass


def make_provider(variant: Variant, trace_dir: str) -> tuple[Any, str, Any]:
    """A real SDK provider exporting to a file as the variant's users would; returns it, a
    label and the exporter."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    from tracer.export.offload import SubprocessExporter
    from tracer.export.otlp_file import OTLPJsonFileExporter
    from tracer.export.pipeline import ExportPipeline

    resource = Resource.create({"service.name": f"bench-{variant.name}"})
    kwargs: dict[str, Any] = {"resource": resource}
    if variant.sample_ratio is not None:
        kwargs["sampler"] = ParentBased(TraceIdRatioBased(variant.sample_ratio))
    provider = TracerProvider(**kwargs)
    exporter: Any
    if variant.export == "in-process":
        exporter = OTLPJsonFileExporter(directory=trace_dir, prefix=variant.name)
        where = "OTLPJsonFileExporter in the server process (temp dir)"
    elif variant.export == "discard":
        exporter = _Discard()
        where = "nothing (spans discarded by the writer thread)"
    else:
        exporter = SubprocessExporter.otlp_file(directory=trace_dir, prefix=variant.name)
        where = "SubprocessExporter → OTLPJsonFileExporter in a child process (temp dir)"
    # wstrace's variants export as `wstrace serve` does (a pipeline bounded in bytes that
    # never drops below its cap); the peers as their users would, with the SDK's processor.
    if variant.kind == "wstrace":
        pipeline = ExportPipeline(exporter, name="file")
        provider.add_span_processor(pipeline)
        label = f"ExportPipeline → {where}"
        if pipeline.takes_facts():  # the only processor: wstrace's spans go as facts
            label += ", wstrace's spans sent as facts and built there"
    else:
        provider.add_span_processor(BatchSpanProcessor(exporter))
        label = f"BatchSpanProcessor → {where}"
    return provider, label, exporter


def _set_native_telemetry(app: Any, settings: dict[str, Any]) -> bool:
    """Change FastAPI's native telemetry settings on a built app; False if it has none."""
    config = getattr(app, "_telemetry", None)
    if not isinstance(config, dict):
        return False
    config.update(settings)
    try:
        from fastapi.telemetry._asgi import NativeTelemetry
    except ImportError:  # pragma: no cover - a FastAPI without native telemetry
        return False
    app._native_telemetry = NativeTelemetry(config)
    return True


def build_app(
    variant: Variant, db_path: str, trace_dir: str
) -> tuple[Any, Any, Any, dict[str, Any]]:
    """The ASGI app to serve, its tracer provider and span exporter (None if untraced) and
    notes for the report."""
    from demo_app.app import create_app

    notes: dict[str, Any] = {}
    provider = exporter = None
    if variant.kind != "none":
        provider, notes["exporter"], exporter = make_provider(variant, trace_dir)
    if variant.kind == "wstrace":
        import tracer

        tracer.instrument(tracer_provider=provider, **variant.options)

    native = (
        {"tracer_provider": provider, "tracing": True, "metrics": False, "logs": False,
         "auto_configure": False}
        if variant.kind == "fastapi-native"
        else dict(NATIVE_OFF)
    )
    if "telemetry" in inspect.signature(create_app).parameters:
        app = create_app(db_path, telemetry=native)
        notes["native_telemetry"] = "set through create_app(telemetry=...)"
    else:
        app = create_app(db_path)
        ok = _set_native_telemetry(app, native)
        notes["native_telemetry"] = "set on the app object" if ok else "not available"
    notes["native_tracing"] = bool(native["tracing"])

    asgi: Any = app
    if variant.kind == "wstrace":
        import tracer

        middleware = getattr(tracer, "TracingMiddleware", None)
        if middleware is None:
            notes["middleware"] = "tracer.TracingMiddleware not available: app not wrapped"
        else:
            params = inspect.signature(middleware).parameters
            extra = {k: v for k, v in variant.options.items() if k in params}
            asgi = middleware(app, tracer_provider=provider, **extra)
            notes["middleware"] = "tracer.TracingMiddleware"
    elif variant.kind == "otel-asgi":
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        asgi = OpenTelemetryMiddleware(app, tracer_provider=provider)
        notes["middleware"] = "OpenTelemetryMiddleware"
    return asgi, provider, exporter, notes


TRACEMALLOC_FRAMES = 16


def tracemalloc_report(package: str = "tracer", top: int = 25) -> dict[str, Any]:
    """Memory still allocated since ``tracemalloc-start``, by who asked for it.

    Each live block is charged to the innermost frame on its allocation traceback that is
    neither the standard library nor a support library (the OpenTelemetry SDK …), as
    :mod:`bench.profile` charges CPU samples: what the SDK allocates for wstrace counts for the
    wstrace line that called it, what uvicorn or websockets allocate counts for them even when a
    wstrace hook wraps the call.  Blocks with no such frame in the traceback (the event loop's
    own, allocated from C) are charged to ``event loop``.  Tracing is stopped afterwards.
    """
    import tracemalloc

    from bench.profile import owner_of, short_name

    if not tracemalloc.is_tracing():
        return {"error": "tracemalloc is not tracing"}
    gc.collect()
    snapshot = tracemalloc.take_snapshot()
    tracemalloc.stop()
    lines: dict[str, list[int]] = {}
    sites: dict[str, list[int]] = {}
    packages: dict[str, int] = {}
    total = 0
    for trace in snapshot.traces:
        total += trace.size
        owner, frame = "event loop", None
        for candidate in reversed(trace.traceback):  # tracemalloc lists the oldest first
            found = owner_of(candidate.filename)
            if found is not None:
                owner, frame = found, candidate
                break
        packages[owner] = packages.get(owner, 0) + trace.size
        if frame is not None:
            site = sites.setdefault(f"{short_name(frame.filename)}:{frame.lineno}", [0, 0])
            site[0] += trace.size
            site[1] += 1
        if owner == package and frame is not None:
            entry = lines.setdefault(f"{short_name(frame.filename)}:{frame.lineno}", [0, 0])
            entry[0] += trace.size
            entry[1] += 1
    ranked = sorted(lines.items(), key=lambda item: item[1][0], reverse=True)[:top]
    return {
        "total_bytes": total,
        "by_package": dict(sorted(packages.items(), key=lambda kv: kv[1], reverse=True)[:15]),
        "top": [{"line": key, "bytes": size, "blocks": blocks} for key, (size, blocks) in ranked],
        "top_any": [
            {"line": key, "bytes": size, "blocks": blocks}
            for key, (size, blocks) in sorted(
                sites.items(), key=lambda item: item[1][0], reverse=True
            )[:top]
        ],
    }


def _writer_cpu() -> float:
    """CPU seconds of this process's span-export threads (wstrace's writer threads, the SDK's
    batch processor): the share of the server's CPU that hands spans on."""
    import psutil

    writers = {
        thread.native_id
        for thread in threading.enumerate()
        if thread.name.startswith(("wstrace-export", "OtelBatchSpanProcessor"))
    }
    if not writers:
        return 0.0
    with contextlib.suppress(psutil.Error):
        return sum(
            t.user_time + t.system_time for t in psutil.Process().threads() if t.id in writers
        )
    return 0.0


class GcClock:
    """Seconds this process spends in the cyclic garbage collector, from ``gc.callbacks``:
    what the tracer's allocations cost beyond its own code (collections run more often, and
    each walks what the tracer keeps)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0
        gc.callbacks.append(self._note)

    def _note(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started


class AnswerClock:
    """Per WebSocket connection, the server's own time from the connection's arrival (its
    transport made, before uvicorn's protocol sees it) to the write of its 101 response: the
    part of a handshake's latency spent in the server, the tracer's hooks included, and none
    of the client's or the kernel's.

    It sits on asyncio's socket transport, outside uvicorn and the tracer, the same probe in
    every variant (a timestamp on each connection's transport, read at its first write).
    With uvloop, whose transports cannot be patched, there is no figure.
    """

    _MADE = "_bench_made_ns"
    _ANSWER = b"HTTP/1.1 101"

    def __init__(self) -> None:
        self.samples: collections.deque[int] = collections.deque(maxlen=100_000)
        from asyncio import selector_events

        transport = getattr(selector_events, "_SelectorSocketTransport", None)
        if transport is None:
            return
        made, write = transport.__init__, transport.write
        clock = self

        def timed_init(self: Any, *args: Any, **kwargs: Any) -> None:
            self.__dict__[clock._MADE] = time.perf_counter_ns()
            made(self, *args, **kwargs)

        def timed_write(self: Any, data: Any) -> None:
            arrived = self.__dict__.pop(clock._MADE, None)  # the first write only
            if arrived is not None and bytes(data[: len(clock._ANSWER)]) == clock._ANSWER:
                clock.samples.append(time.perf_counter_ns() - arrived)
            write(self, data)

        transport.__init__, transport.write = timed_init, timed_write

    def take(self) -> list[float]:
        """The µs measured since the last call."""
        taken = []
        with contextlib.suppress(IndexError):
            while True:
                taken.append(self.samples.popleft() / 1e3)
        return taken


class Control:
    """The control port: a daemon thread answering ``cpu`` / ``flush`` / ``rss`` / ``info``."""

    def __init__(self, provider: Any, exporter: Any = None) -> None:
        self.provider = provider
        self.exporter = exporter
        self.gc_clock = GcClock()
        self.answer_clock = AnswerClock()
        self.info: dict[str, Any] = {}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port: int = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, name="bench-control", daemon=True).start()

    def _flush(self) -> None:
        if self.provider is not None:
            self.provider.force_flush(timeout_millis=30_000)
        if self.exporter is not None:
            self.exporter.force_flush(timeout_millis=30_000)  # the export process's share too

    def _cpu(self, opens_window: bool) -> dict[str, float]:
        """This process's CPU time and, when spans are exported by a child process, its CPU.

        Reading the threads' and the child's times costs this process a few hundred µs (it
        reads ``/proc``), and only for a variant with them: so this process's own time is
        read after them for a reading that opens a measured window (``cpu``), and before them
        for one that closes it (``flush``), and no window is charged for the reading."""
        opened = time.process_time()
        reading = {"export_cpu": 0.0, "writer_cpu": _writer_cpu(), "gc": self.gc_clock.seconds}
        pid = getattr(self.exporter, "child_pid", None)
        if pid is not None:
            import psutil

            with contextlib.suppress(psutil.Error):
                times = psutil.Process(pid).cpu_times()
                reading["export_cpu"] = times.user + times.system
        reading["cpu"] = time.process_time() if opens_window else opened
        return reading

    def answer(self, command: str) -> dict[str, Any]:
        if command == "cpu":
            return self._cpu(opens_window=True)
        if command == "flush":
            self._flush()
            return self._cpu(opens_window=False)
        if command == "rss":
            import psutil

            self._flush()
            gc.collect()
            return {"rss": psutil.Process().memory_info().rss}
        if command == "answers":
            return {"answer_us": self.answer_clock.take()}
        if command == "info":
            return self.info
        if command == "tracemalloc-start":
            import tracemalloc

            tracemalloc.start(TRACEMALLOC_FRAMES)
            return {"ok": True}
        if command == "tracemalloc-report":
            return tracemalloc_report()
        return {"error": f"unknown command {command!r}"}

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _client(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rwb") as stream:
            for line in stream:
                reply = self.answer(line.decode().strip())
                stream.write(json.dumps(reply).encode() + b"\n")
                stream.flush()


def _watch_stdin(server: Any) -> None:
    def watch() -> None:
        with contextlib.suppress(Exception):
            while sys.stdin.buffer.read(1024):
                pass
        server.should_exit = True

    threading.Thread(target=watch, name="bench-stdin", daemon=True).start()


async def _announce(server: Any, info: dict[str, Any]) -> None:
    for _ in range(3000):  # 30 s at most
        if server.started:
            print(json.dumps(info), flush=True)
            return
        if server.should_exit:
            return
        await asyncio.sleep(0.01)
    server.should_exit = True


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    variant = VARIANTS[args.variant]
    trace_dir = args.trace_dir or tempfile.mkdtemp(prefix="wstrace-bench-")
    asgi, provider, exporter, notes = build_app(variant, args.db, trace_dir)

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    config = uvicorn.Config(
        asgi,
        http=args.http,
        ws=args.ws,
        loop=args.loop,
        lifespan="on",
        log_level="warning",
        access_log=False,
        backlog=4096,
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    control = Control(provider, exporter)
    control.info = {
        "event": "ready",
        "variant": variant.name,
        "pid": os.getpid(),
        "port": sock.getsockname()[1],
        "control_port": control.port,
        "http": args.http,
        "ws": args.ws,
        "loop": args.loop,
        "trace_dir": trace_dir,
        **notes,
    }
    if args.watch_stdin:
        _watch_stdin(server)

    async def main() -> None:
        announce = asyncio.ensure_future(_announce(server, control.info))
        try:
            await server.serve(sockets=[sock])
        finally:
            announce.cancel()

    from uvicorn._compat import asyncio_run

    try:
        asyncio_run(main(), loop_factory=config.get_loop_factory())
    finally:
        if provider is not None:
            provider.shutdown()
        if args.trace_dir is None:  # a directory of our own making: leave nothing behind
            shutil.rmtree(trace_dir, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.server", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--variant", required=True, choices=sorted(VARIANTS))
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    parser.add_argument("--db", required=True, help="SQLite file of the auction app")
    parser.add_argument("--http", default="httptools", choices=["httptools", "h11"])
    parser.add_argument(
        "--ws", default="websockets-sansio", choices=["websockets-sansio", "websockets", "wsproto"]
    )
    parser.add_argument(
        "--loop", default="auto", choices=["auto", "asyncio", "uvloop"], help="as uvicorn's --loop"
    )
    parser.add_argument("--trace-dir", default=None,
                        help="where spans are written (default: a temporary directory, removed)")
    parser.add_argument("--watch-stdin", action="store_true", help="exit when stdin closes")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    serve(parse_args(argv))


if __name__ == "__main__":
    main()
