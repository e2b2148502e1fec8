"""Connection records driven by hand, without a server: the bytes and hook calls a server would
produce, fed straight to the recorder, spans kept in memory."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from time import time_ns
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.support.facts import FactCollector
from tests.support.raw import KEY_EXAMPLE, client_frame, upgrade_request
from tests.support.tracing import make_provider
from tracer import vocab
from tracer.config import TracerConfig
from tracer.recorder import ConnectionRecord, Recorder
from tracer.wire import Opcode, accept_key, encode_frame


def response_101(key: str = KEY_EXAMPLE) -> bytes:
    return (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n"
    ).encode()


def response_denied(status: int = 403) -> bytes:
    return f"HTTP/1.1 {status} Forbidden\r\nContent-Length: 0\r\n\r\n".encode()


def close_frame(code: int = 1000, *, client: bool = True) -> bytes:
    payload = code.to_bytes(2, "big")
    if client:
        return client_frame(Opcode.CLOSE, payload)
    return encode_frame(Opcode.CLOSE, payload)


@dataclass
class Bench:
    """A recorder on an in-memory SDK pipeline, and helpers to play a connection's life."""

    recorder: Recorder
    exporter: InMemorySpanExporter

    def record(self, *, ends_on_response: bool = True) -> ConnectionRecord:
        return self.recorder.new_connection(
            impl_http="h11",
            impl_ws="wsproto" if ends_on_response else "websockets",
            http=None,
            http_code={},
            ws_code={},
            transport=None,
            handshake_ends_on_response=ends_on_response,
        )

    def asgi_record(self) -> ConnectionRecord:
        """A connection as the middleware alone sees it (no wire)."""
        record = self.recorder.new_connection(
            source=vocab.SOURCE_ASGI, peer={vocab.URL_PATH: "/ws"}
        )
        record.on_asgi_request(time_ns())
        return record

    @property
    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans if s.name == name]

    @staticmethod
    def app_start(record: ConnectionRecord) -> contextvars.Context:
        """Start the app as a server does: in a task of its own (its context holds the app's
        current message, which must not leak into the caller's)."""
        context = contextvars.Context()
        context.run(record.on_app_start, time_ns())
        return context

    @staticmethod
    def bytes_in(record: ConnectionRecord, data: bytes) -> None:
        frames = record.on_bytes_in(time_ns(), data)
        if frames:
            record.on_bytes_in_done(frames, time_ns())

    @staticmethod
    def bytes_out(record: ConnectionRecord, data: bytes) -> None:
        now = time_ns()
        record.on_bytes_out(now, now, data)


def make_bench(**config: Any) -> Bench:
    provider, exporter, _ = make_provider()
    return Bench(Recorder(provider, TracerConfig(**config)), exporter)


def make_facts_bench(**config: Any) -> Bench:
    """A bench whose only processor takes facts, as ``wstrace serve``'s pipeline does: its
    spans are the ones the facts stand for, built as the export process would."""
    provider = TracerProvider()
    collector = FactCollector()
    provider.add_span_processor(collector)
    return Bench(Recorder(provider, TracerConfig(**config)), collector)  # type: ignore[arg-type]


__all__ = [
    "Bench",
    "close_frame",
    "make_bench",
    "make_facts_bench",
    "response_101",
    "response_denied",
    "upgrade_request",
]
