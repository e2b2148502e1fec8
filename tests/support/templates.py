"""Both ways of making a received message's family, compared where it is made: as a template
(its values, built where it is exported: :mod:`tracer.export.message_facts`) and as spans
made in the server, from the same records with the same ids; and a room of connections
driven by hand to make them."""

from __future__ import annotations

import contextvars
import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from time import time_ns
from typing import Any
from unittest.mock import patch

from opentelemetry.sdk.trace import SpanLimits, TracerProvider

import tracer
from tests.support import facts as support
from tests.support.raw import client_frame
from tests.support.records import response_101, upgrade_request
from tracer import vocab
from tracer.config import TracerConfig
from tracer.export import facts
from tracer.export.accounting import estimate_bytes
from tracer.export.otlp_json import items_to_otlp_bytes, written_template
from tracer.recorder import ConnectionRecord, Recorder
from tracer.recorder.emit import messages
from tracer.wire import Opcode, encode_frame


class _Taking:
    """Stands for a provider's fact takers: every fact to ``take``."""

    def __init__(self, take: Callable[[Any], None], origin: int) -> None:
        self._takers = (take,)
        self.origin = origin

    def takers(self) -> tuple[Callable[[Any], None], ...]:
        return self._takers


@dataclasses.dataclass
class TemplateCheck:
    """Every message template made while installed, against the family the server would have
    made of the same handling: ``differences`` holds each that is not the same fact, to the
    byte of its spans' OTLP/JSON."""

    compared: int = 0
    differences: list[Any] = dataclasses.field(default_factory=list)

    def emit(self, real: Callable[..., None], record: Any, handling: Any, values: Any,
             start: int, end: int, placement: int,
             takers: tuple[Callable[[Any], None], ...]) -> None:  # fmt: skip
        recorder = record.recorder
        sdk = recorder.sdk
        span_ids: list[int] = []
        trace_ids: list[int] = []

        def new_span_id() -> int:
            span_ids.append(sdk.new_span_id())
            return span_ids[-1]

        def new_trace_id() -> int:
            trace_ids.append(sdk.new_trace_id())
            return trace_ids[-1]

        template: list[Any] = []
        made: list[Any] = []
        try:
            recorder.sdk = dataclasses.replace(
                sdk, new_span_id=new_span_id, new_trace_id=new_trace_id
            )
            real(record, handling, values, start, end, placement, (template.append,))
            recorder.sdk = dataclasses.replace(
                sdk, new_span_id=iter(span_ids).__next__, new_trace_id=iter(trace_ids).__next__,
                templates=False, facts=_Taking(made.append, sdk.facts.origin),
            )  # fmt: skip
            messages.emit_spans(record, handling, values, start, end, placement)
            recorder.sdk = sdk
            if len(template) != 1 or not self._same(template[0], made, placement):
                self.differences.append((template, made))
        except Exception as exc:  # a difference too: reported by the test, not lost here
            self.differences.append(exc)
        finally:
            recorder.sdk = sdk
        self.compared += 1
        for take in takers:
            for fact in template:
                take(fact)

    @staticmethod
    def _same(template: Any, made: list[Any], placement: int) -> bool:
        """Under its connection, the one family fact the server would have made; in a trace
        of its own, the same spans (the server makes them one by one there)."""
        if placement == messages.UNDER_CONNECTION and (
            len(made) != 1 or facts.built(template) != made[0]
        ):
            return False
        spans = facts.expand(template)
        expected = [one for fact in made for one in facts.expand(fact)]
        origins = {template[facts.ORIGIN]: facts.origin_parts(template[facts.ORIGIN])}
        line = items_to_otlp_bytes(expected, origins)
        # Both ways the export process may write it: from the family fact, and straight
        # from the template's values.
        # Weighed for the byte cap from its values, as the family it stands for.
        weight = sum(estimate_bytes(fact) for fact in made)
        return (
            estimate_bytes(template) == weight
            and spans == expected
            and items_to_otlp_bytes(spans, origins) == line
            and items_to_otlp_bytes([written_template(template)], origins) == line
        )


@contextmanager
def templates_checked() -> Iterator[TemplateCheck]:
    """While in the block, every message template is checked (see :class:`TemplateCheck`) and
    then handed on as it would have been."""
    check = TemplateCheck()
    real = messages.emit_template

    def emit(*args: Any) -> None:
        check.emit(real, *args)

    with patch.object(messages, "emit_template", emit):
        yield check


CODE = {
    name: {vocab.CODE_FUNCTION_NAME: f"server.{name}", vocab.CODE_FILE_PATH: "/srv/app.py",
           vocab.CODE_LINE_NUMBER: n}
    for n, name in enumerate((vocab.WS_MESSAGE_RECEIVE, vocab.WS_FRAME_RECEIVE,
                              vocab.WS_MESSAGE_SEND, vocab.WS_FRAME_SEND))
}  # fmt: skip
"""``code.*`` of each stage, as the server hooks find them."""


class Room:
    """Connections of one recorder driven by hand, as a server's hooks would drive them: the
    facts go to a collector that takes them, as ``wstrace serve``'s pipeline does."""

    def __init__(
        self,
        limits: SpanLimits | None = None,
        processor: Any = None,
        sampler: Any = None,
        **config: Any,
    ) -> None:
        """``processor``: where the facts go instead of :attr:`collector` (a pipeline)."""
        self.collector = support.FactCollector()
        self.provider: TracerProvider = support.provider(limits or SpanLimits(), sampler)
        self.provider.add_span_processor(processor or self.collector)
        self.recorder = Recorder(self.provider, TracerConfig(**config))

    def open(self) -> tuple[ConnectionRecord, contextvars.Context]:
        record = self.recorder.new_connection(
            impl_http="h11", impl_ws="wsproto", http=None, http_code={}, ws_code=CODE,
            transport=None, handshake_ends_on_response=True,
        )  # fmt: skip
        self.bytes_in(record, upgrade_request("/ws"))
        now = time_ns()
        record.on_bytes_out(now, now, response_101())
        app = contextvars.Context()
        app.run(record.on_app_start, time_ns())
        return record, app

    @staticmethod
    def bytes_in(record: ConnectionRecord, data: bytes) -> None:
        frames = record.on_bytes_in(time_ns(), data)
        if frames:
            record.on_bytes_in_done(frames, time_ns())

    def receive(self, record: ConnectionRecord, app: contextvars.Context, text: str,
                pieces: int = 1) -> None:  # fmt: skip
        """The client's ``text`` in ``pieces`` frames, then the app's receive() that gets it."""
        data = text.encode()
        size = -(-len(data) // pieces)
        for n in range(pieces):
            opcode = Opcode.TEXT if n == 0 else Opcode.CONTINUATION
            part = data[n * size : (n + 1) * size]
            self.bytes_in(record, client_frame(opcode, part, fin=n == pieces - 1))
        asked = time_ns()
        app.run(record.on_receive_enter, asked)
        received = {"type": "websocket.receive", "text": text}
        app.run(record.on_receive_exit, asked, time_ns(), received)

    @staticmethod
    def send(app: contextvars.Context, to: ConnectionRecord, text: str, frames: int = 1,
             error: str | None = None) -> None:  # fmt: skip
        """The app (running in ``app``) sends ``text`` to ``to``, in ``frames`` frames."""
        app.run(Room.send_here, to, text, frames, error)

    @staticmethod
    def send_here(to: ConnectionRecord, text: str, frames: int = 1,
                  error: str | None = None) -> None:  # fmt: skip
        """:meth:`send` from the app's context, entered already."""
        send = to.on_send_enter(time_ns(), {"type": "websocket.send", "text": text})
        for n in range(frames):
            opcode = Opcode.TEXT if n == 0 else Opcode.CONTINUATION
            now = time_ns()
            to.on_bytes_out(now, now, encode_frame(opcode, text.encode(), fin=n == frames - 1))
        to.on_send_exit(send, time_ns(), error)

    @staticmethod
    def handled(record: ConnectionRecord, app: contextvars.Context) -> None:
        """The app asks for the next message: the one it handled is over."""
        app.run(record.on_receive_enter, time_ns())

    def echoed(self, messages: int, reply_frames: int = 1) -> ConnectionRecord:
        """A connection that receives ``bid 0``, ``bid 1`` … and answers each ``ok`` (in
        ``reply_frames`` frames): ``messages`` templates."""
        record, app = self.open()
        for n in range(messages):
            self.receive(record, app, f"bid {n}")
            self.send(app, record, "ok", frames=reply_frames)
            self.handled(record, app)
        return record

    @property
    def templates(self) -> list[tuple[Any, ...]]:
        return [f for f in self.collector.facts if len(f) > facts.TEMPLATE]


def broadcast_in(app: contextvars.Context, body: Any) -> None:
    """``with tracer.broadcast(): body()``, run in the app's context."""

    def block() -> None:
        with tracer.broadcast():
            body()

    app.run(block)
