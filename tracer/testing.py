"""Record the WebSocket connections a test makes, and read them back as facts.

:class:`WsTrace` is what the pytest plugin's ``ws_trace`` fixture yields; it works without
pytest too (``with WsTrace() as ws_trace: ...``).  It puts the server hooks on a private
``TracerProvider`` whose spans stay in memory, serves apps under a real uvicorn on a loopback
port (:meth:`WsTrace.serve`), wraps apps for Starlette's ``TestClient`` (middleware-alone
mode), and answers queries through :mod:`tracer.analysis.query`.

Spans reach the reading side the way they reach a file: encoded as OTLP/JSON and decoded by
the same reader ``wstrace show`` uses, so what a test sees is what a kept trace file holds.

Timing: a connection's spans are finished when the server sees it end, which can be a moment
after the client's ``close()`` returns.  :attr:`WsTrace.connections` therefore waits — with a
bound — until every connection that started has ended, so assertions never race the server.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider

import tracer
from tracer import vocab
from tracer._contain import errors
from tracer.analysis.query import ConnectionList, ConnectionView, TraceAssertionError, connections
from tracer.asgi import TracingMiddleware
from tracer.config import TracerConfig
from tracer.demo import free_port, serving
from tracer.export.otlp_file import OTLPJsonFileExporter
from tracer.export.otlp_json import spans_to_otlp_dict
from tracer.export.reader import spans_from_request
from tracer.export.records import SpanRecord
from tracer.export.traceset import TraceSet
from tracer.hooks.context import Active
from tracer.instrumentor import WebSocketInstrumentor
from tracer.recorder import Recorder

DEFAULT_TIMEOUT = 10.0
"""Seconds :attr:`WsTrace.connections` waits for open connections to end."""

_ROOT_NAMES = frozenset({vocab.CONNECTION, vocab.WS_MESSAGE_RECEIVE})
"""Roots whose end means a connection (or a message trace of it) is fully recorded."""


class Impl(NamedTuple):
    """A uvicorn HTTP × WebSocket implementation pair (``--http`` / ``--ws``)."""

    http: str
    ws: str

    @property
    def id(self) -> str:
        return f"{self.http}-{self.ws}"


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def available_impls() -> list[Impl]:
    """Every pair uvicorn can run here (``zttp`` only when it is installed)."""
    http = ["httptools", "h11", *(["zttp"] if _importable("zttp") else [])]
    ws = ["websockets", "websockets-sansio", "wsproto"]
    return [Impl(h, w) for h in http for w in ws]


class ServerURL(str):
    """The ``ws://host:port`` base of a served app; ``.http`` is its ``http://`` base."""

    host: str
    port: int
    http: str
    impl: Impl

    def __new__(cls, host: str, port: int, impl: Impl) -> ServerURL:
        url = super().__new__(cls, f"ws://{host}:{port}")
        url.host, url.port, url.impl = host, port, impl
        url.http = f"http://{host}:{port}"
        return url


class _Collector(SpanProcessor):
    """Keeps finished spans, and which connection roots are still open."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.finished: list[ReadableSpan] = []
        self.open: dict[int, str] = {}
        self.generation = 0
        """Bumped on every change, for waiters."""

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        if span.parent is None and span.name in _ROOT_NAMES:
            with self._changed:
                self.open[span.context.span_id] = span.name
                self.generation += 1
                self._changed.notify_all()

    def on_end(self, span: ReadableSpan) -> None:
        with self._changed:
            self.finished.append(span)
            self.open.pop(span.context.span_id, None)
            self.generation += 1
            self._changed.notify_all()

    def wait(self, done: Any, timeout: float) -> bool:
        """Wait until ``done()`` (called with the lock held) is true, at most ``timeout`` s."""
        with self._changed:
            return self._changed.wait_for(done, timeout)

    def snapshot(self) -> tuple[list[ReadableSpan], int]:
        with self._changed:
            return list(self.finished), len(self.open)

    def clear(self) -> None:
        with self._changed:
            self.finished.clear()
            self.generation += 1

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class WsTrace:
    """The WebSocket connections recorded while it is active; see the module's docstring.

    ``options`` are the tracer's (``frames="events"``, ``capture_payload=64``…), used for the
    server hooks and for the apps it wraps.
    """

    def __init__(self, *, timeout: float = DEFAULT_TIMEOUT, **options: Any) -> None:
        self.timeout = timeout
        self.options = options
        self.provider = TracerProvider(resource=Resource.create({"service.name": "wstrace-test"}))
        self._collector = _Collector()
        self.provider.add_span_processor(self._collector)
        self._prior: Recorder | None = None
        self._swapped = False
        self._active = False
        self._cache: tuple[int, TraceSet, ConnectionList] | None = None
        self._errors_before: dict[str, int] = {}

    # --- recording on and off -------------------------------------------------------------

    def start(self) -> WsTrace:
        """Install the server hooks for this recording; an instrumentation already in place
        (the user's own) is set aside and put back by :meth:`stop`."""
        self._errors_before = dict(errors.counts)
        if WebSocketInstrumentor().is_instrumented_by_opentelemetry:
            self._prior = Active.recorder
            Active.recorder = Recorder(self.provider, TracerConfig.build(**self.options))
            self._swapped = True
        else:
            tracer.instrument(tracer_provider=self.provider, **self.options)
        self._active = True
        return self

    def stop(self) -> None:
        """Remove the hooks (ending the spans of connections still open) and restore."""
        if not self._active:
            return
        self._active = False
        if self._swapped:
            ours, Active.recorder = Active.recorder, self._prior
            if ours is not None:
                ours.flush_open()
        else:
            tracer.uninstrument()
        self.provider.shutdown()

    def __enter__(self) -> WsTrace:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def tracer_errors(self) -> dict[str, int]:
        """The tracer's own errors since :meth:`start`, by where they happened: contained
        (the app ran on), but what they would have recorded is missing from the trace."""
        return {
            where: count - self._errors_before.get(where, 0)
            for where, count in dict(errors.counts).items()
            if count > self._errors_before.get(where, 0)
        }

    # --- running apps ---------------------------------------------------------------------

    def wrap(self, app: Any) -> TracingMiddleware:
        """``app`` inside a :class:`TracingMiddleware` reporting here (one already around
        it is replaced, so a connection is not recorded twice)."""
        if isinstance(app, TracingMiddleware):
            app = app.app
        return TracingMiddleware(app, tracer_provider=self.provider, **self.options)

    def test_client(self, app: Any, **kwargs: Any) -> Any:
        """Starlette's ``TestClient`` on the wrapped app: the middleware alone records what
        the ASGI layer sees (messages, accept, close — not frames)."""
        from starlette.testclient import TestClient

        return TestClient(self.wrap(app), **kwargs)

    @contextlib.contextmanager
    def serve(
        self, app: Any, *, http: str = "auto", ws: str = "auto", **uvicorn_options: Any
    ) -> Iterator[ServerURL]:
        """Run ``app`` (wrapped) under a real uvicorn on a free loopback port until the block
        ends; yields its URL.  ``uvicorn_options`` go to ``uvicorn.Config``."""
        host = "127.0.0.1"
        with serving(
            self.wrap(app), host=host, port=free_port(host), http=http, ws=ws, **uvicorn_options
        ) as running:
            yield ServerURL(host, running.port, Impl(http, ws))

    # --- what was recorded ----------------------------------------------------------------

    @property
    def spans(self) -> list[ReadableSpan]:
        """Finished spans so far, as the SDK made them (no waiting)."""
        return self._collector.snapshot()[0]

    @property
    def open_connections(self) -> int:
        """Connection roots (and message-trace roots) started and not yet ended."""
        return self._collector.snapshot()[1]

    def records(self) -> list[SpanRecord]:
        """Finished spans so far, as the reading side sees them (no waiting)."""
        spans = self.spans
        if not spans:
            return []
        return list(spans_from_request(spans_to_otlp_dict(spans), "ws_trace"))

    def snapshot(self) -> tuple[TraceSet, ConnectionList]:
        """The connections finished so far, without waiting for open ones."""
        spans = self.spans
        cached = self._cache
        if cached is not None and cached[0] == len(spans):
            return cached[1], cached[2]
        traces = TraceSet(self.records())
        views = connections(traces, frames_recorded=self.options.get("frames") != vocab.FRAMES_OFF)
        self._cache = (len(spans), traces, views)
        return traces, views

    @property
    def traces(self) -> TraceSet:
        self.settle()
        return self.snapshot()[0]

    @property
    def connections(self) -> ConnectionList:
        """Every recorded connection, once all that started have ended (bounded wait)."""
        __tracebackhide__ = True
        self.settle()
        return self.snapshot()[1]

    def connection(self, path: str | None = None) -> ConnectionView:
        """The only connection (on ``path``, a glob); an assertion error otherwise."""
        __tracebackhide__ = True
        return self.connections.one(path)

    def settle(self, timeout: float | None = None) -> None:
        """Wait until every connection that started has ended."""
        __tracebackhide__ = True
        timeout = self.timeout if timeout is None else timeout
        collector = self._collector
        if not collector.wait(lambda: not collector.open, timeout):
            open_now = self.open_connections
            raise TraceAssertionError(
                f"{open_now} connection(s) still open after {timeout:g} s: close the clients "
                "(leave their `with` blocks) before reading ws_trace.connections, or raise "
                "ws_trace.timeout"
            )

    def wait_for_connections(
        self, count: int, *, path: str | None = None, timeout: float | None = None
    ) -> ConnectionList:
        """Wait until ``count`` connections (on ``path``) have ended and none is open;
        returns them.  For connections the test does not see close itself."""
        __tracebackhide__ = True
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        collector = self._collector
        while True:
            generation = collector.generation
            found = self.snapshot()[1].where(path)
            if len(found) >= count and not collector.open:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            collector.wait(lambda seen=generation: collector.generation != seen, remaining)
        on = f" on {path!r}" if path is not None else ""
        raise TraceAssertionError(
            f"expected {count} finished connection(s){on} within {timeout:g} s, got "
            f"{len(found)} ({self.open_connections} still open)"
        )

    def assert_no_frame_larger_than(
        self, limit: int, *, direction: str | None = None
    ) -> ConnectionList:
        """No frame on any recorded connection has a payload over ``limit`` bytes."""
        __tracebackhide__ = True
        return self.connections.assert_no_frame_larger_than(limit, direction=direction)

    def clear(self) -> None:
        """Forget what was recorded so far (connections still open are kept)."""
        self._collector.clear()
        self._cache = None

    def write(self, path: str | Path) -> Path | None:
        """Write the recorded spans as an OTLP JSON Lines file (``wstrace show`` reads it);
        ``None`` when nothing was recorded."""
        spans = self.spans
        if not spans:
            return None
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        exporter = OTLPJsonFileExporter(path)
        try:
            exporter.export(spans)
        finally:
            exporter.shutdown()
        return path


__all__ = ["DEFAULT_TIMEOUT", "Impl", "ServerURL", "WsTrace", "available_impls"]
