"""OTLP/HTTP export to a collector, checked by a real receiver on loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tracer import vocab
from tracer.demo import Script, run_demo


class Receiver(ThreadingHTTPServer):
    """The OTLP/HTTP traces endpoint of a collector: decodes each request with the protos."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.spans: list = []
        self.paths: list[str] = []
        self.content_types: list[str] = []
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        with self.server.lock:
            self.server.paths.append(self.path)
            self.server.content_types.append(self.headers["Content-Type"])
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    self.server.spans.extend(scope_spans.spans)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_spans_reach_the_collector_as_a_tree(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host, port = receiver.server_address[:2]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://{host}:{port}")
    path, outcome = run_demo(
        http="h11",
        ws="websockets-sansio",
        script=Script(clients=2, bids=3),
        shape="connection",
        frames="spans",
        out_dir=tmp_path,
        step=lambda _: None,
    )
    assert outcome["refused_status"] == 404
    assert receiver.paths and set(receiver.paths) == {"/v1/traces"}
    assert set(receiver.content_types) == {"application/x-protobuf"}
    spans = receiver.spans
    by_id = {s.span_id: s for s in spans}
    connections = [s for s in spans if s.name == vocab.CONNECTION]
    assert len(connections) == 3  # two bidders and the refused connection
    for span in spans:
        if span.parent_span_id:
            parent = by_id[span.parent_span_id]
            assert parent.trace_id == span.trace_id
            assert parent.start_time_unix_nano <= span.start_time_unix_nano
            assert span.end_time_unix_nano <= parent.end_time_unix_nano
        else:
            assert span.name == vocab.CONNECTION
    names = {s.name for s in spans}
    assert {vocab.WS_HANDSHAKE, vocab.WS_BROADCAST, vocab.WS_FRAME_SEND, vocab.WS_CLOSE} <= names
    # The same spans went to the file as well.
    assert path.exists() and path.stat().st_size > 0
    file_spans = [
        span
        for line in path.read_text().splitlines()
        for resource in json.loads(line)["resourceSpans"]
        for scope in resource["scopeSpans"]
        for span in scope["spans"]
    ]
    assert sorted(s["spanId"] for s in file_spans) == sorted(s.span_id.hex() for s in spans)
