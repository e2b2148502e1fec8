"""State shared by the hooks: the active recorder and who is being traced right now."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tracer.recorder import Attributes, ConnectionRecord, HttpStages, Recorder


class Active:
    """The recorder the wrappers report to; ``None`` once uninstrumented (wrappers pass through)."""

    recorder: Recorder | None = None


@dataclass(slots=True)
class Upgrade:
    """Handed from the HTTP layer to the WebSocket protocol it is creating."""

    stages: HttpStages
    impl_http: str
    http_code: dict[str, Attributes]


upgrading: contextvars.ContextVar[Upgrade | None] = contextvars.ContextVar(
    "wstrace_upgrading", default=None
)
"""Set while an HTTP protocol's ``handle_websocket_upgrade`` runs."""

current_record: contextvars.ContextVar[ConnectionRecord | None] = contextvars.ContextVar(
    "wstrace_current_record", default=None
)
"""The connection whose protocol code is running: lets library-level hooks (``check_request``,
``ServerProtocol.accept``…), which never see uvicorn's protocol object, find their record."""

RECORD_ATTRIBUTE = "_wstrace_record"
HTTP_ATTRIBUTE = "_wstrace_http"


def record_of(instance: Any) -> ConnectionRecord | None:
    return instance.__dict__.get(RECORD_ATTRIBUTE) if hasattr(instance, "__dict__") else None
