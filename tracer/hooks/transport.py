"""A see-through transport: every byte a WebSocket protocol writes passes the recorder first.

uvicorn's WebSocket implementations all write through ``self.transport.write``; handing them
this proxy in ``connection_made`` lets wstrace see the 101 response and every frame on the wire
exactly as written, whichever library produced them.  Everything else is delegated untouched.
"""

from __future__ import annotations

import asyncio
from time import time_ns
from typing import TYPE_CHECKING, Any

from tracer._contain import errors

if TYPE_CHECKING:
    from tracer.recorder import ConnectionRecord


class TapTransport:
    __slots__ = ("_wstrace_record", "_wstrace_transport")

    def __init__(self, transport: asyncio.Transport, record: ConnectionRecord) -> None:
        self._wstrace_transport = transport
        self._wstrace_record = record

    def write(self, data: bytes | bytearray | memoryview) -> None:
        started = time_ns()
        self._wstrace_transport.write(data)
        try:
            self._wstrace_record.on_bytes_out(started, time_ns(), bytes(data))
        except Exception as exc:  # never let the tracer break the write path
            errors.record("transport.write", exc)

    def writelines(self, chunks: Any) -> None:
        self.write(b"".join(chunks))

    # Called for every message (uvicorn pauses reading as a message is queued for the app and
    # resumes when the app has taken it; ``is_closing`` guards sends): delegated here, as
    # ``__getattr__`` runs only after a failed lookup, which costs several times the call.

    def pause_reading(self) -> None:
        self._wstrace_transport.pause_reading()

    def resume_reading(self) -> None:
        self._wstrace_transport.resume_reading()

    def is_closing(self) -> bool:
        return self._wstrace_transport.is_closing()

    # Called on every connection (uvicorn reads the addresses as it is made, and closes it
    # at the end): 0.13 µs a call here, 0.55 µs through ``__getattr__``.

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._wstrace_transport.get_extra_info(name, default)

    def close(self) -> None:
        self._wstrace_transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._wstrace_transport, name)

    def __repr__(self) -> str:
        return f"<TapTransport {self._wstrace_transport!r}>"


def unwrap_transport(transport: Any) -> Any:
    """The real transport behind a tap, or the argument itself."""
    return getattr(transport, "_wstrace_transport", transport)
