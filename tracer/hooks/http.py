"""Hooks on uvicorn's HTTP protocols: the request head, the upgrade decision, the switch.

uvicorn parses every request with its HTTP protocol (``httptools`` or ``h11``); only when the
head says ``Connection: Upgrade`` + ``Upgrade: websocket`` does it build a WebSocket protocol,
replay the request into it and hand it the transport (``handle_websocket_upgrade``).  These
hooks keep a few timestamps per request on the protocol object and turn them into spans only
for requests that upgrade: plain HTTP traffic gets no WebSocket spans.
"""

from __future__ import annotations

from collections.abc import Callable
from time import time_ns
from types import FunctionType
from typing import Any

from tracer import vocab
from tracer._contain import errors
from tracer.hooks.context import HTTP_ATTRIBUTE, Active, Upgrade, upgrading
from tracer.hooks.patching import Patch, method_form, original_function
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


def _reset(stages: HttpStages) -> None:
    """A request that did not upgrade: forget it, the next one starts afresh."""
    stages.parse_start = stages.parse_end = 0
    stages.detect_start = stages.detect_end = 0
    stages.head_bytes = []
    stages.head_size = 0
    stages.head_complete = False


@method_form
def connection_made_hook(original: FunctionType) -> Callable[..., Any]:
    """``connection_made``: every connection's protocol gets its stages' timestamps."""

    def connection_made(self: Any, *args: Any, **kwargs: Any) -> Any:
        started = time_ns()
        result = original(self, *args, **kwargs)
        if Active.recorder is not None:
            self.__dict__[HTTP_ATTRIBUTE] = HttpStages(started)
        return result

    return connection_made


@method_form
def data_received_hook(original: FunctionType) -> Callable[..., Any]:
    """``data_received``: the bytes of a request head, kept until it is parsed."""

    def data_received(self: Any, *args: Any, **kwargs: Any) -> Any:
        stages = self.__dict__.get(HTTP_ATTRIBUTE)
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
            return original(self, *args, **kwargs)
        finally:
            if stages is not None and stages.head_complete and not stages.switch_start:
                _reset(stages)

    return data_received


@method_form
def headers_complete_hook(original: FunctionType) -> Callable[..., Any]:
    """httptools' ``on_headers_complete``: the head is parsed."""

    def on_headers_complete(self: Any, *args: Any, **kwargs: Any) -> Any:
        stages = self.__dict__.get(HTTP_ATTRIBUTE)
        if stages is not None and not stages.head_complete:
            stages.parse_end = time_ns()
            stages.head_complete = True
        return original(self, *args, **kwargs)

    return on_headers_complete


@method_form
def should_upgrade_hook(original: FunctionType) -> Callable[..., Any]:
    """``_should_upgrade``: the upgrade is detected (or not)."""

    def _should_upgrade(self: Any, *args: Any, **kwargs: Any) -> Any:
        stages = self.__dict__.get(HTTP_ATTRIBUTE)
        if stages is None:
            return original(self, *args, **kwargs)
        started = time_ns()
        if not stages.head_complete:  # h11: the head is parsed by the time the upgrade is checked
            stages.parse_end = started
            stages.head_complete = True
        if not stages.detect_start:
            stages.detect_start = started
        result = original(self, *args, **kwargs)
        stages.detect_end = time_ns()
        return result

    return _should_upgrade


def make_switch_hook(impl: str, http_code: dict[str, Attributes]) -> Any:
    """``handle_websocket_upgrade``'s hook: the switch, and the stages handed to the
    WebSocket protocol it builds (see :func:`tracer.hooks.ws.make_connection_made`)."""

    @method_form
    def switch_hook(original: FunctionType) -> Callable[..., Any]:
        def handle_websocket_upgrade(self: Any, *args: Any, **kwargs: Any) -> Any:
            stages = self.__dict__.get(HTTP_ATTRIBUTE)
            if stages is None or Active.recorder is None:
                return original(self, *args, **kwargs)
            stages.switch_start = time_ns()
            previous, upgrading.value = upgrading.value, Upgrade(stages, impl, http_code)
            try:
                return original(self, *args, **kwargs)
            finally:
                stages.switch_end = time_ns()
                upgrading.value = previous

        return handle_websocket_upgrade

    return switch_hook


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
        Patch(module, f"{cls}.connection_made", connection_made_hook),
        Patch(module, f"{cls}.data_received", data_received_hook),
        Patch(module, f"{cls}._should_upgrade", should_upgrade_hook),
        Patch(module, f"{cls}.handle_websocket_upgrade", make_switch_hook(impl, stage_code(impl))),
    ]
    if impl == "httptools":
        targets.append(Patch(module, f"{cls}.on_headers_complete", headers_complete_hook))
    return targets
