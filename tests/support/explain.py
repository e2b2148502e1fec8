"""Checks shared by the walkthrough tests.

A code location is verified by importing the named function and asking ``inspect`` where its
``def`` is, independently of how the walkthrough found it (from files, without importing).
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

import tracer
from tests.support import raw
from tests.support.room_app import room_app
from tests.support.server import run_server
from tracer import vocab
from tracer.analysis.explain.source import CodeRef
from tracer.export.otlp_file import OTLPJsonFileExporter
from tracer.export.reader import load
from tracer.export.traceset import TraceSet


def _resolve(module: Any, qualname: str) -> Any:
    obj = module
    for part in qualname.split("."):
        obj = inspect.unwrap(getattr(obj, part))
    return obj


def def_lines(ref: CodeRef) -> tuple[str, int, int]:
    """(file, first line, last line) of the ``def`` of ``ref`` according to ``inspect``."""
    assert ref.module is not None, ref
    module = importlib.import_module(ref.module)
    outer, _, inner = ref.qualname.partition(".<locals>.")
    obj = _resolve(module, outer)
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    obj = inspect.unwrap(obj)
    lines, start = inspect.getsourcelines(obj)
    file = inspect.getsourcefile(obj)
    assert file is not None
    if not inner:
        return file, start, start + len(lines) - 1
    # A function defined inside ``outer``: its def must be inside outer's source, with its name.
    name = inner.split(".")[-1]
    pattern = re.compile(rf"^\s*(async\s+)?def\s+{re.escape(name)}\s*\(")
    for offset, text in enumerate(lines):
        if pattern.match(text) and start + offset == ref.def_line:
            indent = len(text) - len(text.lstrip())
            end = start + offset
            for later, body in enumerate(lines[offset + 1 :], start=offset + 1):
                if body.strip() and len(body) - len(body.lstrip()) <= indent:
                    break
                end = start + later
            return file, start + offset, end
    raise AssertionError(f"no def {name} at line {ref.def_line} inside {ref.module}.{outer}")


def assert_points_into_def(ref: CodeRef) -> None:
    """The shown file:line is inside the real ``def`` of the named function, in that file."""
    assert ref.found, f"{ref.function}: {ref.problem}"
    file, first, last = def_lines(ref)
    assert ref.file is not None and os.path.samefile(file, ref.file), (ref.function, file)
    assert ref.line is not None and first <= ref.line <= last, (ref.function, ref.line, first, last)
    def_text = open(file, encoding="utf-8").read().splitlines()[ref.def_line - 1]  # noqa: SIM115
    name = ref.qualname.split(".")[-1]
    assert re.match(rf"^\s*(async\s+)?def\s+{re.escape(name)}\b", def_text), def_text
    assert ref.path is not None and file.replace(os.sep, "/").endswith(ref.path), ref.path


# --- A traced session of the minimal room app, driven by raw sockets -----------------------------

ROOM_PATH = "/ws/auction/7"
MASK = bytes.fromhex("37fa213d")
"""The masking key of the client's first frame: fixed, so the walkthrough can be checked."""
BID = b'{"type": "bid", "bidder": "alice", "amount": 12}'


@dataclass
class RoomSession:
    """What the raw clients saw: the 101 head of the first client and the frame it sent."""

    response_head: bytes
    first_frame: bytes
    trace_file: Path


def _close(sock: socket.socket, rest: bytes) -> None:
    sock.sendall(raw.client_frame(8, (1000).to_bytes(2, "big"), key=MASK))
    frames = raw.read_frames_until_close(sock, rest)
    assert any(f["opcode"] == 8 for f in frames), frames
    sock.close()


def room_session(http: str, ws: str, directory: Path) -> RoomSession:
    """Serve :func:`room_app` traced (payload capture on); two raw clients join, the first bids
    (the bid is broadcast to both), then both close with 1000."""
    provider = TracerProvider()
    exporter = OTLPJsonFileExporter(directory=directory)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer.instrument(tracer_provider=provider, capture_payload=64)
    try:
        app = tracer.TracingMiddleware(room_app(), tracer_provider=provider)
        with run_server(app, http=http, ws=ws) as server:
            first = raw.open_socket(server.port)
            first.sendall(raw.upgrade_request(ROOM_PATH, key=raw.KEY_EXAMPLE))
            status, head, rest_a = raw.read_head(first)
            assert status == 101, head
            _, rest_a = raw.read_frames(first, rest_a, 1)  # "joined"
            second, rest_b = raw.handshake(server.port, ROOM_PATH)
            _, rest_b = raw.read_frames(second, rest_b, 1)  # "joined": both are in the room
            frame = raw.client_frame(1, BID, key=MASK)
            first.sendall(frame)
            _, rest_a = raw.read_frames(first, rest_a, 1)
            _, rest_b = raw.read_frames(second, rest_b, 1)
            _close(first, rest_a)
            _close(second, rest_b)
    finally:
        tracer.uninstrument()
        provider.shutdown()
    return RoomSession(head, frame, exporter.path)


# --- Hostile values ------------------------------------------------------------------------------

HOSTILE = (
    "a|b`c``<script>alert(1)</script>\n| x | y |\x1b[31m\u202e"
    "<img src=x onerror=\"document.body.setAttribute('data-pwned', '1')\">"
)
"""Markdown and HTML syntax, a terminal escape, a bidi override and an event handler."""


def hostile_sample(path: Path) -> TraceSet:
    """A real trace whose connection 2 carries :data:`HOSTILE` in a header, the path and the
    close reason, as a malicious client could make it."""
    traces = load(path)
    for span in traces.connection(2).spans:
        if span.name == vocab.HTTP_HEADERS_PARSE:
            span.attributes[vocab.HTTP_REQUEST_HEADER_PREFIX + "user-agent"] = [HOSTILE]
            span.attributes[vocab.URL_PATH] = HOSTILE
        if span.name == vocab.WS_CLOSE:
            span.attributes[vocab.WS_CLOSE_REASON] = HOSTILE
    return traces
