"""The trace headers the app sees are what the global propagator would write."""

from __future__ import annotations

import pytest
from opentelemetry import baggage, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.trace.span import TraceState

from tracer.asgi import _trace_headers, with_trace_headers

pytestmark = pytest.mark.fast  # pure: no server, no subprocess

SCOPE = {"type": "websocket", "headers": [(b"host", b"x"), (b"traceparent", b"00-client")]}


def _propagated() -> list[tuple[bytes, bytes]] | None:
    """What the global propagator itself writes in the running context."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    if "traceparent" not in carrier:
        return None
    return [(key.encode("latin-1"), value.encode("latin-1")) for key, value in carrier.items()]


def _span(sampled: bool, state: TraceState | None = None) -> trace.Span:
    flags = trace.TraceFlags(trace.TraceFlags.SAMPLED if sampled else trace.TraceFlags.DEFAULT)
    context = trace.SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, False,
                                flags, state)  # fmt: skip
    return trace.NonRecordingSpan(context)


CASES = {
    "sampled": lambda: trace.set_span_in_context(_span(True)),
    "not sampled": lambda: trace.set_span_in_context(_span(False)),
    "with tracestate": lambda: trace.set_span_in_context(
        _span(True, TraceState([("vendor", "value"), ("other", "1")]))
    ),
    "with baggage": lambda: baggage.set_baggage(
        "user", "42", trace.set_span_in_context(_span(True))
    ),
    "no span": lambda: otel_context.get_current(),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("textmap", ["default", "trace context alone"])
def test_trace_headers_are_what_the_propagator_writes(case: str, textmap: str) -> None:
    before = propagate.get_global_textmap()
    if textmap != "default":
        propagate.set_global_textmap(CompositePropagator([TraceContextTextMapPropagator()]))
    token = otel_context.attach(CASES[case]())
    try:
        expected = _propagated()
        assert _trace_headers() == expected
        scoped = with_trace_headers(SCOPE)
    finally:
        otel_context.detach(token)
        propagate.set_global_textmap(before)
    if expected is None:
        assert scoped is SCOPE
        return
    assert any(name == b"traceparent" for name, _ in expected)
    assert scoped["headers"] == [(b"host", b"x"), *expected]  # the client's own replaced
    assert SCOPE["headers"][1] == (b"traceparent", b"00-client")  # the scope is not changed
    if case == "with baggage" and textmap == "default":
        assert dict(expected)[b"baggage"] == b"user=42"
