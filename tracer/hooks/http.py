"""Hooks on uvicorn's HTTP protocols: the request head, the upgrade decision, the switch.

uvicorn parses every request with its HTTP protocol (``httptools`` or ``h11``); only when the
head says ``Connection: Upgrade`` + ``Upgrade: websocket`` does it build a WebSocket protocol,
replay the request into it and hand it the transport (``handle_websocket_upgrade``).  These
hooks keep a few timestamps per request on the protocol object and turn them into spans only
for requests that upgrade: plain HTTP traffic gets no WebSocket spans.
"""

from __future__ import annotations

from time import time_ns
from typing import Any

from tracer import vocab
from tracer._contain import errors
from tracer.hooks.context import HTTP_ATTRIBUTE, Active, Upgrade, upgrading
from tracer.hooks.patching import Patch, original_function
from tracer.recorder import Attributes, HttpStages, code_attributes

MAX_HEAD_BYTES = 65536

# uvicorn's HTTP protocol implementations: name -> (module, class).
IMPLEMENTATIONS: dict[str, tuple[str, str]] = {
    "httptools": ("uvicorn.protocols.http.httptools_impl", "HttpToolsProtocol"),
    "h11": ("uvicorn.protocols.http.h11_impl", "H11Protocol"),
    "zttp": ("uvicorn.protocols.http.zttp_impl", "ZttpProtocol"),
}

# Which function does each stage's work, per implementation (read for code.* at run time).
STAGE_FUNCTIONS: dict[str, dict[str, str]] = {
    "httptools": {
        vocab.CONNECTION: "connection_made",
        vocab.HTTP_HEADERS_PARSE: "on_headers_complete",
        vocab.HTTP_UPGRADE_DETECT: "_should_upgrade",
        vocab.WS_PROTOCOL_SWITCH: "handle_websocket_upgrade",
    },
    "h11": {
        vocab.CONNECTION: "connection_made",
        vocab.HTTP_HEADERS_PARSE: "handle_events",
        vocab.HTTP_UPGRADE_DETECT: "_should_upgrade",
        vocab.WS_PROTOCOL_SWITCH: "handle_websocket_upgrade",
    },
}
STAGE_FUNCTIONS["zttp"] = STAGE_FUNCTIONS["h11"]


def _stages(instance: Any) -> HttpStages | None:
    return instance.__dict__.get(HTTP_ATTRIBUTE)


def _reset(stages: HttpStages) -> None:
    """A request that did not upgrade: forget it, the next one starts afresh."""
    stages.parse_start = stages.parse_end = 0
    stages.detect_start = stages.detect_end = 0
    stages.head_bytes = []
    stages.head_size = 0
    stages.head_complete = False


def wrap_connection_made(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    started = time_ns()
    result = wrapped(*args, **kwargs)
    if Active.recorder is not None:
        instance.__dict__[HTTP_ATTRIBUTE] = HttpStages(started)
    return result


def wrap_data_received(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    stages = _stages(instance)
    if stages is not None:
        try:
            if not stages.parse_start:
                stages.parse_start = time_ns()
            if not stages.head_complete and stages.head_size < MAX_HEAD_BYTES and args:
                chunk = args[0]
                stages.head_bytes.append(chunk)
                stages.head_size += len(chunk)
        except Exception as exc:
            errors.record("http.data_received", exc)
    try:
        return wrapped(*args, **kwargs)
    finally:
        if stages is not None and stages.head_complete and not stages.switch_start:
            _reset(stages)


def wrap_headers_complete(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    stages = _stages(instance)
    if stages is not None and not stages.head_complete:
        stages.parse_end = time_ns()
        stages.head_complete = True
    return wrapped(*args, **kwargs)


def wrap_should_upgrade(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    stages = _stages(instance)
    if stages is None:
        return wrapped(*args, **kwargs)
    started = time_ns()
    if not stages.head_complete:  # h11: the head is parsed by the time the upgrade is checked
        stages.parse_end = started
        stages.head_complete = True
    if not stages.detect_start:
        stages.detect_start = started
    result = wrapped(*args, **kwargs)
    stages.detect_end = time_ns()
    return result


def make_switch_wrapper(impl: str, http_code: dict[str, Attributes]) -> Any:
    def wrap_handle_websocket_upgrade(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        stages = _stages(instance)
        if stages is None or Active.recorder is None:
            return wrapped(*args, **kwargs)
        stages.switch_start = time_ns()
        previous, upgrading.value = upgrading.value, Upgrade(stages, impl, http_code)
        try:
            return wrapped(*args, **kwargs)
        finally:
            stages.switch_end = time_ns()
            upgrading.value = previous

    return wrap_handle_websocket_upgrade


def stage_code(impl: str) -> dict[str, Attributes]:
    module, cls = IMPLEMENTATIONS[impl]
    found: dict[str, Attributes] = {}
    for stage, method in STAGE_FUNCTIONS[impl].items():
        function = original_function(module, f"{cls}.{method}")
        if function is not None:
            found[stage] = code_attributes(function)
    return found


def patches(impl: str) -> list[Patch]:
    module, cls = IMPLEMENTATIONS[impl]
    targets = [
        Patch(module, f"{cls}.connection_made", wrap_connection_made),
        Patch(module, f"{cls}.data_received", wrap_data_received),
        Patch(module, f"{cls}._should_upgrade", wrap_should_upgrade),
        Patch(
            module, f"{cls}.handle_websocket_upgrade", make_switch_wrapper(impl, stage_code(impl))
        ),
    ]
    if impl == "httptools":
        targets.append(Patch(module, f"{cls}.on_headers_complete", wrap_headers_complete))
    return targets
