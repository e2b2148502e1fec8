"""Steps 6-9 of the walkthrough: the ASGI app, its middleware chain, the route and endpoint,
and ``accept()`` with the Python stack recorded at that moment."""

from __future__ import annotations

from tracer import vocab
from tracer.analysis import fmt
from tracer.analysis.explain import prose
from tracer.analysis.explain.model import Para, RfcRef, Step, Table, Val
from tracer.analysis.explain.reading import (
    Spans,
    attr,
    code_ref,
    code_refs,
    facts,
    ms,
    stack_event,
    stack_refs,
)
from tracer.export.records import SpanRecord


def step_asgi(s: Spans) -> Step:
    app = s.first(vocab.ASGI_APP)
    step = Step(
        6,
        "asgi",
        "The ASGI application starts",
        [
            RfcRef("ASGI", "", "WebSocket connection scope"),
            RfcRef("RFC 6455", "4.2.2", "Sending the Server's Opening Handshake"),
        ],
        prose.ASGI,
        code_refs(app),
        None if app is None else app.duration_ns,
        "app ran for",
    )
    if app is None:
        step.missing = prose.MISSING_SERVER_STAGE
        return step
    step.blocks = [facts(("scope path", attr(app, vocab.URL_PATH)))]
    return step


def _is_router(span: SpanRecord) -> bool:
    function = str(attr(span, vocab.CODE_FUNCTION_NAME, ""))
    return function.endswith("Router.__call__") or vocab.HTTP_ROUTE in span.attributes


def step_middleware(s: Spans) -> Step:
    layers = []
    for span in s.layers():
        if _is_router(span):
            break
        layers.append(span)
    step = Step(
        7,
        "middleware",
        "The middleware chain",
        [RfcRef("ASGI", "", "WebSocket connection scope")],
        prose.MIDDLEWARE,
        code_refs(*layers),
        None if not layers else layers[0].duration_ns,
        "outermost layer ran for",
    )
    if not layers:
        step.missing = "no middleware layer spans in this trace (TracingMiddleware not used)"
        return step
    rows = []
    for i, span in enumerate(layers, start=1):
        name = str(attr(span, vocab.MIDDLEWARE_LAYER, span.name))
        rows.append(
            [str(i), Val(name), prose.layer_role(name), Val(fmt.duration(span.duration_ns))]
        )
    step.show_source = False  # the "Where" lines give each layer's file:line, in the same order
    step.blocks = [Table(["#", "layer", "what it does for a WebSocket scope", "ran for"], rows)]
    return step


def _endpoint(s: Spans) -> SpanRecord | None:
    accept = s.first(vocab.WS_ACCEPT)
    if accept is None:
        return None
    for ancestor in s.traces.ancestors(accept):
        if vocab.MIDDLEWARE_LAYER not in ancestor.attributes and code_ref(ancestor) is not None:
            return ancestor
    return None


def step_route(s: Spans) -> Step:
    router = next((span for span in s.layers() if _is_router(span)), None)
    route = next((span for span in s.all if vocab.HTTP_ROUTE in span.attributes), None)
    endpoint = _endpoint(s)
    helpers = (
        []
        if route is None
        else [c for c in s.traces.children(route) if c is not endpoint and code_ref(c) is not None]
    )
    step = Step(
        8,
        "route",
        "The route and the endpoint",
        [RfcRef("ASGI", "", "WebSocket connection scope")],
        prose.ROUTE,
        code_refs(router, route, *helpers, endpoint),
        None if route is None else route.duration_ns,
        "route ran for",
    )
    if route is None and endpoint is None:
        step.missing = "no route or endpoint span in this trace"
        return step
    step.blocks = [
        facts(
            ("route template", attr(route, vocab.HTTP_ROUTE)),
            ("path", attr(s.first(vocab.ASGI_APP), vocab.URL_PATH)),
            ("router", attr(router, vocab.MIDDLEWARE_LAYER)),
            ("route class", attr(route, vocab.MIDDLEWARE_LAYER)),
            ("endpoint", None if endpoint is None else endpoint.name),
            ("endpoint ran for", ms(None if endpoint is None else endpoint.duration_ns)),
        )
    ]
    return step


def step_accept(s: Spans) -> Step:
    accept = s.first(vocab.WS_ACCEPT)
    response = s.first(vocab.WS_HANDSHAKE_RESPONSE)
    step = Step(
        9,
        "accept",
        "accept() and the stack at that moment",
        [RfcRef("RFC 6455", "4.2.2", "Sending the Server's Opening Handshake")],
        prose.ACCEPT,
        code_refs(accept, response),
        None if accept is None else accept.duration_ns,
    )
    if accept is None:
        step.missing = "no ws.accept span: the app never accepted this connection"
        return step
    event = stack_event(accept)
    if event is None:
        step.missing = "no handshake stack recorded on ws.accept"
        return step
    rows = []
    refs = stack_refs(event)
    for i, ref in enumerate(refs, start=1):
        line = ref.line if ref.found else ref.recorded_line
        rows.append(
            [
                str(i),
                Val(ref.qualname),
                Val(ref.path or "?"),
                Val(line if line is not None else "?"),
                Val(ref.package or "?"),
            ]
        )
    step.blocks = [
        Para(prose.stack_intro(len(refs))),
        Table(["#", "function", "file", "line", "package"], rows),
    ]
    return step
