"""What the export process pays to turn spans into OTLP/JSON: µs per span and per message.

    python -m bench.encode [--messages 200] [--runs 7]

The spans are real: a FastAPI room app under uvicorn, traced as ``wstrace serve`` traces it
(connection shape, frames as spans, handshake stages with their stack events), two clients in
one room, each message broadcast to both (so sends carry links).  Two figures, each the
median over ``--runs`` runs (the minimum beside it):

- **encode** — :func:`~tracer.export.otlp_json.spans_to_otlp_bytes` over the recorded spans in
  lines of :data:`~tracer.export.otlp_file.SPANS_PER_LINE`, bytes as the file takes them: the
  encoder alone, timed in this process;
- **export process** — the CPU of the real export process
  (:class:`~tracer.export.offload.SubprocessExporter` running
  :class:`~tracer.export.otlp_file.OTLPJsonFileExporter`) for the same spans: receiving them,
  rebuilding them, encoding, writing.

Per message means per :data:`bench.floor.SPANS_PER_MESSAGE` spans, as one echoed message of
``make bench`` makes.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from opentelemetry.sdk.trace import ReadableSpan

from bench.floor import SPANS_PER_MESSAGE


def room_app() -> FastAPI:
    """``/room``: every text message goes to everyone in the room."""
    app = FastAPI()
    room: list[WebSocket] = []

    @app.websocket("/room")
    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        room.append(websocket)
        try:
            while True:
                text = await websocket.receive_text()
                for member in list(room):
                    await member.send_text(text)
        except WebSocketDisconnect:
            room.remove(websocket)

    return app


async def _talk(url: str, messages: int) -> None:
    """Two clients in one room take turns; each waits for both copies of each message."""
    from websockets.asyncio.client import connect

    async with connect(url) as first, connect(url) as second:
        for n in range(messages):
            sender = first if n % 2 == 0 else second
            await sender.send(f'{{"bid": {n}, "bidder": "é-{n % 7}"}}')
            for client in (first, second):
                await asyncio.wait_for(client.recv(), 10)


def record(messages: int = 200) -> list[ReadableSpan]:
    """The spans of two real connections exchanging ``messages`` messages."""
    from tracer.testing import WsTrace

    with WsTrace() as trace:
        with trace.serve(room_app()) as url:
            asyncio.run(_talk(url + "/room", messages))
        trace.settle()
        return trace.spans


def _median_and_min(values: Sequence[float]) -> tuple[float, float]:
    return statistics.median(values), min(values)


def time_encoding(spans: Sequence[ReadableSpan], runs: int, repeat: int = 20) -> list[float]:
    """µs of CPU per span to encode ``spans`` as the file exporter does, once per run."""
    from tracer.export.otlp_file import SPANS_PER_LINE
    from tracer.export.otlp_json import spans_to_otlp_bytes

    lines = [spans[i : i + SPANS_PER_LINE] for i in range(0, len(spans), SPANS_PER_LINE)]

    def once() -> None:
        for line in lines:
            spans_to_otlp_bytes(line)

    return _per_span(once, len(spans), runs, repeat)


def _per_span(run: Callable[[], None], count: int, runs: int, repeat: int) -> list[float]:
    run()  # warm the caches, as a long-running exporter's are
    figures = []
    for _ in range(runs):
        started = time.process_time()
        for _ in range(repeat):
            run()
        figures.append((time.process_time() - started) / repeat / count * 1e6)
    return figures


def time_export_process(spans: Sequence[ReadableSpan], runs: int, repeat: int = 60) -> list[float]:
    """µs of the export process's CPU per span, for ``spans`` exported ``repeat`` times a run."""
    import psutil

    from tracer.export.offload import SubprocessExporter

    with tempfile.TemporaryDirectory(prefix="wstrace-encode-") as directory:
        exporter = SubprocessExporter.otlp_file(directory=directory)
        try:
            exporter.export(spans)  # start the process, warm its caches
            exporter.force_flush()
            pid = exporter.child_pid
            assert pid is not None, "the export process did not start"
            child = psutil.Process(pid)
            figures = []
            for _ in range(runs):
                before = sum(child.cpu_times()[:2])
                for _ in range(repeat):
                    exporter.export(spans)
                exporter.force_flush()
                after = sum(child.cpu_times()[:2])
                figures.append((after - before) / repeat / len(spans) * 1e6)
        finally:
            exporter.shutdown()
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.encode", description=__doc__)
    parser.add_argument("--messages", type=int, default=200, help="messages the clients send")
    parser.add_argument("--runs", type=int, default=7, help="timed runs (median reported)")
    args = parser.parse_args(argv)

    spans = record(args.messages)
    names = {span.name for span in spans}
    attributes = sum(len(span.attributes or ()) for span in spans) / len(spans)
    print(
        f"{len(spans)} spans of 2 connections ({len(names)} span names, "
        f"{attributes:.1f} attributes a span on average)"
    )
    for label, figures in (
        ("encode OTLP/JSON", time_encoding(spans, args.runs)),
        ("export process CPU", time_export_process(spans, args.runs)),
    ):
        median, best = _median_and_min(figures)
        print(
            f"{label:>20}: {median:6.2f} µs/span (min {best:.2f}), "
            f"{median * SPANS_PER_MESSAGE:6.1f} µs per message of {SPANS_PER_MESSAGE} spans, "
            f"median of {args.runs} runs"
        )


if __name__ == "__main__":
    main()
