"""State shared by the hooks: the active recorder and who is being traced right now."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tracer.recorder import Attributes, ConnectionRecord, HttpStages, Recorder


@dataclass(frozen=True, slots=True)
class ChainEntry:
    """How the server hooks hand a connection's ASGI app to the ASGI layer.

    The hooks sit beside the ASGI layer, not above it: the instrumentor, which knows both,
    plugs the ASGI layer's entry and exit in here.  ``enter(app, base_span, tracer, recorder)``
    returns ``(current_span, restore)`` when the app's chain is traced, else ``None``;
    ``leave(restore)`` undoes it when the app returns.
    """

    enter: Callable[[Any, Any, Any, Any], tuple[Any, Any] | None]
    leave: Callable[[Any], None]


class Active:
    """The recorder the wrappers report to; ``None`` once uninstrumented (wrappers pass through)."""

    recorder: Recorder | None = None
    chain: ChainEntry | None = None
    """Set by the instrumentor: the ASGI chain's entry, when the app is traced there too."""


@dataclass(slots=True)
class Upgrade:
    """Handed from the HTTP layer to the WebSocket protocol it is creating."""

    stages: HttpStages
    impl_http: str
    http_code: dict[str, Attributes]


class _Upgrading(threading.local):
    """The upgrade under way in this thread, if any: ``value``."""

    value: Upgrade | None = None


upgrading = _Upgrading()
"""Set while an HTTP protocol's ``handle_websocket_upgrade`` runs (synchronously: a per-thread
slot, not a context variable, so that the ASGI task created meanwhile does not carry it in its
context for the connection's whole life); taken by the WebSocket protocol it creates."""

current_record: contextvars.ContextVar[ConnectionRecord | None] = contextvars.ContextVar(
    "wstrace_current_record", default=None
)
"""The connection whose protocol code is running: lets library-level hooks (``check_request``,
``ServerProtocol.accept``…), which never see uvicorn's protocol object, find their record."""

RECORD_ATTRIBUTE = "_wstrace_record"
HTTP_ATTRIBUTE = "_wstrace_http"


def record_of(instance: Any) -> ConnectionRecord | None:
    try:
        return instance.__dict__.get(RECORD_ATTRIBUTE)
    except AttributeError:  # an instance without a __dict__: never one of ours
        return None
