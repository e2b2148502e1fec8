"""``wstrace demo`` and ``wstrace serve``: the traced auction, end to end, on one machine.

The demo starts the auction app instrumented (server hooks + ``TracingMiddleware``) on a free
loopback port, drives a scripted auction with real WebSocket clients, and writes the spans as
OTLP JSON Lines under ``traces/``.  Nothing else is needed: SQLite and files are embedded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

import tracer
from tracer.export.offload import OTLP_HTTP_FACTORY, SubprocessExporter
from tracer.export.otlp_file import OTLPJsonFileExporter
from tracer.export.pipeline import ExportPipeline, collector_pipeline


class PortInUse(Exception):
    """The requested port is taken: say which and how to pick another."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise PortInUse(
                f"{host}:{port} is in use ({exc.strerror}); pick another with --port"
            ) from exc


def make_provider(
    out_dir: Path, *, service: str = "wstrace-demo", offload: bool = True
) -> tuple[TracerProvider, OTLPJsonFileExporter | SubprocessExporter]:
    """A provider writing OTLP JSON Lines under ``out_dir``, plus OTLP/HTTP when configured.

    With ``offload`` (the default) spans are encoded and written by a child process
    (:class:`~tracer.export.offload.SubprocessExporter`), so the traced server only pays for
    handing them over.  With ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) set, spans also go to that collector, configured by
    the standard ``OTEL_*`` variables.

    Each output has its own :class:`~tracer.export.pipeline.ExportPipeline`: the file's buffer
    waits for the file (nothing is dropped below its cap), the collector's drops while the
    collector is down, and neither holds up the other or the event loop.
    """
    import os

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    exporter: OTLPJsonFileExporter | SubprocessExporter
    if offload:
        exporter = SubprocessExporter.otlp_file(directory=out_dir)
    else:
        exporter = OTLPJsonFileExporter(directory=out_dir)
    provider.add_span_processor(ExportPipeline(exporter, name="file", target=str(exporter.path)))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        if offload:
            collector: Any = SubprocessExporter(OTLP_HTTP_FACTORY)
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            collector = OTLPSpanExporter()
        provider.add_span_processor(collector_pipeline(collector))
    return provider, exporter


@dataclass
class Running:
    server: uvicorn.Server
    host: str
    port: int

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"


class _KnownUpstreamNoise(logging.Filter):
    """uvicorn 0.54's sansio implementation logs an error after a denial response it sent
    correctly (the refused connection of the script); the demo's console should not alarm."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "returned without completing handshake" not in record.getMessage()


@contextlib.contextmanager
def serving(
    app: Any, *, host: str, port: int, http: Any, ws: Any, **options: Any
) -> Iterator[Running]:
    """uvicorn in a background thread, so spans stay in this process's provider.

    ``options`` go to ``uvicorn.Config`` (``ws_max_size``, ``lifespan``…); the log level
    defaults to warnings.
    """
    check_port(host, port)
    options.setdefault("log_level", "warning")
    config = uvicorn.Config(app, host=host, port=port, http=http, ws=ws, **options)
    server = uvicorn.Server(config)
    noise = _KnownUpstreamNoise()
    logging.getLogger("uvicorn.error").addFilter(noise)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    try:
        yield Running(server, host, port)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        logging.getLogger("uvicorn.error").removeFilter(noise)


# --- The scripted auction ---------------------------------------------------------------------


@dataclass
class Script:
    clients: int = 5
    bids: int = 20
    compression: str | None = "deflate"
    """The bidders' permessage-deflate offer; ``None`` sends frames whose payload is readable."""


async def drive_auction(
    base: Running, script: Script, step: Callable[[str], None]
) -> dict[str, Any]:
    """Bidders join, bid in turn (each bid reaches every screen), chat, misbehave once."""
    import httpx
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    async with httpx.AsyncClient(base_url=base.http_url) as client:
        reply = await client.post(
            "/auctions",
            json={"item": "Vintage typewriter", "starting_price": 10, "duration_s": 3600},
        )
        reply.raise_for_status()
        auction = reply.json()["id"]
    step("auction created")
    url = f"{base.ws_url}/ws/auction/{auction}"
    async with contextlib.AsyncExitStack() as stack:
        bidders = [
            await stack.enter_async_context(connect(url, compression=script.compression))
            for _ in range(script.clients)
        ]
        for bidder in bidders:
            await asyncio.wait_for(bidder.recv(), 10)  # the room's state
        step(f"{script.clients} bidders joined")
        amount = 10
        for n in range(script.bids):
            amount += 1 + n % 3
            sender = bidders[n % len(bidders)]
            bid = {"type": "bid", "bidder": f"bidder-{n % len(bidders) + 1}", "amount": amount}
            await sender.send(json.dumps(bid))
            for bidder in bidders:
                await asyncio.wait_for(bidder.recv(), 10)
            step(f"bid {n + 1}/{script.bids}: {amount}")
        await bidders[0].send(
            json.dumps({"type": "chat", "sender": "bidder-1", "text": "good luck!"})
        )
        for bidder in bidders:
            await asyncio.wait_for(bidder.recv(), 10)
        step("chat sent")
        await bidders[-1].send("this is not JSON")
        error = json.loads(await asyncio.wait_for(bidders[-1].recv(), 10))
        step(f"malformed message answered: {error.get('reason', error)}")
    refused = None
    try:
        async with connect(f"{base.ws_url}/ws/auction/999999"):
            pass
    except InvalidStatus as exc:
        refused = exc.response.status_code
    step(f"unknown auction refused with HTTP {refused}")
    return {"auction": auction, "refused_status": refused}


def build_app(db_path: str, provider: TracerProvider) -> Any:
    from demo_app.app import create_app

    return tracer.TracingMiddleware(create_app(db_path, seed=True), tracer_provider=provider)


def run_demo(
    *,
    http: str,
    ws: str,
    script: Script,
    shape: str,
    frames: str,
    out_dir: Path,
    step: Callable[[str], None],
    keep_serving: Callable[[Running], None] | None = None,
    db_path: str | None = None,
    capture_payload: int = 0,
) -> tuple[Path, dict[str, Any]]:
    """Run the traced auction; returns the trace file written and what the script saw."""
    out_dir.mkdir(parents=True, exist_ok=True)
    provider, exporter = make_provider(out_dir)
    tracer.instrument(
        tracer_provider=provider, shape=shape, frames=frames, capture_payload=capture_payload
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            app = build_app(db_path or str(Path(tmp) / "auction.db"), provider)
            with serving(app, host="127.0.0.1", port=free_port(), http=http, ws=ws) as running:
                step(f"serving on {running.http_url} (http={http}, ws={ws})")
                outcome = asyncio.run(drive_auction(running, script, step))
                if keep_serving is not None:
                    keep_serving(running)
    finally:
        tracer.uninstrument()
        provider.shutdown()
    return exporter.path, outcome


SAMPLE_SCRIPT = Script(clients=5, bids=20)
SAMPLE_HTTP = "httptools"
SAMPLE_WS = ("websockets", "websockets-sansio", "wsproto")


def sample_path(directory: Path, ws: str) -> Path:
    return directory / f"demo-{SAMPLE_HTTP}-{ws}.otlp.jsonl"


def write_sample(directory: Path, ws: str, step: Callable[[str], None]) -> Path:
    """Run the demo scenario on one WebSocket implementation into ``directory``."""
    with tempfile.TemporaryDirectory() as tmp:
        written, _ = run_demo(
            http=SAMPLE_HTTP,
            ws=ws,
            script=SAMPLE_SCRIPT,
            shape="connection",
            frames="spans",
            out_dir=Path(tmp),
            step=step,
        )
        directory.mkdir(parents=True, exist_ok=True)
        target = sample_path(directory, ws)
        target.write_bytes(written.read_bytes())
    return target
